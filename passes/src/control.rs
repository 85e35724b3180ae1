//! Control flow inlined into the graph, so its work compiles like any other: an If whose
//! branches give outputs of one type runs both and selects (or only the branch a constant
//! condition picks); a Loop with a constant trip count that never exits early and a Scan (whose
//! length is static) are unrolled, slicing their sequences with Gathers and stacking their
//! scan outputs with Unsqueeze + Concat. Nested control flow is inlined inside a body first;
//! bodies that still hold some, or unrolls past `knobs::UNROLL_NODE_LIMIT`, are left alone.
use crate::knobs::UNROLL_NODE_LIMIT;
use std::collections::HashMap;
use xforge_ir::{Attr, DType, Graph, Node, Op, Tensor, ValueId, ValueType};

/// Inlines every If, Loop and Scan that can be — except Scans with the selective scan's linear
/// body, which the fusion rules turn into one scan kernel; returns how many.
pub fn inline_control_flow(g: &mut Graph) -> usize {
    KEEP_LINEAR_SCANS.with(|k| k.set(true));
    inline_in(g, false)
}

/// `inline_control_flow`, linear Scans included (where fusion did not take them).
pub fn inline_all_control_flow(g: &mut Graph) -> usize {
    KEEP_LINEAR_SCANS.with(|k| k.set(false));
    let n = inline_in(g, false);
    KEEP_LINEAR_SCANS.with(|k| k.set(true));
    n
}

thread_local! {
    static KEEP_LINEAR_SCANS: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// `inline_control_flow` in `g`; in a subgraph (`nested`), a value a body captures from further
/// out becomes a capture of `g` too.
fn inline_in(g: &mut Graph, nested: bool) -> usize {
    let mut done = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        let node = g.nodes[i].clone();
        let mut out = vec![];
        let ok = match node.op {
            Op::If => inline_if(g, &node, nested, &mut out),
            Op::Loop => inline_loop(g, &node, nested, &mut out),
            Op::Scan if g.opset >= 9 && !(KEEP_LINEAR_SCANS.with(|k| k.get()) && linear_scan(&node)) => {
                inline_scan(g, &node, nested, &mut out)
            }
            _ => None,
        };
        match ok {
            Some(()) => {
                let k = out.len();
                g.nodes.splice(i..=i, out);
                i += k;
                done += 1;
            }
            None => i += 1,
        }
    }
    done
}

fn linear_scan(n: &Node) -> bool {
    matches!(n.attr("body"), Some(Attr::Graph(b)) if crate::fusion::selective_scan::linear_body(b))
}

fn body(n: &Node, name: &str) -> Option<Graph> {
    match n.attr(name) {
        Some(Attr::Graph(b)) => {
            let mut b: Graph = (**b).clone();
            // nested control flow first; a body that keeps some is not inlined
            inline_in(&mut b, true);
            if b.nodes.iter().any(|m| m.subgraphs().next().is_some()) {
                return None;
            }
            Some(b)
        }
        _ => None,
    }
}

/// A constant of `g`: a new weight value.
fn constant(g: &mut Graph, name: String, t: Tensor) -> ValueId {
    let v = g.add_value(name, ValueType::known(t.dtype(), t.shape()));
    g.weights.insert(v, t);
    v
}

/// A new value of `g` named after `name` and typed `ty`.
fn value(g: &mut Graph, name: String, ty: ValueType) -> ValueId {
    g.add_value(name, ty)
}

