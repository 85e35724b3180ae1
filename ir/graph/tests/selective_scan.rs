//! The selective scan (com.xforge `SelectiveScan`) on the interpreter against closed forms that
//! do not run the recurrence: no decay (a prefix sum), one step, a single impulse decaying, and
//! groups of B/C against each channel scanned alone.
use std::collections::HashMap;
use xforge_ir::interp::run;
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

/// Inputs by name; D, z and delta_bias optional.
struct Case {
    b: usize,
    d: usize,
    l: usize,
    n: usize,
    groups: Option<usize>,
    softplus: bool,
    with: [bool; 3],
}

fn graph(c: &Case) -> Graph {
    let mut g = unchecked_graph(c);
    infer_graph(&mut g).unwrap();
    g
}

/// The scan's graph before its shapes are checked.
fn unchecked_graph(c: &Case) -> Graph {
    let f = DType::F32;
    let mut b = GraphBuilder::new("ssm", 17);
    let u = b.input("u", f, &[c.b, c.d, c.l]);
    let delta = b.input("delta", f, &[c.b, c.d, c.l]);
    let a = b.input("A", f, &[c.d, c.n]);
    let proj: Vec<usize> = match c.groups {
        None => vec![c.b, c.n, c.l],
        Some(g) => vec![c.b, g, c.n, c.l],
    };
    let bb = b.input("B", f, &proj);
    let cc = b.input("C", f, &proj);
    let dd = c.with[0].then(|| b.input("D", f, &[c.d]));
    let z = c.with[1].then(|| b.input("z", f, &[c.b, c.d, c.l]));
    let bias = c.with[2].then(|| b.input("delta_bias", f, &[c.d]));
    let ins = vec![Some(u), Some(delta), Some(a), Some(bb), Some(cc), dd, z, bias];
    let outs = b.node_multi(
        Op::SelectiveScan,
        &ins,
        vec![("delta_softplus", Attr::Int(c.softplus as i64))],
        vec![ValueType::unranked(f), ValueType::unranked(f)],
    );
    b.output(outs[0]);
    b.output(outs[1]);
    b.finish()
}

fn scan(c: &Case, vals: &HashMap<&str, Vec<f64>>) -> (Vec<f64>, Vec<f64>) {
    let g = graph(c);
    let feed: HashMap<String, Tensor> = g
        .inputs
        .iter()
        .map(|&v| {
            let name = g.name_of(v).to_string();
            let shape = g.ty(v).static_shape().unwrap();
            (name.clone(), Tensor::from_f64(DType::F32, shape, &vals[name.as_str()]))
        })
        .collect();
    let out = run(&g, &feed).unwrap();
    assert_eq!(out[0].shape(), [c.b, c.d, c.l]);
    assert_eq!(out[1].shape(), [c.b, c.d, c.n]);
    (out[0].to_f64(), out[1].to_f64())
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "element {i}: {x} vs {y}");
    }
}

fn inputs(c: &Case, seed: u64) -> HashMap<&'static str, Vec<f64>> {
    let (b, d, l, n) = (c.b, c.d, c.l, c.n);
    let p = b * c.groups.unwrap_or(1) * n * l;
    HashMap::from([
        ("u", randv(b * d * l, seed, -1.0, 1.0)),
        ("delta", randv(b * d * l, seed + 1, 0.0, 0.5)),
        ("A", randv(d * n, seed + 2, -2.0, -0.1)),
        ("B", randv(p, seed + 3, -1.0, 1.0)),
        ("C", randv(p, seed + 4, -1.0, 1.0)),
        ("D", randv(d, seed + 5, -1.0, 1.0)),
        ("z", randv(b * d * l, seed + 6, -2.0, 2.0)),
        ("delta_bias", randv(d, seed + 7, -0.5, 0.5)),
    ])
}

#[test]
fn without_decay_the_state_is_a_prefix_sum() {
    // A = 0: h_t = Σ_{s≤t} Δ_s·B_s·u_s, so y_t = Σ_n C_t[n]·Σ_{s≤t} Δ_s·B_s[n]·u_s
    let c = Case { b: 2, d: 3, l: 9, n: 4, groups: None, softplus: false, with: [false; 3] };
    let mut v = inputs(&c, 1);
    v.insert("A", vec![0.0; c.d * c.n]);
    let (out, last) = scan(&c, &v);
    let (u, dt, bb, cc) = (&v["u"], &v["delta"], &v["B"], &v["C"]);
    for b in 0..c.b {
        for d in 0..c.d {
            for t in 0..c.l {
                let mut y = 0.0;
                for k in 0..c.n {
                    let h: f64 = (0..=t)
                        .map(|s| {
                            let i = (b * c.d + d) * c.l + s;
                            dt[i] * bb[(b * c.n + k) * c.l + s] * u[i]
                        })
                        .sum();
                    y += cc[(b * c.n + k) * c.l + t] * h;
                    if t == c.l - 1 {
                        close(&[last[(b * c.d + d) * c.n + k]], &[h], 1e-6);
                    }
                }
                close(&[out[(b * c.d + d) * c.l + t]], &[y], 1e-5);
            }
        }
    }
}

