//! Normalizations (interp/norm.rs): one thread per group of elements that share statistics
//! (a row of LayerNorm, a channel of InstanceNorm, ...), two passes for the moments and one to
//! write; BatchNorm (inference) and LRN one thread per element.
use super::scalar::{self as s, konst, Ty, Val};
use super::{Kern, R};
use xforge_ir::tensor::{numel, strides};
use xforge_ir::Op;

fn axis(a: i64, r: usize) -> R<usize> {
    let v = if a < 0 { a + r as i64 } else { a };
    if v < 0 || v as usize >= r.max(1) {
        return Err(format!("axis {a} is out of range for rank {r}"));
    }
    Ok(v as usize)
}

fn float_type(k: &Kern) -> R<Ty> {
    let dt = k.in_dtype(0)?;
    if !dt.is_float() {
        return Err(format!("{} takes floats", k.n.op));
    }
    Ok(Ty::of(dt))
}

/// Mean and variance of `len` elements at `base + j·step` (j < len), two passes.
fn moments(k: &mut Kern, x: usize, base: &str, len: usize, step: usize, ct: Ty, rms: bool) -> R<(Val, Val)> {
    let at = |k: &mut Kern, j: &str| -> String {
        let t = k.ixc("muli", j, step);
        k.ix("addi", base, &t)
    };
    let cnt = konst(&mut k.b, len as f64, ct);
    let mean = if rms {
        konst(&mut k.b, 0.0, ct)
    } else {
        let z = konst(&mut k.b, 0.0, ct);
        let sum = k.fold_n(len, &[z], |k, j, acc| {
            let a = at(k, j);
            let v = k.load(x, &a);
            let v = s::cast(&mut k.b, &v, ct);
            Ok(vec![s::add(&mut k.b, &acc[0], &v)])
        })?;
        s::div(&mut k.b, &sum[0], &cnt)
    };
    let z = konst(&mut k.b, 0.0, ct);
    let sq = k.fold_n(len, &[z], |k, j, acc| {
        let a = at(k, j);
        let v = k.load(x, &a);
        let v = s::cast(&mut k.b, &v, ct);
        let d = s::sub(&mut k.b, &v, &mean);
        let d2 = s::mul(&mut k.b, &d, &d);
        Ok(vec![s::add(&mut k.b, &acc[0], &d2)])
    })?;
    let var = s::div(&mut k.b, &sq[0], &cnt);
    Ok((mean, var))
}

/// 1 / sqrt(var + eps).
fn inv_std(k: &mut Kern, var: &Val, eps: f64) -> Val {
    let e = konst(&mut k.b, eps, var.ty);
    let t = s::add(&mut k.b, var, &e);
    let sq = s::math(&mut k.b, "sqrt", &t);
    let one = konst(&mut k.b, 1.0, var.ty);
    s::div(&mut k.b, &one, &sq)
}

