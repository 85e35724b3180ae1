//! Data movement of any dtype (interp/movement.rs, interp/resize.rs): each output element reads
//! the input element its coordinates map to. Transpose, Slice, Expand, Concat, Split, the
//! Gather family, constant Pad, OneHot, EyeLike and Resize compute the map in the kernel; the
//! rarer ops whose map depends only on constants (Tile, DepthToSpace, SpaceToDepth, Trilu,
//! ReverseSequence, CenterCropPad, Compress, other Pad modes) read it from a table the
//! interpreter computes at compile time: the op run on the numbers 1..=N, 0 marking a fill.
use super::scalar::{self as s, konst, Ty, Val};
use super::{math, Kern, R};
use xforge_ir::interp::{self, NodeAttrs};
use xforge_ir::tensor::{numel, strides};
use xforge_ir::{Attr, DType, Op, Tensor};

fn axis(a: i64, r: usize) -> R<usize> {
    let v = if a < 0 { a + r as i64 } else { a };
    if v < 0 || v as usize >= r.max(1) {
        return Err(format!("axis {a} is out of range for rank {r}"));
    }
    Ok(v as usize)
}

pub fn movement(k: &mut Kern) -> R<usize> {
    match k.n.op {
        Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze => math::elementwise(k),
        Op::Transpose | Op::Slice | Op::Expand => remap(k),
        Op::Concat => concat(k),
        Op::Split => split(k),
        Op::Gather | Op::GatherElements | Op::GatherND => gather(k),
        Op::Pad if k.attrs().string("mode", "constant")? == "constant" => pad_constant(k),
        Op::OneHot => one_hot(k),
        Op::EyeLike => eye_like(k),
        Op::Resize | Op::Upsample => resize(k),
        _ => by_table(k),
    }
}

/// Transpose, Slice and Expand: the input coordinates are affine in the output's.
fn remap(k: &mut Kern) -> R<usize> {
    let in_shape = k.in_shape(0)?;
    let out_shape = k.out_shape(0)?;
    let r = in_shape.len();
    let a = k.attrs();
    // per input axis: (output axis, start, step) with the coordinate start + step·o, or None for
    // broadcast (coordinate 0)
    let mut map: Vec<Option<(usize, i64, i64)>> = (0..r).map(|d| Some((d, 0, 1))).collect();
    match k.n.op {
        Op::Transpose => {
            let perm: Vec<usize> = match a.ints_opt("perm")? {
                Some(p) => p.iter().map(|&v| axis(v, r)).collect::<R<_>>()?,
                None => (0..r).rev().collect(),
            };
            for (d, &p) in perm.iter().enumerate() {
                map[p] = Some((d, 0, 1));
            }
        }
        Op::Slice => {
            let (starts, ends, axes, steps) = if k.opset() < 10 {
                (
                    a.ints_opt("starts")?.ok_or("missing 'starts'")?,
                    a.ints_opt("ends")?.ok_or("missing 'ends'")?,
                    a.ints_opt("axes")?,
                    None,
                )
            } else {
                let opt = |i: usize, w: &str| -> R<Option<Vec<i64>>> {
                    if k.in_val(i).is_some() {
                        k.konst_i64(i, w).map(Some)
                    } else {
                        Ok(None)
                    }
                };
                (k.konst_i64(1, "starts")?, k.konst_i64(2, "ends")?, opt(3, "axes")?, opt(4, "steps")?)
            };
            let axes: Vec<usize> = match axes {
                Some(v) => v.iter().map(|&x| axis(x, r)).collect::<R<_>>()?,
                None => (0..starts.len()).collect(),
            };
            let steps = steps.unwrap_or(vec![1; starts.len()]);
            for (j, &ax) in axes.iter().enumerate() {
                let (begin, _, _) = interp::slice_bounds_pub(in_shape[ax] as i64, starts[j], ends[j], steps[j]);
                map[ax] = Some((ax, begin, steps[j]));
            }
        }
        _ => {
            // Expand: numpy broadcasting of the input into the output
            let off = out_shape.len() - r;
            for d in 0..r {
                map[d] = if in_shape[d] == 1 { None } else { Some((d + off, 0, 1)) };
            }
        }
    }
    let (x, out) = (k.input(0)?, k.output(0)?);
    let n = numel(&out_shape);
    k.for_each(n, |k, i| {
        let oc = k.coords(i, &out_shape);
        let mut ic = vec![];
        for m in &map {
            ic.push(match *m {
                None => k.index(0),
                Some((d, 0, 1)) => oc[d].clone(),
                Some((d, start, step)) => {
                    // start + step·o, with a negative step as a subtraction
                    let t = k.ixc("muli", &oc[d], step.unsigned_abs() as usize);
                    let s0 = k.index(start as usize);
                    k.ix(if step < 0 { "subi" } else { "addi" }, &s0, &t)
                }
            });
        }
        let at = k.flat(&ic, &in_shape);
        let v = k.load(x, &at);
        k.store(out, i, &v);
        Ok(())
    })?;
    Ok(n)
}

