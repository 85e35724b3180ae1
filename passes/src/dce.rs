//! Dead-code elimination: drops nodes none of whose outputs reach a graph output, and weights
//! nothing reads. Node order is kept.
use xforge_ir::Graph;

pub fn dce(g: &mut Graph) -> usize {
    let mut live = vec![false; g.values.len()];
    for o in &g.outputs {
        live[o.index()] = true;
    }
    let mut keep = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate().rev() {
        if n.output_ids().any(|o| live[o.index()]) {
            keep[i] = true;
            for v in g.node_reads(n) {
                live[v.index()] = true;
            }
        }
    }
    let before = g.nodes.len();
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    g.weights.retain(|id, _| live[id.index()]);
    before - g.nodes.len()
}
