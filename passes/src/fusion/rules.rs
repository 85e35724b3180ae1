//! Rewrite rules. Each adds a fused alternative (an IR op whose interpreter semantics equal the
//! matched subgraph) to the matched e-class; nothing is deleted, extraction chooses. Every rule
//! checks constants, attributes and shapes through the analysis before it builds anything.
use super::analysis::{FusionAnalysis, FusionGraph};
use super::language::{ENode, Head};
use egg::{Applier, Id, Pattern, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};
use xforge_ir::{Attr, Attrs, Op};

/// Builds the alternative for one match of the rule's pattern rooted at an e-class; `None`
/// refuses the match.
type Build = fn(&mut FusionGraph, &Subst, Id) -> Option<Id>;

/// A rule's builder plus the variables that must name the same e-class: egg turns a sub-term
/// whose variables are already bound into a hash-cons lookup, which cannot see through the
/// wildcard attributes of pattern e-nodes, so patterns are made linear and equality is checked
/// here instead.
struct Builder {
    build: Build,
    same: Vec<(Var, Var)>,
}

impl Applier<ENode, FusionAnalysis> for Builder {
    fn apply_one(
        &self,
        eg: &mut FusionGraph,
        eclass: Id,
        subst: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        if self.same.iter().any(|(a, b)| eg.find(subst[*a]) != eg.find(subst[*b])) {
            return vec![];
        }
        match (self.build)(eg, subst, eclass) {
            Some(new) if eg.union(eclass, new) => vec![eclass],
            _ => vec![],
        }
    }
}

/// Renames the second and later occurrences of each variable (`?x` → `?x__2`, ...) and returns
/// the pairs that must be equal.
fn linearize(pattern: &str) -> (String, Vec<(Var, Var)>) {
    let mut out = String::new();
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let mut same = vec![];
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '?' {
            out.push(c);
            continue;
        }
        let mut name = String::from("?");
        while let Some(&d) = chars.peek() {
            if d.is_whitespace() || d == '(' || d == ')' {
                break;
            }
            name.push(d);
            chars.next();
        }
        let n = seen.entry(name.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            out.push_str(&name);
        } else {
            let renamed = format!("{name}__{n}");
            same.push((v(&name), v(&renamed)));
            out.push_str(&renamed);
        }
    }
    (out, same)
}

pub(crate) fn rule(name: &str, pattern: &str, build: Build) -> Rewrite<ENode, FusionAnalysis> {
    let (linear, same) = linearize(pattern);
    let p: Pattern<ENode> = linear.parse().unwrap_or_else(|e| panic!("rule {name}: bad pattern: {e}"));
    Rewrite::new(name, p, Builder { build, same }).expect("rule vars")
}

/// Matches every e-class that holds an `op` e-node, whatever its arity (Concat's inputs are
/// not a fixed number a pattern can name); the builder finds the node itself.
struct AnyArity(Op);

impl Searcher<ENode, FusionAnalysis> for AnyArity {
    fn search_eclass_with_limit(&self, eg: &FusionGraph, eclass: Id, limit: usize) -> Option<SearchMatches<'_, ENode>> {
        let has = eg[eclass].nodes.iter().any(|n| matches!(n.head, Head::Op { op, .. } if op == self.0));
        (limit > 0 && has).then(|| SearchMatches { eclass, substs: vec![Subst::default()], ast: None })
    }

    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}

/// A rule over every `op` e-node of any arity.
pub(crate) fn rule_any_arity(name: &str, op: Op, build: Build) -> Rewrite<ENode, FusionAnalysis> {
    Rewrite::new(name, AnyArity(op), Builder { build, same: vec![] }).expect("rule vars")
}

fn v(s: &str) -> Var {
    s.parse().expect("var")
}

/// The weight in class `id`: its key and tensor.
pub(crate) fn weight_in(eg: &FusionGraph, id: Id) -> Option<(u32, xforge_ir::Tensor)> {
    eg[id].nodes.iter().find_map(|n| match n.head {
        Head::Weight(k) => eg.analysis.weights.get(&k).map(|t| (k, t.clone())),
        _ => None,
    })
}

