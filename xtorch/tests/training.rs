//! Trainer options: gradient accumulation, clipping, learning-rate schedules with warm-up,
//! label smoothing, the JSONL logger.
mod common;
use xtorch::data::{Dataset, Subset};
use xtorch::loader::{DataLoader, LoaderConfig};
use xtorch::model::Model;
use xtorch::modules::mlp;
use xtorch::optim::Optim;
use xtorch::sched::LrSchedule;
use xtorch::trainer::{evaluate, JsonlLogger, Trainer};

fn weights(m: &Model) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<_> =
        m.vs.variables().into_iter().map(|(k, t)| (k, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn mlp_model() -> Model {
    common::one_thread();
    Model::new(tch::Device::Cpu, 0, |p| mlp(p, 64, &[32], 10, 0.0))
}

/// The first 1,280 training images (40 batches of 32, 80 of 16), shuffled by seed 1.
fn loader(batch_size: usize) -> DataLoader {
    let (train, _) = common::split();
    let first: Vec<usize> = (0..1280).collect();
    DataLoader::new(
        Subset::new(train, first),
        LoaderConfig { batch_size, shuffle: true, seed: 1, ..Default::default() },
    )
}

#[test]
fn two_accumulated_batches_of_16_step_like_one_batch_of_32() {
    let _serial = common::serial();
    let sgd = Optim::sgd(0.1, 0.0);
    let a = mlp_model();
    Trainer::new(2).fit(&a, &sgd, &loader(32), None).unwrap();
    let b = mlp_model();
    Trainer::new(2).accumulate(2).fit(&b, &sgd, &loader(16), None).unwrap();
    let c = mlp_model();
    Trainer::new(2).fit(&c, &sgd, &loader(16), None).unwrap();
    let diff = |x: &Model, y: &Model| {
        weights(x)
            .iter()
            .zip(weights(y))
            .flat_map(|((_, p), (_, q))| p.iter().zip(q).map(|(u, v)| (u - v).abs()).collect::<Vec<_>>())
            .fold(0.0f32, f32::max)
    };
    let (same, other) = (diff(&a, &b), diff(&a, &c));
    eprintln!("batch 32 vs 2×16 accumulated: {same:.2e}; vs 16 without accumulation: {other:.2e}");
    assert!(same < 1e-5, "{same}");
    assert!(other > 1e-3, "{other}");
}

#[test]
fn clipping_bounds_the_step() {
    let _serial = common::serial();
    let m = mlp_model();
    let before = weights(&m);
    // plain SGD at rate 1 with gradients clipped to norm 1e-6: each step moves the weights by ≤ 1e-6
    Trainer::new(1).clip_grad_norm(1e-6).fit(&m, &Optim::sgd(1.0, 0.0), &loader(32), None).unwrap();
    let moved: f64 = weights(&m)
        .iter()
        .zip(&before)
        .flat_map(|((_, p), (_, q))| p.iter().zip(q).map(|(u, v)| ((u - v) as f64).powi(2)).collect::<Vec<_>>())
        .sum::<f64>()
        .sqrt();
    assert!(moved > 0.0 && moved <= 40.0 * 1e-6 * 1.001, "40 steps moved the weights by {moved}");
}

#[test]
fn the_schedule_sets_each_epochs_rate_and_the_logger_records_it() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.jsonl");
    let m = mlp_model();
    let r = Trainer::new(3)
        .schedule(LrSchedule::Step { every: 1, gamma: 0.5 }, 0)
        .callback(JsonlLogger::new(&log))
        .fit(&m, &Optim::sgd(0.1, 0.9), &loader(32), None)
        .unwrap();
    let lrs: Vec<f64> = r.history.iter().map(|h| h.lr).collect();
    assert_eq!(lrs, [0.1, 0.05, 0.025]);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[2].starts_with("{\"epoch\":2,\"train_loss\":")
            && lines[2].ends_with("\"val_loss\":null,\"val_accuracy\":null,\"lr\":0.025}"),
        "{}",
        lines[2]
    );
}

#[test]
fn lenet_with_warm_up_cosine_label_smoothing_and_clipping_reaches_95_percent() {
    let _serial = common::serial();
    let (train, test) = common::loaders();
    let model = common::lenet(0);
    Trainer::new(15)
        .schedule(LrSchedule::Cosine { min_lr: 1e-5 }, 45)
        .label_smoothing(0.1)
        .clip_grad_norm(5.0)
        .fit(&model, &Optim::adamw(5e-3), &train, None)
        .unwrap();
    let (_, acc) = evaluate(&model, &test).unwrap();
    eprintln!("LeNet-8, warm-up + cosine, label smoothing 0.1, clip 5: test accuracy {:.2}%", acc * 100.0);
    assert_eq!(test.dataset().len(), 359);
    assert!(acc >= 0.95, "{acc}");
}

#[test]
fn a_panicking_dataset_worker_fails_the_fit_with_its_message() {
    struct Cursed(common::Split);
    impl Dataset for Cursed {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn get(&self, i: usize) -> Result<xtorch::data::Example, xtorch::data::DataError> {
            if i == 700 {
                panic!("example {i} is cursed");
            }
            self.0.get(i)
        }
    }
    let (train, _) = common::split();
    let loader = DataLoader::new(Cursed(train), LoaderConfig { batch_size: 32, workers: 2, ..Default::default() });
    let m = mlp_model();
    let e = Trainer::new(2).fit(&m, &Optim::sgd(0.1, 0.0), &loader, None).unwrap_err().to_string();
    assert!(e.contains("batch 21") && e.contains("panicked") && e.contains("example 700 is cursed"), "{e}");
}

