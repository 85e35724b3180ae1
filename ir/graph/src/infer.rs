//! Dtype and shape inference with symbolic dims. Small constant subgraphs (the
//! `Shape → Gather → Concat → Reshape` chains of exporters) are evaluated by the interpreter, and
//! 1-D shape vectors keep their symbolic entries so `batch` flows through Reshape.
use crate::attr::Attr;
use crate::dtype::DType;
use crate::graph::{Graph, Node};
use crate::interp::{eval_node, with_element_limit, TOO_LARGE};
use crate::op::Op;
use crate::shape::{Dim, ValueType};
use crate::tensor::{numel, Tensor};

/// Constants up to this many elements are folded during inference.
pub const FOLD_LIMIT: usize = 1 << 16;
/// The highest rank a shape input's declared length may give (a length is a number in the file,
/// not bytes: 2^40 would be a rank nothing can hold).
pub const MAX_RANK: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("node '{node}' ({op}): {msg}")]
pub struct InferError {
    pub node: String,
    pub op: Op,
    pub msg: String,
}

/// What inference knows about a value.
#[derive(Clone, Debug)]
pub struct Fact {
    pub ty: ValueType,
    /// The value itself when it is a (small) constant.
    pub konst: Option<Tensor>,
    /// For 1-D integer values: each element as a dim, possibly symbolic.
    pub dims: Option<Vec<Dim>>,
}

impl Fact {
    fn of(ty: ValueType) -> Fact {
        Fact { ty, konst: None, dims: None }
    }

    /// The fact of a known tensor (a 1-D i64 one is also a shape: its dims).
    pub fn constant(t: Tensor) -> Fact {
        // negative entries (Reshape's -1) stay visible as symbols named by their value
        let dims = (t.rank() <= 1 && t.dtype() == DType::I64).then(|| {
            t.to_i64().iter().map(|&v| if v >= 0 { Dim::Known(v as usize) } else { Dim::Sym(v.to_string()) }).collect()
        });
        Fact { ty: ValueType::known(t.dtype(), t.shape()), konst: Some(t), dims }
    }
}

/// Fresh names for dims that inference cannot know.
#[derive(Debug, Default)]
pub struct Fresh(usize);

impl Fresh {
    fn dim(&mut self) -> Dim {
        self.0 += 1;
        Dim::Sym(format!("?{}", self.0))
    }
}

/// Infers every node output type of `g` (and its subgraphs), merging with declared types;
/// `outer` gives the facts of captured values. Returns the facts of all values.
pub fn infer_graph(g: &mut Graph) -> Result<Vec<Fact>, InferError> {
    infer_with(g, &|_| None, &mut Fresh::default())
}

pub fn infer_with(
    g: &mut Graph,
    outer: &dyn Fn(&str) -> Option<Fact>,
    fresh: &mut Fresh,
) -> Result<Vec<Fact>, InferError> {
    let mut facts: Vec<Option<Fact>> = vec![None; g.values.len()];
    for &i in &g.inputs {
        facts[i.index()] = Some(Fact::of(g.ty(i).clone()));
    }
    for (&i, t) in &g.weights {
        facts[i.index()] = Some(if t.len() <= FOLD_LIMIT {
            Fact::constant(t.clone())
        } else {
            Fact::of(ValueType::known(t.dtype(), t.shape()))
        });
    }
    for &i in &g.captures {
        let f = outer(g.name_of(i)).unwrap_or_else(|| Fact::of(g.ty(i).clone()));
        g.values[i.index()].ty = f.ty.clone();
        g.undeclared.remove(&i);
        facts[i.index()] = Some(f);
    }
    let opset = g.opset;
    for ni in 0..g.nodes.len() {
        let node = &g.nodes[ni];
        let err = |msg: String| InferError { node: node.name.clone(), op: node.op, msg };
        let ins: Vec<Option<Fact>> = node
            .inputs
            .iter()
            .map(|i| match i {
                None => Ok(None),
                Some(id) => facts[id.index()]
                    .clone()
                    .map(Some)
                    .ok_or_else(|| err(format!("input '{}' is used before it is defined", g.name_of(*id)))),
            })
            .collect::<Result<_, _>>()?;
        // subgraphs see this graph's facts
        let mut node = node.clone();
        let op = node.op;
        let n_state = node.inputs.len().saturating_sub(attr_i(&node, "num_scan_inputs", 0) as usize);
        for a in node.attrs.values_mut() {
            if let Attr::Graph(sub) = a {
                let mut s = (**sub).clone();
                // body inputs the model leaves open take their types from the node
                for (k, &id) in s.inputs.clone().iter().enumerate() {
                    if !s.undeclared.contains(&id) {
                        continue;
                    }
                    let from = |i: usize| ins.get(i).and_then(|f| f.as_ref()).map(|f| f.ty.clone());
                    let t = match (op, k) {
                        (Op::Loop, 0) => Some(ValueType::known(DType::I64, &[])),
                        (Op::Loop, 1) => Some(ValueType::known(DType::Bool, &[])),
                        (Op::Loop, k) => from(k),
                        (Op::Scan, k) if k < n_state => from(k),
                        (Op::Scan, k) => from(k).map(|t| ValueType { dtype: t.dtype, shape: None }),
                        _ => None,
                    };
                    if let Some(t) = t {
                        s.values[id.index()].ty = t;
                        s.undeclared.remove(&id);
                    }
                }
                let lookup =
                    |name: &str| g.find_value(name).and_then(|id| facts[id.index()].clone()).or_else(|| outer(name));
                infer_with(&mut s, &lookup, fresh).map_err(|e| err(format!("in subgraph '{}': {e}", s.name)))?;
                *sub = std::sync::Arc::new(s);
            }
        }
        let out = infer_node(&node, &ins, opset, fresh).map_err(err)?;
        for (k, o) in node.outputs.iter().enumerate() {
            let Some(id) = o else { continue };
            let Some(f) = out.get(k).cloned() else {
                return Err(err(format!("op has no output {k}")));
            };
            let ty = if g.undeclared.remove(id) {
                f.ty.clone()
            } else {
                merge(g.ty(*id), &f.ty).map_err(|m| err(format!("output '{}': {m}", g.name_of(*id))))?
            };
            g.values[id.index()].ty = ty.clone();
            facts[id.index()] = Some(Fact { ty, ..f });
        }
        g.nodes[ni] = node;
    }
    for &o in &g.outputs {
        if facts[o.index()].is_none() {
            return Err(InferError {
                node: "<graph outputs>".into(),
                op: Op::Identity,
                msg: format!("output '{}' is never defined", g.name_of(o)),
            });
        }
    }
    Ok(facts.into_iter().map(|f| f.unwrap_or_else(|| Fact::of(ValueType::unranked(DType::F32)))).collect())
}

