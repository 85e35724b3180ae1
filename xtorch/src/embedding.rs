//! Lookup tables: `Embedding` (token ids [..] → vectors [.., dim], PyTorch's `nn.Embedding`,
//! weight [vocab, dim]) and `PositionEmbedding` (a learned vector per position added to
//! [N, T, dim], weight [max_len, dim]: GPT-2's `wpe`, a ViT's position embedding).
use tch::nn::{self, Init};
use tch::Tensor;

#[derive(Debug)]
pub struct Embedding {
    pub weight: Tensor,
    pub vocab: i64,
    pub dim: i64,
}

impl Embedding {
    /// Weights drawn from N(0, 1), as PyTorch's `nn.Embedding` draws them.
    pub fn new(p: nn::Path, vocab: i64, dim: i64) -> Embedding {
        Embedding { weight: p.var("weight", &[vocab, dim], Init::Randn { mean: 0.0, stdev: 1.0 }), vocab, dim }
    }

    /// `ids` are int64; ids outside [0, vocab) are a libtorch error.
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.weight, ids, -1, false, false)
    }
}

#[derive(Debug)]
pub struct PositionEmbedding {
    pub weight: Tensor,
    pub max_len: i64,
    pub dim: i64,
}

impl PositionEmbedding {
    /// Weights drawn from N(0, 0.02²) (GPT-2's and ViT's initialization).
    pub fn new(p: nn::Path, max_len: i64, dim: i64) -> PositionEmbedding {
        let weight = p.var("weight", &[max_len, dim], Init::Randn { mean: 0.0, stdev: 0.02 });
        PositionEmbedding { weight, max_len, dim }
    }

    /// `xs` [N, T, dim] plus the first T position vectors.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let t = xs.size()[1];
        xs + self.weight.narrow(0, 0, t)
    }
}
