//! Common subexpressions: a node with the op, operands and attributes of an earlier node reads
//! as that node — its uses take the earlier node's outputs and it goes dead (dce). Exporters
//! write such twins (torchvision's detectors take `NonZero` of one score mask twice per level:
//! once for `x[mask]`, once for `where(mask)`), and each twin would be a kernel of its own.
//! One pass in node order with a substitution map (linear in the graph, however many twins).
//! Left alone: control flow (subgraph attributes), Dropout (random in training mode), and a
//! node whose output is a graph output (its name is the output's).
use std::collections::HashMap;
use xforge_ir::{Graph, Op, ValueId};

pub fn merge_common(g: &mut Graph) -> usize {
    let outputs: std::collections::HashSet<ValueId> = g.outputs.iter().copied().collect();
    // (op, operands) → earlier nodes with them
    let mut seen: HashMap<(Op, Vec<Option<ValueId>>), Vec<usize>> = HashMap::new();
    let mut subst: HashMap<ValueId, ValueId> = HashMap::new();
    let mut merged = 0;
    for i in 0..g.nodes.len() {
        for v in g.nodes[i].inputs.iter_mut().flatten() {
            if let Some(&s) = subst.get(v) {
                *v = s;
            }
        }
        let n = &g.nodes[i];
        if matches!(n.op, Op::If | Op::Loop | Op::Scan | Op::Dropout)
            || n.outputs.is_empty()
            || n.output_ids().any(|o| outputs.contains(&o))
        {
            continue;
        }
        let key = (n.op, n.inputs.clone());
        let twin = seen.get(&key).and_then(|earlier| {
            earlier.iter().copied().find(|&j| {
                let m = &g.nodes[j];
                // every output this node gives, the earlier one gives too
                m.attrs == n.attrs
                    && m.outputs.len() >= n.outputs.len()
                    && n.outputs.iter().zip(&m.outputs).all(|(a, b)| a.is_none() || b.is_some())
            })
        });
        match twin {
            Some(j) => {
                for (a, b) in g.nodes[i].outputs.iter().zip(&g.nodes[j].outputs) {
                    if let (Some(a), Some(b)) = (a, b) {
                        subst.insert(*a, *b);
                    }
                }
                merged += 1;
            }
            None => seen.entry(key).or_default().push(i),
        }
    }
    merged
}
