//! Layers wrapping tch, and `Sequential`. Each layer knows its output shape for an input shape,
//! so a mismatch between layers is reported with the layer's name and both shapes before any
//! tensor work runs (`Sequential::check`), and `export` reads the layers' parameters directly.
use crate::amp;
pub use crate::attention::MultiheadAttention;
pub use crate::concat::Concat;
pub use crate::conv1d::Conv1d;
pub use crate::convtranspose::ConvTranspose2d;
pub use crate::embedding::{Embedding, PositionEmbedding};
pub use crate::resnet::{resnet, resnet18_imagenet, resnet34_cifar, resnet34_imagenet, Stem};
pub use crate::rmsnorm::RmsNorm;
pub use crate::unet::{unet, UNetConfig};
use tch::nn::{self, Module as _};
use tch::Tensor;

#[derive(Debug, thiserror::Error)]
#[error("layer {layer} ({kind}): input shape {got:?}, expected {want}")]
pub struct ShapeError {
    pub layer: String,
    pub kind: &'static str,
    pub got: Vec<i64>,
    pub want: String,
}

/// A fully connected layer: y = x·Wᵀ + b, W of shape [out, in] (PyTorch's layout and names),
/// on the last axis of an input of any rank ≥ 2.
#[derive(Debug)]
pub struct Linear {
    pub inner: nn::Linear,
    pub in_features: i64,
    pub out_features: i64,
}

impl Linear {
    pub fn new(p: nn::Path, in_features: i64, out_features: i64) -> Linear {
        Linear { inner: nn::linear(p, in_features, out_features, Default::default()), in_features, out_features }
    }
}

/// A 2-D convolution, NCHW, weight [out, in, k, k].
#[derive(Debug)]
pub struct Conv2d {
    pub inner: nn::Conv2D,
    pub in_channels: i64,
    pub out_channels: i64,
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
}

impl Conv2d {
    pub fn new(p: nn::Path, in_channels: i64, out_channels: i64, kernel: i64, stride: i64, padding: i64) -> Conv2d {
        Conv2d::with_bias(p, in_channels, out_channels, kernel, stride, padding, true)
    }

    /// The same without a bias (before a BatchNorm: ResNet's and U-Net's convolutions).
    pub fn without_bias(
        p: nn::Path,
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
    ) -> Conv2d {
        Conv2d::with_bias(p, in_channels, out_channels, kernel, stride, padding, false)
    }

    fn with_bias(
        p: nn::Path,
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
        bias: bool,
    ) -> Conv2d {
        let cfg = nn::ConvConfig { stride, padding, bias, ..Default::default() };
        Conv2d {
            inner: nn::conv2d(p, in_channels, out_channels, kernel, cfg),
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
        }
    }
}

/// Batch normalization over the channels of [N, C, H, W]: batch statistics in training (and
/// running averages updated with momentum 0.1), the running averages in evaluation.
#[derive(Debug)]
pub struct BatchNorm2d {
    pub inner: nn::BatchNorm,
    pub features: i64,
    pub eps: f64,
    /// PyTorch's `num_batches_tracked`: an int64 scalar in the var store (not trainable), one
    /// more per training-mode forward, so checkpoints carry the key PyTorch's strict load expects.
    pub num_batches_tracked: Tensor,
}

impl BatchNorm2d {
    pub fn new(p: nn::Path, features: i64) -> BatchNorm2d {
        let eps = 1e-5;
        let num_batches_tracked =
            p.add("num_batches_tracked", Tensor::zeros([], (tch::Kind::Int64, p.device())), false);
        BatchNorm2d {
            inner: nn::batch_norm2d(p, features, nn::BatchNormConfig { eps, ..Default::default() }),
            features,
            eps,
            num_batches_tracked,
        }
    }
}

/// A residual block: `body(x) + shortcut(x)` (the identity when there is no shortcut), then a
/// ReLU if `relu`. The body's parameters live under "body", the shortcut's under "shortcut".
#[derive(Debug)]
pub struct Residual {
    pub body: Sequential,
    pub shortcut: Option<Sequential>,
    pub relu: bool,
}

