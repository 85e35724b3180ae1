//! The cost model: bytes read and written to device memory plus a per-launch cost; views are
//! free, vendor-library calls pay a fixed call cost on top.
use super::analysis::FusionGraph;
use super::language::{ENode, Head};
use crate::knobs::{
    CUBLASLT_CALL_BYTES, CUDNN_CALL_BYTES, CUDNN_NCHW_LAUNCHES, LAUNCH_BYTES, MEASURED_BYTES_PER_MICROSECOND,
    UNKNOWN_VALUE_BYTES,
};
use crate::tuning::TuningTable;
use egg::Id;
use xforge_ir::{DType, Op, ValueType};

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

/// The fixed price of the vendor-library call an op becomes (cuBLASLt GEMMs, cuDNN
/// convolutions); 0 for ops that become generated kernels.
pub fn library_call_bytes(op: Op) -> f64 {
    match op {
        Op::MatMul | Op::Gemm => CUBLASLT_CALL_BYTES,
        Op::Conv | Op::ConvNhwc | Op::ConvTranspose => CUDNN_CALL_BYTES,
        _ => 0.0,
    }
}

/// What one e-node costs by itself, given its e-class `id`.
pub fn node_cost(eg: &FusionGraph, node: &ENode, id: Id) -> f64 {
    let Head::Op { op, attrs } = node.head else { return 0.0 };
    if is_view(op) || (op == Op::Transpose && moves_only_unit_axes(eg, node, attrs)) {
        return 1.0;
    }
    let read: f64 = node.args.iter().map(|&a| value_bytes(eg[a].data.ty())).sum();
    let written: f64 = eg[id].data.facts.iter().map(|f| value_bytes(&f.ty)).sum();
    // a depthwise convolution is a generated weighted pool in either layout: no library call
    if is_depthwise(eg, node, attrs) {
        return LAUNCH_BYTES + read + written;
    }
    let library = library_call_bytes(op);
    // tensor cores want channels-last: cuDNN rewrites NCHW half-precision data on the way in and
    // out, in launches of its own
    let ty = eg[id].data.ty();
    let layout = if op == Op::Conv
        && matches!(ty.dtype, DType::F16 | DType::BF16)
        && ty.shape.as_ref().is_some_and(|s| s.len() == 4)
    {
        CUDNN_NCHW_LAUNCHES * LAUNCH_BYTES + read + written
    } else {
        0.0
    };
    LAUNCH_BYTES + library + read + written + layout
}

/// Whether a Transpose e-node keeps the order of its input's axes longer than 1: a Reshape in
/// effect (`noop::remove_noops` makes it one after extraction).
fn moves_only_unit_axes(eg: &FusionGraph, node: &ENode, attrs: u32) -> bool {
    let Some(s) = node.args.first().and_then(|&a| eg[a].data.ty().static_shape()) else { return false };
    let r = s.len() as i64;
    let perm: Option<Vec<usize>> = match eg.analysis.table.attrs.get(attrs as usize).and_then(|a| a.get("perm")) {
        Some(xforge_ir::Attr::Ints(p)) => {
            p.iter().map(|&k| usize::try_from(if k < 0 { k + r } else { k }).ok()).collect()
        }
        None => Some((0..s.len()).rev().collect()),
        _ => None,
    };
    perm.is_some_and(|p| crate::noop::keeps_nonunit_order(&s, &p))
}

/// Whether a Conv or ConvNhwc e-node is depthwise (`xforge_ir::window::depthwise_window`).
fn is_depthwise(eg: &FusionGraph, node: &ENode, attrs: u32) -> bool {
    let Head::Op { op, .. } = node.head else { return false };
    let shape = |k: usize| node.args.get(k).and_then(|&a| eg[a].data.ty().static_shape());
    match (shape(0), shape(1), eg.analysis.table.attrs.get(attrs as usize)) {
        (Some(x), Some(w), Some(a)) => xforge_ir::window::depthwise_window(op, a, &x, &w).is_some(),
        _ => false,
    }
}

/// The price of one e-node (its e-class given): `node_cost` unless a caller supplies another.
pub type NodeCost<'a> = dyn Fn(&FusionGraph, &ENode, Id) -> f64 + 'a;

/// `node_cost` where `table` has no measurement; a contraction the table measured costs its
/// measured time (in bytes at `MEASURED_BYTES_PER_MICROSECOND`) plus a launch.
pub fn measured_cost(table: &TuningTable) -> impl Fn(&FusionGraph, &ENode, Id) -> f64 + '_ {
    move |eg, node, id| {
        let modelled = || node_cost(eg, node, id);
        let Head::Op { op, attrs } = node.head else { return modelled() };
        if table.is_empty() || !crate::tuning::is_measured_op(op) {
            return modelled();
        }
        let Some(a) = eg.analysis.table.attrs.get(attrs as usize) else { return modelled() };
        let present = |c: &&Id| !eg[**c].nodes.iter().any(|n| matches!(n.head, Head::Absent));
        let types: Vec<&ValueType> = node.args.iter().filter(present).map(|&c| eg[c].data.ty()).collect();
        match table.node_micros(&crate::tuning::op_key(op, a, &types)) {
            Some(us) => LAUNCH_BYTES + us * MEASURED_BYTES_PER_MICROSECOND,
            None => modelled(),
        }
    }
}
