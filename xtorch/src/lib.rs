//! xtorch: training in Rust on libtorch (through `tch`), and export of the trained network into
//! xforge's graph IR, where the reference interpreter runs it and the compiler compiles it.
//!
//! ```no_run
//! use xtorch::{data::*, loader::*, modules::lenet8, model::Model, optim::Optim, trainer::*};
//! let (train, test) = train_test_split(Digits::load()?, 0.2, 0);
//! let train = DataLoader::new(train, LoaderConfig { batch_size: 32, shuffle: true, ..Default::default() });
//! let test = DataLoader::new(test, LoaderConfig { batch_size: 256, ..Default::default() });
//! let model = Model::new(tch::Device::Cpu, 0, |p| lenet8(p, 16, 32, 10, 0.1));
//! Trainer::new(20).callback(ProgressBar::new()).fit(&model, &Optim::adamw(3e-3), &train, Some(&test))?;
//! let graph = xtorch::export(&model.net, &[1, 1, 8, 8])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
pub mod amp;
pub mod attention;
pub mod bert;
pub mod checkpoint;
pub mod concat;
pub mod conv1d;
pub mod convtranspose;
pub mod data;
pub mod embedding;
pub mod export;
mod export_attention;
pub mod gpt2;
pub mod gradscaler;
pub mod loader;
pub mod loss;
pub mod model;
pub mod modules;
pub mod onnx;
pub mod optim;
pub mod optimizer;
pub mod readers;
pub mod resnet;
pub mod resume;
pub mod rmsnorm;
pub mod rng;
pub mod sched;
pub mod trainer;
pub mod transformer;
pub mod transforms;
pub mod unet;

pub use export::export;

/// Seeds libtorch's generator (weight initialization, dropout masks); data order is seeded
/// separately, per `DataLoader`.
pub fn seed_everything(seed: u64) {
    tch::manual_seed(seed as i64);
}
