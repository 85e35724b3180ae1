//! The xforge runtime's side of the artifact: one `.xfa` file holding the kernels, the weights,
//! the memory plan and the execution plan of a compiled model. This crate stays small (no
//! MLIR, LLVM or egg): programs link it to load and run artifacts.
pub mod artifact;
pub mod c_api;
pub mod checksum;
pub mod code_object;
pub mod codec;
mod conv;
mod cudnn_api;
mod gemm;
/// AMD GPUs through HIP (feature `hip`).
#[cfg(feature = "hip")]
pub mod hip;
pub mod library;
pub mod plan;
pub mod remap;
pub mod session;
mod timing_cache;
pub use timing_cache::cache_dir;

pub use artifact::{Artifact, ArtifactError, ArtifactHeader, BatchDim, FORMAT_VERSION, MAGIC};
#[cfg(feature = "hip")]
pub use hip::HipSession;
pub use library::{Activation, ConvDesc, GemmDesc, LibDtype, LibraryDesc};
pub use plan::{binding_bytes, Arg, Binding, KernelImage, LibraryCall, MemoryPlan, Plan, Step, StepCost};
pub use remap::Remap;
pub use session::{device_name, device_target, open, AnySession, DeviceBuffer, RuntimeError, Session, ShapedOutputs};
