//! Data-dependent output shapes as static upper bounds with a count: NonZero, NonMaxSuppression
//! and Compress (with a runtime condition) become `Bounded` (the result padded to a bound known at
//! compile time, and its valid length as a value on the device) followed by `Prefix` (the valid
//! entries). Everything before `Prefix` has static shapes, so it compiles and runs inside the
//! plan's CUDA graph; a graph output that is a `Prefix` is returned at its valid length by the
//! runtime (the artifact's output binding names where the length lives).
use xforge_ir::{Attr, DType, Graph, Node, Op, ValueId, ValueType};

/// (axis, bound) of a data-dependent node's padded result, where its operands' shapes (and
/// NonMaxSuppression's per-class limit) are known.
fn padded(g: &Graph, n: &Node) -> Option<(usize, usize)> {
    let shape = |k: usize| n.inputs.get(k).copied().flatten().and_then(|v| g.ty(v).static_shape());
    match n.op {
        Op::NonZero => Some((1, shape(0)?.iter().product())),
        Op::Compress => {
            let x = shape(0)?;
            let cond: usize = shape(1)?.iter().product();
            match n.attr("axis") {
                Some(Attr::Int(a)) => {
                    let a = if *a < 0 { *a + x.len() as i64 } else { *a } as usize;
                    Some((a, (*x.get(a)?).min(cond)))
                }
                _ => Some((0, x.iter().product::<usize>().min(cond))),
            }
        }
        Op::NonMaxSuppression => {
            let (b, s) = (shape(0)?, shape(1)?);
            let (batches, classes, boxes) = (*b.first()?, *s.get(1)?, *b.get(1)?);
            let per_class = match n.inputs.get(2).copied().flatten() {
                None => 0,
                Some(v) => match g.weights.get(&v) {
                    Some(t) => (t.to_i64().first().copied().unwrap_or(0).max(0) as usize).min(boxes),
                    None => boxes,
                },
            };
            Some((0, batches * classes * per_class))
        }
        _ => None,
    }
}

/// What a NonMaxSuppression `n` of at least NMS_BLOCK_MIN_BOXES boxes runs on besides its own
/// operands: the TopK that orders each (batch, class)'s scores [B, C, N] from high to low (ties
/// by index, the greedy walk's order) and, where it fits NMS_MASK_MAX_BYTES, the overlap mask
/// of that order (NmsOverlapMask). Returns the nodes to run before the Bounded node and its
/// inputs 6 (the order) and 7 (the mask, when there is one). `ins` are the NonMaxSuppression's
/// operands as the Bounded node takes them, `s` the scores' shape.
pub(crate) fn nms_helpers(
    g: &mut Graph,
    n: &Node,
    ins: &[Option<ValueId>],
    s: &[usize],
) -> Option<(Vec<Node>, Vec<ValueId>)> {
    use crate::knobs::{NMS_BLOCK_MIN_BOXES, NMS_MASK_MAX_BOXES, NMS_MASK_MAX_BYTES};
    if s.len() != 3 || s[2] < NMS_BLOCK_MIN_BOXES {
        return None;
    }
    let (boxes, scores) = (ins.first().copied().flatten()?, ins.get(1).copied().flatten()?);
    let name = &n.name;
    let dt = g.ty(scores).dtype;
    let k = g.add_value(format!("{name}/order_k"), ValueType::known(DType::I64, &[1]));
    g.weights.insert(k, xforge_ir::Tensor::from_i64(vec![1], vec![s[2] as i64]));
    let vals = g.add_value(format!("{name}/order_scores"), ValueType::known(dt, s));
    let idx = g.add_value(format!("{name}/order"), ValueType::known(DType::I64, s));
    let mut a: xforge_ir::Attrs = Default::default();
    a.insert("axis".into(), Attr::Int(-1));
    let order = Node {
        name: format!("{name}/order"),
        op: Op::TopK,
        inputs: vec![Some(scores), Some(k)],
        outputs: vec![Some(vals), Some(idx)],
        attrs: a,
    };
    let words = s[2].div_ceil(xforge_ir::interp::MASK_WORD_BITS);
    let bytes = s[0] * s[1] * s[2] * words * 4;
    if s[2] > NMS_MASK_MAX_BOXES || bytes > NMS_MASK_MAX_BYTES {
        return Some((vec![order], vec![idx]));
    }
    let shape = [s[0], s[1], s[2], words];
    let mask = g.add_value(format!("{name}/overlaps"), ValueType::known(DType::I32, &shape));
    let mut a: xforge_ir::Attrs = Default::default();
    if let Some(c) = n.attrs.get("center_point_box") {
        a.insert("center_point_box".into(), c.clone());
    }
    let overlaps = Node {
        name: format!("{name}/overlaps"),
        op: Op::NmsOverlapMask,
        inputs: vec![Some(boxes), Some(idx), ins.get(3).copied().flatten()],
        outputs: vec![Some(mask)],
        attrs: a,
    };
    Some((vec![order, overlaps], vec![idx, mask]))
}

