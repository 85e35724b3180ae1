//! The importer's accept/refuse verdict on many models, for `scripts/verdicts.py`, which sets it
//! beside onnxruntime's on the same files.
//!
//!     cargo run --release -p xforge-testsuite --bin verdicts < PATHS
//!
//! Reads one model path per line; prints `path<TAB>accept|refuse|panic<TAB>class<TAB>message`,
//! the class being the kind of error (`unsupported-op`, `attribute`, `shape`, …). Validation is
//! what every entry point runs: `xforge_frontend::load` (decode, attribute checks, type and shape
//! inference, the graph verifier).
use std::io::{BufRead, Write};
use xforge_frontend::{load, ImportError, ImportOptions};

fn class(e: &ImportError) -> &'static str {
    use ImportError::*;
    match e {
        Io { .. } => "io",
        Decode { .. } => "decode",
        NoGraph => "no-graph",
        UnsupportedOpset { .. } | NoDefaultOpset => "opset",
        UnsupportedIrVersion { .. } => "ir-version",
        UnsupportedOp { .. } => "unsupported-op",
        UnsupportedDtype { .. } => "unsupported-dtype",
        BadAttribute { .. } => "attribute",
        Schema { .. } => "schema",
        BadTensor { .. } => "tensor",
        Dangling { .. } | DanglingOutput(_) | Redefined { .. } | Cycle(_) => "topology",
        BadType { .. } => "type",
        BadBinding(_) => "binding",
        Shape(_) => "shape",
        Verify(_) => "verify",
    }
}

fn one_line(s: &str) -> String {
    let s: String = s.chars().map(|c| if c == '\t' || c == '\n' || c == '\r' { ' ' } else { c }).collect();
    s.chars().take(300).collect()
}

fn main() {
    // a panic is a verdict too (and a bug): keep going, quietly
    std::panic::set_hook(Box::new(|_| {}));
    let out = std::io::stdout();
    let mut out = out.lock();
    for line in std::io::stdin().lock().lines() {
        let Ok(path) = line else { break };
        if path.is_empty() {
            continue;
        }
        let p = std::path::PathBuf::from(&path);
        let r = std::panic::catch_unwind(|| load(&p, &ImportOptions::default()).map(|_| ()));
        let (verdict, class, msg) = match r {
            Ok(Ok(())) => ("accept", "-", String::new()),
            Ok(Err(e)) => ("refuse", class(&e), e.to_string()),
            Err(_) => ("panic", "panic", String::new()),
        };
        let _ = writeln!(out, "{path}\t{verdict}\t{class}\t{}", one_line(&msg));
    }
}
