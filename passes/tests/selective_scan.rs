//! fusion/selective_scan.rs: through the e-graph, the unfused form
//! (python/selective_scan_unfused.py: softplus, exp, products, an ONNX Scan with the body
//! h ← a·h + x, the contraction with C, D·u, z·sigmoid(z)) becomes one SelectiveScan with the
//! same outputs on random inputs (the rules' soundness: interpreted before and after); forms that
//! differ in any fact the rules rely on keep their Scan.
mod common;
use common::assert_equivalent;
use std::path::Path;
use std::sync::Arc;
use xforge_ir::{Attr, Graph, Op};

/// The graph e-graph fusion extracts.
fn fused(g: &Graph) -> Graph {
    xforge_passes::fusion::fuse(g).unwrap().graph
}

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
        let after = fused(&before);
        assert_eq!((count(&after, Op::SelectiveScan), count(&after, Op::Scan)), (1, 0), "{case}");
        // only the scan is left: D, z·sigmoid(z) and delta_bias went into it
        assert_eq!(after.nodes.len(), 1, "{case}: {:?}", after.nodes.iter().map(|n| n.op).collect::<Vec<_>>());
        let n = &after.nodes[0];
        assert_eq!(n.inputs.len(), inputs, "{case}");
        assert!(matches!(n.attr("delta_softplus"), Some(Attr::Int(v)) if *v == softplus), "{case}");
        assert_equivalent(&before, &after, 1e-6);
        // in half-precision storage (`--precision`, which runs first) too
        for half in [xforge_ir::DType::F16, xforge_ir::DType::BF16] {
            let mut h = before.clone();
            xforge_passes::precision::convert(&mut h, half).unwrap();
            let h = fused(&h);
            assert_eq!((count(&h, Op::SelectiveScan), count(&h, Op::Scan)), (1, 0), "{case} {half}");
            assert_equivalent(&before, &h, 2e-2);
        }
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
        let after = fused(&before);
        // no scan kernel: a linear body stays a Scan, another one is unrolled (control.rs)
        assert_eq!(count(&after, Op::SelectiveScan), 0, "{what}");
        let linear = what != "another body";
        assert_eq!(count(&after, Op::Scan), linear as usize, "{what}");
        assert_equivalent(&before, &after, 1e-6);
    }
}

/// How a generated unfused scan is spelled.
#[derive(Clone, Copy, Debug)]
struct Spelling {
    softplus: bool,
    bias: bool,
    d: bool,
    /// 0: no gate; 1: z·sigmoid(z); 2: sigmoid(z)·z
    gate: u8,
    /// every product and sum with its operands swapped
    flip: bool,
    /// A's broadcast as an Unsqueeze node (else a (1, d, 1, n) weight)
    unsqueeze_a: bool,
    /// a change that makes some part not the selective scan's
    change: Change,
}

/// Edits that keep the graph valid but change what it computes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Change {
    None,
    /// Sigmoid where the decays take Exp
    DecayNotExp,
    /// the Scan's two sequences swapped (the decays become the inputs)
    SequencesSwapped,
    /// ReLU where softplus was
    ReluForSoftplus,
    /// the skip term reads delta instead of u
    SkipReadsDelta,
    /// the gate is z·sigmoid(u)
    GateOfU,
}

