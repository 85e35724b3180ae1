//! An exported graph written as an ONNX model (ONNX IR version 8, the graph's opset), so that
//! other tools (onnxruntime, `xforge compile`) take the trained network too. Covers what
//! `export` emits: standard ops, float32 and int64 initializers (int64: shapes, split sizes) and
//! inputs (int64: token ids), int/ints/float attributes.
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use protobuf::Message;
use std::path::Path;
use xforge_ir::{Attr, DType, Dim, Graph, ValueId};

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("node {node}: attribute {attr} of kind {kind} is not written to ONNX")]
    Attr { node: String, attr: String, kind: &'static str },
    #[error("value {0}: only float32 and int64 values and weights are written to ONNX")]
    DType(String),
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
    #[error("protobuf: {0}")]
    Proto(String),
}

fn value_info(g: &Graph, v: ValueId) -> Result<ValueInfoProto, OnnxError> {
    let ty = g.ty(v);
    if !matches!(ty.dtype, DType::F32 | DType::I64) {
        return Err(OnnxError::DType(g.name_of(v).into()));
    }
    let mut t = type_proto::Tensor::new();
    t.elem_type = ty.dtype.onnx_code();
    if let Some(dims) = &ty.shape {
        let mut shape = TensorShapeProto::new();
        for d in dims {
            let mut dim = Dimension::new();
            dim.value = Some(match d {
                Dim::Known(n) => dimension::Value::DimValue(*n as i64),
                Dim::Sym(s) => dimension::Value::DimParam(s.clone()),
            });
            shape.dim.push(dim);
        }
        t.shape = Some(shape).into();
    }
    let mut tp = TypeProto::new();
    tp.value = Some(type_proto::Value::TensorType(t));
    let mut vi = ValueInfoProto::new();
    vi.name = g.name_of(v).into();
    vi.type_ = Some(tp).into();
    Ok(vi)
}

/// The graph as ONNX model bytes.
pub fn to_onnx(g: &Graph) -> Result<Vec<u8>, OnnxError> {
    let mut gp = GraphProto::new();
    gp.name = g.name.clone();
    for &i in &g.inputs {
        gp.input.push(value_info(g, i)?);
    }
    for &o in &g.outputs {
        gp.output.push(value_info(g, o)?);
    }
    for (&id, t) in &g.weights {
        if !matches!(t.dtype(), DType::F32 | DType::I64) {
            return Err(OnnxError::DType(g.name_of(id).into()));
        }
        let mut tp = TensorProto::new();
        tp.name = g.name_of(id).into();
        tp.dims = t.shape().iter().map(|&d| d as i64).collect();
        tp.data_type = t.dtype().onnx_code();
        tp.raw_data = t.data().to_le_bytes();
        gp.initializer.push(tp);
    }
    for n in &g.nodes {
        let mut np = NodeProto::new();
        np.op_type = n.op.name().into();
        np.name = n.name.clone();
        np.input = n.inputs.iter().map(|i| i.map(|v| g.name_of(v).to_string()).unwrap_or_default()).collect();
        np.output = n.outputs.iter().map(|o| o.map(|v| g.name_of(v).to_string()).unwrap_or_default()).collect();
        for (k, a) in n.attrs.iter() {
            let mut ap = AttributeProto::new();
            ap.name = k.clone();
            match a {
                Attr::Int(v) => {
                    ap.type_ = AttributeType::INT.into();
                    ap.i = *v;
                }
                Attr::Ints(v) => {
                    ap.type_ = AttributeType::INTS.into();
                    ap.ints = v.clone();
                }
                Attr::Float(v) => {
                    ap.type_ = AttributeType::FLOAT.into();
                    ap.f = *v;
                }
                other => {
                    return Err(OnnxError::Attr { node: n.name.clone(), attr: k.clone(), kind: other.kind() });
                }
            }
            np.attribute.push(ap);
        }
        gp.node.push(np);
    }
    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.producer_name = "xtorch".into();
    let mut o = OperatorSetIdProto::new();
    o.version = g.opset;
    m.opset_import.push(o);
    m.graph = Some(gp).into();
    m.write_to_bytes().map_err(|e| OnnxError::Proto(e.to_string()))
}

/// Writes the graph to `path` as an ONNX model.
pub fn write_onnx(g: &Graph, path: &Path) -> Result<(), OnnxError> {
    let bytes = to_onnx(g)?;
    std::fs::write(path, bytes).map_err(|e| OnnxError::Io { path: path.display().to_string(), msg: e.to_string() })
}
