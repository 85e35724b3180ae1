//! Post-training quantization: an ONNX model and calibration batches in, a standard QDQ ONNX
//! model out (what onnxruntime's `quantize_static` writes): every Conv, MatMul and Gemm reads
//! its activation through QuantizeLinear → DequantizeLinear (u8, asymmetric, ranges observed by
//! the interpreter over the batches) and its weight through DequantizeLinear of an i8
//! initializer (symmetric, per tensor or per output channel). The rest of the model is
//! untouched, so any runtime that reads QDQ runs it; xforge's compiler runs it as float until it
//! has 8-bit kernels.
use onnx_protobuf::{AttributeProto, ModelProto, NodeProto, TensorProto};
use protobuf::Message;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use xforge_ir::{Graph, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("{path}: {why}")]
    Read { path: String, why: String },
    #[error(transparent)]
    Import(#[from] xforge_frontend::ImportError),
    /// Calibration data that does not fit the model (names the batch).
    #[error("calibration: {0}")]
    Calibration(String),
    #[error("calibration batch {batch}: {why}")]
    Run { batch: usize, why: String },
    #[error("{0}")]
    Model(String),
}

/// How an activation's range is taken from what calibration saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    MinMax,
    /// The given percentile of |x| (e.g. 99.99), which ignores rare outliers.
    Percentile(f64),
    /// The |x| threshold whose 128-level quantization of the histogram loses the least
    /// information (KL divergence, TensorRT's entropy calibration).
    Entropy,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantizeOptions {
    pub method: Method,
    /// One weight scale per output channel instead of one per tensor.
    pub per_channel: bool,
    pub format: Format,
}

/// The 8-bit type of the QDQ model.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Format {
    /// u8 asymmetric activations, i8 symmetric weights (onnxruntime's QDQ default).
    #[default]
    Int8,
    /// FP8 E4M3FN activations and weights, symmetric (scale = |x|max / 448, zero point 0);
    /// needs opset 19.
    Fp8,
}

/// ONNX's code of FLOAT8E4M3FN, and its largest value.
const FP8: i32 = 17;
const FP8_MAX: f64 = 448.0;

/// Values kept per activation for percentiles (a stride through each batch).
const SAMPLES: usize = 1 << 16;

/// What calibration saw of one activation.
#[derive(Default, Debug)]
struct Observed {
    min: f64,
    max: f64,
    samples: Vec<f64>,
}

/// A Conv/MatMul/Gemm node's operands to quantize: its activation inputs and its weight
/// (initializer name, output-channel axis).
struct Target {
    activations: Vec<String>,
    weight: Option<(String, usize)>,
}

fn targets(m: &ModelProto, init: &HashSet<String>) -> Vec<Option<Target>> {
    let attr_i = |n: &NodeProto, name: &str| n.attribute.iter().find(|a| a.name == name).map(|a| a.i).unwrap_or(0);
    m.graph
        .node
        .iter()
        .map(|n| {
            if !n.domain.is_empty() && n.domain != "ai.onnx" {
                return None;
            }
            let input = |k: usize| n.input.get(k).filter(|s| !s.is_empty()).cloned();
            let (x, w) = (input(0)?, input(1)?);
            let axis = match n.op_type.as_str() {
                "Conv" => 0,
                "MatMul" => 1,
                "Gemm" if attr_i(n, "transA") == 0 => {
                    if attr_i(n, "transB") != 0 {
                        0
                    } else {
                        1
                    }
                }
                _ => return None,
            };
            // operands that are initializers are not activations (a first one stays float)
            let activations = [&x, &w].into_iter().filter(|t| !init.contains(*t)).cloned().collect();
            let weight = init.contains(&w).then(|| (w.clone(), axis));
            Some(Target { activations, weight })
        })
        .collect()
}

/// (scale, zero point) of an asymmetric u8 range covering [lo, hi] and 0.
fn u8_params(lo: f64, hi: f64) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0) as f32, hi.max(0.0) as f32);
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zp = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

