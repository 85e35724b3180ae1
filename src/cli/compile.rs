//! `xforge compile MODEL.onnx --target sm_90 [-o MODEL.xfa] [--batch 1,8,32]` writes the
//! artifact; `--emit fused|graph|mlir|llvm|ptx|amdgcn` prints a stage instead.
use super::{BadInput, ShapeArgs};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use xforge_codegen_ptx::Stage;

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
    /// The generated kernels as one PTX module for `--target` (NVIDIA).
    Ptx,
    /// The generated kernels as AMDGPU assembly for `--target` (AMD: gfx90a, gfx942, gfx1100).
    Amdgcn,
}

/// `--precision`: storage precision (`compile`, `tune`).
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Precision {
    Fp32,
    Fp16,
    Bf16,
}

impl Precision {
    pub fn of_compiler(self) -> xforge_compiler::Precision {
        match self {
            Precision::Fp32 => xforge_compiler::Precision::Fp32,
            Precision::Fp16 => xforge_compiler::Precision::Fp16,
            Precision::Bf16 => xforge_compiler::Precision::Bf16,
        }
    }
}

/// `compile --precision`: a storage precision, or int8 (quantized on `--calibration` data).
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum CompilePrecision {
    Fp32,
    Fp16,
    Bf16,
    /// Post-training INT8 in one step: calibrated on --calibration, compiled as a QDQ model
    /// (what has no 8-bit path stays fp16).
    Int8,
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
    precision: CompilePrecision,
    /// For --precision int8.
    #[command(flatten)]
    calibration: super::quantize::Calibration,
    /// NVIDIA architecture: sm_80, sm_86, sm_89, sm_90, sm_90a.
    #[arg(long, default_value = "sm_90")]
    target: String,
    /// Batch-size buckets for the model's symbolic batch dim (1,8,32): a plan per bucket, and
    /// a batch between two buckets runs padded to the larger where the model allows it.
    #[arg(long, value_delimiter = ',')]
    batch: Vec<u64>,
    /// The symbolic dim --batch binds (default: the inputs' only symbol, or `batch`).
    #[arg(long, value_name = "NAME")]
    batch_dim: Option<String>,
    #[command(flatten)]
    shapes: ShapeArgs,
    /// Measured kernel times (`xforge tune`): a table file, or `off`. Default: the table in
    /// xforge's cache folder, where there is one.
    #[arg(long, value_name = "FILE|off")]
    tuning: Option<String>,
}

/// The tuning table `flag` names for `target` (None: the cache folder's, where it exists).
pub fn tuning_table(flag: Option<&str>, target: &str) -> anyhow::Result<Option<xforge_compiler::TuningTable>> {
    let path = match flag {
        Some("off") => return Ok(None),
        Some(f) => {
            let p = PathBuf::from(f);
            if !p.is_file() {
                return Err(BadInput(format!("--tuning {f}: no such file")).into());
            }
            p
        }
        None => match xforge_runtime::cache_dir().map(|d| d.join(xforge_passes::tuning::FILE)) {
            Some(p) if p.is_file() => p,
            _ => return Ok(None),
        },
    };
    let t = xforge_compiler::TuningTable::read(&path, target, None)
        .map_err(|e| BadInput(format!("--tuning {}: {e}", path.display())))?;
    if !t.is_empty() {
        tracing::info!("{} measured times for {target} on {} from {}", t.len(), t.gpu, path.display());
    }
    Ok(Some(t))
}

impl Args {
    /// The compiler these flags describe.
    fn compiler(&self) -> anyhow::Result<xforge_compiler::Compiler> {
        let precision = match self.precision {
            CompilePrecision::Fp32 => xforge_compiler::Precision::Fp32,
            CompilePrecision::Bf16 => xforge_compiler::Precision::Bf16,
            CompilePrecision::Fp16 | CompilePrecision::Int8 => xforge_compiler::Precision::Fp16,
        };
        if (self.precision == CompilePrecision::Int8) != self.calibration.calibration.is_some() {
            return Err(BadInput("--calibration DIR goes with --precision int8, and int8 needs it".into()).into());
        }
        let mut c = xforge_compiler::Compiler::new(&self.target)
            .precision(precision)
            .generated_gemm(self.generated_gemm)
            .batch(&self.batch, self.batch_dim.as_deref());
        for (name, dims) in self.shapes.options()?.shapes {
            c = c.shape(&name, &dims);
        }
        if let Some(t) = tuning_table(self.tuning.as_deref(), &self.target)? {
            c = c.tuning(t);
        }
        Ok(c)
    }
}

