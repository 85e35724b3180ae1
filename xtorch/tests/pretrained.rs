//! Hugging Face model directories into xtorch: GPT-2 (below) and BERT (further down).
//!
//! A Hugging Face GPT-2 directory into xtorch's GPT. `transformers` is not installed here, so
//! the test writes the directory as `GPT2LMHeadModel.save_pretrained` does (config.json, and
//! model.safetensors with "transformer."-prefixed GPT-2 names, Conv1D weights [in, out], no
//! lm_head: tied) from PyTorch, and computes the logits with GPT-2's forward written out in
//! PyTorch (Conv1D as x·W + b, gelu_new, masked softmax, tied head), the reference the loaded
//! model must match within 1e-4. Broken copies (a missing key, a transposed weight) are refused
//! naming the key, the model unchanged.
mod common;
use std::collections::HashMap;
use tch::{Device, Tensor};
use xtorch::{bert, gpt2};

const WRITE_GPT2: &str = r#"
import sys, os, json, math, torch
import torch.nn.functional as F
from safetensors.torch import save_file
out = sys.argv[1]
torch.manual_seed(0)
V, P, E, L, H = 50, 16, 32, 2, 4
cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": V, "n_positions": P,
       "n_embd": E, "n_layer": L, "n_head": H, "n_inner": None, "activation_function": "gelu_new",
       "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
       "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
       "tie_word_embeddings": True, "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "float32"}
r = lambda *s, std=0.2: torch.randn(*s) * std
sd = {"wte.weight": r(V, E, std=0.5), "wpe.weight": r(P, E, std=0.1)}
for i in range(L):
    for ln in ("ln_1", "ln_2"):
        sd[f"h.{i}.{ln}.weight"] = 1 + r(E, std=0.1)
        sd[f"h.{i}.{ln}.bias"] = r(E, std=0.1)
    for name, (fi, fo) in {"attn.c_attn": (E, 3 * E), "attn.c_proj": (E, E), "mlp.c_fc": (E, 4 * E), "mlp.c_proj": (4 * E, E)}.items():
        sd[f"h.{i}.{name}.weight"] = r(fi, fo)  # Conv1D: [in, out]
        sd[f"h.{i}.{name}.bias"] = r(fo, std=0.05)
sd["ln_f.weight"] = 1 + r(E, std=0.1)
sd["ln_f.bias"] = r(E, std=0.1)

def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
def conv1d(x, p):
    return torch.addmm(sd[p + ".bias"], x.reshape(-1, x.shape[-1]), sd[p + ".weight"]).reshape(*x.shape[:-1], -1)
def ln(x, p):
    return F.layer_norm(x, (E,), sd[p + ".weight"], sd[p + ".bias"], 1e-5)
