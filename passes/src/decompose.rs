//! Sequence-model ops that ONNX defines by a function of other ops become those ops, so fusion
//! sees the elementwise work and data movement they are made of:
//!
//! ```text
//! SwiGLU(a, b)                 → a · Sigmoid(α·a) · b
//! RotaryEmbedding(x, cos, sin, pos)
//!     → x as (B, H, S, D) or (B, S, H, D); c, s = cos, sin rows (Gathered by pos) with a head axis;
//!       x1, x2 = the halves (or the even and odd entries) of the rotated part;
//!       Concat(x1·c − x2·s, x1·s + x2·c [interleaved back], the unrotated rest)
//! TensorScatter(past, upd, w)  → Where(0 ≤ p < T, GatherElements(upd, clamp(p), axis), past),
//!                                 p = position − w[batch] along the axis (mod its length when circular)
//! CausalConvWithState(x, w, b, past)
//!     → Conv(Concat(past, x), w, b, group = C), or without a past the first L outputs of Conv(x)
//!       padded by k − 1 (as PyTorch's causal conv1d) [· Sigmoid]; present = the last k − 1
//!       positions of Concat(past or zeros, x)
//! ```
//!
//! A node whose operand shapes are not static stays as it is. Where the interpreter refuses a
//! run (a linear TensorScatter writing past the cache's end), the written-out form writes only
//! the positions inside the cache. LinearAttention keeps its own kernel.
use crate::rewrite::Writer;
use xforge_ir::interp::NodeAttrs;
use xforge_ir::sequence_shapes::rotary_dims;
use xforge_ir::shape::Dim;
use xforge_ir::{Attr, Graph, Node, Op, Tensor, ValueId};

/// Writes out every such node it can; returns how many.
pub fn decompose(g: &mut Graph) -> usize {
    let mut done = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        let n = g.nodes[i].clone();
        let made = match n.op {
            Op::SwiGLU => swiglu(g, &n),
            Op::RotaryEmbedding => rotary(g, &n),
            Op::TensorScatter => tensor_scatter(g, &n),
            Op::CausalConvWithState => causal_conv(g, &n),
            _ => None,
        };
        match made {
            Some(nodes) => {
                let k = nodes.len();
                g.nodes.splice(i..=i, nodes);
                i += k;
                done += 1;
            }
            None => i += 1,
        }
    }
    done
}

fn input(n: &Node, k: usize) -> Option<ValueId> {
    n.inputs.get(k).copied().flatten()
}

fn output(n: &Node, k: usize) -> Option<ValueId> {
    n.outputs.get(k).copied().flatten()
}

fn shape(g: &Graph, v: ValueId) -> Option<Vec<usize>> {
    g.ty(v).static_shape()
}

impl Writer<'_> {
    /// `x[..., from..to:step]` along `axis`.
    fn slice(&mut self, x: ValueId, axis: i64, from: i64, to: i64, step: i64) -> ValueId {
        let dt = self.g.ty(x).dtype;
        let (s, e, a, st) = (self.ints(&[from]), self.ints(&[to]), self.ints(&[axis]), self.ints(&[step]));
        self.op(Op::Slice, &[x, s, e, a, st], dt, vec![])
    }

    fn unsqueeze(&mut self, x: ValueId, axis: i64) -> ValueId {
        let dt = self.g.ty(x).dtype;
        let a = self.ints(&[axis]);
        self.op(Op::Unsqueeze, &[x, a], dt, vec![])
    }

    fn reshape(&mut self, x: ValueId, to: &[usize]) -> ValueId {
        let dt = self.g.ty(x).dtype;
        let s = self.ints(&to.iter().map(|&d| d as i64).collect::<Vec<_>>());
        self.op(Op::Reshape, &[x, s], dt, vec![])
    }

    fn binary(&mut self, op: Op, a: ValueId, b: ValueId) -> ValueId {
        let dt = self.g.ty(a).dtype;
        self.op(op, &[a, b], dt, vec![])
    }

    fn concat(&mut self, parts: &[ValueId], axis: i64) -> ValueId {
        let dt = self.g.ty(parts[0]).dtype;
        self.op(Op::Concat, parts, dt, vec![("axis", Attr::Int(axis))])
    }

    /// The nodes written, or None when nothing was.
    fn done(self) -> Option<Vec<Node>> {
        Some(self.nodes).filter(|n| !n.is_empty())
    }
}

