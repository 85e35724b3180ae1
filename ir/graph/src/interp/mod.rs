//! The reference interpreter: the semantic oracle for every later stage (fusion soundness, GPU
//! numerics). Each op is implemented directly from its ONNX definition, in f64 for floats (f32
//! accumulation for matrix products, like vendor BLAS) and rounded once to the output dtype.
mod attention;
mod attrs;
mod bounded;
pub mod broadcast;
mod control;
mod conv;
mod detection;
mod elementwise;
mod linalg;
mod loss;
pub(crate) mod movement;
mod norm;
mod pool;
mod quant;
mod recurrent;
mod reduce;
mod resize;
mod selective_scan;
mod sequence;

use crate::dtype::DType;
use crate::graph::{Graph, Node};
use crate::op::Op;
use crate::tensor::Tensor;
pub use attrs::NodeAttrs;
use attrs::{opt, req, scalar};
pub use conv::{each_index, transposed_window, TransposedWindow, Window};
pub use detection::MASK_WORD_BITS;
pub use linalg::{einsum_plan, EinsumPlan};
pub use resize::{resize_plan, ResizePlan, Taps};
use std::collections::HashMap;

pub type OpResult<T> = Result<T, String>;

/// Largest tensor (in elements) the interpreter will create: 2^30, 4 GiB of f32.
pub const MAX_ELEMENTS: usize = 1 << 30;

/// Marks the error of an output over the size limit (inference folds no such constant).
pub const TOO_LARGE: &str = "exceeds the interpreter's limit";

thread_local! {
    static ELEMENT_LIMIT: std::cell::Cell<usize> = const { std::cell::Cell::new(MAX_ELEMENTS) };
}

/// Runs `f` with a lower element limit on this thread (constant folding uses a small one).
pub fn with_element_limit<R>(limit: usize, f: impl FnOnce() -> R) -> R {
    let old = ELEMENT_LIMIT.with(|l| l.replace(limit));
    let r = f();
    ELEMENT_LIMIT.with(|l| l.set(old));
    r
}

/// Checks, before allocating, that a tensor of `shape` stays within the element limit.
pub(crate) fn check_size(shape: &[usize]) -> OpResult<()> {
    let limit = ELEMENT_LIMIT.with(|l| l.get());
    match shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) if n <= limit => Ok(()),
        _ => Err(format!("an output of shape {shape:?} {TOO_LARGE} of {limit} elements")),
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InterpError {
    #[error("graph input '{0}' was not given")]
    MissingInput(String),
    #[error("'{0}' is not an input of the graph")]
    UnknownInput(String),
    #[error("graph input '{name}': expected {expected}, got {got}")]
    InputMismatch { name: String, expected: String, got: String },
    #[error("value '{0}' from an enclosing graph is not defined")]
    MissingCapture(String),
    #[error("node '{node}' ({op}): {msg}")]
    Node { node: String, op: Op, msg: String },
}

/// Where subgraphs look up the values of enclosing graphs, innermost first.
pub struct Scope<'a> {
    frame: Option<(&'a Graph, &'a [Option<Tensor>])>,
    parent: Option<&'a Scope<'a>>,
}

impl<'a> Scope<'a> {
    pub fn root() -> Scope<'static> {
        Scope { frame: None, parent: None }
    }

    fn lookup(&self, name: &str) -> Option<Tensor> {
        if let Some((g, env)) = self.frame {
            if let Some(t) = g.find_value(name).and_then(|id| env[id.index()].clone()) {
                return Some(t);
            }
        }
        self.parent?.lookup(name)
    }
}

/// Progress callback: (nodes done, nodes total).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// Runs `graph` on named inputs and returns its outputs in order.
pub fn run(graph: &Graph, inputs: &HashMap<String, Tensor>) -> Result<Vec<Tensor>, InterpError> {
    run_with_progress(graph, inputs, None)
}

pub fn run_with_progress(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    progress: Option<Progress>,
) -> Result<Vec<Tensor>, InterpError> {
    for name in inputs.keys() {
        if !graph.inputs.iter().any(|&i| graph.name_of(i) == name) {
            return Err(InterpError::UnknownInput(name.clone()));
        }
    }
    let mut ordered = Vec::with_capacity(graph.inputs.len());
    for &id in &graph.inputs {
        let v = graph.value(id);
        let t = inputs.get(&v.name).ok_or_else(|| InterpError::MissingInput(v.name.clone()))?;
        if t.dtype() != v.ty.dtype || !v.ty.admits(t.shape()) {
            return Err(InterpError::InputMismatch {
                name: v.name.clone(),
                expected: v.ty.to_string(),
                got: format!("{}{:?}", t.dtype(), t.shape()),
            });
        }
        ordered.push(t.clone());
    }
    execute(graph, ordered, &Scope::root(), progress)
}

