//! The ONNX backend node-test runner.
use crate::compare::allclose;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use xforge_frontend::{ImportError, ImportOptions};
use xforge_ir::{interp, npy, DType, Tensor};

/// How one case ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Passed,
    Failed(String),
    /// The op, a dtype or an input kind is not supported yet; the reason names it.
    Skipped(String),
}

/// Tolerances: ONNX's backend defaults (rtol 1e-3, atol 1e-7); half types get the rounding
/// error of one f16/bf16 ulp at the magnitudes the tests use.
pub fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F16 => (1e-3, 1e-3),
        DType::BF16 => (8e-3, 8e-3),
        _ => (1e-3, 1e-7),
    }
}

fn read_npy(p: &Path) -> Result<Tensor, String> {
    let b = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    npy::from_bytes(&b).map_err(|e| format!("{}: {e}", p.display()))
}

fn arrays(dir: &Path, prefix: &str) -> Result<Vec<Tensor>, String> {
    let mut out = vec![];
    for i in 0.. {
        let p = dir.join(format!("{prefix}_{i}.npy"));
        if !p.exists() {
            break;
        }
        out.push(read_npy(&p)?);
    }
    Ok(out)
}

/// Runs one case directory.
pub fn run_case(dir: &Path) -> Outcome {
    if let Ok(what) = std::fs::read_to_string(dir.join("unsupported_io")) {
        return Outcome::Skipped(format!("io: {}", what.trim()));
    }
    let model = match xforge_frontend::load(&dir.join("model.onnx"), &ImportOptions::default()) {
        Ok(m) => m,
        Err(ImportError::UnsupportedOp { op, domain, .. }) => return Outcome::Skipped(format!("op: {op}{domain}")),
        Err(ImportError::UnsupportedDtype { dtype, .. }) => return Outcome::Skipped(format!("dtype: {dtype}")),
        Err(ImportError::UnsupportedOpset { version, .. }) => return Outcome::Skipped(format!("opset: {version}")),
        Err(e) => return Outcome::Failed(format!("import: {e}")),
    };
    let g = &model.graph;
    let (inputs, expected) = match (arrays(dir, "input"), arrays(dir, "output")) {
        (Ok(i), Ok(o)) => (i, o),
        (Err(e), _) | (_, Err(e)) => return Outcome::Skipped(format!("io: {e}")),
    };
    if inputs.len() > g.inputs.len() {
        return Outcome::Failed(format!("{} inputs given, the graph has {}", inputs.len(), g.inputs.len()));
    }
    let feed: HashMap<String, Tensor> =
        g.inputs.iter().zip(inputs).map(|(&id, t)| (g.name_of(id).to_string(), t)).collect();
    let got = match interp::run(g, &feed) {
        Ok(o) => o,
        Err(e) => return Outcome::Failed(format!("run: {e}")),
    };
    if got.len() != expected.len() {
        return Outcome::Failed(format!("{} outputs, expected {}", got.len(), expected.len()));
    }
    for (k, (a, b)) in got.iter().zip(&expected).enumerate() {
        let (rtol, atol) = tolerance(b.dtype());
        if let Err(e) = allclose(a, b, rtol, atol) {
            return Outcome::Failed(format!("output {k} ('{}'): {e}", g.name_of(g.outputs[k])));
        }
    }
    Outcome::Passed
}

/// One row of the manifest: case name and the op it tests.
pub fn manifest(cache: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(cache.join("manifest.tsv")).map_err(|e| format!("{}: {e}", cache.display()))?;
    Ok(text.lines().filter_map(|l| l.split_once('\t')).map(|(a, b)| (a.to_string(), b.to_string())).collect())
}

/// Per-op tallies.
#[derive(Default, Debug)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

pub struct Report {
    pub by_op: BTreeMap<String, Tally>,
    pub results: Vec<(String, String, Outcome)>,
}

impl Report {
    pub fn totals(&self) -> Tally {
        let mut t = Tally::default();
        for v in self.by_op.values() {
            t.passed += v.passed;
            t.failed += v.failed;
            t.skipped += v.skipped;
        }
        t
    }
}

/// Runs every case in `cases` (name, op), catching panics as failures.
pub fn run_all(cache: &Path, cases: &[(String, String)], mut tick: impl FnMut()) -> Report {
    let mut by_op: BTreeMap<String, Tally> = BTreeMap::new();
    let mut results = vec![];
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for (name, op) in cases {
        let dir: PathBuf = cache.join(name);
        let outcome = std::panic::catch_unwind(|| run_case(&dir)).unwrap_or_else(|p| {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            Outcome::Failed(format!("panic: {}", msg.unwrap_or_default()))
        });
        let t = by_op.entry(op.clone()).or_default();
        match &outcome {
            Outcome::Passed => t.passed += 1,
            Outcome::Failed(_) => t.failed += 1,
            Outcome::Skipped(_) => t.skipped += 1,
        }
        results.push((name.clone(), op.clone(), outcome));
        tick();
    }
    std::panic::set_hook(hook);
    Report { by_op, results }
}
