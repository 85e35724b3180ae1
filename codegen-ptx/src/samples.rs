//! Sample graphs, one or more per kernel template: CI assembles their kernels with ptxas and
//! `kernel_cases` turns them into GPU checks against the interpreter.
use xforge_ir::{infer::infer_graph, Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueType};

/// A named graph and the relative-L2 tolerance its GPU result must meet.
pub struct Sample {
    pub name: String,
    pub graph: Graph,
    pub tol: f64,
}

/// Deterministic values in [−2, 2) (integers truncate toward zero, so ids include −1).
pub fn random(dt: DType, shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
        })
        .collect();
    Tensor::from_f64(dt, shape.to_vec(), &v)
}

fn finish(b: GraphBuilder) -> Graph {
    let mut g = b.finish();
    infer_graph(&mut g).expect("sample graphs are well typed");
    g
}

/// gelu(x + b)·σ(x) − clip(x, −1, 1), then HardSwish; b broadcast along the last axis.
pub fn activation_mix(dt: DType, shape: &[usize]) -> Graph {
    let mut b = GraphBuilder::new("mix", 17);
    let x = b.input("x", dt, shape);
    let u = || ValueType::unranked(dt);
    let bias = b.weight("bias", random(dt, &[*shape.last().unwrap()], 7));
    let lo = b.weight("lo", Tensor::from_f64(dt, vec![], &[-1.0]));
    let hi = b.weight("hi", Tensor::from_f64(dt, vec![], &[1.0]));
    let a = b.node(Op::Add, &[x, bias], vec![], u());
    let ge = b.node(Op::Gelu, &[a], vec![], u());
    let s = b.node(Op::Sigmoid, &[x], vec![], u());
    let m = b.node(Op::Mul, &[ge, s], vec![], u());
    let c = b.node(Op::Clip, &[x, lo, hi], vec![], u());
    let y = b.node(Op::Sub, &[m, c], vec![], u());
    let z = b.node(Op::HardSwish, &[y], vec![], u());
    b.output(z);
    finish(b)
}

/// y = relu(x) over `n` elements: one read and one write each, for the bandwidth floor.
pub fn relu(dt: DType, n: usize) -> Graph {
    let mut b = GraphBuilder::new("relu", 17);
    let x = b.input("x", dt, &[n]);
    let y = b.node(Op::Relu, &[x], vec![], ValueType::unranked(dt));
    b.output(y);
    finish(b)
}

/// Relu(CastLike(x · 1.5, like)) over [8, 33]: rounded through `like`'s dtype (f16 for f32 x,
/// bf16 for f16, f32 for bf16), `like` a [2, 3, 5] weight of more axes than the space (only its
/// dtype is read).
pub fn castlike(dt: DType) -> Graph {
    let to = match dt {
        DType::F32 => DType::F16,
        DType::F16 => DType::BF16,
        _ => DType::F32,
    };
    let mut b = GraphBuilder::new("castlike", 21);
    let x = b.input("x", dt, &[8, 33]);
    let k = b.weight("k", Tensor::from_f64(dt, vec![], &[1.5]));
    let like = b.weight("like", random(to, &[2, 3, 5], 9));
    let m = b.node(Op::Mul, &[x, k], vec![], ValueType::unranked(dt));
    let c = b.node(Op::CastLike, &[m, like], vec![], ValueType::unranked(to));
    let y = b.node(Op::Relu, &[c], vec![], ValueType::unranked(to));
    b.output(y);
    finish(b)
}

/// A row reduction over [rows, len]: softmax, layernorm (scale, bias, ReLU), rmsnorm, or mean
/// (tanh epilogue).
pub fn reduction(kind: &str, dt: DType, rows: usize, len: usize) -> Graph {
    let u = || ValueType::unranked(dt);
    let mut b = GraphBuilder::new(kind, 23);
    let x = b.input("x", dt, &[rows, len]);
    let y = match kind {
        "softmax" => b.node(Op::Softmax, &[x], vec![("axis", Attr::Int(-1))], u()),
        "layernorm" => {
            let w = b.weight("w", random(dt, &[len], 3));
            let bias = b.weight("b", random(dt, &[len], 4));
            let l = b.node(Op::LayerNormalization, &[x, w, bias], vec![], u());
            b.node(Op::Relu, &[l], vec![], u())
        }
        "rmsnorm" => {
            let w = b.weight("w", random(dt, &[len], 5));
            b.node(Op::RMSNormalization, &[x, w], vec![], u())
        }
        _ => {
            let axes = b.weight("axes", Tensor::from_i64(vec![1], vec![-1]));
            let m = b.node(Op::ReduceMean, &[x, axes], vec![], u());
            b.node(Op::Tanh, &[m], vec![], u())
        }
    };
    b.output(y);
    finish(b)
}

