//! BERT from a Hugging Face model directory (`config.json` + `model.safetensors`, as
//! `BertModel.save_pretrained` or `BertForSequenceClassification.save_pretrained` write them),
//! for fine-tuning: word + position + token-type embeddings, LayerNorm, `num_hidden_layers`
//! post-norm encoder layers (attention → dropout → residual → LayerNorm, Linear → exact-erf
//! GELU → Linear → dropout → residual → LayerNorm), the pooler tanh(Linear(hidden[:, 0])), and
//! optionally a classification head Linear(hidden → num_labels) on the (dropped-out) pooled
//! output, as `BertForSequenceClassification`. The attention is xtorch's `MultiheadAttention`
//! with a key padding mask (`forward_masked`: 1 = token, 0 = padding, HF's additive mask).
//! Attention-probability dropout is not applied (xtorch's attention has none); hidden and
//! classifier dropout are.
//!
//! The var store's names are HF's (without the "bert." prefix), except the attention's
//! projections: "encoder.layer.i.attention.in_proj_weight/bias" hold HF's
//! "attention.self.query/key/value" weights/biases stacked along axis 0, and
//! "encoder.layer.i.attention.out_proj" is HF's "attention.output.dense". Keys may carry
//! `BertForSequenceClassification`'s "bert." prefix; `classifier.*` loads into the head
//! when the model has one (a file without it leaves a fresh head, reported by `load_weights`)
//! and is skipped when it has none; "embeddings.position_ids" (a buffer older versions
//! saved) and "cls.*" (pre-training heads) are skipped. Loading is all-or-nothing as in
//! `gpt2`: every key is checked (present, float, the shape this config gives) before any
//! variable is written; an error names the file's key.
use crate::amp;
use crate::checkpoint::{self, CheckpointError};
use crate::gpt2::config_json;
pub use crate::gpt2::HfError;
use crate::modules::{Embedding, LayerNorm, Linear, MultiheadAttention, PositionEmbedding, ShapeError};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::nn::{self, Init, Module as _, VarStore};
use tch::{Device, Kind, Tensor};

/// The BERT sizes and options xtorch reads from `config.json` (HF's field names).
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub max_position_embeddings: i64,
    pub type_vocab_size: i64,
    pub layer_norm_eps: f64,
    /// `hidden_dropout_prob` (0.1 when absent).
    pub hidden_dropout: f64,
    /// `classifier_dropout`, `hidden_dropout_prob` when null or absent.
    pub classifier_dropout: f64,
    /// `num_labels`, else the size of `id2label`, else 2 (HF's default).
    pub num_labels: i64,
}

/// `dir`/config.json as a `BertConfig`; what xtorch's BERT does not compute (another model
/// type, an activation other than exact "gelu", relative position embeddings, a decoder) is
/// refused by name.
pub fn read_config(dir: &Path) -> Result<BertConfig, HfError> {
    let (path, v) = config_json(dir)?;
    let cfg_err = |msg: String| HfError::Config { path: path.clone(), msg };
    let int =
        |k: &str| v.get(k).and_then(|x| x.as_i64()).ok_or_else(|| cfg_err(format!("{k}: an integer is required")));
    let unsupported = |what: String| HfError::Unsupported { path: path.clone(), what };
    let text_field = |k: &str| v.get(k).and_then(|t| t.as_str());
    if let Some(t) = text_field("model_type") {
        if t != "bert" {
            return Err(unsupported(format!("model_type {t:?} (BERT only)")));
        }
    }
    match v.get("hidden_act") {
        None => return Err(cfg_err("hidden_act: \"gelu\" is required".into())),
        Some(a) if a.as_str() != Some("gelu") => {
            return Err(unsupported(format!("hidden_act {a} (BERT's exact-erf \"gelu\" only)")));
        }
        Some(_) => {}
    }
    if let Some(t) = text_field("position_embedding_type") {
        if t != "absolute" {
            return Err(unsupported(format!("position_embedding_type {t:?}")));
        }
    }
    for flag in ["is_decoder", "add_cross_attention"] {
        if v.get(flag).and_then(|b| b.as_bool()) == Some(true) {
            return Err(unsupported(format!("{flag} = true")));
        }
    }
    let hidden_size = int("hidden_size")?;
    let heads = int("num_attention_heads")?;
    if heads <= 0 || hidden_size % heads != 0 {
        return Err(cfg_err(format!("hidden_size {hidden_size} is not a multiple of num_attention_heads {heads}")));
    }
    let prob = |k: &str| v.get(k).and_then(|p| p.as_f64());
    let hidden_dropout = prob("hidden_dropout_prob").unwrap_or(0.1);
    let num_labels = match (v.get("num_labels"), v.get("id2label").and_then(|m| m.as_object())) {
        (Some(_), _) => int("num_labels")?,
        (None, Some(m)) => m.len() as i64,
        (None, None) => 2,
    };
    Ok(BertConfig {
        vocab_size: int("vocab_size")?,
        hidden_size,
        num_hidden_layers: int("num_hidden_layers")?,
        num_attention_heads: heads,
        intermediate_size: int("intermediate_size")?,
        max_position_embeddings: int("max_position_embeddings")?,
        type_vocab_size: int("type_vocab_size")?,
        layer_norm_eps: v.get("layer_norm_eps").and_then(|e| e.as_f64()).unwrap_or(1e-12),
        hidden_dropout,
        classifier_dropout: prob("classifier_dropout").unwrap_or(hidden_dropout),
        num_labels,
    })
}

