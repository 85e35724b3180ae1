//! `Trainer`: epochs of optimizer steps over a `DataLoader`, evaluation after each epoch, and
//! callbacks (progress bar, early stopping, checkpoints of the best and the last epoch, or your own).
//! A fit can save its whole state after every epoch (`save_state`: model, optimizer state,
//! epoch and step) and a later fit can go on from it (`resume`); with `seed`, libtorch's
//! generator is reseeded at every epoch's start, so dropout draws the same masks in a resumed
//! fit as in an uninterrupted one, and 1 epoch + resume 1 epoch gives the weights of 2 epochs
//! bit for bit. The state file also holds the `GradScaler`'s state (scale, good steps, skipped
//! steps) and the callbacks' own state (`Callback::state`: early stopping's best value and wait
//! counter, the checkpoint callback's best value and epoch), so a resumed fit's scaler and
//! callbacks go on where the interrupted fit's were. A callback's state is JSON; its floats
//! are written as strings (Rust's exact round trip: `f64_json`), as serde_json's default float
//! parsing may be off by one unit in the last place.
use crate::amp::{self, Precision};
use crate::checkpoint::{self, CheckpointError};
use crate::gradscaler::GradScaler;
use crate::loader::{DataLoader, LoaderError};
use crate::loss::{correct, cross_entropy_smoothed};
use crate::model::Model;
use crate::modules::ShapeError;
use crate::optim::Optim;
use crate::resume::{self, Progress};
use crate::sched::{LrSchedule, Scheduler};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("epoch {epoch} batch {batch}: the loss is {loss} (diverged)")]
    NonFinite { epoch: usize, batch: usize, loss: f64 },
    #[error("{0}")]
    Callback(String),
}

/// What an epoch measured.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// Mean training loss over the epoch's examples.
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// Hooks the trainer calls; every method has a default that does nothing.
pub trait Callback {
    fn on_fit_start(&mut self, _epochs: usize, _batches_per_epoch: usize) -> Result<(), TrainError> {
        Ok(())
    }
    fn on_batch_end(&mut self, _epoch: usize, _batch: usize, _loss: f64) {}
    fn on_epoch_end(&mut self, _metrics: &EpochMetrics, _model: &Model) -> Result<Control, TrainError> {
        Ok(Control::Continue)
    }
    fn on_fit_end(&mut self, _history: &[EpochMetrics]) {}
    /// The name the callback's state is saved under: its type's name, without the path.
    fn name(&self) -> String {
        let full = std::any::type_name::<Self>();
        let base = full.split('<').next().unwrap_or(full);
        base.rsplit("::").next().unwrap_or(base).to_string()
    }
    /// The state a resumed fit needs (written by `Trainer::save_state` after every epoch,
    /// once the callbacks have seen it, and handed to `load_state` by `Trainer::resume`), or
    /// None for a callback without state.
    fn state(&self) -> Option<serde_json::Value> {
        None
    }
    /// Takes back what `state` returned; an error refuses the resume.
    fn load_state(&mut self, _state: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

/// `v` as JSON for a callback's state: a string holding the float (exact both ways), or null.
pub fn f64_json(v: Option<f64>) -> serde_json::Value {
    match v {
        Some(v) => serde_json::Value::String(format!("{v:?}")),
        None => serde_json::Value::Null,
    }
}

/// The float `f64_json` wrote under `key` of `state` (None for null).
pub fn json_f64(state: &serde_json::Value, key: &str) -> Result<Option<f64>, String> {
    match state.get(key) {
        Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => s.parse().map(Some).map_err(|e| format!("{key}: {s:?}: {e}")),
        other => Err(format!("{key}: a float written as a string or null is required, found {other:?}")),
    }
}

/// The count under `key` of `state` (None for null).
fn json_count(state: &serde_json::Value, key: &str) -> Result<Option<usize>, String> {
    match state.get(key) {
        Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| format!("{key}: a count is required, found {v}")),
        None => Err(format!("{key} is missing")),
    }
}

/// A quantity to watch: lower validation loss or higher validation accuracy is better
/// (the training loss when there is no validation set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monitor {
    ValLoss,
    ValAccuracy,
}

impl Monitor {
    fn value(self, m: &EpochMetrics) -> f64 {
        match self {
            Monitor::ValLoss => m.val_loss.unwrap_or(m.train_loss),
            Monitor::ValAccuracy => m.val_accuracy.unwrap_or(f64::NAN),
        }
    }
    /// Whether `v` improves on `best` by more than `min_delta`.
    fn improves(self, v: f64, best: Option<f64>, min_delta: f64) -> bool {
        match best {
            None => !v.is_nan(),
            Some(b) => match self {
                Monitor::ValLoss => v < b - min_delta,
                Monitor::ValAccuracy => v > b + min_delta,
            },
        }
    }
}

