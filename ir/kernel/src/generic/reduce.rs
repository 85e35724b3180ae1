//! Reductions of any dtype (interp/reduce.rs): reduce-* and ArgMax/ArgMin with one thread per
//! output element looping over what it reduces; softmax and the cumulative ops with one thread
//! per row; TopK with one thread per input element, which counts the elements ranked before it.
use super::scalar::{self as s, konst, Ty, Val};
use super::{Kern, R};
use xforge_ir::tensor::{numel, strides};
use xforge_ir::{DType, Op};

fn axis(a: i64, r: usize) -> R<usize> {
    let v = if a < 0 { a + r as i64 } else { a };
    if v < 0 || v as usize >= r.max(1) {
        return Err(format!("axis {a} is out of range for rank {r}"));
    }
    Ok(v as usize)
}

/// (outer, len, inner) around `ax`.
fn around(shape: &[usize], ax: usize) -> (usize, usize, usize) {
    (numel(&shape[..ax]), shape[ax], numel(&shape[ax + 1..]))
}

/// The largest or smallest value of an integer type.
pub fn extreme(b: &mut crate::body::Body, ty: Ty, largest: bool) -> Val {
    match ty {
        Ty::Int(bits, true) => {
            let m = if bits == 64 { i64::MAX } else { (1i64 << (bits - 1)) - 1 };
            s::int_konst(b, if largest { m } else { -m - 1 }, ty)
        }
        Ty::Int(bits, false) => {
            let m = if bits == 64 { -1 } else { (1i64 << bits) - 1 };
            s::int_konst(b, if largest { m } else { 0 }, ty)
        }
        Ty::Bool => konst(b, if largest { 1.0 } else { 0.0 }, ty),
        _ => konst(b, if largest { f64::INFINITY } else { f64::NEG_INFINITY }, ty),
    }
}

pub fn reduce(k: &mut Kern) -> R<usize> {
    let op = k.n.op;
    let in_shape = k.in_shape(0)?;
    let r = in_shape.len();
    let a = k.attrs();
    let noop = a.int("noop_with_empty_axes", 0)? != 0;
    let from = if op == Op::ReduceSum { 13 } else { 18 };
    let axes: Option<Vec<i64>> = if k.opset() >= from {
        if k.in_val(1).is_some() {
            Some(k.konst_i64(1, "axes")?)
        } else {
            None
        }
    } else {
        a.ints_opt("axes")?
    };
    let axes: Vec<usize> = match axes {
        Some(v) if !v.is_empty() => {
            let mut v = v.iter().map(|&x| axis(x, r)).collect::<R<Vec<_>>>()?;
            v.sort();
            v.dedup();
            v
        }
        _ if noop => return super::math::elementwise_copy(k),
        _ => (0..r).collect(),
    };
    if by_blocks(k, op, &axes)? {
        return reduce_block(k, op, &axes, None);
    }
    reduce_over(k, op, axes, None)
}

/// Whether `op` over `axes` of input 0 runs one block an output (`reduce_block`): many entries
/// an output, and an order-free result — max and min of any type, sums of integers (wrapping
/// adds commute); float sums keep the interpreter's sequential order.
fn by_blocks(k: &Kern, op: Op, axes: &[usize]) -> R<bool> {
    let (shape, dt) = (k.in_shape(0)?, k.in_dtype(0)?);
    let count: usize = axes.iter().map(|&d| shape[d]).product();
    let outs = numel(&shape) / count.max(1);
    let exact = match op {
        Op::ReduceMax | Op::ReduceMin => dt != DType::Bool,
        Op::ReduceSum => !dt.is_float() && dt != DType::Bool,
        _ => false,
    };
    Ok(exact && count >= crate::knobs::REDUCE_BLOCK_MIN && outs <= crate::knobs::REDUCE_BLOCK_MAX_OUTPUTS)
}

