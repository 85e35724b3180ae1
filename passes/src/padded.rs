//! Padded tensors: after `bounded.rs`, a data-dependent result is a padded tensor (static bound)
//! and a length value, marked by a `Prefix`. This pass pushes the padding through the nodes that
//! read such values, so that everything downstream has a static shape and compiles like any
//! other work: each padded value is (data of the bound's shape, the padded axis, the length
//! value). Nodes that work along other axes run on the padded data unchanged; nodes that work
//! along the padded axis become their bounded forms (TopKBounded, ConcatBounded, ReduceBounded,
//! a NonMaxSuppression told how many boxes are valid), a Slice of it shortens the length,
//! Shape gives the length where the padded dim is, and a Choose of two padded values selects
//! both data and length. Small integer tensors (shape vectors and what is computed from them)
//! carry per-element bounds, and which length an element equals, so a Reshape, a
//! ConstantOfShape or a TopK's K built from a length finds its bound. A `Prefix` is put back
//! before each graph output that is padded: the runtime returns its valid entries.
//! What reads a padded value in a way not listed here is an error naming the node.
use std::collections::HashMap;
use xforge_ir::{Attr, DType, Graph, Node, Op, OpKind, Tensor, ValueId, ValueType};

/// A padded value: data of the bound's shape, the padded axis and the length value (an i64
/// tensor of one element).
#[derive(Clone, Debug, PartialEq)]
struct Pad {
    data: ValueId,
    axis: usize,
    len: ValueId,
}

/// One element of a small integer tensor: its bounds and the length value it equals.
#[derive(Clone, Debug, PartialEq)]
struct Elem {
    lo: i64,
    hi: i64,
    len: Option<ValueId>,
}

impl Elem {
    fn exact(v: i64) -> Elem {
        Elem { lo: v, hi: v, len: None }
    }
}

/// Why a node cannot be padded: its name, op and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct NotPadded {
    pub node: String,
    pub op: String,
    pub why: String,
}

type R<T> = Result<T, String>;

struct Pass<'a> {
    g: &'a mut Graph,
    out: Vec<Node>,
    pads: HashMap<ValueId, Pad>,
    ints: HashMap<ValueId, Vec<Elem>>,
    /// Static shapes of the values this pass makes (their types are inferred afterwards).
    shapes: HashMap<ValueId, Vec<usize>>,
    /// Lengths already made: a one-element value as shape [1], the total of a bounded concat
    /// of parts with these lengths and bounds (one value per length, so that equal lengths
    /// compare equal).
    as_one: HashMap<ValueId, ValueId>,
    totals: HashMap<(usize, Vec<(ValueId, usize)>), ValueId>,
    n: usize,
}

fn ints_attr(n: &Node, k: &str) -> Option<Vec<i64>> {
    match n.attr(k) {
        Some(Attr::Ints(v)) => Some(v.clone()),
        Some(Attr::Int(v)) => Some(vec![*v]),
        _ => None,
    }
}

fn int_attr(n: &Node, k: &str, d: i64) -> i64 {
    match n.attr(k) {
        Some(Attr::Int(v)) => *v,
        _ => d,
    }
}

fn norm(a: i64, r: usize) -> R<usize> {
    let v = if a < 0 { a + r as i64 } else { a };
    if v < 0 || v as usize >= r.max(1) {
        return Err(format!("axis {a} is out of range for rank {r}"));
    }
    Ok(v as usize)
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

impl Pass<'_> {
    fn shape(&self, v: ValueId) -> Option<Vec<usize>> {
        if let Some(p) = self.pads.get(&v) {
            return self.shape(p.data);
        }
        self.shapes.get(&v).cloned().or_else(|| self.g.ty(v).static_shape())
    }

    fn shape_of(&self, v: ValueId) -> R<Vec<usize>> {
        self.shape(v).ok_or_else(|| format!("'{}' has no static (bound) shape", self.g.name_of(v)))
    }

    /// The value a node reads in place of `v` (its padded data where padded).
    fn data(&self, v: ValueId) -> ValueId {
        self.pads.get(&v).map(|p| p.data).unwrap_or(v)
    }

    fn fresh(&mut self, base: &str, dt: DType, shape: Option<Vec<usize>>) -> ValueId {
        self.n += 1;
        let v = self.g.add_value(format!("{base}/padded{}", self.n), ValueType::unranked(dt));
        self.g.undeclared.insert(v);
        if let Some(s) = shape {
            self.shapes.insert(v, s);
        }
        v
    }

    fn konst(&mut self, base: &str, t: Tensor) -> ValueId {
        self.n += 1;
        let v = self.g.add_value(format!("{base}/const{}", self.n), ValueType::known(t.dtype(), t.shape()));
        self.ints.insert(v, t.to_i64().into_iter().map(Elem::exact).collect());
        self.g.weights.insert(v, t);
        v
    }

    fn emit(&mut self, name: &str, op: Op, inputs: Vec<Option<ValueId>>, attrs: xforge_ir::Attrs, outputs: Vec<ValueId>) {
        self.n += 1;
        self.out.push(Node { name: format!("{name}/p{}", self.n), op, inputs, outputs: outputs.into_iter().map(Some).collect(), attrs });
    }

    /// `op(a, b)` on two one-element i64 tensors (lengths), as a new value of shape [1].
    fn scalar_op(&mut self, base: &str, op: Op, a: ValueId, b: ValueId) -> ValueId {
        let (a, b) = (self.as_one(base, a), self.as_one(base, b));
        let r = self.fresh(base, DType::I64, Some(vec![1]));
        self.emit(base, op, vec![Some(a), Some(b)], Default::default(), vec![r]);
        r
    }

    /// A one-element tensor as shape [1].
    fn as_one(&mut self, base: &str, v: ValueId) -> ValueId {
        if self.shape(v).as_deref() == Some(&[1]) {
            return v;
        }
        if let Some(&r) = self.as_one.get(&v) {
            return r;
        }
        let one = self.konst(base, Tensor::from_i64(vec![1], vec![1]));
        let r = self.fresh(base, self.g.ty(v).dtype, Some(vec![1]));
        self.emit(base, Op::Reshape, vec![Some(v), Some(one)], Default::default(), vec![r]);
        self.as_one.insert(v, r);
        r
    }

    /// Bounds of the elements of a small integer tensor.
    fn elems(&self, v: ValueId) -> Option<Vec<Elem>> {
        if let Some(e) = self.ints.get(&v) {
            return Some(e.clone());
        }
        let t = self.g.weights.get(&v)?;
        (!t.dtype().is_float() && t.len() <= 64).then(|| t.to_i64().into_iter().map(Elem::exact).collect())
    }
}

