//! Training on scikit-learn's digits: accuracy, determinism, early stopping, checkpoint callbacks.
mod common;
use xtorch::checkpoint;
use xtorch::loader::{DataLoader, LoaderConfig};
use xtorch::model::Model;
use xtorch::modules::mlp;
use xtorch::optim::Optim;
use xtorch::trainer::{evaluate, EarlyStopping, ModelCheckpoint, Monitor, Trainer};

#[test]
fn lenet_reaches_95_percent_on_the_digits_test_split() {
    let _serial = common::serial();
    let (model, report, test) = common::trained(15);
    let (loss, acc) = evaluate(&model, &test).unwrap();
    eprintln!("LeNet-8, 15 epochs: test loss {loss:.4}, test accuracy {:.2}%", acc * 100.0);
    assert_eq!(test.dataset().len(), 359);
    assert!(acc >= 0.95, "test accuracy {acc}");
    assert_eq!(report.history.len(), 15);
    assert_eq!(report.history.last().unwrap().val_accuracy, Some(acc));
    assert!(report.history[14].train_loss < report.history[0].train_loss);
}

#[test]
fn an_mlp_with_sgd_and_momentum_reaches_95_percent() {
    let _serial = common::serial();
    let (train, test) = common::loaders();
    common::one_thread();
    let model = Model::new(tch::Device::Cpu, 0, |p| mlp(p, 64, &[128, 64], 10, 0.0));
    Trainer::new(20).fit(&model, &Optim::sgd(0.05, 0.9), &train, None).unwrap();
    let (_, acc) = evaluate(&model, &test).unwrap();
    eprintln!("MLP 64-128-64-10, SGD momentum 0.9, 20 epochs: test accuracy {:.2}%", acc * 100.0);
    assert!(acc >= 0.95, "test accuracy {acc}");
}

fn weights(m: &Model) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<_> =
        m.vs.variables().into_iter().map(|(k, t)| (k, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn the_same_seeds_give_the_same_weights_bit_for_bit_whatever_the_worker_count() {
    let _serial = common::serial();
    let run = |workers: usize, seed: u64| {
        let (train, _) = common::split();
        let loader = DataLoader::new(
            train,
            LoaderConfig { batch_size: 32, shuffle: true, seed: 1, workers, prefetch: 3, ..Default::default() },
        );
        let model = common::lenet(seed);
        Trainer::new(2).fit(&model, &Optim::adamw(3e-3), &loader, None).unwrap();
        weights(&model)
    };
    let a = run(0, 0);
    assert_eq!(a, run(3, 0), "worker threads change nothing");
    assert_eq!(a, run(1, 0));
    assert_ne!(a, run(0, 1), "another seed gives other weights");
}

#[test]
fn early_stopping_stops_and_checkpoints_keep_the_best_and_the_last_epoch() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = common::loaders();
    let model = common::lenet(0);
    let ckpt = ModelCheckpoint::new(dir.path(), Monitor::ValAccuracy);
    let best_epoch = ckpt.best_epoch_handle();
    // a high learning rate: the validation loss stops improving within a few epochs
    let report = Trainer::new(40).callback(EarlyStopping::new(Monitor::ValLoss, 2, 0.0)).callback(ckpt).fit(
        &model,
        &Optim::adamw(1e-2),
        &train,
        Some(&test),
    );
    let report = match report {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert!(report.stopped_early, "{:?}", report.history);
    let n = report.history.len();
    // the loss's best epoch is followed by exactly `patience` epochs that did not improve on it
    let losses: Vec<f64> = report.history.iter().map(|m| m.val_loss.unwrap()).collect();
    let best = losses.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(losses.iter().position(|&l| l == best), Some(n - 3), "{losses:?}");
    // last.safetensors holds the final weights; best.safetensors the best accuracy's epoch
    let fresh = common::lenet(9);
    checkpoint::load(&fresh.vs, &dir.path().join("last.safetensors")).unwrap();
    assert_eq!(weights(&fresh), weights(&model));
    let accs: Vec<f64> = report.history.iter().map(|m| m.val_accuracy.unwrap()).collect();
    let be = best_epoch.lock().unwrap().unwrap();
    assert_eq!(accs[be], accs.iter().cloned().fold(0.0, f64::max));
    assert_eq!(accs.iter().position(|&a| a == accs[be]), Some(be), "the first epoch of the best accuracy");
    checkpoint::load(&fresh.vs, &dir.path().join("best.safetensors")).unwrap();
    let (_, acc) = evaluate(&fresh, &test).unwrap();
    assert_eq!(acc, accs[be]);
}
