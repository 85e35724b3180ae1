//! Comparing tensors against references.
use xforge_ir::Tensor;

/// `||a - b||₂ / ||b||₂` over all elements (0 when both are zero).
pub fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (x, y) = (a.to_f64(), b.to_f64());
    let num: f64 = x.iter().zip(&y).map(|(p, q)| (p - q) * (p - q)).sum();
    let den: f64 = y.iter().map(|q| q * q).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

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
