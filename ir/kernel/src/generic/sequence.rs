//! LinearAttention (interp/sequence.rs) as the recurrence it defines, one thread per column j of
//! a KV head's (d_k, d_v) state: every update rule touches a column only through that column
//! (S[:, j] ← e^g ⊙ S[:, j] + k · w_j, w_j = v_j or β(v_j − k·S[:, j])), so a thread carries its
//! d_k states in registers through the sequence, reads the step's key (the same for all its
//! head's threads) and writes output column j of each query head it serves. No barriers: the
//! host emulator runs it. Plain, not fast: the chunked tensor-core form is the template's work.
use super::scalar::{self as s, konst, Ty, Val};
use super::{Kern, R};
use xforge_ir::sequence_shapes::{linear_attention_heads, UpdateRule};

/// The most state rows a thread carries (registers: d_k values per thread).
const MAX_KEY_DIM: usize = 256;

pub fn linear_attention(k: &mut Kern) -> R<usize> {
    let rule = UpdateRule::of(k.n)?;
    let (hq, hk) = linear_attention_heads(k.n)?;
    let (qs, vs) = (k.in_shape(0)?, k.in_shape(2)?);
    let [b, t, qw] = qs[..] else { return Err("query must be (batch, sequence, heads · d_k)".into()) };
    let (dk, dv, group) = (qw / hq, vs[2] / hk, hq / hk);
    if dk > MAX_KEY_DIM {
        return Err(format!("d_k {dk} is over the {MAX_KEY_DIM} state rows a thread carries"));
    }
    let scale = match k.attrs().float("scale", 0.0)? as f64 {
        x if x == 0.0 => 1.0 / (dk as f64).sqrt(),
        x => x,
    };
    let ct = if k.in_dtype(0)? == xforge_ir::DType::F64 { Ty::F64 } else { Ty::F32 };
    let (q, key, v) = (k.input(0)?, k.input(1)?, k.input(2)?);
    let past = if k.in_val(3).is_some() { Some(k.input(3)?) } else { None };
    let decay = match k.in_val(4) {
        Some(_) if rule.gated() => Some((k.input(4)?, k.in_shape(4)?[2])),
        _ => None,
    };
    let beta = match k.in_val(5) {
        Some(_) if rule.delta() => Some((k.input(5)?, k.in_shape(5)?[2])),
        _ => None,
    };
    let out = k.output(0)?;
    let present = if k.out_val(1).is_some() { Some(k.output(1)?) } else { None };
    k.for_each(b * hk * dv, |k, e| {
        let c = k.coords(e, &[b, hk, dv]);
        let (bb, kh, j) = (&c[0], &c[1], &c[2]);
        // state row i of this column: ((bb·hk + kh)·dk + i)·dv + j
        let head = k.ixc("muli", bb, hk);
        let head = k.ix("addi", &head, kh);
        let at_state = |k: &mut Kern, i: usize| {
            let r = k.ixc("muli", &head, dk);
            let r = k.ixc("addi", &r, i);
            let r = k.ixc("muli", &r, dv);
            k.ix("addi", &r, j)
        };
        let init: Vec<Val> = (0..dk)
            .map(|i| match past {
                Some(p) => {
                    let at = at_state(k, i);
                    let x = k.load(p, &at);
                    s::cast(&mut k.b, &x, ct)
                }
                None => konst(&mut k.b, 0.0, ct),
            })
            .collect();
        let last = k.fold_n(t, &init, |k, step, st| {
            let row = k.ixc("muli", bb, t);
            let row = k.ix("addi", &row, step);
            // this step's (row·heads + head)·width + at
            let at = |k: &mut Kern, heads: usize, h: &str, width: usize, i: &str| {
                let r = k.ixc("muli", &row, heads);
                let r = k.ix("addi", &r, h);
                let r = k.ixc("muli", &r, width);
                k.ix("addi", &r, i)
            };
            let load = |k: &mut Kern, p: usize, a: &str| {
                let x = k.load(p, a);
                s::cast(&mut k.b, &x, ct)
            };
            let mut st: Vec<Val> = st.to_vec();
            if let Some((dp, width)) = decay {
                let per_head = width == hk;
                let mut e = None;
                for (i, si) in st.iter_mut().enumerate() {
                    if e.is_none() || !per_head {
                        let a = if per_head {
                            let z = k.index(0);
                            at(k, hk, kh, 1, &z)
                        } else {
                            let ii = k.index(i);
                            at(k, hk, kh, dk, &ii)
                        };
                        let g = load(k, dp, &a);
                        e = Some(s::math(&mut k.b, "exp", &g));
                    }
                    *si = s::mul(&mut k.b, si, e.as_ref().expect("set above"));
                }
            }
            let keys: Vec<Val> = (0..dk)
                .map(|i| {
                    let ii = k.index(i);
                    let a = at(k, hk, kh, dk, &ii);
                    load(k, key, &a)
                })
                .collect();
            let a = at(k, hk, kh, dv, j);
            let mut w = load(k, v, &a);
            if let Some((bp, width)) = beta {
                let mut u = konst(&mut k.b, 0.0, ct);
                for (si, ki) in st.iter().zip(&keys) {
                    let p = s::mul(&mut k.b, si, ki);
                    u = s::add(&mut k.b, &u, &p);
                }
                let z = k.index(0);
                let a = if width == 1 { at(k, 1, &z, 1, &z) } else { at(k, hk, kh, 1, &z) };
                let bv = load(k, bp, &a);
                let d = s::sub(&mut k.b, &w, &u);
                w = s::mul(&mut k.b, &bv, &d);
            }
            for (si, ki) in st.iter_mut().zip(&keys) {
                let p = s::mul(&mut k.b, ki, &w);
                *si = s::add(&mut k.b, si, &p);
            }
            // the query heads of this KV head read the new state
            let first = k.ixc("muli", kh, group);
            let sc = konst(&mut k.b, scale, ct);
            let st_now = st.clone();
            k.fold_n(group, &[], |k, g, _| {
                let qh = k.ix("addi", &first, g);
                let mut o = konst(&mut k.b, 0.0, ct);
                for (i, si) in st_now.iter().enumerate() {
                    let ii = k.index(i);
                    let a = at(k, hq, &qh, dk, &ii);
                    let qv = load(k, q, &a);
                    let p = s::mul(&mut k.b, &qv, si);
                    o = s::add(&mut k.b, &o, &p);
                }
                let o = s::mul(&mut k.b, &o, &sc);
                let a = at(k, hq, &qh, dv, j);
                k.store(out, &a, &o);
                Ok(vec![])
            })?;
            Ok(st)
        })?;
        if let Some(p) = present {
            for (i, si) in last.iter().enumerate() {
                let at = at_state(k, i);
                k.store(p, &at, si);
            }
        }
        Ok(())
    })?;
    Ok(b * hk * dv)
}
