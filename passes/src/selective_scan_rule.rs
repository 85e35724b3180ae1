//! Recognises the selective scan's unfused ONNX form and puts one com.xforge `SelectiveScan` in
//! its place (so it compiles to the one scan kernel):
//!
//! ```text
//! dt  = [Softplus]([delta + delta_bias[:, None]])                        (b, d, l)
//! a   = Exp(dt[..., None] · A[None, :, None, :])                         (b, d, l, n)
//! x   = (dt · u)[..., None] · B.transpose(1, 2)[:, None]                 (b, d, l, n)
//! hs  = Scan(h0 = 0, a, x; axes 2; body h ← a_t·h + x_t, emits h)        (b, d, l, n)
//! y   = ReduceSum(hs · C.transpose(1, 2)[:, None], axis 3)               (b, d, l)
//! out = [(y + u · D[:, None])] [· z·sigmoid(z)]
//! ```
//!
//! Broadcast operands may be Unsqueezes or the weights constant folding makes of them; the
//! products and sums in either operand order; z·sigmoid(z) as Swish; a transpose of a unit axis
//! as the Reshape canonicalization makes of it. Every structural fact the
//! rewrite relies on is checked (zero initial state, the body's exact recurrence, axes,
//! directions, shapes, one float storage type for the data), and D and z are absorbed only where their intermediate value has no
//! other reader; anything else leaves the graph as it is. A graph pass, not an egg rule: the
//! e-graph language has no term for a Scan's body.
use crate::rewrite::{const_axes, consumers, replace_uses};
use xforge_ir::{Attr, DType, Graph, Node, Op, Tensor, ValueId, ValueType};

/// Returns the number of selective scans formed.
pub fn fuse_selective_scans(g: &mut Graph) -> usize {
    let mut formed = 0;
    while let Some(m) = find(g) {
        apply(g, m);
        // the replaced chain (its Scan included) reaches no output any more: dropping it keeps
        // the next search from matching it again
        crate::dce::dce(g);
        formed += 1;
    }
    formed
}

/// Where an operand comes from: a value of the right shape, or a weight to reshape into one.
enum Operand {
    Value(ValueId),
    Weight(Tensor),
}

struct Match {
    /// the node the new one goes before (the last one it replaces)
    at: usize,
    scan: String,
    u: ValueId,
    delta: ValueId,
    a: Operand,
    b: ValueId,
    c: ValueId,
    d: Option<Operand>,
    z: Option<ValueId>,
    bias: Option<Operand>,
    softplus: bool,
    out: ValueId,
    last: Option<ValueId>,
    dims: [usize; 4],
    dtype: DType,
}

struct View<'a> {
    g: &'a Graph,
    producer: Vec<Option<usize>>,
    uses: Vec<Vec<(usize, usize)>>,
}

