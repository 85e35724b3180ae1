//! ResNets of BasicBlocks (ResNet-18: two blocks per stage, ResNet-34: 3, 4, 6, 3) with the
//! CIFAR stem (conv3×3, stride 1, no pooling: 32×32 images) or the ImageNet stem (conv7×7
//! stride 2, BN, ReLU, max pool 3×3 stride 2 padding 1: 224×224 images, torchvision's layout).
use crate::modules::{basic_block, BatchNorm2d, Conv2d, Layer, Linear, Sequential};
use tch::nn;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stem {
    /// conv3×3(3 → w, stride 1, padding 1)-BN-ReLU.
    Cifar,
    /// conv7×7(3 → w, stride 2, padding 3)-BN-ReLU-MaxPool(3, stride 2, padding 1): /4.
    ImageNet,
}

/// A ResNet: the stem, then `blocks[i]` BasicBlocks at width w·2^i (the first of each later
/// stage with stride 2), global average pooling, Flatten and Linear(8w → classes); the
/// convolutions have no bias. `w` = 64 is the standard network.
pub fn resnet(p: &nn::Path, stem: Stem, blocks: [usize; 4], w: i64, classes: i64) -> Sequential {
    let mut s = match stem {
        Stem::Cifar => Sequential::new().push_with(p, |q| Layer::Conv2d(Conv2d::without_bias(q, 3, w, 3, 1, 1))),
        Stem::ImageNet => Sequential::new().push_with(p, |q| Layer::Conv2d(Conv2d::without_bias(q, 3, w, 7, 2, 3))),
    };
    s = s.push_with(p, |q| Layer::BatchNorm2d(BatchNorm2d::new(q, w))).push(Layer::ReLU);
    if stem == Stem::ImageNet {
        s = s.push(Layer::MaxPool2d { kernel: 3, stride: 2, padding: 1 });
    }
    let mut ch = w;
    for (stage, (n, width)) in blocks.into_iter().zip([w, 2 * w, 4 * w, 8 * w]).enumerate() {
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            s = s.push_with(p, |q| Layer::Residual(Box::new(basic_block(&q, ch, width, stride))));
            ch = width;
        }
    }
    s.push(Layer::GlobalAvgPool).push(Layer::Flatten).push_with(p, |q| Layer::Linear(Linear::new(q, 8 * w, classes)))
}

/// ResNet-18 (2, 2, 2, 2 blocks) with the ImageNet stem.
pub fn resnet18_imagenet(p: &nn::Path, w: i64, classes: i64) -> Sequential {
    resnet(p, Stem::ImageNet, [2, 2, 2, 2], w, classes)
}

/// ResNet-34 (3, 4, 6, 3 blocks) with the CIFAR stem.
pub fn resnet34_cifar(p: &nn::Path, w: i64, classes: i64) -> Sequential {
    resnet(p, Stem::Cifar, [3, 4, 6, 3], w, classes)
}

/// ResNet-34 (3, 4, 6, 3 blocks) with the ImageNet stem.
pub fn resnet34_imagenet(p: &nn::Path, w: i64, classes: i64) -> Sequential {
    resnet(p, Stem::ImageNet, [3, 4, 6, 3], w, classes)
}
