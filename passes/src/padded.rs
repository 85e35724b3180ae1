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
        if !t.dtype().is_float() && t.len() <= 64 {
            self.ints.insert(v, t.to_i64().into_iter().map(Elem::exact).collect());
        }
        self.g.weights.insert(v, t);
        v
    }

    fn emit(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        attrs: xforge_ir::Attrs,
        outputs: Vec<ValueId>,
    ) {
        self.n += 1;
        self.out.push(Node {
            name: format!("{name}/p{}", self.n),
            op,
            inputs,
            outputs: outputs.into_iter().map(Some).collect(),
            attrs,
        });
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

    /// Makes integer value `o` a weight when all its elements are exact; whether it did.
    fn fold_exact(&mut self, o: ValueId) -> bool {
        let dt = self.g.ty(o).dtype;
        let (Some(e), Some(shape)) = (self.ints.get(&o), self.shape(o)) else { return false };
        if dt.is_float() || dt == DType::Bool || numel(&shape) != e.len() || e.iter().any(|x| x.lo != x.hi) {
            return false;
        }
        let t = Tensor::from_i64(shape, e.iter().map(|x| x.lo).collect()).cast(dt);
        self.g.weights.insert(o, t);
        true
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
    let mut p = Pass {
        g,
        out: vec![],
        pads: HashMap::new(),
        ints: HashMap::new(),
        shapes: HashMap::new(),
        as_one: HashMap::new(),
        totals: HashMap::new(),
        n: 0,
    };
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
    if n.op == Op::Expand
        && n.inputs.get(1).copied().flatten().and_then(|v| p.elems(v)).is_some_and(|e| e.iter().any(|x| x.lo != x.hi))
    {
        return expand(p, n, None, n.inputs.clone());
    }
    if n.op == Op::Range {
        if let Some(r) = range(p, n) {
            return r;
        }
    }
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
        Op::Concat => {
            n.inputs.iter().map(|v| v.and_then(|v| p.elems(v))).collect::<Option<Vec<_>>>().map(|v| v.concat())
        }
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
                Op::ReduceProd => {
                    (fold(|a, b| a.saturating_mul(b), 1, |x| x.lo), fold(|a, b| a.saturating_mul(b), 1, |x| x.hi))
                }
                _ => (fold(|a, b| a.saturating_add(b), 0, |x| x.lo), fold(|a, b| a.saturating_add(b), 0, |x| x.hi)),
            };
            // a min or max that is one of its elements keeps that element's length
            let len = d.iter().find(|x| x.lo == lo && x.hi == hi).and_then(|x| x.len);
            Some(vec![Elem { lo, hi, len }])
        }
        Op::Equal | Op::Less | Op::Greater => {
            // decided where the bounds do not overlap (a length, never negative, against -1)
            let (a, b) = (e(0)?, e(1)?);
            let at = |v: &Vec<Elem>, i: usize| v[if v.len() == 1 { 0 } else { i }].clone();
            (0..a.len().max(b.len()))
                .map(|i| {
                    let (x, y) = (at(&a, i), at(&b, i));
                    let known = |t: bool| Some(Elem::exact(t as i64));
                    match n.op {
                        Op::Equal if x.lo == x.hi && y.lo == y.hi => known(x.lo == y.lo),
                        Op::Equal if x.hi < y.lo || y.hi < x.lo => known(false),
                        Op::Equal if x.len.is_some() && x.len == y.len => known(true),
                        Op::Less if x.hi < y.lo => known(true),
                        Op::Less if x.lo >= y.hi => known(false),
                        Op::Greater if x.lo > y.hi => known(true),
                        Op::Greater if x.hi <= y.lo => known(false),
                        _ => None,
                    }
                })
                .collect()
        }
        Op::Where => {
            let (c, a, b) = (e(0)?, e(1)?, e(2)?);
            let at = |v: &Vec<Elem>, i: usize| v[if v.len() == 1 { 0 } else { i }].clone();
            let n_out = c.len().max(a.len()).max(b.len());
            (0..n_out)
                .map(|i| {
                    let ci = at(&c, i);
                    (ci.lo == ci.hi).then(|| if ci.lo != 0 { at(&a, i) } else { at(&b, i) })
                })
                .collect()
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
                    // x + 0, x · 1, x − 0 are x
                    let len = match n.op {
                        Op::Add if y.lo == 0 && y.hi == 0 => x.len,
                        Op::Add if x.lo == 0 && x.hi == 0 => y.len,
                        Op::Sub if y.lo == 0 && y.hi == 0 => x.len,
                        Op::Mul if y.lo == 1 && y.hi == 1 => x.len,
                        Op::Mul if x.lo == 1 && x.hi == 1 => y.len,
                        _ => None,
                    };
                    Some(Elem { lo, hi, len })
                })
                .collect()
        }
        _ => None,
    })();
    if let Some(el) = elems.filter(|v| v.len() <= 64) {
        p.ints.insert(o, el);
    }
    // every element known: a constant (what reads it sees a weight, as folding would give)
    if n.outputs.len() == 1 && p.fold_exact(o) {
        p.out.pop();
    }
    Ok(())
}

