//! rules: each rewrite rule, on a graph holding its pattern, adds the fused op, extraction picks
//! it, and the fused graph computes what the original did (interpreted on random inputs).
mod common;
use common::{assert_equivalent, assert_partition_sound};
use xforge_ir::{infer::infer_graph, Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueId, ValueType};
use xforge_passes::fusion::fuse;

fn u() -> ValueType {
    ValueType::unranked(DType::F32)
}

fn c(b: &mut GraphBuilder, name: &str, v: f32) -> ValueId {
    b.weight(name, Tensor::scalar_f32(v))
}

/// Fuses `g`, requires `op` in the result and equal outputs.
fn check(mut g: Graph, op: Op, tol: f64) {
    infer_graph(&mut g).unwrap();
    let f = fuse(&g).unwrap();
    let ops: Vec<Op> = f.graph.nodes.iter().map(|n| n.op).collect();
    assert!(ops.contains(&op), "{op} missing from fused graph: {ops:?}");
    assert_partition_sound(&f);
    assert_equivalent(&g, &f.graph, tol);
}

fn unary(name: &str, build: impl Fn(&mut GraphBuilder, ValueId) -> ValueId) -> Graph {
    let mut b = GraphBuilder::new(name, 17);
    let x = b.input("x", DType::F32, &[2, 3, 8]);
    let y = build(&mut b, x);
    b.output(y);
    b.finish()
}

#[test]
fn silu_both_orders() {
    for flip in [false, true] {
        let g = unary("silu", |b, x| {
            let s = b.node(Op::Sigmoid, &[x], vec![], u());
            let ins = if flip { [s, x] } else { [x, s] };
            b.node(Op::Mul, &ins, vec![], u())
        });
        check(g, Op::Swish, 1e-6);
    }
}

#[test]
fn quick_gelu_is_swish_with_its_alpha() {
    // CLIP's x·σ(1.702·x), the constant on either side of its product, the product either way
    for (flip, k_first) in [(false, false), (true, false), (false, true), (true, true)] {
        let g = unary("quick_gelu", |b, x| {
            let k = c(b, "k", 1.702);
            let kx = b.node(Op::Mul, &if k_first { [k, x] } else { [x, k] }, vec![], u());
            let s = b.node(Op::Sigmoid, &[kx], vec![], u());
            b.node(Op::Mul, &if flip { [s, x] } else { [x, s] }, vec![], u())
        });
        check(g, Op::Swish, 1e-6);
    }
}

#[test]
fn gelu_erf_forms() {
    for form in 0..3 {
        let g = unary("gelu", |b, x| {
            let one = c(b, "one", 1.0);
            let half = c(b, "half", 0.5);
            let e = if form == 2 {
                let k = c(b, "ir2", std::f32::consts::FRAC_1_SQRT_2);
                let m = b.node(Op::Mul, &[x, k], vec![], u());
                b.node(Op::Erf, &[m], vec![], u())
            } else {
                let r2 = c(b, "r2", std::f32::consts::SQRT_2);
                let d = b.node(Op::Div, &[x, r2], vec![], u());
                b.node(Op::Erf, &[d], vec![], u())
            };
            let a = b.node(Op::Add, &[e, one], vec![], u());
            if form == 1 {
                let xh = b.node(Op::Mul, &[x, half], vec![], u());
                b.node(Op::Mul, &[xh, a], vec![], u())
            } else {
                let m = b.node(Op::Mul, &[x, a], vec![], u());
                b.node(Op::Mul, &[m, half], vec![], u())
            }
        });
        check(g, Op::Gelu, 1e-6);
    }
}

#[test]
fn gelu_tanh_form() {
    let g = unary("gelu_tanh", |b, x| {
        let (half, one, three) = (c(b, "half", 0.5), c(b, "one", 1.0), c(b, "three", 3.0));
        let cc = c(b, "c", 0.044715);
        let k = c(b, "k", (2.0f32 / std::f32::consts::PI).sqrt());
        let p = b.node(Op::Pow, &[x, three], vec![], u());
        let pm = b.node(Op::Mul, &[p, cc], vec![], u());
        let s = b.node(Op::Add, &[x, pm], vec![], u());
        let sk = b.node(Op::Mul, &[s, k], vec![], u());
        let t = b.node(Op::Tanh, &[sk], vec![], u());
        let a = b.node(Op::Add, &[t, one], vec![], u());
        let xh = b.node(Op::Mul, &[x, half], vec![], u());
        b.node(Op::Mul, &[xh, a], vec![], u())
    });
    check(g, Op::Gelu, 1e-6);
}

