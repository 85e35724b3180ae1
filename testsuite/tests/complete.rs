//! complete.rs: every group gets a runner. A fused group no template runs is cut into groups
//! that have one (down to generic single-op kernels), the compiled plan computes what the
//! interpreter computes, and a node nothing can run is an error that names it.
use std::collections::HashMap;
use xforge_compiler::{CompileError, Compiler};
use xforge_ir::{Attr, DType, GraphBuilder, Op, Tensor, ValueType};
use xforge_passes::fusion::Schedule;
use xforge_testsuite::host_kernels::run_plan;

fn kernels(f: &xforge_passes::fusion::Fused) -> HashMap<usize, xforge_kernel::Kernel> {
    let (library, _) = xforge_compiler::build::library_plans(f, false);
    let (k, missing) = xforge_compiler::build::generate_kernels(f, &library);
    assert!(missing.is_empty(), "{missing:?}");
    k.into_iter().collect()
}

/// The plan run on the host, every group as a kernel, and the interpreter on the source graph.
fn host_and_interpreter(
    g: &xforge_ir::Graph,
    fused: &xforge_passes::fusion::Fused,
    feed: &HashMap<String, Tensor>,
) -> (Vec<Tensor>, Vec<Tensor>) {
    let want = xforge_ir::interp::run(g, feed).unwrap();
    let (got, stats) = run_plan(fused, &kernels(fused), feed).unwrap();
    assert_eq!(stats.interpreted, 0, "every group ran as a kernel");
    (got, want)
}

/// Kernels the plan launches (views launch none).
fn kernels_run(f: &xforge_passes::fusion::Fused) -> usize {
    f.partition.groups.iter().filter(|grp| grp.schedule != Schedule::View).count()
}

#[test]
fn a_group_without_a_template_is_cut_and_still_computes_the_same() {
    // relu(x) → i32 → (mod 3) → f32 → ·0.5: the elementwise template has no integer Mod, so the
    // fused chain is cut around it; the float work stays fused
    let mut b = GraphBuilder::new("cut", 17);
    let x = b.input("x", DType::F32, &[4, 8]);
    let r = b.node(Op::Relu, &[x], vec![], ValueType::known(DType::F32, &[4, 8]));
    let k = b_weight(&mut b, "k", 7.0);
    let s = b.node(Op::Mul, &[r, k], vec![], ValueType::known(DType::F32, &[4, 8]));
    let i = b.node(
        Op::Cast,
        &[s],
        vec![("to", Attr::Int(DType::I32.onnx_code() as i64))],
        ValueType::known(DType::I32, &[4, 8]),
    );
    let three = b.weight("three", Tensor::from_f64(DType::I32, vec![], &[3.0]));
    let m = b.node(Op::Mod, &[i, three], vec![], ValueType::known(DType::I32, &[4, 8]));
    let f = b.node(
        Op::Cast,
        &[m],
        vec![("to", Attr::Int(DType::F32.onnx_code() as i64))],
        ValueType::known(DType::F32, &[4, 8]),
    );
    let h = b_weight(&mut b, "h", 0.5);
    let y = b.node(Op::Mul, &[f, h], vec![], ValueType::known(DType::F32, &[4, 8]));
    b.output(y);
    let g = b.finish();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    let schedules: Vec<Schedule> = fused.partition.groups.iter().map(|grp| grp.schedule).collect();
    assert!(schedules.contains(&Schedule::Generic), "{schedules:?}");
    let x_val = Tensor::from_f64(DType::F32, vec![4, 8], &(0..32).map(|i| i as f64 * 0.37 - 4.0).collect::<Vec<_>>());
    let feed = HashMap::from([("x".to_string(), x_val)]);
    let (got, want) = host_and_interpreter(&g, &fused, &feed);
    assert_eq!(got[0].to_f64(), want[0].to_f64());
}

fn b_weight(b: &mut GraphBuilder, name: &str, v: f32) -> xforge_ir::ValueId {
    b.weight(name, Tensor::scalar_f32(v))
}

#[test]
fn a_node_nothing_runs_is_an_error_naming_it() {
    // Dropout with a training mode known only at run time: random, never compiled
    let mut b = GraphBuilder::new("drop", 17);
    let x = b.input("x", DType::F32, &[2, 3]);
    let t = b.input("training", DType::Bool, &[]);
    let r = b.weight("ratio", Tensor::scalar_f32(0.5));
    let y = b.node(Op::Dropout, &[x, r, t], vec![], ValueType::known(DType::F32, &[2, 3]));
    b.output(y);
    let g = b.finish();
    match Compiler::new("sm_90").fuse(&g) {
        Err(CompileError::Unsupported(u)) => {
            assert_eq!(u.op, "Dropout");
            assert!(u.why.contains("training_mode is known only at run time"), "{u}");
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("compiled a random Dropout"),
    }
}

#[test]
fn a_view_of_a_weight_gets_a_copy() {
    // Unsqueeze of a weight that folding leaves (a graph output): views share buffers, weights
    // have none in the arena, so the output must come out of a kernel or a constant copy
    let mut b = GraphBuilder::new("view", 17);
    let x = b.input("x", DType::F32, &[3]);
    let w = b.weight("w", Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]));
    let y = b.node(Op::Add, &[x, w], vec![], ValueType::known(DType::F32, &[3]));
    b.output(y);
    b.output(w);
    let g = b.finish();
    let c = Compiler::new("sm_90");
    let fused = c.fuse(&g).unwrap();
    let artifact = xforge_compiler::build::build(&[(0, &fused)], None, "sm_90", String::new(), false, "fp32").unwrap();
    // the constant output is copied by a kernel of its own
    let launches = artifact.plans[0].steps.iter().filter(|s| matches!(s, xforge_runtime::Step::Launch { .. })).count();
    assert_eq!(launches, 2, "{:?}", artifact.plans[0].steps);
}

#[test]
fn a_detection_tail_with_data_dependent_counts_compiles_and_computes_the_same() {
    // NonZero → TopK with K from a Shape → Concat → ReduceMax and NonMaxSuppression: every
    // intermediate padded to a static bound, compiled, and trimmed to the valid entries at the end
    let g = xforge_testsuite::graphs::detection_tail();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    let ops: Vec<Op> = fused.graph.nodes.iter().map(|n| n.op).collect();
    for want in [Op::TopKBounded, Op::ConcatBounded, Op::ReduceBounded, Op::Bounded, Op::Prefix] {
        assert!(ops.contains(&want), "no {want} in {ops:?}");
    }
    for n in &fused.graph.nodes {
        for o in n.output_ids() {
            let ty = fused.graph.ty(o);
            assert!(n.op == Op::Prefix || ty.static_shape().is_some(), "{} ({}) gives {ty}", n.name, n.op);
        }
    }
    let kernels = kernels(&fused);
    // none, some and all boxes over the threshold: lengths 0, within and at the bounds
    for passing in [0, 1, 4, 7, 12] {
        let feed = xforge_testsuite::graphs::detection_inputs(passing);
        let want = xforge_ir::interp::run(&g, &feed).unwrap();
        let (got, stats) = run_plan(&fused, &kernels, &feed).unwrap();
        assert_eq!(stats.interpreted, 0, "every group ran as a kernel");
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(a.shape(), b.shape(), "output {k} with {passing} passing");
            assert_eq!(a.to_f64(), b.to_f64(), "output {k} with {passing} passing");
        }
    }
}

#[test]
fn a_detection_tail_builds_an_artifact_at_every_precision() {
    // bounded ops write counts nothing reads (each needs a buffer), and a padded output is cast
    // back before its valid entries are taken (the cast works on the static padded data)
    let g = xforge_testsuite::graphs::detection_tail();
    for p in [xforge_compiler::Precision::Fp32, xforge_compiler::Precision::Fp16, xforge_compiler::Precision::Bf16] {
        let a = Compiler::new("sm_90")
            .precision(p)
            .compile_graph(&g, String::new())
            .unwrap_or_else(|e| panic!("{p:?}: {e}"));
        let outs = &a.plans[0].memory.outputs;
        assert_eq!(outs.len(), 3);
        // boxes and scores come back at their valid length; the maximum is static
        assert!(outs[0].valid.is_some() && outs[1].valid.is_some(), "{p:?}: {outs:?}");
        assert!(outs[2].valid.is_none(), "{p:?}: {outs:?}");
    }
}

