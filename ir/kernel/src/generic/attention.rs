//! ONNX Attention (interp/attention.rs) in every form the interpreter takes: 3-D or 4-D
//! operands, grouped KV heads, past key/value (the present ones are outputs), additive or
//! boolean masks, causal and sliding windows, non-padded lengths, softcap and the QK output.
//! One thread per output element recomputes its row's scores in three passes (maximum, sum,
//! weighted values) — plain, where the fused attention template does not apply.
use super::scalar::{self as s, konst, Ty, Val};
use super::{Kern, R};
use xforge_ir::tensor::numel;

/// Where the operands are and how they are laid out.
struct Layout {
    rank3: bool,
    hq: usize,
    hk: usize,
    sq: usize,
    /// New keys (this call's K) and past ones.
    skn: usize,
    past: usize,
    d: usize,
}

impl Layout {
    /// Offset of Q[bb, h, i, t].
    fn q(&self, k: &mut Kern, bb: &str, h: &str, i: &str, t: &str) -> String {
        if self.rank3 {
            // (B, S, H·D)
            let r = k.ixc("muli", bb, self.sq);
            let r = k.ix("addi", &r, i);
            let r = k.ixc("muli", &r, self.hq * self.d);
            let c = k.ixc("muli", h, self.d);
            let c = k.ix("addi", &c, t);
            k.ix("addi", &r, &c)
        } else {
            let r = k.ixc("muli", bb, self.hq);
            let r = k.ix("addi", &r, h);
            let r = k.ixc("muli", &r, self.sq);
            let r = k.ix("addi", &r, i);
            let r = k.ixc("muli", &r, self.d);
            k.ix("addi", &r, t)
        }
    }

    /// Offset of this call's K (or V, with `w` = its head size) at [bb, kh, j, t].
    fn kv(&self, k: &mut Kern, bb: &str, kh: &str, j: &str, t: &str, w: usize) -> String {
        if self.rank3 {
            let r = k.ixc("muli", bb, self.skn);
            let r = k.ix("addi", &r, j);
            let r = k.ixc("muli", &r, self.hk * w);
            let c = k.ixc("muli", kh, w);
            let c = k.ix("addi", &c, t);
            k.ix("addi", &r, &c)
        } else {
            let r = k.ixc("muli", bb, self.hk);
            let r = k.ix("addi", &r, kh);
            let r = k.ixc("muli", &r, self.skn);
            let r = k.ix("addi", &r, j);
            let r = k.ixc("muli", &r, w);
            k.ix("addi", &r, t)
        }
    }

    /// Offset in a heads-first (B, Hk, len, w) tensor.
    fn heads_first(k: &mut Kern, bb: &str, kh: &str, j: &str, t: &str, hk: usize, len: usize, w: usize) -> String {
        let r = k.ixc("muli", bb, hk);
        let r = k.ix("addi", &r, kh);
        let r = k.ixc("muli", &r, len);
        let r = k.ix("addi", &r, j);
        let r = k.ixc("muli", &r, w);
        k.ix("addi", &r, t)
    }
}

/// Parameters of the operands that are present.
struct Ops {
    q: usize,
    k: usize,
    v: usize,
    mask: Option<(usize, Vec<usize>, bool)>,
    past_k: Option<usize>,
    past_v: Option<usize>,
    nonpad: Option<usize>,
}

