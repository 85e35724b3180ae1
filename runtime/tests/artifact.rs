//! The `.xfa` format: a round trip, and every kind of bad file rejected with its own error,
//! never a panic.
use xforge_runtime::artifact::WEIGHT_ALIGN;
use xforge_runtime::{
    Activation, Arg, Artifact, ArtifactError, ArtifactHeader, Binding, GemmDesc, KernelImage, LibDtype, LibraryCall,
    MemoryPlan, Step, FORMAT_VERSION,
};

/// D[8,16] = A[8,16]·B[16,16] in f16: A 256 bytes, B 512, D 256.
fn gemm() -> GemmDesc {
    GemmDesc {
        dtype: LibDtype::F16,
        batch: 1,
        m: 8,
        n: 16,
        k: 16,
        stride_a: 0,
        stride_b: 0,
        trans_a: false,
        trans_b: false,
        alpha: 1.0,
        beta: 1.0,
        bias: false,
        residual: false,
        act: Activation::None,
    }
}

fn sample() -> Artifact {
    Artifact {
        header: ArtifactHeader {
            compiler_version: "0.1.0".into(),
            target: "sm_90".into(),
            precision: "fp16".into(),
            options: vec![("tf32".into(), "off".into())],
            model_digest: "0123456789abcdef".into(),
        },
        kernels: KernelImage { ptx: ".version 8.0\n.target sm_90\n".into(), names: vec!["k_a".into(), "k_b".into()] },
        weights: (0..1000u32).map(|i| (i % 251) as u8).collect(),
        memory: MemoryPlan {
            arena_bytes: 4096,
            alignment: 256,
            inputs: vec![Binding { name: "x".into(), dtype: "f16".into(), shape: vec![1, 32], offset: 0 }],
            outputs: vec![Binding { name: "y".into(), dtype: "f16".into(), shape: vec![1, 32], offset: 256 }],
        },
        steps: vec![
            Step::Launch {
                kernel: 1,
                grid: [4, 1, 1],
                block: [256, 1, 1],
                args: vec![Arg::Arena(0), Arg::Weight(64), Arg::Arena(512)],
            },
            Step::Library(LibraryCall {
                kind: "gemm".into(),
                group: 3,
                params: gemm().to_params(),
                args: vec![Arg::Arena(512), Arg::Weight(0), Arg::Arena(256)],
            }),
        ],
    }
}

#[test]
fn round_trip_keeps_everything_and_aligns_the_weights() {
    let a = sample();
    let bytes = a.to_bytes();
    assert_eq!(Artifact::from_bytes(&bytes).unwrap(), a);
    // the weights section's offset (third table entry) is page-aligned
    let off = u64::from_le_bytes(bytes[16 + 24 * 2 + 8..16 + 24 * 2 + 16].try_into().unwrap());
    assert_eq!(off % WEIGHT_ALIGN, 0);
    assert_eq!(&bytes[off as usize..off as usize + a.weights.len()], &a.weights[..]);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample().to_bytes();
    for cut in (0..bytes.len()).step_by(7) {
        let e = Artifact::from_bytes(&bytes[..cut]).unwrap_err();
        assert!(matches!(e, ArtifactError::Foreign | ArtifactError::Truncated(_)), "cut at {cut}: {e}");
    }
}

