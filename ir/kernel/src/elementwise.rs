//! The elementwise/broadcast template: one thread per output element in a grid-stride loop;
//! each input is read at its broadcast index, the group's ops run in registers (f16/bf16
//! widened to f32), and every group output is stored.
use crate::body::{compute_type, storage_type, Body};
use crate::kernel::{blocks, finish, input_params, Kernel, KernelError, Param};
use std::collections::HashMap;
use xforge_ir::group::FusionGroup;
use xforge_ir::tensor::{numel, strides};
use xforge_ir::{Attr, DType, Graph, Node, Op, OpKind, ValueId};

/// Threads per block.
pub use crate::knobs::BLOCK;

pub(crate) fn float_attr(n: &Node, k: &str, d: f64) -> f64 {
    match n.attr(k) {
        Some(Attr::Float(v)) => *v as f64,
        _ => d,
    }
}

/// Views: the same buffer read with another shape, so the same flat index.
pub(crate) fn is_view(op: Op) -> bool {
    matches!(op, Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze | Op::Identity)
}

/// How many of a node's inputs the template reads as values: a view reads its data (its shape
/// is compiled in), CastLike its input (the other operand gives only the dtype).
fn arity(n: &Node) -> usize {
    if is_view(n.op) || n.op == Op::CastLike {
        1
    } else {
        n.inputs.len()
    }
}

/// Data movement that reads its (parameter) operand at a remapped index.
fn is_remap(op: Op) -> bool {
    matches!(op, Op::Transpose | Op::Gather | Op::Slice | Op::Expand | Op::Tile | Op::Concat | Op::Pad | Op::Split)
}

/// Row-major coordinates of flat index `i` in `shape`, as index values.
pub(crate) fn coords(b: &mut Body, i: &str, shape: &[usize]) -> Vec<String> {
    let st = strides(shape);
    (0..shape.len())
        .map(|d| {
            let (s, n) = (b.index(st[d]), b.index(shape[d]));
            let q = b.emit(format!("arith.divui {i}, {s} : index"));
            b.emit(format!("arith.remui {q}, {n} : index"))
        })
        .collect()
}

/// Coordinates in `shape` of the element that flat index `i` of `space` reads: the same flat
/// index when both hold as many elements (a view), else numpy broadcasting (a Gather's `[N, 1]`
/// result beside `[N, 32]` work). `None` if `shape` has more axes.
fn broadcast_coords(b: &mut Body, i: &str, space: &[usize], shape: &[usize]) -> Option<Vec<String>> {
    if numel(shape) == numel(space) {
        return Some(coords(b, i, shape));
    }
    let at = coords(b, i, space);
    broadcast_at(b, &at, shape)
}

/// Coordinates `at` carried into `shape` by numpy broadcasting: trailing axes aligned, axes of
/// length 1 read 0. `None` if `shape` has more axes.
fn broadcast_at(b: &mut Body, at: &[String], shape: &[usize]) -> Option<Vec<String>> {
    let off = at.len().checked_sub(shape.len())?;
    Some((0..shape.len()).map(|d| if shape[d] == 1 { b.index(0) } else { at[d + off].clone() }).collect())
}

/// Node `n`'s `axis` attribute (default 0) as an axis of a value of `rank`; `None` when out of
/// range.
pub(crate) fn axis(n: &Node, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = match n.attr("axis") {
        Some(Attr::Int(a)) => *a,
        _ => 0,
    };
    (-r..r).contains(&a).then(|| (if a < 0 { a + r } else { a }) as usize)
}

/// Flat index from coordinates in `shape`.
pub(crate) fn flat(b: &mut Body, cs: &[String], shape: &[usize]) -> String {
    let st = strides(shape);
    let mut acc = b.index(0);
    for (d, c) in cs.iter().enumerate() {
        let s = b.index(st[d]);
        let t = b.emit(format!("arith.muli {c}, {s} : index"));
        acc = b.emit(format!("arith.addi {acc}, {t} : index"));
    }
    acc
}

/// Loads element `at` of parameter `v` in the compute type `c` (narrower floats widened).
pub(crate) fn load_param(b: &mut Body, params: &[Param], v: ValueId, at: &str, c: &str) -> Option<String> {
    let k = params.iter().position(|p| p.value == v && !p.output)?;
    let p = &params[k];
    let st = storage_type(p.dtype)?;
    let raw = b.emit(format!("memref.load %arg{k}[{at}] : memref<{}x{st}>", p.elements.max(1)));
    Some(match (p.dtype, c) {
        (DType::F16 | DType::BF16, _) | (DType::F32, "f64") => b.emit(format!("arith.extf {raw} : {st} to {c}")),
        _ => raw,
    })
}

/// `load_param` of a float operand: the template computes in floats, so integer data (moved by
/// a Gather before a Cast, say) is not its to read.
fn load_float(b: &mut Body, params: &[Param], v: ValueId, at: &str, c: &str) -> Option<String> {
    params.iter().find(|p| p.value == v && !p.output).filter(|p| p.dtype.is_float())?;
    load_param(b, params, v, at, c)
}

/// Reads values at remapped coordinates: a group input's element, or, through data movement
/// and views computed in the group, the element those nodes take it from (Swin's rolls, two
/// Gathers in a row, read their source once instead of a kernel and a buffer each).
struct Pull<'a> {
    g: &'a Graph,
    params: &'a [Param],
    scalars: &'a HashMap<ValueId, f64>,
    group: &'a [&'a Node],
    c: &'a str,
    dt: DType,
    unsupported: &'a dyn Fn(String) -> KernelError,
}

