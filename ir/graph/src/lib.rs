//! xforge graph IR: a typed tensor dataflow graph, its verifier and printer, and the reference
//! interpreter that defines what every op means.
pub mod attr;
pub mod builder;
pub mod dtype;
pub mod graph;
pub mod group;
pub mod infer;
pub mod interp;
pub mod narrow;
pub mod npy;
pub mod op;
pub mod print;
pub mod rank_rules;
pub mod sequence_shapes;
pub mod shape;
pub mod tensor;
pub mod verify;
pub mod window;

pub use attr::{Attr, Attrs};
pub use builder::GraphBuilder;
pub use dtype::DType;
pub use graph::{Graph, Node, Value, ValueId};
pub use op::{Op, OpKind};
pub use shape::{Dim, ValueType};
pub use tensor::{Tensor, TensorData};