/// The (logit, bias) of query row (bb, h, i) against key j.
#[allow(clippy::too_many_arguments)]
fn score(k: &mut Kern, l: &Layout, o: &Ops, at: (&str, &str, &str), j: &str, p: &Params, ct: Ty) -> R<(Val, Val)> {
    let (bb, h, i) = at;
    let kh = k.ixc("divui", h, l.hq / l.hk);
    let z = k.index(0);
    // the key row: past keys first, then this call's
    let init = konst(&mut k.b, 0.0, ct);
    let dot = k.fold_n(l.d, &[init], |k, t, acc| {
        let qa = l.q(k, bb, h, i, t);
        let qv = k.load(o.q, &qa);
        let qv = s::cast(&mut k.b, &qv, ct);
        let kv = key(k, l, o.k, o.past_k, bb, &kh, j, t, l.d)?;
        let kv = s::cast(&mut k.b, &kv, ct);
        let m = s::mul(&mut k.b, &qv, &kv);
        Ok(vec![s::add(&mut k.b, &acc[0], &m)])
    })?;
    let _ = z;
    let sc = konst(&mut k.b, p.scale, ct);
    let mut logit = s::mul(&mut k.b, &dot[0], &sc);
    if p.softcap > 0.0 {
        let cap = konst(&mut k.b, p.softcap, ct);
        let t = s::div(&mut k.b, &logit, &cap);
        let t = s::math(&mut k.b, "tanh", &t);
        logit = s::mul(&mut k.b, &t, &cap);
    }
    // bias: mask, causal, windows, non-padded lengths (each may make it −∞)
    let ninf = konst(&mut k.b, f64::NEG_INFINITY, ct);
    let mut bias = konst(&mut k.b, 0.0, ct);
    let i64t = Ty::Int(64, true);
    if let Some((mp, ms, boolean)) = &o.mask {
        let r = ms.len();
        let lim = k.index(ms[r - 1]);
        let inside = k.icmp("ult", j, &lim);
        let coords = [bb, h, i, j];
        let mut off = k.index(0);
        for (q, &dim) in ms.iter().enumerate() {
            let c = if dim == 1 { k.index(0) } else { coords[4 - r + q].to_string() };
            // j past the mask's last axis reads 0 (the select below makes it −∞)
            let c = if q == r - 1 {
                let z = k.index(0);
                k.isel(&inside, &c, &z)
            } else {
                c
            };
            let t = k.ixc("muli", &off, dim);
            off = k.ix("addi", &t, &c);
        }
        let mv = k.load(*mp, &off);
        let mv = if *boolean {
            let zf = konst(&mut k.b, 0.0, ct);
            s::select(&mut k.b, &mv, &zf, &ninf)
        } else {
            s::cast(&mut k.b, &mv, ct)
        };
        bias = s::select(&mut k.b, &inside, &mv, &ninf);
    }
    // diff = i + offset(bb) − j
    let iv = s::from_index(&mut k.b, i, i64t);
    let jv = s::from_index(&mut k.b, j, i64t);
    let offset = match (o.past_k.is_some(), o.nonpad) {
        (true, _) => konst(&mut k.b, l.past as f64, i64t),
        (false, Some(np)) => {
            let n = k.load(np, bb);
            let n = s::cast(&mut k.b, &n, i64t);
            let sq = konst(&mut k.b, l.sq as f64, i64t);
            s::sub(&mut k.b, &n, &sq)
        }
        _ => konst(&mut k.b, 0.0, i64t),
    };
    let t = s::add(&mut k.b, &iv, &offset);
    let diff = s::sub(&mut k.b, &t, &jv);
    let zi = konst(&mut k.b, 0.0, i64t);
    let mut off = konst(&mut k.b, 0.0, Ty::Bool);
    let or = |k: &mut Kern, a: &Val, c: &Val| Val::new(k.b.emit(format!("arith.ori {}, {} : i1", a.v, c.v)), Ty::Bool);
    if p.causal {
        let c = s::cmp(&mut k.b, "lt", &diff, &zi);
        off = or(k, &off, &c);
    }
    if p.left >= 0 {
        let lv = konst(&mut k.b, p.left as f64, i64t);
        let c = s::cmp(&mut k.b, "gt", &diff, &lv);
        off = or(k, &off, &c);
    }
    if p.right >= 0 {
        let rv = konst(&mut k.b, p.right as f64, i64t);
        let nd = s::neg(&mut k.b, &diff);
        let c = s::cmp(&mut k.b, "gt", &nd, &rv);
        off = or(k, &off, &c);
    }
    if let Some(np) = o.nonpad {
        let n = k.load(np, bb);
        let n = s::cast(&mut k.b, &n, i64t);
        let c = s::cmp(&mut k.b, "ge", &jv, &n);
        off = or(k, &off, &c);
    }
    let bias = s::select(&mut k.b, &off, &ninf, &bias);
    Ok((logit, bias))
}

/// K (or V) at [bb, kh, j, t] of the key sequence with the past in front.
#[allow(clippy::too_many_arguments)]
fn key(
    k: &mut Kern,
    l: &Layout,
    cur: usize,
    past: Option<usize>,
    bb: &str,
    kh: &str,
    j: &str,
    t: &str,
    w: usize,
) -> R<Val> {
    let Some(pp) = past else {
        let a = l.kv(k, bb, kh, j, t, w);
        return Ok(k.load(cur, &a));
    };
    let pl = k.index(l.past);
    let in_past = k.icmp("ult", j, &pl);
    let ty = Ty::of(k.params[cur].dtype);
    let r = k.if_else(
        &in_past,
        &[ty],
        |k| {
            let a = Layout::heads_first(k, bb, kh, j, t, l.hk, l.past, w);
            Ok(vec![k.load(pp, &a)])
        },
        |k| {
            let jj = k.ix("subi", j, &pl);
            let a = l.kv(k, bb, kh, &jj, t, w);
            Ok(vec![k.load(cur, &a)])
        },
    )?;
    Ok(r[0].clone())
}

