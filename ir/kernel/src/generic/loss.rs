//! SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss (interp/loss.rs). Without reduction
//! one thread per (sample, position) computes its loss (and its log-probabilities); `sum` and
//! `mean` reduce to one value, so one thread walks every position.
use super::scalar::{self as s, konst, Ty, Val};
use super::{Kern, R};
use xforge_ir::tensor::numel;
use xforge_ir::Op;

pub fn loss(k: &mut Kern) -> R<usize> {
    let softmax = k.n.op == Op::SoftmaxCrossEntropyLoss;
    let xs = k.in_shape(0)?;
    if xs.len() < 2 {
        return Err("input must be (N, C, ...)".into());
    }
    let (n, c) = (xs[0], xs[1]);
    let inner = numel(&xs[2..]);
    let a = k.attrs();
    let reduction = a.string("reduction", "mean")?;
    let ignore = a.int_opt("ignore_index")?;
    if !matches!(reduction.as_str(), "none" | "sum" | "mean") {
        return Err(format!("unknown reduction '{reduction}'"));
    }
    let dt = k.in_dtype(0)?;
    let ct = if dt == xforge_ir::DType::F64 { Ty::F64 } else { Ty::F32 };
    let (x, t) = (k.input(0)?, k.input(1)?);
    let w = if k.in_val(2).is_some() { Some(k.input(2)?) } else { None };
    let out = k.output(0)?;
    let logp = if softmax && k.out_val(1).is_some() { Some(k.output(1)?) } else { None };
    let positions = n * inner;
    let i64t = Ty::Int(64, true);
    // the loss and weight at position `p` (b·inner + i), writing its log-probabilities
    let one = move |k: &mut Kern, p: &str| -> R<(Val, Val)> {
        let b = k.ixc("divui", p, inner);
        let i = k.ixc("remui", p, inner);
        let t0 = k.ixc("muli", &b, c * inner);
        let base = k.ix("addi", &t0, &i);
        let at = |k: &mut Kern, j: &str| -> String {
            let t = k.ixc("muli", j, inner);
            k.ix("addi", &base, &t)
        };
        // log-sum-exp over the classes (SoftmaxCrossEntropyLoss)
        let (m, ls) = if softmax {
            let init = konst(&mut k.b, f64::NEG_INFINITY, ct);
            let m = k.fold_n(c, &[init], |k, j, acc| {
                let a = at(k, j);
                let v = k.load(x, &a);
                let v = s::cast(&mut k.b, &v, ct);
                Ok(vec![s::max(&mut k.b, &acc[0], &v)])
            })?;
            let m = m[0].clone();
            let z = konst(&mut k.b, 0.0, ct);
            let sum = k.fold_n(c, &[z], |k, j, acc| {
                let a = at(k, j);
                let v = k.load(x, &a);
                let v = s::cast(&mut k.b, &v, ct);
                let d = s::sub(&mut k.b, &v, &m);
                let e = s::math(&mut k.b, "exp", &d);
                Ok(vec![s::add(&mut k.b, &acc[0], &e)])
            })?;
            let ls = s::math(&mut k.b, "log", &sum[0]);
            if let Some(lp) = logp {
                k.fold_n(c, &[], |k, j, _| {
                    let a = at(k, j);
                    let v = k.load(x, &a);
                    let v = s::cast(&mut k.b, &v, ct);
                    let d = s::sub(&mut k.b, &v, &m);
                    let y = s::sub(&mut k.b, &d, &ls);
                    k.store(lp, &a, &y);
                    Ok(vec![])
                })?;
            }
            (Some(m), Some(ls))
        } else {
            (None, None)
        };
        let label = k.load(t, p);
        let label = s::cast(&mut k.b, &label, i64t);
        // the label clamped into the classes (an out-of-range label is the interpreter's error)
        let z = konst(&mut k.b, 0.0, i64t);
        let top = konst(&mut k.b, (c - 1) as f64, i64t);
        let l = s::max(&mut k.b, &label, &z);
        let l = s::min(&mut k.b, &l, &top);
        let li = s::to_index(&mut k.b, &l);
        let a = at(k, &li);
        let v = k.load(x, &a);
        let mut lp = s::cast(&mut k.b, &v, ct);
        if let (Some(m), Some(ls)) = (&m, &ls) {
            let d = s::sub(&mut k.b, &lp, m);
            lp = s::sub(&mut k.b, &d, ls);
        }
        let wv = match w {
            Some(wp) => {
                let wv = k.load(wp, &li);
                s::cast(&mut k.b, &wv, ct)
            }
            None => konst(&mut k.b, 1.0, ct),
        };
        let loss = s::neg(&mut k.b, &lp);
        let loss = s::mul(&mut k.b, &loss, &wv);
        let zf = konst(&mut k.b, 0.0, ct);
        Ok(match ignore {
            Some(ig) => {
                let igv = konst(&mut k.b, ig as f64, i64t);
                let skip = s::cmp(&mut k.b, "eq", &label, &igv);
                (s::select(&mut k.b, &skip, &zf, &loss), s::select(&mut k.b, &skip, &zf, &wv))
            }
            None => (loss, wv),
        })
    };
    if reduction == "none" {
        k.for_each(positions, |k, p| {
            let (l, _) = one(k, p)?;
            k.store(out, p, &l);
            Ok(())
        })?;
        return Ok(positions);
    }
    k.for_each(1, |k, _| {
        let z = konst(&mut k.b, 0.0, ct);
        let acc = k.fold_n(positions, &[z.clone(), z], |k, p, acc| {
            let (l, w) = one(k, p)?;
            Ok(vec![s::add(&mut k.b, &acc[0], &l), s::add(&mut k.b, &acc[1], &w)])
        })?;
        let zero = k.index(0);
        let v = if reduction == "sum" {
            acc[0].clone()
        } else {
            let zf = konst(&mut k.b, 0.0, ct);
            let none = s::cmp(&mut k.b, "eq", &acc[1], &zf);
            let q = s::div(&mut k.b, &acc[0], &acc[1]);
            s::select(&mut k.b, &none, &zf, &q)
        };
        k.store(out, &zero, &v);
        Ok(())
    })?;
    Ok(1)
}
