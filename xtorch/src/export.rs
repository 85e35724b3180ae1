//! Export: a trained `Sequential` straight into xforge's graph IR (no ONNX file in between).
//! Each layer becomes the ONNX-semantics op the interpreter and the compiler know — Linear →
//! Gemm (transB = 1, PyTorch's [out, in] weight), Conv2d → Conv, BatchNorm2d →
//! BatchNormalization (inference: the running statistics), LayerNorm → LayerNormalization
//! (axis −1), ReLU → Relu, MaxPool2d → MaxPool, Flatten → Flatten (axis 1); Dropout is the
//! identity at inference and emits nothing. A Residual block emits its body, its shortcut (or
//! nothing: the identity), an Add of the two, and a Relu if it has one; GlobalAvgPool →
//! GlobalAveragePool. ConvTranspose2d → ConvTranspose; a Concat block emits its body and a
//! Concat (axis 1) of the input and the body's output ("4.Concat", "4.body.0.MaxPool2d");
//! MaxPool2d's padding → pads; GELUTanh → Mul, Mul, Mul, Add, Mul, Tanh, Add, Mul, Mul. Nodes inside a block are named "5.body.0.Conv2d", "5.shortcut.1.BatchNorm2d",
//! "5.Add", "5.ReLU".
//! The sequence layers: Linear on rank > 2 → Transpose of the weight and MatMul (+ Add);
//! Conv1d → Conv (1-D); RMSNorm → Mul, ReduceMean, Add, Sqrt, Div, Mul; GELU → Div, Erf, Add,
//! Mul, Mul; SiLU → Sigmoid, Mul; Embedding → Gather (the input "x" is then int64 ids);
//! PositionEmbedding → Add of the table's first T rows (the weight holds only those rows);
//! MultiheadAttention → MatMul, Add, Split into q, k, v, Reshape/Transpose into heads,
//! MatMul, Mul by 1/√d, Add of the causal mask (a [T, T] weight, −∞ above the diagonal),
//! Softmax, MatMul, Transpose/Reshape, and the output projection; Tokens → Reshape,
//! Transpose; TokenMean → ReduceMean. All of opset 17 (no Gelu or RMSNormalization op), so
//! the ONNX file runs in onnxruntime as it is. A multi-node layer's nodes are named
//! "3.MultiheadAttention.q", "3.MultiheadAttention.softmax", ...
//! Weights are copied from the var store under their var-store names ("0.weight", ...); nodes
//! are named after their layer ("3.Conv2d"); the input is "x" and the output "logits".
use crate::modules::{Layer, Sequential, ShapeError};
use tch::{Device, Kind, Tensor};
use xforge_ir::{Attr, DType, Graph, GraphBuilder, Op, ValueId, ValueType};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("layer {layer}: parameter {param} is {kind:?}; export takes float32 parameters")]
    DType { layer: String, param: String, kind: Kind },
    #[error("layer {layer}: {what} is not exported yet")]
    Unsupported { layer: String, what: String },
    #[error("the exported graph does not type-check: {0}")]
    Infer(String),
}

/// ONNX opset the exported graph declares.
pub const OPSET: i64 = 17;

/// The inference graph of `net` for a float32 input of `input_shape` (batch first).
pub fn export(net: &Sequential, input_shape: &[usize]) -> Result<Graph, ExportError> {
    let shape: Vec<i64> = input_shape.iter().map(|&d| d as i64).collect();
    net.check(&shape)?;
    let mut b = GraphBuilder::new("xtorch", OPSET);
    let ids = matches!(net.layers().first(), Some((_, Layer::Embedding(_))));
    if let Some((name, _)) = net.layers().iter().skip(1).find(|(_, l)| matches!(l, Layer::Embedding(_))) {
        return Err(ExportError::Unsupported {
            layer: name.clone(),
            what: "an Embedding after the first layer (its input must be the network's int64 ids)".into(),
        });
    }
    let mut x = b.input("x", if ids { DType::I64 } else { DType::F32 }, input_shape);
    let mut names = vec![];
    for (name, layer) in net.layers() {
        let shape = net_shape_before(net, name, &shape)?;
        x = emit(&mut b, &mut names, name, layer, x, &shape)?;
    }
    b.output(x);
    let mut g = b.finish();
    for (node, name) in g.nodes.iter_mut().zip(names) {
        node.name = name;
    }
    let out = g.outputs[0];
    g.values[out.index()].name = "logits".into();
    xforge_ir::infer::infer_graph(&mut g).map_err(|e| ExportError::Infer(e.to_string()))?;
    xforge_ir::verify::verify(&g).map_err(|e| ExportError::Infer(e.to_string()))?;
    Ok(g)
}

