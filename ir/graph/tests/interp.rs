//! The reference interpreter against independent, naive implementations on random inputs.
use half::{bf16, f16};
use proptest::prelude::*;
use std::collections::HashMap;
use xforge_ir::interp::{run, InterpError};
use xforge_ir::{Attr, DType, GraphBuilder, Op, Tensor, ValueType};

fn feed(pairs: &[(&str, Tensor)]) -> HashMap<String, Tensor> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Deterministic pseudo-random floats in [-1, 1).
fn randv(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn max_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Direct N-C-H-W convolution, f64, no tricks.
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    stride: usize,
    pad: usize,
    dil: usize,
    group: usize,
) -> (Vec<f64>, [usize; 4]) {
    let [n, c, h, wd] = xs;
    let [m, cg, kh, kw] = ws;
    let oh = (h + 2 * pad - dil * (kh - 1) - 1) / stride + 1;
    let ow = (wd + 2 * pad - dil * (kw - 1) - 1) / stride + 1;
    let mg = m / group;
    let mut out = vec![0.0; n * m * oh * ow];
    for b in 0..n {
        for o in 0..m {
            let g = o / mg;
            for y in 0..oh {
                for xx in 0..ow {
                    let mut acc = 0.0;
                    for ci in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (y * stride + i * dil) as isize - pad as isize;
                                let ix = (xx * stride + j * dil) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let ch = g * cg + ci;
                                acc += x[((b * c + ch) * h + iy as usize) * wd + ix as usize] as f64
                                    * w[((o * cg + ci) * kh + i) * kw + j] as f64;
                            }
                        }
                    }
                    out[((b * m + o) * oh + y) * ow + xx] = acc;
                }
            }
        }
    }
    (out, [n, m, oh, ow])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn conv_matches_direct_convolution(
        n in 1usize..3, group in 1usize..3, cg in 1usize..4, mg in 1usize..4,
        h in 3usize..9, w in 3usize..9, k in 1usize..4, stride in 1usize..3, pad in 0usize..2,
        dil in 1usize..3, seed in any::<u64>(),
    ) {
        prop_assume!(h + 2 * pad > dil * (k - 1) && w + 2 * pad > dil * (k - 1));
        let (c, m) = (cg * group, mg * group);
        let xs = [n, c, h, w];
        let ws = [m, cg, k, k];
        let xv = randv(n * c * h * w, seed);
        let wv = randv(m * cg * k * k, seed ^ 1);
        let (want, os) = naive_conv(&xv, xs, &wv, ws, stride, pad, dil, group);
        let mut b = GraphBuilder::new("conv", 17);
        let x = b.input("x", DType::F32, &xs);
        let wt = b.weight("w", Tensor::from_f32(ws.to_vec(), wv));
        let a = |v: usize| Attr::Ints(vec![v as i64; 2]);
        let y = b.node(Op::Conv, &[x, wt], vec![
            ("strides", a(stride)), ("pads", Attr::Ints(vec![pad as i64; 4])), ("dilations", a(dil)),
            ("group", Attr::Int(group as i64)),
        ], ValueType::known(DType::F32, &os));
        b.output(y);
        let g = b.finish();
        xforge_ir::verify::verify(&g).unwrap();
        let out = run(&g, &feed(&[("x", Tensor::from_f32(xs.to_vec(), xv))])).unwrap();
        prop_assert_eq!(out[0].shape(), &os[..]);
        prop_assert!(max_err(&out[0].to_f64(), &want) < 1e-4);
    }

    #[test]
    fn matmul_broadcasts_like_numpy(b1 in 1usize..3, b2 in 1usize..3, m in 1usize..5, k in 1usize..6, n in 1usize..5, seed in any::<u64>()) {
        // a: [b1, 1, m, k] · b: [b2, k, n] -> [b1, b2, m, n]
        let av = randv(b1 * m * k, seed);
        let bv = randv(b2 * k * n, seed ^ 7);
        let mut g = GraphBuilder::new("mm", 17);
        let a = g.input("a", DType::F32, &[b1, 1, m, k]);
        let bb = g.input("b", DType::F32, &[b2, k, n]);
        let y = g.node(Op::MatMul, &[a, bb], vec![], ValueType::known(DType::F32, &[b1, b2, m, n]));
        g.output(y);
        let g = g.finish();
        xforge_ir::verify::verify(&g).unwrap();
        let out = run(&g, &feed(&[("a", Tensor::from_f32(vec![b1, 1, m, k], av.clone())), ("b", Tensor::from_f32(vec![b2, k, n], bv.clone()))])).unwrap();
        let mut want = vec![0.0f64; b1 * b2 * m * n];
        for i in 0..b1 { for j in 0..b2 { for r in 0..m { for c in 0..n {
            want[((i * b2 + j) * m + r) * n + c] = (0..k).map(|t| av[(i * m + r) * k + t] as f64 * bv[(j * k + t) * n + c] as f64).sum();
        }}}}
        prop_assert!(max_err(&out[0].to_f64(), &want) < 1e-5);
    }

    #[test]
    fn elementwise_chains_match_scalar_math(ops in proptest::collection::vec(0u8..6, 1..8), rows in 1usize..4, cols in 1usize..5, seed in any::<u64>()) {
        // x: [rows, cols], bias: [cols] broadcast; each step applies one op
        let xv = randv(rows * cols, seed);
        let bv = randv(cols, seed ^ 3);
        let mut g = GraphBuilder::new("chain", 17);
        let x = g.input("x", DType::F32, &[rows, cols]);
        let bias = g.weight("bias", Tensor::from_f32(vec![cols], bv.clone()));
        let t = ValueType::known(DType::F32, &[rows, cols]);
        let mut cur = x;
        let mut want: Vec<f64> = xv.iter().map(|&v| v as f64).collect();
        for &o in &ops {
            let (op, ins) = match o { 0 => (Op::Add, vec![cur, bias]), 1 => (Op::Mul, vec![cur, bias]), 2 => (Op::Relu, vec![cur]), 3 => (Op::Tanh, vec![cur]), 4 => (Op::Sigmoid, vec![cur]), _ => (Op::Sub, vec![bias, cur]) };
            cur = g.node(op, &ins, vec![], t.clone());
            for (i, w) in want.iter_mut().enumerate() {
                let bb = bv[i % cols] as f64;
                // each op rounds to f32, as the interpreter does
                *w = (match o { 0 => *w + bb, 1 => *w * bb, 2 => w.max(0.0), 3 => w.tanh(), 4 => 1.0 / (1.0 + (-*w).exp()), _ => bb - *w }) as f32 as f64;
            }
        }
        g.output(cur);
        let g = g.finish();
        let out = run(&g, &feed(&[("x", Tensor::from_f32(vec![rows, cols], xv))])).unwrap();
        prop_assert!(max_err(&out[0].to_f64(), &want) < 1e-6);
    }
}

