//! `xforge compile MODEL.onnx --target sm_90 [-o MODEL.xfa]` writes the artifact;
//! `--emit fused|graph|mlir|llvm|ptx` prints a stage instead.
use super::{load, BadInput, ShapeArgs};
use std::path::PathBuf;
use std::time::Instant;
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
    #[command(flatten)]
    shapes: ShapeArgs,
}

pub fn compile(a: Args) -> anyhow::Result<()> {
    let mut m = load(&a.model, &a.shapes)?;
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
        let artifact =
            crate::build::build(&fused, &a.target, digest, a.generated_gemm, precision).map_err(|e| match e {
                crate::build::BuildError::Codegen(c) => anyhow::Error::from(c),
                e => BadInput(e.to_string()).into(),
            })?;
        artifact.write(&out)?;
        let library = artifact.steps.iter().filter(|s| matches!(s, xforge_runtime::Step::Library(_))).count();
        // distinct kernels the launches name (bare convolutions' epilogues are counted apart)
        let mut launched: Vec<u32> = artifact
            .steps
            .iter()
            .filter_map(|s| if let xforge_runtime::Step::Launch { kernel, .. } = s { Some(*kernel) } else { None })
            .collect();
        launched.sort_unstable();
        launched.dedup();
        let epilogues = artifact
            .steps
            .iter()
            .filter(|s| matches!(s, xforge_runtime::Step::Library(c) if c.params.iter().any(|(n, _)| n == "epilogue")))
            .count();
        let with = if epilogues > 0 { format!(", {epilogues} with a generated epilogue") } else { String::new() };
        println!(
            "wrote {}: {} steps ({} kernel launches of {} distinct kernels, {} library calls{with}), arena {:.1} MiB, weights {:.1} MiB, target {}",
            out.display(),
            artifact.steps.len(),
            artifact.steps.len() - library,
            launched.len(),
            library,
            artifact.memory.arena_bytes as f64 / (1 << 20) as f64,
            artifact.weights.len() as f64 / (1 << 20) as f64,
            artifact.header.target
        );
        return Ok(());
    };
    let stage = match emit {
        Emit::Fused => {
            print!("{}", xforge_passes::fusion::describe(&fused));
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
    let (library, mut missing) = crate::build::library_plans(&fused, false);
    let (generated, missing_kernels) = crate::build::generate_kernels(&fused, &library);
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
