//! fold: constant subgraphs and shape chains become weights.
mod common;
use common::assert_equivalent;
use xforge_ir::{infer::infer_graph, Attr, DType, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::{dce::dce, fold::fold_constants};

#[test]
fn folds_weight_math_and_shape_chains() {
    let mut b = GraphBuilder::new("fold", 17);
    let x = b.input("x", DType::F32, &[2, 3, 4]);
    let u = ValueType::unranked(DType::F32);
    let w = b.weight("w", Tensor::from_f32(vec![3, 4], (0..12).map(|v| v as f32).collect()));
    let wt = b.node(Op::Transpose, &[w], vec![], u.clone());
    let two = b.weight("two", Tensor::scalar_f32(2.0));
    let w2 = b.node(Op::Mul, &[wt, two], vec![], u.clone());
    // Shape -> Gather -> Concat -> Reshape: [2,3,4] -> [2, 12]
    let s = b.node(Op::Shape, &[x], vec![], ValueType::unranked(DType::I64));
    let zero = b.weight("zero", Tensor::from_i64(vec![1], vec![0]));
    let d0 = b.node(Op::Gather, &[s, zero], vec![], ValueType::unranked(DType::I64));
    let m1 = b.weight("m1", Tensor::from_i64(vec![1], vec![-1]));
    let shape = b.node(Op::Concat, &[d0, m1], vec![("axis", Attr::Int(0))], ValueType::unranked(DType::I64));
    let r = b.node(Op::Reshape, &[x, shape], vec![], u.clone());
    let y = b.node(Op::MatMul, &[x, w2], vec![], u);
    b.output(r);
    b.output(y);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    let before = g.clone();
    assert_eq!(fold_constants(&mut g), 5);
    dce(&mut g);
    infer_graph(&mut g).unwrap();
    let ops: Vec<Op> = g.nodes.iter().map(|n| n.op).collect();
    assert_eq!(ops, vec![Op::Reshape, Op::MatMul]);
    assert_equivalent(&before, &g, 0.0);
}
