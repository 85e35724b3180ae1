//! qdq: QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear as float ops. Before: one
//! quantization node; after: only Cast, Sub, Mul, Div, Round, Add, Clip (and for the dynamic
//! one ReduceMin/ReduceMax, Min, Max, Equal, Where) plus Identity, with per-axis and blocked
//! parameters folded into broadcastable weights; the interpreter gives the same values.
use std::collections::HashMap;
use xforge_ir::{interp, Attr, DType, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::qdq::decompose;

fn values(n: usize, seed: u64, span: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s % 20001) as f64 / 10000.0 - 1.0) * span
        })
        .collect()
}

/// `op` on x with the given parameters, decomposed, both run on the same x; the parameters as
/// weights and, a second time, as graph inputs (known only at run time).
fn check(op: Op, x: Tensor, params: Vec<Tensor>, attrs: Vec<(&str, Attr)>, outs: usize) {
    check_as(op, x.clone(), params.clone(), attrs.clone(), outs, false);
    check_as(op, x, params, attrs, outs, true);
}

fn check_as(op: Op, x: Tensor, params: Vec<Tensor>, attrs: Vec<(&str, Attr)>, outs: usize, inputs: bool) {
    let mut b = GraphBuilder::new("q", 21);
    let xi = b.input("x", x.dtype(), x.shape());
    let mut ins = vec![Some(xi)];
    let mut feed = HashMap::from([("x".to_string(), x)]);
    for (k, p) in params.into_iter().enumerate() {
        let name = format!("p{k}");
        ins.push(Some(if inputs {
            let id = b.input(&name, p.dtype(), p.shape());
            feed.insert(name, p);
            id
        } else {
            b.weight(&name, p)
        }));
    }
    let ys = b.node_multi(op, &ins, attrs, (0..outs).map(|_| ValueType::unranked(DType::F32)).collect());
    for &y in &ys {
        b.output(y);
    }
    let mut g = b.finish();
    g.undeclared.extend(ys.iter().copied());
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let mut h = g.clone();
    assert_eq!(decompose(&mut h), 1, "{op}");
    xforge_ir::infer::infer_graph(&mut h).unwrap();
    xforge_ir::verify::verify(&h).unwrap();
    let allowed = [
        Op::Cast,
        Op::Sub,
        Op::Mul,
        Op::Div,
        Op::Round,
        Op::Add,
        Op::Clip,
        Op::Identity,
        Op::ReduceMin,
        Op::ReduceMax,
        Op::Min,
        Op::Max,
        Op::Equal,
        Op::Where,
        Op::Reshape,
        Op::Expand,
        Op::Slice,
    ];
    assert!(
        h.nodes.iter().all(|n| allowed.contains(&n.op)),
        "{op}: {:?}",
        h.nodes.iter().map(|n| n.op).collect::<Vec<_>>()
    );
    for (k, &o) in g.outputs.iter().enumerate() {
        assert_eq!(g.ty(o), h.ty(h.outputs[k]), "{op}: output {k}'s type");
    }
    let (want, got) = (interp::run(&g, &feed).unwrap(), interp::run(&h, &feed).unwrap());
    for (a, b) in got.iter().zip(&want) {
        assert_eq!(a.dtype(), b.dtype(), "{op}");
        assert_eq!(a.to_f64(), b.to_f64(), "{op}");
    }
}

#[test]
fn quantize_and_dequantize_become_float_ops_with_the_same_values() {
    let x = Tensor::from_f64(DType::F32, vec![2, 3, 4], &values(24, 1, 40.0));
    let u8s = |v: &[f64]| Tensor::from_f64(DType::U8, vec![v.len()], v);
    let f32s = |shape: Vec<usize>, v: Vec<f32>| Tensor::from_f32(shape, v);
    // per tensor, u8 with a zero point; and halves that round to even (x / 0.5 = k + 0.5)
    check(
        Op::QuantizeLinear,
        x.clone(),
        vec![f32s(vec![], vec![0.3]), Tensor::from_f64(DType::U8, vec![], &[100.0])],
        vec![],
        1,
    );
    let halves = Tensor::from_f32(vec![6], vec![0.25, 0.75, -0.25, 1.25, 63.75, -64.25]);
    check(
        Op::QuantizeLinear,
        halves,
        vec![f32s(vec![], vec![0.5]), Tensor::from_f64(DType::I8, vec![], &[0.0])],
        vec![],
        1,
    );
    // per axis 1 (3 channels), i8 by output_dtype without a zero point
    check(
        Op::QuantizeLinear,
        x.clone(),
        vec![f32s(vec![3], vec![0.1, 0.5, 2.0])],
        vec![("axis", Attr::Int(1)), ("output_dtype", Attr::Int(3))],
        1,
    );
    // blocked along the last axis in blocks of 3 (the last block short)
    let blocked = vec![("axis", Attr::Int(-1)), ("block_size", Attr::Int(3))];
    check(
        Op::QuantizeLinear,
        x.clone(),
        vec![
            f32s(vec![2, 3, 2], (1..=12).map(|i| i as f32 * 0.05).collect()),
            Tensor::from_f64(DType::U8, vec![2, 3, 2], &[128.0; 12]),
        ],
        blocked.clone(),
        1,
    );
    let q = Tensor::from_f64(
        DType::U8,
        vec![2, 3, 4],
        &values(24, 2, 1.0).iter().map(|v| ((v + 1.0) * 127.0).round()).collect::<Vec<_>>(),
    );
    check(Op::DequantizeLinear, q.clone(), vec![f32s(vec![], vec![0.02]), u8s(&[128.0])], vec![], 1);
    check(
        Op::DequantizeLinear,
        q.clone(),
        vec![f32s(vec![3], vec![0.1, 0.5, 2.0]), u8s(&[1.0, 2.0, 3.0])],
        vec![("axis", Attr::Int(1))],
        1,
    );
    check(Op::DequantizeLinear, q, vec![f32s(vec![2, 3, 2], (1..=12).map(|i| i as f32 * 0.05).collect())], blocked, 1);
    let s16 = Tensor::from_f64(DType::I16, vec![4], &[-30000.0, -1.0, 0.0, 32767.0]);
    check(Op::DequantizeLinear, s16, vec![Tensor::from_f64(DType::F16, vec![], &[0.001])], vec![], 1);
}

