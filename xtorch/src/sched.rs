//! Learning-rate schedules: constant, step decay and cosine annealing, each with an optional
//! linear warm-up, as a function of the optimizer step (the `Trainer` sets the rate before each step).
use std::f64::consts::PI;

#[derive(Clone, Debug, PartialEq)]
pub enum LrSchedule {
    Constant,
    /// The base rate times `gamma` for every `every` epochs done (PyTorch's `StepLR`).
    Step {
        every: usize,
        gamma: f64,
    },
    /// From the base rate down to `min_lr` along half a cosine over all the fit's steps
    /// (PyTorch's `CosineAnnealingLR` with `T_max` = the steps, stepped per step).
    Cosine {
        min_lr: f64,
    },
}

/// A schedule with its base rate and `warmup_steps` of linear warm-up (step s < warmup runs at
/// base·(s+1)/warmup, multiplied into the schedule's rate).
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduler {
    pub base_lr: f64,
    pub schedule: LrSchedule,
    pub warmup_steps: usize,
}

impl Scheduler {
    pub fn new(base_lr: f64, schedule: LrSchedule, warmup_steps: usize) -> Scheduler {
        Scheduler { base_lr, schedule, warmup_steps }
    }

    /// The rate for optimizer step `step` (from 0) of `total_steps`, in epoch `epoch`.
    pub fn lr(&self, step: usize, epoch: usize, total_steps: usize) -> f64 {
        let lr = match self.schedule {
            LrSchedule::Constant => self.base_lr,
            LrSchedule::Step { every, gamma } => self.base_lr * gamma.powi((epoch / every.max(1)) as i32),
            LrSchedule::Cosine { min_lr } => {
                let t = step as f64 / total_steps.max(1) as f64;
                min_lr + (self.base_lr - min_lr) * 0.5 * (1.0 + (PI * t).cos())
            }
        };
        if step < self.warmup_steps {
            lr * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            lr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_cosine_and_warm_up() {
        let s = Scheduler::new(0.1, LrSchedule::Step { every: 2, gamma: 0.5 }, 0);
        let by_epoch: Vec<f64> = (0..5).map(|e| s.lr(e * 10, e, 50)).collect();
        assert_eq!(by_epoch, [0.1, 0.1, 0.05, 0.05, 0.025]);
        let c = Scheduler::new(1.0, LrSchedule::Cosine { min_lr: 0.0 }, 0);
        assert_eq!(c.lr(0, 0, 100), 1.0);
        assert!((c.lr(50, 0, 100) - 0.5).abs() < 1e-12);
        assert!(c.lr(99, 0, 100) < 1e-3);
        let w = Scheduler::new(1.0, LrSchedule::Constant, 4);
        let ramp: Vec<f64> = (0..6).map(|s| w.lr(s, 0, 100)).collect();
        assert_eq!(ramp, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }
}