impl Pull<'_> {
    fn bad(&self, n: &Node, why: &str) -> KernelError {
        (self.unsupported)(format!("node '{}' ({}): {why}", n.name, n.op))
    }

    /// Value `v` (of static `shape`) at coordinates `at`.
    fn value(&self, b: &mut Body, v: ValueId, at: &[String], shape: &[usize]) -> Result<String, KernelError> {
        if self.params.iter().any(|p| p.value == v && !p.output) {
            let flat_at = flat(b, at, shape);
            return load_float(b, self.params, v, &flat_at, self.c)
                .ok_or_else(|| (self.unsupported)(format!("'{}': data dtype is not supported", self.g.name_of(v))));
        }
        let n = self.group.iter().find(|m| m.outputs.contains(&Some(v))).ok_or_else(|| {
            (self.unsupported)(format!("'{}' is neither an input nor computed in the group", self.g.name_of(v)))
        })?;
        if n.op == Op::Split {
            return self.split(b, n, v, at);
        }
        if is_remap(n.op) {
            return self.node(b, n, at);
        }
        if is_view(n.op) {
            // the same element: its flat index in the view is its flat index in the source
            let x = n.inputs[0].ok_or_else(|| self.bad(n, "no data input"))?;
            let xs = self.g.ty(x).static_shape().ok_or_else(|| self.bad(n, "shape is not static"))?;
            let i = flat(b, at, shape);
            let xc = coords(b, &i, &xs);
            return self.value(b, x, &xc, &xs);
        }
        if matches!(n.op.kind(), OpKind::Elementwise | OpKind::Broadcast) {
            return self.elementwise(b, n, at);
        }
        Err(self.bad(n, "its data is computed in the group by work other than data movement"))
    }

    /// Output `v` of Split node `n` at coordinates `at`: the input shifted along the axis by
    /// the outputs before it (a merged GEMM's gate and up halves read where they lie).
    fn split(&self, b: &mut Body, n: &Node, v: ValueId, at: &[String]) -> Result<String, KernelError> {
        let data = n.inputs[0].ok_or_else(|| self.bad(n, "no data input"))?;
        let in_shape = self.g.ty(data).static_shape().ok_or_else(|| self.bad(n, "shape is not static"))?;
        let ax = axis(n, in_shape.len()).ok_or_else(|| self.bad(n, "axis out of range"))?;
        let mut start = 0;
        for o in n.outputs.iter() {
            let o = o.ok_or_else(|| self.bad(n, "an output before this one is unused"))?;
            if o == v {
                let mut sc = at.to_vec();
                let s0 = b.index(start);
                sc[ax] = b.emit(format!("arith.addi {}, {s0} : index", at[ax]));
                return self.value(b, data, &sc, &in_shape);
            }
            let shape = self.g.ty(o).static_shape().ok_or_else(|| self.bad(n, "shape is not static"))?;
            start += shape[ax];
        }
        Err(self.bad(n, "the value is not one of its outputs"))
    }

    /// Elementwise node `n`'s output at coordinates `at` (the negated half a rotary embedding
    /// concatenates): each operand pulled at the same coordinates, broadcast from its own shape.
    fn elementwise(&self, b: &mut Body, n: &Node, at: &[String]) -> Result<String, KernelError> {
        let mut args = vec![];
        for &v in n.inputs.iter().take(arity(n)).flatten() {
            if let Some(&x) = self.scalars.get(&v) {
                args.push(b.float(x, self.c));
                continue;
            }
            let shape = self.g.ty(v).static_shape().ok_or_else(|| self.bad(n, "shape is not static"))?;
            let cs = broadcast_at(b, at, &shape).ok_or_else(|| self.bad(n, "an operand has more axes"))?;
            args.push(self.value(b, v, &cs, &shape)?);
        }
        let scalar_vals: Vec<Option<f64>> =
            n.inputs.iter().map(|v| v.and_then(|v| self.scalars.get(&v).copied())).collect();
        apply(b, self.g, n, args, self.c, self.dt, &scalar_vals, self.unsupported)
    }

    /// Data-movement node `n`'s output at coordinates `oc`.
    fn node(&self, b: &mut Body, n: &Node, oc: &[String]) -> Result<String, KernelError> {
        let g = self.g;
        let data = n.inputs[0].ok_or_else(|| self.bad(n, "no data input"))?;
        let in_shape = g.ty(data).static_shape().ok_or_else(|| self.bad(n, "shape is not static"))?;
        if n.op == Op::Concat {
            return self.concat(b, n, oc);
        }
        if n.op == Op::Pad {
            return self.pad(b, n, oc, &in_shape);
        }
        let src: Vec<String> = match n.op {
            Op::Transpose => {
                let r = in_shape.len();
                let perm: Vec<usize> = match n.attr("perm") {
                    Some(Attr::Ints(p)) => {
                        p.iter().map(|&v| if v < 0 { (v + r as i64) as usize } else { v as usize }).collect()
                    }
                    _ => (0..r).rev().collect(),
                };
                // output axis d is input axis perm[d]
                let mut sc = vec![String::new(); r];
                for (d, &pd) in perm.iter().enumerate() {
                    sc[pd] = oc[d].clone();
                }
                sc
            }
            Op::Expand => broadcast_at(b, oc, &in_shape).ok_or_else(|| self.bad(n, "its input has more axes"))?,
            // repeats: each output coordinate wraps around the input's extent
            Op::Tile => {
                if oc.len() != in_shape.len() {
                    return Err(self.bad(n, "its input has another rank"));
                }
                (oc.iter().zip(&in_shape))
                    .map(|(c, &d)| {
                        let dd = b.index(d);
                        b.emit(format!("arith.remui {c}, {dd} : index"))
                    })
                    .collect()
            }
            Op::Slice => {
                let konst =
                    |k: usize| n.inputs.get(k).copied().flatten().and_then(|v| g.weights.get(&v)).map(|t| t.to_i64());
                let starts = konst(1).ok_or_else(|| self.bad(n, "starts are not constant"))?;
                let axes: Vec<usize> = konst(3)
                    .map(|a| {
                        a.iter()
                            .map(|&x| if x < 0 { (x + in_shape.len() as i64) as usize } else { x as usize })
                            .collect()
                    })
                    .unwrap_or_else(|| (0..starts.len()).collect());
                let steps = konst(4).unwrap_or(vec![1; starts.len()]);
                let ends = konst(2).ok_or_else(|| self.bad(n, "ends are not constant"))?;
                let mut sc = oc.to_vec();
                for (k, &ax) in axes.iter().enumerate() {
                    let d = in_shape[ax] as i64;
                    let (begin, _, _) = xforge_ir::interp::slice_bounds_pub(d, starts[k], ends[k], steps[k]);
                    if steps[k] < 0 {
                        return Err(self.bad(n, "negative steps are not supported"));
                    }
                    let (s0, st) = (b.index(begin as usize), b.index(steps[k] as usize));
                    let t = b.emit(format!("arith.muli {}, {st} : index", oc[ax]));
                    sc[ax] = b.emit(format!("arith.addi {t}, {s0} : index"));
                }
                sc
            }
            Op::Gather => {
                let ax = axis(n, in_shape.len()).ok_or_else(|| self.bad(n, "axis out of range"))?;
                let ind = n.inputs[1].ok_or_else(|| self.bad(n, "no indices"))?;
                let ind_shape = g.ty(ind).static_shape().ok_or_else(|| self.bad(n, "index shape is not static"))?;
                let q = ind_shape.len();
                // output coordinates: data[..ax], indices, data[ax+1..]
                let at = flat(b, &oc[ax..ax + q], &ind_shape);
                let k = self
                    .params
                    .iter()
                    .position(|p| p.value == ind && !p.output)
                    .ok_or_else(|| self.bad(n, "indices are not an input"))?;
                let p = &self.params[k];
                let st = storage_type(p.dtype)
                    .filter(|_| matches!(p.dtype, DType::I64 | DType::I32))
                    .ok_or_else(|| self.bad(n, "indices must be i64 or i32"))?;
                let raw = b.emit(format!("memref.load %arg{k}[{at}] : memref<{}x{st}>", p.elements.max(1)));
                // negative indices count from the end
                let dim = b.emit(format!("arith.constant {} : {st}", in_shape[ax]));
                let z = b.emit(format!("arith.constant 0 : {st}"));
                let neg = b.emit(format!("arith.cmpi slt, {raw}, {z} : {st}"));
                let wrapped = b.emit(format!("arith.addi {raw}, {dim} : {st}"));
                let v = b.emit(format!("arith.select {neg}, {wrapped}, {raw} : {st}"));
                let idx = b.emit(format!("arith.index_cast {v} : {st} to index"));
                let mut sc: Vec<String> = oc[..ax].to_vec();
                sc.push(idx);
                sc.extend_from_slice(&oc[ax + q..]);
                sc
            }
            _ => return Err(self.bad(n, "not a data-movement op")),
        };
        self.value(b, data, &src, &in_shape)
    }

    /// Concat: the operand whose range along the axis holds the coordinate, by nested `scf.if`.
    fn concat(&self, b: &mut Body, n: &Node, oc: &[String]) -> Result<String, KernelError> {
        let ax = axis(n, oc.len()).ok_or_else(|| self.bad(n, "axis out of range"))?;
        let parts: Vec<(ValueId, Vec<usize>)> = n
            .inputs
            .iter()
            .flatten()
            .map(|&v| self.g.ty(v).static_shape().map(|s| (v, s)).ok_or_else(|| self.bad(n, "shape is not static")))
            .collect::<Result<_, _>>()?;
        self.concat_from(b, &parts, 0, 0, ax, oc)
    }

    /// Operands `k..` of a Concat, the first starting at `start` along `ax`; the last needs no test.
    fn concat_from(
        &self,
        b: &mut Body,
        parts: &[(ValueId, Vec<usize>)],
        k: usize,
        start: usize,
        ax: usize,
        oc: &[String],
    ) -> Result<String, KernelError> {
        let c = self.c;
        let (v, shape) = &parts[k];
        let load = |b: &mut Body| {
            let mut sc = oc.to_vec();
            let s0 = b.index(start);
            sc[ax] = b.emit(format!("arith.subi {}, {s0} : index", oc[ax]));
            self.value(b, *v, &sc, shape)
        };
        if k + 1 == parts.len() {
            return load(b);
        }
        let end = b.index(start + shape[ax]);
        let inside = b.emit(format!("arith.cmpi ult, {}, {end} : index", oc[ax]));
        let r = b.emit(format!("scf.if {inside} -> ({c}) {{"));
        let here = load(b)?;
        b.stmt(format!("scf.yield {here} : {c}"));
        b.stmt("} else {");
        let rest = self.concat_from(b, parts, k + 1, start + shape[ax], ax, oc)?;
        b.stmt(format!("scf.yield {rest} : {c}"));
        b.stmt("}");
        Ok(r)
    }

    /// Constant Pad with constant pads: the operand where the coordinate falls inside it, else
    /// the pad value.
    fn pad(&self, b: &mut Body, n: &Node, oc: &[String], in_shape: &[usize]) -> Result<String, KernelError> {
        let (g, c) = (self.g, self.c);
        if n.attr("mode").is_some() && !matches!(n.attr("mode"), Some(Attr::Str(m)) if m == "constant") {
            return Err(self.bad(n, "only constant padding is generated"));
        }
        let konst = |k: usize| n.inputs.get(k).copied().flatten().and_then(|v| g.weights.get(&v));
        let pads = konst(1).map(|t| t.to_i64()).ok_or_else(|| self.bad(n, "pads are not constant"))?;
        let r = in_shape.len();
        if pads.len() != 2 * r || n.inputs.get(3).copied().flatten().is_some() {
            return Err(self.bad(n, "pads must cover every axis"));
        }
        // a fill known only at run time is the generic kernel's (this template compiles it in)
        if n.inputs.get(2).copied().flatten().is_some_and(|v| !g.weights.contains_key(&v)) {
            return Err(self.bad(n, "the pad value is known only at run time"));
        }
        if pads.iter().any(|&p| p < 0) {
            return Err(self.bad(n, "negative pads (cropping) are not generated"));
        }
        let value = konst(2).filter(|t| !t.is_empty()).map(|t| t.to_f64()[0]).unwrap_or(0.0);
        let data = n.inputs[0].unwrap();
        let zero = b.index(0);
        let mut inside: Option<String> = None;
        let mut sc = vec![];
        for d in 0..r {
            let before = b.index(pads[d] as usize);
            let p = b.emit(format!("arith.subi {}, {before} : index", oc[d]));
            let lim = b.index(in_shape[d]);
            let c1 = b.emit(format!("arith.cmpi sge, {p}, {zero} : index"));
            let c2 = b.emit(format!("arith.cmpi slt, {p}, {lim} : index"));
            let both = b.emit(format!("arith.andi {c1}, {c2} : i1"));
            inside = Some(match inside {
                None => both,
                Some(a) => b.emit(format!("arith.andi {a}, {both} : i1")),
            });
            sc.push(p);
        }
        let fill = b.float(value, c);
        let v = b.emit(format!("scf.if {} -> ({c}) {{", inside.unwrap()));
        let loaded = self.value(b, data, &sc, in_shape)?;
        b.stmt(format!("scf.yield {loaded} : {c}"));
        b.stmt("} else {");
        b.stmt(format!("scf.yield {fill} : {c}"));
        b.stmt("}");
        Ok(v)
    }
}

