//! Sentence embeddings: texts tokenized on the CPU (the `tokenizers` crate reading a
//! `tokenizer.json`), the model's last hidden state mean-pooled over the real tokens and
//! L2-normalized in the graph.
use crate::append::Appender;
use crate::config::TaskConfig;
use crate::pipeline::{assemble, Device, Pipeline};
use crate::ZooError;
use std::path::Path;
use tokenizers::Tokenizer;
use xforge_ir::{DType, Dim, Graph, Op, Tensor, ValueId, ValueType};

/// The graph input of the pooling mask when the model takes none of its own.
pub const MASK: &str = "zoo_attention_mask";

pub struct TextEmbedder {
    pipeline: Pipeline,
    tokenizer: Tokenizer,
    /// Graph inputs by role: token ids, the attention mask, token types (if the model has them).
    ids: String,
    mask: String,
    types: Option<String>,
    /// The model's fixed sequence length, if any; else texts are padded to the batch's longest.
    fixed_len: Option<usize>,
    max_len: usize,
    pad_id: i64,
}

/// The model's input named `name`, or of its role.
fn find_input(g: &Graph, names: &[&str]) -> Option<ValueId> {
    g.inputs.iter().copied().find(|&i| names.contains(&g.name_of(i)))
}

impl TextEmbedder {
    /// A text embedder around a BERT-style model: token ids [N, S] in (named `input_ids`, or
    /// its first input), last hidden state [N, S, D] as its first output. The configuration
    /// names the tokenizer.
    pub fn new(model: &Path, config: TaskConfig, device: Device) -> Result<TextEmbedder, ZooError> {
        let path =
            config.tokenizer.clone().ok_or_else(|| ZooError::Config("tokenizer: a text embedder needs one".into()))?;
        let tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| ZooError::File { path: path.display().to_string(), why: e.to_string() })?;
        TextEmbedder::from_graph(crate::import(model)?, tokenizer, config, device)
    }

    pub fn from_graph(
        mut g: Graph,
        tokenizer: Tokenizer,
        config: TaskConfig,
        device: Device,
    ) -> Result<TextEmbedder, ZooError> {
        config.check()?;
        let ids = find_input(&g, &["input_ids"]).or_else(|| g.inputs.first().copied());
        let ids = ids.ok_or_else(|| ZooError::Config("the model has no inputs".into()))?;
        let (batch, seq) = match g.ty(ids).shape.as_deref() {
            Some([b, s]) if !g.ty(ids).dtype.is_float() => (b.clone(), s.clone()),
            _ => {
                return Err(ZooError::Config(format!(
                    "the model's input '{}' is {}, token ids are integers [N, S]",
                    g.name_of(ids),
                    g.ty(ids)
                )))
            }
        };
        let &hidden = g.outputs.first().ok_or_else(|| ZooError::Config("the model has no outputs".into()))?;
        if !matches!(g.ty(hidden).shape.as_deref(), Some([_, _, Dim::Known(_)])) {
            return Err(ZooError::Config(format!(
                "the model's output '{}' is {}, a text embedder's is [N, S, D]",
                g.name_of(hidden),
                g.ty(hidden)
            )));
        }
        let types = find_input(&g, &["token_type_ids"]);
        let own_mask = find_input(&g, &["attention_mask"]);
        let mut a = Appender::new(&mut g, "zoo_post");
        let mask = match own_mask {
            Some(m) => m,
            None => a.input(MASK, ValueType::new(DType::I64, vec![batch, seq.clone()])),
        };
        let h = a.cast(hidden, DType::F32);
        let m = a.cast(mask, DType::F32);
        let m = a.reshape(m, &[0, -1, 1]);
        let hm = a.mul(h, m);
        let sum = a.reduce(Op::ReduceSum, hm, &[1]);
        let count = a.reduce(Op::ReduceSum, m, &[1]);
        let tiny = a.f32s(&[], vec![1e-9]);
        let count = a.max(count, tiny);
        let mean = a.div(sum, count);
        let sq = a.mul(mean, mean);
        let norm = a.reduce(Op::ReduceSum, sq, &[2]);
        let norm = a.op(Op::Sqrt, &[norm], vec![]);
        let floor = a.f32s(&[], vec![1e-12]);
        let norm = a.max(norm, floor);
        let unit = a.div(mean, norm);
        let unit = a.reshape(unit, &[0, -1]);
        let post = a.nodes;
        let names = |v: Option<ValueId>, g: &Graph| v.map(|v| g.name_of(v).to_string());
        let (ids_name, mask_name, types_name) =
            (g.name_of(ids).to_string(), g.name_of(mask).to_string(), names(types, &g));
        assemble(&mut g, vec![], post, vec![unit])?;
        let fixed_len = match seq {
            Dim::Known(s) => Some(s),
            Dim::Sym(_) => None,
        };
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id as i64)
            .or_else(|| tokenizer.token_to_id("[PAD]").map(|i| i as i64))
            .unwrap_or(0);
        let max_len = fixed_len.unwrap_or(config.max_length);
        Ok(TextEmbedder {
            pipeline: Pipeline::new(g, config, device),
            tokenizer,
            ids: ids_name,
            mask: mask_name,
            types: types_name,
            fixed_len,
            max_len,
            pad_id,
        })
    }

    /// Token ids of each text with the tokenizer's special tokens, cut to the model's length.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, ZooError> {
        texts
            .iter()
            .map(|t| {
                let e = self.tokenizer.encode(*t, true).map_err(|e| ZooError::Config(format!("tokenizer: {e}")))?;
                let mut ids = e.get_ids().to_vec();
                ids.truncate(self.max_len);
                Ok(ids)
            })
            .collect()
    }

    /// One unit-length embedding per text.
    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ZooError> {
        let tokens = self.tokenize(texts)?;
        let step = self.pipeline.batch_step().max(1);
        let mut out = vec![];
        for part in tokens.chunks(step) {
            let n = self.pipeline.fixed_batch().unwrap_or(part.len()).max(part.len());
            let s = self.fixed_len.unwrap_or_else(|| part.iter().map(|t| t.len()).max().unwrap_or(1).max(1));
            let (mut ids, mut mask) = (vec![self.pad_id; n * s], vec![0i64; n * s]);
            for (i, t) in part.iter().enumerate() {
                for (j, &id) in t.iter().enumerate() {
                    ids[i * s + j] = id as i64;
                    mask[i * s + j] = 1;
                }
            }
            let mut feed = vec![
                (self.ids.clone(), Tensor::from_i64(vec![n, s], ids)),
                (self.mask.clone(), Tensor::from_i64(vec![n, s], mask)),
            ];
            if let Some(t) = &self.types {
                feed.push((t.clone(), Tensor::from_i64(vec![n, s], vec![0; n * s])));
            }
            let e = &self.pipeline.run_feed(n, feed)?[0];
            let d = e.shape()[1];
            let v = e.to_f64();
            out.extend((0..part.len()).map(|i| v[i * d..(i + 1) * d].iter().map(|&x| x as f32).collect()));
        }
        Ok(out)
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
}
