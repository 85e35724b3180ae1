//! selective_scan_rule: the unfused form (python/selective_scan_unfused.py: softplus, exp,
//! products, an ONNX Scan with the body h ← a·h + x, the contraction with C) becomes one
//! SelectiveScan with the same outputs on random inputs; forms that differ in any fact the
//! rewrite relies on stay as they are.
mod common;
use common::assert_equivalent;
use std::path::Path;
use std::sync::Arc;
use xforge_ir::{Attr, Graph, Op};
use xforge_passes::selective_scan_rule::fuse_selective_scans;

fn fixture(case: &str) -> Graph {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/selective_scan").join(case).join("model.onnx");
    xforge_frontend::load(&p, &Default::default()).unwrap().graph
}

fn count(g: &Graph, op: Op) -> usize {
    g.nodes.iter().filter(|n| n.op == op).count()
}

#[test]
fn the_unfused_form_becomes_one_selective_scan() {
    for (case, inputs, softplus) in [("unfused_full", 8, 1), ("unfused_bare", 5, 0)] {
        let before = fixture(case);
        let mut after = before.clone();
        xforge_passes::canonicalize(&mut after).unwrap();
        assert_eq!((count(&after, Op::SelectiveScan), count(&after, Op::Scan)), (1, 0), "{case}");
        // only the scan is left: D, z·sigmoid(z) and delta_bias went into it
        assert_eq!(after.nodes.len(), 1, "{case}: {:?}", after.nodes.iter().map(|n| n.op).collect::<Vec<_>>());
        let n = &after.nodes[0];
        assert_eq!(n.inputs.len(), inputs, "{case}");
        assert!(matches!(n.attr("delta_softplus"), Some(Attr::Int(v)) if *v == softplus), "{case}");
        assert_equivalent(&before, &after, 1e-6);
    }
}

/// The fixture with its Scan node edited by `edit`.
fn edited(case: &str, edit: impl Fn(&mut Graph, usize)) -> Graph {
    let mut g = fixture(case);
    let at = g.nodes.iter().position(|n| n.op == Op::Scan).unwrap();
    edit(&mut g, at);
    g
}

#[test]
fn other_forms_stay_as_they_are() {
    let cases: Vec<(&str, Graph)> = vec![
        // a state that does not start at zero
        (
            "nonzero initial state",
            edited("unfused_full", |g, at| {
                let h0 = g.nodes[at].inputs[0].unwrap();
                let t = g.weights[&h0].clone();
                let ones: Vec<f64> = t.to_f64().iter().map(|_| 0.5).collect();
                g.weights.insert(h0, xforge_ir::Tensor::from_f64(t.dtype(), t.shape().to_vec(), &ones));
            }),
        ),
        // a body that is not h ← a·h + x (here a·h − x)
        (
            "another body",
            edited("unfused_full", |g, at| {
                let Some(Attr::Graph(body)) = g.nodes[at].attrs.get("body").cloned() else { panic!() };
                let mut body = (*body).clone();
                let add = body.nodes.iter_mut().find(|n| n.op == Op::Add).unwrap();
                add.op = Op::Sub;
                g.nodes[at].attrs.insert("body".into(), Attr::Graph(Arc::new(body)));
            }),
        ),
        // the recurrence run backwards
        (
            "reversed direction",
            edited("unfused_bare", |g, at| {
                g.nodes[at].attrs.insert("scan_input_directions".into(), Attr::Ints(vec![1, 1]));
            }),
        ),
    ];
    for (what, before) in cases {
        let mut after = before.clone();
        assert_eq!(fuse_selective_scans(&mut after), 0, "{what}");
        assert_eq!(count(&after, Op::Scan), 1, "{what}");
        assert_equivalent(&before, &after, 0.0);
    }
}
