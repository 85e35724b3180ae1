//! Throughput end to end (issue 17, proof point 2): image files held in memory as bytes, then
//! per batch exactly what a user's call does: decode on the CPU (threads over the batch), fit and
//! pack the canvas batch, run the task graph, read the results into the user's pixels. Nothing
//! is cached between iterations: every batch decodes its bytes again.
//!
//! On the GPU it also measures what the pre- and post-processing add to the GPU's busy time:
//! the task graph's replay against the model's own graph compiled alone at the same batch and
//! precision (both CUDA-event timed replays). The artifact's per-step costs name ops, not the
//! nodes they came from, so a profile of the task graph cannot split its steps by stage (and
//! fusion puts pre-processing ops into the model's first kernels); the difference is what the
//! stages cost the card.
use crate::pipeline::{bind_batch, Device, Pipeline, Stages};
use crate::{Classifier, Detector, Picture, Segmenter, ZooError};
use std::path::Path;
use std::time::{Duration, Instant};
use xforge_compiler::Compiler;
use xforge_runtime::Session;

/// A wrapper to time.
pub enum Task {
    Classifier(Classifier),
    Detector(Detector),
    Segmenter(Segmenter),
}

impl Task {
    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        match self {
            Task::Classifier(c) => c.pipeline_mut(),
            Task::Detector(d) => d.pipeline_mut(),
            Task::Segmenter(s) => s.pipeline_mut(),
        }
    }

    /// One user call; returns how many results came back (classes, boxes, mask pixels).
    pub fn call(&mut self, pictures: &[Picture]) -> Result<usize, ZooError> {
        Ok(match self {
            Task::Classifier(c) => c.classify(pictures)?.iter().map(Vec::len).sum(),
            Task::Detector(d) => d.detect(pictures)?.iter().map(Vec::len).sum(),
            Task::Segmenter(s) => s.segment(pictures)?.iter().map(|m| m.classes.len()).sum(),
        })
    }
}

/// An image file's name (for errors) and its bytes.
pub struct Encoded {
    pub name: String,
    pub bytes: Vec<u8>,
}

pub struct BenchOptions {
    /// Images per call.
    pub batch: usize,
    /// Timed for at least this long (after one untimed batch, which compiles on the GPU) ...
    pub seconds: f64,
    /// ... and at least this many batches.
    pub min_batches: usize,
    /// Decoding threads (at most one per image of a batch).
    pub threads: usize,
}

/// The task graph's and the model's own GPU time per batch (medians of CUDA-event-timed replays).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuShare {
    pub task_ms: f64,
    pub model_ms: f64,
}

impl GpuShare {
    /// What pre- and post-processing add to the GPU's busy time, as a fraction of the model's.
    pub fn share(&self) -> f64 {
        (self.task_ms - self.model_ms) / self.model_ms.max(1e-12)
    }
}

/// Means per timed batch, in milliseconds, and the throughput over the timed wall clock.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    pub batch: usize,
    pub batches: usize,
    pub seconds: f64,
    pub images_per_s: f64,
    /// The untimed first batch (compiles the task graph on the GPU).
    pub first_ms: f64,
    pub decode_ms: f64,
    /// Fitting to the canvas and packing the batch (CPU, inside the wrapper's call).
    pub pack_ms: f64,
    /// Running the task graph: on the GPU input copies, replay and output copies.
    pub device_ms: f64,
    /// The rest of the call: reading outputs into results in the user's pixels (host).
    pub post_ms: f64,
    /// Results per batch (classes, boxes or mask pixels), to show the work was done.
    pub results: f64,
    pub threads: usize,
    pub gpu: Option<GpuShare>,
    /// Why the GPU times could not be measured (the throughput above still stands).
    pub gpu_error: Option<String>,
}