/// The FP8 scale that maps |x| ≤ `amax` onto E4M3FN's range (1 for an all-zero tensor).
fn fp8_scale(amax: f64) -> f32 {
    if amax > 0.0 {
        (amax / FP8_MAX) as f32
    } else {
        1.0
    }
}

fn f32_tensor(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = 1;
    t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    t
}

fn int_tensor(name: &str, dims: &[i64], v: &[i64], data_type: i32) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = data_type;
    t.raw_data = v.iter().map(|&x| x as u8).collect();
    t
}

fn qdq_node(op: &str, name: String, inputs: [&str; 3], output: String, axis: Option<i64>) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op.into();
    n.name = name;
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = vec![output];
    if let Some(a) = axis {
        let mut at = AttributeProto::new();
        at.name = "axis".into();
        at.i = a;
        at.type_ = onnx_protobuf::attribute_proto::AttributeType::INT.into();
        n.attribute.push(at);
    }
    n
}

/// Checks a calibration batch against the model's inputs (names, types, shapes).
fn check_batch(g: &Graph, b: usize, feed: &HashMap<String, Tensor>) -> Result<(), QuantizeError> {
    for &i in &g.inputs {
        let name = g.name_of(i);
        let t = feed
            .get(name)
            .ok_or_else(|| QuantizeError::Run { batch: b, why: format!("no value for input '{name}'") })?;
        if t.dtype() != g.ty(i).dtype || !g.ty(i).admits(t.shape()) {
            return Err(QuantizeError::Run {
                batch: b,
                why: format!("input '{name}' is {}, the batch holds {} {:?}", g.ty(i), t.dtype(), t.shape()),
            });
        }
    }
    Ok(())
}

/// Observes every activation the targets read over the calibration batches (each a map from
/// input name to value), on the interpreter, one batch at a time: each is checked against the
/// model before it runs. Percentile and entropy keep at most about 2·SAMPLES samples of |x| per
/// activation, spread evenly over the batches: over a known number of batches, SAMPLES / n of
/// each; over a stream, all it can and every other one dropped (for the batches to come too)
/// whenever they pass 2·SAMPLES.
fn calibrate<B: std::borrow::Borrow<HashMap<String, Tensor>>>(
    g: &Graph,
    names: &[String],
    batches: impl IntoIterator<Item = B>,
    method: Method,
) -> Result<Vec<Observed>, QuantizeError> {
    let batches = batches.into_iter();
    let known = match batches.size_hint() {
        (lo, Some(hi)) if lo == hi => Some(lo),
        _ => None,
    };
    let mut probe = g.clone();
    probe.outputs = names
        .iter()
        .map(|n| probe.find_value(n).ok_or_else(|| QuantizeError::Model(format!("'{n}' is not a value of the model"))))
        .collect::<Result<_, _>>()?;
    let mut seen: Vec<Observed> =
        names.iter().map(|_| Observed { min: f64::MAX, max: f64::MIN, samples: vec![] }).collect();
    // a stream's sampling stride, doubled at each thinning
    let mut stride = 1usize;
    let mut count = 0;
    for (b, feed) in batches.enumerate() {
        let feed = feed.borrow();
        check_batch(g, b, feed)?;
        count += 1;
        let outs =
            xforge_ir::interp::run(&probe, feed).map_err(|e| QuantizeError::Run { batch: b, why: e.to_string() })?;
        for (o, t) in seen.iter_mut().zip(&outs) {
            let v = t.to_f64();
            if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                return Err(QuantizeError::Run { batch: b, why: format!("an activation holds {bad}") });
            }
            for &x in &v {
                o.min = o.min.min(x);
                o.max = o.max.max(x);
            }
            if matches!(method, Method::Percentile(_) | Method::Entropy) {
                let step = match known {
                    Some(n) => (v.len() / (SAMPLES / n.max(1)).max(1)).max(1),
                    None => (v.len() / SAMPLES).max(1) * stride,
                };
                o.samples.extend(v.iter().step_by(step).map(|x| x.abs()));
            }
        }
        if known.is_none() && seen.iter().any(|o| o.samples.len() > 2 * SAMPLES) {
            stride *= 2;
            for o in &mut seen {
                o.samples = o.samples.iter().step_by(2).copied().collect();
            }
        }
    }
    if count == 0 {
        return Err(QuantizeError::Calibration("no batches".into()));
    }
    if method == Method::Entropy {
        for o in &mut seen {
            if let Some(cut) = entropy_threshold(&o.samples) {
                o.min = o.min.max(-cut);
                o.max = o.max.min(cut);
            }
        }
    }
    if let Method::Percentile(p) = method {
        for o in &mut seen {
            o.samples.sort_by(|a, b| a.total_cmp(b));
            if let Some(&cut) =
                o.samples.get(((o.samples.len() as f64 * p / 100.0) as usize).min(o.samples.len().saturating_sub(1)))
            {
                o.min = o.min.max(-cut);
                o.max = o.max.min(cut);
            }
        }
    }
    Ok(seen)
}