#[test]
fn a_flipped_byte_names_its_section() {
    let bytes = sample().to_bytes();
    let a = Artifact::from_bytes(&bytes).unwrap();
    let table = |i: usize| {
        let e = 16 + 24 * i;
        let off = u64::from_le_bytes(bytes[e + 8..e + 16].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(bytes[e + 16..e + 24].try_into().unwrap()) as usize;
        (off, len)
    };
    for (i, name) in ["header", "kernels", "weights", "memory", "plan"].iter().enumerate() {
        let (off, len) = table(i);
        for at in [off, off + len / 2, off + len - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert_eq!(
                Artifact::from_bytes(&bad).unwrap_err(),
                ArtifactError::Corrupted(name.to_string()),
                "{name} at {at}"
            );
        }
    }
    // the table itself
    let mut bad = bytes.clone();
    bad[20] ^= 1;
    assert_eq!(Artifact::from_bytes(&bad).unwrap_err(), ArtifactError::Corrupted("table".into()));
    drop(a);
}

#[test]
fn foreign_and_newer_files_are_refused() {
    assert_eq!(Artifact::from_bytes(b"\x08\x07onnx model bytes").unwrap_err(), ArtifactError::Foreign);
    assert_eq!(Artifact::from_bytes(b"").unwrap_err(), ArtifactError::Foreign);
    let mut bytes = sample().to_bytes();
    bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
    let e = Artifact::from_bytes(&bytes).unwrap_err();
    assert_eq!(e, ArtifactError::NewerFormat { found: 7, supported: FORMAT_VERSION });
    assert!(e.to_string().contains("newer"), "{e}");
}

#[test]
fn plans_that_reach_outside_their_buffers_are_refused() {
    let mut a = sample();
    a.steps.push(Step::Launch { kernel: 0, grid: [1, 1, 1], block: [32, 1, 1], args: vec![Arg::Arena(4096)] });
    let e = Artifact::from_bytes(&a.to_bytes()).unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
    let mut a = sample();
    a.steps.push(Step::Launch { kernel: 2, grid: [1, 1, 1], block: [32, 1, 1], args: vec![] });
    let e = Artifact::from_bytes(&a.to_bytes()).unwrap_err();
    assert!(e.to_string().contains("kernel 2"), "{e}");
    let mut a = sample();
    a.steps.push(Step::Launch { kernel: 0, grid: [1, 1, 1], block: [32, 1, 1], args: vec![Arg::Weight(5000)] });
    assert!(matches!(Artifact::from_bytes(&a.to_bytes()).unwrap_err(), ArtifactError::Malformed { .. }));
    // a library call whose matrices run past the weights (B: 512 bytes from 600 of 1000)
    let mut a = sample();
    a.steps.push(Step::Library(LibraryCall {
        kind: "gemm".into(),
        group: 9,
        params: gemm().to_params(),
        args: vec![Arg::Arena(0), Arg::Weight(600), Arg::Arena(1024)],
    }));
    let e = Artifact::from_bytes(&a.to_bytes()).unwrap_err().to_string();
    assert!(e.contains("step 2 (gemm call of group 9)") && e.contains("buffer 1"), "{e}");
}

#[test]
fn targets_run_on_their_own_and_newer_gpus() {
    let h = |t: &str| ArtifactHeader { target: t.into(), ..sample().header };
    assert!(h("sm_90").runs_on(9, 0).is_ok());
    assert!(h("sm_80").runs_on(9, 0).is_ok());
    assert!(h("sm_90a").runs_on(9, 0).is_ok());
    let e = h("sm_90").runs_on(8, 6).unwrap_err();
    assert!(e.to_string().contains("sm_90") && e.to_string().contains("sm_86"), "{e}");
    assert!(h("sm_90a").runs_on(10, 0).is_err());
    assert!(h("gfx90a").runs_on(9, 0).is_err());
}

#[test]
fn writing_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.xfa");
    sample().write(&p).unwrap();
    assert_eq!(Artifact::read(&p).unwrap(), sample());
    // a path whose folder does not exist: an error, and nothing left behind
    let q = dir.path().join("missing").join("m.xfa");
    assert!(matches!(sample().write(&q).unwrap_err(), ArtifactError::Io(_)));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert!(matches!(Artifact::read(&dir.path().join("none.xfa")).unwrap_err(), ArtifactError::Io(_)));
}

/// Re-signs a file after its sections were edited (so the decoders, not the checksums, see
/// the damage).
fn resign(bytes: &mut [u8]) {
    use xforge_runtime::checksum::crc32;
    for i in 0..5 {
        let e = 16 + 24 * i;
        let off = u64::from_le_bytes(bytes[e + 8..e + 16].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(bytes[e + 16..e + 24].try_into().unwrap()) as usize;
        let c = crc32(&bytes[off..off + len]);
        bytes[e + 4..e + 8].copy_from_slice(&c.to_le_bytes());
    }
    let end = 16 + 24 * 5;
    let c = crc32(&bytes[..end]);
    bytes[end..end + 4].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn forged_sections_are_malformed_never_a_panic() {
    let bytes = sample().to_bytes();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % n as u64) as usize
    };
    let mut rejected = 0;
    for _ in 0..5000 {
        let mut bad = bytes.clone();
        // damage a section body (past the table), then make the checksums agree
        for _ in 0..1 + next(4) {
            let at = 16 + 24 * 5 + 4 + next(bytes.len() - (16 + 24 * 5 + 4));
            bad[at] = next(256) as u8;
        }
        resign(&mut bad);
        if Artifact::from_bytes(&bad).is_err() {
            rejected += 1;
        }
    }
    // most edits hit structure; the rest land in data (PTX text, weights) and decode fine
    assert!(rejected > 100, "{rejected}");
}