ids = torch.randint(0, V, (2, 12))
N, T = ids.shape
h = sd["wte.weight"][ids] + sd["wpe.weight"][torch.arange(T)]
causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
for i in range(L):
    q, k, v = conv1d(ln(h, f"h.{i}.ln_1"), f"h.{i}.attn.c_attn").split(E, dim=-1)
    heads = lambda z: z.view(N, T, H, E // H).transpose(1, 2)
    q, k, v = heads(q), heads(k), heads(v)
    w = q @ k.transpose(-1, -2) / math.sqrt(E // H)
    w = torch.where(causal, w, torch.tensor(torch.finfo(w.dtype).min))
    a = (w.softmax(-1) @ v).transpose(1, 2).reshape(N, T, E)
    h = h + conv1d(a, f"h.{i}.attn.c_proj")
    h = h + conv1d(gelu_new(conv1d(ln(h, f"h.{i}.ln_2"), f"h.{i}.mlp.c_fc")), f"h.{i}.mlp.c_proj")
logits = ln(h, "ln_f") @ sd["wte.weight"].T

def write(d, tensors):
    os.makedirs(d, exist_ok=True)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    save_file({"transformer." + k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "model.safetensors"))
write(os.path.join(out, "gpt2"), sd)
write(os.path.join(out, "missing"), {k: v for k, v in sd.items() if k != "h.1.mlp.c_fc.bias"})
write(os.path.join(out, "transposed"), {**sd, "h.0.attn.c_attn.weight": sd["h.0.attn.c_attn.weight"].T})
save_file({"ids": ids, "logits": logits.contiguous()}, os.path.join(out, "reference.safetensors"))
"#;

#[test]
fn a_hugging_face_gpt2_directory_loads_and_computes_gpt2s_logits() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    common::python(WRITE_GPT2, &[dir.path()]);
    let reference: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join("reference.safetensors")).unwrap().into_iter().collect();
    let (ids, want) = (&reference["ids"], &reference["logits"]);

    let (c, model) = gpt2::from_pretrained(&dir.path().join("gpt2"), Device::Cpu).unwrap();
    assert_eq!((c.vocab, c.max_len, c.dim, c.layers, c.heads, c.hidden), (50, 16, 32, 2, 4, 128));
    assert_eq!(c.activation, "gelu_new");
    let got = tch::no_grad(|| model.net.f_forward_t(ids, false)).unwrap();
    assert_eq!(got.size(), vec![2, 12, 50]);
    let d = (&got - want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]);
    eprintln!("GPT-2 from a Hugging Face directory: xtorch vs GPT-2's forward {d:.2e} (logits up to {scale:.2})");
    assert!(d <= 1e-4, "{d}");
    // the head is tied: one variable, the embedding's
    let vars = model.vs.variables();
    assert_eq!(vars.len(), 2 + 2 * 12 + 2);
    let Some((_, xtorch::modules::Layer::Linear(head))) = model.net.layers().last() else { panic!("the head") };
    assert!(head.inner.bs.is_none());
    assert_eq!(head.inner.ws.data_ptr(), vars["0.weight"].data_ptr());

    // the exported graph computes the same logits on the interpreter
    let g = xtorch::export(&model.net, &[2, 12]).unwrap();
    let feed = HashMap::from([("x".to_string(), xtorch::export::to_ir(ids))]);
    let ours = xforge_ir::interp::run(&g, &feed).unwrap()[0].to_f64();
    let want_v = Vec::<f32>::try_from(got.flatten(0, -1)).unwrap();
    let di = ours.iter().zip(&want_v).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max);
    eprintln!("GPT-2 exported: interpreter vs libtorch {di:.2e}");
    assert!(di <= 1e-4, "{di}");

    // fine-tuning: the tied embedding gets gradient from the head too (rows of ids the input
    // never holds), and one AdamW step through xtorch's optimizer moves it
    let loss = xtorch::loss::sequence_cross_entropy(&model.net.forward_t(ids, true), ids);
    loss.backward();
    let g = vars["0.weight"].grad();
    let used: std::collections::HashSet<i64> = Vec::<i64>::try_from(ids.flatten(0, -1)).unwrap().into_iter().collect();
    let unused = (0..50).find(|i| !used.contains(i)).unwrap();
    assert!(g.get(unused).abs().sum(tch::Kind::Float).double_value(&[]) > 0.0, "the head's gradient reaches wte");
    let mut opt = xtorch::optim::Optim::adamw(1e-3).optimizer(&model.vs);
    let wte = vars["0.weight"].copy();
    opt.step();
    assert!(!vars["0.weight"].equal(&wte));
    assert_eq!(head.inner.ws.data_ptr(), vars["0.weight"].data_ptr(), "still tied");
}

#[test]
fn a_missing_or_misshapen_key_is_refused_by_name_and_the_model_is_unchanged() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    common::python(WRITE_GPT2, &[dir.path()]);
    let c = gpt2::read_config(&dir.path().join("gpt2")).unwrap();
    let model = xtorch::model::Model::new(Device::Cpu, 3, |p| gpt2::gpt2(p, &c));
    let before: Vec<(String, Tensor)> = model.vs.variables().into_iter().map(|(k, v)| (k, v.copy())).collect();
    let unchanged = || before.iter().all(|(k, v)| model.vs.variables()[k].equal(v));

    let e = gpt2::load_weights(&model, &c, &dir.path().join("missing")).unwrap_err().to_string();
    eprintln!("{e}");
    assert!(e.contains("key h.1.mlp.c_fc.bias is missing"), "{e}");
    assert!(unchanged());
    let e = gpt2::load_weights(&model, &c, &dir.path().join("transposed")).unwrap_err().to_string();
    eprintln!("{e}");
    assert!(e.contains("key h.0.attn.c_attn.weight has shape [96, 32], the model's is [32, 96]"), "{e}");
    assert!(unchanged());

    // a config the structure cannot compute is refused by name
    let odd = dir.path().join("odd");
    std::fs::create_dir(&odd).unwrap();
    let cfg = std::fs::read_to_string(dir.path().join("gpt2/config.json")).unwrap();
    std::fs::write(odd.join("config.json"), cfg.replace("\"gelu_new\"", "\"swish\"")).unwrap();
    let e = gpt2::read_config(&odd).unwrap_err().to_string();
    assert!(e.contains("activation_function \"swish\" is not supported"), "{e}");

    // and the good directory loads into the same model afterwards
    gpt2::load_weights(&model, &c, &dir.path().join("gpt2")).unwrap();
    assert!(!unchanged());
}

