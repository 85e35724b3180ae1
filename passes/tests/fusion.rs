//! fusion (the whole pipeline): random graphs fuse into equivalent graphs with sound
//! partitions; the shipped models' fused forms are pinned by snapshots.
mod common;
use common::{assert_equivalent, assert_partition_sound};
use proptest::prelude::*;
use std::path::Path;
use xforge_ir::{infer::infer_graph, Attr, DType, GraphBuilder, Op, Tensor, ValueId, ValueType};
use xforge_passes::fusion::{describe, fuse, Schedule};

/// One step of a random graph: an op and the (earlier) values it reads.
#[derive(Clone, Debug)]
enum Step {
    Unary(u8, usize),
    Binary(u8, usize, usize),
    MatMul(usize),
    Softmax(usize),
    Mean(usize),
    Silu(usize),
    Transpose(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..5, any::<usize>()).prop_map(|(o, a)| Step::Unary(o, a)),
        (0u8..3, any::<usize>(), any::<usize>()).prop_map(|(o, a, b)| Step::Binary(o, a, b)),
        any::<usize>().prop_map(Step::MatMul),
        any::<usize>().prop_map(Step::Softmax),
        any::<usize>().prop_map(Step::Mean),
        any::<usize>().prop_map(Step::Silu),
        any::<usize>().prop_map(Step::Transpose),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every value is [2, 4, 8]; outputs are the values nothing else reads.
    #[test]
    fn random_graphs_fuse_soundly(steps in proptest::collection::vec(step(), 1..14)) {
        let mut b = GraphBuilder::new("random", 17);
        let x = b.input("x", DType::F32, &[2, 4, 8]);
        let y = b.input("y", DType::F32, &[2, 4, 8]);
        let w = b.weight("w", Tensor::from_f32(vec![8, 8], (0..64).map(|i| ((i * 37 % 17) as f32 - 8.0) / 16.0).collect()));
        let bias = b.weight("bias", Tensor::from_f32(vec![8], (0..8).map(|i| i as f32 / 8.0).collect()));
        let t = || ValueType::unranked(DType::F32);
        let mut vals: Vec<ValueId> = vec![x, y];
        let mut used = vec![false; 2];
        for s in steps {
            let pick = |i: usize, vals: &Vec<ValueId>, used: &mut Vec<bool>| { let k = i % vals.len(); used[k] = true; vals[k] };
            let v = match s {
                Step::Unary(o, a) => {
                    let a = pick(a, &vals, &mut used);
                    let op = [Op::Relu, Op::Tanh, Op::Sigmoid, Op::Neg, Op::Abs][o as usize];
                    b.node(op, &[a], vec![], t())
                }
                Step::Binary(o, a, c) => {
                    let a = pick(a, &vals, &mut used);
                    let c = if c % 3 == 0 { bias } else { pick(c, &vals, &mut used) };
                    b.node([Op::Add, Op::Mul, Op::Sub][o as usize], &[a, c], vec![], t())
                }
                Step::MatMul(a) => {
                    let a = pick(a, &vals, &mut used);
                    let m = b.node(Op::MatMul, &[a, w], vec![], t());
                    b.node(Op::Add, &[m, bias], vec![], t())
                }
                Step::Softmax(a) => { let a = pick(a, &vals, &mut used); b.node(Op::Softmax, &[a], vec![("axis", Attr::Int(-1))], t()) }
                Step::Mean(a) => {
                    let a = pick(a, &vals, &mut used);
                    let m = b.node(Op::ReduceMean, &[a], vec![("axes", Attr::Ints(vec![-1]))], t());
                    b.node(Op::Sub, &[a, m], vec![], t())
                }
                Step::Silu(a) => {
                    let a = pick(a, &vals, &mut used);
                    let s = b.node(Op::Sigmoid, &[a], vec![], t());
                    b.node(Op::Mul, &[a, s], vec![], t())
                }
                Step::Transpose(a) => {
                    let a = pick(a, &vals, &mut used);
                    let p = b.node(Op::Transpose, &[a], vec![("perm", Attr::Ints(vec![1, 0, 2]))], t());
                    b.node(Op::Transpose, &[p], vec![("perm", Attr::Ints(vec![1, 0, 2]))], t())
                }
            };
            vals.push(v);
            used.push(false);
        }
        for (k, &v) in vals.iter().enumerate().skip(2) {
            if !used[k] { b.output(v); }
        }
        let mut g = b.finish();
        prop_assume!(!g.outputs.is_empty());
        infer_graph(&mut g).unwrap();
        let f = fuse(&g).unwrap();
        assert_partition_sound(&f);
        assert_equivalent(&g, &f.graph, 1e-5);
        prop_assert!(f.partition.kernels() <= g.nodes.len());
        prop_assert!(f.saturation.cap.is_none(), "saturation capped: {:?}", f.saturation.cap);
    }
}

