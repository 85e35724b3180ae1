//! Checkpoints: a bit-for-bit round trip, and strict refusal of mismatched files with the key
//! named and the model left as it was.
mod common;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Kind, Tensor};
use xtorch::checkpoint::{self, CheckpointError};
use xtorch::model::Model;

/// Every variable's bits.
fn snapshot(m: &Model) -> BTreeMap<String, Vec<u32>> {
    m.vs.variables()
        .into_iter()
        .map(|(k, t)| (k, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

fn write(path: &Path, tensors: &[(String, Tensor)]) {
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    Tensor::write_safetensors(&named, path).unwrap();
}

fn tensors(m: &Model) -> Vec<(String, Tensor)> {
    let mut v: Vec<_> = m.vs.variables().into_iter().map(|(k, t)| (k, t.detach().copy())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn a_trained_model_round_trips_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _, test) = common::trained(2);
    let path = dir.path().join("m.safetensors");
    checkpoint::save(&model.vs, &path).unwrap();
    let other = common::lenet(123);
    assert_ne!(snapshot(&other), snapshot(&model));
    checkpoint::load(&other.vs, &path).unwrap();
    assert_eq!(snapshot(&other), snapshot(&model));
    assert_eq!(snapshot(&model).len(), 8, "4 layers with a weight and a bias each");
    // and the same outputs
    let batch = test.epoch(0).next().unwrap().unwrap();
    let (a, b) = (model.net.forward_t(&batch.inputs, false), other.net.forward_t(&batch.inputs, false));
    assert!(a.equal(&b));
    // saving the loaded model gives the same file, byte for byte
    let again = dir.path().join("again.safetensors");
    checkpoint::save(&other.vs, &again).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn the_file_is_plain_safetensors_with_pytorch_names() {
    // an 8-byte little-endian header length, then a JSON header naming every tensor
    let dir = tempfile::tempdir().unwrap();
    let model = common::lenet(0);
    let path = dir.path().join("m.safetensors");
    checkpoint::save(&model.vs, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    for key in ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "10.weight", "10.bias"] {
        assert!(header.contains(&format!("\"{key}\"")), "{key} in {header}");
    }
    assert!(header.contains("\"F32\"") && header.contains("[16,1,3,3]"), "{header}");
}

/// Loads `tensors` written to a file into a fresh LeNet and returns the error; the model must
/// be unchanged.
fn refused(tensors: Vec<(String, Tensor)>) -> CheckpointError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    write(&path, &tensors);
    let model = common::lenet(5);
    let before = snapshot(&model);
    let e = checkpoint::load(&model.vs, &path).unwrap_err();
    assert_eq!(snapshot(&model), before, "the model is left unchanged");
    e
}

#[test]
fn a_missing_key_is_refused_by_name() {
    let mut t = tensors(&common::lenet(0));
    t.retain(|(k, _)| k != "7.bias");
    let e = refused(t);
    assert!(matches!(&e, CheckpointError::MissingKey { key, .. } if key == "7.bias"), "{e}");
    assert!(e.to_string().contains("7.bias"), "{e}");
}

#[test]
fn a_wrong_shape_is_refused_with_the_key_and_both_shapes() {
    // a LeNet of other widths: the first conv has 8 filters instead of 16
    let other = Model::new(tch::Device::Cpu, 0, |p| xtorch::modules::lenet8(p, 8, 32, 10, 0.1));
    let e = refused(tensors(&other)).to_string();
    assert!(e.contains("0.bias") && e.contains("[8]") && e.contains("[16]"), "{e}");
    // and a single tensor of a wrong shape among right ones, even one that would broadcast
    let mut t = tensors(&common::lenet(0));
    t.iter_mut().find(|(k, _)| k == "10.bias").unwrap().1 = Tensor::zeros([1], (Kind::Float, tch::Device::Cpu));
    let e = refused(t);
    assert!(matches!(&e, CheckpointError::Shape { key, got, .. } if key == "10.bias" && got == &vec![1]), "{e}");
}

#[test]
fn a_wrong_dtype_an_extra_key_and_a_corrupt_file_are_refused() {
    let mut t = tensors(&common::lenet(0));
    let w = &mut t.iter_mut().find(|(k, _)| k == "3.weight").unwrap().1;
    *w = w.to_kind(Kind::Double);
    let e = refused(t);
    assert!(matches!(&e, CheckpointError::DType { key, .. } if key == "3.weight"), "{e}");

    let mut t = tensors(&common::lenet(0));
    t.push(("11.weight".into(), Tensor::zeros([2], (Kind::Float, tch::Device::Cpu))));
    let e = refused(t);
    assert!(matches!(&e, CheckpointError::UnexpectedKey { key, .. } if key == "11.weight"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    checkpoint::save(&common::lenet(0).vs, &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let model = common::lenet(5);
    let before = snapshot(&model);
    let e = checkpoint::load(&model.vs, &cut).unwrap_err();
    assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
    assert_eq!(snapshot(&model), before);
    let e = checkpoint::load(&model.vs, &dir.path().join("absent.safetensors")).unwrap_err();
    assert!(e.to_string().contains("absent.safetensors"), "{e}");
}

/// PyTorch's side: the same LeNet as a `torch.nn.Sequential`, the checkpoint loaded with
/// `safetensors.torch.load_file` and `load_state_dict(strict=True)`, logits for `x` written back.
const PYTORCH_LENET: &str = r#"
import sys, torch
from torch import nn
from safetensors.torch import load_file, save_file
ckpt, inputs, out = sys.argv[1:4]
net = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))
net.load_state_dict(load_file(ckpt), strict=True)
net.eval()
with torch.no_grad():
    save_file({"logits": net(load_file(inputs)["x"]).contiguous()}, out)
"#;

#[test]
fn pytorch_loads_the_checkpoint_and_computes_the_same_logits() {
    // needs python3 with torch and safetensors (scripts/setup installs both)
    let dir = tempfile::tempdir().unwrap();
    let (model, _, test) = common::trained(3);
    let ckpt = dir.path().join("lenet.safetensors");
    checkpoint::save(&model.vs, &ckpt).unwrap();
    let batch = test.epoch(0).next().unwrap().unwrap();
    let inputs = dir.path().join("x.safetensors");
    write(&inputs, &[("x".into(), batch.inputs.shallow_clone())]);
    let out = dir.path().join("out.safetensors");
    common::python(PYTORCH_LENET, &[&ckpt, &inputs, &out]);
    let theirs = Tensor::read_safetensors(&out).unwrap().remove(0).1;
    let ours = tch::no_grad(|| model.net.forward_t(&batch.inputs, false));
    assert_eq!(theirs.size(), ours.size());
    let diff = (theirs - &ours).abs().max().double_value(&[]);
    eprintln!("PyTorch vs xtorch on {} images: largest logit difference {diff:.2e}", ours.size()[0]);
    assert!(diff <= 1e-5, "{diff}");
}

/// PyTorch's side for a Conv-BN-ReLU-Pool-Linear net: strict load of our checkpoint, logits for
/// `x`, and PyTorch's own state dict written back (for xtorch's strict load).
const PYTORCH_CONV_BN: &str = r#"
import sys, torch
from torch import nn
from safetensors.torch import load_file, save_file
ckpt, inputs, out, state = sys.argv[1:5]
net = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(128, 10))
sd = load_file(ckpt)
assert sd["1.num_batches_tracked"].dtype == torch.int64 and sd["1.num_batches_tracked"].dim() == 0
net.load_state_dict(sd, strict=True)
net.eval()
with torch.no_grad():
    save_file({"logits": net(load_file(inputs)["x"]).contiguous()}, out)
save_file({k: v.contiguous() for k, v in net.state_dict().items()}, state)
"#;

fn conv_bn(seed: u64) -> Model {
    use xtorch::modules::{BatchNorm2d, Conv2d, Layer, Linear, Sequential};
    common::one_thread();
    Model::new(tch::Device::Cpu, seed, |p| {
        Sequential::new()
            .push_with(p, |q| Layer::Conv2d(Conv2d::new(q, 1, 8, 3, 1, 1)))
            .push_with(p, |q| Layer::BatchNorm2d(BatchNorm2d::new(q, 8)))
            .push(Layer::ReLU)
            .push(Layer::MaxPool2d { kernel: 2, stride: 2, padding: 0 })
            .push(Layer::Flatten)
            .push_with(p, |q| Layer::Linear(Linear::new(q, 128, 10)))
    })
}

#[test]
fn pytorch_strictly_loads_a_batch_norm_checkpoint_and_xtorch_loads_pytorchs() {
    // needs python3 with torch and safetensors (scripts/setup installs both)
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = common::loaders();
    let model = conv_bn(0);
    xtorch::trainer::Trainer::new(1).fit(&model, &xtorch::optim::Optim::adamw(3e-3), &train, None).unwrap();
    let vars = model.vs.variables();
    let batches = train.epoch(0).count() as i64;
    assert_eq!(vars["1.num_batches_tracked"].int64_value(&[]), batches, "one per training batch");
    assert!(vars["1.running_mean"].abs().max().double_value(&[]) > 1e-3);
    let ckpt = dir.path().join("convbn.safetensors");
    checkpoint::save(&model.vs, &ckpt).unwrap();
    let batch = test.epoch(0).next().unwrap().unwrap();
    let inputs = dir.path().join("x.safetensors");
    write(&inputs, &[("x".into(), batch.inputs.shallow_clone())]);
    let (out, state) = (dir.path().join("out.safetensors"), dir.path().join("state.safetensors"));
    common::python(PYTORCH_CONV_BN, &[&ckpt, &inputs, &out, &state]);
    let theirs = Tensor::read_safetensors(&out).unwrap().remove(0).1;
    let ours = tch::no_grad(|| model.net.forward_t(&batch.inputs, false));
    assert_eq!(theirs.size(), ours.size());
    let diff = (theirs - &ours).abs().max().double_value(&[]);
    eprintln!(
        "PyTorch vs xtorch (Conv-BN-ReLU-Pool-Linear) on {} images: largest logit difference {diff:.2e}",
        ours.size()[0]
    );
    assert!(diff <= 1e-5, "{diff}");

    // PyTorch's own state dict (with its num_batches_tracked) loads strictly into a fresh model
    let other = conv_bn(9);
    checkpoint::load(&other.vs, &state).unwrap();
    assert_eq!(other.vs.variables()["1.num_batches_tracked"].int64_value(&[]), batches);
    let again = tch::no_grad(|| other.net.forward_t(&batch.inputs, false));
    assert!(again.equal(&ours));

    // an older checkpoint without the counter still loads
    let mut t = tensors(&model);
    t.retain(|(k, _)| !k.ends_with("num_batches_tracked"));
    let old = dir.path().join("old.safetensors");
    write(&old, &t);
    let third = conv_bn(10);
    checkpoint::load(&third.vs, &old).unwrap();
    assert!(tch::no_grad(|| third.net.forward_t(&batch.inputs, false)).equal(&ours));
}

#[test]
fn channels_last_weights_compute_the_same_and_save_in_nchw_order() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _, test) = common::trained(1);
    let batch = test.epoch(0).next().unwrap().unwrap();
    let before = model.net.forward_t(&batch.inputs, false);
    let nchw = dir.path().join("nchw.safetensors");
    checkpoint::save(&model.vs, &nchw).unwrap();
    model.to_channels_last();
    assert!(
        model.vs.trainable_variables().iter().any(|t| t.dim() == 4 && !t.is_contiguous()),
        "a convolution weight with several input channels is NHWC in memory now"
    );
    let after = model.net.forward_t(&batch.inputs, false);
    assert!((&before - &after).abs().max().double_value(&[]) < 1e-5, "same outputs in either layout");
    // safetensors is row-major NCHW: the file is the NCHW model's, byte for byte
    let nhwc = dir.path().join("nhwc.safetensors");
    checkpoint::save(&model.vs, &nhwc).unwrap();
    assert_eq!(std::fs::read(&nchw).unwrap(), std::fs::read(&nhwc).unwrap());
}
