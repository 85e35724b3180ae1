//! Resumable training state: one safetensors file with the model's variables under
//! "model.<name>", the optimizer's state under "optimizer.<param>.<slot>" (`Optimizer::state`)
//! and the progress as int64 scalars "trainer.epoch" (the next epoch to run) and
//! "trainer.step" (optimizer steps done). Loading is all or nothing, as `checkpoint::load`:
//! every part is checked before the model or the optimizer changes.
use crate::checkpoint::{self, CheckpointError};
use crate::optimizer::Optimizer;
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

/// Writes the model, the optimizer's state and `progress` to `path`.
pub fn save(path: &Path, vs: &VarStore, opt: &Optimizer, progress: Progress) -> Result<(), CheckpointError> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(k, t)| (format!("model.{k}"), t)).collect();
    named.extend(opt.state().into_iter().map(|(k, t)| (format!("optimizer.{k}"), t)));
    named.push(("trainer.epoch".into(), Tensor::from(progress.epoch as i64)));
    named.push(("trainer.step".into(), Tensor::from(progress.step as i64)));
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(k, t)| (k.as_str(), t)).collect();
    Tensor::write_safetensors(&refs, path).map_err(|e| CheckpointError::Io { path: path.into(), msg: e.to_string() })
}

/// Reads `path` into the model's variables and the optimizer's state; returns the progress.
pub fn load(path: &Path, vs: &VarStore, opt: &mut Optimizer) -> Result<Progress, CheckpointError> {
    let file = checkpoint::read(path)?;
    let counter = |key: &str| -> Result<usize, CheckpointError> {
        match file.get(key) {
            None => Err(CheckpointError::MissingKey { path: path.into(), key: key.into(), shape: vec![] }),
            Some(t) if t.kind() != Kind::Int64 => {
                Err(CheckpointError::DType { path: path.into(), key: key.into(), got: t.kind(), want: Kind::Int64 })
            }
            Some(t) if !t.size().is_empty() => {
                Err(CheckpointError::Shape { path: path.into(), key: key.into(), got: t.size(), want: vec![] })
            }
            Some(t) => Ok(t.int64_value(&[]).max(0) as usize),
        }
    };
    let progress = Progress { epoch: counter("trainer.epoch")?, step: counter("trainer.step")? };
    let known =
        |k: &str| k.starts_with("model.") || k.starts_with("optimizer.") || k == "trainer.epoch" || k == "trainer.step";
    let mut extra: Vec<&String> = file.keys().filter(|k| !known(k)).collect();
    extra.sort();
    if let Some(key) = extra.first() {
        return Err(CheckpointError::UnexpectedKey { path: path.into(), key: (*key).clone() });
    }
    let model = part(&file, "model.");
    checkpoint::verify(vs, path, &model).map_err(|e| e.with_prefix("model."))?;
    opt.load_state(&part(&file, "optimizer."), path).map_err(|e| e.with_prefix("optimizer."))?;
    checkpoint::assign(vs, path, &model)?;
    Ok(progress)
}