/// Data-movement node `n`'s output at flat index `i` of its own shape.
#[allow(clippy::too_many_arguments)]
fn remapped(
    b: &mut Body,
    g: &Graph,
    n: &Node,
    params: &[Param],
    scalars: &HashMap<ValueId, f64>,
    group: &[&Node],
    space: &[usize],
    i: &str,
    c: &str,
    dt: DType,
    unsupported: &dyn Fn(String) -> KernelError,
) -> Result<String, KernelError> {
    let out_shape = n.outputs[0]
        .and_then(|o| g.ty(o).static_shape())
        .ok_or_else(|| unsupported(format!("node '{}' ({}): shape is not static", n.name, n.op)))?;
    let oc = broadcast_coords(b, i, space, &out_shape)
        .ok_or_else(|| unsupported(format!("node '{}' ({}): more axes than the group's space", n.name, n.op)))?;
    Pull { g, params, scalars, group, c, dt, unsupported }.node(b, n, &oc)
}
/// Emits `op` on computed operands `a` (type `c`); `None` when the template lacks it. `fast`:
/// the result is stored at half precision, so exp, log and division may take the hardware's
/// approximations (ex2.approx, lg2.approx, rcp/div.approx: errors near 2⁻²², far under a
/// half's 2⁻¹¹) instead of IEEE-exact sequences several times longer (a Swish pass was
/// compute-bound at 56% of its bandwidth floor).
fn scalar_op(b: &mut Body, n: &Node, args: &[String], c: &str, scalars: &[Option<f64>], fast: bool) -> Option<String> {
    let x = args.first().cloned()?;
    let fm = if fast { " fastmath<afn>" } else { "" };
    let bin = |b: &mut Body, op: &str, p: &str, q: &str| b.emit(format!("arith.{op} {p}, {q} : {c}"));
    let div = |b: &mut Body, p: &str, q: &str| b.emit(format!("arith.divf {p}, {q}{fm} : {c}"));
    let sigmoid = |b: &mut Body, v: &str| {
        let one = b.float(1.0, c);
        let neg = b.emit(format!("arith.negf {v} : {c}"));
        let e = b.emit(format!("math.exp {neg}{fm} : {c}"));
        let d = bin(b, "addf", &one, &e);
        div(b, &one, &d)
    };
    Some(match n.op {
        Op::Div => div(b, &x, args.get(1)?),
        Op::Add | Op::Sub | Op::Mul => {
            let op = match n.op {
                Op::Add => "addf",
                Op::Sub => "subf",
                _ => "mulf",
            };
            bin(b, op, &x, args.get(1)?)
        }
        Op::Max | Op::Min | Op::Sum => {
            let op = match n.op {
                Op::Max => "maximumf",
                Op::Min => "minimumf",
                _ => "addf",
            };
            args[1..].iter().fold(x, |acc, y| bin(b, op, &acc, y))
        }
        Op::Pow => b.emit(format!("math.powf {x}, {} : {c}", args.get(1)?)),
        Op::Neg => b.emit(format!("arith.negf {x} : {c}")),
        Op::Abs => b.emit(format!("math.absf {x} : {c}")),
        Op::Sqrt => b.emit(format!("math.sqrt {x} : {c}")),
        Op::Exp => b.emit(format!("math.exp {x}{fm} : {c}")),
        Op::Log => b.emit(format!("math.log {x}{fm} : {c}")),
        Op::Tanh => b.emit(format!("math.tanh {x} : {c}")),
        Op::Erf => b.emit(format!("math.erf {x} : {c}")),
        Op::Sin => b.emit(format!("math.sin {x} : {c}")),
        Op::Cos => b.emit(format!("math.cos {x} : {c}")),
        Op::Floor => b.emit(format!("math.floor {x} : {c}")),
        Op::Ceil => b.emit(format!("math.ceil {x} : {c}")),
        // half to even, as ONNX's Round (a QuantizeLinear's rounding fuses with its neighbours)
        Op::Round => b.emit(format!("math.roundeven {x} : {c}")),
        Op::Reciprocal => {
            let one = b.float(1.0, c);
            div(b, &one, &x)
        }
        Op::Identity | Op::Dropout => x,
        Op::Relu => {
            let z = b.float(0.0, c);
            bin(b, "maximumf", &x, &z)
        }
        Op::Sigmoid => sigmoid(b, &x),
        // log(1 + eˣ), x itself past 30 (as the interpreter): Gated DeltaNet's and Mamba's Δ
        Op::Softplus | Op::Mish => {
            let t = b.float(30.0, c);
            let big = b.emit(format!("arith.cmpf ogt, {x}, {t} : {c}"));
            let e = b.emit(format!("math.exp {x}{fm} : {c}"));
            let l = b.emit(format!("math.log1p {e} : {c}"));
            let sp = b.emit(format!("arith.select {big}, {x}, {l} : {c}"));
            if n.op == Op::Mish {
                let th = b.emit(format!("math.tanh {sp} : {c}"));
                bin(b, "mulf", &x, &th)
            } else {
                sp
            }
        }
        Op::Softsign => {
            let one = b.float(1.0, c);
            let ax = b.emit(format!("math.absf {x} : {c}"));
            let d = bin(b, "addf", &one, &ax);
            div(b, &x, &d)
        }
        Op::Elu => {
            let (z, one, al) = (b.float(0.0, c), b.float(1.0, c), b.float(float_attr(n, "alpha", 1.0), c));
            let ge = b.emit(format!("arith.cmpf oge, {x}, {z} : {c}"));
            let e = b.emit(format!("math.exp {x}{fm} : {c}"));
            let em1 = bin(b, "subf", &e, &one);
            let neg = bin(b, "mulf", &al, &em1);
            b.emit(format!("arith.select {ge}, {x}, {neg} : {c}"))
        }
        Op::Swish => {
            let k = b.float(float_attr(n, "alpha", 1.0), c);
            let ax = bin(b, "mulf", &k, &x);
            let s = sigmoid(b, &ax);
            bin(b, "mulf", &x, &s)
        }
        Op::HardSigmoid | Op::HardSwish => {
            let (al, be) = if n.op == Op::HardSwish {
                (1.0 / 6.0, 0.5)
            } else {
                (float_attr(n, "alpha", 0.2), float_attr(n, "beta", 0.5))
            };
            let (al, be, zero, one) = (b.float(al, c), b.float(be, c), b.float(0.0, c), b.float(1.0, c));
            let t = bin(b, "mulf", &al, &x);
            let t = bin(b, "addf", &t, &be);
            let t = bin(b, "maximumf", &t, &zero);
            let t = bin(b, "minimumf", &t, &one);
            if n.op == Op::HardSwish {
                bin(b, "mulf", &x, &t)
            } else {
                t
            }
        }
        Op::LeakyRelu => {
            let (z, al) = (b.float(0.0, c), b.float(float_attr(n, "alpha", 0.01), c));
            let ge = b.emit(format!("arith.cmpf oge, {x}, {z} : {c}"));
            let ax = bin(b, "mulf", &al, &x);
            b.emit(format!("arith.select {ge}, {x}, {ax} : {c}"))
        }
        Op::Gelu => {
            let half = b.float(0.5, c);
            let one = b.float(1.0, c);
            let inner = if matches!(n.attr("approximate"), Some(Attr::Str(s)) if s == "tanh") {
                let (k, a) = (b.float((2.0 / std::f64::consts::PI).sqrt(), c), b.float(0.044715, c));
                let x3 = bin(b, "mulf", &x, &x);
                let x3 = bin(b, "mulf", &x3, &x);
                let t = bin(b, "mulf", &a, &x3);
                let t = bin(b, "addf", &x, &t);
                let t = bin(b, "mulf", &k, &t);
                b.emit(format!("math.tanh {t} : {c}"))
            } else {
                let r = b.float(std::f64::consts::FRAC_1_SQRT_2, c);
                let t = bin(b, "mulf", &x, &r);
                b.emit(format!("math.erf {t} : {c}"))
            };
            let t = bin(b, "addf", &one, &inner);
            let t = bin(b, "mulf", &x, &t);
            bin(b, "mulf", &half, &t)
        }
        Op::Clip => {
            // bounds are inlined scalars (inputs 1 and 2)
            let mut v = x;
            if let Some(lo) = scalars.get(1).copied().flatten() {
                let lo = b.float(lo, c);
                v = bin(b, "maximumf", &v, &lo);
            } else if n.inputs.get(1).copied().flatten().is_some() {
                return None;
            }
            if let Some(hi) = scalars.get(2).copied().flatten() {
                let hi = b.float(hi, c);
                v = bin(b, "minimumf", &v, &hi);
            } else if n.inputs.get(2).copied().flatten().is_some() {
                return None;
            }
            v
        }
        _ => return None,
    })
}

