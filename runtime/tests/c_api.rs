//! The C API from C: `examples/c/run.c` compiles against `include/xforge.h`, links
//! `libxforge_runtime.so` and reports the runtime's refusals (a missing, corrupted or — on a
//! machine without a GPU — unrunnable artifact) with the runtime's message and exit code 2.
use std::path::{Path, PathBuf};
use std::process::Command;
use xforge_runtime::{Artifact, ArtifactHeader, Binding, KernelImage, MemoryPlan, Plan};

/// target/<profile>, where cargo put libxforge_runtime.so.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn build_example(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let st = Command::new("cc")
        .arg(root.join("examples/c/run.c"))
        .arg("-I")
        .arg(root.join("runtime/include"))
        .arg("-L")
        .arg(lib_dir())
        .arg("-lxforge_runtime")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-o")
        .arg(out)
        .status()
        .expect("a C compiler (cc)");
    assert!(st.success(), "examples/c/run.c did not compile and link");
}

fn run(exe: &Path, artifact: &Path) -> (i32, String) {
    let out = Command::new(exe).arg(artifact).env("LD_LIBRARY_PATH", lib_dir()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn the_c_example_reports_the_runtimes_refusals() {
    assert!(lib_dir().join("libxforge_runtime.so").exists(), "libxforge_runtime.so not built");
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("run");
    build_example(&exe);
    let (code, err) = run(&exe, &dir.path().join("missing.xfa"));
    assert_eq!(code, 2);
    assert!(err.contains("xforge_session_load failed") && err.contains("cannot read"), "{err}");
    let a = Artifact {
        header: ArtifactHeader {
            compiler_version: "test".into(),
            target: "sm_80".into(),
            precision: "fp32".into(),
            options: vec![],
            model_digest: "0".into(),
            batch: None,
        },
        kernels: KernelImage::default(),
        weights: vec![],
        plans: vec![Plan {
            memory: MemoryPlan {
                batch: 0,
                arena_bytes: 256,
                alignment: 256,
                inputs: vec![Binding {
                    name: "x".into(),
                    dtype: "f32".into(),
                    shape: vec![4],
                    offset: 0,
                    batch_axis: None,
                    valid: None,
                }],
                outputs: vec![Binding {
                    name: "x".into(),
                    dtype: "f32".into(),
                    shape: vec![4],
                    offset: 0,
                    batch_axis: None,
                    valid: None,
                }],
            },
            steps: vec![],
            costs: vec![],
        }],
    };
    let good = dir.path().join("identity.xfa");
    a.write(&good).unwrap();
    let mut bytes = std::fs::read(&good).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    let bad = dir.path().join("bad.xfa");
    std::fs::write(&bad, &bytes).unwrap();
    let (code, err) = run(&exe, &bad);
    assert_eq!(code, 2);
    assert!(err.contains("corrupted"), "{err}");
    // an identity plan: runs where there is a GPU, else the driver's absence is the message
    let (code, err) = run(&exe, &good);
    assert!(code == 0 || (code == 2 && err.contains("CUDA")), "{code}: {err}");
}
