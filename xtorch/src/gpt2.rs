//! GPT-2 from a Hugging Face model directory (`config.json` + `model.safetensors`, as
//! `save_pretrained` writes them) into xtorch's GPT structure: token and position embeddings,
//! pre-norm causal blocks (LayerNorm → multi-head attention → residual, LayerNorm → Linear →
//! activation → Linear → residual), a final LayerNorm and an LM head tied to the token
//! embedding (the head's weight *is* the embedding's variable, as in GPT-2: one parameter,
//! gradients from both uses; no head bias).
//! GPT-2's names map as: wte → "0.weight", wpe → "1.weight", h.i.ln_1 → "{2+2i}.body.0",
//! h.i.attn.c_attn → "{2+2i}.body.1.in_proj_weight/bias", h.i.attn.c_proj →
//! "{2+2i}.body.1.out_proj", h.i.ln_2 → "{3+2i}.body.0", h.i.mlp.c_fc → "{3+2i}.body.1",
//! h.i.mlp.c_proj → "{3+2i}.body.3", ln_f → "{2+2L}". GPT-2's `Conv1D` stores its weight as
//! [in, out]: it is transposed into PyTorch's (and xtorch's) [out, in]. Keys may carry
//! `GPT2LMHeadModel`'s "transformer." prefix; the causal-mask buffers older versions saved
//! (".attn.bias", ".attn.masked_bias") are skipped; an `lm_head.weight` must equal wte (tied).
//! Loading is all-or-nothing: every key is checked (present, float, GPT-2's shape for this
//! config) before any variable is written; an error names the file's key.
use crate::checkpoint::{self, CheckpointError};
use crate::model::Model;
use crate::modules::{
    Embedding, Layer, LayerNorm, Linear, MultiheadAttention, PositionEmbedding, Residual, Sequential,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::nn;
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("{path}: {what} is not supported")]
    Unsupported { path: PathBuf, what: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// `dir`/config.json parsed, with its path (for the errors of the config readers).
pub(crate) fn config_json(dir: &Path) -> Result<(PathBuf, serde_json::Value), HfError> {
    let path = dir.join("config.json");
    let err = |msg: String| HfError::Config { path: path.clone(), msg };
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    let v = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    Ok((path, v))
}

/// The GPT-2 sizes and options xtorch reads from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Config {
    pub vocab: i64,
    /// `n_positions`: the longest sequence.
    pub max_len: i64,
    pub dim: i64,
    pub layers: i64,
    pub heads: i64,
    /// `n_inner`, 4·dim when null.
    pub hidden: i64,
    /// `activation_function`: "gelu_new" / "gelu_pytorch_tanh" (the tanh form), "gelu", "relu".
    pub activation: String,
    pub eps: f64,
}

impl Gpt2Config {
    fn activation_layer(&self) -> Layer {
        match self.activation.as_str() {
            "gelu" => Layer::GELU,
            "relu" => Layer::ReLU,
            _ => Layer::GELUTanh,
        }
    }
}

/// `dir`/config.json as a `Gpt2Config`; options xtorch's structure does not compute (another
/// model type, unscaled or layer-scaled attention, cross-attention, another activation) are
/// refused by name.
pub fn read_config(dir: &Path) -> Result<Gpt2Config, HfError> {
    let (path, v) = config_json(dir)?;
    let cfg_err = |msg: String| HfError::Config { path: path.clone(), msg };
    let int =
        |k: &str| v.get(k).and_then(|x| x.as_i64()).ok_or_else(|| cfg_err(format!("{k}: an integer is required")));
    let unsupported = |what: String| HfError::Unsupported { path: path.clone(), what };
    if let Some(t) = v.get("model_type").and_then(|t| t.as_str()) {
        if t != "gpt2" {
            return Err(unsupported(format!("model_type {t:?} (GPT-2 only)")));
        }
    }
    for (flag, want) in
        [("scale_attn_weights", true), ("scale_attn_by_inverse_layer_idx", false), ("add_cross_attention", false)]
    {
        if let Some(b) = v.get(flag).and_then(|b| b.as_bool()) {
            if b != want {
                return Err(unsupported(format!("{flag} = {b}")));
            }
        }
    }
    let activation = v.get("activation_function").and_then(|a| a.as_str()).unwrap_or("gelu_new").to_string();
    if !["gelu_new", "gelu_pytorch_tanh", "gelu", "relu"].contains(&activation.as_str()) {
        return Err(unsupported(format!("activation_function {activation:?}")));
    }
    let dim = int("n_embd")?;
    let heads = int("n_head")?;
    if heads <= 0 || dim % heads != 0 {
        return Err(cfg_err(format!("n_embd {dim} is not a multiple of n_head {heads}")));
    }
    let hidden = match v.get("n_inner") {
        None | Some(serde_json::Value::Null) => 4 * dim,
        Some(_) => int("n_inner")?,
    };
    Ok(Gpt2Config {
        vocab: int("vocab_size")?,
        max_len: int("n_positions")?,
        dim,
        layers: int("n_layer")?,
        heads,
        hidden,
        activation,
        eps: v.get("layer_norm_epsilon").and_then(|e| e.as_f64()).unwrap_or(1e-5),
    })
}

