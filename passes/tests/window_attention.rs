//! window_attention: softmax(q·c·kᵀ + B)·v becomes Attention(q, k, v, B, scale = c); with a
//! shifted-window mask between reshapes (N/W, W, h, S, L) it becomes one Attention over N/W
//! batches of W·h heads with the mask B + M. Same outputs on random inputs; blocks the rewrite
//! cannot express stay.
mod common;
use common::assert_equivalent;
use xforge_ir::{infer::infer_graph, Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueId, ValueType};
use xforge_passes::window_attention::attention_blocks;

const N: usize = 6; // windows × batches
const H: usize = 2;
const S: usize = 5;
const D: usize = 4;

fn vals(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.61 + seed).sin()).collect()
}

fn u() -> ValueType {
    ValueType::unranked(DType::F32)
}

fn shape(b: &mut GraphBuilder, name: &str, dims: &[usize]) -> ValueId {
    b.weight(name, Tensor::from_i64(vec![dims.len()], dims.iter().map(|&d| d as i64).collect()))
}

/// q, k, v (N, H, S, D) → scores q·c·kᵀ (+ bias of `bias_shape`) [→ windowed mask of
/// `mask_shape` over (N/W, W, H, S, S)] → softmax → ·v.
fn block(bias_shape: Option<&[usize]>, windows: Option<(usize, &[usize])>, scale_k: bool) -> Graph {
    let mut b = GraphBuilder::new("windows", 17);
    let q = b.input("q", DType::F32, &[N, H, S, D]);
    let k = b.input("k", DType::F32, &[N, H, S, D]);
    let v = b.input("v", DType::F32, &[N, H, S, D]);
    let c = b.weight("c", Tensor::scalar_f32(0.5));
    let qs = b.node(Op::Mul, &[q, c], vec![], u());
    let mut kt = b.node(Op::Transpose, &[k], vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))], u());
    if scale_k {
        let c2 = b.weight("c2", Tensor::scalar_f32(0.8));
        kt = b.node(Op::Mul, &[kt, c2], vec![], u());
    }
    let mut s = b.node(Op::MatMul, &[qs, kt], vec![], u());
    if let Some(bs) = bias_shape {
        let n = bs.iter().product();
        let bias = b.weight("bias", Tensor::from_f32(bs.to_vec(), vals(n, 0.3)));
        s = b.node(Op::Add, &[bias, s], vec![], u());
    }
    if let Some((w, ms)) = windows {
        let s5 = shape(&mut b, "s5", &[N / w, w, H, S, S]);
        let r5 = b.node(Op::Reshape, &[s, s5], vec![], u());
        // a shifted window's mask: 0 or −100 (Swin's value), per window
        let m: Vec<f32> = vals(ms.iter().product(), 1.1).iter().map(|x| if *x > 0.2 { -100.0 } else { 0.0 }).collect();
        let mask = b.weight("mask", Tensor::from_f32(ms.to_vec(), m));
        let a = b.node(Op::Add, &[r5, mask], vec![], u());
        let s4 = shape(&mut b, "s4", &[N, H, S, S]);
        s = b.node(Op::Reshape, &[a, s4], vec![], u());
    }
    let p = b.node(Op::Softmax, &[s], vec![("axis", Attr::Int(-1))], u());
    let o = b.node(Op::MatMul, &[p, v], vec![], u());
    b.output(o);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

fn rewritten(before: &Graph) -> (Graph, usize) {
    let mut g = before.clone();
    let n = attention_blocks(&mut g);
    xforge_passes::dce::dce(&mut g);
    infer_graph(&mut g).unwrap();
    xforge_ir::verify::verify(&g).unwrap();
    (g, n)
}

fn ops(g: &Graph) -> Vec<Op> {
    g.nodes.iter().map(|n| n.op).collect()
}

#[test]
fn a_scaled_query_with_a_bias_table_is_one_attention() {
    for (bias, scale_k) in [(Some(&[H, S, S][..]), false), (Some(&[1, H, S, S][..]), true), (None, true)] {
        let before = block(bias, None, scale_k);
        let (g, n) = rewritten(&before);
        assert_eq!(n, 1, "{bias:?}");
        // Transpose(Transpose(k)) is left for the no-op pass
        assert_eq!(ops(&g).iter().filter(|&&o| o == Op::Attention).count(), 1);
        assert!(!ops(&g).contains(&Op::Softmax) && !ops(&g).contains(&Op::MatMul), "{:?}", ops(&g));
        let att = g.nodes.iter().find(|n| n.op == Op::Attention).unwrap();
        let want = if scale_k { 0.4 } else { 0.5 };
        assert!(matches!(att.attr("scale"), Some(Attr::Float(s)) if (*s - want).abs() < 1e-6));
        assert_equivalent(&before, &g, 1e-5);
    }
}

#[test]
fn shifted_windows_become_one_attention_over_windows_times_heads() {
    // W = 3 windows per image, 2 images; M per window (3, 1, S, S) and per window and head
    for ms in [&[3, 1, S, S][..], &[1, 3, H, S, S][..]] {
        let before = block(Some(&[1, H, S, S]), Some((3, ms)), false);
        let (g, n) = rewritten(&before);
        assert_eq!(n, 1, "{ms:?}");
        let att = g.nodes.iter().find(|n| n.op == Op::Attention).unwrap();
        let q = att.inputs[0].unwrap();
        assert_eq!(g.ty(q).static_shape().unwrap(), vec![N / 3, 3 * H, S, D], "batches of windows × heads");
        let mask = &g.weights[&att.inputs[3].unwrap()];
        assert_eq!(mask.shape(), &[1, 3 * H, S, S], "the mask does not grow with the batch");
        assert_equivalent(&before, &g, 1e-5);
    }
    // and through the whole pipeline: one attention group, no softmax
    let before = block(Some(&[1, H, S, S]), Some((3, &[3, 1, S, S])), false);
    let fused = xforge_passes::fusion::fuse(&before).unwrap();
    assert!(ops(&fused.graph).contains(&Op::Attention) && !ops(&fused.graph).contains(&Op::Softmax));
    assert_equivalent(&before, &fused.graph, 1e-5);
}

#[test]
fn blocks_the_rewrite_cannot_express_stay() {
    // a mask that differs per image (its leading axis is not 1) mixes the regrouped batches
    let g = block(Some(&[1, H, S, S]), Some((3, &[2, 3, 1, S, S])), false);
    assert_eq!(rewritten(&g).1, 0);
    // a bias that differs per window row in the windowed form
    let g = block(Some(&[N, H, S, S]), Some((3, &[3, 1, S, S])), false);
    assert_eq!(rewritten(&g).1, 0);
    // a bias broadcast over the keys is not a mask the kernel reads
    let g = block(Some(&[H, S, 1]), None, false);
    assert_eq!(rewritten(&g).1, 0);
}