/// A BERT written as `BertModel.save_pretrained` ("bert": HF's names, no prefix) and as
/// `BertForSequenceClassification.save_pretrained` ("cls": "bert."-prefixed, plus
/// `classifier.*`), random weights, and BERT's forward in plain PyTorch (separate q/k/v
/// Linears, HF's additive extended attention mask, exact-erf GELU, post-LN, pooler tanh on
/// CLS) on ids with padding: the reference.
const WRITE_BERT: &str = r#"
import sys, os, json, math, torch
import torch.nn.functional as F
from safetensors.torch import save_file
out = sys.argv[1]
torch.manual_seed(0)
V, P, TV, E, L, H, I, C = 60, 24, 2, 32, 2, 4, 64, 3
cfg = {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "vocab_size": V,
       "hidden_size": E, "num_hidden_layers": L, "num_attention_heads": H, "intermediate_size": I,
       "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
       "max_position_embeddings": P, "type_vocab_size": TV, "initializer_range": 0.02,
       "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "absolute",
       "use_cache": True, "classifier_dropout": None, "torch_dtype": "float32",
       "id2label": {str(i): f"LABEL_{i}" for i in range(C)}, "label2id": {f"LABEL_{i}": i for i in range(C)}}
r = lambda *s, std=0.2: torch.randn(*s) * std
sd = {"embeddings.word_embeddings.weight": r(V, E, std=0.5),
      "embeddings.position_embeddings.weight": r(P, E, std=0.1),
      "embeddings.token_type_embeddings.weight": r(TV, E, std=0.1)}
def lin(name, fi, fo):
    sd[name + ".weight"] = r(fo, fi, std=1 / math.sqrt(fi))
    sd[name + ".bias"] = r(fo, std=0.05)
def norm(name):
    sd[name + ".weight"] = 1 + r(E, std=0.1)
    sd[name + ".bias"] = r(E, std=0.1)
norm("embeddings.LayerNorm")
for i in range(L):
    p = f"encoder.layer.{i}."
    for q in ("query", "key", "value"):
        lin(p + "attention.self." + q, E, E)
    lin(p + "attention.output.dense", E, E)
    norm(p + "attention.output.LayerNorm")
    lin(p + "intermediate.dense", E, I)
    lin(p + "output.dense", I, E)
    norm(p + "output.LayerNorm")
lin("pooler.dense", E, E)
head = {"classifier.weight": r(C, E, std=0.3), "classifier.bias": r(C, std=0.05)}

N, T = 3, 10
ids = torch.randint(1, V, (N, T))
types = torch.randint(0, TV, (N, T))
mask = torch.ones(N, T, dtype=torch.int64)
mask[1, 7:] = 0
mask[2, 4:] = 0
ids[mask == 0] = 0
def linear(x, p):
    return F.linear(x, sd[p + ".weight"], sd[p + ".bias"])
def ln(x, p):
    return F.layer_norm(x, (E,), sd[p + ".weight"], sd[p + ".bias"], 1e-12)
h = (sd["embeddings.word_embeddings.weight"][ids] + sd["embeddings.token_type_embeddings.weight"][types]
     + sd["embeddings.position_embeddings.weight"][torch.arange(T)])
