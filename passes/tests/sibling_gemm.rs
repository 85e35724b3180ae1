//! sibling_gemm: Q, K, V projections of one input become one GEMM, one bias Add and a Split.
mod common;
use common::assert_equivalent;
use xforge_ir::{infer::infer_graph, DType, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::{dce::dce, sibling_gemm::merge_sibling_matmuls};

#[test]
fn merges_qkv_projections() {
    let mut b = GraphBuilder::new("qkv", 17);
    let x = b.input("x", DType::F32, &[2, 5, 8]);
    let u = ValueType::unranked(DType::F32);
    let mut outs = vec![];
    for (k, width) in [("q", 8usize), ("k", 8), ("v", 4)] {
        let w = b.weight(
            &format!("w{k}"),
            Tensor::from_f32(vec![8, width], (0..8 * width).map(|i| (i as f32 * 0.1).cos()).collect()),
        );
        let bias =
            b.weight(&format!("b{k}"), Tensor::from_f32(vec![width], (0..width).map(|i| i as f32 * 0.01).collect()));
        let m = b.node(Op::MatMul, &[x, w], vec![], u.clone());
        let a = b.node(Op::Add, &[m, bias], vec![], u.clone());
        let r = b.node(Op::Relu, &[a], vec![], u.clone());
        outs.push(r);
    }
    for o in outs {
        b.output(o);
    }
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    let before = g.clone();
    assert_eq!(merge_sibling_matmuls(&mut g), 1);
    dce(&mut g);
    infer_graph(&mut g).unwrap();
    xforge_ir::verify::verify(&g).unwrap();
    let ops: Vec<Op> = g.nodes.iter().map(|n| n.op).collect();
    assert_eq!(ops.iter().filter(|&&o| o == Op::MatMul).count(), 1);
    assert_eq!(ops.iter().filter(|&&o| o == Op::Split).count(), 1);
    assert_equivalent(&before, &g, 1e-6);
}
