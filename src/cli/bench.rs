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
    /// Also time each step on its own (no graph) and print the slowest ones.
    #[arg(long)]
    steps: bool,
    /// Also report where the GPU time goes: each step's time from device timestamps in the
    /// replayed graph, by schedule and by ops, against the card's bandwidth and FLOP/s.
    #[arg(long)]
    profile: bool,
    /// Then run N sessions of the artifact at once, one per thread, each replaying the plan
    /// `--runs` times on the same inputs; their outputs must match the first session's.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// For an artifact with batch-size buckets: time this batch (padded to its bucket) instead
    /// of every bucket.
    #[arg(long)]
    batch: Option<u64>,
}

pub fn bench(a: Args) -> anyhow::Result<()> {
    if a.runs == 0 {
        return Err(super::BadInput("--runs must be at least 1".into()).into());
    }
    let mut s = xforge_runtime::Session::load(&a.artifact, 0)?;
    let bucketed = s.artifact.header.batch.is_some();
    let batches: Vec<u64> = match a.batch {
        Some(n) if bucketed => vec![n],
        Some(_) => return Err(super::BadInput("--batch: the artifact has no batch-size buckets".into()).into()),
        None => s.artifact.plans.iter().map(|p| p.memory.batch).collect(),
    };
    let (mut inputs, mut reference, mut plan) = (vec![], vec![], 0);
    for &n in &batches {
        plan = s.artifact.plan_for(n).map_err(super::BadInput)?;
        let mem = s.artifact.plans[plan].memory.clone();
        inputs = random_inputs(&mem, n)?;
        reference = s.run_batch(n, &inputs.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
        let mut ms = s.time(plan, a.warmup, a.runs)?;
        ms.sort_by(|x, y| x.total_cmp(y));
        let median = ms[ms.len() / 2];
        let p99 = ms[((ms.len() as f64 * 0.99).ceil() as usize).clamp(1, ms.len()) - 1];
        // a static model's batch: its first input's leading dim
        let items = if bucketed { n } else { mem.inputs.first().and_then(|b| b.shape.first().copied()).unwrap_or(1) };
        let bucket = if bucketed && mem.batch != n { format!(", bucket {}", mem.batch) } else { String::new() };
        println!(
            "{}: {} runs after {} warm-up: median {median:.3} ms, p99 {p99:.3} ms, min {:.3} ms, {:.1} inferences/s (batch {items}{bucket})",
            a.artifact.display(),
            a.runs,
            a.warmup,
            ms[0],
            items as f64 * 1000.0 / median
        );
    }
    if a.steps {
        print_steps(&mut s, plan, a.runs.min(50))?;
    }
    if a.profile {
        print_profile(&mut s, plan, a.runs.min(100))?;
    }
    if a.sessions > 1 {
        let dtypes: Vec<DType> = s.artifact.plans[plan]
            .memory
            .outputs
            .iter()
            .map(|b| DType::from_name(&b.dtype).unwrap_or(DType::U8))
            .collect();
        // sessions may time different library algorithms: their outputs agree within the
        // precision's correctness bound, not bit for bit
        let bound = match s.artifact.header.precision.as_str() {
            "fp16" => 1e-2,
            "bf16" => 3e-2,
            _ => 1e-3,
        };
        concurrent(&a, &inputs, &reference, &dtypes, bound)?;
    }
    Ok(())
}

/// Random bytes for every input of a plan at batch `n` (input k seeded with k).
pub fn random_inputs(mem: &xforge_runtime::MemoryPlan, n: u64) -> anyhow::Result<Vec<Vec<u8>>> {
    mem.inputs
        .iter()
        .enumerate()
        .map(|(k, b)| {
            let dt = DType::from_name(&b.dtype).ok_or_else(|| super::BadInput(format!("input dtype {}", b.dtype)))?;
            let shape: Vec<usize> = b.shape_at(mem.batch, n).iter().map(|&d| d as usize).collect();
            Ok(random_tensor(dt, shape, k as u64).data().to_le_bytes())
        })
        .collect()
}

/// `--sessions N`: N sessions in N threads at once. Each session's runs are bit for bit its first
/// run (a race between the threads would break that), and every output lies within `bound`
/// relative L2 of the first session's.
fn concurrent(a: &Args, inputs: &[Vec<u8>], reference: &[Vec<u8>], dtypes: &[DType], bound: f64) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let results: Vec<anyhow::Result<Vec<Vec<u8>>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..a.sessions)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<Vec<Vec<u8>>> {
                    let mut s = xforge_runtime::Session::load(&a.artifact, 0)?;
                    let ins: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
                    let outs = s.run(&ins)?;
                    for k in 1..a.runs {
                        if s.run(&ins)? != outs {
                            anyhow::bail!("run {k} differs from the session's first run");
                        }
                    }
                    Ok(outs)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a session thread panicked"))))
            .collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    let mut worst = 0.0f64;
    for (k, r) in results.into_iter().enumerate() {
        let outs = r.map_err(|e| anyhow::anyhow!("session {k}: {e:#}"))?;
        for ((got, want), &dt) in outs.iter().zip(reference).zip(dtypes) {
            let e = match (tensor_of(got, dt), tensor_of(want, dt)) {
                (Some(g), Some(w)) => xforge_ir::tensor::rel_l2(&g, &w),
                _ => f64::NAN,
            };
            // a NaN sticks (f64::max would drop it)
            if e.is_nan() || e > worst {
                worst = e;
            }
        }
    }
    println!(
        "{} sessions in {} threads, {} runs each (loads included): {secs:.2} s; outputs within {worst:.1e} of the first session's",
        a.sessions, a.sessions, a.runs
    );
    if worst.is_nan() || worst > bound {
        anyhow::bail!("concurrent sessions disagree: relative L2 {worst:.2e}");
    }
    Ok(())
}

