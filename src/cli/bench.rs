//! `xforge bench MODEL.xfa`: latency of the compiled plan on the GPU (random inputs, CUDA
//! events around each replay of the captured graph).
use super::run::random_tensor;
use std::path::PathBuf;
use xforge_ir::DType;

#[derive(clap::Args)]
pub struct Args {
    /// The compiled artifact.
    artifact: PathBuf,
    /// Untimed replays first.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Timed replays.
    #[arg(long, default_value_t = 200)]
    runs: usize,
}

pub fn bench(a: Args) -> anyhow::Result<()> {
    if a.runs == 0 {
        return Err(super::BadInput("--runs must be at least 1".into()).into());
    }
    let mut s = xforge_runtime::Session::load(&a.artifact, 0)?;
    let mut inputs = vec![];
    for (k, b) in s.artifact.memory.inputs.iter().enumerate() {
        let dt = DType::from_name(&b.dtype).ok_or_else(|| super::BadInput(format!("input dtype {}", b.dtype)))?;
        let shape: Vec<usize> = b.shape.iter().map(|&d| d as usize).collect();
        inputs.push(random_tensor(dt, shape, k as u64).data().to_le_bytes());
    }
    s.run(&inputs.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
    let mut ms = s.time(a.warmup, a.runs)?;
    ms.sort_by(|x, y| x.total_cmp(y));
    let median = ms[ms.len() / 2];
    let p99 = ms[((ms.len() as f64 * 0.99).ceil() as usize).clamp(1, ms.len()) - 1];
    let batch = s.artifact.memory.inputs.first().and_then(|b| b.shape.first().copied()).unwrap_or(1);
    println!(
        "{}: {} runs after {} warm-up: median {median:.3} ms, p99 {p99:.3} ms, min {:.3} ms, {:.1} inferences/s (batch {batch})",
        a.artifact.display(),
        a.runs,
        a.warmup,
        ms[0],
        batch as f64 * 1000.0 / median
    );
    Ok(())
}