/// Pushes the padding of every `Prefix` through its readers; returns how many nodes it rewrote.
pub fn pad_data_dependent(g: &mut Graph) -> Result<usize, NotPadded> {
    if !g.nodes.iter().any(|n| n.op == Op::Prefix) {
        return Ok(0);
    }
    let nodes = std::mem::take(&mut g.nodes);
    let mut p = Pass { g, out: vec![], pads: HashMap::new(), ints: HashMap::new(), shapes: HashMap::new(), as_one: HashMap::new(), totals: HashMap::new(), n: 0 };
    let mut rewritten = 0;
    for n in &nodes {
        if n.op == Op::Prefix {
            let (Some(data), Some(len), Some(o)) = (n.inputs[0], n.inputs[1], n.outputs[0]) else { continue };
            let axis = int_attr(n, "axis", 0) as usize;
            p.pads.insert(o, Pad { data, axis, len });
            rewritten += 1;
            continue;
        }
        let padded_in = n.input_ids().any(|v| p.pads.contains_key(&v));
        let r = if padded_in { rewrite(&mut p, n).map(|_| rewritten += 1) } else { keep(&mut p, n) };
        if let Err(why) = r {
            // the graph stays as it was: the caller reports the node
            let err = NotPadded { node: n.name.clone(), op: n.op.to_string(), why };
            p.g.nodes = nodes;
            return Err(err);
        }
    }
    let outputs = p.g.outputs.clone();
    for o in outputs {
        if let Some(pd) = p.pads.get(&o).cloned() {
            let mut a: xforge_ir::Attrs = Default::default();
            a.insert("axis".into(), Attr::Int(pd.axis as i64));
            p.out.push(Node {
                name: format!("{}/prefix", p.g.name_of(o)),
                op: Op::Prefix,
                inputs: vec![Some(pd.data), Some(pd.len)],
                outputs: vec![Some(o)],
                attrs: a,
            });
        }
    }
    let out = std::mem::take(&mut p.out);
    g.nodes = out;
    Ok(rewritten)
}