/// Whether two ids name the same e-class.
pub(crate) fn same_class(eg: &FusionGraph, a: Id, b: Id) -> bool {
    eg.find(a) == eg.find(b)
}

/// The one-element constant bound to `var`.
fn konst(eg: &FusionGraph, s: &Subst, var: &str) -> Option<f64> {
    eg[s[v(var)]].data.scalar()
}

fn near(x: Option<f64>, want: f64) -> bool {
    x.is_some_and(|x| (x - want).abs() <= 1e-3 * want.abs().max(1e-3))
}

fn rank(eg: &FusionGraph, id: Id) -> Option<usize> {
    eg[id].data.ty().shape.as_ref().map(|s| s.len())
}

/// Attributes of an `op` e-node in class `id`.
fn attrs_of(eg: &FusionGraph, id: Id, op: Op) -> Option<Attrs> {
    eg[id].nodes.iter().find_map(|n| match n.head {
        Head::Op { op: o, attrs } if o == op => Some(eg.analysis.table.attrs[attrs as usize].clone()),
        _ => None,
    })
}

fn int_attr(a: &Attrs, k: &str) -> Option<i64> {
    match a.get(k) {
        Some(Attr::Int(v)) => Some(*v),
        _ => None,
    }
}

/// Adds an op e-node with its own attribute entry.
pub fn add_op(eg: &mut FusionGraph, op: Op, attrs: Vec<(&str, Attr)>, args: &[Id]) -> Id {
    let attrs: Attrs = attrs.into_iter().map(|(k, a)| (k.to_string(), a)).collect();
    let a = eg.analysis.table.intern(op, attrs);
    eg.add(ENode { head: Head::Op { op, attrs: a }, args: args.to_vec() })
}

/// Softmax over the last axis of a value of rank `r`.
fn last_axis_softmax(eg: &FusionGraph, id: Id) -> bool {
    let (Some(a), Some(r)) = (attrs_of(eg, id, Op::Softmax), rank(eg, id)) else { return false };
    let axis = int_attr(&a, "axis").unwrap_or(if eg.analysis.opset >= 13 { -1 } else { 1 });
    axis == -1 || axis == r as i64 - 1
}

/// The classes of the Softmax feeding `MatMul(Softmax(..), v)` (or `MatMul(Where(IsNaN(p), 0,
/// p), v)` with p a Softmax) nodes of class `root`.
fn softmax_under(eg: &FusionGraph, root: Id, val: Id) -> Vec<Id> {
    let val = eg.find(val);
    let has_softmax = |c: Id| eg[c].nodes.iter().any(|m| matches!(m.head, Head::Op { op: Op::Softmax, .. }));
    let mut out = vec![];
    for n in
        eg[root].nodes.iter().filter(|n| matches!(n.head, Head::Op { op: Op::MatMul, .. }) && eg.find(n.args[1]) == val)
    {
        let c = eg.find(n.args[0]);
        if has_softmax(c) {
            out.push(c);
        }
        for w in eg[c].nodes.iter().filter(|m| matches!(m.head, Head::Op { op: Op::Where, .. })) {
            let p = eg.find(w.args[2]);
            if has_softmax(p) {
                out.push(p);
            }
        }
    }
    out
}

/// Attention(q, kᵀ → k, v, mask?) with `scale`, after the shapes check out.
fn attention(eg: &mut FusionGraph, s: &Subst, root: Id, scale: f64, mask: Option<Id>) -> Option<Id> {
    let (q, kt, val) = (s[v("?q")], s[v("?kt")], s[v("?v")]);
    if [q, kt, val].iter().any(|&i| rank(eg, i) != Some(4)) {
        return None;
    }
    let softmaxes = softmax_under(eg, root, val);
    if softmaxes.is_empty() || !softmaxes.into_iter().all(|c| last_axis_softmax(eg, c)) {
        return None;
    }
    let k = add_op(eg, Op::Transpose, vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))], &[kt]);
    let mut args = vec![q, k, val];
    if let Some(m) = mask {
        args.push(m);
    }
    Some(add_op(eg, Op::Attention, vec![("scale", Attr::Float(scale as f32))], &args))
}