/// The more specific of a declared and an inferred type; errors where they disagree.
pub fn merge(declared: &ValueType, inferred: &ValueType) -> Result<ValueType, String> {
    if declared.dtype != inferred.dtype {
        return Err(format!("declared {} but the op produces {}", declared.dtype, inferred.dtype));
    }
    let shape = match (&declared.shape, &inferred.shape) {
        (None, s) | (s, None) => s.clone(),
        (Some(d), Some(i)) => {
            if d.len() != i.len() {
                return Err(format!("declared rank {} but the op produces rank {}", d.len(), i.len()));
            }
            Some(
                d.iter()
                    .zip(i)
                    .map(|(a, b)| match (a, b) {
                        (Dim::Known(x), Dim::Known(y)) if x != y => Err(format!(
                            "declared shape {} but the op produces {}",
                            crate::shape::shape_str(&declared.shape),
                            crate::shape::shape_str(&inferred.shape)
                        )),
                        (Dim::Known(_), _) => Ok(a.clone()),
                        (_, Dim::Known(_)) => Ok(b.clone()),
                        (Dim::Sym(s), _) if !s.starts_with('?') => Ok(a.clone()),
                        _ => Ok(b.clone()),
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
    };
    Ok(ValueType { dtype: declared.dtype, shape })
}

fn known(d: usize) -> Dim {
    Dim::Known(d)
}

fn ty(dtype: DType, shape: Option<Vec<Dim>>) -> Fact {
    Fact::of(ValueType { dtype, shape })
}

/// The quantization ops: Q/DQ keep their input's shape; the integer and QLinear contractions
/// have MatMul's or Conv's shape (of their data operands) and their own result type.
fn quantized(node: &Node, ins: &[Option<Fact>], opset: i64, fresh: &mut Fresh) -> Result<Option<Vec<Fact>>, String> {
    use Op::*;
    let input = |k: usize| ins.get(k).and_then(|f| f.as_ref());
    let dtype = |k: usize| input(k).map(|f| f.ty.dtype);
    let shape = |k: usize| input(k).and_then(|f| f.ty.shape.clone());
    let code = |name: &str| match attr_i(node, name, 0) {
        0 => Ok(None),
        c => DType::from_onnx_code(c as i32).map(Some).ok_or_else(|| format!("{name} {c} is not a supported type")),
    };
    let (proxy, data, out) = match node.op {
        QuantizeLinear => {
            let out = dtype(2).or(code("output_dtype")?).unwrap_or(DType::U8);
            return Ok(Some(vec![ty(out, shape(0))]));
        }
        DequantizeLinear => {
            let out = code("output_dtype")?.or(dtype(1)).unwrap_or(DType::F32);
            return Ok(Some(vec![ty(out, shape(0))]));
        }
        DynamicQuantizeLinear => {
            return Ok(Some(vec![ty(DType::U8, shape(0)), ty(DType::F32, Some(vec![])), ty(DType::U8, Some(vec![]))]))
        }
        MatMulInteger => (MatMul, [0, 1], DType::I32),
        ConvInteger => (Conv, [0, 1], DType::I32),
        QLinearMatMul => (MatMul, [0, 3], dtype(7).unwrap_or(DType::U8)),
        QLinearConv => (Conv, [0, 3], dtype(7).unwrap_or(DType::U8)),
        _ => return Ok(None),
    };
    // the data operands as f32 without values: only their shapes matter
    let operands: Vec<Option<Fact>> =
        data.iter().map(|&k| input(k).map(|f| ty(DType::F32, f.ty.shape.clone()))).collect();
    let mut as_float = node.clone();
    as_float.op = proxy;
    as_float.inputs = data.iter().map(|&k| node.inputs.get(k).copied().flatten()).collect();
    as_float.outputs.truncate(1);
    // the float op's operand checks (ranks, channels, groups) hold for its quantized forms too
    check_operands(&as_float, &operands, opset)?;
    let facts = rule(&as_float, &operands, opset, fresh)?;
    Ok(Some(vec![ty(out, facts.and_then(|f| f.into_iter().next()).and_then(|f| f.ty.shape))]))
}

/// Inputs whose values (not only shapes) decide the output shape.
fn shape_inputs(op: Op) -> &'static [usize] {
    use Op::*;
    match op {
        Reshape | Expand | Tile | OneHot | Split | Squeeze | Unsqueeze | TopK | CenterCropPad | Upsample => &[1],
        ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2 | ReduceLogSum
        | ReduceLogSumExp | ReduceSumSquare => &[1],
        Slice => &[1, 2, 3, 4],
        Pad => &[1, 3],
        Resize => &[1, 2, 3],
        ConstantOfShape => &[0],
        Range => &[0, 1, 2],
        _ => &[],
    }
}

fn data_dependent(op: Op) -> bool {
    matches!(op, Op::NonZero | Op::NonMaxSuppression | Op::Compress | Op::If | Op::Loop | Op::Scan)
}

pub fn infer_node(node: &Node, ins: &[Option<Fact>], opset: i64, fresh: &mut Fresh) -> Result<Vec<Fact>, String> {
    check_attr_kinds(node)?;
    check_operands(node, ins, opset)?;
    // 1. all inputs constant: evaluate
    let present: Vec<&Fact> = ins.iter().flatten().collect();
    if !data_dependent(node.op) && present.iter().all(|f| f.konst.is_some()) && node.op != Op::Dropout {
        let vals: Vec<Option<Tensor>> = ins.iter().map(|f| f.as_ref().and_then(|f| f.konst.clone())).collect();
        match with_element_limit(FOLD_LIMIT, || eval_node(node, &vals, opset)) {
            Ok(outs) => return Ok(outs.into_iter().map(Fact::constant).collect()),
            // too large to fold: the rules below give its type
            Err(crate::interp::InterpError::Node { msg, .. }) if msg.contains(TOO_LARGE) => {}
            Err(crate::interp::InterpError::Node { msg, .. }) => return Err(msg),
            Err(e) => return Err(e.to_string()),
        }
    }
    // 2. a rule
    if let Some(r) = quantized(node, ins, opset, fresh)? {
        return Ok(r);
    }
    if let Some(r) = rule(node, ins, opset, fresh)? {
        return Ok(r);
    }
    // 3. static shapes and constant shape-deciding inputs: probe with zeros
    let static_ok = present.iter().all(|f| f.ty.static_shape().is_some());
    let shape_known =
        shape_inputs(node.op).iter().all(|&i| ins.get(i).and_then(|f| f.as_ref()).is_none_or(|f| f.konst.is_some()));
    let small = present.iter().all(|f| f.ty.static_shape().is_some_and(|s| numel(&s) <= FOLD_LIMIT));
    if !data_dependent(node.op) && static_ok && shape_known && small {
        let vals: Vec<Option<Tensor>> = ins
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| f.konst.clone().unwrap_or_else(|| Tensor::zeros(f.ty.dtype, f.ty.static_shape().unwrap())))
            })
            .collect();
        if let Ok(outs) = with_element_limit(FOLD_LIMIT, || eval_node(node, &vals, opset)) {
            return Ok(outs.into_iter().map(|t| Fact::of(ValueType::known(t.dtype(), t.shape()))).collect());
        }
    }
    // 4. dtypes only
    let dts = out_dtypes(node, ins)?;
    Ok(dts.into_iter().map(|d| ty(d, None)).collect())
}

