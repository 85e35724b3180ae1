//! The sequence-model ops of opsets 23–28 (RotaryEmbedding, TensorScatter, SwiGLU,
//! CausalConvWithState, LinearAttention) and the recurrent networks (RNN, GRU, LSTM): attributes and operand shapes checked, output shapes
//! derived, over dims that may be symbolic. Inference and the interpreter run the same checks,
//! so a model that `run` refuses is never compiled.
use crate::attr::Attr;
use crate::shape::Dim;
use crate::{Node, Op};

/// An operand's shape by input slot (None: absent or of unknown rank).
pub type Shapes<'a> = &'a dyn Fn(usize) -> Option<Vec<Dim>>;

/// Whether input slot k is given (an e-graph's node lists every slot; the facts say which are).
pub type Present<'a> = &'a dyn Fn(usize) -> bool;

/// The ops this module checks.
pub fn is_sequence_op(op: Op) -> bool {
    matches!(
        op,
        Op::RotaryEmbedding
            | Op::TensorScatter
            | Op::SwiGLU
            | Op::CausalConvWithState
            | Op::LinearAttention
            | Op::RNN
            | Op::GRU
            | Op::LSTM
    )
}

fn int(n: &Node, k: &str) -> Result<Option<i64>, String> {
    match n.attr(k) {
        None => Ok(None),
        Some(Attr::Int(v)) => Ok(Some(*v)),
        Some(a) => Err(format!("attribute '{k}' must be an int, got {}", a.kind())),
    }
}

fn string<'a>(n: &'a Node, k: &str, default: &'a str, allowed: &[&str]) -> Result<&'a str, String> {
    let s = match n.attr(k) {
        None => default,
        Some(Attr::Str(s)) => s.as_str(),
        Some(a) => return Err(format!("attribute '{k}' must be a string, got {}", a.kind())),
    };
    if !allowed.contains(&s) {
        return Err(format!("{k} '{s}' is not one of {}", allowed.join(", ")));
    }
    Ok(s)
}

fn known(d: &Dim) -> Option<usize> {
    d.known()
}

/// Two dims that must be equal where both are known.
fn agree(what: &str, a: &Dim, b: &Dim) -> Result<(), String> {
    match (known(a), known(b)) {
        (Some(x), Some(y)) if x != y => Err(format!("{what}: {x} against {y}")),
        _ => Ok(()),
    }
}

fn ranked(shape: Shapes, k: usize, what: &str, rank: usize) -> Result<Option<Vec<Dim>>, String> {
    match shape(k) {
        Some(s) if s.len() != rank => Err(format!("{what} has rank {}; expected rank {rank}", s.len())),
        s => Ok(s),
    }
}

/// `a / by`, which must divide exactly where `a` is known.
fn divided(what: &str, a: &Dim, by: usize, fresh: &mut dyn FnMut() -> Dim) -> Result<Dim, String> {
    match known(a) {
        Some(x) if by == 0 || x % by != 0 => Err(format!("{what} {x} is not a multiple of {by}")),
        Some(x) => Ok(Dim::Known(x / by)),
        None => Ok(fresh()),
    }
}

fn times(a: &Dim, by: usize, fresh: &mut dyn FnMut() -> Dim) -> Result<Dim, String> {
    match known(a) {
        Some(x) => x.checked_mul(by).map(Dim::Known).ok_or_else(|| format!("{x} · {by} overflows")),
        None => Ok(fresh()),
    }
}

/// Output shapes of sequence op `n` (None where unknown), or what is wrong with it.
pub fn output_shapes(
    n: &Node,
    present: Present,
    shape: Shapes,
    fresh: &mut dyn FnMut() -> Dim,
) -> Result<Vec<Option<Vec<Dim>>>, String> {
    match n.op {
        Op::RotaryEmbedding => rotary(n, shape).map(|s| vec![s]),
        Op::TensorScatter => tensor_scatter(n, shape).map(|s| vec![s]),
        Op::SwiGLU => swiglu(shape).map(|s| vec![s]),
        Op::CausalConvWithState => causal_conv(n, shape, fresh),
        Op::LinearAttention => linear_attention(n, present, shape, fresh),
        Op::RNN | Op::GRU | Op::LSTM => recurrent(n, present, shape),
        op => Err(format!("{op} is not a sequence op")),
    }
}