/// All rules: composite ops, the selective scan's unfused form, then layout.
pub fn rules() -> Vec<Rewrite<ENode, FusionAnalysis>> {
    let mut r = composite_rules();
    r.extend(super::selective_scan::selective_scan_rules());
    r.extend(super::layout::layout_rules());
    r.extend(super::scale_fold::scale_fold_rules());
    r
}

/// Rules that recognise composite ops (GELU, SiLU, HardSwish, Softmax, norms, attention).
pub fn composite_rules() -> Vec<Rewrite<ENode, FusionAnalysis>> {
    vec![
        // x·σ(x) → Swish (SiLU)
        rule("silu", "(Mul ?x (Sigmoid ?x))", |eg, s, _| Some(add_op(eg, Op::Swish, vec![], &[s[v("?x")]]))),
        rule("silu-r", "(Mul (Sigmoid ?x) ?x)", |eg, s, _| Some(add_op(eg, Op::Swish, vec![], &[s[v("?x")]]))),
        // x·σ(k·x) → Swish(alpha = k): CLIP's QuickGELU (k = 1.702), in the orders exporters write it
        rule("swish-alpha", "(Mul ?x (Sigmoid (Mul ?x ?k)))", |eg, s, _| swish(eg, s)),
        rule("swish-alpha-r", "(Mul (Sigmoid (Mul ?x ?k)) ?x)", |eg, s, _| swish(eg, s)),
        rule("swish-alpha-k", "(Mul ?x (Sigmoid (Mul ?k ?x)))", |eg, s, _| swish(eg, s)),
        rule("swish-alpha-k-r", "(Mul (Sigmoid (Mul ?k ?x)) ?x)", |eg, s, _| swish(eg, s)),
        // x·½(1 + erf(x/√2)) → Gelu, in the orders exporters write it
        rule("gelu-erf", "(Mul (Mul ?x (Add (Erf (Div ?x ?r2)) ?one)) ?half)", |eg, s, _| {
            (near(konst(eg, s, "?r2"), std::f64::consts::SQRT_2) && near(konst(eg, s, "?one"), 1.0) && near(konst(eg, s, "?half"), 0.5))
                .then(|| add_op(eg, Op::Gelu, vec![], &[s[v("?x")]]))
        }),
        rule("gelu-erf-2", "(Mul (Mul ?x ?half) (Add (Erf (Div ?x ?r2)) ?one))", |eg, s, _| {
            (near(konst(eg, s, "?r2"), std::f64::consts::SQRT_2) && near(konst(eg, s, "?one"), 1.0) && near(konst(eg, s, "?half"), 0.5))
                .then(|| add_op(eg, Op::Gelu, vec![], &[s[v("?x")]]))
        }),
        rule("gelu-erf-3", "(Mul (Mul ?x (Add (Erf (Mul ?x ?ir2)) ?one)) ?half)", |eg, s, _| {
            (near(konst(eg, s, "?ir2"), std::f64::consts::FRAC_1_SQRT_2) && near(konst(eg, s, "?one"), 1.0) && near(konst(eg, s, "?half"), 0.5))
                .then(|| add_op(eg, Op::Gelu, vec![], &[s[v("?x")]]))
        }),
        // ½x(1 + tanh(√(2/π)(x + 0.044715x³))) → Gelu(approximate=tanh)
        rule("gelu-tanh", "(Mul (Mul ?x ?half) (Add (Tanh (Mul (Add ?x (Mul (Pow ?x ?three) ?c)) ?k)) ?one))", |eg, s, _| {
            let ok = near(konst(eg, s, "?half"), 0.5)
                && near(konst(eg, s, "?one"), 1.0)
                && near(konst(eg, s, "?three"), 3.0)
                && near(konst(eg, s, "?c"), 0.044715)
                && near(konst(eg, s, "?k"), (2.0 / std::f64::consts::PI).sqrt());
            ok.then(|| add_op(eg, Op::Gelu, vec![("approximate", Attr::Str("tanh".into()))], &[s[v("?x")]]))
        }),
        // x·HardSigmoid(x) with α = 1/6, β = ½ → HardSwish
        rule("hardswish", "(Mul ?x (HardSigmoid ?x))", |eg, s, root| {
            let x = eg.find(s[v("?x")]);
            // the HardSigmoid of this match must have α = 1/6 and β = ½
            let ok = eg[root].nodes.iter().filter(|n| matches!(n.head, Head::Op { op: Op::Mul, .. })).any(|n| {
                n.args.iter().any(|&c| {
                    eg[c].nodes.iter().any(|m| match m.head {
                        Head::Op { op: Op::HardSigmoid, attrs } if eg.find(m.args[0]) == x => {
                            let a = &eg.analysis.table.attrs[attrs as usize];
                            let f = |k: &str, d: f64| match a.get(k) {
                                Some(Attr::Float(v)) => *v as f64,
                                _ => d,
                            };
                            near(Some(f("alpha", 0.2)), 1.0 / 6.0) && near(Some(f("beta", 0.5)), 0.5)
                        }
                        _ => false,
                    })
                })
            });
            ok.then(|| add_op(eg, Op::HardSwish, vec![], &[x]))
        }),
        // exp(x − max x) / Σ exp(x − max x) → Softmax, whichever way the reductions get their axes
        rule("softmax", "(Div (Exp (Sub ?x ?m)) ?z)", |eg, s, root| {
            let (x, m, z) = (eg.find(s[v("?x")]), s[v("?m")], s[v("?z")]);
            let e = eg[root].nodes.iter().find(|n| matches!(n.head, Head::Op { op: Op::Div, .. }) && eg.find(n.args[1]) == eg.find(z))?.args[0];
            let e = eg.find(e);
            (last_axis_reduce(eg, m, Op::ReduceMax, x) && last_axis_reduce(eg, z, Op::ReduceSum, e)).then_some(())?;
            Some(add_op(eg, Op::Softmax, vec![("axis", Attr::Int(-1))], &[x]))
        }),
        // torch's LayerNorm decomposition → LayerNormalization
        rule("layernorm", "(Add (Mul (Div (Sub ?x ?m) (Sqrt (Add ?var ?eps))) ?w) ?b)", |eg, s, _| {
            let (x, m) = (eg.find(s[v("?x")]), eg.find(s[v("?m")]));
            let eps = konst(eg, s, "?eps")?;
            last_axis_reduce(eg, m, Op::ReduceMean, x).then_some(())?;
            // var = mean((x − m)²) over the same axis
            let sq = mean_of(eg, s[v("?var")])?;
            let d = square_of(eg, sq)?;
            eg[d].nodes.iter().any(|n| matches!(n.head, Head::Op { op: Op::Sub, .. }) && eg.find(n.args[0]) == x && eg.find(n.args[1]) == m).then_some(())?;
            let args = [x, s[v("?w")], s[v("?b")]];
            Some(add_op(eg, Op::LayerNormalization, vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps as f32))], &args))
        }),
        // x / √(mean(x²) + ε) · w and x · rsqrt(mean(x²) + ε) · w → RMSNormalization, the factors
        // in any order and rsqrt as exporters write it (Reciprocal(√), 1 / √, Pow(·, −½))
        rule("rmsnorm", "(Mul ?a ?b)", |eg, s, _| rms(eg, s[v("?a")], s[v("?b")])),
        // Softmax(q·kᵀ·scale + mask)·v → Attention (SDPA export: √scale on both sides)
        rule("attention-sdpa", "(MatMul (Softmax (MatMul (Mul ?q ?sq) (Mul ?kt ?sk))) ?v)", |eg, s, root| {
            let scale = konst(eg, s, "?sq")? * konst(eg, s, "?sk")?;
            attention(eg, s, root, scale, None)
        }),
        rule("attention-sdpa-mask", "(MatMul (Softmax (Add (MatMul (Mul ?q ?sq) (Mul ?kt ?sk)) ?mask)) ?v)", |eg, s, root| {
            let scale = konst(eg, s, "?sq")? * konst(eg, s, "?sk")?;
            let m = s[v("?mask")];
            attention(eg, s, root, scale, Some(m))
        }),
        // torch's guard for fully masked rows, Where(IsNaN(p), 0, p), is Attention's own rule
        rule(
            "attention-sdpa-mask-guarded",
            "(MatMul (Where (IsNaN (Softmax (Add (MatMul (Mul ?q ?sq) (Mul ?kt ?sk)) ?mask))) ?zero (Softmax (Add (MatMul (Mul ?q ?sq) (Mul ?kt ?sk)) ?mask))) ?v)",
            |eg, s, root| {
                near(konst(eg, s, "?zero"), 0.0).then_some(())?;
                let scale = konst(eg, s, "?sq")? * konst(eg, s, "?sk")?;
                let m = s[v("?mask")];
                attention(eg, s, root, scale, Some(m))
            },
        ),
        rule("attention-div-mask", "(MatMul (Softmax (Add (Div (MatMul ?q ?kt) ?d) ?mask)) ?v)", |eg, s, root| {
            let scale = 1.0 / konst(eg, s, "?d")?;
            let m = s[v("?mask")];
            attention(eg, s, root, scale, Some(m))
        }),
        rule("attention-div", "(MatMul (Softmax (Div (MatMul ?q ?kt) ?d)) ?v)", |eg, s, root| {
            let scale = 1.0 / konst(eg, s, "?d")?;
            attention(eg, s, root, scale, None)
        }),
        rule("attention-mul", "(MatMul (Softmax (Mul (MatMul ?q ?kt) ?c)) ?v)", |eg, s, root| {
            let scale = konst(eg, s, "?c")?;
            attention(eg, s, root, scale, None)
        }),
    ]
}

