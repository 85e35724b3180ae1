//! xforge's test suite: ONNX conformance, real-model checks and shared comparison helpers.
pub mod amdgpu;
pub mod compare;
pub mod conformance;
pub mod gpu;
pub mod graphs;
pub mod host_kernels;