/// softmax(x + mask) over [rows, len]: row r masks with −∞ the first (r mod 4)·256 columns of every
/// 1024, so the threads that own those columns (a block strides 1024 elements in f32, f16 and
/// bf16 at len 4096) hold only −∞ — empty partials — while the row keeps finite values.
pub fn masked_softmax(dt: DType, rows: usize, len: usize) -> Graph {
    let u = || ValueType::unranked(dt);
    let mut b = GraphBuilder::new("masked_softmax", 17);
    let x = b.input("x", dt, &[rows, len]);
    let mask: Vec<f64> =
        (0..rows * len).map(|i| if i % len % 1024 < (i / len % 4) * 256 { f64::NEG_INFINITY } else { 0.0 }).collect();
    let m = b.weight("mask", Tensor::from_f64(dt, vec![rows, len], &mask));
    let a = b.node(Op::Add, &[x, m], vec![], u());
    let y = b.node(Op::Softmax, &[a], vec![("axis", Attr::Int(-1))], u());
    b.output(y);
    finish(b)
}

/// Data movement feeding elementwise work: an embedding Gather (i64 ids), a transpose, a
/// three-way Concat, a constant Pad, a transpose leaving through a reshape.
pub fn movement(dt: DType) -> Vec<(&'static str, Graph)> {
    let u = || ValueType::unranked(dt);
    let mut out = vec![];
    let mut b = GraphBuilder::new("gather", 17);
    let ids = b.input("ids", DType::I64, &[4, 64]);
    let table = b.weight("table", random(dt, &[50, 96], 21));
    let pos = b.weight("pos", random(dt, &[64, 96], 22));
    let e = b.node(Op::Gather, &[table, ids], vec![], u());
    let y = b.node(Op::Add, &[e, pos], vec![], u());
    b.output(y);
    out.push(("gather", finish(b)));
    let mut b = GraphBuilder::new("transpose", 17);
    let x = b.input("x", dt, &[6, 20, 33]);
    let t = b.node(Op::Transpose, &[x], vec![("perm", Attr::Ints(vec![2, 0, 1]))], u());
    let two = b.weight("two", Tensor::from_f64(dt, vec![], &[2.0]));
    let y = b.node(Op::Mul, &[t, two], vec![], u());
    b.output(y);
    out.push(("transpose", finish(b)));
    let mut b = GraphBuilder::new("concat", 17);
    let xs: Vec<_> =
        [3usize, 5, 2].iter().enumerate().map(|(k, &w)| b.input(&format!("x{k}"), dt, &[4, w, 6])).collect();
    let cat = b.node(Op::Concat, &xs, vec![("axis", Attr::Int(1))], u());
    let y = b.node(Op::Relu, &[cat], vec![], u());
    b.output(y);
    out.push(("concat", finish(b)));
    let mut b = GraphBuilder::new("pad", 17);
    let x = b.input("x", dt, &[2, 3, 5]);
    let pads = b.weight("pads", Tensor::from_i64(vec![6], vec![0, 1, 2, 1, 0, 3]));
    let v = b.weight("v", Tensor::from_f64(dt, vec![], &[0.5]));
    let p = b.node(Op::Pad, &[x, pads, v], vec![], u());
    let two = b.weight("two", Tensor::from_f64(dt, vec![], &[2.0]));
    let y = b.node(Op::Mul, &[p, two], vec![], u());
    b.output(y);
    out.push(("pad", finish(b)));
    // a transpose whose result leaves through a reshape (the merged heads of attention); with
    // heads of 32, runs of 16 bytes move as one vector
    for (name, d) in [("transpose_reshape", 33), ("transpose_reshape_runs", 32)] {
        let mut b = GraphBuilder::new(name, 17);
        let x = b.input("x", dt, &[6, 20, d]);
        let t = b.node(Op::Transpose, &[x], vec![("perm", Attr::Ints(vec![1, 0, 2]))], u());
        let shape = b.weight("shape", Tensor::from_i64(vec![2], vec![20, 6 * d as i64]));
        let y = b.node(Op::Reshape, &[t, shape], vec![], u());
        b.output(y);
        out.push((name, finish(b)));
    }
    out
}

/// Pools over [2, 16, 29, 29], each followed by ReLU.
pub fn pools(dt: DType) -> Vec<(&'static str, Graph)> {
    pools_over(dt, &[2, 16, 29, 29])
}

/// The pools of `pools` over an input of `shape` (N, C, H, W).
pub fn pools_over(dt: DType, shape: &[usize]) -> Vec<(&'static str, Graph)> {
    let u = || ValueType::unranked(dt);
    let mut out = vec![];
    for (name, op, attrs) in [
        (
            "maxpool",
            Op::MaxPool,
            vec![
                ("kernel_shape", Attr::Ints(vec![3, 3])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![1, 1, 1, 1])),
                ("ceil_mode", Attr::Int(1)),
            ],
        ),
        (
            "avgpool",
            Op::AveragePool,
            vec![
                ("kernel_shape", Attr::Ints(vec![2, 2])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![0, 0, 1, 1])),
            ],
        ),
        ("globalavgpool", Op::GlobalAveragePool, vec![]),
    ] {
        let mut b = GraphBuilder::new(name, 17);
        let x = b.input("x", dt, shape);
        let p = b.node(op, &[x], attrs, u());
        let y = b.node(Op::Relu, &[p], vec![], u());
        b.output(y);
        out.push((name, finish(b)));
    }
    out
}