/// Vector-loaded operands (by parameter index), the lane to read and the vector length.
pub type Lanes<'a> = Option<(&'a HashMap<usize, String>, usize, usize)>;

/// Emits one element's computation at flat index `i` of `space`: loads the input parameters
/// that `nodes` read (and those in `also`; vector lanes when given), then runs `nodes` on top of
/// `seed`; returns all values by id.
#[allow(clippy::too_many_arguments)]
pub fn compute(
    b: &mut Body,
    g: &Graph,
    nodes: &[&Node],
    params: &[Param],
    scalars: &HashMap<ValueId, f64>,
    space: &[usize],
    i: &str,
    c: &str,
    dt: DType,
    lanes: Lanes,
    seed: HashMap<ValueId, String>,
    also: &[ValueId],
    unsupported: &dyn Fn(String) -> KernelError,
) -> Result<HashMap<ValueId, String>, KernelError> {
    let ostr = strides(space);
    let memref = |p: &Param| format!("memref<{}x{}>", p.elements.max(1), storage_type(p.dtype).unwrap());
    let mut value: HashMap<ValueId, String> = seed;
    let outputs: Vec<ValueId> = params.iter().filter(|p| p.output).map(|p| p.value).collect();
    let kept: Vec<ValueId> = also.iter().chain(value.keys()).copied().collect();
    let pulled = pulled_nodes(nodes, &outputs, &kept);
    // inputs the nodes read, each loaded once
    // operands of data-movement nodes are read at remapped indices by those nodes themselves
    // (a view reads only its data; its shape operand is compiled in)
    let read: std::collections::HashSet<ValueId> = nodes
        .iter()
        .enumerate()
        .filter(|&(k, n)| !is_remap(n.op) && !pulled[k])
        .flat_map(|(_, n)| n.inputs.iter().take(arity(n)).flatten().copied())
        .chain(also.iter().copied())
        .collect();
    let seeded: std::collections::HashSet<ValueId> = value.keys().copied().collect();
    for (k, p) in
        params.iter().enumerate().filter(|(_, p)| !p.output && read.contains(&p.value) && !seeded.contains(&p.value))
    {
        let shape = g.ty(p.value).static_shape().unwrap();
        // an input of fewer elements than the space broadcasts into it
        let shape = if numel(&shape) == numel(space) { space.to_vec() } else { shape };
        let st = storage_type(p.dtype).unwrap();
        let raw = match lanes.and_then(|(v, lane, n)| v.get(&k).map(|x| (x, lane, n))) {
            Some((vec, lane, n)) => b.emit(format!("vector.extract {vec}[{lane}] : {st} from vector<{n}x{st}>")),
            None => {
                let idx = if shape == space {
                    i.to_string()
                } else {
                    // numpy broadcasting: an operand's rank never exceeds its group's space
                    let off = space.len().checked_sub(shape.len()).ok_or_else(|| {
                        unsupported(format!("'{}' has more axes than the group's space {space:?}", g.name_of(p.value)))
                    })?;
                    let istr = strides(&shape);
                    let mut acc: Option<String> = None;
                    for d in 0..space.len() {
                        if d < off || shape[d - off] == 1 {
                            continue;
                        }
                        let (os, od, is) = (b.index(ostr[d]), b.index(space[d]), b.index(istr[d - off]));
                        let q = b.emit(format!("arith.divui {i}, {os} : index"));
                        let r = b.emit(format!("arith.remui {q}, {od} : index"));
                        let t = b.emit(format!("arith.muli {r}, {is} : index"));
                        acc = Some(match acc {
                            None => t,
                            Some(a) => b.emit(format!("arith.addi {a}, {t} : index")),
                        });
                    }
                    acc.unwrap_or_else(|| b.index(0))
                };
                b.emit(format!("memref.load %arg{k}[{idx}] : {}", memref(p)))
            }
        };
        let v = match p.dtype {
            DType::F16 | DType::BF16 => b.emit(format!("arith.extf {raw} : {st} to {c}")),
            // a group that computes in f64 (a Cast to double) reads its f32 operands widened
            DType::F32 if c == "f64" => b.emit(format!("arith.extf {raw} : f32 to f64")),
            DType::F64 if c == "f32" => b.emit(format!("arith.truncf {raw} : f64 to f32")),
            DType::F32 | DType::F64 => raw,
            DType::Bool => {
                let z = b.emit("arith.constant 0 : i8");
                b.emit(format!("arith.cmpi ne, {raw}, {z} : i8"))
            }
            // 8-bit integers (an image's u8 pixels before their Cast) are exact in any float
            DType::U8 => b.emit(format!("arith.uitofp {raw} : i8 to {c}")),
            DType::I8 => b.emit(format!("arith.sitofp {raw} : i8 to {c}")),
            _ => {
                return Err(unsupported(format!("integer arithmetic on '{}' is not generated yet", g.name_of(p.value))))
            }
        };
        value.insert(p.value, v);
    }
    // a Split's outputs are read where they lie in its input, at their readers' coordinates
    let pull = Pull { g, params, scalars, group: nodes, c, dt, unsupported };
    let split_output = |v: &ValueId| nodes.iter().any(|m| m.op == Op::Split && m.outputs.contains(&Some(*v)));
    for (k, n) in nodes.iter().enumerate() {
        if pulled[k] || n.op == Op::Split {
            continue;
        }
        let scalar_vals: Vec<Option<f64>> = n.inputs.iter().map(|v| v.and_then(|v| scalars.get(&v).copied())).collect();
        let mut args = vec![];
        for v in n.inputs.iter().take(arity(n)).flatten() {
            let a = match (value.get(v), scalars.get(v)) {
                (Some(x), _) => x.clone(),
                (None, Some(&x)) => b.float(x, c),
                // data-movement nodes load their own operands
                _ if is_remap(n.op) => String::new(),
                _ if split_output(v) => {
                    let shape = g.ty(*v).static_shape().filter(|s| numel(s) == numel(space)).ok_or_else(|| {
                        unsupported(format!("node '{}' reads a Split output of another size than the group's", n.name))
                    })?;
                    let at = coords(b, i, &shape);
                    pull.value(b, *v, &at, &shape)?
                }
                _ => return Err(unsupported(format!("node '{}' reads a value the group cannot see", n.name))),
            };
            args.push(a);
        }
        let out = if is_remap(n.op) {
            remapped(b, g, n, params, scalars, nodes, space, i, c, dt, unsupported)?
        } else if is_view(n.op) {
            args[0].clone()
        } else {
            apply(b, g, n, args, c, dt, &scalar_vals, unsupported)?
        };
        if let Some(o) = n.outputs[0] {
            value.insert(o, out);
        }
    }
    Ok(value)
}

