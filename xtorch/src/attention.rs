//! Multi-head self-attention on [N, T, E] with PyTorch's parameters and names
//! (`nn.MultiheadAttention(E, heads, batch_first=True)` called with query = key = value = x):
//! `in_proj_weight` [3E, E] and `in_proj_bias` [3E] (q, k, v stacked), `out_proj` a Linear E → E.
//! With `causal`, position i attends to positions ≤ i only (an additive mask, −∞ above the
//! diagonal, as `nn.Transformer.generate_square_subsequent_mask` builds it). `forward_masked`
//! also takes a key padding mask [N, T] (1 = attend, 0 = padding): a padded key's score gets
//! f32's lowest value added (Hugging Face BERT's extended attention mask), so no query attends
//! to it and a row of padding only still has a finite softmax.
use crate::amp;
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

#[derive(Debug)]
pub struct MultiheadAttention {
    pub in_proj_weight: Tensor,
    pub in_proj_bias: Tensor,
    pub out_proj: nn::Linear,
    pub embed_dim: i64,
    pub num_heads: i64,
    pub causal: bool,
}

impl MultiheadAttention {
    /// PyTorch's initialization: Xavier-uniform input projection, zero biases.
    pub fn new(p: nn::Path, embed_dim: i64, num_heads: i64, causal: bool) -> MultiheadAttention {
        assert!(
            num_heads > 0 && embed_dim % num_heads == 0,
            "attention: embed_dim {embed_dim} is not a multiple of num_heads {num_heads}"
        );
        let bound = (6.0 / (4 * embed_dim) as f64).sqrt();
        let in_proj_weight =
            p.var("in_proj_weight", &[3 * embed_dim, embed_dim], Init::Uniform { lo: -bound, up: bound });
        let in_proj_bias = p.var("in_proj_bias", &[3 * embed_dim], Init::Const(0.0));
        let cfg = nn::LinearConfig { bs_init: Some(Init::Const(0.0)), ..Default::default() };
        let out_proj = nn::linear(&p / "out_proj", embed_dim, embed_dim, cfg);
        MultiheadAttention { in_proj_weight, in_proj_bias, out_proj, embed_dim, num_heads, causal }
    }

    pub fn head_dim(&self) -> i64 {
        self.embed_dim / self.num_heads
    }

    /// The scores' scale, 1/√head_dim.
    pub fn scale(&self) -> f64 {
        1.0 / (self.head_dim() as f64).sqrt()
    }

    /// The additive causal mask [t, t]: 0 on and below the diagonal, −∞ above.
    pub fn causal_mask(t: i64, device: tch::Device) -> Tensor {
        Tensor::full([t, t], f64::NEG_INFINITY, (Kind::Float, device)).triu(1)
    }

    /// softmax(q·kᵀ/√d (+ mask))·v per head, heads concatenated, then `out_proj`; the same
    /// operations as the exported graph.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        self.forward_masked(xs, None)
    }

    /// `forward` with the keys where `keep` [N, T] is 0 masked out (see the module docs).
    pub fn forward_masked(&self, xs: &Tensor, keep: Option<&Tensor>) -> Tensor {
        let (n, t, e) = xs.size3().expect("attention takes [N, T, E]");
        let (h, d) = (self.num_heads, self.head_dim());
        let qkv = amp::linear(xs, &self.in_proj_weight, Some(&self.in_proj_bias));
        let parts = qkv.split(e, -1);
        let heads = |z: &Tensor| z.reshape([n, t, h, d]).transpose(1, 2);
        let (q, k, v) = (heads(&parts[0]), heads(&parts[1]), heads(&parts[2]));
        let scores = amp::matmul(&q, &k.transpose(-2, -1)) * self.scale();
        let scores = if self.causal { scores + Self::causal_mask(t, xs.device()) } else { scores };
        let scores = match keep {
            Some(keep) => {
                let pad = (keep.to_kind(Kind::Float).neg() + 1.0) * f64::from(f32::MIN);
                scores + pad.reshape([n, 1, 1, t])
            }
            None => scores,
        };
        let y = amp::matmul(&scores.softmax(-1, Kind::Float), &v).transpose(1, 2).reshape([n, t, e]);
        amp::linear(&y, &self.out_proj.ws, self.out_proj.bs.as_ref())
    }
}
