//! A readable text form of graphs, one line per value definition:
//!
//! ```text
//! graph main (opset 17)
//!   input %x: f32[batch,3]
//!   weight %w: f32[3,4] (12 elements)
//!   %y: f32[batch,4] = MatMul(%x, %w)  # node matmul_1
//!   output %y
//! ```
use crate::attr::Attr;
use crate::graph::{Graph, ValueId};
use std::fmt::Write;

/// Prints a graph (subgraphs nested and indented).
pub fn print(g: &Graph) -> String {
    let mut out = String::new();
    write_graph(&mut out, g, 0);
    out
}

fn v(g: &Graph, id: ValueId) -> String {
    format!("%{}", g.name_of(id))
}

fn write_graph(out: &mut String, g: &Graph, depth: usize) {
    let pad = "  ".repeat(depth);
    let _ = writeln!(out, "{pad}graph {} (opset {})", if g.name.is_empty() { "main" } else { &g.name }, g.opset);
    for &i in &g.inputs {
        let _ = writeln!(out, "{pad}  input {}: {}", v(g, i), g.ty(i));
    }
    for &i in &g.captures {
        let _ = writeln!(out, "{pad}  capture {}: {}", v(g, i), g.ty(i));
    }
    for (&i, t) in &g.weights {
        let _ = writeln!(out, "{pad}  weight {}: {} ({} elements)", v(g, i), g.ty(i), t.len());
    }
    for n in &g.nodes {
        let outs: Vec<String> = n
            .outputs
            .iter()
            .map(|o| match o {
                Some(id) => format!("{}: {}", v(g, *id), g.ty(*id)),
                None => "_".into(),
            })
            .collect();
        let ins: Vec<String> = n.inputs.iter().map(|i| i.map_or("_".into(), |id| v(g, id))).collect();
        let attrs: Vec<String> =
            n.attrs.iter().filter(|(_, a)| !matches!(a, Attr::Graph(_))).map(|(k, a)| format!("{k}={a}")).collect();
        let attrs = if attrs.is_empty() { String::new() } else { format!(" {{{}}}", attrs.join(", ")) };
        let _ = writeln!(out, "{pad}  {} = {}({}){attrs}  # node {}", outs.join(", "), n.op, ins.join(", "), n.name);
        for (k, sub) in n.subgraphs() {
            let _ = writeln!(out, "{pad}    {k}:");
            write_graph(out, sub, depth + 3);
        }
    }
    let outs: Vec<String> = g.outputs.iter().map(|&o| v(g, o)).collect();
    let _ = writeln!(out, "{pad}  output {}", outs.join(", "));
}