/// The unfused form of python/selective_scan_unfused.py, built here in any spelling.
fn unfused(dims: [usize; 4], sp: Spelling, seed: u64) -> Graph {
    use xforge_ir::{DType, GraphBuilder, Tensor, ValueType};
    let [b, d, l, n] = dims;
    let f = DType::F32;
    let any = || ValueType::unranked(DType::F32);
    let vals = |k: usize, s: u64, lo: f64, hi: f64| -> Vec<f64> {
        let mut x = s.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..k)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                lo + (hi - lo) * ((x >> 11) as f64 / (1u64 << 53) as f64)
            })
            .collect()
    };
    let mut g = GraphBuilder::new("unfused", 17);
    let ints = |g: &mut GraphBuilder, v: &[i64]| {
        g.weight("axes", Tensor::from_f64(DType::I64, vec![v.len()], &v.iter().map(|&x| x as f64).collect::<Vec<_>>()))
    };
    let pair = |g: &mut GraphBuilder, op: Op, x, y| {
        let (p, q) = if sp.flip { (y, x) } else { (x, y) };
        g.node(op, &[p, q], vec![], any())
    };
    let u = g.input("u", f, &[b, d, l]);
    let delta = g.input("delta", f, &[b, d, l]);
    let bb = g.input("B", f, &[b, n, l]);
    let cc = g.input("C", f, &[b, n, l]);
    let z = (sp.gate > 0).then(|| g.input("z", f, &[b, d, l]));
    let a_vals = vals(d * n, seed, -1.0, -0.1);
    let (ax1, ax3, ax02) = (ints(&mut g, &[1]), ints(&mut g, &[3]), ints(&mut g, &[0, 2]));
    let mut dt = delta;
    if sp.bias {
        let bias = g.weight("delta_bias", Tensor::from_f64(f, vec![d, 1], &vals(d, seed + 1, -0.3, 0.3)));
        dt = pair(&mut g, Op::Add, dt, bias);
    }
    if sp.softplus {
        let op = if sp.change == Change::ReluForSoftplus { Op::Relu } else { Op::Softplus };
        dt = g.node(op, &[dt], vec![], any());
    }
    let a4 = if sp.unsqueeze_a {
        let a = g.weight("A", Tensor::from_f64(f, vec![d, n], &a_vals));
        g.node(Op::Unsqueeze, &[a, ax02], vec![], any())
    } else {
        g.weight("A4", Tensor::from_f64(f, vec![1, d, 1, n], &a_vals))
    };
    let dt4 = g.node(Op::Unsqueeze, &[dt, ax3], vec![], any());
    let dal = pair(&mut g, Op::Mul, dt4, a4);
    let decay_op = if sp.change == Change::DecayNotExp { Op::Sigmoid } else { Op::Exp };
    let da = g.node(decay_op, &[dal], vec![], any());
    let du = pair(&mut g, Op::Mul, dt, u);
    let du4 = g.node(Op::Unsqueeze, &[du, ax3], vec![], any());
    let bt = g.node(Op::Transpose, &[bb], vec![("perm", Attr::Ints(vec![0, 2, 1]))], any());
    let bt4 = g.node(Op::Unsqueeze, &[bt, ax1], vec![], any());
    let dbu = pair(&mut g, Op::Mul, du4, bt4);
    let h0 = g.weight("h0", Tensor::from_f64(f, vec![b, d, n], &vec![0.0; b * d * n]));
    let body = {
        let mut s = GraphBuilder::new("step", 17);
        let h = s.input("h", f, &[b, d, n]);
        let a = s.input("a_t", f, &[b, d, n]);
        let x = s.input("x_t", f, &[b, d, n]);
        let (p, q) = if sp.flip { (h, a) } else { (a, h) };
        let ah = s.node(Op::Mul, &[p, q], vec![], any());
        let (p, q) = if sp.flip { (x, ah) } else { (ah, x) };
        let next = s.node(Op::Add, &[p, q], vec![], any());
        let out = s.node(Op::Identity, &[next], vec![], any());
        s.output(next);
        s.output(out);
        s.finish()
    };
    let outs = g.node_multi(
        Op::Scan,
        &if sp.change == Change::SequencesSwapped {
            [Some(h0), Some(dbu), Some(da)]
        } else {
            [Some(h0), Some(da), Some(dbu)]
        },
        vec![
            ("body", Attr::Graph(Arc::new(body))),
            ("num_scan_inputs", Attr::Int(2)),
            ("scan_input_axes", Attr::Ints(vec![2, 2])),
            ("scan_output_axes", Attr::Ints(vec![2])),
        ],
        vec![any(), any()],
    );
    let ct = g.node(Op::Transpose, &[cc], vec![("perm", Attr::Ints(vec![0, 2, 1]))], any());
    let ct4 = g.node(Op::Unsqueeze, &[ct, ax1], vec![], any());
    let hc = pair(&mut g, Op::Mul, outs[1], ct4);
    let mut out = g.node(Op::ReduceSum, &[hc, ax3], vec![("keepdims", Attr::Int(0))], any());
    if sp.d {
        let dcol = g.weight("D", Tensor::from_f64(f, vec![d, 1], &vals(d, seed + 2, -1.0, 1.0)));
        let skip = if sp.change == Change::SkipReadsDelta { delta } else { u };
        let du = pair(&mut g, Op::Mul, skip, dcol);
        out = pair(&mut g, Op::Add, out, du);
    }
    if let Some(z) = z {
        let sig = g.node(Op::Sigmoid, &[if sp.change == Change::GateOfU { u } else { z }], vec![], any());
        let silu = if sp.gate == 1 {
            g.node(Op::Mul, &[z, sig], vec![], any())
        } else {
            g.node(Op::Mul, &[sig, z], vec![], any())
        };
        out = pair(&mut g, Op::Mul, out, silu);
    }
    g.output(out);
    let mut g = g.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    g
}

