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

/// An array of a type numpy lacks, written as its bit patterns (bf16 as uint16, the narrow
/// types as uint8 codes) with the ONNX type's name beside.
fn from_bits(t: Tensor, type_file: &Path) -> Result<Tensor, String> {
    let name = std::fs::read_to_string(type_file).map_err(|e| format!("{}: {e}", type_file.display()))?;
    let dt = DType::ALL
        .into_iter()
        .find(|d| xforge_ir::dtype::onnx_type_name(d.onnx_code()) == name.trim())
        .filter(|d| d.is_narrow() || *d == DType::BF16)
        .ok_or_else(|| format!("{}: {} is not stored as bits", type_file.display(), name.trim()))?;
    let bits = if dt == DType::BF16 { DType::U16 } else { DType::U8 };
    if t.dtype() != bits {
        return Err(format!("{}: bits of {dt} must be {bits}, got {}", type_file.display(), t.dtype()));
    }
    let data = xforge_ir::TensorData::from_le_bytes(dt, &t.data().to_le_bytes()).expect("sizes agree");
    Ok(Tensor::new(t.shape().to_vec(), data))
}

fn arrays(dir: &Path, prefix: &str) -> Result<Vec<Tensor>, String> {
    let mut out = vec![];
    for i in 0.. {
        let p = dir.join(format!("{prefix}_{i}.npy"));
        if !p.exists() {
            break;
        }
        let t = read_npy(&p)?;
        let type_file = dir.join(format!("{prefix}_{i}.onnxtype"));
        out.push(if type_file.exists() { from_bits(t, &type_file)? } else { t });
    }
    Ok(out)
}

/// Why a compiled case stopped: a failure (any error message), or a skip.
enum Stop {
    Fail(String),
    Skip(String),
}

impl From<String> for Stop {
    fn from(why: String) -> Stop {
        Stop::Fail(why)
    }
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

/// Where `--compile` cases run after compiling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    /// Generated kernels without barriers on the host (the rest through the interpreter).
    Host,
    /// The artifact on the GPU through the runtime.
    Gpu,
    /// Nothing run: the artifact built (and, with `assemble`, its code checked).
    Build,
}

/// What `--compile` found for one case beyond pass/fail.
#[derive(Clone, Debug, Default)]
pub struct CompileNotes {
    /// Inputs compiled in as constants (they feed shape operands).
    pub constants: Vec<String>,
    /// Groups run as host kernels / through the interpreter (host backend).
    pub stats: crate::host_kernels::PlanStats,
    /// Where a GPU failure starts (the first group that differs from the host).
    pub diagnosis: Option<String>,
}

