//! Kernels as MLIR `gpu` dialect modules, one per fusion group. Templates write the portable
//! `gpu`, `arith`, `math`, `memref` and `scf` dialects so the NVVM and ROCDL paths share them;
//! `mlir::verify` parses and verifies every module with melior.
pub mod body;
pub mod elementwise;
pub mod kernel;
pub mod mlir;

pub use kernel::{Kernel, KernelError, Param};
