//! Partitioning the extracted graph into `FusionGroup`s: one kernel each (views are free).
//! Anchors (contractions, reductions, attention, data movement, opaque ops) start groups;
//! elementwise ops join the group of a producer whose value they alone consume (epilogues),
//! a reduction takes in the elementwise group feeding only it (prologue), and whatever is left
//! forms elementwise groups. A merge never makes two groups depend on each other.
use super::cost::is_view;
use xforge_ir::{Attr, Graph, Op, OpKind, ValueId};

pub use xforge_ir::group::{FusionGroup, Schedule};

fn reduces_last_axis(g: &Graph, n: &xforge_ir::Node) -> bool {
    let Some(x) = n.inputs.first().copied().flatten() else { return true };
    let Some(r) = g.ty(x).shape.as_ref().map(|s| s.len() as i64) else { return true };
    let axes = crate::rewrite::const_axes(g, n);
    // the reduced axes must be the innermost ones (a contiguous run at the end of each row)
    match axes {
        Some(a) => {
            let mut a: Vec<i64> = a.iter().map(|&x| if x < 0 { x + r } else { x }).collect();
            a.sort();
            a.dedup();
            a.iter().enumerate().all(|(i, &x)| x == r - a.len() as i64 + i as i64)
        }
        None => true,
    }
}

/// Whether a Transpose moves whole rows or small blocks: it leaves the innermost axis where it
/// is, its innermost output axis is short (an image's 3 channels moved last), or it permutes
/// only trailing axes of at most SMALL_TRANSPOSE_BLOCK elements (a channel shuffle on
/// channels-last data), so that neighbouring outputs read within a few cache lines or streams.
fn moves_rows(g: &Graph, n: &xforge_ir::Node) -> bool {
    let Some(shape) = n.inputs.first().copied().flatten().and_then(|x| g.ty(x).shape.clone()) else {
        return false;
    };
    let r = shape.len();
    let Some(Attr::Ints(p)) = n.attr("perm") else { return false };
    if r < 2 || p.len() != r {
        return false;
    }
    if p.last().is_some_and(|&l| l == r as i64 - 1 || l == -1) {
        return true;
    }
    let inner = usize::try_from(p[r - 1]).ok().and_then(|a| shape.get(a)).and_then(|d| d.known());
    if inner.is_some_and(|d| d <= crate::knobs::SMALL_TRANSPOSE_RUN) {
        return true;
    }
    let first_moved = (0..r).find(|&i| p[i] != i as i64).unwrap_or(r);
    let block: Option<usize> = shape[first_moved..].iter().map(|d| d.known()).product();
    block.is_some_and(|b| b <= crate::knobs::SMALL_TRANSPOSE_BLOCK)
}

/// The schedule a node gets when it starts a group.
pub fn anchor_schedule(g: &Graph, n: &xforge_ir::Node) -> Schedule {
    use Op::*;
    match n.op {
        op if is_view(op) => Schedule::View,
        // a depthwise convolution is a weighted pool: generated, with any epilogue
        Conv | ConvNhwc if xforge_ir::window::node_depthwise_window(g, n).is_some() => Schedule::Pooling,
        Conv | ConvNhwc | ConvTranspose => Schedule::LibraryConv,
        MatMul | Gemm | Einsum => Schedule::LibraryGemm,
        Attention => Schedule::Attention,
        MaxPool | MaxPoolNhwc | AveragePool | LpPool => Schedule::Pooling,
        GlobalAveragePool
        | GlobalMaxPool
        | Softmax
        | LogSoftmax
        | Hardmax
        | LayerNormalization
        | RMSNormalization
        | LpNormalization
        | InstanceNormalization
        | GroupNormalization
        | MeanVarianceNormalization
        | LRN => Schedule::RowReduction,
        ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2 | ReduceLogSum
        | ReduceLogSumExp | ReduceSumSquare | ArgMax | ArgMin => {
            if reduces_last_axis(g, n) {
                Schedule::RowReduction
            } else {
                Schedule::ColumnReduction
            }
        }
        CumSum | CumProd | Scan | SelectiveScan => Schedule::Scan,
        _ => match n.op.kind() {
            OpKind::Elementwise | OpKind::Broadcast => Schedule::Elementwise,
            OpKind::Injective => Schedule::Injective,
            _ => Schedule::Opaque,
        },
    }
}

