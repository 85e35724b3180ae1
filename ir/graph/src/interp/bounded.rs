//! Data-dependent shapes as static ones: `Bounded` runs the op its attribute `bounded_op` names
//! (NonZero, NonMaxSuppression, Compress) and pads the result with zeros along `bounded_axis` to the
//! static `bound`, giving the valid length as a second output (i64 scalar); `Prefix` takes the
//! first `length` entries along `axis` (the original, dynamic result again).
use super::attrs::{req, NodeAttrs};
use super::{OpResult, Scope};
use crate::graph::Node;
use crate::op::Op;
use crate::tensor::{numel, Tensor};

/// The attributes `Bounded` adds to the op it wraps.
pub const OWN_ATTRS: [&str; 3] = ["bounded_op", "bounded_axis", "bound"];

pub fn bounded(node: &Node, ins: &[Option<Tensor>], opset: i64, scope: &Scope) -> OpResult<Vec<Tensor>> {
    let a = NodeAttrs(node);
    let name = a.string("bounded_op", "")?;
    let op = Op::from_name(&name).ok_or_else(|| format!("unknown op '{name}'"))?;
    let axis = a.int("bounded_axis", 0)? as usize;
    let bound = a.int("bound", 0)? as usize;
    let mut inner = node.clone();
    inner.op = op;
    inner.outputs.truncate(1);
    for k in OWN_ATTRS {
        inner.attrs.remove(k);
    }
    let t = super::eval(&inner, ins, opset, scope)?.remove(0);
    let len = *t.shape().get(axis).ok_or("the axis is past the result's rank")?;
    if len > bound {
        return Err(format!("{len} results exceed the bound {bound}"));
    }
    Ok(vec![pad(&t, axis, bound), Tensor::scalar_i64(len as i64)])
}

/// `t` padded with zeros along `axis` to `bound`.
fn pad(t: &Tensor, axis: usize, bound: usize) -> Tensor {
    let s = t.shape();
    let (outer, len, inner) = (numel(&s[..axis]), s[axis], numel(&s[axis + 1..]));
    let mut shape = s.to_vec();
    shape[axis] = bound;
    let v = t.to_f64();
    let mut out = vec![0.0; outer * bound * inner];
    for o in 0..outer {
        for k in 0..len {
            for i in 0..inner {
                out[(o * bound + k) * inner + i] = v[(o * len + k) * inner + i];
            }
        }
    }
    Tensor::from_f64(t.dtype(), shape, &out)
}

pub fn prefix(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (x, n) = (req(ins, 0)?, req(ins, 1)?);
    let axis = a.int("axis", 0)? as usize;
    let s = x.shape();
    if axis >= s.len() {
        return Err("the axis is past the rank".into());
    }
    let len = (n.to_i64().first().copied().unwrap_or(0).max(0) as usize).min(s[axis]);
    let (outer, bound, inner) = (numel(&s[..axis]), s[axis], numel(&s[axis + 1..]));
    let idx: Vec<usize> =
        (0..outer).flat_map(|o| (0..len).flat_map(move |k| (0..inner).map(move |i| (o * bound + k) * inner + i))).collect();
    let mut shape = s.to_vec();
    shape[axis] = len;
    Ok(x.take(&idx, shape))
}
