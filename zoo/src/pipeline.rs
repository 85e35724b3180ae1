//! A task pipeline: one graph of pre-processing, the model and post-processing, and the device
//! it runs on (the reference interpreter, or the GPU through the compiler and the runtime).
use crate::append::{feed_input, splice, Appender};
use crate::config::{Fit, Layout, TaskConfig};
use crate::picture::{CanvasBatch, Picture};
use crate::resample::{bilinear, inside, Geometry};
use crate::ZooError;
use std::collections::HashMap;
use xforge_compiler::{Compiler, Precision};
use xforge_ir::{DType, Dim, Graph, Node, Op, Tensor, TensorData, ValueId, ValueType};
use xforge_runtime::Session;

/// The graph inputs every image pipeline reads.
pub const PIXELS: &str = "zoo_pixels";
pub const EXTENT: &str = "zoo_extent";

/// Where a pipeline runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Device {
    /// The reference interpreter on the CPU: slow, exact, needs no GPU.
    Interpreter,
    /// GPU `index`, compiled for its target at `precision` (one artifact per batch size used).
    Gpu { index: usize, precision: Precision },
}

/// The model's image input, as the pre-processing must produce it.
pub struct ModelInput {
    pub id: ValueId,
    pub batch: Dim,
    pub dtype: DType,
}

/// Checks that the model's first input is the image the configuration describes.
pub fn model_input(g: &Graph, cfg: &TaskConfig) -> Result<ModelInput, ZooError> {
    let &id = g.inputs.first().ok_or_else(|| ZooError::Config("the model has no inputs".into()))?;
    let ty = g.ty(id);
    let [h, w] = cfg.input_size;
    let want = match cfg.layout {
        Layout::Nchw => [3, h, w],
        Layout::Nhwc => [h, w, 3],
    };
    let fits = ty
        .shape
        .as_ref()
        .is_some_and(|s| s.len() == 4 && s[1..].iter().zip(want).all(|(d, k)| matches!(d, Dim::Known(x) if *x == k)));
    if !fits || !ty.dtype.is_float() {
        return Err(ZooError::Config(format!(
            "input_size/layout: the model's input '{}' is {ty}, the configuration says a float [N, {}]",
            g.name_of(id),
            want.map(|d| d.to_string()).join(", ")
        )));
    }
    let batch = ty.shape.as_ref().expect("checked above")[0].clone();
    Ok(ModelInput { id, batch, dtype: ty.dtype })
}

