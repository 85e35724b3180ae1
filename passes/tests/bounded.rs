//! bounded.rs: data-dependent results become Bounded (padded to a static bound, with a length)
//! and Prefix. A large NonMaxSuppression also gets its score order (TopK) and, where it fits the
//! budget, the overlap mask of that order (NmsOverlapMask) as inputs 6 and 7: the greedy walk
//! the GPU kernel makes from the mask gives the interpreter's NonMaxSuppression.
use std::collections::HashMap;
use xforge_ir::{interp, DType, Graph, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::bounded::bound_data_dependent;

/// NonMaxSuppression of boxes [1, n, 4] and scores [1, classes, n], at most `per_class` a class.
fn nms_graph(n: usize, classes: usize, per_class: i64) -> Graph {
    let mut b = GraphBuilder::new("nms", 17);
    let boxes = b.input("boxes", DType::F32, &[1, n, 4]);
    let scores = b.input("scores", DType::F32, &[1, classes, n]);
    let max_out = b.weight("max_out", Tensor::from_i64(vec![1], vec![per_class]));
    let iou = b.weight("iou", Tensor::from_f64(DType::F32, vec![1], &[0.4]));
    let th = b.weight("th", Tensor::from_f64(DType::F32, vec![1], &[0.1]));
    let sel =
        b.node(Op::NonMaxSuppression, &[boxes, scores, max_out, iou, th], vec![], ValueType::unranked(DType::I64));
    b.output(sel);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    g
}

/// Boxes of a crowded scene: many near-copies of a few places, so that suppression happens.
fn scene(n: usize, classes: usize, seed: u64) -> HashMap<String, Tensor> {
    let mut s = seed | 1;
    let mut u = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut boxes = vec![];
    for _ in 0..n {
        let (cy, cx) = ((u() * 6.0).floor() * 0.15, (u() * 6.0).floor() * 0.15);
        let (y, x) = (cy + u() * 0.05, cx + u() * 0.05);
        boxes.extend([y, x, y + 0.1 + u() * 0.05, x + 0.1 + u() * 0.05]);
    }
    let scores: Vec<f64> = (0..classes * n).map(|_| u()).collect();
    HashMap::from([
        ("boxes".to_string(), Tensor::from_f64(DType::F32, vec![1, n, 4], &boxes)),
        ("scores".to_string(), Tensor::from_f64(DType::F32, vec![1, classes, n], &scores)),
    ])
}

/// The GPU kernel's walk (generic/bounded.rs `nms_masked`) on the host: 32 sorted positions at
/// a time, each kept when it is a candidate, not yet suppressed and its class has room; a kept
/// box's mask row suppresses the positions after it.
fn masked_walk(order: &[i64], mask: &[i32], scores: &[f64], n: usize, classes: usize, max_out: usize) -> Vec<i64> {
    let words = n.div_ceil(32);
    let mut out = vec![];
    for c in 0..classes {
        let mut removed = vec![0u32; words];
        let mut kept = 0;
        for q in 0..words {
            for m in 0..32 {
                let r = q * 32 + m;
                if r >= n {
                    break;
                }
                let i = order[c * n + r] as usize;
                let candidate = scores[c * n + i] > 0.1f32 as f64;
                if candidate && removed[q] >> m & 1 == 0 && kept < max_out {
                    kept += 1;
                    out.extend([0, c as i64, i as i64]);
                    for (w, word) in removed.iter_mut().enumerate().skip(q) {
                        *word |= mask[(c * n + r) * words + w] as u32;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn a_large_nonmaxsuppression_walks_its_overlap_mask_as_the_interpreter_selects() {
    let (n, classes) = (300, 2);
    for per_class in [1000, 7] {
        let g = nms_graph(n, classes, per_class);
        let mut h = g.clone();
        assert_eq!(bound_data_dependent(&mut h), 1);
        xforge_ir::infer::infer_graph(&mut h).unwrap();
        xforge_ir::verify::verify(&h).unwrap();
        let ops: Vec<Op> = h.nodes.iter().map(|x| x.op).collect();
        assert_eq!(ops, [Op::TopK, Op::NmsOverlapMask, Op::Bounded, Op::Prefix]);
        let bounded = &h.nodes[2];
        assert_eq!(bounded.inputs[6], h.nodes[0].outputs[1], "input 6 is the score order");
        assert_eq!(bounded.inputs[7], h.nodes[1].outputs[0], "input 7 is the overlap mask");
        assert_eq!(h.ty(h.nodes[1].outputs[0].unwrap()).static_shape(), Some(vec![1, classes, n, 10]));
        for seed in 1..4 {
            let feed = scene(n, classes, seed);
            let want = interp::run(&g, &feed).unwrap().remove(0);
            assert_eq!(interp::run(&h, &feed).unwrap().remove(0).to_i64(), want.to_i64());
            // the mask and the order as the kernels get them, walked as the block walks them
            let mut seen = h.clone();
            seen.outputs = vec![h.nodes[0].outputs[1].unwrap(), h.nodes[1].outputs[0].unwrap()];
            let vals = interp::run(&seen, &feed).unwrap();
            let order = vals[0].to_i64();
            let mask: Vec<i32> = vals[1].to_i64().iter().map(|&w| w as i32).collect();
            let scores = feed["scores"].to_f64();
            let walked = masked_walk(&order, &mask, &scores, n, classes, per_class as usize);
            assert!(want.shape()[0] > 2 * classes && want.shape()[0] < n, "some boxes suppressed, some kept");
            assert_eq!(walked, want.to_i64(), "seed {seed}, at most {per_class} a class");
        }
    }
}

#[test]
fn an_overlap_mask_over_the_budget_leaves_the_walk_to_overlap_tests() {
    // 300 classes of 3000 boxes: 300 · 3000 · 94 words, 338 MB
    let mut h = nms_graph(3000, 300, 5);
    bound_data_dependent(&mut h);
    let ops: Vec<Op> = h.nodes.iter().map(|x| x.op).collect();
    assert_eq!(ops, [Op::TopK, Op::Bounded, Op::Prefix]);
    assert_eq!(h.nodes[1].inputs.len(), 7, "the order only");
    // below NMS_BLOCK_MIN_BOXES: one thread walks the boxes, no helpers
    let mut h = nms_graph(100, 2, 5);
    bound_data_dependent(&mut h);
    assert_eq!(h.nodes.iter().map(|x| x.op).collect::<Vec<_>>(), [Op::Bounded, Op::Prefix]);
}

#[test]
fn a_large_nonzero_gets_its_tiles_first_columns() {
    // 300 × 300 f32 (90000 elements: 22 tiles of 4096, the last one filled with zeros)
    let mut b = GraphBuilder::new("nonzero", 17);
    let x = b.input("x", DType::F32, &[300, 300]);
    let nz = b.node(Op::NonZero, &[x], vec![], ValueType::unranked(DType::I64));
    b.output(nz);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let mut h = g.clone();
    assert_eq!(bound_data_dependent(&mut h), 1);
    xforge_ir::infer::infer_graph(&mut h).unwrap();
    xforge_ir::verify::verify(&h).unwrap();
    let bounded = h.nodes.iter().find(|n| n.op == Op::Bounded).unwrap();
    let offsets = bounded.inputs[2].expect("input 2: the tiles' first columns");
    assert_eq!(h.ty(offsets).static_shape(), Some(vec![22]));
    let v: Vec<f64> = (0..90000).map(|i| if (i * 7919) % 13 < 4 { 0.0 } else { i as f64 }).collect();
    let feed = HashMap::from([("x".to_string(), Tensor::from_f64(DType::F32, vec![300, 300], &v))]);
    assert_eq!(interp::run(&h, &feed).unwrap()[0].to_i64(), interp::run(&g, &feed).unwrap()[0].to_i64());
    let mut seen = h.clone();
    seen.outputs = vec![offsets];
    let got = interp::run(&seen, &feed).unwrap()[0].to_i64();
    let want: Vec<i64> =
        (0..22).map(|t| v[..(t * 4096).min(90000)].iter().filter(|&&e| e != 0.0).count() as i64).collect();
    assert_eq!(got, want);
    // below NONZERO_TILED_MIN: one block walks it all, no offsets
    let mut b = GraphBuilder::new("nonzero", 17);
    let x = b.input("x", DType::F32, &[100, 100]);
    let nz = b.node(Op::NonZero, &[x], vec![], ValueType::unranked(DType::I64));
    b.output(nz);
    let mut small = b.finish();
    bound_data_dependent(&mut small);
    assert_eq!(small.nodes.iter().map(|n| n.op).collect::<Vec<_>>(), [Op::Bounded, Op::Prefix]);
}
