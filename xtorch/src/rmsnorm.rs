//! Root-mean-square normalization over the last axis (PyTorch's `nn.RMSNorm(features, eps)`):
//! y = x / sqrt(mean(x²) + eps) · weight, no bias and no mean subtraction.
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub features: i64,
    pub eps: f64,
}

impl RmsNorm {
    /// The weight starts at 1 (PyTorch's initialization).
    pub fn new(p: nn::Path, features: i64, eps: f64) -> RmsNorm {
        RmsNorm { weight: p.var("weight", &[features], Init::Const(1.0)), features, eps }
    }

    /// The same operations, in the same order, as the exported graph (Mul, ReduceMean, Add,
    /// Sqrt, Div, Mul).
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let ms = (xs * xs).mean_dim(-1, true, Kind::Float);
        xs / (ms + self.eps).sqrt() * &self.weight
    }
}