fn concat(k: &mut Kern) -> R<usize> {
    let out_shape = k.out_shape(0)?;
    let r = out_shape.len();
    let ax = axis(k.attrs().int("axis", 0)?, r)?;
    let mut parts = vec![];
    for j in 0..k.n.inputs.len() {
        if k.in_val(j).is_none() {
            continue;
        }
        let shape = k.in_shape(j)?;
        if shape[ax] > 0 {
            parts.push((k.input(j)?, shape));
        }
    }
    if parts.is_empty() {
        return Err("every operand is empty".into());
    }
    let out = k.output(0)?;
    let ty = Ty::of(k.out_dtype(0)?);
    let n = numel(&out_shape);
    k.for_each(n, |k, i| {
        let oc = k.coords(i, &out_shape);
        let v = pick(k, &parts, 0, 0, ax, &oc, ty)?;
        k.store(out, i, &v);
        Ok(())
    })?;
    Ok(n)
}

/// The value of the operand (from `j` on, starting at `start` along `ax`) that holds `oc`.
fn pick(
    k: &mut Kern,
    parts: &[(usize, Vec<usize>)],
    j: usize,
    start: usize,
    ax: usize,
    oc: &[String],
    ty: Ty,
) -> R<Val> {
    let (p, shape) = &parts[j];
    let load = |k: &mut Kern| -> R<Vec<Val>> {
        let mut c = oc.to_vec();
        c[ax] = k.ixc("subi", &oc[ax], start);
        let at = k.flat(&c, shape);
        Ok(vec![k.load(*p, &at)])
    };
    if j + 1 == parts.len() {
        return Ok(load(k)?.remove(0));
    }
    let end = k.index(start + shape[ax]);
    let inside = k.icmp("ult", &oc[ax], &end);
    let next = start + shape[ax];
    let v = k.if_else(&inside, &[ty], load, |k| Ok(vec![pick(k, parts, j + 1, next, ax, oc, ty)?]))?;
    Ok(v[0].clone())
}

fn split(k: &mut Kern) -> R<usize> {
    let in_shape = k.in_shape(0)?;
    let r = in_shape.len();
    let ax = axis(k.attrs().int("axis", 0)?, r)?;
    let x = k.input(0)?;
    let mut start = 0;
    let mut work = 1;
    for j in 0..k.n.outputs.len() {
        let shape = k.out_shape(j)?;
        let len = shape[ax];
        if k.out_val(j).is_some() && numel(&shape) > 0 {
            let out = k.output(j)?;
            let n = numel(&shape);
            work = work.max(n);
            let in_shape = in_shape.clone();
            k.for_each(n, |k, i| {
                let mut c = k.coords(i, &shape);
                c[ax] = k.ixc("addi", &c[ax], start);
                let at = k.flat(&c, &in_shape);
                let v = k.load(x, &at);
                k.store(out, i, &v);
                Ok(())
            })?;
        }
        start += len;
    }
    Ok(work)
}

/// An index value loaded from `p` at `at`, wrapped (negative counts from the end of `dim`) and
/// clamped into [0, dim): an index out of range is the model's error (the interpreter refuses
/// it), and it must never read outside the data.
fn wrapped_index(k: &mut Kern, p: usize, at: &str, dim: usize) -> String {
    let raw = k.load(p, at);
    let v = s::cast(&mut k.b, &raw, Ty::Int(64, true));
    let z = konst(&mut k.b, 0.0, Ty::Int(64, true));
    let d = konst(&mut k.b, dim as f64, Ty::Int(64, true));
    let neg = s::cmp(&mut k.b, "lt", &v, &z);
    let w = s::add(&mut k.b, &v, &d);
    let v = s::select(&mut k.b, &neg, &w, &v);
    let top = konst(&mut k.b, dim.saturating_sub(1) as f64, Ty::Int(64, true));
    let v = s::max(&mut k.b, &v, &z);
    let v = s::min(&mut k.b, &v, &top);
    s::to_index(&mut k.b, &v)
}

