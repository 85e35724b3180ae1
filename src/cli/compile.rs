//! `xforge compile MODEL.onnx --emit fused|graph`
use super::{load, BadInput, ShapeArgs};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Emit {
    /// The fusion groups, one line each, ending with `kernels: N (from M ops)`.
    Fused,
    /// The fused graph in xforge's IR text form.
    Graph,
}

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// What to print.
    #[arg(long, value_enum)]
    emit: Option<Emit>,
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
    match emit {
        Emit::Fused => print!("{}", xforge_passes::fusion::describe(&fused)),
        Emit::Graph => print!("{}", xforge_ir::print::print(&fused.graph)),
    }
    Ok(())
}
