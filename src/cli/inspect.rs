//! `xforge inspect MODEL.onnx` or `xforge inspect MODEL.xfa` (a compiled artifact)
use super::{load, ShapeArgs};
use std::path::PathBuf;
use xforge_ir::Graph;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model, or a compiled artifact (.xfa).
    model: PathBuf,
    #[command(flatten)]
    shapes: ShapeArgs,
    /// Also print the whole graph in xforge's IR text form.
    #[arg(long)]
    graph: bool,
    /// For an artifact: also one line per step (kernel and launch shape, or the library call's
    /// descriptor).
    #[arg(long)]
    steps: bool,
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

/// An artifact's header, interface and plan in a few lines.
pub fn artifact_summary(a: &xforge_runtime::Artifact) -> String {
    use std::fmt::Write;
    let h = &a.header;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "artifact: xforge {} for {}, precision {}, model digest {}",
        h.compiler_version, h.target, h.precision, h.model_digest
    );
    if !h.options.is_empty() {
        let o: Vec<String> = h.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(s, "options: {}", o.join(" "));
    }
    let largest = &a.plans[a.plans.len() - 1].memory;
    if let Some(b) = &h.batch {
        let padding = match &b.padding {
            Ok(()) => "on".to_string(),
            Err(why) => format!("off ({why})"),
        };
        let _ = writeln!(s, "batch '{}': buckets {}; padding {padding}", b.symbol, a.bucket_list());
    }
    for (what, list) in [("input", &largest.inputs), ("output", &largest.outputs)] {
        for b in list {
            // the batch axis shows as the symbol (the shapes are the largest bucket's)
            let dims: Vec<String> = b
                .shape
                .iter()
                .enumerate()
                .map(|(d, n)| match (&h.batch, b.batch_axis) {
                    (Some(bd), Some(x)) if x as usize == d => {
                        let f = n / largest.batch.max(1);
                        if f == 1 {
                            bd.symbol.clone()
                        } else {
                            format!("{}*{f}", bd.symbol)
                        }
                    }
                    _ => n.to_string(),
                })
                .collect();
            let _ = writeln!(s, "{what}: {} {}[{}]", b.name, b.dtype, dims.join(", "));
        }
    }
    for p in &a.plans {
        let library = p.steps.iter().filter(|st| matches!(st, xforge_runtime::Step::Library(_))).count();
        let bucket = if h.batch.is_some() { format!(" (batch {})", p.memory.batch) } else { String::new() };
        let _ = writeln!(
            s,
            "plan{bucket}: {} steps ({} kernel launches of {} kernels, {} library calls); arena {}; weights {}",
            p.steps.len(),
            p.steps.len() - library,
            a.kernels.names.len(),
            library,
            human_bytes(p.memory.arena_bytes as usize),
            human_bytes(a.weights.len())
        );
    }
    s
}

/// One line per step of each plan: the kernel and its launch, or the library call's descriptor.
pub fn step_lines(a: &xforge_runtime::Artifact) -> String {
    let mut s = String::new();
    for p in &a.plans {
        if a.header.batch.is_some() {
            s.push_str(&format!("batch {}:\n", p.memory.batch));
        }
        s.push_str(&plan_lines(a, p));
    }
    s
}

fn plan_lines(a: &xforge_runtime::Artifact, p: &xforge_runtime::Plan) -> String {
    use xforge_runtime::{LibraryDesc, Step};
    let mut s = String::new();
    for (i, st) in p.steps.iter().enumerate() {
        let line = match st {
            Step::Launch { kernel, grid, block, args } => format!(
                "kernel {} grid {grid:?} block {block:?}, {} buffers",
                a.kernels.names[*kernel as usize],
                args.len()
            ),
            Step::Library(c) => match LibraryDesc::of_call(c, p.memory.arena_bytes, a.weights.len() as u64) {
                Ok(LibraryDesc::Gemm(d)) => format!(
                    "gemm (group {}) {:?} batch {} × [{}×{}]·[{}×{}]{}{}{}{} act {:?}",
                    c.group,
                    d.dtype,
                    d.batch,
                    d.m,
                    d.k,
                    d.k,
                    d.n,
                    if d.trans_a { " transA" } else { "" },
                    if d.trans_b { " transB" } else { "" },
                    if d.bias { " +bias" } else { "" },
                    if d.residual { " +residual" } else { "" },
                    d.act
                ),
                Ok(LibraryDesc::Conv(d)) => format!(
                    "conv (group {}) {:?}{} x {:?} → {} channels, kernel {:?} pad {:?} stride {:?} dilation {:?} group {}{}{} act {:?}",
                    c.group,
                    d.dtype,
                    if d.nhwc { " NHWC" } else { "" },
                    d.input,
                    d.out_channels,
                    d.kernel,
                    d.pad,
                    d.stride,
                    d.dilation,
                    d.group,
                    if d.bias { " +bias" } else { "" },
                    if d.residual { " +residual" } else { "" },
                    d.act
                ),
                Err(e) => format!("{} (group {}): {e}", c.kind, c.group),
            },
        };
        s += &format!("  step {i:4}: {line}\n");
    }
    s
}

pub fn inspect(a: Args) -> anyhow::Result<()> {
    if a.model.extension().is_some_and(|e| e == "xfa") {
        let art = xforge_runtime::Artifact::read(&a.model)?;
        print!("{}", artifact_summary(&art));
        if a.steps {
            print!("{}", step_lines(&art));
        }
        return Ok(());
    }
    let m = load(&a.model, &a.shapes)?;
    print!("{}", summary(&m));
    if a.graph {
        print!("{}", xforge_ir::print::print(&m.graph));
    }
    Ok(())
}