fn gather(k: &mut Kern) -> R<usize> {
    let data_shape = k.in_shape(0)?;
    let ind_shape = k.in_shape(1)?;
    let out_shape = k.out_shape(0)?;
    let r = data_shape.len();
    let a = k.attrs();
    let (x, ind, out) = (k.input(0)?, k.input(1)?, k.output(0)?);
    let n = numel(&out_shape);
    match k.n.op {
        Op::Gather => {
            let ax = axis(a.int("axis", 0)?, r)?;
            let q = ind_shape.len();
            k.for_each(n, |k, i| {
                let oc = k.coords(i, &out_shape);
                let at = k.flat(&oc[ax..ax + q], &ind_shape);
                let idx = wrapped_index(k, ind, &at, data_shape[ax]);
                let mut c: Vec<String> = oc[..ax].to_vec();
                c.push(idx);
                c.extend_from_slice(&oc[ax + q..]);
                let at = k.flat(&c, &data_shape);
                let v = k.load(x, &at);
                k.store(out, i, &v);
                Ok(())
            })?;
        }
        Op::GatherElements => {
            let ax = axis(a.int("axis", 0)?, r)?;
            k.for_each(n, |k, i| {
                let mut c = k.coords(i, &out_shape);
                c[ax] = wrapped_index(k, ind, i, data_shape[ax]);
                let at = k.flat(&c, &data_shape);
                let v = k.load(x, &at);
                k.store(out, i, &v);
                Ok(())
            })?;
        }
        _ => {
            let bd = a.int("batch_dims", 0)? as usize;
            let q = ind_shape.len();
            let last = *ind_shape.last().ok_or("indices must have rank at least 1")?;
            if bd + last > r {
                return Err("indices address more axes than the data has".into());
            }
            k.for_each(n, |k, i| {
                let oc = k.coords(i, &out_shape);
                // indices row: the output's leading q − 1 coordinates
                let mut ic: Vec<String> = oc[..q - 1].to_vec();
                ic.push(k.index(0));
                let row = k.flat(&ic, &ind_shape);
                let mut c: Vec<String> = oc[..bd].to_vec();
                for j in 0..last {
                    let at = k.ixc("addi", &row, j);
                    c.push(wrapped_index(k, ind, &at, data_shape[bd + j]));
                }
                c.extend_from_slice(&oc[q - 1..]);
                let at = k.flat(&c, &data_shape);
                let v = k.load(x, &at);
                k.store(out, i, &v);
                Ok(())
            })?;
        }
    }
    Ok(n)
}

/// Pads before and after each axis (negative: cropped) and the fill value's source.
fn pads(k: &Kern, a: &NodeAttrs, r: usize) -> R<(Vec<i64>, Vec<i64>)> {
    let (p, axes) = if k.opset() < 11 {
        (a.ints_opt("pads")?.ok_or("missing attribute 'pads'")?, None)
    } else {
        let axes = if k.in_val(3).is_some() { Some(k.konst_i64(3, "axes")?) } else { None };
        (k.konst_i64(1, "pads")?, axes)
    };
    let axes: Vec<usize> = match axes {
        Some(v) => v.iter().map(|&x| axis(x, r)).collect::<R<_>>()?,
        None => (0..r).collect(),
    };
    if p.len() != 2 * axes.len() {
        return Err(format!("pads {p:?} must have 2 entries per padded axis"));
    }
    let (mut before, mut after) = (vec![0; r], vec![0; r]);
    for (i, &ax) in axes.iter().enumerate() {
        before[ax] = p[i];
        after[ax] = p[axes.len() + i];
    }
    Ok((before, after))
}