/// Token ids [N, T] (int64) → logits [N, T, vocab], GPT-2's structure (see the module docs).
pub fn gpt2(p: &nn::Path, c: &Gpt2Config) -> Sequential {
    let mut s = Sequential::new()
        .push_with(p, |q| Layer::Embedding(Embedding::new(q, c.vocab, c.dim)))
        .push_with(p, |q| Layer::PositionEmbedding(PositionEmbedding::new(q, c.max_len, c.dim)));
    for _ in 0..c.layers {
        s = s.push_with(p, |q| {
            let b = &q / "body";
            let body = Sequential::new()
                .push_with(&b, |q| Layer::LayerNorm(LayerNorm::with_eps(q, c.dim, c.eps)))
                .push_with(&b, |q| Layer::Attention(MultiheadAttention::new(q, c.dim, c.heads, true)));
            Layer::Residual(Box::new(Residual { body, shortcut: None, relu: false }))
        });
        s = s.push_with(p, |q| {
            let b = &q / "body";
            let body = Sequential::new()
                .push_with(&b, |q| Layer::LayerNorm(LayerNorm::with_eps(q, c.dim, c.eps)))
                .push_with(&b, |q| Layer::Linear(Linear::new(q, c.dim, c.hidden)))
                .push(c.activation_layer())
                .push_with(&b, |q| Layer::Linear(Linear::new(q, c.hidden, c.dim)));
            Layer::Residual(Box::new(Residual { body, shortcut: None, relu: false }))
        });
    }
    s = s.push_with(p, |q| Layer::LayerNorm(LayerNorm::with_eps(q, c.dim, c.eps)));
    let Some((_, Layer::Embedding(wte))) = s.layers().first() else { unreachable!("layer 0 is the embedding") };
    let head = nn::Linear { ws: wte.weight.shallow_clone(), bs: None };
    s.push(Layer::Linear(Linear { inner: head, in_features: c.dim, out_features: c.vocab }))
}

/// (xtorch variable, GPT-2 key without prefix, transposed) for every variable of `gpt2(c)`.
fn names(c: &Gpt2Config) -> Vec<(String, String, bool)> {
    let mut v = vec![("0.weight".into(), "wte.weight".into(), false), ("1.weight".into(), "wpe.weight".into(), false)];
    for i in 0..c.layers {
        let (a, m) = (2 + 2 * i, 3 + 2 * i);
        for (ours, theirs, t) in [
            (format!("{a}.body.0.weight"), "ln_1.weight", false),
            (format!("{a}.body.0.bias"), "ln_1.bias", false),
            (format!("{a}.body.1.in_proj_weight"), "attn.c_attn.weight", true),
            (format!("{a}.body.1.in_proj_bias"), "attn.c_attn.bias", false),
            (format!("{a}.body.1.out_proj.weight"), "attn.c_proj.weight", true),
            (format!("{a}.body.1.out_proj.bias"), "attn.c_proj.bias", false),
            (format!("{m}.body.0.weight"), "ln_2.weight", false),
            (format!("{m}.body.0.bias"), "ln_2.bias", false),
            (format!("{m}.body.1.weight"), "mlp.c_fc.weight", true),
            (format!("{m}.body.1.bias"), "mlp.c_fc.bias", false),
            (format!("{m}.body.3.weight"), "mlp.c_proj.weight", true),
            (format!("{m}.body.3.bias"), "mlp.c_proj.bias", false),
        ] {
            v.push((ours, format!("h.{i}.{theirs}"), t));
        }
    }
    let f = 2 + 2 * c.layers;
    v.push((format!("{f}.weight"), "ln_f.weight".into(), false));
    v.push((format!("{f}.bias"), "ln_f.bias".into(), false));
    v
}

