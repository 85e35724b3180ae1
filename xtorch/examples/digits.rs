//! Trains a LeNet-style network on scikit-learn's digits (1,797 8×8 images; 80/20 seeded split)
//! on the CPU, prints the test accuracy, saves the best checkpoint, then exports the network to
//! xforge's graph IR, checks the interpreter's predictions against libtorch's, and writes the
//! network as an ONNX model too.
//!
//!     cargo run --release -p xtorch --example digits [-- EPOCHS]
use std::collections::HashMap;
use std::time::Instant;
use xtorch::data::{train_test_split, Dataset, Digits};
use xtorch::loader::{DataLoader, LoaderConfig};
use xtorch::model::Model;
use xtorch::modules::lenet8;
use xtorch::optim::Optim;
use xtorch::trainer::{evaluate, EarlyStopping, ModelCheckpoint, Monitor, ProgressBar, Trainer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let epochs: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(15);
    // one intra-op thread: the network is tiny, and libtorch's OpenMP threads spin at every
    // barrier, which on a busy 2-core machine made 15 epochs take 71 s instead of 2
    tch::set_num_threads(1);
    let (train, test) = train_test_split(Digits::load()?, 0.2, 0);
    println!("digits: {} training and {} test images", train.len(), test.len());
    let train = DataLoader::new(train, LoaderConfig { batch_size: 32, shuffle: true, seed: 1, ..Default::default() });
    let test = DataLoader::new(test, LoaderConfig { batch_size: 128, ..Default::default() });
    let model = Model::new(tch::Device::Cpu, 0, |p| lenet8(p, 16, 32, 10, 0.1));
    println!("LeNet-8: {} parameters", model.num_parameters());

    let dir = std::env::temp_dir().join("xtorch-digits");
    let ckpt = ModelCheckpoint::new(&dir, Monitor::ValAccuracy);
    let best = ckpt.best_path();
    let t = Instant::now();
    let report = Trainer::new(epochs)
        .callback(ProgressBar::new())
        .callback(EarlyStopping::new(Monitor::ValLoss, 5, 0.0))
        .callback(ckpt)
        .fit(&model, &Optim::adamw(3e-3), &train, Some(&test))?;
    let (loss, acc) = evaluate(&model, &test)?;
    println!(
        "{} epochs in {:.1} s: test loss {loss:.4}, test accuracy {:.2}%",
        report.history.len(),
        t.elapsed().as_secs_f64(),
        acc * 100.0
    );
    println!("best checkpoint: {}", best.display());

    // the trained network as an xforge graph, run on the reference interpreter
    let n = test.dataset().len();
    let pixels: Vec<f32> =
        (0..n).map(|i| test.dataset().get(i).map(|e| e.input)).collect::<Result<Vec<_>, _>>()?.concat();
    let x = tch::Tensor::from_slice(&pixels).view([n as i64, 1, 8, 8]);
    let want = tch::no_grad(|| model.net.forward_t(&x, false)).argmax(-1, false);
    let want = Vec::<i64>::try_from(want)?;
    let graph = xtorch::export(&model.net, &[n, 1, 8, 8])?;
    let out = xforge_ir::interp::run(&graph, &HashMap::from([("x".to_string(), xtorch::export::to_ir(&x))]))?;
    let logits = out[0].to_f64();
    let agree = (0..n)
        .filter(|&i| {
            let row = &logits[i * 10..(i + 1) * 10];
            (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])) == Some(want[i] as usize)
        })
        .count();
    println!(
        "exported graph ({} nodes) on xforge's interpreter: {agree}/{n} predictions agree with libtorch",
        graph.nodes.len()
    );
    // and as ONNX, for `xforge compile` or onnxruntime (batch 1)
    let onnx = dir.join("lenet.onnx");
    xtorch::onnx::write_onnx(&xtorch::export(&model.net, &[1, 1, 8, 8])?, &onnx)?;
    println!("ONNX model: {}", onnx.display());
    Ok(())
}
