//! decompose: SwiGLU, RotaryEmbedding, TensorScatter and CausalConvWithState written as the ops
//! ONNX defines them by; the interpreter gives the same outputs before and after.
mod common;
use common::{assert_equivalent, random_inputs};
use xforge_ir::{infer::infer_graph, interp, print::print, Attr, DType, Graph, GraphBuilder, Op, ValueType};
use xforge_passes::{dce::dce, decompose::decompose};

/// One node of `op` on inputs of the given dtypes and shapes (None: left out).
fn one(op: Op, ins: &[(DType, Option<&[usize]>)], attrs: Vec<(&str, Attr)>, outs: usize) -> Graph {
    one_at(28, op, ins, attrs, outs)
}

/// `one` in a model of opset `opset`.
fn one_at(opset: i64, op: Op, ins: &[(DType, Option<&[usize]>)], attrs: Vec<(&str, Attr)>, outs: usize) -> Graph {
    let mut b = GraphBuilder::new("seq", opset);
    let ids: Vec<_> =
        ins.iter().enumerate().map(|(k, (dt, s))| s.map(|s| b.input(&format!("in{k}"), *dt, s))).collect();
    let o = b.node_multi(op, &ids, attrs, vec![ValueType::unranked(ins[0].0); outs]);
    for v in o {
        b.output(v);
    }
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

/// Decomposes `before`, checks no `op` is left and the outputs agree on random inputs.
fn check(before: &Graph, op: Op) -> Graph {
    let mut g = before.clone();
    assert_eq!(decompose(&mut g), 1);
    dce(&mut g);
    infer_graph(&mut g).unwrap();
    xforge_ir::verify::verify(&g).unwrap();
    assert!(g.nodes.iter().all(|n| n.op != op), "{op} is left");
    assert_equivalent(before, &g, 1e-6);
    g
}

const F: DType = DType::F32;

#[test]
fn swiglu_is_a_times_sigmoid_of_alpha_a_times_b() {
    let g = check(
        &one(Op::SwiGLU, &[(F, Some(&[2, 8])), (F, Some(&[2, 8]))], vec![("alpha", Attr::Float(1.702))], 1),
        Op::SwiGLU,
    );
    insta::assert_snapshot!(print(&g));
    check(&one(Op::SwiGLU, &[(F, Some(&[3, 4])), (F, Some(&[3, 4]))], vec![], 1), Op::SwiGLU);
}

#[test]
fn rotary_embeddings_are_slices_products_and_a_concat() {
    // 4-D with per-token caches, full rotation
    let g = check(
        &one(Op::RotaryEmbedding, &[(F, Some(&[2, 3, 4, 8])), (F, Some(&[2, 4, 4])), (F, Some(&[2, 4, 4]))], vec![], 1),
        Op::RotaryEmbedding,
    );
    insta::assert_snapshot!(print(&g));
    // 3-D with position ids, partial and interleaved rotation
    for (interleaved, rd) in [(0, 4), (1, 4), (1, 0)] {
        let half = if rd == 0 { 4 } else { rd / 2 };
        let cache = [6, half];
        let before = one(
            Op::RotaryEmbedding,
            &[(F, Some(&[2, 5, 16])), (F, Some(&cache)), (F, Some(&cache)), (DType::I64, Some(&[2, 5]))],
            vec![
                ("num_heads", Attr::Int(2)),
                ("interleaved", Attr::Int(interleaved)),
                ("rotary_embedding_dim", Attr::Int(rd as i64)),
            ],
            1,
        );
        check(&before, Op::RotaryEmbedding);
    }
}

#[test]
fn tensor_scatter_is_a_masked_gather_of_the_update() {
    // random write indices are in [0, 4): linear writes of 3 into 8 stay inside; circular
    // writes into 4 wrap
    for (mode, max, axis) in [("linear", 8, -2), ("circular", 4, 2), ("linear", 8, 1)] {
        let (past, upd): (Vec<usize>, Vec<usize>) = match axis {
            1 => (vec![2, max, 3], vec![2, 3, 3]),
            _ => (vec![2, 2, max, 3], vec![2, 2, 3, 3]),
        };
        let before = one(
            Op::TensorScatter,
            &[(F, Some(&past)), (F, Some(&upd)), (DType::I64, Some(&[2]))],
            vec![("mode", Attr::Str(mode.into())), ("axis", Attr::Int(axis))],
            1,
        );
        let g = check(&before, Op::TensorScatter);
        if mode == "circular" {
            insta::assert_snapshot!(print(&g));
        }
    }
    // without write indices: the update lands at the cache's start
    check(
        &one(Op::TensorScatter, &[(F, Some(&[1, 5, 2])), (F, Some(&[1, 2, 2]))], vec![("axis", Attr::Int(1))], 1),
        Op::TensorScatter,
    );
}

#[test]
fn causal_conv_with_state_is_a_concat_a_depthwise_conv_and_a_slice() {
    let x = [2, 3, 7];
    let w = [3, 1, 4];
    let g = check(
        &one(
            Op::CausalConvWithState,
            &[(F, Some(&x)), (F, Some(&w)), (F, Some(&[3])), (F, Some(&[2, 3, 3]))],
            vec![("activation", Attr::Str("silu".into()))],
            2,
        ),
        Op::CausalConvWithState,
    );
    insta::assert_snapshot!(print(&g));
    // no past (zeros), no bias, no activation; k = 1 carries nothing
    check(&one(Op::CausalConvWithState, &[(F, Some(&x)), (F, Some(&w))], vec![], 2), Op::CausalConvWithState);
    let before = one(Op::CausalConvWithState, &[(F, Some(&x)), (F, Some(&[3, 1, 1]))], vec![], 2);
    let after = check(&before, Op::CausalConvWithState);
    let out = interp::run(&after, &random_inputs(&after, 1)).unwrap();
    assert_eq!(out[1].shape(), &[2, 3, 0]);
}

#[test]
fn nodes_of_unknown_shape_stay() {
    let mut b = GraphBuilder::new("seq", 28);
    let x = b.input_sym("x", F, &["batch", "seq", "16"]);
    let c = b.input("c", F, &[8, 4]);
    let p = b.input_sym("p", DType::I64, &["batch", "seq"]);
    let y = b.node_multi(
        Op::RotaryEmbedding,
        &[Some(x), Some(c), Some(c), Some(p)],
        vec![("num_heads", Attr::Int(2))],
        vec![ValueType::unranked(F)],
    );
    b.output(y[0]);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    assert_eq!(decompose(&mut g), 0);
}

/// An RNN, GRU or LSTM node on f32 operands (sequence lengths i32), every output a graph output.
fn recurrent(op: Op, direction: &str, layout: i64, lens: bool, attrs: Vec<(&str, Attr)>) -> Graph {
    recurrent_at(28, op, direction, layout, lens, attrs)
}

fn recurrent_at(opset: i64, op: Op, direction: &str, layout: i64, lens: bool, attrs: Vec<(&str, Attr)>) -> Graph {
    let (t, b, i, h) = (5, 3, 4, 6);
    let gates = match op {
        Op::RNN => 1,
        Op::GRU => 3,
        _ => 4,
    };
    let d = if direction == "bidirectional" { 2 } else { 1 };
    let (x, st) = if layout == 0 { (vec![t, b, i], vec![d, b, h]) } else { (vec![b, t, i], vec![b, d, h]) };
    let (w, r, bias, p) = (vec![d, gates * h, i], vec![d, gates * h, h], vec![d, 2 * gates * h], vec![d, 3 * h]);
    let lstm = op == Op::LSTM;
    let batch = [b];
    let mut ins: Vec<(DType, Option<&[usize]>)> = vec![
        (F, Some(&x)),
        (F, Some(&w)),
        (F, Some(&r)),
        (F, Some(&bias)),
        (DType::I32, lens.then_some(&batch[..])),
        (F, Some(&st)),
    ];
    if lstm {
        ins.extend([(F, Some(&st[..])), (F, Some(&p[..]))]);
    }
    let mut all = vec![
        ("hidden_size", Attr::Int(h as i64)),
        ("direction", Attr::Str(direction.into())),
        ("layout", Attr::Int(layout)),
    ];
    all.extend(attrs);
    one_at(opset, op, &ins, all, if lstm { 3 } else { 2 })
}

#[test]
fn recurrent_networks_unroll_into_gemms_and_gates() {
    // every direction and layout, sequence lengths (random in 0..4 of 5 steps: empty, partial),
    // GRU's linear_before_reset, LSTM's clip, coupled gate and peepholes, custom activations
    let cases: Vec<(Op, &str, i64, bool, Vec<(&str, Attr)>)> = vec![
        (Op::RNN, "forward", 0, false, vec![]),
        (Op::RNN, "bidirectional", 1, true, vec![]),
        (Op::GRU, "reverse", 0, true, vec![]),
        (Op::GRU, "bidirectional", 0, false, vec![("linear_before_reset", Attr::Int(1))]),
        (Op::LSTM, "forward", 1, true, vec![("clip", Attr::Float(0.7))]),
        (Op::LSTM, "bidirectional", 0, true, vec![("input_forget", Attr::Int(1))]),
        (
            Op::GRU,
            "forward",
            0,
            false,
            vec![
                ("activations", Attr::Strs(vec!["HardSigmoid".into(), "ScaledTanh".into()])),
                ("activation_alpha", Attr::Floats(vec![0.3, 0.7])),
                ("activation_beta", Attr::Floats(vec![0.4, 1.3])),
            ],
        ),
    ];
    for (op, direction, layout, lens, attrs) in cases {
        let before = recurrent(op, direction, layout, lens, attrs);
        let g = check(&before, op);
        assert!(g.nodes.iter().any(|n| n.op == Op::MatMul), "{op} {direction}");
    }
}

#[test]
fn a_reverse_lstm_with_lengths_puts_each_output_at_its_own_step() {
    // lengths 5, 2 and 0: the second sequence's outputs sit at steps 0 and 1, the third's are
    // all zero and its final state is the initial one
    let before = recurrent(Op::LSTM, "reverse", 0, true, vec![]);
    let mut after = before.clone();
    decompose(&mut after);
    dce(&mut after);
    infer_graph(&mut after).unwrap();
    let mut feed = random_inputs(&before, 5);
    let lens_name = before.name_of(before.inputs[4]).to_string();
    feed.insert(lens_name, xforge_ir::Tensor::from_f64(DType::I32, vec![3], &[5.0, 2.0, 0.0]));
    let want = interp::run(&before, &feed).unwrap();
    let got = interp::run(&after, &feed).unwrap();
    for (x, y) in got.iter().zip(&want) {
        assert!(xforge_ir::tensor::rel_l2(x, y) < 1e-6);
    }
    let y = want[0].to_f64();
    // Y (5, 1, 3, 6): batch 1 past step 2 and batch 2 everywhere are zero
    for t in 0..5 {
        for j in 0..6 {
            assert_eq!(y[(t * 3 + 2) * 6 + j], 0.0);
            if t >= 2 {
                assert_eq!(y[(t * 3 + 1) * 6 + j], 0.0);
            }
        }
    }
}

#[test]
fn recurrent_networks_of_old_opsets_unroll_into_that_opsets_forms() {
    // LSTM exists since opset 1: a model of opset 10 got Unsqueezes with axes as inputs (opset
    // 13's form), which its own interpreter refused (found by the fusion_diff fuzz target);
    // Slice bounds before 10, Clip bounds before 11 and GreaterOrEqual before 12 likewise
    for opset in [7, 9, 10, 11, 12] {
        let before = recurrent_at(opset, Op::LSTM, "reverse", 0, true, vec![("clip", Attr::Float(0.9))]);
        check(&before, Op::LSTM);
        let before = recurrent_at(opset, Op::GRU, "bidirectional", 0, false, vec![]);
        check(&before, Op::GRU);
    }
}
