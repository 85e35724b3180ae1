//! Convolution steps through cuDNN: `cudnnConvolutionBiasActivationForward` computes
//! `act(conv(x, w) + z + bias)` in one call. With ReLU every algorithm may run it; without,
//! cuDNN allows only the implicit precomputed GEMM (identity, or an activation it fuses, else
//! one run in place after). Where that algorithm is poor, the bare convolution with any
//! algorithm and bias/residual/activation passes after it win. Every way is timed at load, as a
//! replayed graph, and the fastest kept, and remembered (`timing_cache`: in the process and in
//! a per-user file) so later loads take it without timing.
use crate::cudnn_api as sys;
use crate::library::{Activation, ConvDesc, LibDtype};
use crate::plan::LibraryCall;
use crate::remap::Remap;
use crate::timing_cache;
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use std::ffi::c_void;
use std::sync::Arc;

/// cuDNN's forward algorithms, all tried (timed) for a convolution with a fused ReLU.
const FORWARD_ALGORITHMS: [sys::cudnnConvolutionFwdAlgo_t; 8] = {
    use sys::cudnnConvolutionFwdAlgo_t as A;
    [
        A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
        A::CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
        A::CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
        A::CUDNN_CONVOLUTION_FWD_ALGO_FFT,
        A::CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
        A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
        A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
    ]
};

/// Scratch for cuDNN's algorithms (an algorithm needing more is not considered).
pub(crate) const WORKSPACE_BYTES: usize = 64 << 20;

