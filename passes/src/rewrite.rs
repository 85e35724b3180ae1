//! Small editing helpers shared by the passes.
use xforge_ir::{Attr, DType, Graph, Node, Op, Tensor, ValueId, ValueType};

/// A node of one output, named `{base}.{what}`.
pub fn node(base: &str, what: &str, op: Op, inputs: &[ValueId], out: ValueId, attrs: Vec<(&str, Attr)>) -> Node {
    Node {
        name: format!("{base}.{what}"),
        op,
        inputs: inputs.iter().copied().map(Some).collect(),
        outputs: vec![Some(out)],
        attrs: attrs.into_iter().map(|(k, a)| (k.to_string(), a)).collect(),
    }
}

/// A new 1-D i64 weight (a shape, indices) named `name`.
pub fn ints_weight(g: &mut Graph, name: String, v: Vec<i64>) -> ValueId {
    let id = g.add_value(name, ValueType::known(DType::I64, &[v.len()]));
    g.weights.insert(id, Tensor::from_i64(vec![v.len()], v));
    id
}

/// A new 1-D i64 weight holding `dims` (a Reshape's shape).
pub fn shape_weight(g: &mut Graph, name: String, dims: &[usize]) -> ValueId {
    ints_weight(g, name, dims.iter().map(|&d| d as i64).collect())
}

/// Makes every use of `old` (by nodes and graph outputs) use `new` instead.
pub fn replace_uses(g: &mut Graph, old: ValueId, new: ValueId) {
    for n in &mut g.nodes {
        for i in n.inputs.iter_mut().flatten() {
            if *i == old {
                *i = new;
            }
        }
    }
    for o in &mut g.outputs {
        if *o == old {
            *o = new;
        }
    }
}

/// Consumers of each value: (node index, input position).
pub fn consumers(g: &Graph) -> Vec<Vec<(usize, usize)>> {
    let mut c = vec![vec![]; g.values.len()];
    for (ni, n) in g.nodes.iter().enumerate() {
        for (k, i) in n.inputs.iter().enumerate() {
            if let Some(i) = i {
                c[i.index()].push((ni, k));
            }
        }
    }
    c
}

/// The axes a node takes as its `axes` attribute or as a constant second input (Unsqueeze,
/// reductions), as written (negative axes not normalized).
pub fn const_axes(g: &Graph, n: &xforge_ir::Node) -> Option<Vec<i64>> {
    match n.attr("axes") {
        Some(xforge_ir::Attr::Ints(a)) => Some(a.clone()),
        _ => n.inputs.get(1).copied().flatten().and_then(|v| g.weights.get(&v)).map(|t| t.to_i64()),
    }
}

/// The weight behind a value, if it is one.
pub fn weight(g: &Graph, v: ValueId) -> Option<&xforge_ir::Tensor> {
    g.weights.get(&v)
}

/// The single element of a one-element weight.
pub fn scalar(g: &Graph, v: ValueId) -> Option<f64> {
    weight(g, v).filter(|t| t.len() == 1).map(|t| t.to_f64()[0])
}

/// Reorders nodes topologically (stable: keeps the current order where dependencies allow).
pub fn toposort(g: &mut Graph) {
    let mut producer = vec![None; g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for o in n.output_ids() {
            producer[o.index()] = Some(i);
        }
    }
    let deps: Vec<Vec<usize>> = (g.nodes.iter().enumerate())
        .map(|(i, node)| {
            g.node_reads(node).into_iter().filter_map(|v| producer[v.index()]).filter(|&p| p != i).collect()
        })
        .collect();
    let order = xforge_ir::graph::stable_topo_order(&deps).expect("a pass created a cycle");
    let mut old: Vec<Option<xforge_ir::Node>> = std::mem::take(&mut g.nodes).into_iter().map(Some).collect();
    g.nodes = order.into_iter().map(|i| old[i].take().unwrap()).collect();
}

/// Replaces each node for which `rewrite` gives nodes by those nodes, in place (the new nodes are
/// not visited again); returns how many were replaced.
pub fn replace_nodes(g: &mut Graph, mut rewrite: impl FnMut(&mut Graph, &Node) -> Option<Vec<Node>>) -> usize {
    let mut done = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        let n = g.nodes[i].clone();
        match rewrite(g, &n) {
            Some(nodes) => {
                let k = nodes.len();
                g.nodes.splice(i..=i, nodes);
                i += k;
                done += 1;
            }
            None => i += 1,
        }
    }
    done
}

/// The nodes that replace one node, named after it (`{base}/{op}{k}`), collected in order.
pub struct Writer<'g> {
    pub g: &'g mut Graph,
    pub base: String,
    pub nodes: Vec<Node>,
}

impl<'g> Writer<'g> {
    pub fn new(g: &'g mut Graph, base: &str) -> Writer<'g> {
        Writer { g, base: base.to_string(), nodes: vec![] }
    }

    /// A node of one new output of `dt` (its shape left to inference).
    pub fn op(&mut self, op: Op, ins: &[ValueId], dt: DType, attrs: Vec<(&str, Attr)>) -> ValueId {
        let name = format!("{}/{}{}", self.base, op.name().to_lowercase(), self.nodes.len());
        let v = self.g.add_value(name, ValueType::unranked(dt));
        self.g.undeclared.insert(v);
        self.op_into(op, ins, v, attrs);
        v
    }

    /// A node writing the existing value `out` (an output of the node being replaced).
    pub fn op_into(&mut self, op: Op, ins: &[ValueId], out: ValueId, attrs: Vec<(&str, Attr)>) {
        let name = format!("{}/{}{}", self.base, op.name().to_lowercase(), self.nodes.len());
        self.nodes.push(Node {
            name,
            op,
            inputs: ins.iter().copied().map(Some).collect(),
            outputs: vec![Some(out)],
            attrs: attrs.into_iter().map(|(k, a)| (k.to_string(), a)).collect(),
        });
    }

    /// A new weight holding `t`.
    pub fn weight(&mut self, t: Tensor) -> ValueId {
        let name = format!("{}/const{}_{}", self.base, self.nodes.len(), self.g.weights.len());
        let id = self.g.add_value(name, ValueType::known(t.dtype(), t.shape()));
        self.g.weights.insert(id, t);
        id
    }

    /// A new 1-D i64 weight (axes, starts, shapes).
    pub fn ints(&mut self, v: &[i64]) -> ValueId {
        self.weight(Tensor::from_i64(vec![v.len()], v.to_vec()))
    }
}
