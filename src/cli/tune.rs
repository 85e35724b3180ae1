//! `xforge tune MODEL.onnx [--precision fp16] [--shape …]`: times, on this machine's GPU, the
//! contractions of the model and its GEMM groups both ways (library call, generated kernel), and
//! appends the times to the tuning table that `xforge compile` reads (`--tuning`).
use super::compile::Precision;
use super::{BadInput, ShapeArgs};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use xforge_compiler::{Measurement, TuningTable, Way};

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Storage precision, as for `xforge compile`.
    #[arg(long, value_enum, default_value = "fp32")]
    precision: Precision,
    #[command(flatten)]
    shapes: ShapeArgs,
    /// The table to append to (default: tuning.tsv in xforge's cache folder).
    #[arg(long, value_name = "FILE")]
    table: Option<PathBuf>,
    /// Timed replays of each candidate (after 10 untimed).
    #[arg(long, default_value_t = 50)]
    runs: usize,
}

pub fn tune(a: Args) -> anyhow::Result<()> {
    if a.runs == 0 || a.runs > 10_000 {
        return Err(BadInput("--runs must be 1 to 10000".into()).into());
    }
    let table_path = match &a.table {
        Some(p) => p.clone(),
        None => xforge_runtime::cache_dir()
            .ok_or_else(|| BadInput("no cache folder (XFORGE_CACHE_DIR is off): name a table with --table".into()))?
            .join(xforge_passes::tuning::FILE),
    };
    // the model is read and checked before the GPU is asked for (importing needs no target)
    let shapes = a.shapes.options()?.shapes;
    let with_shapes = |target: &str| {
        let c = xforge_compiler::Compiler::new(target).precision(a.precision.of_compiler());
        shapes.iter().fold(c, |c, (n, d)| c.shape(n, d))
    };
    let model = with_shapes("sm_90").load(&a.model, &[]).map_err(|e| BadInput(e.to_string()))?;
    let target = xforge_runtime::device_target(0)?;
    let gpu = xforge_runtime::device_name(0)?;
    let compiler = with_shapes(&target);
    let bar = ProgressBar::new(1);
    bar.set_style(ProgressStyle::with_template("{msg} {bar:30} {pos}/{len}").unwrap());
    bar.set_message("building candidates");
    let candidates = xforge_compiler::tune::candidates(&compiler, &model.graph, &|done, all| {
        bar.set_length(all as u64);
        bar.set_position(done as u64);
    })
    .map_err(|e| BadInput(e.to_string()))?;
    bar.set_message("timing");
    bar.set_length(candidates.len() as u64);
    bar.set_position(0);
    let dir = tempfile::tempdir()?;
    let mut table = TuningTable::new(&target, &gpu);
    let mut measured = vec![];
    for (k, c) in candidates.iter().enumerate() {
        bar.set_position(k as u64);
        let path = dir.path().join(format!("{k}.xfa"));
        c.artifact.write(&path)?;
        match time(&path, a.runs) {
            Ok(us) => {
                table.insert(&c.key, c.way, us);
                measured.push(Measurement {
                    target: target.clone(),
                    gpu: gpu.clone(),
                    key: c.key.clone(),
                    way: c.way,
                    micros: us,
                });
            }
            Err(e) => tracing::warn!("{} ({}): not timed: {e:#}", c.label, c.way.name()),
        }
        let _ = std::fs::remove_file(&path);
    }
    bar.finish_and_clear();
    xforge_passes::tuning::append(&table_path, &measured)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", table_path.display()))?;
    print!("{}", summary(&candidates, &table, &gpu));
    println!("{} measurements appended to {}", measured.len(), table_path.display());
    Ok(())
}

/// Median microseconds of one replay of an artifact's plan, on random inputs.
fn time(path: &std::path::Path, runs: usize) -> anyhow::Result<f64> {
    let mut s = xforge_runtime::Session::load(path, 0)?;
    let mem = &s.artifact.plans[0].memory;
    let inputs = super::bench::random_inputs(mem, mem.batch)?;
    s.run(&inputs.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
    let mut ms = s.time(0, 10, runs)?;
    ms.sort_by(|x, y| x.total_cmp(y));
    Ok(ms[ms.len() / 2] * 1000.0)
}

/// What the times say: GEMM groups that run faster generated, and the slowest contractions.
fn summary(candidates: &[xforge_compiler::tune::Candidate], t: &TuningTable, gpu: &str) -> String {
    let mut s = format!("{gpu}: {} candidates timed\n", t.len());
    let mut gemms = 0;
    for c in candidates.iter().filter(|c| c.way == Way::Library) {
        let (Some(lib), Some(gen)) = (t.get(&c.key, Way::Library), t.get(&c.key, Way::Generated)) else { continue };
        gemms += 1;
        if t.prefers_generated(&c.key) {
            s.push_str(&format!("  generated: {} {gen:.1} µs against library {lib:.1} µs\n", c.label));
        }
    }
    let faster = candidates.iter().filter(|c| c.way == Way::Library && t.prefers_generated(&c.key)).count();
    s.push_str(&format!("GEMM groups timed both ways: {gemms}; generated faster: {faster}\n"));
    s
}
