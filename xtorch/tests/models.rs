//! ResNet-34 (CIFAR and ImageNet stems), ResNet-18 with the ImageNet stem, and a small U-Net:
//! forward shapes, and the exported graph on xforge's interpreter and the ONNX file in
//! onnxruntime compute libtorch's eval output within 1e-5. Small widths and images, so the
//! tests run in seconds on one CPU thread.
mod common;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};
use xforge_ir::Op;
use xtorch::model::Model;
use xtorch::modules::{resnet18_imagenet, resnet34_cifar, resnet34_imagenet, unet, Layer, Sequential, UNetConfig};

/// Two training-mode forwards on random data (moving the BatchNorm running statistics), then
/// libtorch's eval output on a random input of `shape` against the exported graph on the
/// interpreter and the ONNX file in onnxruntime; returns the graph and both differences.
fn compare(name: &str, model: &Model, shape: &[i64]) -> (xforge_ir::Graph, f32, f32) {
    tch::no_grad(|| {
        for _ in 0..2 {
            let _ = model.net.forward_t(&Tensor::randn(shape, (Kind::Float, Device::Cpu)), true);
        }
    });
    let x = Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let want = Vec::<f32>::try_from(tch::no_grad(|| model.net.forward_t(&x, false)).flatten(0, -1)).unwrap();
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let g = xtorch::export(&model.net, &dims).unwrap();
    let feed = HashMap::from([("x".to_string(), xtorch::export::to_ir(&x))]);
    let ours = xforge_ir::interp::run(&g, &feed).unwrap()[0].to_f64();
    assert_eq!(ours.len(), want.len());
    let interp = ours.iter().zip(&want).map(|(a, b)| (*a as f32 - b).abs()).fold(0.0f32, f32::max);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    xtorch::onnx::write_onnx(&g, &path).unwrap();
    let theirs = common::onnxruntime(&path, &x, dir.path());
    assert_eq!(theirs.len(), want.len());
    let ort = theirs.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    eprintln!("{name}: interpreter {interp:.2e}, onnxruntime {ort:.2e} from libtorch (outputs up to {scale:.3})");
    assert!(interp <= 1e-5 && ort <= 1e-5, "{name}: interpreter {interp}, onnxruntime {ort}");
    (g, interp, ort)
}

fn count(g: &xforge_ir::Graph, op: Op) -> usize {
    g.nodes.iter().filter(|n| n.op == op).count()
}

fn blocks(net: &Sequential) -> usize {
    net.layers().iter().filter(|(_, l)| matches!(l, Layer::Residual(_))).count()
}

#[test]
fn resnet34_cifar_exports_like_libtorch() {
    let _serial = common::serial();
    let model = Model::new(Device::Cpu, 3, |p| resnet34_cifar(p, 8, 10));
    assert_eq!(blocks(&model.net), 16);
    assert_eq!(model.net.check(&[2, 3, 32, 32]).unwrap(), vec![2, 10]);
    let (g, ..) = compare("ResNet-34 CIFAR", &model, &[2, 3, 32, 32]);
    assert_eq!(count(&g, Op::Conv), 1 + 32 + 3, "stem, two per block, three shortcuts");
    assert_eq!(count(&g, Op::Add), 16);
    assert_eq!(count(&g, Op::MaxPool), 0);
}

#[test]
fn imagenet_stems_pool_by_four_and_export_like_libtorch() {
    let _serial = common::serial();
    for (name, blocks_want, build) in [
        ("ResNet-18 ImageNet", 8, resnet18_imagenet as fn(&tch::nn::Path, i64, i64) -> Sequential),
        ("ResNet-34 ImageNet", 16, resnet34_imagenet),
    ] {
        let model = Model::new(Device::Cpu, 5, |p| build(p, 8, 10));
        assert_eq!(blocks(&model.net), blocks_want);
        // the stem takes 64×64 to 16×16 (conv7×7 stride 2, max pool 3×3 stride 2 padding 1)
        let stem: Vec<i64> =
            model.net.layers()[..4].iter().fold(vec![2, 3, 64, 64], |s, (n, l)| l.out_shape(n, &s).unwrap());
        assert_eq!(stem, vec![2, 8, 16, 16]);
        assert_eq!(model.net.check(&[1, 3, 224, 224]).unwrap(), vec![1, 10]);
        let (g, ..) = compare(name, &model, &[2, 3, 64, 64]);
        let pool = g.nodes.iter().find(|n| n.op == Op::MaxPool).unwrap();
        assert_eq!(pool.name, "3.MaxPool2d");
        assert_eq!(count(&g, Op::Add), blocks_want);
    }
}

#[test]
fn unet_keeps_the_image_size_and_exports_like_libtorch() {
    let _serial = common::serial();
    let c = UNetConfig { in_channels: 3, classes: 2, width: 4, depth: 2 };
    let model = Model::new(Device::Cpu, 11, |p| unet(p, &c));
    assert_eq!(model.net.check(&[2, 3, 32, 32]).unwrap(), vec![2, 2, 32, 32]);
    let y = tch::no_grad(|| model.net.forward_t(&Tensor::randn([2, 3, 16, 24], (Kind::Float, Device::Cpu)), false));
    assert_eq!(y.size(), vec![2, 2, 16, 24]);
    let (g, ..) = compare("U-Net", &model, &[2, 3, 32, 32]);
    assert_eq!(count(&g, Op::Concat), 2);
    assert_eq!(count(&g, Op::ConvTranspose), 2);
    assert_eq!(count(&g, Op::MaxPool), 2);
    assert_eq!(count(&g, Op::Conv), 3 * 2 + 2 * 2 + 1, "two per level, two per merge, the head");
    assert!(g.nodes.iter().any(|n| n.name == "6.Concat"), "named nodes");
    let vars = model.vs.variables();
    assert_eq!(vars["6.body.14.weight"].size(), vec![8, 4, 2, 2], "ConvTranspose2d weight [in, out, k, k]");
    // 30 is not a multiple of 4: the inner skip's body gives 14×14 beside a 15×15 input
    let e = model.net.check(&[1, 3, 30, 30]).unwrap_err().to_string();
    assert!(
        e.contains("layer 6.body.7 (Concat)") && e.contains("[1, 8, 15, 15]") && e.contains("[1, 8, 14, 14]"),
        "{e}"
    );
}
