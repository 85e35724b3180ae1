//! Shared by the pass tests: run two graphs on the same random inputs and compare.
#![allow(dead_code)]
use std::collections::HashMap;
use xforge_ir::tensor::rel_l2;
use xforge_ir::{interp, DType, Graph, Tensor};

/// Random values for every graph input (floats in [-1, 1), integers in [0, 4)).
pub fn random_inputs(g: &Graph, seed: u64) -> HashMap<String, Tensor> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    g.inputs
        .iter()
        .map(|&i| {
            let ty = g.ty(i);
            let shape = ty.static_shape().expect("test graphs have static inputs");
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n)
                .map(|_| {
                    if ty.dtype.is_float() {
                        2.0 * next() - 1.0
                    } else if ty.dtype == DType::Bool {
                        (next() < 0.5) as u8 as f64
                    } else {
                        (next() * 4.0).floor()
                    }
                })
                .collect();
            (g.name_of(i).to_string(), Tensor::from_f64(ty.dtype, shape, &v))
        })
        .collect()
}

/// Interprets both graphs on fresh random inputs and requires equal outputs within `tol`
/// relative L2 (reassociation changes the last bits).
pub fn assert_equivalent(before: &Graph, after: &Graph, tol: f64) {
    for seed in 1..=3 {
        let feed = random_inputs(before, seed);
        let a = interp::run(before, &feed).expect("before runs");
        let b = interp::run(after, &feed).expect("after runs");
        assert_eq!(a.len(), b.len());
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x.shape(), y.shape(), "output {k}");
            let e = rel_l2(y, x);
            assert!(e <= tol, "output {k}: relative L2 {e:.3e} > {tol:.0e} (seed {seed})");
        }
    }
}

/// Checks that a partition covers every node once, that groups only read values defined before
/// them (an acyclic group graph), and that inputs and outputs are what the nodes say.
pub fn assert_partition_sound(f: &xforge_passes::fusion::Fused) {
    let g = &f.graph;
    let p = &f.partition;
    let mut seen = vec![0usize; g.nodes.len()];
    for (gi, grp) in p.groups.iter().enumerate() {
        for &n in &grp.nodes {
            seen[n] += 1;
            assert_eq!(p.group_of[n], gi);
        }
    }
    assert!(seen.iter().all(|&c| c == 1), "every node in exactly one group");
    // group dependency graph must be acyclic
    let mut producer = vec![usize::MAX; g.values.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for o in n.output_ids() {
            producer[o.index()] = p.group_of[i];
        }
    }
    let k = p.groups.len();
    let mut indeg = vec![0usize; k];
    let mut edges: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); k];
    for (gi, grp) in p.groups.iter().enumerate() {
        for &v in &grp.inputs {
            let src = producer[v.index()];
            assert!(!grp.nodes.iter().any(|&n| g.nodes[n].output_ids().any(|o| o == v)), "an input is produced inside");
            if src != usize::MAX && src != gi && edges[src].insert(gi) {
                indeg[gi] += 1;
            }
        }
        for &o in &grp.outputs {
            assert!(grp.nodes.iter().any(|&n| g.nodes[n].output_ids().any(|x| x == o)), "an output is produced inside");
        }
    }
    let mut ready: Vec<usize> = (0..k).filter(|&i| indeg[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &j in &edges[i] {
            indeg[j] -= 1;
            if indeg[j] == 0 {
                ready.push(j);
            }
        }
    }
    assert_eq!(done, k, "fusion groups depend on each other in a cycle");
}
