//! cse.rs: twins (same op, operands and attributes) read as one node; the interpreter's outputs
//! are the same before and after. Input: two NonZero of one mask (as torchvision's detectors
//! export `x[mask]` and `where(mask)`), two Relu of x, a Transpose twin with other attributes,
//! and a twin whose output is a graph output. Expected: one NonZero, one Relu, both Transposes,
//! the output's producer kept.
use std::collections::HashMap;
use xforge_ir::{interp, Attr, DType, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::{cse::merge_common, dce::dce};

#[test]
fn twins_read_as_one_node_and_outputs_stay() {
    let mut b = GraphBuilder::new("twins", 17);
    let x = b.input("x", DType::F32, &[4, 6]);
    let z = b.weight("z", Tensor::scalar_f32(0.0));
    let mask = b.node(Op::Greater, &[x, z], vec![], ValueType::known(DType::Bool, &[4, 6]));
    let any = |dt| ValueType::unranked(dt);
    let nz1 = b.node(Op::NonZero, &[mask], vec![], any(DType::I64));
    let nz2 = b.node(Op::NonZero, &[mask], vec![], any(DType::I64));
    let r1 = b.node(Op::Relu, &[x], vec![], any(DType::F32));
    let r2 = b.node(Op::Relu, &[x], vec![], any(DType::F32));
    let sum = b.node(Op::Add, &[r1, r2], vec![], any(DType::F32));
    let t1 = b.node(Op::Transpose, &[sum], vec![("perm", Attr::Ints(vec![1, 0]))], any(DType::F32));
    let t2 = b.node(Op::Transpose, &[sum], vec![("perm", Attr::Ints(vec![0, 1]))], any(DType::F32));
    let r3 = b.node(Op::Relu, &[x], vec![], any(DType::F32));
    let rows = b.node(Op::Transpose, &[nz1], vec![], any(DType::I64));
    let picked = b.node(Op::GatherND, &[x, rows], vec![], any(DType::F32));
    let found = b.node(Op::Shape, &[nz2], vec![], any(DType::I64));
    for o in [picked, found, t1, t2, r3] {
        b.output(o);
    }
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let mut h = g.clone();
    // the NonZero and Relu twins; r3 is a graph output and stays its own node
    assert_eq!(merge_common(&mut h), 2);
    dce(&mut h);
    xforge_ir::verify::verify(&h).unwrap();
    let count = |op| h.nodes.iter().filter(|n| n.op == op).count();
    assert_eq!((count(Op::NonZero), count(Op::Relu), count(Op::Transpose)), (1, 2, 3));
    let add = h.nodes.iter().find(|n| n.op == Op::Add).unwrap();
    assert_eq!(add.inputs[0], add.inputs[1], "both operands are the one Relu");
    let v: Vec<f64> = (0..24).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
    let feed = HashMap::from([("x".to_string(), Tensor::from_f64(DType::F32, vec![4, 6], &v))]);
    let (a, c) = (interp::run(&g, &feed).unwrap(), interp::run(&h, &feed).unwrap());
    for (p, q) in a.iter().zip(&c) {
        assert_eq!(p.shape(), q.shape());
        assert_eq!(p.to_f64(), q.to_f64());
    }
    // a second pass finds nothing more
    assert_eq!(merge_common(&mut h), 0);
}
