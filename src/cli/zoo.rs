//! `xforge zoo classify|detect|segment|embed MODEL IMAGE…|TEXT… [--config task.toml] [--json] [--out DIR]
//! [--device interp|gpu]`: a task wrapper over a model, pre- and post-processing in its graph.
//! Each image's result is printed (a line, or one JSON object per line); an image that cannot
//! be read gets its error in its place and the exit code is 2, the others still run.
//! `--bench SECONDS [--batch N]`: instead, the call timed end to end (`xforge_zoo::bench`): the
//! files read into memory once, then batches of N decoded, run and read back as a user's call
//! does, for at least SECONDS; images/s and the time per batch by stage (one JSON object with
//! `--json`), and on the GPU what pre- and post-processing add to the model's GPU time.
use super::compile::Precision;
use super::BadInput;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use xforge_zoo::{draw, Classifier, Detector, Device, Picture, Segmenter, TaskConfig, TextEmbedder, ZooError};

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Task {
    Classify,
    Detect,
    Segment,
    /// Sentence embeddings of texts (the positional arguments are texts, not images).
    Embed,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Where {
    /// The reference interpreter on the CPU (slow, exact, no GPU needed).
    Interp,
    /// GPU 0, compiled for its target.
    Gpu,
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    task: Task,
    /// The ONNX model.
    model: PathBuf,
    /// Images (PNG or JPEG); texts for `embed`.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// The task configuration (input size, mean/std, labels, thresholds, head); defaults fit
    /// torchvision's ImageNet classifiers.
    #[arg(long)]
    config: Option<PathBuf>,
    /// One JSON object per image instead of text.
    #[arg(long)]
    json: bool,
    /// Write each image with its boxes or mask drawn (PNG) into this folder; `segment` also
    /// writes each mask's classes as a 16-bit grayscale PNG (`NNN_stem.mask.png`).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "interp")]
    device: Where,
    /// Storage precision on the GPU.
    #[arg(long, value_enum, default_value = "fp16")]
    precision: Precision,
    /// Time the pipeline end to end for at least this many seconds instead of printing results
    /// (classify, detect, segment; the images taken in turn, decoded again for every batch).
    #[arg(long)]
    bench: Option<f64>,
    /// Images per call with --bench.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Decoding threads with --bench (default: the CPU's cores).
    #[arg(long)]
    threads: Option<usize>,
}

enum Wrapper {
    Classifier(Classifier),
    Detector(Detector),
    Segmenter(Segmenter),
}

fn label(l: &Option<String>, index: usize) -> String {
    l.clone().unwrap_or_else(|| format!("class {index}"))
}

/// The output file for image `path`: its stem and `.png` in `dir` (numbered to stay unique).
fn drawn_path(dir: &Path, path: &Path, k: usize) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    dir.join(format!("{k:03}_{stem}.png"))
}

