//! The sequence layers (Conv1d, RMSNorm, Embedding, multi-head attention with and without the
//! causal mask, GELU (exact and tanh), SiLU, ConvTranspose2d, Linear on [N, T, F]): each one's forward against PyTorch's module
//! of the same name loaded from the same weights, and its exported graph on xforge's reference
//! interpreter against libtorch, both within 1e-5.
mod common;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};
use xforge_ir::Op;
use xtorch::model::Model;
use xtorch::modules::{
    Conv1d, ConvTranspose2d, Embedding, Layer, Linear, MultiheadAttention, PositionEmbedding, RmsNorm, Sequential,
    ShapeError,
};

/// PyTorch's side: `spec` built, the checkpoint's "0." keys loaded strictly (or no checkpoint:
/// "-"), `call(module, x)` in eval mode without gradients written back as "y".
const PYTORCH_LAYER: &str = r#"
import sys, torch
from torch import nn
from safetensors.torch import load_file, save_file
spec, call, ckpt, inputs, out = sys.argv[1:6]
m = eval(spec)
if ckpt != "-":
    sd = load_file(ckpt)
    assert all(k.startswith("0.") for k in sd), list(sd)
    m.load_state_dict({k[2:]: v for k, v in sd.items()}, strict=True)
m.eval()
f = eval(call)
with torch.no_grad():
    save_file({"y": f(m, load_file(inputs)["x"]).contiguous()}, out)
"#;

fn max_diff(a: &[f64], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - *y as f64).abs()).fold(0.0, f64::max)
}

/// A one-layer network, every parameter moved off its initialization (zero biases, unit norm
/// weights would hide a transposed or skipped term).
fn one_layer(build: impl FnOnce(tch::nn::Path) -> Layer) -> Model {
    common::one_thread();
    let m = Model::new(Device::Cpu, 7, |p| Sequential::new().push_with(p, build));
    tch::no_grad(|| {
        for (_, mut v) in m.vs.variables() {
            let noise = Tensor::randn(v.size(), (Kind::Float, Device::Cpu)) * 0.3;
            let _ = v.g_add_(&noise);
        }
    });
    m
}

/// libtorch's output for `x`; PyTorch's (`spec`, `call`) and the exported graph's must match it
/// within 1e-5. Returns the graph's ops.
fn check(m: &Model, x: &Tensor, spec: &str, call: Option<&str>) -> Vec<Op> {
    let want = tch::no_grad(|| m.net.forward_t(x, false));
    let want_v = Vec::<f32>::try_from(want.flatten(0, -1)).unwrap();
    if let Some(call) = call {
        let dir = tempfile::tempdir().unwrap();
        let (ckpt, inputs, out) = (dir.path().join("m.st"), dir.path().join("x.st"), dir.path().join("y.st"));
        let ckpt_arg = if m.vs.variables().is_empty() {
            "-".into()
        } else {
            xtorch::checkpoint::save(&m.vs, &ckpt).unwrap();
            ckpt.display().to_string()
        };
        Tensor::write_safetensors(&[("x", x)], &inputs).unwrap();
        let args = [spec, call, &ckpt_arg, &inputs.display().to_string(), &out.display().to_string()];
        common::python(PYTORCH_LAYER, &args);
        let y = Tensor::read_safetensors(&out).unwrap().remove(0).1;
        assert_eq!(y.size(), want.size(), "{spec}");
        let theirs: Vec<f64> = Vec::<f32>::try_from(y.flatten(0, -1)).unwrap().iter().map(|&v| v as f64).collect();
        let d = max_diff(&theirs, &want_v);
        eprintln!("{spec}: PyTorch vs xtorch {d:.2e}");
        assert!(d <= 1e-5, "{spec}: PyTorch vs xtorch {d}");
    }
    let shape: Vec<usize> = x.size().iter().map(|&d| d as usize).collect();
    let g = xtorch::export(&m.net, &shape).unwrap();
    let feed = HashMap::from([("x".to_string(), xtorch::export::to_ir(x))]);
    let got = xforge_ir::interp::run(&g, &feed).unwrap();
    assert_eq!(got[0].shape().iter().map(|&d| d as i64).collect::<Vec<_>>(), want.size());
    let d = max_diff(&got[0].to_f64(), &want_v);
    eprintln!("{spec}: xforge interpreter vs libtorch {d:.2e} ({} nodes)", g.nodes.len());
    assert!(d <= 1e-5, "{spec}: interpreter vs libtorch {d}");
    // and the ONNX file of it reads back into the same graph behaviour
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.onnx");
    xtorch::onnx::write_onnx(&g, &path).unwrap();
    let imported = xforge_frontend::load(&path, &Default::default()).unwrap();
    let again = xforge_ir::interp::run(&imported.graph, &feed).unwrap();
    assert_eq!(again[0].to_f64(), got[0].to_f64(), "{spec}: via ONNX");
    g.nodes.iter().map(|n| n.op).collect()
}

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

