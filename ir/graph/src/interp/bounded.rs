//! Data-dependent shapes as static ones: `Bounded` runs the op its attribute `bounded_op` names
//! (NonZero, NonMaxSuppression, Compress) and pads the result with zeros along `bounded_axis` to the
//! static `bound`, giving the valid length as a second output (i64 scalar); `Prefix` takes the
//! first `length` entries along `axis` (the original, dynamic result again).
use super::attrs::{req, NodeAttrs};
use super::{OpResult, Scope};
use crate::graph::Node;
use crate::op::Op;
#[allow(unused_imports)]
use crate::tensor::TensorData;
use crate::tensor::{numel, Tensor};

/// The attributes `Bounded` adds to the op it wraps.
pub const OWN_ATTRS: [&str; 5] = ["bounded_op", "bounded_axis", "bound", "valid_axis", "nonzero_tile"];

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
    // NonMaxSuppression on padded boxes: only the first `valid` of them (input 5) take part
    let mut ins = ins.to_vec();
    if op == Op::NonMaxSuppression {
        if let Some(Some(n)) = ins.get(5).cloned() {
            ins[0] = Some(valid(req(&ins, 0)?, 1, &n)?);
            ins[1] = Some(valid(req(&ins, 1)?, 2, &n)?);
        }
        ins.truncate(5);
        inner.inputs.truncate(5);
    }
    // NonZero of padded data: only the first `valid` (input 1) along `valid_axis` take part
    if op == Op::NonZero {
        if let Some(Some(n)) = ins.get(1).cloned() {
            let axis = a.int("valid_axis", 0)? as usize;
            ins[0] = Some(valid(req(&ins, 0)?, axis, &n)?);
        }
        ins.truncate(1);
        inner.inputs.truncate(1);
    }
    let t = super::eval(&inner, &ins, opset, scope)?.remove(0);
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
    let idx: Vec<usize> = (0..outer)
        .flat_map(|o| (0..len).flat_map(move |k| (0..inner).map(move |i| (o * bound + k) * inner + i)))
        .collect();
    let mut shape = s.to_vec();
    shape[axis] = len;
    Ok(x.take(&idx, shape))
}

/// The first `len` entries along `axis` (a length given as a one-element tensor).
fn valid(t: &Tensor, axis: usize, len: &Tensor) -> OpResult<Tensor> {
    let mut n =
        Node { name: "prefix".into(), op: Op::Prefix, inputs: vec![], outputs: vec![], attrs: Default::default() };
    n.attrs.insert("axis".into(), crate::attr::Attr::Int(axis as i64));
    prefix(&NodeAttrs(&n), &[Some(t.clone()), Some(len.clone())])
}

/// An op of `op` with attributes `attrs` run on `ins` (the same opset).
fn run(op: Op, attrs: Vec<(&str, crate::attr::Attr)>, ins: &[Option<Tensor>], opset: i64) -> OpResult<Vec<Tensor>> {
    let node = Node {
        name: op.name().into(),
        op,
        inputs: vec![],
        outputs: vec![None; 2],
        attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    };
    super::eval(&node, ins, opset, &Scope::root())
}

/// TopKBounded(x, k, length): TopK of the valid entries along `axis` with a runtime K, both
/// results padded to `bound`.
pub fn topk(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Vec<Tensor>> {
    let (x, k, len) = (req(ins, 0)?, req(ins, 1)?, req(ins, 2)?);
    let axis = a.int("axis", 0)? as usize;
    let bound = a.int("bound", 0)? as usize;
    let v = valid(x, axis, len)?;
    let attrs = vec![
        ("axis", crate::attr::Attr::Int(axis as i64)),
        ("largest", crate::attr::Attr::Int(a.int("largest", 1)?)),
        ("sorted", crate::attr::Attr::Int(a.int("sorted", 1)?)),
    ];
    let k1 = Tensor::from_i64(vec![1], vec![k.to_i64().first().copied().unwrap_or(0)]);
    let r = run(Op::TopK, attrs, &[Some(v), Some(k1)], 21)?;
    if r[0].shape()[axis] > bound {
        return Err(format!("K = {} exceeds the bound {bound}", r[0].shape()[axis]));
    }
    Ok(vec![pad(&r[0], axis, bound), pad(&r[1], axis, bound)])
}

/// ConcatBounded(d0, l0, d1, l1, ...): the valid entries of each part along `axis`, one after
/// another, padded to the sum of the parts' bounds; and the total length.
pub fn concat(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Vec<Tensor>> {
    let axis = a.int("axis", 0)? as usize;
    if ins.len() % 2 != 0 {
        return Err("inputs come in (data, length) pairs".into());
    }
    let mut parts = vec![];
    let (mut bound, mut total) = (0usize, 0i64);
    for pair in ins.chunks(2) {
        let (d, l) = (pair[0].as_ref().ok_or("missing data")?, pair[1].as_ref().ok_or("missing length")?);
        bound += *d.shape().get(axis).ok_or("the axis is past the rank")?;
        let v = valid(d, axis, l)?;
        total += v.shape()[axis] as i64;
        parts.push(v);
    }
    let refs: Vec<&Tensor> = parts.iter().collect();
    let c = super::movement::concat(&refs, axis as i64)?;
    Ok(vec![pad(&c, axis, bound), Tensor::scalar_i64(total)])
}

/// ReduceBounded(x, length): the reduction `reduce` over `axes` (which hold `axis`) of the valid
/// entries along `axis`.
pub fn reduce(a: &NodeAttrs, _opset: i64, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (x, len) = (req(ins, 0)?, req(ins, 1)?);
    let axis = a.int("axis", 0)? as usize;
    let op = a.string("reduce", "")?;
    let op = Op::from_name(&op).ok_or_else(|| format!("unknown reduction '{op}'"))?;
    let axes = a.ints_opt("axes")?.unwrap_or_default();
    let v = valid(x, axis, len)?;
    let attrs = vec![("keepdims", crate::attr::Attr::Int(a.int("keepdims", 1)?))];
    let ax = Tensor::from_i64(vec![axes.len()], axes);
    Ok(run(op, attrs, &[Some(v), Some(ax)], 21)?.remove(0))
}
