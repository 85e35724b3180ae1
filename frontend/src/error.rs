//! Import errors. Each names the node, value or field at fault.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid ONNX model (protobuf decoding failed: {msg})")]
    Decode { path: PathBuf, msg: String },
    #[error("the model has no graph")]
    NoGraph,
    #[error("opset {version} of the default domain is not supported (supported: {min}..={max})")]
    UnsupportedOpset { version: i64, min: i64, max: i64 },
    #[error("IR version {version} is not supported (supported: 1..={max}; 0 means the model does not say)")]
    UnsupportedIrVersion { version: i64, max: i64 },
    #[error("the model imports no version of the default ONNX domain")]
    NoDefaultOpset,
    #[error("node '{node}': op '{op}'{domain} is not supported")]
    UnsupportedOp { node: String, op: String, domain: String },
    #[error("{what} '{name}': data type {dtype} is not supported")]
    UnsupportedDtype { what: &'static str, name: String, dtype: String },
    #[error("node '{node}' ({op}), attribute '{attr}': {msg}")]
    BadAttribute { node: String, op: String, attr: String, msg: String },
    #[error("node '{node}' ({op}): {msg}")]
    Schema { node: String, op: String, msg: String },
    #[error("tensor '{name}': {msg}")]
    BadTensor { name: String, msg: String },
    #[error("node '{node}' ({op}): input '{input}' is not produced by any node, input or initializer")]
    Dangling { node: String, op: String, input: String },
    #[error("graph output '{0}' is not produced by any node, input or initializer")]
    DanglingOutput(String),
    #[error("value '{name}' is defined twice (by {first} and by {second})")]
    Redefined { name: String, first: String, second: String },
    #[error("the graph has a cycle through node '{0}'")]
    Cycle(String),
    #[error("value '{name}': {msg}")]
    BadType { name: String, msg: String },
    #[error("--shape {0}")]
    BadBinding(String),
    #[error(transparent)]
    Shape(#[from] xforge_ir::infer::InferError),
    #[error("the imported graph is malformed: {0}")]
    Verify(#[from] xforge_ir::verify::VerifyError),
}
