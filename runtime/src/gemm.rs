//! GEMM steps through cuBLASLt. Row-major `D = op(A)·op(B)` is run as the column-major
//! `Dᵀ = op(B)ᵀ·op(A)ᵀ`, so cuBLASLt's "A" is our B, its rows are our columns and its bias
//! (one value per row of its D) is our per-column bias. Descriptors, layouts and the algorithm
//! are chosen once at load; a launch only enqueues the call.
use crate::library::{Activation, GemmDesc, LibDtype};
use crate::remap::Remap;
use cudarc::cublaslt::{result, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::Arc;

/// cuBLASLt's workspace: 32 MiB, NVIDIA's recommendation for Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;

fn lt(e: impl std::fmt::Debug) -> String {
    format!("cuBLASLt: {e:?}")
}

fn data_type(d: LibDtype) -> sys::cudaDataType {
    match d {
        LibDtype::F32 => sys::cudaDataType::CUDA_R_32F,
        LibDtype::F16 => sys::cudaDataType::CUDA_R_16F,
        LibDtype::Bf16 => sys::cudaDataType::CUDA_R_16BF,
    }
}

/// One cuBLASLt handle and workspace per session.
pub(crate) struct Blas {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
}

impl Blas {
    pub(crate) fn new(stream: &Arc<CudaStream>) -> Result<Blas, String> {
        // SAFETY: only probes whether the library can be opened
        if !unsafe { sys::is_culib_present() } {
            return Err("the artifact has GEMM steps and cuBLASLt cannot be opened: put the folder holding libcublasLt.so.13 (or .12) on LD_LIBRARY_PATH, or compile with --generated-gemm".into());
        }
        let handle = result::create_handle().map_err(lt)?;
        // SAFETY: the workspace is scratch: cuBLASLt writes before it reads
        let workspace = unsafe { stream.alloc::<u8>(WORKSPACE_BYTES) }.map_err(|e| e.to_string())?;
        Ok(Blas { handle, workspace })
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}

struct Layout(sys::cublasLtMatrixLayout_t);

impl Layout {
    /// A column-major `rows × cols` matrix with leading dimension `ld`, `batch` of them
    /// `stride` elements apart.
    fn new(d: LibDtype, rows: u64, cols: u64, ld: u64, batch: u64, stride: u64) -> Result<Layout, String> {
        let l = Layout(result::create_matrix_layout(data_type(d), rows, cols, ld as i64).map_err(lt)?);
        if batch > 1 {
            let count = batch as i32;
            let stride = stride as i64;
            // SAFETY: the attribute values are of the types cuBLASLt documents
            unsafe {
                result::set_matrix_layout_attribute(
                    l.0,
                    sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                    &count as *const i32 as *const c_void,
                    size_of::<i32>(),
                )
                .map_err(lt)?;
                result::set_matrix_layout_attribute(
                    l.0,
                    sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                    &stride as *const i64 as *const c_void,
                    size_of::<i64>(),
                )
                .map_err(lt)?;
            }
        }
        Ok(l)
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once
        let _ = unsafe { result::destroy_matrix_layout(self.0) };
    }
}

struct Desc(sys::cublasLtMatmulDesc_t);

impl Desc {
    fn set<T>(&self, attr: sys::cublasLtMatmulDescAttributes_t, value: &T) -> Result<(), String> {
        // SAFETY: `value` is of the type cuBLASLt documents for `attr`
        unsafe { result::set_matmul_desc_attribute(self.0, attr, value as *const T as *const c_void, size_of::<T>()) }
            .map_err(lt)
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once
        let _ = unsafe { result::destroy_matmul_desc(self.0) };
    }
}

/// A GEMM step, ready to enqueue: device addresses are fixed for the session's life.
pub(crate) struct GemmStep {
    desc: Desc,
    layouts: [Layout; 3],
    algo: sys::cublasLtMatmulAlgo_t,
    alpha: f32,
    beta: f32,
    /// A, B, C (the residual, or D when there is none), D
    ptrs: [u64; 4],
    /// The bias address, set in the descriptor at load (a caller's buffer cannot stand in for it)
    bias: Option<u64>,
}

impl GemmStep {
    /// `ptrs`: the call's buffers in descriptor order (A, B, D, bias?, residual?).
    pub(crate) fn new(blas: &Blas, d: &GemmDesc, ptrs: &[u64]) -> Result<GemmStep, String> {
        use sys::cublasLtMatmulDescAttributes_t as A;
        // fp32 stays fp32: no TF32 (CUBLAS_COMPUTE_32F), f32 accumulators for halves too
        let desc = Desc(
            result::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType::CUDA_R_32F)
                .map_err(lt)?,
        );
        // cublasOperation_t: 0 = N, 1 = T
        let op = |t: bool| t as i32;
        // swapped operands: cuBLASLt's A is our B, its B is our A
        desc.set(A::CUBLASLT_MATMUL_DESC_TRANSA, &op(d.trans_b))?;
        desc.set(A::CUBLASLT_MATMUL_DESC_TRANSB, &op(d.trans_a))?;
        let epilogue = match (d.act, d.bias) {
            (Activation::None, false) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT,
            (Activation::None, true) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
            (Activation::Relu, false) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_RELU,
            (Activation::Relu, true) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_RELU_BIAS,
            (Activation::GeluTanh, false) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU,
            (Activation::GeluTanh, true) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_BIAS,
            (a, _) => return Err(format!("activation {a:?} has no cuBLASLt epilogue")),
        };
        desc.set(A::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue)?;
        if d.bias {
            desc.set(A::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ptrs[3])?;
            desc.set(A::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &data_type(d.dtype))?;
        }
        // our B stored [k,n] (or [n,k] transposed) is column-major n×k (k×n); likewise A
        let (b_rows, b_cols) = if d.trans_b { (d.k, d.n) } else { (d.n, d.k) };
        let (a_rows, a_cols) = if d.trans_a { (d.m, d.k) } else { (d.k, d.m) };
        let layouts = [
            Layout::new(d.dtype, b_rows, b_cols, b_rows, d.batch, d.stride_b)?,
            Layout::new(d.dtype, a_rows, a_cols, a_rows, d.batch, d.stride_a)?,
            Layout::new(d.dtype, d.n, d.m, d.n, d.batch, d.m * d.n)?,
        ];
        let pref = result::create_matmul_pref().map_err(lt)?;
        let ws = WORKSPACE_BYTES;
        // SAFETY: every handle is live; the preference takes a usize
        let heuristic = unsafe {
            let set = result::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const usize as *const c_void,
                size_of::<usize>(),
            );
            let h = set.and_then(|_| {
                result::get_matmul_algo_heuristic(
                    blas.handle,
                    desc.0,
                    layouts[0].0,
                    layouts[1].0,
                    layouts[2].0,
                    layouts[2].0,
                    pref,
                )
            });
            let _ = result::destroy_matmul_pref(pref);
            h.map_err(|e| format!("cuBLASLt has no algorithm for {d:?}: {e:?}"))?
        };
        let c = if d.residual { ptrs[if d.bias { 4 } else { 3 }] } else { ptrs[2] };
        let beta = if d.residual { d.beta } else { 0.0 };
        Ok(GemmStep {
            desc,
            layouts,
            algo: heuristic.algo,
            alpha: d.alpha,
            beta,
            ptrs: [ptrs[1], ptrs[0], c, ptrs[2]],
            bias: if d.bias { ptrs.get(3).copied() } else { None },
        })
    }

    /// The address fixed in the descriptor (the bias), if any.
    pub(crate) fn pinned(&self) -> Option<u64> {
        self.bias
    }

    /// Enqueues the GEMM with its buffers moved by `remap`.
    pub(crate) fn launch(&self, blas: &Blas, stream: &CudaStream, remap: &Remap) -> Result<(), String> {
        let (ws, _guard) = blas.workspace.device_ptr(stream);
        let [a, b, c, d] = self.ptrs.map(|p| remap.at(p));
        // SAFETY: the buffers were checked against the arena and the weights when the artifact
        // was read; descriptors and layouts live as long as `self`
        unsafe {
            result::matmul(
                blas.handle,
                self.desc.0,
                &self.alpha as *const f32 as *const c_void,
                &self.beta as *const f32 as *const c_void,
                a as *const c_void,
                self.layouts[0].0,
                b as *const c_void,
                self.layouts[1].0,
                c as *const c_void,
                self.layouts[2].0,
                d as *mut c_void,
                self.layouts[2].0,
                &self.algo,
                ws as *mut c_void,
                WORKSPACE_BYTES,
                stream.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(lt)
    }
}
