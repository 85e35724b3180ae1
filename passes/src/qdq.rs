//! Linear quantization as float arithmetic, where no 8-bit kernel takes it: QuantizeLinear,
//! DequantizeLinear and DynamicQuantizeLinear become the elementwise ops they are defined by,
//! which fuse with their neighbours (a DQ → Conv → Q layer then runs in float, the fallback
//! for layers without an 8-bit path).
//!
//! ```text
//! DequantizeLinear(x, s, zp) → (cast<f32>(x) − cast<f32>(zp')) · cast<f32>(s') → cast<out>
//! QuantizeLinear(x, s, zp)   → cast<q>(clip(round(x / s') + cast<f32>(zp'), qmin, qmax))
//! FP8 Q → DQ (Q read only by DQs, saturating, zero point 0): the FP8 value is carried as the
//!                              f32 it stands for, x / s' rounded to the type's grid (`fp8_round`),
//!                              and DQ is that times s'
//! DynamicQuantizeLinear(x)   → lo = min(ReduceMin(x), 0), hi = max(ReduceMax(x), 0),
//!                              s = (hi − lo, or 1 when 0) / 255, zp = round(clip(−lo / s, 0, 255)),
//!                              then QuantizeLinear(x, s, zp) as above
//! ```
//!
//! `s'` and `zp'` are the scale and zero point made broadcastable: a per-axis constant is
//! reshaped to `[1, …, C, …, 1]`, a blocked one repeated along its axis (both folded into new
//! weights; parameters known only at run time get Reshape / Expand / Slice nodes instead). Round
//! is half to even, as the definition. Types other than 8- and 16-bit integers stay as they are.
use crate::rewrite::node;
use xforge_ir::{Attr, DType, Graph, Node, Op, Tensor, ValueId, ValueType};

fn range(dt: DType) -> Option<(f32, f32)> {
    Some(dt).filter(|d| !d.is_narrow())?.quantized_range().map(|(lo, hi)| (lo as f32, hi as f32))
}

/// Builds nodes for one rewritten node, naming each `{node}.{what}`.
struct Writer<'g> {
    g: &'g mut Graph,
    base: String,
    nodes: Vec<Node>,
}

impl Writer<'_> {
    fn value(&mut self, what: &str, dt: DType) -> ValueId {
        let id = self.g.add_value(format!("{}.{what}", self.base), ValueType::unranked(dt));
        self.g.undeclared.insert(id);
        id
    }

    fn op(&mut self, what: &str, op: Op, ins: &[ValueId], dt: DType, attrs: Vec<(&str, Attr)>) -> ValueId {
        let out = self.value(what, dt);
        self.nodes.push(node(&self.base, what, op, ins, out, attrs));
        out
    }

    fn cast(&mut self, what: &str, x: ValueId, to: DType) -> ValueId {
        if self.g.ty(x).dtype == to {
            return x;
        }
        self.op(what, Op::Cast, &[x], to, vec![("to", Attr::Int(to.onnx_code() as i64))])
    }

    fn scalar(&mut self, what: &str, v: f32) -> ValueId {
        let id = self.g.add_value(format!("{}.{what}", self.base), ValueType::known(DType::F32, &[]));
        self.g.weights.insert(id, Tensor::from_f32(vec![], vec![v]));
        id
    }

    /// `p` (a scale or zero point) broadcastable against x: as it is when it holds one value,
    /// else a new weight reshaped (per axis) or repeated (blocked); None when that needs values
    /// the graph does not have.
    fn broadcastable(&mut self, what: &str, p: ValueId, x: &[usize], axis: i64, block: i64) -> Option<ValueId> {
        let ty = self.g.ty(p).clone();
        let n: usize = ty.static_shape()?.iter().product();
        if n == 1 {
            return Some(p);
        }
        let a = if axis < 0 { axis + x.len() as i64 } else { axis };
        let a = usize::try_from(a).ok().filter(|&a| a < x.len())?;
        let Some(t) = self.g.weights.get(&p).cloned() else {
            return self.broadcast_ops(what, p, &ty.static_shape()?, x, a, block);
        };
        let v = t.to_f64();
        let full: Vec<f64> = if block <= 0 {
            if t.rank() != 1 || t.len() != x[a] {
                return None;
            }
            v
        } else {
            // blocked: entry (…, i, …) of x reads (…, i / block, …) of p
            let b = block as usize;
            let ps = t.shape().to_vec();
            let want: Vec<usize> = x.iter().enumerate().map(|(k, &d)| if k == a { d.div_ceil(b) } else { d }).collect();
            if ps != want {
                return None;
            }
            let (xs, pst) = (xforge_ir::tensor::strides(x), xforge_ir::tensor::strides(&ps));
            (0..x.iter().product())
                .map(|i: usize| {
                    let k: usize =
                        (0..x.len()).map(|d| ((i / xs[d]) % x[d] / if d == a { b } else { 1 }) * pst[d]).sum();
                    v[k]
                })
                .collect()
        };
        let shape: Vec<usize> =
            if block <= 0 { (0..x.len()).map(|k| if k == a { x[a] } else { 1 }).collect() } else { x.to_vec() };
        let id = self.g.add_value(format!("{}.{what}", self.base), ValueType::known(t.dtype(), &shape));
        self.g.weights.insert(id, Tensor::from_f64(t.dtype(), shape, &full));
        Some(id)
    }
}

