//! conv1d: a 1-D Conv becomes reshape → 2-D Conv of height 1 → (its pointwise consumers) → reshape with the same outputs on
//! random inputs (strides, dilations, asymmetric and automatic pads, groups, bias or none); a
//! depthwise one stays 1-D.
mod common;
use common::assert_equivalent;
use xforge_ir::{infer::infer_graph, Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::conv1d::conv1d_as_2d;

fn vals(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect()
}

/// x (2, c, 19) → Conv with `k` kernels of width `kw`, `group` and `attrs` (+ bias) → Relu.
fn conv(c: usize, k: usize, kw: usize, group: usize, bias: bool, attrs: Vec<(&str, Attr)>) -> Graph {
    let mut b = GraphBuilder::new("conv1d", 17);
    let x = b.input("x", DType::F32, &[2, c, 19]);
    let wt = b.weight("w", Tensor::from_f32(vec![k, c / group, kw], vals(k * c / group * kw, 0.1)));
    let mut ins = vec![x, wt];
    if bias {
        ins.push(b.weight("b", Tensor::from_f32(vec![k], vals(k, 0.7))));
    }
    let mut attrs = attrs;
    if group > 1 {
        attrs.push(("group", Attr::Int(group as i64)));
    }
    let u = ValueType::unranked(DType::F32);
    let y = b.node(Op::Conv, &ins, attrs, u.clone());
    let r = b.node(Op::Relu, &[y], vec![], u);
    b.output(r);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

fn ops(g: &Graph) -> Vec<Op> {
    g.nodes.iter().map(|n| n.op).collect()
}

fn ints(name: &'static str, v: &[i64]) -> (&'static str, Attr) {
    (name, Attr::Ints(v.to_vec()))
}

#[test]
fn one_d_convolutions_become_two_d_of_height_one() {
    let cases: Vec<(&str, Graph, Vec<i64>)> = vec![
        ("whisper's first", conv(8, 6, 3, 1, true, vec![ints("pads", &[1, 1])]), vec![2, 6, 19]),
        (
            "strided, dilated, asymmetric pads",
            conv(4, 5, 3, 1, false, vec![ints("strides", &[2]), ints("dilations", &[2]), ints("pads", &[3, 0])]),
            vec![2, 5, 9],
        ),
        ("grouped", conv(6, 4, 5, 2, true, vec![ints("kernel_shape", &[5])]), vec![2, 4, 15]),
        (
            "same padding",
            conv(3, 4, 4, 1, true, vec![("auto_pad", Attr::Str("SAME_UPPER".into())), ints("strides", &[3])]),
            vec![2, 4, 7],
        ),
    ];
    for (what, before, shape) in cases {
        let mut g = before.clone();
        assert_eq!(conv1d_as_2d(&mut g), 1, "{what}");
        xforge_passes::dce::dce(&mut g);
        infer_graph(&mut g).unwrap();
        xforge_ir::verify::verify(&g).unwrap();
        // the ReLU runs on the 2-D convolution's output, the reshape back after it
        assert_eq!(ops(&g), vec![Op::Reshape, Op::Conv, Op::Relu, Op::Reshape], "{what}");
        let conv = &g.nodes[1];
        assert_eq!(g.ty(conv.inputs[0].unwrap()).static_shape().unwrap().len(), 4, "{what}");
        assert_eq!(g.ty(conv.outputs[0].unwrap()).static_shape().unwrap()[2], 1, "{what}: height 1");
        let out = g.outputs[0];
        assert_eq!(g.ty(out).static_shape().unwrap(), shape.iter().map(|&d| d as usize).collect::<Vec<_>>(), "{what}");
        assert_equivalent(&before, &g, 1e-5);
        // and through the whole pipeline (canonicalization, layout and fusion)
        let fused = xforge_passes::fusion::fuse(&before).unwrap().graph;
        assert_equivalent(&before, &fused, 1e-5);
    }
}

#[test]
fn depthwise_one_d_convolutions_stay() {
    // Mamba's causal conv1d: one filter per channel, left pads
    let before = conv(6, 6, 4, 6, true, vec![ints("pads", &[3, 0])]);
    let mut g = before.clone();
    assert_eq!(conv1d_as_2d(&mut g), 0);
    assert_eq!(ops(&g), vec![Op::Conv, Op::Relu]);
}

#[test]
fn two_convolutions_in_a_row_meet_without_reshapes() {
    // Whisper's front-end: Conv → GELU (Div, Erf, Add, Mul, Mul with scalars) → Conv → GELU →
    // Transpose(0, 2, 1)
    let mut b = GraphBuilder::new("front_end", 17);
    let x = b.input("x", DType::F32, &[2, 5, 16]);
    let u = ValueType::unranked(DType::F32);
    let scalar = |b: &mut GraphBuilder, name: &str, v: f32| b.weight(name, Tensor::from_f32(vec![], vec![v]));
    let gelu = |b: &mut GraphBuilder, x, tag: &str| {
        let (r2, one, half) = (
            scalar(b, &format!("{tag}.r2"), 1.4142135),
            scalar(b, &format!("{tag}.one"), 1.0),
            scalar(b, &format!("{tag}.half"), 0.5),
        );
        let d = b.node(Op::Div, &[x, r2], vec![], u.clone());
        let e = b.node(Op::Erf, &[d], vec![], u.clone());
        let a = b.node(Op::Add, &[e, one], vec![], u.clone());
        let m = b.node(Op::Mul, &[x, a], vec![], u.clone());
        b.node(Op::Mul, &[m, half], vec![], u.clone())
    };
    let w1 = b.weight("w1", Tensor::from_f32(vec![6, 5, 3], vals(90, 0.2)));
    let b1 = b.weight("b1", Tensor::from_f32(vec![6], vals(6, 0.4)));
    let c1 = b.node(Op::Conv, &[x, w1, b1], vec![ints("pads", &[1, 1])], u.clone());
    let g1 = gelu(&mut b, c1, "g1");
    let w2 = b.weight("w2", Tensor::from_f32(vec![6, 6, 3], vals(108, 0.5)));
    let b2 = b.weight("b2", Tensor::from_f32(vec![6], vals(6, 0.8)));
    let c2 = b.node(Op::Conv, &[g1, w2, b2], vec![ints("pads", &[1, 1]), ints("strides", &[2])], u.clone());
    let g2 = gelu(&mut b, c2, "g2");
    let t = b.node(Op::Transpose, &[g2], vec![ints("perm", &[0, 2, 1])], u);
    b.output(t);
    let mut before = b.finish();
    infer_graph(&mut before).unwrap();
    let mut g = before.clone();
    xforge_passes::canonicalize(&mut g).unwrap();
    xforge_ir::verify::verify(&g).unwrap();
    use Op::*;
    // one reshape in, the convolutions and GELUs in 4-D, one reshape out before the transpose
    assert_eq!(
        ops(&g),
        vec![Reshape, Conv, Div, Erf, Add, Mul, Mul, Conv, Div, Erf, Add, Mul, Mul, Reshape, Transpose],
        "{g:?}"
    );
    assert_equivalent(&before, &g, 1e-5);
    let fused = xforge_passes::fusion::fuse(&before).unwrap().graph;
    assert_equivalent(&before, &fused, 1e-5);
}
