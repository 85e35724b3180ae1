//! `xforge compile MODEL.onnx --target sm_90 [-o MODEL.xfa] [--batch 1,8,32]` writes the
//! artifact; `--emit fused|graph|mlir|llvm|ptx` prints a stage instead.
use super::{load, BadInput, ShapeArgs};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;
use xforge_codegen_ptx::Stage;
use xforge_ir::Dim;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Emit {
    /// The fusion groups, one line each, ending with `kernels: N (from M ops)`.
    Fused,
    /// The fused graph in xforge's IR text form.
    Graph,
    /// The generated kernels as one MLIR module (`gpu` dialect).
    Mlir,
    /// The generated kernels as LLVM IR (libdevice linked, O3).
    Llvm,
    /// The generated kernels as one PTX module for `--target`.
    Ptx,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Precision {
    Fp32,
    Fp16,
    Bf16,
}

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Print this stage instead of writing the artifact.
    #[arg(long, value_enum)]
    emit: Option<Emit>,
    /// The artifact to write (default: the model's path with the extension .xfa).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Generate kernels for the GEMMs a vendor library (cuBLASLt) would run.
    #[arg(long)]
    generated_gemm: bool,
    /// Storage precision of weights and activations (arithmetic stays f32 in the kernels;
    /// inputs and outputs keep their types). fp32 uses no TF32.
    #[arg(long, value_enum, default_value = "fp32")]
    precision: Precision,
    /// NVIDIA architecture: sm_80, sm_86, sm_89, sm_90, sm_90a.
    #[arg(long, default_value = "sm_90")]
    target: String,
    /// With --emit mlir|llvm|ptx: print the kernels that have templates even if some groups
    /// have none yet (otherwise that is an error naming them).
    #[arg(long)]
    allow_missing: bool,
    /// Batch-size buckets for the model's symbolic batch dim (1,8,32): a plan per bucket, and
    /// a batch between two buckets runs padded to the larger where the model allows it.
    #[arg(long, value_delimiter = ',')]
    batch: Vec<u64>,
    /// The symbolic dim --batch binds (default: the inputs' only symbol, or `batch`).
    #[arg(long, value_name = "NAME")]
    batch_dim: Option<String>,
    #[command(flatten)]
    shapes: ShapeArgs,
}

/// The model, with `--precision` applied, fused (GEMM epilogues after cuBLASLt calls split off
/// unless `--generated-gemm`).
fn fused_model(a: &Args, shapes: &ShapeArgs) -> anyhow::Result<xforge_passes::fusion::Fused> {
    let mut m = load(&a.model, shapes)?;
    let half = match a.precision {
        Precision::Fp32 => None,
        Precision::Fp16 => Some(xforge_ir::DType::F16),
        Precision::Bf16 => Some(xforge_ir::DType::BF16),
    };
    if let Some(dt) = half {
        let n =
            xforge_passes::precision::convert(&mut m.graph, dt).map_err(|e| BadInput(format!("--precision: {e}")))?;
        tracing::info!("{n} weights converted to {dt}");
    }
    let t = Instant::now();
    let mut fused = xforge_passes::fusion::fuse(&m.graph)?;
    if !a.generated_gemm {
        let n = crate::build::split_library_epilogues(&mut fused);
        tracing::info!("{n} GEMM epilogues moved after a cuBLASLt call");
    }
    tracing::info!(
        "fused in {:.3} s: {} e-graph iterations, {} e-nodes",
        t.elapsed().as_secs_f64(),
        fused.saturation.iterations,
        fused.saturation.enodes
    );
    Ok(fused)
}