/// ReduceBounded(x, length) (interp/bounded.rs): the reduction named by `reduce` over `axes`,
/// of the first `length` entries along the padded `axis` (one of `axes`).
pub fn reduce_bounded(k: &mut Kern) -> R<usize> {
    let a = k.attrs();
    let name = a.string("reduce", "")?;
    let op = Op::from_name(&name).ok_or_else(|| format!("unknown reduction '{name}'"))?;
    let r = k.in_shape(0)?.len();
    let mut axes = a.ints_opt("axes")?.unwrap_or_default().iter().map(|&x| axis(x, r)).collect::<R<Vec<_>>>()?;
    if axes.is_empty() {
        axes = (0..r).collect();
    }
    axes.sort();
    axes.dedup();
    let padded = axis(a.int("axis", 0)?, r)?;
    if !axes.contains(&padded) {
        return Err("the padded axis is not reduced".into());
    }
    if by_blocks(k, op, &axes)? {
        return reduce_block(k, op, &axes, Some(padded));
    }
    reduce_over(k, op, axes, Some((padded, 1)))
}

/// A max, min or integer sum (`by_blocks`) as one block an output: each thread folds every
/// THREADS-th entry, then a tree in workgroup memory. With `padded` (ReduceBounded), only the
/// entries below the length (input 1) along that axis take part. One thread an output took
/// 1.8 ms for a detector's `boxes.max()` over 27000 boxes, 0.55 ms for a row of 4096 counts.
fn reduce_block(k: &mut Kern, op: Op, axes: &[usize], padded: Option<usize>) -> R<usize> {
    let in_shape = k.in_shape(0)?;
    let r = in_shape.len();
    let kept: Vec<usize> = (0..r).map(|d| if axes.contains(&d) { 1 } else { in_shape[d] }).collect();
    let red: Vec<usize> = axes.iter().map(|&d| in_shape[d]).collect();
    let st = strides(&in_shape);
    let n = numel(&kept);
    let count = numel(&red);
    // a block of 1024 for a few outputs, of 256 where there are many
    let threads = if n <= 16 { 1024 } else { 256 };
    let ct = Ty::of(k.in_dtype(0)?);
    let (x, out) = (k.input(0)?, k.output(0)?);
    let wg_ty = format!("memref<{threads}x{}, #gpu.address_space<workgroup>>", ct.mlir());
    k.one_block = Some((threads as u32, format!("%wg : {wg_ty}")));
    k.blocks = u32::try_from(n).map_err(|_| "too many outputs")?;
    let tid = k.b.emit("gpu.thread_id x");
    let i = k.b.emit("gpu.block_id x");
    // the valid length along the padded axis, within [0, its size]
    let limit = match padded {
        Some(d) => {
            let q = axes.iter().position(|&a| a == d).ok_or("the padded axis is not reduced")?;
            Some((q, super::bounded::count_in(k, 1, red[q], red[q])?))
        }
        None => None,
    };
    let combine = |k: &mut Kern, a: &Val, c: &Val| match op {
        Op::ReduceMax => s::max(&mut k.b, a, c),
        Op::ReduceMin => s::min(&mut k.b, a, c),
        _ => s::add(&mut k.b, a, c),
    };
    let kc = k.coords(&i, &kept);
    let base = k.flat(&kc, &in_shape);
    let init = match op {
        Op::ReduceMax => extreme(&mut k.b, ct, false),
        Op::ReduceMin => extreme(&mut k.b, ct, true),
        _ => konst(&mut k.b, 0.0, ct),
    };
    let (step, end) = (k.index(threads), k.index(count));
    let j = k.b.fresh("j");
    let acc = k.b.fresh("acc");
    let head = format!("scf.for {j} = {tid} to {end} step {step} iter_args({acc} = {}) -> ({}) {{", init.v, ct.mlir());
    let part = k.b.emit(head);
    let rc = k.coords(&j, &red);
    let mut off = base.clone();
    for (qq, &d) in axes.iter().enumerate() {
        let t = k.ixc("muli", &rc[qq], st[d]);
        off = k.ix("addi", &off, &t);
    }
    let v = k.load(x, &off);
    let v = s::cast(&mut k.b, &v, ct);
    let a = Val::new(acc.clone(), ct);
    let mut m = combine(k, &a, &v);
    if let Some((q, l)) = &limit {
        let inside = k.icmp("ult", &rc[*q], l);
        m = s::select(&mut k.b, &inside, &m, &a);
    }
    k.b.stmt(format!("scf.yield {} : {}", m.v, ct.mlir()));
    k.b.stmt("}");
    k.b.stmt(format!("memref.store {part}, %wg[{tid}] : {wg_ty}"));
    k.b.stmt("gpu.barrier");
    let mut d = threads / 2;
    while d >= 1 {
        let dd = k.index(d);
        let low = k.icmp("ult", &tid, &dd);
        let mine = Val::new(k.b.emit(format!("memref.load %wg[{tid}] : {wg_ty}")), ct);
        let other = k.ix("addi", &tid, &dd);
        k.when(&low, |k| {
            let o = Val::new(k.b.emit(format!("memref.load %wg[{other}] : {wg_ty}")), ct);
            let m = combine(k, &mine, &o);
            k.b.stmt(format!("memref.store {}, %wg[{tid}] : {wg_ty}", m.v));
            Ok(())
        })?;
        k.b.stmt("gpu.barrier");
        d /= 2;
    }
    let z = k.index(0);
    let is0 = k.icmp("eq", &tid, &z);
    k.when(&is0, |k| {
        let v = Val::new(k.b.emit(format!("memref.load %wg[{z}] : {wg_ty}")), ct);
        k.store(out, &i, &v);
        Ok(())
    })?;
    Ok(threads * n)
}