h = ln(h, "embeddings.LayerNorm")
ext = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
d = E // H
heads = lambda z: z.view(N, T, H, d).transpose(1, 2)
for i in range(L):
    p = f"encoder.layer.{i}."
    q, k, v = (heads(linear(h, p + "attention.self." + n)) for n in ("query", "key", "value"))
    w = q @ k.transpose(-1, -2) / math.sqrt(d) + ext
    a = (w.softmax(-1) @ v).transpose(1, 2).reshape(N, T, E)
    h = ln(linear(a, p + "attention.output.dense") + h, p + "attention.output.LayerNorm")
    m = linear(F.gelu(linear(h, p + "intermediate.dense")), p + "output.dense")
    h = ln(m + h, p + "output.LayerNorm")
pooled = torch.tanh(linear(h[:, 0], "pooler.dense"))
logits = F.linear(pooled, head["classifier.weight"], head["classifier.bias"])

def write(d, tensors):
    os.makedirs(d, exist_ok=True)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "model.safetensors"))
write(os.path.join(out, "bert"), sd)
write(os.path.join(out, "cls"), {**{"bert." + k: v for k, v in sd.items()}, **head})
write(os.path.join(out, "missing"), {k: v for k, v in sd.items() if k != "encoder.layer.1.attention.self.key.bias"})
write(os.path.join(out, "misshapen"), {**sd, "encoder.layer.0.intermediate.dense.weight": sd["encoder.layer.0.intermediate.dense.weight"].T})
write(os.path.join(out, "ints"), {**sd, "pooler.dense.bias": torch.zeros(E, dtype=torch.int64)})
save_file({"ids": ids, "types": types, "mask": mask, "hidden": h.contiguous(), "pooled": pooled.contiguous(),
           "logits": logits.contiguous()}, os.path.join(out, "reference.safetensors"))
"#;

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn a_hugging_face_bert_directory_loads_computes_berts_outputs_and_fine_tunes() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    common::python(WRITE_BERT, &[dir.path()]);
    let reference: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join("reference.safetensors")).unwrap().into_iter().collect();
    let (ids, types, mask) = (&reference["ids"], &reference["types"], &reference["mask"]);

    // the encoder (BertModel's file: no prefix, no head)
    let encoder = bert::from_pretrained(&dir.path().join("bert"), Device::Cpu, None).unwrap();
    let c = &encoder.config;
    assert_eq!(
        (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size),
        (60, 32, 2, 4, 64)
    );
    assert_eq!((c.max_position_embeddings, c.type_vocab_size, c.layer_norm_eps, c.num_labels), (24, 2, 1e-12, 3));
    let out = tch::no_grad(|| encoder.f_forward_t(ids, Some(types), Some(mask), false)).unwrap();
    assert_eq!(out.hidden.size(), [3, 10, 32]);
    let (dh, dp) = (max_diff(&out.hidden, &reference["hidden"]), max_diff(&out.pooled, &reference["pooled"]));
    eprintln!("BERT from a Hugging Face directory: last hidden state {dh:.2e}, pooled {dp:.2e} from PyTorch's");
    assert!(dh <= 1e-5 && dp <= 1e-5, "{dh} {dp}");

    // the mask is honoured: what a padded position holds does not reach the tokens, and
    // without the mask the padded rows' outputs change
    let other_pads = ids.where_self(&mask.eq(1), &ids.ones_like().fill_(17));
    let again = tch::no_grad(|| encoder.f_forward_t(&other_pads, Some(types), Some(mask), false)).unwrap();
    let keep = mask.unsqueeze(-1).to_kind(tch::Kind::Float);
    assert!(max_diff(&(&again.hidden * &keep), &(&out.hidden * &keep)) <= 1e-6);
    assert!(max_diff(&again.pooled, &out.pooled) <= 1e-6);
    let unmasked = tch::no_grad(|| encoder.f_forward_t(ids, Some(types), None, false)).unwrap();
    assert!(max_diff(&unmasked.pooled.get(2), &out.pooled.get(2)) > 1e-3, "the mask matters");
    assert!(max_diff(&unmasked.pooled.get(0), &out.pooled.get(0)) <= 1e-6, "row 0 has no padding");
    // a sequence longer than the position table is refused
    let long = Tensor::zeros([1, 25], (tch::Kind::Int64, Device::Cpu));
    let e = encoder.f_forward_t(&long, None, None, false).unwrap_err().to_string();
    assert!(e.contains("input_ids") && e.contains("T <= 24"), "{e}");

    // the sequence classifier (BertForSequenceClassification's file: "bert." prefix + head)
    let cls = bert::from_pretrained(&dir.path().join("cls"), Device::Cpu, Some(3)).unwrap();
    let logits = tch::no_grad(|| cls.f_logits(ids, Some(types), Some(mask), false)).unwrap();
    let dl = max_diff(&logits, &reference["logits"]);
    eprintln!("BERT sequence classifier: logits {dl:.2e} from PyTorch's");
    assert!(dl <= 1e-5, "{dl}");
    // an encoder-only file gives a fresh head, and says so
    let fresh = bert::Bert::new(Device::Cpu, 1, c, Some(3));
    let left = bert::load_weights(&fresh, &dir.path().join("bert")).unwrap();
    assert_eq!(left, ["classifier.bias", "classifier.weight"]);

    // fine-tuning: one AdamW step (dropout on) through xtorch's optimizer lowers the loss
    let labels = Tensor::from_slice(&[2i64, 0, 1]);
    let loss =
        |train: bool| xtorch::loss::cross_entropy(&cls.f_logits(ids, Some(types), Some(mask), train).unwrap(), &labels);
    let before = tch::no_grad(|| loss(false)).double_value(&[]);
    let mut opt = xtorch::optim::Optim::adamw(1e-3).optimizer(&cls.vs);
    let vars = cls.vs.variables();
    let q0 = vars["encoder.layer.0.attention.in_proj_weight"].copy();
    opt.zero_grad();
    opt.backward_step(&loss(true));
    let after = tch::no_grad(|| loss(false)).double_value(&[]);
    eprintln!("BERT fine-tuning step: loss {before:.5} -> {after:.5}");
    assert!(after < before, "{before} -> {after}");
    assert!(!vars["encoder.layer.0.attention.in_proj_weight"].equal(&q0), "the encoder moved too");
}

