//! control.rs: If, Loop and Scan inlined into the graph compute what the control flow computed
//! (the interpreter before and after, on random inputs), and leave no control flow behind.
use std::collections::HashMap;
use std::sync::Arc;
use xforge_ir::{interp, Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::control::{inline_all_control_flow, inline_control_flow};

fn values(dt: DType, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_f64(
        dt,
        shape.to_vec(),
        &(0..n).map(|i| ((i as u64 * 37 + seed * 11) % 17) as f64 / 8.0 - 1.0).collect::<Vec<_>>(),
    )
}

fn f32t(shape: &[usize]) -> ValueType {
    ValueType::known(DType::F32, shape)
}

/// Interprets `g` before and after inlining on `feed`; the outputs must agree bit for bit.
fn same_after_inlining(g: &Graph, feed: &HashMap<String, Tensor>, all: bool) {
    let before = interp::run(g, feed).unwrap();
    let mut h = g.clone();
    let n = if all { inline_all_control_flow(&mut h) } else { inline_control_flow(&mut h) };
    assert!(n > 0, "nothing inlined");
    assert!(!h.nodes.iter().any(|m| matches!(m.op, Op::If | Op::Loop | Op::Scan)), "control flow left");
    xforge_ir::infer::infer_graph(&mut h).unwrap();
    xforge_ir::verify::verify(&h).unwrap();
    let after = interp::run(&h, feed).unwrap();
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a.shape(), b.shape());
        assert_eq!(a.to_f64(), b.to_f64());
    }
}

/// A body graph: `build` adds its nodes given the builder and its inputs; `captures` names
/// values of the enclosing graph it reads.
fn body(
    inputs: &[(&str, ValueType)],
    captures: &[(&str, ValueType)],
    build: impl FnOnce(&mut GraphBuilder, &[xforge_ir::ValueId], &[xforge_ir::ValueId]) -> Vec<xforge_ir::ValueId>,
) -> Arc<Graph> {
    let mut b = GraphBuilder::new("body", 17);
    let ins: Vec<_> = inputs.iter().map(|(n, t)| b.input_typed(n, t.clone())).collect();
    let caps: Vec<_> = captures.iter().map(|(n, t)| b.capture(n, t.clone())).collect();
    let outs = build(&mut b, &ins, &caps);
    for o in outs {
        b.output(o);
    }
    Arc::new(b.finish())
}

#[test]
fn an_if_on_a_runtime_condition_selects_between_both_branches() {
    let then_b = body(&[], &[("x", f32t(&[3, 4]))], |b, _, c| {
        let one = b.weight("one", Tensor::scalar_f32(1.0));
        vec![b.node(Op::Add, &[c[0], one], vec![], f32t(&[3, 4]))]
    });
    let else_b = body(&[], &[("x", f32t(&[3, 4]))], |b, _, c| {
        let two = b.weight("two", Tensor::scalar_f32(2.0));
        vec![b.node(Op::Mul, &[c[0], two], vec![], f32t(&[3, 4]))]
    });
    let mut b = GraphBuilder::new("if", 17);
    let c = b.input("c", DType::Bool, &[]);
    let x = b.input("x", DType::F32, &[3, 4]);
    let _ = x;
    let y = b.node(
        Op::If,
        &[c],
        vec![("then_branch", Attr::Graph(then_b)), ("else_branch", Attr::Graph(else_b))],
        f32t(&[3, 4]),
    );
    b.output(y);
    let g = b.finish();
    for cond in [true, false] {
        let feed = HashMap::from([
            ("c".to_string(), Tensor::from_bool(vec![], vec![cond])),
            ("x".to_string(), values(DType::F32, &[3, 4], 1)),
        ]);
        same_after_inlining(&g, &feed, false);
    }
}

