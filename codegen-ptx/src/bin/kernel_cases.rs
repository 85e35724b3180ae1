//! Writes GPU check cases for the kernel templates: PTX, launch shape, inputs and the
//! interpreter's outputs, for `gpu_check` (testsuite) to run on a GPU machine.
//!
//!     cargo run --release -p xforge-codegen-ptx --bin kernel_cases -- OUTDIR [sm_90 [NODE_TESTS]]
//!
//! With NODE_TESTS (the conformance runner's cache, `target/onnx-node-tests`), the ONNX node
//! tests of attention, Gemm and MatMul become cases too, on random inputs.
//!
//! Each case is OUTDIR/<name>/{kernel.ptx, meta.tsv, in<k>.npy, out<k>.npy}: one per sample
//! graph (`samples::all`), plus bandwidth cases (`bench` in meta.tsv) that carry no data: the
//! runner fills their inputs and only times the kernel.
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use xforge_codegen_ptx::compile;
use xforge_codegen_ptx::samples::{self, random};
use xforge_ir::{interp, npy, DType, Graph, Tensor, TensorData};
use xforge_kernel::{Kernel, Param};
use xforge_passes::fusion::partition::split_library_epilogue;
use xforge_passes::fusion::{fuse, Schedule};

/// The kernels of a graph's groups; with `split`, each generated GEMM is cut where a library
/// would run its head (as the artifact builder does) and both halves get kernels.
fn kernels(g: &Graph, split: bool) -> Result<(Graph, Vec<Kernel>)> {
    let mut f = fuse(g)?;
    if split {
        for i in (0..f.partition.groups.len()).rev() {
            if let Some((head, tail)) = split_library_epilogue(&f.graph, &f.partition.groups[i]) {
                f.partition.split(i, head, tail);
            }
        }
    }
    // ops with no template (TopK, the bounded forms) run as generic kernels, as completion
    // gives them in the compiler
    for grp in &mut f.partition.groups {
        if grp.schedule == Schedule::Opaque && grp.nodes.len() == 1 {
            grp.schedule = Schedule::Generic;
        }
    }
    // views need no kernel; convolutions are cuDNN calls; a group no template takes runs node
    // by node as generic kernels, as completion cuts it in the compiler
    let mut ks = vec![];
    for (i, grp) in f.partition.groups.iter().enumerate() {
        if matches!(grp.schedule, Schedule::View | Schedule::LibraryConv) {
            continue;
        }
        match xforge_kernel::generate(&f.graph, grp, i) {
            Ok(k) => ks.push(k),
            Err(_) if grp.schedule != Schedule::Generic => {
                for &n in &grp.nodes {
                    let single = xforge_passes::fusion::partition::group_of_nodes(&f.graph, Schedule::Generic, vec![n]);
                    ks.push(xforge_kernel::generate(&f.graph, &single, i)?);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((f.graph, ks))
}

/// One case per kernel of a graph, each checked against the interpreter on the fused graph
/// (every kernel's inputs are graph inputs, weights or values the interpreter computes).
fn write_graph_cases(dir: &Path, name: &str, g: &Graph, chip: &str, tol: f64, split: bool) -> Result<()> {
    let (fused, ks) = kernels(g, split)?;
    let feed: HashMap<String, Tensor> = fused
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            (
                fused.name_of(v).to_string(),
                random(fused.ty(v).dtype, &fused.ty(v).static_shape().unwrap(), 31 + i as u64),
            )
        })
        .collect();
    // every intermediate value, so each kernel can be checked alone
    let mut probe = fused.clone();
    probe.outputs = probe.nodes.iter().flat_map(|n| n.output_ids()).collect();
    let values = interp::run(&probe, &feed)?;
    let value_of = |v: xforge_ir::ValueId| -> Option<Tensor> {
        if let Some(t) = feed.get(fused.name_of(v)) {
            return Some(t.clone());
        }
        if let Some(w) = fused.weights.get(&v) {
            return Some(w.clone());
        }
        probe.outputs.iter().position(|&o| o == v).map(|k| values[k].clone())
    };
    for (ki, k) in ks.iter().enumerate() {
        let d = dir.join(format!("{name}_k{ki}"));
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("kernel.ptx"), compile(std::slice::from_ref(k), chip)?)?;
        let mut meta = meta_header(k, tol);
        for (i, p) in k.params.iter().enumerate() {
            let file = param_line(&mut meta, i, p);
            let t = match table(k, i, p)? {
                Some(t) => t,
                None => value_of(p.value).context("a kernel parameter has no value")?,
            };
            std::fs::write(d.join(file), npy::to_bytes(&raw_bf16(t)))?;
        }
        std::fs::write(d.join("meta.tsv"), meta)?;
    }
    println!("{name}: {} kernels", ks.len());
    Ok(())
}

/// The kernel, launch shape and tolerance lines of a case's `meta.tsv`.
fn meta_header(k: &Kernel, tol: f64) -> String {
    format!(
        "kernel\t{}\ngrid\t{} {} {}\nblock\t{} {} {}\ntol\t{tol}\n",
        k.name, k.grid[0], k.grid[1], k.grid[2], k.block[0], k.block[1], k.block[2]
    )
}

/// Appends parameter `i`'s line to `meta`; returns the file that holds its values.
fn param_line(meta: &mut String, i: usize, p: &Param) -> String {
    let dir = if p.output { "out" } else { "in" };
    let file = format!("{dir}{i}.npy");
    meta.push_str(&format!("param\t{i}\t{dir}\t{}\t{}\t{file}\n", p.dtype.name(), p.elements));
    file
}

/// Parameter `i`'s compiled-in table (the bytes the artifact would carry in place of its
/// value: a reordered weight, a generic kernel's table), if it has one.
fn table(k: &Kernel, i: usize, p: &Param) -> Result<Option<Tensor>> {
    let Some(bytes) = k.constant(i) else { return Ok(None) };
    let data = TensorData::from_le_bytes(p.dtype, bytes).context("a kernel table of whole elements")?;
    Ok(Some(Tensor::new(vec![p.elements], data)))
}

/// bf16 travels as its raw bits (u16) so the runner uploads it unchanged.
fn raw_bf16(t: Tensor) -> Tensor {
    match t.data() {
        TensorData::BF16(v) => {
            Tensor::new(t.shape().to_vec(), TensorData::U16(v.iter().map(|x| x.to_bits()).collect()))
        }
        _ => t,
    }
}

fn write_case(dir: &Path, name: &str, g: &Graph, chip: &str, tol: f64, bench: bool) -> Result<()> {
    let (fused, ks) = kernels(g, false)?;
    anyhow::ensure!(ks.len() == 1, "{name}: expected one kernel, got {}", ks.len());
    let k = &ks[0];
    let d = dir.join(name);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join("kernel.ptx"), compile(&ks, chip)?)?;
    let mut meta = meta_header(k, tol);
    if bench {
        writeln!(meta, "bench\t1")?;
    }
    // inputs by graph name; the interpreter's outputs by value
    let feed: HashMap<String, Tensor> = if bench {
        HashMap::new()
    } else {
        fused
            .inputs
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                (
                    fused.name_of(v).to_string(),
                    random(fused.ty(v).dtype, &fused.ty(v).static_shape().unwrap(), 11 + i as u64),
                )
            })
            .collect()
    };
    let expected = if bench { vec![] } else { interp::run(&fused, &feed)? };
    for (i, p) in k.params.iter().enumerate() {
        let file = param_line(&mut meta, i, p);
        if bench {
            continue;
        }
        let t = if let Some(t) = table(k, i, p)? {
            t
        } else if p.output {
            let at = fused.outputs.iter().position(|&o| o == p.value).context("kernel output is a graph output")?;
            expected[at].clone()
        } else if let Some(w) = fused.weights.get(&p.value) {
            w.clone()
        } else {
            feed[fused.name_of(p.value)].clone()
        };
        std::fs::write(d.join(file), npy::to_bytes(&raw_bf16(t)))?;
    }
    std::fs::write(d.join("meta.tsv"), meta)?;
    println!("{name}: {} ({} params)", k.name, k.params.len());
    Ok(())
}

