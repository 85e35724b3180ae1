//! Resumable training state: one safetensors file with the model's variables under
//! "model.<name>", the optimizer's state under "optimizer.<param>.<slot>" (`Optimizer::state`),
//! the progress as int64 scalars "trainer.epoch" (the next epoch to run) and "trainer.step"
//! (optimizer steps done), the `GradScaler`'s state when the fit has one ("scaler.scale" f64,
//! "scaler.good_steps" and "scaler.skipped" int64) and each stateful callback's state
//! (`Callback::state`, JSON as a uint8 tensor) under "callback.<k>.<name>": k counts the
//! callbacks that have state, in the trainer's order, and name is `Callback::name`, so
//! stateless callbacks (a progress bar, a logger) may come and go between the fits but the
//! stateful ones must be the same, in the same order. Loading is all or nothing for the
//! model, as `checkpoint::load`: every part is checked (the callbacks' list included) before
//! the model, the optimizer, the scaler or a callback changes; a callback that refuses its
//! state (`load_state`) fails the resume before the model is written.
use crate::checkpoint::{self, CheckpointError};
use crate::gradscaler::GradScaler;
use crate::optimizer::Optimizer;
use crate::trainer::Callback;
use std::collections::HashMap;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// Where a fit stands: the next epoch to run and the optimizer steps done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub epoch: usize,
    pub step: usize,
}

/// The keys of `file` that start with `prefix`, without it.
fn part(file: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    file.iter().filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t.shallow_clone()))).collect()
}

/// The state keys ("callback.<k>.<name>") of the callbacks that have state, in order, with
/// their states.
pub fn callback_states(callbacks: &[Box<dyn Callback>]) -> Vec<(String, serde_json::Value)> {
    callbacks
        .iter()
        .filter_map(|c| c.state().map(|s| (c.name(), s)))
        .enumerate()
        .map(|(k, (name, s))| (format!("callback.{k}.{name}"), s))
        .collect()
}

/// Writes the model, the optimizer's state, `progress`, the scaler's state and the
/// callbacks' states (`callback_states`) to `path`.
pub fn save(
    path: &Path,
    vs: &VarStore,
    opt: &Optimizer,
    progress: Progress,
    scaler: Option<&GradScaler>,
    callbacks: &[(String, serde_json::Value)],
) -> Result<(), CheckpointError> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(k, t)| (format!("model.{k}"), t)).collect();
    named.extend(opt.state().into_iter().map(|(k, t)| (format!("optimizer.{k}"), t)));
    named.push(("trainer.epoch".into(), Tensor::from(progress.epoch as i64)));
    named.push(("trainer.step".into(), Tensor::from(progress.step as i64)));
    if let Some(s) = scaler {
        named.push(("scaler.scale".into(), Tensor::from(s.scale)));
        named.push(("scaler.good_steps".into(), Tensor::from(s.good_steps as i64)));
        named.push(("scaler.skipped".into(), Tensor::from(s.skipped as i64)));
    }
    for (key, state) in callbacks {
        named.push((key.clone(), Tensor::from_slice(state.to_string().as_bytes())));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    // safetensors holds dense row-major data: channels-last weights and their momentum go in NCHW order
    let named: Vec<(String, Tensor)> = named.into_iter().map(|(k, t)| (k, t.contiguous())).collect();
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(k, t)| (k.as_str(), t)).collect();
    Tensor::write_safetensors(&refs, path).map_err(|e| CheckpointError::Io { path: path.into(), msg: e.to_string() })
}

/// The scalar `key` of `file`, of kind `kind`.
fn scalar<'a>(
    file: &'a HashMap<String, Tensor>,
    path: &Path,
    key: &str,
    kind: Kind,
) -> Result<&'a Tensor, CheckpointError> {
    match file.get(key) {
        None => Err(CheckpointError::MissingKey { path: path.into(), key: key.into(), shape: vec![] }),
        Some(t) if t.kind() != kind => {
            Err(CheckpointError::DType { path: path.into(), key: key.into(), got: t.kind(), want: kind })
        }
        Some(t) if !t.size().is_empty() => {
            Err(CheckpointError::Shape { path: path.into(), key: key.into(), got: t.size(), want: vec![] })
        }
        Some(t) => Ok(t),
    }
}