/// A node without padded inputs: kept, with the element bounds of small integer results.
fn keep(p: &mut Pass, n: &Node) -> R<()> {
    if n.op == Op::ConstantOfShape {
        if let Some(spec) = n.inputs[0].and_then(|v| p.elems(v)) {
            if spec.iter().any(|e| e.lo != e.hi) {
                return fill(p, n, &spec);
            }
        }
    }
    p.out.push(n.clone());
    infer_kept(p, n)?;
    let Some(o) = n.outputs.first().copied().flatten() else { return Ok(()) };
    let ins: Vec<Option<Vec<Elem>>> = n.inputs.iter().map(|v| v.and_then(|v| p.elems(v))).collect();
    let e = |k: usize| ins.get(k).cloned().flatten();
    let elems: Option<Vec<Elem>> = (|| match n.op {
        Op::Identity | Op::Cast | Op::Reshape | Op::Squeeze | Op::Unsqueeze | Op::Flatten => e(0),
        Op::Concat => n.inputs.iter().map(|v| v.and_then(|v| p.elems(v))).collect::<Option<Vec<_>>>().map(|v| v.concat()),
        Op::Gather => {
            let (d, idx) = (e(0)?, p.g.weights.get(&n.inputs[1]?).map(|t| t.to_i64()));
            idx.map(|idx| idx.iter().filter_map(|&i| d.get(norm(i, d.len()).ok()?).cloned()).collect())
        }
        Op::ReduceMin | Op::ReduceMax | Op::ReduceProd | Op::ReduceSum => {
            let d = e(0)?;
            let fold = |f: fn(i64, i64) -> i64, init: i64, get: fn(&Elem) -> i64| d.iter().map(get).fold(init, f);
            let (lo, hi) = match n.op {
                Op::ReduceMin => (fold(i64::min, i64::MAX, |x| x.lo), fold(i64::min, i64::MAX, |x| x.hi)),
                Op::ReduceMax => (fold(i64::max, i64::MIN, |x| x.lo), fold(i64::max, i64::MIN, |x| x.hi)),
                Op::ReduceProd => (fold(|a, b| a.saturating_mul(b), 1, |x| x.lo), fold(|a, b| a.saturating_mul(b), 1, |x| x.hi)),
                _ => (fold(|a, b| a.saturating_add(b), 0, |x| x.lo), fold(|a, b| a.saturating_add(b), 0, |x| x.hi)),
            };
            // a min or max that is one of its elements keeps that element's length
            let len = d.iter().find(|x| x.lo == lo && x.hi == hi).and_then(|x| x.len);
            Some(vec![Elem { lo, hi, len }])
        }
        Op::Add | Op::Sub | Op::Mul | Op::Min | Op::Max => {
            let (a, b) = (e(0)?, e(1)?);
            let n_out = a.len().max(b.len());
            let at = |v: &Vec<Elem>, i: usize| v[if v.len() == 1 { 0 } else { i }].clone();
            (0..n_out)
                .map(|i| {
                    let (x, y) = (at(&a, i), at(&b, i));
                    let (lo, hi) = match n.op {
                        Op::Add => (x.lo.saturating_add(y.lo), x.hi.saturating_add(y.hi)),
                        Op::Sub => (x.lo.saturating_sub(y.hi), x.hi.saturating_sub(y.lo)),
                        Op::Min => (x.lo.min(y.lo), x.hi.min(y.hi)),
                        Op::Max => (x.lo.max(y.lo), x.hi.max(y.hi)),
                        _ => {
                            let c = [x.lo * y.lo, x.lo * y.hi, x.hi * y.lo, x.hi * y.hi];
                            (*c.iter().min().unwrap(), *c.iter().max().unwrap())
                        }
                    };
                    Some(Elem { lo, hi, len: None })
                })
                .collect()
        }
        _ => None,
    })();
    if let Some(el) = elems.filter(|v| v.len() <= 64) {
        p.ints.insert(o, el);
    }
    Ok(())
}

/// The static output shapes of a kept node, from what this pass knows of its inputs (their
/// types in the graph predate the padding).
fn infer_kept(p: &mut Pass, n: &Node) -> R<()> {
    if n.output_ids().all(|o| p.g.ty(o).static_shape().is_some()) {
        return Ok(());
    }
    let mut facts = vec![];
    for v in &n.inputs {
        facts.push(match *v {
            None => None,
            Some(v) => {
                let dt = p.g.ty(v).dtype;
                let shape = p.shape(v);
                let exact = p.elems(v).filter(|e| e.iter().all(|x| x.lo == x.hi));
                Some(match (p.g.weights.get(&v), exact, &shape) {
                    (Some(t), _, _) => xforge_ir::infer::Fact::constant(t.clone()),
                    (None, Some(e), Some(s)) if !dt.is_float() && numel(s) == e.len() => xforge_ir::infer::Fact::constant(
                        Tensor::from_i64(s.clone(), e.iter().map(|x| x.lo).collect()).cast(dt),
                    ),
                    _ => xforge_ir::infer::Fact {
                        ty: match shape {
                            Some(s) => ValueType::known(dt, &s),
                            None => p.g.ty(v).clone(),
                        },
                        konst: None,
                        dims: None,
                    },
                })
            }
        });
    }
    let mut fresh = Default::default();
    let outs = xforge_ir::infer::infer_node(n, &facts, p.g.opset, &mut fresh)?;
    for (o, f) in n.outputs.iter().zip(outs) {
        let Some(o) = *o else { continue };
        let s = f.ty.static_shape().ok_or("its result's shape depends on values known only at run time; not padded yet")?;
        p.shapes.insert(o, s);
    }
    Ok(())
}

/// ConstantOfShape of a shape with one entry equal to a length: the fill at the bound, padded
/// along that entry.
fn fill(p: &mut Pass, n: &Node, spec: &[Elem]) -> R<()> {
    let dynamic: Vec<usize> = (0..spec.len()).filter(|&i| spec[i].lo != spec[i].hi).collect();
    let [axis] = dynamic[..] else { return Err("a fill with more than one entry known only at run time".into()) };
    let len = spec[axis].len.ok_or("a fill whose size is no valid length")?;
    let bound: Vec<usize> = spec.iter().map(|e| e.hi.max(0) as usize).collect();
    let shape_v = p.konst(&n.name, Tensor::from_i64(vec![bound.len()], bound.iter().map(|&d| d as i64).collect()));
    let d = padded_out(p, n, 0, bound, axis, len);
    p.emit(&n.name, Op::ConstantOfShape, vec![Some(shape_v)], n.attrs.clone(), vec![d]);
    Ok(())
}