#[test]
fn hardswish_only_with_its_constants() {
    let g = unary("hardswish", |b, x| {
        let h = b.node(Op::HardSigmoid, &[x], vec![("alpha", Attr::Float(1.0 / 6.0)), ("beta", Attr::Float(0.5))], u());
        b.node(Op::Mul, &[x, h], vec![], u())
    });
    check(g, Op::HardSwish, 1e-6);
    // the default HardSigmoid (α = 0.2) is not HardSwish
    let mut g = unary("not_hardswish", |b, x| {
        let h = b.node(Op::HardSigmoid, &[x], vec![], u());
        b.node(Op::Mul, &[x, h], vec![], u())
    });
    infer_graph(&mut g).unwrap();
    let f = fuse(&g).unwrap();
    assert!(!f.graph.nodes.iter().any(|n| n.op == Op::HardSwish));
    assert_equivalent(&g, &f.graph, 0.0);
}

#[test]
fn softmax_decomposition() {
    let mut b = GraphBuilder::new("softmax", 18);
    let x = b.input("x", DType::F32, &[2, 3, 8]);
    let axes = b.weight("axes", Tensor::from_i64(vec![1], vec![-1]));
    let m = b.node(Op::ReduceMax, &[x, axes], vec![], u());
    let s = b.node(Op::Sub, &[x, m], vec![], u());
    let e = b.node(Op::Exp, &[s], vec![], u());
    let z = b.node(Op::ReduceSum, &[e, axes], vec![], u());
    let y = b.node(Op::Div, &[e, z], vec![], u());
    b.output(y);
    check(b.finish(), Op::Softmax, 1e-6);
}

fn norm_graph(rms: bool, recip: bool, opset: i64) -> Graph {
    let mut b = GraphBuilder::new("norm", opset);
    let x = b.input("x", DType::F32, &[2, 3, 8]);
    let w = b.weight("w", Tensor::from_f32(vec![8], (0..8).map(|i| 0.5 + i as f32 * 0.1).collect()));
    let bias = b.weight("b", Tensor::from_f32(vec![8], (0..8).map(|i| i as f32 * -0.05).collect()));
    let (two, eps) = (c(&mut b, "two", 2.0), c(&mut b, "eps", 1e-5));
    // axes are an attribute before opset 18 and an input from then on
    let axes = b.weight("axes", Tensor::from_i64(vec![1], vec![-1]));
    let mean = |b: &mut GraphBuilder, v| {
        if opset >= 18 {
            b.node(Op::ReduceMean, &[v, axes], vec![], u())
        } else {
            b.node(Op::ReduceMean, &[v], vec![("axes", Attr::Ints(vec![-1]))], u())
        }
    };
    if rms {
        let p = b.node(Op::Pow, &[x, two], vec![], u());
        let m = mean(&mut b, p);
        let a = b.node(Op::Add, &[m, eps], vec![], u());
        let s = b.node(Op::Sqrt, &[a], vec![], u());
        let n = if recip {
            let r = b.node(Op::Reciprocal, &[s], vec![], u());
            b.node(Op::Mul, &[x, r], vec![], u())
        } else {
            b.node(Op::Div, &[x, s], vec![], u())
        };
        let y = b.node(Op::Mul, &[n, w], vec![], u());
        b.output(y);
    } else {
        let m = mean(&mut b, x);
        let d = b.node(Op::Sub, &[x, m], vec![], u());
        let p = b.node(Op::Pow, &[d, two], vec![], u());
        let v = mean(&mut b, p);
        let a = b.node(Op::Add, &[v, eps], vec![], u());
        let s = b.node(Op::Sqrt, &[a], vec![], u());
        let n = b.node(Op::Div, &[d, s], vec![], u());
        let sc = b.node(Op::Mul, &[n, w], vec![], u());
        let y = b.node(Op::Add, &[sc, bias], vec![], u());
        b.output(y);
    }
    b.finish()
}

#[test]
fn layernorm_decomposition() {
    for opset in [17, 18] {
        check(norm_graph(false, false, opset), Op::LayerNormalization, 1e-5);
    }
}

#[test]
fn rmsnorm_decompositions() {
    for opset in [17, 18] {
        check(norm_graph(true, false, opset), Op::RMSNormalization, 1e-5);
        check(norm_graph(true, true, opset), Op::RMSNormalization, 1e-5);
    }
}