impl Residual {
    /// The output shape, or the first body/shortcut layer that cannot take its input (named
    /// "block.body.i"), or the two branch shapes when they differ (named by the block).
    pub fn out_shape(&self, name: &str, shape: &[i64]) -> Result<Vec<i64>, ShapeError> {
        let inner = |branch: &str, s: &Sequential| {
            s.check(shape).map_err(|mut e| {
                e.layer = format!("{name}.{branch}.{}", e.layer);
                e
            })
        };
        let body = inner("body", &self.body)?;
        let short = match &self.shortcut {
            Some(s) => inner("shortcut", s)?,
            None => shape.to_vec(),
        };
        if body != short {
            return Err(ShapeError {
                layer: name.to_string(),
                kind: "Residual",
                got: shape.to_vec(),
                want: format!("an input for which body ({body:?}) and shortcut ({short:?}) give the same shape"),
            });
        }
        Ok(body)
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let short = match &self.shortcut {
            Some(s) => s.forward_t(xs, train),
            None => xs.shallow_clone(),
        };
        let y = self.body.forward_t(xs, train) + short;
        if self.relu {
            y.relu()
        } else {
            y
        }
    }
}

/// Layer normalization over the last axis (of size `features`), with a weight and a bias.
#[derive(Debug)]
pub struct LayerNorm {
    pub inner: nn::LayerNorm,
    pub features: i64,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(p: nn::Path, features: i64) -> LayerNorm {
        LayerNorm::with_eps(p, features, 1e-5)
    }

    /// With `eps` added to the variance (GPT-2's `layer_norm_epsilon`).
    pub fn with_eps(p: nn::Path, features: i64, eps: f64) -> LayerNorm {
        LayerNorm {
            inner: nn::layer_norm(p, vec![features], nn::LayerNormConfig { eps, ..Default::default() }),
            features,
            eps,
        }
    }
}

/// The layers a `Sequential` holds.
#[derive(Debug)]
pub enum Layer {
    Linear(Linear),
    Conv1d(Conv1d),
    Conv2d(Conv2d),
    /// Upsampling by a learned transposed convolution.
    ConvTranspose2d(ConvTranspose2d),
    BatchNorm2d(BatchNorm2d),
    LayerNorm(LayerNorm),
    RmsNorm(RmsNorm),
    /// Int64 ids [..] → [.., dim]; only as a network's first layer (its input is the ids).
    Embedding(Embedding),
    /// [N, T, dim] plus a learned vector per position (T ≤ max_len).
    PositionEmbedding(PositionEmbedding),
    /// Self-attention on [N, T, E].
    Attention(MultiheadAttention),
    ReLU,
    /// x·Φ(x), the exact (erf) form (PyTorch's `nn.GELU()`).
    GELU,
    /// x·σ(x) (PyTorch's `nn.SiLU()`).
    SiLU,
    /// The tanh approximation 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (PyTorch's
    /// `nn.GELU(approximate="tanh")`, GPT-2's "gelu_new").
    GELUTanh,
    /// [N, C, H, W] → [N, H·W, C]: a feature map as a sequence of tokens (a ViT's patches).
    Tokens,
    /// [N, T, E] → [N, E]: the mean over the tokens.
    TokenMean,
    /// Square window `kernel`, step `stride`, `padding` on each side (padded with −∞), floor mode.
    MaxPool2d {
        kernel: i64,
        stride: i64,
        padding: i64,
    },
    /// Everything after the first (batch) axis into one.
    Flatten,
    /// Zeroes with probability `p` in training (scaled by 1/(1−p)); the identity in evaluation.
    Dropout {
        p: f64,
    },
    /// `body(x) + shortcut(x)`, then an optional ReLU.
    Residual(Box<Residual>),
    /// The mean over H and W of [N, C, H, W], giving [N, C, 1, 1] (`nn.AdaptiveAvgPool2d(1)`).
    GlobalAvgPool,
    /// `cat([x, body(x)], channels)`: a U-Net's skip connection.
    Concat(Box<Concat>),
}

