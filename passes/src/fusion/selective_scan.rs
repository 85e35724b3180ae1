//! E-graph rules that recognise the selective scan's unfused ONNX form and add one com.xforge
//! `SelectiveScan` as an alternative (so it compiles to the one scan kernel):
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
//! Three rules, each an equality: `selective-scan` makes y a SelectiveScan (and the Scan's final
//! state its last state); `selective-scan-skip` makes y + u·D a SelectiveScan with D, and
//! `selective-scan-gate` makes a scan's output times Swish(z) (the SiLU rule's form of
//! z·sigmoid(z)) one with z. Broadcast operands may be Unsqueezes or the weights constant folding
//! makes of them (a rule then makes the (d, n) or (d,) weight the op takes); products and sums in
//! either operand order; a transpose of a unit axis as the Reshape canonicalization makes of it.
//! Every structural fact the rewrite relies on is checked (zero initial state, the Scan body's
//! exact recurrence, axes, directions, shapes, one float storage type for the data); anything else
//! adds nothing. Extraction then prefers the scan: the unfused form moves (b, d, l, n) tensors.
use super::analysis::{FusionAnalysis, FusionGraph};
use super::language::{ENode, Head};
use super::rules::rule;
use egg::{Id, Rewrite, Subst};
use xforge_ir::{Attr, Attrs, DType, Graph, Node, Op, Tensor, ValueId};

pub fn selective_scan_rules() -> Vec<Rewrite<ENode, FusionAnalysis>> {
    vec![
        rule("selective-scan", "(ReduceSum ?m ?axes)", scan),
        rule("selective-scan-attr-axes", "(ReduceSum ?m)", scan),
        rule("selective-scan-skip", "(Add ?y ?t)", |eg, s, _| skip(eg, var(s, "?y"), var(s, "?t"))),
        rule("selective-scan-skip-r", "(Add ?t ?y)", |eg, s, _| skip(eg, var(s, "?y"), var(s, "?t"))),
        rule("selective-scan-gate", "(Mul ?y ?g)", |eg, s, _| gate(eg, var(s, "?y"), var(s, "?g"))),
        rule("selective-scan-gate-r", "(Mul ?g ?y)", |eg, s, _| gate(eg, var(s, "?y"), var(s, "?g"))),
    ]
}

fn var(s: &Subst, name: &str) -> Id {
    s[name.parse().expect("a pattern variable")]
}

/// An operand: an e-class of the right shape, or a source weight to reshape (to f32) into one.
enum Operand {
    Class(Id),
    Weight { w: u32, shape: Vec<usize>, role: &'static str },
}

/// The op e-nodes of `op` in class `c`, with their attributes.
fn ops<'a>(eg: &'a FusionGraph, c: Id, op: Op) -> impl Iterator<Item = (&'a ENode, &'a Attrs)> + 'a {
    eg[c].nodes.iter().filter_map(move |n| match n.head {
        Head::Op { op: o, attrs } if o == op => Some((n, &eg.analysis.table.attrs[attrs as usize])),
        _ => None,
    })
}

/// A float value's static shape (f32, or f16/bf16 where `--precision` stored the model so).
fn shape(eg: &FusionGraph, c: Id) -> Option<Vec<usize>> {
    let ty = eg[c].data.ty();
    ty.static_shape().filter(|_| matches!(ty.dtype, DType::F32 | DType::F16 | DType::BF16))
}

fn dtype(eg: &FusionGraph, c: Id) -> DType {
    eg[c].data.ty().dtype
}

/// The source weight in class `c`.
fn weight(eg: &FusionGraph, c: Id) -> Option<(u32, &Tensor)> {
    eg[c].nodes.iter().find_map(|n| match n.head {
        Head::Weight(w) => Some((w, &eg.analysis.weights[&w])),
        _ => None,
    })
}

/// Axes given as attribute or as a constant second input.
fn axes(eg: &FusionGraph, n: &ENode, a: &Attrs) -> Option<Vec<i64>> {
    match a.get("axes") {
        Some(Attr::Ints(x)) => Some(x.clone()),
        _ => n.args.get(1).and_then(|&c| eg[c].data.fact().konst.as_ref()).map(|t| t.to_i64()),
    }
}

