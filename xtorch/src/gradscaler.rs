//! Loss scaling for float16 training (PyTorch's `torch.amp.GradScaler`, same defaults): the
//! loss is multiplied by `scale` before `backward` so that small gradients do not flush to
//! zero in fp16; `unscale` divides the gradients back and reports whether any is inf or NaN;
//! a step with a non-finite gradient is skipped and the scale multiplied by `backoff` (½),
//! and after `growth_interval` finite steps in a row the scale grows by `growth` (2×).
use crate::optimizer::Optimizer;
use tch::{Kind, Tensor};

#[derive(Clone, Debug, PartialEq)]
pub struct GradScaler {
    pub scale: f64,
    pub growth: f64,
    pub backoff: f64,
    pub growth_interval: usize,
    /// Finite steps since the scale last changed.
    pub good_steps: usize,
    /// Steps skipped so far (a non-finite gradient).
    pub skipped: usize,
}

impl Default for GradScaler {
    /// Scale 2¹⁶, growth 2, backoff ½, growth interval 2000 (PyTorch's defaults).
    fn default() -> Self {
        GradScaler { scale: 65536.0, growth: 2.0, backoff: 0.5, growth_interval: 2000, good_steps: 0, skipped: 0 }
    }
}

impl GradScaler {
    pub fn new(scale: f64, growth_interval: usize) -> GradScaler {
        GradScaler { scale, growth_interval, ..Default::default() }
    }

    /// `loss · scale`, to call `backward` on.
    pub fn scale(&self, loss: &Tensor) -> Tensor {
        loss * self.scale
    }

    /// Divides the gradients of `params` by the scale (in place); true if any gradient holds
    /// an inf or a NaN.
    pub fn unscale(&self, params: &[Tensor]) -> bool {
        tch::no_grad(|| {
            let mut bad = Tensor::zeros([], (Kind::Int64, tch::Device::Cpu));
            for p in params {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(1.0 / self.scale);
                    bad += g.isfinite().logical_not().sum(Kind::Int64).to_device(tch::Device::Cpu);
                }
            }
            bad.int64_value(&[]) > 0
        })
    }

    /// After a step: back off and restart the count on `found_inf`, else count a good step
    /// and grow the scale after `growth_interval` of them.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= self.backoff;
            self.good_steps = 0;
            self.skipped += 1;
        } else {
            self.good_steps += 1;
            if self.good_steps == self.growth_interval {
                self.scale *= self.growth;
                self.good_steps = 0;
            }
        }
    }

    /// Unscales `opt`'s gradients, steps it unless one is inf or NaN, and updates the scale;
    /// true if the step was taken. (To clip gradients, call `unscale`, clip, then step and
    /// `update` yourself, as the `Trainer` does.)
    pub fn step(&mut self, opt: &mut Optimizer) -> bool {
        let found_inf = self.unscale(&opt.parameters());
        if !found_inf {
            opt.step();
        }
        self.update(found_inf);
        !found_inf
    }
}
