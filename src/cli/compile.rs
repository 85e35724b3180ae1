//! `xforge compile MODEL.onnx --emit fused|graph`
use super::{load, BadInput, ShapeArgs};
use std::path::PathBuf;
use std::time::Instant;
use xforge_codegen_ptx::Stage;
use xforge_passes::fusion::Schedule;

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

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// What to print.
    #[arg(long, value_enum)]
    emit: Option<Emit>,
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
    let Some(emit) = a.emit else {
        return Err(BadInput(
            "code generation is not available yet: use --emit fused or --emit graph to see the fusion result".into(),
        )
        .into());
    };
    let m = load(&a.model, &a.shapes)?;
    let t = Instant::now();
    let fused = xforge_passes::fusion::fuse(&m.graph)?;
    tracing::info!(
        "fused in {:.3} s: {} e-graph iterations, {} e-nodes",
        t.elapsed().as_secs_f64(),
        fused.saturation.iterations,
        fused.saturation.enodes
    );
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
    if !xforge_codegen_ptx::CHIPS.contains(&a.target.as_str()) {
        return Err(BadInput(format!(
            "--target {}: known targets are {}",
            a.target,
            xforge_codegen_ptx::CHIPS.join(", ")
        ))
        .into());
    }
    // library calls (cuBLASLt, cuDNN) and views need no generated kernel
    let mut kernels = vec![];
    let mut missing = vec![];
    for (i, grp) in fused.partition.groups.iter().enumerate() {
        if matches!(grp.schedule, Schedule::View | Schedule::LibraryGemm | Schedule::LibraryConv) {
            continue;
        }
        match xforge_kernel::generate(&fused.graph, grp, i) {
            Ok(k) => kernels.push(k),
            Err(e) => missing.push(e.to_string()),
        }
    }
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