#[test]
fn dynamic_quantization_becomes_float_ops_with_the_same_values() {
    for (seed, shift) in [(3, 0.0), (4, 5.0), (5, -5.0)] {
        let v: Vec<f64> = values(30, seed, 3.0).iter().map(|x| x + shift).collect();
        check(Op::DynamicQuantizeLinear, Tensor::from_f64(DType::F32, vec![5, 6], &v), vec![], vec![], 3);
    }
    check(Op::DynamicQuantizeLinear, Tensor::from_f32(vec![4], vec![0.0; 4]), vec![], vec![], 3);
}

#[test]
fn an_fp8_pair_becomes_float_rounding_and_an_fp8_output_stays() {
    // Q (E5M2, per-axis scales) read only by a DQ: both rewritten, the FP8 value carried as f32;
    // the interpreter gives the same values before and after. The same Q as a graph output stays
    for (as_output, rewritten) in [(false, 2), (true, 0)] {
        let mut b = GraphBuilder::new("f8", 21);
        let x = b.input("x", DType::F32, &[3, 64]);
        let s = b.weight("s", Tensor::from_f64(DType::F32, vec![3], &[0.5, 3.0, 1e-3]));
        let z = b.weight("z", Tensor::from_f64(DType::F8E5M2, vec![3], &[0.0; 3]));
        let ax = vec![("axis", Attr::Int(0))];
        let q = b.node(Op::QuantizeLinear, &[x, s, z], ax.clone(), ValueType::known(DType::F8E5M2, &[3, 64]));
        let y = b.node(Op::DequantizeLinear, &[q, s, z], ax, ValueType::known(DType::F32, &[3, 64]));
        b.output(y);
        if as_output {
            b.output(q);
        }
        let g = b.finish();
        let mut h = g.clone();
        assert_eq!(decompose(&mut h), rewritten);
        if rewritten == 0 {
            continue;
        }
        xforge_ir::infer::infer_graph(&mut h).unwrap();
        xforge_ir::verify::verify(&h).unwrap();
        let narrow = |v: &xforge_ir::ValueId| h.ty(*v).dtype.is_narrow();
        let ios = h.nodes.iter().flat_map(|n| n.inputs.iter().chain(&n.outputs).flatten());
        assert!(!{ ios }.any(narrow), "no node reads or writes an FP8 value (the zero point is left to dce)");
        let feed = HashMap::from([("x".to_string(), Tensor::from_f64(DType::F32, vec![3, 64], &values(192, 7, 2e5)))]);
        let (want, got) = (interp::run(&g, &feed).unwrap(), interp::run(&h, &feed).unwrap());
        assert_eq!(got[0].to_f64(), want[0].to_f64());
    }
}

/// Integers spread over `dt`'s whole range (seeded).
fn ints(dt: DType, shape: &[usize], seed: u64) -> Tensor {
    let (lo, hi) = dt.quantized_range().unwrap_or((-1000.0, 1000.0));
    let n = shape.iter().product();
    let v: Vec<f64> = values(n, seed, 1.0).iter().map(|u| ((u + 1.0) / 2.0 * (hi - lo) + lo).round()).collect();
    Tensor::from_f64(dt, shape.to_vec(), &v)
}

