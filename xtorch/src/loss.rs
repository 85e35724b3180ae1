//! Losses and metrics on logits.
use tch::{Kind, Tensor};

/// Mean cross-entropy of `logits` [N, C] against class indices `targets` [N] (log-softmax + NLL).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits.cross_entropy_for_logits(targets)
}

/// Cross-entropy against targets smoothed by `eps`: (1 − eps)·NLL + eps·mean over classes of
/// −log p (PyTorch's `cross_entropy(..., label_smoothing=eps)`).
pub fn cross_entropy_smoothed(logits: &Tensor, targets: &Tensor, eps: f64) -> Tensor {
    if eps == 0.0 {
        return cross_entropy(logits, targets);
    }
    let logp = logits.log_softmax(-1, Kind::Float);
    let nll = logp.nll_loss(targets);
    let uniform = -logp.mean_dim(-1, false, Kind::Float).mean(Kind::Float);
    nll * (1.0 - eps) + uniform * eps
}

/// Next-token cross-entropy of a sequence model: `logits` [N, T, V] against ids `targets`
/// [N, T], the mean over all N·T positions.
pub fn sequence_cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    cross_entropy(&logits.flatten(0, -2), &targets.flatten(0, -1))
}

/// Mean squared error.
pub fn mse(pred: &Tensor, target: &Tensor) -> Tensor {
    (pred - target).square().mean(Kind::Float)
}

/// Mean binary cross-entropy of logits against targets in [0, 1] (numerically stable form).
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits.binary_cross_entropy_with_logits::<Tensor>(targets, None, None, tch::Reduction::Mean)
}

/// The number of rows whose arg-max is the target.
pub fn correct(logits: &Tensor, targets: &Tensor) -> i64 {
    logits.argmax(-1, false).eq_tensor(targets).sum(Kind::Int64).int64_value(&[])
}

/// The fraction of rows whose arg-max is the target.
pub fn accuracy(logits: &Tensor, targets: &Tensor) -> f64 {
    correct(logits, targets) as f64 / targets.size()[0].max(1) as f64
}

/// The fraction of rows whose target is among the `k` largest logits.
pub fn top_k_accuracy(logits: &Tensor, targets: &Tensor, k: i64) -> f64 {
    let (_, idx) = logits.topk(k, -1, true, true);
    let hit = idx.eq_tensor(&targets.unsqueeze(-1)).any_dim(-1, false);
    hit.sum(Kind::Int64).int64_value(&[]) as f64 / targets.size()[0].max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_and_metrics_on_a_small_case() {
        let logits = Tensor::from_slice(&[2.0f32, 1.0, 0.0, 0.0, 3.0, 1.0]).view([2, 3]);
        let y = Tensor::from_slice(&[0i64, 2]);
        // by hand: log-softmax rows
        let lse = |r: [f64; 3]| r.iter().map(|v| v.exp()).sum::<f64>().ln();
        let (l0, l1) = (lse([2.0, 1.0, 0.0]), lse([0.0, 3.0, 1.0]));
        let nll = ((l0 - 2.0) + (l1 - 1.0)) / 2.0;
        assert!((cross_entropy(&logits, &y).double_value(&[]) - nll).abs() < 1e-6);
        let uni = ((3.0 * l0 - 3.0) + (3.0 * l1 - 4.0)) / 6.0;
        let want = 0.9 * nll + 0.1 * uni;
        assert!((cross_entropy_smoothed(&logits, &y, 0.1).double_value(&[]) - want).abs() < 1e-6);
        assert_eq!(accuracy(&logits, &y), 0.5);
        assert_eq!(top_k_accuracy(&logits, &y, 2), 1.0);
        assert_eq!(top_k_accuracy(&logits, &y, 1), 0.5);
        let p = Tensor::from_slice(&[1.0f32, 2.0]);
        let t = Tensor::from_slice(&[0.0f32, 0.0]);
        assert!((mse(&p, &t).double_value(&[]) - 2.5).abs() < 1e-6);
        let b = bce_with_logits(&Tensor::from_slice(&[0.0f32]), &Tensor::from_slice(&[1.0f32]));
        assert!((b.double_value(&[]) - std::f64::consts::LN_2).abs() < 1e-6);
    }
}