/// An output's bytes as a flat tensor (None for a length that is not whole elements).
fn tensor_of(bytes: &[u8], dt: DType) -> Option<xforge_ir::Tensor> {
    let data = xforge_ir::tensor::TensorData::from_le_bytes(dt, bytes)?;
    Some(xforge_ir::Tensor::new(vec![bytes.len() / dt.size()], data))
}

/// `--profile`: plan `p`'s steps timed inside its graph, against their floors.
fn print_profile(s: &mut xforge_runtime::Session, p: usize, runs: usize) -> anyhow::Result<()> {
    let costs = s.artifact.plans[p].costs.clone();
    if costs.len() != s.artifact.plans[p].steps.len() {
        return Err(super::BadInput("--profile: the artifact records no step costs".into()).into());
    }
    let mut graph = s.time(p, 5, runs)?;
    graph.sort_by(|x, y| x.total_cmp(y));
    let ms = s.profile_steps(p, runs)?;
    let card = s.device_name();
    let limits = super::profile::limits_of(&card).unwrap_or_else(|| {
        println!("(no limits known for {card}: an H100's are used)");
        super::profile::H100
    });
    let half = matches!(s.artifact.header.precision.as_str(), "fp16" | "bf16");
    print!("{}", super::profile::report(&ms, &costs, &limits, half, graph[graph.len() / 2]));
    Ok(())
}

/// The slowest steps of plan `p`, timed one by one, and the total by kind of step.
fn print_steps(s: &mut xforge_runtime::Session, p: usize, runs: usize) -> anyhow::Result<()> {
    use xforge_runtime::Step;
    let ms = s.time_steps(p, runs)?;
    let a = &s.artifact;
    let steps = &a.plans[p].steps;
    let what = |i: usize| match &steps[i] {
        Step::Launch { kernel, grid, block, .. } => {
            (format!("kernel {}", a.kernels.names[*kernel as usize]), format!("grid {grid:?} block {block:?}"))
        }
        Step::Library(c) => (format!("{} (group {})", c.kind, c.group), String::new()),
    };
    let total: f64 = ms.iter().sum();
    println!("steps one by one: {total:.3} ms in all ({} steps, median of {runs} runs each)", ms.len());
    let mut by_kind: std::collections::BTreeMap<&str, (usize, f64)> = Default::default();
    for (i, t) in ms.iter().enumerate() {
        let kind = match &steps[i] {
            Step::Launch { .. } => "generated kernels",
            Step::Library(c) => c.kind.as_str(),
        };
        let e = by_kind.entry(kind).or_default();
        e.0 += 1;
        e.1 += t;
    }
    for (k, (n, t)) in by_kind {
        println!("  {k}: {n} steps, {t:.3} ms ({:.0}%)", 100.0 * t / total);
    }
    let mut order: Vec<usize> = (0..ms.len()).collect();
    order.sort_by(|&x, &y| ms[y].total_cmp(&ms[x]));
    for &i in order.iter().take(15) {
        let (name, launch) = what(i);
        println!("  step {i:4}: {:8.1} us  {name} {launch}", ms[i] * 1000.0);
    }
    Ok(())
}