impl Writer<'_> {
    /// `broadcastable` for parameters known only at run time: a per-axis one reshaped to
    /// `[1, …, C, …, 1]`; a blocked one of shape `ps` given a unit axis after `a`, expanded to
    /// `block` there, merged back and cut to x's length.
    fn broadcast_ops(
        &mut self,
        what: &str,
        p: ValueId,
        ps: &[usize],
        x: &[usize],
        a: usize,
        block: i64,
    ) -> Option<ValueId> {
        let dt = self.g.ty(p).dtype;
        let shape_of = |w: &mut Self, name: &str, dims: &[usize]| {
            crate::rewrite::shape_weight(w.g, format!("{}.{what}_{name}", w.base), dims)
        };
        if block <= 0 {
            if ps != [x[a]] {
                return None;
            }
            let dims: Vec<usize> = (0..x.len()).map(|k| if k == a { x[a] } else { 1 }).collect();
            let s = shape_of(self, "shape", &dims);
            return Some(self.op(&format!("{what}_axis"), Op::Reshape, &[p, s], dt, vec![]));
        }
        let b = block as usize;
        let want: Vec<usize> = x.iter().enumerate().map(|(k, &d)| if k == a { d.div_ceil(b) } else { d }).collect();
        if ps != want.as_slice() {
            return None;
        }
        let mut split = ps.to_vec();
        split.insert(a + 1, 1);
        let s1 = shape_of(self, "split", &split);
        let v = self.op(&format!("{what}_split"), Op::Reshape, &[p, s1], dt, vec![]);
        split[a + 1] = b;
        let s2 = shape_of(self, "blocks", &split);
        let v = self.op(&format!("{what}_blocks"), Op::Expand, &[v, s2], dt, vec![]);
        let mut merged = ps.to_vec();
        merged[a] *= b;
        let s3 = shape_of(self, "merged", &merged);
        let v = self.op(&format!("{what}_merged"), Op::Reshape, &[v, s3], dt, vec![]);
        if merged[a] == x[a] {
            return Some(v);
        }
        let ints = |w: &mut Self, name: &str, v: i64| {
            crate::rewrite::ints_weight(w.g, format!("{}.{what}_{name}", w.base), vec![v])
        };
        let (start, end, axis) = (ints(self, "start", 0), ints(self, "end", x[a] as i64), ints(self, "axis", a as i64));
        Some(self.op(&format!("{what}_cut"), Op::Slice, &[v, start, end, axis], dt, vec![]))
    }
}

