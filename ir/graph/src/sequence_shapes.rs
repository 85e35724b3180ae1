//! The sequence-model ops of opsets 23–28 (RotaryEmbedding, TensorScatter, SwiGLU,
//! CausalConvWithState, LinearAttention): attributes and operand shapes checked, output shapes
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
    matches!(op, Op::RotaryEmbedding | Op::TensorScatter | Op::SwiGLU | Op::CausalConvWithState | Op::LinearAttention)
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