/// The inputs of a model whose values reach a shape operand (through any chain of nodes):
/// compiling needs them known.
pub fn shape_inputs(g: &xforge_ir::Graph) -> Vec<xforge_ir::ValueId> {
    let producers = g.producers();
    let mut todo: Vec<xforge_ir::ValueId> = vec![];
    for n in &g.nodes {
        for (k, i) in n.inputs.iter().enumerate() {
            if let Some(i) = i {
                if n.op.shape_operand(k) {
                    todo.push(*i);
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut found = vec![];
    while let Some(v) = todo.pop() {
        if !seen.insert(v) {
            continue;
        }
        if g.inputs.contains(&v) {
            found.push(v);
        }
        if let Some(p) = producers[v.index()] {
            todo.extend(g.node_reads(&g.nodes[p]));
        }
    }
    found.sort();
    found
}

/// Compiles one case (a case the interpreter passes) into an artifact for `target` — every
/// kernel's PTX through ptxas when `assemble` — and runs it on `backend` against the expected
/// outputs.
pub fn compile_case(dir: &Path, target: &str, assemble: bool, backend: Backend) -> (Outcome, CompileNotes) {
    let mut notes = CompileNotes::default();
    match run_case(dir) {
        Outcome::Passed => {}
        Outcome::Failed(why) => return (Outcome::Skipped(format!("interpreter fails: {why}")), notes),
        Outcome::Skipped(why) => return (Outcome::Skipped(why), notes),
    }
    let path = dir.join("model.onnx");
    let model = match xforge_frontend::load(&path, &ImportOptions::default()) {
        Ok(m) => m,
        Err(e) => return (Outcome::Failed(format!("import: {e}")), notes),
    };
    let (inputs, expected) = match (arrays(dir, "input"), arrays(dir, "output")) {
        (Ok(i), Ok(o)) => (i, o),
        (Err(e), _) | (_, Err(e)) => return (Outcome::Skipped(format!("io: {e}")), notes),
    };
    let g = &model.graph;
    let feed: HashMap<String, Tensor> =
        g.inputs.iter().zip(inputs).map(|(&id, t)| (g.name_of(id).to_string(), t)).collect();
    let mut compiler = xforge_compiler::Compiler::new(target);
    for v in shape_inputs(g) {
        let name = g.name_of(v).to_string();
        if let Some(t) = feed.get(&name) {
            compiler = compiler.constant(&name, t.clone());
            notes.constants.push(name);
        }
    }
    let outcome = xforge_kernel::target::with(compiler.gpu_target(), || -> Result<(), Stop> {
        let m = compiler.load(&path, &[]).map_err(|e| format!("import: {e}"))?;
        let fused = compiler.fuse(&m.graph).map_err(|e| match e {
            // like an unsupported dtype at import: counted apart from the failures
            xforge_compiler::CompileError::Dtype(d) => Stop::Skip(format!("dtype: {} (no kernel)", d.dtype)),
            e => Stop::Fail(format!("compile: {e}")),
        })?;
        let build = || xforge_compiler::build::build(&[(0, &fused)], None, target, String::new(), false, "fp32");
        let artifact = build().map_err(|e| format!("compile: {e}"))?;
        if assemble && !artifact.kernels.ptx.is_empty() {
            xforge_codegen_ptx::toolchain::assemble(&artifact.kernels.ptx, target)
                .map_err(|e| format!("ptxas: {e}"))?;
        }
        if assemble && compiler.gpu_target().is_amd() {
            crate::amdgpu::check(&artifact).map_err(|e| format!("code object: {e}"))?;
        }
        if backend == Backend::Build {
            return Ok(());
        }
        let g = &m.graph;
        let feed: HashMap<String, Tensor> = feed
            .iter()
            .filter(|(k, _)| g.inputs.iter().any(|&i| g.name_of(i) == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let host_kernels = || -> Result<HashMap<usize, xforge_kernel::Kernel>, String> {
            let (library, _) = xforge_compiler::build::library_plans(&fused, false);
            let (kernels, missing) = xforge_compiler::build::generate_kernels(&fused, &library);
            if !missing.is_empty() {
                return Err(format!("no kernel: {}", missing.join("; ")));
            }
            Ok(kernels.into_iter().collect())
        };
        let got = match backend {
            // (a Build run returned after the build)
            Backend::Host | Backend::Build => {
                let (outs, stats) = crate::host_kernels::run_plan(&fused, &host_kernels()?, &feed)?;
                notes.stats = stats;
                outs
            }
            Backend::Gpu => {
                let got = crate::gpu::run_artifact(&artifact, g, &feed)?;
                let wrong = got.len() != expected.len()
                    || got.iter().zip(&expected).any(|(a, b)| {
                        let (rtol, atol) = tolerance(b.dtype());
                        allclose(a, b, rtol, atol).is_err()
                    });
                if wrong {
                    // again with every buffer apart, to name the first group the GPU gets wrong
                    let distinct = xforge_compiler::build::with_distinct_buffers(build).map_err(|e| e.to_string())?;
                    let mut session = crate::gpu::session(&distinct)?;
                    let again = crate::gpu::run(&mut session, &feed)?;
                    let (host, _) = crate::host_kernels::run_plan_values(&fused, &host_kernels()?, &feed)?;
                    let first = crate::gpu::first_wrong_group(&session, &fused, &host)?;
                    let same = again.iter().zip(&got).all(|(a, b)| allclose(a, b, 0.0, 0.0).is_ok());
                    notes.diagnosis = Some(format!(
                        "{}; with distinct buffers the outputs {}",
                        first.unwrap_or_else(|| "no group differs from the host".into()),
                        if same { "are the same" } else { "change (a memory-plan overlap?)" }
                    ));
                }
                got
            }
        };
        if got.len() != expected.len() {
            return Err(format!("{} outputs, expected {}", got.len(), expected.len()).into());
        }
        for (k, (a, b)) in got.iter().zip(&expected).enumerate() {
            let (rtol, atol) = tolerance(b.dtype());
            allclose(a, b, rtol, atol).map_err(|e| format!("output {k}: {e}"))?;
        }
        Ok(())
    });
    (
        match outcome {
            Ok(()) => Outcome::Passed,
            Err(Stop::Skip(why)) => Outcome::Skipped(why),
            Err(Stop::Fail(e)) => Outcome::Failed(match &notes.diagnosis {
                Some(d) => format!("{e} [{d}]"),
                None => e,
            }),
        },
        notes,
    )
}

/// `compile_case` over `cases` on `jobs` threads, catching panics as failures. A case passes
/// when it passes on the first of `targets` and builds (with `assemble`, checked) for the rest.
pub fn compile_all(
    cache: &Path,
    cases: &[(String, String)],
    targets: &[String],
    backend: Backend,
    assemble: bool,
    jobs: usize,
    tick: impl Fn() + Sync,
) -> Report {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let hook = std::panic::take_hook();
    // XFORGE_SHOW_PANICS=1 keeps the panic messages (with RUST_BACKTRACE, where they happen)
    if std::env::var_os("XFORGE_SHOW_PANICS").is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let mut results: Vec<Option<(String, String, Outcome)>> = vec![None; cases.len()];
    let slots = std::sync::Mutex::new(&mut results);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((name, op)) = cases.get(i) else { break };
                let dir: PathBuf = cache.join(name);
                // the first target runs the case; the others are built (and checked) only
                let each = |(k, t): (usize, &String)| -> Outcome {
                    let b = if k == 0 { backend } else { Backend::Build };
                    let o = compile_case(&dir, t, assemble, b).0;
                    match o {
                        Outcome::Failed(why) if targets.len() > 1 => Outcome::Failed(format!("{t}: {why}")),
                        o => o,
                    }
                };
                let all = || {
                    let mut outcomes = targets.iter().enumerate().map(each);
                    let first = outcomes.next().unwrap_or(Outcome::Skipped("no target".into()));
                    match first {
                        Outcome::Passed => outcomes.find(|o| !matches!(o, Outcome::Passed)).unwrap_or(Outcome::Passed),
                        o => o,
                    }
                };
                let outcome = std::panic::catch_unwind(all).unwrap_or_else(|p| {
                    let msg =
                        p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                    Outcome::Failed(format!("panic: {}", msg.unwrap_or_default()))
                });
                slots.lock().unwrap()[i] = Some((name.clone(), op.clone(), outcome));
                tick();
            });
        }
    });
    std::panic::set_hook(hook);
    let mut by_op: BTreeMap<String, Tally> = BTreeMap::new();
    let results: Vec<(String, String, Outcome)> = results.into_iter().flatten().collect();
    for (_, op, outcome) in &results {
        let t = by_op.entry(op.clone()).or_default();
        match outcome {
            Outcome::Passed => t.passed += 1,
            Outcome::Failed(_) => t.failed += 1,
            Outcome::Skipped(_) => t.skipped += 1,
        }
    }
    Report { by_op, results }
}