#[test]
fn integer_contractions_become_f64_ops_with_the_same_integers() {
    use xforge_passes::integer_ops::lower_integer_contractions;
    let f32s = |v: &[f64]| Tensor::from_f64(DType::F32, vec![v.len()], v);
    let scalar = |dt: DType, v: f64| Tensor::from_f64(dt, vec![], &[v]);
    let conv_attrs = || vec![("pads", Attr::Ints(vec![1, 1, 1, 1])), ("strides", Attr::Ints(vec![1, 2]))];
    // (name, graph): per-row/per-column zero points, per-column and per-channel scales, a bias,
    // outputs that saturate
    let mut cases = vec![];
    {
        let mut b = GraphBuilder::new("mmi", 13);
        let a = b.input("a", DType::U8, &[3, 4]);
        let w = b.weight("w", ints(DType::U8, &[4, 5], 1));
        let za = b.weight("za", ints(DType::U8, &[3], 2));
        let zb = b.weight("zb", ints(DType::U8, &[5], 3));
        let y = b.node(Op::MatMulInteger, &[a, w, za, zb], vec![], ValueType::unranked(DType::I32));
        b.output(y);
        cases.push(("MatMulInteger", b.finish(), DType::U8));
    }
    {
        let mut b = GraphBuilder::new("qlmm", 13);
        let a = b.input("a", DType::I8, &[2, 3, 4]);
        let sa = b.weight("sa", scalar(DType::F32, 0.5));
        let za = b.weight("za", scalar(DType::I8, 3.0));
        let w = b.weight("w", ints(DType::I8, &[4, 6], 4));
        let sb = b.weight("sb", f32s(&[0.01, 0.02, 0.03, 0.04, 0.05, 0.06]));
        let zb = b.weight("zb", scalar(DType::I8, -2.0));
        let sy = b.weight("sy", scalar(DType::F32, 0.7));
        let zy = b.weight("zy", scalar(DType::I8, 5.0));
        let y = b.node(Op::QLinearMatMul, &[a, sa, za, w, sb, zb, sy, zy], vec![], ValueType::unranked(DType::I8));
        b.output(y);
        cases.push(("QLinearMatMul", b.finish(), DType::I8));
    }
    {
        let mut b = GraphBuilder::new("ci", 13);
        let x = b.input("x", DType::U8, &[1, 2, 5, 5]);
        let w = b.weight("w", ints(DType::U8, &[3, 2, 3, 3], 5));
        let zx = b.weight("zx", scalar(DType::U8, 100.0));
        let zw = b.weight("zw", ints(DType::U8, &[3], 6));
        let y = b.node(Op::ConvInteger, &[x, w, zx, zw], conv_attrs(), ValueType::unranked(DType::I32));
        b.output(y);
        cases.push(("ConvInteger", b.finish(), DType::U8));
    }
    {
        let mut b = GraphBuilder::new("qlc", 13);
        let x = b.input("x", DType::U8, &[1, 2, 5, 5]);
        let sx = b.weight("sx", scalar(DType::F32, 0.2));
        let zx = b.weight("zx", scalar(DType::U8, 128.0));
        let w = b.weight("w", ints(DType::I8, &[3, 2, 3, 3], 7));
        let sw = b.weight("sw", f32s(&[0.01, 0.002, 0.03]));
        let zw = b.weight("zw", Tensor::from_f64(DType::I8, vec![3], &[0.0, 0.0, 0.0]));
        let sy = b.weight("sy", scalar(DType::F32, 0.5));
        let zy = b.weight("zy", scalar(DType::U8, 120.0));
        let bias = b.weight("bias", Tensor::from_f64(DType::I32, vec![3], &[-500.0, 0.0, 9000.0]));
        let y = b.node(
            Op::QLinearConv,
            &[x, sx, zx, w, sw, zw, sy, zy, bias],
            conv_attrs(),
            ValueType::unranked(DType::U8),
        );
        b.output(y);
        cases.push(("QLinearConv", b.finish(), DType::U8));
    }
    for (name, mut g, input_dt) in cases {
        xforge_ir::infer::infer_graph(&mut g).unwrap();
        let mut t = g.clone();
        assert_eq!(lower_integer_contractions(&mut t), 1, "{name}");
        xforge_ir::infer::infer_graph(&mut t).unwrap();
        let ops: Vec<Op> = t.nodes.iter().map(|n| n.op).collect();
        assert!(
            !ops.iter().any(|o| matches!(o, Op::MatMulInteger | Op::ConvInteger | Op::QLinearMatMul | Op::QLinearConv)),
            "{name}: {ops:?}"
        );
        assert!(ops.contains(&Op::MatMul) || ops.contains(&Op::Conv), "{name}: {ops:?}");
        let x = g.name_of(g.inputs[0]).to_string();
        let shape = g.ty(g.inputs[0]).static_shape().unwrap();
        let mut saturated = 0;
        for seed in 10..13 {
            let feed = HashMap::from([(x.clone(), ints(input_dt, &shape, seed))]);
            let want = interp::run(&g, &feed).unwrap();
            let got = interp::run(&t, &feed).unwrap();
            assert_eq!(want[0].dtype(), got[0].dtype(), "{name}");
            assert_eq!(want[0].shape(), got[0].shape(), "{name}");
            assert_eq!(want[0].to_f64(), got[0].to_f64(), "{name}, seed {seed}");
            if let Some((lo, hi)) = want[0].dtype().quantized_range() {
                saturated += want[0].to_f64().iter().filter(|&&v| v == lo || v == hi).count();
            }
        }
        // the requantizing cases reach both ends of their type
        assert!(saturated > 0 || !name.starts_with("QLinear"), "{name}: no output saturates");
    }
}
