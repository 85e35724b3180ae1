//! The `.xfa` format: a round trip, and every kind of bad file rejected with its own error,
//! never a panic.
use xforge_runtime::artifact::WEIGHT_ALIGN;
use xforge_runtime::{
    Activation, Arg, Artifact, ArtifactError, ArtifactHeader, BatchDim, Binding, GemmDesc, KernelImage, LibDtype,
    LibraryCall, MemoryPlan, Plan, Step, FORMAT_VERSION,
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
            batch: None,
        },
        kernels: KernelImage {
            ptx: ".version 8.0\n.target sm_90\n.visible .entry k_a(\n)\n{\n}\n.visible .entry k_b()\n{\n}\n".into(),
            code_object: vec![],
            names: vec!["k_a".into(), "k_b".into()],
        },
        weights: (0..1000u32).map(|i| (i % 251) as u8).collect(),
        plans: vec![Plan { memory: memory(0, None), steps: steps(), costs: vec![] }],
    }
}

/// x[1,32] → y[1,32] in f16 (the leading dim the batch's when `axis` is given).
fn memory(batch: u64, axis: Option<u32>) -> MemoryPlan {
    let rows = batch.max(1);
    let bind = |name: &str, offset| Binding {
        name: name.into(),
        dtype: "f16".into(),
        shape: vec![rows, 32],
        offset,
        batch_axis: axis,
        valid: None,
    };
    MemoryPlan { batch, arena_bytes: 4096, alignment: 256, inputs: vec![bind("x", 0)], outputs: vec![bind("y", 256)] }
}

fn steps() -> Vec<Step> {
    vec![
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
    ]
}

