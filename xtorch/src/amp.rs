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
use std::cell::Cell;
use tch::{Kind, Tensor};

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