/// Depthwise convolutions of x [n, c, h, w] (one filter per channel, the pooling template's
/// weighted form), each with its bias and a SiLU epilogue cuDNN would not fuse: a 3×3 window at
/// stride 2 with pads 1, and a dilated 7×7 window with uneven pads, in NCHW (`Conv`) and
/// channels-last (`ConvNhwc` over x as [n, h, w, c], as the layout rules leave it).
pub fn depthwise(dt: DType, shape: &[usize]) -> Vec<(&'static str, Graph)> {
    let u = || ValueType::unranked(dt);
    let c = shape[1];
    let mut out = vec![];
    for (name, k, attrs, nhwc) in [
        ("depthwise_3x3_s2", 3, vec![("strides", Attr::Ints(vec![2, 2])), ("pads", Attr::Ints(vec![1; 4]))], false),
        ("depthwise_3x3_s2_nhwc", 3, vec![("strides", Attr::Ints(vec![2, 2])), ("pads", Attr::Ints(vec![1; 4]))], true),
        (
            "depthwise_7x7_d2",
            7,
            vec![("dilations", Attr::Ints(vec![2, 1])), ("pads", Attr::Ints(vec![3, 2, 5, 4]))],
            false,
        ),
        (
            "depthwise_7x7_d2_nhwc",
            7,
            vec![("dilations", Attr::Ints(vec![2, 1])), ("pads", Attr::Ints(vec![3, 2, 5, 4]))],
            true,
        ),
    ] {
        let mut b = GraphBuilder::new(name, 17);
        // channels-last samples take x as [n, h, w, c]
        let x = if nhwc { b.input("x", dt, &[shape[0], shape[2], shape[3], c]) } else { b.input("x", dt, shape) };
        let w = b.weight("w", random(dt, &[c, 1, k, k], 11));
        let bias = b.weight("b", random(dt, &[c], 12));
        let mut attrs = attrs;
        attrs.push(("group", Attr::Int(c as i64)));
        attrs.push(("kernel_shape", Attr::Ints(vec![k as i64, k as i64])));
        let y = if nhwc {
            b.node(Op::ConvNhwc, &[x, w, bias], attrs, u())
        } else {
            b.node(Op::Conv, &[x, w, bias], attrs, u())
        };
        let sg = b.node(Op::Sigmoid, &[y], vec![], u());
        let z = b.node(Op::Mul, &[y, sg], vec![], u());
        b.output(z);
        out.push((name, finish(b)));
    }
    out
}

/// Column reductions (sum over axis 0 then ×0.5; max over axes 0 and 2) and an exclusive
/// reverse CumSum.
pub fn columns_and_scans(dt: DType) -> Vec<(&'static str, Graph)> {
    let u = || ValueType::unranked(dt);
    let mut b = GraphBuilder::new("colmax", 18);
    let x = b.input("x", dt, &[5, 7, 9]);
    let axes = b.weight("axes", Tensor::from_i64(vec![2], vec![0, 2]));
    let y = b.node(Op::ReduceMax, &[x, axes], vec![], u());
    b.output(y);
    vec![
        ("colsum", column_sum(dt, 64, 48)),
        // fewer reduced elements than slices, more outputs than one tile
        ("colsum_short", column_sum(dt, 3, 100)),
        ("colmax", finish(b)),
        ("cumsum", cumsum(dt, &[3, 50, 4])),
        // stretches of 32 with a short last one; the innermost axis
        ("cumsum_forward", scan_along(dt, &[2, 1000, 3], 1, false)),
        ("cumsum_inner", scan_along(dt, &[40, 77], -1, true)),
    ]
}

/// ReduceSum over axis 0 of [rows, cols], then ×0.5.
pub fn column_sum(dt: DType, rows: usize, cols: usize) -> Graph {
    let u = || ValueType::unranked(dt);
    let mut b = GraphBuilder::new("colsum", 18);
    let x = b.input("x", dt, &[rows, cols]);
    let axes = b.weight("axes", Tensor::from_i64(vec![1], vec![0]));
    let s = b.node(Op::ReduceSum, &[x, axes], vec![("keepdims", Attr::Int(0))], u());
    let half = b.weight("half", Tensor::from_f64(dt, vec![], &[0.5]));
    let y = b.node(Op::Mul, &[s, half], vec![], u());
    b.output(y);
    finish(b)
}

/// An exclusive, reverse CumSum along axis 1 of `shape`.
pub fn cumsum(dt: DType, shape: &[usize]) -> Graph {
    scan_along(dt, shape, 1, true)
}

/// An inclusive forward CumSum along `axis`, or an exclusive reverse one.
pub fn scan_along(dt: DType, shape: &[usize], axis: i64, exclusive_reverse: bool) -> Graph {
    let u = || ValueType::unranked(dt);
    let mut b = GraphBuilder::new("cumsum", 17);
    let x = b.input("x", dt, shape);
    let ax = b.weight("ax", Tensor::from_i64(vec![], vec![axis]));
    let flag = Attr::Int(exclusive_reverse as i64);
    let y = b.node(Op::CumSum, &[x, ax], vec![("exclusive", flag.clone()), ("reverse", flag)], u());
    b.output(y);
    finish(b)
}