impl View<'_> {
    fn node(&self, v: ValueId) -> Option<&Node> {
        self.producer[v.index()].map(|i| &self.g.nodes[i])
    }

    /// A float value's static shape (f32, or f16/bf16 where `--precision` stored the model so).
    fn shape(&self, v: ValueId) -> Option<Vec<usize>> {
        self.g.ty(v).static_shape().filter(|_| matches!(self.g.ty(v).dtype, DType::F32 | DType::F16 | DType::BF16))
    }

    /// The value's only reader (not a graph output either).
    fn only_reader(&self, v: ValueId) -> Option<usize> {
        match self.uses[v.index()].as_slice() {
            [(ni, _)] if !self.g.outputs.contains(&v) => Some(*ni),
            _ => None,
        }
    }

    /// A node of `op` producing `v` with two inputs, in either order, such that `first` accepts
    /// one of them: returns (what `first` returned, the other input).
    fn pair<T>(&self, v: ValueId, op: Op, first: impl Fn(ValueId) -> Option<T>) -> Option<(T, ValueId)> {
        let n = self.node(v).filter(|n| n.op == op)?;
        let [Some(x), Some(y)] = n.inputs[..] else { return None };
        first(x).map(|t| (t, y)).or_else(|| first(y).map(|t| (t, x)))
    }

    /// `Unsqueeze(x, axes)` producing `v` (axes as given for a result of rank `rank`): x.
    fn unsqueezed(&self, v: ValueId, axes: &[i64], rank: i64) -> Option<ValueId> {
        let n = self.node(v).filter(|n| n.op == Op::Unsqueeze)?;
        let mut given: Vec<i64> = const_axes(self.g, n)?.iter().map(|&a| if a < 0 { a + rank } else { a }).collect();
        given.sort_unstable();
        (given == axes).then_some(n.inputs[0]?)
    }

    /// A (d, n)-shaped A broadcast to (1, d, 1, n): Unsqueeze(A, [0, 2]) or such a weight.
    fn broadcast(&self, v: ValueId, want: &[usize], axes: &[i64], inner: &[usize]) -> Option<Operand> {
        if self.shape(v)? != want {
            return None;
        }
        if let Some(x) = self.unsqueezed(v, axes, want.len() as i64) {
            return (self.shape(x)? == inner).then_some(Operand::Value(x));
        }
        let w = self.g.weights.get(&v)?;
        Some(Operand::Weight(Tensor::from_f64(DType::F32, inner.to_vec(), &w.to_f64())))
    }

    /// Transpose(x, [0, 2, 1]) producing `v`: x. Also the Reshape canonicalization makes of it
    /// when one of the swapped axes has size 1 (the swap then only relabels them).
    fn swapped(&self, v: ValueId) -> Option<ValueId> {
        let n = self.node(v)?;
        let x = n.inputs.first().copied().flatten()?;
        match n.op {
            Op::Transpose => matches!(n.attr("perm"), Some(Attr::Ints(p)) if p == &[0, 2, 1]).then_some(x),
            Op::Reshape => {
                let (from, to) = (self.shape(x)?, self.shape(v)?);
                let [b, p, q] = from[..] else { return None };
                (to == [b, q, p] && (p == 1 || q == 1)).then_some(x)
            }
            _ => None,
        }
    }

    fn ints(n: &Node, k: &str) -> Option<Vec<i64>> {
        match n.attr(k) {
            Some(Attr::Ints(v)) => Some(v.clone()),
            None => None,
            _ => Some(vec![i64::MIN]),
        }
    }
}

/// The Scan's body is exactly h' = a_t·h + x_t, emitted as both the new state and the scan output.
fn linear_body(body: &Graph) -> bool {
    let [h, a, x] = body.inputs[..] else { return false };
    let [state, emitted] = body.outputs[..] else { return false };
    let by_output = |v: ValueId| body.nodes.iter().find(|n| n.outputs.first() == Some(&Some(v)));
    let inputs = |n: &Node| -> Option<(ValueId, ValueId)> {
        let [Some(p), Some(q)] = n.inputs[..] else { return None };
        Some((p, q))
    };
    let Some(add) = by_output(state).filter(|n| n.op == Op::Add) else { return false };
    let Some((p, q)) = inputs(add) else { return false };
    let product = |v: ValueId| {
        by_output(v)
            .filter(|n| n.op == Op::Mul)
            .and_then(inputs)
            .is_some_and(|(m, k)| (m, k) == (a, h) || (m, k) == (h, a))
    };
    let recurrence = (product(p) && q == x) || (product(q) && p == x);
    let emits = emitted == state
        || by_output(emitted).is_some_and(|n| n.op == Op::Identity && n.inputs.first() == Some(&Some(state)));
    recurrence && emits && body.nodes.len() <= 3 && body.weights.is_empty()
}

fn find(g: &Graph) -> Option<Match> {
    // most graphs have no Scan: no maps to build for them
    if !g.nodes.iter().any(|n| n.op == Op::Scan) {
        return None;
    }
    let v = View { g, producer: g.producers(), uses: consumers(g) };
    g.nodes.iter().find_map(|n| matched(&v, n))
}