/// Histogram bins and quantized levels of the entropy search.
const BINS: usize = 2048;
const LEVELS: usize = 128;

/// The |x| threshold (over samples of |x|) that minimizes KL(P || Q), P the histogram cut at
/// the threshold (what lies beyond added to its last bin), Q the bins below the threshold
/// merged into `LEVELS` levels and spread back over P's nonzero bins (onnxruntime's and
/// TensorRT's entropy calibration); None without positive samples.
pub fn entropy_threshold(abs: &[f64]) -> Option<f64> {
    let top = abs.iter().cloned().fold(0.0f64, f64::max);
    if top <= 0.0 || !top.is_finite() {
        return None;
    }
    let width = top / BINS as f64;
    let mut hist = vec![0f64; BINS];
    // exact zeros (a ReLU's half) are exact at any threshold: they do not weigh in the search
    for &a in abs.iter().filter(|&&a| a > 0.0) {
        hist[((a / width) as usize).min(BINS - 1)] += 1.0;
    }
    let (mut best, mut best_kl) = (BINS, f64::INFINITY);
    for i in (LEVELS..=BINS).step_by(16) {
        let mut p: Vec<f64> = hist[..i].to_vec();
        p[i - 1] += hist[i..].iter().sum::<f64>();
        // Q: each level's mass spread evenly over its nonzero bins
        let mut q = vec![0f64; i];
        for l in 0..LEVELS {
            let (a, b) = (l * i / LEVELS, ((l + 1) * i / LEVELS).max(l * i / LEVELS + 1));
            // Q from the bins alone (no outliers), spread where P is nonzero: the clipped
            // mass is the information the threshold loses
            let mass: f64 = hist[a..b].iter().sum();
            let nonzero = p[a..b].iter().filter(|&&h| h > 0.0).count();
            if nonzero > 0 {
                for (qk, pk) in q[a..b].iter_mut().zip(&p[a..b]) {
                    if *pk > 0.0 {
                        *qk = mass / nonzero as f64;
                    }
                }
            }
        }
        let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
        if ps <= 0.0 || qs <= 0.0 {
            continue;
        }
        let kl: f64 = p
            .iter()
            .zip(&q)
            .filter(|(pv, _)| **pv > 0.0)
            .map(|(pv, qv)| {
                let (pn, qn) = (pv / ps, (qv / qs).max(1e-12));
                pn * (pn / qn).ln()
            })
            .sum();
        if kl < best_kl {
            (best, best_kl) = (i, kl);
        }
    }
    Some(best as f64 * width)
}

/// Quantizes the ONNX model at `path` (external data read from its folder) with the given
/// calibration batches; returns the QDQ model's bytes, checked by importing them again.
pub fn quantize_onnx(
    path: &Path,
    batches: &[HashMap<String, Tensor>],
    opts: QuantizeOptions,
) -> Result<Vec<u8>, QuantizeError> {
    calibrate_onnx(path, batches, opts)?.write(&HashSet::new())
}