#[test]
fn f16_and_bf16_compute_in_f32_and_round_once() {
    let a: Vec<f16> = [2048.0f32, 1.0, 0.1, 65504.0].iter().map(|&v| f16::from_f32(v)).collect();
    let b: Vec<f16> = [1.0f32, 0.000_488_281_25, 0.2, 65504.0].iter().map(|&v| f16::from_f32(v)).collect();
    let mut g = GraphBuilder::new("h", 17);
    let x = g.input("a", DType::F16, &[4]);
    let y = g.input("b", DType::F16, &[4]);
    let s = g.node(Op::Add, &[x, y], vec![], ValueType::known(DType::F16, &[4]));
    g.output(s);
    let g = g.finish();
    let fa = Tensor::new(vec![4], xforge_ir::TensorData::F16(a.clone()));
    let fb = Tensor::new(vec![4], xforge_ir::TensorData::F16(b.clone()));
    let out = run(&g, &feed(&[("a", fa), ("b", fb)])).unwrap();
    let want: Vec<f64> = a.iter().zip(&b).map(|(p, q)| f16::from_f32(p.to_f32() + q.to_f32()).to_f64()).collect();
    assert_eq!(out[0].to_f64(), want);
    // 2048 + 1 is not representable: ties to even gives 2048; 65504 + 65504 overflows to inf
    assert_eq!(out[0].to_f64()[0], 2048.0);
    assert!(out[0].to_f64()[3].is_infinite());

    let v: Vec<bf16> = [1.0f32, 1.0 / 3.0, -7.5].iter().map(|&x| bf16::from_f32(x)).collect();
    let t = Tensor::new(vec![3], xforge_ir::TensorData::BF16(v.clone()));
    let mut g = GraphBuilder::new("e", 17);
    let x = g.input("x", DType::BF16, &[3]);
    let e = g.node(Op::Exp, &[x], vec![], ValueType::known(DType::BF16, &[3]));
    g.output(e);
    let out = run(&g.finish(), &feed(&[("x", t)])).unwrap();
    let want: Vec<f64> = v.iter().map(|x| bf16::from_f32(x.to_f32().exp()).to_f64()).collect();
    assert_eq!(out[0].to_f64(), want);
}

#[test]
fn softmax_layernorm_and_reductions_match_formulas() {
    let xv = randv(2 * 5, 11);
    let mut g = GraphBuilder::new("s", 18);
    let x = g.input("x", DType::F32, &[2, 5]);
    let t = ValueType::known(DType::F32, &[2, 5]);
    let s = g.node(Op::Softmax, &[x], vec![("axis", Attr::Int(-1))], t.clone());
    let scale = g.weight("scale", Tensor::from_f32(vec![5], vec![1.0, 2.0, 0.5, 1.0, -1.0]));
    let ln = g.node(Op::LayerNormalization, &[x, scale], vec![("epsilon", Attr::Float(1e-5))], t.clone());
    let axes = g.weight("axes", Tensor::from_i64(vec![1], vec![1]));
    let r = g.node(Op::ReduceMean, &[x, axes], vec![("keepdims", Attr::Int(0))], ValueType::known(DType::F32, &[2]));
    for v in [s, ln, r] {
        g.output(v);
    }
    let out = run(&g.finish(), &feed(&[("x", Tensor::from_f32(vec![2, 5], xv.clone()))])).unwrap();
    let sc = [1.0, 2.0, 0.5, 1.0, -1.0];
    for row in 0..2 {
        let r: Vec<f64> = xv[row * 5..row * 5 + 5].iter().map(|&v| v as f64).collect();
        let m = r.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = r.iter().map(|v| (v - m).exp()).sum();
        let mean = r.iter().sum::<f64>() / 5.0;
        let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0;
        for k in 0..5 {
            assert!((out[0].to_f64()[row * 5 + k] - (r[k] - m).exp() / z).abs() < 1e-6);
            assert!((out[1].to_f64()[row * 5 + k] - (r[k] - mean) / (var + 1e-5).sqrt() * sc[k]).abs() < 1e-5);
        }
        assert!((out[2].to_f64()[row] - mean).abs() < 1e-6);
    }
}

#[test]
fn errors_name_the_node_and_never_panic() {
    let mut g = GraphBuilder::new("bad", 17);
    let x = g.input_sym("x", DType::F32, &["n", "3"]);
    let y = g.input_sym("y", DType::F32, &["m", "4"]);
    let s = g.node(Op::Add, &[x, y], vec![], ValueType::unranked(DType::F32));
    g.output(s);
    let g = g.finish();
    let e =
        run(&g, &feed(&[("x", Tensor::zeros(DType::F32, vec![2, 3])), ("y", Tensor::zeros(DType::F32, vec![2, 4]))]))
            .unwrap_err();
    assert!(
        matches!(&e, InterpError::Node { node, op: Op::Add, msg } if node == "add_1" && msg.contains("broadcast")),
        "{e}"
    );
    let e = run(&g, &feed(&[("x", Tensor::zeros(DType::F32, vec![2, 3]))])).unwrap_err();
    assert_eq!(e, InterpError::MissingInput("y".into()));
    let e =
        run(&g, &feed(&[("x", Tensor::zeros(DType::F32, vec![2, 5])), ("y", Tensor::zeros(DType::F32, vec![2, 4]))]))
            .unwrap_err();
    assert!(matches!(e, InterpError::InputMismatch { .. }), "{e}");
    let e =
        run(&g, &feed(&[("x", Tensor::zeros(DType::I64, vec![2, 3])), ("y", Tensor::zeros(DType::F32, vec![2, 4]))]))
            .unwrap_err();
    assert!(matches!(e, InterpError::InputMismatch { .. }), "{e}");
    let e = run(&g, &feed(&[("z", Tensor::zeros(DType::F32, vec![1]))])).unwrap_err();
    assert_eq!(e, InterpError::UnknownInput("z".into()));
}