impl Layer {
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Linear(_) => "Linear",
            Layer::Conv1d(_) => "Conv1d",
            Layer::Conv2d(_) => "Conv2d",
            Layer::ConvTranspose2d(_) => "ConvTranspose2d",
            Layer::BatchNorm2d(_) => "BatchNorm2d",
            Layer::LayerNorm(_) => "LayerNorm",
            Layer::RmsNorm(_) => "RMSNorm",
            Layer::Embedding(_) => "Embedding",
            Layer::PositionEmbedding(_) => "PositionEmbedding",
            Layer::Attention(_) => "MultiheadAttention",
            Layer::ReLU => "ReLU",
            Layer::GELU => "GELU",
            Layer::SiLU => "SiLU",
            Layer::GELUTanh => "GELUTanh",
            Layer::Tokens => "Tokens",
            Layer::TokenMean => "TokenMean",
            Layer::MaxPool2d { .. } => "MaxPool2d",
            Layer::Flatten => "Flatten",
            Layer::Dropout { .. } => "Dropout",
            Layer::Residual(_) => "Residual",
            Layer::GlobalAvgPool => "GlobalAvgPool",
            Layer::Concat(_) => "Concat",
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Layer::Linear(l) => amp::linear(xs, &l.inner.ws, l.inner.bs.as_ref()),
            Layer::Conv1d(c) => amp::lowered(xs, &c.inner.ws, c.inner.bs.as_ref(), |x, w, b| {
                x.conv1d(w, b, [c.stride], [c.padding], [1], 1)
            }),
            Layer::Conv2d(c) => amp::lowered(xs, &c.inner.ws, c.inner.bs.as_ref(), |x, w, b| {
                x.conv2d(w, b, [c.stride; 2], [c.padding; 2], [1, 1], 1)
            }),
            Layer::ConvTranspose2d(c) => amp::lowered(xs, &c.inner.ws, c.inner.bs.as_ref(), |x, w, b| {
                x.conv_transpose2d(w, b, [c.stride; 2], [c.padding; 2], [0, 0], 1, [1, 1])
            }),
            Layer::BatchNorm2d(b) => {
                if train {
                    tch::no_grad(|| {
                        let _ = b.num_batches_tracked.shallow_clone().g_add_scalar_(1);
                    });
                }
                nn::ModuleT::forward_t(&b.inner, xs, train)
            }
            Layer::LayerNorm(l) => l.inner.forward(xs),
            Layer::RmsNorm(r) => r.forward(xs),
            Layer::Embedding(e) => e.forward(xs),
            Layer::PositionEmbedding(e) => e.forward(xs),
            Layer::Attention(a) => a.forward(xs),
            Layer::ReLU => xs.relu(),
            Layer::GELU => xs.gelu("none"),
            Layer::SiLU => xs.silu(),
            Layer::GELUTanh => xs.gelu("tanh"),
            Layer::Tokens => xs.flatten(2, -1).transpose(1, 2),
            Layer::TokenMean => xs.mean_dim(1, false, tch::Kind::Float),
            Layer::MaxPool2d { kernel, stride, padding } => {
                xs.max_pool2d([*kernel, *kernel], [*stride, *stride], [*padding, *padding], [1, 1], false)
            }
            Layer::Flatten => xs.flatten(1, -1),
            Layer::Dropout { p } => xs.dropout(*p, train),
            Layer::Residual(r) => r.forward_t(xs, train),
            Layer::GlobalAvgPool => xs.mean_dim([-2i64, -1].as_slice(), true, tch::Kind::Float),
            Layer::Concat(c) => c.forward_t(xs, train),
        }
    }

    /// The output shape for an input of `shape`, or why this layer cannot take it.
    pub fn out_shape(&self, name: &str, shape: &[i64]) -> Result<Vec<i64>, ShapeError> {
        let err = |want: String| ShapeError { layer: name.to_string(), kind: self.kind(), got: shape.to_vec(), want };
        match self {
            Layer::Linear(l) => match shape {
                [n, f] if *f == l.in_features => Ok(vec![*n, l.out_features]),
                [lead @ .., f] if lead.len() >= 2 && *f == l.in_features => {
                    Ok(lead.iter().copied().chain([l.out_features]).collect())
                }
                _ => Err(err(format!("[N, {}]", l.in_features))),
            },
            Layer::Conv1d(c) => match shape {
                [n, ch, len] if *ch == c.in_channels => {
                    if c.out_len(*len) < 1 {
                        return Err(err(format!(
                            "a length of at least {} (kernel {})",
                            c.kernel - 2 * c.padding,
                            c.kernel
                        )));
                    }
                    Ok(vec![*n, c.out_channels, c.out_len(*len)])
                }
                _ => Err(err(format!("[N, {}, L]", c.in_channels))),
            },
            Layer::Conv2d(c) => match shape {
                [n, ch, h, w] if *ch == c.in_channels => {
                    let o = |d: i64| (d + 2 * c.padding - c.kernel) / c.stride + 1;
                    if o(*h) < 1 || o(*w) < 1 {
                        return Err(err(format!(
                            "spatial dims of at least {} (kernel {})",
                            c.kernel - 2 * c.padding,
                            c.kernel
                        )));
                    }
                    Ok(vec![*n, c.out_channels, o(*h), o(*w)])
                }
                _ => Err(err(format!("[N, {}, H, W]", c.in_channels))),
            },
            Layer::ConvTranspose2d(c) => match shape {
                [n, ch, h, w] if *ch == c.in_channels => {
                    if c.out_len(*h) < 1 || c.out_len(*w) < 1 {
                        return Err(err(format!("spatial dims giving an output (padding {})", c.padding)));
                    }
                    Ok(vec![*n, c.out_channels, c.out_len(*h), c.out_len(*w)])
                }
                _ => Err(err(format!("[N, {}, H, W]", c.in_channels))),
            },
            Layer::BatchNorm2d(b) => match shape {
                [_, c, _, _] if *c == b.features => Ok(shape.to_vec()),
                _ => Err(err(format!("[N, {}, H, W]", b.features))),
            },
            Layer::LayerNorm(l) => match shape {
                [.., f] if *f == l.features => Ok(shape.to_vec()),
                _ => Err(err(format!("[..., {}]", l.features))),
            },
            Layer::RmsNorm(r) => match shape {
                [.., f] if *f == r.features => Ok(shape.to_vec()),
                _ => Err(err(format!("[..., {}]", r.features))),
            },
            Layer::Embedding(e) => match shape {
                [] => Err(err("ids of rank ≥ 1".into())),
                _ => Ok(shape.iter().copied().chain([e.dim]).collect()),
            },
            Layer::PositionEmbedding(e) => match shape {
                [_, t, d] if *d == e.dim && *t <= e.max_len => Ok(shape.to_vec()),
                _ => Err(err(format!("[N, T ≤ {}, {}]", e.max_len, e.dim))),
            },
            Layer::Attention(a) => match shape {
                [_, _, e] if *e == a.embed_dim => Ok(shape.to_vec()),
                _ => Err(err(format!("[N, T, {}]", a.embed_dim))),
            },
            Layer::Tokens => match shape {
                [n, c, h, w] => Ok(vec![*n, h * w, *c]),
                _ => Err(err("[N, C, H, W]".into())),
            },
            Layer::TokenMean => match shape {
                [n, _, e] => Ok(vec![*n, *e]),
                _ => Err(err("[N, T, E]".into())),
            },
            Layer::MaxPool2d { kernel, stride, padding } => match shape {
                [n, ch, h, w] if h + 2 * padding >= *kernel && w + 2 * padding >= *kernel => {
                    let o = |d: i64| (d + 2 * padding - kernel) / stride + 1;
                    Ok(vec![*n, *ch, o(*h), o(*w)])
                }
                _ => Err(err(format!("[N, C, H, W] with H, W ≥ {}", kernel - 2 * padding))),
            },
            Layer::Flatten => match shape {
                [n, rest @ ..] => Ok(vec![*n, rest.iter().product()]),
                [] => Err(err("rank ≥ 1".into())),
            },
            Layer::ReLU | Layer::GELU | Layer::GELUTanh | Layer::SiLU | Layer::Dropout { .. } => Ok(shape.to_vec()),
            Layer::Residual(r) => r.out_shape(name, shape),
            Layer::Concat(c) => c.out_shape(name, shape),
            Layer::GlobalAvgPool => match shape {
                [n, c, _, _] => Ok(vec![*n, *c, 1, 1]),
                _ => Err(err("[N, C, H, W]".into())),
            },
        }
    }
}

