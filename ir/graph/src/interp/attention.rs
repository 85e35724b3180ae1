//! ONNX `Attention` (opset 23+): scaled dot-product attention with masks, causal and sliding
//! windows, grouped KV heads, KV cache and softcap.
use super::attrs::{opt, req, NodeAttrs};
use super::movement::{concat, transpose};
use super::OpResult;
use crate::tensor::Tensor;

/// (B, S, H·D) → (B, H, S, D).
fn heads_first(t: &Tensor, heads: usize) -> OpResult<Tensor> {
    let (b, s, hid) = (t.shape()[0], t.shape()[1], t.shape()[2]);
    if heads == 0 || hid % heads != 0 {
        return Err(format!("hidden size {hid} is not divisible by {heads} heads"));
    }
    transpose(&t.reshape(vec![b, s, heads, hid / heads]), Some(vec![0, 2, 1, 3]))
}

pub fn attention(a: &NodeAttrs, ins: &[Option<Tensor>], n_out: usize) -> OpResult<Vec<Tensor>> {
    let (q0, k0, v0) = (req(ins, 0)?, req(ins, 1)?, req(ins, 2)?);
    let rank = q0.rank();
    if !(rank == 3 || rank == 4) || k0.rank() != rank || v0.rank() != rank {
        return Err("Q, K and V must all be 3-D or all 4-D".into());
    }
    let (q, k, v) = if rank == 3 {
        let qh = a.int_opt("q_num_heads")?.ok_or("3-D inputs need q_num_heads")? as usize;
        let kh = a.int_opt("kv_num_heads")?.ok_or("3-D inputs need kv_num_heads")? as usize;
        (heads_first(q0, qh)?, heads_first(k0, kh)?, heads_first(v0, kh)?)
    } else {
        (q0.clone(), k0.clone(), v0.clone())
    };
    let past_k = opt(ins, 4);
    let past_v = opt(ins, 5);
    if past_k.is_some() != past_v.is_some() {
        return Err("past_key and past_value must be given together".into());
    }
    let cat = |p: Option<&Tensor>, x: &Tensor| -> OpResult<Tensor> {
        match p {
            Some(p) => concat(&[p, x], 2),
            None => Ok(x.clone()),
        }
    };
    let pk = cat(past_k, &k)?;
    let pv = cat(past_v, &v)?;
    let (b, hq, sq, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hk, skv, dv) = (pk.shape()[1], pk.shape()[2], pv.shape()[3]);
    let batches_agree = pk.shape()[0] == b && pv.shape()[0] == b;
    if !batches_agree || hk == 0 || hq % hk != 0 || pk.shape()[3] != d || pv.shape()[1] != hk || pv.shape()[2] != skv {
        return Err(format!("Q {:?}, K {:?}, V {:?} do not agree", q.shape(), pk.shape(), pv.shape()));
    }
    let scale = a.float_opt("scale")?.map(|s| s as f64).unwrap_or(1.0 / (d as f64).sqrt());
    let causal = a.int("is_causal", 0)? != 0;
    let softcap = a.float("softcap", 0.0)? as f64;
    let mode = a.int("qk_matmul_output_mode", 0)?;
    let left = a.int("left_window_size", -1)?;
    let right = a.int("right_window_size", -1)?;
    let nonpad = opt(ins, 6).map(|t| t.to_i64());
    // one length of keys per batch entry, each within the keys there are
    if let Some(n) = nonpad.as_ref().filter(|n| n.len() != b || n.iter().any(|&v| v < 0 || v as usize > skv)) {
        return Err(format!("nonpad_kv_seqlen {n:?} must give {b} lengths of at most {skv} keys"));
    }
    let past_len = past_k.map(|t| t.shape()[2] as i64);

    // additive mask, right-aligned broadcast over (B, H, q, kv); the last axis pads with -inf
    let mask = opt(ins, 3);
    if let Some(m) = mask {
        let (s, full) = (m.shape(), [b, hq, sq, skv]);
        let r = s.len();
        let fits = (1..=4).contains(&r) && (0..r - 1).all(|k| s[k] == 1 || s[k] == full[4 - r + k]);
        if !fits {
            return Err(format!("attn_mask {s:?} does not broadcast over (batch, heads, queries, keys) {full:?}"));
        }
    }
    let mask_v = mask.map(|m| m.to_f64());
    let mask_bool = mask.is_some_and(|m| m.dtype() == crate::dtype::DType::Bool);
    let mask_at = |bb: usize, h: usize, i: usize, j: usize| -> f64 {
        let (Some(m), Some(mv)) = (mask, &mask_v) else { return 0.0 };
        let s = m.shape();
        let r = s.len();
        let coords = [bb, h, i, j];
        if j >= s[r - 1] {
            return f64::NEG_INFINITY;
        }
        let mut off = 0;
        for (k, &dim) in s.iter().enumerate() {
            let c = coords[4 - r + k];
            off = off * dim + if dim == 1 { 0 } else { c };
        }
        let x = mv[off];
        if mask_bool {
            if x != 0.0 {
                0.0
            } else {
                f64::NEG_INFINITY
            }
        } else {
            x
        }
    };
    let offset = |bb: usize| -> i64 {
        match (past_len, &nonpad) {
            (None, Some(n)) => n[bb] - sq as i64,
            (Some(p), _) => p,
            _ => 0,
        }
    };
    super::check_size(&[b, hq, sq, skv.max(dv)])?;
    let (qv, kv, vv) = (q.to_f64(), pk.to_f64(), pv.to_f64());
    let mut y = vec![0.0; b * hq * sq * dv];
    let mut qk_out = vec![0.0; b * hq * sq * skv];
    let group = hq / hk;
    for bb in 0..b {
        for h in 0..hq {
            let kh = h / group;
            for i in 0..sq {
                let mut logits = vec![0.0; skv];
                let mut bias = vec![0.0; skv];
                for j in 0..skv {
                    let mut dot = 0.0;
                    for t in 0..d {
                        dot += qv[((bb * hq + h) * sq + i) * d + t] * kv[((bb * hk + kh) * skv + j) * d + t];
                    }
                    let mut l = dot * scale;
                    if softcap > 0.0 {
                        l = (l / softcap).tanh() * softcap;
                    }
                    let diff = i as i64 + offset(bb) - j as i64;
                    let mut bsum = mask_at(bb, h, i, j);
                    if causal && diff < 0 {
                        bsum = f64::NEG_INFINITY;
                    }
                    if (left >= 0 && diff > left) || (right >= 0 && -diff > right) {
                        bsum = f64::NEG_INFINITY;
                    }
                    if let Some(n) = &nonpad {
                        if j as i64 >= n[bb] {
                            bsum = f64::NEG_INFINITY;
                        }
                    }
                    logits[j] = l;
                    bias[j] = bsum;
                }
                let with_bias: Vec<f64> = logits.iter().zip(&bias).map(|(l, b)| l + b).collect();
                let masked = bias.iter().all(|x| *x == f64::NEG_INFINITY);
                let m = with_bias.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> =
                    with_bias.iter().map(|x| if m == f64::NEG_INFINITY { 0.0 } else { (x - m).exp() }).collect();
                let s: f64 = e.iter().sum();
                let p: Vec<f64> = e.iter().map(|x| if masked || s == 0.0 { 0.0 } else { x / s }).collect();
                let row = ((bb * hq + h) * sq + i) * skv;
                for j in 0..skv {
                    qk_out[row + j] = match mode {
                        2 => with_bias[j],
                        3 => p[j],
                        _ => logits[j],
                    };
                }
                for t in 0..dv {
                    let mut acc = 0.0;
                    for j in 0..skv {
                        acc += p[j] * vv[((bb * hk + kh) * skv + j) * dv + t];
                    }
                    y[((bb * hq + h) * sq + i) * dv + t] = acc;
                }
            }
        }
    }
    let dt = q0.dtype();
    let mut yt = Tensor::from_f64(dt, vec![b, hq, sq, dv], &y);
    if rank == 3 {
        yt = transpose(&yt, Some(vec![0, 2, 1, 3]))?.reshape(vec![b, sq, hq * dv]);
    }
    let mut out = vec![yt, pk, pv];
    if n_out > 3 {
        out.push(Tensor::from_f64(dt, vec![b, hq, sq, skv], &qk_out));
    }
    Ok(out)
}
