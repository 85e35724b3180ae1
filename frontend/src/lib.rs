//! ONNX import: a model file becomes an xforge `Graph` with inferred types.
mod attr_names;
mod error;
mod import;
mod tensor_proto;

pub use error::ImportError;
pub use import::{load, parse, ImportOptions, Model, MAX_OPSET, MIN_OPSET};