#[derive(Debug)]
pub struct BertEmbeddings {
    pub word: Embedding,
    pub position: PositionEmbedding,
    pub token_type: Embedding,
    pub norm: LayerNorm,
}

/// One post-norm encoder layer.
#[derive(Debug)]
pub struct BertLayer {
    pub attention: MultiheadAttention,
    /// HF's `attention.output.LayerNorm`.
    pub attention_norm: LayerNorm,
    /// HF's `intermediate.dense` (hidden → intermediate, then GELU).
    pub intermediate: Linear,
    /// HF's `output.dense` (intermediate → hidden).
    pub output: Linear,
    /// HF's `output.LayerNorm`.
    pub output_norm: LayerNorm,
}

/// A BERT encoder (and optionally its classification head) with the var store holding its
/// parameters: train it with `Optim::optimizer(&bert.vs)`.
pub struct Bert {
    pub vs: VarStore,
    pub config: BertConfig,
    pub embeddings: BertEmbeddings,
    pub layers: Vec<BertLayer>,
    /// HF's `pooler.dense`.
    pub pooler: Linear,
    /// HF's `classifier` (hidden → num_labels), when built with labels.
    pub classifier: Option<Linear>,
}

/// The encoder's outputs.
#[derive(Debug)]
pub struct BertOutput {
    /// The last hidden state [N, T, hidden].
    pub hidden: Tensor,
    /// tanh(pooler(hidden[:, 0])) [N, hidden].
    pub pooled: Tensor,
}

fn linear(p: nn::Path, i: i64, o: i64) -> Linear {
    // HF's initialization: N(0, 0.02²) weights, zero biases (the loaded ones replace it,
    // but a fresh classification head keeps it)
    let cfg = nn::LinearConfig {
        ws_init: Init::Randn { mean: 0.0, stdev: 0.02 },
        bs_init: Some(Init::Const(0.0)),
        bias: true,
    };
    Linear { inner: nn::linear(p, i, o, cfg), in_features: i, out_features: o }
}

