//! PTX for generated kernels, assembled by ptxas (from `nvidia-cuda-nvcc`, found by
//! scripts/setup) for sm_80 and sm_90. A kernel ptxas rejects fails the test.
use std::process::Command;
use xforge_codegen_ptx::samples::{self, activation_mix, movement, pools, reduction};
use xforge_codegen_ptx::{compile, toolchain};
use xforge_ir::{DType, Graph};
use xforge_kernel::Kernel;
use xforge_passes::fusion::{fuse, Schedule};

fn ptxas(ptx: &str, arch: &str) {
    let exe = toolchain::ptxas().expect("ptxas not found: run scripts/setup (or set XFORGE_PTXAS)");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k.ptx");
    std::fs::write(&f, ptx).unwrap();
    let out = Command::new(exe)
        .arg(format!("-arch={arch}"))
        .arg(&f)
        .arg("-o")
        .arg(dir.path().join("k.cubin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ptxas -arch={arch} rejected the PTX:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        &ptx[..ptx.len().min(4000)]
    );
}

/// Kernels of every group of a graph (every group of the samples has a template).
fn template_kernels(g: &Graph) -> Vec<Kernel> {
    let f = fuse(g).unwrap();
    f.partition
        .groups
        .iter()
        .enumerate()
        .filter(|(_, grp)| grp.schedule != Schedule::View)
        .map(|(i, grp)| xforge_kernel::generate(&f.graph, grp, i).unwrap_or_else(|e| panic!("{}: {e}", g.name)))
        .collect()
}

#[test]
fn every_sample_is_one_kernel_that_assembles() {
    let mut all = vec![];
    for s in samples::all() {
        let ks = template_kernels(&s.graph);
        assert_eq!(ks.len(), 1, "{}: one kernel", s.name);
        assert!(ks[0].module.contains("gpu.func"), "{}", s.name);
        all.extend(ks);
    }
    for arch in ["sm_80", "sm_90"] {
        let ptx = compile(&all, arch).unwrap();
        assert!(ptx.contains(&format!(".target {arch}")));
        // libdevice (erf, exp, ...) was linked and inlined: nothing is left to resolve
        assert!(!ptx.contains(".extern .func"), "unresolved calls in the PTX");
        ptxas(&ptx, arch);
    }
}

#[test]
fn half_storage_takes_the_approximate_exp_and_division() {
    // a σ stored as a half: ex2.approx and rcp.approx (no IEEE-exact reciprocal sequence); as
    // f32 the exact forms stay
    let ptx = |dt: DType| compile(&template_kernels(&samples::activation_mix(dt, &[4, 8, 32])), "sm_90").unwrap();
    let (half, single) = (ptx(DType::F16), ptx(DType::F32));
    assert!(half.contains("rcp.approx.f32") && !half.contains("rcp.rn.f32"), "{half}");
    assert!(single.contains("rcp.rn.f32") && !single.contains("rcp.approx"), "{single}");
}

#[test]
fn row_reductions_assemble_at_other_lengths() {
    let mut ks = vec![];
    for dt in [DType::F32, DType::F16, DType::BF16] {
        for (rows, len) in [(4, 100), (3, 768), (2, 4096)] {
            for kind in ["softmax", "layernorm", "rmsnorm", "mean"] {
                ks.extend(template_kernels(&reduction(kind, dt, rows, len)));
            }
        }
    }
    for arch in ["sm_80", "sm_90"] {
        ptxas(&compile(&ks, arch).unwrap(), arch);
    }
}

#[test]
fn identical_groups_compile_once() {
    let k = template_kernels(&activation_mix(DType::F32, &[4, 8, 32])).remove(0);
    let ptx = compile(&[k.clone(), k], "sm_90").unwrap();
    assert_eq!(ptx.matches(".visible .entry").count(), 1);
}

#[test]
fn unknown_target_is_an_error() {
    let ks = template_kernels(&activation_mix(DType::F32, &[4, 8, 32]));
    let e = compile(&ks, "sm_75").unwrap_err();
    assert!(e.to_string().contains("sm_75"), "{e}");
}

#[test]
fn template_mlir_snapshots() {
    insta::assert_snapshot!("elementwise", template_kernels(&activation_mix(DType::F16, &[4, 8, 32]))[0].module);
    // short rows: a warp segment each, several rows a block, shuffles only
    insta::assert_snapshot!("row_reduction", template_kernels(&reduction("layernorm", DType::F16, 8, 256))[0].module);
    // a row of a block: warps combined through workgroup memory
    insta::assert_snapshot!(
        "row_reduction_block",
        template_kernels(&reduction("layernorm", DType::F16, 6, 1024))[0].module
    );
    insta::assert_snapshot!("maxpool", template_kernels(&pools(DType::F16).remove(0).1)[0].module);
    insta::assert_snapshot!("gather", template_kernels(&movement(DType::F32).remove(0).1)[0].module);
    // depthwise 3×3/2 + bias + SiLU, channels-last halves: pairs of channels per thread
    let dw =
        samples::depthwise(DType::F16, &[1, 4, 5, 4]).into_iter().find(|(n, _)| n.ends_with("3x3_s2_nhwc")).unwrap().1;
    let k = template_kernels(&dw);
    assert!(k[0].module.contains("vector<2xf16>"), "{}", k[0].module);
    insta::assert_snapshot!("depthwise_nhwc", k[0].module);
    insta::assert_snapshot!("column_reduction", template_kernels(&samples::column_sum(DType::F32, 64, 48))[0].module);
    insta::assert_snapshot!("scan", template_kernels(&samples::cumsum(DType::F32, &[3, 50, 4]))[0].module);
    let ssm = samples::selective_scan(DType::BF16, (1, 6, 296, 2), Some(2), true);
    insta::assert_snapshot!("selective_scan", template_kernels(&ssm)[0].module);
    insta::assert_snapshot!(
        "transpose",
        template_kernels(&samples::transpose(DType::F16, &[70, 45], &[1, 0]))[0].module
    );
    // merged heads of 32: one routed copy, runs of 8 halves moved as vectors
    let runs = movement(DType::F16).into_iter().find(|(n, _)| *n == "transpose_reshape_runs").unwrap().1;
    let k = template_kernels(&runs);
    assert_eq!(k[0].module.matches("vector.store").count(), 1, "{}", k[0].module);
    insta::assert_snapshot!("routed_copy_runs", k[0].module);
    // contractions: f32 (threads of 4×4 outputs) and f16 (tensor cores), bias + erf-GELU
    insta::assert_snapshot!("gemm", template_kernels(&samples::gemm_bias_gelu(DType::F32, &[8], 16, 8))[0].module);
    insta::assert_snapshot!(
        "gemm_tensor_core",
        template_kernels(&samples::gemm_bias_gelu(DType::F16, &[8], 16, 8))[0].module
    );
    insta::assert_snapshot!("attention", template_kernels(&samples::attention(DType::F32, &[1, 1, 8, 4]))[0].module);
    insta::assert_snapshot!(
        "attention_tensor_core",
        template_kernels(&samples::attention(DType::F16, &[1, 1, 8, 16]))[0].module
    );
}

#[test]
fn contractions_pick_their_path() {
    // tensor cores for half types whose rows are whole 16-byte vectors, threads otherwise
    let mma = |g: &Graph| template_kernels(g)[0].module.contains("mma.sync");
    assert!(mma(&samples::gemm_bias_gelu(DType::F16, &[5], 24, 40)));
    assert!(mma(&samples::gemm_bias_gelu(DType::BF16, &[5], 24, 40)));
    assert!(!mma(&samples::gemm_bias_gelu(DType::F16, &[5], 24, 41)));
    assert!(!mma(&samples::gemm_bias_gelu(DType::F32, &[5], 24, 40)));
    assert!(mma(&samples::attention(DType::F16, &[1, 2, 10, 32])));
    assert!(!mma(&samples::attention(DType::F16, &[1, 2, 10, 40])));
    assert!(!mma(&samples::attention(DType::F32, &[1, 2, 10, 32])));
}

#[test]
fn tiled_transpose_takes_swaps_of_axis_runs_only() {
    let tiled = |shape: &[usize], perm: &[i64]| {
        let ks = template_kernels(&samples::transpose(DType::F32, shape, perm));
        assert_eq!(ks.len(), 1);
        ks[0].block == [32, 8, 1]
    };
    assert!(tiled(&[70, 45], &[1, 0]));
    assert!(tiled(&[2, 6, 33, 17], &[0, 2, 3, 1]));
    assert!(tiled(&[2, 6, 33, 17], &[0, 3, 1, 2]));
    // an image's 3 channels moved last (or first): runs of 3 would idle most of a tile
    assert!(!tiled(&[2, 3, 33, 17], &[0, 2, 3, 1]));
    assert!(!tiled(&[2, 33, 17, 3], &[0, 3, 1, 2]));
    assert!(tiled(&[4, 5, 6], &[2, 0, 1]));
    // the innermost axis stays: the elementwise template's coalesced copy
    assert!(!tiled(&[4, 5, 6], &[1, 0, 2]));
    // not a swap of two runs
    assert!(!tiled(&[4, 5, 6, 7], &[3, 1, 2, 0]));
}

#[test]
fn parallel_lowering_gives_the_serial_result() {
    let ks: Vec<Kernel> = samples::all().iter().take(12).flat_map(|s| template_kernels(&s.graph)).collect();
    let refs: Vec<&Kernel> = ks.iter().collect();
    let serial = xforge_codegen_ptx::to_bitcode(&refs, "sm_90").unwrap();
    let parallel = xforge_codegen_ptx::parallel_bitcode(&refs, "sm_90").unwrap();
    assert_eq!(serial.len(), ks.len());
    assert_eq!(serial, parallel);
}

/// Every kernel the templates generate for a model file (groups without a template skipped).
fn model_kernels(path: &std::path::Path) -> Vec<Kernel> {
    let Ok(m) = xforge_frontend::load(path, &Default::default()) else { return vec![] };
    let Ok(f) = fuse(&m.graph) else { return vec![] };
    f.partition
        .groups
        .iter()
        .enumerate()
        .filter_map(|(i, grp)| xforge_kernel::generate(&f.graph, grp, i).ok())
        .collect()
}

#[test]
fn shipped_model_kernels_assemble() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let ks: Vec<Kernel> =
        ["mnasnet0_5.onnx", "bert_tiny.onnx"].iter().flat_map(|m| model_kernels(&root.join(m))).collect();
    assert!(!ks.is_empty(), "no kernels generated");
    for arch in ["sm_80", "sm_90"] {
        ptxas(&compile(&ks, arch).unwrap(), arch);
    }
}