#[test]
fn every_spelling_becomes_one_scan_with_the_same_outputs() {
    let mut k = 0u64;
    for flip in [false, true] {
        for (softplus, bias, d, gate) in
            [(true, true, true, 1), (true, false, false, 2), (false, true, true, 0), (false, false, false, 1)]
        {
            for unsqueeze_a in [false, true] {
                k += 1;
                let sp = Spelling { softplus, bias, d, gate, flip, unsqueeze_a, change: Change::None };
                let dims = [1 + (k as usize % 2), 3 + (k as usize % 4), 7 + 5 * (k as usize % 5), 1 + (k as usize % 6)];
                let before = unfused(dims, sp, k);
                let after = fused(&before);
                assert_eq!(
                    count(&after, Op::Scan),
                    0,
                    "{sp:?} {dims:?}: {:?}",
                    after.nodes.iter().map(|n| n.op).collect::<Vec<_>>()
                );
                // the scan, and nothing else: D and the gate went into it
                assert_eq!(after.nodes.len(), 1, "{sp:?}: {:?}", after.nodes.iter().map(|n| n.op).collect::<Vec<_>>());
                assert!(matches!(after.nodes[0].attr("delta_softplus"), Some(Attr::Int(v)) if (*v != 0) == softplus));
                assert_equivalent(&before, &after, 1e-6);
            }
        }
    }
}

#[test]
fn changed_forms_are_left_or_rewritten_only_where_it_is_sound() {
    let full =
        Spelling { softplus: true, bias: true, d: true, gate: 1, flip: false, unsqueeze_a: true, change: Change::None };
    // (change, the scan is formed, nodes left beside it)
    let cases = [
        (Change::DecayNotExp, false, 0),
        (Change::SequencesSwapped, false, 0),
        // ReLU(delta + bias) is just another delta: a scan without softplus
        (Change::ReluForSoftplus, true, 2),
        // a skip term that does not fit stays outside (Mul, Add), and the gate after it (Swish,
        // Mul: the SiLU rule's form); a gate that does not fit stays outside
        (Change::SkipReadsDelta, true, 4),
        (Change::GateOfU, true, 3),
    ];
    for (k, (change, formed, beside)) in cases.into_iter().enumerate() {
        for flip in [false, true] {
            let before = unfused([2, 3, 9, 4], Spelling { change, flip, ..full }, 40 + k as u64);
            let after = fused(&before);
            let ops: Vec<Op> = after.nodes.iter().map(|n| n.op).collect();
            assert_eq!(count(&after, Op::SelectiveScan), formed as usize, "{change:?}: {ops:?}");
            assert_eq!(count(&after, Op::Scan), !formed as usize, "{change:?}: {ops:?}");
            if formed {
                assert_eq!(after.nodes.len(), 1 + beside, "{change:?}: {ops:?}");
            }
            assert_equivalent(&before, &after, 1e-6);
        }
    }
}
