//! Export: the trained LeNet as an xforge graph. On xforge's reference interpreter it predicts
//! the class libtorch predicts for every digits test image, with logits within 1e-5; the
//! compiler compiles it for sm_90 (no GPU needed to compile).
mod common;
use std::collections::HashMap;
use tch::Tensor;
use xforge_ir::Op;
use xtorch::data::Dataset;
use xtorch::modules::ShapeError;

#[test]
fn the_exported_lenet_matches_libtorch_on_every_test_image() {
    let _serial = common::serial();
    let (model, _, test) = common::trained(15);
    let n = test.dataset().len();
    // all 359 test images as one batch
    let examples: Vec<_> = (0..n).map(|i| test.dataset().get(i).unwrap()).collect();
    let pixels: Vec<f32> = examples.iter().flat_map(|e| e.input.clone()).collect();
    let x = Tensor::from_slice(&pixels).view([n as i64, 1, 8, 8]);
    let want = tch::no_grad(|| model.net.forward_t(&x, false));
    let want_logits = Vec::<f32>::try_from(want.flatten(0, -1)).unwrap();
    let want_class = Vec::<i64>::try_from(want.argmax(-1, false)).unwrap();

    let g = xtorch::export(&model.net, &[n, 1, 8, 8]).unwrap();
    let ops: Vec<Op> = g.nodes.iter().map(|n| n.op).collect();
    assert_eq!(
        ops,
        [Op::Conv, Op::Relu, Op::MaxPool, Op::Conv, Op::Relu, Op::MaxPool, Op::Flatten, Op::Gemm, Op::Relu, Op::Gemm]
    );
    assert_eq!(g.nodes[0].name, "0.Conv2d");
    assert_eq!(g.weights.len(), 8);
    let feed = HashMap::from([("x".to_string(), xtorch::export::to_ir(&x))]);
    let got = xforge_ir::interp::run(&g, &feed).unwrap();
    assert_eq!(got[0].shape(), &[n, 10]);
    let got = got[0].to_f64();
    let mut worst = 0.0f64;
    for (a, b) in got.iter().zip(&want_logits) {
        worst = worst.max((a - *b as f64).abs());
    }
    eprintln!("{n} test images: largest logit difference interpreter vs libtorch {worst:.3e}");
    assert!(worst <= 1e-5, "largest logit difference {worst}");
    for i in 0..n {
        let row = &got[i * 10..(i + 1) * 10];
        let class = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as i64;
        assert_eq!(class, want_class[i], "image {i}");
    }
    let labels: Vec<i64> = examples.iter().map(|e| e.target).collect();
    let right = want_class.iter().zip(&labels).filter(|(a, b)| a == b).count();
    eprintln!("predicted classes agree on all {n} images; {right} of them are right");

    // the compiler takes the exported graph as it is (no GPU needed to compile)
    let t = std::time::Instant::now();
    let artifact = xforge_compiler::Compiler::new("sm_90").compile_graph(&g, String::new()).unwrap();
    assert_eq!(artifact.plans.len(), 1);
    eprintln!("compiled for sm_90 in {:.1} s", t.elapsed().as_secs_f64());

    // the compiled plan, its generated kernels run on the host (library calls and kernels with
    // barriers interpreted: the GEMMs as cuBLASLt calls, the convolutions as cuDNN calls)
    {
        let generated_gemm = false;
        let t = std::time::Instant::now();
        let c = xforge_compiler::Compiler::new("sm_90").generated_gemm(generated_gemm);
        let fused = c.fuse(&g).unwrap();
        let (library, _) = xforge_compiler::build::library_plans(&fused, generated_gemm);
        let (kernels, missing) = xforge_compiler::build::generate_kernels(&fused, &library);
        assert!(missing.is_empty(), "{missing:?}");
        let kernels: HashMap<_, _> = kernels.into_iter().collect();
        let (out, stats) = xforge_testsuite::host_kernels::run_plan(&fused, &kernels, &feed).unwrap();
        let out = out[0].to_f64();
        let worst = out.iter().zip(&want_logits).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max);
        eprintln!(
            "compiled plan (generated GEMM {generated_gemm}): {} groups, {} kernels, {} run on the host, \
             {} interpreted; largest logit difference {worst:.3e} ({:.1} s)",
            fused.partition.groups.len(),
            kernels.len(),
            stats.host_kernels,
            stats.interpreted,
            t.elapsed().as_secs_f64()
        );
        assert!(worst <= 1e-5, "generated GEMM {generated_gemm}: largest logit difference {worst}");
        for i in 0..n {
            let row = &out[i * 10..(i + 1) * 10];
            let class = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as i64;
            assert_eq!(class, want_class[i], "image {i}, generated GEMM {generated_gemm}");
        }
    }
}

#[test]
fn an_mlp_exports_to_gemms_and_dropout_to_nothing() {
    common::one_thread();
    let model = xtorch::model::Model::new(tch::Device::Cpu, 3, |p| xtorch::modules::mlp(p, 64, &[32], 10, 0.5));
    let g = xtorch::export(&model.net, &[2, 1, 8, 8]).unwrap();
    let ops: Vec<Op> = g.nodes.iter().map(|n| n.op).collect();
    assert_eq!(ops, [Op::Flatten, Op::Gemm, Op::Relu, Op::Gemm]);
    let x = Tensor::rand([2, 1, 8, 8], (tch::Kind::Float, tch::Device::Cpu));
    let want = Vec::<f32>::try_from(tch::no_grad(|| model.net.forward_t(&x, false)).flatten(0, -1)).unwrap();
    let feed = HashMap::from([("x".to_string(), xtorch::export::to_ir(&x))]);
    let got = xforge_ir::interp::run(&g, &feed).unwrap()[0].to_f64();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - *b as f64).abs() <= 1e-5, "{a} vs {b}");
    }
}