/// The output of a padded rewrite of node `n`: a fresh data value for output `k` (the original's
/// dtype) with the bound's shape, recorded as padded along `axis` with `len`.
fn padded_out(p: &mut Pass, n: &Node, k: usize, shape: Vec<usize>, axis: usize, len: ValueId) -> ValueId {
    let o = n.outputs[k].expect("the output exists");
    let dt = p.g.ty(o).dtype;
    let d = p.fresh(&n.name, dt, Some(shape));
    p.pads.insert(o, Pad { data: d, axis, len });
    d
}

fn rewrite(p: &mut Pass, n: &Node) -> R<()> {
    let pads: Vec<(usize, Pad)> =
        n.inputs.iter().enumerate().filter_map(|(k, v)| v.and_then(|v| p.pads.get(&v).cloned()).map(|pd| (k, pd))).collect();
    let inputs: Vec<Option<ValueId>> = n.inputs.iter().map(|v| v.map(|v| p.data(v))).collect();
    let first = pads[0].1.clone();
    match n.op {
        Op::Transpose => {
            let s = p.shape_of(first.data)?;
            let perm: Vec<usize> = match ints_attr(n, "perm") {
                Some(v) => v.iter().map(|&a| norm(a, s.len())).collect::<R<_>>()?,
                None => (0..s.len()).rev().collect(),
            };
            let axis = perm.iter().position(|&a| a == first.axis).ok_or("the perm misses the padded axis")?;
            let out: Vec<usize> = perm.iter().map(|&a| s[a]).collect();
            let d = padded_out(p, n, 0, out, axis, first.len);
            p.emit(&n.name, n.op, inputs, n.attrs.clone(), vec![d]);
        }
        Op::Unsqueeze | Op::Squeeze | Op::Reshape | Op::Flatten => reshape_like(p, n, &first, inputs)?,
        Op::Shape => {
            let s = p.shape_of(first.data)?;
            let r = s.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (start, end) = (clampi(int_attr(n, "start", 0)), clampi(int_attr(n, "end", r)));
            let mut parts = vec![];
            let mut elems = vec![];
            for (d, &dim) in s.iter().enumerate().take(end).skip(start) {
                if d == first.axis {
                    parts.push(p.as_one(&n.name, first.len));
                    elems.push(Elem { lo: 0, hi: dim as i64, len: Some(first.len) });
                } else {
                    parts.push(p.konst(&n.name, Tensor::from_i64(vec![1], vec![dim as i64])));
                    elems.push(Elem::exact(dim as i64));
                }
            }
            let o = n.outputs[0].ok_or("no output")?;
            let mut a: xforge_ir::Attrs = Default::default();
            a.insert("axis".into(), Attr::Int(0));
            p.shapes.insert(o, vec![parts.len()]);
            p.emit(&n.name, Op::Concat, parts.into_iter().map(Some).collect(), a, vec![o]);
            p.ints.insert(o, elems);
        }
        Op::Gather => {
            let ax = int_attr(n, "axis", 0);
            let ds = p.shape_of(inputs[0].ok_or("no data")?)?;
            let is = p.shape_of(inputs[1].ok_or("no indices")?)?;
            let a = norm(ax, ds.len())?;
            let data_pad = p.pads.get(&n.inputs[0].unwrap()).cloned();
            let idx_pad = p.pads.get(&n.inputs[1].unwrap()).cloned();
            let mut out: Vec<usize> = ds[..a].to_vec();
            out.extend(&is);
            out.extend(&ds[a + 1..]);
            // data padded off the gathered axis keeps its padding; along it, the indices choose
            let from_data = data_pad.filter(|d| d.axis != a).map(|d| {
                let axis = if d.axis < a { d.axis } else { d.axis + is.len() - 1 };
                (axis, d.len)
            });
            let from_idx = idx_pad.map(|i| (a + i.axis, i.len));
            let (axis, len) = match (from_data, from_idx) {
                (Some(_), Some(_)) => return Err("both the data and the indices are padded".into()),
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => {
                    // indices into the valid entries: the result has the indices' static shape
                    let o = n.outputs[0].ok_or("no output")?;
                    p.shapes.insert(o, out);
                    p.emit(&n.name, n.op, inputs, n.attrs.clone(), vec![o]);
                    return Ok(());
                }
            };
            let d = padded_out(p, n, 0, out, axis, len);
            p.emit(&n.name, n.op, inputs, n.attrs.clone(), vec![d]);
        }
        Op::GatherND => {
            if int_attr(n, "batch_dims", 0) != 0 || pads.iter().any(|(k, _)| *k == 0) {
                return Err("GatherND of padded data or with batch dims".into());
            }
            let ds = p.shape_of(inputs[0].ok_or("no data")?)?;
            let is = p.shape_of(first.data)?;
            let last = *is.last().ok_or("indices of rank 0")?;
            if first.axis + 1 >= is.len() {
                return Err("the indices are padded along their tuple axis".into());
            }
            let mut out = is[..is.len() - 1].to_vec();
            out.extend(&ds[last..]);
            let d = padded_out(p, n, 0, out, first.axis, first.len);
            p.emit(&n.name, n.op, inputs, n.attrs.clone(), vec![d]);
        }
        Op::TopK => topk(p, n, inputs)?,
        Op::ConstantOfShape => unreachable!("its shape operand is never padded"),
        Op::Concat => concat(p, n, &pads, inputs)?,
        Op::Slice => slice(p, n, &first, inputs)?,
        Op::Split => {
            let s = p.shape_of(first.data)?;
            let a = norm(int_attr(n, "axis", 0), s.len())?;
            if a == first.axis {
                return Err("a Split along the padded axis".into());
            }
            let parts = n.outputs.len();
            let sizes: Vec<usize> = match n.inputs.get(1).copied().flatten() {
                Some(v) => p.elems(v).ok_or("split sizes known only at run time")?.iter().map(|e| e.lo.max(0) as usize).collect(),
                None => match ints_attr(n, "split") {
                    Some(v) => v.iter().map(|&x| x.max(0) as usize).collect(),
                    None => {
                        let each = s[a].div_ceil(parts.max(1));
                        (0..parts).map(|k| each.min(s[a].saturating_sub(k * each))).collect()
                    }
                },
            };
            if sizes.len() != parts || sizes.iter().sum::<usize>() != s[a] {
                return Err(format!("split sizes {sizes:?} do not cover {}", s[a]));
            }
            let mut outs = vec![];
            for (k, &size) in sizes.iter().enumerate() {
                let mut os = s.clone();
                os[a] = size;
                outs.push(if n.outputs[k].is_some() {
                    padded_out(p, n, k, os, first.axis, first.len)
                } else {
                    p.fresh(&n.name, p.g.ty(first.data).dtype, Some(os))
                });
            }
            p.emit(&n.name, n.op, inputs, n.attrs.clone(), outs);
        }
        Op::ReduceMax | Op::ReduceMin | Op::ReduceSum | Op::ReduceMean | Op::ReduceProd => reduce(p, n, &first, inputs)?,
        Op::NonMaxSuppression => nms(p, n, &pads, inputs)?,
        Op::Choose => choose(p, n)?,
        op if matches!(op.kind(), OpKind::Elementwise | OpKind::Broadcast) => elementwise(p, n, &pads, inputs)?,
        op => return Err(format!("{op} reads a value whose shape depends on the data; not padded yet")),
    }
    Ok(())
}

