//! The transformer models: a GPT-style decoder trained a few steps on a synthetic next-token
//! task (the loss falls), a small ViT trained on the digits; both exported to xforge's graph
//! (interpreter against libtorch within 1e-5, and compiled for sm_90 with the generated kernels
//! run on the host) and to ONNX (onnxruntime against libtorch).
mod common;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};
use xtorch::loss::sequence_cross_entropy;
use xtorch::model::Model;
use xtorch::optim::Optim;
use xtorch::transformer::{gpt, vit, GptConfig, VitConfig};

const GPT: GptConfig = GptConfig { vocab: 16, max_len: 12, dim: 32, heads: 4, layers: 2, hidden: 64 };

/// `n` sequences of length `t + 1` counting up by a per-sequence step (1, 2 or 3) modulo the
/// vocabulary from a random start: inputs are the first `t` ids, targets the next id at each
/// position (from the second position on, the step is in the context, so it is learnable).
fn counting(n: i64, t: i64, vocab: i64) -> (Tensor, Tensor) {
    let opts = (Kind::Int64, Device::Cpu);
    let start = Tensor::randint(vocab, [n, 1], opts);
    let step = Tensor::randint(3, [n, 1], opts) + 1;
    let seq = (start + step * Tensor::arange(t + 1, opts).unsqueeze(0)).remainder(vocab);
    (seq.narrow(1, 0, t), seq.narrow(1, 1, t))
}

fn max_diff(a: &[f64], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - *y as f64).abs()).fold(0.0, f64::max)
}

/// The graph compiled by xforge for sm_90 (no GPU needed), its generated kernels run on the
/// host (library calls and kernels with barriers interpreted): within 1e-5 of libtorch.
fn compiled_matches(g: &xforge_ir::Graph, feed: &HashMap<String, xforge_ir::Tensor>, want: &[f32], what: &str) {
    let artifact = xforge_compiler::Compiler::new("sm_90").compile_graph(g, String::new()).unwrap();
    assert_eq!(artifact.plans.len(), 1);
    let c = xforge_compiler::Compiler::new("sm_90").generated_gemm(false);
    let fused = c.fuse(g).unwrap();
    let (library, _) = xforge_compiler::build::library_plans(&fused, false);
    let (kernels, missing) = xforge_compiler::build::generate_kernels(&fused, &library);
    assert!(missing.is_empty(), "{missing:?}");
    let kernels: HashMap<_, _> = kernels.into_iter().collect();
    let (out, stats) = xforge_testsuite::host_kernels::run_plan(&fused, &kernels, feed).unwrap();
    let d = max_diff(&out[0].to_f64(), want);
    eprintln!(
        "{what} compiled: {} groups, {} kernels ({} run on the host, {} interpreted); vs libtorch {d:.2e}",
        fused.partition.groups.len(),
        kernels.len(),
        stats.host_kernels,
        stats.interpreted
    );
    assert!(d <= 1e-5, "{what} compiled: {d}");
}

#[test]
fn a_gpt_learns_to_count_and_exports_like_libtorch() {
    let _serial = common::serial();
    let model = Model::new(Device::Cpu, 0, |p| gpt(p, &GPT));
    eprintln!("GPT: {} parameters", model.num_parameters());
    let mut opt = Optim::adamw(3e-3).build(&model.vs).unwrap();
    let (t, steps) = (GPT.max_len, 150);
    let mut losses = vec![];
    for _ in 0..steps {
        let (x, y) = counting(32, t, GPT.vocab);
        let logits = model.net.f_forward_t(&x, true).unwrap();
        assert_eq!(logits.size(), [32, t, GPT.vocab]);
        let loss = sequence_cross_entropy(&logits, &y);
        opt.backward_step(&loss);
        losses.push(loss.double_value(&[]));
    }
    let first = losses[..10].iter().sum::<f64>() / 10.0;
    let last = losses[steps - 10..].iter().sum::<f64>() / 10.0;
    eprintln!("next-token loss: first 10 steps {first:.3} (ln 16 = {:.3}), last 10 steps {last:.3}", 16f64.ln());
    assert!(first > 2.0, "{first}");
    assert!(last < 0.5 * first, "the loss did not fall: {first} → {last}");

    // held-out sequences: predictions from the third position on are mostly right
    let (x, y) = counting(64, t, GPT.vocab);
    let want = tch::no_grad(|| model.net.forward_t(&x, false));
    let pred = want.argmax(-1, false);
    let right = pred.narrow(1, 2, t - 2).eq_tensor(&y.narrow(1, 2, t - 2)).to_kind(Kind::Float).mean(Kind::Float);
    eprintln!("held-out next-token accuracy from position 2 on: {:.1}%", right.double_value(&[]) * 100.0);

    // the exported graph on the interpreter, and the ONNX file in onnxruntime and back in xforge
    let g = xtorch::export(&model.net, &[64, t as usize]).unwrap();
    assert_eq!(g.nodes[0].op, xforge_ir::Op::Gather);
    let want_v = Vec::<f32>::try_from(want.flatten(0, -1)).unwrap();
    let feed = HashMap::from([("x".to_string(), xtorch::export::to_ir(&x))]);
    let got = xforge_ir::interp::run(&g, &feed).unwrap();
    assert_eq!(got[0].shape(), &[64, t as usize, GPT.vocab as usize]);
    let d = max_diff(&got[0].to_f64(), &want_v);
    eprintln!("GPT export ({} nodes): interpreter vs libtorch {d:.2e}", g.nodes.len());
    assert!(d <= 1e-5, "{d}");
    compiled_matches(&g, &feed, &want_v, "GPT");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt.onnx");
    xtorch::onnx::write_onnx(&g, &path).unwrap();
    let imported = xforge_frontend::load(&path, &Default::default()).unwrap();
    assert_eq!(xforge_ir::interp::run(&imported.graph, &feed).unwrap()[0].to_f64(), got[0].to_f64());
    let theirs = common::onnxruntime(&path, &x, dir.path());
    let d = max_diff(&theirs.iter().map(|&v| v as f64).collect::<Vec<_>>(), &want_v);
    eprintln!("GPT ONNX: onnxruntime vs libtorch {d:.2e}");
    assert!(d <= 1e-5, "{d}");
}