#[test]
fn depthwise_convolutions_are_generated_weighted_pools_in_both_layouts() {
    // one filter per channel: the pooling template with the weights, the bias and any epilogue
    // (SiLU here, which cuDNN would not fuse), in NCHW and channels-last, at fp32 and fp16
    let shape = [2, 8, 15, 14];
    for (name, g) in xforge_codegen_ptx::samples::depthwise(DType::F32, &shape) {
        let xs: Vec<usize> = if name.ends_with("nhwc") { vec![2, 15, 14, 8] } else { shape.to_vec() };
        let x = xforge_codegen_ptx::samples::random(DType::F32, &xs, 5);
        let feed = HashMap::from([("x".to_string(), x)]);
        let want = xforge_ir::interp::run(&g, &feed).unwrap()[0].to_f64();
        for p in [xforge_compiler::Precision::Fp32, xforge_compiler::Precision::Fp16] {
            let fused = Compiler::new("sm_90").precision(p).fuse(&g).unwrap();
            let conv = |n: usize| matches!(fused.graph.nodes[n].op, Op::Conv | Op::ConvNhwc);
            let gi = fused.partition.groups.iter().position(|grp| grp.nodes.iter().any(|&n| conv(n))).unwrap();
            let grp = &fused.partition.groups[gi];
            assert_eq!(grp.schedule, Schedule::Pooling, "{name} {p:?}");
            let swish = |n: usize| matches!(fused.graph.nodes[n].op, Op::Swish | Op::Sigmoid);
            assert!(grp.nodes.iter().any(|&n| swish(n)), "{name} {p:?}: SiLU fused");
            if name.ends_with("nhwc") {
                assert!(
                    grp.nodes.iter().any(|&n| fused.graph.nodes[n].op == Op::ConvNhwc),
                    "{name} {p:?}: channels-last"
                );
            }
            let kernels = kernels(&fused);
            assert!(xforge_testsuite::host_kernels::emulable(&kernels[&gi]), "{name} {p:?}");
            if name.ends_with("nhwc") {
                // the constant weight travels tap-major, as the kernel's table (coalesced reads)
                assert_eq!(kernels[&gi].constants.len(), 1, "{name} {p:?}: a tap-major weight table");
            }
            let (got, stats) = run_plan(&fused, &kernels, &feed).unwrap();
            assert_eq!(stats.interpreted, 0, "{name} {p:?}: every group ran as a kernel");
            let got = got[0].to_f64();
            assert_eq!(got.len(), want.len());
            let num: f64 = got.iter().zip(&want).map(|(a, b)| (a - b) * (a - b)).sum();
            let den: f64 = want.iter().map(|b| b * b).sum();
            let rel = (num / den).sqrt();
            let tol = if p == xforge_compiler::Precision::Fp32 { 1e-6 } else { 2e-3 };
            eprintln!("{name} {p:?}: relative L2 {rel:.2e}");
            assert!(rel < tol, "{name} {p:?}: relative L2 {rel}");
        }
    }
}

#[test]
fn max_pools_between_channels_last_convolutions_pool_channels_last() {
    // conv → ReLU → MaxPool 3×3/2 pad 1 → conv → MaxPool 2×2/2 with ceil mode (an odd size: the
    // last window hangs over the edge) in half precision: the stack goes channels-last and the
    // pools with it (no transposes around them), and the generated pools compute what the
    // interpreter does
    let (n, c, s) = (2, 16, 15);
    let mut b = GraphBuilder::new("pools", 17);
    let u = || ValueType::unranked(DType::F32);
    let x = b.input("x", DType::F32, &[n, c, s, s]);
    let w0 = b.weight("w0", xforge_codegen_ptx::samples::random(DType::F32, &[c, c, 3, 3], 3));
    let w1 = b.weight("w1", xforge_codegen_ptx::samples::random(DType::F32, &[c, c, 3, 3], 4));
    let pads = || ("pads", Attr::Ints(vec![1; 4]));
    let c0 = b.node(Op::Conv, &[x, w0], vec![pads()], u());
    let r0 = b.node(Op::Relu, &[c0], vec![], u());
    let k = |v: i64| ("kernel_shape", Attr::Ints(vec![v, v]));
    let st = || ("strides", Attr::Ints(vec![2, 2]));
    let p0 = b.node(Op::MaxPool, &[r0], vec![k(3), st(), pads()], u());
    let c1 = b.node(Op::Conv, &[p0, w1], vec![pads()], u());
    let p1 = b.node(Op::MaxPool, &[c1], vec![k(2), st(), ("ceil_mode", Attr::Int(1))], u());
    b.output(p1);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let feed = HashMap::from([("x".to_string(), xforge_codegen_ptx::samples::random(DType::F32, &[n, c, s, s], 5))]);
    let want = xforge_ir::interp::run(&g, &feed).unwrap()[0].to_f64();
    assert_eq!(want.len(), n * c * 4 * 4);
    let fused = Compiler::new("sm_90").precision(xforge_compiler::Precision::Fp16).fuse(&g).unwrap();
    let count = |op: Op| fused.graph.nodes.iter().filter(|x| x.op == op).count();
    assert_eq!((count(Op::MaxPoolNhwc), count(Op::MaxPool), count(Op::ConvNhwc)), (2, 0, 2));
    // into the stack and out of it
    assert_eq!(count(Op::Transpose), 2);
    let kernels = kernels(&fused);
    for (gi, grp) in fused.partition.groups.iter().enumerate() {
        if grp.nodes.iter().any(|&n| fused.graph.nodes[n].op == Op::MaxPoolNhwc) {
            assert_eq!(grp.schedule, Schedule::Pooling);
            assert!(xforge_testsuite::host_kernels::emulable(&kernels[&gi]));
        }
    }
    let (got, stats) = run_plan(&fused, &kernels, &feed).unwrap();
    // the pools (emulable, above) run as kernels on the host; library convolutions and tiled
    // transposes (barriers) through the interpreter
    assert!(stats.host_kernels >= 2 && stats.interpreted <= 3, "{stats:?}");
    let got = got[0].to_f64();
    let num: f64 = got.iter().zip(&want).map(|(a, b)| (a - b) * (a - b)).sum();
    let den: f64 = want.iter().map(|b| b * b).sum();
    assert!((num / den).sqrt() < 2e-3, "relative L2 {}", (num / den).sqrt());
}

#[test]
fn a_channel_shuffle_is_the_store_of_the_concat_before_it() {
    // ShuffleNet: Concat(a, b) → [n, 2, c, h, w] → Transpose(0, 2, 1, 3, 4) → [n, 2c, h, w]; the
    // Transpose keeps the innermost axis, so it is the Concat kernel's store (one kernel, not a
    // copy and a tiled transpose), and the plan computes what the interpreter does
    let (n, c, h, w) = (2, 6, 5, 7);
    let mut b = GraphBuilder::new("shuffle", 17);
    let x = b.input("x", DType::F32, &[n, c, h, w]);
    let y = b.input("y", DType::F32, &[n, c, h, w]);
    let u = || ValueType::unranked(DType::F32);
    let r = b.node(Op::Relu, &[y], vec![], u());
    let cat = b.node(Op::Concat, &[x, r], vec![("axis", Attr::Int(1))], u());
    let s5 = b.weight("s5", Tensor::from_i64(vec![5], vec![n as i64, 2, c as i64, h as i64, w as i64]));
    let v = b.node(Op::Reshape, &[cat, s5], vec![], u());
    let t = b.node(Op::Transpose, &[v], vec![("perm", Attr::Ints(vec![0, 2, 1, 3, 4]))], u());
    let s4 = b.weight("s4", Tensor::from_i64(vec![4], vec![n as i64, 2 * c as i64, h as i64, w as i64]));
    let out = b.node(Op::Reshape, &[t, s4], vec![], u());
    b.output(out);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    let grp = fused
        .partition
        .groups
        .iter()
        .find(|grp| grp.nodes.iter().any(|&k| fused.graph.nodes[k].op == Op::Concat))
        .unwrap();
    let ops: Vec<Op> = grp.nodes.iter().map(|&k| fused.graph.nodes[k].op).collect();
    assert!(ops.contains(&Op::Transpose), "the shuffle joins the Concat: {ops:?}");
    let feed = HashMap::from([
        ("x".to_string(), xforge_codegen_ptx::samples::random(DType::F32, &[n, c, h, w], 1)),
        ("y".to_string(), xforge_codegen_ptx::samples::random(DType::F32, &[n, c, h, w], 2)),
    ]);
    let (got, want) = host_and_interpreter(&g, &fused, &feed);
    assert_eq!(got[0].shape(), want[0].shape());
    assert_eq!(got[0].to_f64(), want[0].to_f64());
}