#[test]
fn conv1d_matches_pytorch_and_exports_to_conv() {
    let _serial = common::serial();
    let m = one_layer(|q| Layer::Conv1d(Conv1d::new(q, 3, 8, 3, 2, 1)));
    let ops = check(&m, &randn(&[2, 3, 11]), "nn.Conv1d(3, 8, 3, stride=2, padding=1)", Some("lambda m, x: m(x)"));
    assert_eq!(ops, [Op::Conv]);
    assert_eq!(m.net.check(&[2, 3, 11]).unwrap(), [2, 8, 6]);
}

#[test]
fn conv_transpose2d_matches_pytorch_and_exports_to_conv_transpose() {
    let _serial = common::serial();
    let m = one_layer(|q| Layer::ConvTranspose2d(ConvTranspose2d::new(q, 3, 5, 3, 2, 1)));
    let x = randn(&[2, 3, 5, 6]);
    assert_eq!(m.net.check(&[2, 3, 5, 6]).unwrap(), vec![2, 5, 9, 11]);
    let ops = check(&m, &x, "nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1)", Some("lambda m, x: m(x)"));
    assert_eq!(ops, [Op::ConvTranspose]);
}

#[test]
fn rms_norm_matches_pytorch() {
    let _serial = common::serial();
    let m = one_layer(|q| Layer::RmsNorm(RmsNorm::new(q, 16, 1e-6)));
    let ops = check(&m, &randn(&[2, 5, 16]), "nn.RMSNorm(16, eps=1e-6)", Some("lambda m, x: m(x)"));
    assert!(ops.contains(&Op::ReduceMean) && ops.contains(&Op::Sqrt), "{ops:?}");
}

#[test]
fn embedding_takes_int64_ids_and_exports_to_gather() {
    let _serial = common::serial();
    let m = one_layer(|q| Layer::Embedding(Embedding::new(q, 10, 16)));
    let ids = Tensor::randint(10, [2, 5], (Kind::Int64, Device::Cpu));
    let ops = check(&m, &ids, "nn.Embedding(10, 16)", Some("lambda m, x: m(x)"));
    assert_eq!(ops, [Op::Gather]);
    let g = xtorch::export(&m.net, &[2, 5]).unwrap();
    assert_eq!(g.ty(g.inputs[0]).dtype, xforge_ir::DType::I64);
    // an Embedding further in would take float activations as ids: refused by name
    let later = Model::new(Device::Cpu, 0, |p| {
        Sequential::new().push(Layer::ReLU).push_with(p, |q| Layer::Embedding(Embedding::new(q, 10, 16)))
    });
    let e = xtorch::export(&later.net, &[2, 5]).unwrap_err().to_string();
    assert!(e.contains("layer 1") && e.contains("Embedding after the first layer"), "{e}");
}