/// Elementwise work: the padded axis (after broadcasting) and length carry over.
fn elementwise(p: &mut Pass, n: &Node, pads: &[(usize, Pad)], inputs: Vec<Option<ValueId>>) -> R<()> {
    let shapes: Vec<Vec<usize>> = inputs.iter().flatten().map(|&v| p.shape_of(v)).collect::<R<_>>()?;
    let r = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; r];
    for s in &shapes {
        for (d, &x) in s.iter().enumerate() {
            let at = d + r - s.len();
            if out[at] == 1 {
                out[at] = x;
            } else if x != 1 && x != out[at] {
                return Err(format!("padded shapes {shapes:?} do not broadcast"));
            }
        }
    }
    let mut target: Option<(usize, ValueId)> = None;
    for (k, pd) in pads {
        let rank = p.shape_of(inputs[*k].unwrap())?.len();
        let t = (pd.axis + r - rank, pd.len);
        match target {
            None => target = Some(t),
            Some(x) if x == t => {}
            Some(x) => {
                let (a, b) = (p.g.name_of(x.1), p.g.name_of(t.1));
                return Err(format!("operands padded along axes {} and {} to lengths '{a}' and '{b}'", x.0, t.0));
            }
        }
    }
    let (axis, len) = target.expect("a padded input");
    let outs: Vec<ValueId> = (0..n.outputs.len()).map(|k| padded_out(p, n, k, out.clone(), axis, len)).collect();
    p.emit(&n.name, n.op, inputs, n.attrs.clone(), outs);
    Ok(())
}

/// Where a row-major reshape of `ins` (padded along `axis`) into `outs` leaves that axis: the
/// output axis of the same size with the same element counts before and after it.
fn reshape_axis(ins: &[usize], axis: usize, outs: &[usize]) -> Option<usize> {
    let (before, after) = (numel(&ins[..axis]), numel(&ins[axis + 1..]));
    (0..outs.len()).find(|&j| outs[j] == ins[axis] && numel(&outs[..j]) == before && numel(&outs[j + 1..]) == after)
}