/// Copies `b`'s nodes into `out` (values in `g`) with its inputs bound to `args`; returns the
/// values of its outputs.
fn instantiate(
    g: &mut Graph,
    b: &Graph,
    args: &[ValueId],
    prefix: &str,
    nested: bool,
    out: &mut Vec<Node>,
) -> Option<Vec<ValueId>> {
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    if args.len() != b.inputs.len() {
        return None;
    }
    for (&i, &a) in b.inputs.iter().zip(args) {
        map.insert(i, a);
    }
    for &c in &b.captures {
        let v = match g.find_value(b.name_of(c)) {
            Some(v) => v,
            None if nested => {
                let v = g.add_value(b.name_of(c), b.ty(c).clone());
                g.captures.push(v);
                v
            }
            None => return None,
        };
        map.insert(c, v);
    }
    for (v, t) in &b.weights {
        let nv = constant(g, format!("{prefix}{}", b.name_of(*v)), t.clone());
        map.insert(*v, nv);
    }
    for n in &b.nodes {
        let inputs = n.inputs.iter().map(|i| i.map(|v| map.get(&v).copied()).unwrap_or(Some(ValueId(u32::MAX))));
        let inputs: Vec<Option<ValueId>> = inputs
            .zip(&n.inputs)
            .map(|(m, orig)| if orig.is_none() { Some(None) } else { m.filter(|v| v.0 != u32::MAX).map(Some) })
            .collect::<Option<_>>()?;
        let mut outputs = vec![];
        for o in &n.outputs {
            outputs.push(o.map(|o| {
                let nv = value(g, format!("{prefix}{}", b.name_of(o)), b.ty(o).clone());
                map.insert(o, nv);
                nv
            }));
        }
        out.push(Node { name: format!("{prefix}{}", n.name), op: n.op, inputs, outputs, attrs: n.attrs.clone() });
    }
    b.outputs.iter().map(|o| map.get(o).copied()).collect()
}

/// `dst = Identity(src)` for each output of the control node.
fn bind_outputs(node: &Node, finals: &[ValueId], out: &mut Vec<Node>) -> Option<()> {
    if finals.len() < node.outputs.iter().filter(|o| o.is_some()).count() {
        return None;
    }
    for (k, o) in node.outputs.iter().enumerate() {
        if let Some(o) = o {
            out.push(Node {
                name: format!("{}/out{k}", node.name),
                op: Op::Identity,
                inputs: vec![Some(*finals.get(k)?)],
                outputs: vec![Some(*o)],
                attrs: Default::default(),
            });
        }
    }
    Some(())
}

fn const_scalar(g: &Graph, v: Option<ValueId>) -> Option<f64> {
    g.weights.get(&v?).and_then(|t| t.to_f64().first().copied())
}

fn inline_if(g: &mut Graph, n: &Node, nested: bool, out: &mut Vec<Node>) -> Option<()> {
    let cond = n.inputs.first().copied().flatten()?;
    match const_scalar(g, Some(cond)) {
        Some(c) => {
            let b = body(n, if c != 0.0 { "then_branch" } else { "else_branch" })?;
            let finals = instantiate(g, &b, &[], &format!("{}/", n.name), nested, out)?;
            bind_outputs(n, &finals, out)
        }
        None => {
            // both branches, then a select per output: an elementwise Where where they agree on
            // the (static) type, else a Choose of the whole tensor (branches of data-dependent
            // shapes: the padded-shape pass makes it a select of padded data and lengths)
            let (t, e) = (body(n, "then_branch")?, body(n, "else_branch")?);
            if t.outputs.len() != e.outputs.len() {
                return None;
            }
            let same: Vec<bool> = t
                .outputs
                .iter()
                .zip(&e.outputs)
                .map(|(&a, &c)| {
                    let (ta, tc) = (t.ty(a), e.ty(c));
                    ta.dtype == tc.dtype && ta.static_shape().is_some() && ta.static_shape() == tc.static_shape()
                })
                .collect();
            if t.outputs.iter().zip(&e.outputs).any(|(&a, &c)| t.ty(a).dtype != e.ty(c).dtype) {
                return None;
            }
            let tv = instantiate(g, &t, &[], &format!("{}/then/", n.name), nested, out)?;
            let ev = instantiate(g, &e, &[], &format!("{}/else/", n.name), nested, out)?;
            let mut finals = vec![];
            for (k, (&a, &c)) in tv.iter().zip(&ev).enumerate() {
                let ty = if same[k] { g.ty(a).clone() } else { ValueType::unranked(g.ty(a).dtype) };
                let r = value(g, format!("{}/select{k}", n.name), ty);
                if !same[k] {
                    g.undeclared.insert(r);
                }
                out.push(Node {
                    name: format!("{}/select{k}", n.name),
                    op: if same[k] { Op::Where } else { Op::Choose },
                    inputs: vec![Some(cond), Some(a), Some(c)],
                    outputs: vec![Some(r)],
                    attrs: Default::default(),
                });
                finals.push(r);
            }
            bind_outputs(n, &finals, out)
        }
    }
}

