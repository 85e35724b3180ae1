//! gather_split: constant-index Gathers covering an axis become one Split and Squeezes.
mod common;
use common::assert_equivalent;
use xforge_ir::{infer::infer_graph, print::print, Attr, DType, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::{dce::dce, gather_split::gathers_to_split};

fn qkv(indices: &[i64]) -> xforge_ir::Graph {
    qkv_at(indices, 17)
}

fn qkv_at(indices: &[i64], opset: i64) -> xforge_ir::Graph {
    let mut b = GraphBuilder::new("qkv", opset);
    let x = b.input("x", DType::F32, &[3, 5, 4]);
    let u = ValueType::unranked(DType::F32);
    let y = b.node(Op::Relu, &[x], vec![], u.clone());
    for (k, &i) in indices.iter().enumerate() {
        let idx = b.weight(&format!("i{k}"), Tensor::from_i64(vec![], vec![i]));
        let g = b.node(Op::Gather, &[y, idx], vec![("axis", Attr::Int(0))], u.clone());
        let t = b.node(Op::Transpose, &[g], vec![("perm", Attr::Ints(vec![1, 0]))], u.clone());
        b.output(t);
    }
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

#[test]
fn gathers_of_every_index_become_one_split() {
    // q, k, v by indices 0, 1 and -1 (= 2)
    let before = qkv(&[0, 1, -1]);
    let mut g = before.clone();
    assert_eq!(gathers_to_split(&mut g), 3);
    dce(&mut g);
    infer_graph(&mut g).unwrap();
    xforge_ir::verify::verify(&g).unwrap();
    assert_eq!(g.nodes.iter().filter(|n| n.op == Op::Split).count(), 1);
    assert!(g.nodes.iter().all(|n| n.op != Op::Gather));
    insta::assert_snapshot!(print(&g));
    assert_equivalent(&before, &g, 0.0);
}

#[test]
fn before_opset_13_axes_and_sizes_are_attributes() {
    // Squeeze's axes and Split's sizes became inputs in opset 13; an opset-11 model's rewritten
    // form ran nowhere (the interpreter refused the axes input; found by the fusion_diff fuzz target)
    let before = qkv_at(&[0, 1, 2], 11);
    let mut g = before.clone();
    assert_eq!(gathers_to_split(&mut g), 3);
    dce(&mut g);
    infer_graph(&mut g).unwrap();
    for n in g.nodes.iter().filter(|n| matches!(n.op, Op::Split | Op::Squeeze)) {
        assert_eq!(n.inputs.len(), 1, "{}", n.name);
    }
    assert_equivalent(&before, &g, 0.0);
}

#[test]
fn gathers_that_miss_or_repeat_an_index_stay() {
    for indices in [vec![0, 1], vec![0, 1, 1], vec![0, 1, 2, 2]] {
        let mut g = qkv(&indices);
        assert_eq!(gathers_to_split(&mut g), 0, "{indices:?}");
    }
}