fn accepts_epilogue(s: Schedule) -> bool {
    matches!(
        s,
        Schedule::Elementwise
            | Schedule::Injective
            | Schedule::RowReduction
            | Schedule::ColumnReduction
            | Schedule::Pooling
            | Schedule::LibraryGemm
            | Schedule::LibraryConv
            | Schedule::Attention
    )
}

/// Whether a vendor library runs a contraction group as one call: the epilogue, in order, is
/// an optional bias (a weight), an optional residual, an optional activation the library knows.
pub fn library_accepts(g: &Graph, nodes: &[usize], conv: bool) -> bool {
    let Some((&anchor, epilogue)) = nodes.split_first() else { return false };
    let out = |n: usize| g.nodes[n].outputs[0];
    let mut stage = 0; // 0: bias allowed, 1: residual allowed, 2: activation allowed, 3: done
    let mut cur = out(anchor);
    for &n in epilogue {
        let node = &g.nodes[n];
        if is_view(node.op) {
            cur = node.outputs[0];
            continue;
        }
        let other = node.inputs.iter().flatten().copied().find(|&v| Some(v) != cur);
        let from_cur = node.inputs.first().copied().flatten() == cur || node.inputs.get(1).copied().flatten() == cur;
        if !from_cur {
            return false;
        }
        let next = match node.op {
            Op::Add if other.is_some_and(|v| g.weights.contains_key(&v)) && stage == 0 => 1,
            Op::Add if other.is_some_and(|v| !g.weights.contains_key(&v)) && stage <= 1 => 2,
            Op::Relu if stage <= 2 => 3,
            Op::Gelu
                if stage <= 2 && !conv && matches!(node.attr("approximate"), Some(Attr::Str(s)) if s == "tanh") =>
            {
                3
            }
            Op::Sigmoid | Op::Tanh if stage <= 2 && conv => 3,
            // cuDNN's clipped ReLU: a lower bound of 0 and a positive upper one, both constant
            Op::Clip if stage <= 2 && conv && clip_from_zero(g, node).is_some() => 3,
            _ => return false,
        };
        stage = next;
        cur = node.outputs[0];
    }
    true
}

/// The upper bound of a Clip that is min(max(x, 0), hi) with a constant hi > 0 (ReLU6 and kin):
/// what cuDNN runs as a clipped ReLU.
pub fn clip_from_zero(g: &Graph, n: &xforge_ir::Node) -> Option<f64> {
    let bound = |k: usize, attr: &str| -> Option<f64> {
        match n.inputs.get(k).copied().flatten() {
            Some(v) => g.weights.get(&v).and_then(|t| t.to_f64().first().copied()),
            None => match n.attr(attr) {
                Some(Attr::Float(f)) => Some(*f as f64),
                _ => None,
            },
        }
    };
    match (bound(1, "min"), bound(2, "max")) {
        (Some(lo), Some(hi)) if lo == 0.0 && hi > 0.0 => Some(hi),
        _ => None,
    }
}

pub struct Partition {
    pub groups: Vec<FusionGroup>,
    /// Group of each node.
    pub group_of: Vec<usize>,
}

impl Partition {
    /// Kernels launched: every group but views.
    pub fn kernels(&self) -> usize {
        self.groups.iter().filter(|g| g.schedule != Schedule::View).count()
    }
}

/// The values a group of `nodes` (sorted) reads from outside, in first-use order, and those it
/// writes that something outside it (or the caller) reads.
fn group_io(g: &Graph, nodes: &[usize]) -> (Vec<ValueId>, Vec<ValueId>) {
    group_io_with(g, nodes, &readers_of(g))
}