/// The ONNX backend node tests: every kernel the templates generate for them, as one module per
/// architecture. The case cache is the conformance runner's (written here if missing).
#[test]
fn node_test_kernels_assemble() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cache = root.join("target/onnx-node-tests");
    if !cache.join("manifest.tsv").exists() {
        let st = Command::new("python3")
            .arg(root.join("testsuite/scripts/dump_node_tests.py"))
            .arg(&cache)
            .status()
            .expect("python3");
        assert!(st.success(), "writing the ONNX node tests failed (scripts/setup installs onnx)");
    }
    let manifest = std::fs::read_to_string(cache.join("manifest.tsv")).unwrap();
    let mut ks = vec![];
    for line in manifest.lines() {
        let dir = cache.join(line.split('\t').next().unwrap());
        if !dir.join("unsupported_io").exists() {
            ks.extend(model_kernels(&dir.join("model.onnx")));
        }
    }
    assert!(ks.len() > 100, "only {} kernels generated from the node tests", ks.len());
    for arch in ["sm_80", "sm_90"] {
        ptxas(&compile(&ks, arch).unwrap(), arch);
    }
}

#[test]
fn reductions_over_runtime_axes_are_refused() {
    use xforge_ir::{infer::infer_graph, GraphBuilder, Op, ValueType};
    let mut b = GraphBuilder::new("runtime_axes", 18);
    let x = b.input("x", DType::F32, &[4, 6]);
    let axes = b.input("axes", DType::I64, &[1]);
    let y = b.node(Op::ReduceSum, &[x, axes], vec![], ValueType::unranked(DType::F32));
    b.output(y);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    let f = fuse(&g).unwrap();
    let (i, grp) = f.partition.groups.iter().enumerate().find(|(_, grp)| grp.schedule != Schedule::View).unwrap();
    let e = xforge_kernel::generate(&f.graph, grp, i).unwrap_err();
    assert!(e.to_string().contains("not constant"), "{e}");
}