/// The shape transposed (a Conv1D weight's [in, out] ↔ [out, in]).
fn flip(s: Vec<i64>, t: bool) -> Vec<i64> {
    if t {
        s.into_iter().rev().collect()
    } else {
        s
    }
}

/// Loads `dir`/model.safetensors into `model` (built by `gpt2` from `c`); on any mismatch
/// nothing is written and the error names the file's key (shapes in GPT-2's layout).
pub fn load_weights(model: &Model, c: &Gpt2Config, dir: &Path) -> Result<(), HfError> {
    let path = dir.join("model.safetensors");
    let raw = checkpoint::read(&path)?;
    let file: HashMap<String, Tensor> =
        raw.into_iter().map(|(k, t)| (k.strip_prefix("transformer.").map(str::to_string).unwrap_or(k), t)).collect();
    let vars: BTreeMap<String, Tensor> = model.vs.variables().into_iter().collect();
    let map = names(c);
    let unsupported = |what: String| HfError::Unsupported { path: path.clone(), what };
    if let Some(k) = vars.keys().find(|k| !map.iter().any(|(ours, ..)| ours == *k)) {
        return Err(unsupported(format!("a model that is not gpt2(config) (variable {k} has no GPT-2 counterpart)")));
    }
    for (ours, theirs, t) in &map {
        let Some(var) = vars.get(ours) else {
            return Err(unsupported(format!("a model that is not gpt2(config) (no variable {ours} for {theirs})")));
        };
        let want = flip(var.size(), *t);
        let Some(x) = file.get(theirs) else {
            return Err(CheckpointError::MissingKey { path: path.clone(), key: theirs.clone(), shape: want }.into());
        };
        if !x.is_floating_point() {
            let (key, got, want) = (theirs.clone(), x.kind(), Kind::Float);
            return Err(CheckpointError::DType { path: path.clone(), key, got, want }.into());
        }
        if x.size() != want {
            return Err(CheckpointError::Shape { path: path.clone(), key: theirs.clone(), got: x.size(), want }.into());
        }
    }
    let known: Vec<&String> = map.iter().map(|(_, theirs, _)| theirs).collect();
    let mut extra: Vec<&String> = file
        .keys()
        .filter(|k| !known.contains(k) && !k.ends_with(".attn.bias") && !k.ends_with(".attn.masked_bias"))
        .collect();
    extra.sort();
    for k in extra {
        if k == "lm_head.weight" {
            let tied = file[k].size() == file["wte.weight"].size() && file[k].equal(&file["wte.weight"]);
            if !tied {
                return Err(unsupported("an lm_head.weight that differs from wte.weight (an untied head)".into()));
            }
            continue;
        }
        return Err(CheckpointError::UnexpectedKey { path: path.clone(), key: k.clone() }.into());
    }
    tch::no_grad(|| {
        for (ours, theirs, t) in &map {
            let x = &file[theirs];
            let x = if *t { x.transpose(0, 1) } else { x.shallow_clone() };
            let mut var = vars[ours].shallow_clone();
            var.f_copy_(&x.to_kind(Kind::Float))
                .map_err(|e| CheckpointError::Io { path: path.clone(), msg: format!("{theirs}: {e}") })?;
        }
        Ok(())
    })
}

/// The GPT-2 of the Hugging Face directory `dir` on `device`: its config and a model holding
/// its weights (the weights drawn at build are all replaced).
pub fn from_pretrained(dir: &Path, device: Device) -> Result<(Gpt2Config, Model), HfError> {
    let c = read_config(dir)?;
    let model = Model::new(device, 0, |p| gpt2(p, &c));
    load_weights(&model, &c, dir)?;
    Ok((c, model))
}