/// The geometry of a RotaryEmbedding's input: (batch, sequence, heads, head size, rotated dims).
pub struct RotaryDims {
    pub rank4: bool,
    pub b: Dim,
    pub s: Dim,
    pub h: Dim,
    pub head: Dim,
    pub rotated: Dim,
}

pub fn rotary_dims(n: &Node, x: &[Dim]) -> Result<RotaryDims, String> {
    let heads = int(n, "num_heads")?.unwrap_or(0);
    let rd = int(n, "rotary_embedding_dim")?.unwrap_or(0);
    let interleaved = int(n, "interleaved")?.unwrap_or(0);
    if heads < 0 || rd < 0 || !(0..=1).contains(&interleaved) {
        return Err(format!("num_heads {heads} and rotary_embedding_dim {rd} must be ≥ 0, interleaved 0 or 1"));
    }
    let (rank4, b, s, h, head) = match x {
        [b, h, s, d] => (true, b.clone(), s.clone(), h.clone(), d.clone()),
        [b, s, hidden] => {
            if heads == 0 {
                return Err("a 3-D input (batch, sequence, hidden) needs the num_heads attribute".into());
            }
            let head = divided("the hidden size", hidden, heads as usize, &mut || Dim::Sym("?".into()))?;
            (false, b.clone(), s.clone(), Dim::Known(heads as usize), head)
        }
        _ => return Err(format!("X has rank {}; RotaryEmbedding takes rank 3 or 4", x.len())),
    };
    let rotated = if rd > 0 { Dim::Known(rd as usize) } else { head.clone() };
    if let Some(r) = known(&rotated) {
        if r % 2 != 0 {
            return Err(format!("the rotated size {r} must be even"));
        }
        if let Some(d) = known(&head).filter(|&d| r > d) {
            return Err(format!("rotary_embedding_dim {r} is larger than the head size {d}"));
        }
    }
    Ok(RotaryDims { rank4, b, s, h, head, rotated })
}

fn rotary(n: &Node, shape: Shapes) -> Result<Option<Vec<Dim>>, String> {
    let Some(x) = shape(0) else { return Ok(None) };
    let r = rotary_dims(n, &x)?;
    let half = known(&r.rotated).map(|d| Dim::Known(d / 2));
    let positions = shape(3);
    for (k, name) in [(1, "cos_cache"), (2, "sin_cache")] {
        let Some(c) = shape(k) else { continue };
        match (&positions, c.len()) {
            (Some(_), 2) | (None, 3) => {}
            (Some(_), r) => {
                return Err(format!("{name} has rank {r}; with position_ids it is (positions, rotated / 2)"))
            }
            (None, r) => {
                return Err(format!("{name} has rank {r}; without position_ids it is (batch, sequence, rotated / 2)"))
            }
        }
        if let Some(h) = &half {
            agree(&format!("{name}'s last dim against half the rotated size"), &c[c.len() - 1], h)?;
        }
        if c.len() == 3 {
            agree(&format!("{name}'s batch"), &c[0], &r.b)?;
            agree(&format!("{name}'s sequence"), &c[1], &r.s)?;
        }
    }
    if let (Some(c), Some(s)) = (shape(1), shape(2)) {
        if c.len() == s.len() {
            for (a, b) in c.iter().zip(&s) {
                agree("cos_cache against sin_cache", a, b)?;
            }
        }
    }
    if let Some(p) = positions {
        let [pb, ps] = &p[..] else { return Err(format!("position_ids has rank {}; expected 2", p.len())) };
        agree("position_ids' batch", pb, &r.b)?;
        agree("position_ids' sequence", ps, &r.s)?;
    }
    Ok(Some(x))
}