fn matched(v: &View, scan: &Node) -> Option<Match> {
    let g = v.g;
    if scan.op != Op::Scan || scan.inputs.len() != 3 || scan.outputs.len() != 2 {
        return None;
    }
    let Some(Attr::Graph(body)) = scan.attr("body") else { return None };
    let ok_attrs = matches!(scan.attr("num_scan_inputs"), Some(Attr::Int(2)))
        && matches!(View::ints(scan, "scan_input_axes").as_deref(), Some([2, 2] | [-2, -2]))
        && matches!(View::ints(scan, "scan_output_axes").as_deref(), Some([2] | [-2]))
        && matches!(View::ints(scan, "scan_input_directions").as_deref(), None | Some([0, 0]))
        && matches!(View::ints(scan, "scan_output_directions").as_deref(), None | Some([0]));
    if !ok_attrs || !linear_body(body) {
        return None;
    }
    let [Some(h0), Some(decay), Some(input)] = scan.inputs[..] else { return None };
    let (last, Some(hs)) = (scan.outputs[0], scan.outputs[1]) else { return None };
    // a zero initial state (b, d, n)
    let h0s = v.shape(h0)?;
    let [nb, nd, nn] = h0s[..] else { return None };
    if !v.g.weights.get(&h0)?.to_f64().iter().all(|&x| x == 0.0) {
        return None;
    }
    // a = Exp(dt[..., None] · A4)
    let e = v.node(decay).filter(|n| n.op == Op::Exp)?;
    let (dt, a4) = v.pair(e.inputs[0]?, Op::Mul, |x| v.unsqueezed(x, &[3], 4))?;
    let nl = *v.shape(dt)?.get(2)?;
    let a = v.broadcast(a4, &[1, nd, 1, nn], &[0, 2], &[nd, nn])?;
    // x = (dt · u)[..., None] · B.transpose(1, 2)[:, None]
    let (du, bt4) = v.pair(input, Op::Mul, |x| v.unsqueezed(x, &[3], 4))?;
    let b = v.swapped(v.unsqueezed(bt4, &[1], 4)?)?;
    let (_, u) = v.pair(du, Op::Mul, |x| (x == dt).then_some(()))?;
    // dt = [Softplus](delta [+ bias])
    let sp = v.node(dt).filter(|n| n.op == Op::Softplus);
    let pre = match sp {
        Some(n) => n.inputs[0]?,
        None => dt,
    };
    let (bias, delta) = match v.pair(pre, Op::Add, |x| v.broadcast(x, &[nd, 1], &[1], &[nd])) {
        Some((bias, delta)) => (Some(bias), delta),
        None => (None, pre),
    };
    // y = ReduceSum(hs · C.transpose(1, 2)[:, None], axis 3, keepdims 0)
    let mul = &g.nodes[v.only_reader(hs)?];
    let hc = mul.outputs[0]?;
    let (_, ct4) = v.pair(hc, Op::Mul, |x| (x == hs).then_some(()))?;
    let c = v.swapped(v.unsqueezed(ct4, &[1], 4)?)?;
    let ri = v.only_reader(hc)?;
    let red = &g.nodes[ri];
    let axes = const_axes(g, red)?;
    let keep = matches!(red.attr("keepdims"), Some(Attr::Int(0)));
    if red.op != Op::ReduceSum || !(axes == [3] || axes == [-1]) || !keep {
        return None;
    }
    let (mut out, mut at) = (red.outputs[0]?, ri);
    // out = y + u · D[:, None]
    let mut d = None;
    if let Some(ni) = v.only_reader(out) {
        let dcol = |x: ValueId| v.pair(x, Op::Mul, |y| (y == u).then_some(())).map(|(_, col)| col);
        let next = g.nodes[ni].outputs[0];
        let term = next.and_then(|n| v.pair(n, Op::Add, |x| (x == out).then_some(()))).map(|(_, t)| t);
        if let Some(dv) = term.and_then(dcol).and_then(|col| v.broadcast(col, &[nd, 1], &[1], &[nd])) {
            d = Some(dv);
            (out, at) = (next?, ni);
        }
    }
    // out · z·sigmoid(z) (or Swish(z))
    let mut z = None;
    if let Some(ni) = v.only_reader(out) {
        let next = g.nodes[ni].outputs[0];
        let gate = next.and_then(|n| v.pair(n, Op::Mul, |x| (x == out).then_some(()))).map(|(_, s)| s);
        // z·sigmoid(z) in either order, or Swish(z)
        let silu_of = |s: ValueId| -> Option<ValueId> {
            let n = v.node(s)?;
            if n.op == Op::Swish && n.inputs.len() == 1 && n.attrs.is_empty() {
                return n.inputs[0];
            }
            if n.op != Op::Mul {
                return None;
            }
            let [Some(p), Some(q)] = n.inputs[..] else { return None };
            let sigmoid_of = |x: ValueId| v.node(x).filter(|m| m.op == Op::Sigmoid).and_then(|m| m.inputs[0]);
            if sigmoid_of(q) == Some(p) {
                Some(p)
            } else if sigmoid_of(p) == Some(q) {
                Some(q)
            } else {
                None
            }
        };
        if let Some(zv) = gate.and_then(silu_of) {
            z = Some(zv);
            (out, at) = (next?, ni);
        }
    }
    // shapes: u, delta, z (b, d, l); B, C (b, n, l)
    let bdl = vec![nb, nd, nl];
    let bnl = vec![nb, nn, nl];
    // one storage type for the data operands
    let dt_u = g.ty(u).dtype;
    let same_type = [delta, b, c].into_iter().chain(z).all(|x| g.ty(x).dtype == dt_u);
    let shapes_ok = same_type
        && v.shape(u)? == bdl
        && v.shape(delta)? == bdl
        && v.shape(b)? == bnl
        && v.shape(c)? == bnl
        && z.is_none_or(|zv| v.shape(zv) == Some(bdl.clone()));
    if !shapes_ok || (last.is_some() && v.shape(last?).is_some_and(|s| s != h0s)) {
        return None;
    }
    let last = last.filter(|l| !v.uses[l.index()].is_empty() || g.outputs.contains(l));
    Some(Match {
        at,
        scan: scan.name.clone(),
        u,
        delta,
        a,
        b,
        c,
        d,
        z,
        bias,
        softplus: sp.is_some(),
        out,
        last,
        dims: [nb, nd, nl, nn],
        dtype: dt_u,
    })
}