/// `op` over `axes` of input 0; with `valid` = (axis, input), only the entries along that axis
/// below the length held by that input take part.
fn reduce_over(k: &mut Kern, op: Op, axes: Vec<usize>, valid: Option<(usize, usize)>) -> R<usize> {
    let in_shape = k.in_shape(0)?;
    let r = in_shape.len();
    let kept: Vec<usize> = (0..r).map(|d| if axes.contains(&d) { 1 } else { in_shape[d] }).collect();
    let red: Vec<usize> = axes.iter().map(|&d| in_shape[d]).collect();
    let st = strides(&in_shape);
    let n = numel(&kept);
    let dt = k.in_dtype(0)?;
    // integers keep their type where the interpreter is exact; the rest compute in f64 (floored)
    let exact_int = matches!(op, Op::ReduceSum | Op::ReduceProd | Op::ReduceSumSquare | Op::ReduceMax | Op::ReduceMin);
    let ct = if dt.is_float() {
        Ty::of(dt)
    } else if exact_int {
        Ty::of(dt)
    } else {
        Ty::F64
    };
    let (x, out) = (k.input(0)?, k.output(0)?);
    let count = numel(&red);
    // the padded axis's place among the reduced ones, and the length's parameter
    let valid = match valid {
        Some((d, input)) => Some((axes.iter().position(|&a| a == d).ok_or("the padded axis is not reduced")?, input)),
        None => None,
    };
    k.for_each(n, |k, i| {
        let kc = k.coords(i, &kept);
        let base = k.flat(&kc, &in_shape);
        // the valid length along the padded axis, within [0, its size]
        let limit = match valid {
            Some((q, input)) => Some((q, super::bounded::count_in(k, input, red[q], red[q])?)),
            None => None,
        };
        // whether reduced element j lies within the valid length
        let inside = |k: &mut Kern, j: &str| -> Option<Val> {
            let (q, l) = limit.clone()?;
            let rc = k.coords(j, &red);
            Some(k.icmp("ult", &rc[q], &l))
        };
        // the offset of reduced element j: its coordinates along the reduced axes
        let offset = |k: &mut Kern, j: &str| -> String {
            let rc = k.coords(j, &red);
            let mut off = base.clone();
            for (q, &d) in axes.iter().enumerate() {
                let t = k.ixc("muli", &rc[q], st[d]);
                off = k.ix("addi", &off, &t);
            }
            off
        };
        let load = |k: &mut Kern, j: &str| -> Val {
            let at = offset(k, j);
            let v = k.load(x, &at);
            s::cast(&mut k.b, &v, ct)
        };
        let mx = if op == Op::ReduceLogSumExp {
            let init = konst(&mut k.b, f64::NEG_INFINITY, ct);
            let m = k.fold_n(count, &[init], |k, j, acc| {
                let v = load(k, j);
                let m = s::max(&mut k.b, &acc[0], &v);
                Ok(vec![match inside(k, j) {
                    Some(c) => s::select(&mut k.b, &c, &m, &acc[0]),
                    None => m,
                }])
            })?;
            // an infinite maximum contributes 0 (as the interpreter does)
            let inf = konst(&mut k.b, f64::INFINITY, ct);
            let ab = s::math(&mut k.b, "absf", &m[0]);
            let fin = s::cmp(&mut k.b, "lt", &ab, &inf);
            let z = konst(&mut k.b, 0.0, ct);
            Some(s::select(&mut k.b, &fin, &m[0], &z))
        } else {
            None
        };
        let init = match op {
            Op::ReduceMax => extreme(&mut k.b, ct, false),
            Op::ReduceMin => extreme(&mut k.b, ct, true),
            Op::ReduceProd => konst(&mut k.b, 1.0, ct),
            _ => konst(&mut k.b, 0.0, ct),
        };
        let acc = k.fold_n(count, &[init], |k, j, acc| {
            let v = load(k, j);
            let keep = inside(k, j);
            let b = &mut k.b;
            let a = &acc[0];
            let next = match op {
                Op::ReduceMax => s::max(b, a, &v),
                Op::ReduceMin => s::min(b, a, &v),
                Op::ReduceProd => s::mul(b, a, &v),
                Op::ReduceL1 => {
                    let t = s::abs(b, &v);
                    s::add(b, a, &t)
                }
                Op::ReduceL2 | Op::ReduceSumSquare => {
                    let t = s::mul(b, &v, &v);
                    s::add(b, a, &t)
                }
                Op::ReduceLogSumExp => {
                    let t = s::sub(b, &v, mx.as_ref().unwrap());
                    let t = s::math(b, "exp", &t);
                    s::add(b, a, &t)
                }
                _ => s::add(b, a, &v),
            };
            Ok(vec![match keep {
                Some(c) => s::select(b, &c, &next, a),
                None => next,
            }])
        })?;
        // the number of elements reduced: fewer where only a valid length takes part
        let counted = match &limit {
            Some((q, l)) => {
                let c = k.ixc("muli", l, count / red[*q].max(1));
                let c = s::from_index(&mut k.b, &c, Ty::Int(64, true));
                s::cast(&mut k.b, &c, ct)
            }
            None => konst(&mut k.b, count as f64, ct),
        };
        let b = &mut k.b;
        let mut v = acc[0].clone();
        v = match op {
            Op::ReduceMean => s::div(b, &v, &counted),
            Op::ReduceL2 => s::math(b, "sqrt", &v),
            Op::ReduceLogSum => s::math(b, "log", &v),
            Op::ReduceLogSumExp => {
                let l = s::math(b, "log", &v);
                s::add(b, &l, mx.as_ref().unwrap())
            }
            _ => v,
        };
        if !dt.is_float() && ct == Ty::F64 {
            v = s::math(b, "floor", &v);
        }
        k.store(out, i, &v);
        Ok(())
    })?;
    Ok(n)
}

