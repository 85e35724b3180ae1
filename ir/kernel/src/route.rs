//! Stores through data movement: a contraction's or attention's result reaches some group
//! outputs through a tail of views, Transposes and Splits (head-major Q/K/V, the merged heads
//! after attention). Each element is computed once, at its coordinates in the anchor's output
//! space, and written where the tail sends it.
use crate::body::{storage_type, Body};
use crate::elementwise::{coords, flat, is_view, stored};
use crate::kernel::Param;
use std::collections::HashMap;
use xforge_ir::{Attr, Graph, Node, Op, ValueId};

/// One step of a tail, from a value's coordinates to its consumer's.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    /// Same flat index, new shape.
    View(Vec<usize>),
    /// Output axis d is input axis perm[d].
    Transpose(Vec<usize>),
    /// The output holds `len` elements from `start` along `axis`.
    Split { axis: usize, start: usize, len: usize },
}

/// Where output parameter `param` is written from: the computed value `source` and the steps.
#[derive(Clone, Debug)]
pub struct OutputRoute {
    pub param: usize,
    pub source: ValueId,
    steps: Vec<Step>,
}

/// Whether a node can be part of a store tail.
pub fn is_tail(op: Op) -> bool {
    is_view(op) || matches!(op, Op::Transpose | Op::Split)
}

fn step_of(g: &Graph, n: &Node, out: ValueId) -> Result<Step, String> {
    let bad = |why: &str| format!("node '{}' ({}): {why}", n.name, n.op);
    let input = n.inputs[0].ok_or_else(|| bad("no input"))?;
    let in_shape = g.ty(input).static_shape().ok_or_else(|| bad("shape is not static"))?;
    let out_shape = g.ty(out).static_shape().ok_or_else(|| bad("shape is not static"))?;
    let r = in_shape.len();
    Ok(match n.op {
        op if is_view(op) => Step::View(out_shape),
        Op::Transpose => Step::Transpose(match n.attr("perm") {
            Some(Attr::Ints(p)) => {
                p.iter().map(|&v| if v < 0 { (v + r as i64) as usize } else { v as usize }).collect()
            }
            _ => (0..r).rev().collect(),
        }),
        Op::Split => {
            let a = match n.attr("axis") {
                Some(Attr::Int(a)) => *a,
                _ => 0,
            };
            let axis = if a < 0 { (a + r as i64) as usize } else { a as usize };
            // the outputs tile the axis in order; their static shapes give the lengths
            let mut start = 0;
            for o in n.outputs.iter().flatten() {
                let len = g.ty(*o).static_shape().ok_or_else(|| bad("shape is not static"))?[axis];
                if *o == out {
                    return Ok(Step::Split { axis, start, len });
                }
                start += len;
            }
            return Err(bad("output not found"));
        }
        _ => return Err(bad("is not a view, Transpose or Split")),
    })
}

/// The routes of every output parameter: back from the output through the group's tail nodes
/// to a value in `computed`.
pub fn routes(g: &Graph, tail: &[&Node], params: &[Param], computed: &[ValueId]) -> Result<Vec<OutputRoute>, String> {
    let mut out = vec![];
    for (pk, p) in params.iter().enumerate().filter(|(_, p)| p.output) {
        let mut steps = vec![];
        let mut v = p.value;
        while !computed.contains(&v) {
            let n = tail
                .iter()
                .find(|n| n.outputs.contains(&Some(v)))
                .ok_or_else(|| format!("output '{}' is not reached by the group's stores", g.name_of(p.value)))?;
            steps.push(step_of(g, n, v)?);
            v = n.inputs[0].ok_or("a tail node has no input")?;
        }
        steps.reverse();
        out.push(OutputRoute { param: pk, source: v, steps });
    }
    Ok(out)
}

/// Whether every route sends each aligned run of `width` consecutive source elements (along the
/// source's last axis) to `width` consecutive, equally aligned elements of one output: every
/// Transpose keeps the last axis last and every Split of the last axis cuts at multiples of
/// `width`, with the runs inside one row of the last axis wherever either happens.
pub fn moves_runs(routes: &[OutputRoute], shape: &[usize], width: usize) -> bool {
    let fits = |sh: &[usize]| sh.last().is_some_and(|&l| l.is_multiple_of(width));
    fits(shape)
        && routes.iter().all(|r| {
            let mut sh = shape.to_vec();
            r.steps.iter().all(|s| match s {
                Step::View(to) => {
                    sh = to.clone();
                    true
                }
                Step::Transpose(perm) => {
                    let ok = fits(&sh) && perm.last() == Some(&(sh.len() - 1));
                    sh = perm.iter().map(|&d| sh[d]).collect();
                    ok
                }
                Step::Split { axis, start, len } => {
                    let last = *axis == sh.len() - 1;
                    let ok = fits(&sh) && (!last || (start.is_multiple_of(width) && len.is_multiple_of(width)));
                    sh[*axis] = *len;
                    ok
                }
            })
        })
}