pub struct Trainer {
    pub max_epochs: usize,
    callbacks: Vec<Box<dyn Callback>>,
    schedule: LrSchedule,
    warmup_steps: usize,
    clip_grad_norm: Option<f64>,
    accumulate: usize,
    label_smoothing: f64,
    seed: Option<u64>,
    save_state: Option<PathBuf>,
    resume: Option<PathBuf>,
    precision: Precision,
    scaler: Option<GradScaler>,
}

/// What `fit` did.
#[derive(Debug)]
pub struct FitReport {
    pub history: Vec<EpochMetrics>,
    pub stopped_early: bool,
}

impl Trainer {
    pub fn new(max_epochs: usize) -> Trainer {
        Trainer {
            max_epochs,
            callbacks: vec![],
            schedule: LrSchedule::Constant,
            warmup_steps: 0,
            clip_grad_norm: None,
            accumulate: 1,
            label_smoothing: 0.0,
            seed: None,
            save_state: None,
            resume: None,
            precision: Precision::F32,
            scaler: None,
        }
    }

    /// The forward passes (training and evaluation) under `amp::autocast(precision)`: the
    /// matmul-class layers compute in bf16 or fp16, the rest and the weights stay f32.
    pub fn precision(mut self, precision: Precision) -> Trainer {
        self.precision = precision;
        self
    }

    /// Loss scaling (for `Precision::F16`): the scaled loss is backpropagated, the gradients
    /// unscaled before clipping, and a step whose gradients hold an inf or NaN is skipped
    /// (a non-finite loss then skips its step instead of failing the fit). The scaler's state
    /// after the fit: `scaler()`.
    pub fn grad_scaler(mut self, scaler: GradScaler) -> Trainer {
        self.scaler = Some(scaler);
        self
    }

    /// The grad scaler (its scale and skipped steps so far), if one was given.
    pub fn scaler(&self) -> Option<&GradScaler> {
        self.scaler.as_ref()
    }

    /// Reseeds libtorch's (process-wide) generator with `seed` + epoch at the start of every
    /// epoch, so each epoch's random draws (dropout) depend only on the seed and the epoch.
    pub fn seed(mut self, seed: u64) -> Trainer {
        self.seed = Some(seed);
        self
    }

    /// Writes the fit's state to `path` after every epoch (`resume::save`), after the
    /// callbacks have seen the epoch (so their state includes it).
    pub fn save_state(mut self, path: impl Into<PathBuf>) -> Trainer {
        self.save_state = Some(path.into());
        self
    }

    /// Starts the fit from the state in `path` (`resume::load`): the model's weights, the
    /// optimizer's state, the epoch to go on with and the step count (which the schedule
    /// follows), the grad scaler's state and the stateful callbacks' states. Give the same
    /// `max_epochs`, schedule, data, seed, scaler and stateful callbacks as the fit that wrote
    /// it (other stateful callbacks, or a scaler present in only one of the fits, are refused).
    pub fn resume(mut self, path: impl Into<PathBuf>) -> Trainer {
        self.resume = Some(path.into());
        self
    }

    /// The learning rate along the fit (the optimizer's rate is the base), after `warmup_steps`
    /// optimizer steps of linear warm-up.
    pub fn schedule(mut self, schedule: LrSchedule, warmup_steps: usize) -> Trainer {
        self.schedule = schedule;
        self.warmup_steps = warmup_steps;
        self
    }

    /// Scales the gradients down to a total 2-norm of at most `max` before each step.
    pub fn clip_grad_norm(mut self, max: f64) -> Trainer {
        self.clip_grad_norm = Some(max);
        self
    }

    /// One optimizer step per `batches` batches, on the mean of their gradients (the last step
    /// of an epoch takes what is left).
    pub fn accumulate(mut self, batches: usize) -> Trainer {
        assert!(batches > 0, "accumulating over 0 batches");
        self.accumulate = batches;
        self
    }

    /// Cross-entropy against targets smoothed by `eps` (`loss::cross_entropy_smoothed`).
    pub fn label_smoothing(mut self, eps: f64) -> Trainer {
        self.label_smoothing = eps;
        self
    }

    pub fn callback(mut self, c: impl Callback + 'static) -> Trainer {
        self.callbacks.push(Box::new(c));
        self
    }