#[test]
fn a_loop_with_a_constant_trip_count_unrolls() {
    // v ← 2·v + 1, three times; every iteration's v is also stacked
    let lb = body(
        &[("i", ValueType::known(DType::I64, &[])), ("cond", ValueType::known(DType::Bool, &[])), ("v", f32t(&[2]))],
        &[],
        |b, ins, _| {
            let two = b.weight("two", Tensor::scalar_f32(2.0));
            let one = b.weight("one", Tensor::scalar_f32(1.0));
            let t = b.node(Op::Mul, &[ins[2], two], vec![], f32t(&[2]));
            let v = b.node(Op::Add, &[t, one], vec![], f32t(&[2]));
            let keep = b.node(Op::Identity, &[ins[1]], vec![], ValueType::known(DType::Bool, &[]));
            let s = b.node(Op::Identity, &[v], vec![], f32t(&[2]));
            vec![keep, v, s]
        },
    );
    let mut b = GraphBuilder::new("loop", 17);
    let v0 = b.input("v0", DType::F32, &[2]);
    let m = b.weight("m", Tensor::scalar_i64(3));
    let t = b.weight("t", Tensor::from_bool(vec![], vec![true]));
    let outs = b.node_multi(
        Op::Loop,
        &[Some(m), Some(t), Some(v0)],
        vec![("body", Attr::Graph(lb))],
        vec![f32t(&[2]), f32t(&[3, 2])],
    );
    b.output(outs[0]);
    b.output(outs[1]);
    let g = b.finish();
    same_after_inlining(&g, &HashMap::from([("v0".to_string(), values(DType::F32, &[2], 2))]), false);
}

#[test]
fn a_scan_unrolls_over_its_sequence() {
    // h ← h + x_t over the 4 rows of xs, emitting h each step, in reverse
    let sb = body(&[("h", f32t(&[2])), ("x", f32t(&[2]))], &[], |b, ins, _| {
        let h = b.node(Op::Add, &[ins[0], ins[1]], vec![], f32t(&[2]));
        let e = b.node(Op::Identity, &[h], vec![], f32t(&[2]));
        vec![h, e]
    });
    let mut b = GraphBuilder::new("scan", 17);
    let h0 = b.input("h0", DType::F32, &[2]);
    let xs = b.input("xs", DType::F32, &[4, 2]);
    let outs = b.node_multi(
        Op::Scan,
        &[Some(h0), Some(xs)],
        vec![
            ("body", Attr::Graph(sb)),
            ("num_scan_inputs", Attr::Int(1)),
            ("scan_input_directions", Attr::Ints(vec![1])),
        ],
        vec![f32t(&[2]), f32t(&[4, 2])],
    );
    b.output(outs[0]);
    b.output(outs[1]);
    let g = b.finish();
    let feed = HashMap::from([
        ("h0".to_string(), values(DType::F32, &[2], 3)),
        ("xs".to_string(), values(DType::F32, &[4, 2], 4)),
    ]);
    same_after_inlining(&g, &feed, false);
}

#[test]
fn a_loop_whose_scan_output_outgrows_the_element_limit_stops_with_an_error() {
    // a trip count of 2^40 with a row stacked each time once ran until memory ran out: the
    // stacked output is checked against the element limit as it grows (a small one here)
    let lb = body(
        &[("i", ValueType::known(DType::I64, &[])), ("cond", ValueType::known(DType::Bool, &[])), ("v", f32t(&[8]))],
        &[],
        |b, ins, _| {
            let keep = b.node(Op::Identity, &[ins[1]], vec![], ValueType::known(DType::Bool, &[]));
            let v = b.node(Op::Identity, &[ins[2]], vec![], f32t(&[8]));
            let s = b.node(Op::Identity, &[ins[2]], vec![], f32t(&[8]));
            vec![keep, v, s]
        },
    );
    let mut b = GraphBuilder::new("grow", 17);
    let v0 = b.input("v0", DType::F32, &[8]);
    let m = b.weight("m", Tensor::scalar_i64(1 << 40));
    let t = b.weight("t", Tensor::from_bool(vec![], vec![true]));
    let outs = b.node_multi(
        Op::Loop,
        &[Some(m), Some(t), Some(v0)],
        vec![("body", Attr::Graph(lb))],
        vec![f32t(&[8]), ValueType::unranked(DType::F32)],
    );
    b.output(outs[0]);
    b.output(outs[1]);
    let g = b.finish();
    let feed = HashMap::from([("v0".to_string(), values(DType::F32, &[8], 2))]);
    let e = interp::with_element_limit(80_000, || interp::run(&g, &feed)).unwrap_err().to_string();
    assert!(e.contains("scan output 0 after 10001 iterations") && e.contains("limit of 80000"), "{e}");
}
