//! slice_concat: a Concat of Slices of one tensor along the Concat's axis (torch.roll's export)
//! becomes one Gather with constant indices, with the same outputs; Concats of other operands
//! stay.
mod common;
use common::assert_equivalent;
use xforge_ir::{infer::infer_graph, Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueId, ValueType};
use xforge_passes::slice_concat::concats_of_slices_to_gathers;

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