/// Compile errors of the input's making exit 2, the compiler's own 1.
fn compile_error(e: xforge_compiler::CompileError) -> anyhow::Error {
    if e.is_input_error() {
        BadInput(e.to_string()).into()
    } else {
        e.into()
    }
}

pub fn compile(a: Args) -> anyhow::Result<()> {
    if !a.batch.is_empty() && a.emit.is_some() {
        return Err(BadInput("--emit prints one shape: bind the batch with --shape instead of --batch".into()).into());
    }
    if a.precision == CompilePrecision::Int8 && a.emit.is_some() {
        return Err(BadInput(
            "--emit with --precision int8: write the QDQ model with `xforge quantize`, then emit it".into(),
        )
        .into());
    }
    let compiler = a.compiler()?;
    let Some(emit) = a.emit else {
        let out = a.output.clone().unwrap_or_else(|| a.model.with_extension("xfa"));
        let bar = ProgressBar::new(1);
        bar.set_style(ProgressStyle::with_template("{msg} {bar:30} {pos}/{len}").unwrap());
        let shown = bar.clone();
        let compiler = compiler.on_progress(move |phase, done, all| {
            shown.set_length(all as u64);
            shown.set_position(done as u64);
            shown.set_message(phase.to_string());
        });
        let artifact = if a.precision == CompilePrecision::Int8 {
            let (opts, batches) = a.calibration.read(&a.model, xforge_compiler::quantize::Format::Int8)?;
            compiler.compile_quantized(&a.model, &batches, opts, a.calibration.max_accuracy_drop).map_err(compile_error)
        } else {
            compiler.compile_onnx(&a.model).map_err(compile_error)
        };
        bar.finish_and_clear();
        let artifact = artifact?;
        artifact.write(&out)?;
        // the artifact is written: a closed stdout (`| head -1`) is no reason to fail
        let _ = std::io::Write::write_all(&mut std::io::stdout(), summary(&artifact, &out).as_bytes());
        return Ok(());
    };
    let m = compiler.load(&a.model, &[]).map_err(compile_error)?;
    let fused = compiler.fuse(&m.graph).map_err(compile_error)?;
    let stage = match emit {
        Emit::Fused => {
            print!("{}", xforge_passes::fusion::describe(&fused));
            return Ok(());
        }
        Emit::Graph => {
            print!("{}", xforge_ir::print::print(&fused.graph));
            return Ok(());
        }
        Emit::Mlir | Emit::Llvm | Emit::Ptx | Emit::Amdgcn => emit,
    };
    let Some(target) = xforge_kernel::target::find(&a.target) else {
        let known: Vec<&str> = xforge_kernel::target::TARGETS.iter().map(|t| t.chip).collect();
        return Err(BadInput(format!("--target {}: known targets are {}", a.target, known.join(", "))).into());
    };
    match (stage, target.is_amd()) {
        (Emit::Llvm | Emit::Ptx, true) => {
            return Err(BadInput(format!("--target {} is AMD: emit mlir or amdgcn", a.target)).into())
        }
        (Emit::Amdgcn, false) => {
            return Err(BadInput(format!("--target {} is NVIDIA: emit mlir, llvm or ptx", a.target)).into())
        }
        _ => {}
    }
    // library calls (cuBLASLt, cuDNN) and views need no generated kernel
    let (missing, generated) = xforge_kernel::target::with(target, || {
        let (library, mut missing) = xforge_compiler::build::library_plans(&fused, a.generated_gemm);
        let (generated, missing_kernels) = xforge_compiler::build::generate_kernels(&fused, &library);
        missing.extend(missing_kernels);
        (missing, generated)
    });
    let kernels: Vec<xforge_kernel::Kernel> = generated.into_iter().map(|(_, k)| k).collect();
    if !missing.is_empty() {
        return Err(BadInput(format!("{} groups have no kernel:\n  {}", missing.len(), missing.join("\n  "))).into());
    }
    if kernels.is_empty() {
        return Err(BadInput("no kernel to emit".into()).into());
    }
    let text = match stage {
        Emit::Mlir if target.is_amd() => {
            xforge_codegen_hip::emit(&kernels, &a.target, xforge_codegen_hip::Stage::Mlir)?
        }
        Emit::Amdgcn => xforge_codegen_hip::emit(&kernels, &a.target, xforge_codegen_hip::Stage::Amdgcn)?,
        Emit::Mlir => xforge_codegen_ptx::emit(&kernels, &a.target, Stage::Mlir)?,
        Emit::Llvm => xforge_codegen_ptx::emit(&kernels, &a.target, Stage::Llvm)?,
        _ => xforge_codegen_ptx::emit(&kernels, &a.target, Stage::Ptx)?,
    };
    // a closed stdout (`| head`) ends the listing, it is no error
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
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