#[test]
fn a_wrong_input_shape_names_the_layer_and_both_shapes() {
    let model = common::lenet(0);
    // 3 channels into a 1-channel first convolution
    let e: ShapeError = match xtorch::export(&model.net, &[1, 3, 8, 8]) {
        Err(xtorch::export::ExportError::Shape(e)) => e,
        other => panic!("{:?}", other.map(|g| g.name)),
    };
    assert_eq!(e.layer, "0");
    let msg = e.to_string();
    assert!(msg.contains("Conv2d") && msg.contains("[1, 3, 8, 8]") && msg.contains("[N, 1, H, W]"), "{msg}");
    // 16×16 images reach the first Linear with 256 features instead of 128, before any libtorch call
    let x = Tensor::zeros([2, 1, 16, 16], (tch::Kind::Float, tch::Device::Cpu));
    let e = model.net.f_forward_t(&x, false).unwrap_err().to_string();
    assert!(e.contains("layer 7 (Linear)") && e.contains("[2, 512]") && e.contains("[N, 128]"), "{e}");
}

#[test]
fn batch_norm_and_layer_norm_export_with_their_trained_statistics() {
    use xtorch::modules::{BatchNorm2d, Conv2d, Layer, LayerNorm, Linear, Sequential};
    let _serial = common::serial();
    let (train, test) = common::loaders();
    let model = xtorch::model::Model::new(tch::Device::Cpu, 4, |p| {
        Sequential::new()
            .push_with(p, |q| Layer::Conv2d(Conv2d::new(q, 1, 8, 3, 1, 1)))
            .push_with(p, |q| Layer::BatchNorm2d(BatchNorm2d::new(q, 8)))
            .push(Layer::ReLU)
            .push(Layer::MaxPool2d { kernel: 2, stride: 2, padding: 0 })
            .push(Layer::Flatten)
            .push_with(p, |q| Layer::Linear(Linear::new(q, 128, 32)))
            .push_with(p, |q| Layer::LayerNorm(LayerNorm::new(q, 32)))
            .push(Layer::ReLU)
            .push_with(p, |q| Layer::Linear(Linear::new(q, 32, 10)))
    });
    xtorch::trainer::Trainer::new(3).fit(&model, &xtorch::optim::Optim::adamw(3e-3), &train, None).unwrap();
    // training moved the running statistics away from their initial 0 and 1
    let vars = model.vs.variables();
    assert!(vars["1.running_mean"].abs().max().double_value(&[]) > 1e-3);
    let (_, acc) = xtorch::trainer::evaluate(&model, &test).unwrap();
    eprintln!("Conv-BN-ReLU-Pool-Linear-LN-ReLU-Linear, 3 epochs: test accuracy {:.2}%", acc * 100.0);
    let batch = test.epoch(0).next().unwrap().unwrap();
    let want = tch::no_grad(|| model.net.forward_t(&batch.inputs, false));
    let want = Vec::<f32>::try_from(want.flatten(0, -1)).unwrap();
    let n = batch.inputs.size()[0] as usize;
    let g = xtorch::export(&model.net, &[n, 1, 8, 8]).unwrap();
    let ops: Vec<Op> = g.nodes.iter().map(|n| n.op).collect();
    assert!(ops.contains(&Op::BatchNormalization) && ops.contains(&Op::LayerNormalization), "{ops:?}");
    let feed = HashMap::from([("x".to_string(), xtorch::export::to_ir(&batch.inputs))]);
    let got = xforge_ir::interp::run(&g, &feed).unwrap()[0].to_f64();
    let worst = got.iter().zip(&want).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max);
    eprintln!("{n} images: largest logit difference {worst:.2e}");
    assert!(worst <= 1e-5, "{worst}");
}

/// onnxruntime's side: the ONNX file run on raw float32 inputs, logits written back raw.
#[test]
fn the_onnx_file_imports_into_xforge_and_runs_in_onnxruntime_like_libtorch() {
    // needs python3 with onnxruntime and numpy (scripts/setup installs both)
    let _serial = common::serial();
    let (model, _, test) = common::trained(5);
    let batch = test.epoch(0).next().unwrap().unwrap();
    let n = batch.inputs.size()[0] as usize;
    let want = Vec::<f32>::try_from(tch::no_grad(|| model.net.forward_t(&batch.inputs, false)).flatten(0, -1)).unwrap();
    let g = xtorch::export(&model.net, &[n, 1, 8, 8]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lenet.onnx");
    xtorch::onnx::write_onnx(&g, &path).unwrap();

    // xforge's importer reads it back to the same graph behaviour
    let imported = xforge_frontend::load(&path, &Default::default()).unwrap();
    let feed = HashMap::from([("x".to_string(), xtorch::export::to_ir(&batch.inputs))]);
    let direct = xforge_ir::interp::run(&g, &feed).unwrap()[0].to_f64();
    let via_onnx = xforge_ir::interp::run(&imported.graph, &feed).unwrap()[0].to_f64();
    assert_eq!(direct, via_onnx);

    // onnxruntime runs it like libtorch
    let theirs = common::onnxruntime(&path, &batch.inputs, dir.path());
    assert_eq!(theirs.len(), want.len());
    let worst = theirs.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("onnxruntime vs libtorch on {n} images: largest logit difference {worst:.2e}");
    assert!(worst <= 1e-5, "{worst}");
}
