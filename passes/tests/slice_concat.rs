//! slice_concat: a Concat of Slices of one tensor along the Concat's axis (torch.roll's export)
//! becomes one Gather with constant indices; a Concat of the strided phases of one tensor along
//! another axis (Swin's patch merging) becomes Reshape → Transpose → Reshape; both with the same
//! outputs; Concats of other operands stay.
mod common;
use common::assert_equivalent;
use xforge_ir::{infer::infer_graph, Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueId, ValueType};
use xforge_passes::slice_concat::{concats_of_phases_to_transposes, concats_of_slices_to_gathers};

fn ints(b: &mut GraphBuilder, name: &str, v: Vec<i64>) -> ValueId {
    b.weight(name, Tensor::from_i64(vec![v.len()], v))
}

/// x (2, 6, 4) → Concat on `axis` of Slices (start, end, step) of x (or of `other` for the
/// second operand when set).
fn concat_of_slices(axis: i64, parts: &[(i64, i64, i64)], other: bool) -> Graph {
    let mut b = GraphBuilder::new("rolls", 17);
    let x = b.input("x", DType::F32, &[2, 6, 4]);
    let y = b.input("y", DType::F32, &[2, 6, 4]);
    let u = ValueType::unranked(DType::F32);
    let mut ins = vec![];
    for (k, &(s, e, st)) in parts.iter().enumerate() {
        let (sv, ev, av, tv) = (
            ints(&mut b, &format!("s{k}"), vec![s]),
            ints(&mut b, &format!("e{k}"), vec![e]),
            ints(&mut b, &format!("a{k}"), vec![axis]),
            ints(&mut b, &format!("t{k}"), vec![st]),
        );
        let src = if other && k == 1 { y } else { x };
        ins.push(b.node(Op::Slice, &[src, sv, ev, av, tv], vec![], u.clone()));
    }
    let c = b.node(Op::Concat, &ins, vec![("axis", Attr::Int(axis))], u);
    b.output(c);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

#[test]
fn a_roll_is_one_gather() {
    // roll by 2 along axis 1 (torch.roll(x, -2, 1)), along the last axis given as −1, and a
    // mix of steps, a reversal and a repeat
    for (axis, parts) in [
        (1, vec![(2, 6, 1), (0, 2, 1)]),
        (-1, vec![(3, 4, 1), (0, 3, 1)]),
        (1, vec![(0, 6, 2), (5, -7, -1), (1, 2, 1)]),
    ] {
        let before = concat_of_slices(axis, &parts, false);
        let mut g = before.clone();
        assert_eq!(concats_of_slices_to_gathers(&mut g), 1, "{parts:?}");
        xforge_passes::dce::dce(&mut g);
        infer_graph(&mut g).unwrap();
        xforge_ir::verify::verify(&g).unwrap();
        assert_eq!(g.nodes.iter().map(|n| n.op).collect::<Vec<_>>(), vec![Op::Gather]);
        assert_equivalent(&before, &g, 0.0);
    }
}

#[test]
fn concats_of_other_operands_stay() {
    // slices of two tensors
    let mut g = concat_of_slices(1, &[(2, 6, 1), (0, 2, 1)], true);
    assert_eq!(concats_of_slices_to_gathers(&mut g), 0);
    // slices along another axis than the Concat's
    let mut b = GraphBuilder::new("across", 17);
    let x = b.input("x", DType::F32, &[2, 6, 4]);
    let u = ValueType::unranked(DType::F32);
    let (s, e, a) = (ints(&mut b, "s", vec![0]), ints(&mut b, "e", vec![2]), ints(&mut b, "a", vec![2]));
    let p = b.node(Op::Slice, &[x, s, e, a], vec![], u.clone());
    let q = b.node(Op::Slice, &[x, s, e, a], vec![], u.clone());
    let c = b.node(Op::Concat, &[p, q], vec![("axis", Attr::Int(1))], u);
    b.output(c);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    assert_eq!(concats_of_slices_to_gathers(&mut g), 0);
}

/// x (2, 4, 6, 3) → for each phase (h, w) in `order`: Slice rows h::2 (axis 1), then columns
/// w::`sw` (axis 2) — as torch exports x[:, h::2, w::sw, :] — → Concat on the last axis.
fn phases_graph(order: &[(i64, i64)], sw: i64) -> Graph {
    let mut b = GraphBuilder::new("patch_merge", 17);
    let x = b.input("x", DType::F32, &[2, 4, 6, 3]);
    let u = ValueType::unranked(DType::F32);
    let mut ins = vec![];
    for (k, &(h, w)) in order.iter().enumerate() {
        let slice = |b: &mut GraphBuilder, v, start: i64, axis: i64, step: i64, tag: &str| {
            let (s, e, a, t) = (
                ints(b, &format!("{tag}s{k}"), vec![start]),
                ints(b, &format!("{tag}e{k}"), vec![i64::MAX]),
                ints(b, &format!("{tag}a{k}"), vec![axis]),
                ints(b, &format!("{tag}t{k}"), vec![step]),
            );
            b.node(Op::Slice, &[v, s, e, a, t], vec![], u.clone())
        };
        let rows = slice(&mut b, x, h, 1, 2, "r");
        ins.push(slice(&mut b, rows, w, 2, sw, "c"));
    }
    let c = b.node(Op::Concat, &ins, vec![("axis", Attr::Int(-1))], u);
    b.output(c);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

#[test]
fn strided_phases_concatenated_are_one_transpose() {
    // Swin's order (h0w0, h1w0, h0w1, h1w1), the other order, three column phases
    for (order, sw) in [
        (vec![(0, 0), (1, 0), (0, 1), (1, 1)], 2),
        (vec![(0, 0), (0, 1), (1, 0), (1, 1)], 2),
        (vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)], 3),
    ] {
        let before = phases_graph(&order, sw);
        let mut g = before.clone();
        assert_eq!(concats_of_phases_to_transposes(&mut g), 1, "{order:?}");
        xforge_passes::dce::dce(&mut g);
        infer_graph(&mut g).unwrap();
        xforge_ir::verify::verify(&g).unwrap();
        assert_eq!(g.nodes.iter().map(|n| n.op).collect::<Vec<_>>(), vec![Op::Reshape, Op::Transpose, Op::Reshape]);
        assert_equivalent(&before, &g, 0.0);
        // through the whole pipeline: one kernel of data movement, no Slice or Concat
        let fused = xforge_passes::fusion::fuse(&before).unwrap();
        assert!(!fused.graph.nodes.iter().any(|n| matches!(n.op, Op::Slice | Op::Concat)));
        assert_equivalent(&before, &fused.graph, 0.0);
    }
}

#[test]
fn concats_that_are_not_every_phase_stay() {
    // a phase missing, a phase twice, an order no axis order numbers
    for order in
        [vec![(0, 0), (1, 0), (0, 1)], vec![(0, 0), (1, 0), (0, 1), (0, 1)], vec![(0, 0), (1, 1), (0, 1), (1, 0)]]
    {
        let mut g = phases_graph(&order, 2);
        assert_eq!(concats_of_phases_to_transposes(&mut g), 0, "{order:?}");
    }
}