/// Class `id` holds a keepdims `op` reduction of `of` over its last axis (axes from the
/// attribute or, from opset 18 (13 for ReduceSum), the constant second input).
fn last_axis_reduce(eg: &FusionGraph, id: Id, op: Op, of: Id) -> bool {
    let Some(r) = rank(eg, of) else { return false };
    eg[id].nodes.iter().any(|n| match n.head {
        Head::Op { op: o, attrs } if o == op && eg.find(n.args[0]) == eg.find(of) => {
            let a = &eg.analysis.table.attrs[attrs as usize];
            let axes = match a.get("axes") {
                Some(Attr::Ints(v)) => Some(v.clone()),
                _ => n.args.get(1).and_then(|&i| eg[i].data.fact().konst.as_ref().map(|t| t.to_i64())),
            };
            int_attr(a, "keepdims").unwrap_or(1) == 1 && axes.is_some_and(|ax| ax == [-1] || ax == [r as i64 - 1])
        }
        _ => false,
    })
}

/// The class a last-axis keepdims ReduceMean in class `id` averages.
fn mean_of(eg: &FusionGraph, id: Id) -> Option<Id> {
    let id = eg.find(id);
    let of = eg[id].nodes.iter().find(|n| matches!(n.head, Head::Op { op: Op::ReduceMean, .. }))?.args[0];
    last_axis_reduce(eg, id, Op::ReduceMean, of).then(|| eg.find(of))
}

