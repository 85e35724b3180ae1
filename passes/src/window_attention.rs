//! Attention with constant additive scores, and windowed attention regrouped: Swin-style blocks
//! (and any exporter writing attention by hand with a bias table) compute
//!
//! ```text
//! s = MatMul(q·c, kᵀ) + B                       (N, h, S, L); B constant (relative positions)
//! [windowed: s → reshape (N/W, W, h, S, L) + M → reshape (N, h, S, L); M constant over W windows]
//! o = MatMul(Softmax(s), v)
//! ```
//!
//! which the e-graph's attention rules do not see through (the scale on q alone, the constant
//! bias, the reshapes around the shifted windows' mask). The plain form becomes
//! `Attention(q, k, v, mask = B, scale = c)`. In the windowed form the window index w of batch
//! row n = b·W + w picks M's row, which no broadcast mask over (N, h) expresses; but (N, h) is
//! (N/W, W·h) with the same memory, so the block becomes one Attention over N/W batches of W·h
//! heads with the constant mask B + M of shape (1, W·h, S, L) — its size independent of the
//! batch — between views of q, k, v and its output. The score matrix never reaches memory.
use crate::rewrite::{node, scalar, shape_weight};
use xforge_ir::{Attr, DType, Graph, Node, Op, Tensor, ValueId, ValueType};

/// The constant `t` read at `coords` of a right-aligned broadcast to a space of `coords.len()` axes.
fn broadcast_at(t: &Tensor, v: &[f64], coords: &[usize]) -> f64 {
    let s = t.shape();
    let lead = coords.len() - s.len();
    let mut off = 0;
    for (k, &dim) in s.iter().enumerate() {
        off = off * dim + if dim == 1 { 0 } else { coords[lead + k] };
    }
    v[off]
}

/// Whether `shape` broadcasts (right-aligned) into `space` with size-1 axes where `free` is false.
fn broadcasts(shape: &[usize], space: &[usize], free: &[bool]) -> bool {
    shape.len() <= space.len()
        && shape
            .iter()
            .rev()
            .zip(space.iter().rev().zip(free.iter().rev()))
            .all(|(&d, (&s, &f))| d == 1 || (d == s && f))
}

/// One matched block: the nodes it reads and what it computes.
struct Block {
    q: ValueId,
    kt: ValueId,
    v: ValueId,
    scale: f64,
    bias: Option<ValueId>,
    /// (windows W, the mask M) for the windowed form
    windows: Option<(usize, ValueId)>,
    /// the final MatMul, whose output the block's result replaces
    at: usize,
}

fn const_of(g: &Graph, v: ValueId) -> Option<&Tensor> {
    g.weights.get(&v).filter(|t| t.dtype().is_float())
}

fn shape(g: &Graph, v: ValueId) -> Option<Vec<usize>> {
    g.ty(v).static_shape()
}

/// The two operands of a two-input Add.
fn add_parts(n: &Node) -> Option<(ValueId, ValueId)> {
    (n.op == Op::Add && n.inputs.len() == 2).then_some((n.inputs[0]?, n.inputs[1]?))
}

