//! Checkpoints as safetensors files (the format of the `safetensors` package; PyTorch's
//! `safetensors.torch.load_file` reads them). Variables keep their var-store names
//! ("0.weight", ...). Loading is strict and all-or-nothing: every key is checked (present,
//! same shape, same dtype, nothing extra) before any variable is written. BatchNorm2d's
//! `num_batches_tracked` (int64 scalar, as in PyTorch's state dict) is written, so PyTorch's
//! `load_state_dict(strict=True)` takes the file; a file without it still loads (the counter
//! is then left as it is).
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("checkpoint {path}: key {key} is missing (the model has it, shape {shape:?})")]
    MissingKey { path: PathBuf, key: String, shape: Vec<i64> },
    #[error("checkpoint {path}: key {key} is not in the model")]
    UnexpectedKey { path: PathBuf, key: String },
    #[error("checkpoint {path}: key {key} has shape {got:?}, the model's is {want:?}")]
    Shape { path: PathBuf, key: String, got: Vec<i64>, want: Vec<i64> },
    #[error("checkpoint {path}: key {key} has dtype {got:?}, the model's is {want:?}")]
    DType { path: PathBuf, key: String, got: Kind, want: Kind },
    /// A training state file that does not fit the fit resuming from it (`resume::load`).
    #[error("training state {path}: {msg}")]
    State { path: PathBuf, msg: String },
}

impl CheckpointError {
    /// The same error with `prefix` before the key (a part of a larger file).
    pub(crate) fn with_prefix(self, prefix: &str) -> CheckpointError {
        use CheckpointError::*;
        match self {
            MissingKey { path, key, shape } => MissingKey { path, key: format!("{prefix}{key}"), shape },
            UnexpectedKey { path, key } => UnexpectedKey { path, key: format!("{prefix}{key}") },
            Shape { path, key, got, want } => Shape { path, key: format!("{prefix}{key}"), got, want },
            DType { path, key, got, want } => DType { path, key: format!("{prefix}{key}"), got, want },
            Io { path, msg } => Io { path, msg },
            State { path, msg } => State { path, msg },
        }
    }
}

/// Writes every variable of `vs` to `path` (safetensors, whatever the extension).
pub fn save(vs: &VarStore, path: &Path) -> Result<(), CheckpointError> {
    // safetensors holds dense row-major data: channels-last weights are written in NCHW order
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().map(|(k, v)| (k, v.contiguous())).collect();
    let named: Vec<(&str, &Tensor)> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Tensor::write_safetensors(&named, path).map_err(|e| CheckpointError::Io { path: path.into(), msg: e.to_string() })
}

/// Reads `path` into the variables of `vs`; on any mismatch nothing is written and the error
/// names the first offending key (in name order).
pub fn load(vs: &VarStore, path: &Path) -> Result<(), CheckpointError> {
    let file = read(path)?;
    verify(vs, path, &file)?;
    assign(vs, path, &file)
}

/// Every tensor of the safetensors file at `path`, by name.
pub(crate) fn read(path: &Path) -> Result<HashMap<String, Tensor>, CheckpointError> {
    let tensors =
        Tensor::read_safetensors(path).map_err(|e| CheckpointError::Io { path: path.into(), msg: e.to_string() })?;
    Ok(tensors.into_iter().collect())
}

/// Whether `file` (read from `path`) fits the variables of `vs`: every key present (but
/// BatchNorm2d's counter), same shape, same dtype, nothing extra.
pub(crate) fn verify(vs: &VarStore, path: &Path, file: &HashMap<String, Tensor>) -> Result<(), CheckpointError> {
    // safetensors holds dense row-major data: channels-last weights are written in NCHW order
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().map(|(k, v)| (k, v.contiguous())).collect();
    for (key, var) in &vars {
        let Some(t) = file.get(key) else {
            if key.ends_with(".num_batches_tracked") {
                // checkpoints from before BatchNorm2d kept the counter: the model's stays
                continue;
            }
            return Err(CheckpointError::MissingKey { path: path.into(), key: key.clone(), shape: var.size() });
        };
        if t.size() != var.size() {
            return Err(CheckpointError::Shape {
                path: path.into(),
                key: key.clone(),
                got: t.size(),
                want: var.size(),
            });
        }
        if t.kind() != var.kind() {
            return Err(CheckpointError::DType {
                path: path.into(),
                key: key.clone(),
                got: t.kind(),
                want: var.kind(),
            });
        }
    }
    let mut extra: Vec<&String> = file.keys().filter(|k| !vars.contains_key(*k)).collect();
    extra.sort();
    if let Some(key) = extra.first() {
        return Err(CheckpointError::UnexpectedKey { path: path.into(), key: (*key).clone() });
    }
    Ok(())
}

/// Copies `file`'s tensors into the variables of `vs` (after `verify`).
pub(crate) fn assign(vs: &VarStore, path: &Path, file: &HashMap<String, Tensor>) -> Result<(), CheckpointError> {
    // safetensors holds dense row-major data: channels-last weights are written in NCHW order
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().map(|(k, v)| (k, v.contiguous())).collect();
    tch::no_grad(|| {
        for (key, var) in vars.iter().filter(|(k, _)| file.contains_key(*k)) {
            let mut var = var.shallow_clone();
            var.f_copy_(&file[key])
                .map_err(|e| CheckpointError::Io { path: path.into(), msg: format!("{key}: {e}") })?;
        }
        Ok(())
    })
}
