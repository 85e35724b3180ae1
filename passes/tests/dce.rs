//! dce: unused nodes and weights go, what reaches an output stays.
use xforge_ir::{DType, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::dce::dce;

#[test]
fn drops_what_no_output_needs() {
    let mut b = GraphBuilder::new("dce", 17);
    let x = b.input("x", DType::F32, &[4]);
    let w = b.weight("w", Tensor::from_f32(vec![4], vec![1.0; 4]));
    let unused_w = b.weight("unused", Tensor::from_f32(vec![4], vec![2.0; 4]));
    let t = ValueType::known(DType::F32, &[4]);
    let live = b.node(Op::Add, &[x, w], vec![], t.clone());
    let dead = b.node(Op::Mul, &[x, unused_w], vec![], t.clone());
    let _dead2 = b.node(Op::Relu, &[dead], vec![], t);
    b.output(live);
    let mut g = b.finish();
    assert_eq!(dce(&mut g), 2);
    assert_eq!(g.nodes.len(), 1);
    assert_eq!(g.nodes[0].op, Op::Add);
    assert_eq!(g.weights.len(), 1);
    assert_eq!(dce(&mut g), 0);
}
