//! Transformer models built from `Sequential` layers: the pre-norm block (LayerNorm →
//! self-attention → residual, LayerNorm → MLP (Linear, GELU, Linear) → residual), a GPT-style
//! decoder and a small ViT.
use crate::modules::{
    Conv2d, Embedding, Layer, LayerNorm, Linear, MultiheadAttention, PositionEmbedding, Residual, Sequential,
};
use tch::nn;

/// The first half of a pre-norm transformer block on [N, T, dim]: x + attention(LayerNorm(x)),
/// the body's layers under `p` / "body" ("body.0" the LayerNorm, "body.1" the attention).
pub fn attention_half(p: &nn::Path, dim: i64, heads: i64, causal: bool) -> Residual {
    let b = p / "body";
    let body = Sequential::new()
        .push_with(&b, |q| Layer::LayerNorm(LayerNorm::new(q, dim)))
        .push_with(&b, |q| Layer::Attention(MultiheadAttention::new(q, dim, heads, causal)));
    Residual { body, shortcut: None, relu: false }
}

/// The second half: x + Linear(GELU(Linear(LayerNorm(x)))), dim → hidden → dim.
pub fn mlp_half(p: &nn::Path, dim: i64, hidden: i64) -> Residual {
    let b = p / "body";
    let body = Sequential::new()
        .push_with(&b, |q| Layer::LayerNorm(LayerNorm::new(q, dim)))
        .push_with(&b, |q| Layer::Linear(Linear::new(q, dim, hidden)))
        .push(Layer::GELU)
        .push_with(&b, |q| Layer::Linear(Linear::new(q, hidden, dim)));
    Residual { body, shortcut: None, relu: false }
}

/// `layers` pre-norm blocks appended to `s`, two `Sequential` entries (attention half, MLP
/// half) each.
pub fn blocks(
    mut s: Sequential,
    p: &nn::Path,
    layers: i64,
    dim: i64,
    heads: i64,
    hidden: i64,
    causal: bool,
) -> Sequential {
    for _ in 0..layers {
        s = s
            .push_with(p, |q| Layer::Residual(Box::new(attention_half(&q, dim, heads, causal))))
            .push_with(p, |q| Layer::Residual(Box::new(mlp_half(&q, dim, hidden))));
    }
    s
}

/// A GPT-style decoder's sizes.
#[derive(Clone, Debug)]
pub struct GptConfig {
    pub vocab: i64,
    /// The longest sequence (the position table's rows).
    pub max_len: i64,
    pub dim: i64,
    pub heads: i64,
    pub layers: i64,
    /// The MLP's hidden width (4·dim in GPT-2).
    pub hidden: i64,
}

/// Token ids [N, T] (int64) → next-token logits [N, T, vocab]: token and position embeddings,
/// `layers` causal blocks, a final LayerNorm and a linear LM head (with bias, not tied).
pub fn gpt(p: &nn::Path, c: &GptConfig) -> Sequential {
    let s = Sequential::new()
        .push_with(p, |q| Layer::Embedding(Embedding::new(q, c.vocab, c.dim)))
        .push_with(p, |q| Layer::PositionEmbedding(PositionEmbedding::new(q, c.max_len, c.dim)));
    let s = blocks(s, p, c.layers, c.dim, c.heads, c.hidden, true);
    s.push_with(p, |q| Layer::LayerNorm(LayerNorm::new(q, c.dim)))
        .push_with(p, |q| Layer::Linear(Linear::new(q, c.dim, c.vocab)))
}

/// A small ViT's sizes.
#[derive(Clone, Debug)]
pub struct VitConfig {
    pub image: i64,
    pub channels: i64,
    pub patch: i64,
    pub dim: i64,
    pub heads: i64,
    pub layers: i64,
    pub hidden: i64,
    pub classes: i64,
}

/// Images [N, channels, image, image] → logits [N, classes]: a patch embedding (a Conv2d with
/// kernel = stride = patch), the patches as tokens plus learned position embeddings, `layers`
/// bidirectional blocks, a final LayerNorm, the mean over the tokens (no class token) and a
/// Linear head.
pub fn vit(p: &nn::Path, c: &VitConfig) -> Sequential {
    assert!(c.image % c.patch == 0, "vit: image size {} is not a multiple of the patch {}", c.image, c.patch);
    let tokens = (c.image / c.patch) * (c.image / c.patch);
    let s = Sequential::new()
        .push_with(p, |q| Layer::Conv2d(Conv2d::new(q, c.channels, c.dim, c.patch, c.patch, 0)))
        .push(Layer::Tokens)
        .push_with(p, |q| Layer::PositionEmbedding(PositionEmbedding::new(q, tokens, c.dim)));
    let s = blocks(s, p, c.layers, c.dim, c.heads, c.hidden, false);
    s.push_with(p, |q| Layer::LayerNorm(LayerNorm::new(q, c.dim)))
        .push(Layer::TokenMean)
        .push_with(p, |q| Layer::Linear(Linear::new(q, c.dim, c.classes)))
}