/// The static output shapes of a kept node, from what this pass knows of its inputs (their
/// types in the graph predate the padding).
fn infer_kept(p: &mut Pass, n: &Node) -> R<()> {
    if n.output_ids().all(|o| p.g.ty(o).static_shape().is_some()) {
        return Ok(());
    }
    let facts = infer_facts(p, n)?;
    for (o, f) in n.outputs.iter().zip(facts) {
        let Some(o) = *o else { continue };
        p.shapes.insert(o, static_shape(&f)?);
        // a value inference computes (a Shape of a static shape): its elements are exact
        if let Some(t) = f.konst.filter(|t| !t.dtype().is_float() && t.len() <= 64) {
            p.ints.insert(o, t.to_i64().into_iter().map(Elem::exact).collect());
        }
    }
    Ok(())
}

fn static_shape(f: &xforge_ir::infer::Fact) -> R<Vec<usize>> {
    f.ty.static_shape()
        .ok_or_else(|| "its result's shape depends on values known only at run time; not padded yet".into())
}

/// The static output shapes of `n` with each padded input at its bound.
fn infer_static(p: &Pass, n: &Node) -> R<Vec<Vec<usize>>> {
    infer_facts(p, n)?.iter().map(static_shape).collect()
}

/// What inference knows of `n`'s outputs with each padded input at its bound.
fn infer_facts(p: &Pass, n: &Node) -> R<Vec<xforge_ir::infer::Fact>> {
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
                    (None, Some(e), Some(s)) if !dt.is_float() && numel(s) == e.len() => {
                        xforge_ir::infer::Fact::constant(
                            Tensor::from_i64(s.clone(), e.iter().map(|x| x.lo).collect()).cast(dt),
                        )
                    }
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
    xforge_ir::infer::infer_node(n, &facts, p.g.opset, &mut fresh)
}

/// Ops whose rows are independent: (padded) input `k`'s axis 0 is the output's axis 0, every
/// output row computed from that input row alone (the batch of a Conv, the boxes of a
/// RoiAlign, the rows of a Gemm). None for any other op or input.
fn row_input(n: &Node, k: usize) -> bool {
    use Op::*;
    match n.op {
        RoiAlign => k == 1 || k == 2,
        Gemm => k == 0 && int_attr(n, "transA", 0) == 0,
        Conv
        | ConvTranspose
        | MaxPool
        | AveragePool
        | LpPool
        | GlobalAveragePool
        | GlobalMaxPool
        | BatchNormalization
        | InstanceNormalization
        | GroupNormalization
        | Resize
        | Upsample
        | DepthToSpace
        | SpaceToDepth => k == 0,
        Softmax | LogSoftmax => k == 0 && int_attr(n, "axis", -1) != 0,
        LayerNormalization => k == 0 && int_attr(n, "axis", -1) != 0,
        ArgMax | ArgMin => k == 0 && int_attr(n, "axis", 0) != 0,
        _ => false,
    }
}

