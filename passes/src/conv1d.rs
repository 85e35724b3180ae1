//! 1-D convolutions as 2-D ones of height 1: a Conv over x (N, C, L) becomes
//!
//! ```text
//! x → reshape (N, C, 1, L) → Conv(·, W (K, C/g, 1, KL), bias; kernel [1, KL], strides [1, s],
//!   dilations [1, d], pads [0, p0, 0, p1]) → reshape (N, K, OL)
//! ```
//!
//! the same arithmetic, which cuDNN ran for it anyway (height 1, NCHW). As a 2-D convolution it
//! gets what 2-D ones get: the channels-last alternative of the layout rules, the patch GEMM, the
//! measured layout choice. Whisper's audio front-end (two 1-D convolutions over 3000 frames) at
//! batch 32 in fp16 took 733 µs in cuDNN's NCHW path for its first one (H100), 3% of its floor.
//! Depthwise 1-D convolutions (Mamba's causal conv1d) stay: they run next to the selective scan.
//!
//! The elementwise ops after such a convolution (an activation, GELU's Div/Erf/Add/Mul with scalar
//! constants) then run on the 4-D value too, and a Reshape reads it directly, so two convolutions
//! in a row (Whisper's) meet without a reshape between them, where transposes to and from
//! channels-last cancel.
use crate::rewrite::{node, shape_weight};
use std::collections::HashMap;
use xforge_ir::{Attr, Attrs, Graph, Node, Op, OpKind, Tensor, ValueId, ValueType};

/// The Conv's sizes when it is a 1-D convolution to rewrite: (N, C, L, K, OL).
fn one_d(g: &Graph, n: &Node) -> Option<[usize; 5]> {
    if n.op != Op::Conv || n.outputs.len() != 1 {
        return None;
    }
    let x = n.inputs.first().copied().flatten()?;
    let w = n.inputs.get(1).copied().flatten()?;
    let y = n.outputs[0]?;
    let [nn, c, l] = g.ty(x).static_shape()?[..] else { return None };
    let [k, wc, _] = g.ty(w).static_shape()?[..] else { return None };
    let [_, yk, ol] = g.ty(y).static_shape()?[..] else { return None };
    let group = match n.attr("group") {
        None => 1,
        Some(Attr::Int(v)) => *v,
        _ => return None,
    };
    let depthwise = c > 1 && group == c as i64 && wc == 1;
    // every attribute must be one this rewrite knows how to widen
    let known = n.attrs.iter().all(|(name, a)| match (name.as_str(), a) {
        ("kernel_shape" | "strides" | "dilations", Attr::Ints(v)) => v.len() == 1,
        ("pads", Attr::Ints(v)) => v.len() == 2,
        ("group", Attr::Int(_)) | ("auto_pad", Attr::Str(_)) => true,
        _ => false,
    });
    (known && !depthwise && yk == k && g.ty(x).dtype.is_float()).then_some([nn, c, l, k, ol])
}

/// The 2-D attributes of a 1-D Conv's.
fn widened(n: &Node) -> Attrs {
    n.attrs
        .iter()
        .map(|(name, a)| {
            let a = match (name.as_str(), a) {
                ("kernel_shape" | "strides" | "dilations", Attr::Ints(v)) => Attr::Ints(vec![1, v[0]]),
                ("pads", Attr::Ints(v)) => Attr::Ints(vec![0, v[0], 0, v[1]]),
                _ => a.clone(),
            };
            (name.clone(), a)
        })
        .collect()
}

/// Rewrites every 1-D convolution but the depthwise ones; returns how many.
pub fn conv1d_as_2d(g: &mut Graph) -> usize {
    let mut rewritten = vec![];
    let mut i = 0;
    while i < g.nodes.len() {
        let Some([nn, c, l, k, ol]) = one_d(g, &g.nodes[i]) else {
            i += 1;
            continue;
        };
        let conv = g.nodes[i].clone();
        let (x, w, y) = (conv.inputs[0].unwrap(), conv.inputs[1].unwrap(), conv.outputs[0].unwrap());
        let name = conv.name.clone();
        let dt = g.ty(x).dtype;
        let mut nodes = vec![];
        let sx = shape_weight(g, format!("{name}.rows_shape"), &[nn, c, 1, l]);
        let x4 = g.add_value(format!("{name}.rows"), ValueType::known(dt, &[nn, c, 1, l]));
        nodes.push(node(&name, "rows", Op::Reshape, &[x, sx], x4, vec![]));
        let wshape = g.ty(w).static_shape().unwrap();
        let w4shape = [wshape[0], wshape[1], 1, wshape[2]];
        let w4: ValueId = match g.weights.get(&w) {
            Some(t) => {
                let t4 = Tensor::new(w4shape.to_vec(), t.data().clone());
                let v = g.add_value(format!("{name}.weight_2d"), ValueType::known(t.dtype(), &w4shape));
                g.weights.insert(v, t4);
                v
            }
            None => {
                let sw = shape_weight(g, format!("{name}.weight_2d_shape"), &w4shape);
                let v = g.add_value(format!("{name}.weight_2d"), ValueType::known(g.ty(w).dtype, &w4shape));
                nodes.push(node(&name, "weight_2d", Op::Reshape, &[w, sw], v, vec![]));
                v
            }
        };
        let mut ins = vec![x4, w4];
        ins.extend(conv.inputs.get(2).copied().flatten());
        let y4 = g.add_value(format!("{name}.conv_2d"), ValueType::known(g.ty(y).dtype, &[nn, k, 1, ol]));
        let mut c2 = node(&name, "conv_2d", Op::Conv, &ins, y4, vec![]);
        c2.attrs = widened(&conv);
        nodes.push(c2);
        let sy = shape_weight(g, format!("{name}.out_shape"), &[nn, k, ol]);
        nodes.push(node(&name, "out", Op::Reshape, &[y4, sy], y, vec![]));
        let added = nodes.len();
        g.nodes.splice(i..=i, nodes);
        i += added;
        rewritten.push((y, y4));
    }
    // after every rewrite, so a later convolution's input reshape reads a lifted value
    for &(y, y4) in &rewritten {
        if let Some(at) = g.nodes.iter().position(|n| n.outputs.contains(&Some(y))) {
            lift(g, at + 1, y, y4);
        }
    }
    rewritten.len()
}

