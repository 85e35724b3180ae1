//! AMD code objects without an AMD GPU: the shipped models and every kernel sample compile for
//! gfx90a, gfx942 and gfx1100, each code object checked by `xforge_testsuite::amdgpu::check`
//! (the runtime's reader, llvm-readelf, llvm-objdump, no spill, LDS within the chip's limit,
//! the chip's wave size); the resource report is printed. Snapshots of the assembly of one
//! kernel per template for gfx942 (wave64) and gfx1100 (wave32).
use std::path::{Path, PathBuf};
use xforge_codegen_hip::{report, CHIPS};
use xforge_codegen_ptx::samples;
use xforge_compiler::{Compiler, Precision};
use xforge_kernel::{target, Kernel};
use xforge_passes::fusion::{fuse, Schedule};
use xforge_testsuite::amdgpu::{check, check_code_object};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The models the repository ships, with the shapes their symbolic dims need.
fn shipped() -> Vec<(PathBuf, Vec<(&'static str, usize)>)> {
    let m = root().join("models");
    vec![
        (m.join("bert_tiny.onnx"), vec![]),
        (m.join("mnasnet0_5.onnx"), vec![]),
        (m.join("mamba_block/model.onnx"), vec![]),
        (m.join("batch/classifier.onnx"), vec![("batch", 4)]),
        (m.join("batch/rows_mixed.onnx"), vec![("batch", 4)]),
    ]
}

#[test]
fn shipped_models_compile_to_checked_code_objects_for_every_chip() {
    for (path, shapes) in shipped() {
        for chip in CHIPS {
            for p in [Precision::Fp32, Precision::Fp16] {
                let mut c = Compiler::new(chip).precision(p);
                for (name, n) in &shapes {
                    c = c.shape(name, &[*n]);
                }
                let a = c.compile_onnx(&path).unwrap_or_else(|e| panic!("{} for {chip}: {e}", path.display()));
                assert!(a.kernels.ptx.is_empty() && !a.kernels.code_object.is_empty());
                // AMD has no cuBLASLt/cuDNN: every step is a generated kernel
                assert!(a
                    .plans
                    .iter()
                    .all(|p| p.steps.iter().all(|s| matches!(s, xforge_runtime::Step::Launch { .. }))));
                let usage = check(&a).unwrap_or_else(|e| panic!("{} for {chip}: {e}", path.display()));
                println!("{} {:?}\n{}", path.display(), p.name(), report::table(chip, &usage));
            }
        }
    }
}

/// The samples' kernels as generated for `chip` (one per sample).
fn sample_kernels(chip: &str) -> Vec<(String, Kernel)> {
    let t = target::find(chip).unwrap();
    target::with(t, || {
        samples::all()
            .into_iter()
            .map(|s| {
                let f = fuse(&s.graph).unwrap();
                let ks: Vec<Kernel> = f
                    .partition
                    .groups
                    .iter()
                    .enumerate()
                    .filter(|(_, grp)| grp.schedule != Schedule::View)
                    .map(|(i, grp)| {
                        xforge_kernel::generate(&f.graph, grp, i).unwrap_or_else(|e| panic!("{}: {e}", s.name))
                    })
                    .collect();
                assert_eq!(ks.len(), 1, "{}: one kernel", s.name);
                (s.name, ks.into_iter().next().unwrap())
            })
            .collect()
    })
}

#[test]
fn every_kernel_sample_compiles_for_every_chip() {
    for chip in CHIPS {
        let ks = sample_kernels(chip);
        let kernels: Vec<Kernel> = ks.iter().map(|(_, k)| k.clone()).collect();
        // nothing NVIDIA-specific is generated for AMD
        for (name, k) in &ks {
            assert!(!k.module.contains("nvvm") && !k.module.contains("nvgpu"), "{name} for {chip}:\n{}", k.module);
        }
        let code = xforge_codegen_hip::compile(&kernels, chip).unwrap_or_else(|e| panic!("{chip}: {e}"));
        let mut names: Vec<String> = kernels.iter().map(|k| k.name.clone()).collect();
        names.sort();
        names.dedup();
        let usage = check_code_object(chip, &code, &names).unwrap_or_else(|e| panic!("{chip}: {e}"));
        println!("{}", report::table(chip, &usage));
    }
}

#[test]
fn unknown_chips_are_refused_before_llvm_sees_them() {
    // LLVM aborts the process on a chip it does not know (gfx940 is not in LLVM 22)
    for chip in ["gfx940", "gfx9001", "sm_90", ""] {
        let e = xforge_codegen_hip::compile(
            &sample_kernels("gfx942")[..1].iter().map(|(_, k)| k.clone()).collect::<Vec<_>>(),
            chip,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown AMD target"), "{chip}: {e}");
    }
    let e =
        Compiler::new("gfx940").compile_graph(&samples::relu(xforge_ir::DType::F32, 64), String::new()).err().unwrap();
    assert!(e.to_string().contains("known targets are"), "{e}");
}

/// The instructions of kernel `name` in a disassembly-free ISA listing: its lines from the
/// label to `s_endpgm`, comments and directives dropped.
fn kernel_isa(isa: &str, name: &str) -> String {
    let from = isa.find(&format!("\n{name}:")).unwrap_or_else(|| panic!("{name} not in the assembly"));
    let body = &isa[from + 1..];
    let end = body.find("s_endpgm").map_or(body.len(), |e| e + "s_endpgm".len());
    body[..end]
        .lines()
        .map(|l| l.split(';').next().unwrap().trim_end())
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('.'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn one_kernel_per_template_in_amdgpu_assembly() {
    // one sample per template (f32: 16-byte vector loads where the rows allow)
    let picks = [
        "elementwise_mix_f32",
        "row_softmax_f32",
        "row_layernorm_short_f32",
        "tiled_transpose_2d_f32",
        "gemm_gelu_f32",
        "attention_heads_f16",
        "colsum_f32",
        "cumsum_f32",
        "depthwise_3x3_s2_f32",
        "selective_scan_bare_f32",
    ];
    for chip in ["gfx942", "gfx1100"] {
        let ks = sample_kernels(chip);
        for pick in picks {
            let Some((_, k)) = ks.iter().find(|(n, _)| n == pick) else {
                panic!("no sample {pick}; samples: {:?}", ks.iter().map(|(n, _)| n).collect::<Vec<_>>())
            };
            let isa =
                xforge_codegen_hip::emit(std::slice::from_ref(k), chip, xforge_codegen_hip::Stage::Amdgcn).unwrap();
            let wave = target::find(chip).unwrap().wave;
            assert!(isa.contains(&format!(".wavefront_size: {wave}")), "{pick} on {chip}: not wave{wave}");
            insta::assert_snapshot!(format!("{pick}_{chip}"), kernel_isa(&isa, &k.name));
        }
    }
}

/// The ONNX node tests' cache (the conformance run writes it first; scripts/test runs that).
fn node_tests() -> PathBuf {
    root().join("target/onnx-node-tests")
}

#[test]
fn kernels_generated_for_amd_compute_the_node_tests_on_the_host() {
    // the same gpu modules the ROCDL lowering takes (wave64 launch shapes and constants): the
    // barrier-free ones run on the host through MLIR's CPU pipeline, the rest through the
    // interpreter; outputs against the ONNX test data
    use xforge_testsuite::conformance::{compile_case, Backend, Outcome};
    let cases = [
        "test_gelu_default_1",
        "test_softmax_axis_1",
        "test_layer_normalization_3d_axis1_epsilon",
        "test_cumsum_2d_axis_1",
        "test_conv_with_strides_padding",
        "test_matmul_3d",
        "test_gather_0",
        "test_maxpool_2d_pads",
        "test_reduce_mean_default_axes_keepdims_random",
        "test_attention_4d",
    ];
    let cache = node_tests();
    assert!(cache.join("manifest.tsv").exists(), "run the conformance binary first (it writes {})", cache.display());
    let mut emulated = 0;
    for name in cases {
        for chip in ["gfx942", "gfx1100"] {
            let (outcome, notes) = compile_case(&cache.join(name), chip, true, Backend::Host);
            assert_eq!(outcome, Outcome::Passed, "{name} for {chip}");
            emulated += notes.stats.host_kernels;
        }
    }
    assert!(emulated > 0, "no kernel ran on the host");
}