/// The batch dim `--batch` binds and the axis of each input that holds it, read from the model
/// with its symbols unbound.
fn batch_dim(a: &Args) -> anyhow::Result<(String, Vec<Option<usize>>)> {
    let m = load(&a.model, &a.shapes)?;
    let g = &m.graph;
    let mut symbols: Vec<String> = vec![];
    for &i in &g.inputs {
        for d in g.ty(i).shape.iter().flatten() {
            if let Dim::Sym(s) = d {
                if !symbols.contains(s) {
                    symbols.push(s.clone());
                }
            }
        }
    }
    let sym = match &a.batch_dim {
        Some(s) if symbols.contains(s) => s.clone(),
        Some(s) => {
            return Err(BadInput(format!(
                "--batch-dim {s}: the model's inputs have no such dim (symbolic dims: {})",
                if symbols.is_empty() { "none".to_string() } else { symbols.join(", ") }
            ))
            .into())
        }
        None if symbols.len() == 1 => symbols[0].clone(),
        None if symbols.iter().any(|s| s == "batch") => "batch".into(),
        None if symbols.is_empty() => {
            let shapes: Vec<String> = g.inputs.iter().map(|&i| format!("{} {}", g.name_of(i), g.ty(i))).collect();
            return Err(BadInput(format!(
                "--batch: the model's inputs have no symbolic dim ({}); export the model with a dynamic batch",
                shapes.join(", ")
            ))
            .into());
        }
        None => {
            return Err(BadInput(format!(
                "--batch: the inputs have several symbolic dims ({}); name one with --batch-dim and bind the others with --shape",
                symbols.join(", ")
            ))
            .into())
        }
    };
    let mut axes = vec![];
    for &i in &g.inputs {
        let at: Vec<usize> = g
            .ty(i)
            .shape
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(k, d)| match d {
                Dim::Sym(s) if *s == sym => Some(k),
                _ => None,
            })
            .collect();
        if at.len() > 1 {
            return Err(BadInput(format!(
                "--batch: input '{}' has the dim '{sym}' on {} axes",
                g.name_of(i),
                at.len()
            ))
            .into());
        }
        axes.push(at.first().copied());
    }
    Ok((sym, axes))
}

/// The fused graph of each `--batch` bucket and the batch dim's description (its outputs'
/// batch axes where every node keeps batch rows apart, else the first node that does not).
fn buckets(a: &Args) -> anyhow::Result<(Vec<(u64, xforge_passes::fusion::Fused)>, crate::build::BatchSpec)> {
    let (symbol, input_axes) = batch_dim(a)?;
    let mut sizes = a.batch.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.first() == Some(&0) || sizes.len() > xforge_runtime::artifact::MAX_BUCKETS {
        return Err(BadInput(format!(
            "--batch: buckets are 1 to {} sizes of at least 1",
            xforge_runtime::artifact::MAX_BUCKETS
        ))
        .into());
    }
    let bar = ProgressBar::new(sizes.len() as u64);
    bar.set_style(ProgressStyle::with_template("fusing batch {msg} {bar:30} {pos}/{len} buckets").unwrap());
    let mut fused = vec![];
    for &b in &sizes {
        bar.set_message(b.to_string());
        let mut shapes = a.shapes.clone();
        shapes.shapes.push(format!("{symbol}={b}"));
        fused.push((b, fused_model(a, &shapes)?));
        bar.inc(1);
    }
    bar.finish_and_clear();
    // the rows are read at every bucket above 1 (at batch 1 every axis of size 1 could be it)
    let found: Vec<Result<Vec<Option<usize>>, String>> = fused
        .iter()
        .filter(|(b, _)| *b > 1)
        .map(|(b, f)| {
            xforge_passes::batch_rows::batch_rows(&f.graph, *b as usize, &input_axes)
                .map_err(|e| format!("at batch {b}, {e}"))
        })
        .collect();
    let mut output_axes = match found.iter().find(|r| r.is_err()) {
        Some(e) => e.clone(),
        None if found.is_empty() => Err("it was compiled for batch 1 only".into()),
        None if found.windows(2).all(|w| w[0] == w[1]) => found[0].clone(),
        None => Err("the outputs' batch axes differ between buckets".into()),
    };
    // an output without batch rows must not change with the batch
    if let Ok(axes) = &output_axes {
        let (first, last) = (&fused[0].1.graph, &fused[fused.len() - 1].1.graph);
        for (k, (&o, p)) in first.outputs.iter().zip(&last.outputs).enumerate() {
            if axes[k].is_none() && first.ty(o) != last.ty(*p) {
                output_axes = Err(format!("output '{}' grows with the batch but not row by row", first.name_of(o)));
                break;
            }
        }
    }
    match &output_axes {
        Ok(_) => tracing::info!("padding on: every node keeps batch rows apart"),
        Err(why) => tracing::warn!("padding off (a batch must equal a bucket): {why}"),
    }
    Ok((fused, crate::build::BatchSpec { symbol, input_axes, output_axes }))
}