pub fn zoo(a: Args) -> anyhow::Result<()> {
    let config = match &a.config {
        Some(p) => TaskConfig::read(p)?,
        None => TaskConfig::default(),
    };
    let device = match a.device {
        Where::Interp => Device::Interpreter,
        Where::Gpu => Device::Gpu { index: 0, precision: a.precision.of_compiler() },
    };
    if let Some(d) = &a.out {
        std::fs::create_dir_all(d).map_err(|e| BadInput(format!("--out {}: {e}", d.display())))?;
    }
    if a.task == Task::Embed {
        if a.bench.is_some() {
            return Err(BadInput("--bench: classify, detect or segment".into()).into());
        }
        return embed(&a, config, device);
    }
    if let Some(seconds) = a.bench {
        return bench(&a, config, device, seconds);
    }
    if a.batch != 1 || a.threads.is_some() {
        return Err(BadInput("--batch and --threads go with --bench".into()).into());
    }
    let max_pixels = config.max_decoded_pixels;
    let mut w = match a.task {
        Task::Classify => Wrapper::Classifier(Classifier::new(&a.model, config, device)?),
        Task::Detect => Wrapper::Detector(Detector::new(&a.model, config, device)?),
        Task::Segment => Wrapper::Segmenter(Segmenter::new(&a.model, config, device)?),
        Task::Embed => unreachable!("handled above"),
    };
    let decoded: Vec<Result<Picture, ZooError>> = a.images.iter().map(|p| Picture::open(p, max_pixels)).collect();
    let good: Vec<Picture> = decoded.iter().filter_map(|d| d.as_ref().ok().cloned()).collect();
    // per image, in the order given: its text line, its JSON fields and its drawing
    let mut results: Vec<(String, Value, Option<image::RgbImage>, Option<xforge_zoo::Mask>)> = vec![];
    match &mut w {
        Wrapper::Classifier(c) => {
            for classes in c.classify(&good)? {
                let text =
                    classes.iter().map(|k| format!("{} {:.4}", label(&k.label, k.index), k.score)).collect::<Vec<_>>();
                let items: Vec<Value> = classes
                    .iter()
                    .map(|k| json!({"index": k.index, "label": label(&k.label, k.index), "score": k.score}))
                    .collect();
                results.push((text.join(", "), json!({ "classes": items }), None, None));
            }
        }
        Wrapper::Detector(d) => {
            for (dets, p) in d.detect(&good)?.iter().zip(&good) {
                let text: Vec<String> = dets
                    .iter()
                    .map(|k| {
                        let [x1, y1, x2, y2] = k.bbox;
                        format!("{} {:.3} [{x1:.1}, {y1:.1}, {x2:.1}, {y2:.1}]", label(&k.label, k.class), k.score)
                    })
                    .collect();
                let items: Vec<Value> = dets
                    .iter()
                    .map(|k| json!({"class": k.class, "label": label(&k.label, k.class), "score": k.score, "box": k.bbox}))
                    .collect();
                let line = format!("{} detections: {}", dets.len(), text.join("; "));
                results.push((line, json!({ "detections": items }), Some(draw::boxes(p, dets)), None));
            }
        }
        Wrapper::Segmenter(s) => {
            let names = s.labels().map(|l| l.to_vec());
            let name = |c: u32| {
                names.as_ref().and_then(|n| n.get(c as usize).cloned()).unwrap_or_else(|| format!("class {c}"))
            };
            for (m, p) in s.segment(&good)?.iter().zip(&good) {
                // pixels per class, largest first
                let mut counts = std::collections::BTreeMap::<u32, usize>::new();
                for &c in &m.classes {
                    *counts.entry(c).or_default() += 1;
                }
                let mut counts: Vec<(u32, usize)> = counts.into_iter().collect();
                counts.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
                let total = m.classes.len() as f64;
                let text: Vec<String> =
                    counts.iter().map(|(c, n)| format!("{} {:.1}%", name(*c), *n as f64 * 100.0 / total)).collect();
                let items: Vec<Value> =
                    counts.iter().map(|(c, n)| json!({"class": c, "label": name(*c), "pixels": n})).collect();
                let line = format!("{}×{} mask: {}", m.width, m.height, text.join(", "));
                let fields = json!({"width": m.width, "height": m.height, "classes": items});
                results.push((line, fields, Some(draw::mask(p, m)), Some(m.clone())));
            }
        }
    }
    let mut results = results.into_iter();
    let mut failed = 0;
    for (k, (path, d)) in a.images.iter().zip(&decoded).enumerate() {
        let shown = path.display().to_string();
        let (line, mut fields, picture, mask) = match d {
            Ok(_) => results.next().expect("one result per decoded image"),
            Err(e) => {
                failed += 1;
                (format!("error: {e}"), json!({ "error": e.to_string() }), None, None)
            }
        };
        if a.json {
            fields["image"] = json!(shown);
            println!("{fields}");
        } else {
            println!("{shown}: {line}");
        }
        if let (Some(dir), Some(img)) = (&a.out, picture) {
            draw::save_png(&img, &drawn_path(dir, path, k))?;
        }
        if let (Some(dir), Some(m)) = (&a.out, mask) {
            draw::save_mask(&m, &drawn_path(dir, path, k).with_extension("mask.png"))?;
        }
    }
    if failed > 0 {
        return Err(BadInput(format!("{failed} of {} images could not be read", a.images.len())).into());
    }
    Ok(())
}