fn swiglu(g: &mut Graph, n: &Node) -> Option<Vec<Node>> {
    let (a, b, y) = (input(n, 0)?, input(n, 1)?, output(n, 0)?);
    let alpha = NodeAttrs(n).float("alpha", 1.0).ok()? as f64;
    let dt = g.ty(a).dtype;
    let mut w = Writer::new(g, &n.name);
    let t = if alpha == 1.0 {
        a
    } else {
        let c = w.weight(Tensor::from_f64(dt, vec![], &[alpha]));
        w.binary(Op::Mul, a, c)
    };
    let s = w.op(Op::Sigmoid, &[t], dt, vec![]);
    let gate = w.binary(Op::Mul, a, s);
    w.op_into(Op::Mul, &[gate, b], y, vec![]);
    w.done()
}

fn rotary(g: &mut Graph, n: &Node) -> Option<Vec<Node>> {
    let (x, cos, sin, y) = (input(n, 0)?, input(n, 1)?, input(n, 2)?, output(n, 0)?);
    let xs = shape(g, x)?;
    let known: Vec<Dim> = xs.iter().map(|&d| Dim::Known(d)).collect();
    let r = rotary_dims(n, &known).ok()?;
    let k = |d: &Dim| d.known();
    let (b, s, h, d, rot) = (k(&r.b)?, k(&r.s)?, k(&r.h)?, k(&r.head)?, k(&r.rotated)?);
    let half = (rot / 2) as i64;
    let interleaved = NodeAttrs(n).int("interleaved", 0).ok()? != 0;
    let mut w = Writer::new(g, &n.name);
    // (B, H, S, D), or (B, S, H, D) from a 3-D input
    let x4 = if r.rank4 { x } else { w.reshape(x, &[b, s, h, d]) };
    let head_axis = if r.rank4 { 1 } else { 2 };
    let rows = |w: &mut Writer, cache: ValueId| {
        let c = match input(n, 3) {
            Some(p) => {
                let dt = w.g.ty(cache).dtype;
                w.op(Op::Gather, &[cache, p], dt, vec![("axis", Attr::Int(0))])
            }
            None => cache,
        };
        w.unsqueeze(c, head_axis)
    };
    let (c, sn) = (rows(&mut w, cos), rows(&mut w, sin));
    let (x1, x2) = if interleaved {
        (w.slice(x4, 3, 0, rot as i64, 2), w.slice(x4, 3, 1, rot as i64, 2))
    } else {
        (w.slice(x4, 3, 0, half, 1), w.slice(x4, 3, half, rot as i64, 1))
    };
    let (a, bb) = (w.binary(Op::Mul, x1, c), w.binary(Op::Mul, x2, sn));
    let real = w.binary(Op::Sub, a, bb);
    let (a, bb) = (w.binary(Op::Mul, x1, sn), w.binary(Op::Mul, x2, c));
    let imag = w.binary(Op::Add, a, bb);
    let rotated = if interleaved {
        let (re, im) = (w.unsqueeze(real, 4), w.unsqueeze(imag, 4));
        let pairs = w.concat(&[re, im], 4);
        let (d0, d1, d2) = if r.rank4 { (b, h, s) } else { (b, s, h) };
        w.reshape(pairs, &[d0, d1, d2, rot])
    } else {
        w.concat(&[real, imag], 3)
    };
    let full = if rot < d {
        let rest = w.slice(x4, 3, rot as i64, d as i64, 1);
        w.concat(&[rotated, rest], 3)
    } else {
        rotated
    };
    let to = w.ints(&xs.iter().map(|&v| v as i64).collect::<Vec<_>>());
    w.op_into(Op::Reshape, &[full, to], y, vec![]);
    w.done()
}

