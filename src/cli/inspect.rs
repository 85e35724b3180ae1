//! `xforge inspect MODEL.onnx`
use super::{load, ShapeArgs};
use std::path::PathBuf;
use xforge_ir::Graph;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    #[command(flatten)]
    shapes: ShapeArgs,
    /// Also print the whole graph in xforge's IR text form.
    #[arg(long)]
    graph: bool,
}

fn human_bytes(b: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

pub fn summary(m: &xforge_frontend::Model) -> String {
    let g: &Graph = &m.graph;
    let mut s = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "opset: {} (ir version {}{})",
        m.opset,
        m.ir_version,
        if m.producer.is_empty() { String::new() } else { format!(", produced by {}", m.producer) }
    );
    let _ = writeln!(s, "inputs:");
    for &i in &g.inputs {
        let _ = writeln!(s, "  {}: {}", g.name_of(i), g.ty(i));
    }
    let _ = writeln!(s, "outputs:");
    for &o in &g.outputs {
        let _ = writeln!(s, "  {}: {}", g.name_of(o), g.ty(o));
    }
    let (n, b) = g.parameter_stats();
    let _ = writeln!(s, "parameters: {n} in {} weights, {} ({b} bytes)", g.weights.len(), human_bytes(b));
    let hist = g.op_histogram();
    let total: usize = hist.values().sum();
    let _ = writeln!(s, "ops: {total} nodes");
    let mut rows: Vec<_> = hist.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (op, c) in rows {
        let _ = writeln!(s, "  {op:<24} {c}");
    }
    s
}

pub fn inspect(a: Args) -> anyhow::Result<()> {
    let m = load(&a.model, &a.shapes)?;
    print!("{}", summary(&m));
    if a.graph {
        print!("{}", xforge_ir::print::print(&m.graph));
    }
    Ok(())
}