pub fn arg_reduce(k: &mut Kern) -> R<usize> {
    let in_shape = k.in_shape(0)?;
    let r = in_shape.len();
    let a = k.attrs();
    let ax = axis(a.int("axis", 0)?, r)?;
    let last = a.int("select_last_index", 0)? != 0;
    let max = k.n.op == Op::ArgMax;
    let (_, len, inner) = around(&in_shape, ax);
    if len == 0 {
        return Err("the axis is empty".into());
    }
    let mut kept = in_shape.clone();
    kept[ax] = 1;
    let n = numel(&kept);
    let (x, out) = (k.input(0)?, k.output(0)?);
    k.for_each(n, |k, i| {
        let kc = k.coords(i, &kept);
        let base = k.flat(&kc, &in_shape);
        let first = k.load(x, &base);
        let (one, hi) = (k.index(1), k.index(len));
        let zero = k.index(0);
        let best = k.fold(&one, &hi, &[first, Val::new(zero, Ty::Index)], |k, j, acc| {
            let off = k.ixc("muli", j, inner);
            let at = k.ix("addi", &base, &off);
            let v = k.load(x, &at);
            let b = &mut k.b;
            let better = s::cmp(b, if max { "gt" } else { "lt" }, &v, &acc[0]);
            let better = if last {
                let eq = s::cmp(b, "eq", &v, &acc[0]);
                Val::new(b.emit(format!("arith.ori {}, {} : i1", better.v, eq.v)), Ty::Bool)
            } else {
                better
            };
            let bv = s::select(b, &better, &v, &acc[0]);
            let bi = b.emit(format!("arith.select {}, {j}, {} : index", better.v, acc[1].v));
            Ok(vec![bv, Val::new(bi, Ty::Index)])
        })?;
        let idx = s::from_index(&mut k.b, &best[1].v, Ty::Int(64, true));
        k.store(out, i, &idx);
        Ok(())
    })?;
    Ok(n)
}