/// The node tests of the contraction and attention templates: every kernel of each model whose
/// groups all have templates (the others are listed as skipped).
fn node_test_cases(dir: &Path, cache: &Path, chip: &str) -> Result<()> {
    let manifest = std::fs::read_to_string(cache.join("manifest.tsv")).context("node test manifest")?;
    let (mut written, mut skipped) = (0, vec![]);
    for line in manifest.lines() {
        let name = line.split('\t').next().unwrap_or_default();
        let wanted = ["attention", "gemm", "matmul"].iter().any(|w| name.contains(w)) && !name.contains("integer");
        if !wanted || cache.join(name).join("unsupported_io").exists() {
            continue;
        }
        let Ok(m) = xforge_frontend::load(&cache.join(name).join("model.onnx"), &Default::default()) else {
            skipped.push(name);
            continue;
        };
        if m.graph.inputs.iter().any(|&v| !m.graph.ty(v).dtype.is_float() && m.graph.ty(v).dtype != DType::Bool) {
            skipped.push(name);
            continue;
        }
        let tol = if m.graph.inputs.iter().any(|&v| m.graph.ty(v).dtype == DType::F32) { 1e-5 } else { 1e-2 };
        match kernels(&m.graph, false) {
            Ok(_) => {
                write_graph_cases(dir, name, &m.graph, chip, tol, false)?;
                written += 1;
            }
            Err(_) => skipped.push(name),
        }
    }
    println!("node tests: {written} written, {} skipped: {}", skipped.len(), skipped.join(" "));
    Ok(())
}

