//! Normalizations: batch (inference), layer, instance, group, RMS, Lp, mean-variance, LRN.
use super::attrs::{axis, opt, req, NodeAttrs};
use super::broadcast::{broadcast_index, broadcast_shapes};
use super::OpResult;
use crate::op::Op;
use crate::tensor::{numel, Tensor};

/// Values of `t` broadcast (unidirectionally) to `shape`.
fn expand_to(t: &Tensor, shape: &[usize], what: &str) -> OpResult<Vec<f64>> {
    let b = broadcast_shapes(&[t.shape(), shape])
        .map_err(|_| format!("{what} {:?} does not broadcast to {shape:?}", t.shape()))?;
    if b != shape {
        return Err(format!("{what} {:?} does not broadcast to {shape:?}", t.shape()));
    }
    let v = t.to_f64();
    Ok(broadcast_index(t.shape(), shape).into_iter().map(|i| v[i]).collect())
}

/// Per-channel vector of length `c`.
fn per_channel(t: &Tensor, c: usize, what: &str) -> OpResult<Vec<f64>> {
    if t.len() != c {
        return Err(format!("{what} must have {c} elements, got shape {:?}", t.shape()));
    }
    Ok(t.to_f64())
}

pub fn batch_norm(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = req(ins, 0)?;
    if x.rank() < 2 {
        return Err(format!("input must be (N, C, ...), got {:?}", x.shape()));
    }
    let c = x.shape()[1];
    let eps = a.float("epsilon", 1e-5)? as f64;
    let training = a.int("training_mode", 0)? != 0;
    let s = per_channel(req(ins, 1)?, c, "scale")?;
    let b = per_channel(req(ins, 2)?, c, "B")?;
    let running_mean = per_channel(req(ins, 3)?, c, "input_mean")?;
    let running_var = per_channel(req(ins, 4)?, c, "input_var")?;
    let inner = numel(&x.shape()[2..]);
    let v = x.to_f64();
    // training mode normalizes with the batch statistics (population variance)
    let (m, var) = if training {
        let n = (v.len() / c.max(1)) as f64;
        let mut sum = vec![0.0; c];
        for (i, &xv) in v.iter().enumerate() {
            sum[(i / inner) % c] += xv;
        }
        let mean: Vec<f64> = sum.iter().map(|t| t / n).collect();
        let mut sq = vec![0.0; c];
        for (i, &xv) in v.iter().enumerate() {
            let ch = (i / inner) % c;
            sq[ch] += (xv - mean[ch]).powi(2);
        }
        (mean, sq.iter().map(|t| t / n).collect::<Vec<_>>())
    } else {
        (running_mean.clone(), running_var.clone())
    };
    let out: Vec<f64> = v
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let ch = (i / inner) % c;
            (x - m[ch]) / (var[ch] + eps).sqrt() * s[ch] + b[ch]
        })
        .collect();
    let mut res = vec![Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out)];
    if training {
        let mo = a.float("momentum", 0.9)? as f64;
        let blend =
            |run: &[f64], cur: &[f64]| run.iter().zip(cur).map(|(r, c)| r * mo + c * (1.0 - mo)).collect::<Vec<_>>();
        res.push(Tensor::from_f64(x.dtype(), vec![c], &blend(&running_mean, &m)));
        res.push(Tensor::from_f64(x.dtype(), vec![c], &blend(&running_var, &var)));
    }
    Ok(res)
}

/// Mean and variance of each of `groups` contiguous runs of `len` values.
fn moments(v: &[f64], groups: usize, len: usize) -> Vec<(f64, f64)> {
    (0..groups)
        .map(|g| {
            let s = &v[g * len..(g + 1) * len];
            let mean = s.iter().sum::<f64>() / len as f64;
            let var = s.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / len as f64;
            (mean, var)
        })
        .collect()
}

pub fn layer_norm(op: Op, a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = req(ins, 0)?;
    let ax = axis(a.int("axis", -1)?, x.rank())?;
    let eps = a.float("epsilon", 1e-5)? as f64;
    let outer = numel(&x.shape()[..ax]);
    let len = numel(&x.shape()[ax..]);
    let v = x.to_f64();
    let scale = expand_to(req(ins, 1)?, x.shape(), "scale")?;
    let bias = match opt(ins, 2) {
        Some(b) if op == Op::LayerNormalization => Some(expand_to(b, x.shape(), "B")?),
        _ => None,
    };
    let stats: Vec<(f64, f64)> = if op == Op::RMSNormalization {
        (0..outer).map(|g| (0.0, v[g * len..(g + 1) * len].iter().map(|x| x * x).sum::<f64>() / len as f64)).collect()
    } else {
        moments(&v, outer, len)
    };
    let mut out = Vec::with_capacity(v.len());
    for (i, &xv) in v.iter().enumerate() {
        let (mean, var) = stats[i / len.max(1)];
        let mut y = (xv - mean) / (var + eps).sqrt() * scale[i];
        if let Some(b) = &bias {
            y += b[i];
        }
        out.push(y);
    }
    let mut res = vec![Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out)];
    if op == Op::LayerNormalization {
        let stash = if a.int("stash_type", 1)? == 1 { crate::dtype::DType::F32 } else { x.dtype() };
        let mut sshape = x.shape()[..ax].to_vec();
        sshape.resize(x.rank(), 1);
        let mean: Vec<f64> = stats.iter().map(|s| s.0).collect();
        let inv: Vec<f64> = stats.iter().map(|s| 1.0 / (s.1 + eps).sqrt()).collect();
        res.push(Tensor::from_f64(stash, sshape.clone(), &mean));
        res.push(Tensor::from_f64(stash, sshape, &inv));
    }
    Ok(res)
}