impl Bert {
    /// A BERT of `c`'s sizes with weights drawn from `seed`, with a classification head of
    /// `num_labels` outputs if given.
    pub fn new(device: Device, seed: u64, c: &BertConfig, num_labels: Option<i64>) -> Bert {
        crate::seed_everything(seed);
        let vs = VarStore::new(device);
        let root = vs.root();
        let (e, eps) = (c.hidden_size, c.layer_norm_eps);
        let emb = &root / "embeddings";
        let embeddings = BertEmbeddings {
            word: Embedding::new(&emb / "word_embeddings", c.vocab_size, e),
            position: PositionEmbedding::new(&emb / "position_embeddings", c.max_position_embeddings, e),
            token_type: Embedding::new(&emb / "token_type_embeddings", c.type_vocab_size, e),
            norm: LayerNorm::with_eps(&emb / "LayerNorm", e, eps),
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = &root / "encoder" / "layer" / i;
                BertLayer {
                    attention: MultiheadAttention::new(&l / "attention", e, c.num_attention_heads, false),
                    attention_norm: LayerNorm::with_eps(&l / "attention" / "output" / "LayerNorm", e, eps),
                    intermediate: linear(&l / "intermediate" / "dense", e, c.intermediate_size),
                    output: linear(&l / "output" / "dense", c.intermediate_size, e),
                    output_norm: LayerNorm::with_eps(&l / "output" / "LayerNorm", e, eps),
                }
            })
            .collect();
        let pooler = linear(&root / "pooler" / "dense", e, e);
        let classifier = num_labels.map(|n| linear(&root / "classifier", e, n));
        Bert { vs, config: c.clone(), embeddings, layers, pooler, classifier }
    }

    /// The encoder on token ids [N, T] (int64), with token types [N, T] (zeros when None) and
    /// the attention mask [N, T] (1 = token, 0 = padding; all tokens when None); `train`
    /// turns dropout on.
    pub fn f_forward_t(
        &self,
        ids: &Tensor,
        token_types: Option<&Tensor>,
        mask: Option<&Tensor>,
        train: bool,
    ) -> Result<BertOutput, ShapeError> {
        let c = &self.config;
        let err =
            |layer: &str, got: Vec<i64>, want: String| ShapeError { layer: layer.into(), kind: "BERT", got, want };
        let shape = ids.size();
        if shape.len() != 2 || shape[1] > c.max_position_embeddings || shape[1] == 0 {
            let want = format!("token ids [N, T] with 0 < T <= {}", c.max_position_embeddings);
            return Err(err("input_ids", shape, want));
        }
        for (name, t) in [("token_type_ids", token_types), ("attention_mask", mask)] {
            if let Some(t) = t.filter(|t| t.size() != shape) {
                return Err(err(name, t.size(), format!("{shape:?}, the ids' shape")));
            }
        }
        let types = match token_types {
            Some(t) => t.shallow_clone(),
            None => Tensor::zeros(&shape[..], (Kind::Int64, ids.device())),
        };
        let emb = &self.embeddings;
        let h = emb.position.forward(&(emb.word.forward(ids) + emb.token_type.forward(&types)));
        let mut h = emb.norm.inner.forward(&h).dropout(c.hidden_dropout, train);
        for l in &self.layers {
            let a = l.attention.forward_masked(&h, mask).dropout(c.hidden_dropout, train);
            h = l.attention_norm.inner.forward(&(a + &h));
            let m = dense(&l.intermediate, &h).gelu("none");
            let m = dense(&l.output, &m).dropout(c.hidden_dropout, train);
            h = l.output_norm.inner.forward(&(m + &h));
        }
        let pooled = dense(&self.pooler, &h.select(1, 0)).tanh();
        Ok(BertOutput { hidden: h, pooled })
    }

    /// The classification head's logits [N, num_labels] (`BertForSequenceClassification`):
    /// classifier(dropout(pooled)). Panics if the model was built without labels.
    pub fn f_logits(
        &self,
        ids: &Tensor,
        token_types: Option<&Tensor>,
        mask: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor, ShapeError> {
        let head = self.classifier.as_ref().expect("BERT: the model has no classification head (build it with labels)");
        let out = self.f_forward_t(ids, token_types, mask, train)?;
        Ok(dense(head, &out.pooled.dropout(self.config.classifier_dropout, train)))
    }

    /// (our variable, the file's keys stacked along axis 0 into it) for every variable.
    fn names(&self) -> Vec<(String, Vec<String>)> {
        let mut names: Vec<String> = self.vs.variables().into_keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|ours| {
                let theirs = if let Some(l) = ours.strip_suffix(".attention.in_proj_weight") {
                    ["query", "key", "value"].map(|q| format!("{l}.attention.self.{q}.weight")).to_vec()
                } else if let Some(l) = ours.strip_suffix(".attention.in_proj_bias") {
                    ["query", "key", "value"].map(|q| format!("{l}.attention.self.{q}.bias")).to_vec()
                } else {
                    vec![ours.replace(".attention.out_proj.", ".attention.output.dense.")]
                };
                (ours, theirs)
            })
            .collect()
    }
}

