//! Matrix products of any dtype (interp/linalg.rs): one thread per output element summing its
//! dot product (floats accumulate in f32, f64 in f64, integers in their type, wrapping).
use super::scalar::{self as s, konst, Ty};
use super::{Kern, R};
use xforge_ir::interp;
use xforge_ir::tensor::{numel, strides};

pub fn matmul(k: &mut Kern) -> R<usize> {
    let (a0, b0) = (k.in_shape(0)?, k.in_shape(1)?);
    let (mut ash, mut bsh) = (a0.clone(), b0.clone());
    if ash.len() == 1 {
        ash.insert(0, 1);
    }
    if bsh.len() == 1 {
        bsh.push(1);
    }
    let (m, kk) = (ash[ash.len() - 2], ash[ash.len() - 1]);
    let n = bsh[bsh.len() - 1];
    let (ab, bb) = (&ash[..ash.len() - 2], &bsh[..bsh.len() - 2]);
    let rank = ab.len().max(bb.len());
    let mut batch = vec![1; rank];
    for d in 0..rank {
        let x = if d + ab.len() >= rank { ab[d + ab.len() - rank] } else { 1 };
        let y = if d + bb.len() >= rank { bb[d + bb.len() - rank] } else { 1 };
        batch[d] = x.max(y);
    }
    let mut full = batch.clone();
    full.extend([m, n]);
    let total = numel(&full);
    if total != numel(&k.out_shape(0)?) {
        return Err("the output's shape does not match the operands'".into());
    }
    let ct = Ty::of(k.out_dtype(0)?);
    let (x, y, out) = (k.input(0)?, k.input(1)?, k.output(0)?);
    let (ash2, bsh2) = (ash.clone(), bsh.clone());
    k.for_each(total, |k, i| {
        let c = k.coords(i, &full);
        let (bc, i_, j_) = (&c[..rank], c[rank].clone(), c[rank + 1].clone());
        // row starts: A[batch, i, 0], B[batch, 0, j]
        let mut ac: Vec<String> = bc[rank - ab.len()..].to_vec();
        let zero = k.index(0);
        ac.extend([i_, zero.clone()]);
        let mut bcs: Vec<String> = bc[rank - bb.len()..].to_vec();
        bcs.extend([zero, j_]);
        let a_at = k.broadcast_at(&ac, &ash2);
        let b_at = k.broadcast_at(&bcs, &bsh2);
        let init = konst(&mut k.b, 0.0, ct);
        let acc = k.fold_n(kk, &[init], |k, q, acc| {
            let pa = k.ix("addi", &a_at, q);
            let t = k.ixc("muli", q, n);
            let pb = k.ix("addi", &b_at, &t);
            let (va, vb) = (k.load(x, &pa), k.load(y, &pb));
            let p = s::mul(&mut k.b, &va, &vb);
            Ok(vec![s::add(&mut k.b, &acc[0], &p)])
        })?;
        k.store(out, i, &acc[0]);
        Ok(())
    })?;
    Ok(total)
}

