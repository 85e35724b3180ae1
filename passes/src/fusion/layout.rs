//! Layout rules: every 4-D Conv gets a channels-last alternative `Transpose∘ConvNhwc∘Transpose`;
//! transposes sink through elementwise ops (broadcasting ones too), Concat and global pooling,
//! and cancel in pairs, so inside a convolution stack only the transposes at its ends remain.
//! The cost model decides whether the stack switches.
use super::analysis::FusionGraph;
use super::language::Head;
use super::rules::{add_op, rule, rule_any_arity, same_class, weight_in};
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

/// The e-node of a constant i64 vector a rule needs (axes, a shape), made once per `key`.
fn ints_weight(eg: &mut FusionGraph, key: String, name: &str, values: Vec<i64>) -> Id {
    let k = eg.analysis.rule_weight(key, name, || xforge_ir::Tensor::from_i64(vec![values.len()], values));
    eg.add(ENode { head: Head::Weight(k), args: vec![] })
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

/// `op(Transpose(a, p), Transpose(b, p))` → `Transpose(op(a, b), p)` for operands of one rank
/// and dtype (broadcasting permutes with them: a squeeze-excite scale [N,1,1,C] stays one).
fn sink_binary(eg: &mut FusionGraph, s: &Subst, root: Id, op: Op) -> Option<Id> {
    let (a, b) = (s[var("?a")], s[var("?b")]);
    let (ta, tb) = (eg[a].data.ty(), eg[b].data.ty());
    let rank = |t: &xforge_ir::ValueType| t.shape.as_ref().map(|s| s.len());
    if ta.dtype != tb.dtype || rank(ta).is_none() || rank(ta) != rank(tb) {
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

/// The (perm, input) of every Transpose e-node in class `id`.
fn transposes_in(eg: &FusionGraph, id: Id) -> Vec<(Vec<i64>, Id)> {
    eg[id]
        .nodes
        .iter()
        .filter(|n| matches!(n.head, Head::Op { op: Op::Transpose, .. }))
        .filter_map(|n| Some((perm_in(eg, id, n.args[0])?, eg.find(n.args[0]))))
        .collect()
}

/// `Concat(Transpose(a1, p), …, Transpose(an, p), axis=k)` → `Transpose(Concat(a1, …, an,
/// axis=p[k]), p)`: an Inception or dense block's branches stay channels-last (any arity).
fn sink_concat(eg: &mut FusionGraph, _: &Subst, root: Id) -> Option<Id> {
    let nodes: Vec<ENode> = eg[root]
        .nodes
        .iter()
        .filter(|n| matches!(n.head, Head::Op { op: Op::Concat, .. }) && !n.args.is_empty())
        .cloned()
        .collect();
    for n in nodes {
        let Head::Op { attrs, .. } = n.head else { continue };
        let mut a = eg.analysis.table.attrs[attrs as usize].clone();
        let Some(Attr::Int(axis)) = a.get("axis").cloned() else { continue };
        for (p, _) in transposes_in(eg, n.args[0]) {
            let inner: Option<Vec<Id>> = n
                .args
                .iter()
                .map(|&x| transposes_in(eg, x).into_iter().find(|(q, _)| *q == p).map(|(_, y)| y))
                .collect();
            let Some(inner) = inner else { continue };
            let r = p.len() as i64;
            let k = if axis < 0 { axis + r } else { axis };
            if !(0..r).contains(&k) {
                continue;
            }
            a.insert("axis".into(), Attr::Int(p[k as usize]));
            let ai = eg.analysis.table.intern(Op::Concat, a);
            let c = eg.add(ENode { head: Head::Op { op: Op::Concat, attrs: ai }, args: inner });
            return Some(transpose(eg, c, &p));
        }
    }
    None
}

/// `GlobalAveragePool(Transpose(y, p))` → `Transpose(ReduceMean(y, axes=p[2..], keepdims), p)`
/// (GlobalMaxPool: ReduceMax) where `p` keeps the batch first: a squeeze-excite block's pool
/// reads channels-last data in place; the result's transpose only moves axes of size 1, a view.
fn sink_global_pool(eg: &mut FusionGraph, s: &Subst, root: Id, pool: Op, reduce: Op) -> Option<Id> {
    let y = s[var("?y")];
    let t = eg[root].nodes.iter().find(|n| matches!(n.head, Head::Op { op: o, .. } if o == pool))?.args[0];
    let p = perm_in(eg, t, y)?;
    if p.len() < 3 || p[0] != 0 {
        return None;
    }
    let axes = Attr::Ints(p[2..].to_vec());
    let r = if eg.analysis.opset >= 18 {
        let w = ints_weight(eg, format!("global-pool axes {:?}", &p[2..]), "pool_axes", p[2..].to_vec());
        add_op(eg, reduce, vec![("keepdims", Attr::Int(1))], &[y, w])
    } else {
        add_op(eg, reduce, vec![("axes", axes), ("keepdims", Attr::Int(1))], &[y])
    };
    Some(transpose(eg, r, &p))
}

/// `AveragePool(Transpose(y, TO_NCHW))` → `Transpose(ConvNhwc(y, 1/(kh·kw), group=C))` for a
/// 2-D window whose every tap counts (no pads, or pads counted, no ceil mode): a depthwise
/// convolution with equal weights, which runs channels-last (DenseNet's transitions).
fn sink_average_pool(eg: &mut FusionGraph, s: &Subst, root: Id) -> Option<Id> {
    let y = s[var("?y")];
    let n = eg[root].nodes.iter().find(|n| matches!(n.head, Head::Op { op: Op::AveragePool, .. }))?.clone();
    (perm_in(eg, n.args[0], y)? == TO_NCHW).then_some(())?;
    let Head::Op { attrs, .. } = n.head else { return None };
    let a = eg.analysis.table.attrs[attrs as usize].clone();
    let ints = |k: &str| match a.get(k) {
        Some(Attr::Ints(v)) => Some(v.clone()),
        _ => None,
    };
    let int = |k: &str| match a.get(k) {
        Some(Attr::Int(v)) => *v,
        _ => 0,
    };
    let kernel = ints("kernel_shape").filter(|k| k.len() == 2 && k.iter().all(|&d| d > 0))?;
    let pads = ints("pads").unwrap_or(vec![0; 4]);
    let padded = pads.iter().any(|&p| p != 0);
    let auto = matches!(a.get("auto_pad"), Some(Attr::Str(m)) if m != "NOTSET");
    if int("ceil_mode") != 0 || auto || (padded && int("count_include_pad") == 0) {
        return None;
    }
    let ty = eg[y].data.ty();
    let c = *ty.static_shape()?.get(3)?;
    let taps = (kernel[0] * kernel[1]) as usize;
    let dtype = ty.dtype;
    let k = eg.analysis.rule_weight(format!("average-pool taps {c} {kernel:?} {dtype}"), "pool_taps", || {
        xforge_ir::Tensor::from_f64(
            dtype,
            vec![c, 1, kernel[0] as usize, kernel[1] as usize],
            &vec![1.0 / taps as f64; c * taps],
        )
    });
    let w = eg.add(ENode { head: Head::Weight(k), args: vec![] });
    let mut conv =
        vec![("kernel_shape", Attr::Ints(kernel)), ("pads", Attr::Ints(pads)), ("group", Attr::Int(c as i64))];
    if let Some(st) = ints("strides") {
        conv.push(("strides", Attr::Ints(st)));
    }
    if let Some(d) = ints("dilations") {
        conv.push(("dilations", Attr::Ints(d)));
    }
    let cv = add_op(eg, Op::ConvNhwc, conv, &[y, w]);
    Some(transpose(eg, cv, &TO_NCHW))
}

/// `MaxPool(Transpose(y, TO_NCHW))` → `Transpose(MaxPoolNhwc(y))` for a 2-D MaxPool with one
/// output (no indices), explicit pads and a window the pooling template unrolls: VGG's and
/// ResNet's pools between channels-last convolutions stop forcing NCHW around them.
fn sink_max_pool(eg: &mut FusionGraph, s: &Subst, root: Id) -> Option<Id> {
    let y = s[var("?y")];
    let n = eg[root].nodes.iter().find(|n| matches!(n.head, Head::Op { op: Op::MaxPool, .. }))?.clone();
    (perm_in(eg, n.args[0], y)? == TO_NCHW).then_some(())?;
    let Head::Op { attrs, .. } = n.head else { return None };
    if eg.analysis.table.outputs.get(attrs as usize) != Some(&1) {
        return None;
    }
    let a = eg.analysis.table.attrs[attrs as usize].clone();
    let window = match a.get("kernel_shape") {
        Some(Attr::Ints(k)) if k.len() == 2 && k.iter().all(|&d| d > 0) => (k[0] * k[1]) as usize,
        _ => return None,
    };
    let auto = matches!(a.get("auto_pad"), Some(Attr::Str(m)) if m != "NOTSET");
    if auto || window > xforge_ir::window::MAX_WINDOW {
        return None;
    }
    let attrs = eg.analysis.table.intern(Op::MaxPoolNhwc, a);
    let p = eg.add(ENode { head: Head::Op { op: Op::MaxPoolNhwc, attrs }, args: vec![y] });
    Some(transpose(eg, p, &TO_NCHW))
}

/// `Slice(Transpose(y, p), starts, ends, axes[, steps])` → `Transpose(Slice(y, starts, ends,
/// p[axes][, steps]), p)` for constant axes: a channel split (ShuffleNet's halves, a chunk)
/// reads channels-last data where it lies instead of forcing NCHW around it.
fn sink_slice(eg: &mut FusionGraph, s: &Subst, root: Id, steps: bool) -> Option<Id> {
    let (y, st, en, ax) = (s[var("?y")], s[var("?st")], s[var("?en")], s[var("?ax")]);
    let arity = if steps { 5 } else { 4 };
    let n = eg[root]
        .nodes
        .iter()
        .find(|n| matches!(n.head, Head::Op { op: Op::Slice, .. }) && n.args.len() == arity)?
        .clone();
    let perm = perm_in(eg, n.args[0], y)?;
    let (_, axes) = weight_in(eg, ax)?;
    let r = perm.len() as i64;
    let moved: Vec<i64> = axes
        .to_i64()
        .iter()
        .map(|&a| if a < 0 { a + r } else { a })
        .map(|a| (0..r).contains(&a).then(|| perm[a as usize]))
        .collect::<Option<_>>()?;
    let w = ints_weight(eg, format!("slice axes {moved:?}"), "slice_axes", moved);
    let mut args = vec![y, st, en, w];
    if steps {
        args.push(n.args[4]);
    }
    let inner = add_op(eg, Op::Slice, vec![], &args);
    Some(transpose(eg, inner, &perm))
}

/// The channel shuffle `Reshape(Transpose(Reshape(Transpose(y, TO_NCHW), [N, g, C/g, H, W]),
/// [0, 2, 1, 3, 4]), [N, C, H, W])` → `Transpose(Reshape(Transpose(Reshape(y, [N, H, W, g,
/// C/g]), [0, 1, 2, 4, 3]), [N, H, W, C]), TO_NCHW)`: the same permutation of the channels, done
/// on the last axis of the channels-last value (ShuffleNet's units stay channels-last).
fn sink_channel_shuffle(eg: &mut FusionGraph, s: &Subst, root: Id) -> Option<Id> {
    let y = s[var("?y")];
    let is = |n: &ENode, op: Op| matches!(n.head, Head::Op { op: o, .. } if o == op);
    let outer = eg[root].nodes.iter().find(|n| is(n, Op::Reshape) && n.args.len() == 2)?.args[0];
    let split = eg[outer].nodes.iter().find(|n| is(n, Op::Transpose))?.args[0];
    (perm_in(eg, outer, split)? == [0, 2, 1, 3, 4]).then_some(())?;
    let x = eg[split].nodes.iter().find(|n| is(n, Op::Reshape) && n.args.len() == 2)?.args[0];
    (perm_in(eg, x, y)? == TO_NCHW).then_some(())?;
    let shape = |id: Id| eg[id].data.ty().static_shape();
    let (xs, ss, out) = (shape(x)?, shape(split)?, shape(root)?);
    let [n, c, h, w] = xs[..] else { return None };
    let [n1, g, cg, h1, w1] = ss[..] else { return None };
    if (n1, h1, w1) != (n, h, w) || g * cg != c || out != xs {
        return None;
    }
    let mut shape_weight = |dims: &[usize]| {
        let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        ints_weight(eg, format!("reshape to {dims:?}"), "shape", dims)
    };
    let (to5, to4) = (shape_weight(&[n, h, w, g, cg]), shape_weight(&[n, h, w, c]));
    let r5 = add_op(eg, Op::Reshape, vec![], &[y, to5]);
    let t5 = transpose(eg, r5, &[0, 1, 2, 4, 3]);
    let r4 = add_op(eg, Op::Reshape, vec![], &[t5, to4]);
    Some(transpose(eg, r4, &TO_NCHW))
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
    r.push(rule_any_arity("sink-concat", Op::Concat, sink_concat));
    r.push(rule("sink-slice", "(Slice (Transpose ?y) ?st ?en ?ax)", |eg, s, root| sink_slice(eg, s, root, false)));
    r.push(rule("sink-slice-steps", "(Slice (Transpose ?y) ?st ?en ?ax ?sp)", |eg, s, root| {
        sink_slice(eg, s, root, true)
    }));
    r.push(rule(
        "sink-channel-shuffle",
        "(Reshape (Transpose (Reshape (Transpose ?y) ?s1)) ?s2)",
        sink_channel_shuffle,
    ));
    r.push(rule("sink-average-pool", "(AveragePool (Transpose ?y))", sink_average_pool));
    r.push(rule("sink-max-pool", "(MaxPool (Transpose ?y))", sink_max_pool));
    r.push(rule("sink-global-avg", "(GlobalAveragePool (Transpose ?y))", |eg, s, root| {
        sink_global_pool(eg, s, root, Op::GlobalAveragePool, Op::ReduceMean)
    }));
    r.push(rule("sink-global-max", "(GlobalMaxPool (Transpose ?y))", |eg, s, root| {
        sink_global_pool(eg, s, root, Op::GlobalMaxPool, Op::ReduceMax)
    }));
    r
}