/// Softmax, LogSoftmax, Hardmax: one thread per row (before opset 13 the input is 2-D at
/// `axis`).
pub fn softmax(k: &mut Kern) -> R<usize> {
    let op = k.n.op;
    let shape = k.in_shape(0)?;
    let rank = shape.len();
    let (outer, len, inner) = if k.opset() < 13 {
        let ax = axis(k.attrs().int("axis", 1)?, rank.max(1))?;
        (numel(&shape[..ax]), numel(&shape[ax..]), 1)
    } else {
        around(&shape, axis(k.attrs().int("axis", -1)?, rank)?)
    };
    let dt = k.in_dtype(0)?;
    if !dt.is_float() {
        return Err(format!("{op} takes floats"));
    }
    let ct = Ty::of(dt);
    let (x, out) = (k.input(0)?, k.output(0)?);
    let rows = outer * inner;
    k.for_each(rows, |k, i| {
        let o = k.ixc("divui", i, inner);
        let ii = k.ixc("remui", i, inner);
        let t = k.ixc("muli", &o, len * inner);
        let base = k.ix("addi", &t, &ii);
        let at = |k: &mut Kern, j: &str| -> String {
            let t = k.ixc("muli", j, inner);
            k.ix("addi", &base, &t)
        };
        let init = konst(&mut k.b, f64::NEG_INFINITY, ct);
        let m = k.fold_n(len, &[init], |k, j, acc| {
            let a = at(k, j);
            let v = k.load(x, &a);
            Ok(vec![s::max(&mut k.b, &acc[0], &v)])
        })?;
        let m = m[0].clone();
        if op == Op::Hardmax {
            // 1 at the first maximum, 0 elsewhere
            let f = konst(&mut k.b, 0.0, Ty::Bool);
            k.fold_n(len, &[f], |k, j, acc| {
                let a = at(k, j);
                let v = k.load(x, &a);
                let b = &mut k.b;
                let eq = s::cmp(b, "eq", &v, &m);
                let t = konst(b, 1.0, Ty::Bool);
                let seen = Val::new(b.emit(format!("arith.xori {}, {} : i1", acc[0].v, t.v)), Ty::Bool);
                let hit = Val::new(b.emit(format!("arith.andi {}, {} : i1", eq.v, seen.v)), Ty::Bool);
                let y = s::cast(b, &hit, ct);
                k.store(out, &a, &y);
                let b = &mut k.b;
                Ok(vec![Val::new(b.emit(format!("arith.ori {}, {} : i1", acc[0].v, hit.v)), Ty::Bool)])
            })?;
            return Ok(());
        }
        let z = konst(&mut k.b, 0.0, ct);
        let sum = k.fold_n(len, &[z], |k, j, acc| {
            let a = at(k, j);
            let v = k.load(x, &a);
            let d = s::sub(&mut k.b, &v, &m);
            let e = s::math(&mut k.b, "exp", &d);
            Ok(vec![s::add(&mut k.b, &acc[0], &e)])
        })?;
        let sum = sum[0].clone();
        let ls = s::math(&mut k.b, "log", &sum);
        k.fold_n(len, &[], |k, j, _| {
            let a = at(k, j);
            let v = k.load(x, &a);
            let d = s::sub(&mut k.b, &v, &m);
            let y = if op == Op::LogSoftmax {
                s::sub(&mut k.b, &d, &ls)
            } else {
                let e = s::math(&mut k.b, "exp", &d);
                s::div(&mut k.b, &e, &sum)
            };
            k.store(out, &a, &y);
            Ok(vec![])
        })?;
        Ok(())
    })?;
    Ok(rows)
}

