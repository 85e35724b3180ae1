//! PTX for generated kernels, assembled by ptxas (from `nvidia-cuda-nvcc`, found by
//! scripts/setup) for sm_80 and sm_90. A kernel ptxas rejects fails the test.
use std::process::Command;
use xforge_codegen_ptx::{compile, toolchain};
use xforge_ir::{infer::infer_graph, Attr, DType, Graph, GraphBuilder, Op, Tensor, ValueType};
use xforge_kernel::{elementwise::elementwise, Kernel};
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

/// The kernels of a graph's elementwise groups.
fn elementwise_kernels(g: &Graph) -> Vec<Kernel> {
    let f = fuse(g).unwrap();
    f.partition
        .groups
        .iter()
        .enumerate()
        .filter(|(_, grp)| grp.schedule == Schedule::Elementwise)
        .map(|(i, grp)| elementwise(&f.graph, grp, i).unwrap())
        .collect()
}

/// y = gelu(x + b) · sigmoid(x) − clip(x, −1, 1), with b broadcast along rows.
fn activation_mix(dt: DType) -> Graph {
    let mut b = GraphBuilder::new("mix", 17);
    let x = b.input("x", dt, &[4, 8, 32]);
    let u = || ValueType::unranked(dt);
    let bias = b.weight("bias", Tensor::from_f64(dt, vec![32], &(0..32).map(|i| i as f64 / 32.0).collect::<Vec<_>>()));
    let lo = b.weight("lo", Tensor::from_f64(dt, vec![], &[-1.0]));
    let hi = b.weight("hi", Tensor::from_f64(dt, vec![], &[1.0]));
    let a = b.node(Op::Add, &[x, bias], vec![], u());
    let ge = b.node(Op::Gelu, &[a], vec![], u());
    let s = b.node(Op::Sigmoid, &[x], vec![], u());
    let m = b.node(Op::Mul, &[ge, s], vec![], u());
    let c = b.node(Op::Clip, &[x, lo, hi], vec![], u());
    let y = b.node(Op::Sub, &[m, c], vec![], u());
    let z = b.node(Op::HardSwish, &[y], vec![("unused", Attr::Int(0))], u());
    b.output(z);
    let mut g = b.finish();
    infer_graph(&mut g).unwrap();
    g
}

#[test]
fn elementwise_kernels_assemble_for_every_dtype_and_arch() {
    for dt in [DType::F32, DType::F16, DType::BF16] {
        let ks = elementwise_kernels(&activation_mix(dt));
        assert_eq!(ks.len(), 1, "{dt}: one kernel");
        for arch in ["sm_80", "sm_90"] {
            let ptx = compile(&ks, arch).unwrap();
            assert!(ptx.contains(&format!(".target {arch}")) && ptx.contains(&ks[0].name), "{ptx}");
            // libdevice's erf was linked and inlined, nothing is left to resolve
            assert!(!ptx.contains("__nv_erff"), "unresolved libdevice call");
            ptxas(&ptx, arch);
        }
    }
}

#[test]
fn identical_groups_compile_once() {
    let ks = elementwise_kernels(&activation_mix(DType::F32));
    let twice = vec![ks[0].clone(), ks[0].clone()];
    let ptx = compile(&twice, "sm_90").unwrap();
    assert_eq!(ptx.matches(".visible .entry").count(), 1);
}

#[test]
fn elementwise_mlir_snapshot() {
    let ks = elementwise_kernels(&activation_mix(DType::F16));
    insta::assert_snapshot!(ks[0].module);
}

#[test]
fn unknown_target_is_an_error() {
    let ks = elementwise_kernels(&activation_mix(DType::F32));
    let e = compile(&ks, "sm_75").unwrap_err();
    assert!(e.to_string().contains("sm_75"), "{e}");
}

/// Kernels of every group a template covers.
fn template_kernels(g: &Graph) -> Vec<Kernel> {
    let f = fuse(g).unwrap();
    f.partition
        .groups
        .iter()
        .enumerate()
        .filter(|(_, grp)| grp.schedule != Schedule::View)
        .map(|(i, grp)| xforge_kernel::generate(&f.graph, grp, i).unwrap())
        .collect()
}

