//! Gathers that pick every index of one axis of one tensor, each by a constant scalar index
//! (torchvision's attention takes q, k and v so), become one Split of unit pieces and a
//! Squeeze each: data movement the partition can end a GEMM's store tail with.
use std::collections::BTreeMap;
use xforge_ir::{Attr, DType, Graph, Node, Op, Tensor, ValueId, ValueType};

/// A Gather's (data, axis, index) when its index is a constant scalar and the data's shape is
/// static.
fn scalar_gather(g: &Graph, n: &Node) -> Option<(ValueId, usize, usize)> {
    if n.op != Op::Gather {
        return None;
    }
    let (x, idx) = (n.inputs.first().copied().flatten()?, n.inputs.get(1).copied().flatten()?);
    let t = g.weights.get(&idx)?;
    let shape = g.ty(x).static_shape()?;
    if t.rank() != 0 {
        return None;
    }
    let r = shape.len() as i64;
    let a = match n.attr("axis") {
        Some(Attr::Int(a)) => *a,
        _ => 0,
    };
    let axis = usize::try_from(if a < 0 { a + r } else { a }).ok().filter(|&a| a < shape.len())?;
    let k = t.to_i64()[0];
    let k = usize::try_from(if k < 0 { k + shape[axis] as i64 } else { k }).ok().filter(|&k| k < shape[axis])?;
    Some((x, axis, k))
}

/// Returns the number of Gathers replaced (run `infer_graph` afterwards).
pub fn gathers_to_split(g: &mut Graph) -> usize {
    // (data, axis) → the Gather node of each index, and how many Gathers there are
    let mut sets: BTreeMap<(ValueId, usize), (BTreeMap<usize, usize>, usize)> = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if let Some((x, axis, k)) = scalar_gather(g, n) {
            let (by_index, count) = sets.entry((x, axis)).or_default();
            by_index.insert(k, i);
            *count += 1;
        }
    }
    let mut replaced = 0;
    let mut inserts: Vec<(usize, Node)> = vec![];
    for ((x, axis), (by_index, count)) in sets {
        let d = g.ty(x).static_shape().unwrap()[axis];
        // every index once, and no other Gather of the same index
        if by_index.len() != d || count != d || d < 2 {
            continue;
        }
        let dt = g.ty(x).dtype;
        let name = &g.nodes[by_index[&0]].name.clone();
        let sizes = g.add_value(format!("{name}_split_sizes"), ValueType::known(DType::I64, &[d]));
        g.weights.insert(sizes, Tensor::from_i64(vec![d], vec![1; d]));
        let axes = g.add_value(format!("{name}_split_axes"), ValueType::known(DType::I64, &[1]));
        g.weights.insert(axes, Tensor::from_i64(vec![1], vec![axis as i64]));
        let pieces: Vec<ValueId> =
            (0..d).map(|k| g.add_value(format!("{name}_piece{k}"), ValueType::unranked(dt))).collect();
        // axes and split sizes are inputs from opset 13, attributes before (the interpreter
        // holds a node to its model's opset)
        let inputs = g.opset >= 13;
        for (&k, &i) in &by_index {
            let n = &mut g.nodes[i];
            n.op = Op::Squeeze;
            n.attrs.clear();
            n.inputs = vec![Some(pieces[k])];
            if inputs {
                n.inputs.push(Some(axes));
            } else {
                n.attrs.insert("axes".into(), Attr::Ints(vec![axis as i64]));
            }
        }
        let mut attrs: xforge_ir::Attrs = [("axis".to_string(), Attr::Int(axis as i64))].into_iter().collect();
        if !inputs {
            attrs.insert("split".into(), Attr::Ints(vec![1; d]));
        }
        let split = Node {
            name: format!("{name}_split"),
            op: Op::Split,
            inputs: if inputs { vec![Some(x), Some(sizes)] } else { vec![Some(x)] },
            outputs: pieces.into_iter().map(Some).collect(),
            attrs,
        };
        inserts.push((*by_index.values().min().unwrap(), split));
        replaced += d;
    }
    // later positions first, so earlier ones stay valid
    inserts.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    for (at, n) in inserts {
        g.nodes.insert(at, n);
    }
    replaced
}
