//! ResNet-18 (CIFAR stem) trained on CIFAR-shaped data on the GPU with xtorch's `Trainer`: SGD
//! (lr 0.1, momentum 0.9, weight decay 5e-4), batch 256, shuffled, pinned batches from loader
//! worker threads, fp32 or bf16 autocast. Prints images/s per epoch (the first epoch, where
//! cuDNN picks its algorithms, is left out of the mean), then exports the trained network,
//! writes it as ONNX with an input batch and libtorch's eval-mode logits for it (.npy) so that
//! `xforge compile` + `xforge run` can be checked against libtorch.
//!
//!     cargo run --release -p xtorch --example cifar_resnet -- \
//!         [--precision fp32|bf16] [--epochs 4] [--images 25600] [--workers 8] [--nchw] [--cpu] [--out DIR]
//!
//! The data: 10 classes, each a fixed random 3×32×32 pattern, every image its class's pattern
//! plus uniform noise (learnable, so the loss falls; no data set is available offline).
//! `testsuite/scripts/xtorch_cifar_torch.py` trains the same network on the same kind of data
//! in PyTorch for the comparison (`testsuite/scripts/device_xtorch.sh` runs both).
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tch::{Device, Kind, Tensor};
use xtorch::amp::Precision;
use xtorch::data::{DataError, Dataset, Example};
use xtorch::loader::{DataLoader, LoaderConfig};
use xtorch::model::Model;
use xtorch::optim::Optim;
use xtorch::resnet::{resnet, Stem};
use xtorch::rng::Rng;
use xtorch::trainer::{Callback, Control, EpochMetrics, TrainError, Trainer};

const PIXELS: usize = 3 * 32 * 32;
const CLASSES: usize = 10;

/// Images of 10 classes: a class pattern in [-1, 1] plus noise in [-1.5, 1.5].
struct PatternImages {
    pixels: Vec<f32>,
    labels: Vec<i64>,
}

impl PatternImages {
    fn new(n: usize, seed: u64) -> PatternImages {
        let mut rng = Rng::new(seed);
        let patterns: Vec<f32> = (0..CLASSES * PIXELS).map(|_| (rng.uniform() * 2.0 - 1.0) as f32).collect();
        let mut pixels = Vec::with_capacity(n * PIXELS);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let c = rng.below(CLASSES as u64) as usize;
            labels.push(c as i64);
            let p = &patterns[c * PIXELS..(c + 1) * PIXELS];
            pixels.extend(p.iter().map(|&v| v + (rng.uniform() * 3.0 - 1.5) as f32));
        }
        PatternImages { pixels, labels }
    }
}

impl Dataset for PatternImages {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn get(&self, i: usize) -> Result<Example, DataError> {
        Ok(Example {
            input: self.pixels[i * PIXELS..(i + 1) * PIXELS].to_vec(),
            shape: vec![3, 32, 32],
            target: self.labels[i],
        })
    }
}

/// Wall time per epoch (each epoch ends with its last loss read from the GPU: a sync point).
struct EpochClock {
    images: usize,
    last: Instant,
    /// Shared with `main`, which reads it after the fit.
    timing: Arc<Mutex<Timing>>,
}