/// A model calibrated once, to be written with any of its layers kept in float.
pub struct Calibrated {
    model: ModelProto,
    graph: Graph,
    base: Option<std::path::PathBuf>,
    targets: Vec<Option<Target>>,
    /// (scale, zero point) of every activation a target reads.
    params: HashMap<String, (f32, u8)>,
    opts: QuantizeOptions,
}

/// Reads the model at `path` and observes its activations over the calibration batches.
pub fn calibrate_onnx(
    path: &Path,
    batches: &[HashMap<String, Tensor>],
    opts: QuantizeOptions,
) -> Result<Calibrated, QuantizeError> {
    calibrate_onnx_with(path, opts, |g, names| {
        // every batch is checked against the model before any runs
        for (b, feed) in batches.iter().enumerate() {
            check_batch(g, b, feed)?;
        }
        calibrate(g, names, batches, opts.method)
    })
}

/// `calibrate_onnx` over any iterator of batches, read one at a time (the data-loader
/// calibrator: batches can be made as they are needed, from files, images or a generator). Each
/// is checked against the model before it runs.
pub fn calibrate_onnx_stream<B: std::borrow::Borrow<HashMap<String, Tensor>>>(
    path: &Path,
    batches: impl IntoIterator<Item = B>,
    opts: QuantizeOptions,
) -> Result<Calibrated, QuantizeError> {
    calibrate_onnx_with(path, opts, |g, names| calibrate(g, names, batches, opts.method))
}

/// Reads the model, finds what to quantize and has `observe` watch those activations.
fn calibrate_onnx_with(
    path: &Path,
    opts: QuantizeOptions,
    observe: impl FnOnce(&Graph, &[String]) -> Result<Vec<Observed>, QuantizeError>,
) -> Result<Calibrated, QuantizeError> {
    let bytes = std::fs::read(path)
        .map_err(|e| QuantizeError::Read { path: path.display().to_string(), why: e.to_string() })?;
    let base = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
    let graph = xforge_frontend::parse(&bytes, base, &Default::default())?.graph;
    let m = ModelProto::parse_from_bytes(&bytes).map_err(|e| QuantizeError::Model(e.to_string()))?;
    if m.graph.node.iter().any(|n| n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear") {
        return Err(QuantizeError::Model("the model is quantized already".into()));
    }
    let opset =
        m.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version).unwrap_or(0);
    if opset < 13 {
        return Err(QuantizeError::Model(format!("opset {opset}: QDQ with per-axis scales needs opset 13 or later")));
    }
    if opts.format == Format::Fp8 && opset < 19 {
        return Err(QuantizeError::Model(format!(
            "opset {opset}: FP8 QuantizeLinear/DequantizeLinear need opset 19 or later (export the model at 19)"
        )));
    }
    let init: HashSet<String> = m.graph.initializer.iter().map(|t| t.name.clone()).collect();
    let targets = targets(&m, &init);
    let names: Vec<String> = targets
        .iter()
        .flatten()
        .flat_map(|t| t.activations.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if targets.iter().flatten().next().is_none() {
        return Err(QuantizeError::Model("no Conv, MatMul or Gemm to quantize".into()));
    }
    let seen = observe(&graph, &names)?;
    for (n, o) in names.iter().zip(&seen) {
        tracing::debug!("{n}: [{}, {}]", o.min, o.max);
    }
    let params = names
        .iter()
        .zip(&seen)
        .map(|(n, o)| {
            let p = match opts.format {
                Format::Int8 => u8_params(o.min, o.max),
                Format::Fp8 => (fp8_scale(o.min.abs().max(o.max.abs())), 0),
            };
            (n.clone(), p)
        })
        .collect();
    Ok(Calibrated { model: m, graph, base: base.map(Path::to_path_buf), targets, params, opts })
}