/// 64 inputs of 64 zeros with target 0, except a NaN pixel in example `bad`.
struct OneBadExample {
    bad: usize,
}

impl Dataset for OneBadExample {
    fn len(&self) -> usize {
        64
    }

    fn get(&self, i: usize) -> Result<xtorch::data::Example, xtorch::data::DataError> {
        let mut input = vec![0.0f32; 64];
        if i == self.bad {
            input[5] = f32::NAN;
        }
        Ok(xtorch::data::Example { input, shape: vec![64], target: 0 })
    }
}

#[test]
fn a_non_finite_loss_stops_the_fit_naming_its_batch() {
    let _serial = common::serial();
    // the loss is read one batch late (the host never waits for the device), yet the error
    // names the batch that produced it, and the batches before it were told to the callbacks
    let model = mlp_model();
    let data = DataLoader::new(OneBadExample { bad: 37 }, LoaderConfig { batch_size: 8, ..Default::default() });
    let err = Trainer::new(1).fit(&model, &Optim::sgd(0.1, 0.0), &data, None).unwrap_err();
    match err {
        xtorch::trainer::TrainError::NonFinite { epoch: 0, batch: 4, loss } => assert!(loss.is_nan()),
        other => panic!("expected NonFinite at epoch 0 batch 4, got {other}"),
    }
    // the last batch too: its loss is read after the loop
    let model = mlp_model();
    let data = DataLoader::new(OneBadExample { bad: 63 }, LoaderConfig { batch_size: 8, ..Default::default() });
    let err = Trainer::new(1).fit(&model, &Optim::sgd(0.1, 0.0), &data, None).unwrap_err();
    assert!(matches!(err, xtorch::trainer::TrainError::NonFinite { epoch: 0, batch: 7, .. }), "{err}");
}

#[test]
fn flat_sgd_steps_bit_for_bit_like_the_per_parameter_step_and_loads_its_state() {
    use std::collections::HashMap;
    use xtorch::optimizer::Optimizer;
    let _serial = common::serial();
    // the step a CUDA model gets (parameters, gradients and momentum in one buffer each), forced
    // here on the CPU, against the per-parameter step; channels-last convolution weights
    // included (their views keep the layout)
    let (train, _) = common::loaders();
    let batches: Vec<_> = train.epoch(0).take(6).map(|b| b.unwrap()).collect();
    let cfg = Optim::Sgd { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 5e-4 };
    let steps = |m: &Model, opt: &mut Optimizer, range: std::ops::Range<usize>| {
        for b in &batches[range] {
            opt.zero_grad();
            m.net.forward_t(&b.inputs, false).cross_entropy_for_logits(&b.targets).backward();
            opt.step();
        }
    };
    let state = |opt: &Optimizer| -> HashMap<String, tch::Tensor> { opt.state().into_iter().collect() };
    let bits = |s: &HashMap<String, tch::Tensor>| -> Vec<(String, Vec<u32>)> {
        let mut v: Vec<_> = s
            .iter()
            .filter(|(k, _)| k.ends_with("momentum_buffer"))
            .map(|(k, t)| {
                (k.clone(), Vec::<f32>::try_from(t.flatten(0, -1)).unwrap().iter().map(|x| x.to_bits()).collect())
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let model = || {
        let m = common::lenet(3);
        m.to_channels_last();
        m
    };
    let per_param = model();
    let mut a = Optimizer::new(&cfg, &per_param.vs);
    steps(&per_param, &mut a, 0..3);
    let (half_weights, half_state) = (per_param.vs.variables(), state(&a));
    let half_weights: HashMap<String, tch::Tensor> = half_weights.into_iter().map(|(k, t)| (k, t.copy())).collect();
    steps(&per_param, &mut a, 3..6);

    let flat = model();
    let mut b = Optimizer::new(&cfg, &flat.vs);
    assert!(b.flatten(), "SGD over f32 parameters flattens");
    steps(&flat, &mut b, 0..6);
    assert_eq!(weights(&flat), weights(&per_param), "same weights, bit for bit");
    assert_eq!(bits(&state(&b)), bits(&state(&a)), "same momentum, bit for bit");
    assert_eq!(bits(&state(&a)).len(), 8);

    // resumed into a flat optimizer from the per-parameter one's state after 3 steps
    let resumed = model();
    let mut c = Optimizer::new(&cfg, &resumed.vs);
    assert!(c.flatten());
    tch::no_grad(|| {
        for (k, mut t) in resumed.vs.variables() {
            t.copy_(&half_weights[&k]);
        }
    });
    c.load_state(&half_state, std::path::Path::new("state.safetensors")).unwrap();
    steps(&resumed, &mut c, 3..6);
    assert_eq!(weights(&resumed), weights(&per_param), "resumed: same weights, bit for bit");
    assert_eq!(bits(&state(&c)), bits(&state(&a)));
}
