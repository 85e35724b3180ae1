//! `xforge run MODEL.onnx --backend interp --input NAME=FILE.npy … --output-dir DIR`, or
//! `xforge run MODEL.xfa …` on the GPU through the runtime.
use super::{load, BadInput, ShapeArgs};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use xforge_ir::{npy, DType, Graph, Tensor};

#[derive(Clone, Copy, clap::ValueEnum)]
enum Backend {
    /// The reference interpreter (CPU).
    Interp,
}

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model (interpreter) or a compiled artifact, `.xfa` (GPU).
    model: PathBuf,
    /// Where to run an ONNX model.
    #[arg(long, value_enum, default_value = "interp")]
    backend: Backend,
    /// NAME=FILE.npy, or NAME=random[:SEED] to draw the input; repeatable.
    #[arg(long = "input", value_name = "NAME=SOURCE")]
    inputs: Vec<String>,
    /// Folder for the outputs, one `<output name>.npy` each.
    #[arg(long)]
    output_dir: PathBuf,
    #[command(flatten)]
    shapes: ShapeArgs,
}

/// splitmix64: a small, fixed generator so `random:SEED` inputs are reproducible everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Random values for an input: floats uniform in [-1, 1), integers in [0, 10), bools 50/50.
pub fn random_tensor(dtype: DType, shape: Vec<usize>, seed: u64) -> Tensor {
    let mut r = Rng(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            let u = r.unit();
            if dtype.is_float() {
                2.0 * u - 1.0
            } else if dtype == DType::Bool {
                (u < 0.5) as u8 as f64
            } else {
                (u * 10.0).floor()
            }
        })
        .collect();
    Tensor::from_f64(dtype, shape, &v)
}

