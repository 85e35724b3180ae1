//! ONNX import: a model file becomes an xforge `Graph` with inferred types.
mod attr_names;
mod error;
mod import;
mod op_types;
mod operand_types;
mod tensor_proto;
mod wire;

pub use error::ImportError;
pub use import::{load, parse, ImportOptions, Model, MAX_OPSET, MIN_OPSET};