/// CumSum and CumProd: one thread per line along the axis.
pub fn cumulative(k: &mut Kern) -> R<usize> {
    let shape = k.in_shape(0)?;
    let ax_v = k.konst_i64(1, "axis")?;
    let ax = axis(*ax_v.first().ok_or("axis is empty")?, shape.len())?;
    let a = k.attrs();
    let exclusive = a.int("exclusive", 0)? != 0;
    let reverse = a.int("reverse", 0)? != 0;
    let prod = k.n.op == Op::CumProd;
    let (outer, len, inner) = around(&shape, ax);
    let ct = Ty::of(k.in_dtype(0)?);
    let (x, out) = (k.input(0)?, k.output(0)?);
    let rows = outer * inner;
    k.for_each(rows, |k, i| {
        let o = k.ixc("divui", i, inner);
        let ii = k.ixc("remui", i, inner);
        let t = k.ixc("muli", &o, len * inner);
        let base = k.ix("addi", &t, &ii);
        let init = konst(&mut k.b, if prod { 1.0 } else { 0.0 }, ct);
        k.fold_n(len, &[init], |k, step, acc| {
            let j = if reverse {
                let last = k.index(len - 1);
                k.ix("subi", &last, step)
            } else {
                step.to_string()
            };
            let t = k.ixc("muli", &j, inner);
            let at = k.ix("addi", &base, &t);
            let v = k.load(x, &at);
            let next = if prod { s::mul(&mut k.b, &acc[0], &v) } else { s::add(&mut k.b, &acc[0], &v) };
            let y = if exclusive { acc[0].clone() } else { next.clone() };
            k.store(out, &at, &y);
            Ok(vec![next])
        })?;
        Ok(())
    })?;
    Ok(rows)
}

/// An element of a TopK line (the line's entries at `base + j·inner`): what counts as ranked
/// ahead of it.
struct Line<'s> {
    x: usize,
    base: &'s str,
    inner: usize,
    pos: &'s str,
    me: &'s Val,
    largest: bool,
}