#[test]
fn a_rotary_embedding_and_its_key_repeat_are_one_kernel_each() {
    // Llama's attention inputs as transformers exports them: q·cos + rotate_half(q)·sin, with
    // rotate_half(q) = Concat(−q[…, h:], q[…, :h]), and for the keys the same, then repeated for
    // grouped-query attention (Unsqueeze → Expand → Reshape); each chain is one kernel that pulls
    // its elements through the Slices, the Neg, the Concat and the Expand
    let (bs, heads, kv, s, d) = (2, 4, 2, 5, 8);
    let mut b = GraphBuilder::new("rope", 17);
    let q = b.input("q", DType::F32, &[bs, heads, s, d]);
    let k = b.input("k", DType::F32, &[bs, kv, s, d]);
    let u = || ValueType::unranked(DType::F32);
    let table = |b: &mut GraphBuilder, name: &str, f: fn(f64) -> f64| {
        let v: Vec<f64> = (0..s * d).map(|i| f(i as f64 * 0.1)).collect();
        b.weight(name, Tensor::from_f64(DType::F32, vec![1, 1, s, d], &v))
    };
    let cos = table(&mut b, "cos", f64::cos);
    let sin = table(&mut b, "sin", f64::sin);
    let i64s = |b: &mut GraphBuilder, name: &str, v: Vec<i64>| b.weight(name, Tensor::from_i64(vec![v.len()], v));
    let (h0, h1, end, axis) = (
        i64s(&mut b, "h0", vec![0]),
        i64s(&mut b, "h1", vec![d as i64 / 2]),
        i64s(&mut b, "end", vec![i64::MAX]),
        i64s(&mut b, "axis", vec![3]),
    );
    let rope = |b: &mut GraphBuilder, x| {
        let lo = b.node(Op::Slice, &[x, h0, h1, axis], vec![], u());
        let hi = b.node(Op::Slice, &[x, h1, end, axis], vec![], u());
        let neg = b.node(Op::Neg, &[hi], vec![], u());
        let rot = b.node(Op::Concat, &[neg, lo], vec![("axis", Attr::Int(-1))], u());
        let xc = b.node(Op::Mul, &[x, cos], vec![], u());
        let rs = b.node(Op::Mul, &[rot, sin], vec![], u());
        b.node(Op::Add, &[xc, rs], vec![], u())
    };
    let qr = rope(&mut b, q);
    let kr = rope(&mut b, k);
    let ax2 = i64s(&mut b, "ax2", vec![2]);
    let k5 = b.node(Op::Unsqueeze, &[kr, ax2], vec![], u());
    let to5 = i64s(&mut b, "to5", vec![bs as i64, kv as i64, (heads / kv) as i64, s as i64, d as i64]);
    let ke = b.node(Op::Expand, &[k5, to5], vec![], u());
    let to4 = i64s(&mut b, "to4", vec![bs as i64, heads as i64, s as i64, d as i64]);
    let kh = b.node(Op::Reshape, &[ke, to4], vec![], u());
    b.output(qr);
    b.output(kh);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    let kernels_run: Vec<String> = fused
        .partition
        .groups
        .iter()
        .filter(|grp| grp.schedule != Schedule::View)
        .map(|grp| grp.nodes.iter().map(|&n| fused.graph.nodes[n].op.to_string()).collect::<Vec<_>>().join("+"))
        .collect();
    assert_eq!(kernels_run.len(), 2, "one kernel for q, one for k and its repeat: {kernels_run:?}");
    let feed = HashMap::from([
        ("q".to_string(), xforge_codegen_ptx::samples::random(DType::F32, &[bs, heads, s, d], 1)),
        ("k".to_string(), xforge_codegen_ptx::samples::random(DType::F32, &[bs, kv, s, d], 2)),
    ]);
    let (got, want) = host_and_interpreter(&g, &fused, &feed);
    for (o, w) in got.iter().zip(&want) {
        assert_eq!(o.shape(), w.shape());
        assert_eq!(o.to_f64(), w.to_f64());
    }
}

#[test]
fn a_gather_of_one_column_beside_wider_work_broadcasts_in_its_kernel() {
    // a letterbox's sample positions: grid[1, W]·scale[N, 1] + offset[N, 1], where the offset is a
    // Gather of one column of a [N, 2] table; the Gather joins the elementwise kernel and its
    // [N, 1] result must be read at each row of the [N, W] work (it was read at the work's flat
    // index, row i % N: the zoo's YOLO graph kept other boxes)
    let (n, w) = (3, 32);
    let mut b = GraphBuilder::new("letterbox", 17);
    let table = b.input("table", DType::F32, &[n, 2]);
    let scale = b.input("scale", DType::F32, &[n, 1]);
    let u = || ValueType::unranked(DType::F32);
    let grid: Vec<f64> = (0..w).map(|i| i as f64 + 0.5).collect();
    let grid = b.weight("grid", Tensor::from_f64(DType::F32, vec![1, w], &grid));
    let col = b.weight("col", Tensor::from_i64(vec![1], vec![1]));
    let lo = b.weight("lo", Tensor::from_f64(DType::F32, vec![], &[0.0]));
    let at = b.node(Op::Mul, &[grid, scale], vec![], u());
    let off = b.node(Op::Gather, &[table, col], vec![("axis", Attr::Int(1))], u());
    let moved = b.node(Op::Add, &[at, off], vec![], u());
    let clamped = b.node(Op::Max, &[moved, lo], vec![], u());
    b.output(clamped);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    let with_gather = fused
        .partition
        .groups
        .iter()
        .find(|grp| grp.nodes.iter().any(|&k| fused.graph.nodes[k].op == Op::Gather))
        .unwrap();
    assert!(with_gather.nodes.len() > 1, "the Gather is fused with the work that reads it");
    let feed = HashMap::from([
        ("table".to_string(), xforge_codegen_ptx::samples::random(DType::F32, &[n, 2], 3)),
        ("scale".to_string(), xforge_codegen_ptx::samples::random(DType::F32, &[n, 1], 4)),
    ]);
    let (got, want) = host_and_interpreter(&g, &fused, &feed);
    assert_eq!(got[0].shape(), want[0].shape());
    assert_eq!(got[0].to_f64(), want[0].to_f64());
}

#[test]
fn a_channels_last_channel_shuffle_is_the_store_of_its_concat() {
    // ShuffleNet's shuffle on channels-last halves: Concat on the last axis, Reshape [.., 2, C/2],
    // Transpose of the last two axes (a 2×16 block), Reshape back; one kernel that reads each
    // element where the Concat's operands hold it, equal to the interpreter
    let (n, s, h) = (2, 3, 16);
    let mut b = GraphBuilder::new("shuffle", 17);
    let a = b.input("a", DType::F16, &[n, s, s, h]);
    let c = b.input("c", DType::F16, &[n, s, s, h]);
    let u = || ValueType::unranked(DType::F16);
    let ints = |b: &mut GraphBuilder, name: &str, v: Vec<i64>| b.weight(name, Tensor::from_i64(vec![v.len()], v));
    let to5 = ints(&mut b, "to5", vec![n as i64, s as i64, s as i64, 2, h as i64]);
    let to4 = ints(&mut b, "to4", vec![n as i64, s as i64, s as i64, 2 * h as i64]);
    let cat = b.node(Op::Concat, &[a, c], vec![("axis", Attr::Int(-1))], u());
    let r5 = b.node(Op::Reshape, &[cat, to5], vec![], u());
    let t = b.node(Op::Transpose, &[r5], vec![("perm", Attr::Ints(vec![0, 1, 2, 4, 3]))], u());
    let out = b.node(Op::Reshape, &[t, to4], vec![], u());
    b.output(out);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    assert_eq!(kernels_run(&fused), 1, "{}", xforge_passes::fusion::describe(&fused));
    let feed = HashMap::from([
        ("a".to_string(), xforge_codegen_ptx::samples::random(DType::F16, &[n, s, s, h], 5)),
        ("c".to_string(), xforge_codegen_ptx::samples::random(DType::F16, &[n, s, s, h], 6)),
    ]);
    let (got, want) = host_and_interpreter(&g, &fused, &feed);
    assert_eq!(got[0].shape(), want[0].shape());
    assert_eq!(got[0].to_f64(), want[0].to_f64());
}

#[test]
fn an_image_cast_to_half_and_moved_channels_last_is_one_kernel() {
    // a network's entry at half precision: Cast of the f32 image, then its 3 channels moved last
    // for the channels-last convolutions; one elementwise kernel reads the three planes in place
    // (a tiled transpose would idle most of each tile on runs of 3), equal to the interpreter
    let mut b = GraphBuilder::new("entry", 17);
    let x = b.input("x", DType::F32, &[2, 3, 5, 7]);
    let h =
        b.node(Op::Cast, &[x], vec![("to", Attr::Int(DType::F16.onnx_code() as i64))], ValueType::unranked(DType::F16));
    let t = b.node(Op::Transpose, &[h], vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))], ValueType::unranked(DType::F16));
    b.output(t);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    assert_eq!(kernels_run(&fused), 1, "{}", xforge_passes::fusion::describe(&fused));
    let feed = HashMap::from([("x".to_string(), xforge_codegen_ptx::samples::random(DType::F32, &[2, 3, 5, 7], 7))]);
    let (got, want) = host_and_interpreter(&g, &fused, &feed);
    assert_eq!(got[0].shape(), want[0].shape());
    assert_eq!(got[0].to_f64(), want[0].to_f64());
}

