//! Comparing tensors against references.
use xforge_ir::Tensor;

pub use xforge_ir::tensor::rel_l2;

/// numpy `assert_allclose` semantics: `|a - b| <= atol + rtol·|b|`, NaNs equal, infinities exact.
/// Returns a description of the first mismatch.
pub fn allclose(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?}, expected {:?}", got.shape(), want.shape()));
    }
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {}, expected {}", got.dtype(), want.dtype()));
    }
    let exact = !want.dtype().is_float();
    if exact {
        let (x, y) = (got.to_i128(), want.to_i128());
        if let Some(i) = (0..x.len()).find(|&i| x[i] != y[i]) {
            return Err(format!("element {i}: {} != {}", x[i], y[i]));
        }
        return Ok(());
    }
    let (x, y) = (got.to_f64(), want.to_f64());
    let mut worst: Option<(usize, f64)> = None;
    let mut bad = 0usize;
    for i in 0..x.len() {
        let (p, q) = (x[i], y[i]);
        let ok = (p.is_nan() && q.is_nan()) || p == q || (p - q).abs() <= atol + rtol * q.abs();
        if !ok {
            bad += 1;
            let err = (p - q).abs();
            if worst.is_none_or(|(_, e)| err > e || err.is_nan()) {
                worst = Some((i, err));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, e)) => Err(format!(
            "{bad} of {} elements differ; worst at {i}: got {} expected {} (|diff| {e:.3e})",
            x.len(),
            x[i],
            y[i]
        )),
    }
}