#[test]
fn random_graphs_generate_valid_kernels() {
    // every group of 48 random graphs must have a template, verify as MLIR and assemble
    let mut all = vec![];
    for seed in 0..48 {
        let dt = [DType::F32, DType::F16, DType::BF16][seed as usize % 3];
        let g = samples::random_graph(seed, dt);
        all.extend(template_kernels(&g));
    }
    assert!(all.len() >= 48);
    for arch in ["sm_80", "sm_90"] {
        ptxas(&compile(&all, arch).unwrap(), arch);
    }
}

#[test]
fn empty_scans_and_column_reductions_run_as_generic_kernels() {
    // zero-size values are valid ONNX: the templates assume whole rows and tiles, so a one-node
    // group runs as a generic kernel (loops of no steps) that verifies and assembles, and a fused
    // group says so (the compiler's completion then cuts it into one-node groups: complete.rs)
    for g in [samples::scan_along(DType::F32, &[2, 0, 3], 1, false), samples::column_sum(DType::F32, 0, 8)] {
        let f = fuse(&g).unwrap();
        let mut kernels = vec![];
        for (i, grp) in f.partition.groups.iter().enumerate().filter(|(_, grp)| grp.schedule != Schedule::View) {
            match (xforge_kernel::generate(&f.graph, grp, i), grp.nodes.len()) {
                (Ok(k), _) => kernels.push(k),
                (Err(e), n) => assert!(n > 1 && e.to_string().contains("zero-size value"), "{}: {e}", g.name),
            }
        }
        if !kernels.is_empty() {
            ptxas(&compile(&kernels, "sm_90").unwrap(), "sm_90");
        }
    }
}