/// Runs a graph with inputs in `graph.inputs` order; captures resolve through `scope`.
pub(crate) fn execute(
    graph: &Graph,
    inputs: Vec<Tensor>,
    scope: &Scope,
    mut progress: Option<Progress>,
) -> Result<Vec<Tensor>, InterpError> {
    let mut env: Vec<Option<Tensor>> = vec![None; graph.values.len()];
    for (&id, t) in graph.inputs.iter().zip(inputs) {
        env[id.index()] = Some(t);
    }
    for (&id, t) in &graph.weights {
        env[id.index()] = Some(t.clone());
    }
    for &id in &graph.captures {
        let name = graph.name_of(id);
        env[id.index()] = Some(scope.lookup(name).ok_or_else(|| InterpError::MissingCapture(name.to_string()))?);
    }
    // free each intermediate after its last use
    let mut last_use: Vec<usize> = vec![usize::MAX; graph.values.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        for v in graph.node_reads(n) {
            last_use[v.index()] = i;
        }
    }
    for o in &graph.outputs {
        last_use[o.index()] = usize::MAX;
    }
    let total = graph.nodes.len();
    for (i, node) in graph.nodes.iter().enumerate() {
        let err = |msg: String| InterpError::Node { node: node.name.clone(), op: node.op, msg };
        let ins: Vec<Option<Tensor>> = node
            .inputs
            .iter()
            .map(|v| match v {
                None => Ok(None),
                Some(id) => env[id.index()]
                    .clone()
                    .map(Some)
                    .ok_or_else(|| err(format!("input '{}' is used before it is defined", graph.name_of(*id)))),
            })
            .collect::<Result<_, _>>()?;
        let frame = Scope { frame: Some((graph, &env)), parent: Some(scope) };
        let outs = eval(node, &ins, graph.opset, &frame).map_err(err)?;
        for (k, o) in node.outputs.iter().enumerate() {
            let Some(id) = o else { continue };
            let t = outs.get(k).cloned().ok_or_else(|| err(format!("op produced no output {k}")))?;
            let want = graph.ty(*id).dtype;
            if t.dtype() != want {
                return Err(err(format!("output {k} is {} but the graph declares {want}", t.dtype())));
            }
            env[id.index()] = Some(t);
        }
        for v in graph.node_reads(node) {
            if last_use[v.index()] == i && !graph.weights.contains_key(&v) {
                env[v.index()] = None;
            }
        }
        if let Some(p) = progress.as_mut() {
            p(i + 1, total);
        }
    }
    graph
        .outputs
        .iter()
        .map(|&id| {
            env[id.index()].clone().ok_or_else(|| InterpError::Node {
                node: "<graph output>".into(),
                op: Op::Identity,
                msg: format!("output '{}' was never computed", graph.name_of(id)),
            })
        })
        .collect()
}

fn all(ins: &[Option<Tensor>]) -> Vec<&Tensor> {
    ins.iter().flatten().collect()
}

/// Axes from an attribute (before `from`) or from input `i`.
fn axes_input(a: &NodeAttrs, opset: i64, from: i64, ins: &[Option<Tensor>], i: usize) -> OpResult<Option<Vec<i64>>> {
    if opset >= from {
        Ok(opt(ins, i).map(|t| t.to_i64()))
    } else if opt(ins, i).is_some() {
        Err(format!("axes as an input needs opset {from} (the model has opset {opset}); use the 'axes' attribute"))
    } else {
        a.ints_opt("axes")
    }
}

fn dtype_attr(a: &NodeAttrs, name: &str) -> OpResult<DType> {
    let code = a.int_opt(name)?.ok_or_else(|| format!("missing attribute '{name}'"))?;
    DType::from_onnx_code(code as i32).ok_or_else(|| {
        format!("attribute '{name}': dtype {} is not supported", crate::dtype::onnx_type_name(code as i32))
    })
}