#[test]
fn the_gpt_is_causal_and_its_parameters_have_pytorch_style_names() {
    common::one_thread();
    let model = Model::new(Device::Cpu, 1, |p| gpt(p, &GPT));
    let vars = model.vs.variables();
    for key in ["0.weight", "1.weight", "2.body.0.weight", "2.body.1.in_proj_weight", "2.body.1.out_proj.bias"] {
        assert!(vars.contains_key(key), "{key}");
    }
    for key in ["3.body.1.weight", "3.body.3.bias", "6.weight", "7.weight", "7.bias"] {
        assert!(vars.contains_key(key), "{key}");
    }
    assert_eq!(vars["7.weight"].size(), [GPT.vocab, GPT.dim]);
    // changing the last token changes only the last position's logits
    let (x, _) = counting(2, 8, GPT.vocab);
    let later = x.copy();
    let _ = later.narrow(1, 7, 1).g_add_scalar_(1).remainder_(GPT.vocab);
    let (a, b) = tch::no_grad(|| (model.net.forward_t(&x, false), model.net.forward_t(&later, false)));
    assert!(a.narrow(1, 0, 7).equal(&b.narrow(1, 0, 7)));
    assert!(!a.narrow(1, 7, 1).equal(&b.narrow(1, 7, 1)));
    // a sequence longer than the position table is refused by name
    let e = model.net.check(&[2, 13]).unwrap_err().to_string();
    assert!(e.contains("layer 1 (PositionEmbedding)") && e.contains("[2, 13, 32]"), "{e}");
}

#[test]
fn a_small_vit_learns_the_digits_and_exports_like_libtorch() {
    let _serial = common::serial();
    let (train, test) = common::loaders();
    let cfg = VitConfig { image: 8, channels: 1, patch: 2, dim: 32, heads: 4, layers: 2, hidden: 64, classes: 10 };
    let model = Model::new(Device::Cpu, 0, |p| vit(p, &cfg));
    let report = xtorch::trainer::Trainer::new(4).fit(&model, &Optim::adamw(3e-3), &train, Some(&test)).unwrap();
    let h = &report.history;
    let acc = h.last().unwrap().val_accuracy.unwrap();
    eprintln!(
        "ViT ({} parameters), 4 epochs: train loss {:.3} → {:.3}, test accuracy {:.1}%",
        model.num_parameters(),
        h[0].train_loss,
        h.last().unwrap().train_loss,
        acc * 100.0
    );
    assert!(h.last().unwrap().train_loss < 0.5 * h[0].train_loss);
    assert!(acc > 0.8, "{acc}");
    let batch = test.epoch(0).next().unwrap().unwrap();
    let n = batch.inputs.size()[0] as usize;
    let want = Vec::<f32>::try_from(tch::no_grad(|| model.net.forward_t(&batch.inputs, false)).flatten(0, -1)).unwrap();
    let g = xtorch::export(&model.net, &[n, 1, 8, 8]).unwrap();
    let feed = HashMap::from([("x".to_string(), xtorch::export::to_ir(&batch.inputs))]);
    let got = xforge_ir::interp::run(&g, &feed).unwrap()[0].to_f64();
    let d = max_diff(&got, &want);
    eprintln!("ViT export ({} nodes): interpreter vs libtorch {d:.2e} on {n} images", g.nodes.len());
    assert!(d <= 1e-5, "{d}");
    compiled_matches(&g, &feed, &want, "ViT");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vit.onnx");
    xtorch::onnx::write_onnx(&g, &path).unwrap();
    let theirs = common::onnxruntime(&path, &batch.inputs, dir.path());
    let d = max_diff(&theirs.iter().map(|&v| v as f64).collect::<Vec<_>>(), &want);
    eprintln!("ViT ONNX: onnxruntime vs libtorch {d:.2e}");
    assert!(d <= 1e-5, "{d}");
}
