//! Mixed precision. tch's `autocast` is CUDA-only (it returns the closure's plain f32 result
//! when no CUDA device is present, and drives libtorch's CUDA autocast state only), so xtorch
//! casts for itself, on any device: inside `autocast(Precision::Bf16, ..)` (or `F16`) the
//! matmul-class layers — Linear, Conv1d, Conv2d, ConvTranspose2d and attention's projections
//! and its two batched matmuls — round their input, weight and bias to the reduced type and
//! compute there (libtorch's bf16/fp16 kernels, reduced output), as libtorch's autocast does
//! for its "lower precision" op list; their output is widened back to f32 (exact), so the
//! other ops (norms, softmax, activations, pooling, the loss) run in f32, where autocast would
//! run the elementwise ones in the reduced type. Gradients flow through the casts to the f32
//! master weights. The setting is per thread.
//!
//! On a CUDA device `autocast_on` hands the reduced precision to libtorch's own CUDA autocast
//! instead (its dtype set to bf16 or fp16), which keeps activations in the reduced type
//! through norms, activations and pooling as PyTorch's `torch.autocast` does: half the
//! activation traffic, no widening casts between layers.
use std::cell::Cell;
use tch::{Device, Kind, Tensor};

/// The compute type of the matmul-class layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    /// bfloat16: f32's range, 8 bits of mantissa; no loss scaling needed.
    Bf16,
    /// float16: 11 bits of mantissa, range ±65504; train it with a `GradScaler`.
    F16,
}

impl Precision {
    /// The reduced kind, or None for f32.
    pub fn kind(self) -> Option<Kind> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::F16 => Some(Kind::Half),
        }
    }
}

thread_local! {
    static COMPUTE: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// Runs `f` with the matmul-class layers computing in `precision` (on this thread), then
/// restores the previous setting.
pub fn autocast<T>(precision: Precision, f: impl FnOnce() -> T) -> T {
    struct Restore(Precision);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPUTE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(COMPUTE.with(|c| c.replace(precision)));
    f()
}

/// `autocast(precision, f)` for a model on `device`: on a CUDA device with a reduced
/// precision, libtorch's CUDA autocast in that type (the layers' own casting off), elsewhere
/// xtorch's casting. The caller widens what it needs in f32 (the loss reads f32 logits).
pub fn autocast_on<T>(device: Device, precision: Precision, f: impl FnOnce() -> T) -> T {
    match (device.is_cuda(), precision.kind()) {
        (true, Some(kind)) => {
            libtorch::set_cuda_autocast_dtype(kind);
            tch::autocast(true, || autocast(Precision::F32, f))
        }
        _ => autocast(precision, f),
    }
}

/// The one libtorch call tch does not expose: the reduced type of CUDA autocast (fp16 unless set).
mod libtorch {
    use tch::Kind;

    extern "C" {
        // at::autocast::set_autocast_dtype(c10::DeviceType, c10::ScalarType), in libtorch_cpu;
        // both enums are int8_t-backed, passed as C passes an int8_t
        #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
        fn set_autocast_dtype(device: i8, dtype: i8);
    }

    /// c10::DeviceType::CUDA.
    const CUDA: i8 = 1;

    pub(super) fn set_cuda_autocast_dtype(kind: Kind) {
        // c10::ScalarType: Half = 5, BFloat16 = 15
        let dtype = if kind == Kind::BFloat16 { 15 } else { 5 };
        // SAFETY: a plain setter of libtorch's thread-local autocast state, valid values of both enums
        unsafe { set_autocast_dtype(CUDA, dtype) }
    }
}

/// The precision `autocast` set on this thread.
pub fn precision() -> Precision {
    COMPUTE.with(|c| c.get())
}

/// `f(x, w, b)` in the current precision: in f32 as given, or on the reduced-type casts of x,
/// w and b with the result widened to f32.
pub(crate) fn lowered(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    f: impl FnOnce(&Tensor, &Tensor, Option<&Tensor>) -> Tensor,
) -> Tensor {
    match precision().kind() {
        None => f(x, w, b),
        Some(k) => f(&x.to_kind(k), &w.to_kind(k), b.map(|b| b.to_kind(k)).as_ref()).to_kind(Kind::Float),
    }
}

/// `x·wᵀ + b` in the current precision.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    lowered(x, w, b, |x, w, b| x.linear(w, b))
}

/// `a·b` (batched) in the current precision.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Tensor {
    lowered(a, b, None, |a, b, _| a.matmul(b))
}