#[test]
fn one_step_with_every_option() {
    // l = 1: h = Δ·B·u, out = (Δ·u·Σ_n B[n]·C[n] + D·u)·silu(z), Δ = softplus(delta + bias)
    let c = Case { b: 2, d: 5, l: 1, n: 3, groups: None, softplus: true, with: [true; 3] };
    let v = inputs(&c, 2);
    let (out, _) = scan(&c, &v);
    for b in 0..c.b {
        for d in 0..c.d {
            let i = b * c.d + d;
            let x = v["delta"][i] + v["delta_bias"][d];
            let dt = (1.0 + x.exp()).ln();
            let bc: f64 = (0..c.n).map(|k| v["B"][b * c.n + k] * v["C"][b * c.n + k]).sum();
            let z = v["z"][i];
            let want = (dt * v["u"][i] * bc + v["D"][d] * v["u"][i]) * z / (1.0 + (-z).exp());
            close(&[out[i]], &[want], 1e-5);
        }
    }
}

#[test]
fn an_impulse_decays_by_the_exponential_of_the_summed_steps() {
    // B nonzero only at t = 0: h_t = exp(A·Σ_{1≤s≤t} Δ_s)·Δ_0·B_0·u_0
    let c = Case { b: 1, d: 2, l: 12, n: 3, groups: None, softplus: false, with: [false; 3] };
    let mut v = inputs(&c, 3);
    let mut bb = v["B"].clone();
    for k in 0..c.n {
        for t in 1..c.l {
            bb[k * c.l + t] = 0.0;
        }
    }
    v.insert("B", bb.clone());
    let (_, last) = scan(&c, &v);
    for d in 0..c.d {
        let row = |t: usize| d * c.l + t;
        let steps: f64 = (1..c.l).map(|t| v["delta"][row(t)]).sum();
        for k in 0..c.n {
            let a = v["A"][d * c.n + k];
            let want = (a * steps).exp() * v["delta"][row(0)] * bb[k * c.l] * v["u"][row(0)];
            close(&[last[d * c.n + k]], &[want], 1e-6);
        }
    }
}

#[test]
fn groups_share_b_and_c_among_consecutive_channels() {
    // 4 channels in 2 groups: channel c reads group c / 2; each channel scanned alone with its
    // group's B and C as an ungrouped (b, n, l) projection gives the same rows
    let c = Case { b: 2, d: 4, l: 6, n: 3, groups: Some(2), softplus: true, with: [true, true, true] };
    let v = inputs(&c, 4);
    let (out, last) = scan(&c, &v);
    let one = Case { b: 1, d: 1, l: c.l, n: c.n, groups: None, softplus: true, with: [true; 3] };
    for b in 0..c.b {
        for d in 0..c.d {
            let g = d / 2;
            let rows = |name: &str, len: usize| v[name][(b * c.d + d) * len..(b * c.d + d + 1) * len].to_vec();
            let proj = |name: &str| v[name][(b * 2 + g) * c.n * c.l..(b * 2 + g + 1) * c.n * c.l].to_vec();
            let w = HashMap::from([
                ("u", rows("u", c.l)),
                ("delta", rows("delta", c.l)),
                ("z", rows("z", c.l)),
                ("A", v["A"][d * c.n..(d + 1) * c.n].to_vec()),
                ("B", proj("B")),
                ("C", proj("C")),
                ("D", vec![v["D"][d]]),
                ("delta_bias", vec![v["delta_bias"][d]]),
            ]);
            let (o1, l1) = scan(&one, &w);
            close(&out[(b * c.d + d) * c.l..(b * c.d + d + 1) * c.l], &o1, 1e-6);
            close(&last[(b * c.d + d) * c.n..(b * c.d + d + 1) * c.n], &l1, 1e-6);
        }
    }
}

#[test]
fn groups_that_do_not_divide_the_channels_are_named() {
    // B and C in 3 groups for 4 channels: shape inference (what the compiler runs) and the
    // interpreter both name it
    let c = Case { b: 1, d: 4, l: 5, n: 2, groups: Some(3), softplus: false, with: [false; 3] };
    let g = unchecked_graph(&c);
    let e = infer_graph(&mut g.clone()).unwrap_err().to_string();
    assert!(e.contains("B is [1, 3, 2, 5]") && e.contains("groups dividing 4"), "{e}");
    let feed: HashMap<String, Tensor> = g
        .inputs
        .iter()
        .map(|&v| (g.name_of(v).to_string(), Tensor::zeros(DType::F32, g.ty(v).static_shape().unwrap())))
        .collect();
    let e = run(&g, &feed).unwrap_err().to_string();
    assert!(e.contains("B is [1, 3, 2, 5]") && e.contains("groups dividing 4"), "{e}");
}

#[test]
fn mismatched_operands_are_refused_before_any_kernel() {
    // each operand one channel, state or step off: inference names the operand
    let c = Case { b: 2, d: 4, l: 5, n: 3, groups: None, softplus: true, with: [true; 3] };
    let cases: [(&str, usize, Vec<usize>, &str); 6] = [
        ("A", 2, vec![5, 3], "A has 5 channels, u has 4"),
        ("B", 3, vec![2, 4, 5], "B is [2, 4, 5]"),
        ("C", 4, vec![2, 3, 6], "C is [2, 3, 6]"),
        ("D", 5, vec![3], "D is [3]"),
        ("z", 6, vec![2, 4, 4], "z is [2, 4, 4]"),
        ("delta_bias", 7, vec![5], "delta_bias is [5]"),
    ];
    for (name, k, bad, want) in cases {
        let mut g = unchecked_graph(&c);
        let v = g.nodes[0].inputs[k].unwrap();
        assert_eq!(g.name_of(v), name);
        g.values[v.index()].ty = ValueType::known(DType::F32, &bad);
        let e = infer_graph(&mut g).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("SelectiveScan"), "{name}: {e}");
    }
}
