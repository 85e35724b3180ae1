//! The sequence-model ops of opsets 23–28, from their ONNX definitions (onnx/reference/ops):
//! RotaryEmbedding, TensorScatter (a KV-cache write), SwiGLU, CausalConvWithState (a depthwise
//! causal convolution carrying its last k − 1 inputs) and LinearAttention (the linear, gated,
//! delta and gated-delta recurrences over a (d_k, d_v) state per KV head). Shapes and attributes
//! are checked by `sequence_shapes`, as inference checks them; computed in f64, rounded once.
use super::attrs::{opt, req, NodeAttrs};
use super::{check_size, OpResult};
use crate::sequence_shapes::{linear_attention_heads, output_shapes, rotary_dims};
use crate::shape::Dim;
use crate::tensor::Tensor;

/// The shared shape checks on concrete tensors.
fn check(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<()> {
    let shape = |k: usize| opt(ins, k).map(|t| t.shape().iter().map(|&d| Dim::Known(d)).collect());
    output_shapes(a.0, &|k| opt(ins, k).is_some(), &shape, &mut || Dim::Known(0)).map(|_| ())
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

pub fn rotary_embedding(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    check(a, ins)?;
    let x = req(ins, 0)?;
    let dims: Vec<Dim> = x.shape().iter().map(|&d| Dim::Known(d)).collect();
    let r = rotary_dims(a.0, &dims)?;
    let k = |d: &Dim| d.known().unwrap_or(0);
    let (b, s, h, head, rot) = (k(&r.b), k(&r.s), k(&r.h), k(&r.head), k(&r.rotated));
    let half = rot / 2;
    let interleaved = a.int("interleaved", 0)? != 0;
    let (cos, sin) = (req(ins, 1)?.to_f64(), req(ins, 2)?.to_f64());
    let positions = opt(ins, 3).map(|p| p.to_i64());
    let max_pos = req(ins, 1)?.shape()[0];
    let xv = x.to_f64();
    let mut out = xv.clone();
    for bi in 0..b {
        for si in 0..s {
            // the cache row of this token
            let row = match &positions {
                Some(p) => {
                    let q = p[bi * s + si];
                    if q < 0 || q as usize >= max_pos {
                        return Err(format!("position_ids[{bi}, {si}] = {q} is outside the caches' {max_pos} rows"));
                    }
                    q as usize
                }
                None => bi * s + si,
            };
            for hi in 0..h {
                let base = if r.rank4 { ((bi * h + hi) * s + si) * head } else { ((bi * s + si) * h + hi) * head };
                for i in 0..half {
                    let (c, sn) = (cos[row * half + i], sin[row * half + i]);
                    let (p0, p1) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                    let (x1, x2) = (xv[base + p0], xv[base + p1]);
                    out[base + p0] = c * x1 - sn * x2;
                    out[base + p1] = sn * x1 + c * x2;
                }
            }
        }
    }
    Ok(Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out))
}

pub fn tensor_scatter(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    check(a, ins)?;
    let (past, update) = (req(ins, 0)?, req(ins, 1)?);
    let rank = past.rank();
    let ax = super::attrs::axis(a.int("axis", -2)?, rank)?;
    let circular = a.string("mode", "linear")? == "circular";
    let max = past.shape()[ax];
    let len = update.shape()[ax];
    let batch = past.shape()[0];
    let writes = opt(ins, 2).map(|w| w.to_i64()).unwrap_or_else(|| vec![0; batch]);
    let inner: usize = past.shape()[ax + 1..].iter().product();
    let outer: usize = past.shape()[..ax].iter().product();
    let per_batch = outer / batch.max(1);
    let mut out = past.data().clone();
    for o in 0..outer {
        let w = writes[o / per_batch.max(1)];
        for t in 0..len {
            let at = w.checked_add(t as i64).ok_or("write index overflows")?;
            let at = if circular {
                if max == 0 {
                    return Err("a circular write into an empty cache".into());
                }
                at.rem_euclid(max as i64) as usize
            } else if at < 0 || at as usize >= max {
                return Err(format!(
                    "write_indices[{}] = {w} puts update position {t} at {at}, outside the cache's {max}",
                    o / per_batch.max(1)
                ));
            } else {
                at as usize
            };
            let src: Vec<usize> = ((o * len + t) * inner..(o * len + t + 1) * inner).collect();
            let dst: Vec<usize> = ((o * max + at) * inner..(o * max + at + 1) * inner).collect();
            out.put(&dst, &update.data().take(&src));
        }
    }
    Ok(Tensor::new(past.shape().to_vec(), out))
}

pub fn swiglu(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    check(a, ins)?;
    let (x, y) = (req(ins, 0)?, req(ins, 1)?);
    let alpha = a.float("alpha", 1.0)? as f64;
    let v: Vec<f64> = x.to_f64().iter().zip(y.to_f64()).map(|(&g, u)| g * sigmoid(alpha * g) * u).collect();
    Ok(Tensor::from_f64(x.dtype(), x.shape().to_vec(), &v))
}

pub fn causal_conv_with_state(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Vec<Tensor>> {
    check(a, ins)?;
    let (x, w) = (req(ins, 0)?, req(ins, 1)?);
    let [b, c, l] = *x.shape() else { return Err("input must be (batch, channels, length)".into()) };
    let k = w.shape()[2];
    let carry = k - 1;
    let silu = a.string("activation", "none")? != "none";
    let (xv, wv) = (x.to_f64(), w.to_f64());
    let bias = opt(ins, 2).map(|t| t.to_f64());
    let past = opt(ins, 3).map(|t| t.to_f64());
    check_size(&[b, c, l + carry])?;
    let mut out = vec![0.0; b * c * l];
    let mut present = vec![0.0; b * c * carry];
    let mut padded = vec![0.0; l + carry];
    for bi in 0..b {
        for ci in 0..c {
            let line = bi * c + ci;
            // the past (zeros without one), then this call's inputs
            for (j, p) in padded.iter_mut().take(carry).enumerate() {
                *p = past.as_ref().map_or(0.0, |p| p[line * carry + j]);
            }
            padded[carry..].copy_from_slice(&xv[line * l..(line + 1) * l]);
            for t in 0..l {
                let mut acc = bias.as_ref().map_or(0.0, |b| b[ci]);
                for j in 0..k {
                    acc += wv[ci * k + j] * padded[t + j];
                }
                out[line * l + t] = if silu { acc * sigmoid(acc) } else { acc };
            }
            present[line * carry..(line + 1) * carry].copy_from_slice(&padded[l..]);
        }
    }
    Ok(vec![Tensor::from_f64(x.dtype(), vec![b, c, l], &out), Tensor::from_f64(x.dtype(), vec![b, c, carry], &present)])
}

pub fn linear_attention(a: &NodeAttrs, ins: &[Option<Tensor>], n_out: usize) -> OpResult<Vec<Tensor>> {
    check(a, ins)?;
    // the rule decided which of decay and beta are present (checked above); they say the rest
    let (hq, hk) = linear_attention_heads(a.0)?;
    let (q, k, v) = (req(ins, 0)?, req(ins, 1)?, req(ins, 2)?);
    let [b, t, qw] = *q.shape() else { return Err("query must be (batch, sequence, heads · d_k)".into()) };
    let (dk, dv) = (qw / hq, v.shape()[2] / hk);
    let group = hq / hk;
    // a scale of 0 (the default) stands for 1/√d_k
    let scale = match a.float("scale", 0.0)? as f64 {
        s if s == 0.0 => 1.0 / (dk as f64).sqrt(),
        s => s,
    };
    let (qv, kv, vv) = (q.to_f64(), k.to_f64(), v.to_f64());
    let decay = opt(ins, 4).map(|d| (d.to_f64(), d.shape()[2]));
    let beta = opt(ins, 5).map(|d| (d.to_f64(), d.shape()[2]));
    check_size(&[b, hk, dk, dv])?;
    check_size(&[b, t, hq, dv])?;
    let mut state = match opt(ins, 3) {
        Some(p) => p.to_f64(),
        None => vec![0.0; b * hk * dk * dv],
    };
    let mut out = vec![0.0; b * t * hq * dv];
    let mut retrieved = vec![0.0; dv];
    for bi in 0..b {
        for ti in 0..t {
            let row = bi * t + ti;
            for h in 0..hk {
                let s = &mut state[(bi * hk + h) * dk * dv..(bi * hk + h + 1) * dk * dv];
                let key = &kv[(row * hk + h) * dk..(row * hk + h + 1) * dk];
                let val = &vv[(row * hk + h) * dv..(row * hk + h + 1) * dv];
                if let Some((d, w)) = &decay {
                    // per head (w = hk) or per key dim (w = hk · dk)
                    for i in 0..dk {
                        let g = if *w == hk { d[row * hk + h] } else { d[(row * hk + h) * dk + i] };
                        let e = g.exp();
                        s[i * dv..(i + 1) * dv].iter_mut().for_each(|x| *x *= e);
                    }
                }
                let write: Vec<f64> = match &beta {
                    Some((bv, w)) => {
                        let bt = if *w == 1 { bv[row] } else { bv[row * hk + h] };
                        retrieved.iter_mut().for_each(|r| *r = 0.0);
                        for i in 0..dk {
                            for j in 0..dv {
                                retrieved[j] += s[i * dv + j] * key[i];
                            }
                        }
                        (0..dv).map(|j| bt * (val[j] - retrieved[j])).collect()
                    }
                    None => val.to_vec(),
                };
                for i in 0..dk {
                    for j in 0..dv {
                        s[i * dv + j] += key[i] * write[j];
                    }
                }
                // the query heads of this KV head read the new state
                for qh in h * group..(h + 1) * group {
                    let query = &qv[(row * hq + qh) * dk..(row * hq + qh + 1) * dk];
                    for j in 0..dv {
                        let o: f64 = (0..dk).map(|i| query[i] * s[i * dv + j]).sum();
                        out[(row * hq + qh) * dv + j] = scale * o;
                    }
                }
            }
        }
    }
    let mut outs = vec![Tensor::from_f64(q.dtype(), vec![b, t, hq * dv], &out)];
    if n_out > 1 {
        let dt = opt(ins, 3).map_or(q.dtype(), |p| p.dtype());
        outs.push(Tensor::from_f64(dt, vec![b, hk, dk, dv], &state));
    }
    Ok(outs)
}