/// y = Transpose(x, perm) of an input of `shape`.
pub fn transpose(dt: DType, shape: &[usize], perm: &[i64]) -> Graph {
    let mut b = GraphBuilder::new("transpose", 17);
    let x = b.input("x", dt, shape);
    let y = b.node(Op::Transpose, &[x], vec![("perm", Attr::Ints(perm.to_vec()))], ValueType::unranked(dt));
    b.output(y);
    finish(b)
}

/// Contractions with generated epilogues: a batched MatMul + bias + erf-GELU over ragged
/// tiles (rows of 130 and of 136 elements: the SIMT and tensor-core paths of half types); a fused QKV projection split into head-major Q, K (transposed) and V; a Gemm with
/// both operands transposed, alpha, beta and C, then tanh (and one of 8-element rows); a MatMul whose batch dims broadcast.
pub fn contractions(dt: DType) -> Vec<(&'static str, Graph)> {
    let u = || ValueType::unranked(dt);
    let mut out = vec![];
    out.push(("gemm_gelu", gemm_bias_gelu(dt, &[2, 70], 96, 130)));
    // 16-byte rows: the tensor-core path for f16/bf16, ragged in M and N
    out.push(("gemm_gelu_rows8", gemm_bias_gelu(dt, &[2, 70], 96, 136)));
    let mut b = GraphBuilder::new("gemm_qkv", 20);
    let x = b.input("x", dt, &[2, 20, 48]);
    let w = b.weight("w", random(dt, &[48, 144], 43));
    let bias = b.weight("bias", random(dt, &[144], 44));
    let m = b.node(Op::MatMul, &[x, w], vec![], u());
    let a = b.node(Op::Add, &[m, bias], vec![], u());
    let split = b.weight("split", Tensor::from_i64(vec![3], vec![48, 48, 48]));
    let parts = b.node_multi(Op::Split, &[Some(a), Some(split)], vec![("axis", Attr::Int(2))], vec![u(), u(), u()]);
    let heads = b.weight("heads", Tensor::from_i64(vec![4], vec![2, 20, 4, 12]));
    for (k, perm) in [vec![0, 2, 1, 3], vec![0, 2, 3, 1], vec![0, 2, 1, 3]].into_iter().enumerate() {
        let r = b.node(Op::Reshape, &[parts[k], heads], vec![], u());
        let t = b.node(Op::Transpose, &[r], vec![("perm", Attr::Ints(perm))], u());
        b.output(t);
    }
    out.push(("gemm_qkv", finish(b)));
    let mut b = GraphBuilder::new("gemm_trans", 20);
    let x = b.input("x", dt, &[50, 37]);
    let w = b.weight("w", random(dt, &[45, 50], 45));
    let c = b.weight("c", random(dt, &[45], 46));
    let attrs = vec![
        ("transA", Attr::Int(1)),
        ("transB", Attr::Int(1)),
        ("alpha", Attr::Float(0.5)),
        ("beta", Attr::Float(2.0)),
    ];
    let m = b.node(Op::Gemm, &[x, w, c], attrs, u());
    let y = b.node(Op::Tanh, &[m], vec![], u());
    b.output(y);
    out.push(("gemm_trans", finish(b)));
    let mut b = GraphBuilder::new("gemm_trans_rows8", 20);
    let x = b.input("x", dt, &[72, 40]);
    let w = b.weight("w", random(dt, &[56, 72], 47));
    let m = b.node(Op::Gemm, &[x, w], vec![("transA", Attr::Int(1)), ("transB", Attr::Int(1))], u());
    b.output(m);
    out.push(("gemm_trans_rows8", finish(b)));
    let mut b = GraphBuilder::new("gemm_broadcast", 20);
    let x = b.input("x", dt, &[3, 1, 17, 40]);
    let w = b.input("w", dt, &[2, 40, 33]);
    let m = b.node(Op::MatMul, &[x, w], vec![], u());
    let y = b.node(Op::Relu, &[m], vec![], u());
    b.output(y);
    out.push(("gemm_broadcast", finish(b)));
    out
}

/// gelu(x·w + bias) (erf GELU, the BERT FFN) for x: [rows.., k], w: [k, n].
pub fn gemm_bias_gelu(dt: DType, rows: &[usize], k: usize, n: usize) -> Graph {
    let u = || ValueType::unranked(dt);
    let mut b = GraphBuilder::new("gemm_gelu", 20);
    let xs: Vec<usize> = rows.iter().copied().chain([k]).collect();
    let x = b.input("x", dt, &xs);
    let w = b.weight("w", random(dt, &[k, n], 41));
    let bias = b.weight("bias", random(dt, &[n], 42));
    let m = b.node(Op::MatMul, &[x, w], vec![], u());
    let a = b.node(Op::Add, &[m, bias], vec![], u());
    let y = b.node(Op::Gelu, &[a], vec![], u());
    b.output(y);
    finish(b)
}

/// Attention(q, k, v) over [batch, heads, len, head] without a mask.
pub fn attention(dt: DType, shape: &[usize]) -> Graph {
    let mut b = GraphBuilder::new("attention", 23);
    let q = b.input("q", dt, shape);
    let k = b.input("k", dt, shape);
    let v = b.input("v", dt, shape);
    let y = b.node(Op::Attention, &[q, k, v], vec![], ValueType::unranked(dt));
    b.output(y);
    finish(b)
}

