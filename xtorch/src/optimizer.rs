//! The optimizer the `Trainer` steps: SGD (momentum, Nesterov, weight decay) and AdamW with
//! libtorch's update rules (`torch::optim::SGD`, `torch::optim::AdamW`), written on tensors here
//! because libtorch's optimizers (through tch) do not expose their state, and resuming a fit
//! needs it saved. The state per parameter: AdamW's `exp_avg`, `exp_avg_sq` and step count,
//! SGD's `momentum_buffer`; `state()` names them "<param>.exp_avg", ... for a checkpoint.
//! Against libtorch's own optimizers the updates agree to float rounding, not bit for bit:
//! libtorch fuses `add_(x, alpha)` and `addcdiv_(a, b, value)`, which tch does not expose.
//! `zero_grad` zeroes the gradients (libtorch sets them to none): a parameter that gets no
//! gradient in a step is still decayed here, with a zero gradient.
use crate::checkpoint::CheckpointError;
use crate::optim::Optim;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::nn::VarStore;
use tch::{Kind, Tensor};

#[derive(Debug, Default)]
struct ParamState {
    step: i64,
    exp_avg: Option<Tensor>,
    exp_avg_sq: Option<Tensor>,
    momentum_buffer: Option<Tensor>,
}

/// SGD's parameters, gradients and momentum as views of one buffer each: a step is a handful of
/// kernels over the whole model instead of several per parameter (the host's launches, not the
/// GPU, bounded a CIFAR ResNet-18 step), and `zero_grad` one fill. The same arithmetic in the
/// same order as the per-parameter step, so the same bits.
struct Flat {
    params: Tensor,
    grads: Tensor,
    momentum: Tensor,
    /// Each parameter's place in the buffers: offset, sizes and strides (its own layout, such
    /// as channels-last, kept).
    views: Vec<(i64, Vec<i64>, Vec<i64>)>,
}

impl Flat {
    fn view(buf: &Tensor, (offset, size, stride): &(i64, Vec<i64>, Vec<i64>)) -> Tensor {
        buf.as_strided(size.as_slice(), stride.as_slice(), *offset)
    }
}

pub struct Optimizer {
    cfg: Optim,
    lr: f64,
    /// Set for SGD over float parameters on one CUDA device (`flatten`).
    flat: Option<Flat>,
    /// Trainable variables with their var-store names, in the store's creation order (the
    /// order libtorch's optimizer sees them in, which `clip_grad_norm`'s sum follows).
    params: Vec<(String, Tensor)>,
    state: Vec<ParamState>,
}

impl Optimizer {
    /// Over every trainable variable of `vs`.
    pub fn new(cfg: &Optim, vs: &VarStore) -> Optimizer {
        let vars = vs.variables_.lock().unwrap_or_else(|e| e.into_inner());
        let by_ptr: HashMap<usize, &String> =
            vars.named_variables.iter().map(|(k, t)| (t.data_ptr() as usize, k)).collect();
        let params: Vec<(String, Tensor)> = vars
            .trainable_variables
            .iter()
            .map(|v| {
                let name = by_ptr.get(&(v.tensor.data_ptr() as usize)).map(|s| s.to_string()).unwrap_or_default();
                (name, v.tensor.shallow_clone())
            })
            .collect();
        let state = params.iter().map(|_| ParamState::default()).collect();
        let mut opt = Optimizer { cfg: cfg.clone(), lr: cfg.lr(), params, flat: None, state };
        let cuda = opt.params.first().is_some_and(|(_, p)| p.device().is_cuda());
        if cuda {
            opt.flatten();
        }
        opt
    }

    /// SGD only, over f32 parameters on one device, before the first step: moves every
    /// parameter (and its gradient) into one buffer, keeping each one's values and layout. After
    /// it, a parameter that gets no gradient in a step is stepped with a zero gradient (the
    /// gradients are always defined); the per-parameter path skips one that never had one.
    /// Done by `new` on a CUDA device; returns whether it flattened.
    pub fn flatten(&mut self) -> bool {
        let Some((_, first)) = self.params.first() else { return false };
        let (device, kind) = (first.device(), first.kind());
        let stepped = self.state.iter().any(|st| st.step > 0);
        let uniform = self.params.iter().all(|(_, p)| p.device() == device && p.kind() == Kind::Float);
        if !matches!(self.cfg, Optim::Sgd { .. }) || self.flat.is_some() || stepped || !uniform {
            return false;
        }
        let total: i64 = self.params.iter().map(|(_, p)| p.numel() as i64).sum();
        let zeros = || Tensor::zeros([total], (kind, device));
        let (params, grads, momentum) = (zeros(), zeros(), zeros());
        let mut views = Vec::with_capacity(self.params.len());
        let mut offset = 0i64;
        tch::no_grad(|| {
            for (_, p) in &mut self.params {
                let place = (offset, p.size(), p.stride());
                offset += p.numel() as i64;
                let mut v = Flat::view(&params, &place);
                v.copy_(p);
                p.set_data(&v);
                views.push(place);
            }
        });
        // every gradient defined (a zero-weighted backward), then moved onto its view
        for ((_, p), place) in self.params.iter().zip(&views) {
            if !p.grad().defined() {
                (p.sum(Kind::Float) * 0.0).backward();
            }
            let mut g = p.grad();
            g.set_data(&Flat::view(&grads, place));
        }
        let _ = grads.shallow_clone().zero_();
        self.flat = Some(Flat { params, grads, momentum, views });
        true
    }

