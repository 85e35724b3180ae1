//! Fusion benchmark: import and fusion times per phase, kernel counts, kernels per encoder layer.
//!
//!     cargo run --release -p xforge-testsuite --bin fusion_bench -- MODEL.onnx [MODEL.onnx ...]
//!
//! Fusion runs `REPEAT` (default 5) times per model; the median is reported.
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use xforge_passes::fusion::{fuse, Schedule};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The encoder layer index a node name carries (`…/layer.7/…`).
fn layer_of(name: &str) -> Option<usize> {
    let at = name.find("layer.")? + "layer.".len();
    name[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn main() -> Result<()> {
    let repeat: usize = std::env::var("REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    println!("| model | import s | fusion s (median of {repeat}) | phases (s) | kernels | from ops | e-graph iterations / e-nodes | kernels per encoder layer |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for path in std::env::args().skip(1) {
        let t = Instant::now();
        let m = xforge_frontend::load(Path::new(&path), &Default::default()).with_context(|| path.clone())?;
        let import = t.elapsed().as_secs_f64();
        let mut times = vec![];
        let mut last = None;
        for _ in 0..repeat.max(1) {
            let t = Instant::now();
            let f = fuse(&m.graph)?;
            times.push(t.elapsed().as_secs_f64());
            last = Some(f);
        }
        let f = last.unwrap();
        let phases: Vec<String> = f.phases.iter().map(|(n, s)| format!("{n} {s:.3}")).collect();
        let mut per_layer: BTreeMap<usize, usize> = BTreeMap::new();
        for g in f.partition.groups.iter().filter(|g| g.schedule != Schedule::View) {
            if let Some(l) = g.nodes.iter().find_map(|&n| layer_of(&f.graph.nodes[n].name)) {
                *per_layer.entry(l).or_default() += 1;
            }
        }
        let layers = if per_layer.is_empty() {
            "-".to_string()
        } else {
            let max = per_layer.values().max().unwrap();
            format!("{} layers, at most {max} each", per_layer.len())
        };
        let name = Path::new(&path).file_name().unwrap().to_string_lossy().to_string();
        println!(
            "| {name} | {import:.2} | {:.3} | {} | {} | {} | {} / {} | {layers} |",
            median(times),
            phases.join(", "),
            f.partition.kernels(),
            f.source_ops,
            f.saturation.iterations,
            f.saturation.enodes
        );
    }
    Ok(())
}
