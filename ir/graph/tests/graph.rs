//! Verifier rules, inference with symbolic dims, and the text printer.
use xforge_ir::verify::{verify, VerifyError};
use xforge_ir::{infer, Attr, DType, Dim, GraphBuilder, Node, Op, Tensor, ValueId, ValueType};

fn small() -> xforge_ir::Graph {
    let mut b = GraphBuilder::new("small", 17);
    let x = b.input_sym("x", DType::F32, &["batch", "8"]);
    let w = b.weight("w", Tensor::from_f32(vec![8, 4], vec![0.25; 32]));
    let bias = b.weight("bias", Tensor::from_f32(vec![4], vec![1.0, 2.0, 3.0, 4.0]));
    let mm = b.node(Op::MatMul, &[x, w], vec![], ValueType::unranked(DType::F32));
    let add = b.node(Op::Add, &[mm, bias], vec![], ValueType::unranked(DType::F32));
    let sm = b.node(Op::Softmax, &[add], vec![("axis", Attr::Int(-1))], ValueType::unranked(DType::F32));
    b.output(sm);
    b.finish()
}

#[test]
fn inference_keeps_symbolic_dims() {
    let mut g = small();
    infer::infer_graph(&mut g).unwrap();
    let out = g.ty(g.outputs[0]);
    assert_eq!(out.shape, Some(vec![Dim::Sym("batch".into()), Dim::Known(4)]));
    verify(&g).unwrap();
}

#[test]
fn printer_snapshot() {
    let mut g = small();
    infer::infer_graph(&mut g).unwrap();
    insta::assert_snapshot!(xforge_ir::print::print(&g));
}

#[test]
fn conv_and_pool_shapes_are_inferred() {
    let mut b = GraphBuilder::new("cnn", 17);
    let x = b.input_sym("x", DType::F32, &["n", "3", "224", "224"]);
    let w = b.weight("w", Tensor::zeros(DType::F32, vec![16, 3, 3, 3]));
    let c = b.node(
        Op::Conv,
        &[x, w],
        vec![("strides", Attr::Ints(vec![2, 2])), ("pads", Attr::Ints(vec![1; 4]))],
        ValueType::unranked(DType::F32),
    );
    let p = b.node(
        Op::MaxPool,
        &[c],
        vec![
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("strides", Attr::Ints(vec![2, 2])),
            ("ceil_mode", Attr::Int(1)),
        ],
        ValueType::unranked(DType::F32),
    );
    let gp = b.node(Op::GlobalAveragePool, &[p], vec![], ValueType::unranked(DType::F32));
    let f = b.node(Op::Flatten, &[gp], vec![], ValueType::unranked(DType::F32));
    b.output(f);
    let mut g = b.finish();
    infer::infer_graph(&mut g).unwrap();
    let shape = |v: ValueId| g.ty(v).shape.clone().unwrap();
    assert_eq!(shape(c), vec![Dim::Sym("n".into()), Dim::Known(16), Dim::Known(112), Dim::Known(112)]);
    assert_eq!(shape(p)[2..], [Dim::Known(56), Dim::Known(56)]);
    assert_eq!(shape(f), vec![Dim::Sym("n".into()), Dim::Known(16)]);
}

#[test]
fn verifier_rejects_use_before_definition() {
    let mut g = small();
    g.nodes.swap(0, 1);
    assert!(matches!(verify(&g), Err(VerifyError::UseBeforeDef { op: Op::Add, .. })));
}

#[test]
fn verifier_rejects_redefinition_and_bad_ids() {
    let mut g = small();
    let first = g.nodes[0].outputs[0];
    g.nodes[1].outputs[0] = first;
    assert!(matches!(verify(&g), Err(VerifyError::Redefined(_))));
    let mut g = small();
    g.nodes[2].inputs[0] = Some(ValueId(999));
    assert_eq!(verify(&g), Err(VerifyError::BadId(999)));
}

#[test]
fn verifier_checks_arity_and_types() {
    let mut g = small();
    g.nodes[1].inputs.push(None);
    assert!(matches!(verify(&g), Err(VerifyError::Arity { op: Op::Add, got: 3, .. })));
    let mut g = small();
    infer::infer_graph(&mut g).unwrap();
    let out = g.nodes[1].outputs[0].unwrap();
    g.values[out.index()].ty = ValueType::known(DType::F32, &[2, 5]);
    let e = verify(&g).unwrap_err();
    assert!(matches!(&e, VerifyError::Type { op: Op::Add, .. }), "{e}");
    let mut g = small();
    infer::infer_graph(&mut g).unwrap();
    g.values[out.index()].ty.dtype = DType::F16;
    assert!(matches!(verify(&g), Err(VerifyError::Type { .. })));
    let mut g = small();
    let w = *g.weights.keys().next().unwrap();
    g.values[w.index()].ty = ValueType::known(DType::F32, &[3]);
    assert!(matches!(verify(&g), Err(VerifyError::WeightType { .. })));
}