/// The class that class `id` squares (`Pow(d, 2)` or `Mul(d, d)`).
fn square_of(eg: &FusionGraph, id: Id) -> Option<Id> {
    eg[id].nodes.iter().find_map(|n| match n.head {
        Head::Op { op: Op::Pow, .. } if near(eg[n.args[1]].data.scalar(), 2.0) => Some(eg.find(n.args[0])),
        Head::Op { op: Op::Mul, .. } if eg.find(n.args[0]) == eg.find(n.args[1]) => Some(eg.find(n.args[0])),
        _ => None,
    })
}

/// Swish(x) with alpha the one-element constant ?k.
fn swish(eg: &mut FusionGraph, s: &Subst) -> Option<Id> {
    let k = konst(eg, s, "?k")?;
    Some(add_op(eg, Op::Swish, vec![("alpha", Attr::Float(k as f32))], &[s[v("?x")]]))
}

/// RMSNormalization(x, w) where `a · b` is `n · w` (either order) and n normalizes x by the root
/// mean square of its last axis; w has one element per column (or one in all).
fn rms(eg: &mut FusionGraph, a: Id, b: Id) -> Option<Id> {
    let (x, w, eps) = [(a, b), (b, a)].into_iter().find_map(|(n, w)| {
        let (x, eps) = rms_normalized(eg, n)?;
        let cols = eg[x].data.ty().shape.as_ref()?.last()?.known()?;
        let ws = eg[w].data.ty().shape.as_ref()?;
        // the kernel reads a scale by column, or inlines a one-element constant
        let per_column =
            ws.last().is_some_and(|d| d.known() == Some(cols)) && ws.iter().rev().skip(1).all(|d| d.known() == Some(1));
        ((per_column || eg[w].data.scalar().is_some()) && ws.len() <= rank(eg, x)?).then_some((x, w, eps))
    })?;
    Some(add_op(eg, Op::RMSNormalization, vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps as f32))], &[x, w]))
}