/// Attention(q, k, v, mask?) [B, H, S, D]: an additive mask with merged heads after it
/// (Transpose + Reshape), causal grouped-query heads, a boolean mask with a fully masked row
/// (its output is 0), and a head of 40 (no tensor-core path).
pub fn attentions(dt: DType) -> Vec<(&'static str, Graph)> {
    let u = || ValueType::unranked(dt);
    let mut out = vec![];
    let mut b = GraphBuilder::new("attention_heads", 23);
    let q = b.input("q", dt, &[2, 4, 70, 64]);
    let k = b.input("k", dt, &[2, 4, 90, 64]);
    let v = b.input("v", dt, &[2, 4, 90, 64]);
    let mask = b.weight("mask", random(dt, &[1, 1, 70, 90], 51));
    let y = b.node(Op::Attention, &[q, k, v, mask], vec![], u());
    let t = b.node(Op::Transpose, &[y], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))], u());
    let shape = b.weight("shape", Tensor::from_i64(vec![3], vec![2, 70, 256]));
    let r = b.node(Op::Reshape, &[t, shape], vec![], u());
    b.output(r);
    out.push(("attention_heads", finish(b)));
    let mut b = GraphBuilder::new("attention_causal_gqa", 23);
    let q = b.input("q", dt, &[1, 8, 100, 32]);
    let k = b.input("k", dt, &[1, 2, 100, 32]);
    let v = b.input("v", dt, &[1, 2, 100, 32]);
    let y = b.node(Op::Attention, &[q, k, v], vec![("is_causal", Attr::Int(1))], u());
    b.output(y);
    out.push(("attention_causal_gqa", finish(b)));
    let mut b = GraphBuilder::new("attention_bool_mask", 23);
    let q = b.input("q", dt, &[1, 2, 33, 48]);
    let k = b.input("k", dt, &[1, 2, 33, 48]);
    let v = b.input("v", dt, &[1, 2, 33, 48]);
    let keep: Vec<f64> = (0..33 * 33).map(|e| ((e / 33 != 5) && (e * 7 % 5 != 0)) as u8 as f64).collect();
    let mask = b.weight("mask", Tensor::from_f64(DType::Bool, vec![33, 33], &keep));
    let y = b.node(Op::Attention, &[q, k, v, mask], vec![("scale", Attr::Float(0.3))], u());
    b.output(y);
    out.push(("attention_bool_mask", finish(b)));
    let mut b = GraphBuilder::new("attention_odd_head", 23);
    let q = b.input("q", dt, &[1, 3, 45, 40]);
    let k = b.input("k", dt, &[1, 3, 45, 40]);
    let v = b.input("v", dt, &[1, 3, 45, 40]);
    let y = b.node(Op::Attention, &[q, k, v], vec![], u());
    b.output(y);
    out.push(("attention_odd_head", finish(b)));
    out
}

/// Every sample, in f32, f16 and bf16 (tolerances: 1e-5 for f32, 1e-2 for the half types).
/// Mamba's selective scan (com.xforge SelectiveScan) with softplus Δ: u, delta, B, C (and z)
/// inputs of `dt`; A (negative), D and delta_bias f32 weights; `groups` of B/C rows (None:
/// (batch, state, len)); `full` adds D, z and delta_bias and asks for the last state.
pub fn selective_scan(
    dt: DType,
    (b, d, l, n): (usize, usize, usize, usize),
    groups: Option<usize>,
    full: bool,
) -> Graph {
    let u = || ValueType::unranked(dt);
    let mut g = GraphBuilder::new("selective_scan", 17);
    let x = g.input("u", dt, &[b, d, l]);
    let delta = g.input("delta", dt, &[b, d, l]);
    let a_vals: Vec<f64> = random(DType::F32, &[d, n], 61).to_f64().iter().map(|v| -v.abs() - 0.1).collect();
    let a = g.weight("A", Tensor::from_f64(DType::F32, vec![d, n], &a_vals));
    let proj = match groups {
        None => vec![b, n, l],
        Some(k) => vec![b, k, n, l],
    };
    let bb = g.input("B", dt, &proj);
    let cc = g.input("C", dt, &proj);
    let mut ins = vec![Some(x), Some(delta), Some(a), Some(bb), Some(cc)];
    if full {
        let dd = g.weight("D", random(DType::F32, &[d], 62));
        let z = g.input("z", dt, &[b, d, l]);
        let bias = g.weight("delta_bias", random(DType::F32, &[d], 63));
        ins.extend([Some(dd), Some(z), Some(bias)]);
    }
    let outs = if full { vec![u(), ValueType::unranked(DType::F32)] } else { vec![u()] };
    let ys = g.node_multi(Op::SelectiveScan, &ins, vec![("delta_softplus", Attr::Int(1))], outs);
    for y in ys {
        g.output(y);
    }
    finish(g)
}

