//! Layout rules: every 4-D Conv gets a channels-last alternative `Transpose∘ConvNhwc∘Transpose`;
//! transposes sink through elementwise ops and cancel in pairs, so inside a convolution stack
//! only the transposes at its ends remain. The cost model decides whether the stack switches.
use super::analysis::FusionGraph;
use super::language::Head;
use super::rules::{add_op, rule, same_class, weight_in};
use egg::{Id, Rewrite, Subst};
use xforge_ir::{Attr, Attrs, Op};

use super::analysis::FusionAnalysis;
use super::language::ENode;

const TO_NHWC: [i64; 4] = [0, 2, 3, 1];
const TO_NCHW: [i64; 4] = [0, 3, 1, 2];

fn var(s: &str) -> egg::Var {
    s.parse().expect("var")
}

/// The permutation of a Transpose e-node in class `id` that reads class `of`.
fn perm_in(eg: &FusionGraph, id: Id, of: Id) -> Option<Vec<i64>> {
    let rank = eg[of].data.ty().shape.as_ref()?.len();
    eg[id].nodes.iter().find_map(|n| match n.head {
        Head::Op { op: Op::Transpose, attrs } if same_class(eg, n.args[0], of) => {
            match eg.analysis.table.attrs[attrs as usize].get("perm") {
                Some(Attr::Ints(p)) => Some(p.iter().map(|&x| if x < 0 { x + rank as i64 } else { x }).collect()),
                None => Some((0..rank as i64).rev().collect()),
                _ => None,
            }
        }
        _ => None,
    })
}

/// Attributes of an `op` e-node of class `id` whose children are `args`.
fn attrs_with_args(eg: &FusionGraph, id: Id, op: Op, args: &[Id]) -> Option<Attrs> {
    eg[id].nodes.iter().find_map(|n| match n.head {
        Head::Op { op: o, attrs }
            if o == op
                && n.args.len() == args.len()
                && n.args.iter().zip(args).all(|(&a, &b)| same_class(eg, a, b)) =>
        {
            Some(eg.analysis.table.attrs[attrs as usize].clone())
        }
        _ => None,
    })
}

fn transpose(eg: &mut FusionGraph, x: Id, perm: &[i64]) -> Id {
    add_op(eg, Op::Transpose, vec![("perm", Attr::Ints(perm.to_vec()))], &[x])
}

fn conv_nhwc(eg: &mut FusionGraph, s: &Subst, root: Id, with_bias: bool) -> Option<Id> {
    let (x, w) = (s[var("?x")], s[var("?w")]);
    if eg[x].data.ty().shape.as_ref().map(|d| d.len()) != Some(4) {
        return None;
    }
    let mut args = vec![x, w];
    if with_bias {
        args.push(s[var("?b")]);
    }
    let attrs = attrs_with_args(eg, root, Op::Conv, &args)?;
    let t = transpose(eg, x, &TO_NHWC);
    let mut nargs = vec![t, w];
    nargs.extend(args.get(2));
    let a = eg.analysis.table.intern(Op::ConvNhwc, attrs);
    let c = eg.add(ENode { head: Head::Op { op: Op::ConvNhwc, attrs: a }, args: nargs });
    Some(transpose(eg, c, &TO_NCHW))
}

/// `op(Transpose(y, p))` → `Transpose(op(y), p)` for an elementwise `op` (its attributes kept).
fn sink_unary(eg: &mut FusionGraph, s: &Subst, root: Id, op: Op) -> Option<Id> {
    let y = s[var("?y")];
    let t = eg[root].nodes.iter().find(|n| matches!(n.head, Head::Op { op: o, .. } if o == op))?.args[0];
    let perm = perm_in(eg, t, y)?;
    let attrs = attrs_with_args(eg, root, op, &[t])?;
    let a = eg.analysis.table.intern(op, attrs);
    let inner = eg.add(ENode { head: Head::Op { op, attrs: a }, args: vec![y] });
    Some(transpose(eg, inner, &perm))
}