/// (x, ε) where class `n` holds x / √(mean(x²) + ε) or x · rsqrt(mean(x²) + ε), the product in
/// either order.
fn rms_normalized(eg: &FusionGraph, n: Id) -> Option<(Id, f64)> {
    eg[n].nodes.iter().find_map(|node| match node.head {
        Head::Op { op: Op::Div, .. } => {
            let x = eg.find(node.args[0]);
            let (ms, eps) = sqrt_of_sum(eg, node.args[1])?;
            mean_square_of(eg, ms, x).then_some((x, eps))
        }
        Head::Op { op: Op::Mul, .. } => {
            [(node.args[0], node.args[1]), (node.args[1], node.args[0])].into_iter().find_map(|(x, r)| {
                let x = eg.find(x);
                let (ms, eps) = rsqrt_of_sum(eg, r)?;
                mean_square_of(eg, ms, x).then_some((x, eps))
            })
        }
        _ => None,
    })
}

/// Whether class `ms` is the last-axis mean of x².
fn mean_square_of(eg: &FusionGraph, ms: Id, x: Id) -> bool {
    mean_of(eg, ms).and_then(|sq| square_of(eg, sq)).is_some_and(|d| d == eg.find(x))
}

/// (s, ε) where class `id` holds s + ε (either order) with ε a constant.
fn sum_with_constant(eg: &FusionGraph, id: Id) -> Option<(Id, f64)> {
    eg[id].nodes.iter().find_map(|n| match n.head {
        Head::Op { op: Op::Add, .. } => [(n.args[0], n.args[1]), (n.args[1], n.args[0])]
            .into_iter()
            .find_map(|(s, e)| eg[e].data.scalar().map(|eps| (eg.find(s), eps))),
        _ => None,
    })
}

/// (s, ε) where class `id` holds √(s + ε).
fn sqrt_of_sum(eg: &FusionGraph, id: Id) -> Option<(Id, f64)> {
    eg[id].nodes.iter().find_map(|n| match n.head {
        Head::Op { op: Op::Sqrt, .. } => sum_with_constant(eg, n.args[0]),
        _ => None,
    })
}

/// (s, ε) where class `id` holds 1 / √(s + ε): Reciprocal(√), Div(1, √) or Pow(s + ε, −½).
fn rsqrt_of_sum(eg: &FusionGraph, id: Id) -> Option<(Id, f64)> {
    eg[id].nodes.iter().find_map(|n| match n.head {
        Head::Op { op: Op::Reciprocal, .. } => sqrt_of_sum(eg, n.args[0]),
        Head::Op { op: Op::Div, .. } if near(eg[n.args[0]].data.scalar(), 1.0) => sqrt_of_sum(eg, n.args[1]),
        Head::Op { op: Op::Pow, .. } if near(eg[n.args[1]].data.scalar(), -0.5) => sum_with_constant(eg, n.args[0]),
        _ => None,
    })
}
