//! Measured costs: what `xforge tune` times on a GPU, and how a compile uses the times.
//!
//! The tuner takes a model's fusion groups and builds small artifacts that each run one thing:
//! every GEMM group both ways (the library call with its epilogue split after it, and one
//! generated kernel), every contraction node alone, and every 4-D convolution also in the other
//! layout (NCHW ⇄ channels-last), so the layout the cost model did not pick gets a time too.
//! A compile with the resulting `TuningTable` prices those contractions by their times in the
//! e-graph (`cost::measured_cost`) and runs a GEMM group generated where that measured faster
//! (`apply`).
use crate::{build, complete, CompileError, Compiler};
use std::collections::HashSet;
use xforge_ir::{Dim, Graph, Op, ValueId, ValueType};
use xforge_passes::fusion::partition::{anchor_schedule, group_of_nodes};
use xforge_passes::fusion::{Fused, FusionGroup, Partition, SaturationReport, Schedule};
use xforge_passes::tuning::{group_key, is_measured_op, node_key, TuningTable, Way};
use xforge_runtime::Artifact;

/// The most small artifacts one model gives the tuner (each is a build and a timing).
pub const MAX_CANDIDATES: usize = 2000;

/// One thing to time: its key and way in the table, a label for people, and its artifact.
pub struct Candidate {
    pub key: String,
    pub way: Way,
    pub label: String,
    pub artifact: Artifact,
}

/// Whether a group is a GEMM the library can run (whole, or with its epilogue split off).
fn is_gemm(grp: &FusionGroup) -> bool {
    matches!(grp.schedule, Schedule::LibraryGemm | Schedule::GeneratedGemm)
}

/// The GEMM groups the table measured faster as one generated kernel, retagged generated:
/// their indices, which the library-epilogue split must leave whole.
pub fn apply(fused: &mut Fused, table: &TuningTable) -> HashSet<usize> {
    let mut kept = HashSet::new();
    for i in 0..fused.partition.groups.len() {
        let grp = &fused.partition.groups[i];
        if is_gemm(grp) && table.prefers_generated(&group_key(&fused.graph, grp)) {
            fused.partition.groups[i].schedule = Schedule::GeneratedGemm;
            kept.insert(i);
        }
    }
    kept
}

/// The nodes `nodes` of `g` as a graph of their own: what they read from outside becomes
/// inputs (weights stay weights), what `outputs` names becomes the outputs.
pub fn isolated(g: &Graph, nodes: &[usize], outputs: &[ValueId]) -> Graph {
    let mut out = Graph { name: "tune".into(), opset: g.opset, ..Default::default() };
    let mut map: std::collections::HashMap<ValueId, ValueId> = Default::default();
    for &n in nodes {
        let node = &g.nodes[n];
        let mut inputs = vec![];
        for i in &node.inputs {
            inputs.push(i.map(|v| {
                *map.entry(v).or_insert_with(|| {
                    let id = out.add_value(g.name_of(v), g.ty(v).clone());
                    match g.weights.get(&v) {
                        Some(t) => {
                            out.weights.insert(id, t.clone());
                        }
                        None => out.inputs.push(id),
                    }
                    id
                })
            }));
        }
        let outs = node
            .outputs
            .iter()
            .map(|o| o.map(|v| *map.entry(v).or_insert_with(|| out.add_value(g.name_of(v), g.ty(v).clone()))))
            .collect();
        out.nodes.push(xforge_ir::Node {
            name: node.name.clone(),
            op: node.op,
            inputs,
            outputs: outs,
            attrs: node.attrs.clone(),
        });
    }
    out.outputs = outputs.iter().filter_map(|v| map.get(v).copied()).collect();
    out
}

/// A fused graph of one group over all of `g`'s nodes.
fn one_group(g: Graph, schedule: Schedule) -> Fused {
    let n = g.nodes.len();
    let grp = group_of_nodes(&g, schedule, (0..n).collect());
    Fused {
        graph: g,
        partition: Partition { groups: vec![grp], group_of: vec![0; n] },
        saturation: SaturationReport { iterations: 0, enodes: 0, eclasses: 0, cap: None },
        canon: Default::default(),
        source_ops: n,
        phases: vec![],
    }
}

/// `t` with its axes in the order `perm`.
fn permuted(t: &ValueType, perm: &[usize]) -> Option<ValueType> {
    let s: &Vec<Dim> = t.shape.as_ref()?;
    (s.len() == perm.len())
        .then(|| ValueType { dtype: t.dtype, shape: Some(perm.iter().map(|&k| s[k].clone()).collect()) })
}