pub fn gemm(k: &mut Kern) -> R<usize> {
    let (ash, bsh) = (k.in_shape(0)?, k.in_shape(1)?);
    if ash.len() != 2 || bsh.len() != 2 {
        return Err("A and B must be 2-D".into());
    }
    let a = k.attrs();
    let (ta, tb) = (a.int("transA", 0)? != 0, a.int("transB", 0)? != 0);
    let (alpha, beta) = (a.float("alpha", 1.0)? as f64, a.float("beta", 1.0)? as f64);
    let (m, kk) = if ta { (ash[1], ash[0]) } else { (ash[0], ash[1]) };
    let n = if tb { bsh[0] } else { bsh[1] };
    // element strides of op(A) (row, k) and op(B) (k, col)
    let sa = if ta { (1, m) } else { (kk, 1) };
    let sb = if tb { (1, kk) } else { (n, 1) };
    let ct = Ty::of(k.out_dtype(0)?);
    let (x, y, out) = (k.input(0)?, k.input(1)?, k.output(0)?);
    let c = if k.in_val(2).is_some() { Some((k.input(2)?, k.in_shape(2)?)) } else { None };
    let total = m * n;
    k.for_each(total, |k, i| {
        let rc = k.coords(i, &[m, n]);
        let a0 = k.ixc("muli", &rc[0], sa.0);
        let b0 = k.ixc("muli", &rc[1], sb.1);
        let init = konst(&mut k.b, 0.0, ct);
        let acc = k.fold_n(kk, &[init], |k, q, acc| {
            let t = k.ixc("muli", q, sa.1);
            let pa = k.ix("addi", &a0, &t);
            let t = k.ixc("muli", q, sb.0);
            let pb = k.ix("addi", &b0, &t);
            let (va, vb) = (k.load(x, &pa), k.load(y, &pb));
            let va = s::cast(&mut k.b, &va, ct);
            let vb = s::cast(&mut k.b, &vb, ct);
            let p = s::mul(&mut k.b, &va, &vb);
            Ok(vec![s::add(&mut k.b, &acc[0], &p)])
        })?;
        let al = konst(&mut k.b, alpha, ct);
        let mut v = s::mul(&mut k.b, &acc[0], &al);
        if let Some((cp, cs)) = &c {
            let at = k.broadcast_at(&rc, cs);
            let cv = k.load(*cp, &at);
            let cv = s::cast(&mut k.b, &cv, ct);
            let be = konst(&mut k.b, beta, ct);
            let t = s::mul(&mut k.b, &cv, &be);
            v = s::add(&mut k.b, &v, &t);
        }
        k.store(out, i, &v);
        Ok(())
    })?;
    Ok(total)
}

pub fn einsum(k: &mut Kern) -> R<usize> {
    let eq = k.attrs().string("equation", "")?;
    let mut shapes = vec![];
    let mut ps = vec![];
    for j in 0..k.n.inputs.len() {
        if k.in_val(j).is_some() {
            shapes.push(k.in_shape(j)?);
            ps.push(k.input(j)?);
        }
    }
    let refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
    let plan = interp::einsum_plan(&eq, &refs)?;
    let ct = Ty::of(k.out_dtype(0)?);
    let out = k.output(0)?;
    let total = numel(&plan.out_shape);
    let inner: Vec<usize> = plan.sizes[plan.outputs..].to_vec();
    let inner_n = numel(&inner);
    let _ = strides(&inner);
    k.for_each(total, |k, i| {
        let oc = k.coords(i, &plan.out_shape);
        // each operand's offset from the output labels
        let mut bases = vec![];
        for st in &plan.strides {
            let mut acc = k.index(0);
            for (d, c) in oc.iter().enumerate() {
                if st[d] != 0 {
                    let t = k.ixc("muli", c, st[d]);
                    acc = k.ix("addi", &acc, &t);
                }
            }
            bases.push(acc);
        }
        let init = konst(&mut k.b, 0.0, ct);
        let acc = k.fold_n(inner_n, &[init], |k, q, acc| {
            let ic = k.coords(q, &inner);
            let mut prod = None;
            for (op, st) in plan.strides.iter().enumerate() {
                let mut at = bases[op].clone();
                for (d, c) in ic.iter().enumerate() {
                    let s_ = st[plan.outputs + d];
                    if s_ != 0 {
                        let t = k.ixc("muli", c, s_);
                        at = k.ix("addi", &at, &t);
                    }
                }
                let v = k.load(ps[op], &at);
                let v = s::cast(&mut k.b, &v, ct);
                prod = Some(match prod {
                    None => v,
                    Some(p) => s::mul(&mut k.b, &p, &v),
                });
            }
            let p = prod.ok_or("no operands")?;
            Ok(vec![s::add(&mut k.b, &acc[0], &p)])
        })?;
        k.store(out, i, &acc[0]);
        Ok(())
    })?;
    Ok(total)
}