#[test]
fn a_rotary_embedding_after_the_head_transpose_is_one_kernel() {
    // newer transformers exports move the heads first before rotating: q [B, S, H·D] → Reshape
    // [B, S, H, D] → Transpose [0, 2, 1, 3], then q·cos + Concat(−q[…, h:], q[…, :h])·sin; the
    // Slices may take the transpose with them (each half transposed alone), and the kernel pulls
    // every element through the row-moving transposes too: one kernel, equal to the interpreter
    let (bs, heads, s, d) = (2, 4, 5, 8);
    let mut b = GraphBuilder::new("rope_t", 17);
    let q = b.input("q", DType::F16, &[bs, s, heads * d]);
    let u = || ValueType::unranked(DType::F16);
    let table = |b: &mut GraphBuilder, name: &str, f: fn(f64) -> f64| {
        let v: Vec<f64> = (0..s * d).map(|i| f(i as f64 * 0.1)).collect();
        b.weight(name, Tensor::from_f64(DType::F16, vec![1, 1, s, d], &v))
    };
    let cos = table(&mut b, "cos", f64::cos);
    let sin = table(&mut b, "sin", f64::sin);
    let i64s = |b: &mut GraphBuilder, name: &str, v: Vec<i64>| b.weight(name, Tensor::from_i64(vec![v.len()], v));
    let (h0, h1, end, axis) = (
        i64s(&mut b, "h0", vec![0]),
        i64s(&mut b, "h1", vec![d as i64 / 2]),
        i64s(&mut b, "end", vec![i64::MAX]),
        i64s(&mut b, "axis", vec![3]),
    );
    let to4 = i64s(&mut b, "to4", vec![bs as i64, s as i64, heads as i64, d as i64]);
    let r = b.node(Op::Reshape, &[q, to4], vec![], u());
    let x = b.node(Op::Transpose, &[r], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))], u());
    let lo = b.node(Op::Slice, &[x, h0, h1, axis], vec![], u());
    let hi = b.node(Op::Slice, &[x, h1, end, axis], vec![], u());
    let neg = b.node(Op::Neg, &[hi], vec![], u());
    let rot = b.node(Op::Concat, &[neg, lo], vec![("axis", Attr::Int(-1))], u());
    let xc = b.node(Op::Mul, &[x, cos], vec![], u());
    let rs = b.node(Op::Mul, &[rot, sin], vec![], u());
    let out = b.node(Op::Add, &[xc, rs], vec![], u());
    b.output(out);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    assert_eq!(kernels_run(&fused), 1, "{}", xforge_passes::fusion::describe(&fused));
    let feed =
        HashMap::from([("q".to_string(), xforge_codegen_ptx::samples::random(DType::F16, &[bs, s, heads * d], 8))]);
    let (got, want) = host_and_interpreter(&g, &fused, &feed);
    assert_eq!(got[0].shape(), want[0].shape());
    assert!(xforge_ir::tensor::rel_l2(&got[0], &want[0]) < 1e-3);
}

#[test]
fn constant_resizes_are_unrolled_taps_that_compute_what_the_interpreter_does() {
    // a segmentation head's bilinear upsampling, nearest doubling, align_corners and cubic, each
    // with an epilogue: one kernel from the resize template (its tap tables compiled in), run on
    // the host against the interpreter
    let cases: Vec<(&str, Vec<(&str, Attr)>, [usize; 4])> = vec![
        ("linear", vec![("mode", Attr::Str("linear".into()))], [2, 3, 10, 14]),
        (
            "nearest",
            vec![
                ("mode", Attr::Str("nearest".into())),
                ("coordinate_transformation_mode", Attr::Str("asymmetric".into())),
                ("nearest_mode", Attr::Str("floor".into())),
            ],
            [2, 3, 10, 14],
        ),
        (
            "align_corners",
            vec![
                ("mode", Attr::Str("linear".into())),
                ("coordinate_transformation_mode", Attr::Str("align_corners".into())),
            ],
            [2, 3, 13, 9],
        ),
        ("cubic", vec![("mode", Attr::Str("cubic".into()))], [2, 3, 8, 11]),
    ];
    for (name, attrs, out) in cases {
        let mut b = GraphBuilder::new("resize", 19);
        let x = b.input("x", DType::F32, &[2, 3, 5, 7]);
        let sizes = b.weight("sizes", Tensor::from_i64(vec![4], out.iter().map(|&d| d as i64).collect()));
        let u = || ValueType::unranked(DType::F32);
        let y = b.node_multi(Op::Resize, &[Some(x), None, None, Some(sizes)], attrs, vec![u()])[0];
        let r = b.node(Op::Relu, &[y], vec![], u());
        b.output(r);
        let mut g = b.finish();
        xforge_ir::infer::infer_graph(&mut g).unwrap();
        let fused = Compiler::new("sm_90").fuse(&g).unwrap();
        let groups: Vec<_> = fused.partition.groups.iter().filter(|grp| grp.schedule != Schedule::View).collect();
        assert_eq!(groups.len(), 1, "{name}: one kernel");
        assert!(xforge_kernel::resize::applies(&fused.graph, groups[0]), "{name}: the resize template runs it");
        let feed =
            HashMap::from([("x".to_string(), xforge_codegen_ptx::samples::random(DType::F32, &[2, 3, 5, 7], 3))]);
        let want = xforge_ir::interp::run(&g, &feed).unwrap();
        let (got, stats) = run_plan(&fused, &kernels(&fused), &feed).unwrap();
        assert_eq!(stats.interpreted, 0, "{name}: every group ran as a kernel");
        assert_eq!(got[0].shape(), &out[..], "{name}");
        let worst = got[0].to_f64().iter().zip(want[0].to_f64()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-5, "{name}: off by {worst}");
    }
}

#[test]
fn a_merged_gate_and_up_projection_feeds_swiglu_without_a_copy() {
    // Llama's MLP: silu(x·Wg) · (x·Wu). The two projections become one GEMM and a Split; the
    // Split is not a kernel of its own: SwiGLU's kernel reads both halves where the GEMM wrote them
    let (rows, d, f) = (6, 16, 24);
    let mut b = GraphBuilder::new("swiglu", 17);
    let x = b.input("x", DType::F32, &[rows, d]);
    let u = || ValueType::unranked(DType::F32);
    let wg = b.weight("wg", xforge_codegen_ptx::samples::random(DType::F32, &[d, f], 4));
    let wu = b.weight("wu", xforge_codegen_ptx::samples::random(DType::F32, &[d, f], 5));
    let gate = b.node(Op::MatMul, &[x, wg], vec![], u());
    let up = b.node(Op::MatMul, &[x, wu], vec![], u());
    let s = b.node(Op::Sigmoid, &[gate], vec![], u());
    let silu = b.node(Op::Mul, &[gate, s], vec![], u());
    let y = b.node(Op::Mul, &[silu, up], vec![], u());
    b.output(y);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    let groups: Vec<String> = fused
        .partition
        .groups
        .iter()
        .filter(|grp| grp.schedule != Schedule::View)
        .map(|grp| grp.nodes.iter().map(|&n| fused.graph.nodes[n].op.to_string()).collect::<Vec<_>>().join("+"))
        .collect();
    assert_eq!(groups.len(), 2, "one GEMM, one SwiGLU kernel: {groups:?}");
    assert!(groups[1].starts_with("Split+"), "the Split is read where it lies: {groups:?}");
    let feed = HashMap::from([("x".to_string(), xforge_codegen_ptx::samples::random(DType::F32, &[rows, d], 6))]);
    let want = xforge_ir::interp::run(&g, &feed).unwrap();
    let (got, _) = run_plan(&fused, &kernels(&fused), &feed).unwrap();
    let worst = got[0].to_f64().iter().zip(want[0].to_f64()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-5, "off by {worst}");
}