/// Decodes `images` on up to `threads` threads (contiguous shares, in order); errors name the file.
pub fn decode(images: &[&Encoded], max_pixels: u64, threads: usize) -> Result<Vec<Picture>, ZooError> {
    let per = images.len().div_ceil(threads.max(1)).max(1);
    let parts: Vec<Result<Vec<Picture>, ZooError>> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|e| {
                            Picture::decode(&e.bytes, max_pixels)
                                .map_err(|why| ZooError::Image(format!("{}: {why}", e.name)))
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a decoding thread panicked")).collect()
    });
    let mut out = Vec::with_capacity(images.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Times `task` end to end on batches of `opts.batch` images taken in turn from `images`
/// (cycling); `model` is the ONNX file the task was built on (for the model-alone GPU time).
pub fn bench(task: &mut Task, model: &Path, images: &[Encoded], opts: &BenchOptions) -> Result<BenchReport, ZooError> {
    let n = opts.batch;
    if n == 0 {
        return Err(ZooError::Config("bench: the batch must hold at least 1 image".into()));
    }
    if images.is_empty() {
        return Err(ZooError::Config("bench: no images".into()));
    }
    let p = task.pipeline_mut();
    if let Some(b) = p.fixed_batch() {
        if b != n {
            return Err(ZooError::Config(format!(
                "bench: the model fixes batches of {b} images, not {n} (export it with a dynamic batch)"
            )));
        }
    } else if n > p.batch_step() {
        return Err(ZooError::Config(format!("bench: a call on this device runs at most {} images", p.batch_step())));
    }
    let max_pixels = p.config.max_decoded_pixels;
    // every file once, so that a bad one is named before anything is timed
    decode(&images.iter().collect::<Vec<_>>(), max_pixels, opts.threads)?;
    let mut next = 0;
    let mut batch = || {
        let b: Vec<&Encoded> = (0..n).map(|k| &images[(next + k) % images.len()]).collect();
        next = (next + n) % images.len();
        b
    };
    let t = Instant::now();
    let pictures = decode(&batch(), max_pixels, opts.threads)?;
    task.call(&pictures)?;
    let first_ms = ms(t.elapsed());
    task.pipeline_mut().take_stages();
    let (mut decode_t, mut call_t, mut stages, mut results) = (Duration::ZERO, Duration::ZERO, Stages::default(), 0);
    let mut batches = 0;
    let start = Instant::now();
    while batches < opts.min_batches.max(1) || start.elapsed().as_secs_f64() < opts.seconds {
        let t0 = Instant::now();
        let pictures = decode(&batch(), max_pixels, opts.threads)?;
        let t1 = Instant::now();
        results += task.call(&pictures)?;
        call_t += t1.elapsed();
        decode_t += t1 - t0;
        let s = task.pipeline_mut().take_stages();
        stages.pack += s.pack;
        stages.device += s.device;
        batches += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    let per = |d: Duration| ms(d) / batches as f64;
    let (gpu, gpu_error) = match task.pipeline_mut().device().clone() {
        Device::Gpu { index, precision } => match gpu_share(task.pipeline_mut(), model, n, index, precision) {
            Ok(g) => (Some(g), None),
            Err(e) => (None, Some(e.to_string())),
        },
        Device::Interpreter => (None, None),
    };
    Ok(BenchReport {
        batch: n,
        batches,
        seconds,
        images_per_s: (batches * n) as f64 / seconds,
        first_ms,
        decode_ms: per(decode_t),
        pack_ms: per(stages.pack),
        device_ms: per(stages.device),
        post_ms: per(call_t.saturating_sub(stages.pack + stages.device)),
        results: results as f64 / batches as f64,
        threads: opts.threads,
        gpu,
        gpu_error,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

const WARMUP: usize = 10;
const RUNS: usize = 100;

/// The task graph's replay (on the last batch's inputs, still in its arena) against the model
/// alone compiled for the same batch and precision (zero inputs: its time does not depend on them).
fn gpu_share(
    p: &mut Pipeline,
    model: &Path,
    n: usize,
    index: usize,
    precision: xforge_compiler::Precision,
) -> Result<GpuShare, ZooError> {
    let s = p.session(n).ok_or_else(|| ZooError::Runtime(format!("no session for batch {n}")))?;
    let task_ms = median(s.time(0, WARMUP, RUNS)?);
    let g = bind_batch(&crate::import(model)?, n)?;
    let target = xforge_runtime::device_target(index)?;
    let artifact = Compiler::new(&target).precision(precision).compile_graph(&g, format!("zoo-model:{}", g.name))?;
    let mut m = Session::from_artifact(artifact, index)?;
    let plan = m.artifact.plan_for(n as u64).map_err(ZooError::Runtime)?;
    let mem = m.artifact.plans[plan].memory.clone();
    // as `xforge bench` feeds a plan: at the plan's own batch
    let zeros: Vec<Vec<u8>> = mem
        .inputs
        .iter()
        .map(|b| {
            let bytes = b.bytes_at(mem.batch, mem.batch);
            bytes.map(|k| vec![0u8; k as usize]).ok_or_else(|| ZooError::Runtime(format!("input dtype {}", b.dtype)))
        })
        .collect::<Result<_, _>>()?;
    m.run_batch(mem.batch, &zeros.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
    let model_ms = median(m.time(plan, WARMUP, RUNS)?);
    Ok(GpuShare { task_ms, model_ms })
}