/// Reads `path` into the model's variables, the optimizer's state, the scaler (when the fit
/// has one: then the file must have its state, and without one it must not) and the
/// callbacks; returns the progress.
pub fn load(
    path: &Path,
    vs: &VarStore,
    opt: &mut Optimizer,
    scaler: Option<&mut GradScaler>,
    callbacks: &mut [Box<dyn Callback>],
) -> Result<Progress, CheckpointError> {
    let file = checkpoint::read(path)?;
    let counter = |key: &str| -> Result<usize, CheckpointError> {
        Ok(scalar(&file, path, key, Kind::Int64)?.int64_value(&[]).max(0) as usize)
    };
    let progress = Progress { epoch: counter("trainer.epoch")?, step: counter("trainer.step")? };
    let scaler_keys = ["scaler.scale", "scaler.good_steps", "scaler.skipped"];
    let has_scaler = scaler.is_some();
    let known = |k: &str| {
        k.starts_with("model.")
            || k.starts_with("optimizer.")
            || k.starts_with("callback.")
            || k == "trainer.epoch"
            || k == "trainer.step"
            || (has_scaler && scaler_keys.contains(&k))
    };
    let mut extra: Vec<&String> = file.keys().filter(|k| !known(k)).collect();
    extra.sort();
    if let Some(key) = extra.first() {
        return Err(CheckpointError::UnexpectedKey { path: path.into(), key: (*key).clone() });
    }
    let scaled = match scaler.is_some() {
        true => Some((
            scalar(&file, path, "scaler.scale", Kind::Double)?.double_value(&[]),
            counter("scaler.good_steps")?,
            counter("scaler.skipped")?,
        )),
        false => None,
    };
    // the stateful callbacks must be the saved ones, in the saved order
    let given: Vec<String> = callback_states(callbacks).into_iter().map(|(k, _)| k).collect();
    let mut saved: Vec<&String> = file.keys().filter(|k| k.starts_with("callback.")).collect();
    let index = |k: &str| k.split('.').nth(1).and_then(|i| i.parse::<usize>().ok()).unwrap_or(usize::MAX);
    saved.sort_by_key(|k| (index(k), k.to_string()));
    if saved.iter().map(|k| k.as_str()).ne(given.iter().map(|k| k.as_str())) {
        let msg = format!(
            "the fit that wrote it had the stateful callbacks {saved:?}, this trainer has {given:?} \
             (the callbacks that keep state must be the same, in the same order)"
        );
        return Err(CheckpointError::State { path: path.into(), msg });
    }
    let mut states = vec![];
    for key in &given {
        let t = &file[key];
        let json = (t.kind() == Kind::Uint8 && t.dim() == 1)
            .then(|| Vec::<u8>::try_from(t).ok())
            .flatten()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let Some(json) = json else {
            let msg = format!("{key} is not a callback's state (JSON bytes, uint8)");
            return Err(CheckpointError::State { path: path.into(), msg });
        };
        states.push(json);
    }
    let model = part(&file, "model.");
    checkpoint::verify(vs, path, &model).map_err(|e| e.with_prefix("model."))?;
    opt.load_state(&part(&file, "optimizer."), path).map_err(|e| e.with_prefix("optimizer."))?;
    let stateful = callbacks.iter_mut().filter(|c| c.state().is_some());
    for ((c, key), state) in stateful.zip(&given).zip(&states) {
        c.load_state(state).map_err(|e| CheckpointError::State { path: path.into(), msg: format!("{key}: {e}") })?;
    }
    if let (Some(s), Some((scale, good_steps, skipped))) = (scaler, scaled) {
        (s.scale, s.good_steps, s.skipped) = (scale, good_steps, skipped);
    }
    checkpoint::assign(vs, path, &model)?;
    Ok(progress)
}