fn tensor_scatter(n: &Node, shape: Shapes) -> Result<Option<Vec<Dim>>, String> {
    string(n, "mode", "linear", &["linear", "circular"])?;
    let ax = int(n, "axis")?.unwrap_or(-2);
    let Some(past) = shape(0) else { return Ok(None) };
    let r = past.len() as i64;
    if r < 2 || ax < -r || ax >= r {
        return Err(format!("axis {ax} is out of range for past_cache of rank {r}"));
    }
    let ax = ((ax + r) % r) as usize;
    if ax == 0 {
        return Err("axis is the batch axis; the sequence axis cannot be 0".into());
    }
    if let Some(u) = shape(1) {
        if u.len() != past.len() {
            return Err(format!("update has rank {}, past_cache {}", u.len(), past.len()));
        }
        for (d, (p, q)) in past.iter().zip(&u).enumerate() {
            match (known(p), known(q)) {
                (Some(x), Some(y)) if d == ax && y > x => {
                    return Err(format!("update's sequence length {y} exceeds the cache's {x}"));
                }
                _ if d != ax => agree(&format!("update against past_cache at axis {d}"), q, p)?,
                _ => {}
            }
        }
    }
    if let Some(w) = shape(2) {
        let [wb] = &w[..] else { return Err(format!("write_indices has rank {}; expected (batch)", w.len())) };
        agree("write_indices against the batch", wb, &past[0])?;
    }
    Ok(Some(past))
}

fn swiglu(shape: Shapes) -> Result<Option<Vec<Dim>>, String> {
    let (a, b) = (shape(0), shape(1));
    if let (Some(a), Some(b)) = (&a, &b) {
        if a.len() != b.len() {
            return Err(format!("A has rank {}, B {}: SwiGLU does not broadcast", a.len(), b.len()));
        }
        for (x, y) in a.iter().zip(b) {
            agree("A against B (SwiGLU does not broadcast)", x, y)?;
        }
    }
    Ok(a.or(b))
}

fn causal_conv(n: &Node, shape: Shapes, fresh: &mut dyn FnMut() -> Dim) -> Result<Vec<Option<Vec<Dim>>>, String> {
    string(n, "activation", "none", &["none", "silu", "swish"])?;
    let x = ranked(shape, 0, "input (batch, channels, length)", 3)?;
    let w = ranked(shape, 1, "weight (channels, 1, k)", 3)?;
    let bias = ranked(shape, 2, "bias (channels)", 1)?;
    let past = ranked(shape, 3, "past_state (batch, channels, k − 1)", 3)?;
    let c = x.as_ref().map(|x| x[1].clone()).or(w.as_ref().map(|w| w[0].clone()));
    let mut carry = None;
    if let Some(w) = &w {
        if known(&w[1]).is_some_and(|d| d != 1) || known(&w[2]) == Some(0) {
            return Err(format!("weight is {w:?}; expected (channels, 1, k) with k ≥ 1"));
        }
        carry = known(&w[2]).map(|k| Dim::Known(k - 1));
    }
    if let Some(c) = &c {
        for (s, what) in [(&w, "weight's channels"), (&bias, "bias' channels")] {
            if let Some(s) = s {
                agree(what, &s[0], c)?;
            }
        }
    }
    if let Some(p) = &past {
        if let Some(x) = &x {
            agree("past_state's batch", &p[0], &x[0])?;
        }
        if let Some(c) = &c {
            agree("past_state's channels", &p[1], c)?;
        }
        if let Some(k) = &carry {
            agree("past_state's length against k − 1", &p[2], k)?;
        }
    }
    let present = x.as_ref().map(|x| vec![x[0].clone(), x[1].clone(), carry.clone().unwrap_or_else(&mut *fresh)]);
    Ok(vec![x, present])
}

/// LinearAttention's update rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateRule {
    Linear,
    Gated,
    Delta,
    GatedDelta,
}

impl UpdateRule {
    pub fn of(n: &Node) -> Result<UpdateRule, String> {
        Ok(match string(n, "update_rule", "gated_delta", &["linear", "gated", "delta", "gated_delta"])? {
            "linear" => UpdateRule::Linear,
            "gated" => UpdateRule::Gated,
            "delta" => UpdateRule::Delta,
            _ => UpdateRule::GatedDelta,
        })
    }

    /// The state decays by exp(decay) before each write.
    pub fn gated(self) -> bool {
        matches!(self, UpdateRule::Gated | UpdateRule::GatedDelta)
    }

    /// The write is β·k ⊗ (v − Sᵀk) instead of k ⊗ v.
    pub fn delta(self) -> bool {
        matches!(self, UpdateRule::Delta | UpdateRule::GatedDelta)
    }
}

