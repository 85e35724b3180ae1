//! `xforge quantize MODEL.onnx --calibration DIR -o MODEL.q.onnx [--precision int8|fp8] [--method minmax|percentile|entropy]
//! [--percentile P] [--per-channel]`: a QDQ model (u8 activations, i8 weights) calibrated on
//! the batches in DIR — for a model of one input, each `.npy` file there is a batch of it; for
//! several inputs, each subfolder is a batch holding `<input name>.npy` per input. Every batch
//! is checked against the model before any runs; the output is written whole or not at all.
use super::BadInput;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use xforge_compiler::quantize::{quantize_onnx, quantize_within, Format, Method, QuantizeOptions};
use xforge_ir::Tensor;

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum MethodArg {
    Minmax,
    Percentile,
    /// The threshold of least information loss (KL divergence), as TensorRT calibrates.
    Entropy,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum QuantPrecision {
    /// u8 asymmetric activations, i8 symmetric weights.
    Int8,
    /// FP8 E4M3FN activations and weights, symmetric (the model must be opset 19 or later).
    Fp8,
}

/// How to calibrate (`quantize`, and `compile --precision int8`).
#[derive(clap::Args)]
pub struct Calibration {
    /// Calibration batches: for a model of one input, each `.npy` file in the folder is a batch
    /// of it; for several inputs, each subfolder is a batch holding `<input name>.npy` per input.
    /// A folder of images is pre-processed as the zoo does (see --task), in batches of the
    /// model's batch size (8 when it is not fixed).
    #[arg(long, value_name = "DIR")]
    pub calibration: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "minmax")]
    method: MethodArg,
    /// The percentile of |x| kept by `--method percentile`.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// One weight scale per output channel.
    #[arg(long)]
    per_channel: bool,
    /// For a folder of images (PNG or JPEG): the pre-processing that makes them the model's
    /// input, a zoo task configuration (input_size, mean, std, layout, fit). Without it: the
    /// model's input size, ImageNet's mean and std, stretched, NCHW.
    #[arg(long, value_name = "TASK.toml")]
    task: Option<PathBuf>,
    /// Keep the most sensitive layers in float until the quantized model's top-1 (argmax over
    /// the first output's last axis, every row of every calibration batch) differs from the
    /// float model's on at most this many percent of rows.
    #[arg(long, value_name = "POINTS")]
    pub max_accuracy_drop: Option<f64>,
}

impl Calibration {
    /// The options and the batches (checked against `model`'s inputs by name).
    pub fn read(
        &self,
        model: &Path,
        format: Format,
    ) -> anyhow::Result<(QuantizeOptions, Vec<HashMap<String, Tensor>>)> {
        let dir = self.calibration.as_ref().ok_or_else(|| BadInput("--calibration DIR is needed".into()))?;
        if self.method == MethodArg::Percentile && !(self.percentile > 50.0 && self.percentile <= 100.0) {
            return Err(BadInput(format!("--percentile {}: between 50 and 100", self.percentile)).into());
        }
        let m = xforge_frontend::load(model, &Default::default())?;
        let inputs: Vec<String> = m.graph.inputs.iter().map(|&i| m.graph.name_of(i).to_string()).collect();
        let method = match self.method {
            MethodArg::Minmax => Method::MinMax,
            MethodArg::Percentile => Method::Percentile(self.percentile),
            MethodArg::Entropy => Method::Entropy,
        };
        let batches = if has_images(dir)? {
            image_batches(dir, &m.graph, self.task.as_deref())?
        } else {
            if self.task.is_some() {
                return Err(BadInput("--task is for a calibration folder of images".into()).into());
            }
            batches(dir, &inputs)?
        };
        Ok((QuantizeOptions { method, per_channel: self.per_channel, format }, batches))
    }
}

/// Image files calibration reads.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];
/// Images per batch when the model's batch size is not fixed.
const IMAGES_PER_BATCH: usize = 8;

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Whether `dir` holds images (and then nothing else calibration would read).
fn has_images(dir: &Path) -> anyhow::Result<bool> {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| BadInput(format!("--calibration {}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .collect();
    let images = entries.iter().filter(|p| is_image(p)).count();
    let other = entries.iter().filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "npy")).count();
    if images > 0 && other > 0 {
        return Err(
            BadInput(format!("--calibration {}: both images and .npy batches; give one kind", dir.display())).into()
        );
    }
    Ok(images > 0)
}