/// The nodes that read each value (by value index).
fn readers_of(g: &Graph) -> Vec<Vec<usize>> {
    let mut r = vec![vec![]; g.values.len()];
    for (k, n) in g.nodes.iter().enumerate() {
        for v in g.node_reads(n) {
            if r[v.index()].last() != Some(&k) {
                r[v.index()].push(k);
            }
        }
    }
    r
}

/// `group_io` given every value's readers: linear in the group's size (a 5000-node chain spent
/// 16 s here when each output scanned every node of the graph).
fn group_io_with(g: &Graph, nodes: &[usize], readers: &[Vec<usize>]) -> (Vec<ValueId>, Vec<ValueId>) {
    let inside: std::collections::HashSet<ValueId> = nodes.iter().flat_map(|&m| g.nodes[m].output_ids()).collect();
    let mut inputs = vec![];
    let mut seen = std::collections::HashSet::new();
    for &m in nodes {
        for v in g.node_reads(&g.nodes[m]) {
            if !inside.contains(&v) && seen.insert(v) {
                inputs.push(v);
            }
        }
    }
    let outputs = nodes
        .iter()
        .flat_map(|&m| g.nodes[m].output_ids())
        .filter(|&o| g.outputs.contains(&o) || readers[o.index()].iter().any(|&k| nodes.binary_search(&k).is_err()))
        .collect();
    (inputs, outputs)
}

/// A generated GEMM group cut in two: the contraction with the longest epilogue prefix the
/// library runs (a `LibraryGemm` group), and the rest (elementwise, or injective when it moves
/// data). None when nothing is left to cut or the rest is not a chain on the cut value.
pub fn split_library_epilogue(g: &Graph, grp: &FusionGroup) -> Option<(FusionGroup, FusionGroup)> {
    if grp.schedule != Schedule::GeneratedGemm {
        return None;
    }
    let k = (1..grp.nodes.len()).rev().find(|&k| library_accepts(g, &grp.nodes[..k], false))?;
    let (head, tail) = (grp.nodes[..k].to_vec(), grp.nodes[k..].to_vec());
    let (head_in, head_out) = group_io(g, &head);
    // the head hands the tail one value
    if head_out.len() != 1 {
        return None;
    }
    let moves = tail.iter().any(|&n| matches!(g.nodes[n].op, Op::Split | Op::Transpose));
    let elementwise_or_view = |n: usize| {
        let op = g.nodes[n].op;
        is_view(op)
            || matches!(op.kind(), OpKind::Elementwise | OpKind::Broadcast)
            || matches!(op, Op::Split | Op::Transpose)
    };
    if !tail.iter().all(|&n| elementwise_or_view(n)) {
        return None;
    }
    let (tail_in, tail_out) = group_io(g, &tail);
    let schedule = if moves { Schedule::Injective } else { Schedule::Elementwise };
    Some((
        FusionGroup { schedule: Schedule::LibraryGemm, nodes: head, inputs: head_in, outputs: head_out },
        FusionGroup { schedule, nodes: tail, inputs: tail_in, outputs: tail_out },
    ))
}

impl Partition {
    /// Replaces group `i` by `head` and `tail` (numbered `i` and `i + 1`).
    pub fn split(&mut self, i: usize, head: FusionGroup, tail: FusionGroup) {
        self.replace(i, vec![head, tail]);
    }

    /// Groups `a` and `b` as one group of `schedule` (what `merge_into` would make of them).
    pub fn merged(&self, g: &Graph, a: usize, b: usize, schedule: Schedule) -> FusionGroup {
        let mut nodes = self.groups[b].nodes.clone();
        nodes.extend(&self.groups[a].nodes);
        nodes.sort();
        group_of_nodes(g, schedule, nodes)
    }