fn matched(g: &Graph, prod: &[Option<usize>], uses: &[usize], at: usize) -> Option<Block> {
    let out_mm = &g.nodes[at];
    if out_mm.op != Op::MatMul || out_mm.inputs.len() != 2 {
        return None;
    }
    let (p, v) = (out_mm.inputs[0]?, out_mm.inputs[1]?);
    let only = |x: ValueId| uses[x.index()] == 1 && !g.outputs.contains(&x);
    let node_of = |x: ValueId| prod[x.index()].map(|i| &g.nodes[i]);
    let sm = node_of(p).filter(|n| n.op == Op::Softmax && only(p))?;
    let s4 = sm.inputs.first().copied().flatten()?;
    let [n, h, s, l] = shape(g, s4)?[..] else { return None };
    let axis = match sm.attr("axis") {
        Some(Attr::Int(a)) => *a,
        _ if g.opset >= 13 => -1,
        _ => 1,
    };
    if !(axis == -1 || axis == 3) || !only(s4) {
        return None;
    }
    // the windowed form: s4 = Reshape(Reshape(scores, (N/W, W, h, S, L)) + M)
    let mut scores = s4;
    let mut windows = None;
    if let Some(r4) = node_of(s4).filter(|x| x.op == Op::Reshape) {
        let m5 = r4.inputs[0]?;
        let add = node_of(m5).filter(|x| x.op == Op::Add && only(m5))?;
        let (a, b) = add_parts(add)?;
        let (r5v, mask) = if const_of(g, b).is_some() { (a, b) } else { (b, a) };
        const_of(g, mask)?;
        let r5 = node_of(r5v).filter(|x| x.op == Op::Reshape && only(r5v))?;
        let [nb, w, h5, s5, l5] = shape(g, r5v)?[..] else { return None };
        let ms = shape(g, mask)?;
        if nb * w != n
            || (h5, s5, l5) != (h, s, l)
            || !broadcasts(&ms, &[nb, w, h, s, l], &[false, true, true, true, true])
        {
            return None;
        }
        scores = r5.inputs[0]?;
        if shape(g, scores)? != [n, h, s, l] || !only(scores) {
            return None;
        }
        // the folded mask (1, W·h, S, L) must stay a sane weight
        let folded = [w, h, s, l].iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if folded.is_none_or(|e| e > crate::knobs::MAX_FOLDED_MASK_ELEMENTS) {
            return None;
        }
        windows = Some((w, mask));
    }
    // scores = MatMul(q·c, kᵀ) [+ B]
    let mut bias = None;
    let mut mm_out = scores;
    if let Some(add) = node_of(scores).filter(|x| x.op == Op::Add) {
        let (a, b) = add_parts(add)?;
        let (mmv, bv) = if const_of(g, b).is_some() { (a, b) } else { (b, a) };
        let bs = shape(g, bv)?;
        // B must not vary along N in the windowed form (the regrouped batch mixes windows)
        let n_free = windows.is_none();
        if const_of(g, bv).is_none() || !broadcasts(&bs, &[n, h, s, l], &[n_free, true, true, true]) || !only(mmv) {
            return None;
        }
        bias = Some(bv);
        mm_out = mmv;
    }
    let mm = node_of(mm_out).filter(|x| x.op == Op::MatMul && x.inputs.len() == 2)?;
    let (qs, kt) = (mm.inputs[0]?, mm.inputs[1]?);
    // constant scalar factors on q and on kᵀ (SDPA's export puts √scale on both) become the scale
    let unscaled = |x: ValueId| -> (ValueId, f64) {
        let c = |y: ValueId| scalar(g, y);
        let mul = node_of(x).filter(|m| m.op == Op::Mul && m.inputs.len() == 2 && only(x));
        match mul.and_then(|m| Some((m.inputs[0]?, m.inputs[1]?))) {
            Some((a, b)) => match (c(a), c(b)) {
                (_, Some(k)) => (a, k),
                (Some(k), None) => (b, k),
                _ => (x, 1.0),
            },
            None => (x, 1.0),
        }
    };
    let ((q, sq), (kt, sk)) = (unscaled(qs), unscaled(kt));
    let scale = sq * sk;
    let d = shape(g, q)?;
    let (ks, vs) = (shape(g, kt)?, shape(g, v)?);
    let dt = g.ty(q).dtype;
    let agree = d.len() == 4
        && d[..3] == [n, h, s]
        && ks == [n, h, d[3], l]
        && vs.len() == 4
        && vs[..3] == [n, h, l]
        && matches!(dt, DType::F32 | DType::F16 | DType::BF16)
        && g.ty(kt).dtype == dt
        && g.ty(v).dtype == dt;
    // the mask (B, or the regrouped B + M) must cover every key: the kernel does not broadcast keys
    let keys_ok = match (bias, windows) {
        (None, None) => true,
        (Some(b), None) => shape(g, b)?.last() == Some(&l),
        (_, Some(_)) => true,
    };
    (agree && keys_ok && scale.is_finite() && scale != 0.0).then_some(Block { q, kt, v, scale, bias, windows, at })
}

