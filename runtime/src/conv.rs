//! Convolution steps through cuDNN: `cudnnConvolutionBiasActivationForward` computes
//! `act(conv(x, w) + z + bias)` in one call. cuDNN fuses only ReLU with its fastest algorithms
//! (chosen by timing them at load); without ReLU it runs the implicit precomputed GEMM with an
//! identity activation, then sigmoid, tanh or clipped ReLU in place when the step has one.
use crate::library::{Activation, ConvDesc, LibDtype};
use cudarc::cudnn::sys;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use std::ffi::c_void;
use std::sync::Arc;

/// Scratch for cuDNN's algorithms (an algorithm needing more is not considered).
pub(crate) const WORKSPACE_BYTES: usize = 64 << 20;

fn check(s: sys::cudnnStatus_t) -> Result<(), String> {
    if s == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(format!("cuDNN: {s:?}"))
    }
}

fn format(nhwc: bool) -> sys::cudnnTensorFormat_t {
    if nhwc {
        sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC
    } else {
        sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW
    }
}

fn data_type(d: LibDtype) -> sys::cudnnDataType_t {
    match d {
        LibDtype::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        LibDtype::F16 => sys::cudnnDataType_t::CUDNN_DATA_HALF,
        LibDtype::Bf16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
    }
}

/// One cuDNN handle on the session's stream, its workspace, and zeros for convolutions
/// without a bias.
pub(crate) struct Dnn {
    handle: sys::cudnnHandle_t,
    workspace: CudaSlice<u8>,
    zeros: CudaSlice<u8>,
}

impl Dnn {
    pub(crate) fn new(stream: &Arc<CudaStream>, max_channels: u64) -> Result<Dnn, String> {
        // SAFETY: only probes whether the library can be opened
        if !unsafe { sys::is_culib_present() } {
            return Err("the artifact has convolution steps and cuDNN (libcudnn.so) cannot be opened".into());
        }
        let mut handle = std::ptr::null_mut();
        // SAFETY: plain handle creation; the stream outlives the handle (both owned by the session)
        unsafe {
            check(sys::cudnnCreate(&mut handle))?;
            check(sys::cudnnSetStream(handle, stream.cu_stream() as sys::cudaStream_t))?;
        }
        // SAFETY: scratch, written before read
        let workspace = unsafe { stream.alloc::<u8>(WORKSPACE_BYTES) }.map_err(|e| e.to_string())?;
        let zeros = stream.alloc_zeros::<u8>((max_channels * 4).max(4) as usize).map_err(|e| e.to_string())?;
        Ok(Dnn { handle, workspace, zeros })
    }
}

impl Drop for Dnn {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once
        unsafe { sys::cudnnDestroy(self.handle) };
    }
}

struct Tensor(sys::cudnnTensorDescriptor_t);

impl Tensor {
    /// `dims` in NCHW order; the memory layout is NHWC when `nhwc`.
    fn new(d: LibDtype, dims: [u64; 4], nhwc: bool) -> Result<Tensor, String> {
        let mut t = std::ptr::null_mut();
        let [n, c, h, w] = dims.map(|x| x as i32);
        // SAFETY: a fresh descriptor, set once
        unsafe {
            check(sys::cudnnCreateTensorDescriptor(&mut t))?;
            let tensor = Tensor(t);
            check(sys::cudnnSetTensor4dDescriptor(t, format(nhwc), data_type(d), n, c, h, w))?;
            Ok(tensor)
        }
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once
        unsafe { sys::cudnnDestroyTensorDescriptor(self.0) };
    }
}

struct Filter(sys::cudnnFilterDescriptor_t);

impl Drop for Filter {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once
        unsafe { sys::cudnnDestroyFilterDescriptor(self.0) };
    }
}

struct Convolution(sys::cudnnConvolutionDescriptor_t);

impl Drop for Convolution {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once
        unsafe { sys::cudnnDestroyConvolutionDescriptor(self.0) };
    }
}

struct ActivationDesc(sys::cudnnActivationDescriptor_t);

impl ActivationDesc {
    fn new(mode: sys::cudnnActivationMode_t, coef: f64) -> Result<Self, String> {
        let mut a = std::ptr::null_mut();
        // SAFETY: a fresh descriptor, set once
        unsafe {
            check(sys::cudnnCreateActivationDescriptor(&mut a))?;
            let desc = ActivationDesc(a);
            check(sys::cudnnSetActivationDescriptor(a, mode, sys::cudnnNanPropagation_t::CUDNN_PROPAGATE_NAN, coef))?;
            Ok(desc)
        }
    }
}