/// RMSNorm as Hugging Face's T5 and Llama export it — `w · (x · (1 / √(mean(x²) + ε)))` — and
/// the other spellings of rsqrt and factor orders; `scale` is the weight's shape.
fn rms_graph(rsqrt: &str, weight_first: bool, x_first: bool, scale: &[usize]) -> Graph {
    let mut b = GraphBuilder::new("rms", 17);
    let x = b.input("x", DType::F32, &[2, 3, 8]);
    let n: usize = scale.iter().product();
    let w = b.weight("w", Tensor::from_f32(scale.to_vec(), (0..n).map(|i| 0.5 + i as f32 * 0.1).collect()));
    let (two, eps) = (c(&mut b, "two", 2.0), c(&mut b, "eps", 1e-6));
    let p = b.node(Op::Pow, &[x, two], vec![], u());
    let m = b.node(Op::ReduceMean, &[p], vec![("axes", Attr::Ints(vec![-1]))], u());
    let a = b.node(Op::Add, &[eps, m], vec![], u());
    let r = match rsqrt {
        "div" => {
            let s = b.node(Op::Sqrt, &[a], vec![], u());
            let one = c(&mut b, "one", 1.0);
            b.node(Op::Div, &[one, s], vec![], u())
        }
        "pow" => {
            let h = c(&mut b, "neg_half", -0.5);
            b.node(Op::Pow, &[a, h], vec![], u())
        }
        _ => {
            let s = b.node(Op::Sqrt, &[a], vec![], u());
            b.node(Op::Reciprocal, &[s], vec![], u())
        }
    };
    let nx = b.node(Op::Mul, &if x_first { [x, r] } else { [r, x] }, vec![], u());
    let y = b.node(Op::Mul, &if weight_first { [w, nx] } else { [nx, w] }, vec![], u());
    b.output(y);
    b.finish()
}

#[test]
fn rmsnorm_as_exporters_write_it() {
    for rsqrt in ["div", "pow", "reciprocal"] {
        for (weight_first, x_first) in [(true, true), (false, false), (true, false)] {
            check(rms_graph(rsqrt, weight_first, x_first, &[8]), Op::RMSNormalization, 1e-5);
        }
    }
    check(rms_graph("div", true, true, &[1, 1, 8]), Op::RMSNormalization, 1e-5);
}

#[test]
fn rmsnorm_needs_a_scale_per_column() {
    // a scale per row ([2, 3, 1]) is not RMSNormalization's: the graph fuses otherwise, still equal
    let mut g = rms_graph("div", true, true, &[2, 3, 1]);
    infer_graph(&mut g).unwrap();
    let f = fuse(&g).unwrap();
    assert!(!f.graph.nodes.iter().any(|n| n.op == Op::RMSNormalization));
    assert_equivalent(&g, &f.graph, 1e-5);
}

/// q, k, v: [1, 2, 5, 4] heads; kᵀ comes from a transpose like exporters write it.
fn attention_graph(form: &str) -> Graph {
    let mut b = GraphBuilder::new("attn", 17);
    let q = b.input("q", DType::F32, &[1, 2, 5, 4]);
    let k = b.input("k", DType::F32, &[1, 2, 5, 4]);
    let v = b.input("v", DType::F32, &[1, 2, 5, 4]);
    let mask = b.weight(
        "mask",
        Tensor::from_f32(vec![1, 1, 5, 5], (0..25).map(|i| if i % 7 == 3 { -1e4 } else { 0.0 }).collect()),
    );
    let kt = b.node(Op::Transpose, &[k], vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))], u());
    let scores = match form {
        "sdpa" | "sdpa-mask" | "guarded" => {
            let s = c(&mut b, "s", 0.5f32.sqrt());
            let qs = b.node(Op::Mul, &[q, s], vec![], u());
            let ks = b.node(Op::Mul, &[kt, s], vec![], u());
            b.node(Op::MatMul, &[qs, ks], vec![], u())
        }
        _ => {
            let mm = b.node(Op::MatMul, &[q, kt], vec![], u());
            if form == "mul" {
                let s = c(&mut b, "s", 0.5);
                b.node(Op::Mul, &[mm, s], vec![], u())
            } else {
                let d = c(&mut b, "d", 2.0);
                b.node(Op::Div, &[mm, d], vec![], u())
            }
        }
    };
    let masked =
        if form.contains("mask") || form == "guarded" { b.node(Op::Add, &[scores, mask], vec![], u()) } else { scores };
    let mut p = b.node(Op::Softmax, &[masked], vec![("axis", Attr::Int(-1))], u());
    if form == "guarded" {
        let nan = b.node(Op::IsNaN, &[p], vec![], ValueType::unranked(DType::Bool));
        let zero = b.weight("zero", Tensor::from_f32(vec![1], vec![0.0]));
        p = b.node(Op::Where, &[nan, zero, p], vec![], u());
    }
    let y = b.node(Op::MatMul, &[p, v], vec![], u());
    b.output(y);
    b.finish()
}

#[test]
fn attention_forms() {
    for form in ["sdpa", "sdpa-mask", "guarded", "div", "div-mask", "mul"] {
        check(attention_graph(form), Op::Attention, 1e-5);
    }
}

#[test]
fn softmax_over_another_axis_is_not_attention() {
    let mut g = attention_graph("div");
    for n in g.nodes.iter_mut().filter(|n| n.op == Op::Softmax) {
        n.attrs.insert("axis".into(), Attr::Int(2));
    }
    infer_graph(&mut g).unwrap();
    let f = fuse(&g).unwrap();
    assert!(!f.graph.nodes.iter().any(|n| n.op == Op::Attention));
    assert_equivalent(&g, &f.graph, 1e-6);
}