fn tensor_scatter(g: &mut Graph, n: &Node) -> Option<Vec<Node>> {
    let (past, upd, y) = (input(n, 0)?, input(n, 1)?, output(n, 0)?);
    let (ps, us) = (shape(g, past)?, shape(g, upd)?);
    let a = NodeAttrs(n);
    let rank = ps.len();
    let ax = a.int("axis", -2).ok()?.rem_euclid(rank as i64) as usize;
    let circular = a.string("mode", "linear").ok()? == "circular";
    let (m, t) = (ps[ax], us[ax]);
    let mut w = Writer::new(g, &n.name);
    if t == 0 {
        w.op_into(Op::Identity, &[past], y, vec![]);
        return w.done();
    }
    let i64t = xforge_ir::DType::I64;
    let konst = |w: &mut Writer, v: i64| w.weight(Tensor::from_i64(vec![], vec![v]));
    // the cache position along the axis, (1, …, M, …, 1)
    let mut along = vec![1; rank];
    along[ax] = m;
    let positions = w.weight(Tensor::from_i64(along, (0..m as i64).collect()));
    let mut p = match input(n, 2) {
        Some(wi) => {
            let mut per_batch = vec![1; rank];
            per_batch[0] = ps[0];
            let wi = w.reshape(wi, &per_batch);
            w.binary(Op::Sub, positions, wi)
        }
        None => positions,
    };
    if circular {
        let len = konst(&mut w, m as i64);
        p = w.binary(Op::Mod, p, len);
    }
    let (zero, last, len) = (konst(&mut w, 0), konst(&mut w, t as i64 - 1), konst(&mut w, t as i64));
    let bool_t = xforge_ir::DType::Bool;
    let lo = w.op(Op::GreaterOrEqual, &[p, zero], bool_t, vec![]);
    let hi = w.op(Op::Less, &[p, len], bool_t, vec![]);
    let valid = w.op(Op::And, &[lo, hi], bool_t, vec![]);
    let idx = w.op(Op::Min, &[p, last], i64t, vec![]);
    let idx = w.op(Op::Max, &[idx, zero], i64t, vec![]);
    let full = w.ints(&ps.iter().map(|&d| d as i64).collect::<Vec<_>>());
    let idx = w.op(Op::Expand, &[idx, full], i64t, vec![]);
    let dt = w.g.ty(past).dtype;
    let moved = w.op(Op::GatherElements, &[upd, idx], dt, vec![("axis", Attr::Int(ax as i64))]);
    w.op_into(Op::Where, &[valid, moved, past], y, vec![]);
    w.done()
}

fn causal_conv(g: &mut Graph, n: &Node) -> Option<Vec<Node>> {
    let (x, wt, y) = (input(n, 0)?, input(n, 1)?, output(n, 0)?);
    let xs = shape(g, x)?;
    let ws = shape(g, wt)?;
    let (&[b, c, l], &[_, _, k]) = (&xs[..], &ws[..]) else { return None };
    let silu = NodeAttrs(n).string("activation", "none").ok()? != "none";
    let dt = g.ty(x).dtype;
    let mut w = Writer::new(g, &n.name);
    // with a past, the convolution reads past + x; without, x padded by k − 1 zeros on the left
    // (the Concat then only feeds the present state, if that is read)
    let mut padded = None;
    let mut padded_of = |w: &mut Writer| {
        *padded.get_or_insert_with(|| {
            if k == 1 {
                return x;
            }
            let past = match input(n, 3) {
                Some(p) => p,
                None => w.weight(Tensor::zeros(dt, vec![b, c, k - 1])),
            };
            w.concat(&[past, x], 2)
        })
    };
    // padded by k − 1 on both sides (a symmetric window the convolution libraries take), the
    // first L outputs are the causal ones
    let (src, pad) = match input(n, 3) {
        Some(_) => (padded_of(&mut w), 0),
        None => (x, k as i64 - 1),
    };
    let mut ins = vec![src, wt];
    ins.extend(input(n, 2));
    let attrs = vec![
        ("group", Attr::Int(c as i64)),
        ("kernel_shape", Attr::Ints(vec![k as i64])),
        ("pads", Attr::Ints(vec![pad, pad])),
    ];
    let (last, out) = (silu, if pad == 0 { None } else { Some(l as i64) });
    let mut v = match (last, out) {
        (false, None) => {
            w.op_into(Op::Conv, &ins, y, attrs);
            y
        }
        _ => w.op(Op::Conv, &ins, dt, attrs),
    };
    if let Some(l) = out {
        if silu {
            v = w.slice(v, 2, 0, l, 1);
        } else {
            let (s, e, a) = (w.ints(&[0]), w.ints(&[l]), w.ints(&[2]));
            w.op_into(Op::Slice, &[v, s, e, a], y, vec![]);
        }
    }
    if silu {
        let s = w.op(Op::Sigmoid, &[v], dt, vec![]);
        w.op_into(Op::Mul, &[v, s], y, vec![]);
    }
    if let Some(present) = output(n, 1) {
        let p = padded_of(&mut w);
        let (s, e, a) = (w.ints(&[l as i64]), w.ints(&[(l + k - 1) as i64]), w.ints(&[2]));
        w.op_into(Op::Slice, &[p, s, e, a], present, vec![]);
    }
    w.done()
}