impl Drop for ActivationDesc {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once
        unsafe { sys::cudnnDestroyActivationDescriptor(self.0) };
    }
}

/// A convolution step, ready to enqueue: descriptors, algorithm and device addresses fixed at
/// load.
pub(crate) struct ConvStep {
    x: Tensor,
    w: Filter,
    conv: Convolution,
    /// y's layout (also z's and the in-place activation's)
    y: Tensor,
    bias: Tensor,
    fused: ActivationDesc,
    after: Option<ActivationDesc>,
    algo: sys::cudnnConvolutionFwdAlgo_t,
    workspace: usize,
    /// x, w, y, bias, z (y when there is no residual)
    ptrs: [u64; 5],
    /// alpha2: 1 with a residual z, else 0 (z = y is then not read)
    alpha2: f32,
}

impl ConvStep {
    /// `ptrs`: the call's buffers in descriptor order (x, w, y, bias?, z?).
    pub(crate) fn new(dnn: &Dnn, stream: &CudaStream, d: &ConvDesc, ptrs: &[u64]) -> Result<ConvStep, String> {
        use sys::cudnnActivationMode_t as M;
        let [oh, ow] = d.output().ok_or("no output")?;
        let x = Tensor::new(d.dtype, d.input, d.nhwc)?;
        let y = Tensor::new(d.dtype, [d.input[0], d.out_channels, oh, ow], d.nhwc)?;
        let bias = Tensor::new(d.dtype, [1, d.out_channels, 1, 1], d.nhwc)?;
        // SAFETY: fresh descriptors, each set once with in-range 32-bit sizes (checked at read)
        let (w, conv) = unsafe {
            let mut f = std::ptr::null_mut();
            check(sys::cudnnCreateFilterDescriptor(&mut f))?;
            let w = Filter(f);
            let k = [d.out_channels, d.input[1] / d.group, d.kernel[0], d.kernel[1]].map(|v| v as i32);
            check(sys::cudnnSetFilter4dDescriptor(f, data_type(d.dtype), format(d.nhwc), k[0], k[1], k[2], k[3]))?;
            let mut c = std::ptr::null_mut();
            check(sys::cudnnCreateConvolutionDescriptor(&mut c))?;
            let conv = Convolution(c);
            check(sys::cudnnSetConvolution2dDescriptor(
                c,
                d.pad[0] as i32,
                d.pad[1] as i32,
                d.stride[0] as i32,
                d.stride[1] as i32,
                d.dilation[0] as i32,
                d.dilation[1] as i32,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            ))?;
            check(sys::cudnnSetConvolutionGroupCount(c, d.group as i32))?;
            // fp32 stays fp32 (FMA only, no TF32); halves may use tensor cores
            let math = if d.dtype == LibDtype::F32 {
                sys::cudnnMathType_t::CUDNN_FMA_MATH
            } else {
                sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH
            };
            check(sys::cudnnSetConvolutionMathType(c, math))?;
            (w, conv)
        };
        let (fused, after) = match d.act {
            Activation::Relu => (ActivationDesc::new(M::CUDNN_ACTIVATION_RELU, 0.0)?, None),
            Activation::None => (ActivationDesc::new(M::CUDNN_ACTIVATION_IDENTITY, 0.0)?, None),
            a => {
                let (mode, coef) = match a {
                    Activation::Sigmoid => (M::CUDNN_ACTIVATION_SIGMOID, 0.0),
                    Activation::Tanh => (M::CUDNN_ACTIVATION_TANH, 0.0),
                    Activation::ClipZero(m) => (M::CUDNN_ACTIVATION_CLIPPED_RELU, m as f64),
                    _ => return Err(format!("activation {a:?} has no cuDNN mode")),
                };
                (ActivationDesc::new(M::CUDNN_ACTIVATION_IDENTITY, 0.0)?, Some(ActivationDesc::new(mode, coef)?))
            }
        };
        let (zeros, _g) = dnn.zeros.device_ptr(stream);
        let bias_ptr = if d.bias { ptrs[3] } else { zeros };
        let z = if d.residual { ptrs[if d.bias { 4 } else { 3 }] } else { ptrs[2] };
        let mut step = ConvStep {
            x,
            w,
            conv,
            y,
            bias,
            fused,
            after,
            algo: sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
            workspace: 0,
            ptrs: [ptrs[0], ptrs[1], ptrs[2], bias_ptr, z],
            alpha2: if d.residual { 1.0 } else { 0.0 },
        };
        // candidates: with ReLU every algorithm cuDNN times fastest first, else the one it allows
        // XFORGE_CUDNN_ALGO=precomp: the implicit precomputed GEMM everywhere (to bisect)
        let timed = std::env::var("XFORGE_CUDNN_ALGO").map_or(true, |v| v != "precomp");
        let candidates: Vec<(sys::cudnnConvolutionFwdAlgo_t, usize)> = if d.act == Activation::Relu && timed {
            step.timed_algorithms(dnn, stream)?
        } else {
            vec![(step.algo, step.workspace_for(dnn, step.algo)?)]
        };
        // the first that runs (at load, outside any capture: y is scratch until the first run)
        let mut last = String::from("no algorithm fits the workspace");
        for (algo, bytes) in candidates {
            step.algo = algo;
            step.workspace = bytes;
            match step.launch(dnn, stream) {
                Ok(()) => {
                    tracing::debug!("conv {d:?}: {algo:?}, {bytes} bytes of workspace");
                    return Ok(step);
                }
                Err(e) => last = format!("{algo:?}: {e}"),
            }
        }
        Err(last)
    }