/// What the operands' ranks, sizes and constant values must satisfy before any rule reads them
/// (a rule indexes shapes: a rank-1 Conv weight once panicked there).
fn check_operands(n: &Node, ins: &[Option<Fact>], opset: i64) -> Result<(), String> {
    use Op::*;
    let konst = |ins: &[Option<Fact>], k: usize| ins.get(k).and_then(|f| f.as_ref()).and_then(|f| f.konst.clone());
    let rank = |k: usize| ins.get(k).and_then(|f| f.as_ref()).and_then(|f| f.ty.shape.as_ref().map(|s| s.len()));
    let dim = |k: usize, d: usize| {
        ins.get(k).and_then(|f| f.as_ref()).and_then(|f| f.ty.shape.as_ref()).and_then(|s| s.get(d)?.known())
    };
    crate::rank_rules::check(n, ins, opset)?;
    // the contractions take numbers (onnxruntime refuses a bool MatMul)
    if matches!(n.op, MatMul | Gemm | Conv | ConvTranspose | ConvNhwc | Einsum)
        && ins.iter().flatten().any(|f| f.ty.dtype == DType::Bool)
    {
        return Err(format!("{} takes numeric tensors, not bool", n.op));
    }
    match n.op {
        Conv | ConvTranspose | ConvNhwc => {
            let group = attr_i(n, "group", 1);
            if group < 1 {
                return Err(format!("group must be at least 1, got {group}"));
            }
            if let (Some(xr), Some(wr)) = (rank(0), rank(1)) {
                if wr < 3 || wr != xr {
                    return Err(format!(
                        "the weight has rank {wr}; the input of rank {xr} needs a weight of rank {xr}"
                    ));
                }
            }
            let channels = if n.op == ConvNhwc { rank(0).and_then(|r| dim(0, r - 1)) } else { dim(0, 1) };
            if let (Some(c), Some(w0), Some(w1)) = (channels, dim(1, 0), dim(1, 1)) {
                let g = group as usize;
                let (ok, want) = if n.op == ConvTranspose {
                    (c == w0 && c % g == 0, w0)
                } else {
                    (c == w1 * g && w0 % g == 0, w1 * g)
                };
                if !ok {
                    return Err(format!(
                        "{c} input channels do not match the weight {w0}x{w1}… with group {group} ({want} expected)"
                    ));
                }
            }
        }
        // both branches give the node's outputs, as many as it has
        If => {
            let count = |k: &str| match n.attr(k) {
                Some(Attr::Graph(g)) => Some(g.outputs.len()),
                _ => None,
            };
            for k in ["then_branch", "else_branch"] {
                if let Some(c) = count(k).filter(|&c| c != n.outputs.len()) {
                    return Err(format!("{k} has {c} outputs, the node {}", n.outputs.len()));
                }
            }
        }
        // pads (constant) that remove more than an axis holds
        Pad => {
            if let (Some(p), Some(x)) =
                (konst(ins, 1), ins.first().and_then(|f| f.as_ref()).and_then(|f| f.ty.static_shape()))
            {
                let p = p.to_i64();
                if p.len() == 2 * x.len() && ins.get(3).is_none_or(|f| f.is_none()) {
                    if let Some(d) = (0..x.len()).find(|&d| x[d] as i64 + p[d] + p[x.len() + d] < 0) {
                        return Err(format!("pads {p:?} remove more than axis {d}'s {} elements", x[d]));
                    }
                }
            }
        }
        MaxPool | AveragePool | LpPool | MaxPoolNhwc => {
            for k in ["kernel_shape", "strides", "dilations"] {
                if let Some(v) = attr_ints(n, k) {
                    if v.iter().any(|&d| d < 1) {
                        return Err(format!("{k} {v:?} must be positive"));
                    }
                }
            }
        }
        Transpose => {
            if let (Some(p), Some(r)) = (attr_ints(n, "perm"), rank(0)) {
                let mut seen = vec![false; r];
                let ok = p.len() == r
                    && p.iter().all(|&k| {
                        let k = if k < 0 { k + r as i64 } else { k };
                        (0..r as i64).contains(&k) && !std::mem::replace(&mut seen[k as usize], true)
                    });
                if !ok {
                    return Err(format!("perm {p:?} is not a permutation of the {r} axes"));
                }
            }
        }
        Flatten => {
            let a = attr_i(n, "axis", 1);
            if let Some(r) = rank(0) {
                if a < -(r as i64) || a > r as i64 {
                    return Err(format!("axis {a} is out of range for rank {r}"));
                }
            }
        }
        Split => {
            let axis = attr_i(n, "axis", 0);
            let sizes = konst(ins, 1).map(|t| t.to_i64()).or_else(|| attr_ints(n, "split"));
            // num_outputs names the outputs' count (a part count is never a size to allocate)
            let outs = n.outputs.len();
            if let Some(k) = n.attr("num_outputs").map(|_| attr_i(n, "num_outputs", 0)) {
                if k != outs as i64 {
                    return Err(format!("num_outputs {k} must equal the node's {outs} outputs"));
                }
                if n.inputs.get(1).is_some_and(|i| i.is_some()) || n.attr("split").is_some() {
                    return Err("num_outputs and split sizes cannot both be given".into());
                }
            }
            if let Some(sz) = sizes.as_ref().filter(|s| s.len() != outs) {
                return Err(format!("{} split sizes {sz:?} for {outs} outputs", sz.len()));
            }
            if let (Some(sz), Some(r)) = (sizes, rank(0)) {
                let ax = if axis < 0 { axis + r as i64 } else { axis };
                if !(0..r as i64).contains(&ax) {
                    return Err(format!("axis {axis} is out of range for rank {r}"));
                }
                if sz.iter().any(|&v| v < 0) {
                    return Err(format!("split sizes {sz:?} must not be negative"));
                }
                if let Some(d) = dim(0, ax as usize) {
                    if sz.iter().map(|&v| v as i128).sum::<i128>() != d as i128 {
                        return Err(format!("split sizes {sz:?} do not sum to the axis's {d}"));
                    }
                }
            }
        }
        Reshape => {
            let shape = ins.first().and_then(|f| f.as_ref()).and_then(|f| f.ty.static_shape());
            if let (Some(x), Some(spec)) = (shape, konst(ins, 1).map(|t| t.to_i64())) {
                crate::interp::movement::reshape_target(&x, &spec, attr_i(n, "allowzero", 0) != 0)?;
            }
        }
        Gather => {
            let axis = attr_i(n, "axis", 0);
            if let (Some(r), Some(idx)) = (rank(0), konst(ins, 1)) {
                let ax = if axis < 0 { axis + r as i64 } else { axis };
                if !(0..r as i64).contains(&ax) {
                    return Err(format!("axis {axis} is out of range for rank {r}"));
                }
                if let Some(d) = dim(0, ax as usize) {
                    if let Some(&bad) = idx.to_i64().iter().find(|&&i| i < -(d as i64) || i >= d as i64) {
                        return Err(format!("index {bad} is out of bounds for an axis of size {d}"));
                    }
                }
            }
        }
        Gelu => {
            if let Some(Attr::Str(m)) = n.attr("approximate") {
                if !matches!(m.as_str(), "none" | "tanh") {
                    return Err(format!("approximate '{m}' is not one of none, tanh"));
                }
            }
        }
        Resize | Upsample => {
            if let Some(Attr::Str(m)) = n.attr("mode") {
                if !matches!(m.as_str(), "nearest" | "linear" | "cubic" | "bilinear" | "trilinear") {
                    return Err(format!("mode '{m}' is not one of nearest, linear, cubic"));
                }
            }
        }
        LayerNormalization => {
            let a = attr_i(n, "axis", -1);
            let x = ins.first().and_then(|f| f.as_ref()).and_then(|f| f.ty.static_shape());
            let sc = ins.get(1).and_then(|f| f.as_ref()).and_then(|f| f.ty.static_shape());
            if let (Some(x), Some(sc)) = (x, sc) {
                let r = x.len() as i64;
                let ax = if a < 0 { a + r } else { a };
                if !(0..r).contains(&ax) {
                    return Err(format!("axis {a} is out of range for rank {r}"));
                }
                let norm = &x[ax as usize..];
                // the scale broadcasts to the normalized axes (aligned at the end)
                let fits =
                    sc.len() <= norm.len() && sc.iter().rev().zip(norm.iter().rev()).all(|(&s, &d)| s == d || s == 1);
                if !fits {
                    return Err(format!("scale {sc:?} does not broadcast to the normalized axes {norm:?}"));
                }
            }
        }
        CumSum | CumProd => {
            let axis = ins
                .get(1)
                .and_then(|f| f.as_ref())
                .and_then(|f| f.konst.as_ref())
                .and_then(|t| t.to_i64().first().copied());
            if let (Some(a), Some(r)) = (axis, rank(0)) {
                if a < -(r as i64) || a >= r as i64 {
                    return Err(format!("axis {a} is out of range for rank {r}"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// An int attribute (`check_attr_kinds` has already rejected other kinds).
fn attr_i(n: &Node, k: &str, d: i64) -> i64 {
    match n.attrs.get(k) {
        Some(Attr::Int(v)) => *v,
        _ => d,
    }
}

fn attr_ints(n: &Node, k: &str) -> Option<Vec<i64>> {
    match n.attrs.get(k) {
        Some(Attr::Ints(v)) => Some(v.clone()),
        Some(Attr::Int(v)) => Some(vec![*v]),
        _ => None,
    }
}

/// Attributes that are ints or lists of ints wherever ONNX defines them.
const INT_ATTRS: &[&str] = &[
    "axis",
    "keepdims",
    "perm",
    "axes",
    "kernel_shape",
    "strides",
    "pads",
    "dilations",
    "group",
    "transA",
    "transB",
    "to",
    "split",
    "num_outputs",
    "start",
    "end",
    "allowzero",
    "ceil_mode",
    "blocksize",
    "num_scan_inputs",
];

/// Rejects attributes of the wrong kind before any rule reads them.
fn check_attr_kinds(n: &Node) -> Result<(), String> {
    for (k, a) in &n.attrs {
        if INT_ATTRS.contains(&k.as_str()) && !matches!(a, Attr::Int(_) | Attr::Ints(_)) {
            return Err(format!("attribute '{k}' must be an int or ints, got {}", a.kind()));
        }
    }
    Ok(())
}

fn norm_axis(a: i64, r: usize) -> Result<usize, String> {
    let ri = r as i64;
    if a < -ri || a >= ri {
        return Err(format!("axis {a} is out of range for rank {r}"));
    }
    Ok(if a < 0 { (a + ri) as usize } else { a as usize })
}

/// Output dtypes of an op from its input dtypes and attributes.
fn out_dtypes(node: &Node, ins: &[Option<Fact>]) -> Result<Vec<DType>, String> {
    use Op::*;
    let d0 = ins.first().and_then(|f| f.as_ref()).map(|f| f.ty.dtype).unwrap_or(DType::F32);
    let n = node.outputs.len().max(1);
    Ok(match node.op {
        Equal | Less | Greater | LessOrEqual | GreaterOrEqual | And | Or | Xor | Not | IsNaN | IsInf => {
            vec![DType::Bool]
        }
        Shape | Size | ArgMax | ArgMin | NonZero | NonMaxSuppression => vec![DType::I64],
        TopKBounded => vec![d0, DType::I64],
        NmsOverlapMask => vec![DType::I32],
        ConcatBounded => vec![d0, DType::I64],
        Choose => vec![ins.get(1).and_then(|f| f.as_ref()).map(|f| f.ty.dtype).unwrap_or(d0)],
        Bounded => match node.attrs.get("bounded_op") {
            Some(Attr::Str(o)) if o == "Compress" => vec![d0, DType::I64],
            _ => vec![DType::I64, DType::I64],
        },
        Cast => {
            let c = attr_i(node, "to", 0) as i32;
            vec![DType::from_onnx_code(c)
                .ok_or_else(|| format!("Cast to {} is not supported", crate::dtype::onnx_type_name(c)))?]
        }
        CastLike => vec![ins.get(1).and_then(|f| f.as_ref()).map(|f| f.ty.dtype).ok_or("missing input 1")?],
        TopK => vec![d0, DType::I64],
        SelectiveScan => vec![d0, DType::F32],
        // the state keeps past_state's type (the query's without one)
        LinearAttention => [d0, ins.get(3).and_then(|f| f.as_ref()).map_or(d0, |f| f.ty.dtype)][..n.min(2)].to_vec(),
        MaxPool => vec![d0, DType::I64],
        Dropout => vec![d0, DType::Bool],
        LayerNormalization => {
            let s = if attr_i(node, "stash_type", 1) == 1 { DType::F32 } else { d0 };
            vec![d0, s, s]
        }
        Where => vec![ins.get(1).and_then(|f| f.as_ref()).map(|f| f.ty.dtype).unwrap_or(d0)],
        OneHot => vec![ins.get(2).and_then(|f| f.as_ref()).map(|f| f.ty.dtype).unwrap_or(d0)],
        ConstantOfShape => vec![match node.attrs.get("value") {
            Some(Attr::Tensor(t)) => t.dtype(),
            _ => DType::F32,
        }],
        EyeLike => vec![match node.attrs.get("dtype") {
            Some(Attr::Int(c)) => DType::from_onnx_code(*c as i32).ok_or("unsupported dtype")?,
            _ => d0,
        }],
        If => match node.attrs.get("then_branch") {
            Some(Attr::Graph(g)) => g.outputs.iter().map(|&o| g.ty(o).dtype).collect(),
            _ => return Err("missing then_branch".into()),
        },
        Loop => match node.attrs.get("body") {
            Some(Attr::Graph(g)) => g.outputs.iter().skip(1).map(|&o| g.ty(o).dtype).collect(),
            _ => return Err("missing body".into()),
        },
        Scan => match node.attrs.get("body") {
            Some(Attr::Graph(g)) => g.outputs.iter().map(|&o| g.ty(o).dtype).collect(),
            _ => return Err("missing body".into()),
        },
        _ => vec![d0; n],
    })
}

fn broadcast_dims(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, String> {
    let r = a.len().max(b.len());
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let x = if i + a.len() >= r { Some(&a[i + a.len() - r]) } else { None };
        let y = if i + b.len() >= r { Some(&b[i + b.len() - r]) } else { None };
        out.push(match (x, y) {
            (Some(x), None) => x.clone(),
            (None, Some(y)) => y.clone(),
            (Some(Dim::Known(1)), Some(y)) => y.clone(),
            (Some(x), Some(Dim::Known(1))) => x.clone(),
            (Some(Dim::Known(p)), Some(Dim::Known(q))) if p != q => {
                return Err(format!("shapes {a:?} and {b:?} cannot be broadcast together"))
            }
            (Some(Dim::Known(p)), _) | (_, Some(Dim::Known(p))) => known(*p),
            (Some(x), Some(_)) => x.clone(),
            (None, None) => unreachable!(),
        });
    }
    Ok(out)
}

/// Output shapes of ops whose shapes follow from static input shapes and constant shape
/// operands (no probing: the inputs may be large). `None` where something is unknown.
fn static_rule(node: &Node, ins: &[Option<Fact>], opset: i64) -> Option<Vec<Vec<usize>>> {
    use Op::*;
    let a = crate::interp::NodeAttrs(node);
    let sh = |i: usize| ins.get(i).and_then(|f| f.as_ref()).and_then(|f| f.ty.static_shape());
    let konst = |i: usize| ins.get(i).and_then(|f| f.as_ref()).and_then(|f| f.konst.clone());
    let ax = |v: i64, r: usize| -> Option<usize> {
        let v = if v < 0 { v + r as i64 } else { v };
        (v >= 0 && (v as usize) < r.max(1)).then_some(v as usize)
    };
    let x = sh(0)?;
    let r = x.len();
    let n_out = node.outputs.len();
    Some(match node.op {
        Resize | Upsample => {
            let vals: Vec<Option<Tensor>> =
                (0..node.inputs.len()).map(|i| if i == 0 { None } else { konst(i) }).collect();
            for (i, v) in node.inputs.iter().enumerate().skip(1) {
                if v.is_some() && vals[i].is_none() {
                    return None;
                }
            }
            vec![crate::interp::resize_plan(&a, opset, &x, &vals, node.op == Upsample).ok()?.out_shape]
        }
        Pad => {
            let (pads, axes) = if opset < 11 {
                (a.ints_opt("pads").ok()??, None)
            } else {
                (
                    konst(1)?.to_i64(),
                    if node.inputs.get(3).copied().flatten().is_some() { Some(konst(3)?.to_i64()) } else { None },
                )
            };
            let axes: Vec<usize> = match axes {
                Some(v) => v.iter().map(|&v| ax(v, r)).collect::<Option<_>>()?,
                None => (0..r).collect(),
            };
            if pads.len() != 2 * axes.len() {
                return None;
            }
            let mut out: Vec<i64> = x.iter().map(|&d| d as i64).collect();
            for (i, &d) in axes.iter().enumerate() {
                out[d] += pads[i] + pads[axes.len() + i];
            }
            vec![out.into_iter().map(|d| d.max(0) as usize).collect()]
        }
        Tile => {
            let rep = konst(1)?.to_i64();
            if rep.len() != r {
                return None;
            }
            vec![x.iter().zip(&rep).map(|(&d, &k)| d * k.max(0) as usize).collect()]
        }
        DepthToSpace | SpaceToDepth => {
            let b = a.int("blocksize", 0).ok()? as usize;
            if r != 4 || b == 0 {
                return None;
            }
            if node.op == DepthToSpace {
                vec![vec![x[0], x[1] / (b * b), x[2] * b, x[3] * b]]
            } else {
                vec![vec![x[0], x[1] * b * b, x[2] / b, x[3] / b]]
            }
        }
        ConvTranspose => {
            let w = sh(1)?;
            let tw = crate::interp::transposed_window(&a, &x, &w).ok()?;
            let mut out = vec![x[0], w[1] * tw.group];
            out.extend(tw.out);
            vec![out]
        }
        TopK => {
            let k = if opset < 10 { a.int("k", 0).ok()? } else { *konst(1)?.to_i64().first()? };
            let mut out = x.clone();
            out[ax(a.int("axis", -1).ok()?, r)?] = k.max(0) as usize;
            vec![out.clone(), out]
        }
        OneHot => {
            let depth = *konst(1)?.to_f64().first()? as usize;
            let mut out = x.clone();
            out.insert(ax(a.int("axis", -1).ok()?, r + 1)?, depth);
            vec![out]
        }
        GatherElements => {
            // off the gathered axis an index is its own coordinate: indices larger than the data
            // there have no shape (the interpreter names the error; compile stops on it)
            let i = sh(1)?;
            let axis = ax(a.int("axis", 0).ok()?, r)?;
            (i.len() == r && (0..r).all(|d| d == axis || i[d] <= x[d])).then_some(())?;
            vec![i]
        }
        GatherND => {
            let i = sh(1)?;
            let b = a.int("batch_dims", 0).ok()? as usize;
            let last = *i.last()?;
            let mut out = i[..i.len() - 1].to_vec();
            out.extend(x.get(b + last..)?);
            vec![out]
        }
        ScatterElements | ScatterND | Scatter | EyeLike | ReverseSequence => vec![x],
        Compress => {
            // a constant condition fixes how many entries are kept
            let c = konst(1)?.to_f64();
            match a.int_opt("axis").ok()? {
                Some(v) => {
                    let d = ax(v, r)?;
                    let mut out = x.clone();
                    out[d] = c.iter().take(x[d]).filter(|&&v| v != 0.0).count();
                    vec![out]
                }
                None => vec![vec![c.iter().take(x.iter().product()).filter(|&&v| v != 0.0).count()]],
            }
        }
        CenterCropPad => {
            let want = konst(1)?.to_i64();
            let axes: Vec<usize> = match a.ints_opt("axes").ok()? {
                Some(v) => v.iter().map(|&v| ax(v, r)).collect::<Option<_>>()?,
                None => (0..r).collect(),
            };
            let mut out = x.clone();
            for (k, &d) in axes.iter().enumerate() {
                out[d] = *want.get(k)? as usize;
            }
            vec![out]
        }
        RoiAlign => {
            // rois (n, 4) over x (N, C, H, W); anything else is left to the op's own checks
            let rois = sh(1)?;
            let size = |k: &str| a.int(k, 1).ok().filter(|&v| v >= 1).map(|v| v as usize);
            (rois.len() == 2 && x.len() == 4).then_some(())?;
            vec![vec![rois[0], x[1], size("output_height")?, size("output_width")?]]
        }
        Einsum => {
            let shapes: Vec<Vec<usize>> = (0..node.inputs.len()).map(sh).collect::<Option<_>>()?;
            let refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
            vec![crate::interp::einsum_plan(&a.string("equation", "").ok()?, &refs).ok()?.out_shape]
        }
        SoftmaxCrossEntropyLoss | NegativeLogLikelihoodLoss => {
            let t = sh(1)?;
            let loss = if a.string("reduction", "mean").ok()? == "none" { t } else { vec![] };
            let mut v = vec![loss];
            if n_out > 1 {
                v.push(x);
            }
            v
        }
        _ => return None,
    })
    .filter(|v: &Vec<Vec<usize>>| v.len() >= n_out)
}

/// Shape rules for ops whose inputs are not all constant. `None` defers to probing.
fn rule(node: &Node, ins: &[Option<Fact>], opset: i64, fresh: &mut Fresh) -> Result<Option<Vec<Fact>>, String> {
    use crate::op::OpKind;
    use Op::*;
    let dts = out_dtypes(node, ins)?;
    let f = |i: usize| ins.get(i).and_then(|f| f.as_ref());
    let shape = |i: usize| f(i).and_then(|f| f.ty.shape.clone());
    let x = shape(0);
    let same = |s: Option<Vec<Dim>>| Ok(Some(dts.iter().map(|&d| ty(d, s.clone())).collect()));
    let op = node.op;
    if op == BatchNormalization {
        let c = x.as_ref().and_then(|s| s.get(1).cloned()).unwrap_or_else(|| fresh.dim());
        let mut out = vec![ty(dts[0], x.clone())];
        out.extend((1..node.outputs.len()).map(|_| ty(dts[0], Some(vec![c.clone()]))));
        return Ok(Some(out));
    }
    if crate::sequence_shapes::is_sequence_op(op) {
        let present = |k: usize| f(k).is_some();
        let shapes = crate::sequence_shapes::output_shapes(node, &present, &shape, &mut || fresh.dim())?;
        return Ok(Some(dts.iter().zip(shapes).map(|(&d, s)| ty(d, s)).collect()));
    }
    // the selective scan: out is u's shape, the last state (batch, dim, A's state size)
    if op == SelectiveScan {
        selective_scan_shapes(&|i| shape(i))?;
        let mut out = vec![ty(dts[0], x.clone())];
        if node.outputs.len() > 1 {
            let last = match (&x, shape(2)) {
                (Some(u), Some(a)) if u.len() == 3 && a.len() == 2 => {
                    Some(vec![u[0].clone(), u[1].clone(), a[1].clone()])
                }
                _ => None,
            };
            out.push(ty(DType::F32, last));
        }
        return Ok(Some(out));
    }
    // NonMaxSuppression's overlap mask: order [B, C, N] gives [B, C, N, ⌈N/32⌉] words
    if op == NmsOverlapMask {
        let s = shape(1).map(|mut o| {
            let words = o.get(2).and_then(Dim::known).map(|n| known(n.div_ceil(32))).unwrap_or_else(|| fresh.dim());
            o.push(words);
            o
        });
        return Ok(Some(vec![ty(DType::I32, s)]));
    }
    // a data-dependent op padded to its bound, with its length; the prefix of the valid entries
    if op == Bounded {
        let bound = attr_i(node, "bound", 0).max(0) as usize;
        let padded: Option<Vec<Dim>> = match node.attrs.get("bounded_op") {
            Some(Attr::Str(o)) if o == "NonZero" => x.as_ref().map(|s| vec![known(s.len()), known(bound)]),
            Some(Attr::Str(o)) if o == "NonMaxSuppression" => Some(vec![known(bound), known(3)]),
            Some(Attr::Str(o)) if o == "Compress" => match node.attrs.get("axis") {
                Some(Attr::Int(a)) => x.clone().map(|mut s| {
                    let a = if *a < 0 { *a + s.len() as i64 } else { *a } as usize;
                    if a < s.len() {
                        s[a] = known(bound);
                    }
                    s
                }),
                _ => Some(vec![known(bound)]),
            },
            _ => None,
        };
        return Ok(Some(vec![ty(dts[0], padded), ty(DType::I64, Some(vec![]))]));
    }
    if op == TopKBounded {
        let axis = attr_i(node, "axis", 0).max(0) as usize;
        let bound = attr_i(node, "bound", 0).max(0) as usize;
        let s = x.clone().map(|mut s| {
            if axis < s.len() {
                s[axis] = known(bound);
            }
            s
        });
        return Ok(Some(dts.iter().map(|&d| ty(d, s.clone())).collect()));
    }
    if op == ConcatBounded {
        let axis = attr_i(node, "axis", 0).max(0) as usize;
        let datas: Vec<Option<Vec<usize>>> =
            (0..node.inputs.len()).step_by(2).map(|i| f(i).and_then(|f| f.ty.static_shape())).collect();
        let s = datas.iter().cloned().collect::<Option<Vec<_>>>().and_then(|ds| {
            let mut out = ds.first()?.clone();
            *out.get_mut(axis)? = ds.iter().map(|d| d.get(axis).copied().unwrap_or(0)).sum();
            Some(out.into_iter().map(known).collect())
        });
        return Ok(Some(vec![ty(dts[0], s), ty(DType::I64, Some(vec![]))]));
    }
    if op == ReduceBounded {
        let keep = attr_i(node, "keepdims", 1) != 0;
        let axes = attr_ints(node, "axes").unwrap_or_default();
        let s = x.clone().map(|s| {
            let r = s.len() as i64;
            let axes: Vec<usize> = axes.iter().map(|&a| if a < 0 { a + r } else { a } as usize).collect();
            s.into_iter()
                .enumerate()
                .filter_map(|(i, d)| match (axes.contains(&i), keep) {
                    (true, true) => Some(known(1)),
                    (true, false) => None,
                    _ => Some(d),
                })
                .collect()
        });
        return same(s);
    }
    if op == Choose {
        let (a, b) = (shape(1), shape(2));
        return same(if a.is_some() && a == b && a.as_ref().is_some_and(|s| s.iter().all(|d| d.known().is_some())) {
            a
        } else {
            // branches of different ranks: no rank is known
            a.filter(|s| b.as_ref().is_some_and(|t| t.len() == s.len()))
                .map(|s| s.iter().map(|_| fresh.dim()).collect())
        });
    }
    if op == Prefix {
        let axis = attr_i(node, "axis", 0).max(0) as usize;
        let s = x.clone().map(|mut s| {
            if axis < s.len() {
                s[axis] = fresh.dim();
            }
            s
        });
        return same(s);
    }
    // attention: Y, the present key and value (past + this call's keys, heads first) and the
    // QK scores [batch, q heads, q length, total keys]; 3-D operands pack heads in the last axis
    if op == Attention {
        if let (Some(q), Some(k), Some(v)) = (shape(0), shape(1), shape(2)) {
            let int = |name: &str| match node.attr(name) {
                Some(crate::attr::Attr::Int(i)) if *i > 0 => Some(*i as usize),
                _ => None,
            };
            let known = |d: &Dim| d.known();
            let dims = if q.len() == 4 && k.len() == 4 && v.len() == 4 {
                Some((q[0].clone(), q[1].clone(), q[2].clone(), k[1].clone(), k[2].clone(), k[3].clone(), v[3].clone()))
            } else if q.len() == 3 && k.len() == 3 && v.len() == 3 {
                match (int("q_num_heads"), int("kv_num_heads"), known(&k[2]), known(&v[2])) {
                    (Some(hq), Some(hk), Some(kw), Some(vw)) if kw % hk == 0 && vw % hk == 0 => Some((
                        q[0].clone(),
                        Dim::Known(hq),
                        q[1].clone(),
                        Dim::Known(hk),
                        k[1].clone(),
                        Dim::Known(kw / hk),
                        Dim::Known(vw / hk),
                    )),
                    _ => None,
                }
            } else {
                None
            };
            if let Some((b, hq, sq, hk, skn, d, dv)) = dims {
                // Q, K and V share their batch
                if let (Dim::Known(x), Some(Dim::Known(y))) = (&b, [&k[0], &v[0]].into_iter().find(|d| **d != b)) {
                    return Err(format!("Q's batch {x} differs from K's or V's {y}"));
                }
                let past = shape(4).and_then(|p| p.get(2).cloned());
                let total = match (&past, &skn) {
                    (None, _) => Some(skn.clone()),
                    (Some(Dim::Known(p)), Dim::Known(n)) => Some(Dim::Known(p + n)),
                    _ => None,
                };
                let y = if q.len() == 3 {
                    match (known(&hq), known(&dv)) {
                        (Some(h), Some(w)) => vec![b.clone(), sq.clone(), Dim::Known(h * w)],
                        _ => vec![b.clone(), sq.clone(), fresh.dim()],
                    }
                } else {
                    vec![b.clone(), hq.clone(), sq.clone(), dv.clone()]
                };
                // the mask broadcasts right-aligned over (batch, q heads, queries, keys); its last
                // axis may be of any length (keys past it are masked)
                if let Some(m) = shape(3) {
                    let r = m.len();
                    let full = [&b, &hq, &sq];
                    let fits = (1..=4).contains(&r)
                        && (0..r - 1).all(|k| match (&m[k], full[4 - r + k]) {
                            (Dim::Known(x), Dim::Known(y)) => *x == 1 || x == y,
                            _ => true,
                        });
                    if !fits {
                        return Err(format!(
                            "attn_mask {m:?} does not broadcast over (batch, heads, queries, keys) {:?}",
                            [b.clone(), hq.clone(), sq.clone(), total.clone().unwrap_or(Dim::Known(0))]
                        ));
                    }
                }
                let mut out = vec![ty(dts[0], Some(y))];
                let present = |w: &Dim| total.clone().map(|t| vec![b.clone(), hk.clone(), t, w.clone()]);
                let qk = total.clone().map(|t| vec![b.clone(), hq.clone(), sq.clone(), t]);
                for (i, s) in
                    [present(&d), present(&dv), qk].into_iter().enumerate().take(node.outputs.len().saturating_sub(1))
                {
                    out.push(ty(dts.get(i + 1).copied().unwrap_or(dts[0]), s));
                }
                return Ok(Some(out));
            }
        }
    }
    if op.kind() == OpKind::Elementwise
        || matches!(
            op,
            Clip | Softmax
                | LogSoftmax
                | Hardmax
                | CumSum
                | CumProd
                | InstanceNormalization
                | GroupNormalization
                | RMSNormalization
                | LpNormalization
                | MeanVarianceNormalization
                | LRN
                | Trilu
        )
    {
        return same(x);
    }
    if op.kind() == OpKind::Broadcast {
        let mut acc: Option<Vec<Dim>> = Some(vec![]);
        for i in ins.iter().flatten() {
            acc = match (acc, &i.ty.shape) {
                (Some(a), Some(b)) => Some(broadcast_dims(&a, b)?),
                _ => None,
            };
        }
        return same(acc);
    }
    let Some(xs) = x.clone() else {
        return same(None);
    };
    let r = xs.len();
    let out = match op {
        Shape => {
            let ri = r as i64;
            let cl = |v: i64| (if v < 0 { v + ri } else { v }).clamp(0, ri) as usize;
            let (s, e) = (cl(attr_i(node, "start", 0)), cl(attr_i(node, "end", ri)));
            let dims: Vec<Dim> = xs[s..e.max(s)].to_vec();
            let mut fact = ty(DType::I64, Some(vec![known(dims.len())]));
            if dims.iter().all(|d| d.known().is_some()) {
                fact = Fact::constant(Tensor::from_i64(
                    vec![dims.len()],
                    dims.iter().map(|d| d.known().unwrap() as i64).collect(),
                ));
            } else {
                fact.dims = Some(dims);
            }
            return Ok(Some(vec![fact]));
        }
        Size => {
            return Ok(Some(vec![match xs.iter().map(|d| d.known()).collect::<Option<Vec<_>>>() {
                Some(k) => Fact::constant(Tensor::scalar_i64(numel(&k) as i64)),
                None => ty(DType::I64, Some(vec![])),
            }]))
        }
        Flatten => {
            let a = attr_i(node, "axis", 1);
            let a = if a < 0 { a + r as i64 } else { a } as usize;
            let prod = |d: &[Dim]| d.iter().map(|x| x.known()).try_fold(1usize, |acc, v| v.map(|v| acc * v));
            let lhs =
                prod(&xs[..a.min(r)]).map(known).unwrap_or_else(|| if a == 1 { xs[0].clone() } else { fresh.dim() });
            let rhs = prod(&xs[a.min(r)..]).map(known).unwrap_or_else(|| fresh.dim());
            vec![lhs, rhs]
        }
        Reshape => {
            let Some(spec) = f(1).and_then(|f| f.dims.clone()) else {
                let len = f(1).and_then(|f| f.ty.static_shape()).and_then(|s| s.first().copied());
                if let Some(n) = len.filter(|&n| n > MAX_RANK) {
                    return Err(format!("the shape has {n} entries: a rank over {MAX_RANK}"));
                }
                return same(len.map(|n| (0..n).map(|_| fresh.dim()).collect()));
            };
            let allowzero = attr_i(node, "allowzero", 0) != 0;
            let mut dims: Vec<Dim> = vec![];
            let mut infer_at = None;
            for (i, d) in spec.iter().enumerate() {
                match d {
                    Dim::Sym(s) if s == "-1" && infer_at.is_none() => {
                        infer_at = Some(i);
                        dims.push(known(1));
                    }
                    Dim::Sym(s) if s.starts_with('-') => return Err(format!("invalid target shape entry {s}")),
                    Dim::Known(0) if !allowzero => dims.push(xs.get(i).cloned().ok_or("0 in shape has no input dim")?),
                    _ => dims.push(d.clone()),
                }
            }
            if let Some(i) = infer_at {
                let total = xs.iter().map(|d| d.known()).try_fold(1usize, |a, v| v.map(|v| a * v));
                let rest = dims.iter().map(|d| d.known()).try_fold(1usize, |a, v| v.map(|v| a * v));
                dims[i] = match (total, rest) {
                    (Some(t), Some(r)) if r > 0 && t % r == 0 => known(t / r),
                    (Some(t), Some(r)) => return Err(format!("cannot reshape {t} elements into {r}·k")),
                    _ => {
                        // a symbolic dim that appears in both and cancels, e.g. [batch,12,64] -> [batch,-1]
                        let unmatched: Vec<&Dim> =
                            xs.iter().filter(|d| d.known().is_none() && !dims.contains(d)).collect();
                        let tk: usize = xs.iter().filter_map(|d| d.known()).product();
                        let rk: usize =
                            dims.iter().enumerate().filter(|(j, _)| *j != i).filter_map(|(_, d)| d.known()).product();
                        if unmatched.is_empty()
                            && rk > 0
                            && tk.is_multiple_of(rk)
                            && dims
                                .iter()
                                .enumerate()
                                .filter(|(j, _)| *j != i)
                                .all(|(_, d)| d.known().is_some() || xs.contains(d))
                        {
                            known(tk / rk)
                        } else if unmatched.len() == 1 && rk == tk {
                            unmatched[0].clone()
                        } else {
                            fresh.dim()
                        }
                    }
                };
            }
            dims
        }
        Transpose => {
            let perm: Vec<usize> = match attr_ints(node, "perm") {
                Some(p) => p.iter().map(|&v| norm_axis(v, r)).collect::<Result<_, _>>()?,
                None => (0..r).rev().collect(),
            };
            if perm.len() != r {
                return Err(format!("perm {perm:?} does not fit rank {r}"));
            }
            perm.iter().map(|&p| xs[p].clone()).collect()
        }
        Squeeze | Unsqueeze => {
            let axes = if opset >= 13 {
                f(1).and_then(|f| f.konst.clone()).map(|t| t.to_i64())
            } else {
                attr_ints(node, "axes")
            };
            match (op, axes) {
                (Unsqueeze, Some(a)) => {
                    let nr = r + a.len();
                    let mut ax: Vec<usize> = a.iter().map(|&v| norm_axis(v, nr)).collect::<Result<_, _>>()?;
                    ax.sort();
                    // a repeated axis is an error (the spec's words); inserting it twice would ask
                    // for a position past the end
                    if ax.windows(2).any(|w| w[0] == w[1]) {
                        return Err(format!("axes {a:?} repeat an axis of the rank-{nr} output"));
                    }
                    let mut d = xs.clone();
                    for a in ax {
                        d.insert(a, known(1));
                    }
                    // a scalar shape value becomes a 1-D one
                    if let Some(fd) = f(0).and_then(|f| f.dims.clone()) {
                        if r == 0 && fd.len() == 1 {
                            let mut fact = ty(dts[0], Some(d));
                            fact.dims = Some(fd);
                            return Ok(Some(vec![fact]));
                        }
                    }
                    d
                }
                (Squeeze, Some(a)) => {
                    let ax: Vec<usize> = a.iter().map(|&v| norm_axis(v, r)).collect::<Result<_, _>>()?;
                    (0..r).filter(|i| !ax.contains(i)).map(|i| xs[i].clone()).collect()
                }
                (Squeeze, None) if f(1).is_none() => xs.iter().filter(|d| **d != known(1)).cloned().collect(),
                _ => return same(None),
            }
        }
        Gather => {
            let ax = norm_axis(attr_i(node, "axis", 0), r)?;
            let Some(is) = shape(1) else { return same(None) };
            // gathering from a shape vector with constant indices keeps symbolic entries
            if let (Some(d), Some(k)) = (f(0).and_then(|f| f.dims.clone()), f(1).and_then(|f| f.konst.clone())) {
                let picked: Option<Vec<Dim>> = k
                    .to_i64()
                    .iter()
                    .map(|&i| d.get(if i < 0 { (i + d.len() as i64) as usize } else { i as usize }).cloned())
                    .collect();
                if let Some(p) = picked {
                    let mut fact = ty(DType::I64, Some(is.clone()));
                    fact.dims = Some(p);
                    return Ok(Some(vec![fact]));
                }
            }
            let mut d = xs[..ax].to_vec();
            d.extend(is);
            d.extend_from_slice(&xs[ax + 1..]);
            d
        }
        Concat => {
            let ax = norm_axis(attr_i(node, "axis", 0), r)?;
            let mut d = xs.clone();
            let mut sum = Some(0usize);
            let mut vec_dims: Option<Vec<Dim>> = Some(vec![]);
            for i in ins.iter().flatten() {
                let Some(s) = &i.ty.shape else { return same(None) };
                if s.len() != r {
                    return Err(format!("inputs of rank {} and {r} cannot be concatenated", s.len()));
                }
                sum = sum.zip(s[ax].known()).map(|(a, b)| a + b);
                vec_dims = vec_dims.zip(i.dims.clone()).map(|(mut a, b)| {
                    a.extend(b);
                    a
                });
            }
            d[ax] = sum.map(known).unwrap_or_else(|| fresh.dim());
            if let Some(vd) = vec_dims.filter(|_| r == 1 && dts[0] == DType::I64) {
                let mut fact = ty(DType::I64, Some(d));
                fact.dims = Some(vd);
                return Ok(Some(vec![fact]));
            }
            d
        }
        MatMul => {
            let Some(ys) = shape(1) else { return same(None) };
            if r == 0 || ys.is_empty() {
                return Err("inputs must have rank at least 1".into());
            }
            let (a, b) = (
                if r == 1 { vec![known(1), xs[0].clone()] } else { xs.clone() },
                if ys.len() == 1 { vec![ys[0].clone(), known(1)] } else { ys.clone() },
            );
            let (k1, k2) = (&a[a.len() - 1], &b[b.len() - 2]);
            if let (Some(p), Some(q)) = (k1.known(), k2.known()) {
                if p != q {
                    return Err(format!("inner dimensions differ: {xs:?} · {ys:?}"));
                }
            }
            let mut d = broadcast_dims(&a[..a.len() - 2], &b[..b.len() - 2])?;
            if r > 1 {
                d.push(a[a.len() - 2].clone());
            }
            if ys.len() > 1 {
                d.push(b[b.len() - 1].clone());
            }
            d
        }
        Gemm => {
            let Some(ys) = shape(1) else { return same(None) };
            if r != 2 || ys.len() != 2 {
                return Err("A and B must be 2-D".into());
            }
            let m = if attr_i(node, "transA", 0) != 0 { xs[1].clone() } else { xs[0].clone() };
            let n = if attr_i(node, "transB", 0) != 0 { ys[0].clone() } else { ys[1].clone() };
            vec![m, n]
        }
        ConvNhwc | MaxPoolNhwc => {
            // as Conv or MaxPool on the NCHW view, then back to channels-last
            if r != 4 {
                return Err(format!("input must be (N, H, W, C), got rank {r}"));
            }
            let weight = if op == ConvNhwc { shape(1) } else { None };
            let channels = match &weight {
                _ if op == MaxPoolNhwc => xs[3].clone(),
                Some(w) => w[0].clone(),
                None => fresh.dim(),
            };
            let kernel: Option<Vec<usize>> = match attr_ints(node, "kernel_shape") {
                Some(k) => Some(k.iter().map(|&v| v as usize).collect()),
                None => weight.and_then(|w| w[2..].iter().map(|d| d.known()).collect()),
            };
            let spatial: Option<Vec<usize>> = xs[1..3].iter().map(|d| d.known()).collect();
            // (a convolution has no ceil_mode: 0)
            let ceil = attr_i(node, "ceil_mode", 0) != 0;
            let hw: Vec<Dim> = match (kernel, spatial) {
                (Some(k), Some(s)) => crate::interp::window_out(node, &s, k, ceil)?.into_iter().map(known).collect(),
                _ => vec![fresh.dim(), fresh.dim()],
            };
            vec![xs[0].clone(), hw[0].clone(), hw[1].clone(), channels]
        }
        Conv | MaxPool | AveragePool | LpPool | GlobalAveragePool | GlobalMaxPool => {
            if r < 3 {
                return Err(format!("input must be (N, C, spatial...), got rank {r}"));
            }
            let c = if op == Conv {
                match shape(1) {
                    Some(w) => w[0].clone(),
                    None => fresh.dim(),
                }
            } else {
                xs[1].clone()
            };
            let mut d = vec![xs[0].clone(), c];
            if matches!(op, GlobalAveragePool | GlobalMaxPool) {
                d.extend(std::iter::repeat_n(known(1), r - 2));
            } else {
                let kernel: Option<Vec<usize>> = match attr_ints(node, "kernel_shape") {
                    Some(k) => Some(k.iter().map(|&v| v as usize).collect()),
                    None if op == Conv => shape(1).and_then(|w| w[2..].iter().map(|d| d.known()).collect()),
                    None => None,
                };
                let spatial: Option<Vec<usize>> = xs[2..].iter().map(|d| d.known()).collect();
                match (kernel, spatial) {
                    (Some(k), Some(s)) => {
                        let a = crate::interp::window_out(node, &s, k, attr_i(node, "ceil_mode", 0) != 0)?;
                        d.extend(a.into_iter().map(known));
                    }
                    _ => d.extend((2..r).map(|_| fresh.dim())),
                }
            }
            if op == MaxPool {
                return Ok(Some(vec![ty(dts[0], Some(d.clone())), ty(DType::I64, Some(d))]));
            }
            d
        }
        ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2 | ReduceLogSum
        | ReduceLogSumExp | ReduceSumSquare | ArgMax | ArgMin => {
            let keep = attr_i(node, "keepdims", 1) != 0;
            let axes: Option<Vec<i64>> = if matches!(op, ArgMax | ArgMin) {
                Some(vec![attr_i(node, "axis", 0)])
            } else if opset >= if op == ReduceSum { 13 } else { 18 } {
                match f(1) {
                    None => Some(vec![]),
                    Some(a) => a.konst.clone().map(|t| t.to_i64()),
                }
            } else {
                Some(attr_ints(node, "axes").unwrap_or_default())
            };
            let Some(axes) = axes else {
                return same(if keep { Some((0..r).map(|_| fresh.dim()).collect()) } else { None });
            };
            let ax: Vec<usize> = if axes.is_empty() {
                if attr_i(node, "noop_with_empty_axes", 0) != 0 {
                    return same(Some(xs));
                }
                (0..r).collect()
            } else {
                axes.iter().map(|&a| norm_axis(a, r)).collect::<Result<_, _>>()?
            };
            (0..r).filter_map(|i| if ax.contains(&i) { keep.then(|| known(1)) } else { Some(xs[i].clone()) }).collect()
        }
        LayerNormalization => {
            let ax = norm_axis(attr_i(node, "axis", -1), r)?;
            let mut st: Vec<Dim> = xs[..ax].to_vec();
            st.resize(r, known(1));
            return Ok(Some(vec![ty(dts[0], Some(xs)), ty(dts[1], Some(st.clone())), ty(dts[2], Some(st))]));
        }
        Split => {
            let ax = norm_axis(attr_i(node, "axis", 0), r)?;
            let sizes: Option<Vec<i64>> = if opset >= 13 {
                match f(1) {
                    Some(s) => s.konst.clone().map(|t| t.to_i64()),
                    None => None,
                }
            } else {
                attr_ints(node, "split")
            };
            let n = node.outputs.len();
            let runtime_sizes = opset >= 13 && f(1).is_some_and(|s| s.konst.is_none());
            let sizes = match (sizes, xs[ax].known()) {
                (Some(s), _) => s.iter().map(|&v| Some(v as usize)).collect(),
                (None, _) if runtime_sizes => vec![None; n],
                (None, Some(d)) => {
                    let parts = attr_i(node, "num_outputs", n as i64).max(1) as usize;
                    let chunk = d.div_ceil(parts);
                    (0..parts).map(|i| Some(chunk.min(d.saturating_sub(i * chunk)))).collect()
                }
                (None, None) => vec![None; n],
            };
            return Ok(Some(
                sizes
                    .into_iter()
                    .map(|s: Option<usize>| {
                        let mut d = xs.clone();
                        d[ax] = s.map(known).unwrap_or_else(|| fresh.dim());
                        ty(dts[0], Some(d))
                    })
                    .collect(),
            ));
        }
        Slice if opset >= 10 => {
            let consts: Option<Vec<Vec<i64>>> =
                (1..5).map(|i| f(i).map(|t| t.konst.clone().map(|k| k.to_i64())).unwrap_or(Some(vec![]))).collect();
            let Some(c) = consts else { return same(Some((0..r).map(|_| fresh.dim()).collect())) };
            let axes: Vec<usize> = if c[2].is_empty() {
                (0..c[0].len()).collect()
            } else {
                c[2].iter().map(|&a| norm_axis(a, r)).collect::<Result<_, _>>()?
            };
            let mut d = xs.clone();
            let mut vec_dims = f(0).and_then(|f| f.dims.clone());
            for (i, &ax) in axes.iter().enumerate() {
                let step = c[3].get(i).copied().unwrap_or(1);
                if step == 0 {
                    return Err("slice step cannot be 0".into());
                }
                if c[1].len() != c[0].len() || i >= c[0].len() {
                    return Err("starts, ends and axes must have one length".into());
                }
                match xs[ax].known() {
                    Some(n) => {
                        let t = crate::interp::slice_len(n as i64, c[0][i], c[1][i], step);
                        if let Some(vd) = vec_dims.as_mut().filter(|_| r == 1 && step == 1) {
                            let n = n as i64;
                            let s = (if c[0][i] < 0 { c[0][i] + n } else { c[0][i] }).clamp(0, n) as usize;
                            *vd = vd[s..(s + t).min(vd.len())].to_vec();
                        } else {
                            vec_dims = None;
                        }
                        d[ax] = known(t);
                    }
                    None if c[0][i] == 0 && c[1][i] >= i32::MAX as i64 && step == 1 => {}
                    None => d[ax] = fresh.dim(),
                }
            }
            if let Some(vd) = vec_dims {
                let mut fact = ty(dts[0], Some(d));
                fact.dims = Some(vd);
                return Ok(Some(vec![fact]));
            }
            d
        }
        Expand => {
            let Some(t) = f(1).and_then(|f| f.dims.clone()) else { return same(None) };
            broadcast_dims(&xs, &t)?
        }
        ConstantOfShape => match f(0).and_then(|f| f.dims.clone()) {
            Some(d) => d,
            None => return same(None),
        },
        Resize
        | Upsample
        | Pad
        | Tile
        | ConvTranspose
        | DepthToSpace
        | SpaceToDepth
        | TopK
        | OneHot
        | GatherElements
        | GatherND
        | ScatterElements
        | ScatterND
        | Scatter
        | EyeLike
        | ReverseSequence
        | CenterCropPad
        | RoiAlign
        | Einsum
        | SoftmaxCrossEntropyLoss
        | NegativeLogLikelihoodLoss
        | Compress => {
            // static shapes and constant shape operands: the shapes by the op's own geometry
            return Ok(static_rule(node, ins, opset).map(|shapes| {
                dts.iter().zip(shapes).map(|(&d, s)| ty(d, Some(s.into_iter().map(Dim::Known).collect()))).collect()
            }));
        }
        Attention | Range => return Ok(None),
        _ => return Ok(None),
    };
    // Cast of a shape vector keeps its symbolic entries
    same(Some(out))
}

/// The selective scan's operands agree (docs/ops/selective_scan.md), where their shapes are
/// known: a kernel would read past a mismatched operand. The interpreter checks its tensors
/// with it too.
pub(crate) fn selective_scan_shapes(shape: &dyn Fn(usize) -> Option<Vec<Dim>>) -> Result<(), String> {
    let known = |i: usize| shape(i).and_then(|s| s.iter().map(Dim::known).collect::<Option<Vec<usize>>>());
    let (Some(u), Some(a)) = (known(0), known(2)) else { return Ok(()) };
    let [b, d, l] = u[..] else { return Err(format!("u is {u:?}; expected (batch, dim, len)")) };
    let [ad, n] = a[..] else { return Err(format!("A is {a:?}; expected (dim, state)")) };
    if ad != d {
        return Err(format!("A has {ad} channels, u has {d}"));
    }
    for (i, name) in [(1, "delta"), (6, "z")] {
        match known(i) {
            Some(s) if s != u => return Err(format!("{name} is {s:?}, u is {u:?}")),
            _ => {}
        }
    }
    for (i, name) in [(3, "B"), (4, "C")] {
        let Some(p) = known(i) else { continue };
        let fits = match p[..] {
            [pb, pn, pl] => (pb, pn, pl) == (b, n, l),
            [pb, g, pn, pl] => (pb, pn, pl) == (b, n, l) && g > 0 && d % g == 0,
            _ => false,
        };
        if !fits {
            return Err(format!(
                "{name} is {p:?}; expected ({b}, {n}, {l}) or ({b}, groups, {n}, {l}) with groups dividing {d}"
            ));
        }
    }
    if let (Some(p), Some(q)) = (known(3), known(4)) {
        if p != q {
            return Err(format!("B is {p:?}, C is {q:?}"));
        }
    }
    for (i, name) in [(5, "D"), (7, "delta_bias")] {
        match known(i) {
            Some(s) if s != [d] => return Err(format!("{name} is {s:?}; expected ({d})")),
            _ => {}
        }
    }
    Ok(())
}