/// A row-wise op on rows padded along axis 0: its outputs padded alike.
fn rowwise(p: &mut Pass, n: &Node, pads: &[(usize, Pad)], inputs: Vec<Option<ValueId>>) -> R<()> {
    let len = pads[0].1.len;
    for (k, pd) in pads {
        if !row_input(n, *k) || pd.axis != 0 || pd.len != len {
            return Err(format!("input {k} is padded along axis {}, not as the rows of a row-wise op", pd.axis));
        }
    }
    let shapes = infer_static(p, n)?;
    let outs: Vec<ValueId> = shapes.into_iter().enumerate().map(|(k, s)| padded_out(p, n, k, s, 0, len)).collect();
    p.emit(&n.name, n.op, inputs, n.attrs.clone(), outs);
    Ok(())
}

/// Expand of (padded) `x` to a shape whose entries may be lengths: to the bounds, padded along
/// the axis that a length (or `x`'s padding) lands on.
fn expand(p: &mut Pass, n: &Node, x: Option<Pad>, inputs: Vec<Option<ValueId>>) -> R<()> {
    let xs = p.shape_of(inputs[0].ok_or("no input")?)?;
    let spec = p.elems(n.inputs[1].ok_or("no shape")?).ok_or("a target shape known only at run time")?;
    let r = xs.len().max(spec.len());
    let mut out = vec![1usize; r];
    let mut padded: Option<(usize, ValueId)> = x.map(|pd| (pd.axis + r - xs.len(), pd.len));
    for (i, e) in spec.iter().enumerate() {
        let at = i + r - spec.len();
        let d = if e.lo == e.hi {
            e.lo.max(0) as usize
        } else {
            let l = e.len.ok_or("a target shape entry known only at run time")?;
            match padded {
                None => padded = Some((at, l)),
                Some(pl) if pl == (at, l) => {}
                Some(_) => return Err("a target shape padded along another axis or length".into()),
            }
            e.hi.max(0) as usize
        };
        out[at] = d;
    }
    for (i, &d) in xs.iter().enumerate() {
        let at = i + r - xs.len();
        if out[at] == 1 {
            out[at] = d;
        } else if d != 1 && d != out[at] {
            return Err(format!("{xs:?} does not expand to {out:?}"));
        }
    }
    let (axis, len) = padded.ok_or("nothing padded")?;
    let shape_v = p.konst(&n.name, Tensor::from_i64(vec![r], out.iter().map(|&d| d as i64).collect()));
    let d = padded_out(p, n, 0, out, axis, len);
    p.emit(&n.name, Op::Expand, vec![inputs[0], Some(shape_v)], Default::default(), vec![d]);
    Ok(())
}