/// LinearAttention's query and key/value head counts, checked.
pub fn linear_attention_heads(n: &Node) -> Result<(usize, usize), String> {
    let hq = int(n, "q_num_heads")?.ok_or("missing attribute 'q_num_heads'")?;
    let hk = int(n, "kv_num_heads")?.ok_or("missing attribute 'kv_num_heads'")?;
    if hq < 1 || hk < 1 || hq % hk != 0 {
        return Err(format!("q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({hk})"));
    }
    if int(n, "chunk_size")?.is_some_and(|c| c < 1) {
        return Err("chunk_size must be positive".into());
    }
    Ok((hq as usize, hk as usize))
}

fn linear_attention(
    n: &Node,
    present: Present,
    shape: Shapes,
    fresh: &mut dyn FnMut() -> Dim,
) -> Result<Vec<Option<Vec<Dim>>>, String> {
    let rule = UpdateRule::of(n)?;
    let (hq, hk) = linear_attention_heads(n)?;
    for (k, name, need) in [(4, "decay", rule.gated()), (5, "beta", rule.delta())] {
        match (present(k), need) {
            (false, true) => return Err(format!("update_rule {rule:?} needs the {name} input")),
            (true, false) => return Err(format!("update_rule {rule:?} takes no {name} input")),
            _ => {}
        }
    }
    let q = ranked(shape, 0, "query (batch, sequence, q heads · d_k)", 3)?;
    let k = ranked(shape, 1, "key (batch, sequence, kv heads · d_k)", 3)?;
    let v = ranked(shape, 2, "value (batch, sequence, kv heads · d_v)", 3)?;
    let past = ranked(shape, 3, "past_state (batch, kv heads, d_k, d_v)", 4)?;
    let decay = ranked(shape, 4, "decay (batch, sequence, kv heads [· d_k])", 3)?;
    let beta = ranked(shape, 5, "beta (batch, sequence, kv heads or 1)", 3)?;
    let (Some(q), Some(k), Some(v)) = (q, k, v) else { return Ok(vec![None, None]) };
    for (s, what) in [(&k, "key"), (&v, "value")] {
        agree(&format!("{what}'s batch against query's"), &s[0], &q[0])?;
        agree(&format!("{what}'s sequence against query's"), &s[1], &q[1])?;
    }
    let dk = divided("query's last dim", &q[2], hq, fresh)?;
    let dk_k = divided("key's last dim", &k[2], hk, fresh)?;
    agree("d_k of key against query's", &dk_k, &dk)?;
    let dv = divided("value's last dim", &v[2], hk, fresh)?;
    if let Some(p) = &past {
        for (d, want, what) in [(0, &q[0], "batch"), (1, &Dim::Known(hk), "kv heads"), (2, &dk, "d_k"), (3, &dv, "d_v")]
        {
            agree(&format!("past_state's {what}"), &p[d], want)?;
        }
    }
    for (s, name, per_head) in [(&decay, "decay", known(&dk).and_then(|d| hk.checked_mul(d))), (&beta, "beta", Some(1))]
    {
        let Some(s) = s else { continue };
        agree(&format!("{name}'s batch"), &s[0], &q[0])?;
        agree(&format!("{name}'s sequence"), &s[1], &q[1])?;
        if let Some(last) = known(&s[2]) {
            if last != hk && Some(last) != per_head {
                let alt = per_head.map(|p| format!(" or {p}")).unwrap_or_default();
                return Err(format!("{name}'s last dim {last} must be {hk}{alt}"));
            }
        }
    }
    let out = vec![q[0].clone(), q[1].clone(), times(&dv, hq, fresh)?];
    let state = vec![q[0].clone(), Dim::Known(hk), dk, dv];
    Ok(vec![Some(out), Some(state)])
}

/// An activation of the recurrent networks' `activations` list.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f64, f64),
    LeakyRelu(f64),
    ThresholdedRelu(f64),
    ScaledTanh(f64, f64),
    HardSigmoid(f64, f64),
    Elu(f64),
    Softsign,
    Softplus,
}

