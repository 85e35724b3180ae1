//! Half-precision storage for a float model (`--precision fp16|bf16`): float weights are
//! rounded to the target type, float graph inputs are cast to it on entry and the outputs cast
//! back to their own type on exit, the model's Casts to a float type cast to the target, and
//! every value is re-inferred. Arithmetic stays f32 inside the kernels (the templates widen,
//! compute and round once), which keeps reductions and normalizations accurate.
use std::collections::{BTreeMap, HashSet};
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
    let mut converted = 0;
    let ids: Vec<ValueId> = g.weights.keys().copied().collect();
    for id in ids {
        if keep.contains(&id) || !wide(g.weights[&id].dtype()) {
            continue;
        }
        let t = g.weights[&id].cast(target);
        g.values[id.index()].ty = ValueType::known(target, t.shape());
        g.weights.insert(id, t);
        converted += 1;
    }
    for n in g.nodes.iter_mut() {
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
        if !wide(g.ty(x).dtype) {
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

fn cast_node(name: String, from: ValueId, to: ValueId, dt: DType) -> Node {
    let mut attrs = BTreeMap::new();
    attrs.insert("to".to_string(), Attr::Int(onnx_code(dt)));
    Node { name, op: Op::Cast, inputs: vec![Some(from)], outputs: vec![Some(to)], attrs }
}