fn reshape_like(p: &mut Pass, n: &Node, first: &Pad, inputs: Vec<Option<ValueId>>) -> R<()> {
    let s = p.shape_of(first.data)?;
    let r = s.len();
    let out: Vec<usize> = match n.op {
        Op::Flatten => {
            let a = norm(int_attr(n, "axis", 1), r + 1)?;
            vec![numel(&s[..a]), numel(&s[a..])]
        }
        Op::Unsqueeze | Op::Squeeze => {
            let axes = match n.inputs.get(1).copied().flatten() {
                Some(v) => p.elems(v).ok_or("axes known only at run time")?.iter().map(|e| e.lo).collect(),
                None => ints_attr(n, "axes").unwrap_or_default(),
            };
            if n.op == Op::Unsqueeze {
                let rr = r + axes.len();
                let ax: Vec<usize> = axes.iter().map(|&a| norm(a, rr)).collect::<R<_>>()?;
                let mut it = s.iter();
                (0..rr).map(|d| if ax.contains(&d) { 1 } else { *it.next().unwrap_or(&1) }).collect()
            } else {
                let ax: Vec<usize> = if axes.is_empty() {
                    (0..r).filter(|&d| s[d] == 1).collect()
                } else {
                    axes.iter().map(|&a| norm(a, r)).collect::<R<_>>()?
                };
                if ax.contains(&first.axis) {
                    return Err("a Squeeze of the padded axis".into());
                }
                (0..r).filter(|d| !ax.contains(d)).map(|d| s[d]).collect()
            }
        }
        _ => {
            // Reshape: the target's elements, the padded one standing for the bound
            let spec = p.elems(n.inputs[1].ok_or("no shape")?).ok_or("a target shape known only at run time")?;
            let mut dims: Vec<i64> = vec![];
            for (i, e) in spec.iter().enumerate() {
                dims.push(if e.len == Some(first.len) {
                    s[first.axis] as i64
                } else if e.lo == e.hi {
                    if e.lo == 0 && int_attr(n, "allowzero", 0) == 0 { *s.get(i).ok_or("0 past the rank")? as i64 } else { e.lo }
                } else {
                    return Err("a target shape with an entry known only at run time".into());
                });
            }
            if let Some(at) = dims.iter().position(|&d| d == -1) {
                let rest: i64 = dims.iter().enumerate().filter(|&(i, _)| i != at).map(|(_, &d)| d).product();
                dims[at] = numel(&s) as i64 / rest.max(1);
            }
            dims.into_iter().map(|d| d as usize).collect()
        }
    };
    if numel(&out) != numel(&s) {
        return Err(format!("reshaping the padded {s:?} into {out:?}"));
    }
    let axis = reshape_axis(&s, first.axis, &out).ok_or_else(|| format!("{s:?} → {out:?} moves the padded axis"))?;
    let shape_v = p.konst(&n.name, Tensor::from_i64(vec![out.len()], out.iter().map(|&d| d as i64).collect()));
    let d = padded_out(p, n, 0, out, axis, first.len);
    p.emit(&n.name, Op::Reshape, vec![inputs[0], Some(shape_v)], Default::default(), vec![d]);
    Ok(())
}

fn topk(p: &mut Pass, n: &Node, inputs: Vec<Option<ValueId>>) -> R<()> {
    let x = n.inputs[0].ok_or("no data")?;
    let s = p.shape_of(p.data(x))?;
    let axis = norm(int_attr(n, "axis", -1), s.len())?;
    let xpad = p.pads.get(&x).cloned();
    if xpad.as_ref().is_some_and(|d| d.axis != axis) {
        return Err("a TopK across the padded axis".into());
    }
    let k = n.inputs[1].ok_or("no K")?;
    let ke = p.elems(k).and_then(|e| e.first().cloned()).ok_or("K's bound is unknown")?;
    let bound = (ke.hi.max(0) as usize).min(s[axis]);
    let len = match &xpad {
        Some(d) => d.len,
        None => p.konst(&n.name, Tensor::from_i64(vec![1], vec![s[axis] as i64])),
    };
    let kk = p.data(k);
    let mut a = n.attrs.clone();
    a.insert("axis".into(), Attr::Int(axis as i64));
    a.insert("bound".into(), Attr::Int(bound as i64));
    let mut out = s.clone();
    out[axis] = bound;
    let k1 = p.as_one(&n.name, kk);
    let v = padded_out(p, n, 0, out.clone(), axis, k1);
    let i = if n.outputs.get(1).copied().flatten().is_some() {
        padded_out(p, n, 1, out.clone(), axis, k1)
    } else {
        p.fresh(&n.name, DType::I64, Some(out))
    };
    p.emit(&n.name, Op::TopKBounded, vec![inputs[0], Some(k1), Some(len)], a, vec![v, i]);
    Ok(())
}

