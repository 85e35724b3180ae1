//! Concats of Slices of one tensor are data movement with a simpler form:
//!
//! - along the Concat's own axis they pick indices of that axis: one Gather with constant
//!   indices. `torch.roll` exports so (Swin's cyclic shift: two Slices and a Concat per rolled
//!   axis); as Gathers, consecutive rolls and the window partition after them fuse into one kernel
//!   instead of a kernel per Slice and Concat;
//! - along another axis, when the operands are the strided phases of a grid (x[0::2, 0::2],
//!   x[1::2, 0::2], … — Swin's patch merging, YOLO's Focus, space-to-depth written by hand), the
//!   Concat is a Reshape that splits each strided axis into (n / s, s), a Transpose that moves the
//!   phase axes before the Concat's axis, and a Reshape that merges them: one copy whose
//!   innermost run stays contiguous, instead of a kernel per Slice and one for the Concat.
use crate::rewrite::{ints_weight, node, shape_weight};
use std::collections::BTreeMap;
use xforge_ir::interp::slice_bounds_pub;
use xforge_ir::{Attr, Graph, Node, Op, ValueId, ValueType};

fn axis_of(a: Option<&Attr>, rank: usize) -> Option<usize> {
    let a = match a {
        Some(Attr::Int(a)) => *a,
        None => 0,
        _ => return None,
    };
    usize::try_from(if a < 0 { a + rank as i64 } else { a }).ok().filter(|&a| a < rank)
}

/// The indices of `axis` a Slice node takes from its data `x`, when it slices only that axis
/// with constant bounds.
fn slice_indices(g: &Graph, n: &Node, x: xforge_ir::ValueId, axis: usize) -> Option<Vec<i64>> {
    let shape = g.ty(x).static_shape()?;
    let konst = |k: usize| n.inputs.get(k).copied().flatten().map(|v| g.weights.get(&v).map(|t| t.to_i64()));
    let starts = konst(1)??;
    let ends = konst(2)??;
    let axes = match konst(3) {
        None => (0..starts.len() as i64).collect(),
        Some(a) => a?,
    };
    let steps = match konst(4) {
        None => vec![1; starts.len()],
        Some(s) => s?,
    };
    let r = shape.len() as i64;
    if starts.len() != 1 || ends.len() != 1 || axes.len() != 1 || steps.len() != 1 || steps[0] == 0 {
        return None;
    }
    let a = if axes[0] < 0 { axes[0] + r } else { axes[0] };
    if a != axis as i64 {
        return None;
    }
    let d = shape[axis] as i64;
    let (begin, _, len) = slice_bounds_pub(d, starts[0], ends[0], steps[0]);
    Some((0..len as i64).map(|k| begin + k * steps[0]).collect())
}

/// Rewrites every such Concat into a Gather; returns how many.
pub fn concats_of_slices_to_gathers(g: &mut Graph) -> usize {
    let prod = g.producers();
    let uses = g.use_counts();
    let mut done = 0;
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if n.op != Op::Concat || n.inputs.len() < 2 {
            continue;
        }
        let Some(out) = n.outputs.first().copied().flatten() else { continue };
        let Some(rank) = g.ty(out).static_shape().map(|s| s.len()) else { continue };
        let Some(axis) = axis_of(n.attr("axis"), rank) else { continue };
        // every operand a Slice of the same x along `axis`, read by this Concat alone
        let mut x = None;
        let mut indices = vec![];
        let ok = n.inputs.iter().all(|v| {
            let Some(v) = *v else { return false };
            let Some(s) = prod[v.index()].map(|p| &g.nodes[p]).filter(|s| s.op == Op::Slice) else { return false };
            let Some(data) = s.inputs.first().copied().flatten() else { return false };
            if *x.get_or_insert(data) != data || uses[v.index()] != 1 || g.outputs.contains(&v) {
                return false;
            }
            match slice_indices(g, s, data, axis) {
                Some(ix) => {
                    indices.extend(ix);
                    true
                }
                None => false,
            }
        });
        let Some(x) = x.filter(|_| ok) else { continue };
        let name = n.name.clone();
        let idx = ints_weight(g, format!("{name}.indices"), indices);
        let gather = node(&name, "gather", Op::Gather, &[x, idx], out, vec![("axis", Attr::Int(axis as i64))]);
        g.nodes[i] = Node { name, ..gather };
        done += 1;
    }
    done
}

/// `v` as a chain of Slices of a source: (source, axis → (start, step)), each Slice constant,
/// of a positive step and running to the end of its axis, every axis sliced once.
fn strided_phase(g: &Graph, prod: &[Option<usize>], v: ValueId) -> Option<(ValueId, BTreeMap<usize, (usize, usize)>)> {
    let mut axes = BTreeMap::new();
    let mut v = v;
    while let Some(n) = prod[v.index()].map(|p| &g.nodes[p]).filter(|n| n.op == Op::Slice) {
        let data = n.inputs.first().copied().flatten()?;
        let shape = g.ty(data).static_shape()?;
        let konst = |k: usize| n.inputs.get(k).copied().flatten().and_then(|v| g.weights.get(&v)).map(|t| t.to_i64());
        let (starts, ends) = (konst(1)?, konst(2)?);
        let ax = match n.inputs.get(3).copied().flatten() {
            Some(_) => konst(3)?,
            None => (0..starts.len() as i64).collect(),
        };
        let steps = match n.inputs.get(4).copied().flatten() {
            Some(_) => konst(4)?,
            None => vec![1; starts.len()],
        };
        if ends.len() != starts.len() || ax.len() != starts.len() || steps.len() != starts.len() {
            return None;
        }
        for k in 0..starts.len() {
            let a = usize::try_from(if ax[k] < 0 { ax[k] + shape.len() as i64 } else { ax[k] }).ok()?;
            let d = *shape.get(a)? as i64;
            let (begin, _, len) = slice_bounds_pub(d, starts[k], ends[k], steps[k]);
            let step = usize::try_from(steps[k]).ok()?;
            // a phase of the axis: start < step, to the end, the axis a whole number of steps
            let whole = step >= 1 && d as usize % step == 0 && (begin as usize) < step && len == d as usize / step;
            if !whole || axes.insert(a, (begin as usize, step)).is_some() {
                return None;
            }
        }
        v = data;
    }
    Some((v, axes))
}