/// Nodes whose results only in-group data movement reads (directly, or through other such
/// nodes), and that are not stored (`outputs`) or given (`kept`): data movement, views and
/// elementwise work that their readers pull through at remapped coordinates. Evaluating them
/// in the group's space too would repeat each chain once per link, or run work in a space of
/// another shape (the negated half a rotary embedding concatenates).
fn pulled_nodes(nodes: &[&Node], outputs: &[ValueId], kept: &[ValueId]) -> Vec<bool> {
    let mut pulled = vec![false; nodes.len()];
    for k in (0..nodes.len()).rev() {
        let n = nodes[k];
        let Some(o) = n.outputs.first().copied().flatten() else { continue };
        let readers: Vec<usize> =
            (0..nodes.len()).filter(|&m| nodes[m].inputs.iter().flatten().any(|&v| v == o)).collect();
        let pullable =
            is_remap(n.op) || is_view(n.op) || matches!(n.op.kind(), OpKind::Elementwise | OpKind::Broadcast);
        pulled[k] = pullable
            && n.outputs.iter().flatten().count() == 1
            && !readers.is_empty()
            && readers.iter().all(|&m| is_remap(nodes[m].op) || pulled[m])
            && !outputs.contains(&o)
            && !kept.contains(&o);
    }
    pulled
}

