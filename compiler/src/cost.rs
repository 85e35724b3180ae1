//! What each step of a plan computes, recorded in the artifact for profiles (`xforge bench
//! --profile`): its group's schedule and ops, the bytes it must move at least and its FLOPs.
use xforge_ir::{Graph, Op, ValueId};
use xforge_passes::fusion::FusionGroup;
use xforge_runtime::StepCost;

/// Ops named in a step's label at most (the rest as `+…`).
const MAX_OPS: usize = 6;

/// The cost of a fusion group's step: every input and output read or written once (weights
/// included), and 2 FLOPs per multiply-add of its contractions.
pub fn of_group(g: &Graph, grp: &FusionGroup) -> StepCost {
    let mut ops = grp.op_names(g);
    let more = ops.len() > MAX_OPS;
    ops.truncate(MAX_OPS);
    let mut label = ops.join("+");
    if more {
        label.push_str("+…");
    }
    let mut seen = std::collections::HashSet::new();
    let bytes = grp.inputs.iter().chain(&grp.outputs).filter(|v| seen.insert(**v)).map(|&v| bytes_of(g, v)).sum();
    let flops = grp.nodes.iter().map(|&n| flops_of(g, n)).fold(0u64, u64::saturating_add);
    StepCost { schedule: grp.schedule.to_string(), ops: label, bytes, flops }
}

/// A step that copies a constant output into its buffer.
pub fn of_copy(g: &Graph, v: ValueId) -> StepCost {
    StepCost { schedule: "copy".into(), ops: "Constant".into(), bytes: 2 * bytes_of(g, v), flops: 0 }
}

/// Bytes of a value of static shape (0 where the shape is symbolic).
fn bytes_of(g: &Graph, v: ValueId) -> u64 {
    let ty = g.ty(v);
    ty.static_shape().map(|s| s.iter().fold(ty.dtype.size() as u64, |a, &d| a.saturating_mul(d as u64))).unwrap_or(0)
}

fn shape(g: &Graph, v: Option<&Option<ValueId>>) -> Option<Vec<u64>> {
    let v = (*v?)?;
    Some(g.ty(v).static_shape()?.into_iter().map(|d| d as u64).collect())
}

/// 2 × the multiply-adds of a contraction node (0 for other ops, or where a shape is symbolic).
fn flops_of(g: &Graph, n: usize) -> u64 {
    let node = &g.nodes[n];
    let input = |k: usize| shape(g, node.inputs.get(k));
    let out = shape(g, node.outputs.first());
    let count = |s: &[u64]| s.iter().fold(1u64, |a, &d| a.saturating_mul(d));
    let f = || -> Option<u64> {
        let per_output = match node.op {
            // [.., M, K] × [.., K, N]: K multiply-adds per output
            Op::MatMul => *input(0)?.last()?,
            Op::Gemm => {
                let a = input(0)?;
                let trans = matches!(node.attr("transA"), Some(xforge_ir::Attr::Int(1)));
                *a.get(if trans { 0 } else { 1 })?
            }
            // weights [Co, Ci/g, k…]: Ci/g · Πk per output (NCHW and channels-last alike)
            Op::Conv | Op::ConvNhwc => count(input(1)?.get(1..)?),
            // every input element meets Co/g · Πk weights
            Op::ConvTranspose => {
                let x = input(0)?;
                return Some(2u64.saturating_mul(count(&x)).saturating_mul(count(input(1)?.get(1..)?)));
            }
            // q·kᵀ and p·v: L multiply-adds per score and per output element
            Op::Attention => {
                let q = input(0)?;
                let k = input(1)?;
                let l = *k.get(k.len().checked_sub(2)?)?;
                return Some(2u64.saturating_mul(l).saturating_mul(count(&q).saturating_add(count(&out?))));
            }
            _ => return Some(0),
        };
        Some(2u64.saturating_mul(count(&out?)).saturating_mul(per_output))
    };
    f().unwrap_or(0)
}