#[test]
fn a_concat_with_its_batch_norm_moves_each_operand_in_its_own_loop() {
    // DenseNet: Concat of earlier features (channels last), then batch norm and ReLU; and an
    // NCHW Concat of odd sizes (no vectors): the concat template, equal to the interpreter
    for (dt, shapes, axis) in [
        (DType::F16, vec![[2, 3, 5, 16], [2, 3, 5, 8], [2, 3, 5, 24]], 3i64),
        (DType::F32, vec![[2, 3, 5, 7], [2, 1, 5, 7], [2, 5, 5, 7]], 1),
    ] {
        let mut b = GraphBuilder::new("cat", 17);
        let xs: Vec<_> = shapes.iter().enumerate().map(|(k, s)| b.input(&format!("x{k}"), dt, s)).collect();
        let u = || ValueType::unranked(dt);
        let cat = b.node(Op::Concat, &xs, vec![("axis", Attr::Int(axis))], u());
        let c_out: usize = shapes.iter().map(|s| s[axis as usize]).sum();
        let mut per_channel = vec![1usize; 4];
        per_channel[axis as usize] = c_out;
        let scale = b.weight("scale", xforge_codegen_ptx::samples::random(dt, &per_channel, 7));
        let shift = b.weight("shift", xforge_codegen_ptx::samples::random(dt, &per_channel, 8));
        let m = b.node(Op::Mul, &[cat, scale], vec![], u());
        let a = b.node(Op::Add, &[m, shift], vec![], u());
        let r = b.node(Op::Relu, &[a], vec![], u());
        b.output(r);
        let mut g = b.finish();
        xforge_ir::infer::infer_graph(&mut g).unwrap();
        let fused = Compiler::new("sm_90").fuse(&g).unwrap();
        let groups: Vec<_> = fused.partition.groups.iter().filter(|grp| grp.schedule != Schedule::View).collect();
        assert_eq!(groups.len(), 1, "{dt}: one kernel");
        assert!(xforge_kernel::concat::applies(&fused.graph, groups[0]), "{dt}: the concat template runs it");
        let feed: HashMap<String, Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(k, s)| (format!("x{k}"), xforge_codegen_ptx::samples::random(dt, s, k as u64 + 1)))
            .collect();
        let want = xforge_ir::interp::run(&g, &feed).unwrap();
        let (got, stats) = run_plan(&fused, &kernels(&fused), &feed).unwrap();
        assert_eq!(stats.interpreted, 0, "{dt}: every group ran as a kernel");
        assert_eq!(got[0].shape(), want[0].shape());
        let worst = got[0].to_f64().iter().zip(want[0].to_f64()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst <= if dt == DType::F16 { 2e-3 } else { 1e-6 }, "{dt}: off by {worst}");
    }
}

#[test]
fn zero_size_values_compile_and_compute_the_same() {
    // valid ONNX that once reached MLIR as memref<0x…> against memref<1x…> (exit 1): a [0, 5]
    // Softmax, LayerNorm over [0, 8] rows, ReduceMax/ReduceSum over an empty axis; they run as
    // generic kernels, whose loops run no steps (a reduction of nothing gives its identity)
    let one = |op: Op, shape: &[usize], attrs: Vec<(&str, Attr)>| {
        let mut b = GraphBuilder::new("z", 17);
        let x = b.input("x", DType::F32, shape);
        let mut ins = vec![x];
        if op == Op::LayerNormalization {
            ins.push(b.weight("s", Tensor::from_f64(DType::F32, vec![shape[1]], &vec![1.0; shape[1]])));
        }
        let y = b.node(op, &ins, attrs, ValueType::unranked(DType::F32));
        b.output(y);
        let mut g = b.finish();
        xforge_ir::infer::infer_graph(&mut g).unwrap();
        g
    };
    let graphs = [
        one(Op::Softmax, &[0, 5], vec![]),
        one(Op::LayerNormalization, &[0, 8], vec![("axis", Attr::Int(-1))]),
        one(Op::ReduceMax, &[3, 0], vec![("axes", Attr::Ints(vec![1]))]),
        one(Op::ReduceSum, &[3, 0], vec![("keepdims", Attr::Int(0))]),
    ];
    let fused_samples = [
        xforge_codegen_ptx::samples::column_sum(DType::F32, 0, 8),
        xforge_codegen_ptx::samples::scan_along(DType::F32, &[2, 0, 3], 1, false),
    ];
    for g in graphs.into_iter().chain(fused_samples) {
        let what = format!("{} {}", g.name, g.nodes[0].op);
        Compiler::new("sm_90").compile_graph(&g, String::new()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let fused = Compiler::new("sm_90").fuse(&g).unwrap();
        let x = Tensor::zeros(DType::F32, g.ty(g.inputs[0]).static_shape().unwrap());
        let feed = HashMap::from([("x".to_string(), x)]);
        let want = xforge_ir::interp::run(&g, &feed).unwrap();
        let (got, _) = run_plan(&fused, &kernels(&fused), &feed).unwrap();
        assert_eq!(got[0].shape(), want[0].shape(), "{what}");
        assert_eq!(got[0].to_f64(), want[0].to_f64(), "{what}");
    }
}

#[test]
fn a_20000_node_chain_compiles_in_bounded_groups() {
    // once a stack overflow (the e-graph unloader recursed along the chain), 5.8 GB of
    // extraction state and a partition quadratic in the chain's length (hostile-input issue)
    let mut b = GraphBuilder::new("chain", 17);
    let mut x = b.input("x", DType::F32, &[4, 4]);
    for i in 0..20_000 {
        let op = if i % 2 == 0 { Op::Neg } else { Op::Relu };
        x = b.node(op, &[x], vec![], ValueType::unranked(DType::F32));
    }
    b.output(x);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    let sizes: Vec<usize> = fused.partition.groups.iter().map(|grp| grp.nodes.len()).collect();
    assert!(sizes.iter().all(|&n| n <= xforge_passes::knobs::MAX_GROUP_NODES), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 20_000);
    Compiler::new("sm_90").compile_graph(&g, String::new()).unwrap();
}

#[test]
fn a_cumsum_axis_beyond_the_rank_is_an_error_not_a_panic() {
    // hostile input: CumSum over axis 5 (and -3) of a rank-2 tensor
    for axis in [5i64, -3] {
        let mut b = GraphBuilder::new("cumsum", 17);
        let x = b.input("x", DType::F32, &[4, 5]);
        let ax = b.weight("axis", Tensor::from_i64(vec![], vec![axis]));
        let y = b.node(Op::CumSum, &[x, ax], vec![], ValueType::unranked(DType::F32));
        b.output(y);
        let g = b.finish();
        let e = Compiler::new("sm_90").compile_graph(&g, "0".into()).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("axis") && e.contains("CumSum"), "{e}");
    }
}

