//! variadic: a Sum, Max, Min or Mean of more than VARIADIC_MAX inputs becomes a tree of ones of
//! at most VARIADIC_MAX, computing the same; and fusion keeps each group's reads from outside
//! within MAX_GROUP_INPUTS, so no kernel takes thousands of parameters.
mod common;
use common::{assert_equivalent, assert_partition_sound};
use xforge_ir::{infer::infer_graph, DType, Graph, GraphBuilder, Op, ValueType};
use xforge_passes::knobs::MAX_GROUP_INPUTS;
use xforge_passes::variadic::{split_wide_variadics, VARIADIC_MAX};

/// `op` over `n` graph inputs [3] (named x0, x1, ...).
fn wide(op: Op, n: usize) -> Graph {
    let mut b = GraphBuilder::new("wide", 17);
    let xs: Vec<_> = (0..n).map(|i| b.input(&format!("x{i}"), DType::F32, &[3])).collect();
    let y = b.node(op, &xs, vec![], ValueType::unranked(DType::F32));
    b.output(y);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

#[test]
fn wide_variadics_become_trees_that_compute_the_same() {
    for (op, n) in [(Op::Sum, 1000), (Op::Max, 40), (Op::Min, 33), (Op::Mean, 70)] {
        let g = wide(op, n);
        let mut t = g.clone();
        assert_eq!(split_wide_variadics(&mut t), 1, "{op}");
        infer_graph(&mut t).unwrap();
        assert!(t.nodes.iter().all(|n| n.inputs.len() <= VARIADIC_MAX), "{op}");
        // 1000 inputs: 32 + 1 Sums; 70: 3 Sums, their Sum, the division
        assert!(t.nodes.len() > 1, "{op}");
        assert_equivalent(&g, &t, 1e-5);
    }
    // up to VARIADIC_MAX inputs nothing changes
    let mut g = wide(Op::Sum, VARIADIC_MAX);
    assert_eq!(split_wide_variadics(&mut g), 0);
}

#[test]
fn fused_groups_read_at_most_max_group_inputs_values() {
    // 2000 inputs summed: the tree's Sums would otherwise all fuse into one kernel of 2001
    // parameters (32 KB of them, the most a launch may carry)
    let g = wide(Op::Sum, 2000);
    let f = xforge_passes::fusion::fuse(&g).unwrap();
    assert!(f.partition.groups.len() > 1);
    for grp in &f.partition.groups {
        assert!(grp.inputs.len() <= MAX_GROUP_INPUTS, "a group reads {} values", grp.inputs.len());
    }
    assert_partition_sound(&f);
    assert_equivalent(&g, &f.graph, 1e-4);
}
