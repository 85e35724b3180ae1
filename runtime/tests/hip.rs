//! Sessions and artifacts of the other vendor: a CUDA `Session` refuses an AMD (`gfx`) artifact
//! by name before it touches the driver; with feature `hip`, a `HipSession` refuses an NVIDIA
//! artifact by name before it looks for a device, and on a machine without an AMD GPU it fails
//! with "no AMD GPU", never a panic.
use xforge_runtime::{Artifact, ArtifactHeader, Binding, KernelImage, MemoryPlan, Plan, Session};

/// A model without kernels for `target`: x[1,32] → y[1,32] in f32, no steps.
fn sample(target: &str) -> Artifact {
    let bind = |name: &str, offset| Binding {
        name: name.into(),
        dtype: "f32".into(),
        shape: vec![1, 32],
        offset,
        batch_axis: None,
        valid: None,
    };
    Artifact {
        header: ArtifactHeader {
            compiler_version: "0.1.0".into(),
            target: target.into(),
            precision: "fp32".into(),
            options: vec![],
            model_digest: "0123456789abcdef".into(),
            batch: None,
        },
        kernels: KernelImage::default(),
        weights: vec![0u8; 256],
        plans: vec![Plan {
            memory: MemoryPlan {
                batch: 0,
                arena_bytes: 512,
                alignment: 256,
                inputs: vec![bind("x", 0)],
                outputs: vec![bind("y", 256)],
            },
            steps: vec![],
            costs: vec![],
        }],
    }
}

fn message<T>(r: Result<T, xforge_runtime::RuntimeError>) -> String {
    match r {
        Ok(_) => panic!("the load succeeded"),
        Err(e) => {
            eprintln!("refused: {e}");
            e.to_string()
        }
    }
}

#[test]
fn a_cuda_session_refuses_an_amd_artifact_by_name() {
    let m = message(Session::from_artifact(sample("gfx942"), 0));
    assert!(m.contains("targets gfx942 (AMD)") && m.contains("HIP session"), "{m}");
}

#[test]
fn an_amd_artifact_file_round_trips_and_open_picks_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.xfa");
    sample("gfx1100").write(&path).unwrap();
    assert_eq!(Artifact::read(&path).unwrap().header.target, "gfx1100");
    let m = message(xforge_runtime::open(&path, 0));
    if cfg!(feature = "hip") {
        // a HIP session: no AMD GPU here, or one of another chip
        assert!(m.contains("no AMD GPU") || m.contains("targets gfx1100;"), "{m}");
    } else {
        assert!(m.contains("targets gfx1100 (AMD)") && m.contains("runtime feature `hip`"), "{m}");
    }
}

#[cfg(feature = "hip")]
mod hip {
    use super::*;
    use xforge_runtime::hip::{device_count, device_name, device_target};
    use xforge_runtime::{AnySession, GemmDesc, HipSession, LibDtype, LibraryCall, RuntimeError, Step};

    /// `sample` with one GEMM step (a cuBLASLt call).
    fn with_library_step(target: &str) -> Artifact {
        let mut a = sample(target);
        let gemm = GemmDesc {
            dtype: LibDtype::F32,
            batch: 1,
            m: 1,
            n: 32,
            k: 32,
            stride_a: 0,
            stride_b: 0,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            bias: false,
            residual: false,
            act: xforge_runtime::Activation::None,
        };
        a.plans[0].steps = vec![Step::Library(LibraryCall {
            kind: "gemm".into(),
            group: 2,
            params: gemm.to_params(),
            args: vec![xforge_runtime::Arg::Arena(0), xforge_runtime::Arg::Weight(0), xforge_runtime::Arg::Arena(256)],
        })];
        a
    }

    /// Whether this machine has an AMD GPU HIP can use (the tests below expect none).
    fn no_amd_gpu() -> bool {
        match device_count() {
            Err(e) => {
                assert!(matches!(e, RuntimeError::Hip(_)), "{e:?}");
                assert!(e.to_string().contains("no AMD GPU"), "{e}");
                true
            }
            Ok(n) => {
                eprintln!("{n} AMD GPU(s) here: the no-device checks are skipped");
                false
            }
        }
    }

    #[test]
    fn without_an_amd_gpu_a_load_says_so() {
        if !no_amd_gpu() {
            return;
        }
        for target in ["gfx942", "gfx90a", "gfx1100"] {
            let m = message(HipSession::from_artifact(sample(target), 0));
            assert!(m.contains("no AMD GPU (HIP reports no device"), "{m}");
            let m = message(AnySession::from_artifact(sample(target), 0));
            assert!(m.contains("no AMD GPU"), "{m}");
        }
        assert!(device_target(0).unwrap_err().to_string().contains("no AMD GPU"));
        assert!(device_name(0).unwrap_err().to_string().contains("no AMD GPU"));
        // twice: HIP's failed start is reported again, not a crash
        assert!(device_count().is_err());
    }

    #[test]
    fn an_nvidia_artifact_is_refused_by_name_before_the_device() {
        for target in ["sm_90", "sm_80"] {
            let e = HipSession::from_artifact(sample(target), 0).err().expect("refused");
            assert!(matches!(e, RuntimeError::Backend(_)), "{e:?}");
            let m = e.to_string();
            assert!(m.contains(&format!("the artifact targets {target} (NVIDIA)")), "{m}");
            assert!(m.contains("a HIP session runs gfx targets"), "{m}");
        }
    }

    #[test]
    fn a_library_step_is_refused_by_name_before_the_device() {
        let m = message(HipSession::from_artifact(with_library_step("gfx942"), 0));
        assert!(m.contains("step 0 (gemm call of group 2)") && m.contains("AMD"), "{m}");
    }

    #[test]
    fn a_missing_file_is_an_artifact_error() {
        let m = message(HipSession::load(std::path::Path::new("/nonexistent/m.xfa"), 0));
        assert!(!m.contains("no AMD GPU"), "{m}");
    }
}