/// Scatter of updates padded along axis 0 (their indices alike): the padding rows are sent to
/// an extra row of the data, cut off afterwards. Data padded along an axis keeps its padding.
fn scatter(p: &mut Pass, n: &Node, pads: &[(usize, Pad)], inputs: Vec<Option<ValueId>>) -> R<()> {
    let name = n.name.clone();
    let (data, idx, upd) =
        (inputs[0].ok_or("no data")?, inputs[1].ok_or("no indices")?, inputs[2].ok_or("no updates")?);
    let ds = p.shape_of(data)?;
    let is = p.shape_of(idx)?;
    let data_pad = pads.iter().find(|(k, _)| *k == 0).map(|(_, pd)| pd.clone());
    let rows: Vec<&Pad> = pads.iter().filter(|(k, _)| *k != 0).map(|(_, pd)| pd).collect();
    let axis = norm(int_attr(n, "axis", 0), ds.len())?;
    let mut a = n.attrs.clone();
    let (mut data, mut idx) = (data, idx);
    if !rows.is_empty() {
        let len = rows[0].len;
        if rows.len() != 2 || rows.iter().any(|pd| pd.axis != 0 || pd.len != len) {
            return Err("indices and updates padded other than alike along axis 0".into());
        }
        if axis != 0 || ds.is_empty() {
            return Err("a scatter of padded rows along another axis".into());
        }
        // the padding rows' indices point at row ds[0], one past the data
        let mut iota_shape = vec![1usize; is.len()];
        iota_shape[0] = is[0];
        let iota = p.konst(&name, Tensor::from_i64(iota_shape.clone(), (0..is[0] as i64).collect()));
        let l1 = p.as_one(&name, len);
        let inside = p.fresh(&name, DType::Bool, Some(iota_shape));
        p.emit(&name, Op::Less, vec![Some(iota), Some(l1)], Default::default(), vec![inside]);
        let spare = p.konst(&name, Tensor::from_i64(vec![], vec![ds[0] as i64]).cast(p.g.ty(idx).dtype));
        let idx2 = p.fresh(&name, p.g.ty(idx).dtype, Some(is.clone()));
        p.emit(&name, Op::Where, vec![Some(inside), Some(idx), Some(spare)], Default::default(), vec![idx2]);
        let mut zs = ds.clone();
        zs[0] = 1;
        let dt = p.g.ty(data).dtype;
        let zero = p.konst(&name, Tensor::from_f64(dt, zs, &vec![0.0; numel(&ds[1..])]));
        let mut big = ds.clone();
        big[0] += 1;
        let data2 = p.fresh(&name, dt, Some(big.clone()));
        a.insert("axis".into(), Attr::Int(0));
        let mut ca: xforge_ir::Attrs = Default::default();
        ca.insert("axis".into(), Attr::Int(0));
        p.emit(&name, Op::Concat, vec![Some(data), Some(zero)], ca, vec![data2]);
        data = data2;
        idx = idx2;
        let wide = p.fresh(&name, dt, Some(big));
        let mut args = inputs.clone();
        args[0] = Some(data);
        args[1] = Some(idx);
        p.emit(&name, n.op, args, a, vec![wide]);
        // the spare row cut off
        let (s0, e0, ax0) = (
            p.konst(&name, Tensor::from_i64(vec![1], vec![0])),
            p.konst(&name, Tensor::from_i64(vec![1], vec![ds[0] as i64])),
            p.konst(&name, Tensor::from_i64(vec![1], vec![0])),
        );
        let out = finish_out(p, n, ds, data_pad);
        p.emit(&name, Op::Slice, vec![Some(wide), Some(s0), Some(e0), Some(ax0)], Default::default(), vec![out]);
        return Ok(());
    }
    let _ = upd;
    let out = finish_out(p, n, ds, data_pad);
    p.emit(&name, n.op, inputs, a, vec![out]);
    Ok(())
}

/// Output 0 of `n` with shape `shape`: padded like `pad` when given, else static.
fn finish_out(p: &mut Pass, n: &Node, shape: Vec<usize>, pad: Option<Pad>) -> ValueId {
    match pad {
        Some(pd) => padded_out(p, n, 0, shape, pd.axis, pd.len),
        None => {
            let o = n.outputs[0].expect("the output exists");
            p.shapes.insert(o, shape);
            o
        }
    }
}

/// MatMul of rows padded along an axis before the last by an unpadded matrix: padded alike.
fn matmul(p: &mut Pass, n: &Node, pads: &[(usize, Pad)], inputs: Vec<Option<ValueId>>) -> R<()> {
    let [(0, pd)] = pads else { return Err("the right operand of a MatMul is padded".into()) };
    let (a, b) = (p.shape_of(inputs[0].ok_or("no a")?)?, p.shape_of(inputs[1].ok_or("no b")?)?);
    if b.len() > 2 || pd.axis + 1 >= a.len() {
        return Err("a MatMul padded along its contracted axis or with a batched right operand".into());
    }
    let shapes = infer_static(p, n)?;
    let out = shapes.into_iter().next().ok_or("no output")?;
    let axis = pd.axis + out.len() - a.len();
    let d = padded_out(p, n, 0, out, axis, pd.len);
    p.emit(&n.name, n.op, inputs, n.attrs.clone(), vec![d]);
    Ok(())
}