/// LayerNormalization and RMSNormalization over the axes from `axis` on; the optional Mean and
/// InvStdDev outputs per row.
pub fn layer_norm(k: &mut Kern) -> R<usize> {
    let rms = k.n.op == Op::RMSNormalization;
    let shape = k.in_shape(0)?;
    let ax = axis(k.attrs().int("axis", -1)?, shape.len())?;
    let eps = k.attrs().float("epsilon", 1e-5)? as f64;
    let (outer, len) = (numel(&shape[..ax]), numel(&shape[ax..]));
    let ct = float_type(k)?;
    let x = k.input(0)?;
    let scale = (k.input(1)?, k.in_shape(1)?);
    let bias = if !rms && k.in_val(2).is_some() { Some((k.input(2)?, k.in_shape(2)?)) } else { None };
    let out = k.output(0)?;
    let stats = if rms {
        (None, None)
    } else {
        (k.out_val(1).map(|_| k.output(1)).transpose()?, k.out_val(2).map(|_| k.output(2)).transpose()?)
    };
    k.for_each(outer, |k, row| {
        let base = k.ixc("muli", row, len);
        let (mean, var) = moments(k, x, &base, len, 1, ct, rms)?;
        let inv = inv_std(k, &var, eps);
        if let Some(p) = stats.0 {
            k.store(p, row, &mean);
        }
        if let Some(p) = stats.1 {
            k.store(p, row, &inv);
        }
        k.fold_n(len, &[], |k, j, _| {
            let e = k.ix("addi", &base, j);
            let v = k.load(x, &e);
            let d = s::sub(&mut k.b, &v, &mean);
            let mut y = s::mul(&mut k.b, &d, &inv);
            let c = k.coords(&e, &shape);
            let at = k.broadcast_at(&c, &scale.1);
            let sv = k.load(scale.0, &at);
            y = s::mul(&mut k.b, &y, &sv);
            if let Some((bp, bs)) = &bias {
                let at = k.broadcast_at(&c, bs);
                let bv = k.load(*bp, &at);
                y = s::add(&mut k.b, &y, &bv);
            }
            k.store(out, &e, &y);
            Ok(vec![])
        })?;
        Ok(())
    })?;
    Ok(outer)
}

/// InstanceNormalization and GroupNormalization: moments per (n, group).
pub fn instance_group_norm(k: &mut Kern) -> R<usize> {
    let shape = k.in_shape(0)?;
    if shape.len() < 2 {
        return Err("input must be (N, C, ...)".into());
    }
    let (n, c) = (shape[0], shape[1]);
    let eps = k.attrs().float("epsilon", 1e-5)? as f64;
    let group_op = k.n.op == Op::GroupNormalization;
    let groups = if group_op { k.attrs().int("num_groups", 0)? as usize } else { c };
    if groups == 0 || c % groups != 0 {
        return Err(format!("num_groups {groups} does not divide {c} channels"));
    }
    let per_group = group_op && k.opset() < 21;
    let inner = numel(&shape[2..]);
    let len = c / groups * inner;
    let ct = float_type(k)?;
    let (x, sp, bp, out) = (k.input(0)?, k.input(1)?, k.input(2)?, k.output(0)?);
    let rows = n * groups;
    k.for_each(rows, |k, row| {
        let base = k.ixc("muli", row, len);
        let (mean, var) = moments(k, x, &base, len, 1, ct, false)?;
        let inv = inv_std(k, &var, eps);
        k.fold_n(len, &[], |k, j, _| {
            let e = k.ix("addi", &base, j);
            let q = k.ixc("divui", &e, inner);
            let ch = k.ixc("remui", &q, c);
            let jx = if per_group { k.ixc("divui", &ch, c / groups) } else { ch };
            let v = k.load(x, &e);
            let d = s::sub(&mut k.b, &v, &mean);
            let y = s::mul(&mut k.b, &d, &inv);
            let sv = k.load(sp, &jx);
            let y = s::mul(&mut k.b, &y, &sv);
            let bv = k.load(bp, &jx);
            let y = s::add(&mut k.b, &y, &bv);
            k.store(out, &e, &y);
            Ok(vec![])
        })?;
        Ok(())
    })?;
    Ok(rows)
}

