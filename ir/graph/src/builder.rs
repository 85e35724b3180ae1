//! A small builder for graphs in tests and passes.
use crate::attr::{Attr, Attrs};
use crate::dtype::DType;
use crate::graph::{Graph, Node, ValueId};
use crate::op::Op;
use crate::shape::{Dim, ValueType};
use crate::tensor::Tensor;

pub struct GraphBuilder {
    graph: Graph,
    counter: usize,
}

impl GraphBuilder {
    pub fn new(name: &str, opset: i64) -> GraphBuilder {
        GraphBuilder { graph: Graph { name: name.into(), opset, ..Graph::default() }, counter: 0 }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: &[usize]) -> ValueId {
        let id = self.graph.add_value(name, ValueType::known(dtype, shape));
        self.graph.inputs.push(id);
        id
    }

    /// An input with symbolic dimensions: a name such as "batch" or a number.
    pub fn input_sym(&mut self, name: &str, dtype: DType, dims: &[&str]) -> ValueId {
        let shape =
            dims.iter().map(|d| d.parse().map(Dim::Known).unwrap_or_else(|_| Dim::Sym(d.to_string()))).collect();
        let id = self.graph.add_value(name, ValueType::new(dtype, shape));
        self.graph.inputs.push(id);
        id
    }

    /// An input of a given type (bodies of control flow take scalars and symbolic shapes).
    pub fn input_typed(&mut self, name: &str, ty: ValueType) -> ValueId {
        let id = self.graph.add_value(name, ty);
        self.graph.inputs.push(id);
        id
    }

    /// A value this (sub)graph reads from an enclosing graph, found there by name.
    pub fn capture(&mut self, name: &str, ty: ValueType) -> ValueId {
        let id = self.graph.add_value(name, ty);
        self.graph.captures.push(id);
        id
    }

    pub fn weight(&mut self, name: &str, t: Tensor) -> ValueId {
        let id = self.graph.add_value(name, ValueType::known(t.dtype(), t.shape()));
        self.graph.weights.insert(id, t);
        id
    }

    /// Adds a node with one output of type `out` (use `ValueType::unranked` when unknown).
    pub fn node(&mut self, op: Op, inputs: &[ValueId], attrs: Vec<(&str, Attr)>, out: ValueType) -> ValueId {
        self.node_multi(op, &inputs.iter().map(|&i| Some(i)).collect::<Vec<_>>(), attrs, vec![out])[0]
    }

    pub fn node_multi(
        &mut self,
        op: Op,
        inputs: &[Option<ValueId>],
        attrs: Vec<(&str, Attr)>,
        outs: Vec<ValueType>,
    ) -> Vec<ValueId> {
        let name = self.fresh(&format!("{}_", op.name().to_lowercase()));
        let outputs: Vec<ValueId> =
            outs.into_iter().enumerate().map(|(i, t)| self.graph.add_value(format!("{name}:{i}"), t)).collect();
        let attrs: Attrs = attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        self.graph.nodes.push(Node {
            name,
            op,
            inputs: inputs.to_vec(),
            outputs: outputs.iter().map(|&o| Some(o)).collect(),
            attrs,
        });
        outputs
    }

    pub fn output(&mut self, id: ValueId) {
        self.graph.outputs.push(id);
    }

    pub fn finish(self) -> Graph {
        self.graph
    }
}