impl Writer<'_> {
    /// A Q/DQ node's scale and (optional) zero point, broadcastable against x of shape `xs`.
    fn parameters(&mut self, n: &Node, xs: &[usize]) -> Option<(ValueId, Option<ValueId>)> {
        let (axis, block) = (attr(n, "axis", 1), attr(n, "block_size", 0));
        let s = self.broadcastable("scale", n.inputs.get(1).copied().flatten()?, xs, axis, block)?;
        let zp = match n.inputs.get(2).copied().flatten() {
            Some(z) => Some(self.broadcastable("zero_point", z, xs, axis, block)?),
            None => None,
        };
        Some((s, zp))
    }
}

fn attr(n: &Node, name: &str, default: i64) -> i64 {
    match n.attr(name) {
        Some(Attr::Int(v)) => *v,
        _ => default,
    }
}

/// The float ops of QuantizeLinear(x, scale, zp) into type `q`; returns the quantized value.
fn quantize(w: &mut Writer, x: ValueId, scale: ValueId, zp: Option<ValueId>, q: DType) -> ValueId {
    let (lo, hi) = range(q).expect("checked by the caller");
    let xt = w.g.ty(x).dtype;
    let s = w.cast("scale_cast", scale, xt);
    let d = w.op("divided", Op::Div, &[x, s], xt, vec![]);
    let d = w.cast("divided_f32", d, DType::F32);
    let mut r = w.op("rounded", Op::Round, &[d], DType::F32, vec![]);
    if let Some(z) = zp {
        let z = w.cast("zero_point_f32", z, DType::F32);
        r = w.op("shifted", Op::Add, &[r, z], DType::F32, vec![]);
    }
    let (lo, hi) = (w.scalar("qmin", lo), w.scalar("qmax", hi));
    let c = w.op("saturated", Op::Clip, &[r, lo, hi], DType::F32, vec![]);
    w.cast("quantized", c, q)
}

/// `v` (f32) rounded to the nearest value of FP8 type `f` (ties to even), saturating: the
/// value an FP8 QuantizeLinear then DequantizeLinear keep, in float ops that fuse. The step at
/// |v| is 2^(e - mantissa bits), e = floor(log2 |v|) (at least the smallest normal exponent):
/// the logarithm's estimate is corrected by the quotient |v| / 2^e, which lies in [1, 2).
fn fp8_round(w: &mut Writer, v: ValueId, f: xforge_ir::narrow::FloatFormat) -> ValueId {
    let f32t = DType::F32;
    let a = w.op("fp8_abs", Op::Abs, &[v], f32t, vec![]);
    let max = w.scalar("fp8_max", f.max() as f32);
    let a = w.op("fp8_saturated", Op::Min, &[a, max], f32t, vec![]);
    let tiny = w.scalar("fp8_min_normal", 2f32.powi(f.min_exponent()));
    let t = w.op("fp8_normal", Op::Max, &[a, tiny], f32t, vec![]);
    let l = w.op("fp8_ln", Op::Log, &[t], f32t, vec![]);
    let inv_ln2 = w.scalar("fp8_inv_ln2", std::f32::consts::LOG2_E);
    let l2 = w.op("fp8_log2", Op::Mul, &[l, inv_ln2], f32t, vec![]);
    let e = w.op("fp8_exponent_estimate", Op::Floor, &[l2], f32t, vec![]);
    let two = w.scalar("fp8_two", 2.0);
    let p = w.op("fp8_power", Op::Pow, &[two, e], f32t, vec![]);
    // t / 2^e in [0.5, 4): floor 0 → one less, 1 → right, 2 or 3 → one more
    let q = w.op("fp8_quotient", Op::Div, &[t, p], f32t, vec![]);
    let fq = w.op("fp8_quotient_floor", Op::Floor, &[q], f32t, vec![]);
    let c = w.op("fp8_capped", Op::Min, &[fq, two], f32t, vec![]);
    let e = w.op("fp8_exponent_plus", Op::Add, &[e, c], f32t, vec![]);
    let one = w.scalar("fp8_one", 1.0);
    let e = w.op("fp8_exponent", Op::Sub, &[e, one], f32t, vec![]);
    let m = w.scalar("fp8_mantissa_bits", f.mantissa_bits() as f32);
    let se = w.op("fp8_step_exponent", Op::Sub, &[e, m], f32t, vec![]);
    let step = w.op("fp8_step", Op::Pow, &[two, se], f32t, vec![]);
    let k = w.op("fp8_steps", Op::Div, &[a, step], f32t, vec![]);
    let k = w.op("fp8_steps_rounded", Op::Round, &[k], f32t, vec![]);
    let r = w.op("fp8_magnitude", Op::Mul, &[k, step], f32t, vec![]);
    // the sign: v / max(|v|, smallest normal f32) is ±1, or a fraction where r is 0 anyway
    let av = w.op("fp8_abs_in", Op::Abs, &[v], f32t, vec![]);
    let fmin = w.scalar("fp8_f32_min", f32::MIN_POSITIVE);
    let den = w.op("fp8_sign_den", Op::Max, &[av, fmin], f32t, vec![]);
    let sign = w.op("fp8_sign", Op::Div, &[v, den], f32t, vec![]);
    w.op("fp8_rounded", Op::Mul, &[r, sign], f32t, vec![])
}