impl Activation {
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Affine(a, b) => a * x + b,
            Activation::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Activation::ThresholdedRelu(a) => {
                if x > a {
                    x
                } else {
                    0.0
                }
            }
            Activation::ScaledTanh(a, b) => a * (b * x).tanh(),
            Activation::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Activation::Elu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * (x.exp() - 1.0)
                }
            }
            Activation::Softsign => x / (1.0 + x.abs()),
            Activation::Softplus => {
                if x > 30.0 {
                    x
                } else {
                    x.exp().ln_1p()
                }
            }
        }
    }
}

/// A recurrent network's geometry and settings, checked.
pub struct RecurrentDims {
    pub t: Dim,
    pub b: Dim,
    pub input: Dim,
    pub hidden: usize,
    pub dirs: usize,
    /// gates per step: RNN 1, GRU 3, LSTM 4
    pub gates: usize,
    pub layout: i64,
    /// per direction: runs from the last step
    pub reverse: Vec<bool>,
    /// per direction: f (RNN); f, g (GRU); f, g, h (LSTM)
    pub activations: Vec<Vec<Activation>>,
}

fn floats(n: &Node, k: &str) -> Result<Vec<f64>, String> {
    match n.attr(k) {
        None => Ok(vec![]),
        Some(Attr::Floats(v)) => Ok(v.iter().map(|&x| x as f64).collect()),
        Some(Attr::Float(v)) => Ok(vec![*v as f64]),
        Some(a) => Err(format!("attribute '{k}' must be a list of floats, got {}", a.kind())),
    }
}

