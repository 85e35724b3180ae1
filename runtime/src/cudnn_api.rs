//! cuDNN's entry points, opened once per process by the runtime itself rather than by cudarc's
//! loader: cudarc asks for `libcudnn.so` first, which the linker cache may resolve to a system
//! cuDNN while torch has already loaded its own `libcudnn.so.9` in the same process, and two
//! cuDNN versions in one process refuse to run (CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH). Here a
//! cuDNN already in the process is taken first, then `libcudnn.so.9`, then `libcudnn.so`.
//!
//! Types come from cudarc's bindings (`use crate::cudnn_api as sys` reads like cudarc's `sys`);
//! the functions defined here shadow its glob-imported ones.
#![allow(non_snake_case)]

pub(crate) use cudarc::cudnn::sys::*;
use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

/// Library names, in order; a versioned name matches the soname of a copy already loaded.
const NAMES: [&str; 2] = ["libcudnn.so.9", "libcudnn.so"];
/// glibc's RTLD_NOLOAD: open only a library already in the process.
const RTLD_NOLOAD: c_int = 4;

static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// Opens cuDNN (once per process); every entry point below returns NOT_INITIALIZED until it did.
pub(crate) fn open() -> Result<(), String> {
    API.get_or_init(|| {
        let lib = find()?;
        // SAFETY: a cuDNN 9 library; the signatures below are cuDNN 9's (as cudarc's bindings)
        unsafe { Api::bind(lib) }
    })
    .as_ref()
    .map(|_| ())
    .map_err(Clone::clone)
}

fn find() -> Result<libloading::Library, String> {
    use libloading::os::unix::{Library, RTLD_NOW};
    for name in NAMES {
        // SAFETY: only a library already loaded (its initializers have run)
        if let Ok(lib) = unsafe { Library::open(Some(name), RTLD_NOW | RTLD_NOLOAD) } {
            return Ok(lib.into());
        }
    }
    let mut last = String::new();
    for name in NAMES {
        // SAFETY: cuDNN's initializers only set up its own state
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!(
        "the artifact has convolution steps and cuDNN cannot be opened ({last}): put the folder holding \
         libcudnn.so.9 on LD_LIBRARY_PATH"
    ))
}

macro_rules! entry_points {
    ($( fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $missing:expr; )*) => {
        struct Api {
            $( $name: unsafe extern "C" fn($($ty),*) -> $ret, )*
            _lib: libloading::Library,
        }

        impl Api {
            /// SAFETY: `lib` is a cuDNN 9 library.
            unsafe fn bind(lib: libloading::Library) -> Result<Api, String> {
                $(
                    let $name = unsafe {
                        lib.get::<unsafe extern "C" fn($($ty),*) -> $ret>(concat!(stringify!($name), "\0").as_bytes())
                    }
                    .map(|f| *f)
                    .map_err(|e| format!("cuDNN has no {}: {e}", stringify!($name)))?;
                )*
                Ok(Api { $($name,)* _lib: lib })
            }
        }

        $(
            /// cuDNN's function of this name (SAFETY: as cuDNN documents it).
            pub(crate) unsafe fn $name($($arg: $ty),*) -> $ret {
                match API.get() {
                    // SAFETY: the caller keeps cuDNN's contract; the pointer came from the library
                    Some(Ok(api)) => unsafe { (api.$name)($($arg),*) },
                    _ => $missing,
                }
            }
        )*
    };
}

const MISSING: cudnnStatus_t = cudnnStatus_t::CUDNN_STATUS_NOT_INITIALIZED;