#[derive(Clone, Default)]
struct Timing {
    /// images/s of each epoch.
    rates: Vec<f64>,
    /// Unix seconds at the end of epoch 0 and of the last epoch: the window the GPU-busy
    /// sampler is read over.
    window: (f64, f64),
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Callback for EpochClock {
    fn on_fit_start(&mut self, _epochs: usize, _batches: usize) -> Result<(), TrainError> {
        self.last = Instant::now();
        Ok(())
    }

    fn on_epoch_end(&mut self, m: &EpochMetrics, _model: &Model) -> Result<Control, TrainError> {
        let s = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        let rate = self.images as f64 / s;
        println!("epoch {}: {:.2} s, {rate:.0} images/s, train loss {:.4}", m.epoch, s, m.train_loss);
        let mut t = self.timing.lock().map_err(|_| TrainError::Callback("epoch clock poisoned".into()))?;
        t.rates.push(rate);
        if m.epoch == 0 {
            t.window.0 = unix_now();
        }
        t.window.1 = unix_now();
        Ok(Control::Continue)
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let precision = match arg(&args, "--precision").as_deref().unwrap_or("fp32") {
        "fp32" => Precision::F32,
        "bf16" => Precision::Bf16,
        other => return Err(format!("--precision {other}: expected fp32 or bf16").into()),
    };
    let epochs: usize = arg(&args, "--epochs").map(|a| a.parse()).transpose()?.unwrap_or(4);
    let images: usize = arg(&args, "--images").map(|a| a.parse()).transpose()?.unwrap_or(25_600);
    let workers: usize = arg(&args, "--workers").map(|a| a.parse()).transpose()?.unwrap_or(8);
    let out = std::path::PathBuf::from(arg(&args, "--out").unwrap_or_else(|| "/tmp/xtorch-cifar".into()));
    if epochs < 2 {
        return Err("--epochs must be at least 2 (the first is warm-up)".into());
    }
    // --cpu: a smoke run of the whole example without a GPU (give it few --images)
    let gpu = if args.iter().any(|a| a == "--cpu") {
        Device::Cpu
    } else if tch::Cuda::is_available() {
        Device::Cuda(0)
    } else {
        return Err("no CUDA device: this example trains on the GPU (--cpu for a smoke run)".into());
    };
    tch::Cuda::cudnn_set_benchmark(true);

    let t = Instant::now();
    let train = DataLoader::new(
        PatternImages::new(images, 1),
        LoaderConfig {
            batch_size: 256,
            shuffle: true,
            seed: 2,
            drop_last: true,
            workers,
            prefetch: 4,
            pin_memory: true,
        },
    );
    println!("{images} CIFAR-shaped images made in {:.1} s", t.elapsed().as_secs_f64());
    let mut model = Model::new(gpu, 0, |p| resnet(p, Stem::Cifar, [2, 2, 2, 2], 64, CLASSES as i64));
    if !args.iter().any(|a| a == "--nchw") {
        model.to_channels_last();
    }
    println!("ResNet-18 (CIFAR stem): {} parameters, {precision:?}", model.num_parameters());
    let optim = Optim::Sgd { lr: 0.1, momentum: 0.9, nesterov: false, weight_decay: 5e-4 };
    let per_epoch = train.len() * 256;
    let timing = Arc::new(Mutex::new(Timing::default()));
    let clock = EpochClock { images: per_epoch, last: Instant::now(), timing: timing.clone() };
    let report = Trainer::new(epochs).precision(precision).seed(3).callback(clock).fit(&model, &optim, &train, None)?;
    let Timing { rates, window } = timing.lock().map_err(|_| "clock poisoned")?.clone();
    let timed = &rates[1..];
    let mean = timed.len() as f64 / timed.iter().map(|r| 1.0 / r).sum::<f64>();
    let first = report.history.first().map(|m| m.train_loss).unwrap_or(f64::NAN);
    let last = report.history.last().map(|m| m.train_loss).unwrap_or(f64::NAN);
    println!(
        "RESULT {{\"framework\": \"xtorch\", \"precision\": \"{}\", \"images_per_s\": {mean:.1}, \"epochs_timed\": {}, \"window\": [{:.3}, {:.3}], \"loss_first\": {first:.4}, \"loss_last\": {last:.4}}}",
        if precision == Precision::Bf16 { "bf16" } else { "fp32" },
        timed.len(),
        window.0,
        window.1
    );

    // the trained network for xforge: ONNX, an input batch and libtorch's eval logits, in fp32
    // on the CPU (cuDNN's convolutions on the GPU round through TF32 by default)
    std::fs::create_dir_all(&out)?;
    model.vs.set_device(Device::Cpu);
    let probe = PatternImages::new(64, 99);
    let x = Tensor::from_slice(&probe.pixels).view([64, 3, 32, 32]);
    let want = tch::no_grad(|| model.net.forward_t(&x, false)).to_kind(Kind::Float);
    x.write_npy(out.join("x.npy"))?;
    want.write_npy(out.join("logits.npy"))?;
    let graph = xtorch::export(&model.net, &[64, 3, 32, 32])?;
    xtorch::onnx::write_onnx(&graph, &out.join("resnet18.onnx"))?;
    println!("wrote {}/resnet18.onnx, x.npy, logits.npy (libtorch eval, fp32)", out.display());
    Ok(())
}