/// Stacks `parts` along `axis` of a new axis: Unsqueeze each, then Concat.
fn stack(g: &mut Graph, parts: &[ValueId], axis: i64, name: &str, out: &mut Vec<Node>) -> Option<ValueId> {
    let first = g.ty(*parts.first()?).clone();
    let mut pieces = vec![];
    for (k, &p) in parts.iter().enumerate() {
        let mut attrs: xforge_ir::Attrs = Default::default();
        let mut inputs = vec![Some(p)];
        if g.opset >= 13 {
            inputs.push(Some(constant(g, format!("{name}/axes{k}"), Tensor::from_i64(vec![1], vec![axis]))));
        } else {
            attrs.insert("axes".into(), Attr::Ints(vec![axis]));
        }
        let u = value(g, format!("{name}/part{k}"), ValueType::unranked(first.dtype));
        out.push(Node {
            name: format!("{name}/unsqueeze{k}"),
            op: Op::Unsqueeze,
            inputs,
            outputs: vec![Some(u)],
            attrs,
        });
        pieces.push(Some(u));
    }
    let r = value(g, format!("{name}/stacked"), ValueType::unranked(first.dtype));
    let mut attrs: xforge_ir::Attrs = Default::default();
    attrs.insert("axis".into(), Attr::Int(axis));
    out.push(Node { name: format!("{name}/concat"), op: Op::Concat, inputs: pieces, outputs: vec![Some(r)], attrs });
    Some(r)
}

fn inline_loop(g: &mut Graph, n: &Node, nested: bool, out: &mut Vec<Node>) -> Option<()> {
    let trips = const_scalar(g, n.inputs.first().copied().flatten())? as i64;
    if let Some(c) = n.inputs.get(1).copied().flatten() {
        if const_scalar(g, Some(c))? == 0.0 {
            return None;
        }
    }
    let b = body(n, "body")?;
    // the body must pass its condition through (or keep it constant true): no early exit
    let cond_out = *b.outputs.first()?;
    let passes = cond_out == *b.inputs.get(1)?
        || b.weights.get(&cond_out).is_some_and(|t| t.to_f64().first() == Some(&1.0))
        || b.nodes
            .iter()
            .any(|m| m.op == Op::Identity && m.outputs[0] == Some(cond_out) && m.inputs[0] == Some(b.inputs[1]));
    if !passes || trips <= 0 || trips as usize * b.nodes.len().max(1) > UNROLL_NODE_LIMIT {
        return None;
    }
    let mut carried: Vec<ValueId> = n.inputs.iter().skip(2).map(|v| *v).collect::<Option<_>>()?;
    let n_carried = carried.len();
    let n_scan = b.outputs.len().checked_sub(1 + n_carried)?;
    let mut scans: Vec<Vec<ValueId>> = vec![vec![]; n_scan];
    let truth = constant(g, format!("{}/cond", n.name), Tensor::from_bool(vec![], vec![true]));
    for t in 0..trips {
        let it = constant(g, format!("{}/iter{t}", n.name), Tensor::scalar_i64(t));
        let mut args = vec![it, truth];
        args.extend(&carried);
        let res = instantiate(g, &b, &args, &format!("{}/{t}/", n.name), nested, out)?;
        carried = res[1..1 + n_carried].to_vec();
        for (k, s) in scans.iter_mut().enumerate() {
            s.push(res[1 + n_carried + k]);
        }
    }
    let mut finals = carried;
    for (k, s) in scans.iter().enumerate() {
        finals.push(stack(g, s, 0, &format!("{}/scan{k}", n.name), out)?);
    }
    bind_outputs(n, &finals, out)
}

