//! Operator fusion with e-graphs: the canonicalized graph is loaded into an e-graph, rewrite
//! rules add fused alternatives (never deleting the original), a bytes-plus-launches cost model
//! picks one e-node per e-class, and the extracted graph is partitioned into `FusionGroup`s.
pub mod analysis;
pub mod cost;
pub mod egraph;
pub mod extract;
pub mod language;
pub mod layout;
pub mod partition;
pub mod rules;
pub mod scale_fold;
pub mod selective_scan;

use crate::knobs::{EGRAPH_ITER_LIMIT, EGRAPH_NODE_LIMIT, EGRAPH_TIME_LIMIT_MS, EXTRACT_PASSES};
use egg::{Runner, StopReason};
use std::fmt::Write;
use std::time::Duration;
use xforge_ir::Graph;

pub use partition::{FusionGroup, Partition, Schedule};

#[derive(Debug, thiserror::Error)]
pub enum FusionError {
    #[error(transparent)]
    Infer(#[from] xforge_ir::infer::InferError),
    #[error("fusion produced a malformed graph: {0}")]
    Verify(#[from] xforge_ir::verify::VerifyError),
}

/// How saturation went, and which cap (if any) stopped it.
#[derive(Clone, Debug)]
pub struct SaturationReport {
    pub iterations: usize,
    pub enodes: usize,
    pub eclasses: usize,
    /// `None` when the rules saturated; otherwise the cap that bound.
    pub cap: Option<String>,
}

pub struct Fused {
    pub graph: Graph,
    pub partition: Partition,
    pub saturation: SaturationReport,
    pub canon: crate::CanonStats,
    /// Node count of the graph before any pass.
    pub source_ops: usize,
    /// Wall time of each phase, in seconds.
    pub phases: Vec<(&'static str, f64)>,
}

/// Runs canonicalization, e-graph fusion and partitioning.
pub fn fuse(source: &Graph) -> Result<Fused, FusionError> {
    fuse_with(source, &cost::node_cost)
}

/// `fuse` with another price per e-node (tests force choices with it).
pub fn fuse_with(source: &Graph, price: &cost::NodeCost<'_>) -> Result<Fused, FusionError> {
    let mut phases = vec![];
    let mut clock = std::time::Instant::now();
    let mut lap = |name: &'static str, phases: &mut Vec<(&'static str, f64)>| {
        phases.push((name, clock.elapsed().as_secs_f64()));
        clock = std::time::Instant::now();
    };
    let mut g = source.clone();
    let canon = crate::canonicalize(&mut g)?;
    lap("canonicalize", &mut phases);
    let loaded = egraph::load(&g);
    let runner = Runner::default()
        .with_egraph(loaded.egraph)
        .with_node_limit(EGRAPH_NODE_LIMIT)
        .with_iter_limit(EGRAPH_ITER_LIMIT)
        .with_time_limit(Duration::from_millis(EGRAPH_TIME_LIMIT_MS))
        .run(&rules::rules());
    let cap = match &runner.stop_reason {
        Some(StopReason::Saturated) | None => None,
        Some(StopReason::IterationLimit(n)) => Some(format!("iteration limit ({n})")),
        Some(StopReason::NodeLimit(n)) => Some(format!("e-node limit ({n})")),
        Some(StopReason::TimeLimit(s)) => Some(format!("time limit ({s:.1} s)")),
        Some(StopReason::Other(s)) => Some(s.clone()),
    };
    for (i, it) in runner.iterations.iter().enumerate() {
        tracing::debug!("e-graph iteration {i}: {} e-nodes, applied {:?}", it.egraph_nodes, it.applied);
    }
    if let Some(c) = &cap {
        tracing::warn!("e-graph saturation stopped at the {c}; fusion may be incomplete");
    }
    let saturation = SaturationReport {
        iterations: runner.iterations.len(),
        enodes: runner.egraph.total_number_of_nodes(),
        eclasses: runner.egraph.number_of_classes(),
        cap,
    };
    let loaded = egraph::Loaded { egraph: runner.egraph, roots: loaded.roots, names: loaded.names };
    lap("saturate", &mut phases);
    let chosen = extract::extract(&loaded.egraph, price, EXTRACT_PASSES);
    let choice = |id: egg::Id| chosen[&loaded.egraph.find(id)].clone();
    let mut fused = egraph::unload(&loaded, &choice, &g);
    // the e-graph orders nodes by their operands; control flow left in the graph also reads
    // the values its bodies capture, so order by everything each node reads
    reorder(&mut fused);
    lap("extract", &mut phases);
    // rules may leave transpose pairs and views of views behind
    crate::noop::remove_noops(&mut fused);
    crate::dce::dce(&mut fused);
    xforge_ir::infer::infer_graph(&mut fused)?;
    // on inferred shapes: q, k and v taken by Gathers become one Split
    if crate::gather_split::gathers_to_split(&mut fused) > 0 {
        crate::dce::dce(&mut fused);
        xforge_ir::infer::infer_graph(&mut fused)?;
    }
    xforge_ir::verify::verify(&fused)?;
    lap("clean up", &mut phases);
    let partition = partition::partition(&fused);
    lap("partition", &mut phases);
    tracing::debug!("fusion phases (cumulative s): {phases:?}");
    Ok(Fused { graph: fused, partition, saturation, canon, source_ops: source.nodes.len(), phases })
}

/// Puts the nodes in an order where each follows the producers of everything it reads
/// (subgraph captures included), keeping the given order where it may.
fn reorder(g: &mut Graph) {
    if !g.nodes.iter().any(|n| n.subgraphs().next().is_some()) {
        return;
    }
    let producers = g.producers();
    let deps: Vec<Vec<usize>> =
        g.nodes.iter().map(|n| g.node_reads(n).iter().filter_map(|v| producers[v.index()]).collect()).collect();
    if let Ok(order) = xforge_ir::graph::stable_topo_order(&deps) {
        let nodes = std::mem::take(&mut g.nodes);
        let mut slots: Vec<Option<xforge_ir::Node>> = nodes.into_iter().map(Some).collect();
        g.nodes = order.into_iter().map(|i| slots[i].take().expect("each node once")).collect();
    }
}

/// One line per kernel, then `kernels: N (from M ops)`.
pub fn describe(f: &Fused) -> String {
    let g = &f.graph;
    let mut s = String::new();
    let name = |v| g.name_of(v).to_string();
    let mut k = 0;
    for grp in &f.partition.groups {
        if grp.schedule == Schedule::View {
            continue;
        }
        let ops: Vec<&str> = grp.nodes.iter().map(|&n| g.nodes[n].op.name()).collect();
        let ins: Vec<String> = grp.inputs.iter().filter(|v| !g.weights.contains_key(v)).map(|&v| name(v)).collect();
        let w = grp.inputs.iter().filter(|v| g.weights.contains_key(v)).count();
        let outs: Vec<String> = grp.outputs.iter().map(|&v| name(v)).collect();
        let _ = writeln!(
            s,
            "k{k:<4} {:<16} {:<40} in: {}{} -> {}",
            grp.schedule.to_string(),
            ops.join("+"),
            ins.join(", "),
            if w > 0 { format!(" (+{w} weights)") } else { String::new() },
            outs.join(", ")
        );
        k += 1;
    }
    if let Some(c) = &f.saturation.cap {
        let _ = writeln!(s, "note: e-graph saturation stopped at the {c}");
    }
    let _ = writeln!(s, "kernels: {} (from {} ops)", f.partition.kernels(), f.source_ops);
    s
}