    /// Replaces group `b` by `merged` (group `a`'s nodes and its own, from `merged`) and drops
    /// group `a` (a < b, and only `b` reads what `a` writes, so the order stays valid); the
    /// groups after `a` move down by one.
    pub fn merge_into(&mut self, a: usize, b: usize, merged: FusionGroup) {
        debug_assert!(a < b);
        self.groups[b] = merged;
        self.groups.remove(a);
        for gid in self.group_of.iter_mut() {
            if *gid == a {
                *gid = b - 1;
            } else if *gid > a {
                *gid -= 1;
            }
        }
    }

    /// Replaces group `i` by `parts` (numbered `i`, `i + 1`, ...), which must hold its nodes
    /// and be ordered so that no part reads a later one.
    pub fn replace(&mut self, i: usize, parts: Vec<FusionGroup>) {
        debug_assert!(!parts.is_empty());
        let extra = parts.len() - 1;
        for gid in self.group_of.iter_mut() {
            if *gid > i {
                *gid += extra;
            }
        }
        for (k, p) in parts.iter().enumerate() {
            for &n in &p.nodes {
                self.group_of[n] = i + k;
            }
        }
        self.groups.splice(i..=i, parts);
    }
}

/// A group of `nodes` (sorted) of `g` with its inputs and outputs worked out.
pub fn group_of_nodes(g: &Graph, schedule: Schedule, nodes: Vec<usize>) -> FusionGroup {
    let (inputs, outputs) = group_io(g, &nodes);
    FusionGroup { schedule, nodes, inputs, outputs }
}