/// What a rewrite needs beyond the node: who reads each value, and the FP8 values now carried
/// as f32 (an FP8 QuantizeLinear read only by DequantizeLinears computes its values' floats).
struct Context {
    readers: std::collections::HashMap<ValueId, Vec<Op>>,
    carried: std::collections::HashSet<ValueId>,
}

/// Rewrites one node; None when it stays.
fn rewrite(g: &mut Graph, n: &Node, cx: &mut Context) -> Option<Vec<Node>> {
    let x = n.inputs.first().copied().flatten()?;
    let xs = g.ty(x).static_shape()?;
    let mut w = Writer { g, base: n.name.clone(), nodes: vec![] };
    let out = n.outputs.first().copied().flatten()?;
    match n.op {
        Op::DequantizeLinear if cx.carried.contains(&x) => {
            // FP8 values carried as f32: scale them (the zero point must be a zero weight)
            if let Some(z) = n.inputs.get(2).copied().flatten() {
                w.g.weights.get(&z).filter(|t| t.to_f64().iter().all(|&v| v == 0.0))?;
            }
            let (s, _) = w.parameters(n, &xs)?;
            let out_t = w.g.ty(out).dtype;
            let s = w.cast("scale_f32", s, DType::F32);
            let y = w.op("scaled", Op::Mul, &[x, s], DType::F32, vec![]);
            let y = w.cast("out", y, out_t);
            finish(w, y, out)
        }
        Op::QuantizeLinear
            if w.g.ty(out).dtype.is_narrow_float()
                && w.g.ty(out).dtype != DType::F4E2M1
                && attr(n, "saturate", 1) != 0
                && !w.g.outputs.contains(&out)
                && cx.readers.get(&out).is_some_and(|r| r.iter().all(|&op| op == Op::DequantizeLinear)) =>
        {
            let f = xforge_ir::narrow::FloatFormat::of(w.g.ty(out).dtype)?;
            if let Some(z) = n.inputs.get(2).copied().flatten() {
                w.g.weights.get(&z).filter(|t| t.to_f64().iter().all(|&v| v == 0.0))?;
            }
            let (s, _) = w.parameters(n, &xs)?;
            let xt = w.g.ty(x).dtype;
            let s = w.cast("scale_cast", s, xt);
            let d = w.op("divided", Op::Div, &[x, s], xt, vec![]);
            let d = w.cast("divided_f32", d, DType::F32);
            let y = fp8_round(&mut w, d, f);
            // the node's FP8 output now holds those floats
            w.g.values[out.index()].ty.dtype = DType::F32;
            cx.carried.insert(out);
            finish(w, y, out)
        }
        Op::DequantizeLinear => {
            let xt = w.g.ty(x).dtype;
            range(xt)?;
            let (s, zp) = w.parameters(n, &xs)?;
            let out_t = w.g.ty(out).dtype;
            let mut v = w.cast("wide", x, DType::F32);
            if let Some(z) = zp {
                let z = w.cast("zero_point_f32", z, DType::F32);
                v = w.op("centred", Op::Sub, &[v, z], DType::F32, vec![]);
            }
            let s = w.cast("scale_f32", s, DType::F32);
            let y = w.op("scaled", Op::Mul, &[v, s], DType::F32, vec![]);
            let y = w.cast("out", y, out_t);
            finish(w, y, out)
        }
        Op::QuantizeLinear => {
            let q = w.g.ty(out).dtype;
            range(q)?;
            let (s, zp) = w.parameters(n, &xs)?;
            let y = quantize(&mut w, x, s, zp, q);
            finish(w, y, out)
        }
        Op::DynamicQuantizeLinear => {
            if w.g.ty(x).dtype != DType::F32 || n.outputs.len() != 3 {
                return None;
            }
            let keep0 = vec![("keepdims", Attr::Int(0))];
            let lo = w.op("min", Op::ReduceMin, &[x], DType::F32, keep0.clone());
            let hi = w.op("max", Op::ReduceMax, &[x], DType::F32, keep0);
            let zero = w.scalar("zero", 0.0);
            let lo = w.op("min0", Op::Min, &[lo, zero], DType::F32, vec![]);
            let hi = w.op("max0", Op::Max, &[hi, zero], DType::F32, vec![]);
            let span = w.op("span", Op::Sub, &[hi, lo], DType::F32, vec![]);
            // all zeros: a span of 1 (the definition's "max == min ? 1")
            let empty = w.op("empty", Op::Equal, &[span, zero], DType::Bool, vec![]);
            let one = w.scalar("one", 1.0);
            let span = w.op("span1", Op::Where, &[empty, one, span], DType::F32, vec![]);
            let levels = w.scalar("levels", 255.0);
            let scale = w.op("scale", Op::Div, &[span, levels], DType::F32, vec![]);
            let ls = w.op("lo_scaled", Op::Div, &[lo, scale], DType::F32, vec![]);
            let zp = w.op("zero_point_f32", Op::Sub, &[zero, ls], DType::F32, vec![]);
            let (q0, q1) = (w.scalar("zmin", 0.0), w.scalar("zmax", 255.0));
            let zp = w.op("zero_point_clipped", Op::Clip, &[zp, q0, q1], DType::F32, vec![]);
            let zp = w.op("zero_point_rounded", Op::Round, &[zp], DType::F32, vec![]);
            let zq = w.cast("zero_point", zp, DType::U8);
            let y = quantize(&mut w, x, scale, Some(zp), DType::U8);
            let outs: Vec<Option<ValueId>> = n.outputs.clone();
            let mut nodes = std::mem::take(&mut w.nodes);
            for (k, v) in [y, scale, zq].into_iter().enumerate() {
                if let Some(o) = outs.get(k).copied().flatten() {
                    nodes.push(node(&n.name, &format!("out{k}"), Op::Identity, &[v], o, vec![]));
                }
            }
            Some(nodes)
        }
        _ => None,
    }
}