/// The fill of a constant Pad: input 2 (a runtime scalar or a constant), else the attribute.
fn pad_fill(k: &mut Kern, ty: Ty) -> R<Val> {
    if k.opset() < 11 {
        let v = k.attrs().float("value", 0.0)? as f64;
        return Ok(konst(&mut k.b, v, ty));
    }
    match k.in_val(2) {
        Some(v) if k.g.ty(v).static_shape().is_some_and(|s| numel(&s) > 0) => {
            let p = k.input(2)?;
            let z = k.index(0);
            let v = k.load(p, &z);
            Ok(s::cast(&mut k.b, &v, ty))
        }
        _ => Ok(konst(&mut k.b, 0.0, ty)),
    }
}

fn pad_constant(k: &mut Kern) -> R<usize> {
    let in_shape = k.in_shape(0)?;
    let out_shape = k.out_shape(0)?;
    let r = in_shape.len();
    let (before, _) = pads(k, &k.attrs(), r)?;
    let ty = Ty::of(k.out_dtype(0)?);
    let (x, out) = (k.input(0)?, k.output(0)?);
    let n = numel(&out_shape);
    let fill_param = if k.opset() >= 11 && k.in_val(2).is_some() { Some(()) } else { None };
    let _ = fill_param;
    k.for_each(n, |k, i| {
        let oc = k.coords(i, &out_shape);
        let fill = pad_fill(k, ty)?;
        let mut inside = konst(&mut k.b, 1.0, Ty::Bool);
        let mut ic = vec![];
        for d in 0..r {
            // p = o − before, as index arithmetic that may wrap below zero (then ≥ the dim)
            let p = if before[d] >= 0 {
                k.ixc("subi", &oc[d], before[d] as usize)
            } else {
                k.ixc("addi", &oc[d], (-before[d]) as usize)
            };
            let lim = k.index(in_shape[d]);
            let ok = k.icmp("ult", &p, &lim);
            inside = k.and(&inside, &ok);
            ic.push(p);
        }
        let v = k.if_else(
            &inside,
            &[ty],
            |k| {
                let at = k.flat(&ic, &in_shape);
                Ok(vec![k.load(x, &at)])
            },
            |_| Ok(vec![fill.clone()]),
        )?;
        k.store(out, i, &v[0]);
        Ok(())
    })?;
    Ok(n)
}

fn one_hot(k: &mut Kern) -> R<usize> {
    let ind_shape = k.in_shape(0)?;
    let out_shape = k.out_shape(0)?;
    let depth = k.konst(1).ok_or("depth is known only at run time")?.to_f64()[0] as i64;
    let r = ind_shape.len() + 1;
    let ax = axis(k.attrs().int("axis", -1)?, r)?;
    let (ind, vals, out) = (k.input(0)?, k.input(2)?, k.output(0)?);
    let n = numel(&out_shape);
    k.for_each(n, |k, i| {
        let oc = k.coords(i, &out_shape);
        let mut ic = oc.clone();
        let d = ic.remove(ax);
        let at = k.flat(&ic, &ind_shape);
        let raw = k.load(ind, &at);
        let v = s::cast(&mut k.b, &raw, Ty::Int(64, true));
        let z = konst(&mut k.b, 0.0, Ty::Int(64, true));
        let dv = konst(&mut k.b, depth as f64, Ty::Int(64, true));
        let neg = s::cmp(&mut k.b, "lt", &v, &z);
        let w = s::add(&mut k.b, &v, &dv);
        let v = s::select(&mut k.b, &neg, &w, &v);
        let dd = s::from_index(&mut k.b, &d, Ty::Int(64, true));
        let hit = s::cmp(&mut k.b, "eq", &v, &dd);
        let (off, on) = (k.index(0), k.index(1));
        let which = k.isel(&hit, &on, &off);
        let val = k.load(vals, &which);
        k.store(out, i, &val);
        Ok(())
    })?;
    Ok(n)
}