#[test]
fn inputs_an_opset_does_not_define_are_errors() {
    // ReduceMean takes axes as an input only from opset 18
    let mut g = GraphBuilder::new("r", 17);
    let x = g.input("x", DType::F32, &[2, 3]);
    let axes = g.weight("axes", Tensor::from_i64(vec![1], vec![1]));
    let r = g.node(Op::ReduceMean, &[x, axes], vec![], ValueType::unranked(DType::F32));
    g.output(r);
    let e = run(&g.finish(), &feed(&[("x", Tensor::zeros(DType::F32, vec![2, 3]))])).unwrap_err();
    assert!(e.to_string().contains("opset 18"), "{e}");
}

#[test]
fn gather_out_of_range_is_an_error() {
    let mut g = GraphBuilder::new("g", 17);
    let x = g.input("x", DType::F32, &[3, 2]);
    let i = g.input("i", DType::I64, &[2]);
    let o = g.node(Op::Gather, &[x, i], vec![], ValueType::known(DType::F32, &[2, 2]));
    g.output(o);
    let g = g.finish();
    let e =
        run(&g, &feed(&[("x", Tensor::zeros(DType::F32, vec![3, 2])), ("i", Tensor::from_i64(vec![2], vec![0, 3]))]))
            .unwrap_err();
    assert!(e.to_string().contains("index 3 is out of bounds"), "{e}");
    let out = run(
        &g,
        &feed(&[
            ("x", Tensor::from_f32(vec![3, 2], vec![0., 1., 2., 3., 4., 5.])),
            ("i", Tensor::from_i64(vec![2], vec![-1, 0])),
        ]),
    )
    .unwrap();
    assert_eq!(out[0].as_f32().unwrap(), &[4., 5., 0., 1.]);
}

#[test]
fn weights_are_shared_not_copied() {
    let w = Tensor::from_f32(vec![1024], vec![0.5; 1024]);
    let mut g = GraphBuilder::new("w", 17);
    let x = g.input("x", DType::F32, &[1024]);
    let wi = g.weight("w", w.clone());
    let a = g.node(Op::Add, &[x, wi], vec![], ValueType::known(DType::F32, &[1024]));
    let m = g.node(Op::Identity, &[wi], vec![], ValueType::known(DType::F32, &[1024]));
    g.output(a);
    g.output(m);
    let g = g.finish();
    let copy = g.clone();
    assert!(copy.weights[&wi].shares_data(&w));
    let out = run(&g, &feed(&[("x", Tensor::zeros(DType::F32, vec![1024]))])).unwrap();
    assert!(out[1].shares_data(&w));
}

#[test]
fn malformed_operands_are_refused_by_inference_naming_the_node() {
    // once panics or silent acceptances (hostile-input issue): a rank-1 Conv weight, group 0,
    // channels that do not match the weight, CumSum's axis past the rank, a zero pool kernel
    let conv = |w: Vec<usize>, group: i64| {
        let mut g = GraphBuilder::new("c", 17);
        let x = g.input("x", DType::F32, &[1, 3, 8, 8]);
        let n: usize = w.iter().product();
        let w = g.weight("w", Tensor::from_f64(DType::F32, w, &vec![1.0; n]));
        let y = g.node(Op::Conv, &[x, w], vec![("group", Attr::Int(group))], ValueType::unranked(DType::F32));
        g.output(y);
        g.finish()
    };
    let cases = [
        (conv(vec![3], 1), "rank 1"),
        (conv(vec![2, 3, 1, 1], 0), "group must be at least 1"),
        (conv(vec![2, 2, 1, 1], 1), "input channels do not match"),
        (conv(vec![3, 1, 1, 1], 3), ""),
    ];
    for (mut g, want) in cases {
        let r = xforge_ir::infer::infer_graph(&mut g);
        match (want, r) {
            ("", r) => assert!(r.is_ok(), "a depthwise Conv is fine: {r:?}"),
            (w, Err(e)) => assert!(e.to_string().contains(w) && e.to_string().contains("conv"), "{e}"),
            (w, Ok(_)) => panic!("accepted, wanted '{w}'"),
        }
    }
    let mut g = GraphBuilder::new("s", 17);
    let x = g.input("x", DType::F32, &[2, 5]);
    let a = g.weight("a", Tensor::from_i64(vec![], vec![7]));
    let y = g.node(Op::CumSum, &[x, a], vec![], ValueType::unranked(DType::F32));
    g.output(y);
    let e = xforge_ir::infer::infer_graph(&mut g.finish()).unwrap_err().to_string();
    assert!(e.contains("axis 7 is out of range for rank 2") && e.contains("cum"), "{e}");
    let mut g = GraphBuilder::new("p", 17);
    let x = g.input("x", DType::F32, &[1, 1, 4, 4]);
    let y = g.node(Op::MaxPool, &[x], vec![("kernel_shape", Attr::Ints(vec![0, 2]))], ValueType::unranked(DType::F32));
    g.output(y);
    let e = xforge_ir::infer::infer_graph(&mut g.finish()).unwrap_err().to_string();
    assert!(e.contains("kernel_shape [0, 2] must be positive"), "{e}");
}

