//! The typed SSA dataflow graph.
use crate::attr::{Attr, Attrs};
use crate::op::Op;
use crate::shape::ValueType;
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// Index of a value in its graph. Each value has exactly one producer: a graph input, a weight,
/// a capture from an enclosing graph, or one node output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub ty: ValueType,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// `None` marks an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    /// `None` marks an output nobody asked for.
    pub outputs: Vec<Option<ValueId>>,
    pub attrs: Attrs,
}

impl Node {
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.get(name)
    }

    /// Present inputs, in order.
    pub fn input_ids(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.inputs.iter().flatten().copied()
    }

    pub fn output_ids(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.outputs.iter().flatten().copied()
    }

    /// Subgraphs held in attributes (If branches, Loop/Scan bodies).
    pub fn subgraphs(&self) -> impl Iterator<Item = (&str, &Graph)> + '_ {
        self.attrs.iter().filter_map(|(k, a)| match a {
            Attr::Graph(g) => Some((k.as_str(), &**g)),
            _ => None,
        })
    }
}

/// A graph: nodes in topological order over an arena of values.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    /// Version of the default ONNX operator set the nodes follow.
    pub opset: i64,
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// Constant tensors (initializers); shared, never copied.
    pub weights: BTreeMap<ValueId, Tensor>,
    /// Values that an enclosing graph defines, looked up by name when the graph runs.
    pub captures: Vec<ValueId>,
    /// Values whose type nobody declared yet; inference fills them in and empties the set.
    pub undeclared: std::collections::BTreeSet<ValueId>,
}

impl Graph {
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.index()]
    }

    pub fn name_of(&self, id: ValueId) -> &str {
        &self.values[id.index()].name
    }

    pub fn ty(&self, id: ValueId) -> &ValueType {
        &self.values[id.index()].ty
    }

    pub fn add_value(&mut self, name: impl Into<String>, ty: ValueType) -> ValueId {
        self.values.push(Value { name: name.into(), ty });
        ValueId(self.values.len() as u32 - 1)
    }

    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name).map(|i| ValueId(i as u32))
    }

    /// The node producing each value (`None` for inputs, weights and captures).
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for o in n.output_ids() {
                p[o.index()] = Some(i);
            }
        }
        p
    }

    /// Number of uses of each value by nodes and graph outputs.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.values.len()];
        for n in &self.nodes {
            for i in n.input_ids() {
                c[i.index()] += 1;
            }
        }
        for o in &self.outputs {
            c[o.index()] += 1;
        }
        c
    }

    /// Values each node reads, including those its subgraphs capture from this graph.
    pub fn node_reads(&self, node: &Node) -> Vec<ValueId> {
        let mut v: Vec<ValueId> = node.input_ids().collect();
        for (_, s) in node.subgraphs() {
            for &c in &s.captures {
                if let Some(id) = self.find_value(s.name_of(c)) {
                    v.push(id);
                }
            }
        }
        v
    }

    /// Parameters: elements and bytes over all weights.
    pub fn parameter_stats(&self) -> (usize, usize) {
        self.weights.values().fold((0, 0), |(n, b), t| (n + t.len(), b + t.nbytes()))
    }

    /// Op histogram, subgraphs included.
    pub fn op_histogram(&self) -> BTreeMap<&'static str, usize> {
        let mut h = BTreeMap::new();
        self.count_ops(&mut h);
        h
    }

    fn count_ops(&self, h: &mut BTreeMap<&'static str, usize>) {
        for n in &self.nodes {
            *h.entry(n.op.name()).or_insert(0) += 1;
            for (_, g) in n.subgraphs() {
                g.count_ops(h);
            }
        }
    }
}

/// Kahn's algorithm over `deps[i]`, the items item i waits for: the smallest ready index goes
/// first, so the given order is kept wherever dependencies allow. `Err(i)` names an item that can
/// never be ordered (it is on or behind a cycle).
pub fn stable_topo_order(deps: &[Vec<usize>]) -> Result<Vec<usize>, usize> {
    let n = deps.len();
    let mut indeg: Vec<usize> = deps.iter().map(|d| d.len()).collect();
    let mut users: Vec<Vec<usize>> = vec![vec![]; n];
    for (i, d) in deps.iter().enumerate() {
        for &p in d {
            users[p].push(i);
        }
    }
    let mut ready: std::collections::BTreeSet<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.insert(u);
            }
        }
    }
    match (0..n).find(|&i| indeg[i] > 0) {
        Some(stuck) => Err(stuck),
        None => Ok(order),
    }
}