pub fn compile(a: Args) -> anyhow::Result<()> {
    if !a.batch.is_empty() && a.emit.is_some() {
        return Err(BadInput("--emit prints one shape: bind the batch with --shape instead of --batch".into()).into());
    }
    let (fused_buckets, spec) = if a.batch.is_empty() {
        (vec![(0, fused_model(&a, &a.shapes)?)], None)
    } else {
        let (f, s) = buckets(&a)?;
        (f, Some(s))
    };
    let fused = &fused_buckets[fused_buckets.len() - 1].1;
    let check_target = |t: &str| -> anyhow::Result<()> {
        if !xforge_codegen_ptx::CHIPS.contains(&t) {
            return Err(
                BadInput(format!("--target {t}: known targets are {}", xforge_codegen_ptx::CHIPS.join(", "))).into()
            );
        }
        Ok(())
    };
    let Some(emit) = a.emit else {
        check_target(&a.target)?;
        let out = a.output.clone().unwrap_or_else(|| a.model.with_extension("xfa"));
        let bytes = std::fs::read(&a.model).map_err(|e| BadInput(format!("cannot read {}: {e}", a.model.display())))?;
        let precision = ["fp32", "fp16", "bf16"][a.precision as usize];
        let digest = crate::build::digest(&bytes);
        let refs: Vec<(u64, &xforge_passes::fusion::Fused)> = fused_buckets.iter().map(|(b, f)| (*b, f)).collect();
        let artifact = crate::build::build(&refs, spec.as_ref(), &a.target, digest, a.generated_gemm, precision)
            .map_err(|e| match e {
                crate::build::BuildError::Codegen(c) => anyhow::Error::from(c),
                e => BadInput(e.to_string()).into(),
            })?;
        artifact.write(&out)?;
        // the artifact is written: a closed stdout (`| head -1`) is no reason to fail
        let _ = std::io::Write::write_all(&mut std::io::stdout(), summary(&artifact, &out).as_bytes());
        return Ok(());
    };
    let stage = match emit {
        Emit::Fused => {
            print!("{}", xforge_passes::fusion::describe(fused));
            return Ok(());
        }
        Emit::Graph => {
            print!("{}", xforge_ir::print::print(&fused.graph));
            return Ok(());
        }
        Emit::Mlir => Stage::Mlir,
        Emit::Llvm => Stage::Llvm,
        Emit::Ptx => Stage::Ptx,
    };
    check_target(&a.target)?;
    // library calls (cuBLASLt, cuDNN) and views need no generated kernel
    let (library, mut missing) = crate::build::library_plans(fused, false);
    let (generated, missing_kernels) = crate::build::generate_kernels(fused, &library);
    missing.extend(missing_kernels);
    let kernels: Vec<xforge_kernel::Kernel> = generated.into_iter().map(|(_, k)| k).collect();
    if !missing.is_empty() && !a.allow_missing {
        return Err(BadInput(format!(
            "{} of {} generated kernels have no template yet (--allow-missing prints the others):\n  {}",
            missing.len(),
            missing.len() + kernels.len(),
            missing.join("\n  ")
        ))
        .into());
    }
    for m in &missing {
        tracing::warn!("skipped: {m}");
    }
    if kernels.is_empty() {
        return Err(BadInput("no kernel to emit".into()).into());
    }
    print!("{}", xforge_codegen_ptx::emit(&kernels, &a.target, stage)?);
    Ok(())
}

/// What `compile` wrote: one line per plan (bucket).
fn summary(artifact: &xforge_runtime::Artifact, out: &std::path::Path) -> String {
    use xforge_runtime::Step;
    let mut s = String::new();
    if let Some(b) = &artifact.header.batch {
        let padding = match &b.padding {
            Ok(()) => "a batch between buckets runs padded".to_string(),
            Err(why) => format!("no padding, a batch must equal a bucket: {why}"),
        };
        s += &format!("batch '{}' in buckets {}; {padding}\n", b.symbol, artifact.bucket_list());
    }
    for p in &artifact.plans {
        let library = p.steps.iter().filter(|s| matches!(s, Step::Library(_))).count();
        // distinct kernels the launches name (bare convolutions' epilogues are counted apart)
        let mut launched: Vec<u32> = p
            .steps
            .iter()
            .filter_map(|s| if let Step::Launch { kernel, .. } = s { Some(*kernel) } else { None })
            .collect();
        launched.sort_unstable();
        launched.dedup();
        let epilogues = p
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Library(c) if c.params.iter().any(|(n, _)| n == "epilogue")))
            .count();
        let with = if epilogues > 0 { format!(", {epilogues} with a generated epilogue") } else { String::new() };
        let bucket =
            if artifact.header.batch.is_some() { format!(" (batch {})", p.memory.batch) } else { String::new() };
        s += &format!(
            "wrote {}{bucket}: {} steps ({} kernel launches of {} distinct kernels, {} library calls{with}), arena {:.1} MiB, weights {:.1} MiB, target {}\n",
            out.display(),
            p.steps.len(),
            p.steps.len() - library,
            launched.len(),
            library,
            p.memory.arena_bytes as f64 / (1 << 20) as f64,
            artifact.weights.len() as f64 / (1 << 20) as f64,
            artifact.header.target
        );
    }
    s
}