/// The input shape of the layer named `name` of `net` for a net input of `shape`.
fn net_shape_before(net: &Sequential, name: &str, shape: &[i64]) -> Result<Vec<i64>, ShapeError> {
    let mut s = shape.to_vec();
    for (n, l) in net.layers() {
        if n == name {
            break;
        }
        s = l.out_shape(n, &s)?;
    }
    Ok(s)
}

/// Appends one node named `node_name` and returns its output.
pub(crate) fn op(
    b: &mut GraphBuilder,
    names: &mut Vec<String>,
    node_name: String,
    op: Op,
    ins: &[ValueId],
    attrs: Vec<(&str, Attr)>,
) -> ValueId {
    names.push(node_name);
    b.node(op, ins, attrs, ValueType::unranked(DType::F32))
}

/// A float32 scalar constant.
pub(crate) fn scalar(b: &mut GraphBuilder, name: &str, v: f32) -> ValueId {
    b.weight(name, xforge_ir::Tensor::scalar_f32(v))
}

/// An int64 vector constant (shapes, split sizes).
pub(crate) fn ints(b: &mut GraphBuilder, name: &str, v: &[i64]) -> ValueId {
    b.weight(name, xforge_ir::Tensor::from_i64(vec![v.len()], v.to_vec()))
}

/// A square convolution's attributes over `dims` spatial axes: one kernel size, stride and
/// padding for every axis, no dilation, one group.
fn conv_attrs(dims: usize, kernel: i64, stride: i64, padding: i64) -> Vec<(&'static str, Attr)> {
    vec![
        ("kernel_shape", Attr::Ints(vec![kernel; dims])),
        ("strides", Attr::Ints(vec![stride; dims])),
        ("pads", Attr::Ints(vec![padding; 2 * dims])),
        ("dilations", Attr::Ints(vec![1; dims])),
        ("group", Attr::Int(1)),
    ]
}