fn inline_scan(g: &mut Graph, n: &Node, nested: bool, out: &mut Vec<Node>) -> Option<()> {
    let b = body(n, "body")?;
    let ints = |name: &str| match n.attr(name) {
        Some(Attr::Ints(v)) => Some(v.clone()),
        _ => None,
    };
    let m = match n.attr("num_scan_inputs") {
        Some(Attr::Int(m)) => *m as usize,
        _ => return None,
    };
    let all: Vec<ValueId> = n.inputs.iter().map(|v| *v).collect::<Option<_>>()?;
    let n_state = all.len().checked_sub(m)?;
    let n_out = n.outputs.len();
    let n_scan_out = n_out.saturating_sub(n_state);
    let in_axes = ints("scan_input_axes").unwrap_or(vec![0; m]);
    let in_dirs = ints("scan_input_directions").unwrap_or(vec![0; m]);
    let out_axes = ints("scan_output_axes").unwrap_or(vec![0; n_scan_out]);
    let out_dirs = ints("scan_output_directions").unwrap_or(vec![0; n_scan_out]);
    // the sequence length: every scan input's scanned axis, static and equal
    let mut len = None;
    let mut axes = vec![];
    for (k, &s) in all[n_state..].iter().enumerate() {
        let shape = g.ty(s).static_shape()?;
        let ax = if in_axes[k] < 0 { in_axes[k] + shape.len() as i64 } else { in_axes[k] } as usize;
        let l = *shape.get(ax)?;
        if len.is_some_and(|x| x != l) {
            return None;
        }
        len = Some(l);
        axes.push(ax);
    }
    let len = len?;
    if len == 0 || len * b.nodes.len().max(1) > UNROLL_NODE_LIMIT {
        return None;
    }
    let mut state = all[..n_state].to_vec();
    let mut outs: Vec<Vec<ValueId>> = vec![vec![]; n_scan_out];
    for it in 0..len {
        let mut args = state.clone();
        for (k, &s) in all[n_state..].iter().enumerate() {
            let t = if in_dirs[k] != 0 { len - 1 - it } else { it };
            let idx = constant(g, format!("{}/{it}/at{k}", n.name), Tensor::scalar_i64(t as i64));
            let sl = value(g, format!("{}/{it}/slice{k}", n.name), ValueType::unranked(g.ty(s).dtype));
            let mut attrs: xforge_ir::Attrs = Default::default();
            attrs.insert("axis".into(), Attr::Int(axes[k] as i64));
            out.push(Node {
                name: format!("{}/{it}/gather{k}", n.name),
                op: Op::Gather,
                inputs: vec![Some(s), Some(idx)],
                outputs: vec![Some(sl)],
                attrs,
            });
            args.push(sl);
        }
        let res = instantiate(g, &b, &args, &format!("{}/{it}/", n.name), nested, out)?;
        state = res[..n_state].to_vec();
        for (k, o) in outs.iter_mut().enumerate() {
            o.push(*res.get(n_state + k)?);
        }
    }
    let mut finals = state;
    for (k, mut o) in outs.into_iter().enumerate() {
        if out_dirs[k] != 0 {
            o.reverse();
        }
        let rank = g.ty(o[0]).shape.as_ref().map(|s| s.len() as i64 + 1);
        let ax = if out_axes[k] < 0 { out_axes[k] + rank? } else { out_axes[k] };
        finals.push(stack(g, &o, ax, &format!("{}/scan{k}", n.name), out)?);
    }
    let _ = DType::Bool;
    bind_outputs(n, &finals, out)
}