/// NonMaxSuppression as the compiler lowers a large one: TopK orders each class's scores, and
/// `Bounded` walks them as one block (the kept rows padded to the bound, and their count).
/// Boxes [2, n, 4] and scores [2, classes, n]; `per_class` kept at most, `score_th` if any;
/// with `masked`, the overlap mask of the order is computed first (NmsOverlapMask, input 7).
pub fn nms(dt: DType, n: usize, classes: usize, per_class: i64, score_th: Option<f64>, masked: bool) -> Graph {
    let mut b = GraphBuilder::new("nms", 17);
    let boxes = b.input("boxes", dt, &[2, n, 4]);
    let scores = b.input("scores", dt, &[2, classes, n]);
    let k = b.weight("k", Tensor::from_i64(vec![1], vec![n as i64]));
    let order = b.node_multi(
        Op::TopK,
        &[Some(scores), Some(k)],
        vec![],
        vec![ValueType::unranked(dt), ValueType::unranked(DType::I64)],
    );
    let max_out = b.weight("max_out", Tensor::from_i64(vec![1], vec![per_class]));
    let iou = b.weight("iou", Tensor::from_f64(DType::F32, vec![1], &[0.3]));
    let th = score_th.map(|t| b.weight("score_th", Tensor::from_f64(DType::F32, vec![1], &[t])));
    let bound = 2 * classes * (per_class as usize).min(n);
    let mask = masked.then(|| {
        let words = n.div_ceil(32);
        b.node(
            Op::NmsOverlapMask,
            &[boxes, order[1], iou],
            vec![],
            ValueType::known(DType::I32, &[2, classes, n, words]),
        )
    });
    let attrs = vec![
        ("bounded_op", Attr::Str("NonMaxSuppression".into())),
        ("bounded_axis", Attr::Int(0)),
        ("bound", Attr::Int(bound as i64)),
    ];
    let out = b.node_multi(
        Op::Bounded,
        &[Some(boxes), Some(scores), Some(max_out), Some(iou), th, None, Some(order[1]), mask],
        attrs,
        vec![ValueType::known(DType::I64, &[bound, 3]), ValueType::known(DType::I64, &[])],
    );
    b.output(out[0]);
    b.output(out[1]);
    finish(b)
}

/// TopKBounded over x [lines, n] as the compiler pads a data-dependent TopK: K and the valid
/// length given, the result padded to `bound`; with `coarse`, x is floor(8x) first (many ties).
pub fn topk_bounded(
    dt: DType,
    lines: usize,
    n: usize,
    bound: usize,
    k: i64,
    valid: i64,
    largest: bool,
    coarse: bool,
) -> Graph {
    let mut b = GraphBuilder::new("topk_bounded", 17);
    let mut x = b.input("x", dt, &[lines, n]);
    if coarse {
        let eight = b.weight("eight", Tensor::from_f64(dt, vec![], &[8.0]));
        let m = b.node(Op::Mul, &[x, eight], vec![], ValueType::unranked(dt));
        x = b.node(Op::Floor, &[m], vec![], ValueType::unranked(dt));
    }
    let kv = b.weight("k", Tensor::from_i64(vec![1], vec![k]));
    let len = b.weight("valid", Tensor::from_i64(vec![], vec![valid]));
    let attrs =
        vec![("axis", Attr::Int(1)), ("bound", Attr::Int(bound as i64)), ("largest", Attr::Int(largest as i64))];
    let out = b.node_multi(
        Op::TopKBounded,
        &[Some(x), Some(kv), Some(len)],
        attrs,
        vec![ValueType::known(dt, &[lines, bound]), ValueType::known(DType::I64, &[lines, bound])],
    );
    b.output(out[0]);
    b.output(out[1]);
    finish(b)
}

/// NonZero of relu(x − 0.5) over x [n] as the compiler bounds a large one (passes/bounded.rs):
/// the tiles' first columns computed first, then one block a tile.
pub fn nonzero_tiled(dt: DType, n: usize) -> Graph {
    let mut b = GraphBuilder::new("nonzero_tiled", 17);
    let x = b.input("x", dt, &[n]);
    let th = b.weight("th", Tensor::from_f64(dt, vec![], &[0.5]));
    let d = b.node(Op::Sub, &[x, th], vec![], ValueType::unranked(dt));
    let over = b.node(Op::Relu, &[d], vec![], ValueType::unranked(dt));
    let nz = b.node(Op::NonZero, &[over], vec![], ValueType::unranked(DType::I64));
    b.output(nz);
    let mut g = finish(b);
    xforge_passes::bounded::bound_data_dependent(&mut g);
    // the padded result and its length are the outputs (the Prefix runs on the host)
    let bounded = g.nodes.iter().find(|n| n.op == Op::Bounded).expect("NonZero is bounded");
    g.outputs = bounded.outputs.iter().flatten().copied().collect();
    xforge_passes::dce::dce(&mut g);
    infer_graph(&mut g).expect("sample graphs are well typed");
    g
}

/// ReduceSum of an integer x [rows, cols] over its rows (keepdims 0): the generic kernel, one
/// block a row (templates take floats only).
pub fn int_row_sums(dt: DType, rows: usize, cols: usize) -> Graph {
    let mut b = GraphBuilder::new("int_row_sums", 17);
    let x = b.input("x", dt, &[rows, cols]);
    let axes = b.weight("axes", Tensor::from_i64(vec![1], vec![1]));
    let y = b.node(Op::ReduceSum, &[x, axes], vec![("keepdims", Attr::Int(0))], ValueType::unranked(dt));
    b.output(y);
    finish(b)
}