fn check(s: sys::cudnnStatus_t) -> Result<(), String> {
    if s == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        Ok(())
    } else if s == sys::cudnnStatus_t::CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH {
        // seen in a process where torch had loaded its own libcudnn.so.9 and `libcudnn.so`
        // resolved to another version on the library path
        Err(format!(
            "cuDNN: {s:?}: two cuDNN versions in one process (e.g. torch's and another found as libcudnn.so \
             on LD_LIBRARY_PATH or in the linker cache); keep one of them on the path"
        ))
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
        sys::open()?;
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

/// A way to run a convolution step: the activation fused into cuDNN's call (identity for none),
/// the one run in place after it, whether the convolution runs bare (bias, residual and
/// activation as passes after it), and the algorithms to time.
#[derive(Debug)]
struct Way {
    fused: (sys::cudnnActivationMode_t, f64),
    after: Option<(sys::cudnnActivationMode_t, f64)>,
    separate: bool,
    algos: Vec<sys::cudnnConvolutionFwdAlgo_t>,
}

/// A bare convolution's generated epilogue (act(y + z + bias) in place over y, compiled into the
/// artifact), ready to launch.
pub(crate) struct Epilogue {
    func: CudaFunction,
    cfg: LaunchConfig,
    ptrs: Vec<u64>,
}

impl Epilogue {
    /// From a call's `epilogue*` parameters (None without them); `ptrs`: the call's buffers in
    /// descriptor order (x, w, y, bias?, z?).
    pub(crate) fn of_call(
        c: &LibraryCall,
        d: &ConvDesc,
        functions: &[CudaFunction],
        ptrs: &[u64],
    ) -> Result<Option<Epilogue>, String> {
        let get = |k: &str| c.params.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        let Some(kernel) = get("epilogue") else { return Ok(None) };
        let need = |k: &str| get(k).ok_or_else(|| format!("parameter '{k}' is missing"));
        let func = usize::try_from(kernel)
            .ok()
            .and_then(|k| functions.get(k))
            .ok_or_else(|| format!("parameter 'epilogue' = {kernel} names no kernel"))?
            .clone();
        let dim = |k: String, max: i64| -> Result<u32, String> {
            let v = need(&k)?;
            (1..=max).contains(&v).then_some(v as u32).ok_or_else(|| format!("parameter '{k}' = {v} is out of range"))
        };
        let grid = (
            dim("epilogue_grid.0".into(), i32::MAX as i64)?,
            dim("epilogue_grid.1".into(), 65535)?,
            dim("epilogue_grid.2".into(), 65535)?,
        );
        let block = (
            dim("epilogue_block.0".into(), 1024)?,
            dim("epilogue_block.1".into(), 1024)?,
            dim("epilogue_block.2".into(), 64)?,
        );
        if block.0 * block.1 * block.2 > 1024 {
            return Err("the epilogue's block has more than 1024 threads".into());
        }
        let z = if d.bias { 4 } else { 3 };
        let n = need("epilogue_params")?;
        let ptrs = (0..n.clamp(0, 16))
            .map(|j| match need(&format!("epilogue_param.{j}"))? {
                0 => Ok(ptrs[2]),
                1 if d.bias => Ok(ptrs[3]),
                2 if d.residual => Ok(ptrs[z]),
                r => Err(format!("parameter 'epilogue_param.{j}' = {r} names no buffer of this call")),
            })
            .collect::<Result<Vec<u64>, String>>()?;
        if n as usize != ptrs.len() || ptrs.is_empty() {
            return Err(format!("parameter 'epilogue_params' = {n} is out of range"));
        }
        Ok(Some(Epilogue { func, cfg: LaunchConfig { grid_dim: grid, block_dim: block, shared_mem_bytes: 0 }, ptrs }))
    }

    fn launch(&self, stream: &CudaStream, remap: &Remap) -> Result<(), String> {
        let ptrs: Vec<u64> = self.ptrs.iter().map(|&p| remap.at(p)).collect();
        let mut b = stream.launch_builder(&self.func);
        for p in &ptrs {
            b.arg(p);
        }
        // SAFETY: the kernel takes one pointer per parameter, each a buffer of this call
        // (checked against the arena and the weights when the artifact was read)
        unsafe { b.launch(self.cfg) }.map(|_| ()).map_err(|e| e.to_string())
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
    /// the bare convolution, then bias, residual and `after` as passes (`fused` unused)
    separate: bool,
    has_bias: bool,
    algo: sys::cudnnConvolutionFwdAlgo_t,
    workspace: usize,
    /// x, w, y, bias, z (y when there is no residual)
    ptrs: [u64; 5],
    /// alpha2: 1 with a residual z, else 0 (z = y is then not read)
    alpha2: f32,
    /// the bare convolution's bias, residual and activation in one generated pass (else cuDNN's
    /// passes)
    epilogue: Option<Epilogue>,
}

impl ConvStep {
    /// `ptrs`: the call's buffers in descriptor order (x, w, y, bias?, z?).
    pub(crate) fn new(
        dnn: &Dnn,
        stream: &Arc<CudaStream>,
        d: &ConvDesc,
        ptrs: &[u64],
        epilogue: Option<Epilogue>,
    ) -> Result<ConvStep, String> {
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
        let (zeros, _g) = dnn.zeros.device_ptr(stream);
        let bias_ptr = if d.bias { ptrs[3] } else { zeros };
        let z = if d.residual { ptrs[if d.bias { 4 } else { 3 }] } else { ptrs[2] };
        let mut step = ConvStep {
            x,
            w,
            conv,
            y,
            bias,
            fused: ActivationDesc::new(M::CUDNN_ACTIVATION_IDENTITY, 0.0)?,
            after: None,
            separate: false,
            has_bias: d.bias,
            algo: sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
            workspace: 0,
            ptrs: [ptrs[0], ptrs[1], ptrs[2], bias_ptr, z],
            alpha2: if d.residual { 1.0 } else { 0.0 },
            epilogue,
        };
        // the ways to run it, all timed, the fastest kept
        let precomp = vec![step.algo];
        // XFORGE_CUDNN_ALGO=precomp: only the implicit precomputed GEMM, fused (to bisect)
        let all_algos = std::env::var("XFORGE_CUDNN_ALGO").map_or(true, |v| v != "precomp");
        let every = if all_algos { FORWARD_ALGORITHMS.to_vec() } else { precomp.clone() };
        let act = match d.act {
            Activation::None => None,
            Activation::Relu => Some((M::CUDNN_ACTIVATION_RELU, 0.0)),
            Activation::Sigmoid => Some((M::CUDNN_ACTIVATION_SIGMOID, 0.0)),
            Activation::Tanh => Some((M::CUDNN_ACTIVATION_TANH, 0.0)),
            Activation::ClipZero(m) => Some((M::CUDNN_ACTIVATION_CLIPPED_RELU, m as f64)),
            a => return Err(format!("activation {a:?} has no cuDNN mode")),
        };
        let identity = (M::CUDNN_ACTIVATION_IDENTITY, 0.0);
        let mut ways: Vec<Way> = vec![];
        match act {
            // cuDNN fuses ReLU with every algorithm
            Some(relu) if relu.0 == M::CUDNN_ACTIVATION_RELU => {
                ways.push(Way { fused: relu, after: None, separate: false, algos: every.clone() })
            }
            // an identity activation only with the implicit precomputed GEMM
            None => ways.push(Way { fused: identity, after: None, separate: false, algos: precomp.clone() }),
            // others fused where cuDNN takes them, else an in-place pass after the identity call
            Some(a) => {
                ways.push(Way { fused: a, after: None, separate: false, algos: precomp.clone() });
                ways.push(Way { fused: identity, after: Some(a), separate: false, algos: precomp.clone() });
            }
        }
        // and the bare convolution with any algorithm, then bias, residual and activation passes
        // (slower at small sizes, much faster where the precomputed GEMM is a poor algorithm)
        if all_algos && act.is_none_or(|a| a.0 != M::CUDNN_ACTIVATION_RELU) {
            ways.push(Way { fused: identity, after: act, separate: true, algos: every });
        }
        // a convolution timed before (by this process or an earlier one, on this GPU and cuDNN)
        // takes the same way where it is still one of this step's: sessions of one artifact
        // compute bit-identical outputs, and loads after the first do not time
        let gpu = stream.context().name().unwrap_or_default();
        // SAFETY: a plain query of the loaded library's version
        let version = unsafe { sys::cudnnGetVersion() };
        // the ways in the key: a choice names a way by its place in this list
        let list: Vec<String> = ways
            .iter()
            .map(|w| format!("{}.{:?}.{}.{}", w.fused.0 as i32, w.after.map(|a| a.0 as i32), w.separate, w.algos.len()))
            .collect();
        let key = format!("{gpu}/cudnn{version}/{}/{}/{d:?}", list.join(","), step.epilogue.is_some());
        if let Some(c) = timing_cache::get(&key) {
            let algo = FORWARD_ALGORITHMS.get(c.algo).copied();
            if let Some((way, algo)) = ways.get(c.way).zip(algo).filter(|(w, a)| w.algos.contains(a)) {
                if let Ok(bytes) = step.workspace_for(dnn, algo) {
                    step.take(way)?;
                    (step.algo, step.workspace) = (algo, bytes);
                    return Ok(step);
                }
            }
        }
        let mut best: Option<(f32, usize, sys::cudnnConvolutionFwdAlgo_t, usize)> = None;
        let mut last = String::from("no algorithm fits the workspace");
        for (k, way) in ways.iter().enumerate() {
            step.take(way)?;
            for &algo in &way.algos {
                let bytes = match step.workspace_for(dnn, algo) {
                    Ok(b) => b,
                    Err(e) => {
                        last = e;
                        continue;
                    }
                };
                (step.algo, step.workspace) = (algo, bytes);
                match step.time(dnn, stream) {
                    Ok(ms) if best.is_none_or(|(t, ..)| ms < t) => best = Some((ms, k, algo, bytes)),
                    Ok(_) => {}
                    Err(e) => last = format!("{algo:?}: {e}"),
                }
            }
        }
        let (ms, k, algo, bytes) = best.ok_or(last)?;
        step.take(&ways[k])?;
        (step.algo, step.workspace) = (algo, bytes);
        if let Some(i) = FORWARD_ALGORITHMS.iter().position(|&a| a == algo) {
            timing_cache::put(&key, timing_cache::Choice { way: k, algo: i });
        }
        tracing::debug!("conv {d:?}: {:?}, {algo:?}, {bytes} bytes of workspace, {:.1} us", ways[k], ms * 1000.0);
        Ok(step)
    }

    /// Switches the step to a way of running it (its algorithm is set apart).
    fn take(&mut self, way: &Way) -> Result<(), String> {
        self.fused = ActivationDesc::new(way.fused.0, way.fused.1)?;
        self.after = way.after.map(|(m, c)| ActivationDesc::new(m, c)).transpose()?;
        self.separate = way.separate;
        Ok(())
    }

    /// GPU milliseconds of the step's call (the best of a few), or its error. Timed as a
    /// replayed CUDA graph, as plans run: a cuDNN call's host-side cost (which differs by
    /// algorithm and dwarfs small convolutions) is not the GPU's.
    fn time(&self, dnn: &Dnn, stream: &Arc<CudaStream>) -> Result<f32, String> {
        use cudarc::driver::sys as cu;
        let e = |e: cudarc::driver::DriverError| e.to_string();
        self.launch(dnn, stream, &Remap::none())?;
        stream.synchronize().map_err(e)?;
        stream.begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(e)?;
        let launched = self.launch(dnn, stream, &Remap::none());
        let graph = stream.end_capture(cu::CUgraphInstantiate_flags(0)).map_err(e)?;
        launched?;
        let graph = graph.ok_or("the call captured nothing")?;
        graph.launch().map_err(e)?;
        let flags = Some(cu::CUevent_flags::CU_EVENT_DEFAULT);
        let mut best = f32::MAX;
        for _ in 0..3 {
            let t0 = stream.record_event(flags).map_err(e)?;
            graph.launch().map_err(e)?;
            let t1 = stream.record_event(flags).map_err(e)?;
            t1.synchronize().map_err(e)?;
            best = best.min(t0.elapsed_ms(&t1).map_err(e)?);
        }
        Ok(best)
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

    /// Enqueues the convolution with its buffers moved by `remap`.
    pub(crate) fn launch(&self, dnn: &Dnn, stream: &CudaStream, remap: &Remap) -> Result<(), String> {
        let (ws, _g) = dnn.workspace.device_ptr(stream);
        let [x, w, y, bias, z] = self.ptrs.map(|p| remap.at(p));
        let one = 1.0f32;
        let zero = 0.0f32;
        // SAFETY: buffers checked against the arena and the weights at read; descriptors live as
        // long as `self`; alpha/beta are f32 (cuDNN's scaling type for every data type here)
        unsafe {
            if self.separate {
                let one_ptr = &one as *const f32 as *const c_void;
                check(sys::cudnnConvolutionForward(
                    dnn.handle,
                    one_ptr,
                    self.x.0,
                    x as *const c_void,
                    self.w.0,
                    w as *const c_void,
                    self.conv.0,
                    self.algo,
                    ws as *mut c_void,
                    self.workspace,
                    &zero as *const f32 as *const c_void,
                    self.y.0,
                    y as *mut c_void,
                ))?;
                if let Some(e) = &self.epilogue {
                    // the residual, the bias and the activation in one generated pass
                    return e.launch(stream, remap);
                }
                // y += the residual, then the bias (broadcast over its channels)
                let add = |desc, src: u64| {
                    check(sys::cudnnAddTensor(
                        dnn.handle,
                        one_ptr,
                        desc,
                        src as *const c_void,
                        one_ptr,
                        self.y.0,
                        y as *mut c_void,
                    ))
                };
                if self.alpha2 != 0.0 {
                    add(self.y.0, z)?;
                }
                if self.has_bias {
                    add(self.bias.0, bias)?;
                }
            } else {
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
            }
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