/// LpNormalization along one axis (p = 1 or 2): one thread per line.
pub fn lp_norm(k: &mut Kern) -> R<usize> {
    let shape = k.in_shape(0)?;
    let ax = axis(k.attrs().int("axis", -1)?, shape.len())?;
    let p = k.attrs().int("p", 2)?;
    let (outer, len, inner) = (numel(&shape[..ax]), shape[ax], numel(&shape[ax + 1..]));
    let ct = float_type(k)?;
    let (x, out) = (k.input(0)?, k.output(0)?);
    let rows = outer * inner;
    k.for_each(rows, |k, i| {
        let o = k.ixc("divui", i, inner);
        let ii = k.ixc("remui", i, inner);
        let t = k.ixc("muli", &o, len * inner);
        let base = k.ix("addi", &t, &ii);
        let z = konst(&mut k.b, 0.0, ct);
        let acc = k.fold_n(len, &[z], |k, j, acc| {
            let t = k.ixc("muli", j, inner);
            let a = k.ix("addi", &base, &t);
            let v = k.load(x, &a);
            let t = if p == 1 { s::abs(&mut k.b, &v) } else { s::mul(&mut k.b, &v, &v) };
            Ok(vec![s::add(&mut k.b, &acc[0], &t)])
        })?;
        let norm = if p == 1 { acc[0].clone() } else { s::math(&mut k.b, "sqrt", &acc[0]) };
        let z = konst(&mut k.b, 0.0, ct);
        let zero_norm = s::cmp(&mut k.b, "eq", &norm, &z);
        k.fold_n(len, &[], |k, j, _| {
            let t = k.ixc("muli", j, inner);
            let a = k.ix("addi", &base, &t);
            let v = k.load(x, &a);
            let q = s::div(&mut k.b, &v, &norm);
            let y = s::select(&mut k.b, &zero_norm, &z, &q);
            k.store(out, &a, &y);
            Ok(vec![])
        })?;
        Ok(())
    })?;
    Ok(rows)
}

/// MeanVarianceNormalization over `axes` (default 0, 2, 3): one thread per kept coordinate.
pub fn mean_variance(k: &mut Kern) -> R<usize> {
    let shape = k.in_shape(0)?;
    let r = shape.len();
    let axes: Vec<usize> =
        k.attrs().ints_opt("axes")?.unwrap_or(vec![0, 2, 3]).iter().map(|&a| axis(a, r)).collect::<R<_>>()?;
    let kept: Vec<usize> = (0..r).map(|d| if axes.contains(&d) { 1 } else { shape[d] }).collect();
    let red: Vec<usize> = (0..r).filter(|d| axes.contains(d)).map(|d| shape[d]).collect();
    let red_axes: Vec<usize> = (0..r).filter(|d| axes.contains(d)).collect();
    let st = strides(&shape);
    let count = numel(&red);
    let ct = float_type(k)?;
    let (x, out) = (k.input(0)?, k.output(0)?);
    let n = numel(&kept);
    k.for_each(n, |k, i| {
        let kc = k.coords(i, &kept);
        let base = k.flat(&kc, &shape);
        let offset = |k: &mut Kern, j: &str| -> String {
            let rc = k.coords(j, &red);
            let mut off = base.clone();
            for (q, &d) in red_axes.iter().enumerate() {
                let t = k.ixc("muli", &rc[q], st[d]);
                off = k.ix("addi", &off, &t);
            }
            off
        };
        let z = konst(&mut k.b, 0.0, ct);
        let sums = k.fold_n(count, &[z.clone(), z], |k, j, acc| {
            let a = offset(k, j);
            let v = k.load(x, &a);
            let v2 = s::mul(&mut k.b, &v, &v);
            Ok(vec![s::add(&mut k.b, &acc[0], &v), s::add(&mut k.b, &acc[1], &v2)])
        })?;
        let cnt = konst(&mut k.b, count as f64, ct);
        let mean = s::div(&mut k.b, &sums[0], &cnt);
        let m2 = s::div(&mut k.b, &sums[1], &cnt);
        let mm = s::mul(&mut k.b, &mean, &mean);
        let var = s::sub(&mut k.b, &m2, &mm);
        let z = konst(&mut k.b, 0.0, ct);
        let var = s::max(&mut k.b, &var, &z);
        let sd = s::math(&mut k.b, "sqrt", &var);
        let e = konst(&mut k.b, 1e-9, ct);
        let den = s::add(&mut k.b, &sd, &e);
        k.fold_n(count, &[], |k, j, _| {
            let a = offset(k, j);
            let v = k.load(x, &a);
            let d = s::sub(&mut k.b, &v, &mean);
            let y = s::div(&mut k.b, &d, &den);
            k.store(out, &a, &y);
            Ok(vec![])
        })?;
        Ok(())
    })?;
    Ok(n)
}