/// The rewritten nodes with `y` renamed into the node's own output `out`.
fn finish(mut w: Writer, y: ValueId, out: ValueId) -> Option<Vec<Node>> {
    w.nodes.push(node(&w.base, "result", Op::Identity, &[y], out, vec![]));
    Some(w.nodes)
}

/// Rewrites every quantization node it can; returns how many (infer and run `noop`/`dce`
/// afterwards: the new values are undeclared, the Identity nodes bypassable).
pub fn decompose(g: &mut Graph) -> usize {
    let mut count = 0;
    let mut cx = Context { readers: Default::default(), carried: Default::default() };
    for n in &g.nodes {
        for &v in n.inputs.iter().flatten() {
            cx.readers.entry(v).or_default().push(n.op);
        }
    }
    let old = std::mem::take(&mut g.nodes);
    let mut nodes = Vec::with_capacity(old.len());
    for n in old {
        if !matches!(n.op, Op::QuantizeLinear | Op::DequantizeLinear | Op::DynamicQuantizeLinear) {
            nodes.push(n);
            continue;
        }
        match rewrite(g, &n, &mut cx) {
            Some(new) => {
                count += 1;
                nodes.extend(new);
            }
            None => nodes.push(n),
        }
    }
    g.nodes = nodes;
    count
}
