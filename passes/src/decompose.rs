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
//! RNN, GRU and LSTM are unrolled over their steps (see `recurrent`).
//!
//! A node whose operand shapes are not static stays as it is. Where the interpreter refuses a
//! run (a linear TensorScatter writing past the cache's end), the written-out form writes only
//! the positions inside the cache. LinearAttention keeps its own kernel.
use crate::rewrite::{replace_nodes, Writer};
use xforge_ir::interp::NodeAttrs;
use xforge_ir::sequence_shapes::{recurrent_dims, rotary_dims, Activation};
use xforge_ir::shape::Dim;
use xforge_ir::{Attr, Graph, Node, Op, Tensor, ValueId};

/// Writes out every such node it can; returns how many.
pub fn decompose(g: &mut Graph) -> usize {
    replace_nodes(g, |g, n| match n.op {
        Op::SwiGLU => swiglu(g, n),
        Op::RotaryEmbedding => rotary(g, n),
        Op::TensorScatter => tensor_scatter(g, n),
        Op::CausalConvWithState => causal_conv(g, n),
        Op::RNN | Op::GRU | Op::LSTM => recurrent(g, n),
        _ => None,
    })
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

// The written ops take the forms of the graph's opset (the recurrent networks exist since
// opset 1): Slice's bounds were attributes before 10, Clip's before 11, Unsqueeze's axes
// before 13, and GreaterOrEqual came in 12.
impl Writer<'_> {
    /// `x[..., from..to:step]` along `axis`.
    fn slice(&mut self, x: ValueId, axis: i64, from: i64, to: i64, step: i64) -> ValueId {
        let dt = self.g.ty(x).dtype;
        if self.g.opset < 10 && step == 1 {
            let attrs = vec![
                ("starts", Attr::Ints(vec![from])),
                ("ends", Attr::Ints(vec![to])),
                ("axes", Attr::Ints(vec![axis])),
            ];
            return self.op(Op::Slice, &[x], dt, attrs);
        }
        let (s, e, a, st) = (self.ints(&[from]), self.ints(&[to]), self.ints(&[axis]), self.ints(&[step]));
        self.op(Op::Slice, &[x, s, e, a, st], dt, vec![])
    }

    fn unsqueeze(&mut self, x: ValueId, axis: i64) -> ValueId {
        let dt = self.g.ty(x).dtype;
        if self.g.opset < 13 {
            return self.op(Op::Unsqueeze, &[x], dt, vec![("axes", Attr::Ints(vec![axis]))]);
        }
        let a = self.ints(&[axis]);
        self.op(Op::Unsqueeze, &[x, a], dt, vec![])
    }

    /// `x` clamped to [−c, c].
    fn clip(&mut self, x: ValueId, c: f64) -> ValueId {
        let dt = self.g.ty(x).dtype;
        if self.g.opset < 11 {
            let attrs = vec![("min", Attr::Float(-c as f32)), ("max", Attr::Float(c as f32))];
            return self.op(Op::Clip, &[x], dt, attrs);
        }
        let (lo, hi) =
            (self.weight(Tensor::from_f64(dt, vec![], &[-c])), self.weight(Tensor::from_f64(dt, vec![], &[c])));
        self.op(Op::Clip, &[x, lo, hi], dt, vec![])
    }

    /// `a ≥ b` as a bool tensor.
    fn at_least(&mut self, a: ValueId, b: ValueId) -> ValueId {
        let t = xforge_ir::DType::Bool;
        if self.g.opset < 12 {
            let lt = self.op(Op::Less, &[a, b], t, vec![]);
            return self.op(Op::Not, &[lt], t, vec![]);
        }
        self.op(Op::GreaterOrEqual, &[a, b], t, vec![])
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
    let lo = w.at_least(p, zero);
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
    let out = if pad == 0 { None } else { Some(l as i64) };
    let mut v = match (silu, out) {
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

/// The ops of one recurrent-network activation on `x`.
fn activation(w: &mut Writer, a: Activation, x: ValueId) -> ValueId {
    let dt = w.g.ty(x).dtype;
    let konst = |w: &mut Writer, v: f64| w.weight(Tensor::from_f64(dt, vec![], &[v]));
    let f = |v: f64| Attr::Float(v as f32);
    match a {
        Activation::Relu => w.op(Op::Relu, &[x], dt, vec![]),
        Activation::Tanh => w.op(Op::Tanh, &[x], dt, vec![]),
        Activation::Sigmoid => w.op(Op::Sigmoid, &[x], dt, vec![]),
        Activation::Affine(al, be) => {
            let (al, be) = (konst(w, al), konst(w, be));
            let t = w.binary(Op::Mul, x, al);
            w.binary(Op::Add, t, be)
        }
        Activation::LeakyRelu(al) => w.op(Op::LeakyRelu, &[x], dt, vec![("alpha", f(al))]),
        Activation::ThresholdedRelu(al) => w.op(Op::ThresholdedRelu, &[x], dt, vec![("alpha", f(al))]),
        Activation::ScaledTanh(al, be) => {
            let (al, be) = (konst(w, al), konst(w, be));
            let t = w.binary(Op::Mul, x, be);
            let t = w.op(Op::Tanh, &[t], dt, vec![]);
            w.binary(Op::Mul, t, al)
        }
        Activation::HardSigmoid(al, be) => w.op(Op::HardSigmoid, &[x], dt, vec![("alpha", f(al)), ("beta", f(be))]),
        Activation::Elu(al) => w.op(Op::Elu, &[x], dt, vec![("alpha", f(al))]),
        Activation::Softsign => w.op(Op::Softsign, &[x], dt, vec![]),
        Activation::Softplus => w.op(Op::Softplus, &[x], dt, vec![]),
    }
}

/// RNN, GRU and LSTM unrolled over their (static) steps: X·Wᵀ + biases for all steps in one
/// MatMul per direction, then per step h·Rᵀ and the gates as elementwise ops; Y, Y_h and Y_c
/// concatenated back in the layout asked for. With sequence lengths, a step past a sequence's
/// end keeps its state and writes zeros (Where on `step < len`), and a reverse direction reads
/// step s of each sequence at len − 1 − s and puts its outputs back there (GatherElements).
/// Sequences longer than RECURRENT_UNROLL_STEPS stay as they are.
fn recurrent(g: &mut Graph, n: &Node) -> Option<Vec<Node>> {
    let (x, wt, rt) = (input(n, 0)?, input(n, 1)?, input(n, 2)?);
    // static shapes only
    shape(g, x)?;
    let shapes = |k: usize| input(n, k).and_then(|v| g.ty(v).shape.clone());
    let present = |k: usize| input(n, k).is_some();
    let r = recurrent_dims(n, &present, &shapes).ok()?;
    let (t, b, hd) = (r.t.known()?, r.b.known()?, r.hidden);
    if t == 0 || t * r.dirs > crate::knobs::RECURRENT_UNROLL_STEPS {
        return None;
    }
    let a = NodeAttrs(n);
    let clip = a.float_opt("clip").ok()?.map(|c| c as f64);
    let lbr = a.int("linear_before_reset", 0).ok()? != 0;
    let coupled = a.int("input_forget", 0).ok()? != 0;
    let dt = g.ty(x).dtype;
    let gh = r.gates * hd;
    let mut w = Writer::new(g, &n.name);
    let i64s = |w: &mut Writer, v: i64| w.weight(Tensor::from_i64(vec![], vec![v]));
    let perm =
        |w: &mut Writer, v: ValueId, p: &[i64]| w.op(Op::Transpose, &[v], dt, vec![("perm", Attr::Ints(p.to_vec()))]);
    let pick = |w: &mut Writer, v: ValueId, k: i64| {
        let i = i64s(w, k);
        let vdt = w.g.ty(v).dtype;
        w.op(Op::Gather, &[v, i], vdt, vec![("axis", Attr::Int(0))])
    };
    let cols = |w: &mut Writer, v: ValueId, from: usize, to: usize| w.slice(v, -1, from as i64, to as i64, 1);
    let clipped = |w: &mut Writer, v: ValueId| match clip {
        Some(c) => w.clip(v, c),
        None => v,
    };
    // X as (T, B, I); initial states as (D, B, H)
    let x3 = if r.layout == 1 { perm(&mut w, x, &[1, 0, 2]) } else { x };
    let state0 = |w: &mut Writer, k: usize| input(n, k).map(|v| if r.layout == 1 { perm(w, v, &[1, 0, 2]) } else { v });
    let (h0, c0) = (state0(&mut w, 5), state0(&mut w, 6));
    let i64t = xforge_ir::DType::I64;
    let bool_t = xforge_ir::DType::Bool;
    let lens = input(n, 4).map(|l| w.op(Op::Cast, &[l], i64t, vec![("to", Attr::Int(i64t.onnx_code() as i64))]));
    let zero_i = i64s(&mut w, 0);
    let zero_f = w.weight(Tensor::from_f64(dt, vec![], &[0.0]));
    let mut ys = vec![];
    let mut yhs = vec![];
    let mut ycs = vec![];
    for d in 0..r.dirs {
        let acts = r.activations[d].clone();
        let wd = pick(&mut w, wt, d as i64);
        let wdt = perm(&mut w, wd, &[1, 0]);
        let rd = pick(&mut w, rt, d as i64);
        let rdt = perm(&mut w, rd, &[1, 0]);
        // X·Wᵀ + Wb (+ Rb but GRU's candidate Rb under linear_before_reset) for every step
        let mut xw = w.binary(Op::MatMul, x3, wdt);
        let mut rb_h = None;
        if let Some(bias) = input(n, 3) {
            let bd = pick(&mut w, bias, d as i64);
            let (wb, rb) = (cols(&mut w, bd, 0, gh), cols(&mut w, bd, gh, 2 * gh));
            let both = if n.op == Op::GRU && lbr {
                rb_h = Some(cols(&mut w, rb, 2 * hd, 3 * hd));
                let zero = w.weight(Tensor::zeros(dt, vec![hd]));
                let rzr = cols(&mut w, rb, 0, 2 * hd);
                let rb = w.concat(&[rzr, zero], 0);
                w.binary(Op::Add, wb, rb)
            } else {
                w.binary(Op::Add, wb, rb)
            };
            xw = w.binary(Op::Add, xw, both);
        }
        let peep = input(n, 7).map(|p| pick(&mut w, p, d as i64));
        let peep_k = |w: &mut Writer, k: usize| peep.map(|p| cols(w, p, k * hd, (k + 1) * hd));
        let (pi, po, pf) = (peep_k(&mut w, 0), peep_k(&mut w, 1), peep_k(&mut w, 2));
        let zeros = |w: &mut Writer| w.weight(Tensor::zeros(dt, vec![b, hd]));
        let mut h = match h0 {
            Some(v) => pick(&mut w, v, d as i64),
            None => zeros(&mut w),
        };
        let mut c = match c0 {
            Some(v) => pick(&mut w, v, d as i64),
            None => zeros(&mut w),
        };
        let mut steps = vec![None; t];
        for s in 0..t {
            let step = if r.reverse[d] { t - 1 - s } else { s };
            let (h_prev, c_prev) = (h, c);
            // this step's X·Wᵀ, and which sequences it belongs to when lengths are given
            let (xt, valid) = match lens {
                None => (pick(&mut w, xw, step as i64), None),
                Some(lc) if !r.reverse[d] => {
                    let sc = i64s(&mut w, s as i64);
                    (pick(&mut w, xw, s as i64), Some(w.op(Op::Less, &[sc, lc], bool_t, vec![])))
                }
                Some(lc) => {
                    let s1 = i64s(&mut w, s as i64 + 1);
                    let idx = w.op(Op::Sub, &[lc, s1], i64t, vec![]);
                    let v = w.at_least(idx, zero_i);
                    let idx = w.op(Op::Max, &[idx, zero_i], i64t, vec![]);
                    let idx = w.reshape(idx, &[1, b, 1]);
                    let full = w.ints(&[1, b as i64, gh as i64]);
                    let idx = w.op(Op::Expand, &[idx, full], i64t, vec![]);
                    let gx = w.op(Op::GatherElements, &[xw, idx], dt, vec![("axis", Attr::Int(0))]);
                    (pick(&mut w, gx, 0), Some(v))
                }
            };
            match n.op {
                Op::RNN => {
                    let hr = w.binary(Op::MatMul, h, rdt);
                    let pre = w.binary(Op::Add, xt, hr);
                    let pre = clipped(&mut w, pre);
                    h = activation(&mut w, acts[0], pre);
                }
                Op::GRU => {
                    let rzr = cols(&mut w, rdt, 0, 2 * hd);
                    let rh = cols(&mut w, rdt, 2 * hd, 3 * hd);
                    let hr = w.binary(Op::MatMul, h, rzr);
                    let xzr = cols(&mut w, xt, 0, 2 * hd);
                    let zr = w.binary(Op::Add, xzr, hr);
                    let zr = clipped(&mut w, zr);
                    let zr = activation(&mut w, acts[0], zr);
                    let (z, rg) = (cols(&mut w, zr, 0, hd), cols(&mut w, zr, hd, 2 * hd));
                    let inner = if lbr {
                        let hh = w.binary(Op::MatMul, h, rh);
                        let hh = match rb_h {
                            Some(rb) => w.binary(Op::Add, hh, rb),
                            None => hh,
                        };
                        w.binary(Op::Mul, rg, hh)
                    } else {
                        let reset = w.binary(Op::Mul, rg, h);
                        w.binary(Op::MatMul, reset, rh)
                    };
                    let xh = cols(&mut w, xt, 2 * hd, 3 * hd);
                    let cand = w.binary(Op::Add, xh, inner);
                    let cand = clipped(&mut w, cand);
                    let cand = activation(&mut w, acts[1], cand);
                    // (1 − z)·cand + z·h = cand + z·(h − cand)
                    let diff = w.binary(Op::Sub, h, cand);
                    let zd = w.binary(Op::Mul, z, diff);
                    h = w.binary(Op::Add, cand, zd);
                }
                _ => {
                    let hr = w.binary(Op::MatMul, h, rdt);
                    let pre = w.binary(Op::Add, xt, hr);
                    let gate = |w: &mut Writer, k: usize| cols(w, pre, k * hd, (k + 1) * hd);
                    let with_peep = |w: &mut Writer, v: ValueId, p: Option<ValueId>, st: ValueId| match p {
                        Some(p) => {
                            let pc = w.binary(Op::Mul, p, st);
                            w.binary(Op::Add, v, pc)
                        }
                        None => v,
                    };
                    let (gi, go, gf, gc) = (gate(&mut w, 0), gate(&mut w, 1), gate(&mut w, 2), gate(&mut w, 3));
                    let gi = with_peep(&mut w, gi, pi, c);
                    let gi = clipped(&mut w, gi);
                    let ig = activation(&mut w, acts[0], gi);
                    let fg = if coupled {
                        let one = w.weight(Tensor::from_f64(dt, vec![], &[1.0]));
                        w.binary(Op::Sub, one, ig)
                    } else {
                        let gf = with_peep(&mut w, gf, pf, c);
                        let gf = clipped(&mut w, gf);
                        activation(&mut w, acts[0], gf)
                    };
                    let gc = clipped(&mut w, gc);
                    let cg = activation(&mut w, acts[1], gc);
                    let (fc, icg) = (w.binary(Op::Mul, fg, c), w.binary(Op::Mul, ig, cg));
                    c = w.binary(Op::Add, fc, icg);
                    let go = with_peep(&mut w, go, po, c);
                    let go = clipped(&mut w, go);
                    let og = activation(&mut w, acts[0], go);
                    let hc = activation(&mut w, acts[2], c);
                    h = w.binary(Op::Mul, og, hc);
                }
            }
            let out = match valid {
                Some(v) => {
                    let v = w.unsqueeze(v, 1);
                    let out = w.op(Op::Where, &[v, h, zero_f], dt, vec![]);
                    h = w.op(Op::Where, &[v, h, h_prev], dt, vec![]);
                    if n.op == Op::LSTM {
                        c = w.op(Op::Where, &[v, c, c_prev], dt, vec![]);
                    }
                    out
                }
                None => h,
            };
            // outputs by step (by position when lengths are given; reordered below)
            steps[if lens.is_some() { s } else { step }] = Some(w.unsqueeze(out, 0));
        }
        let steps: Vec<ValueId> = steps.into_iter().collect::<Option<_>>()?;
        let mut yd = if steps.len() == 1 { steps[0] } else { w.concat(&steps, 0) };
        if let (Some(lc), true) = (lens, r.reverse[d]) {
            // Y[t, b] = the output of step len[b] − 1 − t, zero past the sequence's end
            let tcol = w.weight(Tensor::from_i64(vec![t, 1], (0..t as i64).collect()));
            let one = i64s(&mut w, 1);
            let last = w.op(Op::Sub, &[lc, one], i64t, vec![]);
            let last = w.reshape(last, &[1, b]);
            let idx = w.op(Op::Sub, &[last, tcol], i64t, vec![]);
            let v = w.at_least(idx, zero_i);
            let idx = w.op(Op::Max, &[idx, zero_i], i64t, vec![]);
            let idx = w.unsqueeze(idx, 2);
            let full = w.ints(&[t as i64, b as i64, hd as i64]);
            let idx = w.op(Op::Expand, &[idx, full], i64t, vec![]);
            let back = w.op(Op::GatherElements, &[yd, idx], dt, vec![("axis", Attr::Int(0))]);
            let v = w.unsqueeze(v, 2);
            yd = w.op(Op::Where, &[v, back, zero_f], dt, vec![]);
        }
        ys.push(w.unsqueeze(yd, 1));
        yhs.push(w.unsqueeze(h, 0));
        ycs.push(w.unsqueeze(c, 0));
    }
    let join =
        |w: &mut Writer, parts: &[ValueId], axis: i64| if parts.len() == 1 { parts[0] } else { w.concat(parts, axis) };
    let outs = [
        (join(&mut w, &ys, 1), vec![2, 0, 1, 3]),
        (join(&mut w, &yhs, 0), vec![1, 0, 2]),
        (join(&mut w, &ycs, 0), vec![1, 0, 2]),
    ];
    for (k, (v, p)) in outs.into_iter().enumerate() {
        let Some(o) = output(n, k) else { continue };
        if r.layout == 1 {
            w.op_into(Op::Transpose, &[v], o, vec![("perm", Attr::Ints(p))]);
        } else {
            w.op_into(Op::Identity, &[v], o, vec![]);
        }
    }
    w.done()
}