/// LRN across channels: one thread per element.
pub fn lrn(k: &mut Kern) -> R<usize> {
    let shape = k.in_shape(0)?;
    let a = k.attrs();
    let (alpha, beta, bias) =
        (a.float("alpha", 1e-4)? as f64, a.float("beta", 0.75)? as f64, a.float("bias", 1.0)? as f64);
    let size = a.int("size", 0)? as usize;
    if shape.len() < 2 || size == 0 {
        return Err("LRN needs (N, C, ...) input and size >= 1".into());
    }
    let c = shape[1];
    let inner = numel(&shape[2..]);
    let (lo, hi) = ((size - 1) / 2, size.div_ceil(2) - 1);
    let ct = float_type(k)?;
    let (x, out) = (k.input(0)?, k.output(0)?);
    let n = numel(&shape);
    k.for_each(n, |k, i| {
        let q = k.ixc("divui", i, inner);
        let ch = k.ixc("remui", &q, c);
        let t = k.ixc("muli", &ch, inner);
        let base = k.ix("subi", i, &t);
        // channels max(ch − lo, 0) ..= min(ch + hi, c − 1)
        let lov = k.index(lo);
        let under = k.icmp("ult", &ch, &lov);
        let from0 = k.ixc("subi", &ch, lo);
        let z = k.index(0);
        let from = k.isel(&under, &z, &from0);
        let to1 = k.ixc("addi", &ch, hi + 1);
        let cv = k.index(c);
        let over = k.icmp("ugt", &to1, &cv);
        let to = k.isel(&over, &cv, &to1);
        let zf = konst(&mut k.b, 0.0, ct);
        let sq = k.fold(&from, &to, &[zf], |k, j, acc| {
            let t = k.ixc("muli", j, inner);
            let a = k.ix("addi", &base, &t);
            let v = k.load(x, &a);
            let v2 = s::mul(&mut k.b, &v, &v);
            Ok(vec![s::add(&mut k.b, &acc[0], &v2)])
        })?;
        let b = &mut k.b;
        let coef = konst(b, alpha / size as f64, ct);
        let t = s::mul(b, &coef, &sq[0]);
        let bi = konst(b, bias, ct);
        let t = s::add(b, &bi, &t);
        let be = konst(b, beta, ct);
        let p = Val::new(b.emit(format!("math.powf {}, {} : {}", t.v, be.v, ct.mlir())), ct);
        let v = k.load(x, i);
        let y = s::div(&mut k.b, &v, &p);
        k.store(out, i, &y);
        Ok(())
    })?;
    Ok(n)
}