#[test]
fn a_shifted_window_block_is_rolls_in_one_kernel_and_one_attention() {
    // Swin's shifted-window attention as torchvision exports it: roll (Slices and a Concat per
    // axis), window partition, QKV, q·c·kᵀ + relative bias, the shift mask between reshapes over
    // (images, windows), softmax, ·v, window merge, roll back, residual. The rolls become
    // Gathers that fuse with the partition (one kernel) and with the residual (one kernel); the
    // attention is one Attention over images of windows × heads; the plan computes what the
    // interpreter computes.
    let (bn, hw, ws, c, heads) = (2usize, 8usize, 4usize, 8usize, 2usize);
    let (nw, s, d) = ((hw / ws) * (hw / ws), ws * ws, c / heads);
    let n = bn * nw;
    let mut b = GraphBuilder::new("swin_block", 17);
    let x = b.input("x", DType::F32, &[bn, hw, hw, c]);
    let u = || ValueType::unranked(DType::F32);
    let ints = |b: &mut GraphBuilder, name: &str, v: &[usize]| {
        b.weight(name, Tensor::from_i64(vec![v.len()], v.iter().map(|&d| d as i64).collect()))
    };
    let vals = |k: usize, seed: f64| (0..k).map(|i| ((i as f64) * 0.37 + seed).sin() * 0.5).collect::<Vec<f64>>();
    // roll by `by` along axes 1 and 2: Concat(Slice(x, by..), Slice(x, ..by))
    let roll = |b: &mut GraphBuilder, x, by: usize, tag: &str| {
        let mut y = x;
        for axis in [1usize, 2] {
            let a = ints(b, &format!("{tag}a{axis}"), &[axis]);
            let (s0, e0) = (ints(b, &format!("{tag}s{axis}"), &[by]), ints(b, &format!("{tag}e{axis}"), &[hw]));
            let (s1, e1) = (ints(b, &format!("{tag}z{axis}"), &[0]), ints(b, &format!("{tag}b{axis}"), &[by]));
            let p = b.node(Op::Slice, &[y, s0, e0, a], vec![], u());
            let q = b.node(Op::Slice, &[y, s1, e1, a], vec![], u());
            y = b.node(Op::Concat, &[p, q], vec![("axis", Attr::Int(axis as i64))], u());
        }
        y
    };
    let perm = |p: &[i64]| vec![("perm", Attr::Ints(p.to_vec()))];
    let xr = roll(&mut b, x, ws / 2, "r");
    let s6 = ints(&mut b, "s6", &[bn, hw / ws, ws, hw / ws, ws, c]);
    let x6 = b.node(Op::Reshape, &[xr, s6], vec![], u());
    let xt = b.node(Op::Transpose, &[x6], perm(&[0, 1, 3, 2, 4, 5]), u());
    let s3 = ints(&mut b, "s3", &[n, s, c]);
    let win = b.node(Op::Reshape, &[xt, s3], vec![], u());
    let wqkv = b.weight("wqkv", Tensor::from_f64(DType::F32, vec![c, 3 * c], &vals(c * 3 * c, 0.2)));
    let qkv = b.node(Op::MatMul, &[win, wqkv], vec![], u());
    let s5 = ints(&mut b, "s5", &[n, s, 3, heads, d]);
    let q5 = b.node(Op::Reshape, &[qkv, s5], vec![], u());
    let qt = b.node(Op::Transpose, &[q5], perm(&[2, 0, 3, 1, 4]), u());
    let mut qkv3 = vec![];
    for k in 0..3 {
        let i = b.weight(&format!("i{k}"), Tensor::from_i64(vec![], vec![k]));
        qkv3.push(b.node(Op::Gather, &[qt, i], vec![("axis", Attr::Int(0))], u()));
    }
    let scale = b.weight("scale", Tensor::scalar_f32(1.0 / (d as f32).sqrt()));
    let qs = b.node(Op::Mul, &[qkv3[0], scale], vec![], u());
    let kt = b.node(Op::Transpose, &[qkv3[1]], perm(&[0, 1, 3, 2]), u());
    let sc = b.node(Op::MatMul, &[qs, kt], vec![], u());
    let bias = b.weight("bias", Tensor::from_f64(DType::F32, vec![heads, s, s], &vals(heads * s * s, 1.3)));
    let sb = b.node(Op::Add, &[sc, bias], vec![], u());
    let s5m = ints(&mut b, "s5m", &[bn, nw, heads, s, s]);
    let sw = b.node(Op::Reshape, &[sb, s5m], vec![], u());
    let m: Vec<f64> = vals(nw * s * s, 0.9).iter().map(|&v| if v > 0.25 { -100.0 } else { 0.0 }).collect();
    let mask = b.weight("mask", Tensor::from_f64(DType::F32, vec![nw, 1, s, s], &m));
    let sm = b.node(Op::Add, &[sw, mask], vec![], u());
    let s4 = ints(&mut b, "s4", &[n, heads, s, s]);
    let sm4 = b.node(Op::Reshape, &[sm, s4], vec![], u());
    let p = b.node(Op::Softmax, &[sm4], vec![("axis", Attr::Int(-1))], u());
    let o = b.node(Op::MatMul, &[p, qkv3[2]], vec![], u());
    let ot = b.node(Op::Transpose, &[o], perm(&[0, 2, 1, 3]), u());
    let s6b = ints(&mut b, "s6b", &[bn, hw / ws, hw / ws, ws, ws, c]);
    let o6 = b.node(Op::Reshape, &[ot, s6b], vec![], u());
    let o6t = b.node(Op::Transpose, &[o6], perm(&[0, 1, 3, 2, 4, 5]), u());
    let s4b = ints(&mut b, "s4b", &[bn, hw, hw, c]);
    let merged = b.node(Op::Reshape, &[o6t, s4b], vec![], u());
    let back = roll(&mut b, merged, hw - ws / 2, "b");
    let y = b.node(Op::Add, &[back, x], vec![], u());
    b.output(y);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    let ops = |grp: &xforge_passes::fusion::FusionGroup| -> Vec<Op> {
        grp.nodes.iter().map(|&k| fused.graph.nodes[k].op).collect()
    };
    let groups: Vec<Vec<Op>> = fused.partition.groups.iter().map(ops).collect();
    assert!(!fused.graph.nodes.iter().any(|n| matches!(n.op, Op::Softmax | Op::Concat | Op::Slice)), "{groups:?}");
    assert_eq!(fused.graph.nodes.iter().filter(|n| n.op == Op::Attention).count(), 1);
    let two_rolls = |o: &Vec<Op>| o.iter().filter(|&&x| x == Op::Gather).count() == 2;
    assert!(groups.iter().any(|o| two_rolls(o) && o.contains(&Op::Transpose)), "roll + partition: {groups:?}");
    assert!(groups.iter().any(|o| two_rolls(o) && o.contains(&Op::Add)), "roll back + residual: {groups:?}");
    let feed = HashMap::from([("x".to_string(), xforge_codegen_ptx::samples::random(DType::F32, &[bn, hw, hw, c], 3))]);
    let want = xforge_ir::interp::run(&g, &feed).unwrap();
    let (got, _) = run_plan(&fused, &kernels(&fused), &feed).unwrap();
    let rel = xforge_ir::tensor::rel_l2(&got[0], &want[0]);
    assert!(rel < 1e-6, "relative L2 {rel}");
}

#[test]
fn a_long_chain_of_gathers_fuses_in_bounded_groups_that_compute_the_same() {
    // 600 shape-keeping Gathers (rolls) in a row: each joins the group before it, up to the group
    // bound, and each kernel pulls its elements through its chain once (not once per link)
    let n = 600;
    let mut b = GraphBuilder::new("gather_chain", 17);
    let x = b.input("x", DType::F32, &[4, 16]);
    let idx = b.weight("roll", Tensor::from_i64(vec![16], (0..16).map(|i| (i + 3) % 16).collect()));
    let mut y = x;
    for _ in 0..n {
        y = b.node(Op::Gather, &[y, idx], vec![("axis", Attr::Int(1))], ValueType::unranked(DType::F32));
    }
    let r = b.node(Op::Relu, &[y], vec![], ValueType::unranked(DType::F32));
    b.output(r);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    let sizes: Vec<usize> = fused.partition.groups.iter().map(|grp| grp.nodes.len()).collect();
    assert!(sizes.len() >= 2 && sizes.iter().all(|&s| s <= 512), "{sizes:?}");
    let ks = kernels(&fused);
    // the kernel of the longest chain stays linear in its length (IR lines per node)
    let longest = fused.partition.groups.iter().enumerate().max_by_key(|(_, grp)| grp.nodes.len()).unwrap().0;
    let lines = ks[&longest].module.lines().count();
    assert!(lines < 60 * sizes[longest], "{lines} lines for {} nodes", sizes[longest]);
    let feed = HashMap::from([("x".to_string(), xforge_codegen_ptx::samples::random(DType::F32, &[4, 16], 5))]);
    let want = xforge_ir::interp::run(&g, &feed).unwrap();
    let (got, stats) = run_plan(&fused, &ks, &feed).unwrap();
    assert_eq!(stats.interpreted, 0);
    assert_eq!(got[0].to_f64(), want[0].to_f64());
}

#[test]
fn eight_bit_integers_are_numbers_in_the_elementwise_template() {
    // an image's u8 pixels (and i8 data) cast to f32 and scaled: the template read every
    // 8-bit type as a bool (x != 0), which made 200 into 1.0 and failed to verify
    for (dt, values) in [
        (DType::U8, (0..32).map(|i| (i * 8) as f64).collect::<Vec<_>>()),
        (DType::I8, (0..32).map(|i| (i * 8 - 128) as f64).collect()),
    ] {
        let mut b = GraphBuilder::new("pixels", 17);
        let x = b.input("x", dt, &[4, 8]);
        let f = b.node(Op::Cast, &[x], vec![("to", Attr::Int(1))], ValueType::known(DType::F32, &[4, 8]));
        let k = b_weight(&mut b, "k", 1.0 / 255.0);
        let y = b.node(Op::Mul, &[f, k], vec![], ValueType::known(DType::F32, &[4, 8]));
        b.output(y);
        let g = b.finish();
        let fused = Compiler::new("sm_90").fuse(&g).unwrap();
        let feed = HashMap::from([("x".to_string(), Tensor::from_f64(dt, vec![4, 8], &values))]);
        let want = xforge_ir::interp::run(&g, &feed).unwrap();
        let (got, stats) = run_plan(&fused, &kernels(&fused), &feed).unwrap();
        assert_eq!((stats.interpreted, stats.host_kernels), (0, 1), "{dt}: one kernel");
        assert_eq!(got[0].to_f64(), want[0].to_f64(), "{dt}");
    }
}