/// Appends the nodes of `layer` (named `name`) applied to `x` of `shape`; returns its output.
/// Node names go to `names` in emission order.
fn emit(
    b: &mut GraphBuilder,
    names: &mut Vec<String>,
    name: &str,
    layer: &Layer,
    x: ValueId,
    shape: &[i64],
) -> Result<ValueId, ExportError> {
    let u = || ValueType::unranked(DType::F32);
    let param = |what: &str, t: &Tensor| -> Result<xforge_ir::Tensor, ExportError> {
        if t.kind() != Kind::Float {
            return Err(ExportError::DType { layer: name.to_string(), param: what.into(), kind: t.kind() });
        }
        Ok(to_ir(t))
    };
    // [x, weight, bias?] of a layer with a weight and an optional bias
    let weighted = |b: &mut GraphBuilder, ws: &Tensor, bs: Option<&Tensor>| -> Result<Vec<ValueId>, ExportError> {
        let mut ins = vec![x, b.weight(&format!("{name}.weight"), param("weight", ws)?)];
        if let Some(bs) = bs {
            ins.push(b.weight(&format!("{name}.bias"), param("bias", bs)?));
        }
        Ok(ins)
    };
    let node = match layer {
        Layer::Linear(l) if shape.len() > 2 => {
            let w = b.weight(&format!("{name}.weight"), param("weight", &l.inner.ws)?);
            let k = layer.kind();
            let wt = op(
                b,
                names,
                format!("{name}.{k}.transpose"),
                Op::Transpose,
                &[w],
                vec![("perm", Attr::Ints(vec![1, 0]))],
            );
            let y = op(b, names, format!("{name}.{k}.matmul"), Op::MatMul, &[x, wt], vec![]);
            return match &l.inner.bs {
                Some(bs) => {
                    let bias = b.weight(&format!("{name}.bias"), param("bias", bs)?);
                    Ok(op(b, names, format!("{name}.{k}.bias"), Op::Add, &[y, bias], vec![]))
                }
                None => Ok(y),
            };
        }
        Layer::Linear(l) => {
            let ins = weighted(b, &l.inner.ws, l.inner.bs.as_ref())?;
            Some(b.node(Op::Gemm, &ins, vec![("transB", Attr::Int(1))], u()))
        }
        Layer::Conv2d(c) => {
            let ins = weighted(b, &c.inner.ws, c.inner.bs.as_ref())?;
            Some(b.node(Op::Conv, &ins, conv_attrs(2, c.kernel, c.stride, c.padding), u()))
        }
        Layer::ConvTranspose2d(c) => {
            let ins = weighted(b, &c.inner.ws, c.inner.bs.as_ref())?;
            Some(b.node(Op::ConvTranspose, &ins, conv_attrs(2, c.kernel, c.stride, c.padding), u()))
        }
        Layer::Conv1d(c) => {
            let ins = weighted(b, &c.inner.ws, c.inner.bs.as_ref())?;
            Some(b.node(Op::Conv, &ins, conv_attrs(1, c.kernel, c.stride, c.padding), u()))
        }
        Layer::RmsNorm(r) => {
            let k = layer.kind();
            let sq = op(b, names, format!("{name}.{k}.square"), Op::Mul, &[x, x], vec![]);
            let attrs = vec![("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))];
            let ms = op(b, names, format!("{name}.{k}.mean"), Op::ReduceMean, &[sq], attrs);
            let eps = scalar(b, &format!("{name}.eps"), r.eps as f32);
            let ms = op(b, names, format!("{name}.{k}.eps"), Op::Add, &[ms, eps], vec![]);
            let rms = op(b, names, format!("{name}.{k}.sqrt"), Op::Sqrt, &[ms], vec![]);
            let y = op(b, names, format!("{name}.{k}.div"), Op::Div, &[x, rms], vec![]);
            let w = b.weight(&format!("{name}.weight"), param("weight", &r.weight)?);
            return Ok(op(b, names, format!("{name}.{k}.scale"), Op::Mul, &[y, w], vec![]));
        }
        Layer::GELU => {
            let k = layer.kind();
            let root2 = scalar(b, &format!("{name}.sqrt2"), std::f32::consts::SQRT_2);
            let one = scalar(b, &format!("{name}.one"), 1.0);
            let half = scalar(b, &format!("{name}.half"), 0.5);
            let z = op(b, names, format!("{name}.{k}.div"), Op::Div, &[x, root2], vec![]);
            let e = op(b, names, format!("{name}.{k}.erf"), Op::Erf, &[z], vec![]);
            let e = op(b, names, format!("{name}.{k}.add"), Op::Add, &[e, one], vec![]);
            let y = op(b, names, format!("{name}.{k}.mul"), Op::Mul, &[x, e], vec![]);
            return Ok(op(b, names, format!("{name}.{k}.half"), Op::Mul, &[y, half], vec![]));
        }
        Layer::GELUTanh => {
            let k = layer.kind();
            let c = scalar(b, &format!("{name}.c"), 0.044715);
            let s2pi = scalar(b, &format!("{name}.sqrt2pi"), (2.0 / std::f64::consts::PI).sqrt() as f32);
            let one = scalar(b, &format!("{name}.one"), 1.0);
            let half = scalar(b, &format!("{name}.half"), 0.5);
            let x2 = op(b, names, format!("{name}.{k}.square"), Op::Mul, &[x, x], vec![]);
            let x3 = op(b, names, format!("{name}.{k}.cube"), Op::Mul, &[x2, x], vec![]);
            let cx3 = op(b, names, format!("{name}.{k}.scale"), Op::Mul, &[x3, c], vec![]);
            let inner = op(b, names, format!("{name}.{k}.add"), Op::Add, &[x, cx3], vec![]);
            let z = op(b, names, format!("{name}.{k}.mul"), Op::Mul, &[inner, s2pi], vec![]);
            let t = op(b, names, format!("{name}.{k}.tanh"), Op::Tanh, &[z], vec![]);
            let t = op(b, names, format!("{name}.{k}.one"), Op::Add, &[t, one], vec![]);
            let y = op(b, names, format!("{name}.{k}.gate"), Op::Mul, &[x, t], vec![]);
            return Ok(op(b, names, format!("{name}.{k}.half"), Op::Mul, &[y, half], vec![]));
        }
        Layer::SiLU => {
            let k = layer.kind();
            let s = op(b, names, format!("{name}.{k}.sigmoid"), Op::Sigmoid, &[x], vec![]);
            return Ok(op(b, names, format!("{name}.{k}.mul"), Op::Mul, &[x, s], vec![]));
        }
        Layer::Embedding(e) => {
            let w = b.weight(&format!("{name}.weight"), param("weight", &e.weight)?);
            Some(b.node(Op::Gather, &[w, x], vec![("axis", Attr::Int(0))], u()))
        }
        Layer::PositionEmbedding(e) => {
            let rows = e.weight.narrow(0, 0, shape[1]);
            let w = b.weight(&format!("{name}.weight"), param("weight", &rows)?);
            Some(b.node(Op::Add, &[x, w], vec![], u()))
        }
        Layer::Attention(a) => return crate::export_attention::emit(b, names, name, a, x, shape, &param),
        Layer::Tokens => {
            let k = layer.kind();
            let [n, c, ..] = shape[..] else { unreachable!("checked: [N, C, H, W]") };
            let s = ints(b, &format!("{name}.shape"), &[n, c, -1]);
            let y = op(b, names, format!("{name}.{k}.reshape"), Op::Reshape, &[x, s], vec![]);
            return Ok(op(
                b,
                names,
                format!("{name}.{k}.transpose"),
                Op::Transpose,
                &[y],
                vec![("perm", Attr::Ints(vec![0, 2, 1]))],
            ));
        }
        Layer::TokenMean => {
            let attrs = vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))];
            Some(b.node(Op::ReduceMean, &[x], attrs, u()))
        }
        Layer::BatchNorm2d(bn) => {
            let i = &bn.inner;
            let (Some(ws), Some(bs)) = (&i.ws, &i.bs) else {
                return Err(ExportError::Unsupported {
                    layer: name.to_string(),
                    what: "BatchNorm2d without affine".into(),
                });
            };
            let ins = [
                x,
                b.weight(&format!("{name}.weight"), param("weight", ws)?),
                b.weight(&format!("{name}.bias"), param("bias", bs)?),
                b.weight(&format!("{name}.running_mean"), param("running_mean", &i.running_mean)?),
                b.weight(&format!("{name}.running_var"), param("running_var", &i.running_var)?),
            ];
            Some(b.node(Op::BatchNormalization, &ins, vec![("epsilon", Attr::Float(bn.eps as f32))], u()))
        }
        Layer::LayerNorm(ln) => {
            let i = &ln.inner;
            let (Some(ws), Some(bs)) = (&i.ws, &i.bs) else {
                return Err(ExportError::Unsupported {
                    layer: name.to_string(),
                    what: "LayerNorm without affine".into(),
                });
            };
            let ins = [
                x,
                b.weight(&format!("{name}.weight"), param("weight", ws)?),
                b.weight(&format!("{name}.bias"), param("bias", bs)?),
            ];
            let attrs = vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(ln.eps as f32))];
            Some(b.node(Op::LayerNormalization, &ins, attrs, u()))
        }
        Layer::ReLU => Some(b.node(Op::Relu, &[x], vec![], u())),
        Layer::MaxPool2d { kernel, stride, padding } => {
            let attrs = vec![
                ("kernel_shape", Attr::Ints(vec![*kernel; 2])),
                ("strides", Attr::Ints(vec![*stride; 2])),
                ("pads", Attr::Ints(vec![*padding; 4])),
            ];
            Some(b.node(Op::MaxPool, &[x], attrs, u()))
        }
        Layer::Flatten => Some(b.node(Op::Flatten, &[x], vec![("axis", Attr::Int(1))], u())),
        Layer::Dropout { .. } => None,
        Layer::Residual(r) => {
            let mut y = x;
            for (i, l) in r.body.layers() {
                let inner = net_shape_before(&r.body, i, shape)?;
                y = emit(b, names, &format!("{name}.body.{i}"), l, y, &inner)?;
            }
            let mut s = x;
            if let Some(short) = &r.shortcut {
                for (i, l) in short.layers() {
                    let inner = net_shape_before(short, i, shape)?;
                    s = emit(b, names, &format!("{name}.shortcut.{i}"), l, s, &inner)?;
                }
            }
            names.push(format!("{name}.Add"));
            let sum = b.node(Op::Add, &[y, s], vec![], u());
            if r.relu {
                names.push(format!("{name}.ReLU"));
                return Ok(b.node(Op::Relu, &[sum], vec![], u()));
            }
            return Ok(sum);
        }
        Layer::GlobalAvgPool => Some(b.node(Op::GlobalAveragePool, &[x], vec![], u())),
        Layer::Concat(c) => {
            let mut y = x;
            for (i, l) in c.body.layers() {
                let inner = net_shape_before(&c.body, i, shape)?;
                y = emit(b, names, &format!("{name}.body.{i}"), l, y, &inner)?;
            }
            Some(b.node(Op::Concat, &[x, y], vec![("axis", Attr::Int(1))], u()))
        }
    };
    match node {
        Some(y) => {
            names.push(format!("{name}.{}", layer.kind()));
            Ok(y)
        }
        None => Ok(x),
    }
}

/// A libtorch tensor as an IR tensor (copied to the host, row-major): int64 stays int64 (token
/// ids), everything else becomes float32.
pub fn to_ir(t: &Tensor) -> xforge_ir::Tensor {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let t = t.detach().to_device(Device::Cpu).contiguous();
    if t.kind() == Kind::Int64 {
        let v = Vec::<i64>::try_from(t.flatten(0, -1)).expect("an int64 tensor converts to Vec<i64>");
        return xforge_ir::Tensor::from_i64(shape, v);
    }
    let v = Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).expect("a float tensor converts to Vec<f32>");
    xforge_ir::Tensor::from_f32(shape, v)
}