/// RNN, GRU or LSTM node `n` against its operands.
pub fn recurrent_dims(n: &Node, present: Present, shape: Shapes) -> Result<RecurrentDims, String> {
    let (gates, defaults): (usize, &[&str]) = match n.op {
        Op::RNN => (1, &["Tanh"]),
        Op::GRU => (3, &["Sigmoid", "Tanh"]),
        Op::LSTM => (4, &["Sigmoid", "Tanh", "Tanh"]),
        op => return Err(format!("{op} is not a recurrent network")),
    };
    let direction = string(n, "direction", "forward", &["forward", "reverse", "bidirectional"])?;
    let dirs = if direction == "bidirectional" { 2 } else { 1 };
    let layout = int(n, "layout")?.unwrap_or(0);
    if !(0..=1).contains(&layout) {
        return Err(format!("layout {layout} must be 0 or 1"));
    }
    if n.op != Op::LSTM && (present(6) || present(7)) {
        return Err(format!("{} takes no initial_c or P input", n.op));
    }
    if int(n, "input_forget")?.is_some_and(|v| !(0..=1).contains(&v))
        || int(n, "linear_before_reset")?.is_some_and(|v| !(0..=1).contains(&v))
    {
        return Err("input_forget and linear_before_reset must be 0 or 1".into());
    }
    if let Some(c) = match n.attr("clip") {
        Some(Attr::Float(c)) => Some(*c),
        None => None,
        Some(a) => return Err(format!("attribute 'clip' must be a float, got {}", a.kind())),
    } {
        if !(c > 0.0) {
            return Err(format!("clip {c} must be positive"));
        }
    }
    // activations: one list per direction, each function taking its alpha and beta in turn
    let names: Vec<String> = match n.attr("activations") {
        None => defaults.iter().cycle().take(defaults.len() * dirs).map(|s| s.to_string()).collect(),
        Some(Attr::Strs(v)) => v.clone(),
        Some(a) => return Err(format!("attribute 'activations' must be a list of strings, got {}", a.kind())),
    };
    if names.len() != defaults.len() * dirs {
        return Err(format!("{} activations given; {} {direction} takes {}", names.len(), n.op, defaults.len() * dirs));
    }
    let (mut alphas, mut betas) =
        (floats(n, "activation_alpha")?.into_iter(), floats(n, "activation_beta")?.into_iter());
    let mut acts = vec![];
    for name in &names {
        let mut al = |d: f64| alphas.next().unwrap_or(d);
        acts.push(match name.as_str() {
            "Relu" => Activation::Relu,
            "Tanh" => Activation::Tanh,
            "Sigmoid" => Activation::Sigmoid,
            "Affine" => Activation::Affine(al(1.0), betas.next().unwrap_or(0.0)),
            "LeakyRelu" => Activation::LeakyRelu(al(0.01)),
            "ThresholdedRelu" => Activation::ThresholdedRelu(al(1.0)),
            "ScaledTanh" => Activation::ScaledTanh(al(1.0), betas.next().unwrap_or(1.0)),
            "HardSigmoid" => Activation::HardSigmoid(al(0.2), betas.next().unwrap_or(0.5)),
            "Elu" => Activation::Elu(al(1.0)),
            "Softsign" => Activation::Softsign,
            "Softplus" => Activation::Softplus,
            other => return Err(format!("activation '{other}' is not one the recurrent networks take")),
        });
    }
    let activations: Vec<Vec<Activation>> = acts.chunks(defaults.len()).map(|c| c.to_vec()).collect();
    let reverse = (0..dirs).map(|d| direction == "reverse" || d == 1).collect();
    let x = ranked(shape, 0, "X", 3)?;
    let w = ranked(shape, 1, "W (directions, gates · hidden, input)", 3)?;
    let r = ranked(shape, 2, "R (directions, gates · hidden, hidden)", 3)?;
    let hidden = match (int(n, "hidden_size")?, r.as_ref().and_then(|r| known(&r[2]))) {
        (Some(h), Some(rh)) if h != rh as i64 => return Err(format!("hidden_size {h} but R's last dim is {rh}")),
        (Some(h), _) if h < 1 => return Err(format!("hidden_size {h} must be positive")),
        (Some(h), _) => h as usize,
        (None, Some(rh)) => rh,
        (None, None) => return Err("hidden_size is not given and R's shape is unknown".into()),
    };
    let gh = gates * hidden;
    let (t, b, input) = match &x {
        Some(x) if layout == 0 => (x[0].clone(), x[1].clone(), x[2].clone()),
        Some(x) => (x[1].clone(), x[0].clone(), x[2].clone()),
        None => (Dim::Sym("?t".into()), Dim::Sym("?b".into()), Dim::Sym("?i".into())),
    };
    let dk = Dim::Known(dirs);
    for (s, what, last) in [(&w, "W", &input), (&r, "R", &Dim::Known(hidden))] {
        if let Some(s) = s {
            agree(&format!("{what}'s directions"), &s[0], &dk)?;
            agree(&format!("{what}'s rows against gates · hidden"), &s[1], &Dim::Known(gh))?;
            agree(&format!("{what}'s last dim"), &s[2], last)?;
        }
    }
    if let Some(bs) = ranked(shape, 3, "B (directions, 2 · gates · hidden)", 2)? {
        agree("B's directions", &bs[0], &dk)?;
        agree("B's width against 2 · gates · hidden", &bs[1], &Dim::Known(2 * gh))?;
    }
    if let Some(l) = ranked(shape, 4, "sequence_lens (batch)", 1)? {
        agree("sequence_lens against the batch", &l[0], &b)?;
    }
    for (k, what) in [(5, "initial_h"), (6, "initial_c")] {
        if let Some(s) = ranked(shape, k, what, 3)? {
            let want = if layout == 0 { [&dk, &b] } else { [&b, &dk] };
            agree(&format!("{what}'s first dim"), &s[0], want[0])?;
            agree(&format!("{what}'s second dim"), &s[1], want[1])?;
            agree(&format!("{what}'s hidden size"), &s[2], &Dim::Known(hidden))?;
        }
    }
    if let Some(p) = ranked(shape, 7, "P (directions, 3 · hidden)", 2)? {
        agree("P's directions", &p[0], &dk)?;
        agree("P's width against 3 · hidden", &p[1], &Dim::Known(3 * hidden))?;
    }
    Ok(RecurrentDims { t, b, input, hidden, dirs, gates, layout, reverse, activations })
}

fn recurrent(n: &Node, present: Present, shape: Shapes) -> Result<Vec<Option<Vec<Dim>>>, String> {
    let r = recurrent_dims(n, present, shape)?;
    if shape(0).is_none() {
        return Ok(vec![None; 3]);
    }
    let (d, h) = (Dim::Known(r.dirs), Dim::Known(r.hidden));
    let (y, state) = if r.layout == 0 {
        (vec![r.t, d.clone(), r.b.clone(), h.clone()], vec![d, r.b, h])
    } else {
        (vec![r.b.clone(), r.t, d.clone(), h.clone()], vec![r.b, d, h])
    };
    Ok(vec![Some(y), Some(state.clone()), Some(state)])
}