/// Marks a bench case as a contraction of `flops` operations.
fn add_flops(dir: &Path, name: &str, flops: f64) -> Result<()> {
    let meta = dir.join(name).join("meta.tsv");
    let text = std::fs::read_to_string(&meta)?;
    std::fs::write(meta, format!("{text}flops\t{flops}\n"))?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).context("usage: kernel_cases OUTDIR [CHIP]")?);
    let chip = args.get(2).map(String::as_str).unwrap_or("sm_90");
    for s in samples::all() {
        write_case(dir, &s.name, &s.graph, chip, s.tol, false)?;
    }
    // random graphs: every kernel of each, differential against the interpreter
    for seed in 0..24 {
        let dt = [DType::F32, DType::F16, DType::BF16][seed as usize % 3];
        let tol = if dt == DType::F32 { 1e-5 } else { 1e-2 };
        write_graph_cases(dir, &format!("random{seed}_{dt}"), &samples::random_graph(seed, dt), chip, tol, false)?;
    }
    // NonMaxSuppression: TopK's order, then the walk as one block; indices compare exactly
    for dt in [DType::F32, DType::F16, DType::BF16] {
        for (name, g) in samples::nms_cases(dt) {
            write_graph_cases(dir, &format!("{name}_{dt}"), &g, chip, 0.0, false)?;
        }
    }
    // contractions whose epilogue moves after a library GEMM: the tails' kernels (head splits,
    // erf-GELU) against the interpreter
    for dt in [DType::F32, DType::F16, DType::BF16] {
        let tol = if dt == DType::F32 { 1e-5 } else { 1e-2 };
        for (name, g) in samples::contractions(dt) {
            write_graph_cases(dir, &format!("{name}_split_{dt}"), &g, chip, tol, true)?;
        }
    }
    // tensor-core attention fed synchronously (XFORGE_ATTN_PIPELINE=0, the baseline of the
    // default pipelined feed): the attention samples again, and its bench case (this binary is
    // one thread, so the variable reaches only these kernels)
    std::env::set_var("XFORGE_ATTN_PIPELINE", "0");
    for dt in [DType::F16, DType::BF16] {
        for (name, g) in samples::attentions(dt) {
            write_case(dir, &format!("{name}_sync_{dt}"), &g, chip, 1e-2, false)?;
        }
        let shape = [8, 16, 2048, 64];
        let name = format!("bench_attention_sync_{dt}");
        write_case(dir, &name, &samples::attention(dt, &shape), chip, 0.0, true)?;
        add_flops(dir, &name, 4.0 * (shape[0] * shape[1] * shape[2] * shape[2] * shape[3]) as f64)?;
    }
    std::env::remove_var("XFORGE_ATTN_PIPELINE");
    // softmax and LayerNorm over 4096×4096 f16: 32 MiB in, 32 MiB out
    write_case(dir, "bench_softmax_f16", &samples::reduction("softmax", DType::F16, 4096, 4096), chip, 0.0, true)?;
    write_case(dir, "bench_layernorm_f16", &samples::reduction("layernorm", DType::F16, 4096, 4096), chip, 0.0, true)?;
    // the same rows, 16384 of them: 128 MiB in, 128 MiB out, where launch latency stops mattering
    write_case(dir, "bench_softmax_f16_16k", &samples::reduction("softmax", DType::F16, 16384, 4096), chip, 0.0, true)?;
    let ln = samples::reduction("layernorm", DType::F16, 16384, 4096);
    write_case(dir, "bench_layernorm_f16_16k", &ln, chip, 0.0, true)?;
    // ConvNeXt's LayerNorm over 96 channels of 32·56·56 pixels: short rows, many per block
    let ln = samples::reduction("layernorm", DType::F16, 32 * 56 * 56, 96);
    write_case(dir, "bench_layernorm_f16_short", &ln, chip, 0.0, true)?;
    // the other templates at memory-bound sizes
    let f16 = DType::F16;
    for (name, g) in samples::pools_over(f16, &[64, 64, 112, 112]) {
        write_case(dir, &format!("bench_{name}_f16"), &g, chip, 0.0, true)?;
    }
    write_case(dir, "bench_colsum_f16", &samples::column_sum(f16, 16384, 8192), chip, 0.0, true)?;
    write_case(dir, "bench_cumsum_f16", &samples::cumsum(f16, &[8, 4096, 2048]), chip, 0.0, true)?;
    write_case(dir, "bench_transpose_f16", &samples::transpose(f16, &[8192, 8192], &[1, 0]), chip, 0.0, true)?;
    let t32 = samples::transpose(DType::F32, &[8192, 4096], &[1, 0]);
    write_case(dir, "bench_transpose_f32", &t32, chip, 0.0, true)?;
    // 256 MiB in, 256 MiB out, in f32 and f16
    write_case(dir, "bench_elementwise_f32", &samples::relu(DType::F32, 64 << 20), chip, 0.0, true)?;
    write_case(dir, "bench_elementwise_f16", &samples::relu(DType::F16, 128 << 20), chip, 0.0, true)?;
    // the shipped models: every generated kernel of each, on random inputs
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    for name in ["mnasnet0_5", "bert_tiny"] {
        let m = xforge_frontend::load(&models.join(format!("{name}.onnx")), &Default::default())?;
        write_graph_cases(dir, name, &m.graph, chip, 1e-5, false)?;
    }
    if let Some(cache) = args.get(3) {
        node_test_cases(dir, Path::new(cache), chip)?;
    }
    // contractions, timed as TFLOP/s: the BERT-FFN-like GEMM + bias + erf-GELU, flash attention
    let (m, k, n) = (4096, 4096, 4096);
    for dt in [DType::F32, DType::F16] {
        let name = format!("bench_gemm_gelu_{dt}");
        write_case(dir, &name, &samples::gemm_bias_gelu(dt, &[m], k, n), chip, 0.0, true)?;
        add_flops(dir, &name, 2.0 * (m * k * n) as f64)?;
    }
    let shape = [8, 16, 2048, 64];
    for dt in [DType::F16, DType::BF16, DType::F32] {
        let name = format!("bench_attention_{dt}");
        write_case(dir, &name, &samples::attention(dt, &shape), chip, 0.0, true)?;
        add_flops(dir, &name, 4.0 * (shape[0] * shape[1] * shape[2] * shape[2] * shape[3]) as f64)?;
    }
    Ok(())
}