/// The pre-processing as graph ops before the model: the canvas batch (`PIXELS` u8 [N, canvas_h,
/// canvas_w, 3] and `EXTENT` f32 [N, 2]) resized (bilinear, stretched or letterboxed), scaled to
/// [0, 1], normalized, laid out and cast as the model's input. Returns the pre-processing's nodes
/// and each image's geometry from model-input pixels to its own pixels (values [N, 2]).
pub fn prepend(g: &mut Graph, cfg: &TaskConfig) -> Result<(Vec<Node>, Geometry), ZooError> {
    let input = model_input(g, cfg)?;
    let [h, w] = cfg.input_size;
    let [ch, cw] = cfg.max_image_size;
    let mut a = Appender::new(g, "zoo_pre");
    let batch = input.batch.clone();
    let pixels =
        a.input(PIXELS, ValueType::new(DType::U8, vec![batch.clone(), Dim::Known(ch), Dim::Known(cw), Dim::Known(3)]));
    let extent = a.input(EXTENT, ValueType::new(DType::F32, vec![batch, Dim::Known(2)]));
    let size = a.f32s(&[1, 2], vec![h as f32, w as f32]);
    let ratio = a.div(extent, size);
    let (geo, content) = match cfg.fit {
        Fit::Stretch => {
            // [N, 2] like the scale, so that a box can look up its image's entry
            let zero = a.f32s(&[], vec![0.0]);
            (Geometry { scale: ratio, shift: a.mul(ratio, zero) }, None)
        }
        Fit::Letterbox => {
            let s = a.reduce(Op::ReduceMax, ratio, &[1]);
            let both = a.f32s(&[1, 2], vec![1.0, 1.0]);
            let scale = a.mul(s, both);
            let fitted = a.div(extent, scale);
            let spare = a.sub(size, fitted);
            let half = a.f32s(&[], vec![0.5]);
            let offset = a.mul(spare, half);
            let back = a.mul(offset, scale);
            let zero = a.f32s(&[], vec![0.0]);
            let shift = a.sub(zero, back);
            (Geometry { scale, shift }, Some((offset, fitted)))
        }
        Fit::Crop => {
            // torchvision: new = (r, ⌊r·long/short⌋), top-left = round((new − size) / 2)
            let r = cfg.resize.unwrap_or(h.max(w)) as f32;
            let short = a.reduce(Op::ReduceMin, extent, &[1]);
            let r = a.f32s(&[], vec![r]);
            let long = a.mul(extent, r);
            let new = a.div(long, short);
            let new = a.op(Op::Floor, &[new], vec![]);
            let scale = a.div(extent, new);
            let spare = a.sub(new, size);
            let half = a.f32s(&[], vec![0.5]);
            let top = a.mul(spare, half);
            let top = a.op(Op::Round, &[top], vec![]);
            (Geometry { scale, shift: a.mul(top, scale) }, None)
        }
    };
    let mut x = bilinear(&mut a, pixels, [ch, cw, 3], [h, w], geo, extent);
    if let Some((offset, fitted)) = content {
        let inner = inside(&mut a, [h, w], offset, fitted);
        let pad = a.f32s(&[], vec![cfg.pad_value]);
        x = a.op(Op::Where, &[inner, x, pad], vec![]);
    }
    let gain: Vec<f32> = cfg.std.iter().map(|s| 1.0 / (255.0 * s)).collect();
    let bias: Vec<f32> = cfg.mean.iter().zip(cfg.std).map(|(m, s)| -m / s).collect();
    let gain = a.f32s(&[3], gain);
    let bias = a.f32s(&[3], bias);
    x = a.mul(x, gain);
    x = a.add(x, bias);
    if cfg.layout == Layout::Nchw {
        x = a.transpose(x, &[0, 3, 1, 2]);
    }
    if input.dtype != DType::F32 {
        x = a.cast(x, input.dtype);
    }
    let mut nodes = a.nodes;
    feed_input(g, &mut nodes, input.id, x);
    Ok((nodes, geo))
}

/// What the task's pre-processing makes of `pictures` for `model`: the model's image input
/// (batch `pictures.len()`), computed by the interpreter running the pre-processing alone, the
/// same graph ops a task graph runs. Calibration feeds it to a model that takes images.
pub fn preprocess(model: &Graph, cfg: &TaskConfig, pictures: &[Picture]) -> Result<Tensor, ZooError> {
    let mut g = model.clone();
    let input = model_input(&g, cfg)?;
    if let Dim::Known(b) = input.batch {
        if b != pictures.len() {
            return Err(ZooError::Config(format!("the model takes batches of {b} images, not {}", pictures.len())));
        }
    }
    let (pre, _) = prepend(&mut g, cfg)?;
    g.nodes = pre;
    g.outputs = vec![input.id];
    g.inputs = [PIXELS, EXTENT].iter().filter_map(|n| g.find_value(n)).collect();
    xforge_ir::infer::infer_graph(&mut g)
        .map_err(|e| ZooError::Config(format!("the pre-processing does not fit the model: {e}")))?;
    let fitted: Vec<Picture> = pictures.iter().map(|p| p.clone().fitted(cfg.max_image_size)).collect();
    let refs: Vec<&Picture> = fitted.iter().collect();
    let [ch, cw] = cfg.max_image_size;
    let b = CanvasBatch::pack(&refs, cfg.max_image_size);
    let feed = HashMap::from([
        (PIXELS.to_string(), Tensor::new(vec![b.n, ch, cw, 3], TensorData::U8(b.pixels))),
        (EXTENT.to_string(), Tensor::from_f32(vec![b.n, 2], b.extent)),
    ]);
    let mut out = xforge_ir::interp::run(&g, &feed)?;
    Ok(out.remove(0))
}