/// ReduceBounded (`reduce` = ReduceMax or ReduceMin) over `axes` of x with the first `valid`
/// entries along axis `padded` taking part, keepdims 0.
pub fn reduce_bounded(dt: DType, shape: &[usize], reduce: &str, axes: &[i64], padded: i64, valid: i64) -> Graph {
    let mut b = GraphBuilder::new("reduce_bounded", 17);
    let x = b.input("x", dt, shape);
    let len = b.weight("valid", Tensor::from_i64(vec![], vec![valid]));
    let attrs = vec![
        ("reduce", Attr::Str(reduce.into())),
        ("axes", Attr::Ints(axes.to_vec())),
        ("axis", Attr::Int(padded)),
        ("keepdims", Attr::Int(0)),
    ];
    let y = b.node(Op::ReduceBounded, &[x, len], attrs, ValueType::unranked(dt));
    b.output(y);
    finish(b)
}

/// NonZero of relu(x − 0.5) over x [rows, cols] as the compiler bounds it (coordinates padded to
/// every element, and the count); with `valid`, only the first `valid` columns count (padded data).
pub fn nonzero(dt: DType, rows: usize, cols: usize, valid: Option<i64>) -> Graph {
    let mut b = GraphBuilder::new("nonzero", 17);
    let x = b.input("x", dt, &[rows, cols]);
    let th = b.weight("th", Tensor::from_f64(dt, vec![], &[0.5]));
    let d = b.node(Op::Sub, &[x, th], vec![], ValueType::unranked(dt));
    let over = b.node(Op::Relu, &[d], vec![], ValueType::unranked(dt));
    let len = valid.map(|v| b.weight("valid", Tensor::from_i64(vec![], vec![v])));
    let bound = rows * cols;
    let attrs = vec![
        ("bounded_op", Attr::Str("NonZero".into())),
        ("bounded_axis", Attr::Int(1)),
        ("bound", Attr::Int(bound as i64)),
        ("valid_axis", Attr::Int(1)),
    ];
    let out = b.node_multi(
        Op::Bounded,
        &[Some(over), len],
        attrs,
        vec![ValueType::known(DType::I64, &[2, bound]), ValueType::known(DType::I64, &[])],
    );
    b.output(out[0]);
    b.output(out[1]);
    finish(b)
}

/// NonMaxSuppression cases (several kernels each): many chunks of 32 candidates with every
/// survivor kept; a per-class limit and a score threshold; one class of 3000 boxes; each walked
/// by overlap tests against the kept boxes and from the overlap mask.
pub fn nms_cases(dt: DType) -> Vec<(&'static str, Graph)> {
    vec![
        ("nms_block", nms(dt, 700, 3, 700, None, false)),
        ("nms_block_limited", nms(dt, 500, 2, 9, Some(0.5), false)),
        ("nms_block_wide", nms(dt, 3000, 1, 3000, Some(-1.0), false)),
        ("nms_masked", nms(dt, 700, 3, 700, None, true)),
        ("nms_masked_limited", nms(dt, 500, 2, 9, Some(0.5), true)),
        ("nms_masked_wide", nms(dt, 3000, 1, 3000, Some(-1.0), true)),
        // TopKBounded by selection: K below the bound and the valid entries, K = bound, ties, smallest
        ("topk_select", topk_bounded(dt, 3, 5000, 1000, 700, 4100, true, false)),
        ("topk_select_short", topk_bounded(dt, 2, 3000, 300, 300, 2500, true, false)),
        ("topk_select_ties", topk_bounded(dt, 2, 9000, 4000, 3900, 9000, false, true)),
        // ReduceBounded's max and min as one block: all of a box table, rows of a matrix
        ("reduce_block_max", reduce_bounded(dt, &[27000, 4], "ReduceMax", &[0, 1], 0, 26000)),
        ("reduce_block_min_rows", reduce_bounded(dt, &[3, 5000], "ReduceMin", &[1], 1, 4321)),
        // integer row sums one block a row (the NonZero tiles' counts)
        ("int_row_sums", int_row_sums(DType::I32, 22, 4096)),
        // NonZero one block a tile: 22 tiles, the last one short
        ("nonzero_tiled", nonzero_tiled(dt, 90000)),
        // NonZero as one block: runs of 1 and of several elements a thread, a valid length
        ("nonzero_block", nonzero(dt, 3, 700, None)),
        ("nonzero_block_runs", nonzero(dt, 7, 3001, None)),
        ("nonzero_block_valid", nonzero(dt, 5, 900, Some(611))),
    ]
}