/// Elementwise node `n` on its computed operands `args` (type `c`).
#[allow(clippy::too_many_arguments)]
fn apply(
    b: &mut Body,
    g: &Graph,
    n: &Node,
    mut args: Vec<String>,
    c: &str,
    dt: DType,
    scalar_vals: &[Option<f64>],
    unsupported: &dyn Fn(String) -> KernelError,
) -> Result<String, KernelError> {
    // a Dropout with a training mode is the generic kernel's to judge (random when on)
    if n.op == Op::Dropout && n.inputs.get(2).copied().flatten().is_some() {
        return Err(unsupported(format!("node '{}': Dropout with a training_mode input", n.name)));
    }
    Ok(if n.op == Op::Where {
        b.emit(format!("arith.select {}, {}, {} : {c}", args[0], args[1], args[2]))
    } else if matches!(n.op, Op::Cast | Op::CastLike) {
        // round through the target type; a bool operand is an i1 (as Where's condition), 0 or 1
        let to = n.outputs[0].map(|o| g.ty(o).dtype).unwrap_or(dt);
        if n.inputs[0].is_some_and(|v| g.ty(v).dtype == DType::Bool) {
            args[0] = b.emit(format!("arith.uitofp {} : i1 to {c}", args[0]));
        }
        match storage_type(to).filter(|_| to.is_float()) {
            // widening keeps every value
            Some("f64") if c == "f32" => args[0].clone(),
            Some(t) if t != c => {
                let r = b.emit(format!("arith.truncf {} : {c} to {t}", args[0]));
                b.emit(format!("arith.extf {r} : {t} to {c}"))
            }
            Some(_) => args[0].clone(),
            None => return Err(unsupported(format!("Cast to {to} is not supported"))),
        }
    } else {
        let half = n.outputs[0].is_some_and(|o| matches!(g.ty(o).dtype, DType::F16 | DType::BF16));
        scalar_op(b, n, &args, c, scalar_vals, half && c == "f32")
            .ok_or_else(|| unsupported(format!("op {} is not in the elementwise template", n.op)))?
    })
}