pub fn instance_group_norm(op: Op, a: &NodeAttrs, opset: i64, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let x = req(ins, 0)?;
    if x.rank() < 2 {
        return Err(format!("input must be (N, C, ...), got {:?}", x.shape()));
    }
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let eps = a.float("epsilon", 1e-5)? as f64;
    let groups = if op == Op::GroupNormalization { a.int("num_groups", 0)? as usize } else { c };
    if groups == 0 || c % groups != 0 {
        return Err(format!("num_groups {groups} does not divide {c} channels"));
    }
    let inner = numel(&x.shape()[2..]);
    let len = c / groups * inner;
    let v = x.to_f64();
    let stats = moments(&v, n * groups, len);
    // GroupNormalization before opset 21 takes per-group scale and bias
    let per_group = op == Op::GroupNormalization && opset < 21;
    let k = if per_group { groups } else { c };
    let s = per_channel(req(ins, 1)?, k, "scale")?;
    let b = per_channel(req(ins, 2)?, k, "B")?;
    let out: Vec<f64> = v
        .iter()
        .enumerate()
        .map(|(i, &xv)| {
            let ch = (i / inner) % c;
            let (mean, var) = stats[i / len];
            let j = if per_group { ch / (c / groups) } else { ch };
            (xv - mean) / (var + eps).sqrt() * s[j] + b[j]
        })
        .collect();
    Ok(Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out))
}

pub fn lp_norm(a: &NodeAttrs, x: &Tensor) -> OpResult<Tensor> {
    let ax = axis(a.int("axis", -1)?, x.rank())?;
    let p = a.int("p", 2)?;
    let (outer, len, inner) = super::reduce::around_axis(x.shape(), ax);
    let v = x.to_f64();
    let mut out = v.clone();
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let norm: f64 = if p == 1 {
                (0..len).map(|k| v[at(k)].abs()).sum()
            } else {
                (0..len).map(|k| v[at(k)] * v[at(k)]).sum::<f64>().sqrt()
            };
            for k in 0..len {
                out[at(k)] = if norm == 0.0 { 0.0 } else { v[at(k)] / norm };
            }
        }
    }
    Ok(Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out))
}

pub fn mean_variance(a: &NodeAttrs, x: &Tensor) -> OpResult<Tensor> {
    let axes: Vec<usize> =
        a.ints_opt("axes")?.unwrap_or(vec![0, 2, 3]).iter().map(|&ax| axis(ax, x.rank())).collect::<OpResult<_>>()?;
    let red: Vec<usize> = x.shape().iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
    let map = broadcast_index(&red, x.shape());
    let v = x.to_f64();
    let k = numel(&red);
    let cnt = (v.len() / k.max(1)) as f64;
    let (mut s, mut s2) = (vec![0.0; k], vec![0.0; k]);
    for (i, &o) in map.iter().enumerate() {
        s[o] += v[i];
        s2[o] += v[i] * v[i];
    }
    let out: Vec<f64> = v
        .iter()
        .zip(&map)
        .map(|(&xv, &o)| {
            let mean = s[o] / cnt;
            let var = s2[o] / cnt - mean * mean;
            (xv - mean) / (var.max(0.0).sqrt() + 1e-9)
        })
        .collect();
    Ok(Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out))
}

pub fn lrn(a: &NodeAttrs, x: &Tensor) -> OpResult<Tensor> {
    let alpha = a.float("alpha", 1e-4)? as f64;
    let beta = a.float("beta", 0.75)? as f64;
    let bias = a.float("bias", 1.0)? as f64;
    let size = a.int("size", 0)? as usize;
    if x.rank() < 2 || size == 0 {
        return Err("LRN needs (N, C, ...) input and size >= 1".into());
    }
    let c = x.shape()[1];
    let inner = numel(&x.shape()[2..]);
    let v = x.to_f64();
    let lo = (size - 1) / 2;
    let hi = size.div_ceil(2) - 1;
    let out: Vec<f64> = (0..v.len())
        .map(|i| {
            let ch = (i / inner) % c;
            let base = i - ch * inner;
            let from = ch.saturating_sub(lo);
            let to = (ch + hi).min(c - 1);
            let sq: f64 = (from..=to).map(|k| v[base + k * inner].powi(2)).sum();
            v[i] / (bias + alpha / size as f64 * sq).powf(beta)
        })
        .collect();
    Ok(Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out))
}