/// Puts pre- and post-processing around the model, makes `outputs` the graph's outputs and
/// types everything (errors name the node whose shapes do not fit).
pub fn assemble(g: &mut Graph, pre: Vec<Node>, post: Vec<Node>, outputs: Vec<ValueId>) -> Result<(), ZooError> {
    splice(g, pre, post);
    g.outputs = outputs;
    // the graph inputs the pipeline feeds come first, then any others the model has
    let first: Vec<ValueId> = [PIXELS, EXTENT].iter().filter_map(|n| g.find_value(n)).collect();
    g.inputs.retain(|i| !first.contains(i));
    g.inputs.splice(0..0, first);
    xforge_ir::infer::infer_graph(g)
        .map_err(|e| ZooError::Config(format!("the task graph does not fit the model: {e}")))?;
    xforge_ir::verify::verify(g).map_err(|e| ZooError::Config(format!("the task graph: {e}")))?;
    Ok(())
}

/// One batch's outputs, and the index of its first image in the call.
pub struct Chunk {
    pub first: usize,
    pub outputs: Vec<Tensor>,
}

/// A composed task graph on its device.
pub struct Pipeline {
    pub graph: Graph,
    pub config: TaskConfig,
    device: Device,
    /// The model's own batch size when it fixes one (images then go in chunks of it).
    fixed_batch: Option<usize>,
    /// GPU: one session per batch size used.
    sessions: HashMap<usize, Session>,
    /// Time spent in `run` since the last `take_stages`: packing and running (see `Stages`).
    stages: Stages,
}

/// Where a wrapper call's time went inside `Pipeline::run` (wall clock, accumulated until
/// `Pipeline::take_stages`): fitting and packing the canvas batch on the CPU, and running the
/// task graph (on the GPU: input copies, the replayed graph, output copies; or the interpreter).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stages {
    pub pack: std::time::Duration,
    pub device: std::time::Duration,
}

/// Images per interpreter call: bounds the memory of one call.
const INTERPRETER_CHUNK: usize = 8;
/// Images per GPU call (one compiled plan per size used).
const GPU_CHUNK: usize = 32;