    /// The callbacks, in the order they were added (their `state()` after a fit).
    pub fn callbacks(&self) -> &[Box<dyn Callback>] {
        &self.callbacks
    }

    /// Trains `model` with `optim` on `train`, evaluating on `val` after each epoch.
    pub fn fit(
        &mut self,
        model: &Model,
        optim: &Optim,
        train: &DataLoader,
        val: Option<&DataLoader>,
    ) -> Result<FitReport, TrainError> {
        let mut opt = optim.optimizer(&model.vs);
        let start = match &self.resume {
            Some(path) => resume::load(path, &model.vs, &mut opt, self.scaler.as_mut(), &mut self.callbacks)?,
            None => Progress { epoch: 0, step: 0 },
        };
        for c in &mut self.callbacks {
            c.on_fit_start(self.max_epochs, train.len())?;
        }
        let sched = Scheduler::new(optim.lr(), self.schedule.clone(), self.warmup_steps);
        let steps_per_epoch = train.len().div_ceil(self.accumulate);
        let total_steps = steps_per_epoch * self.max_epochs;
        let mut step = start.step;
        let mut lr = optim.lr();
        let mut history = vec![];
        let mut stopped_early = false;
        for epoch in start.epoch..self.max_epochs {
            if let Some(seed) = self.seed {
                tch::manual_seed(seed.wrapping_add(epoch as u64) as i64);
            }
            let mut seen = LossRecord { epoch, sum: 0.0, n: 0, pending: None };
            let batches = train.len();
            opt.zero_grad();
            for (b, batch) in train.epoch(epoch).enumerate() {
                let batch = batch?;
                let (x, y) = (to_device(&batch.inputs, model.device()), to_device(&batch.targets, model.device()));
                let logits = amp::autocast_on(model.device(), self.precision, || model.net.f_forward_t(&x, true))?
                    .to_kind(Kind::Float);
                let loss = cross_entropy_smoothed(&logits, &y, self.label_smoothing);
                // the previous batch's loss is read now, once this batch's work is queued:
                // the host never waits for the GPU to drain
                seen.push(b, loss.detach(), y.size()[0], self.scaler.is_none(), &mut self.callbacks)?;
                // the group's batches each carry 1/size of the step's gradient
                let group = b / self.accumulate;
                let size = self.accumulate.min(batches - group * self.accumulate);
                let loss = loss / size as f64;
                match &self.scaler {
                    Some(s) => s.scale(&loss).backward(),
                    None => loss.backward(),
                }
                if (b + 1) % self.accumulate == 0 || b + 1 == batches {
                    let found_inf = match &self.scaler {
                        Some(s) => s.unscale(&opt.parameters()),
                        None => false,
                    };
                    if let Some(max) = self.clip_grad_norm.filter(|_| !found_inf) {
                        opt.clip_grad_norm(max);
                    }
                    lr = sched.lr(step, epoch, total_steps);
                    opt.set_lr(lr);
                    if !found_inf {
                        opt.step();
                    }
                    if let Some(s) = &mut self.scaler {
                        s.update(found_inf);
                    }
                    opt.zero_grad();
                    step += 1;
                }
            }
            seen.flush(self.scaler.is_none(), &mut self.callbacks)?;
            let (val_loss, val_accuracy) = match val {
                Some(v) => {
                    let (l, a) = amp::autocast_on(model.device(), self.precision, || evaluate(model, v))?;
                    (Some(l), Some(a))
                }
                None => (None, None),
            };
            let m = EpochMetrics { epoch, train_loss: seen.sum / seen.n.max(1) as f64, val_loss, val_accuracy, lr };
            let mut stop = false;
            for c in &mut self.callbacks {
                stop |= c.on_epoch_end(&m, model)? == Control::Stop;
            }
            if let Some(path) = &self.save_state {
                let progress = Progress { epoch: epoch + 1, step };
                let states = resume::callback_states(&self.callbacks);
                resume::save(path, &model.vs, &opt, progress, self.scaler.as_ref(), &states)?;
            }
            history.push(m);
            if stop {
                stopped_early = epoch + 1 < self.max_epochs;
                break;
            }
        }
        for c in &mut self.callbacks {
            c.on_fit_end(&history);
        }
        Ok(FitReport { history, stopped_early })
    }
}

/// `t` on `device`; from page-locked memory without waiting for the device (the copy is
/// ordered on the stream before the work that reads it).
fn to_device(t: &Tensor, device: Device) -> Tensor {
    let pinned = device.is_cuda() && t.device() == Device::Cpu && t.is_pinned(device);
    t.to_device_(device, t.kind(), pinned, false)
}