impl Calibrated {
    /// The layers that can be quantized (Conv, MatMul, Gemm nodes), by name, with the index
    /// `write` takes.
    pub fn layers(&self) -> Vec<(usize, String)> {
        let nodes = &self.model.graph.node;
        self.targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_some())
            .map(|(i, _)| {
                let n = &nodes[i];
                (i, if n.name.is_empty() { format!("{} #{i}", n.op_type) } else { n.name.clone() })
            })
            .collect()
    }

    /// The QDQ model with the layers (node indices) in `float` left as they are.
    pub fn write(&self, float: &HashSet<usize>) -> Result<Vec<u8>, QuantizeError> {
        let (graph, opts, params) = (&self.graph, self.opts, &self.params);
        let base = self.base.as_deref();
        let mut m = self.model.clone();
        let targets: Vec<Option<&Target>> =
            self.targets.iter().enumerate().map(|(i, t)| t.as_ref().filter(|_| !float.contains(&i))).collect();

        let mut new_init: Vec<TensorProto> = vec![];
        let mut front: Vec<NodeProto> = vec![];
        // weights: i8 symmetric, one DQ each, at the front
        let mut weight_dq: HashMap<String, String> = HashMap::new();
        for t in targets.iter().flatten() {
            let Some((w, axis)) = &t.weight else { continue };
            if weight_dq.contains_key(w) {
                continue;
            }
            let id =
                graph.find_value(w).ok_or_else(|| QuantizeError::Model(format!("weight '{w}' is not in the model")))?;
            let Some(wt) = graph.weights.get(&id) else { continue };
            if wt.dtype() != xforge_ir::DType::F32 {
                continue;
            }
            let shape = wt.shape().to_vec();
            let per_channel = opts.per_channel && *axis < shape.len() && shape.len() >= 2;
            let v = wt.to_f64();
            let (channels, stride) =
                if per_channel { (shape[*axis], xforge_ir::tensor::strides(&shape)[*axis]) } else { (1, 1) };
            let mut scales = vec![0f32; channels];
            for (i, x) in v.iter().enumerate() {
                let c = (i / stride) % channels;
                scales[c] = scales[c].max(x.abs() as f32);
            }
            let (scales, q, data_type): (Vec<f32>, Vec<i64>, i32) = match opts.format {
                Format::Int8 => {
                    let scales: Vec<f32> = scales.iter().map(|&a| if a > 0.0 { a / 127.0 } else { 1.0 }).collect();
                    let q = v
                        .iter()
                        .enumerate()
                        .map(|(i, x)| {
                            ((*x as f32) / scales[(i / stride) % channels]).round_ties_even().clamp(-127.0, 127.0)
                                as i64
                        })
                        .collect();
                    (scales, q, 3)
                }
                Format::Fp8 => {
                    let scales: Vec<f32> = scales.iter().map(|&a| fp8_scale(a as f64)).collect();
                    // the codes, as QuantizeLinear writes them: x / scale in f32, cast saturating
                    let q = v
                        .iter()
                        .enumerate()
                        .map(|(i, x)| {
                            let r = (*x as f32) / scales[(i / stride) % channels];
                            xforge_ir::narrow::encode(xforge_ir::DType::F8E4M3FN, r as f64, true) as i64
                        })
                        .collect();
                    (scales, q, FP8)
                }
            };
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let sdims: Vec<i64> = if per_channel { vec![channels as i64] } else { vec![] };
            let (qn, sn, zn, dn) =
                (format!("{w}_quantized"), format!("{w}_scale"), format!("{w}_zero_point"), format!("{w}_dequantized"));
            new_init.push(int_tensor(&qn, &dims, &q, data_type));
            new_init.push(f32_tensor(&sn, &sdims, &scales));
            new_init.push(int_tensor(&zn, &sdims, &vec![0; channels], data_type));
            front.push(qdq_node(
                "DequantizeLinear",
                format!("{w}_DequantizeLinear"),
                [&qn, &sn, &zn],
                dn.clone(),
                per_channel.then_some(*axis as i64),
            ));
            weight_dq.insert(w.clone(), dn);
        }
        // activations: Q → DQ just before the first target that reads them
        let mut done: HashSet<String> = HashSet::new();
        let old = std::mem::take(&mut m.graph.mut_or_insert_default().node);
        let mut nodes = front;
        for (n, t) in old.into_iter().zip(&targets) {
            let mut n = n;
            if let Some(t) = t {
                for a in &t.activations {
                    let (scale, zp) = params[a];
                    let (qn, dn, sn, zn) = (
                        format!("{a}_quantized"),
                        format!("{a}_dequantized"),
                        format!("{a}_scale"),
                        format!("{a}_zero_point"),
                    );
                    if done.insert(a.clone()) {
                        new_init.push(f32_tensor(&sn, &[], &[scale]));
                        let zp_type = if opts.format == Format::Fp8 { FP8 } else { 2 };
                        new_init.push(int_tensor(&zn, &[], &[zp as i64], zp_type));
                        nodes.push(qdq_node(
                            "QuantizeLinear",
                            format!("{a}_QuantizeLinear"),
                            [a, &sn, &zn],
                            qn.clone(),
                            None,
                        ));
                        nodes.push(qdq_node(
                            "DequantizeLinear",
                            format!("{a}_DequantizeLinear"),
                            [&qn, &sn, &zn],
                            dn.clone(),
                            None,
                        ));
                    }
                    for i in n.input.iter_mut().take(2) {
                        if i == a {
                            *i = dn.clone();
                        }
                    }
                }
                if let Some((w, _)) = &t.weight {
                    if let Some(dn) = weight_dq.get(w) {
                        n.input[1] = dn.clone();
                    }
                }
            }
            nodes.push(n);
        }
        let g = m.graph.mut_or_insert_default();
        g.node = nodes;
        // float weights that nothing reads any more are dropped
        let read: HashSet<String> = g
            .node
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .chain(g.output.iter().map(|o| o.name.clone()))
            .collect();
        g.initializer.retain(|t| read.contains(&t.name) || !weight_dq.contains_key(&t.name));
        g.initializer.extend(new_init);
        let out = m.write_to_bytes().map_err(|e| QuantizeError::Model(e.to_string()))?;
        // the result must import like any model
        xforge_frontend::parse(&out, base, &Default::default())?;
        Ok(out)
    }
}