/// Layers applied in order; layer i's parameters live under the var-store path "i"
/// ("0.weight", "0.bias", ... as in PyTorch's `nn.Sequential`).
#[derive(Debug)]
pub struct Sequential {
    layers: Vec<(String, Layer)>,
}

impl Sequential {
    pub fn new() -> Sequential {
        Sequential { layers: vec![] }
    }

    /// Appends a layer built from its var-store path (`p / index`).
    pub fn push_with(mut self, p: &nn::Path, f: impl FnOnce(nn::Path) -> Layer) -> Sequential {
        let name = self.layers.len().to_string();
        let layer = f(p / name.as_str());
        self.layers.push((name, layer));
        self
    }

    /// Appends a layer without parameters.
    pub fn push(mut self, layer: Layer) -> Sequential {
        self.layers.push((self.layers.len().to_string(), layer));
        self
    }

    pub fn layers(&self) -> &[(String, Layer)] {
        &self.layers
    }

    /// The output shape for an input of `shape`; the first layer that cannot take its input is named.
    pub fn check(&self, shape: &[i64]) -> Result<Vec<i64>, ShapeError> {
        self.layers.iter().try_fold(shape.to_vec(), |s, (name, l)| l.out_shape(name, &s))
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.layers.iter().fold(xs.shallow_clone(), |x, (_, l)| l.forward_t(&x, train))
    }