/// Convolution node `n` in the other layout (Conv ⇄ ConvNhwc, same weights and attributes),
/// alone; None for one that is not 4-D.
fn other_layout(g: &Graph, n: usize) -> Option<Graph> {
    let node = &g.nodes[n];
    let (op, perm): (Op, [usize; 4]) = match node.op {
        Op::Conv => (Op::ConvNhwc, [0, 2, 3, 1]),
        Op::ConvNhwc => (Op::Conv, [0, 3, 1, 2]),
        _ => return None,
    };
    let mut alt = isolated(g, &[n], &node.output_ids().collect::<Vec<_>>());
    let x = alt.nodes[0].inputs.first().copied().flatten()?;
    let y = alt.nodes[0].outputs.first().copied().flatten()?;
    if alt.weights.contains_key(&x) {
        return None;
    }
    alt.values[x.index()].ty = permuted(alt.ty(x), &perm)?;
    alt.values[y.index()].ty = permuted(alt.ty(y), &perm)?;
    alt.nodes[0].op = op;
    xforge_ir::infer::infer_graph(&mut alt).ok()?;
    Some(alt)
}

/// The artifact of a one-group graph, completed and built the way `generated` says.
fn artifact(c: &Compiler, mut f: Fused, generated: bool) -> Result<Artifact, CompileError> {
    if !generated {
        build::split_library_epilogues(&mut f, &HashSet::new());
    }
    complete::complete(&mut f, generated)?;
    Ok(build::build(&[(0, &f)], None, c.target(), String::new(), generated, c.precision_name())?)
}