/// BatchNormalization: in inference mode a per-channel affine, one thread per element; in
/// training mode one thread per channel takes the batch's moments (population variance),
/// normalizes with them and blends the running ones (outputs 1 and 2).
pub fn batch_norm(k: &mut Kern) -> R<usize> {
    let training = k.attrs().int("training_mode", 0)? != 0;
    let shape = k.in_shape(0)?;
    if shape.len() < 2 {
        return Err("input must be (N, C, ...)".into());
    }
    let (n, c) = (shape[0], shape[1]);
    let inner = numel(&shape[2..]);
    let eps = k.attrs().float("epsilon", 1e-5)? as f64;
    let momentum = k.attrs().float("momentum", 0.9)? as f64;
    let ct = float_type(k)?;
    let x = k.input(0)?;
    let (sp, bp, mp, vp) = (k.input(1)?, k.input(2)?, k.input(3)?, k.input(4)?);
    let out = k.output(0)?;
    if !training {
        if k.n.outputs.iter().skip(1).any(|o| o.is_some()) {
            return Err("running statistics are outputs only in training mode".into());
        }
        let total = numel(&shape);
        k.for_each(total, |k, i| {
            let q = k.ixc("divui", i, inner);
            let ch = k.ixc("remui", &q, c);
            let v = k.load(x, i);
            let (mv, vv) = (k.load(mp, &ch), k.load(vp, &ch));
            let y = affine(k, &v, &mv, &vv, sp, bp, &ch, eps, ct);
            k.store(out, i, &y);
            Ok(())
        })?;
        return Ok(total);
    }
    let running = (
        if k.out_val(1).is_some() { Some(k.output(1)?) } else { None },
        if k.out_val(2).is_some() { Some(k.output(2)?) } else { None },
    );
    k.for_each(c, |k, ch| {
        // element j of the channel: batch j / inner, position j % inner
        let at = |k: &mut Kern, j: &str| -> String {
            let b = k.ixc("divui", j, inner);
            let p = k.ixc("remui", j, inner);
            let t = k.ixc("muli", &b, c);
            let t = k.ix("addi", &t, ch);
            let t = k.ixc("muli", &t, inner);
            k.ix("addi", &t, &p)
        };
        let count = n * inner;
        let z = konst(&mut k.b, 0.0, ct);
        let sum = k.fold_n(count, &[z.clone()], |k, j, acc| {
            let a = at(k, j);
            let v = k.load(x, &a);
            Ok(vec![s::add(&mut k.b, &acc[0], &v)])
        })?;
        let cnt = konst(&mut k.b, count as f64, ct);
        let mean = s::div(&mut k.b, &sum[0], &cnt);
        let sq = k.fold_n(count, &[z], |k, j, acc| {
            let a = at(k, j);
            let v = k.load(x, &a);
            let d = s::sub(&mut k.b, &v, &mean);
            let d2 = s::mul(&mut k.b, &d, &d);
            Ok(vec![s::add(&mut k.b, &acc[0], &d2)])
        })?;
        let var = s::div(&mut k.b, &sq[0], &cnt);
        k.fold_n(count, &[], |k, j, _| {
            let a = at(k, j);
            let v = k.load(x, &a);
            let y = affine(k, &v, &mean, &var, sp, bp, ch, eps, ct);
            k.store(out, &a, &y);
            Ok(vec![])
        })?;
        let blend = |k: &mut Kern, run: usize, cur: &Val| -> Val {
            let r = k.load(run, ch);
            let r = s::cast(&mut k.b, &r, ct);
            let (m, m1) = (konst(&mut k.b, momentum, ct), konst(&mut k.b, 1.0 - momentum, ct));
            let a = s::mul(&mut k.b, &r, &m);
            let b = s::mul(&mut k.b, cur, &m1);
            s::add(&mut k.b, &a, &b)
        };
        if let Some(p) = running.0 {
            let v = blend(k, mp, &mean);
            k.store(p, ch, &v);
        }
        if let Some(p) = running.1 {
            let v = blend(k, vp, &var);
            k.store(p, ch, &v);
        }
        Ok(())
    })?;
    Ok(c)
}

/// (x − mean) / sqrt(var + eps) · scale[ch] + bias[ch].
#[allow(clippy::too_many_arguments)]
fn affine(k: &mut Kern, x: &Val, mean: &Val, var: &Val, sp: usize, bp: usize, ch: &str, eps: f64, ct: Ty) -> Val {
    let var = s::cast(&mut k.b, var, ct);
    let inv = inv_std(k, &var, eps);
    let (sv, bv) = (k.load(sp, ch), k.load(bp, ch));
    let b = &mut k.b;
    let mean = s::cast(b, mean, ct);
    let x = s::cast(b, x, ct);
    let d = s::sub(b, &x, &mean);
    let y = s::mul(b, &d, &inv);
    let sv = s::cast(b, &sv, ct);
    let y = s::mul(b, &y, &sv);
    let bv = s::cast(b, &bv, ct);
    s::add(b, &y, &bv)
}