entry_points! {
    fn cudnnGetVersion() -> usize = 0;
    fn cudnnCreate(h: *mut cudnnHandle_t) -> cudnnStatus_t = MISSING;
    fn cudnnDestroy(h: cudnnHandle_t) -> cudnnStatus_t = MISSING;
    fn cudnnSetStream(h: cudnnHandle_t, s: cudaStream_t) -> cudnnStatus_t = MISSING;
    fn cudnnCreateTensorDescriptor(t: *mut cudnnTensorDescriptor_t) -> cudnnStatus_t = MISSING;
    fn cudnnSetTensor4dDescriptor(
        t: cudnnTensorDescriptor_t, f: cudnnTensorFormat_t, d: cudnnDataType_t, n: c_int, c: c_int, h: c_int, w: c_int
    ) -> cudnnStatus_t = MISSING;
    fn cudnnDestroyTensorDescriptor(t: cudnnTensorDescriptor_t) -> cudnnStatus_t = MISSING;
    fn cudnnCreateFilterDescriptor(f: *mut cudnnFilterDescriptor_t) -> cudnnStatus_t = MISSING;
    fn cudnnSetFilter4dDescriptor(
        f: cudnnFilterDescriptor_t, d: cudnnDataType_t, l: cudnnTensorFormat_t, k: c_int, c: c_int, h: c_int, w: c_int
    ) -> cudnnStatus_t = MISSING;
    fn cudnnDestroyFilterDescriptor(f: cudnnFilterDescriptor_t) -> cudnnStatus_t = MISSING;
    fn cudnnCreateConvolutionDescriptor(c: *mut cudnnConvolutionDescriptor_t) -> cudnnStatus_t = MISSING;
    fn cudnnSetConvolution2dDescriptor(
        c: cudnnConvolutionDescriptor_t, ph: c_int, pw: c_int, sh: c_int, sw: c_int, dh: c_int, dw: c_int,
        m: cudnnConvolutionMode_t, d: cudnnDataType_t
    ) -> cudnnStatus_t = MISSING;
    fn cudnnSetConvolutionGroupCount(c: cudnnConvolutionDescriptor_t, g: c_int) -> cudnnStatus_t = MISSING;
    fn cudnnSetConvolutionMathType(c: cudnnConvolutionDescriptor_t, m: cudnnMathType_t) -> cudnnStatus_t = MISSING;
    fn cudnnDestroyConvolutionDescriptor(c: cudnnConvolutionDescriptor_t) -> cudnnStatus_t = MISSING;
    fn cudnnCreateActivationDescriptor(a: *mut cudnnActivationDescriptor_t) -> cudnnStatus_t = MISSING;
    fn cudnnSetActivationDescriptor(
        a: cudnnActivationDescriptor_t, m: cudnnActivationMode_t, n: cudnnNanPropagation_t, coef: f64
    ) -> cudnnStatus_t = MISSING;
    fn cudnnDestroyActivationDescriptor(a: cudnnActivationDescriptor_t) -> cudnnStatus_t = MISSING;
    fn cudnnGetConvolutionForwardWorkspaceSize(
        h: cudnnHandle_t, x: cudnnTensorDescriptor_t, w: cudnnFilterDescriptor_t, c: cudnnConvolutionDescriptor_t,
        y: cudnnTensorDescriptor_t, a: cudnnConvolutionFwdAlgo_t, bytes: *mut usize
    ) -> cudnnStatus_t = MISSING;
    fn cudnnConvolutionForward(
        h: cudnnHandle_t, alpha: *const c_void, xd: cudnnTensorDescriptor_t, x: *const c_void,
        wd: cudnnFilterDescriptor_t, w: *const c_void, c: cudnnConvolutionDescriptor_t, a: cudnnConvolutionFwdAlgo_t,
        ws: *mut c_void, ws_bytes: usize, beta: *const c_void, yd: cudnnTensorDescriptor_t, y: *mut c_void
    ) -> cudnnStatus_t = MISSING;
    fn cudnnConvolutionBiasActivationForward(
        h: cudnnHandle_t, alpha1: *const c_void, xd: cudnnTensorDescriptor_t, x: *const c_void,
        wd: cudnnFilterDescriptor_t, w: *const c_void, c: cudnnConvolutionDescriptor_t, a: cudnnConvolutionFwdAlgo_t,
        ws: *mut c_void, ws_bytes: usize, alpha2: *const c_void, zd: cudnnTensorDescriptor_t, z: *const c_void,
        bd: cudnnTensorDescriptor_t, bias: *const c_void, act: cudnnActivationDescriptor_t,
        yd: cudnnTensorDescriptor_t, y: *mut c_void
    ) -> cudnnStatus_t = MISSING;
    fn cudnnAddTensor(
        h: cudnnHandle_t, alpha: *const c_void, ad: cudnnTensorDescriptor_t, a: *const c_void, beta: *const c_void,
        cd: cudnnTensorDescriptor_t, c: *mut c_void
    ) -> cudnnStatus_t = MISSING;
    fn cudnnActivationForward(
        h: cudnnHandle_t, act: cudnnActivationDescriptor_t, alpha: *const c_void, xd: cudnnTensorDescriptor_t,
        x: *const c_void, beta: *const c_void, yd: cudnnTensorDescriptor_t, y: *mut c_void
    ) -> cudnnStatus_t = MISSING;
}
