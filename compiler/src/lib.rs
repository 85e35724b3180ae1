//! The xforge compiler as a library: an ONNX model (or a graph) in, an `Artifact` out. The CLI,
//! the test suite and every other front end call it the same way:
//!
//! ```no_run
//! use xforge_compiler::{Compiler, Precision};
//! let artifact = Compiler::new("sm_90").precision(Precision::Fp16).compile_onnx("model.onnx".as_ref())?;
//! artifact.write("model.xfa".as_ref())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Stages: import (frontend) → storage precision → fusion (passes) → GEMM epilogues split after
//! library calls → completion (every group gets a runner, `complete.rs`) → kernels, library
//! calls and the memory plan (`build.rs`).
pub mod build;
pub mod complete;
pub mod cost;
pub mod library;
pub mod quantize;
pub mod tune;

pub use build::{digest, BatchSpec, BuildError};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use xforge_ir::{DType, Dim, Graph};
use xforge_passes::fusion::Fused;
pub use xforge_passes::tuning::{Measurement, TuningTable, Way};
use xforge_runtime::Artifact;

/// Storage precision of weights and activations (kernels compute in f32; inputs and outputs
/// keep their types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Fp32,
    Fp16,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }

    fn half(self) -> Option<DType> {
        match self {
            Precision::Fp32 => None,
            Precision::Fp16 => Some(DType::F16),
            Precision::Bf16 => Some(DType::BF16),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Import(#[from] xforge_frontend::ImportError),
    #[error("precision {0}")]
    Precision(String),
    #[error("shape inference: {0}")]
    Infer(String),
    #[error(transparent)]
    Fusion(#[from] xforge_passes::fusion::FusionError),
    /// A node no runner takes (named, with the reason).
    #[error(transparent)]
    Unsupported(#[from] complete::Unrunnable),
    /// A value of a type no kernel handles (named, with its node).
    #[error(transparent)]
    Dtype(#[from] UnsupportedDtype),
    #[error(transparent)]
    Build(#[from] BuildError),
    /// An option that does not fit the model or the compiler (target, batch buckets, ...).
    #[error("{0}")]
    Option(String),
    #[error("cannot read {path}: {why}")]
    Read { path: String, why: String },
    #[error("quantization: {0}")]
    Quantize(#[from] quantize::QuantizeError),
}

/// A value of a type no kernel reads or writes yet (FP8, FP4, 4/2-bit integers), with its node.
#[derive(Debug, thiserror::Error)]
#[error("node '{node}' ({op}) cannot be compiled: '{value}' is {dtype}, which no kernel reads or writes yet (only constant narrow tensors fold)")]
pub struct UnsupportedDtype {
    pub node: String,
    pub op: String,
    pub value: String,
    pub dtype: xforge_ir::DType,
}

/// FP8, FP4 and 4/2-bit integer values have no kernel: constant ones (int4 weights behind a
/// DequantizeLinear) are folded by now, and a node that still reads or writes one is refused.
fn refuse_narrow(g: &Graph) -> Result<(), UnsupportedDtype> {
    for n in &g.nodes {
        let mut ids = n.inputs.iter().flatten().chain(n.outputs.iter().flatten());
        if let Some(&v) = ids.find(|&&v| g.values[v.index()].ty.dtype.is_narrow()) {
            return Err(UnsupportedDtype {
                node: n.name.clone(),
                op: n.op.to_string(),
                value: g.name_of(v).to_string(),
                dtype: g.values[v.index()].ty.dtype,
            });
        }
    }
    Ok(())
}

impl CompileError {
    /// Whether the input (model, option) is at fault rather than the compiler: the CLI's exit 2.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, CompileError::Build(BuildError::Codegen(_) | BuildError::CodegenAmd(_)))
    }
}

/// What the compiler reports while it works: a phase name, and steps done of steps in all.
pub type Progress = dyn Fn(&str, usize, usize) + Send + Sync;

/// The compiler's options; `compile_onnx`/`compile_graph` run the pipeline.
#[derive(Clone)]
pub struct Compiler {
    target: String,
    precision: Precision,
    generated_gemm: bool,
    batch: Vec<u64>,
    batch_dim: Option<String>,
    shapes: BTreeMap<String, Vec<usize>>,
    constants: BTreeMap<String, xforge_ir::Tensor>,
    progress: Option<std::sync::Arc<Progress>>,
    tuning: Option<std::sync::Arc<TuningTable>>,
}

impl Compiler {
    /// A compiler for a GPU architecture: NVIDIA's (`xforge_codegen_ptx::CHIPS`, PTX) or AMD's
    /// (`xforge_codegen_hip::CHIPS`, a code object); `xforge_kernel::target::TARGETS` lists both.
    pub fn new(target: &str) -> Compiler {
        Compiler {
            target: target.to_string(),
            precision: Precision::Fp32,
            generated_gemm: false,
            batch: vec![],
            batch_dim: None,
            shapes: BTreeMap::new(),
            constants: BTreeMap::new(),
            progress: None,
            tuning: None,
        }
    }

    pub fn precision(mut self, p: Precision) -> Compiler {
        self.precision = p;
        self
    }

    /// Every GEMM as a generated kernel (no cuBLASLt call).
    pub fn generated_gemm(mut self, on: bool) -> Compiler {
        self.generated_gemm = on;
        self
    }

    /// Measured kernel times (`xforge tune`) for the fusion cost model and the choice between
    /// a library call and a generated kernel; an empty table changes nothing.
    pub fn tuning(mut self, table: TuningTable) -> Compiler {
        self.tuning = (!table.is_empty()).then(|| std::sync::Arc::new(table));
        self
    }

    /// The measured times this compiler uses, if any.
    pub fn tuning_table(&self) -> Option<&TuningTable> {
        self.tuning.as_deref()
    }

    /// Batch-size buckets for the model's symbolic batch dim (`dim`, or the inputs' only symbol).
    pub fn batch(mut self, sizes: &[u64], dim: Option<&str>) -> Compiler {
        self.batch = sizes.to_vec();
        self.batch_dim = dim.map(str::to_string);
        self
    }

    /// Binds an input's shape or a symbolic dim (`batch` → `[8]`).
    pub fn shape(mut self, name: &str, dims: &[usize]) -> Compiler {
        self.shapes.insert(name.to_string(), dims.to_vec());
        self
    }

    /// Gives an input's value at compile time: it becomes a constant, and what depends only
    /// on it folds (an input that feeds a shape operand must be given this way).
    pub fn constant(mut self, name: &str, value: xforge_ir::Tensor) -> Compiler {
        self.constants.insert(name.to_string(), value);
        self
    }

    pub fn on_progress(mut self, f: impl Fn(&str, usize, usize) + Send + Sync + 'static) -> Compiler {
        self.progress = Some(std::sync::Arc::new(f));
        self
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn precision_name(&self) -> &'static str {
        self.precision.name()
    }

    fn report(&self, phase: &str, done: usize, all: usize) {
        if let Some(p) = &self.progress {
            p(phase, done, all);
        }
    }

    fn check_target(&self) -> Result<(), CompileError> {
        match xforge_kernel::target::find(&self.target) {
            Some(_) => Ok(()),
            None => Err(CompileError::Option(format!(
                "target {}: known targets are {}",
                self.target,
                xforge_kernel::target::TARGETS.iter().map(|t| t.chip).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// What the templates assume while this compiler generates (NVIDIA's defaults for a target
    /// it does not know: `check_target` refuses those before anything is generated).
    pub fn gpu_target(&self) -> xforge_kernel::target::GpuTarget {
        xforge_kernel::target::find(&self.target).unwrap_or(xforge_kernel::target::DEFAULT)
    }

    /// Imports a model with this compiler's shape bindings (and `extra` ones).
    pub fn load(&self, path: &Path, extra: &[(String, usize)]) -> Result<xforge_frontend::Model, CompileError> {
        let mut shapes = self.shapes.clone();
        for (k, v) in extra {
            shapes.insert(k.clone(), vec![*v]);
        }
        let opts = xforge_frontend::ImportOptions { shapes, constants: self.constants.clone() };
        Ok(xforge_frontend::load(path, &opts)?)
    }

    /// A graph at this compiler's precision, fused, with every group given a runner.
    pub fn fuse(&self, graph: &Graph) -> Result<Fused, CompileError> {
        xforge_kernel::target::with(self.gpu_target(), || self.fuse_for_target(graph))
    }

    fn fuse_for_target(&self, graph: &Graph) -> Result<Fused, CompileError> {
        let mut fused = self.fuse_groups(graph)?;
        let generated = match &self.tuning {
            Some(t) => tune::apply(&mut fused, t),
            None => Default::default(),
        };
        if !generated.is_empty() {
            tracing::info!("{} GEMM groups run generated: measured faster than the library call", generated.len());
        }
        if !self.generated_gemm && self.gpu_target().libraries {
            let n = build::split_library_epilogues(&mut fused, &generated);
            tracing::info!("{n} GEMM epilogues moved after a cuBLASLt call");
        }
        let cut = complete::complete(&mut fused, self.generated_gemm)?;
        if cut > 0 {
            tracing::info!("{cut} fused groups without a template were cut into groups that have one");
        }
        Ok(fused)
    }

    /// `fuse` up to the fusion groups: before library epilogues are split off and before
    /// completion (what the tuner measures both ways).
    pub fn fuse_groups(&self, graph: &Graph) -> Result<Fused, CompileError> {
        let mut g = graph.clone();
        // control flow first, so precision conversion sees one graph; conditions that depend
        // only on static shapes are folded first, so those Ifs take one branch
        xforge_passes::fold::fold_constants(&mut g);
        if xforge_passes::control::inline_control_flow(&mut g) > 0 {
            xforge_ir::infer::infer_graph(&mut g).map_err(|e| CompileError::Infer(e.to_string()))?;
        }
        // data-dependent shapes: padded to static bounds, the valid length beside
        if xforge_passes::bounded::bound_data_dependent(&mut g) > 0 {
            // shape arithmetic folded first, so that what reads a padded value sees constants
            xforge_passes::canonicalize(&mut g).map_err(|e| CompileError::Infer(e.to_string()))?;
            // and what reads them works on the padded data
            let n = xforge_passes::padded::pad_data_dependent(&mut g).map_err(|e| complete::Unrunnable {
                node: e.node,
                op: e.op,
                why: e.why,
            })?;
            xforge_ir::infer::infer_graph(&mut g).map_err(|e| CompileError::Infer(e.to_string()))?;
            tracing::info!("{n} nodes work on padded data");
        }
        // quantization without an 8-bit kernel: the float arithmetic it is defined by
        if xforge_passes::qdq::decompose(&mut g) > 0 {
            xforge_ir::infer::infer_graph(&mut g).map_err(|e| CompileError::Infer(e.to_string()))?;
        }
        refuse_narrow(&g)?;
        if let Some(dt) = self.precision.half() {
            let n =
                xforge_passes::precision::convert(&mut g, dt).map_err(|e| CompileError::Precision(e.to_string()))?;
            tracing::info!("{n} weights converted to {dt}");
        }
        let t = std::time::Instant::now();
        let fuse = |g: &Graph| match &self.tuning {
            Some(table) => xforge_passes::fusion::fuse_with(g, &xforge_passes::fusion::cost::measured_cost(table)),
            None => xforge_passes::fusion::fuse(g),
        };
        let mut fused = fuse(&g)?;
        // control flow fusion did not take (a linear Scan no rule matched): unrolled, then fused again
        if fused
            .graph
            .nodes
            .iter()
            .any(|n| matches!(n.op, xforge_ir::Op::Scan | xforge_ir::Op::Loop | xforge_ir::Op::If))
            && xforge_passes::control::inline_all_control_flow(&mut g) > 0
        {
            xforge_ir::infer::infer_graph(&mut g).map_err(|e| CompileError::Infer(e.to_string()))?;
            fused = fuse(&g)?;
        }
        tracing::info!(
            "fused in {:.3} s: {} e-graph iterations, {} e-nodes",
            t.elapsed().as_secs_f64(),
            fused.saturation.iterations,
            fused.saturation.enodes
        );
        Ok(fused)
    }

    /// Compiles a graph with static shapes into an artifact (`digest` records its source).
    pub fn compile_graph(&self, graph: &Graph, digest: String) -> Result<Artifact, CompileError> {
        self.check_target()?;
        self.report("fusing", 0, 1);
        let fused = self.fuse(graph)?;
        self.report("fusing", 1, 1);
        self.build(&[(0, &fused)], None, digest)
    }

    /// Post-training INT8 in one step: the float ONNX model at `path` quantized on the
    /// calibration batches (`quantize::quantize_onnx`: u8 activations, i8 weights; with
    /// `max_drop`, `quantize::quantize_within` keeps the most sensitive layers in float), then
    /// compiled like any QDQ model at this compiler's precision (the layers without an 8-bit
    /// path keep it). The QDQ model is written to a temporary file for the compile — beside
    /// the original when that has external data (they resolve there) — and removed after; the
    /// artifact records the quantization.
    pub fn compile_quantized(
        &self,
        path: &Path,
        batches: &[HashMap<String, xforge_ir::Tensor>],
        opts: quantize::QuantizeOptions,
        max_drop: Option<f64>,
    ) -> Result<Artifact, CompileError> {
        self.check_target()?;
        self.report("calibrating", 0, 1);
        let (bytes, kept) = match max_drop {
            None => (quantize::quantize_onnx(path, batches, opts)?, None),
            Some(d) => {
                let (b, s) = quantize::quantize_within(path, batches, opts, d, &|done, all| {
                    self.report("calibrating", done, all)
                })?;
                (b, Some(s))
            }
        };
        self.report("calibrating", 1, 1);
        let external = {
            use protobuf::Message;
            let m = onnx_protobuf::ModelProto::parse_from_bytes(&bytes)
                .map_err(|e| CompileError::Quantize(quantize::QuantizeError::Model(format!("the QDQ model: {e}"))))?;
            m.graph.initializer.iter().any(|t| !t.external_data.is_empty())
        };
        let dir = if external {
            path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let tmp = tempfile::Builder::new().prefix(".xforge-int8-").suffix(".onnx").tempfile_in(&dir).map_err(|e| {
            CompileError::Read { path: dir.display().to_string(), why: format!("a temporary file: {e}") }
        })?;
        std::fs::write(tmp.path(), &bytes)
            .map_err(|e| CompileError::Read { path: tmp.path().display().to_string(), why: e.to_string() })?;
        let mut a = self.compile_onnx(tmp.path())?;
        a.header.options.push((
            "quantized".into(),
            format!("int8 ({:?}, {} calibration batches)", opts.method, batches.len()).to_lowercase(),
        ));
        if let Some(s) = kept {
            let layers = if s.float_layers.is_empty() { "none".to_string() } else { s.float_layers.join(" ") };
            a.header.options.push(("float_layers".into(), layers));
            a.header
                .options
                .push(("accuracy_drop".into(), format!("{:.3} points (all int8: {:.3})", s.drop, s.drop_all)));
        }
        Ok(a)
    }

    /// Compiles an ONNX file: one plan, or one per batch bucket.
    pub fn compile_onnx(&self, path: &Path) -> Result<Artifact, CompileError> {
        self.check_target()?;
        let bytes = std::fs::read(path)
            .map_err(|e| CompileError::Read { path: path.display().to_string(), why: e.to_string() })?;
        let digest = build::digest(&bytes);
        if self.batch.is_empty() {
            let m = self.load(path, &[])?;
            return self.compile_graph(&m.graph, digest);
        }
        let (buckets, spec) = self.buckets(path)?;
        let refs: Vec<(u64, &Fused)> = buckets.iter().map(|(b, f)| (*b, f)).collect();
        self.build(&refs, Some(&spec), digest)
    }

    fn build(
        &self,
        buckets: &[(u64, &Fused)],
        spec: Option<&BatchSpec>,
        digest: String,
    ) -> Result<Artifact, CompileError> {
        self.report("generating kernels", 0, 1);
        let mut a = xforge_kernel::target::with(self.gpu_target(), || {
            build::build(buckets, spec, &self.target, digest, self.generated_gemm, self.precision.name())
        })?;
        if let Some(t) = &self.tuning {
            a.header.options.push(("tuning".into(), format!("{} measurements on {}", t.len(), t.gpu)));
        }
        self.report("generating kernels", 1, 1);
        Ok(a)
    }

    /// The batch dim the buckets bind and the axis of each input that holds it, read from the
    /// model with its symbols unbound.
    pub fn batch_dim(&self, path: &Path) -> Result<(String, Vec<Option<usize>>), CompileError> {
        let m = self.load(path, &[])?;
        let g = &m.graph;
        let mut symbols: Vec<String> = vec![];
        for &i in &g.inputs {
            for d in g.ty(i).shape.iter().flatten() {
                if let Dim::Sym(s) = d {
                    if !symbols.contains(s) {
                        symbols.push(s.clone());
                    }
                }
            }
        }
        let bad = |s: String| Err(CompileError::Option(s));
        let sym = match &self.batch_dim {
            Some(s) if symbols.contains(s) => s.clone(),
            Some(s) => {
                return bad(format!(
                    "batch dim {s}: the model's inputs have no such dim (symbolic dims: {})",
                    if symbols.is_empty() { "none".to_string() } else { symbols.join(", ") }
                ))
            }
            None if symbols.len() == 1 => symbols[0].clone(),
            None if symbols.iter().any(|s| s == "batch") => "batch".into(),
            None if symbols.is_empty() => {
                let shapes: Vec<String> = g.inputs.iter().map(|&i| format!("{} {}", g.name_of(i), g.ty(i))).collect();
                return bad(format!(
                    "batch buckets: the model's inputs have no symbolic dim ({}); export the model with a dynamic batch",
                    shapes.join(", ")
                ));
            }
            None => {
                return bad(format!(
                    "batch buckets: the inputs have several symbolic dims ({}); name one as the batch dim and bind the others",
                    symbols.join(", ")
                ))
            }
        };
        let mut axes = vec![];
        for &i in &g.inputs {
            let at: Vec<usize> = g
                .ty(i)
                .shape
                .iter()
                .flatten()
                .enumerate()
                .filter_map(|(k, d)| match d {
                    Dim::Sym(s) if *s == sym => Some(k),
                    _ => None,
                })
                .collect();
            if at.len() > 1 {
                return bad(format!(
                    "batch buckets: input '{}' has the dim '{sym}' on {} axes",
                    g.name_of(i),
                    at.len()
                ));
            }
            axes.push(at.first().copied());
        }
        Ok((sym, axes))
    }

    /// The fused graph of each batch bucket and the batch dim's description (its outputs' batch
    /// axes where every node keeps batch rows apart, else the first node that does not).
    pub fn buckets(&self, path: &Path) -> Result<(Vec<(u64, Fused)>, BatchSpec), CompileError> {
        let (symbol, input_axes) = self.batch_dim(path)?;
        let mut sizes = self.batch.clone();
        sizes.sort_unstable();
        sizes.dedup();
        if sizes.first() == Some(&0) || sizes.len() > xforge_runtime::artifact::MAX_BUCKETS {
            return Err(CompileError::Option(format!(
                "batch buckets are 1 to {} sizes of at least 1",
                xforge_runtime::artifact::MAX_BUCKETS
            )));
        }
        let mut fused = vec![];
        for (k, &b) in sizes.iter().enumerate() {
            self.report(&format!("fusing batch {b}"), k, sizes.len());
            let m = self.load(path, &[(symbol.clone(), b as usize)])?;
            fused.push((b, self.fuse(&m.graph)?));
        }
        self.report("fusing", sizes.len(), sizes.len());
        // the rows are read at every bucket above 1 (at batch 1 every axis of size 1 could be it)
        let found: Vec<Result<Vec<Option<usize>>, String>> = fused
            .iter()
            .filter(|(b, _)| *b > 1)
            .map(|(b, f)| {
                xforge_passes::batch_rows::batch_rows(&f.graph, *b as usize, &input_axes)
                    .map_err(|e| format!("at batch {b}, {e}"))
            })
            .collect();
        let mut output_axes = match found.iter().find(|r| r.is_err()) {
            Some(e) => e.clone(),
            None if found.is_empty() => Err("it was compiled for batch 1 only".into()),
            None if found.windows(2).all(|w| w[0] == w[1]) => found[0].clone(),
            None => Err("the outputs' batch axes differ between buckets".into()),
        };
        // an output without batch rows must not change with the batch
        if let Ok(axes) = &output_axes {
            let (first, last) = (&fused[0].1.graph, &fused[fused.len() - 1].1.graph);
            for (k, (&o, p)) in first.outputs.iter().zip(&last.outputs).enumerate() {
                if axes[k].is_none() && first.ty(o) != last.ty(*p) {
                    output_axes = Err(format!("output '{}' grows with the batch but not row by row", first.name_of(o)));
                    break;
                }
            }
        }
        match &output_axes {
            Ok(_) => tracing::info!("padding on: every node keeps batch rows apart"),
            Err(why) => tracing::warn!("padding off (a batch must equal a bucket): {why}"),
        }
        Ok((fused, BatchSpec { symbol, input_axes, output_axes }))
    }
}