    /// `forward_t` after `check` on the input's shape: a mismatch is an error, not a libtorch panic.
    pub fn f_forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor, ShapeError> {
        self.check(&xs.size())?;
        Ok(self.forward_t(xs, train))
    }
}

impl Default for Sequential {
    fn default() -> Self {
        Sequential::new()
    }
}

/// A multi-layer perceptron on [N, 1, 8, 8]-style inputs: Flatten, then Linear+ReLU(+Dropout) per
/// hidden width, then a Linear to `classes` logits.
pub fn mlp(p: &nn::Path, inputs: i64, hidden: &[i64], classes: i64, dropout: f64) -> Sequential {
    let mut s = Sequential::new().push(Layer::Flatten);
    let mut width = inputs;
    for &h in hidden {
        s = s.push_with(p, |q| Layer::Linear(Linear::new(q, width, h))).push(Layer::ReLU);
        if dropout > 0.0 {
            s = s.push(Layer::Dropout { p: dropout });
        }
        width = h;
    }
    s.push_with(p, |q| Layer::Linear(Linear::new(q, width, classes)))
}

/// A LeNet-style network for one-channel 8×8 images: two 3×3 convolutions (padding 1) with ReLU
/// and 2×2 max pooling (8→4→2), then Linear(c2·2·2 → 64), ReLU, Dropout, Linear(64 → classes).
pub fn lenet8(p: &nn::Path, c1: i64, c2: i64, classes: i64, dropout: f64) -> Sequential {
    Sequential::new()
        .push_with(p, |q| Layer::Conv2d(Conv2d::new(q, 1, c1, 3, 1, 1)))
        .push(Layer::ReLU)
        .push(Layer::MaxPool2d { kernel: 2, stride: 2, padding: 0 })
        .push_with(p, |q| Layer::Conv2d(Conv2d::new(q, c1, c2, 3, 1, 1)))
        .push(Layer::ReLU)
        .push(Layer::MaxPool2d { kernel: 2, stride: 2, padding: 0 })
        .push(Layer::Flatten)
        .push_with(p, |q| Layer::Linear(Linear::new(q, c2 * 4, 64)))
        .push(Layer::ReLU)
        .push(Layer::Dropout { p: dropout })
        .push_with(p, |q| Layer::Linear(Linear::new(q, 64, classes)))
}

/// ResNet's BasicBlock: conv3×3(stride)-BN-ReLU-conv3×3-BN (convolutions without bias) plus the
/// input, then ReLU; where the stride or the width changes, the shortcut is conv1×1(stride)-BN.
pub fn basic_block(p: &nn::Path, in_ch: i64, out_ch: i64, stride: i64) -> Residual {
    let conv = |q: nn::Path, i, o, k, s, pad| {
        let cfg = nn::ConvConfig { stride: s, padding: pad, bias: false, ..Default::default() };
        Layer::Conv2d(Conv2d {
            inner: nn::conv2d(q, i, o, k, cfg),
            in_channels: i,
            out_channels: o,
            kernel: k,
            stride: s,
            padding: pad,
        })
    };
    let b = p / "body";
    let body = Sequential::new()
        .push_with(&b, |q| conv(q, in_ch, out_ch, 3, stride, 1))
        .push_with(&b, |q| Layer::BatchNorm2d(BatchNorm2d::new(q, out_ch)))
        .push(Layer::ReLU)
        .push_with(&b, |q| conv(q, out_ch, out_ch, 3, 1, 1))
        .push_with(&b, |q| Layer::BatchNorm2d(BatchNorm2d::new(q, out_ch)));
    let shortcut = (stride != 1 || in_ch != out_ch).then(|| {
        let s = p / "shortcut";
        Sequential::new()
            .push_with(&s, |q| conv(q, in_ch, out_ch, 1, stride, 0))
            .push_with(&s, |q| Layer::BatchNorm2d(BatchNorm2d::new(q, out_ch)))
    });
    Residual { body, shortcut, relu: true }
}

/// ResNet-18 with the CIFAR stem: conv3×3(3 → w)-BN-ReLU (no max pool), then two BasicBlocks
/// at each of the widths w, 2w, 4w, 8w (the first of each later stage with stride 2), global
/// average pooling, Flatten and Linear(8w → classes). `w` = 64 is the standard network.
pub fn resnet18_cifar(p: &nn::Path, w: i64, classes: i64) -> Sequential {
    resnet(p, Stem::Cifar, [2, 2, 2, 2], w, classes)
}
