//! Export: a trained `Sequential` straight into xforge's graph IR (no ONNX file in between).
//! Each layer becomes the ONNX-semantics op the interpreter and the compiler know — Linear →
//! Gemm (transB = 1, PyTorch's [out, in] weight), Conv2d → Conv, BatchNorm2d →
//! BatchNormalization (inference: the running statistics), LayerNorm → LayerNormalization
//! (axis −1), ReLU → Relu, MaxPool2d → MaxPool, Flatten → Flatten (axis 1); Dropout is the
//! identity at inference and emits nothing. A Residual block emits its body, its shortcut (or
//! nothing: the identity), an Add of the two, and a Relu if it has one; GlobalAvgPool →
//! GlobalAveragePool. Nodes inside a block are named "5.body.0.Conv2d", "5.shortcut.1.BatchNorm2d",
//! "5.Add", "5.ReLU".
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
    let mut x = b.input("x", DType::F32, input_shape);
    let mut names = vec![];
    for (name, layer) in net.layers() {
        x = emit(&mut b, &mut names, name, layer, x)?;
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

/// Appends the nodes of `layer` (named `name`) applied to `x`; returns its output. Node names
/// go to `names` in emission order.
fn emit(
    b: &mut GraphBuilder,
    names: &mut Vec<String>,
    name: &str,
    layer: &Layer,
    x: ValueId,
) -> Result<ValueId, ExportError> {
    let u = || ValueType::unranked(DType::F32);
    let param = |what: &str, t: &Tensor| -> Result<xforge_ir::Tensor, ExportError> {
        if t.kind() != Kind::Float {
            return Err(ExportError::DType { layer: name.to_string(), param: what.into(), kind: t.kind() });
        }
        Ok(to_ir(t))
    };
    let node = match layer {
        Layer::Linear(l) => {
            let w = b.weight(&format!("{name}.weight"), param("weight", &l.inner.ws)?);
            let mut ins = vec![x, w];
            if let Some(bs) = &l.inner.bs {
                ins.push(b.weight(&format!("{name}.bias"), param("bias", bs)?));
            }
            Some(b.node(Op::Gemm, &ins, vec![("transB", Attr::Int(1))], u()))
        }
        Layer::Conv2d(c) => {
            let w = b.weight(&format!("{name}.weight"), param("weight", &c.inner.ws)?);
            let mut ins = vec![x, w];
            if let Some(bs) = &c.inner.bs {
                ins.push(b.weight(&format!("{name}.bias"), param("bias", bs)?));
            }
            let attrs = vec![
                ("kernel_shape", Attr::Ints(vec![c.kernel; 2])),
                ("strides", Attr::Ints(vec![c.stride; 2])),
                ("pads", Attr::Ints(vec![c.padding; 4])),
                ("dilations", Attr::Ints(vec![1; 2])),
                ("group", Attr::Int(1)),
            ];
            Some(b.node(Op::Conv, &ins, attrs, u()))
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
        Layer::MaxPool2d { kernel, stride } => {
            let attrs = vec![("kernel_shape", Attr::Ints(vec![*kernel; 2])), ("strides", Attr::Ints(vec![*stride; 2]))];
            Some(b.node(Op::MaxPool, &[x], attrs, u()))
        }
        Layer::Flatten => Some(b.node(Op::Flatten, &[x], vec![("axis", Attr::Int(1))], u())),
        Layer::Dropout { .. } => None,
        Layer::Residual(r) => {
            let mut y = x;
            for (i, l) in r.body.layers() {
                y = emit(b, names, &format!("{name}.body.{i}"), l, y)?;
            }
            let mut s = x;
            if let Some(short) = &r.shortcut {
                for (i, l) in short.layers() {
                    s = emit(b, names, &format!("{name}.shortcut.{i}"), l, s)?;
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
    };
    match node {
        Some(y) => {
            names.push(format!("{name}.{}", layer.kind()));
            Ok(y)
        }
        None => Ok(x),
    }
}

/// A libtorch float tensor as an IR tensor (copied to the host, row-major).
pub fn to_ir(t: &Tensor) -> xforge_ir::Tensor {
    let t = t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let v = Vec::<f32>::try_from(t.flatten(0, -1)).expect("a float tensor converts to Vec<f32>");
    xforge_ir::Tensor::from_f32(shape, v)
}