/// softmax(x·2) over rows; LayerNorm(x) with scale and bias then ReLU; RMSNorm; mean over rows.
fn reductions(dt: DType, rows: usize, len: usize) -> Vec<Graph> {
    let u = || ValueType::unranked(dt);
    let vals = |n: usize, k: f64| (0..n).map(|i| 0.5 + (i as f64 * k).sin() * 0.25).collect::<Vec<_>>();
    let mut out = vec![];
    let mut b = GraphBuilder::new("softmax", 17);
    let x = b.input("x", dt, &[rows, len]);
    let two = b.weight("two", Tensor::from_f64(dt, vec![], &[2.0]));
    let m = b.node(Op::Mul, &[x, two], vec![], u());
    let s = b.node(Op::Softmax, &[m], vec![("axis", Attr::Int(-1))], u());
    b.output(s);
    out.push(b.finish());
    let mut b = GraphBuilder::new("layernorm", 17);
    let x = b.input("x", dt, &[rows, len]);
    let w = b.weight("w", Tensor::from_f64(dt, vec![len], &vals(len, 0.3)));
    let bias = b.weight("b", Tensor::from_f64(dt, vec![len], &vals(len, 0.7)));
    let l = b.node(Op::LayerNormalization, &[x, w, bias], vec![("axis", Attr::Int(-1))], u());
    let r = b.node(Op::Relu, &[l], vec![], u());
    b.output(r);
    out.push(b.finish());
    let mut b = GraphBuilder::new("rmsnorm", 23);
    let x = b.input("x", dt, &[rows, len]);
    let w = b.weight("w", Tensor::from_f64(dt, vec![len], &vals(len, 0.1)));
    let n = b.node(Op::RMSNormalization, &[x, w], vec![("axis", Attr::Int(-1))], u());
    b.output(n);
    out.push(b.finish());
    let mut b = GraphBuilder::new("mean", 17);
    let x = b.input("x", dt, &[rows, len]);
    let m = b.node(Op::ReduceMean, &[x], vec![("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))], u());
    let t = b.node(Op::Tanh, &[m], vec![], u());
    b.output(t);
    out.push(b.finish());
    out.into_iter()
        .map(|mut g| {
            infer_graph(&mut g).unwrap();
            g
        })
        .collect()
}

#[test]
fn row_reduction_kernels_assemble() {
    for dt in [DType::F32, DType::F16, DType::BF16] {
        for (rows, len) in [(4, 100), (3, 768), (2, 4096)] {
            for g in reductions(dt, rows, len) {
                let ks = template_kernels(&g);
                assert_eq!(ks.len(), 1, "{}: one kernel", g.name);
                for arch in ["sm_80", "sm_90"] {
                    ptxas(&compile(&ks, arch).unwrap(), arch);
                }
            }
        }
    }
}

#[test]
fn row_reduction_mlir_snapshot() {
    let g = reductions(DType::F16, 8, 256).remove(1);
    insta::assert_snapshot!(template_kernels(&g)[0].module);
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
    // mnasnet's groups are library convolutions and a pooling group with the classifier GEMV,
    // which no template covers yet; bert_tiny brings LayerNorm kernels
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
        let name = line.split('\t').next().unwrap();
        let dir = cache.join(name);
        if dir.join("unsupported_io").exists() {
            continue;
        }
        ks.extend(model_kernels(&dir.join("model.onnx")));
    }
    assert!(ks.len() > 100, "only {} kernels generated from the node tests", ks.len());
    for arch in ["sm_80", "sm_90"] {
        ptxas(&compile(&ks, arch).unwrap(), arch);
    }
}

/// Embedding lookup (Gather with i64 ids) plus a position table; a transposed input scaled.
fn movement(dt: DType) -> Vec<Graph> {
    let u = || ValueType::unranked(dt);
    let mut b = GraphBuilder::new("embed", 17);
    let ids = b.input("ids", DType::I64, &[2, 16]);
    let table = b.weight(
        "table",
        Tensor::from_f64(dt, vec![50, 64], &(0..3200).map(|i| (i as f64 * 0.37).sin()).collect::<Vec<_>>()),
    );
    let pos = b.weight(
        "pos",
        Tensor::from_f64(dt, vec![16, 64], &(0..1024).map(|i| (i as f64 * 0.11).cos()).collect::<Vec<_>>()),
    );
    let e = b.node(Op::Gather, &[table, ids], vec![("axis", Attr::Int(0))], u());
    let y = b.node(Op::Add, &[e, pos], vec![], u());
    b.output(y);
    let mut g1 = b.finish();
    infer_graph(&mut g1).unwrap();
    let mut b = GraphBuilder::new("transpose", 17);
    let x = b.input("x", dt, &[4, 8, 16]);
    let t = b.node(Op::Transpose, &[x], vec![("perm", Attr::Ints(vec![2, 0, 1]))], u());
    let two = b.weight("two", Tensor::from_f64(dt, vec![], &[2.0]));
    let y = b.node(Op::Mul, &[t, two], vec![], u());
    b.output(y);
    let mut g2 = b.finish();
    infer_graph(&mut g2).unwrap();
    vec![g1, g2]
}

#[test]
fn movement_kernels_assemble() {
    for dt in [DType::F32, DType::F16] {
        for g in movement(dt) {
            let ks = template_kernels(&g);
            assert_eq!(ks.len(), 1, "{}", g.name);
            for arch in ["sm_80", "sm_90"] {
                ptxas(&compile(&ks, arch).unwrap(), arch);
            }
        }
    }
}

/// MaxPool 3×3/2 with pads and ceil mode then ReLU; AveragePool 2×2 excluding pads; global mean.
fn pools(dt: DType) -> Vec<Graph> {
    let u = || ValueType::unranked(dt);
    let mut out = vec![];
    for (op, attrs) in [
        (
            Op::MaxPool,
            vec![
                ("kernel_shape", Attr::Ints(vec![3, 3])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![1, 1, 1, 1])),
                ("ceil_mode", Attr::Int(1)),
            ],
        ),
        (
            Op::AveragePool,
            vec![
                ("kernel_shape", Attr::Ints(vec![2, 2])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![0, 0, 1, 1])),
            ],
        ),
        (Op::GlobalAveragePool, vec![]),
    ] {
        let mut b = GraphBuilder::new("pool", 17);
        let x = b.input("x", dt, &[2, 3, 11, 11]);
        let p = b.node(op, &[x], attrs, u());
        let y = b.node(Op::Relu, &[p], vec![], u());
        b.output(y);
        let mut g = b.finish();
        infer_graph(&mut g).unwrap();
        out.push(g);
    }
    out
}

