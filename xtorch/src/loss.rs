//! Losses and metrics on logits.
use tch::Tensor;

/// Mean cross-entropy of `logits` [N, C] against class indices `targets` [N] (log-softmax + NLL).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits.cross_entropy_for_logits(targets)
}

/// The number of rows whose arg-max is the target.
pub fn correct(logits: &Tensor, targets: &Tensor) -> i64 {
    logits.argmax(-1, false).eq_tensor(targets).sum(tch::Kind::Int64).int64_value(&[])
}

/// The fraction of rows whose arg-max is the target.
pub fn accuracy(logits: &Tensor, targets: &Tensor) -> f64 {
    correct(logits, targets) as f64 / targets.size()[0].max(1) as f64
}
