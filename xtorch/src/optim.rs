//! Optimizers: SGD (momentum, Nesterov, weight decay) and AdamW, as libtorch implements them.
use tch::nn::{self, OptimizerConfig as _};

#[derive(Clone, Debug)]
pub enum Optim {
    Sgd { lr: f64, momentum: f64, nesterov: bool, weight_decay: f64 },
    AdamW { lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64 },
}

impl Optim {
    pub fn sgd(lr: f64, momentum: f64) -> Optim {
        Optim::Sgd { lr, momentum, nesterov: false, weight_decay: 0.0 }
    }

    /// PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    pub fn adamw(lr: f64) -> Optim {
        Optim::AdamW { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }

    pub fn lr(&self) -> f64 {
        match self {
            Optim::Sgd { lr, .. } | Optim::AdamW { lr, .. } => *lr,
        }
    }

    /// xtorch's optimizer over every trainable variable of `vs` (the one the `Trainer` uses;
    /// its state can be saved and loaded).
    pub fn optimizer(&self, vs: &nn::VarStore) -> crate::optimizer::Optimizer {
        crate::optimizer::Optimizer::new(self, vs)
    }

    /// libtorch's optimizer (through tch) over every trainable variable of `vs`.
    pub fn build(&self, vs: &nn::VarStore) -> Result<nn::Optimizer, tch::TchError> {
        match *self {
            Optim::Sgd { lr, momentum, nesterov, weight_decay } => {
                nn::Sgd { momentum, dampening: 0.0, wd: weight_decay, nesterov }.build(vs, lr)
            }
            Optim::AdamW { lr, beta1, beta2, eps, weight_decay } => {
                nn::AdamW { beta1, beta2, wd: weight_decay, eps, amsgrad: false }.build(vs, lr)
            }
        }
    }
}