/// A query row's statistics: the maximum biased score, whether every key is masked, whether
/// the maximum is −∞, and the sum of the exponentials.
struct Row {
    m: Val,
    masked: Val,
    no_max: Val,
    sum: Val,
}

fn row(k: &mut Kern, l: &Layout, o: &Ops, at: (&str, &str, &str), p: &Params, ct: Ty) -> R<Row> {
    let skv = l.past + l.skn;
    let ninf = konst(&mut k.b, f64::NEG_INFINITY, ct);
    let yes = konst(&mut k.b, 1.0, Ty::Bool);
    let first = k.fold_n(skv, &[ninf.clone(), yes], |k, j, acc| {
        let (lg, bias) = score(k, l, o, at, j, p, ct)?;
        let wb = s::add(&mut k.b, &lg, &bias);
        let masked = s::cmp(&mut k.b, "eq", &bias, &ninf);
        let all = k.and(&acc[1], &masked);
        Ok(vec![s::max(&mut k.b, &acc[0], &wb), all])
    })?;
    let (m, masked) = (first[0].clone(), first[1].clone());
    let no_max = s::cmp(&mut k.b, "eq", &m, &ninf);
    let mut r = Row { m, masked, no_max, sum: ninf };
    let zf = konst(&mut k.b, 0.0, ct);
    let sum = k.fold_n(skv, &[zf], |k, j, acc| {
        let e = weight(k, l, o, at, j, p, ct, &r)?;
        Ok(vec![s::add(&mut k.b, &acc[0], &e)])
    })?;
    r.sum = sum[0].clone();
    Ok(r)
}

/// exp(score − max) of key j (0 when the row's maximum is −∞).
#[allow(clippy::too_many_arguments)]
fn weight(k: &mut Kern, l: &Layout, o: &Ops, at: (&str, &str, &str), j: &str, p: &Params, ct: Ty, r: &Row) -> R<Val> {
    let (lg, bias) = score(k, l, o, at, j, p, ct)?;
    let wb = s::add(&mut k.b, &lg, &bias);
    let d = s::sub(&mut k.b, &wb, &r.m);
    let e = s::math(&mut k.b, "exp", &d);
    let zf = konst(&mut k.b, 0.0, ct);
    Ok(s::select(&mut k.b, &r.no_max, &zf, &e))
}

struct Params {
    scale: f64,
    softcap: f64,
    causal: bool,
    left: i64,
    right: i64,
    mode: i64,
}