impl Pipeline {
    pub fn new(graph: Graph, config: TaskConfig, device: Device) -> Pipeline {
        let fixed_batch = graph.inputs.first().and_then(|&i| match graph.ty(i).shape.as_ref()?.first()? {
            Dim::Known(b) => Some(*b),
            Dim::Sym(_) => None,
        });
        Pipeline { graph, config, device, fixed_batch, sessions: HashMap::new(), stages: Stages::default() }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// How many items go into one call: the model's fixed batch, or a bound per device.
    pub fn batch_step(&self) -> usize {
        self.fixed_batch.unwrap_or(match self.device {
            Device::Interpreter => INTERPRETER_CHUNK,
            Device::Gpu { .. } => GPU_CHUNK,
        })
    }

    /// The model's fixed batch size, if it has one (short chunks are then padded).
    pub fn fixed_batch(&self) -> Option<usize> {
        self.fixed_batch
    }

    /// Runs the pictures in chunks (each fitted to the canvas first); a chunk short of a fixed
    /// batch is filled with copies of its last image, whose results are dropped.
    pub fn run(&mut self, pictures: &[Picture]) -> Result<Vec<Chunk>, ZooError> {
        let (t0, device0) = (std::time::Instant::now(), self.stages.device);
        let step = self.batch_step().max(1);
        let [ch, cw] = self.config.max_image_size;
        let fitted: Vec<Picture> = pictures.iter().map(|p| p.clone().fitted(self.config.max_image_size)).collect();
        let mut chunks = vec![];
        for (c, part) in fitted.chunks(step).enumerate() {
            let mut refs: Vec<&Picture> = part.iter().collect();
            if let Some(b) = self.fixed_batch {
                while refs.len() < b {
                    refs.push(part.last().expect("chunks are never empty"));
                }
            }
            let b = CanvasBatch::pack(&refs, self.config.max_image_size);
            let pixels = Tensor::new(vec![b.n, ch, cw, 3], TensorData::U8(b.pixels));
            let extent = Tensor::from_f32(vec![b.n, 2], b.extent);
            let t1 = std::time::Instant::now();
            let outputs = self.run_feed(b.n, vec![(PIXELS.into(), pixels), (EXTENT.into(), extent)])?;
            self.stages.device += t1.elapsed();
            chunks.push(Chunk { first: c * step, outputs });
        }
        self.stages.pack += t0.elapsed().saturating_sub(self.stages.device - device0);
        Ok(chunks)
    }

    /// The time `run` spent packing and on the device since the last call (then zeroed).
    pub fn take_stages(&mut self) -> Stages {
        std::mem::take(&mut self.stages)
    }

    /// The GPU session compiled for batches of `n`, once a batch of `n` has run.
    pub fn session(&mut self, n: usize) -> Option<&mut Session> {
        self.sessions.get_mut(&n)
    }

    /// Runs one batch of `n` items given as (graph input name, value) pairs.
    pub fn run_feed(&mut self, n: usize, feed: Vec<(String, Tensor)>) -> Result<Vec<Tensor>, ZooError> {
        let mut feed: HashMap<String, Tensor> = feed.into_iter().collect();
        match &self.device {
            Device::Interpreter => Ok(xforge_ir::interp::run(&self.graph, &feed)?),
            Device::Gpu { index, precision } => {
                let (index, precision) = (*index, *precision);
                if !self.sessions.contains_key(&n) {
                    let s = self.compile(n, index, precision)?;
                    self.sessions.insert(n, s);
                }
                let bytes: Vec<Vec<u8>> = self
                    .graph
                    .inputs
                    .iter()
                    .map(|&i| {
                        let name = self.graph.name_of(i);
                        feed.remove(name)
                            .map(|t| t.data().to_le_bytes())
                            .ok_or_else(|| ZooError::Runtime(format!("no value for the graph input '{name}'")))
                    })
                    .collect::<Result<_, _>>()?;
                let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
                let session = self.sessions.get_mut(&n).expect("inserted above");
                let outs = session.run_shaped(&refs)?;
                outs.into_iter()
                    .zip(&self.graph.outputs)
                    .map(|((bytes, shape), &o)| {
                        let dt = self.graph.ty(o).dtype;
                        let data = TensorData::from_le_bytes(dt, &bytes).ok_or_else(|| {
                            ZooError::Runtime(format!("output '{}': {} bytes", self.graph.name_of(o), bytes.len()))
                        })?;
                        Ok(Tensor::new(shape.iter().map(|&d| d as usize).collect(), data))
                    })
                    .collect()
            }
        }
    }

    /// Compiles the task graph for `n` images on GPU `index`.
    fn compile(&self, n: usize, index: usize, precision: Precision) -> Result<Session, ZooError> {
        let target = xforge_runtime::device_target(index)?;
        let graph = bind_batch(&self.graph, n)?;
        tracing::info!(target = %target, batch = n, "compiling the task graph");
        let artifact =
            Compiler::new(&target).precision(precision).compile_graph(&graph, format!("zoo:{}", self.graph.name))?;
        Ok(Session::from_artifact(artifact, index)?)
    }
}

/// The task graph with its batch dimension set to `n` and every node output typed again.
pub fn bind_batch(g: &Graph, n: usize) -> Result<Graph, ZooError> {
    let mut g = g.clone();
    let Some(&pixels) = g.inputs.first() else { return Ok(g) };
    let batch = match g.ty(pixels).shape.as_ref().and_then(|s| s.first()) {
        Some(Dim::Sym(s)) => s.clone(),
        _ => return Ok(g),
    };
    for &i in &g.inputs.clone() {
        if let Some(shape) = &mut g.values[i.index()].ty.shape {
            for d in shape.iter_mut() {
                if *d == Dim::Sym(batch.clone()) {
                    *d = Dim::Known(n);
                }
            }
        }
    }
    let outs: Vec<ValueId> = g.nodes.iter().flat_map(|n| n.output_ids()).collect();
    for o in outs {
        g.values[o.index()].ty = ValueType::unranked(g.ty(o).dtype);
        g.undeclared.insert(o);
    }
    xforge_ir::infer::infer_graph(&mut g).map_err(|e| ZooError::Config(format!("batch {n}: {e}")))?;
    Ok(g)
}
