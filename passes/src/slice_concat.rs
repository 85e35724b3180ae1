//! A Concat whose operands are all Slices of one tensor along the Concat's axis picks indices
//! of that axis: it is one Gather with constant indices. `torch.roll` exports so (Swin's cyclic
//! shift: two Slices and a Concat per rolled axis); as Gathers, consecutive rolls and the
//! window partition after them fuse into one kernel instead of a kernel per Slice and Concat.
use xforge_ir::interp::slice_bounds_pub;
use xforge_ir::{Attr, DType, Graph, Node, Op, Tensor, ValueType};

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
        let idx = g.add_value(format!("{name}.indices"), ValueType::known(DType::I64, &[indices.len()]));
        g.weights.insert(idx, Tensor::from_i64(vec![indices.len()], indices));
        g.nodes[i] = Node {
            name,
            op: Op::Gather,
            inputs: vec![Some(x), Some(idx)],
            outputs: vec![Some(out)],
            attrs: [("axis".to_string(), Attr::Int(axis as i64))].into_iter().collect(),
        };
        done += 1;
    }
    done
}