fn eye_like(k: &mut Kern) -> R<usize> {
    let shape = k.out_shape(0)?;
    if shape.len() != 2 {
        return Err("input must be 2-D".into());
    }
    let diag = k.attrs().int("k", 0)?;
    let ty = Ty::of(k.out_dtype(0)?);
    let out = k.output(0)?;
    let n = numel(&shape);
    k.for_each(n, |k, i| {
        let oc = k.coords(i, &shape);
        // column − row = k, as column = row + k
        let (row, col) =
            (s::from_index(&mut k.b, &oc[0], Ty::Int(64, true)), s::from_index(&mut k.b, &oc[1], Ty::Int(64, true)));
        let kv = konst(&mut k.b, diag as f64, Ty::Int(64, true));
        let want = s::add(&mut k.b, &row, &kv);
        let hit = s::cmp(&mut k.b, "eq", &col, &want);
        let v = s::cast(&mut k.b, &hit, ty);
        k.store(out, i, &v);
        Ok(())
    })?;
    Ok(n)
}

/// Resize and Upsample: per axis a table of taps (input index and weight, `K` per output
/// coordinate, padded with weight 0; index −1 marks the extrapolated outside); each output
/// element sums the product of its axes' taps over the input.
fn resize(k: &mut Kern) -> R<usize> {
    let in_shape = k.in_shape(0)?;
    let r = in_shape.len();
    let mut ins: Vec<Option<Tensor>> = vec![None];
    for j in 1..k.n.inputs.len() {
        ins.push(match k.in_val(j) {
            None => None,
            Some(v) => Some(
                k.g.weights
                    .get(&v)
                    .cloned()
                    .ok_or_else(|| format!("input {j} ('{}') is known only at run time", k.g.name_of(v)))?,
            ),
        });
    }
    let upsample = k.n.op == Op::Upsample;
    let plan = interp::resize_plan(&k.attrs(), k.opset(), &in_shape, &ins, upsample)?;
    let out_shape = k.out_shape(0)?;
    if plan.out_shape != out_shape {
        return Err(format!("the taps' shape {:?} is not the output's {out_shape:?}", plan.out_shape));
    }
    let float = k.out_dtype(0)?.is_float();
    let (x, out) = (k.input(0)?, k.output(0)?);
    let ct = if k.out_dtype(0)? == DType::F64 { Ty::F64 } else { Ty::F32 };
    // per axis: taps per coordinate, and the index and weight tables
    let mut tables = vec![];
    for d in 0..r {
        let taps = &plan.per_axis[d];
        let kk = taps.iter().map(|t| t.as_ref().map_or(1, |t| t.len())).max().unwrap_or(1).max(1);
        let mut idx = vec![];
        let mut wt = vec![];
        for t in taps {
            match t {
                None => {
                    idx.extend(std::iter::repeat_n(-1i64, kk));
                    wt.extend(std::iter::repeat_n(0.0, kk));
                }
                Some(t) => {
                    for j in 0..kk {
                        let (i, w) = t.get(j).copied().unwrap_or((0, 0.0));
                        idx.push(i as i64);
                        wt.push(w);
                    }
                }
            }
        }
        let single = kk == 1 && wt.iter().zip(&idx).all(|(&w, &i)| w == 1.0 || i < 0);
        let ip = k.table(&Tensor::from_i64(vec![idx.len()], idx).cast(DType::I32))?;
        let wp = if single { None } else { Some(k.table(&Tensor::from_f64(ct_dtype(ct), vec![wt.len()], &wt))?) };
        tables.push((kk, ip, wp));
    }
    let extrap = plan.extrapolation;
    let n = numel(&out_shape);
    let st = strides(&in_shape);
    k.for_each(n, |k, i| {
        let oc = k.coords(i, &out_shape);
        let zero = konst(&mut k.b, 0.0, ct);
        let ok0 = konst(&mut k.b, 1.0, Ty::Bool);
        // nested loops over each axis's taps, accumulating weight·x
        let z = k.index(0);
        let acc = taps_sum(k, &tables, &oc, &st, 0, z, None, x, zero, ok0, ct)?;
        let (v, inside) = (acc[0].clone(), acc[1].clone());
        let e = konst(&mut k.b, extrap, ct);
        let v = s::select(&mut k.b, &inside, &v, &e);
        let v = if float {
            v
        } else {
            // integer data rounds to the nearest
            s::math(&mut k.b, "round", &v)
        };
        k.store(out, i, &v);
        Ok(())
    })?;
    Ok(n)
}