impl Line<'_> {
    /// `count` plus one when entry `j` ranks ahead (larger, or equal at a lower position; smaller
    /// for largest = 0).
    fn count_ahead(&self, k: &mut Kern, j: &str, count: &Val) -> Val {
        let t = k.ixc("muli", j, self.inner);
        let at = k.ix("addi", self.base, &t);
        let v = k.load(self.x, &at);
        let b = &mut k.b;
        let before = s::cmp(b, if self.largest { "gt" } else { "lt" }, &v, self.me);
        let eq = s::cmp(b, "eq", &v, self.me);
        let lower = Val::new(b.emit(format!("arith.cmpi ult, {j}, {} : index", self.pos)), Ty::Bool);
        let tie = Val::new(b.emit(format!("arith.andi {}, {} : i1", eq.v, lower.v)), Ty::Bool);
        let ahead = Val::new(b.emit(format!("arith.ori {}, {} : i1", before.v, tie.v)), Ty::Bool);
        let one = b.index(1);
        let inc = b.emit(format!("arith.addi {}, {one} : index", count.v));
        Val::new(b.emit(format!("arith.select {}, {inc}, {} : index", ahead.v, count.v)), Ty::Index)
    }
}

/// TopK: each input element counts the elements of its line ranked before it (larger, or equal
/// at a lower index; smaller for largest = 0) and, when that rank is below K, writes itself and
/// its index there.
pub fn topk(k: &mut Kern) -> R<usize> {
    let shape = k.in_shape(0)?;
    let a = k.attrs();
    let kk = if k.opset() < 10 { a.int("k", 0)? } else { *k.konst_i64(1, "K")?.first().ok_or("K is empty")? };
    let ax = axis(a.int("axis", -1)?, shape.len())?;
    let largest = a.int("largest", 1)? != 0;
    let (_, len, inner) = around(&shape, ax);
    if kk < 0 || kk as usize > len {
        return Err(format!("K = {kk} is out of range for an axis of length {len}"));
    }
    let kk = kk as usize;
    let x = k.input(0)?;
    let vals = if k.out_val(0).is_some() { Some(k.output(0)?) } else { None };
    let idxs = if k.out_val(1).is_some() { Some(k.output(1)?) } else { None };
    let n = numel(&shape);
    k.for_each(n, |k, i| {
        let o = k.ixc("divui", i, len * inner);
        let rem = k.ixc("remui", i, len * inner);
        let pos = k.ixc("divui", &rem, inner);
        let ii = k.ixc("remui", &rem, inner);
        let t = k.ixc("muli", &o, len * inner);
        let base = k.ix("addi", &t, &ii);
        let me = k.load(x, i);
        let zero = k.index(0);
        let line = Line { x, base: &base, inner, pos: &pos, me: &me, largest };
        let rank =
            k.fold_n(len, &[Val::new(zero, Ty::Index)], |k, j, acc| Ok(vec![line.count_ahead(k, j, &acc[0])]))?;
        let rank = rank[0].v.clone();
        let kv = k.index(kk);
        let kept = k.icmp("ult", &rank, &kv);
        k.when(&kept, |k| {
            let t = k.ixc("muli", &o, kk * inner);
            let r = k.ixc("muli", &rank, inner);
            let t = k.ix("addi", &t, &r);
            let at = k.ix("addi", &t, &ii);
            if let Some(p) = vals {
                k.store(p, &at, &me);
            }
            if let Some(p) = idxs {
                let pv = s::from_index(&mut k.b, &pos, Ty::Int(64, true));
                k.store(p, &at, &pv);
            }
            Ok(())
        })?;
        Ok(())
    })?;
    let _ = DType::I64;
    Ok(n)
}

