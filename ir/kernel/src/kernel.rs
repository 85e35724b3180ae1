//! A generated kernel: its module text, parameters and launch shape.
use std::hash::{Hash, Hasher};
use xforge_ir::{DType, ValueId};

/// One kernel argument: a bare pointer to a buffer of `elements` values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Param {
    pub value: ValueId,
    pub dtype: DType,
    pub elements: usize,
    pub output: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// `k_<content hash>`: identical groups give identical kernels.
    pub name: String,
    /// A `gpu.module` holding one `gpu.func` of that name.
    pub module: String,
    pub params: Vec<Param>,
    pub grid: [u32; 3],
    pub block: [u32; 3],
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KernelError {
    #[error("fusion group {group}: {why}")]
    Unsupported { group: usize, why: String },
    #[error("generated MLIR does not verify: {0}")]
    Invalid(String),
}

/// A stable name from the body text (the placeholder `@KERNEL` stands for the name).
pub fn content_name(body: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("k_{:016x}", h.finish())
}