fn ct_dtype(t: Ty) -> DType {
    if t == Ty::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Σ over the taps of axes d.. of weight · x, with the offset and weight so far; also whether
/// every axis was inside. Returns [sum, inside].
#[allow(clippy::too_many_arguments)]
fn taps_sum(
    k: &mut Kern,
    tables: &[(usize, usize, Option<usize>)],
    oc: &[String],
    st: &[usize],
    d: usize,
    off: String,
    w: Option<Val>,
    x: usize,
    acc: Val,
    inside: Val,
    ct: Ty,
) -> R<Vec<Val>> {
    if d == tables.len() {
        let v = k.load(x, &off);
        let v = s::cast(&mut k.b, &v, ct);
        let t = match &w {
            Some(w) => s::mul(&mut k.b, w, &v),
            None => v,
        };
        let sum = s::add(&mut k.b, &acc, &t);
        return Ok(vec![sum, inside]);
    }
    let (kk, ip, wp) = tables[d];
    let base = k.ixc("muli", &oc[d], kk);
    k.fold_n(kk, &[acc, inside], |k, j, carried| {
        let at = k.ix("addi", &base, j);
        let raw = k.load(ip, &at);
        let z = konst(&mut k.b, 0.0, Ty::Int(32, true));
        let ok = s::cmp(&mut k.b, "ge", &raw, &z);
        let inside = k.and(&carried[1], &ok);
        let clamped = s::max(&mut k.b, &raw, &z);
        let i = s::to_index(&mut k.b, &clamped);
        let t = k.ixc("muli", &i, st[d]);
        let off = k.ix("addi", &off, &t);
        let w = match wp {
            None => w.clone(),
            Some(wp) => {
                let wt = k.load(wp, &at);
                Some(match &w {
                    Some(w) => s::mul(&mut k.b, w, &wt),
                    None => wt,
                })
            }
        };
        taps_sum(k, tables, oc, st, d + 1, off, w, x, carried[0].clone(), inside, ct)
    })
}

/// Ops whose output element `i` is input element `table[i] − 1` (or the fill where 0): the
/// table is the interpreter's result on the input's positions counted from 1.
fn by_table(k: &mut Kern) -> R<usize> {
    let in_shape = k.in_shape(0)?;
    let out_shape = k.out_shape(0)?;
    let n_in = numel(&in_shape);
    let mut ins: Vec<Option<Tensor>> = vec![Some(Tensor::from_i64(in_shape.clone(), (1..=n_in as i64).collect()))];
    for j in 1..k.n.inputs.len() {
        ins.push(match k.in_val(j) {
            None => None,
            // a constant Pad's fill marks the padding (0) in the table
            Some(_) if k.n.op == Op::Pad && j == 2 => Some(Tensor::from_i64(vec![], vec![0])),
            Some(v) => Some(
                k.g.weights
                    .get(&v)
                    .cloned()
                    .ok_or_else(|| format!("input {j} ('{}') is known only at run time", k.g.name_of(v)))?,
            ),
        });
    }
    let mut node = k.n.clone();
    if node.op == Op::Pad && k.opset() < 11 {
        node.attrs.insert("value".into(), Attr::Float(0.0));
    }
    let t = interp::eval_node(&node, &ins, k.opset()).map_err(|e| e.to_string())?.remove(0);
    if t.shape() != out_shape.as_slice() {
        return Err(format!("the index table's shape {:?} is not the output's {out_shape:?}", t.shape()));
    }
    let table = if n_in < i32::MAX as usize { t.cast(DType::I32) } else { t };
    let ty = Ty::of(k.out_dtype(0)?);
    let (x, out) = (k.input(0)?, k.output(0)?);
    let tp = k.table(&table)?;
    let n = numel(&out_shape);
    k.for_each(n, |k, i| {
        let raw = k.load(tp, i);
        let z = konst(&mut k.b, 0.0, raw.ty);
        let hit = s::cmp(&mut k.b, "gt", &raw, &z);
        let v = k.if_else(
            &hit,
            &[ty],
            |k| {
                let one = konst(&mut k.b, 1.0, raw.ty);
                let src = s::sub(&mut k.b, &raw, &one);
                let at = s::to_index(&mut k.b, &src);
                Ok(vec![k.load(x, &at)])
            },
            |k| Ok(vec![if k.n.op == Op::Pad { pad_fill(k, ty)? } else { konst(&mut k.b, 0.0, ty) }]),
        )?;
        k.store(out, i, &v[0]);
        Ok(())
    })?;
    Ok(n)
}