/// Whether `op`'s output element i depends only on its inputs' elements i (scalars broadcast).
fn pointwise(op: Op) -> bool {
    matches!(op.kind(), OpKind::Elementwise | OpKind::Broadcast) && op != Op::BatchNormalization
}

/// Whether `v` holds one element in at most `rank` axes (it broadcasts against any such shape).
fn scalar(g: &Graph, v: ValueId, rank: usize) -> bool {
    g.ty(v).static_shape().is_some_and(|s| s.len() <= rank && s.iter().product::<usize>() == 1)
}

/// Runs the pointwise consumers of `from` (and theirs), from node `start` on, on `to` — the same
/// elements in the same order with a unit axis more — instead; each keeps its old value as a
/// Reshape of its new one for the consumers that stay (dead-code elimination drops the unused
/// ones). A Reshape to a shape without 0 entries reads the new value directly.
fn lift(g: &mut Graph, start: usize, from: ValueId, to: ValueId) {
    let mut lifted: HashMap<ValueId, ValueId> = HashMap::from([(from, to)]);
    let mut i = start;
    while i < g.nodes.len() {
        let n = &g.nodes[i];
        if !n.inputs.iter().flatten().any(|v| lifted.contains_key(v)) {
            i += 1;
        } else if n.op == Op::Reshape {
            if let Some(new) = reshape_source(g, n, &lifted) {
                g.nodes[i].inputs[0] = Some(new);
            }
            i += 1;
        } else if let Some((old, shape)) = liftable(g, n, &lifted) {
            let old_shape = g.ty(old).static_shape().expect("liftable checked it");
            let (name, dtype) = (n.name.clone(), g.ty(old).dtype);
            let new = g.add_value(format!("{}.lifted", g.name_of(old)), ValueType::known(dtype, &shape));
            let node_i = &mut g.nodes[i];
            for v in node_i.inputs.iter_mut().flatten() {
                if let Some(&l) = lifted.get(v) {
                    *v = l;
                }
            }
            node_i.outputs[0] = Some(new);
            let s = shape_weight(g, format!("{name}.unlifted_shape"), &old_shape);
            g.nodes.insert(i + 1, node(&name, "unlifted", Op::Reshape, &[new, s], old, vec![]));
            lifted.insert(old, new);
            i += 2;
        } else {
            i += 1;
        }
    }
}

/// The lifted value a Reshape can read instead of its data (a target shape without 0 entries
/// depends only on the element order, which lifting keeps).
fn reshape_source(g: &Graph, n: &Node, lifted: &HashMap<ValueId, ValueId>) -> Option<ValueId> {
    let new = *lifted.get(&n.inputs.first().copied().flatten()?)?;
    let target = g.weights.get(&n.inputs.get(1).copied().flatten()?)?;
    (!target.to_i64().contains(&0)).then_some(new)
}

/// A pointwise node over lifted values (of one shape) and scalars: its output, which has a
/// static shape, and the lifted shape it gets.
fn liftable(g: &Graph, n: &Node, lifted: &HashMap<ValueId, ValueId>) -> Option<(ValueId, Vec<usize>)> {
    let shapes: Vec<Vec<usize>> = n
        .inputs
        .iter()
        .flatten()
        .filter_map(|v| lifted.get(v))
        .map(|&v| g.ty(v).static_shape().unwrap_or_default())
        .collect();
    let rank = shapes.first().map_or(0, Vec::len);
    let operands_ok = n.inputs.iter().flatten().all(|&v| lifted.contains_key(&v) || scalar(g, v, rank));
    if !(pointwise(n.op) && n.outputs.len() == 1 && operands_ok && shapes.windows(2).all(|w| w[0] == w[1])) {
        return None;
    }
    let old = n.outputs[0]?;
    g.ty(old).static_shape()?;
    Some((old, shapes.into_iter().next()?))
}