/// Range(start, limit, 1) with constant start and a limit known only by its bounds (a length):
/// the values up to the largest limit, padded, the length limit − start. None where the bounds
/// are exact (ordinary folding) or unknown.
fn range(p: &mut Pass, n: &Node) -> Option<R<()>> {
    let e = |k: usize| n.inputs.get(k).copied().flatten().and_then(|v| p.elems(v)).and_then(|e| e.first().cloned());
    let (start, limit, delta) = (e(0)?, e(1)?, e(2)?);
    if limit.lo == limit.hi {
        return None;
    }
    Some((|| {
        if start.lo != start.hi || delta.lo != 1 || delta.hi != 1 {
            return Err("a Range with a runtime limit and a runtime start or a step other than 1".into());
        }
        let bound = (limit.hi - start.lo).max(0) as usize;
        let o = n.outputs[0].ok_or("no output")?;
        let dt = p.g.ty(o).dtype;
        let values = Tensor::from_i64(vec![bound], (0..bound as i64).map(|i| start.lo + i).collect()).cast(dt);
        let data = p.konst(&n.name, values);
        // a limit that is a length, from 0: that length
        if let (0, Some(l)) = (start.lo, limit.len) {
            p.pads.insert(o, Pad { data, axis: 0, len: l });
            return Ok(());
        }
        // else min(max(limit − start, 0), bound), from the limit's value
        let lim = p.data(n.inputs[1].ok_or("no limit")?);
        let lim = if dt == DType::I64 {
            lim
        } else {
            let c = p.fresh(&n.name, DType::I64, p.shape(lim));
            let mut a: xforge_ir::Attrs = Default::default();
            a.insert("to".into(), Attr::Int(DType::I64.onnx_code() as i64));
            p.emit(&n.name, Op::Cast, vec![Some(lim)], a, vec![c]);
            c
        };
        let s = p.konst(&n.name, Tensor::from_i64(vec![1], vec![start.lo]));
        let l = p.scalar_op(&n.name, Op::Sub, lim, s);
        let z = p.konst(&n.name, Tensor::from_i64(vec![1], vec![0]));
        let l = p.scalar_op(&n.name, Op::Max, l, z);
        let b = p.konst(&n.name, Tensor::from_i64(vec![1], vec![bound as i64]));
        let len = p.scalar_op(&n.name, Op::Min, l, b);
        p.pads.insert(o, Pad { data, axis: 0, len });
        Ok(())
    })())
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
    let pads: Vec<(usize, Pad)> = n
        .inputs
        .iter()
        .enumerate()
        .filter_map(|(k, v)| v.and_then(|v| p.pads.get(&v).cloned()).map(|pd| (k, pd)))
        .collect();
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
            p.ints.insert(o, elems);
            if !p.fold_exact(o) {
                p.emit(&n.name, Op::Concat, parts.into_iter().map(Some).collect(), a, vec![o]);
            }
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
                Some(v) => p
                    .elems(v)
                    .ok_or("split sizes known only at run time")?
                    .iter()
                    .map(|e| e.lo.max(0) as usize)
                    .collect(),
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
        Op::ReduceMax | Op::ReduceMin | Op::ReduceSum | Op::ReduceMean | Op::ReduceProd => {
            reduce(p, n, &first, inputs)?
        }
        Op::NonMaxSuppression => nms(p, n, &pads, inputs)?,
        Op::NonZero => {
            // the coordinates of the non-zero valid entries: padding stays out
            let s = p.shape_of(first.data)?;
            let bound = numel(&s);
            let mut a: xforge_ir::Attrs = n.attrs.clone();
            a.insert("bounded_op".into(), Attr::Str("NonZero".into()));
            a.insert("bounded_axis".into(), Attr::Int(1));
            a.insert("bound".into(), Attr::Int(bound as i64));
            a.insert("valid_axis".into(), Attr::Int(first.axis as i64));
            let o = n.outputs[0].ok_or("no output")?;
            let d = p.fresh(&n.name, DType::I64, Some(vec![s.len(), bound]));
            let l = p.fresh(&n.name, DType::I64, Some(vec![]));
            p.emit(&n.name, Op::Bounded, vec![inputs[0], Some(first.len)], a, vec![d, l]);
            p.pads.insert(o, Pad { data: d, axis: 1, len: l });
        }
        Op::Choose => choose(p, n)?,
        Op::MatMul => matmul(p, n, &pads, inputs)?,
        Op::ScatterElements => scatter(p, n, &pads, inputs)?,
        Op::Expand if pads.len() == 1 && pads[0].0 == 0 => expand(p, n, Some(first), inputs)?,
        _ if pads.iter().all(|(k, _)| row_input(n, *k)) => rowwise(p, n, &pads, inputs)?,
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

/// The output axis that the padded axis `axis` of `ins`, merged with the axes right after it,
/// becomes: the same element count before it, and a size that is the padded size times the
/// sizes of whole axes that follow.
fn merged_axis(ins: &[usize], axis: usize, outs: &[usize]) -> Option<usize> {
    let before = numel(&ins[..axis]);
    (0..outs.len()).find(|&j| {
        if numel(&outs[..j]) != before || ins[axis] == 0 || outs[j] % ins[axis] != 0 {
            return false;
        }
        let m = outs[j] / ins[axis];
        (axis + 1..=ins.len()).any(|t| numel(&ins[axis + 1..t]) == m && numel(&ins[t..]) == numel(&outs[j + 1..]))
    })
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
                    let l = |v: Option<ValueId>| v.map(|v| p.g.name_of(v).to_string()).unwrap_or_default();
                    return Err(format!(
                        "a target shape with an entry known only at run time (entry {i} in [{}, {}], length '{}'; the data's length '{}')",
                        e.lo,
                        e.hi,
                        l(e.len),
                        l(Some(first.len))
                    ));
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
    let (axis, len) = match reshape_axis(&s, first.axis, &out) {
        Some(a) => (a, first.len),
        None => {
            // the padded axis merged with the axes after it: the valid entries are the first
            // length·(their sizes) of the merged axis
            let a = first.axis;
            let j = merged_axis(&s, a, &out).ok_or_else(|| format!("{s:?} → {out:?} moves the padded axis"))?;
            let m = p.konst(&n.name, Tensor::from_i64(vec![1], vec![(out[j] / s[a].max(1)) as i64]));
            (j, p.scalar_op(&n.name, Op::Mul, first.len, m))
        }
    };
    let shape_v = p.konst(&n.name, Tensor::from_i64(vec![out.len()], out.iter().map(|&d| d as i64).collect()));
    let d = padded_out(p, n, 0, out, axis, len);
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
    if let [(0, only)] = pads {
        if inputs.len() == 1 {
            // a concat of one part is that part
            p.pads.insert(n.outputs[0].ok_or("no output")?, only.clone());
            return Ok(());
        }
    }
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
    // an end equal to the data's own length is the bound (the length is never past it)
    let konst = |p: &Pass, k: usize| -> R<Option<Vec<i64>>> {
        match n.inputs.get(k).copied().flatten() {
            None => Ok(None),
            Some(v) => p
                .elems(v)
                .and_then(|e| {
                    e.iter()
                        .map(|x| match x.len {
                            _ if x.lo == x.hi => Some(x.lo),
                            Some(l) if k == 2 && l == first.len => Some(s[first.axis] as i64),
                            _ => None,
                        })
                        .collect::<Option<Vec<i64>>>()
                })
                .map(Some)
                .ok_or_else(|| "a Slice bound known only at run time".into()),
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
    // the bounds as constants (an end that was a length is the bound now)
    let k = |p: &mut Pass, v: Vec<i64>| Some(p.konst(&n.name, Tensor::from_i64(vec![v.len()], v)));
    let args = vec![inputs[0], k(p, starts), k(p, ends), k(p, axes.iter().map(|&a| a as i64).collect()), k(p, steps)];
    p.emit(&n.name, Op::Slice, args, Default::default(), vec![d]);
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
    if let Some((before, extra)) = crate::bounded::nms_helpers(p.g, n, &inputs, &sc) {
        p.out.extend(before);
        args.extend(extra.into_iter().map(Some));
    }
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
