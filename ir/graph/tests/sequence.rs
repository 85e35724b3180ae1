//! The sequence-model ops (interp/sequence.rs) against properties the ONNX node tests do not
//! check: a recurrence split across two calls (its state carried) equals one call, closed forms
//! of one step, and the refusals, each naming its operand or attribute; symbolic shapes inferred.
use std::collections::HashMap;
use xforge_ir::interp::run;
use xforge_ir::shape::Dim;
use xforge_ir::tensor::rel_l2;
use xforge_ir::{infer::infer_graph, Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueType};

/// Deterministic pseudo-random values in [lo, hi).
fn randv(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

fn f64t(shape: &[usize], v: &[f64]) -> Tensor {
    Tensor::from_f64(DType::F64, shape.to_vec(), v)
}

/// A graph of one node on f64 inputs of the given shapes (None: the input left out), every
/// output a graph output.
fn one_node(op: Op, ins: &[(&str, Option<&[usize]>)], attrs: Vec<(&str, Attr)>, outs: usize) -> Graph {
    let mut b = GraphBuilder::new("seq", 28);
    let ids: Vec<_> = ins.iter().map(|(name, s)| s.map(|s| b.input(name, DType::F64, s))).collect();
    let o = b.node_multi(op, &ids, attrs, vec![ValueType::unranked(DType::F64); outs]);
    for v in o {
        b.output(v);
    }
    b.finish()
}

fn feed(pairs: &[(&str, &Tensor)]) -> HashMap<String, Tensor> {
    pairs.iter().map(|(k, t)| (k.to_string(), (*t).clone())).collect()
}

/// Runs `g` on those of `pairs` that are its inputs.
fn run_on(g: &Graph, pairs: &[(&str, &Tensor)]) -> Vec<Tensor> {
    let mut fd = feed(pairs);
    fd.retain(|k, _| g.inputs.iter().any(|&i| g.name_of(i) == k));
    run(g, &fd).unwrap()
}

fn slice_t(t: &Tensor, from: usize, to: usize) -> Tensor {
    // (batch, sequence, width) rows from..to of every batch
    let [b, _, w] = *t.shape() else { panic!("rank 3") };
    let l = t.shape()[1];
    let v = t.to_f64();
    let mut out = vec![];
    for bi in 0..b {
        out.extend_from_slice(&v[(bi * l + from) * w..(bi * l + to) * w]);
    }
    f64t(&[b, to - from, w], &out)
}

struct La {
    rule: &'static str,
    hq: usize,
    hk: usize,
    per_key_decay: bool,
    scalar_beta: bool,
}

fn la_graph(c: &La, b: usize, t: usize, dk: usize, dv: usize, past: bool) -> Graph {
    let decay_w = if c.per_key_decay { c.hk * dk } else { c.hk };
    let beta_w = if c.scalar_beta { 1 } else { c.hk };
    let gated = c.rule.starts_with("gated");
    let delta = c.rule.ends_with("delta");
    let (q, k, v) = ([b, t, c.hq * dk], [b, t, c.hk * dk], [b, t, c.hk * dv]);
    let (st, dec, bt) = ([b, c.hk, dk, dv], [b, t, decay_w], [b, t, beta_w]);
    let ins: Vec<(&str, Option<&[usize]>)> = vec![
        ("q", Some(&q)),
        ("k", Some(&k)),
        ("v", Some(&v)),
        ("past", past.then_some(&st[..])),
        ("decay", gated.then_some(&dec[..])),
        ("beta", delta.then_some(&bt[..])),
    ];
    let attrs = vec![
        ("update_rule", Attr::Str(c.rule.into())),
        ("q_num_heads", Attr::Int(c.hq as i64)),
        ("kv_num_heads", Attr::Int(c.hk as i64)),
    ];
    let mut g = one_node(Op::LinearAttention, &ins, attrs, 2);
    infer_graph(&mut g).unwrap();
    g
}

#[test]
fn linear_attention_split_across_two_calls_equals_one_call() {
    let (b, t, dk, dv) = (2, 5, 4, 3);
    for (rule, hq, hk, per_key_decay, scalar_beta) in [
        ("linear", 2, 2, false, false),
        ("gated", 4, 2, true, false),
        ("gated", 2, 1, false, false),
        ("delta", 3, 3, false, true),
        ("gated_delta", 4, 2, false, false),
        ("gated_delta", 2, 2, true, true),
    ] {
        let c = La { rule, hq, hk, per_key_decay, scalar_beta };
        let whole = la_graph(&c, b, t, dk, dv, false);
        let decay_w = if per_key_decay { hk * dk } else { hk };
        let beta_w = if scalar_beta { 1 } else { hk };
        let q = f64t(&[b, t, hq * dk], &randv(b * t * hq * dk, 1, -1.0, 1.0));
        let k = f64t(&[b, t, hk * dk], &randv(b * t * hk * dk, 2, -0.5, 0.5));
        let v = f64t(&[b, t, hk * dv], &randv(b * t * hk * dv, 3, -1.0, 1.0));
        let d = f64t(&[b, t, decay_w], &randv(b * t * decay_w, 4, -1.0, 0.0));
        let be = f64t(&[b, t, beta_w], &randv(b * t * beta_w, 5, 0.0, 1.0));
        let all = run_on(&whole, &[("q", &q), ("k", &k), ("v", &v), ("decay", &d), ("beta", &be)]);
        // the first two steps, then the last three from the state they leave
        let first = la_graph(&c, b, 2, dk, dv, false);
        let part = |x: &Tensor, a, z| slice_t(x, a, z);
        let r1 = run_on(
            &first,
            &[
                ("q", &part(&q, 0, 2)),
                ("k", &part(&k, 0, 2)),
                ("v", &part(&v, 0, 2)),
                ("decay", &part(&d, 0, 2)),
                ("beta", &part(&be, 0, 2)),
            ],
        );
        let second = la_graph(&c, b, 3, dk, dv, true);
        let r2 = run_on(
            &second,
            &[
                ("q", &part(&q, 2, 5)),
                ("k", &part(&k, 2, 5)),
                ("v", &part(&v, 2, 5)),
                ("past", &r1[1]),
                ("decay", &part(&d, 2, 5)),
                ("beta", &part(&be, 2, 5)),
            ],
        );
        assert!(rel_l2(&r2[0], &part(&all[0], 2, 5)) < 1e-12, "{rule}: outputs of the second call");
        assert!(rel_l2(&r1[0], &part(&all[0], 0, 2)) < 1e-12, "{rule}: outputs of the first call");
        assert!(rel_l2(&r2[1], &all[1]) < 1e-12, "{rule}: final state");
        assert_eq!(all[0].shape(), &[b, t, hq * dv]);
        assert_eq!(all[1].shape(), &[b, hk, dk, dv]);
    }
}

#[test]
fn one_linear_attention_step_is_scaled_q_dot_k_times_v() {
    // from a zero state: o = q·k / √d_k · v; with decay 0 "gated" is "linear"; delta with β = 1
    // from zero writes v itself
    let (dk, dv) = (4, 2);
    let q = f64t(&[1, 1, dk], &[1.0, 2.0, 0.5, -1.0]);
    let k = f64t(&[1, 1, dk], &[0.5, -1.0, 2.0, 1.0]);
    let v = f64t(&[1, 1, dv], &[3.0, -2.0]);
    let qk: f64 = 0.5 - 2.0 + 1.0 - 1.0;
    let want = [qk / 2.0 * 3.0, qk / 2.0 * -2.0];
    for rule in ["linear", "gated", "delta", "gated_delta"] {
        let c = La { rule, hq: 1, hk: 1, per_key_decay: false, scalar_beta: false };
        let g = la_graph(&c, 1, 1, dk, dv, false);
        let zero = f64t(&[1, 1, 1], &[0.0]);
        let one = f64t(&[1, 1, 1], &[1.0]);
        let r = run_on(&g, &[("q", &q), ("k", &k), ("v", &v), ("decay", &zero), ("beta", &one)]);
        let got = r[0].to_f64();
        assert!((got[0] - want[0]).abs() < 1e-12 && (got[1] - want[1]).abs() < 1e-12, "{rule}: {got:?}");
    }
}

#[test]
fn causal_conv_split_across_two_calls_equals_one_call() {
    let (b, c, l, kk) = (2, 3, 7, 4);
    let x = f64t(&[b, c, l], &randv(b * c * l, 7, -1.0, 1.0));
    let w = f64t(&[c, 1, kk], &randv(c * kk, 8, -1.0, 1.0));
    let bias = f64t(&[c], &randv(c, 9, -1.0, 1.0));
    let graph = |len: usize, past: bool| {
        let (xs, ws, bs, ps) = ([b, c, len], [c, 1, kk], [c], [b, c, kk - 1]);
        let ins: Vec<(&str, Option<&[usize]>)> =
            vec![("x", Some(&xs)), ("w", Some(&ws)), ("bias", Some(&bs)), ("past", past.then_some(&ps[..]))];
        let mut g = one_node(Op::CausalConvWithState, &ins, vec![("activation", Attr::Str("silu".into()))], 2);
        infer_graph(&mut g).unwrap();
        g
    };
    let cut = |t: &Tensor, a: usize, z: usize| {
        let v = t.to_f64();
        let mut out = vec![];
        for line in 0..b * c {
            out.extend_from_slice(&v[line * l + a..line * l + z]);
        }
        f64t(&[b, c, z - a], &out)
    };
    let all = run(&graph(l, false), &feed(&[("x", &x), ("w", &w), ("bias", &bias)])).unwrap();
    let r1 = run(&graph(3, false), &feed(&[("x", &cut(&x, 0, 3)), ("w", &w), ("bias", &bias)])).unwrap();
    let r2 =
        run(&graph(4, true), &feed(&[("x", &cut(&x, 3, 7)), ("w", &w), ("bias", &bias), ("past", &r1[1])])).unwrap();
    assert!(rel_l2(&r1[0], &cut(&all[0], 0, 3)) < 1e-12);
    assert!(rel_l2(&r2[0], &cut(&all[0], 3, 7)) < 1e-12);
    assert_eq!(r2[1].to_f64(), all[1].to_f64(), "the carried state is the last k − 1 inputs");
    assert_eq!(all[1].to_f64(), cut(&x, 4, 7).to_f64());
}

#[test]
fn rotary_embedding_rotates_pairs_by_their_position() {
    // rank 3 (batch, seq, heads · head) with position ids; angle θ·pos per pair; position 0 is
    // the identity, and every pair keeps its length
    let (s, h, d) = (3, 2, 4);
    let theta = [0.3, 1.1];
    let cos: Vec<f64> = (0..5).flat_map(|p| theta.map(|t| (t * p as f64).cos())).collect();
    let sin: Vec<f64> = (0..5).flat_map(|p| theta.map(|t| (t * p as f64).sin())).collect();
    let x = f64t(&[1, s, h * d], &randv(s * h * d, 11, -1.0, 1.0));
    for interleaved in [0, 1] {
        let (xs, cs, ps) = ([1, s, h * d], [5, 2], [1, s]);
        let ins: Vec<(&str, Option<&[usize]>)> =
            vec![("x", Some(&xs)), ("cos", Some(&cs)), ("sin", Some(&cs)), ("pos", Some(&ps))];
        let attrs = vec![("num_heads", Attr::Int(h as i64)), ("interleaved", Attr::Int(interleaved))];
        let mut g = one_node(Op::RotaryEmbedding, &ins, attrs, 1);
        infer_graph(&mut g).unwrap();
        let pos = Tensor::from_i64(vec![1, s], vec![0, 4, 2]);
        let mut fd = feed(&[("x", &x), ("cos", &f64t(&[5, 2], &cos)), ("sin", &f64t(&[5, 2], &sin))]);
        fd.insert("pos".into(), pos.clone());
        // position ids are int64
        let g = retype(g, "pos", DType::I64);
        let y = run(&g, &fd).unwrap()[0].to_f64();
        let xv = x.to_f64();
        for (si, p) in [0usize, 4, 2].into_iter().enumerate() {
            for hi in 0..h {
                let base = (si * h + hi) * d;
                for i in 0..2 {
                    let (a, b) = if interleaved == 1 { (2 * i, 2 * i + 1) } else { (i, i + 2) };
                    let ang = theta[i] * p as f64;
                    let want = (
                        xv[base + a] * ang.cos() - xv[base + b] * ang.sin(),
                        xv[base + a] * ang.sin() + xv[base + b] * ang.cos(),
                    );
                    assert!((y[base + a] - want.0).abs() < 1e-12 && (y[base + b] - want.1).abs() < 1e-12);
                }
            }
        }
    }
}

/// `g` with input `name` retyped (same shape).
fn retype(mut g: Graph, name: &str, dt: DType) -> Graph {
    let id = g.inputs.iter().copied().find(|&i| g.name_of(i) == name).unwrap();
    let shape = g.ty(id).static_shape().unwrap();
    g.values[id.index()].ty = ValueType::known(dt, &shape);
    infer_graph(&mut g).unwrap();
    g
}

#[test]
fn tensor_scatter_writes_each_batch_at_its_index_and_circular_wraps() {
    // cache (2, 4, 1) along axis 1; update of 2 positions; batch 0 at 1, batch 1 at 3
    let past = f64t(&[2, 4, 1], &[0.0; 8]);
    let upd = f64t(&[2, 2, 1], &[1.0, 2.0, 3.0, 4.0]);
    for (mode, want) in [
        ("circular", vec![0.0, 1.0, 2.0, 0.0, 4.0, 0.0, 0.0, 3.0]),
        ("linear", vec![]), // batch 1 would write past the end: refused
    ] {
        let (ps, us, ws) = ([2, 4, 1], [2, 2, 1], [2]);
        let ins: Vec<(&str, Option<&[usize]>)> = vec![("past", Some(&ps)), ("upd", Some(&us)), ("w", Some(&ws))];
        let g = one_node(Op::TensorScatter, &ins, vec![("axis", Attr::Int(1)), ("mode", Attr::Str(mode.into()))], 1);
        let g = retype(g, "w", DType::I64);
        let mut fd = feed(&[("past", &past), ("upd", &upd)]);
        fd.insert("w".into(), Tensor::from_i64(vec![2], vec![1, 3]));
        match run(&g, &fd) {
            Ok(r) => assert_eq!(r[0].to_f64(), want, "{mode}"),
            Err(e) => {
                assert!(want.is_empty(), "{mode}: {e}");
                assert!(e.to_string().contains("write_indices[1] = 3"), "{e}");
            }
        }
    }
}

#[test]
fn bad_sequence_ops_are_refused_naming_the_field() {
    let cases: Vec<(Graph, &str)> = vec![
        (
            one_node(
                Op::LinearAttention,
                &[("q", Some(&[1, 2, 8])), ("k", Some(&[1, 2, 8])), ("v", Some(&[1, 2, 8]))],
                vec![("q_num_heads", Attr::Int(2)), ("kv_num_heads", Attr::Int(2))],
                2,
            ),
            "needs the decay input",
        ),
        (
            one_node(
                Op::LinearAttention,
                &[("q", Some(&[1, 2, 8])), ("k", Some(&[1, 2, 8])), ("v", Some(&[1, 2, 8]))],
                vec![
                    ("q_num_heads", Attr::Int(2)),
                    ("kv_num_heads", Attr::Int(2)),
                    ("update_rule", Attr::Str("retention".into())),
                ],
                2,
            ),
            "update_rule 'retention' is not one of",
        ),
        (
            one_node(
                Op::LinearAttention,
                &[("q", Some(&[1, 2, 8])), ("k", Some(&[1, 2, 8])), ("v", Some(&[1, 2, 8]))],
                vec![
                    ("q_num_heads", Attr::Int(3)),
                    ("kv_num_heads", Attr::Int(2)),
                    ("update_rule", Attr::Str("linear".into())),
                ],
                2,
            ),
            "q_num_heads (3) must be a positive multiple of kv_num_heads (2)",
        ),
        (
            one_node(
                Op::LinearAttention,
                &[("q", Some(&[1, 2, 8])), ("k", Some(&[1, 2, 6])), ("v", Some(&[1, 2, 8]))],
                vec![
                    ("q_num_heads", Attr::Int(2)),
                    ("kv_num_heads", Attr::Int(2)),
                    ("update_rule", Attr::Str("linear".into())),
                ],
                2,
            ),
            "d_k of key against query's: 3 against 4",
        ),
        (
            one_node(
                Op::LinearAttention,
                &[
                    ("q", Some(&[1, 2, 8])),
                    ("k", Some(&[1, 2, 8])),
                    ("v", Some(&[1, 2, 8])),
                    ("past", Some(&[1, 2, 4, 3])),
                ],
                vec![
                    ("q_num_heads", Attr::Int(2)),
                    ("kv_num_heads", Attr::Int(2)),
                    ("update_rule", Attr::Str("linear".into())),
                ],
                2,
            ),
            "past_state's d_v: 3 against 4",
        ),
        (one_node(Op::SwiGLU, &[("a", Some(&[2, 3])), ("b", Some(&[1, 3]))], vec![], 1), "SwiGLU does not broadcast"),
        (
            one_node(Op::CausalConvWithState, &[("x", Some(&[1, 3, 5])), ("w", Some(&[3, 2, 4]))], vec![], 2),
            "expected (channels, 1, k)",
        ),
        (
            one_node(
                Op::CausalConvWithState,
                &[("x", Some(&[1, 3, 5])), ("w", Some(&[3, 1, 4])), ("bias", None), ("past", Some(&[1, 3, 2]))],
                vec![],
                2,
            ),
            "past_state's length against k − 1: 2 against 3",
        ),
        (
            one_node(
                Op::CausalConvWithState,
                &[("x", Some(&[1, 3, 5])), ("w", Some(&[3, 1, 4]))],
                vec![("activation", Attr::Str("gelu".into()))],
                2,
            ),
            "activation 'gelu'",
        ),
        (
            one_node(
                Op::RotaryEmbedding,
                &[("x", Some(&[1, 2, 12])), ("cos", Some(&[1, 2, 3])), ("sin", Some(&[1, 2, 3]))],
                vec![],
                1,
            ),
            "needs the num_heads attribute",
        ),
        (
            one_node(
                Op::RotaryEmbedding,
                &[("x", Some(&[1, 2, 2, 6])), ("cos", Some(&[1, 2, 2])), ("sin", Some(&[1, 2, 2]))],
                vec![],
                1,
            ),
            "cos_cache's last dim against half the rotated size: 2 against 3",
        ),
        (
            one_node(
                Op::TensorScatter,
                &[("past", Some(&[2, 4, 3])), ("upd", Some(&[2, 5, 3]))],
                vec![("axis", Attr::Int(1))],
                1,
            ),
            "update's sequence length 5 exceeds the cache's 4",
        ),
        (
            one_node(
                Op::TensorScatter,
                &[("past", Some(&[2, 4])), ("upd", Some(&[2, 4]))],
                vec![("axis", Attr::Int(0))],
                1,
            ),
            "batch axis",
        ),
    ];
    for (mut g, want) in cases {
        let e = infer_graph(&mut g).expect_err(want).to_string();
        assert!(e.contains(want), "want '{want}' in: {e}");
        assert!(e.contains(g.nodes[0].op.name()), "the error names the node: {e}");
    }
}

#[test]
fn symbolic_batch_and_sequence_flow_through() {
    let mut b = GraphBuilder::new("seq", 28);
    let f = DType::F32;
    let q = b.input_sym("q", f, &["batch", "seq", "64"]);
    let k = b.input_sym("k", f, &["batch", "seq", "32"]);
    let v = b.input_sym("v", f, &["batch", "seq", "48"]);
    let d = b.input_sym("decay", f, &["batch", "seq", "2"]);
    let o = b.node_multi(
        Op::LinearAttention,
        &[Some(q), Some(k), Some(v), None, Some(d)],
        vec![("q_num_heads", Attr::Int(4)), ("kv_num_heads", Attr::Int(2)), ("update_rule", Attr::Str("gated".into()))],
        vec![ValueType::unranked(f), ValueType::unranked(f)],
    );
    b.output(o[0]);
    b.output(o[1]);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    let sym = |s: &str| Dim::Sym(s.into());
    assert_eq!(g.ty(o[0]).shape, Some(vec![sym("batch"), sym("seq"), Dim::Known(96)]));
    assert_eq!(g.ty(o[1]).shape, Some(vec![sym("batch"), Dim::Known(2), Dim::Known(16), Dim::Known(24)]));
}

#[test]
fn bad_recurrent_networks_are_refused_naming_the_field() {
    let (x, w, r) = ([5usize, 2, 3], [1usize, 12, 3], [1usize, 12, 3]);
    let ins = |extra: &[(&'static str, Option<&'static [usize]>)]| {
        let mut v: Vec<(&str, Option<&[usize]>)> = vec![("x", Some(&x[..])), ("w", Some(&w[..])), ("r", Some(&r[..]))];
        v.extend_from_slice(extra);
        v
    };
    let cases: Vec<(Op, Vec<(&str, Option<&[usize]>)>, Vec<(&str, Attr)>, &str)> = vec![
        (Op::LSTM, ins(&[]), vec![("hidden_size", Attr::Int(4))], "hidden_size 4 but R's last dim is 3"),
        (Op::LSTM, ins(&[]), vec![("direction", Attr::Str("sideways".into()))], "direction 'sideways'"),
        (Op::LSTM, ins(&[]), vec![("direction", Attr::Str("bidirectional".into()))], "W's directions: 1 against 2"),
        (Op::GRU, ins(&[]), vec![], "W's rows against gates · hidden: 12 against 9"),
        (Op::LSTM, ins(&[]), vec![("activations", Attr::Strs(vec!["Tanh".into()]))], "1 activations given"),
        (
            Op::LSTM,
            ins(&[]),
            vec![("activations", Attr::Strs(vec!["Tanh".into(), "Gelu".into(), "Tanh".into()]))],
            "activation 'Gelu'",
        ),
        (Op::LSTM, ins(&[]), vec![("clip", Attr::Float(0.0))], "clip 0 must be positive"),
        (Op::LSTM, ins(&[("b", Some(&[1, 12]))]), vec![], "B's width against 2 · gates · hidden: 12 against 24"),
        (
            Op::RNN,
            vec![
                ("x", Some(&[5, 2, 3])),
                ("w", Some(&[1, 3, 3])),
                ("r", Some(&[1, 3, 3])),
                ("b", None),
                ("l", None),
                ("h", None),
                ("c", Some(&[1, 2, 3])),
            ],
            vec![],
            "takes no initial_c",
        ),
    ];
    for (op, ins, attrs, want) in cases {
        let mut g = one_node(op, &ins, attrs, 2);
        let e = infer_graph(&mut g).expect_err(want).to_string();
        assert!(e.contains(want), "want '{want}' in: {e}");
    }
}