/// Rewrites every Concat of strided phases of one tensor (along another axis) into Reshape →
/// Transpose → Reshape; returns how many.
pub fn concats_of_phases_to_transposes(g: &mut Graph) -> usize {
    let mut prod = g.producers();
    let mut done = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        let Some((at, x, axes_order, steps, concat_axis)) = phases(g, &prod, i) else {
            i += 1;
            continue;
        };
        let n = g.nodes[i].clone();
        let out = n.outputs[0].expect("a Concat has an output");
        let xs = g.ty(x).static_shape().expect("checked static");
        let dt = g.ty(x).dtype;
        // split each strided axis d into (n / s, s): the phase axis right after its outer one
        let mut split = vec![];
        let mut where_outer = vec![0; xs.len()];
        let mut where_phase = BTreeMap::new();
        for (d, &len) in xs.iter().enumerate() {
            where_outer[d] = split.len();
            match steps.get(&d) {
                Some(&s) => {
                    split.push(len / s);
                    where_phase.insert(d, split.len());
                    split.push(s);
                }
                None => split.push(len),
            }
        }
        // the order: every axis's outer part where it was, the phases (in the operands' order)
        // just before the Concat's axis
        let mut perm = vec![];
        for d in 0..xs.len() {
            if d == concat_axis {
                perm.extend(axes_order.iter().map(|a| where_phase[a]));
            }
            perm.push(where_outer[d]);
        }
        let name = n.name.clone();
        let split_shape = shape_weight(g, format!("{name}.phases_shape"), &split);
        let moved: Vec<usize> = perm.iter().map(|&p| split[p]).collect();
        let out_shape = g.ty(out).static_shape().expect("checked static");
        let merged_shape = shape_weight(g, format!("{name}.merged_shape"), &out_shape);
        let xv = g.add_value(format!("{name}.phases"), ValueType::known(dt, &split));
        let tv = g.add_value(format!("{name}.moved"), ValueType::known(dt, &moved));
        let perm = Attr::Ints(perm.iter().map(|&p| p as i64).collect());
        let nodes = vec![
            node(&name, "phases", Op::Reshape, &[x, split_shape], xv, vec![]),
            node(&name, "moved", Op::Transpose, &[xv], tv, vec![("perm", perm)]),
            node(&name, "merged", Op::Reshape, &[tv, merged_shape], out, vec![]),
        ];
        g.nodes.splice(at..=at, nodes);
        i = at + 3;
        done += 1;
        // the nodes after it moved
        prod = g.producers();
    }
    done
}

/// The Concat at `i` as phases of one tensor: (its index, the source, the strided axes in the
/// operands' order (most significant first), each axis's step, the Concat's axis).
#[allow(clippy::type_complexity)]
fn phases(
    g: &Graph,
    prod: &[Option<usize>],
    i: usize,
) -> Option<(usize, ValueId, Vec<usize>, BTreeMap<usize, usize>, usize)> {
    let n = &g.nodes[i];
    if n.op != Op::Concat || n.inputs.len() < 2 {
        return None;
    }
    let out = n.outputs.first().copied().flatten()?;
    let rank = g.ty(out).static_shape()?.len();
    let axis = axis_of(n.attr("axis"), rank)?;
    let ops: Vec<(ValueId, BTreeMap<usize, (usize, usize)>)> =
        n.inputs.iter().map(|v| strided_phase(g, prod, (*v)?)).collect::<Option<_>>()?;
    let x = ops[0].0;
    let steps: BTreeMap<usize, usize> = ops[0].1.iter().map(|(&a, &(_, s))| (a, s)).collect();
    let count: usize = steps.values().product();
    let same = ops
        .iter()
        .all(|(v, ax)| *v == x && ax.len() == steps.len() && ax.iter().all(|(a, &(_, s))| steps.get(a) == Some(&s)));
    let shape_ok = g.ty(x).static_shape().is_some_and(|s| s.len() == rank);
    if !same || !shape_ok || steps.is_empty() || steps.len() > 3 || steps.contains_key(&axis) || count != ops.len() {
        return None;
    }
    // the axes' order that numbers the operands 0, 1, 2, … (mixed radix, most significant first)
    let axes: Vec<usize> = steps.keys().copied().collect();
    let orders: Vec<Vec<usize>> = match axes.len() {
        1 => vec![axes.clone()],
        2 => vec![vec![axes[0], axes[1]], vec![axes[1], axes[0]]],
        _ => {
            let (a, b, c) = (axes[0], axes[1], axes[2]);
            vec![vec![a, b, c], vec![a, c, b], vec![b, a, c], vec![b, c, a], vec![c, a, b], vec![c, b, a]]
        }
    };
    let order = orders.into_iter().find(|order| {
        ops.iter().enumerate().all(|(k, (_, ax))| {
            let mut idx = 0;
            for a in order {
                idx = idx * steps[a] + ax[a].0;
            }
            idx == k
        })
    })?;
    Some((i, x, order, steps, axis))
}