fn shipped(name: &str) -> xforge_ir::Graph {
    xforge_frontend::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(name), &Default::default())
        .unwrap()
        .graph
}

#[test]
fn mnasnet_fused_form() {
    let g = shipped("mnasnet0_5.onnx");
    let f = fuse(&g).unwrap();
    assert_partition_sound(&f);
    assert_equivalent(&g, &f.graph, 1e-5);
    // every Conv carries its bias, ReLU or residual Add
    assert!(f
        .partition
        .groups
        .iter()
        .filter(|grp| grp.schedule == Schedule::LibraryConv)
        .all(|grp| g.nodes.len() > grp.nodes.len()));
    insta::assert_snapshot!(describe(&f));
}

#[test]
fn bert_tiny_fused_form() {
    let g = shipped("bert_tiny.onnx");
    let f = fuse(&g).unwrap();
    assert_partition_sound(&f);
    assert_equivalent(&g, &f.graph, 1e-5);
    assert_eq!(f.graph.nodes.iter().filter(|n| n.op == Op::Attention).count(), 2);
    insta::assert_snapshot!(describe(&f));
}

#[test]
fn elementwise_chains_keep_shared_values_as_extra_outputs() {
    // a = relu(x); b = a·2; c = a + 1; d = sigmoid(b)·c: one kernel with a used twice inside
    let mut bld = GraphBuilder::new("chain", 17);
    let x = bld.input("x", DType::F32, &[4, 16]);
    let t = || ValueType::unranked(DType::F32);
    let two = bld.weight("two", Tensor::scalar_f32(2.0));
    let one = bld.weight("one", Tensor::scalar_f32(1.0));
    let a = bld.node(Op::Relu, &[x], vec![], t());
    let b = bld.node(Op::Mul, &[a, two], vec![], t());
    let c = bld.node(Op::Add, &[a, one], vec![], t());
    let s = bld.node(Op::Sigmoid, &[b], vec![], t());
    let d = bld.node(Op::Mul, &[s, c], vec![], t());
    bld.output(d);
    bld.output(b); // b is also wanted outside
    let mut g = bld.finish();
    infer_graph(&mut g).unwrap();
    let f = fuse(&g).unwrap();
    assert_partition_sound(&f);
    assert_eq!(f.partition.kernels(), 1);
    assert_eq!(f.partition.groups[0].outputs.len(), 2);
    assert_equivalent(&g, &f.graph, 0.0);
}

#[test]
fn strided_stores_end_a_contraction_group() {
    // y = transpose(x·w) + r: the transpose is the GEMM's store tail; the residual Add runs in
    // the transposed space, so it starts its own kernel
    let mut bld = GraphBuilder::new("tail", 17);
    let t = || ValueType::unranked(DType::F32);
    let x = bld.input("x", DType::F32, &[6, 8]);
    let r = bld.input("r", DType::F32, &[4, 6]);
    let w =
        bld.weight("w", Tensor::from_f64(DType::F32, vec![8, 4], &(0..32).map(|i| i as f64 * 0.1).collect::<Vec<_>>()));
    let m = bld.node(Op::MatMul, &[x, w], vec![], t());
    let tr = bld.node(Op::Transpose, &[m], vec![("perm", Attr::Ints(vec![1, 0]))], t());
    let y = bld.node(Op::Add, &[tr, r], vec![], t());
    bld.output(y);
    let mut g = bld.finish();
    infer_graph(&mut g).unwrap();
    let f = fuse(&g).unwrap();
    assert_partition_sound(&f);
    let schedules: Vec<Schedule> = f.partition.groups.iter().map(|grp| grp.schedule).collect();
    assert_eq!(schedules, vec![Schedule::GeneratedGemm, Schedule::Elementwise], "{}", describe(&f));
    let gemm = &f.partition.groups[0];
    assert!(gemm.nodes.iter().any(|&n| f.graph.nodes[n].op == Op::Transpose));
    assert_equivalent(&g, &f.graph, 0.0);
}