/// What a NonZero over at least NONZERO_TILED_MIN elements runs on: each tile of NONZERO_TILE
/// elements' first result column, as the exclusive prefix sums of the tiles' non-zero counts
/// (Equal/Not/Cast → Reshape [tiles, tile] → ReduceSum → CumSum, zeros appended to fill the
/// last tile) — so the Bounded kernel runs one block a tile. Returns the nodes to run before it
/// and the offsets (its input 2, i32). Needs CumSum (opset 11).
fn nonzero_tiles(g: &mut Graph, n: &Node) -> Option<(Vec<Node>, ValueId)> {
    use crate::knobs::{NONZERO_TILE, NONZERO_TILED_MIN};
    let x = n.inputs.first().copied().flatten()?;
    let (dt, shape) = (g.ty(x).dtype, g.ty(x).static_shape()?);
    let count: usize = shape.iter().product();
    // counts in i32: integers keep their type at any precision (generic kernels run them)
    if g.opset < 11 || count < NONZERO_TILED_MIN || count > i32::MAX as usize {
        return None;
    }
    let tiles = count.div_ceil(NONZERO_TILE);
    let name = format!("{}/tiles", n.name);
    let mut nodes = vec![];
    let value = |g: &mut Graph, what: &str, dt: DType, s: &[usize]| {
        g.add_value(format!("{name}/{what}"), ValueType::known(dt, s))
    };
    let mut node = |op: Op, what: &str, inputs: Vec<ValueId>, out: ValueId, attrs: Vec<(&str, Attr)>| {
        nodes.push(crate::rewrite::node(&name, what, op, &inputs, out, attrs));
    };
    let flat = if shape.len() == 1 {
        x
    } else {
        let flat_shape = crate::rewrite::shape_weight(g, format!("{name}/flat_shape"), &[count]);
        let flat = value(g, "flat", dt, &[count]);
        node(Op::Reshape, "flat", vec![x, flat_shape], flat, vec![]);
        flat
    };
    let zero = value(g, "zero", dt, &[]);
    g.weights.insert(zero, xforge_ir::Tensor::from_f64(dt, vec![], &[0.0]));
    let is0 = value(g, "is_zero", DType::Bool, &[count]);
    node(Op::Equal, "is_zero", vec![flat, zero], is0, vec![]);
    let nz = value(g, "non_zero", DType::Bool, &[count]);
    node(Op::Not, "non_zero", vec![is0], nz, vec![]);
    let mut ones = value(g, "ones", DType::I32, &[count]);
    node(Op::Cast, "ones", vec![nz], ones, vec![("to", Attr::Int(DType::I32.onnx_code() as i64))]);
    let fill = tiles * NONZERO_TILE - count;
    if fill > 0 {
        let zeros = value(g, "fill", DType::I32, &[fill]);
        g.weights.insert(zeros, xforge_ir::Tensor::zeros(DType::I32, vec![fill]));
        let all = value(g, "filled", DType::I32, &[tiles * NONZERO_TILE]);
        node(Op::Concat, "filled", vec![ones, zeros], all, vec![("axis", Attr::Int(0))]);
        ones = all;
    }
    let grid_shape = crate::rewrite::shape_weight(g, format!("{name}/grid_shape"), &[tiles, NONZERO_TILE]);
    let grid = value(g, "grid", DType::I32, &[tiles, NONZERO_TILE]);
    node(Op::Reshape, "grid", vec![ones, grid_shape], grid, vec![]);
    let counts = value(g, "counts", DType::I32, &[tiles]);
    if g.opset >= 13 {
        let axes = crate::rewrite::ints_weight(g, format!("{name}/axes"), vec![1]);
        node(Op::ReduceSum, "counts", vec![grid, axes], counts, vec![("keepdims", Attr::Int(0))]);
    } else {
        node(
            Op::ReduceSum,
            "counts",
            vec![grid],
            counts,
            vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))],
        );
    }
    let axis = value(g, "axis", DType::I64, &[]);
    g.weights.insert(axis, xforge_ir::Tensor::scalar_i64(0));
    let offsets = value(g, "offsets", DType::I32, &[tiles]);
    node(Op::CumSum, "offsets", vec![counts, axis], offsets, vec![("exclusive", Attr::Int(1))]);
    Some((nodes, offsets))
}