/// Evaluates one node.
fn eval(node: &Node, ins: &[Option<Tensor>], opset: i64, scope: &Scope) -> OpResult<Vec<Tensor>> {
    use Op::*;
    let a = NodeAttrs(node);
    let one = |t: Tensor| Ok(vec![t]);
    let n_out = node.outputs.len();
    match node.op {
        Abs | Neg | Exp | Log | Sqrt | Reciprocal | Sin | Cos | Tan | Asin | Acos | Atan | Sinh | Cosh | Asinh
        | Acosh | Atanh | Tanh | Sigmoid | Relu | Erf | Floor | Ceil | Round | Sign | Softplus | Softsign | Elu
        | Selu | Celu | LeakyRelu | HardSigmoid | HardSwish | ThresholdedRelu | Shrink | Mish | Gelu | Swish
        | IsNaN | IsInf | Not | BitwiseNot => one(elementwise::unary(node.op, &a, req(ins, 0)?)?),
        Identity => one(req(ins, 0)?.clone()),
        Dropout => {
            let x = req(ins, 0)?;
            let training = opt(ins, 2).map(|t| scalar(t, "training_mode")).transpose()?.is_some_and(|t| t != 0.0);
            let ratio = opt(ins, 1).map(|t| scalar(t, "ratio")).transpose()?.unwrap_or(0.5);
            if training && ratio > 0.0 {
                return Err("training_mode=true with a non-zero ratio is random; not supported".into());
            }
            Ok(vec![x.clone(), Tensor::from_bool(x.shape().to_vec(), vec![true; x.len()])])
        }
        Cast => one(elementwise::cast(req(ins, 0)?, dtype_attr(&a, "to")?, a.int("saturate", 1)? != 0)),
        CastLike => one(elementwise::cast(req(ins, 0)?, req(ins, 1)?.dtype(), a.int("saturate", 1)? != 0)),
        Clip => one(elementwise::clip(&a, opset, ins)?),
        Add | Sub | Mul | Div | Pow | Mod | Equal | Less | Greater | LessOrEqual | GreaterOrEqual | And | Or | Xor
        | BitShift | BitwiseAnd | BitwiseOr | BitwiseXor | PRelu => {
            one(elementwise::binary(node.op, &a, req(ins, 0)?, req(ins, 1)?)?)
        }
        Min | Max | Sum | Mean => one(elementwise::variadic(node.op, &all(ins))?),
        Where => one(elementwise::where_(req(ins, 0)?, req(ins, 1)?, req(ins, 2)?)?),
        ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2 | ReduceLogSum
        | ReduceLogSumExp | ReduceSumSquare => one(reduce::reduce(node.op, &a, opset, ins)?),
        ArgMax | ArgMin => one(reduce::arg_reduce(node.op, &a, req(ins, 0)?)?),
        Softmax | LogSoftmax | Hardmax => one(reduce::softmax(node.op, &a, opset, req(ins, 0)?)?),
        CumSum | CumProd => one(reduce::cumulative(node.op, &a, req(ins, 0)?, req(ins, 1)?)?),
        TopK => reduce::topk(&a, opset, ins),
        BatchNormalization => norm::batch_norm(&a, ins),
        LayerNormalization | RMSNormalization => norm::layer_norm(node.op, &a, ins),
        InstanceNormalization | GroupNormalization => one(norm::instance_group_norm(node.op, &a, opset, ins)?),
        LpNormalization => one(norm::lp_norm(&a, req(ins, 0)?)?),
        MeanVarianceNormalization => one(norm::mean_variance(&a, req(ins, 0)?)?),
        LRN => one(norm::lrn(&a, req(ins, 0)?)?),
        MaxPool | AveragePool | GlobalAveragePool | GlobalMaxPool | LpPool => pool::pool(node.op, &a, ins),
        MatMul => one(linalg::matmul(req(ins, 0)?, req(ins, 1)?)?),
        Gemm => one(linalg::gemm(&a, ins)?),
        Einsum => one(linalg::einsum(&a, ins)?),
        QuantizeLinear => one(quant::quantize(&a, ins)?),
        DequantizeLinear => one(quant::dequantize(&a, ins)?),
        DynamicQuantizeLinear => Ok(quant::dynamic_quantize(req(ins, 0)?)?),
        MatMulInteger => one(quant::matmul_integer(ins)?),
        ConvInteger => one(quant::conv_integer(&a, ins)?),
        QLinearMatMul => one(quant::qlinear_matmul(ins)?),
        QLinearConv => one(quant::qlinear_conv(&a, ins)?),
        Conv => one(conv::conv(&a, ins)?),
        ConvNhwc => {
            let x = movement::transpose(req(ins, 0)?, Some(vec![0, 3, 1, 2]))?;
            let mut nchw = ins.to_vec();
            nchw[0] = Some(x);
            one(movement::transpose(&conv::conv(&a, &nchw)?, Some(vec![0, 2, 3, 1]))?)
        }
        MaxPoolNhwc => {
            let x = movement::transpose(req(ins, 0)?, Some(vec![0, 3, 1, 2]))?;
            let y = pool::pool(MaxPool, &a, &[Some(x)])?.into_iter().next().ok_or("MaxPool gave no output")?;
            one(movement::transpose(&y, Some(vec![0, 2, 3, 1]))?)
        }
        ConvTranspose => one(conv::conv_transpose(&a, ins)?),
        Attention => attention::attention(&a, ins, n_out),
        SelectiveScan => selective_scan::selective_scan(&a, ins, n_out),
        RotaryEmbedding => one(sequence::rotary_embedding(&a, ins)?),
        TensorScatter => one(sequence::tensor_scatter(&a, ins)?),
        SwiGLU => one(sequence::swiglu(&a, ins)?),
        CausalConvWithState => sequence::causal_conv_with_state(&a, ins),
        LinearAttention => sequence::linear_attention(&a, ins, n_out),
        RNN | GRU | LSTM => recurrent::recurrent(node.op, &a, ins, n_out),
        Shape => one(movement::shape_of(&a, req(ins, 0)?)?),
        Size => one(Tensor::scalar_i64(req(ins, 0)?.len() as i64)),
        Reshape => {
            let x = req(ins, 0)?;
            let spec = if opset < 5 { a.ints_opt("shape")?.unwrap_or_default() } else { req(ins, 1)?.to_i64() };
            one(x.reshape(movement::reshape_target(x.shape(), &spec, a.int("allowzero", 0)? != 0)?))
        }
        Flatten => one(movement::flatten(&a, req(ins, 0)?)?),
        Expand => one(movement::expand(req(ins, 0)?, req(ins, 1)?)?),
        Gather => one(movement::gather(req(ins, 0)?, req(ins, 1)?, a.int("axis", 0)?)?),
        GatherElements => one(movement::gather_elements(&a, req(ins, 0)?, req(ins, 1)?)?),
        GatherND => one(movement::gather_nd(&a, req(ins, 0)?, req(ins, 1)?)?),
        Slice => {
            let x = req(ins, 0)?;
            if opset < 10 {
                let s = a.ints_opt("starts")?.ok_or("missing attribute 'starts'")?;
                let e = a.ints_opt("ends")?.ok_or("missing attribute 'ends'")?;
                one(movement::slice(x, &s, &e, a.ints_opt("axes")?, None)?)
            } else {
                let s = req(ins, 1)?.to_i64();
                let e = req(ins, 2)?.to_i64();
                one(movement::slice(x, &s, &e, opt(ins, 3).map(|t| t.to_i64()), opt(ins, 4).map(|t| t.to_i64()))?)
            }
        }
        Concat => one(movement::concat(&all(ins), a.int("axis", 0)?)?),
        Split => movement::split(&a, opset, ins, n_out),
        Squeeze => one(movement::squeeze(req(ins, 0)?, axes_input(&a, opset, 13, ins, 1)?)?),
        Unsqueeze => {
            let axes = axes_input(&a, opset, 13, ins, 1)?.ok_or("missing axes")?;
            one(movement::unsqueeze(req(ins, 0)?, &axes)?)
        }
        Transpose => one(movement::transpose(req(ins, 0)?, a.ints_opt("perm")?)?),
        Tile => one(movement::tile(req(ins, 0)?, req(ins, 1)?)?),
        Pad => one(movement::pad(&a, opset, ins)?),
        DepthToSpace => one(movement::depth_space(true, &a, req(ins, 0)?)?),
        SpaceToDepth => one(movement::depth_space(false, &a, req(ins, 0)?)?),
        Trilu => one(movement::trilu(&a, req(ins, 0)?, opt(ins, 1))?),
        Resize => one(resize::resize(&a, opset, ins, false)?),
        Upsample => one(resize::resize(&a, opset, ins, true)?),
        ReverseSequence => one(movement::reverse_sequence(&a, req(ins, 0)?, req(ins, 1)?)?),
        CenterCropPad => one(movement::center_crop_pad(&a, req(ins, 0)?, req(ins, 1)?)?),
        ScatterElements | Scatter => one(movement::scatter_elements(&a, req(ins, 0)?, req(ins, 1)?, req(ins, 2)?)?),
        ScatterND => one(movement::scatter_nd(&a, req(ins, 0)?, req(ins, 1)?, req(ins, 2)?)?),
        Range => one(movement::range(req(ins, 0)?, req(ins, 1)?, req(ins, 2)?)?),
        ConstantOfShape => one(movement::constant_of_shape(&a, req(ins, 0)?)?),
        Constant => one(constant(&a)?),
        EyeLike => one(movement::eye_like(&a, req(ins, 0)?)?),
        OneHot => one(movement::one_hot(&a, req(ins, 0)?, req(ins, 1)?, req(ins, 2)?)?),
        NonZero => one(movement::non_zero(req(ins, 0)?)),
        Compress => one(movement::compress(&a, req(ins, 0)?, req(ins, 1)?)?),
        NonMaxSuppression => one(detection::nms(&a, ins)?),
        Bounded => bounded::bounded(node, ins, opset, scope),
        Prefix => one(bounded::prefix(&a, ins)?),
        TopKBounded => bounded::topk(&a, ins),
        NmsOverlapMask => one(detection::overlap_mask(&a, ins)?),
        ConcatBounded => bounded::concat(&a, ins),
        ReduceBounded => one(bounded::reduce(&a, opset, ins)?),
        Choose => one(if req(ins, 0)?.to_f64().first().copied().unwrap_or(0.0) != 0.0 {
            req(ins, 1)?.clone()
        } else {
            req(ins, 2)?.clone()
        }),
        RoiAlign => one(detection::roi_align(&a, opset, ins)?),
        SoftmaxCrossEntropyLoss | NegativeLogLikelihoodLoss => loss::loss(node.op, &a, ins),
        If => control::if_(&a, ins, scope),
        Loop => control::loop_(&a, ins, n_out, scope),
        Scan if opset < 9 => control::scan_batched(&a, ins, n_out, scope),
        Scan => control::scan(&a, ins, n_out, scope),
    }
}