fn apply(g: &mut Graph, m: Match) {
    let [nb, nd, nl, nn] = m.dims;
    let value = |g: &mut Graph, o: Operand, name: &str| match o {
        Operand::Value(v) => v,
        Operand::Weight(t) => {
            let id = g.add_value(format!("{}.{name}", m.scan), ValueType::known(DType::F32, t.shape()));
            g.weights.insert(id, t);
            id
        }
    };
    let a = value(g, m.a, "A");
    let d = m.d.map(|o| value(g, o, "D"));
    let bias = m.bias.map(|o| value(g, o, "delta_bias"));
    let out = g.add_value(format!("{}.out", m.scan), ValueType::known(m.dtype, &[nb, nd, nl]));
    let mut outputs = vec![Some(out)];
    let last = m.last.map(|l| {
        let id = g.add_value(format!("{}.last_state", m.scan), ValueType::known(DType::F32, &[nb, nd, nn]));
        outputs.push(Some(id));
        (l, id)
    });
    let mut inputs = vec![Some(m.u), Some(m.delta), Some(a), Some(m.b), Some(m.c), d, m.z, bias];
    while inputs.last() == Some(&None) {
        inputs.pop();
    }
    let mut attrs: xforge_ir::Attrs = Default::default();
    attrs.insert("delta_softplus".into(), Attr::Int(m.softplus as i64));
    let node = Node { name: format!("{}.selective_scan", m.scan), op: Op::SelectiveScan, inputs, outputs, attrs };
    // before the last node it replaces: every input is computed by then
    g.nodes.insert(m.at, node);
    replace_uses(g, m.out, out);
    if let Some((old, new)) = last {
        replace_uses(g, old, new);
    }
}