/// `sample` compiled for batches 1, 2 and 4 (the steps are the same: the test reads no sizes).
fn bucketed(padding: Result<(), String>) -> Artifact {
    let mut a = sample();
    // without padding the outputs' batch axes are not known
    let pads = padding.is_ok();
    a.header.batch = Some(BatchDim { symbol: "batch".into(), padding });
    a.plans = [1, 2, 4].iter().map(|&b| Plan { memory: memory(b, Some(0)), steps: steps(), costs: vec![] }).collect();
    for p in a.plans.iter_mut().filter(|_| !pads) {
        p.memory.outputs[0].batch_axis = None;
    }
    a
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
    for (i, name) in ["header", "kernels", "weights", "memory 0", "plan 0"].iter().enumerate() {
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
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let e = Artifact::from_bytes(&bytes).unwrap_err();
    assert_eq!(e, ArtifactError::NewerFormat { found: FORMAT_VERSION + 1, supported: FORMAT_VERSION });
    assert!(e.to_string().contains("newer"), "{e}");
}

#[test]
fn plans_that_reach_outside_their_buffers_are_refused() {
    let mut a = sample();
    a.plans[0].steps.push(Step::Launch { kernel: 0, grid: [1, 1, 1], block: [32, 1, 1], args: vec![Arg::Arena(4096)] });
    let e = Artifact::from_bytes(&a.to_bytes()).unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
    let mut a = sample();
    a.plans[0].steps.push(Step::Launch { kernel: 2, grid: [1, 1, 1], block: [32, 1, 1], args: vec![] });
    let e = Artifact::from_bytes(&a.to_bytes()).unwrap_err();
    assert!(e.to_string().contains("kernel 2"), "{e}");
    let mut a = sample();
    a.plans[0].steps.push(Step::Launch {
        kernel: 0,
        grid: [1, 1, 1],
        block: [32, 1, 1],
        args: vec![Arg::Weight(5000)],
    });
    assert!(matches!(Artifact::from_bytes(&a.to_bytes()).unwrap_err(), ArtifactError::Malformed { .. }));
    // a library call whose matrices run past the weights (B: 512 bytes from 600 of 1000)
    let mut a = sample();
    a.plans[0].steps.push(Step::Library(LibraryCall {
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
    let count = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    for i in 0..count {
        let e = 16 + 24 * i;
        let off = u64::from_le_bytes(bytes[e + 8..e + 16].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(bytes[e + 16..e + 24].try_into().unwrap()) as usize;
        let c = crc32(&bytes[off..off + len]);
        bytes[e + 4..e + 8].copy_from_slice(&c.to_le_bytes());
    }
    resign_table(bytes);
}

#[test]
fn forged_sections_are_malformed_never_a_panic() {
    forge(&sample().to_bytes());
    forge(&bucketed(Ok(())).to_bytes());
}

fn forge(bytes: &[u8]) {
    let count = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let body = 16 + 24 * count + 4;
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % n as u64) as usize
    };
    let mut rejected = 0;
    for _ in 0..5000 {
        let mut bad = bytes.to_vec();
        // damage a section body (past the table), then make the checksums agree
        for _ in 0..1 + next(4) {
            let at = body + next(bytes.len() - body);
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

#[test]
fn buckets_round_trip_and_their_sections_are_named() {
    let a = bucketed(Err("node 'n' (CumSum) runs along the batch axis".into()));
    let bytes = a.to_bytes();
    assert_eq!(Artifact::from_bytes(&bytes).unwrap(), a);
    assert_eq!(u32::from_le_bytes(bytes[12..16].try_into().unwrap()), 3 + 2 * 3);
    // a flipped byte in the second bucket's plan names that section
    let e = 16 + 24 * 6;
    let off = u64::from_le_bytes(bytes[e + 8..e + 16].try_into().unwrap()) as usize;
    let mut bad = bytes.clone();
    bad[off + 3] ^= 1;
    assert_eq!(Artifact::from_bytes(&bad).unwrap_err(), ArtifactError::Corrupted("plan 1".into()));
}

#[test]
fn buckets_that_disagree_are_refused() {
    let refused = |a: Artifact, needle: &str| {
        let e = Artifact::from_bytes(&a.to_bytes()).unwrap_err();
        assert!(matches!(e, ArtifactError::Malformed { .. }) && e.to_string().contains(needle), "{e}");
    };
    let mut a = bucketed(Ok(()));
    a.plans.swap(1, 2);
    refused(a, "buckets grow");
    let mut a = bucketed(Ok(()));
    a.plans[2].memory.inputs[0].shape[1] = 16;
    refused(a, "binding 'x' has shape [4, 16] at batch 4");
    let mut a = bucketed(Ok(()));
    a.plans[1].memory.outputs[0].name = "z".into();
    refused(a, "differs from the first bucket's");
    let mut a = bucketed(Ok(()));
    a.plans[1].memory.inputs[0].shape[0] = 3;
    refused(a, "at batch 2");
    // a batch axis in an artifact without a batch dim, and several plans without one
    let mut a = sample();
    a.plans[0].memory.inputs[0].batch_axis = Some(0);
    refused(a, "batch axis");
    let mut a = bucketed(Ok(()));
    a.header.batch = None;
    refused(a, "without a batch dim");
    // a batch axis past the binding's rank
    let mut a = bucketed(Ok(()));
    for p in &mut a.plans {
        p.memory.inputs[0].batch_axis = Some(2);
    }
    refused(a, "batch axis 2 of rank 2");
}

#[test]
fn a_batch_runs_on_its_bucket_or_padded_to_the_next() {
    let a = bucketed(Ok(()));
    assert_eq!(a.plan_for(1), Ok(0));
    assert_eq!(a.plan_for(2), Ok(1));
    assert_eq!(a.plan_for(3), Ok(2));
    assert_eq!(a.plan_for(4), Ok(2));
    assert!(a.plan_for(5).unwrap_err().contains("larger than the largest bucket (1, 2, 4)"));
    assert!(a.plan_for(0).unwrap_err().contains("empty"));
    let a = bucketed(Err("node 'c' (CumSum) runs along the batch axis".into()));
    assert_eq!(a.plan_for(2), Ok(1));
    let e = a.plan_for(3).unwrap_err();
    assert!(e.contains("not one of the buckets (1, 2, 4)") && e.contains("node 'c' (CumSum)"), "{e}");
    // the row layout the session pads and cuts by
    let x = &a.plans[2].memory.inputs[0];
    assert_eq!((x.rows(4), x.shape_at(4, 3)), (Some((1, 64)), vec![3, 32]));
    assert_eq!(sample().plan_for(0), Ok(0));
}

#[test]
fn older_formats_are_refused_with_a_way_out() {
    let mut bytes = sample().to_bytes();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let e = Artifact::from_bytes(&bytes).unwrap_err();
    assert_eq!(e, ArtifactError::OlderFormat { found: 2, supported: FORMAT_VERSION });
    assert!(e.to_string().contains("recompile"), "{e}");
}

#[test]
fn a_valid_length_round_trips_and_must_lie_in_the_arena() {
    // an output padded to its bound, with the i64 length at arena offset 512
    let mut a = sample();
    a.plans[0].memory.outputs[0].valid = Some((1, 512));
    let back = Artifact::from_bytes(&a.to_bytes()).unwrap();
    assert_eq!(back.plans[0].memory.outputs[0].valid, Some((1, 512)));
    // past the arena: refused, naming the output
    a.plans[0].memory.outputs[0].valid = Some((1, a.plans[0].memory.arena_bytes));
    let e = Artifact::from_bytes(&a.to_bytes()).unwrap_err();
    assert!(e.to_string().contains("valid length"), "{e}");
    // on an input: refused
    let mut a = sample();
    a.plans[0].memory.inputs[0].valid = Some((0, 0));
    assert!(Artifact::from_bytes(&a.to_bytes()).is_err());
}

/// `a`'s bytes with its header replaced by `h`'s encoding, every checksum and the digest
/// recomputed: what a forger who knows the format can write.
fn forged(mut a: Artifact, edit: impl FnOnce(&mut Artifact)) -> Result<Artifact, ArtifactError> {
    edit(&mut a);
    Artifact::from_bytes(&a.to_bytes())
}

#[test]
fn forged_headers_and_kernel_tables_are_refused_with_their_field() {
    let why = |r: Result<Artifact, ArtifactError>| r.unwrap_err().to_string();
    let e = why(forged(sample(), |a| a.header.target = "sm_9x".into()));
    assert!(e.contains("header") && e.contains("sm_9x"), "{e}");
    let e = why(forged(sample(), |a| a.header.precision = "fp64".into()));
    assert!(e.contains("precision") && e.contains("fp64"), "{e}");
    let e = why(forged(sample(), |a| a.header.model_digest = "../../etc".into()));
    assert!(e.contains("model digest"), "{e}");
    let e = why(forged(sample(), |a| a.header.options.push(("k\n".into(), "v".into()))));
    assert!(e.contains("option"), "{e}");
    // garbled PTX: a kernel the code does not declare, code for another target
    let e = why(forged(sample(), |a| a.kernels.ptx = a.kernels.ptx.replace(".entry k_b", ".entry k_c")));
    assert!(e.contains("kernels") && e.contains("k_b"), "{e}");
    let e = why(forged(sample(), |a| a.kernels.ptx = a.kernels.ptx.replace(".target sm_90", ".target sm_80")));
    assert!(e.contains("sm_90"), "{e}");
    let e = why(forged(sample(), |a| a.kernels.names[1] = "k_a".into()));
    assert!(e.contains("twice"), "{e}");
    // what a build writes passes: AMD targets, empty code without kernels
    assert!(forged(sample(), |a| a.header.target = "sm_90a".into()).is_err(), "sm_90a PTX must say sm_90a");
    forged(sample(), |a| {
        a.header.target = "gfx942".into();
        a.kernels = KernelImage::default();
        a.plans[0].steps.retain(|s| matches!(s, Step::Library(_)));
    })
    .unwrap();
}

#[test]
fn moved_sections_appended_bytes_and_a_wrong_digest_are_refused() {
    let bytes = sample().to_bytes();
    // bytes after the digest
    let mut more = bytes.clone();
    more.extend_from_slice(b"trailing");
    let e = Artifact::from_bytes(&more).unwrap_err();
    assert!(e.to_string().contains("8 bytes follow the file digest"), "{e}");
    // the digest itself damaged
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert_eq!(Artifact::from_bytes(&bad).unwrap_err(), ArtifactError::Corrupted("file digest".into()));
    // the weights' offset pointed at the start of the file (checksums and digest recomputed)
    let mut moved = bytes.clone();
    let e = 16 + 24 * 2;
    moved[e + 8..e + 16].copy_from_slice(&0u64.to_le_bytes());
    resign_table(&mut moved);
    let err = Artifact::from_bytes(&moved).unwrap_err().to_string();
    assert!(err.contains("weights section starts at byte 0"), "{err}");
}

/// Recomputes the table's checksum and the file digest (section bodies untouched).
fn resign_table(bytes: &mut [u8]) {
    use xforge_runtime::checksum::crc32;
    let count = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let end = 16 + 24 * count;
    let c = crc32(&bytes[..end]);
    bytes[end..end + 4].copy_from_slice(&c.to_le_bytes());
    let n = bytes.len() - 32;
    let d = xforge_runtime::artifact::file_digest(&bytes[..n]);
    bytes[n..].copy_from_slice(&d);
}

/// A minimal AMDGPU ELF: the header (flags = `mach`), a string table and a symbol table naming
/// `symbols` (defined in section 1).
fn elf(machine: u16, mach: u32, symbols: &[&str]) -> Vec<u8> {
    let mut strtab = vec![0u8];
    let mut syms = vec![0u8; 24];
    for s in symbols {
        let at = strtab.len() as u32;
        strtab.extend_from_slice(s.as_bytes());
        strtab.push(0);
        let mut e = [0u8; 24];
        e[..4].copy_from_slice(&at.to_le_bytes());
        e[6..8].copy_from_slice(&1u16.to_le_bytes());
        syms.extend_from_slice(&e);
    }
    let (str_at, sym_at) = (64usize, 64 + strtab.len());
    let sh_at = sym_at + syms.len();
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b[40..48].copy_from_slice(&(sh_at as u64).to_le_bytes());
    b[48..52].copy_from_slice(&mach.to_le_bytes());
    b[58..60].copy_from_slice(&64u16.to_le_bytes());
    b[60..62].copy_from_slice(&3u16.to_le_bytes());
    b.extend_from_slice(&strtab);
    b.extend_from_slice(&syms);
    let section = |kind: u32, off: usize, size: usize, link: u32, entsize: u64| {
        let mut h = [0u8; 64];
        h[4..8].copy_from_slice(&kind.to_le_bytes());
        h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
        h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
        h[40..44].copy_from_slice(&link.to_le_bytes());
        h[56..64].copy_from_slice(&entsize.to_le_bytes());
        h
    };
    b.extend_from_slice(&[0u8; 64]);
    b.extend_from_slice(&section(3, str_at, strtab.len(), 0, 0));
    b.extend_from_slice(&section(2, sym_at, syms.len(), 1, 24));
    b
}

#[test]
fn amd_code_objects_are_checked_against_the_header_and_the_kernel_table() {
    use xforge_runtime::code_object;
    let amd = |code: Vec<u8>| {
        forged(sample(), |a| {
            a.header.target = "gfx942".into();
            a.kernels = KernelImage { ptx: String::new(), code_object: code, names: vec!["k_a".into(), "k_b".into()] };
        })
    };
    let good = elf(224, 0x54c, &["k_a", "k_a.kd", "k_b", "k_b.kd"]);
    let co = code_object::parse(&good).unwrap();
    assert_eq!((co.chip.as_str(), co.kernels().collect::<Vec<_>>()), ("gfx942", vec!["k_a", "k_b"]));
    amd(good.clone()).unwrap();
    let why = |r: Result<Artifact, ArtifactError>| r.unwrap_err().to_string();
    let e = why(amd(elf(224, 0x3f, &["k_a.kd", "k_b.kd"])));
    assert!(e.contains("gfx90a, not gfx942"), "{e}");
    let e = why(amd(elf(62, 0x4c, &["k_a.kd", "k_b.kd"])));
    assert!(e.contains("EM_AMDGPU"), "{e}");
    let e = why(amd(elf(224, 0x4c, &["k_a.kd"])));
    assert!(e.contains("k_b") && e.contains(".kd"), "{e}");
    let e = why(amd(b"not an elf".to_vec()));
    assert!(e.contains("not ELF"), "{e}");
    // PTX in an AMD artifact, a code object in an NVIDIA one
    let e = why(forged(sample(), |a| a.kernels.code_object = good.clone()));
    assert!(e.contains("AMDGPU code object"), "{e}");
    // a section table at the top of the address space: its header fields' offsets overflowed
    // (a panic found by an artifact campaign after 9.4 M executions, about 9 minutes)
    for back in [0u64, 1, 3, 30, 60] {
        let mut bad = good.clone();
        bad[40..48].copy_from_slice(&(u64::MAX - back).to_le_bytes());
        let e = code_object::parse(&bad).unwrap_err();
        assert!(e.contains("section header 0 lies outside the file") || e.contains("overflows"), "{e}");
    }
    // every truncation and every byte flipped: an error or a parse, never a panic
    for n in 0..good.len() {
        let _ = code_object::parse(&good[..n]);
        let mut bad = good.clone();
        bad[n] ^= 0xff;
        let _ = code_object::parse(&bad);
        bad[n] = 0x80;
        let _ = code_object::parse(&bad);
    }
}
