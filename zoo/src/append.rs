//! Graph surgery for the task pipelines: nodes written against an existing graph (its values
//! and weights), kept apart until `splice` puts them before or after the model's own nodes.
use xforge_ir::{Attr, DType, Graph, Node, Op, Tensor, ValueId, ValueType};

/// Nodes being written into `graph`; their outputs are undeclared until inference types them.
pub struct Appender<'g> {
    pub graph: &'g mut Graph,
    prefix: &'static str,
    pub nodes: Vec<Node>,
}

impl<'g> Appender<'g> {
    /// `prefix` names every new value and node (`zoo_pre_…`), so nothing collides with the model.
    pub fn new(graph: &'g mut Graph, prefix: &'static str) -> Appender<'g> {
        Appender { graph, prefix, nodes: vec![] }
    }

    fn fresh(&self, what: &str) -> String {
        format!("{}_{}{}", self.prefix, what, self.graph.values.len())
    }

    /// A new graph input.
    pub fn input(&mut self, name: &str, ty: ValueType) -> ValueId {
        let id = self.graph.add_value(name, ty);
        self.graph.inputs.push(id);
        id
    }

    pub fn constant(&mut self, t: Tensor) -> ValueId {
        let id = self.graph.add_value(self.fresh("const"), ValueType::known(t.dtype(), t.shape()));
        self.graph.weights.insert(id, t);
        id
    }

    pub fn f32s(&mut self, shape: &[usize], v: Vec<f32>) -> ValueId {
        self.constant(Tensor::from_f32(shape.to_vec(), v))
    }

    pub fn i64s(&mut self, v: &[i64]) -> ValueId {
        self.constant(Tensor::from_i64(vec![v.len()], v.to_vec()))
    }

    pub fn multi(&mut self, op: Op, inputs: &[Option<ValueId>], attrs: Vec<(&str, Attr)>, outs: usize) -> Vec<ValueId> {
        let name = self.fresh(&op.name().to_lowercase());
        let outputs: Vec<ValueId> = (0..outs)
            .map(|k| {
                let id = self.graph.add_value(format!("{name}:{k}"), ValueType::unranked(DType::F32));
                self.graph.undeclared.insert(id);
                id
            })
            .collect();
        let attrs = attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        self.nodes.push(Node {
            name,
            op,
            inputs: inputs.to_vec(),
            outputs: outputs.iter().map(|&o| Some(o)).collect(),
            attrs,
        });
        outputs
    }

    pub fn op(&mut self, op: Op, inputs: &[ValueId], attrs: Vec<(&str, Attr)>) -> ValueId {
        self.multi(op, &inputs.iter().map(|&i| Some(i)).collect::<Vec<_>>(), attrs, 1)[0]
    }

    pub fn add(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.op(Op::Add, &[a, b], vec![])
    }

    pub fn sub(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.op(Op::Sub, &[a, b], vec![])
    }

    pub fn mul(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.op(Op::Mul, &[a, b], vec![])
    }

    pub fn div(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.op(Op::Div, &[a, b], vec![])
    }

    pub fn min(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.op(Op::Min, &[a, b], vec![])
    }

    pub fn max(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.op(Op::Max, &[a, b], vec![])
    }

    pub fn cast(&mut self, x: ValueId, to: DType) -> ValueId {
        self.op(Op::Cast, &[x], vec![("to", Attr::Int(to.onnx_code() as i64))])
    }

    pub fn reshape(&mut self, x: ValueId, shape: &[i64]) -> ValueId {
        let s = self.i64s(shape);
        self.op(Op::Reshape, &[x, s], vec![])
    }

    pub fn transpose(&mut self, x: ValueId, perm: &[i64]) -> ValueId {
        self.op(Op::Transpose, &[x], vec![("perm", Attr::Ints(perm.to_vec()))])
    }

    /// Entries `index` of axis `axis` (kept as an axis of length `index.len()`).
    pub fn pick(&mut self, x: ValueId, axis: i64, index: &[i64]) -> ValueId {
        let i = self.i64s(index);
        self.op(Op::Gather, &[x, i], vec![("axis", Attr::Int(axis))])
    }

    /// A Reduce* over `axes`, keeping them: the axes an attribute or an input, as the graph's
    /// opset wants (ReduceSum took them as an input from opset 13, the others from 18).
    pub fn reduce(&mut self, op: Op, x: ValueId, axes: &[i64]) -> ValueId {
        let from = if op == Op::ReduceSum { 13 } else { 18 };
        let keep = ("keepdims", Attr::Int(1));
        if self.graph.opset >= from {
            let a = self.i64s(axes);
            self.op(op, &[x, a], vec![keep])
        } else {
            self.op(op, &[x], vec![("axes", Attr::Ints(axes.to_vec())), keep])
        }
    }

    /// The batch size of `x` (its first dimension) as a rank-0 i64 value.
    pub fn batch_of(&mut self, x: ValueId) -> ValueId {
        let shape = self.op(Op::Shape, &[x], vec![]);
        let zero = self.constant(Tensor::scalar_i64(0));
        self.op(Op::Gather, &[shape, zero], vec![("axis", Attr::Int(0))])
    }
}

/// Puts `pre` nodes before the graph's own and `post` nodes after them (each list in the order
/// it was written, which is topological).
pub fn splice(graph: &mut Graph, pre: Vec<Node>, post: Vec<Node>) {
    let own = std::mem::take(&mut graph.nodes);
    graph.nodes = pre.into_iter().chain(own).chain(post).collect();
}

/// Makes `input`, until now a graph input, the output of the node that produced `from`: the
/// pre-processing's last value is renamed into the model's input.
pub fn feed_input(graph: &mut Graph, nodes: &mut [Node], input: ValueId, from: ValueId) {
    graph.inputs.retain(|&i| i != input);
    for n in nodes.iter_mut() {
        for o in n.outputs.iter_mut().flatten() {
            if *o == from {
                *o = input;
            }
        }
    }
    // the model declared its input's type; inference checks the pre-processing against it
    graph.undeclared.remove(&from);
}