    /// The parameters it steps (shallow clones: their gradients are the model's).
    pub fn parameters(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, p)| p.shallow_clone()).collect()
    }

    pub fn lr(&self) -> f64 {
        self.lr
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    pub fn zero_grad(&mut self) {
        if let Some(f) = &self.flat {
            let _ = tch::no_grad(|| f.grads.shallow_clone().zero_());
            return;
        }
        for (_, p) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// Scales the gradients down to a total 2-norm of at most `max` (tch's rule: by
    /// max / (norm + 1e-6) when that is below 1).
    pub fn clip_grad_norm(&mut self, max: f64) {
        tch::no_grad(|| {
            let norms: Vec<Tensor> =
                self.params.iter().map(|(_, p)| p.grad()).filter(|g| g.defined()).map(|g| g.norm()).collect();
            if norms.is_empty() {
                return;
            }
            let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
            let coef = max / (total + 1e-6);
            if coef < 1.0 {
                for (_, p) in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(coef);
                    }
                }
            }
        })
    }

    /// One update of every parameter that has a gradient.
    pub fn step(&mut self) {
        if self.flat.is_some() {
            return self.flat_step();
        }
        let lr = self.lr;
        tch::no_grad(|| {
            for ((_, p), st) in self.params.iter_mut().zip(&mut self.state) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                match self.cfg {
                    Optim::AdamW { beta1, beta2, eps, weight_decay, .. } => {
                        if weight_decay != 0.0 {
                            let _ = p.g_mul_scalar_(1.0 - lr * weight_decay);
                        }
                        let m = st.exp_avg.get_or_insert_with(|| p.zeros_like());
                        let v = st.exp_avg_sq.get_or_insert_with(|| p.zeros_like());
                        st.step += 1;
                        let bc1 = 1.0 - beta1.powi(st.step as i32);
                        let bc2 = 1.0 - beta2.powi(st.step as i32);
                        let _ = m.g_mul_scalar_(beta1).g_add_(&(&g * (1.0 - beta1)));
                        let _ = v.g_mul_scalar_(beta2).addcmul_(&g, &(&g * (1.0 - beta2)));
                        let denom = v.sqrt() / bc2.sqrt() + eps;
                        let _ = p.g_add_(&(&*m * (-lr / bc1) / denom));
                    }
                    Optim::Sgd { momentum, nesterov, weight_decay, .. } => {
                        let mut d = if weight_decay != 0.0 { &g + &*p * weight_decay } else { g };
                        if momentum != 0.0 {
                            let buf = match st.momentum_buffer.take() {
                                None => d.detach().copy(),
                                Some(mut b) => {
                                    let _ = b.g_mul_scalar_(momentum).g_add_(&d);
                                    b
                                }
                            };
                            d = if nesterov { &d + &buf * momentum } else { buf.shallow_clone() };
                            st.momentum_buffer = Some(buf);
                        }
                        st.step += 1;
                        let _ = p.g_add_(&(d * -lr));
                    }
                }
            }
        })
    }

    /// `step` over the flat buffers: the per-parameter SGD step's operations, once.
    fn flat_step(&mut self) {
        let (lr, Some(f)) = (self.lr, &self.flat) else { return };
        let Optim::Sgd { momentum, nesterov, weight_decay, .. } = self.cfg else { return };
        tch::no_grad(|| {
            let g = &f.grads;
            let mut d = if weight_decay != 0.0 { g + &f.params * weight_decay } else { g.shallow_clone() };
            if momentum != 0.0 {
                // a fresh buffer is zero: 0·momentum + d = d, the per-parameter path's copy of d
                let mut buf = f.momentum.shallow_clone();
                let _ = buf.g_mul_scalar_(momentum).g_add_(&d);
                d = if nesterov { &d + &buf * momentum } else { buf };
            }
            let mut p = f.params.shallow_clone();
            let _ = p.g_add_(&(d * -lr));
        });
        for (st, place) in self.state.iter_mut().zip(&f.views) {
            st.step += 1;
            if momentum != 0.0 && st.momentum_buffer.is_none() {
                st.momentum_buffer = Some(Flat::view(&f.momentum, place));
            }
        }
    }

    /// `zero_grad`, `loss.backward()`, `step`.
    pub fn backward_step(&mut self, loss: &Tensor) {
        self.zero_grad();
        loss.backward();
        self.step();
    }

    /// The state as named tensors: "<param>.step" (int64 scalar) for every parameter, and
    /// "<param>.exp_avg", "<param>.exp_avg_sq" (AdamW) or "<param>.momentum_buffer" (SGD with
    /// momentum) once the parameter has been stepped.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for ((name, _), st) in self.params.iter().zip(&self.state) {
            out.insert(format!("{name}.step"), Tensor::from(st.step));
            let slots =
                [("exp_avg", &st.exp_avg), ("exp_avg_sq", &st.exp_avg_sq), ("momentum_buffer", &st.momentum_buffer)];
            for (slot, t) in slots {
                if let Some(t) = t {
                    out.insert(format!("{name}.{slot}"), t.detach().copy());
                }
            }
        }
        out
    }

    /// Replaces the state with `file`'s (keys as `state` writes them, from the checkpoint at
    /// `path`, for the error messages). All or nothing: every key is checked first — each
    /// parameter's step present, no key of another optimizer or parameter, slot shapes and
    /// dtypes the parameter's.
    pub fn load_state(&mut self, file: &HashMap<String, Tensor>, path: &Path) -> Result<(), CheckpointError> {
        let slots: &[&str] = match self.cfg {
            Optim::AdamW { .. } => &["exp_avg", "exp_avg_sq"],
            Optim::Sgd { momentum, .. } if momentum != 0.0 => &["momentum_buffer"],
            Optim::Sgd { .. } => &[],
        };
        let mut known = std::collections::HashSet::new();
        for (name, p) in &self.params {
            let key = format!("{name}.step");
            let Some(step) = file.get(&key) else {
                return Err(CheckpointError::MissingKey { path: path.into(), key, shape: vec![] });
            };
            if step.kind() != Kind::Int64 || !step.size().is_empty() {
                return Err(CheckpointError::Shape { path: path.into(), key, got: step.size(), want: vec![] });
            }
            known.insert(key);
            for slot in slots {
                let key = format!("{name}.{slot}");
                if let Some(t) = file.get(&key) {
                    if t.size() != p.size() {
                        return Err(CheckpointError::Shape { path: path.into(), key, got: t.size(), want: p.size() });
                    }
                    if t.kind() != p.kind() {
                        return Err(CheckpointError::DType { path: path.into(), key, got: t.kind(), want: p.kind() });
                    }
                    known.insert(key);
                }
            }
        }
        let mut extra: Vec<&String> = file.keys().filter(|k| !known.contains(*k)).collect();
        extra.sort();
        if let Some(key) = extra.first() {
            return Err(CheckpointError::UnexpectedKey { path: path.into(), key: (*key).clone() });
        }
        let device = self.params.first().map(|(_, p)| p.device()).unwrap_or(tch::Device::Cpu);
        let slot = |name: &str, s: &str| file.get(&format!("{name}.{s}")).map(|t| t.to_device(device).copy());
        for ((name, _), st) in self.params.iter().zip(&mut self.state) {
            *st = ParamState {
                step: file[&format!("{name}.step")].int64_value(&[]),
                exp_avg: slot(name, "exp_avg"),
                exp_avg_sq: slot(name, "exp_avg_sq"),
                momentum_buffer: slot(name, "momentum_buffer"),
            };
        }
        // flat: the loaded momentum goes into the shared buffer (zero where there is none)
        if let Some(f) = &self.flat {
            tch::no_grad(|| {
                for (st, place) in self.state.iter_mut().zip(&f.views) {
                    let mut v = Flat::view(&f.momentum, place);
                    match st.momentum_buffer.take() {
                        Some(t) => {
                            let _ = v.copy_(&t);
                            st.momentum_buffer = Some(v);
                        }
                        None => {
                            let _ = v.zero_();
                        }
                    }
                }
            });
        }
        Ok(())
    }
}
