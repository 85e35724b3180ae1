//! Subcommands and the error policy of the command line.
mod bench;
mod compile;
mod hub;
mod inspect;
mod profile;
mod quantize;
mod run;
mod tune;
mod zoo;

use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Parser)]
#[command(name = "xforge", version, about = "A kernel-fusion compiler for ONNX models")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's opset, inputs and outputs, parameters and op histogram.
    Inspect(inspect::Args),
    /// Run a model and write its outputs as .npy files.
    Run(run::Args),
    /// Compile a model into an artifact (.xfa), or print a stage with --emit.
    Compile(compile::Args),
    /// Time a compiled artifact on the GPU: median and p99 latency, throughput.
    Bench(bench::Args),
    /// Time a model's contractions and GEMM groups on this GPU, for `compile`'s tuning table.
    Tune(tune::Args),
    /// The hub: a server, build workers and a client for compiled artifacts per target.
    Hub(hub::Args),
    /// Quantize a model (QDQ: u8/i8, or FP8 E4M3FN) calibrated on .npy batches.
    Quantize(quantize::Args),
    /// Task wrappers: classify, detect or segment images with pre/post-processing in the graph.
    Zoo(zoo::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(a) => inspect::inspect(a),
        Command::Run(a) => run::run(a),
        Command::Compile(a) => compile::compile(a),
        Command::Bench(a) => bench::bench(a),
        Command::Tune(a) => tune::tune(a),
        Command::Hub(a) => hub::hub(a),
        Command::Zoo(a) => zoo::zoo(a),
        Command::Quantize(a) => quantize::quantize(a),
    }
}

/// An error caused by what the user gave (a bad model, input or flag): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

pub fn exit_code(e: &anyhow::Error) -> u8 {
    let user = e.chain().any(|c| {
        c.is::<BadInput>()
            || c.is::<xforge_frontend::ImportError>()
            || c.is::<xforge_ir::interp::InterpError>()
            || c.is::<xforge_ir::npy::NpyError>()
            || c.is::<xforge_passes::fusion::FusionError>()
            || c.is::<xforge_kernel::KernelError>()
            || c.is::<xforge_runtime::ArtifactError>()
            || c.downcast_ref::<xforge_zoo::ZooError>().is_some_and(|z| z.is_user_error())
            || c.downcast_ref::<xforge_hub::HubError>().is_some_and(|h| h.is_user_error())
            || c.downcast_ref::<xforge_runtime::RuntimeError>()
                .is_some_and(|r| !matches!(r, xforge_runtime::RuntimeError::Cuda(_)))
    });
    if user {
        2
    } else {
        1
    }
}

/// `--shape NAME=1x3x224x224` bindings.
#[derive(clap::Args, Clone, Default)]
pub struct ShapeArgs {
    /// Bind an input's shape (NAME=1x3x224x224) or a symbolic dim (batch=8); repeatable.
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    pub shapes: Vec<String>,
}

impl ShapeArgs {
    pub fn options(&self) -> anyhow::Result<xforge_frontend::ImportOptions> {
        let mut shapes = BTreeMap::new();
        for s in &self.shapes {
            let (name, dims) = s.split_once('=').ok_or_else(|| BadInput(format!("--shape '{s}' must be NAME=DIMS")))?;
            let dims: Vec<usize> = if dims.is_empty() {
                vec![]
            } else {
                dims.split('x')
                    .map(|d| d.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| BadInput(format!("--shape '{s}': dims must be numbers joined by 'x'")))?
            };
            shapes.insert(name.to_string(), dims);
        }
        Ok(xforge_frontend::ImportOptions { shapes, ..Default::default() })
    }
}

/// Loads a model, mapping errors to exit code 2.
pub fn load(path: &Path, shapes: &ShapeArgs) -> anyhow::Result<xforge_frontend::Model> {
    let opts = shapes.options()?;
    Ok(xforge_frontend::load(path, &opts)?)
}