#[test]
fn invalid_attributes_and_constant_operands_are_refused_by_inference() {
    // models compile once wrote artifacts for (hostile-input issue): inference, which every entry
    // point runs, now refuses them with the node named, as the interpreter and onnxruntime do
    type Build = fn(&mut GraphBuilder, xforge_ir::ValueId) -> (Op, Vec<xforge_ir::ValueId>, Vec<(&'static str, Attr)>);
    let cases: Vec<(Build, &str)> = vec![
        (|_, x| (Op::Transpose, vec![x], vec![("perm", Attr::Ints(vec![0, 0]))]), "not a permutation"),
        (|_, x| (Op::Flatten, vec![x], vec![("axis", Attr::Int(5))]), "axis 5 is out of range"),
        (
            |b, x| {
                (Op::Split, vec![x, b.weight("s", Tensor::from_i64(vec![2], vec![2, 3]))], vec![("axis", Attr::Int(1))])
            },
            "do not sum",
        ),
        (
            |b, x| {
                (
                    Op::Split,
                    vec![x, b.weight("s", Tensor::from_i64(vec![2], vec![-1, 7]))],
                    vec![("axis", Attr::Int(1))],
                )
            },
            "must not be negative",
        ),
        (|b, x| (Op::Reshape, vec![x, b.weight("s", Tensor::from_i64(vec![2], vec![5, 2]))], vec![]), "cannot reshape"),
        (
            |b, x| {
                (Op::Gather, vec![x, b.weight("i", Tensor::from_i64(vec![1], vec![7]))], vec![("axis", Attr::Int(1))])
            },
            "index 7 is out of bounds",
        ),
        (|_, x| (Op::Gelu, vec![x], vec![("approximate", Attr::Str("cubic".into()))]), "approximate 'cubic'"),
        (
            |b, x| {
                (
                    Op::LayerNormalization,
                    vec![x, b.weight("s", Tensor::from_f64(DType::F32, vec![4], &[1.0; 4]))],
                    vec![],
                )
            },
            "does not broadcast",
        ),
    ];
    for (build, want) in cases {
        let mut b = GraphBuilder::new("v", 20);
        let x = b.input("x", DType::F32, &[2, 6]);
        let (op, ins, attrs) = build(&mut b, x);
        let outs = if op == Op::Split { 2 } else { 1 };
        let ys = b.node_multi(
            op,
            &ins.iter().map(|&v| Some(v)).collect::<Vec<_>>(),
            attrs,
            vec![ValueType::unranked(DType::F32); outs],
        );
        for y in ys {
            b.output(y);
        }
        let e = xforge_ir::infer::infer_graph(&mut b.finish()).expect_err(want).to_string();
        assert!(e.contains(want) && e.contains(&op.to_string().to_lowercase()), "{op}: {e}");
    }
}

/// Einsum equations that are not well formed are errors naming the equation, found by the
/// onnx_import fuzz target ("ij->;" panicked looking up ';'): an output label in no input, one
/// given twice, a character that is no label, a term longer than its operand's rank around '...'.
#[test]
fn malformed_einsum_equations_are_errors() {
    let einsum = |eq: &str| {
        let mut b = GraphBuilder::new("einsum", 17);
        let x = b.input("x", DType::F32, &[2, 3]);
        let y = b.node(Op::Einsum, &[x], vec![("equation", Attr::Str(eq.into()))], ValueType::unranked(DType::F32));
        b.output(y);
        run(&b.finish(), &feed(&[("x", Tensor::from_f32(vec![2, 3], randv(6, 1)))]))
    };
    for (eq, why) in [
        ("ij->;", "';' in ';' is not a label"),
        ("ij->k", "output label 'k' is in no input"),
        ("ij->ii", "appears twice"),
        ("i;->i", "';' in 'i;' is not a label"),
        ("ijk...->i", "does not match operand of rank 2"),
        ("i.j->i", "is not a label"),
    ] {
        let e = einsum(eq).err().unwrap_or_else(|| panic!("{eq} was accepted")).to_string();
        assert!(e.contains(why), "{eq}: {e}");
    }
    assert_eq!(einsum("...j->j").unwrap()[0].shape(), &[3]);
}

/// ConvTranspose over an empty spatial axis, or with a negative stride, dilation or pad, is an
/// error (found by the onnx_import fuzz target: an input of length 0 overflowed `input - 1`).
#[test]
fn malformed_transposed_convolutions_are_errors() {
    let convt = |len: usize, attrs: Vec<(&str, Attr)>| {
        let mut b = GraphBuilder::new("convt", 17);
        let x = b.input("x", DType::F32, &[1, 1, len]);
        let w = b.weight("w", Tensor::from_f32(vec![1, 2, 3], randv(6, 2)));
        let y = b.node(Op::ConvTranspose, &[x, w], attrs, ValueType::unranked(DType::F32));
        b.output(y);
        run(&b.finish(), &feed(&[("x", Tensor::from_f32(vec![1, 1, len], randv(len, 3)))]))
    };
    let ints = |v: &[i64]| Attr::Ints(v.to_vec());
    for (len, attrs, why) in [
        (0, vec![], "empty input"),
        (4, vec![("strides", ints(&[-1]))], "strides [-1]: -1 is below 1"),
        (4, vec![("dilations", ints(&[0]))], "dilations [0]: 0 is below 1"),
        (4, vec![("pads", ints(&[-2, 0]))], "pads [-2, 0]: -2 is below 0"),
        (4, vec![("pads", ints(&[4, 3]))], "remove more than the 6 elements"),
        (4, vec![("strides", ints(&[i64::MAX]))], "larger than any tensor"),
    ] {
        let e = convt(len, attrs).err().unwrap_or_else(|| panic!("{why}: accepted")).to_string();
        assert!(e.contains(why), "{why}: {e}");
    }
    assert_eq!(convt(4, vec![("strides", ints(&[2]))]).unwrap()[0].shape(), &[1, 2, 9]);
}

/// An attention mask that does not broadcast over (batch, heads, queries, keys) is an error
/// (found by the onnx_interp fuzz target: a (2, 4, 6) mask over 3 heads read past its end).
#[test]
fn an_attention_mask_that_does_not_broadcast_is_an_error() {
    let attention = |mask: &[usize]| {
        let graph = |mask: &[usize]| {
            let mut b = GraphBuilder::new("attention", 23);
            let q = b.input("q", DType::F32, &[2, 3, 4, 8]);
            let k = b.input("k", DType::F32, &[2, 3, 6, 8]);
            let v = b.input("v", DType::F32, &[2, 3, 6, 8]);
            let m = b.input("m", DType::F32, mask);
            let y = b.node(Op::Attention, &[q, k, v, m], vec![], ValueType::unranked(DType::F32));
            b.output(y);
            b.finish()
        };
        // inference (every entry point's validation) says the same as the interpreter
        let inferred = xforge_ir::infer::infer_graph(&mut graph(mask));
        let t = |s: &[usize], seed| Tensor::from_f32(s.to_vec(), randv(s.iter().product(), seed));
        let f = feed(&[
            ("q", t(&[2, 3, 4, 8], 1)),
            ("k", t(&[2, 3, 6, 8], 2)),
            ("v", t(&[2, 3, 6, 8], 3)),
            ("m", t(mask, 4)),
        ]);
        let r = run(&graph(mask), &f);
        assert_eq!(inferred.is_ok(), r.is_ok(), "{mask:?}: {inferred:?}");
        if let Err(e) = inferred {
            assert!(e.to_string().contains("does not broadcast"), "{mask:?}: {e}");
        }
        r
    };
    for bad in [&[2, 4, 6][..], &[3, 3, 4, 6], &[2, 3, 5, 6], &[]] {
        let e = attention(bad).err().unwrap_or_else(|| panic!("{bad:?} accepted")).to_string();
        assert!(e.contains("does not broadcast"), "{bad:?}: {e}");
    }
    for good in [&[2, 3, 4, 6][..], &[1, 3, 1, 6], &[4, 6], &[6], &[2, 1, 4, 6]] {
        assert_eq!(attention(good).unwrap()[0].shape(), &[2, 3, 4, 8], "{good:?}");
    }
}

/// A Reshape of a declared shape with more elements than usize holds is an inference error, not
/// an overflow (found by the onnx_import fuzz target).
#[test]
fn reshapes_of_shapes_larger_than_any_tensor_are_errors() {
    let mut b = GraphBuilder::new("huge", 17);
    let x = b.input("x", DType::F32, &[1 << 40, 1 << 40]);
    let s = b.weight("s", Tensor::from_i64(vec![1], vec![-1]));
    let y = b.node(Op::Reshape, &[x, s], vec![], ValueType::unranked(DType::F32));
    b.output(y);
    let e = xforge_ir::infer::infer_graph(&mut b.finish()).unwrap_err().to_string();
    assert!(e.contains("more elements than any tensor holds"), "{e}");
}

/// Q, K and V of different batch sizes are an error in inference and in the interpreter (found
/// by the onnx_interp fuzz target: Q of batch 7 against K and V of batch 2 read past K's end).
#[test]
fn attention_operands_of_different_batches_are_errors() {
    let graph = || {
        let mut b = GraphBuilder::new("attention", 23);
        let q = b.input("q", DType::F32, &[7, 3, 4, 8]);
        let k = b.input("k", DType::F32, &[2, 3, 6, 8]);
        let v = b.input("v", DType::F32, &[2, 3, 6, 8]);
        let y = b.node(Op::Attention, &[q, k, v], vec![], ValueType::unranked(DType::F32));
        b.output(y);
        b.finish()
    };
    let e = xforge_ir::infer::infer_graph(&mut graph()).unwrap_err().to_string();
    assert!(e.contains("batch 7 differs"), "{e}");
    let t = |s: &[usize], seed| Tensor::from_f32(s.to_vec(), randv(s.iter().product(), seed));
    let f = feed(&[("q", t(&[7, 3, 4, 8], 1)), ("k", t(&[2, 3, 6, 8], 2)), ("v", t(&[2, 3, 6, 8], 3))]);
    let e = run(&graph(), &f).unwrap_err().to_string();
    assert!(e.contains("do not agree"), "{e}");
}

/// Pad with an unknown mode, or padding an empty axis by edge, wrap or reflect, is an error
/// before any index is computed (found by the onnx_interp fuzz target: mode '' overflowed).
#[test]
fn pads_with_unknown_modes_or_nothing_to_read_are_errors() {
    let pad = |shape: &[usize], mode: &str| {
        let mut b = GraphBuilder::new("pad", 17);
        let x = b.input("x", DType::F32, shape);
        let p = b.weight("p", Tensor::from_i64(vec![4], vec![1, 1, 1, 1]));
        let y = b.node(Op::Pad, &[x, p], vec![("mode", Attr::Str(mode.into()))], ValueType::unranked(DType::F32));
        b.output(y);
        run(&b.finish(), &feed(&[("x", Tensor::from_f32(shape.to_vec(), randv(shape.iter().product(), 5)))]))
    };
    for (shape, mode, why) in [
        (&[2, 3][..], "", "unknown pad mode ''"),
        (&[2, 3], "mirror", "unknown pad mode 'mirror'"),
        (&[0, 3], "edge", "pads axis 0, which is empty"),
        (&[2, 0], "reflect", "pads axis 1, which is empty"),
    ] {
        let e = pad(shape, mode).err().unwrap_or_else(|| panic!("{mode} accepted")).to_string();
        assert!(e.contains(why), "{mode}: {e}");
    }
    assert_eq!(pad(&[0, 3], "constant").unwrap()[0].shape(), &[2, 5]);
    assert_eq!(pad(&[2, 3], "wrap").unwrap()[0].shape(), &[4, 5]);
}

/// A loss whose class weights are not one per class is an error (found by the onnx_interp fuzz
/// target: a scalar weight was indexed by the label).
#[test]
fn loss_weights_must_have_one_entry_per_class() {
    let mut b = GraphBuilder::new("loss", 17);
    let x = b.input("x", DType::F32, &[3, 5]);
    let y = b.input("y", DType::I64, &[3]);
    let w = b.input("w", DType::F32, &[]);
    let l = b.node(Op::SoftmaxCrossEntropyLoss, &[x, y, w], vec![], ValueType::unranked(DType::F32));
    b.output(l);
    let f = feed(&[
        ("x", Tensor::from_f32(vec![3, 5], randv(15, 7))),
        ("y", Tensor::from_i64(vec![3], vec![0, 4, 2])),
        ("w", Tensor::from_f32(vec![], vec![1.0])),
    ]);
    let e = run(&b.finish(), &f).unwrap_err().to_string();
    assert!(e.contains("one entry per class (5)"), "{e}");
}

/// Resize refuses unknown enum values, negative sizes and resizing an empty axis (found by the
/// onnx_interp fuzz target: an empty axis resized to 4 clamped into [0, -1]).
#[test]
fn resizes_with_unknown_modes_or_empty_axes_are_errors() {
    let resize = |shape: &[usize], sizes: &[i64], attrs: Vec<(&str, Attr)>| {
        let mut b = GraphBuilder::new("resize", 19);
        let x = b.input("x", DType::F32, shape);
        let s = b.weight("s", Tensor::from_i64(vec![sizes.len()], sizes.to_vec()));
        let y = b.node_multi(Op::Resize, &[Some(x), None, None, Some(s)], attrs, vec![ValueType::unranked(DType::F32)]);
        b.output(y[0]);
        let n = shape.iter().product();
        run(&b.finish(), &feed(&[("x", Tensor::from_f32(shape.to_vec(), randv(n, 9)))]))
    };
    let s = |v: &str| Attr::Str(v.into());
    for (shape, sizes, attrs, why) in [
        (&[1, 2, 0, 4][..], &[1, 2, 4, 4][..], vec![], "axis 2 is empty"),
        (
            &[1, 2, 3, 4],
            &[1, 2, 6, 8],
            vec![("coordinate_transformation_mode", s("aliGn_corners"))],
            "unknown coordinate_transformation_mode 'aliGn_corners'",
        ),
        (&[1, 2, 3, 4], &[1, 2, 6, 8], vec![("mode", s("bogus"))], "unknown mode 'bogus'"),
        (&[1, 2, 3, 4], &[1, 2, 6, 8], vec![("nearest_mode", s("up"))], "unknown nearest_mode 'up'"),
        (&[1, 2, 3, 4], &[1, 2, -6, 8], vec![], "must not be negative"),
        // an empty axis made "not smaller" scaled the others by infinity
        (&[0, 1, 0, 2], &[1, 1, 1, 1], vec![("keep_aspect_ratio_policy", s("not_smaller"))], "axis 0 is empty"),
    ] {
        let e = resize(shape, sizes, attrs).err().unwrap_or_else(|| panic!("{why}: accepted")).to_string();
        assert!(e.contains(why), "{why}: {e}");
    }
    assert_eq!(resize(&[1, 2, 3, 4], &[1, 2, 6, 8], vec![]).unwrap()[0].shape(), &[1, 2, 6, 8]);
}

/// GatherElements indices larger than the data off the gathered axis, and a convolution window
/// with an empty axis, are errors (found by the fuzz targets: a read past the data's end, an
/// overflow of `kernel - 1`).
#[test]
fn gather_elements_past_the_data_and_empty_windows_are_errors() {
    let mut b = GraphBuilder::new("gather", 17);
    let x = b.input("x", DType::F32, &[1, 5]);
    let i = b.input("i", DType::I64, &[3, 1]);
    let y = b.node(Op::GatherElements, &[x, i], vec![("axis", Attr::Int(1))], ValueType::unranked(DType::F32));
    b.output(y);
    let f =
        feed(&[("x", Tensor::from_f32(vec![1, 5], randv(5, 1))), ("i", Tensor::from_i64(vec![3, 1], vec![0, 1, 2]))]);
    let e = run(&b.finish(), &f).unwrap_err().to_string();
    assert!(e.contains("larger than data [1, 5] along axis 0"), "{e}");

    let mut b = GraphBuilder::new("pool", 17);
    let x = b.input("x", DType::F32, &[1, 1, 5, 5]);
    let attrs = vec![("kernel_shape", Attr::Ints(vec![3, 0]))];
    let y = b.node(Op::MaxPool, &[x], attrs, ValueType::unranked(DType::F32));
    b.output(y);
    let e = run(&b.finish(), &feed(&[("x", Tensor::from_f32(vec![1, 1, 5, 5], randv(25, 2)))])).unwrap_err();
    assert!(e.to_string().contains("empty axis"), "{e}");
}

/// nonpad_kv_seqlen must give one length per batch entry within the keys (found by the fuzz
/// target in CI's run: an empty one was indexed by the batch).
#[test]
fn attention_key_lengths_must_be_one_per_batch_entry() {
    let attention = |lengths: &[i64]| {
        let mut b = GraphBuilder::new("attention", 24);
        let q = b.input("q", DType::F32, &[2, 3, 4, 8]);
        let k = b.input("k", DType::F32, &[2, 3, 6, 8]);
        let v = b.input("v", DType::F32, &[2, 3, 6, 8]);
        let n = b.input("n", DType::I64, &[lengths.len()]);
        let u = ValueType::unranked(DType::F32);
        let y = b.node_multi(Op::Attention, &[Some(q), Some(k), Some(v), None, None, None, Some(n)], vec![], vec![u]);
        b.output(y[0]);
        let t = |s: &[usize], seed| Tensor::from_f32(s.to_vec(), randv(s.iter().product(), seed));
        let f = feed(&[
            ("q", t(&[2, 3, 4, 8], 1)),
            ("k", t(&[2, 3, 6, 8], 2)),
            ("v", t(&[2, 3, 6, 8], 3)),
            ("n", Tensor::from_i64(vec![lengths.len()], lengths.to_vec())),
        ]);
        run(&b.finish(), &f)
    };
    for bad in [&[][..], &[6], &[3, 7], &[-1, 2]] {
        let e = attention(bad).err().unwrap_or_else(|| panic!("{bad:?} accepted")).to_string();
        assert!(e.contains("must give 2 lengths of at most 6 keys"), "{bad:?}: {e}");
    }
    assert_eq!(attention(&[6, 3]).unwrap()[0].shape(), &[2, 3, 4, 8]);
}

/// Inputs that ONNX defines as scalars (Range's start/limit/delta, OneHot's depth, Trilu's k,
/// Dropout's ratio, Loop's trip count and condition) must hold one value; an empty one is an
/// error that names it (found by the fuzz target in CI's run: an empty start was indexed).
#[test]
fn scalar_inputs_must_hold_one_value() {
    let single = |op: Op, ins: &[(&str, Tensor)], attrs: Vec<(&str, Attr)>| {
        let mut b = GraphBuilder::new("scalar", 17);
        let ids: Vec<_> = ins.iter().map(|(n, t)| b.input(n, t.dtype(), t.shape())).collect();
        let y = b.node(op, &ids, attrs, ValueType::unranked(DType::F32));
        b.output(y);
        run(&b.finish(), &feed(ins)).map(|o| o[0].to_f64())
    };
    let s = |v: f32| Tensor::from_f32(vec![], vec![v]);
    let empty = || Tensor::from_f32(vec![0], vec![]);
    let range = |a, l, d| single(Op::Range, &[("a", a), ("l", l), ("d", d)], vec![]);
    assert_eq!(range(s(1.0), s(4.0), s(1.0)).unwrap(), vec![1.0, 2.0, 3.0]);
    for (bad, name) in [(range(empty(), s(4.0), s(1.0)), "start"), (range(s(1.0), s(4.0), empty()), "delta")] {
        let e = bad.unwrap_err().to_string();
        assert!(e.contains(&format!("{name} must hold one value, got shape [0]")), "{e}");
    }
    let ind = Tensor::from_i64(vec![2], vec![0, 2]);
    let values = Tensor::from_f32(vec![2], vec![0.0, 1.0]);
    let one_hot = |depth| single(Op::OneHot, &[("i", ind.clone()), ("d", depth), ("v", values.clone())], vec![]);
    assert_eq!(one_hot(s(3.0)).unwrap(), vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    let e = one_hot(empty()).unwrap_err().to_string();
    assert!(e.contains("depth must hold one value"), "{e}");
    let x = Tensor::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let trilu = |k| single(Op::Trilu, &[("x", x.clone()), ("k", k)], vec![]);
    assert_eq!(trilu(Tensor::from_i64(vec![1], vec![1])).unwrap(), vec![0.0, 2.0, 0.0, 0.0]);
    let e = trilu(Tensor::from_i64(vec![0], vec![])).unwrap_err().to_string();
    assert!(e.contains("k must hold one value"), "{e}");
    let e = single(Op::Dropout, &[("x", x.clone()), ("r", empty())], vec![]).unwrap_err().to_string();
    assert!(e.contains("ratio must hold one value"), "{e}");
}

/// Quantization's bad inputs are errors naming the operand: scales of zero, NaN or infinity,
/// zero points of another type or shape, per-axis and blocked scales that do not fit.
#[test]
fn quantization_scales_and_zero_points_are_checked() {
    let q = |op: Op, x: Tensor, s: Tensor, z: Option<Tensor>, attrs: Vec<(&str, Attr)>| {
        let mut b = GraphBuilder::new("q", 21);
        let xi = b.input("x", x.dtype(), x.shape());
        let si = b.input("s", s.dtype(), s.shape());
        let mut ins = vec![xi, si];
        let mut f = vec![("x", x), ("s", s)];
        if let Some(z) = z {
            ins.push(b.input("z", z.dtype(), z.shape()));
            f.push(("z", z));
        }
        let y = b.node(op, &ins, attrs, ValueType::unranked(DType::F32));
        b.output(y);
        let mut g = b.finish();
        g.undeclared.insert(y);
        xforge_ir::infer::infer_graph(&mut g).map_err(|e| e.to_string())?;
        run(&g, &feed(&f)).map(|o| o[0].clone()).map_err(|e| e.to_string())
    };
    let x = Tensor::from_f32(vec![2, 3], vec![-1.0, 0.0, 0.5, 1.0, 2.5, 300.0]);
    let s = |v: Vec<f32>| Tensor::from_f32(vec![v.len()], v);
    // per tensor: round half to even, saturate to u8 (zero point 128 shifts)
    let y = q(Op::QuantizeLinear, x.clone(), s(vec![0.5]), Some(Tensor::from_f64(DType::U8, vec![], &[128.0])), vec![])
        .unwrap();
    assert_eq!((y.dtype(), y.to_f64()), (DType::U8, vec![126.0, 128.0, 129.0, 130.0, 133.0, 255.0]));
    // per axis 1 (three scales), i8 output without a zero point via output_dtype
    let y =
        q(Op::QuantizeLinear, x.clone(), s(vec![1.0, 2.0, 0.25]), None, vec![("output_dtype", Attr::Int(3))]).unwrap();
    assert_eq!((y.dtype(), y.to_f64()), (DType::I8, vec![-1.0, 0.0, 2.0, 1.0, 1.0, 127.0]));
    for bad in [0.0, f32::NAN, f32::INFINITY, -1.0] {
        let e = q(Op::QuantizeLinear, x.clone(), s(vec![bad]), None, vec![]).unwrap_err().to_string();
        assert!(e.contains("y_scale") && e.contains("positive and finite"), "{bad}: {e}");
    }
    let e = q(Op::QuantizeLinear, x.clone(), s(vec![1.0, 2.0]), None, vec![]).unwrap_err().to_string();
    assert!(e.contains("per-axis scales [2] do not match axis 1 of [2, 3]"), "{e}");
    let e =
        q(Op::QuantizeLinear, x.clone(), s(vec![1.0]), Some(Tensor::from_f64(DType::U8, vec![2], &[0.0, 1.0])), vec![])
            .unwrap_err()
            .to_string();
    assert!(e.contains("y_zero_point [2] and its scale [1] differ in shape"), "{e}");
    // dequantize: blocked scales of 2 along axis 1 (the last block short)
    let xq = Tensor::from_f64(DType::I8, vec![2, 3], &[-4.0, 2.0, 6.0, 1.0, -2.0, 3.0]);
    let sb = Tensor::from_f32(vec![2, 2], vec![0.5, 2.0, 1.0, 0.25]);
    let y = q(Op::DequantizeLinear, xq.clone(), sb, None, vec![("axis", Attr::Int(1)), ("block_size", Attr::Int(2))])
        .unwrap();
    assert_eq!(y.to_f64(), vec![-2.0, 1.0, 12.0, 1.0, -2.0, 0.75]);
    let sb = Tensor::from_f32(vec![2, 3], vec![1.0; 6]);
    let e = q(Op::DequantizeLinear, xq.clone(), sb, None, vec![("axis", Attr::Int(1)), ("block_size", Attr::Int(2))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("blocked scales [2, 3] do not fit [2, 3] in blocks of 2"), "{e}");
    let e = q(Op::DequantizeLinear, xq, s(vec![1.0]), Some(Tensor::from_f64(DType::U8, vec![], &[0.0])), vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("x_zero_point is u8, the quantized data i8"), "{e}");
}

#[test]
fn center_crop_pad_of_an_empty_input_is_all_padding() {
    // x [20, 0, 3] padded to [20, 2, 3] along axis 1 (given as -2): the output is the padding;
    // the index of the one source element was read from an empty tensor (found by CI's fuzz run)
    let mut g = GraphBuilder::new("ccp", 18);
    let x = g.input("x", DType::F32, &[20, 0, 3]);
    let s = g.weight("shape", Tensor::from_i64(vec![1], vec![2]));
    let y = g.node(Op::CenterCropPad, &[x, s], vec![("axes", Attr::Ints(vec![-2]))], ValueType::unranked(DType::F32));
    g.output(y);
    let g = g.finish();
    let out = run(&g, &feed(&[("x", Tensor::from_f32(vec![20, 0, 3], vec![]))])).unwrap();
    assert_eq!(out[0].shape(), &[20, 2, 3]);
    assert!(out[0].to_f64().iter().all(|&v| v == 0.0));
}

#[test]
fn roi_align_over_an_empty_map_is_zeros_and_bad_sizes_and_huge_rois_are_errors() {
    // X [1, 2, 0, 5]: every sample lies outside the map (the interpreter indexed the empty
    // plane: a panic found by the onnx_interp target)
    let build = |oh: i64| {
        let mut g = GraphBuilder::new("roi_align", 16);
        let x = g.input("x", DType::F32, &[1, 2, 0, 5]);
        let rois = g.input("rois", DType::F32, &[1, 4]);
        let bi = g.input("bi", DType::I64, &[1]);
        let attrs = vec![("output_height", Attr::Int(oh)), ("output_width", Attr::Int(3))];
        let y = g.node(Op::RoiAlign, &[x, rois, bi], attrs, ValueType::unranked(DType::F32));
        g.output(y);
        g.finish()
    };
    let inputs = feed(&[
        ("x", Tensor::from_f32(vec![1, 2, 0, 5], vec![])),
        ("rois", Tensor::from_f32(vec![1, 4], vec![0.0, 0.0, 2.0, 2.0])),
        ("bi", Tensor::from_i64(vec![1], vec![0])),
    ]);
    let out = run(&build(2), &inputs).unwrap();
    assert_eq!(out[0].shape(), &[1, 2, 2, 3]);
    assert!(out[0].to_f64().iter().all(|&v| v == 0.0));
    let e = run(&build(0), &inputs).unwrap_err().to_string();
    assert!(e.contains("must be at least 1"), "{e}");
    // a roi of 1e30 asks for a sampling grid past the element limit (the product overflowed:
    // found by the fusion_diff target)
    let mut g = GraphBuilder::new("roi_align", 16);
    let x = g.input("x", DType::F32, &[1, 1, 4, 4]);
    let rois = g.input("rois", DType::F32, &[1, 4]);
    let bi = g.input("bi", DType::I64, &[1]);
    let y = g.node(Op::RoiAlign, &[x, rois, bi], vec![], ValueType::unranked(DType::F32));
    g.output(y);
    let inputs = feed(&[
        ("x", Tensor::from_f32(vec![1, 1, 4, 4], vec![1.0; 16])),
        ("rois", Tensor::from_f32(vec![1, 4], vec![0.0, 0.0, 1e30, 1e30])),
        ("bi", Tensor::from_i64(vec![1], vec![0])),
    ]);
    let e = run(&g.finish(), &inputs).unwrap_err().to_string();
    assert!(e.contains("sampling grid"), "{e}");
}

#[test]
fn gather_nd_with_index_tuples_of_length_zero_is_an_error() {
    // indices [3, 0] (the spec asks for a last dim of 1..=rank): the interpreter counted tuples
    // as entries / 0 and built an empty tensor of the output's shape, a panic found by the
    // onnx_interp target
    let mut g = GraphBuilder::new("gather_nd", 13);
    let x = g.input("x", DType::F32, &[2, 2]);
    let ind = g.input("ind", DType::I64, &[3, 0]);
    let y = g.node(Op::GatherND, &[x, ind], vec![], ValueType::unranked(DType::F32));
    g.output(y);
    let g = g.finish();
    let x = Tensor::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let e = run(&g, &feed(&[("x", x), ("ind", Tensor::from_i64(vec![3, 0], vec![]))])).unwrap_err().to_string();
    assert!(e.contains("last dim must be at least 1"), "{e}");
}

#[test]
fn a_slice_with_more_starts_than_axes_of_its_input_is_an_error() {
    // starts of 3 entries without axes on x [20, 5]: the third indexed past the shape (a panic;
    // found by the fusion_diff target)
    let mut g = GraphBuilder::new("slice", 13);
    let x = g.input("x", DType::F32, &[20, 5]);
    let starts = g.input("starts", DType::I64, &[3]);
    let ends = g.input("ends", DType::I64, &[3]);
    let y = g.node(Op::Slice, &[x, starts, ends], vec![], ValueType::unranked(DType::F32));
    g.output(y);
    let g = g.finish();
    let ints = |v: Vec<i64>| Tensor::from_i64(vec![3], v);
    let e = run(
        &g,
        &feed(&[
            ("x", Tensor::from_f32(vec![20, 5], vec![0.0; 100])),
            ("starts", ints(vec![0, 0, 0])),
            ("ends", ints(vec![1, 1, 1])),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("3 starts without axes for an input of rank 2"), "{e}");
}

#[test]
fn slices_with_the_largest_steps_take_one_element() {
    // e − b + s − 1 overflowed i64 for a step of i64::MAX (found by the onnx_interp target; a
    // release build would have wrapped to an empty slice)
    use xforge_ir::interp::slice_len;
    assert_eq!(slice_len(5, 1, 5, i64::MAX), 1);
    assert_eq!(slice_len(5, 4, -10, i64::MIN), 1);
    assert_eq!(slice_len(5, 0, 5, 2), 3);
    assert_eq!(slice_len(0, 0, 5, i64::MAX), 0);
}
