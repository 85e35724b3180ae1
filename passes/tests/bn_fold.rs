//! bn_fold: Conv → BatchNormalization becomes one Conv with scaled weights and a bias.
mod common;
use common::assert_equivalent;
use xforge_ir::{infer::infer_graph, Attr, DType, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::{bn_fold::fold_batch_norms, dce::dce};

fn vals(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect()
}

#[test]
fn folds_into_conv_with_and_without_bias() {
    for with_bias in [false, true] {
        let mut b = GraphBuilder::new("bn", 17);
        let x = b.input("x", DType::F32, &[1, 3, 6, 6]);
        let w = b.weight("w", Tensor::from_f32(vec![4, 3, 3, 3], vals(108, 0.1)));
        let mut ins = vec![x, w];
        if with_bias {
            ins.push(b.weight("b", Tensor::from_f32(vec![4], vals(4, 0.7))));
        }
        let u = ValueType::unranked(DType::F32);
        let c = b.node(Op::Conv, &ins, vec![("pads", Attr::Ints(vec![1; 4]))], u.clone());
        let scale = b.weight("scale", Tensor::from_f32(vec![4], vec![1.5, 0.5, -1.0, 2.0]));
        let beta = b.weight("beta", Tensor::from_f32(vec![4], vec![0.1, 0.2, 0.3, 0.4]));
        let mean = b.weight("mean", Tensor::from_f32(vec![4], vec![0.05, -0.1, 0.2, 0.0]));
        let var = b.weight("var", Tensor::from_f32(vec![4], vec![1.0, 0.25, 2.0, 0.5]));
        let y = b.node(
            Op::BatchNormalization,
            &[c, scale, beta, mean, var],
            vec![("epsilon", Attr::Float(1e-3))],
            u.clone(),
        );
        let r = b.node(Op::Relu, &[y], vec![], u);
        b.output(r);
        let mut g = b.finish();
        infer_graph(&mut g).unwrap();
        let before = g.clone();
        assert_eq!(fold_batch_norms(&mut g), 1);
        dce(&mut g);
        infer_graph(&mut g).unwrap();
        xforge_ir::verify::verify(&g).unwrap();
        assert_eq!(g.nodes.iter().map(|n| n.op).collect::<Vec<_>>(), vec![Op::Conv, Op::Relu]);
        assert_equivalent(&before, &g, 1e-6);
    }
}

#[test]
fn leaves_shared_conv_outputs_alone() {
    let mut b = GraphBuilder::new("bn2", 17);
    let x = b.input("x", DType::F32, &[1, 2, 4, 4]);
    let w = b.weight("w", Tensor::from_f32(vec![2, 2, 1, 1], vals(4, 0.3)));
    let u = ValueType::unranked(DType::F32);
    let c = b.node(Op::Conv, &[x, w], vec![], u.clone());
    let p: Vec<_> = (0..4).map(|i| b.weight(&format!("p{i}"), Tensor::from_f32(vec![2], vec![1.0, 0.5]))).collect();
    let y = b.node(Op::BatchNormalization, &[c, p[0], p[1], p[2], p[3]], vec![], u);
    b.output(y);
    b.output(c);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    assert_eq!(fold_batch_norms(&mut g), 0);
}