#[test]
fn a_library_gemms_head_split_is_one_routed_copy() {
    use xforge_passes::fusion::partition::split_library_epilogue;
    let (_, g) = samples::contractions(DType::F16).into_iter().find(|(n, _)| *n == "gemm_qkv").unwrap();
    let f = fuse(&g).unwrap();
    let grp = f.partition.groups.iter().find(|g| g.schedule == Schedule::GeneratedGemm).unwrap();
    let (head, tail) = split_library_epilogue(&f.graph, grp).unwrap();
    // MatMul + bias for the library; Split, three reshapes and three transposes after it
    assert_eq!((head.schedule, head.nodes.len()), (Schedule::LibraryGemm, 2));
    assert_eq!((tail.schedule, tail.nodes.len(), tail.outputs.len()), (Schedule::Injective, 7, 3));
    assert_eq!(
        head.outputs,
        tail.inputs.iter().filter(|v| !f.graph.weights.contains_key(v)).copied().collect::<Vec<_>>()
    );
    let k = xforge_kernel::generate(&f.graph, &tail, 1).unwrap();
    // the GEMM's result in, Q, K and V out
    assert_eq!(k.params.iter().map(|p| p.output).collect::<Vec<_>>(), [false, true, true, true]);
    insta::assert_snapshot!("routed_copy", k.module);
    for arch in ["sm_80", "sm_90"] {
        ptxas(&compile(std::slice::from_ref(&k), arch).unwrap(), arch);
    }
    // an epilogue the library runs whole is not cut
    let (_, g) = samples::contractions(DType::F16).into_iter().find(|(n, _)| *n == "gemm_broadcast").unwrap();
    let f = fuse(&g).unwrap();
    assert!(f.partition.groups.iter().all(|grp| split_library_epilogue(&f.graph, grp).is_none()));
}

