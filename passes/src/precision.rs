//! Half-precision storage for a float model (`--precision fp16|bf16`): float weights are
//! rounded to the target type, float graph inputs are cast to it on entry and the outputs cast
//! back to their own type on exit, the model's Casts to a float type cast to the target, and
//! every value is re-inferred. Arithmetic stays f32 inside the kernels (the templates widen,
//! compute and round once), which keeps reductions and normalizations accurate.
//!
//! Index arithmetic stays f32: float values that only compute positions (what a Gather index,
//! a Range bound or a Cast to an integer is made of, from inputs and weights through
//! elementwise, movement and reduction ops, and what is computed from those alone, such as a
//! bilinear weight `p - floor(p)`) keep their type, and are cast to the target only where
//! half-precision data reads them. In f16 a pixel coordinate of 1000.3 would be 1000.5.
use std::collections::{BTreeMap, HashMap, HashSet};
use xforge_ir::infer::{infer_graph, InferError};
use xforge_ir::{Attr, DType, Graph, Node, Op, ValueId, ValueType};

/// ONNX `TensorProto.DataType` codes of the float types this pass touches.
fn onnx_code(dt: DType) -> i64 {
    match dt {
        DType::F16 => 10,
        DType::BF16 => 16,
        DType::F64 => 11,
        _ => 1,
    }
}

fn wide(dt: DType) -> bool {
    matches!(dt, DType::F32 | DType::F64)
}

/// Converts `g` to `target` storage (F16 or BF16); returns the number of weights converted.
pub fn convert(g: &mut Graph, target: DType) -> Result<usize, InferError> {
    assert!(matches!(target, DType::F16 | DType::BF16), "half-precision targets only");
    // operands the ONNX spec types as f32 whatever the data's type (Resize/Upsample scales), and
    // the selective scan's A, D and delta_bias, which its definition keeps in f32 (exp(Δ·A) over
    // thousands of steps amplifies A's rounding)
    let keep: HashSet<ValueId> = g
        .nodes
        .iter()
        .flat_map(|n| {
            let kept: &[usize] = match n.op {
                Op::Resize | Op::Upsample => &[1, 2, 3],
                Op::SelectiveScan => &[2, 5, 7],
                _ => &[],
            };
            kept.iter().filter_map(|&k| n.inputs.get(k).copied().flatten())
        })
        .collect();
    let exact = index_arithmetic(g);
    let mut converted = 0;
    let ids: Vec<ValueId> = g.weights.keys().copied().collect();
    for id in ids {
        if keep.contains(&id) || exact.contains(&id) || !wide(g.weights[&id].dtype()) {
            continue;
        }
        let t = g.weights[&id].cast(target);
        g.values[id.index()].ty = ValueType::known(target, t.shape());
        g.weights.insert(id, t);
        converted += 1;
    }
    for n in g.nodes.iter_mut() {
        if n.output_ids().any(|o| exact.contains(&o)) {
            continue;
        }
        if n.op == Op::Cast && matches!(n.attr("to"), Some(Attr::Int(c)) if *c == 1 || *c == 11) {
            n.attrs.insert("to".into(), Attr::Int(onnx_code(target)));
        }
        // constants made by nodes (Constant, ConstantOfShape's fill value)
        if let Some(Attr::Tensor(t)) = n.attrs.get("value") {
            if wide(t.dtype()) {
                let t = t.cast(target);
                n.attrs.insert("value".into(), Attr::Tensor(t));
            }
        }
    }
    // graph inputs: cast on entry, every reader reads the cast
    let mut front = vec![];
    for (k, &x) in g.inputs.clone().iter().enumerate() {
        if !wide(g.ty(x).dtype) || exact.contains(&x) {
            continue;
        }
        let h = g.add_value(
            format!("{}.{}", g.name_of(x), target.name()),
            ValueType { dtype: target, shape: g.ty(x).shape.clone() },
        );
        for n in g.nodes.iter_mut() {
            for i in n.inputs.iter_mut().flatten() {
                if *i == x {
                    *i = h;
                }
            }
        }
        front.push(cast_node(format!("precision_in_{k}"), x, h, target));
    }
    // graph outputs: the last value keeps the output's name and type, cast back from the target
    let mut back = vec![];
    for k in 0..g.outputs.len() {
        let y = g.outputs[k];
        let ty = g.ty(y).clone();
        if !wide(ty.dtype) {
            continue;
        }
        let name = g.name_of(y).to_string();
        g.values[y.index()].name = format!("{name}.{}", target.name());
        let out = g.add_value(name, ty.clone());
        // a padded output (valid entries of padded data): the data cast, then its valid entries,
        // so that the cast works on a static shape
        let prefix = g.nodes.iter().find(|n| n.op == Op::Prefix && n.outputs.first() == Some(&Some(y))).cloned();
        if let Some(Node { inputs, attrs, name: pn, .. }) =
            prefix.filter(|n| n.inputs.len() == 2 && n.inputs[0].is_some())
        {
            let data = inputs[0].expect("checked");
            let wide_data = g.add_value(
                format!("{}.{}", g.name_of(data), ty.dtype.name()),
                ValueType { dtype: ty.dtype, shape: g.ty(data).shape.clone() },
            );
            back.push(cast_node(format!("precision_out_{k}"), data, wide_data, ty.dtype));
            back.push(Node {
                name: format!("{pn}.{}", ty.dtype.name()),
                op: Op::Prefix,
                inputs: vec![Some(wide_data), inputs[1]],
                outputs: vec![Some(out)],
                attrs,
            });
        } else {
            back.push(cast_node(format!("precision_out_{k}"), y, out, ty.dtype));
        }
        g.outputs[k] = out;
    }
    // where half-precision work reads index arithmetic: a cast to the target, once per value
    let mut narrowed: HashMap<ValueId, ValueId> = HashMap::new();
    let mut body = vec![];
    for mut n in std::mem::take(&mut g.nodes) {
        // a node that reads only index arithmetic and makes no half-precision value (a Cast
        // to an integer, a comparison, more index arithmetic) reads it as it is
        let mixed = n.input_ids().any(|i| g.ty(i).dtype.is_float() && !exact.contains(&i))
            || n.output_ids().any(|o| g.ty(o).dtype.is_float() && !exact.contains(&o));
        if mixed {
            for i in n.inputs.iter_mut().flatten() {
                if !exact.contains(i) || !wide(g.ty(*i).dtype) {
                    continue;
                }
                let from = *i;
                *i = *narrowed.entry(from).or_insert_with(|| {
                    let h = g.add_value(
                        format!("{}.{}", g.name_of(from), target.name()),
                        ValueType { dtype: target, shape: g.ty(from).shape.clone() },
                    );
                    body.push(cast_node(format!("precision_narrow_{}", from.index()), from, h, target));
                    h
                });
            }
        }
        body.push(n);
    }
    g.nodes = body;
    let mut nodes = front;
    nodes.append(&mut g.nodes);
    nodes.extend(back);
    g.nodes = nodes;
    // every computed value takes the type its op now produces
    let outs: Vec<ValueId> = g.nodes.iter().flat_map(|n| n.output_ids()).collect();
    g.undeclared.extend(outs);
    infer_graph(g)?;
    Ok(converted)
}