/// What the accuracy budget left in float, and what the written model loses.
#[derive(Clone, Debug, PartialEq)]
pub struct Sensitivity {
    /// Percentage points of rows whose top-1 differs from the float model's (see `accuracy_drop`).
    pub drop: f64,
    /// Relative L2 error of the first output against the float model's.
    pub error: f64,
    /// The layers kept in float, most sensitive first.
    pub float_layers: Vec<String>,
    /// The drop with every layer quantized.
    pub drop_all: f64,
}

/// The first output's top-1 disagreement with `reference` (percentage points over rows: every
/// position of the output's other axes, argmax over its last axis, over all batches) and its
/// relative L2 error, with the model `bytes` run on the interpreter.
fn accuracy_drop(
    bytes: &[u8],
    base: Option<&Path>,
    batches: &[HashMap<String, Tensor>],
    reference: &[Tensor],
) -> Result<(f64, f64), QuantizeError> {
    let g = xforge_frontend::parse(bytes, base, &Default::default())?.graph;
    let (mut rows, mut differ, mut num, mut den) = (0usize, 0usize, 0f64, 0f64);
    for (b, (feed, want)) in batches.iter().zip(reference).enumerate() {
        let got = xforge_ir::interp::run(&g, feed).map_err(|e| QuantizeError::Run { batch: b, why: e.to_string() })?;
        let (x, y) = (got[0].to_f64(), want.to_f64());
        let last = want.shape().last().copied().unwrap_or(1).max(1);
        let top = |v: &[f64]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|m| m.0);
        for (p, q) in x.chunks(last).zip(y.chunks(last)) {
            rows += 1;
            differ += (top(p) != top(q)) as usize;
        }
        num += x.iter().zip(&y).map(|(p, q)| (p - q) * (p - q)).sum::<f64>();
        den += y.iter().map(|q| q * q).sum::<f64>();
    }
    let error = if den > 0.0 { (num / den).sqrt() } else { num.sqrt() };
    Ok((100.0 * differ as f64 / rows.max(1) as f64, error))
}