/// `Clip(Transpose(y, p), lo, hi)` → `Transpose(Clip(y, lo, hi), p)` (bounds are scalars).
fn sink_clip(eg: &mut FusionGraph, s: &Subst, root: Id) -> Option<Id> {
    let (y, lo, hi) = (s[var("?y")], s[var("?lo")], s[var("?hi")]);
    let n =
        eg[root].nodes.iter().find(|n| matches!(n.head, Head::Op { op: Op::Clip, .. }) && n.args.len() == 3)?.clone();
    let t = n.args[0];
    let perm = perm_in(eg, t, y)?;
    let attrs = attrs_with_args(eg, root, Op::Clip, &[t, lo, hi])?;
    let a = eg.analysis.table.intern(Op::Clip, attrs);
    let inner = eg.add(ENode { head: Head::Op { op: Op::Clip, attrs: a }, args: vec![y, lo, hi] });
    Some(transpose(eg, inner, &perm))
}

/// `op(Transpose(a, p), Transpose(b, p))` → `Transpose(op(a, b), p)` for same-shape operands.
fn sink_binary(eg: &mut FusionGraph, s: &Subst, root: Id, op: Op) -> Option<Id> {
    let (a, b) = (s[var("?a")], s[var("?b")]);
    if eg[a].data.ty() != eg[b].data.ty() {
        return None;
    }
    let n = eg[root].nodes.iter().find(|n| matches!(n.head, Head::Op { op: o, .. } if o == op))?.clone();
    let (pa, pb) = (perm_in(eg, n.args[0], a)?, perm_in(eg, n.args[1], b)?);
    (pa == pb).then_some(())?;
    let inner = add_op(eg, op, vec![], &[a, b]);
    Some(transpose(eg, inner, &pa))
}

/// `op(Transpose(a, p), w)` → `Transpose(op(a, w'), p)` for a weight `w` broadcast against the
/// transposed value (a per-channel scale or bias), `w'` its shape carried back through `p`; only
/// where that keeps the weight's data as it is (its non-1 axes stay in order), and either
/// operand order.
fn sink_weight(eg: &mut FusionGraph, s: &Subst, root: Id, op: Op, weight_first: bool) -> Option<Id> {
    let (a, w) = (s[var("?a")], s[var("?w")]);
    let n = eg[root]
        .nodes
        .iter()
        .find(|n| matches!(n.head, Head::Op { op: o, .. } if o == op) && n.args.len() == 2)?
        .clone();
    let t = n.args[if weight_first { 1 } else { 0 }];
    let perm = perm_in(eg, t, a)?;
    let (key, tensor) = weight_in(eg, w)?;
    let r = perm.len();
    if tensor.rank() > r {
        return None;
    }
    // the weight's shape in the transposed space, rank-padded: axis i there is axis perm[i] of a
    let mut ws = vec![1usize; r - tensor.rank()];
    ws.extend_from_slice(tensor.shape());
    let mut back = vec![1usize; r];
    for (i, &pi) in perm.iter().enumerate() {
        back[pi as usize] = ws[i];
    }
    let order =
        |dims: Vec<(usize, usize)>| dims.into_iter().filter(|&(_, d)| d != 1).map(|(_, d)| d).collect::<Vec<_>>();
    let mut moved: Vec<(usize, usize)> = perm.iter().enumerate().map(|(i, &pi)| (pi as usize, ws[i])).collect();
    moved.sort();
    if order(ws.iter().copied().enumerate().collect()) != order(moved) {
        return None;
    }
    // reshapes of one weight are keyed by the source weight and the shape, so sinking back and
    // forth (through `transpose_inverse`'s pairs) finds the weights it made before
    let origin = eg
        .analysis
        .rule_weights
        .iter()
        .find(|(_, &v)| v == key)
        .and_then(|(k, _)| k.strip_prefix("sink-weight ")?.split(' ').next()?.parse::<u32>().ok())
        .unwrap_or(key);
    let k2 = if eg.analysis.weights.get(&origin).is_some_and(|t| t.shape() == back.as_slice()) {
        origin
    } else {
        let name = format!(
            "{}.nhwc",
            eg.analysis.rule_weight_names.get(&origin).cloned().unwrap_or_else(|| format!("w{origin}"))
        );
        let shape = back.clone();
        eg.analysis.rule_weight(format!("sink-weight {origin} {back:?}"), &name, || tensor.reshape(shape))
    };
    let w2 = eg.add(ENode { head: Head::Weight(k2), args: vec![] });
    let args = if weight_first { [w2, a] } else { [a, w2] };
    let inner = add_op(eg, op, vec![], &args);
    Some(transpose(eg, inner, &perm))
}