/// An epoch's training losses, each read one batch late (while the next batch's work is queued
/// on the device), summed for the epoch's mean and told to the callbacks in batch order.
struct LossRecord {
    epoch: usize,
    sum: f64,
    n: i64,
    /// The batch index, its loss (not yet read from the device) and its rows.
    pending: Option<(usize, Tensor, i64)>,
}

impl LossRecord {
    /// Queues batch `b`'s loss and reads the one before it; with `strict`, a non-finite loss
    /// stops training (one optimizer step after the batch that produced it).
    fn push(
        &mut self,
        b: usize,
        loss: Tensor,
        rows: i64,
        strict: bool,
        callbacks: &mut [Box<dyn Callback>],
    ) -> Result<(), TrainError> {
        match self.pending.replace((b, loss, rows)) {
            Some(done) => self.read(done, strict, callbacks),
            None => Ok(()),
        }
    }

    fn flush(&mut self, strict: bool, callbacks: &mut [Box<dyn Callback>]) -> Result<(), TrainError> {
        match self.pending.take() {
            Some(done) => self.read(done, strict, callbacks),
            None => Ok(()),
        }
    }

    fn read(
        &mut self,
        (b, loss, rows): (usize, Tensor, i64),
        strict: bool,
        callbacks: &mut [Box<dyn Callback>],
    ) -> Result<(), TrainError> {
        let l = loss.double_value(&[]);
        if !l.is_finite() && strict {
            return Err(TrainError::NonFinite { epoch: self.epoch, batch: b, loss: l });
        }
        if l.is_finite() {
            self.sum += l * rows as f64;
            self.n += rows;
        }
        for c in callbacks.iter_mut() {
            c.on_batch_end(self.epoch, b, l);
        }
        Ok(())
    }
}

/// Mean cross-entropy and accuracy of `model` (evaluation mode, no gradients) over `data`.
pub fn evaluate(model: &Model, data: &DataLoader) -> Result<(f64, f64), TrainError> {
    let _guard = tch::no_grad_guard();
    let (mut loss, mut right, mut n) = (0.0, 0i64, 0i64);
    for batch in data.epoch(0) {
        let batch = batch?;
        let x = batch.inputs.to_device(model.device());
        let y = batch.targets.to_device(model.device());
        let logits = model.net.f_forward_t(&x, false)?;
        let rows = y.size()[0];
        loss += logits.cross_entropy_for_logits(&y).to_kind(Kind::Double).double_value(&[]) * rows as f64;
        right += correct(&logits, &y);
        n += rows;
    }
    Ok((loss / n.max(1) as f64, right as f64 / n.max(1) as f64))
}

/// A progress bar over all the fit's batches (indicatif; drawn only on a terminal).
#[derive(Default)]
pub struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressBar {
    pub fn new() -> ProgressBar {
        ProgressBar::default()
    }
}

impl Callback for ProgressBar {
    fn on_fit_start(&mut self, epochs: usize, batches: usize) -> Result<(), TrainError> {
        let bar = indicatif::ProgressBar::new((epochs * batches) as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} batches {msg} [{elapsed}]") {
            bar.set_style(style);
        }
        self.bar = Some(bar);
        Ok(())
    }
    fn on_batch_end(&mut self, epoch: usize, _batch: usize, loss: f64) {
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(format!("epoch {epoch} loss {loss:.4}"));
        }
    }
    fn on_epoch_end(&mut self, m: &EpochMetrics, _model: &Model) -> Result<Control, TrainError> {
        if let Some(b) = &self.bar {
            let val = match (m.val_loss, m.val_accuracy) {
                (Some(l), Some(a)) => format!(", val loss {l:.4}, val accuracy {:.2}%", a * 100.0),
                _ => String::new(),
            };
            b.println(format!("epoch {}: train loss {:.4}{val}", m.epoch, m.train_loss));
        }
        Ok(Control::Continue)
    }
    fn on_fit_end(&mut self, _history: &[EpochMetrics]) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Stops when `monitor` has not improved by more than `min_delta` for `patience` epochs.
pub struct EarlyStopping {
    pub monitor: Monitor,
    pub patience: usize,
    pub min_delta: f64,
    best: Option<f64>,
    waited: usize,
}

impl EarlyStopping {
    pub fn new(monitor: Monitor, patience: usize, min_delta: f64) -> EarlyStopping {
        EarlyStopping { monitor, patience, min_delta, best: None, waited: 0 }
    }