/// The images in `dir` (sorted by name) through the zoo's pre-processing, in batches of the
/// model's first input.
fn image_batches(
    dir: &Path,
    model: &xforge_ir::Graph,
    task: Option<&Path>,
) -> anyhow::Result<Vec<HashMap<String, Tensor>>> {
    use xforge_zoo::{Layout, Picture, TaskConfig};
    let &input = model.inputs.first().ok_or_else(|| BadInput("the model has no inputs".into()))?;
    let shape = model.ty(input).shape.clone().unwrap_or_default();
    let known = |d: usize| shape.get(d).and_then(|d| d.known());
    let cfg = match task {
        Some(t) => TaskConfig::read(t)?,
        None => {
            let (h, w) = match (known(1), known(2), known(3)) {
                (Some(3), Some(h), Some(w)) => (h, w),
                _ => {
                    return Err(BadInput(format!(
                        "calibrating on images: the model's input '{}' is {}, not [N, 3, H, W]; describe its \
                         pre-processing with --task",
                        model.name_of(input),
                        model.ty(input)
                    ))
                    .into())
                }
            };
            TaskConfig { input_size: [h, w], layout: Layout::Nchw, ..TaskConfig::default() }
        }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?.flatten().map(|e| e.path()).filter(|p| is_image(p)).collect();
    files.sort();
    let per = known(0).unwrap_or(IMAGES_PER_BATCH);
    if files.len() < per {
        return Err(BadInput(format!(
            "--calibration {}: {} images, the model takes batches of {per}",
            dir.display(),
            files.len()
        ))
        .into());
    }
    let name = model.name_of(input).to_string();
    let mut out = vec![];
    // whole batches only: the model's batch size is fixed or the last few images are left out
    for chunk in files.chunks_exact(per) {
        let pictures = chunk.iter().map(|p| Picture::open(p, cfg.max_decoded_pixels)).collect::<Result<Vec<_>, _>>()?;
        out.push(HashMap::from([(name.clone(), xforge_zoo::pipeline::preprocess(model, &cfg, &pictures)?)]));
    }
    Ok(out)
}

#[derive(clap::Args)]
pub struct Args {
    /// The float ONNX model.
    model: PathBuf,
    /// The 8-bit type of the QDQ model.
    #[arg(long, value_enum, default_value = "int8")]
    precision: QuantPrecision,
    #[command(flatten)]
    calibration: Calibration,
    /// The QDQ model to write.
    #[arg(short, long)]
    output: PathBuf,
}

fn npy(path: &Path) -> anyhow::Result<Tensor> {
    let b = std::fs::read(path).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    Ok(xforge_ir::npy::from_bytes(&b).map_err(|e| BadInput(format!("{}: {e}", path.display())))?)
}

/// The batches in `dir`, sorted by file name.
fn batches(dir: &Path, inputs: &[String]) -> anyhow::Result<Vec<HashMap<String, Tensor>>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| BadInput(format!("--calibration {}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    let mut out = vec![];
    for p in entries {
        if p.is_dir() {
            let mut feed = HashMap::new();
            for name in inputs {
                feed.insert(name.clone(), npy(&p.join(format!("{name}.npy")))?);
            }
            out.push(feed);
        } else if p.extension().is_some_and(|e| e == "npy") {
            if inputs.len() != 1 {
                return Err(BadInput(format!(
                    "{}: the model has {} inputs; give each batch as a folder of <input>.npy files",
                    p.display(),
                    inputs.len()
                ))
                .into());
            }
            out.push(HashMap::from([(inputs[0].clone(), npy(&p)?)]));
        }
    }
    if out.is_empty() {
        return Err(BadInput(format!("--calibration {}: no batches (.npy files or folders)", dir.display())).into());
    }
    Ok(out)
}

pub fn quantize(a: Args) -> anyhow::Result<()> {
    let format = match a.precision {
        QuantPrecision::Int8 => Format::Int8,
        QuantPrecision::Fp8 => Format::Fp8,
    };
    let (opts, batches) = a.calibration.read(&a.model, format)?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} calibrating on {msg}").unwrap());
    bar.set_message(format!("{} batches", batches.len()));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let bad = |e: xforge_compiler::quantize::QuantizeError| BadInput(format!("{}: {e}", a.model.display()));
    let bytes = match a.calibration.max_accuracy_drop {
        None => quantize_onnx(&a.model, &batches, opts).map_err(bad)?,
        Some(d) => {
            let shown = bar.clone();
            let progress = move |done: usize, all: usize| {
                shown.set_message(format!("the batches: sensitivity pass {done} of at most {all}"))
            };
            let (bytes, s) = quantize_within(&a.model, &batches, opts, d, &progress).map_err(bad)?;
            bar.finish_and_clear();
            let kept = if s.float_layers.is_empty() { "none".to_string() } else { s.float_layers.join(", ") };
            eprintln!(
                "top-1 differs from the float model on {:.3}% of rows (all layers int8: {:.3}%); kept in float: {kept}",
                s.drop, s.drop_all
            );
            bytes
        }
    };
    bar.finish_and_clear();
    let dir = a.output.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), &bytes)?;
    tmp.persist(&a.output)?;
    eprintln!("wrote {} ({} bytes) from {} calibration batches", a.output.display(), bytes.len(), batches.len());
    Ok(())
}