/// `embed`: one unit-length vector per text (JSON: `{"text": …, "embedding": […]}`).
fn embed(a: &Args, config: TaskConfig, device: Device) -> anyhow::Result<()> {
    let mut e = TextEmbedder::new(&a.model, config, device)?;
    let texts: Vec<String> = a.images.iter().map(|t| t.to_string_lossy().into_owned()).collect();
    let refs: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
    for (t, v) in texts.iter().zip(e.embed(&refs)?) {
        if a.json {
            println!("{}", json!({"text": t, "embedding": v}));
        } else {
            let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:.4}")).collect();
            println!("{t}: [{}, …] ({} dims)", head.join(", "), v.len());
        }
    }
    Ok(())
}

/// `--bench`: the wrapper timed end to end on the images (see `xforge_zoo::bench`).
fn bench(a: &Args, config: TaskConfig, device: Device, seconds: f64) -> anyhow::Result<()> {
    use xforge_zoo::bench::{BenchOptions, Encoded, Task as Timed};
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(BadInput(format!("--bench {seconds}: seconds, at least 0")).into());
    }
    if a.batch == 0 {
        return Err(BadInput("--batch 0: a batch holds at least 1 image".into()).into());
    }
    if a.threads == Some(0) {
        return Err(BadInput("--threads 0: at least 1".into()).into());
    }
    if a.out.is_some() {
        return Err(BadInput("--out does not go with --bench".into()).into());
    }
    let images = a
        .images
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).map_err(|e| BadInput(format!("{}: {e}", p.display())))?;
            Ok(Encoded { name: p.display().to_string(), bytes })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut task = match a.task {
        Task::Classify => Timed::Classifier(Classifier::new(&a.model, config, device)?),
        Task::Detect => Timed::Detector(Detector::new(&a.model, config, device)?),
        Task::Segment => Timed::Segmenter(Segmenter::new(&a.model, config, device)?),
        Task::Embed => unreachable!("refused above"),
    };
    let opts = BenchOptions { batch: a.batch, seconds, min_batches: 3, threads: threads.min(a.batch) };
    let r = xforge_zoo::bench::bench(&mut task, &a.model, &images, &opts)?;
    let (task_ms, model_ms, share) = match r.gpu {
        Some(g) => (json!(g.task_ms), json!(g.model_ms), json!(g.share())),
        None => (Value::Null, Value::Null, Value::Null),
    };
    if a.json {
        println!(
            "{}",
            json!({"batch": r.batch, "batches": r.batches, "seconds": r.seconds, "images_per_s": r.images_per_s,
                "first_ms": r.first_ms, "decode_ms": r.decode_ms, "pack_ms": r.pack_ms, "device_ms": r.device_ms,
                "post_ms": r.post_ms, "results_per_batch": r.results, "threads": r.threads,
                "gpu_task_ms": task_ms, "gpu_model_ms": model_ms, "prepost_gpu_share": share,
                "gpu_error": r.gpu_error})
        );
    } else {
        println!(
            "{:.1} images/s: {} batches of {} in {:.2} s (first batch {:.1} ms); per batch: decode {:.2} ms \
             ({} threads), pack {:.2} ms, device {:.2} ms, results {:.2} ms; {:.1} results a batch",
            r.images_per_s,
            r.batches,
            r.batch,
            r.seconds,
            r.first_ms,
            r.decode_ms,
            r.threads,
            r.pack_ms,
            r.device_ms,
            r.post_ms,
            r.results
        );
        if let Some(g) = r.gpu {
            println!(
                "GPU per batch: task graph {:.3} ms, the model alone {:.3} ms: pre- and post-processing add {:.1}%",
                g.task_ms,
                g.model_ms,
                100.0 * g.share()
            );
        }
        if let Some(e) = &r.gpu_error {
            println!("GPU times not measured: {e}");
        }
    }
    Ok(())
}