/// What to time for `graph` (fused as `c` fuses it, without a tuning table): every GEMM group
/// both ways, every contraction alone, every 4-D convolution in both layouts; each key once.
/// `progress(done, all)` follows the builds.
pub fn candidates(
    c: &Compiler,
    graph: &Graph,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<Candidate>, CompileError> {
    let plain = c.clone().tuning(TuningTable::default());
    let fused = plain.fuse_groups(graph)?;
    let g = &fused.graph;
    // (key, way, label, one-group graph, schedule, generated)
    let mut todo: Vec<(String, Way, String, Graph, Schedule, bool)> = vec![];
    let mut seen: HashSet<(String, Way)> = HashSet::new();
    let mut add = |key: String, way: Way, label: String, graph: Graph, s: Schedule, generated: bool| {
        if seen.insert((key.clone(), way)) {
            todo.push((key, way, label, graph, s, generated));
        }
    };
    for grp in &fused.partition.groups {
        if !is_gemm(grp) {
            continue;
        }
        let key = group_key(g, grp);
        let label = label_of(g, grp);
        let sub = isolated(g, &grp.nodes, &grp.outputs);
        add(key.clone(), Way::Library, label.clone(), sub.clone(), grp.schedule, false);
        add(key, Way::Generated, label, sub, Schedule::GeneratedGemm, true);
    }
    for (n, node) in g.nodes.iter().enumerate() {
        if !is_measured_op(node.op) {
            continue;
        }
        let sub = isolated(g, &[n], &node.output_ids().collect::<Vec<_>>());
        let schedule = anchor_schedule(&sub, &sub.nodes[0]);
        add(node_key(g, n), Way::Alone, format!("{} {}", node.op, node.name), sub, schedule, false);
        if let Some(alt) = other_layout(g, n) {
            let schedule = anchor_schedule(&alt, &alt.nodes[0]);
            let key = node_key(&alt, 0);
            add(key, Way::Alone, format!("{} {} (other layout)", alt.nodes[0].op, node.name), alt, schedule, false);
        }
    }
    todo.truncate(MAX_CANDIDATES);
    let all = todo.len();
    let mut out = vec![];
    for (k, (key, way, label, graph, schedule, generated)) in todo.into_iter().enumerate() {
        progress(k, all);
        match artifact(c, one_group(graph, schedule), generated) {
            Ok(artifact) => out.push(Candidate { key, way, label, artifact }),
            // a way that does not build is not a choice the compiler can make either
            Err(e) => tracing::debug!("not timed: {label} ({}): {e}", way.name()),
        }
    }
    progress(all, all);
    Ok(out)
}

/// A group's label: its ops, and the first node's name.
fn label_of(g: &Graph, grp: &FusionGroup) -> String {
    let ops = grp.op_names(g);
    let first = grp.nodes.first().map(|&n| g.nodes[n].name.as_str()).unwrap_or("");
    format!("{} {first}", ops.join("+"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xforge_ir::{Attr, DType, GraphBuilder, Tensor};

    /// conv 3×3 (8 → 8 channels) → ReLU → Flatten → MatMul [2048 → 32] + bias → ReLU.
    fn model(dtype: DType) -> Graph {
        let mut b = GraphBuilder::new("net", 17);
        let u = || ValueType::unranked(dtype);
        let w = |b: &mut GraphBuilder, name: &str, shape: &[usize]| {
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n).map(|i| ((i * 7919 % 97) as f64 - 48.0) / 400.0).collect();
            b.weight(name, Tensor::from_f64(dtype, shape.to_vec(), &v))
        };
        let x = b.input("x", dtype, &[2, 8, 16, 16]);
        let cw = w(&mut b, "cw", &[8, 8, 3, 3]);
        let c = b.node(Op::Conv, &[x, cw], vec![("pads", Attr::Ints(vec![1; 4]))], u());
        let r = b.node(Op::Relu, &[c], vec![], u());
        let f = b.node(Op::Flatten, &[r], vec![], u());
        let mw = w(&mut b, "mw", &[2048, 32]);
        let mb = w(&mut b, "mb", &[32]);
        let m = b.node(Op::MatMul, &[f, mw], vec![], u());
        let a = b.node(Op::Add, &[m, mb], vec![], u());
        let y = b.node(Op::Relu, &[a], vec![], u());
        b.output(y);
        let mut g = b.finish();
        xforge_ir::infer::infer_graph(&mut g).unwrap();
        g
    }

    fn library_kinds(a: &Artifact) -> Vec<String> {
        a.plans[0]
            .steps
            .iter()
            .filter_map(|s| match s {
                xforge_runtime::Step::Library(c) => Some(c.kind.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_gemm_group_measured_faster_generated_is_generated() {
        let g = model(DType::F16);
        let c = Compiler::new("sm_90").precision(crate::Precision::Fp16);
        let plain = c.compile_graph(&g, "d".into()).unwrap();
        assert_eq!(library_kinds(&plain), ["conv", "gemm"]);
        let fused = c.fuse_groups(&g).unwrap();
        let grp = fused.partition.groups.iter().find(|x| x.schedule == Schedule::LibraryGemm).unwrap();
        let key = group_key(&fused.graph, grp);
        let mut t = TuningTable::new("sm_90", "test GPU");
        t.insert(&key, Way::Library, 10.0);
        t.insert(&key, Way::Generated, 9.9);
        // inside the margin: still the library
        let near = c.clone().tuning(t.clone()).compile_graph(&g, "d".into()).unwrap();
        assert_eq!(library_kinds(&near), ["conv", "gemm"]);
        t.insert(&key, Way::Generated, 4.0);
        let tuned = c.clone().tuning(t).compile_graph(&g, "d".into()).unwrap();
        assert_eq!(library_kinds(&tuned), ["conv"]);
        assert!(tuned.header.options.iter().any(|(k, v)| k == "tuning" && v == "2 measurements on test GPU"));
        assert!(!plain.header.options.iter().any(|(k, _)| k == "tuning"));
    }

    #[test]
    fn candidates_are_each_gemm_group_both_ways_and_each_contraction_in_both_layouts() {
        let g = model(DType::F16);
        let c = Compiler::new("sm_90").precision(crate::Precision::Fp16);
        let steps = std::sync::Mutex::new(vec![]);
        let got = candidates(&c, &g, &|done, all| steps.lock().unwrap().push((done, all))).unwrap();
        let mut ways: Vec<(String, &str, Vec<String>)> = got
            .iter()
            .map(|k| (k.label.split(' ').next().unwrap().to_string(), k.way.name(), library_kinds(&k.artifact)))
            .collect();
        ways.sort();
        let want = [
            ("Conv", "alone", vec!["conv"]),
            ("ConvNhwc", "alone", vec!["conv"]),
            ("MatMul", "alone", vec!["gemm"]),
            ("MatMul+Add+Relu", "generated", vec![]),
            ("MatMul+Add+Relu", "library", vec!["gemm"]),
        ];
        let want: Vec<(String, &str, Vec<String>)> =
            want.into_iter().map(|(l, w, k)| (l.to_string(), w, k.into_iter().map(String::from).collect())).collect();
        assert_eq!(ways, want);
        // the same key both ways for the group; the layouts have keys of their own
        let key = |label: &str, way: Way| {
            got.iter().find(|k| k.label.starts_with(label) && k.way == way).unwrap().key.clone()
        };
        assert_eq!(key("MatMul+Add+Relu", Way::Library), key("MatMul+Add+Relu", Way::Generated));
        assert_ne!(key("Conv ", Way::Alone), key("ConvNhwc", Way::Alone));
        assert_eq!(steps.lock().unwrap().last(), Some(&(5, 5)));
    }

    #[test]
    fn an_isolated_group_computes_what_it_computed_in_place() {
        let g = model(DType::F32);
        let fused = Compiler::new("sm_90").fuse_groups(&g).unwrap();
        let grp = fused.partition.groups.iter().find(|x| x.schedule == Schedule::LibraryGemm).unwrap();
        let sub = isolated(&fused.graph, &grp.nodes, &grp.outputs);
        assert_eq!((sub.inputs.len(), sub.weights.len(), sub.outputs.len()), (1, 2, 1));
        // the whole graph's value at the group's input, fed to the group alone
        let x = Tensor::from_f64(
            DType::F32,
            vec![2, 8, 16, 16],
            &(0..4096).map(|i| (i % 13) as f64 / 13.0).collect::<Vec<_>>(),
        );
        let inputs = |name: &str, t: Tensor| [(name.to_string(), t)].into_iter().collect();
        let mut upto = fused.graph.clone();
        upto.outputs = vec![grp.inputs.iter().copied().find(|v| !fused.graph.weights.contains_key(v)).unwrap()];
        let mid = xforge_ir::interp::run(&upto, &inputs("x", x.clone())).unwrap().remove(0);
        let want = xforge_ir::interp::run(&fused.graph, &inputs("x", x)).unwrap().remove(0);
        let got = xforge_ir::interp::run(&sub, &inputs(sub.name_of(sub.inputs[0]), mid)).unwrap().remove(0);
        assert!(xforge_ir::tensor::rel_l2(&got, &want) < 1e-6);
    }
}
