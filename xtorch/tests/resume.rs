//! Resuming a fit: 2 epochs in one fit give the same weights, bit for bit, as 1 epoch saved
//! with `save_state` and 1 more resumed from the file into a model built from another seed
//! (dropout, a warm-up + cosine schedule, clipping, shuffled batches, AdamW or SGD with
//! Nesterov momentum); xtorch's optimizer against libtorch's; refused state files.
mod common;
use std::collections::BTreeMap;
use xtorch::checkpoint::CheckpointError;
use xtorch::data::Subset;
use xtorch::loader::{DataLoader, LoaderConfig};
use xtorch::model::Model;
use xtorch::modules::mlp;
use xtorch::optim::Optim;
use xtorch::sched::LrSchedule;
use xtorch::trainer::{Callback, Control, EpochMetrics, TrainError, Trainer};

/// Every variable's bits, by name.
fn bits(m: &Model) -> BTreeMap<String, Vec<u32>> {
    m.vs.variables()
        .into_iter()
        .map(|(k, t)| (k, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

/// An MLP with dropout 0.2 (random masks every batch), initialized from `seed`.
fn model(seed: u64) -> Model {
    common::one_thread();
    Model::new(tch::Device::Cpu, seed, |p| mlp(p, 64, &[48, 32], 10, 0.2))
}

/// 640 training images in shuffled batches of 32 (20 steps an epoch).
fn loader() -> DataLoader {
    let (train, _) = common::split();
    DataLoader::new(
        Subset::new(train, (0..640).collect()),
        LoaderConfig { batch_size: 32, shuffle: true, seed: 5, ..Default::default() },
    )
}

fn trainer() -> Trainer {
    Trainer::new(2).schedule(LrSchedule::Cosine { min_lr: 1e-4 }, 8).clip_grad_norm(1.0)
}

/// Stops the fit after its first epoch (an interrupted run).
struct StopAfterOne;
impl Callback for StopAfterOne {
    fn on_epoch_end(&mut self, _: &EpochMetrics, _: &Model) -> Result<Control, TrainError> {
        Ok(Control::Stop)
    }
}

#[test]
fn two_epochs_equal_one_epoch_then_a_resumed_one_bit_for_bit() {
    let _serial = common::serial();
    for optim in [Optim::adamw(3e-3), Optim::Sgd { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 1e-4 }] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.safetensors");
        let whole = model(0);
        let full = trainer().seed(9).fit(&whole, &optim, &loader(), None).unwrap();

        let first = model(0);
        let r =
            trainer().seed(9).save_state(&state).callback(StopAfterOne).fit(&first, &optim, &loader(), None).unwrap();
        assert!(r.stopped_early && r.history.len() == 1);
        let resumed = model(123);
        assert_ne!(bits(&resumed), bits(&whole));
        let rest = trainer().seed(9).resume(&state).fit(&resumed, &optim, &loader(), None).unwrap();
        assert_eq!(rest.history.len(), 1);
        assert_eq!(rest.history[0].epoch, 1);
        assert_eq!(rest.history[0], full.history[1], "{optim:?}: the second epoch's loss and rate");
        assert_eq!(bits(&resumed), bits(&whole), "{optim:?}: weights after 1 + resumed 1 epochs vs 2 epochs");
        eprintln!(
            "{optim:?}: epoch 1 train loss {:.6} in both; every weight bit-identical",
            full.history[1].train_loss
        );

        // without `seed`, the resumed epoch's dropout masks come from wherever libtorch's
        // generator happens to be, so the weights differ: why `seed` is part of resuming
        let unseeded = model(0);
        trainer().fit(&unseeded, &optim, &loader(), None).unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        let state2 = dir2.path().join("state.safetensors");
        let a = model(0);
        trainer().save_state(&state2).callback(StopAfterOne).fit(&a, &optim, &loader(), None).unwrap();
        let b = model(123);
        trainer().resume(&state2).fit(&b, &optim, &loader(), None).unwrap();
        assert_ne!(bits(&b), bits(&unseeded), "{optim:?}: unseeded dropout");
    }
}

#[test]
fn xtorchs_optimizer_follows_libtorchs_to_float_rounding() {
    let _serial = common::serial();
    let batches: Vec<_> = loader().epoch(0).take(10).map(|b| b.unwrap()).collect();
    for optim in [Optim::adamw(3e-3), Optim::Sgd { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 1e-4 }] {
        let (ours, theirs) = (model(0), model(0));
        let (mut a, mut b) = (optim.optimizer(&ours.vs), optim.build(&theirs.vs).unwrap());
        for batch in &batches {
            // evaluation mode: no dropout, so both see the same function
            let la = ours.net.forward_t(&batch.inputs, false).cross_entropy_for_logits(&batch.targets);
            a.backward_step(&la);
            let lb = theirs.net.forward_t(&batch.inputs, false).cross_entropy_for_logits(&batch.targets);
            b.backward_step(&lb);
        }
        let (va, vb) = (ours.vs.variables(), theirs.vs.variables());
        let mut worst = 0.0f64;
        for (k, t) in &va {
            let d = (t - &vb[k]).abs().max().double_value(&[]);
            worst = worst.max(d);
        }
        eprintln!("{optim:?}: 10 steps, largest weight difference xtorch vs libtorch optimizer {worst:.2e}");
        assert!(worst < 1e-5, "{optim:?}: {worst}");
        let moved = (&va["4.weight"] - &model(0).vs.variables()["4.weight"]).abs().max().double_value(&[]);
        assert!(moved > 1e-3, "the weights moved: {moved}");
    }
}

#[test]
fn a_state_of_another_optimizer_or_model_is_refused_with_the_key_and_nothing_changes() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.safetensors");
    let sgd = Optim::sgd(0.05, 0.9);
    Trainer::new(1).save_state(&state).fit(&model(0), &sgd, &loader(), None).unwrap();
    let refused = |m: &Model, optim: &Optim, path: &std::path::Path| {
        let before = bits(m);
        let e = Trainer::new(2).resume(path).fit(m, optim, &loader(), None).unwrap_err();
        assert_eq!(bits(m), before, "the model is left unchanged");
        match e {
            TrainError::Checkpoint(e) => e,
            other => panic!("{other}"),
        }
    };
    // SGD's momentum buffers offered to AdamW
    let e = refused(&model(1), &Optim::adamw(1e-3), &state);
    assert!(
        matches!(&e, CheckpointError::UnexpectedKey { key, .. } if key == "optimizer.1.bias.momentum_buffer"),
        "{e}"
    );
    // a model of other widths
    common::one_thread();
    let narrow = Model::new(tch::Device::Cpu, 0, |p| mlp(p, 64, &[40, 32], 10, 0.2));
    let e = refused(&narrow, &sgd, &state);
    assert!(matches!(&e, CheckpointError::Shape { key, .. } if key == "model.1.bias"), "{e}");
    assert!(e.to_string().contains("[48]") && e.to_string().contains("[40]"), "{e}");
    // a plain model checkpoint has no progress
    let plain = dir.path().join("plain.safetensors");
    xtorch::checkpoint::save(&model(0).vs, &plain).unwrap();
    let e = refused(&model(1), &sgd, &plain);
    assert!(matches!(&e, CheckpointError::MissingKey { key, .. } if key == "trainer.epoch"), "{e}");
    // the same optimizer and model resume
    let m = model(1);
    let r = Trainer::new(2).resume(&state).fit(&m, &sgd, &loader(), None).unwrap();
    assert_eq!(r.history.iter().map(|h| h.epoch).collect::<Vec<_>>(), [1]);
}
