//! `SelectiveScan` (domain `com.xforge`): Mamba's selective scan, as mamba_ssm's
//! `selective_scan_fn`. Inputs u, delta (batch, dim, len); A (dim, state); B, C (batch, state,
//! len) or (batch, groups, state, len); optional D, z (batch, dim, len), delta_bias (dim).
//! Δ = softplus(delta + delta_bias) when `delta_softplus`; h_t = exp(Δ_t·A) ⊙ h_{t−1} +
//! Δ_t·B_t·u_t from h_0 = 0; y_t = Σ_state h_t·C_t; out = y + D·u, times silu(z) when given.
//! Outputs: out (u's dtype) and, when asked, the last state (batch, dim, state) in f32.
//! Computed in f64 (the reference), rounded once.
use super::attrs::{opt, req, NodeAttrs};
use super::OpResult;
use crate::dtype::DType;
use crate::infer::selective_scan_shapes;
use crate::shape::Dim;
use crate::tensor::Tensor;

/// mamba_ssm's softplus (PyTorch's, threshold 20).
fn softplus(x: f64) -> f64 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// B or C as a lookup (batch, channel, state, step) → value, with their groups shared by
/// consecutive channels.
struct Projection {
    v: Vec<f64>,
    groups: usize,
    per_group: usize,
    n: usize,
    l: usize,
}

impl Projection {
    /// `t` is (b, n, l) or (b, groups, n, l), as the shape check leaves it.
    fn new(t: &Tensor, d: usize) -> Projection {
        let (groups, n, l) = match *t.shape() {
            [_, g, n, l] => (g, n, l),
            [_, n, l] => (1, n, l),
            _ => unreachable!("checked by selective_scan_shapes"),
        };
        Projection { v: t.to_f64(), groups, per_group: d / groups, n, l }
    }
    fn at(&self, b: usize, c: usize, s: usize, t: usize) -> f64 {
        let g = c / self.per_group;
        self.v[((b * self.groups + g) * self.n + s) * self.l + t]
    }
}

pub fn selective_scan(a: &NodeAttrs, ins: &[Option<Tensor>], n_out: usize) -> OpResult<Vec<Tensor>> {
    let (u, delta, at) = (req(ins, 0)?, req(ins, 1)?, req(ins, 2)?);
    // the operands agree, as shape inference checks them
    let known = |i: usize| opt(ins, i).map(|t| t.shape().iter().map(|&x| Dim::Known(x)).collect());
    selective_scan_shapes(&known)?;
    let [b, d, l] = *u.shape() else { unreachable!("checked by selective_scan_shapes") };
    let n = at.shape()[1];
    let bp = Projection::new(req(ins, 3)?, d);
    let cp = Projection::new(req(ins, 4)?, d);
    let per_channel = |i: usize| opt(ins, i).map(|t| t.to_f64());
    let dv = per_channel(5);
    let z = opt(ins, 6).map(|t| t.to_f64());
    let bias = per_channel(7);
    let softplus_on = a.int("delta_softplus", 0)? != 0;
    let (uv, dl, av) = (u.to_f64(), delta.to_f64(), at.to_f64());
    let mut out = vec![0.0; b * d * l];
    let mut last = vec![0.0; b * d * n];
    let mut h = vec![0.0; n];
    for bi in 0..b {
        for c in 0..d {
            h.iter_mut().for_each(|x| *x = 0.0);
            for t in 0..l {
                let i = (bi * d + c) * l + t;
                let mut dt = dl[i] + bias.as_ref().map_or(0.0, |v| v[c]);
                if softplus_on {
                    dt = softplus(dt);
                }
                let mut y = 0.0;
                for (s, hs) in h.iter_mut().enumerate() {
                    *hs = (dt * av[c * n + s]).exp() * *hs + dt * bp.at(bi, c, s, t) * uv[i];
                    y += *hs * cp.at(bi, c, s, t);
                }
                if let Some(dv) = &dv {
                    y += dv[c] * uv[i];
                }
                if let Some(z) = &z {
                    y *= z[i] / (1.0 + (-z[i]).exp());
                }
                out[i] = y;
            }
            last[(bi * d + c) * n..(bi * d + c + 1) * n].copy_from_slice(&h);
        }
    }
    let mut outs = vec![Tensor::from_f64(u.dtype(), vec![b, d, l], &out)];
    if n_out > 1 {
        outs.push(Tensor::from_f64(DType::F32, vec![b, d, n], &last));
    }
    Ok(outs)
}
