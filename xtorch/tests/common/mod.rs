//! The digits recipe the tests share: LeNet-8 trained with AdamW on a seeded 80/20 split.
#![allow(dead_code)]
use std::sync::Arc;
use xtorch::data::{train_test_split, Digits, Subset};
use xtorch::loader::{DataLoader, LoaderConfig};
use xtorch::model::Model;
use xtorch::modules::lenet8;
use xtorch::optim::Optim;
use xtorch::trainer::{FitReport, Trainer};

/// libtorch's random generator is process-wide (weight initialization, dropout masks): tests
/// that train hold this lock so that a parallel test cannot draw from it in between.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    one_thread();
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// libtorch on one intra-op thread: its OpenMP threads spin at every parallel region's barrier,
/// and with the test harness's own threads (or another process) on a 2-core machine that turned
/// a 1.5 s test into 107 s. The models here are small; one thread loses little.
pub fn one_thread() {
    tch::set_num_threads(1);
}

pub type Split = Subset<Arc<Digits>>;

pub fn split() -> (Split, Split) {
    train_test_split(Digits::load().unwrap(), 0.2, 0)
}

pub fn loaders() -> (DataLoader, DataLoader) {
    let (train, test) = split();
    let train = DataLoader::new(train, LoaderConfig { batch_size: 32, shuffle: true, seed: 1, ..Default::default() });
    let test = DataLoader::new(test, LoaderConfig { batch_size: 128, ..Default::default() });
    (train, test)
}

pub fn lenet(seed: u64) -> Model {
    one_thread();
    Model::new(tch::Device::Cpu, seed, |p| lenet8(p, 16, 32, 10, 0.1))
}

/// A trained LeNet-8 and its report.
pub fn trained(epochs: usize) -> (Model, FitReport, DataLoader) {
    let (train, test) = loaders();
    let model = lenet(0);
    let report = Trainer::new(epochs).fit(&model, &Optim::adamw(3e-3), &train, Some(&test)).unwrap();
    (model, report, test)
}

/// Runs `python3 -c script ARGS…` and fails the test with Python's stderr if it fails (the
/// scripts need what scripts/setup installs: torch, safetensors, onnxruntime, numpy).
pub fn python<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) {
    let run = std::process::Command::new("python3").arg("-c").arg(script).args(args).output().expect("python3 runs");
    assert!(run.status.success(), "python3: {}", String::from_utf8_lossy(&run.stderr));
}

/// onnxruntime (CPU) on the ONNX file `model`: its output "logits" for input "x" = `x` (f32, or
/// int64 token ids), through raw little-endian files in `dir`.
pub fn onnxruntime(model: &std::path::Path, x: &tch::Tensor, dir: &std::path::Path) -> Vec<f32> {
    const SCRIPT: &str = r#"
import sys, numpy as np, onnxruntime as ort
model, inputs, shape, out, dtype = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
x = np.fromfile(inputs, dtype=dtype).reshape([int(d) for d in shape.split(",")])
s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
(y,) = s.run(["logits"], {"x": x})
y.astype("<f4").tofile(out)
"#;
    let (inputs, out) = (dir.join("x.f32"), dir.join("y.f32"));
    let (bytes, dtype): (Vec<u8>, &str) = if x.kind() == tch::Kind::Int64 {
        let ids = Vec::<i64>::try_from(x.flatten(0, -1)).unwrap();
        (ids.iter().flat_map(|v| v.to_le_bytes()).collect(), "<i8")
    } else {
        let pixels = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
        (pixels.iter().flat_map(|v| v.to_le_bytes()).collect(), "<f4")
    };
    std::fs::write(&inputs, bytes).unwrap();
    let shape = x.size().iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
    python(SCRIPT, &[model.as_os_str(), inputs.as_os_str(), shape.as_ref(), out.as_os_str(), dtype.as_ref()]);
    std::fs::read(&out).unwrap().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}