/// Post-training quantization within an accuracy budget: every layer quantized, unless that
/// loses more than `max_drop` percentage points of top-1 agreement with the float model on the
/// calibration batches (`accuracy_drop`); then each layer's sensitivity (the error with that
/// layer alone quantized) orders them, and the fewest most sensitive layers that meet the
/// budget stay in float (a binary search over that order). `progress(done, all)` counts
/// interpreter passes over the batches.
pub fn quantize_within(
    path: &Path,
    batches: &[HashMap<String, Tensor>],
    opts: QuantizeOptions,
    max_drop: f64,
    progress: &dyn Fn(usize, usize),
) -> Result<(Vec<u8>, Sensitivity), QuantizeError> {
    if !(0.0..=100.0).contains(&max_drop) {
        return Err(QuantizeError::Model(format!("an accuracy drop of {max_drop} points: between 0 and 100")));
    }
    let c = calibrate_onnx(path, batches, opts)?;
    let reference: Vec<Tensor> = batches
        .iter()
        .enumerate()
        .map(|(b, feed)| {
            let out = xforge_ir::interp::run(&c.graph, feed)
                .map_err(|e| QuantizeError::Run { batch: b, why: e.to_string() })?;
            Ok(out.into_iter().next().expect("a model has an output"))
        })
        .collect::<Result<_, QuantizeError>>()?;
    let layers = c.layers();
    let all = layers.len();
    // at most: the whole model, each layer alone, a binary search
    let budget = 1 + all + (usize::BITS - all.leading_zeros()) as usize + 1;
    let passes = std::cell::Cell::new(0);
    let measure = |float: &HashSet<usize>| -> Result<(Vec<u8>, f64, f64), QuantizeError> {
        let bytes = c.write(float)?;
        let (drop, error) = accuracy_drop(&bytes, c.base.as_deref(), batches, &reference)?;
        passes.set(passes.get() + 1);
        progress(passes.get(), budget);
        Ok((bytes, drop, error))
    };
    let (bytes, drop_all, error) = measure(&HashSet::new())?;
    if drop_all <= max_drop {
        progress(budget, budget);
        return Ok((bytes, Sensitivity { drop: drop_all, error, float_layers: vec![], drop_all }));
    }
    let every: HashSet<usize> = layers.iter().map(|(i, _)| *i).collect();
    let mut alone: Vec<(f64, usize, &str)> = vec![];
    for (i, name) in &layers {
        let mut float = every.clone();
        float.remove(i);
        let (_, _, e) = measure(&float)?;
        alone.push((e, *i, name));
    }
    alone.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    // the fewest of the most sensitive layers in float that meet the budget (all of them do)
    let (mut lo, mut hi) = (1, all);
    let mut best: Option<(usize, Vec<u8>, f64, f64)> = None;
    while lo <= hi {
        let k = (lo + hi) / 2;
        let float: HashSet<usize> = alone[..k].iter().map(|a| a.1).collect();
        let (bytes, drop, error) = measure(&float)?;
        if drop <= max_drop {
            best = Some((k, bytes, drop, error));
            hi = k - 1;
        } else {
            lo = k + 1;
        }
    }
    let (k, bytes, drop, error) = match best {
        Some(b) => b,
        None => {
            let (bytes, drop, error) = measure(&every)?;
            (all, bytes, drop, error)
        }
    };
    progress(budget, budget);
    let float_layers = alone[..k].iter().map(|a| a.2.to_string()).collect();
    Ok((bytes, Sensitivity { drop, error, float_layers, drop_all }))
}

