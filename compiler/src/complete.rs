//! Completion: after fusion every group gets a runner — a vendor-library call, the kernel of a
//! fused template, or, node by node, the generic kernel of its op. A fused group that no runner
//! takes is cut into runs of consecutive nodes (graph order, so no run reads a later one) that
//! each have one, down to single ops; a single op that not even the generic kernel runs is an
//! error naming the node.
use crate::library;
use xforge_ir::{Graph, OpKind};
use xforge_passes::fusion::cost::is_view;
use xforge_passes::fusion::partition::{anchor_schedule, group_of_nodes, library_accepts};
use xforge_passes::fusion::{Fused, FusionGroup, Schedule};

/// A node that no runner takes: its name, op and why.
#[derive(Debug, thiserror::Error)]
#[error("node '{node}' ({op}) cannot be compiled: {why}")]
pub struct Unrunnable {
    pub node: String,
    pub op: String,
    pub why: String,
}

/// Whether group `grp` (numbered `gi`) of `g` has a runner.
pub fn runs(g: &Graph, grp: &FusionGroup, gi: usize, generated_gemm: bool) -> Result<(), String> {
    if crate::build::writes_nothing(g, grp) {
        return Ok(());
    }
    let target = xforge_kernel::target::current();
    match grp.schedule {
        Schedule::View => Ok(()),
        Schedule::LibraryConv if !target.libraries => Err(format!("{} has no convolution library", target.chip)),
        Schedule::LibraryConv => library::conv(g, grp).map(|_| ()),
        Schedule::GeneratedConv => Err("no fused convolution template".into()),
        Schedule::LibraryGemm if !generated_gemm && target.libraries && library::gemm(g, grp).is_ok() => Ok(()),
        _ => xforge_kernel::generate(g, grp, gi).map(|_| ()).map_err(|e| e.to_string()),
    }
}

/// The schedule of a run of nodes cut from a group of schedule `whole`: the group's own where
/// the run holds its anchor (a library contraction demoted to a generated one where the library
/// does not take the run), elementwise or injective for a run of elementwise work.
fn schedule_of(g: &Graph, nodes: &[usize], whole: Schedule) -> Schedule {
    let anchor = nodes
        .iter()
        .map(|&n| &g.nodes[n])
        .find(|n| !is_view(n.op) && !matches!(anchor_schedule(g, n), Schedule::Elementwise | Schedule::Injective));
    match anchor {
        Some(a) => match anchor_schedule(g, a) {
            Schedule::LibraryGemm if !library_accepts(g, nodes, false) => Schedule::GeneratedGemm,
            Schedule::LibraryConv if !library_accepts(g, nodes, true) => Schedule::GeneratedConv,
            s if nodes.len() == 1 => s,
            _ => whole,
        },
        None if nodes.iter().all(|&n| is_view(g.nodes[n].op)) => Schedule::View,
        None if nodes.iter().any(|&n| g.nodes[n].op.kind() == OpKind::Injective && !is_view(g.nodes[n].op)) => {
            Schedule::Injective
        }
        None => Schedule::Elementwise,
    }
}

/// The runner of one node alone: its anchor schedule's template or library call, else the
/// generic kernel of its op. Views of weights get a copy (a view shares a buffer, weights have
/// none in the arena).
fn single(g: &Graph, n: usize, gi: usize, generated_gemm: bool) -> Result<FusionGroup, Unrunnable> {
    let node = &g.nodes[n];
    // the valid entries of a padded result: the same buffer (the runtime trims graph outputs)
    if node.op == xforge_ir::Op::Prefix {
        return Ok(group_of_nodes(g, Schedule::View, vec![n]));
    }
    let reads_weight = node.inputs.first().copied().flatten().is_some_and(|v| g.weights.contains_key(&v));
    let own = schedule_of(g, &[n], Schedule::Elementwise);
    if !(own == Schedule::View && reads_weight) {
        let grp = group_of_nodes(g, own, vec![n]);
        if runs(g, &grp, gi, generated_gemm).is_ok() {
            return Ok(grp);
        }
    }
    let grp = group_of_nodes(g, Schedule::Generic, vec![n]);
    match xforge_kernel::generate(g, &grp, gi) {
        Ok(_) => Ok(grp),
        Err(e) => Err(Unrunnable {
            node: node.name.clone(),
            op: node.op.to_string(),
            why: match e {
                xforge_kernel::KernelError::Unsupported { why, .. } => why,
                e => e.to_string(),
            },
        }),
    }
}

/// Cuts group `gi` into runs that each have a runner: each run is the longest prefix of the
/// nodes left that runs, or a single node with its own runner.
fn cut(g: &Graph, grp: &FusionGroup, gi: usize, generated_gemm: bool) -> Result<Vec<FusionGroup>, Unrunnable> {
    let mut parts = vec![];
    let mut rest: &[usize] = &grp.nodes;
    while !rest.is_empty() {
        // the longest prefix of two or more nodes that runs, tried from the longest down
        let mut found = None;
        for k in (2..=rest.len()).rev() {
            let nodes = rest[..k].to_vec();
            let part = group_of_nodes(g, schedule_of(g, &nodes, grp.schedule), nodes);
            if part.schedule != Schedule::View && runs(g, &part, gi, generated_gemm).is_ok() {
                found = Some((k, part));
                break;
            }
        }
        let (k, part) = match found {
            Some(f) => f,
            None => (1, single(g, rest[0], gi, generated_gemm)?),
        };
        parts.push(part);
        rest = &rest[k..];
    }
    Ok(parts)
}

/// Gives every group of `fused` a runner, cutting those without one; returns how many were cut.
pub fn complete(fused: &mut Fused, generated_gemm: bool) -> Result<usize, Unrunnable> {
    let mut n = 0;
    for i in (0..fused.partition.groups.len()).rev() {
        let grp = &fused.partition.groups[i];
        let why = match runs(&fused.graph, grp, i, generated_gemm) {
            Ok(()) => continue,
            Err(why) => why,
        };
        tracing::debug!("group {i} ({}, {} nodes) is cut: {why}", grp.schedule, grp.nodes.len());
        let parts = cut(&fused.graph, grp, i, generated_gemm)?;
        fused.partition.replace(i, parts);
        n += 1;
    }
    Ok(n)
}