fn read_input(g: &Graph, spec: &str) -> anyhow::Result<(String, Tensor)> {
    let (name, src) = spec
        .split_once('=')
        .ok_or_else(|| BadInput(format!("--input '{spec}' must be NAME=FILE.npy or NAME=random[:SEED]")))?;
    let id = g.inputs.iter().copied().find(|&i| g.name_of(i) == name).ok_or_else(|| {
        BadInput(format!(
            "--input '{name}': the model has no such input (inputs: {})",
            g.inputs.iter().map(|&i| g.name_of(i)).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let ty = g.ty(id);
    if let Some(seed) = src.strip_prefix("random") {
        let seed = match seed.strip_prefix(':') {
            Some(s) => s.parse().map_err(|_| BadInput(format!("--input '{spec}': seed must be a number")))?,
            None if seed.is_empty() => 0,
            None => return Err(BadInput(format!("--input '{spec}': write random or random:SEED")).into()),
        };
        let shape = ty.static_shape().ok_or_else(|| {
            BadInput(format!("--input '{name}': shape {ty} has symbolic dims; bind them with --shape {name}=DIMS"))
        })?;
        // checked before anything is allocated: a declared [2^40] input must not abort the process
        let limit = xforge_ir::interp::MAX_ELEMENTS;
        if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_none_or(|n| n > limit) {
            return Err(BadInput(format!(
                "--input '{name}': shape {shape:?} holds more than the {limit} elements a tensor may have"
            ))
            .into());
        }
        return Ok((name.to_string(), random_tensor(ty.dtype, shape, seed)));
    }
    let bytes = std::fs::read(src).map_err(|e| BadInput(format!("--input '{name}': cannot read {src}: {e}")))?;
    let mut t = npy::from_bytes(&bytes).with_context(|| format!("--input '{name}': {src}"))?;
    // numpy has no bfloat16: accept f32 files for bf16 inputs
    if ty.dtype == DType::BF16 && t.dtype() == DType::F32 {
        t = t.cast(DType::BF16);
    }
    if t.dtype() != ty.dtype || !ty.admits(t.shape()) {
        return Err(BadInput(format!(
            "--input '{name}': {src} holds {}{:?} but the model expects {ty}",
            t.dtype(),
            t.shape()
        ))
        .into());
    }
    Ok((name.to_string(), t))
}

/// A file name for an output: characters other than letters, digits, '.', '_' and '-' become '_'.
pub fn file_name(output: &str) -> String {
    let s: String = output
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so no reader sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("npy.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// The inputs of an artifact as a graph without nodes, so inputs are read and checked the
/// same way for both backends: at batch `n` where given, else with the batch axis symbolic.
fn signature(a: &xforge_runtime::Artifact, n: Option<u64>) -> anyhow::Result<Graph> {
    let mut b = xforge_ir::GraphBuilder::new("artifact", 17);
    let dt = |d: &str| DType::from_name(d).ok_or_else(|| BadInput(format!("the artifact has a binding of dtype {d}")));
    let first = &a.plans[0].memory;
    let symbol = a.header.batch.as_ref().map_or("batch", |b| b.symbol.as_str());
    for i in &first.inputs {
        let dims: Vec<String> = match n {
            Some(n) => i.shape_at(first.batch, n).iter().map(u64::to_string).collect(),
            None => i
                .shape
                .iter()
                .enumerate()
                .map(|(d, s)| if i.batch_axis == Some(d as u32) { symbol.to_string() } else { s.to_string() })
                .collect(),
        };
        b.input_sym(&i.name, dt(&i.dtype)?, &dims.iter().map(String::as_str).collect::<Vec<_>>());
    }
    Ok(b.finish())
}

fn run_artifact(a: &Args) -> anyhow::Result<()> {
    let mut session = xforge_runtime::Session::load(&a.model, 0)?;
    let art = &session.artifact;
    // the batch: bound with --shape SYMBOL=N, else read from the inputs (random ones are drawn
    // at the largest bucket)
    let mut n = None;
    for (name, dims) in a.shapes.options()?.shapes {
        match &art.header.batch {
            Some(b) if b.symbol == name && dims.len() == 1 => n = Some(dims[0] as u64),
            _ => {
                return Err(BadInput(format!(
                    "--shape {name}: an artifact binds only its batch dim ({})",
                    art.header.batch.as_ref().map_or("it has none".to_string(), |b| format!("--shape {}=N", b.symbol))
                ))
                .into())
            }
        }
    }
    if n.is_none() && art.header.batch.is_some() && a.inputs.iter().any(|s| s.contains("=random")) {
        n = art.plans.last().map(|p| p.memory.batch);
    }
    let g = signature(art, n)?;
    let mut feed: HashMap<String, Tensor> = HashMap::new();
    for spec in &a.inputs {
        let (name, t) = read_input(&g, spec)?;
        feed.insert(name, t);
    }
    let mut inputs = vec![];
    for b in &session.artifact.plans[0].memory.inputs {
        let t = feed.get(&b.name).ok_or_else(|| BadInput(format!("missing --input for {}", b.name)))?;
        inputs.push(t.data().to_le_bytes());
    }
    let inputs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let n = session.batch_of(&inputs)?;
    let outs = session.run_batch_shaped(n, &inputs)?;
    let plan = &session.artifact.plans[session.artifact.plan_for(n).map_err(BadInput)?].memory;
    std::fs::create_dir_all(&a.output_dir).with_context(|| format!("creating {}", a.output_dir.display()))?;
    for (b, (bytes, shape)) in plan.outputs.iter().zip(outs) {
        let dt = DType::from_name(&b.dtype).ok_or_else(|| BadInput(format!("output dtype {}", b.dtype)))?;
        // outputs whose length depends on the data come back at their valid length
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let data = xforge_ir::tensor::TensorData::from_le_bytes(dt, &bytes).context("output bytes")?;
        let t = Tensor::new(shape, data);
        let path = a.output_dir.join(format!("{}.npy", file_name(&b.name)));
        write_atomic(&path, &npy::to_bytes(&t))?;
        println!("{}: {}{:?} -> {}", b.name, t.dtype(), t.shape(), path.display());
    }
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.model.extension().is_some_and(|e| e == "xfa") {
        return run_artifact(&a);
    }
    let Backend::Interp = a.backend;
    let m = load(&a.model, &a.shapes)?;
    let g = &m.graph;
    let mut feed: HashMap<String, Tensor> = HashMap::new();
    for spec in &a.inputs {
        let (name, t) = read_input(g, spec)?;
        if feed.insert(name.clone(), t).is_some() {
            return Err(BadInput(format!("--input '{name}' is given twice")).into());
        }
    }
    let missing: Vec<&str> = g.inputs.iter().map(|&i| g.name_of(i)).filter(|n| !feed.contains_key(*n)).collect();
    if !missing.is_empty() {
        return Err(BadInput(format!("missing --input for {}", missing.join(", "))).into());
    }
    // plan the file names before computing, so a clash is reported before any work
    let mut files: Vec<(String, PathBuf)> = vec![];
    for &o in &g.outputs {
        let f = a.output_dir.join(format!("{}.npy", file_name(g.name_of(o))));
        if files.iter().any(|(_, p)| p == &f) {
            return Err(BadInput(format!("outputs map to the same file {}", f.display())).into());
        }
        files.push((g.name_of(o).to_string(), f));
    }
    let bar = ProgressBar::new(g.nodes.len() as u64);
    bar.set_style(ProgressStyle::with_template("interpreting {bar:40} {pos}/{len} nodes").unwrap());
    let mut tick = |done: usize, _total: usize| bar.set_position(done as u64);
    let outs = xforge_ir::interp::run_with_progress(g, &feed, Some(&mut tick))?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&a.output_dir).with_context(|| format!("creating {}", a.output_dir.display()))?;
    for ((name, path), t) in files.iter().zip(&outs) {
        write_atomic(path, &npy::to_bytes(t))?;
        println!("{name}: {}{:?} -> {}", t.dtype(), t.shape(), path.display());
    }
    Ok(())
}