pub fn partition(g: &Graph) -> Partition {
    let n = g.nodes.len();
    let mut producer: Vec<Option<usize>> = vec![None; g.values.len()];
    for (i, node) in g.nodes.iter().enumerate() {
        for o in node.output_ids() {
            producer[o.index()] = Some(i);
        }
    }
    let mut uses = vec![0usize; g.values.len()];
    for node in &g.nodes {
        for v in g.node_reads(node) {
            uses[v.index()] += 1;
        }
    }
    for o in &g.outputs {
        uses[o.index()] += 1;
    }
    let mut group_of: Vec<usize> = vec![usize::MAX; n];
    let mut schedule: Vec<Schedule> = vec![];
    let mut members: Vec<Vec<usize>> = vec![];
    // values each group reads from outside it (counted as nodes join): a kernel's parameters
    // are bounded, so a group stops taking in work at MAX_GROUP_INPUTS
    let mut external: Vec<usize> = vec![];
    // direct dependencies between groups
    let mut deps: Vec<std::collections::BTreeSet<usize>> = vec![];
    // the group that computes a value, looking through views
    let source_group = |v: ValueId, group_of: &[usize]| -> Option<usize> {
        let mut v = v;
        loop {
            let p = producer[v.index()]?;
            let node = &g.nodes[p];
            if is_view(node.op) {
                v = node.inputs[0]?;
                continue;
            }
            return Some(group_of[p]);
        }
    };
    // how many values a node reads from outside group `gid` (graph inputs and weights included)
    let reads_outside = |node: &xforge_ir::Node, gid: usize, group_of: &[usize]| -> usize {
        g.node_reads(node).into_iter().filter(|&v| source_group(v, group_of) != Some(gid)).count()
    };
    // whether `to` can reach `from` through group dependencies (so `from` may not read `to`)
    fn reaches(deps: &[std::collections::BTreeSet<usize>], from: usize, to: usize) -> bool {
        let mut stack = vec![from];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(x) = stack.pop() {
            if x == to {
                return true;
            }
            if seen.insert(x) {
                stack.extend(deps[x].iter().copied());
            }
        }
        false
    }
    // whether a value comes out of a Transpose or Split (looking through views)
    let after_movement = |v: ValueId| -> bool {
        let mut v = v;
        while let Some(p) = producer[v.index()] {
            match g.nodes[p].op {
                Op::Transpose | Op::Split => return true,
                op if is_view(op) => match g.nodes[p].inputs[0] {
                    Some(x) => v = x,
                    None => return false,
                },
                _ => return false,
            }
        }
        false
    };
    for i in 0..n {
        let node = &g.nodes[i];
        let own = anchor_schedule(g, node);
        let inputs: Vec<ValueId> = g.node_reads(node).into_iter().filter(|v| !g.weights.contains_key(v)).collect();
        let producers: Vec<usize> = inputs.iter().filter_map(|&v| source_group(v, &group_of)).collect();
        let mut target: Option<usize> = None;
        let elementwise = own == Schedule::Elementwise;
        // strided stores: a Split after a GEMM, a Transpose after attention
        let movement_epilogue = matches!(node.op, Op::Split | Op::Transpose);
        // a Gather that keeps the shape of a group of data movement reads through it (the
        // template pulls each element through the group's remaps): Swin's two rolls in a row
        let out_shape = node.outputs.first().copied().flatten().and_then(|o| g.ty(o).static_shape());
        let pulled = node.op == Op::Gather && out_shape.is_some();
        if elementwise || movement_epilogue || own == Schedule::View || pulled {
            for &v in &inputs {
                let Some(p) = source_group(v, &group_of) else { continue };
                if pulled {
                    let remaps_of_shape = members[p].iter().all(|&m| {
                        let mn = &g.nodes[m];
                        matches!(mn.op, Op::Gather | Op::Slice | Op::Concat | Op::Pad)
                            && mn.output_ids().all(|o| g.ty(o).static_shape() == out_shape)
                    });
                    let data = node.inputs.first().copied().flatten() == Some(v);
                    let sole_reader = uses[v.index()] == 1 && !g.outputs.contains(&v);
                    let cyclic = producers.iter().any(|&q| q != p && reaches(&deps, q, p));
                    let bounded = members[p].len() < crate::knobs::MAX_GROUP_NODES
                        && external[p] + reads_outside(node, p, &group_of) <= crate::knobs::MAX_GROUP_INPUTS;
                    let joins = remaps_of_shape && data && sole_reader && bounded && !cyclic;
                    if schedule[p] == Schedule::Injective && joins {
                        target = Some(p);
                    }
                    break;
                }
                // a view costs nothing: it lives in the group that computes its buffer
                if own == Schedule::View {
                    target = Some(p);
                    break;
                }
                // a group stops growing at MAX_GROUP_NODES: one kernel of 100,000 fused ops took
                // LLVM 40 s, where several bounded ones compile in parallel
                if members[p].len() >= crate::knobs::MAX_GROUP_NODES {
                    continue;
                }
                let reads_from_outside = reads_outside(node, p, &group_of);
                if external[p] + reads_from_outside > crate::knobs::MAX_GROUP_INPUTS {
                    continue;
                }
                // a Transpose that moves whole rows or small blocks can be the store of data
                // movement or elementwise work before it (ShuffleNet's channel shuffle after its
                // Concat, in either layout); others stay lone tiled transposes
                let row_store = node.op == Op::Transpose
                    && moves_rows(g, node)
                    && matches!(schedule[p], Schedule::Injective | Schedule::Elementwise)
                    && members[p].iter().all(|&m| g.nodes[m].op != Op::Transpose || moves_rows(g, &g.nodes[m]));
                if movement_epilogue
                    && !row_store
                    && !matches!(schedule[p], Schedule::LibraryGemm | Schedule::Attention)
                {
                    continue;
                }
                // a contraction's or attention's strided stores end its group: elementwise work
                // after them would run in another iteration space
                if elementwise
                    && matches!(schedule[p], Schedule::LibraryGemm | Schedule::Attention)
                    && after_movement(v)
                {
                    continue;
                }
                // an elementwise group may keep a value it shares (it becomes one of several outputs);
                // other kernels only write their result, so this node must be its only reader
                let shared_ok = elementwise && schedule[p] == Schedule::Elementwise;
                let sole_reader = uses[v.index()] == 1 && !g.outputs.contains(&v);
                if !(sole_reader || shared_ok) || !accepts_epilogue(schedule[p]) {
                    continue;
                }
                // no template generates convolutions: a conv group takes only what cuDNN fuses
                if schedule[p] == Schedule::LibraryConv {
                    let mut nodes = members[p].clone();
                    nodes.push(i);
                    if !library_accepts(g, &nodes, true) {
                        continue;
                    }
                }
                let cyclic = producers.iter().any(|&q| q != p && reaches(&deps, q, p));
                if !cyclic {
                    target = Some(p);
                    break;
                }
            }
        }
        // a reduction takes in the elementwise group that feeds only it
        if target.is_none() && matches!(own, Schedule::RowReduction | Schedule::ColumnReduction) {
            if let Some(&v) = inputs.first() {
                if let Some(p) = source_group(v, &group_of) {
                    let single_out =
                        members[p].iter().all(|&m| g.nodes[m].output_ids().all(|o| o == v || uses[o.index()] == 1));
                    let cyclic = producers.iter().any(|&q| q != p && reaches(&deps, q, p));
                    if schedule[p] == Schedule::Elementwise
                        && uses[v.index()] == 1
                        && !g.outputs.contains(&v)
                        && single_out
                        && !cyclic
                    {
                        schedule[p] = own;
                        target = Some(p);
                    }
                }
            }
        }
        let gid = match target {
            Some(t) => t,
            None => {
                schedule.push(own);
                members.push(vec![]);
                external.push(0);
                deps.push(Default::default());
                schedule.len() - 1
            }
        };
        // an elementwise node also takes in the elementwise groups that only feed it (side branches
        // such as sigmoid(x) in x·sigmoid(x) + clip(x)), and so does data movement that pulls
        // its operands (Concat, Slice, Expand, Pad); either takes in data movement of that kind
        // too (the two halves a rotary embedding concatenates, negated, then scales): the
        // template pulls each element through them. Nothing else reads them, so no cycle.
        let repeats = || {
            let size = |v: Option<ValueId>| v.and_then(|v| g.ty(v).static_shape()).map(|s| s.iter().product::<usize>());
            match (size(node.inputs.first().copied().flatten()), size(node.outputs.first().copied().flatten())) {
                (Some(i), Some(o)) if i > 0 => o / i,
                _ => usize::MAX,
            }
        };
        let pulls = matches!(node.op, Op::Concat | Op::Slice | Op::Pad)
            || (matches!(node.op, Op::Expand | Op::Tile) && repeats() <= crate::knobs::PULL_MAX_REPEAT);
        if (elementwise && target.is_some()) || pulls {
            let own_reads = reads_outside(node, gid, &group_of);
            // the node's operands, then (data movement pulling data movement) what the groups
            // it took in read: a rotary embedding's Concat takes in the products, and then the
            // Slices and cache Gathers that only they read
            let mut work: Vec<(ValueId, bool)> = inputs.iter().rev().map(|&v| (v, false)).collect();
            while let Some((v, behind)) = work.pop() {
                let Some(q) = source_group(v, &group_of) else { continue };
                // what the template pulls through: data movement that reads its own operands
                // (transposes only where they move rows or small blocks; a Split's outputs read
                // where they lie), views and elementwise work
                let pullable = |q: usize| {
                    schedule[q] == Schedule::Injective
                        && members[q].iter().all(|&m| {
                            let op = g.nodes[m].op;
                            matches!(
                                op,
                                Op::Slice | Op::Concat | Op::Expand | Op::Tile | Op::Pad | Op::Gather | Op::Split
                            ) || (op == Op::Transpose && moves_rows(g, &g.nodes[m]))
                                || is_view(op)
                                || matches!(op.kind(), OpKind::Elementwise | OpKind::Broadcast)
                        })
                };
                if q == gid
                    || !(schedule[q] == Schedule::Elementwise || pullable(q))
                    || (behind && !pullable(q))
                    || !matches!(schedule[gid], Schedule::Elementwise | Schedule::Injective)
                    || reaches(&deps, q, gid)
                {
                    continue;
                }
                // behind a group taken in, readers already in this group count as here too
                let feeds_only_here = members[q].iter().all(|&m| {
                    g.nodes[m].output_ids().all(|o| {
                        !g.outputs.contains(&o)
                            && g.nodes.iter().enumerate().all(|(k, c)| {
                                !g.node_reads(c).contains(&o)
                                    || k == i
                                    || group_of[k] == q
                                    || (behind && group_of[k] == gid)
                            })
                    })
                });
                let bounded = external[gid] + own_reads + external[q] <= crate::knobs::MAX_GROUP_INPUTS
                    && members[gid].len() + members[q].len() < crate::knobs::MAX_GROUP_NODES;
                if feeds_only_here && bounded {
                    if schedule[q] == Schedule::Injective || pulls {
                        schedule[gid] = Schedule::Injective;
                    }
                    external[gid] += std::mem::take(&mut external[q]);
                    for m in std::mem::take(&mut members[q]) {
                        group_of[m] = gid;
                        members[gid].push(m);
                        if pulls {
                            work.extend(g.node_reads(&g.nodes[m]).into_iter().map(|v| (v, true)));
                        }
                    }
                    let inherited = std::mem::take(&mut deps[q]);
                    deps[gid].extend(inherited.into_iter().filter(|&d| d != gid));
                    for d in deps.iter_mut() {
                        if d.remove(&q) {
                            d.insert(gid);
                        }
                    }
                }
            }
        }
        // attention reads its operands through the transposes that feed only it
        if own == Schedule::Attention && target.is_none() {
            for &v in &inputs {
                let Some(p) = source_group(v, &group_of) else { continue };
                let lone_transpose = schedule[p] == Schedule::Injective
                    && members[p].iter().all(|&m| g.nodes[m].op == Op::Transpose)
                    && members[p].iter().all(|&m| g.nodes[m].output_ids().all(|o| uses[o.index()] == 1));
                if lone_transpose && p != gid {
                    for m in std::mem::take(&mut members[p]) {
                        group_of[m] = gid;
                        members[gid].push(m);
                    }
                    let inherited = std::mem::take(&mut deps[p]);
                    deps[gid].extend(inherited);
                    schedule[p] = Schedule::View;
                    for d in deps.iter_mut() {
                        if d.remove(&p) {
                            d.insert(gid);
                        }
                    }
                }
            }
        }
        external[gid] += reads_outside(node, gid, &group_of);
        members[gid].push(i);
        group_of[i] = gid;
        for p in producers {
            if p != gid {
                deps[gid].insert(p);
            }
        }
    }
    // groups emptied by merges are dropped; node indices are renumbered
    let keep: Vec<bool> = members.iter().map(|m| !m.is_empty()).collect();
    let mut renumber = vec![usize::MAX; keep.len()];
    let mut next = 0;
    for (i, &k) in keep.iter().enumerate() {
        if k {
            renumber[i] = next;
            next += 1;
        }
    }
    for gid in group_of.iter_mut() {
        *gid = renumber[*gid];
    }
    let readers = readers_of(g);
    let groups = members
        .into_iter()
        .zip(schedule)
        .filter(|(m, _)| !m.is_empty())
        .map(|(mut nodes, schedule)| {
            nodes.sort();
            let (inputs, outputs) = group_io_with(g, &nodes, &readers);
            let schedule = match schedule {
                Schedule::LibraryGemm if !library_accepts(g, &nodes, false) => Schedule::GeneratedGemm,
                Schedule::LibraryConv if !library_accepts(g, &nodes, true) => Schedule::GeneratedConv,
                s => s,
            };
            FusionGroup { schedule, nodes, inputs, outputs }
        })
        .collect();
    Partition { groups, group_of }
}