/// `l`'s x·Wᵀ + b in the current (autocast) precision.
fn dense(l: &Linear, x: &Tensor) -> Tensor {
    amp::linear(x, &l.inner.ws, l.inner.bs.as_ref())
}

/// Loads `dir`/model.safetensors into `bert`; returns the variables the file had nothing for
/// (the classification head's, when the file is an encoder only: they keep their fresh
/// initialization). On any mismatch nothing is written and the error names the file's key.
pub fn load_weights(bert: &Bert, dir: &Path) -> Result<Vec<String>, HfError> {
    let path = dir.join("model.safetensors");
    let file: HashMap<String, Tensor> = checkpoint::read(&path)?
        .into_iter()
        .map(|(k, t)| (k.strip_prefix("bert.").map(str::to_string).unwrap_or(k), t))
        .collect();
    let vars: BTreeMap<String, Tensor> = bert.vs.variables().into_iter().collect();
    let map = bert.names();
    let head = bert.classifier.is_some();
    let fresh_head = head && !file.contains_key("classifier.weight") && !file.contains_key("classifier.bias");
    let mut fresh = vec![];
    for (ours, theirs) in &map {
        if fresh_head && ours.starts_with("classifier.") {
            fresh.push(ours.clone());
            continue;
        }
        let mut want = vars[ours].size();
        want[0] /= theirs.len() as i64;
        for key in theirs {
            let Some(x) = file.get(key) else {
                let shape = want.clone();
                return Err(CheckpointError::MissingKey { path: path.clone(), key: key.clone(), shape }.into());
            };
            if !x.is_floating_point() {
                let (key, got, want) = (key.clone(), x.kind(), Kind::Float);
                return Err(CheckpointError::DType { path: path.clone(), key, got, want }.into());
            }
            if x.size() != want {
                let (key, got, want) = (key.clone(), x.size(), want.clone());
                return Err(CheckpointError::Shape { path: path.clone(), key, got, want }.into());
            }
        }
    }
    let known: Vec<&String> = map.iter().flat_map(|(_, theirs)| theirs).collect();
    let skipped =
        |k: &str| k == "embeddings.position_ids" || k.starts_with("cls.") || (!head && k.starts_with("classifier."));
    let mut extra: Vec<&String> = file.keys().filter(|k| !known.contains(k) && !skipped(k)).collect();
    extra.sort();
    if let Some(k) = extra.first() {
        return Err(CheckpointError::UnexpectedKey { path: path.clone(), key: (*k).clone() }.into());
    }
    tch::no_grad(|| {
        for (ours, theirs) in map.iter().filter(|(ours, _)| !fresh.contains(ours)) {
            let parts: Vec<&Tensor> = theirs.iter().map(|k| &file[k]).collect();
            let x = Tensor::cat(&parts, 0);
            let mut var = vars[ours].shallow_clone();
            var.f_copy_(&x.to_kind(Kind::Float))
                .map_err(|e| CheckpointError::Io { path: path.clone(), msg: format!("{}: {e}", theirs[0]) })?;
        }
        Ok::<(), CheckpointError>(())
    })?;
    Ok(fresh)
}

/// The BERT of the Hugging Face directory `dir` on `device`, with a classification head of
/// `num_labels` outputs if given (loaded from the file's `classifier.*`, or freshly
/// initialized when the file has none: `load_weights` says which).
pub fn from_pretrained(dir: &Path, device: Device, num_labels: Option<i64>) -> Result<Bert, HfError> {
    let c = read_config(dir)?;
    let bert = Bert::new(device, 0, &c, num_labels);
    load_weights(&bert, dir)?;
    Ok(bert)
}
