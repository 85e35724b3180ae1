//! Wide variadic ops become trees: a Sum, Max or Min of more than VARIADIC_MAX inputs is split
//! into ones of at most VARIADIC_MAX (the same value: the ops are associative and commutative up
//! to rounding order), and a wide Mean into that Sum tree divided by the count. One kernel then
//! never takes thousands of parameters (a Sum of 50,000 weights ran compile past two minutes
//! and could not have launched: a kernel's parameters are limited).
use xforge_ir::{DType, Graph, Node, Op, Tensor, ValueId, ValueType};

/// The most inputs a variadic op keeps.
pub const VARIADIC_MAX: usize = 32;

/// Returns the number of nodes split.
pub fn split_wide_variadics(g: &mut Graph) -> usize {
    let mut done = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        let n = g.nodes[i].clone();
        let wide = matches!(n.op, Op::Sum | Op::Max | Op::Min | Op::Mean) && n.inputs.len() > VARIADIC_MAX;
        let Some(out) = n.outputs.first().copied().flatten().filter(|_| wide) else {
            i += 1;
            continue;
        };
        let dt = g.ty(out).dtype;
        let combine = if n.op == Op::Mean { Op::Sum } else { n.op };
        let mut level: Vec<Option<ValueId>> = n.inputs.clone();
        let mut made = vec![];
        let mut k = 0;
        // chunks of VARIADIC_MAX until one node is left; it writes the result (or the sum a
        // Mean divides)
        while level.len() > VARIADIC_MAX {
            let mut next = vec![];
            for chunk in level.chunks(VARIADIC_MAX) {
                k += 1;
                let v = g.add_value(format!("{}/part{k}", n.name), ValueType::unranked(dt));
                g.undeclared.insert(v);
                made.push(Node {
                    name: format!("{}/part{k}", n.name),
                    op: combine,
                    inputs: chunk.to_vec(),
                    outputs: vec![Some(v)],
                    attrs: Default::default(),
                });
                next.push(Some(v));
            }
            level = next;
        }
        if n.op == Op::Mean {
            let total = g.add_value(format!("{}/total", n.name), ValueType::unranked(dt));
            g.undeclared.insert(total);
            made.push(Node {
                name: format!("{}/total", n.name),
                op: Op::Sum,
                inputs: level,
                outputs: vec![Some(total)],
                attrs: Default::default(),
            });
            let count = g.add_value(format!("{}/count", n.name), ValueType::known(dt, &[]));
            let c = if dt.is_float() { dt } else { DType::F32 };
            g.weights.insert(count, Tensor::from_f64(c, vec![], &[n.inputs.len() as f64]).cast(dt));
            made.push(Node {
                name: n.name.clone(),
                op: Op::Div,
                inputs: vec![Some(total), Some(count)],
                outputs: vec![Some(out)],
                attrs: Default::default(),
            });
        } else {
            made.push(Node { name: n.name.clone(), op: n.op, inputs: level, outputs: vec![Some(out)], attrs: n.attrs });
        }
        let added = made.len();
        g.nodes.splice(i..=i, made);
        i += added;
        done += 1;
    }
    done
}
