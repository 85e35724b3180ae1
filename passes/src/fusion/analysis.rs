//! The e-graph analysis: each e-class carries what inference knows of its value (dtype, shape,
//! small constants) and the kind of op that computes it, so rules can refuse illegal matches.
use super::language::{ENode, Head, NodeTable, RULE_WEIGHTS};
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
    /// Weights rules made, by the key the rule gave (so a rule applied again finds its own), and
    /// their names
    pub rule_weights: HashMap<String, u32>,
    pub rule_weight_names: HashMap<u32, String>,
}

impl FusionAnalysis {
    /// The weight key of `tensor`, made by a rule under `key` (what it is made from) and named
    /// `name`: the same key gives the same weight.
    pub fn rule_weight(&mut self, key: String, name: &str, tensor: impl FnOnce() -> Tensor) -> u32 {
        if let Some(&w) = self.rule_weights.get(&key) {
            return w;
        }
        let w = RULE_WEIGHTS + self.rule_weights.len() as u32;
        self.weights.insert(w, tensor());
        self.rule_weights.insert(key, w);
        self.rule_weight_names.insert(w, name.to_string());
        w
    }
}

fn fact_of_weight(t: &Tensor) -> Fact {
    if t.len() <= xforge_ir::infer::FOLD_LIMIT {
        // as the graph's inference knows it (a shape tensor's dims included)
        Fact::constant(t.clone())
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
        // a shape with more known dims (a rule's inference may have had only symbols)
        let known =
            |t: &ValueType| t.shape.as_ref().map_or(0, |s| 1 + s.iter().filter(|d| d.known().is_some()).count());
        if known(&from.facts[0].ty) > known(&to.facts[0].ty) {
            to.facts[0].ty = from.facts[0].ty.clone();
            changed = true;
        }
        DidMerge(changed, true)
    }
}
