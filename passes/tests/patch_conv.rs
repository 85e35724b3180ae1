//! patch_conv: a Conv whose kernel equals its stride (no padding, dilation or groups, whole
//! patches) becomes reshape → transpose → reshape → Gemm → reshape → transpose with the same
//! outputs on random inputs; any other Conv stays.
mod common;
use common::assert_equivalent;
use xforge_ir::{infer::infer_graph, Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::patch_conv::patch_convs_to_gemms;

fn vals(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect()
}

/// x (2, 3, h, w) → Conv with `k` kernels of `kernel` and `attrs` (+ bias) → Relu.
fn conv(h: usize, w: usize, k: usize, kernel: [usize; 2], bias: bool, attrs: Vec<(&str, Attr)>) -> Graph {
    let mut b = GraphBuilder::new("patches", 17);
    let x = b.input("x", DType::F32, &[2, 3, h, w]);
    let wt =
        b.weight("w", Tensor::from_f32(vec![k, 3, kernel[0], kernel[1]], vals(k * 3 * kernel[0] * kernel[1], 0.1)));
    let mut ins = vec![x, wt];
    if bias {
        ins.push(b.weight("b", Tensor::from_f32(vec![k], vals(k, 0.7))));
    }
    let u = ValueType::unranked(DType::F32);
    let c = b.node(Op::Conv, &ins, attrs, u.clone());
    let r = b.node(Op::Relu, &[c], vec![], u);
    b.output(r);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

fn ops(g: &Graph) -> Vec<Op> {
    g.nodes.iter().map(|n| n.op).collect()
}

#[test]
fn patch_convolutions_become_gemms() {
    let strides = |s: [i64; 2]| ("strides", Attr::Ints(s.to_vec()));
    for (h, w, k, kernel, bias) in [(16, 12, 5, [4, 4], true), (6, 10, 4, [2, 5], false), (8, 8, 7, [8, 8], true)] {
        let before = conv(h, w, k, kernel, bias, vec![strides([kernel[0] as i64, kernel[1] as i64])]);
        let mut g = before.clone();
        assert_eq!(patch_convs_to_gemms(&mut g), 1);
        infer_graph(&mut g).unwrap();
        xforge_ir::verify::verify(&g).unwrap();
        use Op::*;
        assert_eq!(ops(&g), vec![Reshape, Transpose, Reshape, Gemm, Reshape, Transpose, Relu], "{kernel:?}");
        assert_equivalent(&before, &g, 1e-5);
        // and through the whole pipeline (canonicalization and fusion)
        let fused = xforge_passes::fusion::fuse(&before).unwrap().graph;
        assert!(!ops(&fused).contains(&Conv), "{:?}", ops(&fused));
        assert_equivalent(&before, &fused, 1e-5);
    }
}

#[test]
fn a_patch_convolution_of_a_channels_last_tensor_reads_it_directly() {
    // ConvNeXt's downsampling: xh (N, H, W, C) → Transpose(0, 3, 1, 2) → 2×2 patch Conv
    let (h, w, k) = (8, 6, 5);
    let mut b = GraphBuilder::new("patches_nhwc", 17);
    let xh = b.input("xh", DType::F32, &[2, h, w, 3]);
    let u = ValueType::unranked(DType::F32);
    let x = b.node(Op::Transpose, &[xh], vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))], u.clone());
    let wt = b.weight("w", Tensor::from_f32(vec![k, 3, 2, 2], vals(k * 12, 0.3)));
    let bias = b.weight("b", Tensor::from_f32(vec![k], vals(k, 0.9)));
    let c = b.node(Op::Conv, &[x, wt, bias], vec![("strides", Attr::Ints(vec![2, 2]))], u.clone());
    let r = b.node(Op::Relu, &[c], vec![], u);
    b.output(r);
    let mut before = b.finish();
    infer_graph(&mut before).unwrap();
    let mut g = before.clone();
    assert_eq!(patch_convs_to_gemms(&mut g), 1);
    infer_graph(&mut g).unwrap();
    xforge_ir::verify::verify(&g).unwrap();
    use Op::*;
    // the model's Transpose is left to dead-code elimination; the patches come from xh
    assert_eq!(ops(&g), vec![Transpose, Reshape, Transpose, Reshape, Gemm, Reshape, Transpose, Relu]);
    assert_eq!(g.nodes[1].inputs[0], Some(g.inputs[0]), "the split reads the channels-last input");
    assert_eq!(g.nodes[2].attr("perm"), Some(&Attr::Ints(vec![0, 1, 3, 2, 4, 5])));
    assert_equivalent(&before, &g, 1e-5);
    let fused = xforge_passes::fusion::fuse(&before).unwrap().graph;
    assert!(!ops(&fused).contains(&Conv), "{:?}", ops(&fused));
    assert_equivalent(&before, &fused, 1e-5);
}

#[test]
fn other_convolutions_stay() {
    let cases: Vec<(&str, Graph)> = vec![
        ("overlapping", conv(16, 16, 4, [4, 4], true, vec![("strides", Attr::Ints(vec![2, 2]))])),
        (
            "padded",
            conv(16, 16, 4, [4, 4], true, vec![("strides", Attr::Ints(vec![4, 4])), ("pads", Attr::Ints(vec![1; 4]))]),
        ),
        ("partial patches", conv(18, 16, 4, [4, 4], true, vec![("strides", Attr::Ints(vec![4, 4]))])),
        ("pointwise", conv(8, 8, 4, [1, 1], true, vec![])),
        (
            "dilated",
            conv(
                16,
                16,
                4,
                [2, 2],
                true,
                vec![("strides", Attr::Ints(vec![2, 2])), ("dilations", Attr::Ints(vec![2, 2]))],
            ),
        ),
        (
            "same padding",
            conv(
                16,
                16,
                4,
                [4, 4],
                false,
                vec![("strides", Attr::Ints(vec![4, 4])), ("auto_pad", Attr::Str("SAME_UPPER".into()))],
            ),
        ),
    ];
    for (what, before) in cases {
        let mut g = before.clone();
        assert_eq!(patch_convs_to_gemms(&mut g), 0, "{what}");
        assert_eq!(ops(&g), vec![Op::Conv, Op::Relu], "{what}");
    }
}