/// The value to store for output parameter `p`, converted to its storage type.
pub fn stored(b: &mut Body, p: &Param, v: &str, c: &str) -> String {
    let st = storage_type(p.dtype).unwrap();
    if st == "f64" && c == "f32" {
        // a Cast to double after f32 arithmetic
        b.emit(format!("arith.extf {v} : {c} to {st}"))
    } else if st != c {
        b.emit(format!("arith.truncf {v} : {c} to {st}"))
    } else {
        v.to_string()
    }
}

/// Stores every output parameter's computed value (from `vals`) at flat index `at`.
pub fn store_outputs(
    b: &mut Body,
    params: &[Param],
    vals: &HashMap<ValueId, String>,
    at: &str,
    c: &str,
) -> Result<(), String> {
    for (pk, p) in params.iter().enumerate().filter(|(_, p)| p.output) {
        let v = vals.get(&p.value).ok_or("an output is not computed")?;
        let v = stored(b, p, v, c);
        b.stmt(format!("memref.store {v}, %arg{pk}[{at}] : memref<{}x{}>", p.elements, storage_type(p.dtype).unwrap()));
    }
    Ok(())
}

/// One element of an elementwise group: (output parameter, stored value) pairs.
#[allow(clippy::too_many_arguments)]
fn element(
    b: &mut Body,
    g: &Graph,
    nodes: &[&Node],
    params: &[Param],
    scalars: &HashMap<ValueId, f64>,
    space: &[usize],
    i: &str,
    c: &str,
    dt: DType,
    lanes: Lanes,
    unsupported: &dyn Fn(String) -> KernelError,
) -> Result<Vec<(usize, String)>, KernelError> {
    let value = compute(b, g, nodes, params, scalars, space, i, c, dt, lanes, HashMap::new(), &[], unsupported)?;
    let mut outs = vec![];
    for (k, p) in params.iter().enumerate().filter(|(_, p)| p.output) {
        let v = value.get(&p.value).cloned().ok_or_else(|| unsupported("an output is not computed".into()))?;
        outs.push((k, stored(b, p, &v, c)));
    }
    Ok(outs)
}

/// Where a group's store tail starts: the longest run of views, Transposes and Splits that ends
/// the group and holds a Transpose or Split, after at least one node of work.
fn store_tail_start(nodes: &[&Node]) -> Option<usize> {
    let start = nodes.iter().rposition(|n| !crate::route::is_tail(n.op)).map_or(0, |p| p + 1);
    (start > 0 && nodes[start..].iter().any(|n| matches!(n.op, Op::Transpose | Op::Split))).then_some(start)
}

/// An elementwise group whose result leaves through a store tail (ShuffleNet's channel
/// shuffle after its Concat): each element of the body's space is computed once and written
/// where the tail's views, Transposes and Splits send it.
fn routed_elementwise(
    g: &Graph,
    grp: &FusionGroup,
    gi: usize,
    nodes: &[&Node],
    split: usize,
) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let (body, tail) = nodes.split_at(split);
    let y = body[split - 1].outputs[0].ok_or_else(|| unsupported("no output".into()))?;
    // the body works in one space: no views in it, every result of that shape (but for work
    // its data movement pulls through)
    let pulled = pulled_nodes(body, &[y], &[]);
    let top: Vec<&&Node> =
        (0..body.len()).filter(|&k| !pulled[k] && body[k].op != Op::Split).map(|k| &body[k]).collect();
    if top.is_empty() {
        return Err(unsupported("no work before the store tail".into()));
    }
    let space = top[0].outputs[0]
        .and_then(|o| g.ty(o).static_shape())
        .ok_or_else(|| unsupported("shapes are not static".into()))?;
    for n in top {
        let same = n.outputs.iter().flatten().all(|&o| g.ty(o).static_shape().as_deref() == Some(space.as_slice()));
        if is_view(n.op) || !same {
            return Err(unsupported(format!("node '{}' leaves the iteration shape before the store tail", n.name)));
        }
    }
    if let Some(o) = grp.outputs.iter().find(|o| !tail.iter().any(|n| n.outputs.contains(&Some(**o)))) {
        return Err(unsupported(format!("output '{}' is written before the store tail", g.name_of(*o))));
    }
    let (mut params, scalars) =
        input_params(g, &grp.inputs, &crate::route::tail_sizes(tail), false).map_err(unsupported)?;
    params.extend(crate::route::routed_outputs(g, &grp.outputs).map_err(unsupported)?);
    let outs = crate::route::routes(g, tail, &params, &[y]).map_err(unsupported)?;
    let dt = g.ty(y).dtype;
    let c = compute_type(dt);
    let n_elems = numel(&space);
    let mut b = Body::default();
    let (start, step) = b.grid_stride();
    let n = b.index(n_elems);
    b.stmt(format!("scf.for %i = {start} to {n} step {step} {{"));
    let vals =
        compute(&mut b, g, body, &params, &scalars, &space, "%i", c, dt, None, HashMap::new(), &[], &unsupported)?;
    let at = coords(&mut b, "%i", &space);
    crate::route::store_routed(&mut b, &params, &outs, &vals, &at, &space, c, 1).map_err(unsupported)?;
    b.stmt("}");
    Ok(finish(params, &b, None, [blocks(n_elems, BLOCK), 1, 1], [BLOCK, 1, 1]))
}

