//! The e-graph analysis: each e-class carries what inference knows of its value (dtype, shape,
//! small constants) and the kind of op that computes it, so rules can refuse illegal matches.
use super::language::{ENode, Head, NodeTable};
use egg::{Analysis, DidMerge, EGraph, Id};
use std::collections::HashMap;
use xforge_ir::infer::{infer_node, Fact, Fresh};
use xforge_ir::{DType, Node, OpKind, Tensor, ValueId, ValueType};

/// Facts of an e-class: one per output (a single one for plain values).
#[derive(Debug, Clone)]
pub struct Meta {
    pub facts: Vec<Fact>,
    /// `None` for inputs, weights and projections.
    pub kind: Option<OpKind>,
}

impl Meta {
    pub fn fact(&self) -> &Fact {
        &self.facts[0]
    }

    pub fn ty(&self) -> &ValueType {
        &self.facts[0].ty
    }

    /// The value of a one-element constant.
    pub fn scalar(&self) -> Option<f64> {
        self.facts[0].konst.as_ref().filter(|t| t.len() == 1).map(|t| t.to_f64()[0])
    }
}

pub type FusionGraph = EGraph<ENode, FusionAnalysis>;

#[derive(Debug, Default)]
pub struct FusionAnalysis {
    pub table: NodeTable,
    pub inputs: Vec<ValueType>,
    pub weights: HashMap<u32, Tensor>,
    pub opset: i64,
    pub fresh: Fresh,
}

fn fact_of_weight(t: &Tensor) -> Fact {
    if t.len() <= xforge_ir::infer::FOLD_LIMIT {
        Fact { ty: ValueType::known(t.dtype(), t.shape()), konst: Some(t.clone()), dims: None }
    } else {
        Fact { ty: ValueType::known(t.dtype(), t.shape()), konst: None, dims: None }
    }
}

impl Analysis<ENode> for FusionAnalysis {
    type Data = Meta;

    fn make(eg: &mut FusionGraph, enode: &ENode, _id: Id) -> Meta {
        let plain = |ty: ValueType| Meta { facts: vec![Fact { ty, konst: None, dims: None }], kind: None };
        match &enode.head {
            Head::Input(i) => plain(eg.analysis.inputs[*i as usize].clone()),
            Head::Weight(w) => Meta { facts: vec![fact_of_weight(&eg.analysis.weights[w])], kind: None },
            Head::Absent => plain(ValueType::unranked(DType::F32)),
            Head::Out(k) => {
                let t = &eg[enode.args[0]].data;
                Meta {
                    facts: vec![t.facts.get(*k as usize).cloned().unwrap_or_else(|| t.facts[0].clone())],
                    kind: t.kind,
                }
            }
            Head::Op { op, attrs } => {
                let a = *attrs as usize;
                let n_out = eg.analysis.table.outputs[a];
                let node = Node {
                    name: eg.analysis.table.names[a].clone(),
                    op: *op,
                    inputs: enode.args.iter().map(|_| Some(ValueId(0))).collect(),
                    outputs: (0..n_out).map(|_| Some(ValueId(0))).collect(),
                    attrs: eg.analysis.table.attrs[a].clone(),
                };
                let ins: Vec<Option<Fact>> = enode
                    .args
                    .iter()
                    .map(|&c| {
                        let is_absent = eg[c].nodes.iter().any(|n| n.head == Head::Absent);
                        (!is_absent).then(|| eg[c].data.facts[0].clone())
                    })
                    .collect();
                let opset = eg.analysis.opset;
                let facts = infer_node(&node, &ins, opset, &mut eg.analysis.fresh).unwrap_or_else(|e| {
                    // rules only build nodes they have checked; the graph's own nodes were verified
                    tracing::warn!("inference failed on e-node {op}: {e}");
                    let dt = ins.iter().flatten().next().map(|f| f.ty.dtype).unwrap_or(DType::F32);
                    vec![Fact { ty: ValueType::unranked(dt), konst: None, dims: None }; n_out.max(1)]
                });
                Meta { facts, kind: Some(op.kind()) }
            }
        }
    }

    fn merge(&mut self, to: &mut Meta, from: Meta) -> DidMerge {
        // equal values: keep what we have, adopt a constant or a known shape if only `from` has it
        let mut changed = false;
        if to.facts[0].konst.is_none() && from.facts[0].konst.is_some() {
            to.facts[0].konst = from.facts[0].konst.clone();
            changed = true;
        }
        if to.facts[0].ty.shape.is_none() && from.facts[0].ty.shape.is_some() {
            to.facts[0].ty = from.facts[0].ty.clone();
            changed = true;
        }
        DidMerge(changed, true)
    }
}