#[test]
fn a_bert_directory_with_a_missing_misshapen_or_integer_key_is_refused_by_name() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    common::python(WRITE_BERT, &[dir.path()]);
    let c = bert::read_config(&dir.path().join("bert")).unwrap();
    let model = bert::Bert::new(Device::Cpu, 3, &c, Some(3));
    let before: Vec<(String, Tensor)> = model.vs.variables().into_iter().map(|(k, v)| (k, v.copy())).collect();
    let unchanged = || before.iter().all(|(k, v)| model.vs.variables()[k].equal(v));

    let e = bert::load_weights(&model, &dir.path().join("missing")).unwrap_err().to_string();
    eprintln!("{e}");
    assert!(e.contains("key encoder.layer.1.attention.self.key.bias is missing"), "{e}");
    assert!(unchanged());
    let e = bert::load_weights(&model, &dir.path().join("misshapen")).unwrap_err().to_string();
    eprintln!("{e}");
    assert!(
        e.contains("key encoder.layer.0.intermediate.dense.weight has shape [32, 64], the model's is [64, 32]"),
        "{e}"
    );
    assert!(unchanged());
    let e = bert::load_weights(&model, &dir.path().join("ints")).unwrap_err().to_string();
    assert!(e.contains("key pooler.dense.bias has dtype Int64"), "{e}");
    assert!(unchanged());
    // a head of other labels than the file's
    let two = bert::Bert::new(Device::Cpu, 3, &c, Some(2));
    let e = bert::load_weights(&two, &dir.path().join("cls")).unwrap_err().to_string();
    assert!(e.contains("key classifier.bias has shape [3], the model's is [2]"), "{e}");

    // an activation other than exact GELU is refused by name
    let odd = dir.path().join("odd");
    std::fs::create_dir(&odd).unwrap();
    let cfg = std::fs::read_to_string(dir.path().join("bert/config.json")).unwrap();
    std::fs::write(odd.join("config.json"), cfg.replace("\"gelu\"", "\"gelu_new\"")).unwrap();
    let e = bert::read_config(&odd).unwrap_err().to_string();
    assert!(e.contains("hidden_act \"gelu_new\"") && e.contains("is not supported"), "{e}");

    // and the good directory loads into the same model afterwards
    bert::load_weights(&model, &dir.path().join("cls")).unwrap();
    assert!(!unchanged());
}