pub fn all() -> Vec<Sample> {
    let mut out = vec![];
    for (dt, tol) in [(DType::F32, 1e-5), (DType::F16, 1e-2), (DType::BF16, 1e-2)] {
        let mut push = |name: String, graph: Graph| out.push(Sample { name: format!("{name}_{dt}"), graph, tol });
        push("elementwise_mix".into(), activation_mix(dt, &[8, 33, 96]));
        push("castlike".into(), castlike(dt));
        for kind in ["softmax", "layernorm", "rmsnorm", "mean"] {
            push(format!("row_{kind}"), reduction(kind, dt, 37, 1000));
            // rows of whole vectors, a few per thread: the register-resident path
            push(format!("row_{kind}_resident"), reduction(kind, dt, 24, 4096));
            // short rows, several per block (a segment of a warp each): resident vectors, a
            // ragged row of scalars, and rows too few to pack (a block each)
            push(format!("row_{kind}_short"), reduction(kind, dt, 256, 96));
            push(format!("row_{kind}_short_ragged"), reduction(kind, dt, 64, 37));
            push(format!("row_{kind}_short_unpacked"), reduction(kind, dt, 6, 40));
        }
        push("row_softmax_masked".into(), masked_softmax(dt, 24, 4096));
        // tiled transposes: ragged tiles, NCHW → NHWC, a rotation of three axes
        push("tiled_transpose_2d".into(), transpose(dt, &[70, 45], &[1, 0]));
        push("tiled_transpose_nhwc".into(), transpose(dt, &[2, 3, 33, 17], &[0, 2, 3, 1]));
        push("tiled_transpose_rotate".into(), transpose(dt, &[4, 5, 40], &[2, 0, 1]));
        // even extents: half types move in pairs through 64×64 tiles, ragged at both edges
        push("tiled_transpose_packed".into(), transpose(dt, &[2, 66, 130], &[0, 2, 1]));
        for (name, g) in movement(dt)
            .into_iter()
            .chain(pools(dt))
            .chain(depthwise(dt, &[2, 8, 15, 14]))
            .chain(columns_and_scans(dt))
            .chain(contractions(dt))
            .chain(attentions(dt))
        {
            push(name.to_string(), g);
        }
        // selective scans: every option with 2 groups (one pass), the bare form over a longer
        // sequence (8 chunks of 40 steps, the last one short), 16 chunks of 64 steps, states of
        // 64 (2 lanes a line) and 256 (8 lanes a line) in 4 chunks: all with pass 1's Δ and u
        // kept for pass 2; and one line of 9001 steps, whose 256 chunks of 36 steps overflow the
        // stash (pass 2 reads u and delta again)
        push("selective_scan_full".into(), selective_scan(dt, (2, 8, 37, 16), Some(2), true));
        push("selective_scan_bare".into(), selective_scan(dt, (1, 6, 300, 4), None, false));
        push("selective_scan_chunked".into(), selective_scan(dt, (1, 4, 1000, 16), None, true));
        push("selective_scan_state64".into(), selective_scan(dt, (1, 3, 200, 64), Some(1), true));
        push("selective_scan_state256".into(), selective_scan(dt, (1, 2, 130, 256), None, true));
        push("selective_scan_long".into(), selective_scan(dt, (1, 1, 9001, 16), Some(1), true));
        // even widths: half types load window rows as aligned pairs
        for (name, g) in pools_over(dt, &[2, 4, 30, 30]) {
            push(format!("{name}_even"), g);
        }
    }
    out.push(Sample {
        name: "row_layernorm_wide_f32".into(),
        graph: reduction("layernorm", DType::F32, 5, 12288),
        tol: 1e-5,
    });
    out
}

/// A random graph for differential checks: a chain over `x: [rows, cols]` drawing from
/// elementwise math, broadcast operands, a row reduction and a transpose, ending in one output.
pub fn random_graph(seed: u64, dt: DType) -> Graph {
    let mut s = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    let mut next = |n: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) % n
    };
    let (rows, cols) = (1 + next(40) as usize, 8 * (1 + next(40) as usize));
    let u = || ValueType::unranked(dt);
    let mut b = GraphBuilder::new(&format!("random{seed}"), 18);
    let x = b.input("x", dt, &[rows, cols]);
    let mut cur = x;
    for step in 0..(2 + next(6)) {
        cur = match next(9) {
            0 => b.node(Op::Tanh, &[cur], vec![], u()),
            1 => b.node(Op::Sigmoid, &[cur], vec![], u()),
            2 => b.node(Op::Gelu, &[cur], vec![], u()),
            3 => {
                let w = b.weight(&format!("w{step}"), random(dt, &[cols], seed + step));
                b.node(Op::Mul, &[cur, w], vec![], u())
            }
            4 => {
                let w = b.weight(&format!("c{step}"), random(dt, &[rows, 1], seed + step));
                b.node(Op::Add, &[cur, w], vec![], u())
            }
            5 => b.node(Op::Softmax, &[cur], vec![("axis", Attr::Int(-1))], u()),
            6 => {
                let w = b.weight(&format!("g{step}"), random(dt, &[cols], seed + step));
                b.node(Op::RMSNormalization, &[cur, w], vec![], u())
            }
            7 => b.node(Op::Relu, &[cur], vec![], u()),
            _ => {
                let h = b.weight(&format!("h{step}"), Tensor::from_f64(dt, vec![], &[0.5]));
                b.node(Op::Sub, &[cur, h], vec![], u())
            }
        };
    }
    b.output(cur);
    finish(b)
}