/// Rewrites every NonZero, NonMaxSuppression and Compress whose result has no static shape;
/// returns how many.
pub fn bound_data_dependent(g: &mut Graph) -> usize {
    let mut done = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        let n = g.nodes[i].clone();
        // whatever shape a file declares for them, these results depend on the data (a Compress
        // on a constant condition folds or keeps a static shape)
        let dynamic = match n.op {
            Op::NonZero | Op::NonMaxSuppression => true,
            Op::Compress => n.inputs.get(1).copied().flatten().is_some_and(|c| !g.weights.contains_key(&c)),
            _ => false,
        };
        let Some((axis, bound)) = padded(g, &n).filter(|_| dynamic) else {
            i += 1;
            continue;
        };
        let out = n.outputs[0].expect("checked");
        let dt = g.ty(out).dtype;
        let p = g.add_value(format!("{}/padded", n.name), ValueType::unranked(dt));
        let len = g.add_value(format!("{}/length", n.name), ValueType::known(DType::I64, &[]));
        g.undeclared.insert(p);
        let mut attrs = n.attrs.clone();
        attrs.insert("bounded_op".into(), Attr::Str(n.op.name().into()));
        attrs.insert("bounded_axis".into(), Attr::Int(axis as i64));
        attrs.insert("bound".into(), Attr::Int(bound as i64));
        let mut inputs = n.inputs.clone();
        let helpers = match (n.op, n.inputs.get(1).copied().flatten()) {
            (Op::NonMaxSuppression, Some(scores)) => {
                let s = g.ty(scores).static_shape().unwrap_or_default();
                nms_helpers(g, &n, &n.inputs, &s)
            }
            _ => None,
        };
        let (mut before, extra) = helpers.unwrap_or_default();
        if !extra.is_empty() {
            inputs.resize(6, None);
            inputs.extend(extra.into_iter().map(Some));
        }
        if n.op == Op::NonZero {
            if let Some((nodes, offsets)) = nonzero_tiles(g, &n) {
                before = nodes;
                inputs.resize(2, None);
                inputs.push(Some(offsets));
                attrs.insert("nonzero_tile".into(), Attr::Int(crate::knobs::NONZERO_TILE as i64));
            }
        }
        let bounded = Node { name: n.name.clone(), op: Op::Bounded, inputs, outputs: vec![Some(p), Some(len)], attrs };
        let mut pa: xforge_ir::Attrs = Default::default();
        pa.insert("axis".into(), Attr::Int(axis as i64));
        let prefix = Node {
            name: format!("{}/prefix", n.name),
            op: Op::Prefix,
            inputs: vec![Some(p), Some(len)],
            outputs: vec![Some(out)],
            attrs: pa,
        };
        let added = before.len();
        let nodes: Vec<Node> = before.into_iter().chain([bounded, prefix]).collect();
        g.nodes.splice(i..=i, nodes);
        done += 1;
        i += 2 + added;
    }
    done
}