/// A one-node graph with the given inputs (types inferred) and its node's generic kernel.
fn generic_kernel(
    op: xforge_ir::Op,
    ins: &[(DType, &[usize])],
    weights: &[xforge_ir::Tensor],
    attrs: Vec<(&str, xforge_ir::Attr)>,
) -> Kernel {
    let mut b = xforge_ir::GraphBuilder::new("generic", 21);
    let mut ids = vec![];
    for (k, (dt, s)) in ins.iter().enumerate() {
        ids.push(Some(b.input(&format!("x{k}"), *dt, s)));
    }
    for (k, t) in weights.iter().enumerate() {
        ids.push(Some(b.weight(&format!("w{k}"), t.clone())));
    }
    let out = b.node_multi(op, &ids, attrs, vec![xforge_ir::ValueType::unranked(DType::F32)]);
    b.output(out[0]);
    let mut g = b.finish();
    g.undeclared.extend(out);
    xforge_ir::infer::infer_graph(&mut g).unwrap();
    let grp = xforge_passes::fusion::partition::group_of_nodes(&g, Schedule::Generic, vec![0]);
    xforge_kernel::generate(&g, &grp, 0).unwrap()
}

#[test]
fn generic_kernels_assemble() {
    use xforge_ir::{Attr, Op, Tensor};
    let ks = vec![
        // integer arithmetic with Python's modulo sign
        generic_kernel(Op::Mod, &[(DType::I32, &[4, 6]), (DType::I32, &[6])], &[], vec![]),
        // a 3-D convolution with groups and asymmetric pads, in halves
        generic_kernel(
            Op::Conv,
            &[(DType::F16, &[1, 4, 5, 6, 5]), (DType::F16, &[6, 2, 2, 3, 2])],
            &[],
            vec![("group", Attr::Int(2)), ("pads", Attr::Ints(vec![1, 0, 2, 0, 1, 0]))],
        ),
        // linear resize: per-axis tap tables compiled in
        generic_kernel(
            Op::Resize,
            &[(DType::F32, &[1, 2, 5, 6])],
            &[Tensor::from_f64(DType::F32, vec![0], &[]), Tensor::from_f64(DType::F32, vec![4], &[1.0, 1.0, 1.7, 0.6])],
            vec![("mode", Attr::Str("linear".into()))],
        ),
        // attention in every form the interpreter takes (3-D, grouped heads)
        generic_kernel(
            Op::Attention,
            &[(DType::BF16, &[2, 4, 32]), (DType::BF16, &[2, 6, 16]), (DType::BF16, &[2, 6, 16])],
            &[],
            vec![("q_num_heads", Attr::Int(4)), ("kv_num_heads", Attr::Int(2)), ("is_causal", Attr::Int(1))],
        ),
        // the gated delta rule with grouped query heads, a past state, per-head decay and β as
        // constants: one thread a state column
        generic_kernel(
            Op::LinearAttention,
            &[(DType::BF16, &[2, 5, 64]), (DType::BF16, &[2, 5, 32]), (DType::BF16, &[2, 5, 32])],
            &[
                Tensor::from_f64(DType::F32, vec![2, 2, 16, 16], &[0.0; 1024]),
                Tensor::from_f64(DType::BF16, vec![2, 5, 2], &[-0.5; 20]),
                Tensor::from_f64(DType::BF16, vec![2, 5, 2], &[0.5; 20]),
            ],
            vec![("q_num_heads", Attr::Int(4)), ("kv_num_heads", Attr::Int(2))],
        ),
    ];
    assert!(!ks[2].constants.is_empty(), "the resize taps are compiled in");
    for arch in ["sm_80", "sm_90"] {
        ptxas(&compile(&ks, arch).unwrap(), arch);
    }
    insta::assert_snapshot!("generic_mod_i32", ks[0].module);
}

#[test]
fn linear_attention_carries_its_state_column_in_registers() {
    // the linear rule, one KV head of d_k = d_v = 2 read by two query heads: a thread a state
    // column j, its two rows loop-carried through the sequence, then each query head's output
    use xforge_ir::{Attr, Op};
    let k = generic_kernel(
        Op::LinearAttention,
        &[(DType::F32, &[1, 3, 4]), (DType::F32, &[1, 3, 2]), (DType::F32, &[1, 3, 2])],
        &[],
        vec![
            ("q_num_heads", Attr::Int(2)),
            ("kv_num_heads", Attr::Int(1)),
            ("update_rule", Attr::Str("linear".into())),
        ],
    );
    ptxas(&compile(std::slice::from_ref(&k), "sm_90").unwrap(), "sm_90");
    insta::assert_snapshot!("generic_linear_attention", k.module);
}
