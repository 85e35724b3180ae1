//! ResNet-18 (CIFAR stem, widths 64-128-256-512): residual sums export as Add, the pooling as
//! GlobalAveragePool; the exported graph and its ONNX file compute libtorch's logits.
//! Measured: on a random [2, 3, 32, 32] input the interpreter's logits are within 1.3e-7 of
//! libtorch's (logits up to 0.31); the ONNX file imported by xforge-frontend gives the
//! interpreter's logits exactly, and onnxruntime's are within 1.8e-7 of libtorch's; the whole
//! test takes about 1 s (export + interpreter 0.1 s).
mod common;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};
use xforge_ir::Op;
use xtorch::model::Model;
use xtorch::modules::{resnet18_cifar, Layer};

#[test]
fn resnet18_exports_and_runs_on_the_interpreter_and_through_onnx_like_libtorch() {
    let _serial = common::serial();
    let model = Model::new(Device::Cpu, 7, |p| resnet18_cifar(p, 64, 10));
    let blocks = model.net.layers().iter().filter(|(_, l)| matches!(l, Layer::Residual(_))).count();
    assert_eq!(blocks, 8);
    // random initial weights; two training-mode forwards (no optimizer step) on random data
    // move the BatchNorm running statistics
    tch::no_grad(|| {
        for _ in 0..2 {
            let _ = model.net.forward_t(&Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu)), true);
        }
    });
    let vars = model.vs.variables();
    assert!(vars["1.running_mean"].abs().max().double_value(&[]) > 1e-3);
    assert_eq!(vars["1.num_batches_tracked"].int64_value(&[]), 2);
    let shape = [2usize, 3, 32, 32];
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let want = Vec::<f32>::try_from(tch::no_grad(|| model.net.forward_t(&x, false)).flatten(0, -1)).unwrap();

    let t = std::time::Instant::now();
    let g = xtorch::export(&model.net, &shape).unwrap();
    let count = |op: Op| g.nodes.iter().filter(|n| n.op == op).count();
    assert_eq!(count(Op::Add), 8);
    assert_eq!(count(Op::Conv), 20, "1 stem + 16 in blocks + 3 shortcuts");
    assert_eq!(count(Op::BatchNormalization), 20);
    assert_eq!(count(Op::GlobalAveragePool), 1);
    assert!(g.nodes.iter().any(|n| n.name == "5.shortcut.0.Conv2d"), "named nodes");
    let feed = HashMap::from([("x".to_string(), xtorch::export::to_ir(&x))]);
    let direct = xforge_ir::interp::run(&g, &feed).unwrap()[0].to_f64();
    assert_eq!(direct.len(), 20);
    let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    let worst = direct.iter().zip(&want).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max);
    eprintln!(
        "ResNet-18 interpreter vs libtorch: largest logit difference {worst:.2e} (logits up to {scale:.3}) ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    assert!(worst <= 1e-4, "{worst}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet18.onnx");
    xtorch::onnx::write_onnx(&g, &path).unwrap();
    let imported = xforge_frontend::load(&path, &Default::default()).unwrap();
    let via_onnx = xforge_ir::interp::run(&imported.graph, &feed).unwrap()[0].to_f64();
    assert_eq!(direct, via_onnx);

    // onnxruntime runs the file like libtorch (needs python3 with onnxruntime and numpy)
    let theirs = common::onnxruntime(&path, &x, dir.path());
    assert_eq!(theirs.len(), want.len());
    let ort = theirs.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("ResNet-18 onnxruntime vs libtorch: largest logit difference {ort:.2e}");
    assert!(ort <= 1e-4, "{ort}");
    eprintln!("total {:.1} s", t.elapsed().as_secs_f64());
}

#[test]
fn a_residual_shape_mismatch_names_the_block() {
    // builds (seeds and draws from) libtorch's process-wide generator
    let _serial = common::serial();
    let model = Model::new(Device::Cpu, 0, |p| resnet18_cifar(p, 8, 10));
    let e = xtorch::export(&model.net, &[1, 4, 16, 16]).unwrap_err().to_string();
    assert!(e.contains("layer 0 (Conv2d)"), "{e}");
    // a block whose body halves the size while the (identity) shortcut does not
    let p = tch::nn::VarStore::new(Device::Cpu);
    let mut r = xtorch::modules::basic_block(&p.root(), 8, 8, 2);
    r.shortcut = None;
    let e = r.out_shape("5", &[1, 8, 8, 8]).unwrap_err().to_string();
    assert!(e.contains("layer 5 (Residual)") && e.contains("[1, 8, 4, 4]") && e.contains("[1, 8, 8, 8]"), "{e}");
    let e = r.out_shape("5", &[1, 3, 8, 8]).unwrap_err().to_string();
    assert!(e.contains("layer 5.body.0 (Conv2d)"), "{e}");
}