#[test]
fn a_bool_mask_cast_to_float_is_a_number_in_the_elementwise_template() {
    // x > 0.5 cast to f32 and scaled: the comparison is a generic kernel, so the mask reaches the
    // template as a bool parameter (an i1), and the Cast passed the i1 on as a float — MLIR
    // refused the kernel
    let mut b = GraphBuilder::new("mask", 17);
    let x = b.input("x", DType::F32, &[4, 8]);
    let th = b_weight(&mut b, "th", 0.5);
    let m = b.node(Op::Greater, &[x, th], vec![], ValueType::known(DType::Bool, &[4, 8]));
    let f = b.node(Op::Cast, &[m], vec![("to", Attr::Int(1))], ValueType::known(DType::F32, &[4, 8]));
    let k = b_weight(&mut b, "k", 3.0);
    let y = b.node(Op::Mul, &[f, k], vec![], ValueType::known(DType::F32, &[4, 8]));
    b.output(y);
    let g = b.finish();
    let compiler = Compiler::new("sm_90");
    compiler.compile_graph(&g, "mask".into()).expect("the artifact builds");
    let fused = compiler.fuse(&g).unwrap();
    let v: Vec<f64> = (0..32).map(|i| ((i * 5) % 9) as f64 * 0.25).collect();
    let feed = HashMap::from([("x".to_string(), Tensor::from_f64(DType::F32, vec![4, 8], &v))]);
    let want = xforge_ir::interp::run(&g, &feed).unwrap();
    let (got, _) = run_plan(&fused, &kernels(&fused), &feed).unwrap();
    assert_eq!(got[0].to_f64(), want[0].to_f64());
    assert!(want[0].to_f64().iter().any(|&e| e == 3.0) && want[0].to_f64().iter().any(|&e| e == 0.0));
}

#[test]
fn an_int4_weight_behind_a_dequantize_folds_and_computes_the_same() {
    // weight-only 4-bit quantization: an int4 weight in blocks of 2 rows along axis 0, dequantized
    // into the MatMul; the constant DequantizeLinear folds to an f32 weight, nothing 4-bit is left
    let (k, n) = (4, 3);
    let mut b = GraphBuilder::new("w4", 21);
    let x = b.input("x", DType::F32, &[2, k]);
    let codes: Vec<i128> = (0..k * n).map(|i| (i as i128 * 5) % 16 - 8).collect();
    let w = b.weight("w", Tensor::from_i128(DType::I4, vec![k, n], &codes));
    let s = b.weight("s", Tensor::from_f64(DType::F32, vec![2, n], &[0.5, 0.25, 1.0, 0.125, 2.0, 0.75]));
    let z = b.weight("z", Tensor::from_i128(DType::I4, vec![2, n], &[0, 1, -1, 2, -2, 3]));
    let wf = b.node(
        Op::DequantizeLinear,
        &[w, s, z],
        vec![("axis", Attr::Int(0)), ("block_size", Attr::Int(2))],
        ValueType::known(DType::F32, &[k, n]),
    );
    let y = b.node(Op::MatMul, &[x, wf], vec![], ValueType::known(DType::F32, &[2, n]));
    b.output(y);
    let g = b.finish();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    assert!(fused.graph.values.iter().all(|v| !v.ty.dtype.is_narrow()), "no 4-bit value is left");
    let feed = HashMap::from([(
        "x".to_string(),
        Tensor::from_f64(DType::F32, vec![2, k], &(0..2 * k).map(|i| i as f64 - 3.5).collect::<Vec<_>>()),
    )]);
    let want = xforge_ir::interp::run(&g, &feed).unwrap();
    let (got, _) = run_plan(&fused, &kernels(&fused), &feed).unwrap();
    assert_eq!(got[0].to_f64(), want[0].to_f64());
    // by hand: the weight is (code - zero point) · scale of its block of rows
    let (sv, zv) = ([0.5, 0.25, 1.0, 0.125, 2.0, 0.75], [0.0, 1.0, -1.0, 2.0, -2.0, 3.0]);
    let wv = |r: usize, c: usize| (codes[r * n + c] as f64 - zv[(r / 2) * n + c]) * sv[(r / 2) * n + c];
    let xv = feed["x"].to_f64();
    let by_hand: Vec<f64> = (0..2 * n).map(|o| (0..k).map(|i| xv[(o / n) * k + i] * wv(i, o % n)).sum()).collect();
    assert_eq!(want[0].to_f64(), by_hand);
}

