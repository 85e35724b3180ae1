//! The xforge runtime's side of the artifact: one `.xfa` file holding the kernels, the weights,
//! the memory plan and the execution plan of a compiled model. This crate stays small (no
//! MLIR, LLVM or egg): programs link it to load and run artifacts.
pub mod artifact;
pub mod checksum;
pub mod codec;
pub mod plan;

pub use artifact::{Artifact, ArtifactError, ArtifactHeader, FORMAT_VERSION, MAGIC};
pub use plan::{Arg, Binding, KernelImage, LibraryCall, MemoryPlan, Step};