#[cfg(test)]
mod tests {
    use super::{calibrate, entropy_threshold, Method, QuantizeError, SAMPLES};
    use std::collections::HashMap;
    use xforge_ir::{DType, GraphBuilder, Op, Tensor, ValueType};

    #[test]
    fn a_stream_of_batches_calibrates_as_the_same_batches_in_a_slice() {
        // y = Relu(x), x [N]: batch k holds a ramp over [-(k+1), k+1] of 70,000 values (more than
        // SAMPLES each, so a stream thins its samples on the way)
        let mut b = GraphBuilder::new("relu", 17);
        let x = b.input_sym("x", DType::F32, &["n"]);
        let y = b.node(Op::Relu, &[x], vec![], ValueType::unranked(DType::F32));
        b.output(y);
        let mut g = b.finish();
        xforge_ir::infer::infer_graph(&mut g).unwrap();
        let n = 70_000;
        let batch = |k: usize| {
            let a = (k + 1) as f32;
            let v: Vec<f32> = (0..n).map(|i| -a + 2.0 * a * i as f32 / (n - 1) as f32).collect();
            HashMap::from([("x".to_string(), Tensor::from_f32(vec![n], v))])
        };
        let slice: Vec<_> = (0..5).map(batch).collect();
        let names = ["x".to_string(), g.name_of(y).to_string()];
        for method in [Method::MinMax, Method::Percentile(99.0)] {
            let a = calibrate(&g, &names, &slice, method).unwrap();
            // a generator: no length known, batches made as they are asked for
            let s = calibrate(&g, &names, (0..5).map(batch).filter(|_| true), method).unwrap();
            for (p, q) in a.iter().zip(&s) {
                assert!(q.samples.len() <= 2 * SAMPLES);
                assert!(
                    (p.min - q.min).abs() < 2e-2 && (p.max - q.max).abs() < 2e-2,
                    "{method:?}: {} {} / {} {}",
                    p.min,
                    p.max,
                    q.min,
                    q.max
                );
            }
            if method == Method::MinMax {
                assert_eq!((a[0].min, a[0].max), (-5.0, 5.0));
                assert_eq!((s[1].min, s[1].max), (0.0, 5.0));
            }
        }
        // the batch at fault is named, and nothing at all is an error
        let bad = (0..3).map(|k| if k == 2 { HashMap::new() } else { batch(k) });
        let e = calibrate(&g, &names, bad, Method::MinMax).unwrap_err();
        assert!(matches!(&e, QuantizeError::Run { batch: 2, why } if why.contains("no value for input 'x'")), "{e}");
        let none: Vec<HashMap<String, Tensor>> = vec![];
        assert!(matches!(calibrate(&g, &names, none, Method::MinMax), Err(QuantizeError::Calibration(_))));
    }

    /// |x| of a standard normal (Box–Muller over a fixed sequence).
    fn normal(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let u = (i as f64 + 0.5) / n as f64;
                let v = ((i as f64 * 0.618034) % 1.0).max(1e-9);
                ((-2.0 * v.ln()).sqrt() * (2.0 * std::f64::consts::PI * u).cos()).abs()
            })
            .collect()
    }

    #[test]
    fn entropy_cuts_outliers_and_keeps_the_bulk() {
        // a normal bulk with a few huge outliers: the cut is far below them, above the bulk's body
        let mut a = normal(20000);
        a.extend([200.0, 150.0, 180.0]);
        let t = entropy_threshold(&a).unwrap();
        assert!(t > 2.0 && t < 20.0, "threshold {t}");
        // a uniform |x| on [0, 1]: nothing to cut
        let u: Vec<f64> = (0..20000).map(|i| i as f64 / 20000.0).collect();
        let t = entropy_threshold(&u).unwrap();
        assert!(t > 0.9, "threshold {t}");
        assert_eq!(entropy_threshold(&[0.0, 0.0]), None);
    }
}