#[test]
fn an_fp8_value_at_run_time_is_refused_by_name() {
    // an FP8 value a caller sees (a graph output) has no kernel yet: a clear error naming the
    // node and the value, not a kernel that reads bytes as something else
    let mut b = GraphBuilder::new("f8", 21);
    let x = b.input("x", DType::F32, &[4]);
    let s = b_weight(&mut b, "s", 0.5);
    let z = b.weight("z", Tensor::from_f64(DType::F8E4M3FN, vec![], &[0.0]));
    let q = b.node(Op::QuantizeLinear, &[x, s, z], vec![], ValueType::known(DType::F8E4M3FN, &[4]));
    let y = b.node(Op::DequantizeLinear, &[q, s, z], vec![], ValueType::known(DType::F32, &[4]));
    b.output(y);
    b.output(q);
    let g = b.finish();
    match Compiler::new("sm_90").fuse(&g) {
        Err(CompileError::Dtype(u)) => {
            assert_eq!((u.op.as_str(), u.dtype), ("QuantizeLinear", DType::F8E4M3FN), "{u}");
            assert!(u.to_string().contains("is f8e4m3fn"), "{u}");
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("compiled an FP8 activation"),
    }
    // the interpreter computes it: x / 0.5 in E4M3FN, times 0.5
    let feed = HashMap::from([("x".to_string(), Tensor::from_f64(DType::F32, vec![4], &[1.0, -3.3, 500.0, 0.01]))]);
    let y = xforge_ir::interp::run(&g, &feed).unwrap();
    assert_eq!(y[0].to_f64(), [1.0, -3.25, 224.0, 0.009765625]);
}

#[test]
fn an_fp8_quantize_dequantize_pair_compiles_as_float_rounding_that_matches_the_interpreter() {
    // QuantizeLinear to E4M3FN read only by a DequantizeLinear: the FP8 value is carried as the
    // float it stands for, rounded to E4M3FN's grid by float ops in one fused kernel; every
    // element equals the interpreter's (ties, subnormals, saturation, both signs)
    let n = 4096;
    let mut b = GraphBuilder::new("fp8", 21);
    let x = b.input("x", DType::F32, &[n]);
    let s = b_weight(&mut b, "s", 0.25);
    let z = b.weight("z", Tensor::from_f64(DType::F8E4M3FN, vec![], &[0.0]));
    let q = b.node(Op::QuantizeLinear, &[x, s, z], vec![], ValueType::known(DType::F8E4M3FN, &[n]));
    let y = b.node(Op::DequantizeLinear, &[q, s, z], vec![], ValueType::known(DType::F32, &[n]));
    b.output(y);
    let g = b.finish();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    assert!(fused.graph.values.iter().all(|v| !v.ty.dtype.is_narrow()), "no FP8 value is left");
    // magnitudes over E4M3FN's whole range (·0.25 scale): exact grid points, midpoints, beyond 448
    let v: Vec<f64> = (0..n)
        .map(|i| {
            let m = 2f64.powf((i % 512) as f64 / 512.0 * 22.0 - 12.0) * (1.0 + (i / 512) as f64 / 16.0);
            if i % 2 == 0 {
                m
            } else {
                -m
            }
        })
        .chain([0.25 * 1.0625, 0.25 * 1.1875, 0.25 * 464.0, 0.0])
        .take(n)
        .collect();
    let feed = HashMap::from([("x".to_string(), Tensor::from_f64(DType::F32, vec![n], &v))]);
    let want = xforge_ir::interp::run(&g, &feed).unwrap();
    let (got, stats) = run_plan(&fused, &kernels(&fused), &feed).unwrap();
    assert_eq!((stats.interpreted, stats.host_kernels), (0, 1), "one fused kernel");
    let (gv, wv) = (got[0].to_f64(), want[0].to_f64());
    let bad: Vec<_> = (0..n).filter(|&i| gv[i] != wv[i]).map(|i| (v[i], gv[i], wv[i])).take(5).collect();
    assert!(bad.is_empty(), "(x, compiled, interpreter): {bad:?}");
}

#[test]
fn a_native_rotary_embedding_with_position_ids_is_one_kernel() {
    // opset 23's RotaryEmbedding on a 3-D fp16 input, partial rotation: written out as Slices,
    // products and a Concat (the cache rows Gathered by position), it fuses into one kernel that
    // computes what the interpreter computes
    let (bs, s, heads, d) = (2, 6, 4, 16);
    let mut b = GraphBuilder::new("rope", 23);
    let x = b.input("x", DType::F16, &[bs, s, heads * d]);
    let pos = b.input("pos", DType::I64, &[bs, s]);
    let table = |b: &mut GraphBuilder, name: &str, f: fn(f64) -> f64| {
        let v: Vec<f64> = (0..32 * 4).map(|i| f(i as f64 * 0.1)).collect();
        b.weight(name, Tensor::from_f64(DType::F16, vec![32, 4], &v))
    };
    let (cos, sin) = (table(&mut b, "cos", f64::cos), table(&mut b, "sin", f64::sin));
    let y = b.node(
        Op::RotaryEmbedding,
        &[x, cos, sin, pos],
        vec![("num_heads", Attr::Int(heads as i64)), ("rotary_embedding_dim", Attr::Int(8))],
        ValueType::unranked(DType::F16),
    );
    b.output(y);
    let mut g = b.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    assert_eq!(kernels_run(&fused), 1, "{}", xforge_passes::fusion::describe(&fused));
    let positions: Vec<i64> = (0..(bs * s) as i64).map(|i| (i * 7) % 32).collect();
    let feed = HashMap::from([
        ("x".to_string(), xforge_codegen_ptx::samples::random(DType::F16, &[bs, s, heads * d], 3)),
        ("pos".to_string(), Tensor::from_i64(vec![bs, s], positions)),
    ]);
    let (got, want) = host_and_interpreter(&g, &fused, &feed);
    assert!(xforge_ir::tensor::rel_l2(&got[0], &want[0]) < 1e-3);
}

#[test]
fn linear_attention_runs_its_recurrence_in_one_kernel() {
    // gated delta rule (Qwen3-Next / gated DeltaNet), grouped query heads, per-head decay, a past
    // state; and GLA-style per-key decay: one kernel each, outputs and the present state equal to
    // the interpreter's
    let (bs, t, hq, hk, dk, dv) = (2, 9, 4, 2, 16, 8);
    for (rule, decay_w, dt) in [("gated_delta", hk, DType::F32), ("gated", hk * dk, DType::F16)] {
        let mut b = GraphBuilder::new("la", 27);
        let q = b.input("q", dt, &[bs, t, hq * dk]);
        let k = b.input("k", dt, &[bs, t, hk * dk]);
        let v = b.input("v", dt, &[bs, t, hk * dv]);
        let past = b.input("past", DType::F32, &[bs, hk, dk, dv]);
        let decay = b.input("decay", dt, &[bs, t, decay_w]);
        let beta = (rule == "gated_delta").then(|| b.input("beta", dt, &[bs, t, hk]));
        let o = b.node_multi(
            Op::LinearAttention,
            &[Some(q), Some(k), Some(v), Some(past), Some(decay), beta],
            vec![
                ("q_num_heads", Attr::Int(hq as i64)),
                ("kv_num_heads", Attr::Int(hk as i64)),
                ("update_rule", Attr::Str(rule.into())),
            ],
            vec![ValueType::unranked(dt), ValueType::unranked(DType::F32)],
        );
        b.output(o[0]);
        b.output(o[1]);
        let mut g = b.finish();
        xforge_ir::infer::infer_graph(&mut g).unwrap();
        let fused = Compiler::new("sm_90").fuse(&g).unwrap();
        assert_eq!(kernels_run(&fused), 1, "{rule}: {}", xforge_passes::fusion::describe(&fused));
        let random = |shape: &[usize], seed, lo: f64, hi: f64| {
            let r = xforge_codegen_ptx::samples::random(DType::F64, shape, seed);
            Tensor::from_f64(
                dt,
                shape.to_vec(),
                &r.to_f64().iter().map(|x| lo + (hi - lo) * (x + 2.0) / 4.0).collect::<Vec<_>>(),
            )
        };
        let mut feed = HashMap::from([
            ("q".to_string(), random(&[bs, t, hq * dk], 1, -1.0, 1.0)),
            ("k".to_string(), random(&[bs, t, hk * dk], 2, -0.3, 0.3)),
            ("v".to_string(), random(&[bs, t, hk * dv], 3, -1.0, 1.0)),
            ("decay".to_string(), random(&[bs, t, decay_w], 4, -0.5, 0.0)),
        ]);
        let p = random(&[bs, hk, dk, dv], 5, -0.5, 0.5);
        feed.insert("past".to_string(), Tensor::from_f64(DType::F32, p.shape().to_vec(), &p.to_f64()));
        if beta.is_some() {
            feed.insert("beta".to_string(), random(&[bs, t, hk], 6, 0.0, 1.0));
        }
        let (got, want) = host_and_interpreter(&g, &fused, &feed);
        let tol = if dt == DType::F16 { 2e-3 } else { 1e-5 };
        for (x, y) in got.iter().zip(&want) {
            let e = xforge_ir::tensor::rel_l2(x, y);
            assert!(e < tol, "{rule}: relative L2 {e:.2e}");
        }
    }
}

#[test]
fn the_linear_attention_models_compile_to_what_the_interpreter_computes() {
    // models/linear_attention (Gated DeltaNet and GLA layers) and models/mamba2 (a Mamba-2 block):
    // ONNX opset 27; every generated kernel run on the host (library calls interpreted)
    for model in ["linear_attention", "mamba2"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(model).join("model.onnx");
        for (precision, tol) in [(xforge_compiler::Precision::Fp32, 1e-6), (xforge_compiler::Precision::Fp16, 2e-3)] {
            let compiler = Compiler::new("sm_90").precision(precision);
            let m = compiler.load(&path, &[]).unwrap();
            let g = &m.graph;
            let x = xforge_codegen_ptx::samples::random(DType::F32, &[2, 12, 32], 4);
            let feed = HashMap::from([("hidden".to_string(), x)]);
            let want = xforge_ir::interp::run(g, &feed).unwrap();
            let fused = compiler.fuse(g).unwrap();
            let (got, stats) = run_plan(&fused, &kernels(&fused), &feed).unwrap();
            assert!(stats.host_kernels >= 8, "{model} {precision:?}: {} kernels ran", stats.host_kernels);
            let e = xforge_ir::tensor::rel_l2(&got[0].cast(DType::F64), &want[0].cast(DType::F64));
            assert!(e < tol, "{model} {precision:?}: relative L2 {e:.2e}");
        }
    }
}

#[test]
fn a_bidirectional_lstm_with_sequence_lengths_compiles_to_what_the_interpreter_computes() {
    // unrolled before fusion: one GEMM of X·Wᵀ per direction, then per step h·Rᵀ and the gates;
    // lengths 7, 3 and 0 (steps past a sequence's end keep its state and write zeros)
    let (t, b, i, h) = (7, 3, 5, 8);
    let mut gb = GraphBuilder::new("lstm", 14);
    let x = gb.input("x", DType::F32, &[t, b, i]);
    let lens = gb.input("lens", DType::I32, &[b]);
    let w = xforge_codegen_ptx::samples::random(DType::F32, &[2, 4 * h, i], 1);
    let r = xforge_codegen_ptx::samples::random(DType::F32, &[2, 4 * h, h], 2);
    let bias = xforge_codegen_ptx::samples::random(DType::F32, &[2, 8 * h], 3);
    let scaled = |t: Tensor| {
        Tensor::from_f64(DType::F32, t.shape().to_vec(), &t.to_f64().iter().map(|v| v * 0.2).collect::<Vec<_>>())
    };
    let (w, r, bias) = (gb.weight("w", scaled(w)), gb.weight("r", scaled(r)), gb.weight("b", scaled(bias)));
    let outs = gb.node_multi(
        Op::LSTM,
        &[Some(x), Some(w), Some(r), Some(bias), Some(lens)],
        vec![("hidden_size", Attr::Int(h as i64)), ("direction", Attr::Str("bidirectional".into()))],
        vec![ValueType::unranked(DType::F32); 3],
    );
    for o in outs {
        gb.output(o);
    }
    let mut g = gb.finish();
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let fused = Compiler::new("sm_90").fuse(&g).unwrap();
    assert!(!fused.graph.nodes.iter().any(|n| n.op == Op::LSTM), "unrolled");
    let feed = HashMap::from([
        ("x".to_string(), xforge_codegen_ptx::samples::random(DType::F32, &[t, b, i], 4)),
        ("lens".to_string(), Tensor::from_f64(DType::I32, vec![b], &[7.0, 3.0, 0.0])),
    ]);
    let want = xforge_ir::interp::run(&g, &feed).unwrap();
    let (got, stats) = run_plan(&fused, &kernels(&fused), &feed).unwrap();
    assert!(stats.host_kernels > 10, "{} kernels ran", stats.host_kernels);
    for (k, (a, e)) in got.iter().zip(&want).enumerate() {
        let err = xforge_ir::tensor::rel_l2(a, e);
        assert!(err < 1e-6, "output {k}: relative L2 {err:.2e}");
    }
}