#[test]
fn pooling_kernels_assemble() {
    for dt in [DType::F32, DType::F16] {
        for g in pools(dt) {
            let ks = template_kernels(&g);
            assert_eq!(ks.len(), 1);
            for arch in ["sm_80", "sm_90"] {
                ptxas(&compile(&ks, arch).unwrap(), arch);
            }
        }
    }
}

#[test]
fn pooling_and_movement_mlir_snapshots() {
    let pool = pools(DType::F16).remove(0);
    insta::assert_snapshot!("maxpool", template_kernels(&pool)[0].module);
    let gather = movement(DType::F32).remove(0);
    insta::assert_snapshot!("gather", template_kernels(&gather)[0].module);
}

#[test]
fn parallel_lowering_gives_the_serial_result() {
    let mut ks = vec![];
    for dt in [DType::F32, DType::F16, DType::BF16] {
        for g in reductions(dt, 4, 100).into_iter().chain(pools(dt)) {
            ks.extend(template_kernels(&g));
        }
    }
    let refs: Vec<&Kernel> = ks.iter().collect();
    let serial = xforge_codegen_ptx::to_bitcode(&refs, "sm_90").unwrap();
    let parallel = xforge_codegen_ptx::parallel_bitcode(&refs, "sm_90").unwrap();
    assert_eq!(serial.len(), ks.len());
    assert_eq!(serial, parallel);
}