fn concat(p: &mut Pass, n: &Node, pads: &[(usize, Pad)], inputs: Vec<Option<ValueId>>) -> R<()> {
    let s0 = p.shape_of(inputs[0].ok_or("no input")?)?;
    let a = norm(int_attr(n, "axis", 0), s0.len())?;
    if pads.iter().all(|(_, pd)| pd.axis != a) {
        // along another axis: every padded part shares the length
        let first = &pads[0].1;
        if pads.iter().any(|(_, pd)| pd.len != first.len || pd.axis != first.axis) {
            return Err("parts padded to different lengths".into());
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().flatten().map(|&v| p.shape_of(v)).collect::<R<_>>()?;
        let mut out = shapes[0].clone();
        out[a] = shapes.iter().map(|s| s[a]).sum();
        let d = padded_out(p, n, 0, out, first.axis, first.len);
        p.emit(&n.name, n.op, inputs, n.attrs.clone(), vec![d]);
        return Ok(());
    }
    // along the padded axis: the valid entries of each part, one after another
    let mut args = vec![];
    let mut parts = vec![];
    let mut out = s0.clone();
    out[a] = 0;
    for (k, v) in inputs.iter().enumerate() {
        let v = v.ok_or("a missing part")?;
        let s = p.shape_of(v)?;
        out[a] += s[a];
        let len = match pads.iter().find(|(j, _)| *j == k) {
            Some((_, pd)) if pd.axis == a => pd.len,
            Some(_) => return Err("parts padded along different axes".into()),
            None => p.konst(&n.name, Tensor::from_i64(vec![1], vec![s[a] as i64])),
        };
        args.push(Some(v));
        args.push(Some(len));
        parts.push((len, s[a]));
    }
    let o = n.outputs[0].ok_or("no output")?;
    let dt = p.g.ty(o).dtype;
    let d = p.fresh(&n.name, dt, Some(out));
    let l = p.fresh(&n.name, DType::I64, Some(vec![]));
    let mut at: xforge_ir::Attrs = Default::default();
    at.insert("axis".into(), Attr::Int(a as i64));
    p.emit(&n.name, Op::ConcatBounded, args, at, vec![d, l]);
    // parts of the same lengths give the same total: one value for it
    let l = *p.totals.entry((a, parts)).or_insert(l);
    p.pads.insert(o, Pad { data: d, axis: a, len: l });
    Ok(())
}

fn slice(p: &mut Pass, n: &Node, first: &Pad, inputs: Vec<Option<ValueId>>) -> R<()> {
    let s = p.shape_of(first.data)?;
    let r = s.len();
    let konst = |p: &Pass, k: usize| -> R<Option<Vec<i64>>> {
        match n.inputs.get(k).copied().flatten() {
            None => Ok(None),
            Some(v) => p.g.weights.get(&v).map(|t| Some(t.to_i64())).ok_or_else(|| "a Slice bound known only at run time".into()),
        }
    };
    let (starts, ends) = (konst(p, 1)?.ok_or("no starts")?, konst(p, 2)?.ok_or("no ends")?);
    let axes: Vec<usize> = match konst(p, 3)? {
        Some(v) => v.iter().map(|&a| norm(a, r)).collect::<R<_>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = konst(p, 4)?.unwrap_or(vec![1; starts.len()]);
    let mut out = s.clone();
    let mut len = first.len;
    for (j, &ax) in axes.iter().enumerate() {
        if ax == first.axis {
            if steps[j] != 1 || starts[j] < 0 || ends[j] < 0 {
                return Err("a Slice of the padded axis from its end or with a step".into());
            }
            let (b, e) = ((starts[j] as usize).min(s[ax]), (ends[j].max(0) as usize).min(s[ax]));
            out[ax] = e.saturating_sub(b);
            if b == 0 && e == s[ax] {
                continue; // the whole axis: the same length
            }
            // the length: min(max(len − start, 0), end − start)
            let sv = p.konst(&n.name, Tensor::from_i64(vec![1], vec![b as i64]));
            let l = p.scalar_op(&n.name, Op::Sub, len, sv);
            let z = p.konst(&n.name, Tensor::from_i64(vec![1], vec![0]));
            let l = p.scalar_op(&n.name, Op::Max, l, z);
            let w = p.konst(&n.name, Tensor::from_i64(vec![1], vec![out[ax] as i64]));
            len = p.scalar_op(&n.name, Op::Min, l, w);
        } else {
            out[ax] = xforge_ir::interp::slice_len(s[ax] as i64, starts[j], ends[j], steps[j]);
        }
    }
    let d = padded_out(p, n, 0, out, first.axis, len);
    p.emit(&n.name, n.op, inputs, n.attrs.clone(), vec![d]);
    Ok(())
}

fn reduce(p: &mut Pass, n: &Node, first: &Pad, inputs: Vec<Option<ValueId>>) -> R<()> {
    let s = p.shape_of(first.data)?;
    let r = s.len();
    let axes: Vec<i64> = match n.inputs.get(1).copied().flatten() {
        Some(v) => p.g.weights.get(&v).map(|t| t.to_i64()).ok_or("axes known only at run time")?,
        None => ints_attr(n, "axes").unwrap_or_default(),
    };
    let axes: Vec<usize> =
        if axes.is_empty() { (0..r).collect() } else { axes.iter().map(|&a| norm(a, r)).collect::<R<_>>()? };
    let keep = int_attr(n, "keepdims", 1) != 0;
    let out: Vec<usize> =
        (0..r).filter_map(|d| if axes.contains(&d) { keep.then_some(1) } else { Some(s[d]) }).collect();
    let o = n.outputs[0].ok_or("no output")?;
    if axes.contains(&first.axis) {
        // over the valid entries only
        let mut a: xforge_ir::Attrs = Default::default();
        a.insert("reduce".into(), Attr::Str(n.op.name().into()));
        a.insert("axes".into(), Attr::Ints(axes.iter().map(|&x| x as i64).collect()));
        a.insert("keepdims".into(), Attr::Int(keep as i64));
        a.insert("axis".into(), Attr::Int(first.axis as i64));
        p.shapes.insert(o, out);
        p.emit(&n.name, Op::ReduceBounded, vec![inputs[0], Some(first.len)], a, vec![o]);
    } else {
        let axis = if keep { first.axis } else { first.axis - axes.iter().filter(|&&a| a < first.axis).count() };
        let d = padded_out(p, n, 0, out, axis, first.len);
        p.emit(&n.name, n.op, inputs, n.attrs.clone(), vec![d]);
    }
    Ok(())
}

fn nms(p: &mut Pass, n: &Node, pads: &[(usize, Pad)], inputs: Vec<Option<ValueId>>) -> R<()> {
    let (b, sc) = (p.shape_of(inputs[0].ok_or("no boxes")?)?, p.shape_of(inputs[1].ok_or("no scores")?)?);
    let len = match pads {
        [(0, bp), (1, sp)] if bp.axis == 1 && sp.axis == 2 && bp.len == sp.len => bp.len,
        _ => return Err("boxes and scores padded other than along the boxes to one length".into()),
    };
    let per_class = match n.inputs.get(2).copied().flatten() {
        None => 0,
        Some(v) => match p.g.weights.get(&v) {
            Some(t) => (t.to_i64().first().copied().unwrap_or(0).max(0) as usize).min(b[1]),
            None => b[1],
        },
    };
    let bound = b[0] * sc[1] * per_class;
    let mut args = inputs.clone();
    args.resize(5, None);
    args.push(Some(len));
    let mut a = n.attrs.clone();
    a.insert("bounded_op".into(), Attr::Str("NonMaxSuppression".into()));
    a.insert("bounded_axis".into(), Attr::Int(0));
    a.insert("bound".into(), Attr::Int(bound as i64));
    let o = n.outputs[0].ok_or("no output")?;
    let d = p.fresh(&n.name, DType::I64, Some(vec![bound, 3]));
    let l = p.fresh(&n.name, DType::I64, Some(vec![]));
    p.emit(&n.name, Op::Bounded, args, a, vec![d, l]);
    p.pads.insert(o, Pad { data: d, axis: 0, len: l });
    Ok(())
}

/// Choose(c, a, b) of padded values: the data of both selected element by element (one bound),
/// the length by the condition; an empty branch gives length 0 and the other's data.
fn choose(p: &mut Pass, n: &Node) -> R<()> {
    let (c, a, b) = (n.inputs[0].ok_or("no condition")?, n.inputs[1].ok_or("no a")?, n.inputs[2].ok_or("no b")?);
    let (pa, pb) = (p.pads.get(&a).cloned(), p.pads.get(&b).cloned());
    let empty = |p: &Pass, v: ValueId| p.shape(v).is_some_and(|s| numel(&s) == 0);
    let o = n.outputs[0].ok_or("no output")?;
    let zero = p.konst(&n.name, Tensor::from_i64(vec![1], vec![0]));
    let c1 = p.as_one(&n.name, c);
    let (data, axis, la, lb) = match (pa, pb) {
        (Some(x), Some(y)) if x.axis == y.axis && p.shape(x.data) == p.shape(y.data) => {
            let s = p.shape_of(x.data)?;
            let d = p.fresh(&n.name, p.g.ty(o).dtype, Some(s));
            p.emit(&n.name, Op::Where, vec![Some(c), Some(x.data), Some(y.data)], Default::default(), vec![d]);
            (d, x.axis, x.len, y.len)
        }
        (None, Some(y)) if empty(p, a) => (y.data, y.axis, zero, y.len),
        (Some(x), None) if empty(p, b) => (x.data, x.axis, x.len, zero),
        _ => return Err("a choice between values that are not padded alike".into()),
    };
    let (la, lb) = (p.as_one(&n.name, la), p.as_one(&n.name, lb));
    let l = p.fresh(&n.name, DType::I64, Some(vec![1]));
    p.emit(&n.name, Op::Where, vec![Some(c1), Some(la), Some(lb)], Default::default(), vec![l]);
    p.pads.insert(o, Pad { data, axis, len: l });
    Ok(())
}