/// Stores the value of each route's source (in the compute type `c`, from `vals`), given the
/// element's coordinates `at` in `shape` (the source space); skips elements a Split sends to
/// another output. For runs of `width` > 1 elements (`moves_runs`), `vals` hold vectors of the
/// outputs' storage type, `at` is the run's first element, and each route stores one vector.
#[allow(clippy::too_many_arguments)]
pub fn store_routed(
    b: &mut Body,
    params: &[Param],
    routes: &[OutputRoute],
    vals: &HashMap<ValueId, String>,
    at: &[String],
    shape: &[usize],
    c: &str,
    width: usize,
) -> Result<(), String> {
    for r in routes {
        let p = &params[r.param];
        let v = vals.get(&r.source).ok_or("a stored value is not computed")?;
        let (mut cs, mut sh) = (at.to_vec(), shape.to_vec());
        let mut cond: Option<String> = None;
        for s in &r.steps {
            match s {
                Step::View(to) => {
                    if *to != sh {
                        let i = flat(b, &cs, &sh);
                        cs = coords(b, &i, to);
                        sh = to.clone();
                    }
                }
                Step::Transpose(perm) => {
                    cs = perm.iter().map(|&d| cs[d].clone()).collect();
                    sh = perm.iter().map(|&d| sh[d]).collect();
                }
                Step::Split { axis, start, len } => {
                    let (lo, hi) = (b.index(*start), b.index(start + len));
                    let ge = b.emit(format!("arith.cmpi uge, {}, {lo} : index", cs[*axis]));
                    let lt = b.emit(format!("arith.cmpi ult, {}, {hi} : index", cs[*axis]));
                    let inside = b.emit(format!("arith.andi {ge}, {lt} : i1"));
                    cond = Some(match cond {
                        None => inside,
                        Some(c0) => b.emit(format!("arith.andi {c0}, {inside} : i1")),
                    });
                    cs[*axis] = b.emit(format!("arith.subi {}, {lo} : index", cs[*axis]));
                    sh[*axis] = *len;
                }
            }
        }
        let i = flat(b, &cs, &sh);
        if let Some(c0) = &cond {
            b.stmt(format!("scf.if {c0} {{"));
        }
        let st = storage_type(p.dtype).unwrap();
        if width > 1 {
            b.stmt(format!(
                "vector.store {v}, %arg{}[{i}] {{alignment = {}}} : memref<{}x{st}>, vector<{width}x{st}>",
                r.param,
                width * p.dtype.size(),
                p.elements.max(1)
            ));
        } else {
            let sv = stored(b, p, v, c);
            b.stmt(format!("memref.store {sv}, %arg{}[{i}] : memref<{}x{st}>", r.param, p.elements.max(1)));
        }
        if cond.is_some() {
            b.stmt("}");
        }
    }
    Ok(())
}

/// The tail's compiled-in operands (Split sizes, Reshape shapes): not kernel parameters.
pub fn tail_sizes(tail: &[&Node]) -> Vec<ValueId> {
    tail.iter().flat_map(|n| n.inputs.iter().skip(1).flatten().copied()).collect()
}

/// The group's outputs as parameters of their own sizes (the tail decides where each element
/// of the anchor's space lands).
pub fn routed_outputs(g: &Graph, outputs: &[ValueId]) -> Result<Vec<Param>, String> {
    outputs
        .iter()
        .map(|&o| {
            let ty = g.ty(o);
            let s = ty.static_shape().ok_or_else(|| format!("output '{}' has no static shape", g.name_of(o)))?;
            storage_type(ty.dtype)
                .filter(|_| ty.dtype.is_float())
                .ok_or_else(|| format!("output dtype {} is not supported", ty.dtype))?;
            Ok(Param { value: o, dtype: ty.dtype, elements: xforge_ir::tensor::numel(&s), output: true })
        })
        .collect()
}