#[test]
fn every_op_has_a_name_round_trip() {
    for &op in Op::ALL {
        assert_eq!(Op::from_name(op.name()), Some(op));
    }
    let n = Node { name: "n".into(), op: Op::Relu, inputs: vec![], outputs: vec![], attrs: Default::default() };
    assert_eq!(n.op.to_string(), "Relu");
}

#[test]
fn a_conv_weight_of_another_rank_is_an_error_not_a_panic() {
    // hostile input: a weight of rank 1 (and 0) for a 4-D input
    for dims in [vec![3], vec![]] {
        let mut b = GraphBuilder::new("conv", 17);
        let x = b.input("x", DType::F32, &[1, 3, 8, 8]);
        let n: usize = dims.iter().product();
        let w = b.weight("w", Tensor::from_f32(dims.clone(), vec![0.5; n]));
        let y = b.node(Op::Conv, &[x, w], vec![], ValueType::unranked(DType::F32));
        b.output(y);
        let mut g = b.finish();
        let e = infer::infer_graph(&mut g).unwrap_err().to_string();
        assert!(
            e.contains("node 'conv_1' (Conv)") && e.contains(&format!("the weight has rank {}", dims.len())),
            "{e}"
        );
    }
}

#[test]
fn models_onnxruntime_refuses_are_refused_with_the_node() {
    let refused = |mut g: xforge_ir::Graph, want: &str| {
        let e = infer::infer_graph(&mut g).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    };
    let u = || ValueType::unranked(DType::F32);
    // a MatMul of bools
    let mut b = GraphBuilder::new("mm", 17);
    let (p, q) = (b.input("p", DType::Bool, &[4, 4]), b.input("q", DType::Bool, &[4, 4]));
    let y = b.node(Op::MatMul, &[p, q], vec![], ValueType::unranked(DType::Bool));
    b.output(y);
    refused(b.finish(), "MatMul takes numeric tensors, not bool");
    // pads that remove more than the axis holds
    let mut b = GraphBuilder::new("pad", 17);
    let x = b.input("x", DType::F32, &[1, 8]);
    let pads = b.weight("pads", Tensor::from_i64(vec![4], vec![0, -5, 0, -5]));
    let y = b.node(Op::Pad, &[x, pads], vec![], u());
    b.output(y);
    refused(b.finish(), "remove more than axis 1's 8 elements");
    // If branches that give another number of outputs than the node has
    let branch = |outs: usize| {
        let mut b = GraphBuilder::new("branch", 17);
        for k in 0..outs {
            let c = b.weight(&format!("c{k}"), Tensor::from_f32(vec![1], vec![k as f32]));
            let y = b.node(Op::Identity, &[c], vec![], u());
            b.output(y);
        }
        std::sync::Arc::new(b.finish())
    };
    let mut b = GraphBuilder::new("if", 17);
    let c = b.input("c", DType::Bool, &[]);
    let y = b.node(
        Op::If,
        &[c],
        vec![("then_branch", Attr::Graph(branch(2))), ("else_branch", Attr::Graph(branch(1)))],
        u(),
    );
    b.output(y);
    refused(b.finish(), "then_branch has 2 outputs, the node 1");
    // a Range whose limit is not a number: an error, not an empty tensor
    let mut b = GraphBuilder::new("range", 17);
    let mut t = |name: &str, v: f32| b.weight(name, Tensor::from_f32(vec![], vec![v]));
    let (s, l, d) = (t("s", 0.0), t("l", f32::NAN), t("d", 1.0));
    let y = b.node(Op::Range, &[s, l, d], vec![], u());
    b.output(y);
    let mut g = b.finish();
    let e = match infer::infer_graph(&mut g) {
        Err(e) => e.to_string(),
        Ok(_) => xforge_ir::interp::run(&g, &Default::default()).unwrap_err().to_string(),
    };
    assert!(e.contains("limit NaN") && e.contains("must be finite"), "{e}");
}

#[test]
fn unsqueeze_axes_that_repeat_are_an_error_not_a_panic() {
    // axes [1, 3, 3] on a rank-1 input (as a constant input at opset 13, as an attribute at 11):
    // inference inserted the repeated axis twice, past the end of the dims (a panic found by an
    // onnx_interp campaign after 31.1 M executions, about 31 minutes)
    for opset in [13, 11] {
        let mut b = GraphBuilder::new("unsqueeze", opset);
        let x = b.input_sym("x", DType::F32, &["n"]);
        let y = if opset >= 13 {
            let axes = b.weight("axes", Tensor::from_i64(vec![3], vec![1, 3, 3]));
            b.node(Op::Unsqueeze, &[x, axes], vec![], ValueType::unranked(DType::F32))
        } else {
            b.node(Op::Unsqueeze, &[x], vec![("axes", Attr::Ints(vec![1, 3, 3]))], ValueType::unranked(DType::F32))
        };
        b.output(y);
        let mut g = b.finish();
        let e = infer::infer_graph(&mut g).unwrap_err().to_string();
        assert!(e.contains("(Unsqueeze)") && e.contains("axes [1, 3, 3] repeat an axis"), "opset {opset}: {e}");
    }
}