/// A node of `op` with two inputs in class `c`, in either order, such that `first` accepts one
/// of them: (what `first` returned, the other input).
fn pair<T>(eg: &FusionGraph, c: Id, op: Op, first: impl Fn(Id) -> Option<T>) -> Option<(T, Id)> {
    ops(eg, c, op).find_map(|(n, _)| {
        let [x, y] = n.args[..] else { return None };
        first(x).map(|t| (t, y)).or_else(|| first(y).map(|t| (t, x)))
    })
}

fn same(eg: &FusionGraph, a: Id, b: Id) -> bool {
    eg.find(a) == eg.find(b)
}

/// `Unsqueeze(x, axes)` in class `c` (axes as given for a result of rank `rank`): x.
fn unsqueezed(eg: &FusionGraph, c: Id, want: &[i64], rank: i64) -> Option<Id> {
    ops(eg, c, Op::Unsqueeze).find_map(|(n, a)| {
        let mut given: Vec<i64> = axes(eg, n, a)?.iter().map(|&x| if x < 0 { x + rank } else { x }).collect();
        given.sort_unstable();
        (given == want).then_some(n.args[0])
    })
}

/// A value of shape `want` that broadcasts an `inner`-shaped operand (Unsqueeze by `axes`, or
/// a weight of that shape).
fn broadcast(
    eg: &FusionGraph,
    c: Id,
    want: &[usize],
    ax: &[i64],
    inner: &[usize],
    role: &'static str,
) -> Option<Operand> {
    if shape(eg, c)? != want {
        return None;
    }
    if let Some(x) = unsqueezed(eg, c, ax, want.len() as i64) {
        return (shape(eg, x)? == inner).then_some(Operand::Class(x));
    }
    let (w, _) = weight(eg, c)?;
    Some(Operand::Weight { w, shape: inner.to_vec(), role })
}

/// Transpose(x, [0, 2, 1]) in class `c`: x. Also the Reshape canonicalization makes of it when
/// one of the swapped axes has size 1 (the swap then only relabels them).
fn swapped(eg: &FusionGraph, c: Id) -> Option<Id> {
    let to = shape(eg, c)?;
    eg[c].nodes.iter().find_map(|n| {
        let Head::Op { op, attrs } = n.head else { return None };
        let x = *n.args.first()?;
        match op {
            Op::Transpose => {
                matches!(eg.analysis.table.attrs[attrs as usize].get("perm"), Some(Attr::Ints(p)) if p == &[0, 2, 1])
                    .then_some(x)
            }
            Op::Reshape => {
                let [b, p, q] = shape(eg, x)?[..] else { return None };
                (to == [b, q, p] && (p == 1 || q == 1)).then_some(x)
            }
            _ => None,
        }
    })
}

/// B or C (b, n, l) broadcast as `c` = B.transpose(1, 2)[:, None] (b, 1, l, n): B. Also one
/// Reshape to that shape where n or l is 1 (canonicalization merges the views then).
fn projection(eg: &FusionGraph, c: Id) -> Option<Id> {
    if let Some(x) = unsqueezed(eg, c, &[1], 4).and_then(|t| swapped(eg, t)) {
        return Some(x);
    }
    let [b, 1, l, n] = shape(eg, c)?[..] else { return None };
    ops(eg, c, Op::Reshape).find_map(|(r, _)| {
        let x = r.args[0];
        (shape(eg, x)? == [b, n, l] && (n == 1 || l == 1)).then_some(x)
    })
}

fn ints(a: &Attrs, k: &str) -> Option<Vec<i64>> {
    match a.get(k) {
        Some(Attr::Ints(v)) => Some(v.clone()),
        None => None,
        _ => Some(vec![i64::MIN]),
    }
}

