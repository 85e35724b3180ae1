//! noop: Identity, Dropout, same-type Cast/Reshape, Transpose pairs and one-element pools disappear.
mod common;
use common::assert_equivalent;
use xforge_ir::{infer::infer_graph, print::print, Attr, DType, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::{dce::dce, noop::remove_noops};

#[test]
fn removes_noops_and_cancels_transposes() {
    let mut b = GraphBuilder::new("noop", 17);
    let x = b.input("x", DType::F32, &[2, 3, 4]);
    let u = ValueType::unranked(DType::F32);
    let i = b.node(Op::Identity, &[x], vec![], u.clone());
    let d = b.node(Op::Dropout, &[i], vec![], u.clone());
    let c = b.node(Op::Cast, &[d], vec![("to", Attr::Int(1))], u.clone());
    let shape = b.weight("shape", Tensor::from_i64(vec![3], vec![2, 3, 4]));
    let r = b.node(Op::Reshape, &[c, shape], vec![], u.clone());
    let t1 = b.node(Op::Transpose, &[r], vec![("perm", Attr::Ints(vec![1, 2, 0]))], u.clone());
    let t2 = b.node(Op::Transpose, &[t1], vec![("perm", Attr::Ints(vec![2, 0, 1]))], u.clone());
    let t3 = b.node(Op::Transpose, &[t2], vec![("perm", Attr::Ints(vec![0, 2, 1]))], u.clone());
    let t4 = b.node(Op::Transpose, &[t3], vec![("perm", Attr::Ints(vec![1, 0, 2]))], u.clone());
    let y = b.node(Op::Relu, &[t4], vec![], u);
    b.output(y);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    let before = g.clone();
    assert!(remove_noops(&mut g) >= 6);
    dce(&mut g);
    infer_graph(&mut g).unwrap();
    xforge_ir::verify::verify(&g).unwrap();
    // two transposes compose into one ([0,2,1] then [1,0,2] is [2,0,1])
    insta::assert_snapshot!(print(&g));
    assert_equivalent(&before, &g, 0.0);
}

#[test]
fn keeps_graph_output_names() {
    let mut b = GraphBuilder::new("out", 17);
    let x = b.input("x", DType::F32, &[4]);
    let r = b.node(Op::Relu, &[x], vec![], ValueType::unranked(DType::F32));
    let y = b.node(Op::Identity, &[r], vec![], ValueType::unranked(DType::F32));
    b.output(y);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    let name = g.name_of(y).to_string();
    remove_noops(&mut g);
    dce(&mut g);
    assert_eq!(g.nodes.len(), 1);
    assert_eq!(g.name_of(g.outputs[0]), name);
    xforge_ir::verify::verify(&g).unwrap();
}

#[test]
fn a_transpose_of_unit_axes_is_a_reshape() {
    // [5, 1, 4] → [1, 5, 4] moves no element (ViT's sequence-first attention at batch 1);
    // [5, 2, 4] → [2, 5, 4] does
    let mut b = GraphBuilder::new("unit", 17);
    let u = ValueType::unranked(DType::F32);
    let x = b.input("x", DType::F32, &[5, 1, 4]);
    let t = b.node(Op::Transpose, &[x], vec![("perm", Attr::Ints(vec![1, 0, 2]))], u.clone());
    let y = b.node(Op::Relu, &[t], vec![], u.clone());
    b.output(y);
    let z = b.input("z", DType::F32, &[5, 2, 4]);
    let tz = b.node(Op::Transpose, &[z], vec![("perm", Attr::Ints(vec![1, 0, 2]))], u.clone());
    let yz = b.node(Op::Relu, &[tz], vec![], u);
    b.output(yz);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    let before = g.clone();
    assert_eq!(remove_noops(&mut g), 1);
    infer_graph(&mut g).unwrap();
    xforge_ir::verify::verify(&g).unwrap();
    let ops: Vec<Op> = g.nodes.iter().map(|n| n.op).collect();
    assert_eq!(ops, [Op::Reshape, Op::Relu, Op::Transpose, Op::Relu]);
    assert_equivalent(&before, &g, 0.0);
}

#[test]
fn a_pad_of_zeros_and_a_whole_slice_go_but_shifts_and_reversals_stay() {
    let ints = |b: &mut GraphBuilder, name: &str, v: Vec<i64>| b.weight(name, Tensor::from_i64(vec![v.len()], v));
    let mut b = GraphBuilder::new("noop_pad_slice", 17);
    let x = b.input("x", DType::F32, &[2, 5]);
    let u = ValueType::unranked(DType::F32);
    let zeros = ints(&mut b, "zeros", vec![0, 0, 0, 0]);
    let p0 = b.node(Op::Pad, &[x, zeros], vec![], u.clone());
    let (s0, e0, a1) = (ints(&mut b, "s0", vec![0]), ints(&mut b, "e0", vec![i64::MAX]), ints(&mut b, "a1", vec![1]));
    let whole = b.node(Op::Slice, &[p0, s0, e0, a1], vec![], u.clone());
    // Pad by (1 before, −1 after) keeps the shape and shifts the row: it stays
    let shift = ints(&mut b, "shift", vec![0, 1, 0, -1]);
    let p1 = b.node(Op::Pad, &[whole, shift], vec![], u.clone());
    // step −1 over the whole axis keeps the shape and reverses it: it stays
    let (s9, e9, m1) = (ints(&mut b, "s9", vec![-1]), ints(&mut b, "e9", vec![i64::MIN]), ints(&mut b, "m1", vec![-1]));
    let rev = b.node(Op::Slice, &[p1, s9, e9, a1, m1], vec![], u);
    b.output(rev);
    assert_two_removed_leaving(b.finish(), &[Op::Pad, Op::Slice]);
}

/// Removes the no-ops of `g` (inferred first): two go, `left` stay, and the graph computes the
/// same.
fn assert_two_removed_leaving(mut g: xforge_ir::Graph, left: &[Op]) {
    infer_graph(&mut g).unwrap();
    let before = g.clone();
    assert_eq!(remove_noops(&mut g), 2);
    dce(&mut g);
    infer_graph(&mut g).unwrap();
    xforge_ir::verify::verify(&g).unwrap();
    assert_eq!(g.nodes.iter().map(|n| n.op).collect::<Vec<_>>(), left);
    assert_equivalent(&before, &g, 0.0);
}

#[test]
fn pools_of_one_element_windows_go_but_strided_or_padded_ones_stay() {
    let mut b = GraphBuilder::new("noop_pools", 17);
    let x = b.input("x", DType::F32, &[2, 3, 7, 7]);
    let u = || ValueType::unranked(DType::F32);
    let k1 = || ("kernel_shape", Attr::Ints(vec![1, 1]));
    // AdaptiveAvgPool2d(7) on a 7×7 map, and a 1×1 MaxPool: both go
    let a = b.node(Op::AveragePool, &[x], vec![k1()], u());
    let m = b.node(Op::MaxPool, &[a], vec![k1(), ("strides", Attr::Ints(vec![1, 1]))], u());
    // a 1×1 window with stride 2 subsamples, and with pads it grows the map: both stay
    let s = b.node(Op::MaxPool, &[m], vec![k1(), ("strides", Attr::Ints(vec![2, 2]))], u());
    let p = b.node(Op::AveragePool, &[s], vec![k1(), ("pads", Attr::Ints(vec![1; 4]))], u());
    b.output(p);
    assert_two_removed_leaving(b.finish(), &[Op::MaxPool, Op::AveragePool]);
}