pub fn attention(k: &mut Kern) -> R<usize> {
    let (qs, ks, vs) = (k.in_shape(0)?, k.in_shape(1)?, k.in_shape(2)?);
    let rank3 = qs.len() == 3;
    if !(qs.len() == 3 || qs.len() == 4) || ks.len() != qs.len() || vs.len() != qs.len() {
        return Err("Q, K and V must all be 3-D or all 4-D".into());
    }
    let a = k.attrs();
    let (b, hq, hk, sq, skn, d, dv) = if rank3 {
        let qh = a.int_opt("q_num_heads")?.ok_or("3-D inputs need q_num_heads")? as usize;
        let kh = a.int_opt("kv_num_heads")?.ok_or("3-D inputs need kv_num_heads")? as usize;
        (qs[0], qh, kh, qs[1], ks[1], qs[2] / qh.max(1), vs[2] / kh.max(1))
    } else {
        (qs[0], qs[1], ks[1], qs[2], ks[2], qs[3], vs[3])
    };
    if hk == 0 || hq % hk != 0 {
        return Err(format!("{hq} query heads do not group over {hk} key heads"));
    }
    let past = if k.in_val(4).is_some() { k.in_shape(4)?[2] } else { 0 };
    let skv = past + skn;
    let p = Params {
        scale: a.float_opt("scale")?.map(|s| s as f64).unwrap_or(1.0 / (d as f64).sqrt()),
        softcap: a.float("softcap", 0.0)? as f64,
        causal: a.int("is_causal", 0)? != 0,
        left: a.int("left_window_size", -1)?,
        right: a.int("right_window_size", -1)?,
        mode: a.int("qk_matmul_output_mode", 0)?,
    };
    let l = Layout { rank3, hq, hk, sq, skn, past, d };
    let ct = if k.in_dtype(0)? == xforge_ir::DType::F64 { Ty::F64 } else { Ty::F32 };
    let ops = Ops {
        q: k.input(0)?,
        k: k.input(1)?,
        v: k.input(2)?,
        mask: match k.in_val(3) {
            Some(_) => Some((k.input(3)?, k.in_shape(3)?, k.in_dtype(3)? == xforge_ir::DType::Bool)),
            None => None,
        },
        past_k: if k.in_val(4).is_some() { Some(k.input(4)?) } else { None },
        past_v: if k.in_val(5).is_some() { Some(k.input(5)?) } else { None },
        nonpad: if k.in_val(6).is_some() { Some(k.input(6)?) } else { None },
    };
    let y = k.output(0)?;
    let mut work = b * hq * sq * dv;
    // Y: one thread per element
    k.for_each(b * hq * sq * dv, |k, e| {
        let c = k.coords(e, &[b, hq, sq, dv]);
        let (bb, h, i, t) = (&c[0], &c[1], &c[2], &c[3]);
        let kh = k.ixc("divui", h, hq / hk);
        let r = row(k, &l, &ops, (bb, h, i), &p, ct)?;
        let zf = konst(&mut k.b, 0.0, ct);
        let acc = k.fold_n(skv, &[zf.clone()], |k, j, acc| {
            let e = weight(k, &l, &ops, (bb, h, i), j, &p, ct, &r)?;
            let v = key(k, &l, ops.v, ops.past_v, bb, &kh, j, t, dv)?;
            let v = s::cast(&mut k.b, &v, ct);
            let ev = s::mul(&mut k.b, &e, &v);
            Ok(vec![s::add(&mut k.b, &acc[0], &ev)])
        })?;
        let (masked, sum) = (r.masked.clone(), vec![r.sum.clone()]);
        let q = s::div(&mut k.b, &acc[0], &sum[0]);
        let zero_sum = s::cmp(&mut k.b, "eq", &sum[0], &zf);
        let out0 = Val::new(k.b.emit(format!("arith.ori {}, {} : i1", masked.v, zero_sum.v)), Ty::Bool);
        let yv = s::select(&mut k.b, &out0, &zf, &q);
        let at = if rank3 {
            // (B, S, H·Dv)
            let r = k.ixc("muli", bb, sq);
            let r = k.ix("addi", &r, i);
            let r = k.ixc("muli", &r, hq * dv);
            let cc = k.ixc("muli", h, dv);
            let cc = k.ix("addi", &cc, t);
            k.ix("addi", &r, &cc)
        } else {
            e.to_string()
        };
        k.store(y, &at, &yv);
        Ok(())
    })?;
    // present key and value: the past followed by this call's, heads first
    for (slot, cur, past, w) in [(1, ops.k, ops.past_k, d), (2, ops.v, ops.past_v, dv)] {
        if k.out_val(slot).is_none() {
            continue;
        }
        let out = k.output(slot)?;
        let n = b * hk * skv * w;
        work = work.max(n);
        k.for_each(n, |k, e| {
            let c = k.coords(e, &[b, hk, skv, w]);
            let v = key(k, &l, cur, past, &c[0], &c[1], &c[2], &c[3], w)?;
            k.store(out, e, &v);
            Ok(())
        })?;
    }
    if k.out_val(3).is_some() {
        let out = k.output(3)?;
        let n = b * hq * sq * skv;
        if numel(&k.out_shape(3)?) != n {
            return Err("the QK output's shape does not match".into());
        }
        work = work.max(n);
        k.for_each(n, |k, e| {
            let c = k.coords(e, &[b, hq, sq, skv]);
            let (bb, h, i, j) = (&c[0], &c[1], &c[2], &c[3]);
            let (lg, bias) = score(k, &l, &ops, (bb, h, i), j, &p, ct)?;
            let v = match p.mode {
                2 => s::add(&mut k.b, &lg, &bias),
                3 => {
                    let r = row(k, &l, &ops, (bb, h, i), &p, ct)?;
                    let e = weight(k, &l, &ops, (bb, h, i), j, &p, ct, &r)?;
                    let q = s::div(&mut k.b, &e, &r.sum);
                    let zf = konst(&mut k.b, 0.0, ct);
                    let zero_sum = s::cmp(&mut k.b, "eq", &r.sum, &zf);
                    let out0 = Val::new(k.b.emit(format!("arith.ori {}, {} : i1", r.masked.v, zero_sum.v)), Ty::Bool);
                    s::select(&mut k.b, &out0, &zf, &q)
                }
                _ => lg,
            };
            k.store(out, e, &v);
            Ok(())
        })?;
    }
    Ok(work)
}