/// `Transpose(Transpose(x, p1), p2)` → `x` when the composition is the identity, else one Transpose.
fn transpose_pair(eg: &mut FusionGraph, s: &Subst, root: Id) -> Option<Id> {
    let x = s[var("?x")];
    let inner = eg[root].nodes.iter().find(|n| matches!(n.head, Head::Op { op: Op::Transpose, .. }))?.args[0];
    let p1 = perm_in(eg, inner, x)?;
    let p2 = perm_in(eg, root, inner)?;
    let composed: Vec<i64> = p2.iter().map(|&k| p1[k as usize]).collect();
    if composed.iter().enumerate().all(|(i, &v)| i as i64 == v) {
        Some(x)
    } else {
        Some(transpose(eg, x, &composed))
    }
}

/// `x` ≡ `Transpose(Transpose(x, p), p⁻¹)`: lets a value that a stack reads in both layouts
/// (a residual input) be matched as a transpose too.
fn transpose_inverse(eg: &mut FusionGraph, s: &Subst, root: Id) -> Option<Id> {
    let x = s[var("?x")];
    let p = perm_in(eg, root, x)?;
    let mut inv = vec![0i64; p.len()];
    for (i, &v) in p.iter().enumerate() {
        inv[v as usize] = i as i64;
    }
    let back = transpose(eg, root, &inv);
    eg.union(back, x);
    None
}

pub fn layout_rules() -> Vec<Rewrite<ENode, FusionAnalysis>> {
    let mut r = vec![
        rule("transpose-inverse", "(Transpose ?x)", transpose_inverse),
        rule("conv-nhwc", "(Conv ?x ?w ?b)", |eg, s, root| conv_nhwc(eg, s, root, true)),
        rule("conv-nhwc-nobias", "(Conv ?x ?w)", |eg, s, root| conv_nhwc(eg, s, root, false)),
        rule("transpose-pair", "(Transpose (Transpose ?x))", transpose_pair),
        rule("sink-add", "(Add (Transpose ?a) (Transpose ?b))", |eg, s, root| sink_binary(eg, s, root, Op::Add)),
        rule("sink-mul", "(Mul (Transpose ?a) (Transpose ?b))", |eg, s, root| sink_binary(eg, s, root, Op::Mul)),
        rule("sink-clip", "(Clip (Transpose ?y) ?lo ?hi)", sink_clip),
        rule("sink-mul-weight", "(Mul (Transpose ?a) ?w)", |eg, s, root| sink_weight(eg, s, root, Op::Mul, false)),
        rule("sink-weight-mul", "(Mul ?w (Transpose ?a))", |eg, s, root| sink_weight(eg, s, root, Op::Mul, true)),
        rule("sink-add-weight", "(Add (Transpose ?a) ?w)", |eg, s, root| sink_weight(eg, s, root, Op::Add, false)),
        rule("sink-weight-add", "(Add ?w (Transpose ?a))", |eg, s, root| sink_weight(eg, s, root, Op::Add, true)),
    ];
    macro_rules! sink {
        ($($op:ident),*) => {
            $(r.push(rule(concat!("sink-", stringify!($op)), concat!("(", stringify!($op), " (Transpose ?y))"), |eg, s, root| sink_unary(eg, s, root, Op::$op)));)*
        };
    }
    sink!(Relu, Sigmoid, HardSigmoid, HardSwish, Swish, LeakyRelu, Tanh, Gelu);
    r
}