    fn workspace_for(&self, dnn: &Dnn, algo: sys::cudnnConvolutionFwdAlgo_t) -> Result<usize, String> {
        let mut bytes = 0usize;
        // SAFETY: live descriptors
        check(unsafe {
            sys::cudnnGetConvolutionForwardWorkspaceSize(
                dnn.handle,
                self.x.0,
                self.w.0,
                self.conv.0,
                self.y.0,
                algo,
                &mut bytes,
            )
        })?;
        if bytes > WORKSPACE_BYTES {
            return Err(format!("{algo:?} needs {bytes} bytes of workspace"));
        }
        Ok(bytes)
    }

    /// Algorithms cuDNN times on the step's own buffers, fastest first, that fit the workspace.
    fn timed_algorithms(
        &self,
        dnn: &Dnn,
        stream: &CudaStream,
    ) -> Result<Vec<(sys::cudnnConvolutionFwdAlgo_t, usize)>, String> {
        const MAX: usize = 16;
        // SAFETY: plain-old-data results, filled by cuDNN up to `count`
        let mut perf: [sys::cudnnConvolutionFwdAlgoPerf_t; MAX] = unsafe { std::mem::zeroed() };
        let mut count = 0;
        let (ws, _g) = dnn.workspace.device_ptr(stream);
        // SAFETY: x, w and y are the step's buffers (bounds checked at read); y is scratch at load
        check(unsafe {
            sys::cudnnFindConvolutionForwardAlgorithmEx(
                dnn.handle,
                self.x.0,
                self.ptrs[0] as *const c_void,
                self.w.0,
                self.ptrs[1] as *const c_void,
                self.conv.0,
                self.y.0,
                self.ptrs[2] as *mut c_void,
                MAX as i32,
                &mut count,
                perf.as_mut_ptr(),
                ws as *mut c_void,
                WORKSPACE_BYTES,
            )
        })?;
        Ok(perf[..count.max(0) as usize]
            .iter()
            .filter(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS && p.memory <= WORKSPACE_BYTES)
            .map(|p| (p.algo, p.memory))
            .collect())
    }

    pub(crate) fn launch(&self, dnn: &Dnn, stream: &CudaStream) -> Result<(), String> {
        let (ws, _g) = dnn.workspace.device_ptr(stream);
        let [x, w, y, bias, z] = self.ptrs;
        let one = 1.0f32;
        let zero = 0.0f32;
        // SAFETY: buffers checked against the arena and the weights at read; descriptors live as
        // long as `self`; alpha/beta are f32 (cuDNN's scaling type for every data type here)
        unsafe {
            check(sys::cudnnConvolutionBiasActivationForward(
                dnn.handle,
                &one as *const f32 as *const c_void,
                self.x.0,
                x as *const c_void,
                self.w.0,
                w as *const c_void,
                self.conv.0,
                self.algo,
                ws as *mut c_void,
                self.workspace,
                &self.alpha2 as *const f32 as *const c_void,
                self.y.0,
                z as *const c_void,
                self.bias.0,
                bias as *const c_void,
                self.fused.0,
                self.y.0,
                y as *mut c_void,
            ))?;
            if let Some(a) = &self.after {
                check(sys::cudnnActivationForward(
                    dnn.handle,
                    a.0,
                    &one as *const f32 as *const c_void,
                    self.y.0,
                    y as *const c_void,
                    &zero as *const f32 as *const c_void,
                    self.y.0,
                    y as *mut c_void,
                ))?;
            }
        }
        Ok(())
    }
}