/// The float values that only compute positions (see the module comment): the backward cone of
/// index operands through elementwise, movement and reduction ops down to inputs and weights,
/// then every value computed from that set and constants alone.
fn index_arithmetic(g: &Graph) -> HashSet<ValueId> {
    use xforge_ir::OpKind;
    let light =
        |op: Op| matches!(op.kind(), OpKind::Elementwise | OpKind::Broadcast | OpKind::Injective | OpKind::Reduction);
    let float = |v: ValueId| g.ty(v).dtype.is_float();
    let producers = g.producers();
    // values computed from inputs and weights by light ops only (no convolution, no matmul)
    let mut plain: HashSet<ValueId> = g.inputs.iter().chain(g.weights.keys()).copied().collect();
    for n in &g.nodes {
        if light(n.op) && n.input_ids().all(|i| plain.contains(&i)) {
            plain.extend(n.output_ids());
        }
    }
    let mut seeds: Vec<ValueId> = vec![];
    for n in &g.nodes {
        let index: &[usize] = match n.op {
            Op::Gather | Op::GatherElements | Op::GatherND | Op::ScatterElements | Op::ScatterND => &[1],
            Op::Range => &[0, 1, 2],
            Op::Cast => match n.attr("to") {
                Some(Attr::Int(c)) if DType::from_onnx_code(*c as i32).is_some_and(|d| !d.is_float()) => &[0],
                _ => &[],
            },
            _ => &[],
        };
        seeds.extend(index.iter().filter_map(|&k| n.inputs.get(k).copied().flatten()));
    }
    let mut exact: HashSet<ValueId> = HashSet::new();
    while let Some(v) = seeds.pop() {
        if !float(v) || !plain.contains(&v) || !exact.insert(v) {
            continue;
        }
        if let Some(p) = producers[v.index()] {
            seeds.extend(g.nodes[p].input_ids());
        }
    }
    // computed from that set (and constants) alone, such as 1 − frac
    for n in &g.nodes {
        let ins: Vec<ValueId> = n.input_ids().collect();
        let known = |i: &ValueId| exact.contains(i) || !float(*i) || g.weights.contains_key(i);
        if light(n.op) && ins.iter().any(|i| exact.contains(i)) && ins.iter().all(known) {
            exact.extend(ins.iter().copied().filter(|i| float(*i)));
            exact.extend(n.output_ids().filter(|&o| float(o)));
        }
    }
    exact
}

fn cast_node(name: String, from: ValueId, to: ValueId, dt: DType) -> Node {
    let mut attrs = BTreeMap::new();
    attrs.insert("to".to_string(), Attr::Int(onnx_code(dt)));
    Node { name, op: Op::Cast, inputs: vec![Some(from)], outputs: vec![Some(to)], attrs }
}