#[test]
fn attention_matches_pytorch_with_and_without_the_causal_mask() {
    let _serial = common::serial();
    let x = randn(&[2, 6, 16]);
    let spec = "nn.MultiheadAttention(16, 4, batch_first=True)";
    let m = one_layer(|q| Layer::Attention(MultiheadAttention::new(q, 16, 4, false)));
    let keys: Vec<String> = {
        let mut k: Vec<String> = m.vs.variables().into_keys().collect();
        k.sort();
        k
    };
    assert_eq!(keys, ["0.in_proj_bias", "0.in_proj_weight", "0.out_proj.bias", "0.out_proj.weight"]);
    let ops = check(&m, &x, spec, Some("lambda m, x: m(x, x, x, need_weights=False)[0]"));
    // the two projections' biases; no mask
    assert!(ops.contains(&Op::Softmax) && ops.iter().filter(|o| **o == Op::Add).count() == 2, "{ops:?}");
    let causal = one_layer(|q| Layer::Attention(MultiheadAttention::new(q, 16, 4, true)));
    let call = "lambda m, x: m(x, x, x, need_weights=False, \
                attn_mask=nn.Transformer.generate_square_subsequent_mask(x.shape[1]), is_causal=True)[0]";
    let ops = check(&causal, &x, spec, Some(call));
    assert_eq!(ops.iter().filter(|o| **o == Op::Add).count(), 3, "the mask is added: {ops:?}");
    // causality: changing the last position leaves the outputs at earlier positions as they were
    let later = x.copy();
    let _ = later.narrow(1, 5, 1).g_add_scalar_(1.0);
    let (a, b) = tch::no_grad(|| (causal.net.forward_t(&x, false), causal.net.forward_t(&later, false)));
    assert!(a.narrow(1, 0, 5).equal(&b.narrow(1, 0, 5)));
    assert!(!a.narrow(1, 5, 1).equal(&b.narrow(1, 5, 1)));
}

#[test]
fn gelu_silu_and_a_linear_on_tokens_match_pytorch() {
    let _serial = common::serial();
    let x = randn(&[2, 5, 16]) * 3.0;
    check(&one_layer(|_| Layer::GELU), &x, "nn.GELU()", Some("lambda m, x: m(x)"));
    check(&one_layer(|_| Layer::SiLU), &x, "nn.SiLU()", Some("lambda m, x: m(x)"));
    let ops = check(&one_layer(|_| Layer::GELUTanh), &x, "nn.GELU(approximate='tanh')", Some("lambda m, x: m(x)"));
    assert!(ops.contains(&Op::Tanh));
    let m = one_layer(|q| Layer::Linear(Linear::new(q, 16, 8)));
    let ops = check(&m, &x, "nn.Linear(16, 8)", Some("lambda m, x: m(x)"));
    assert_eq!(ops, [Op::Transpose, Op::MatMul, Op::Add]);
}

#[test]
fn position_embedding_adds_the_first_t_rows() {
    let _serial = common::serial();
    let m = one_layer(|q| Layer::PositionEmbedding(PositionEmbedding::new(q, 8, 16)));
    let x = randn(&[2, 5, 16]);
    check(&m, &x, "PositionEmbedding", None);
    let w = m.vs.variables()["0.weight"].narrow(0, 0, 5);
    assert!(tch::no_grad(|| m.net.forward_t(&x, false)).equal(&(&x + w)));
}

#[test]
fn mismatched_sequence_shapes_name_the_layer_and_both_shapes() {
    let m = one_layer(|q| Layer::Attention(MultiheadAttention::new(q, 16, 4, true)));
    let e: ShapeError = m.net.f_forward_t(&randn(&[2, 6, 12]), false).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("layer 0 (MultiheadAttention)") && msg.contains("[2, 6, 12]") && msg.contains("[N, T, 16]"),
        "{msg}"
    );
    let m = one_layer(|q| Layer::PositionEmbedding(PositionEmbedding::new(q, 8, 16)));
    let msg = m.net.check(&[2, 9, 16]).unwrap_err().to_string();
    assert!(msg.contains("PositionEmbedding") && msg.contains("[2, 9, 16]") && msg.contains("T ≤ 8"), "{msg}");
    let m = one_layer(|q| Layer::Conv1d(Conv1d::new(q, 3, 8, 5, 1, 0)));
    let msg = m.net.check(&[2, 3, 4]).unwrap_err().to_string();
    assert!(msg.contains("Conv1d") && msg.contains("[2, 3, 4]") && msg.contains("length of at least 5"), "{msg}");
    let msg = m.net.check(&[2, 4, 9]).unwrap_err().to_string();
    assert!(msg.contains("[2, 4, 9]") && msg.contains("[N, 3, L]"), "{msg}");
}
