//! A small U-Net for dense prediction on [N, C, H, W] (H and W multiples of 2^depth): at each
//! level two conv3×3-BN-ReLU (convolutions without bias), then — above the bottom level — a
//! skip concatenation whose body max-pools 2×2, runs the level below at twice the width and
//! upsamples back with a ConvTranspose2d (kernel 2, stride 2); two more conv3×3-BN-ReLU merge
//! the encoder's features with the upsampled ones. A final conv1×1 (with bias) gives per-pixel
//! logits [N, classes, H, W].
use crate::concat::Concat;
use crate::convtranspose::ConvTranspose2d;
use crate::modules::{BatchNorm2d, Conv2d, Layer, Sequential};
use tch::nn;

#[derive(Clone, Debug)]
pub struct UNetConfig {
    pub in_channels: i64,
    pub classes: i64,
    /// The top level's width; level i has width·2^i.
    pub width: i64,
    /// Levels below the top (each halves H and W).
    pub depth: usize,
}

/// conv3×3-BN-ReLU twice, `i` → `o` channels, appended to `s` under `p`.
fn double_conv(s: Sequential, p: &nn::Path, i: i64, o: i64) -> Sequential {
    s.push_with(p, |q| Layer::Conv2d(Conv2d::without_bias(q, i, o, 3, 1, 1)))
        .push_with(p, |q| Layer::BatchNorm2d(BatchNorm2d::new(q, o)))
        .push(Layer::ReLU)
        .push_with(p, |q| Layer::Conv2d(Conv2d::without_bias(q, o, o, 3, 1, 1)))
        .push_with(p, |q| Layer::BatchNorm2d(BatchNorm2d::new(q, o)))
        .push(Layer::ReLU)
}

/// Level `d` (of `depth`) taking `i` channels at width `w`, appended to `s` under `p`.
fn level(s: Sequential, p: &nn::Path, d: usize, depth: usize, i: i64, w: i64) -> Sequential {
    let s = double_conv(s, p, i, w);
    if d == depth {
        return s;
    }
    let s = s.push_with(p, |q| {
        let b = &q / "body";
        let down = Sequential::new().push(Layer::MaxPool2d { kernel: 2, stride: 2, padding: 0 });
        let body = level(down, &b, d + 1, depth, w, 2 * w)
            .push_with(&b, |q| Layer::ConvTranspose2d(ConvTranspose2d::new(q, 2 * w, w, 2, 2, 0)));
        Layer::Concat(Box::new(Concat { body }))
    });
    double_conv(s, p, 2 * w, w)
}

/// The U-Net of `c`: images [N, in_channels, H, W] → logits [N, classes, H, W].
pub fn unet(p: &nn::Path, c: &UNetConfig) -> Sequential {
    level(Sequential::new(), p, 0, c.depth, c.in_channels, c.width)
        .push_with(p, |q| Layer::Conv2d(Conv2d::new(q, c.width, c.classes, 1, 1, 0)))
}
