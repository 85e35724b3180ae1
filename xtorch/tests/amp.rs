//! Mixed precision on CPU: `amp::autocast(Bf16)` against PyTorch's own CPU autocast on the same
//! LeNet weights, a bf16 and an fp16 (+ GradScaler) fit of the digits, and the GradScaler's
//! skip / backoff / growth rules.
mod common;
use tch::{Device, Kind, Tensor};
use xtorch::amp::{autocast, Precision};
use xtorch::gradscaler::GradScaler;
use xtorch::optim::Optim;
use xtorch::trainer::Trainer;

/// PyTorch's LeNet-8 (the same module indices as xtorch's `lenet8`) under
/// `torch.autocast("cpu", torch.bfloat16)`, in eval mode.
const PYTORCH_AUTOCAST: &str = r#"
import sys, torch
from torch import nn
from safetensors.torch import load_file, save_file
ckpt, inputs, out = sys.argv[1:4]
m = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                  nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.1),
                  nn.Linear(64, 10))
m.load_state_dict(load_file(ckpt), strict=True)
m.eval()
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
    y = m(load_file(inputs)["x"])
assert y.dtype == torch.bfloat16, y.dtype
save_file({"y": y.float()}, out)
"#;

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn bf16_autocast_computes_like_pytorchs_cpu_autocast() {
    let _serial = common::serial();
    let model = common::lenet(0);
    let x = Tensor::randn([16, 1, 8, 8], (Kind::Float, Device::Cpu)) * 2.0;
    let f32_out = tch::no_grad(|| model.net.forward_t(&x, false));
    let bf16_out = tch::no_grad(|| autocast(Precision::Bf16, || model.net.forward_t(&x, false)));
    assert_eq!(bf16_out.kind(), Kind::Float, "outputs are widened back to f32");
    assert_eq!(xtorch::amp::precision(), Precision::F32, "autocast restores the setting");
    let reduced = max_diff(&bf16_out, &f32_out);
    let scale = f32_out.abs().max().double_value(&[]);

    let dir = tempfile::tempdir().unwrap();
    let (ckpt, inputs, out) = (dir.path().join("m.st"), dir.path().join("x.st"), dir.path().join("y.st"));
    xtorch::checkpoint::save(&model.vs, &ckpt).unwrap();
    Tensor::write_safetensors(&[("x", &x)], &inputs).unwrap();
    common::python(PYTORCH_AUTOCAST, &[&ckpt, &inputs, &out]);
    let theirs = Tensor::read_safetensors(&out).unwrap().remove(0).1;
    let vs_pytorch = max_diff(&bf16_out, &theirs);
    eprintln!(
        "LeNet bf16: xtorch vs PyTorch's CPU autocast {vs_pytorch:.2e}; bf16 vs f32 {reduced:.2e} (logits up to {scale:.2})"
    );
    assert!(reduced > 1e-4, "the bf16 forward is the f32 one ({reduced}): nothing was reduced");
    assert!(vs_pytorch <= 1e-6 * scale.max(1.0), "{vs_pytorch}");

    // gradients reach the f32 weights through the casts
    let loss = autocast(Precision::Bf16, || model.net.forward_t(&x, true)).square().mean(Kind::Float);
    loss.backward();
    let vars = model.vs.variables();
    let g = vars["0.weight"].grad();
    assert_eq!(g.kind(), Kind::Float);
    assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn trainer_fits_the_digits_in_bf16_and_in_fp16_with_a_grad_scaler() {
    let _serial = common::serial();
    let (train, test) = common::loaders();
    // fp16 starts at a scale of 2^24: the first steps' fp16 gradients overflow (the
    // logits' gradient is about 2^24 / batch) and the scaler must back off
    let fp16 = GradScaler::new(16777216.0, 2000);
    // fp16 runs on libtorch's slow CPU fp16 kernels (8 epochs: 11 s): fewer epochs
    for (precision, epochs, scaler) in
        [(Precision::F32, 8, None), (Precision::Bf16, 8, None), (Precision::F16, 4, Some(fp16))]
    {
        let model = common::lenet(0);
        let t = std::time::Instant::now();
        let mut trainer = Trainer::new(epochs).precision(precision);
        if let Some(s) = scaler {
            trainer = trainer.grad_scaler(s);
        }
        let report = trainer.fit(&model, &Optim::adamw(3e-3), &train, Some(&test)).unwrap();
        let last = report.history.last().unwrap();
        let acc = last.val_accuracy.unwrap();
        let s = trainer.scaler().map(|s| format!(", scale {} after {} skipped steps", s.scale, s.skipped));
        eprintln!(
            "{precision:?}: val accuracy {:.2}% after {epochs} epochs, train loss {:.4} ({:.1} s){}",
            acc * 100.0,
            last.train_loss,
            t.elapsed().as_secs_f64(),
            s.unwrap_or_default()
        );
        assert!(acc >= 0.95, "{precision:?}: {acc}");
        if precision == Precision::F16 {
            let s = trainer.scaler().unwrap();
            assert!(s.skipped >= 1 && s.scale < 16777216.0, "{s:?}");
        }
    }
}

#[test]
fn an_inf_gradient_skips_the_step_and_halves_the_scale() {
    let _serial = common::serial();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let w = vs.root().var("w", &[3], tch::nn::Init::Const(1.0));
    let mut opt = xtorch::optimizer::Optimizer::new(&Optim::sgd(0.1, 0.0), &vs);
    let mut scaler = GradScaler::new(1024.0, 2);

    // finite: the gradient is unscaled (2 per element), the step taken
    let loss = (&w * 2.0).sum(Kind::Float);
    scaler.scale(&loss).backward();
    assert_eq!(Vec::<f32>::try_from(w.grad()).unwrap(), [2048.0; 3]);
    assert!(scaler.step(&mut opt));
    assert_eq!(Vec::<f32>::try_from(w.detach()).unwrap(), [0.8; 3], "1 − 0.1·2");
    assert_eq!((scaler.scale, scaler.good_steps), (1024.0, 1));
    opt.zero_grad();

    // an inf in one gradient: no step, the scale halves, the count restarts
    let loss = (&w * Tensor::from_slice(&[1.0f32, f32::INFINITY, 1.0])).sum(Kind::Float);
    scaler.scale(&loss).backward();
    assert!(!scaler.step(&mut opt));
    assert_eq!(Vec::<f32>::try_from(w.detach()).unwrap(), [0.8; 3], "weights unchanged");
    assert_eq!((scaler.scale, scaler.good_steps, scaler.skipped), (512.0, 0, 1));
    opt.zero_grad();

    // a NaN likewise
    let loss = (&w * f64::NAN).sum(Kind::Float);
    scaler.scale(&loss).backward();
    assert!(!scaler.step(&mut opt));
    assert_eq!((scaler.scale, scaler.skipped), (256.0, 2));
    opt.zero_grad();

    // two finite steps in a row (the growth interval): the scale doubles
    for _ in 0..2 {
        scaler.scale(&w.sum(Kind::Float)).backward();
        assert!(scaler.step(&mut opt));
        opt.zero_grad();
    }
    assert_eq!((scaler.scale, scaler.good_steps), (512.0, 0));
    let w = Vec::<f32>::try_from(w.detach()).unwrap();
    assert!(w.iter().all(|v| (v - 0.6).abs() < 1e-6), "0.8 − 2·0.1·1: {w:?}");
}