    /// The best value seen so far.
    pub fn best(&self) -> Option<f64> {
        self.best
    }

    /// Epochs since the last improvement.
    pub fn waited(&self) -> usize {
        self.waited
    }
}

impl Callback for EarlyStopping {
    fn on_epoch_end(&mut self, m: &EpochMetrics, _model: &Model) -> Result<Control, TrainError> {
        let v = self.monitor.value(m);
        if self.monitor.improves(v, self.best, self.min_delta) {
            self.best = Some(v);
            self.waited = 0;
            return Ok(Control::Continue);
        }
        self.waited += 1;
        Ok(if self.waited >= self.patience { Control::Stop } else { Control::Continue })
    }
    fn state(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "best": f64_json(self.best), "waited": self.waited }))
    }
    fn load_state(&mut self, state: &serde_json::Value) -> Result<(), String> {
        let best = json_f64(state, "best")?;
        let waited = json_count(state, "waited")?.ok_or("waited: a count is required, found null")?;
        (self.best, self.waited) = (best, waited);
        Ok(())
    }
}

/// Writes `dir/last.safetensors` after every epoch and `dir/best.safetensors` whenever `monitor`
/// improves; `best_epoch` says which epoch the best file holds.
pub struct ModelCheckpoint {
    pub dir: PathBuf,
    pub monitor: Monitor,
    best: Option<f64>,
    best_epoch: std::sync::Arc<std::sync::Mutex<Option<usize>>>,
}

impl ModelCheckpoint {
    pub fn new(dir: impl Into<PathBuf>, monitor: Monitor) -> ModelCheckpoint {
        ModelCheckpoint { dir: dir.into(), monitor, best: None, best_epoch: Default::default() }
    }

    /// A handle that reads the best epoch after the trainer has taken the callback.
    pub fn best_epoch_handle(&self) -> std::sync::Arc<std::sync::Mutex<Option<usize>>> {
        self.best_epoch.clone()
    }

    pub fn last_path(&self) -> PathBuf {
        self.dir.join("last.safetensors")
    }

    pub fn best_path(&self) -> PathBuf {
        self.dir.join("best.safetensors")
    }
}

impl Callback for ModelCheckpoint {
    fn on_fit_start(&mut self, _epochs: usize, _batches: usize) -> Result<(), TrainError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| CheckpointError::Io { path: self.dir.clone(), msg: e.to_string() })?;
        Ok(())
    }
    fn on_epoch_end(&mut self, m: &EpochMetrics, model: &Model) -> Result<Control, TrainError> {
        checkpoint::save(&model.vs, &self.last_path())?;
        let v = self.monitor.value(m);
        if self.monitor.improves(v, self.best, 0.0) {
            self.best = Some(v);
            checkpoint::save(&model.vs, &self.best_path())?;
            *self.best_epoch.lock().unwrap() = Some(m.epoch);
        }
        Ok(Control::Continue)
    }
    fn state(&self) -> Option<serde_json::Value> {
        let best_epoch = *self.best_epoch.lock().unwrap();
        Some(serde_json::json!({ "best": f64_json(self.best), "best_epoch": best_epoch }))
    }
    fn load_state(&mut self, state: &serde_json::Value) -> Result<(), String> {
        let best = json_f64(state, "best")?;
        let best_epoch = json_count(state, "best_epoch")?;
        self.best = best;
        *self.best_epoch.lock().unwrap() = best_epoch;
        Ok(())
    }
}

/// Appends one JSON object per epoch to a file (JSON Lines): epoch, train_loss, val_loss,
/// val_accuracy (null without validation) and lr.
pub struct JsonlLogger {
    pub path: PathBuf,
}

impl JsonlLogger {
    pub fn new(path: impl Into<PathBuf>) -> JsonlLogger {
        JsonlLogger { path: path.into() }
    }
}

fn json_number(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".into(),
    }
}

impl Callback for JsonlLogger {
    fn on_epoch_end(&mut self, m: &EpochMetrics, _model: &Model) -> Result<Control, TrainError> {
        use std::io::Write;
        let line = format!(
            "{{\"epoch\":{},\"train_loss\":{},\"val_loss\":{},\"val_accuracy\":{},\"lr\":{}}}\n",
            m.epoch,
            json_number(Some(m.train_loss)),
            json_number(m.val_loss),
            json_number(m.val_accuracy),
            json_number(Some(m.lr))
        );
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| TrainError::Callback(format!("{}: {e}", self.path.display())))?;
        Ok(Control::Continue)
    }
}