/// The Scan's body is exactly h' = a_t·h + x_t, emitted as both the new state and the scan output.
/// Whether a Scan body is the recurrence h ← a_t·h + x_t that emits h (the selective scan's).
pub fn linear_body(body: &Graph) -> bool {
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

/// The linear Scan whose scan output (projection 1) is in class `hs`: (its e-node's class, its
/// inputs h0, decays, inputs).
fn linear_scan(eg: &FusionGraph, hs: Id) -> Option<(Id, [Id; 3])> {
    eg[hs].nodes.iter().find_map(|p| {
        if p.head != Head::Out(1) {
            return None;
        }
        let sc = p.args[0];
        ops(eg, sc, Op::Scan).find_map(|(n, a)| {
            let [h0, decay, input] = n.args[..] else { return None };
            let Some(Attr::Graph(body)) = a.get("body") else { return None };
            let ok = matches!(a.get("num_scan_inputs"), Some(Attr::Int(2)))
                && matches!(ints(a, "scan_input_axes").as_deref(), Some([2, 2] | [-2, -2]))
                && matches!(ints(a, "scan_output_axes").as_deref(), Some([2] | [-2]))
                && matches!(ints(a, "scan_input_directions").as_deref(), None | Some([0, 0]))
                && matches!(ints(a, "scan_output_directions").as_deref(), None | Some([0]))
                && linear_body(body);
            ok.then_some((sc, [h0, decay, input]))
        })
    })
}

/// The selective scan whose output (projection 0) is in class `y`: its e-node.
fn scan_of(eg: &FusionGraph, y: Id) -> Option<ENode> {
    eg[y].nodes.iter().find_map(|p| {
        if p.head != Head::Out(0) {
            return None;
        }
        ops(eg, p.args[0], Op::SelectiveScan).next().map(|(n, _)| n.clone())
    })
}

/// The operands of a selective scan in input order (u, delta, A, B, C, D, z, delta_bias).
struct Operands {
    args: [Option<Operand>; 8],
    softplus: bool,
}

/// Adds the SelectiveScan e-node (two outputs) and returns its (output, last state) classes.
fn add_scan(eg: &mut FusionGraph, operands: Operands) -> (Id, Id) {
    let absent = eg.add(ENode { head: Head::Absent, args: vec![] });
    let mut args: Vec<Id> = operands
        .args
        .into_iter()
        .map(|o| match o {
            None => absent,
            Some(Operand::Class(c)) => c,
            Some(Operand::Weight { w, shape, role }) => {
                let key = format!("selective_scan/{role}/{w}/{shape:?}");
                let name = format!("selective_scan.{role}");
                let src = eg.analysis.weights[&w].clone();
                let k = eg.analysis.rule_weight(key, &name, || Tensor::from_f64(DType::F32, shape, &src.to_f64()));
                eg.add(ENode { head: Head::Weight(k), args: vec![] })
            }
        })
        .collect();
    while args.last() == Some(&absent) {
        args.pop();
    }
    let attrs: Attrs = [("delta_softplus".to_string(), Attr::Int(operands.softplus as i64))].into_iter().collect();
    let a = eg.analysis.table.intern_outputs(Op::SelectiveScan, attrs, 2);
    let node = eg.add(ENode { head: Head::Op { op: Op::SelectiveScan, attrs: a }, args });
    let out = eg.add(ENode { head: Head::Out(0), args: vec![node] });
    let last = eg.add(ENode { head: Head::Out(1), args: vec![node] });
    (out, last)
}

/// y = ReduceSum(hs · C4, axis 3) of a linear Scan's outputs hs: the selective scan.
fn scan(eg: &mut FusionGraph, s: &Subst, root: Id) -> Option<Id> {
    let m = var(s, "?m");
    // the ReduceSum of this match: over the last axis, not kept
    let reduces = ops(eg, root, Op::ReduceSum).any(|(n, a)| {
        same(eg, n.args[0], m)
            && matches!(a.get("keepdims"), Some(Attr::Int(0)))
            && matches!(axes(eg, n, a).as_deref(), Some([3] | [-1]))
    });
    if !reduces {
        return None;
    }
    let (hs, ct4) = pair(eg, m, Op::Mul, |x| linear_scan(eg, x).map(|_| x))?;
    let (sc, [h0, decay, input]) = linear_scan(eg, hs)?;
    // a zero initial state (b, d, n)
    let h0s = shape(eg, h0)?;
    let [nb, nd, nn] = h0s[..] else { return None };
    if !weight(eg, h0)?.1.to_f64().iter().all(|&x| x == 0.0) {
        return None;
    }
    // a = Exp(dt[..., None] · A4)
    let e = ops(eg, decay, Op::Exp).next()?.0.args[0];
    let (dt, a4) = pair(eg, e, Op::Mul, |x| unsqueezed(eg, x, &[3], 4))?;
    let nl = *shape(eg, dt)?.get(2)?;
    let a = broadcast(eg, a4, &[1, nd, 1, nn], &[0, 2], &[nd, nn], "A")?;
    // x = (dt · u)[..., None] · B.transpose(1, 2)[:, None]
    let (du, bt4) = pair(eg, input, Op::Mul, |x| unsqueezed(eg, x, &[3], 4))?;
    let b = projection(eg, bt4)?;
    let (_, u) = pair(eg, du, Op::Mul, |x| same(eg, x, dt).then_some(()))?;
    // dt = [Softplus](delta [+ bias])
    let sp = ops(eg, dt, Op::Softplus).next().map(|(n, _)| n.args[0]);
    let pre = sp.unwrap_or(dt);
    let (bias, delta) = match pair(eg, pre, Op::Add, |x| broadcast(eg, x, &[nd, 1], &[1], &[nd], "delta_bias")) {
        Some((bias, delta)) => (Some(bias), delta),
        None => (None, pre),
    };
    let c = projection(eg, ct4)?;
    // shapes: u, delta (b, d, l); B, C (b, n, l); one storage type for the data
    let (bdl, bnl) = (vec![nb, nd, nl], vec![nb, nn, nl]);
    let dt_u = dtype(eg, u);
    let ok = [delta, b, c].iter().all(|&x| dtype(eg, x) == dt_u)
        && shape(eg, u)? == bdl
        && shape(eg, delta)? == bdl
        && shape(eg, b)? == bnl
        && shape(eg, c)? == bnl;
    if !ok {
        return None;
    }
    let cl = |x: Id| Some(Operand::Class(x));
    let args = [cl(u), cl(delta), Some(a), cl(b), cl(c), None, None, bias];
    let (out, last) = add_scan(eg, Operands { args, softplus: sp.is_some() });
    // the Scan's final state is the scan's last state
    if let Some(final_state) = eg.lookup(ENode { head: Head::Out(0), args: vec![sc] }) {
        eg.union(final_state, last);
    }
    Some(out)
}

/// The operands of selective-scan e-node `n` (whose classes it reads).
fn operands_of(eg: &FusionGraph, n: &ENode) -> Operands {
    let is_absent = |c: Id| eg[c].nodes.iter().any(|m| m.head == Head::Absent);
    let mut args: [Option<Operand>; 8] = Default::default();
    for (k, &c) in n.args.iter().enumerate().take(8) {
        if !is_absent(c) {
            args[k] = Some(Operand::Class(c));
        }
    }
    let Head::Op { attrs, .. } = n.head else { unreachable!("an op e-node") };
    let softplus =
        matches!(eg.analysis.table.attrs[attrs as usize].get("delta_softplus"), Some(Attr::Int(v)) if *v != 0);
    Operands { args, softplus }
}

/// A scan without D or z, and its operands.
fn bare_scan(eg: &FusionGraph, y: Id) -> Option<(ENode, Operands)> {
    let n = scan_of(eg, y)?;
    let operands = operands_of(eg, &n);
    (operands.args[5].is_none() && operands.args[6].is_none()).then_some((n, operands))
}

/// The last-state class of selective-scan e-node `n`.
fn last_of(eg: &FusionGraph, n: &ENode) -> Option<Id> {
    let node = eg.lookup(n.clone())?;
    eg.lookup(ENode { head: Head::Out(1), args: vec![node] })
}

/// Adds a scan with operands `ops` whose last state equals `n`'s.
fn extended(eg: &mut FusionGraph, n: &ENode, ops: Operands) -> Id {
    let before = last_of(eg, n);
    let (out, last) = add_scan(eg, ops);
    if let Some(l) = before {
        eg.union(l, last);
    }
    out
}

/// y + u·D[:, None] of a scan y without D or z: the scan with D.
fn skip(eg: &mut FusionGraph, y: Id, t: Id) -> Option<Id> {
    let (n, mut operands) = bare_scan(eg, y)?;
    let u = n.args[0];
    let nd = *shape(eg, u)?.get(1)?;
    let (_, col) = pair(eg, t, Op::Mul, |x| same(eg, x, u).then_some(()))?;
    operands.args[5] = Some(broadcast(eg, col, &[nd, 1], &[1], &[nd], "D")?);
    Some(extended(eg, &n, operands))
}

/// y · Swish(z) of a scan y without z (with or without D): the scan with z.
fn gate(eg: &mut FusionGraph, y: Id, g: Id) -> Option<Id> {
    let n = scan_of(eg, y)?;
    let mut operands = operands_of(eg, &n);
    if operands.args[6].is_some() {
        return None;
    }
    let u = n.args[0];
    let z = ops(eg, g, Op::Swish).find(|(m, a)| m.args.len() == 1 && a.is_empty()).map(|(m, _)| m.args[0])?;
    if shape(eg, z)? != shape(eg, u)? || dtype(eg, z) != dtype(eg, u) {
        return None;
    }
    operands.args[6] = Some(Operand::Class(z));
    Some(extended(eg, &n, operands))
}