/// TopKBounded(x, K, length) (interp/bounded.rs): TopK of the first `length` entries along
/// `axis` with K read at run time, both results padded with zeros to `bound`. One thread per
/// input entry (ranked among the valid ones) and per padded output entry (zeroed past K); long
/// lines of floats run by selection in one block instead (select.rs).
pub fn topk_bounded(k: &mut Kern) -> R<usize> {
    let shape = k.in_shape(0)?;
    let a = k.attrs();
    let ax = axis(a.int("axis", -1)?, shape.len())?;
    let largest = a.int("largest", 1)? != 0;
    let bound = a.int("bound", 0)?.max(0) as usize;
    let (_, len, inner) = around(&shape, ax);
    if bound > len {
        return Err(format!("the bound {bound} exceeds the axis length {len}"));
    }
    if super::select::selects(k.in_dtype(0)?, len, bound) {
        return super::select::topk_bounded(k, ax, largest, bound);
    }
    let x = k.input(0)?;
    let vals = k.output(0)?;
    let idxs = k.output(1)?;
    let n = numel(&shape);
    let n_out = n / len.max(1) * bound;
    let it = Ty::Int(64, true);
    k.for_each(n.max(n_out), |k, i| {
        // valid entries: min(length, axis size); results: min(K, valid, bound)
        let valid = super::bounded::count_in(k, 2, len, len)?;
        let kk = super::bounded::count_in(k, 1, bound, bound)?;
        let kk = k.ix("minui", &kk, &valid);
        // a padded output entry past K: zero
        let nov = k.index(n_out);
        let is_out = k.icmp("ult", i, &nov);
        k.when(&is_out, |k| {
            let rem = k.ixc("remui", i, bound * inner);
            let pos = k.ixc("divui", &rem, inner);
            let past = k.icmp("uge", &pos, &kk);
            k.when(&past, |k| {
                let zv = konst(&mut k.b, 0.0, Ty::of(k.params[vals].dtype));
                k.store(vals, i, &zv);
                let zi = s::int_konst(&mut k.b, 0, it);
                k.store(idxs, i, &zi);
                Ok(())
            })
        })?;
        // a valid input entry: its rank among the valid ones, kept when below K
        let nv = k.index(n);
        let is_in = k.icmp("ult", i, &nv);
        k.when(&is_in, |k| {
            let o = k.ixc("divui", i, len * inner);
            let rem = k.ixc("remui", i, len * inner);
            let pos = k.ixc("divui", &rem, inner);
            let ii = k.ixc("remui", &rem, inner);
            let mine = k.icmp("ult", &pos, &valid);
            k.when(&mine, |k| {
                let t = k.ixc("muli", &o, len * inner);
                let base = k.ix("addi", &t, &ii);
                let me = k.load(x, i);
                // entries ranked ahead, counted TOPK_RUN at a time and no further once K are
                // (its rank no longer matters): about K·V·ln(V/K) loads for V entries, not V²
                let line = Line { x, base: &base, inner, pos: &pos, me: &me, largest };
                let run = crate::knobs::TOPK_RUN;
                let runs = k.ixc("addi", &valid, run - 1);
                let runs = k.ixc("divui", &runs, run);
                let zero = k.index(0);
                let rank = k.fold(&zero.clone(), &runs, &[Val::new(zero, Ty::Index)], |k, r, acc| {
                    let open = k.icmp("ult", &acc[0].v, &kk);
                    k.if_else(
                        &open,
                        &[Ty::Index],
                        |k| {
                            let lo = k.ixc("muli", r, run);
                            let hi = k.ixc("addi", &lo, run);
                            let hi = k.ix("minui", &hi, &valid);
                            k.fold(&lo, &hi, acc, |k, j, acc| Ok(vec![line.count_ahead(k, j, &acc[0])]))
                        },
                        |_| Ok(acc.to_vec()),
                    )
                })?;
                let rank = rank[0].v.clone();
                let kept = k.icmp("ult", &rank, &kk);
                k.when(&kept, |k| {
                    let t = k.ixc("muli", &o, bound * inner);
                    let r = k.ixc("muli", &rank, inner);
                    let t = k.ix("addi", &t, &r);
                    let at = k.ix("addi", &t, &ii);
                    k.store(vals, &at, &me);
                    let pv = s::from_index(&mut k.b, &pos, it);
                    k.store(idxs, &at, &pv);
                    Ok(())
                })
            })
        })
    })?;
    Ok(n.max(n_out))
}
