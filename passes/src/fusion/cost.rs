//! The cost model: bytes read and written to device memory plus a per-launch cost; views are
//! free, vendor-library calls pay a fixed call cost on top.
use super::analysis::FusionGraph;
use super::language::{ENode, Head};
use crate::knobs::{LAUNCH_BYTES, LIBRARY_CALL_BYTES, UNKNOWN_VALUE_BYTES};
use egg::{CostFunction, Id};
use xforge_ir::{Op, OpKind, ValueType};

/// Bytes of a value of type `ty`.
pub fn value_bytes(ty: &ValueType) -> f64 {
    match ty.static_shape() {
        Some(s) => s.iter().product::<usize>() as f64 * ty.dtype.size() as f64,
        None => UNKNOWN_VALUE_BYTES,
    }
}

/// Ops that only reinterpret a buffer: no kernel.
pub fn is_view(op: Op) -> bool {
    matches!(op, Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze | Op::Identity)
}

/// What one e-node costs by itself, given its e-class `id`.
pub fn node_cost(eg: &FusionGraph, node: &ENode, id: Id) -> f64 {
    let Head::Op { op, .. } = node.head else { return 0.0 };
    if is_view(op) {
        return 1.0;
    }
    let read: f64 = node.args.iter().map(|&a| value_bytes(eg[a].data.ty())).sum();
    let written: f64 = eg[id].data.facts.iter().map(|f| value_bytes(&f.ty)).sum();
    let library = if op.kind() == OpKind::Contraction && op != Op::Attention { LIBRARY_CALL_BYTES } else { 0.0 };
    LAUNCH_BYTES + library + read + written
}

/// Tree cost for egg's extractor: a node plus its children.
pub struct KernelCost<'a> {
    pub egraph: &'a FusionGraph,
}

impl CostFunction<ENode> for KernelCost<'_> {
    type Cost = f64;

    fn cost<C: FnMut(Id) -> f64>(&mut self, enode: &ENode, mut costs: C) -> f64 {
        // the class of this node is not known here: price its output by the first match
        let own = match enode.head {
            Head::Op { .. } => {
                let id = self
                    .egraph
                    .lookup(enode.clone())
                    .unwrap_or_else(|| enode.args.first().copied().unwrap_or(Id::from(0)));
                node_cost(self.egraph, enode, id)
            }
            _ => 0.0,
        };
        own + enode.args.iter().map(|&c| costs(c)).sum::<f64>()
    }
}
