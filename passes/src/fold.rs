//! Constant folding: every node whose value inference knows (shape subgraphs once shapes are
//! bound) or whose inputs are all weights becomes a weight.
use xforge_ir::infer::infer_graph;
use xforge_ir::interp::{eval_node, with_element_limit};
use xforge_ir::{Graph, Op, Tensor};

/// Largest tensor (elements) folding creates: weight transposes and reshapes fit.
pub const FOLD_MAX: usize = 1 << 26;

/// Returns the number of nodes folded away.
pub fn fold_constants(g: &mut Graph) -> usize {
    let facts = match infer_graph(&mut g.clone()) {
        Ok(f) => f,
        Err(_) => return 0,
    };
    let mut folded = 0;
    let mut keep = Vec::with_capacity(g.nodes.len());
    let nodes = std::mem::take(&mut g.nodes);
    for n in nodes {
        let control = matches!(n.op, Op::If | Op::Loop | Op::Scan);
        let outs: Vec<_> = n.output_ids().collect();
        // 1. inference already knows every output
        let known: Option<Vec<Tensor>> = outs.iter().map(|o| facts[o.index()].konst.clone()).collect();
        // 2. all inputs are weights
        let from_weights = || -> Option<Vec<Tensor>> {
            let ins: Option<Vec<Option<Tensor>>> = n
                .inputs
                .iter()
                .map(|i| match i {
                    None => Some(None),
                    Some(v) => g.weights.get(v).cloned().map(Some),
                })
                .collect();
            let ins = ins?;
            let r = with_element_limit(FOLD_MAX, || eval_node(&n, &ins, g.opset)).ok()?;
            Some(n.outputs.iter().zip(r).filter(|(o, _)| o.is_some()).map(|(_, t)| t).collect())
        };
        let values = if control || outs.is_empty() {
            None
        } else {
            known.filter(|k| k.len() == outs.len()).or_else(from_weights)
        };
        match values {
            Some(ts) if ts.len() == outs.len() => {
                for (o, t) in outs.iter().zip(ts) {
                    g.weights.insert(*o, t);
                }
                folded += 1;
            }
            _ => keep.push(n),
        }
    }
    g.nodes = keep;
    folded
}