/// The value of a `Constant` node from whichever attribute holds it.
fn constant(a: &NodeAttrs) -> OpResult<Tensor> {
    if let Some(t) = a.tensor_opt("value")? {
        return Ok(t.clone());
    }
    if let Some(v) = a.float_opt("value_float")? {
        return Ok(Tensor::scalar_f32(v));
    }
    if let Some(v) = a.floats_opt("value_floats")? {
        return Ok(Tensor::from_f32(vec![v.len()], v));
    }
    if let Some(v) = a.int_opt("value_int")? {
        return Ok(Tensor::scalar_i64(v));
    }
    if let Some(v) = a.ints_opt("value_ints")? {
        return Ok(Tensor::from_i64(vec![v.len()], v));
    }
    Err("Constant has no supported value attribute".into())
}

/// Output spatial dims of a convolution or pooling window over `spatial` input dims.
pub fn window_out(node: &Node, spatial: &[usize], kernel: Vec<usize>, ceil: bool) -> Result<Vec<usize>, String> {
    conv::Window::new(&NodeAttrs(node), spatial, kernel, ceil).map(|w| w.out)
}

/// Clamped (begin, end, count) of a `Slice` of an axis of length `d`.
pub fn slice_bounds_pub(d: i64, start: i64, end: i64, step: i64) -> (i64, i64, usize) {
    movement::slice_bounds(d, start, end, step)
}

/// Number of elements `Slice` takes from an axis of length `d`.
pub fn slice_len(d: i64, start: i64, end: i64, step: i64) -> usize {
    movement::slice_bounds(d, start, end, step).2
}

/// Evaluates one node on concrete inputs (used by constant folding and tests).
pub fn eval_node(node: &Node, ins: &[Option<Tensor>], opset: i64) -> Result<Vec<Tensor>, InterpError> {
    eval(node, ins, opset, &Scope::root()).map_err(|msg| InterpError::Node {
        node: node.name.clone(),
        op: node.op,
        msg,
    })
}