/// Builds the kernel of an elementwise group of `g` (group number `gi`, for errors).
pub fn elementwise(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let nodes: Vec<&Node> = grp.nodes.iter().map(|&n| &g.nodes[n]).collect();
    if let Some(split) = store_tail_start(&nodes) {
        return routed_elementwise(g, grp, gi, &nodes, split);
    }
    // the iteration space: every node not pulled through by data movement computes values of
    // one static shape
    let pulled = pulled_nodes(&nodes, &grp.outputs, &[]);
    let first_out = (0..nodes.len())
        .find(|&k| !pulled[k] && nodes[k].op != Op::Split)
        .and_then(|k| nodes[k].outputs[0])
        .ok_or_else(|| unsupported("empty group".into()))?;
    let space = g.ty(first_out).static_shape().ok_or_else(|| unsupported("shapes are not static".into()))?;
    let n_elems = numel(&space);
    let shapes: Vec<ValueId> =
        nodes.iter().filter(|n| is_view(n.op)).flat_map(|n| n.inputs.iter().skip(1).flatten().copied()).collect();
    let (mut params, scalars) = input_params(g, &grp.inputs, &shapes, false).map_err(unsupported)?;
    // a view to another shape keeps each element's flat index, so it may end the group; work
    // after it would index the wrong shape
    let reshaped: Vec<ValueId> = (0..nodes.len())
        .filter(|&k| is_view(nodes[k].op) && !pulled[k])
        .filter_map(|k| nodes[k].outputs[0])
        .filter(|&o| g.ty(o).static_shape().as_deref() != Some(space.as_slice()))
        .collect();
    let top: Vec<&&Node> =
        (0..nodes.len()).filter(|&k| !pulled[k] && nodes[k].op != Op::Split).map(|k| &nodes[k]).collect();
    if let Some(n) = top.iter().find(|n| !is_view(n.op) && n.inputs.iter().flatten().any(|v| reshaped.contains(v))) {
        return Err(unsupported(format!("node '{}' works on a reshaped value inside the group", n.name)));
    }
    for &o in &grp.outputs {
        let ty = g.ty(o);
        let same = ty.static_shape().as_deref() == Some(space.as_slice());
        let view_of_space = reshaped.contains(&o) && ty.static_shape().is_some_and(|s| numel(&s) == n_elems);
        if !(same || view_of_space) {
            return Err(unsupported(format!("output '{}' is not of the iteration shape {space:?}", g.name_of(o))));
        }
        storage_type(ty.dtype)
            .filter(|_| ty.dtype.is_float())
            .ok_or_else(|| unsupported(format!("output dtype {} is not supported", ty.dtype)))?;
        params.push(Param { value: o, dtype: ty.dtype, elements: n_elems, output: true });
    }
    let dt = nodes.iter().find_map(|n| n.outputs[0].map(|o| g.ty(o).dtype)).unwrap_or(DType::F32);
    let c = compute_type(dt);
    let mut b = Body::default();
    let memref = |p: &Param| format!("memref<{}x{}>", p.elements.max(1), storage_type(p.dtype).unwrap());
    // 16-byte accesses: V elements of the widest full-shape operand per vector (buffers are
    // 256-byte aligned by the allocator and the memory plan, so vector starts are aligned)
    let widest = params
        .iter()
        .filter(|p| p.output || g.ty(p.value).static_shape().as_deref() == Some(space.as_slice()))
        .map(|p| p.dtype.size())
        .max()
        .unwrap_or(4);
    let lanes = (16 / widest).max(1);
    let n_vec = n_elems / lanes;
    let (start, step) = b.grid_stride();
    if lanes > 1 && n_vec > 0 {
        let nv = b.index(n_vec);
        let vl = b.index(lanes);
        b.stmt(format!("scf.for %j = {start} to {nv} step {step} {{"));
        let base = b.emit(format!("arith.muli %j, {vl} : index"));
        // full-shape operands: one vector load each; lanes are computed as scalars
        let mut vecs: HashMap<usize, String> = HashMap::new();
        for (k, p) in params.iter().enumerate().filter(|(_, p)| !p.output) {
            if g.ty(p.value).static_shape().as_deref() == Some(space.as_slice()) && p.dtype.is_float() {
                let st = storage_type(p.dtype).unwrap();
                vecs.insert(
                    k,
                    b.emit(format!(
                        "vector.load %arg{k}[{base}] {{alignment = {}}} : {}, vector<{lanes}x{st}>",
                        lanes * p.dtype.size(),
                        memref(p)
                    )),
                );
            }
        }
        let mut outs: Vec<Vec<String>> = vec![vec![]; params.len()];
        for lane in 0..lanes {
            let off = b.index(lane);
            let i = b.emit(format!("arith.addi {base}, {off} : index"));
            let vals = element(
                &mut b,
                g,
                &nodes,
                &params,
                &scalars,
                &space,
                &i,
                c,
                dt,
                Some((&vecs, lane, lanes)),
                &unsupported,
            )?;
            for (k, v) in vals {
                outs[k].push(v);
            }
        }
        for (k, p) in params.iter().enumerate().filter(|(_, p)| p.output) {
            let st = storage_type(p.dtype).unwrap();
            let mut v = b.emit(format!("arith.constant dense<0.0> : vector<{lanes}x{st}>"));
            for (lane, x) in outs[k].iter().enumerate() {
                v = b.emit(format!("vector.insert {x}, {v} [{lane}] : {st} into vector<{lanes}x{st}>"));
            }
            b.stmt(format!(
                "vector.store {v}, %arg{k}[{base}] {{alignment = {}}} : {}, vector<{lanes}x{st}>",
                lanes * p.dtype.size(),
                memref(p)
            ));
        }
        b.stmt("}");
    }
    // the elements past the last whole vector (all of them when there are no vectors)
    let tail_start = if lanes > 1 { n_vec * lanes } else { 0 };
    if tail_start < n_elems {
        let (t0, n) = (b.index(tail_start), b.index(n_elems));
        let first = b.emit(format!("arith.addi {t0}, {start} : index"));
        b.stmt(format!("scf.for %i = {first} to {n} step {step} {{"));
        let vals = element(&mut b, g, &nodes, &params, &scalars, &space, "%i", c, dt, None, &unsupported)?;
        for (k, v) in vals {
            let p = &params[k];
            b.stmt(format!("memref.store {v}, %arg{k}[%i] : {}", memref(p)));
        }
        b.stmt("}");
    }
    // one vector (or tail element) per thread
    let work = if lanes > 1 { n_vec.max(n_elems - tail_start) } else { n_elems };
    Ok(finish(params, &b, None, [blocks(work, BLOCK), 1, 1], [BLOCK, 1, 1]))
}