/// The windowed form's mask B + M over (1, W·h, S, L), in f32.
fn regrouped_mask(g: &Graph, bias: Option<ValueId>, mask: ValueId, w: usize, [h, s, l]: [usize; 3]) -> Tensor {
    let m = &g.weights[&mask];
    let mv = m.to_f64();
    let b = bias.map(|b| (&g.weights[&b], g.weights[&b].to_f64()));
    let mut out = Vec::with_capacity(w * h * s * l);
    for wi in 0..w {
        for hi in 0..h {
            for si in 0..s {
                for li in 0..l {
                    // M is read over (N/W, W, h, S, L) at batch 0, B over (N, h, S, L) at row 0
                    let mut x = broadcast_at(m, &mv, &[0, wi, hi, si, li]);
                    if let Some((bt, bv)) = &b {
                        x += broadcast_at(bt, bv, &[0, hi, si, li]);
                    }
                    out.push(x as f32);
                }
            }
        }
    }
    Tensor::from_f32(vec![1, w * h, s, l], out)
}

/// Rewrites every matched block into an Attention; returns how many.
pub fn attention_blocks(g: &mut Graph) -> usize {
    let mut done = 0;
    let mut i = 0;
    // producers and use counts, recounted after each rewrite only (graphs of 20,000 nodes)
    let (mut prod, mut uses) = (g.producers(), g.use_counts());
    while i < g.nodes.len() {
        let Some(blk) = matched(g, &prod, &uses, i) else {
            i += 1;
            continue;
        };
        let out = g.nodes[blk.at].outputs[0].expect("a MatMul has an output");
        let name = g.nodes[blk.at].name.clone();
        let dt = g.ty(blk.q).dtype;
        let [n, h, s, d] = shape(g, blk.q).unwrap()[..] else { unreachable!() };
        let l = shape(g, blk.kt).unwrap()[3];
        let dv = shape(g, blk.v).unwrap()[3];
        let k = g.add_value(format!("{name}.k"), ValueType::known(dt, &[n, h, l, d]));
        let mut nodes =
            vec![node(&name, "k", Op::Transpose, &[blk.kt], k, vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))])];
        let scale = || vec![("scale", Attr::Float(blk.scale as f32))];
        match blk.windows {
            None => {
                let mut ins = vec![blk.q, k, blk.v];
                ins.extend(blk.bias);
                nodes.push(node(&name, "attention", Op::Attention, &ins, out, scale()));
            }
            Some((w, mask)) => {
                let (nb, hw) = (n / w, w * h);
                let c = regrouped_mask(g, blk.bias, mask, w, [h, s, l]);
                let cv = g.add_value(format!("{name}.window_mask"), ValueType::known(DType::F32, &[1, hw, s, l]));
                g.weights.insert(cv, c);
                // a view of x as `dims` (into `y`, else a new value): the node and its value
                let view = |g: &mut Graph, x: ValueId, dims: [usize; 4], what: &str, y: Option<ValueId>| {
                    let sv = shape_weight(g, format!("{name}.{what}_shape"), &dims);
                    let y = y.unwrap_or_else(|| g.add_value(format!("{name}.{what}"), ValueType::known(dt, &dims)));
                    (node(&name, what, Op::Reshape, &[x, sv], y, vec![]), y)
                };
                let (nq, q2) = view(g, blk.q, [nb, hw, s, d], "q_windows", None);
                let (nk, k2) = view(g, k, [nb, hw, l, d], "k_windows", None);
                let (nv, v2) = view(g, blk.v, [nb, hw, l, dv], "v_windows", None);
                let o2 = g.add_value(format!("{name}.windows"), ValueType::known(dt, &[nb, hw, s, dv]));
                let attention = node(&name, "attention", Op::Attention, &[q2, k2, v2, cv], o2, scale());
                let (heads, _) = view(g, o2, [n, h, s, dv], "heads", Some(out));
                nodes.extend([nq, nk, nv, attention, heads]);
            }
        }
        let added = nodes.len();
        g.nodes.splice(blk.at..=blk.at, nodes);
        i = blk.at + added;
        done += 1;
        (prod, uses) = (g.producers(), g.use_counts());
    }
    done
}
