//! The column-reduction template: reductions over axes that are not innermost. One thread per
//! output element walks the reduced axes; neighbouring threads read neighbouring elements of the
//! kept inner axes, so loads coalesce. The group's elementwise epilogue follows.
use crate::body::{compute_type, storage_type, Body};
use crate::elementwise::{compute, stored};
use crate::kernel::{blocks, finish, input_params, Kernel, KernelError, Param};
use std::collections::HashMap;
use xforge_ir::tensor::{numel, strides};
use xforge_ir::{Attr, Graph, Node, Op, ValueId};
use xforge_passes::fusion::FusionGroup;

use crate::knobs::BLOCK;

pub fn column_reduction(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let nodes: Vec<&Node> = grp.nodes.iter().map(|&n| &g.nodes[n]).collect();
    let red = nodes[0];
    let (init, op, finish_mean) = match red.op {
        Op::ReduceSum => (0.0, "addf", false),
        Op::ReduceMean => (0.0, "addf", true),
        Op::ReduceMax => (f64::NEG_INFINITY, "maximumf", false),
        Op::ReduceMin => (f64::INFINITY, "minimumf", false),
        o => return Err(unsupported(format!("{o} is not a column reduction this template knows"))),
    };
    let x = red.inputs[0].ok_or_else(|| unsupported("no input".into()))?;
    let y = red.outputs[0].unwrap();
    let xs = g.ty(x).static_shape().ok_or_else(|| unsupported("shapes are not static".into()))?;
    let ys = g.ty(y).static_shape().ok_or_else(|| unsupported("shapes are not static".into()))?;
    let rank = xs.len();
    let axes: Vec<i64> = match red.attr("axes") {
        Some(Attr::Ints(v)) => v.clone(),
        _ => match red.inputs.get(1).copied().flatten() {
            None => vec![],
            // axes known only at run time cannot be compiled in
            Some(v) => g
                .weights
                .get(&v)
                .map(|t| t.to_i64())
                .ok_or_else(|| unsupported("the reduced axes are not constant".into()))?,
        },
    };
    if axes.is_empty() && matches!(red.attr("noop_with_empty_axes"), Some(Attr::Int(1))) {
        return Err(unsupported("a reduction over no axes (noop_with_empty_axes) is not a kernel".into()));
    }
    let mut axes: Vec<usize> = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes.iter().map(|&a| if a < 0 { (a + rank as i64) as usize } else { a as usize }).collect()
    };
    axes.sort();
    axes.dedup();
    let kept: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
    let axes_input: Vec<ValueId> = red.inputs.get(1).copied().flatten().into_iter().collect();
    let (mut params, scalars) = input_params(g, &grp.inputs, &axes_input, true).map_err(unsupported)?;
    for &o in &grp.outputs {
        let ty = g.ty(o);
        if ty.static_shape().map(|s| numel(&s)) != Some(numel(&ys)) {
            return Err(unsupported(format!("output '{}' is not of the reduced size", g.name_of(o))));
        }
        storage_type(ty.dtype)
            .filter(|_| ty.dtype.is_float())
            .ok_or_else(|| unsupported("output dtype is not supported".into()))?;
        params.push(Param { value: o, dtype: ty.dtype, elements: numel(&ys), output: true });
    }
    let xp = params
        .iter()
        .position(|p| p.value == x && !p.output)
        .ok_or_else(|| unsupported("the reduced value is computed in the group".into()))?;
    let dt = g.ty(x).dtype;
    let c = compute_type(dt);
    let st = storage_type(dt).unwrap();
    let xstr = strides(&xs);
    let kept_shape: Vec<usize> = kept.iter().map(|&a| xs[a]).collect();
    let red_shape: Vec<usize> = axes.iter().map(|&a| xs[a]).collect();
    let mut b = Body::default();
    let (start, step) = b.grid_stride();
    let total = b.index(numel(&ys));
    let red_n = b.index(numel(&red_shape));
    let one = b.index(1);
    b.stmt(format!("scf.for %i = {start} to {total} step {step} {{"));
    // offset of the kept coordinates in the input
    let kstr = strides(&kept_shape);
    let mut base = b.index(0);
    for (j, &a) in kept.iter().enumerate() {
        let (s, n, xsd) = (b.index(kstr[j]), b.index(kept_shape[j]), b.index(xstr[a]));
        let q = b.emit(format!("arith.divui %i, {s} : index"));
        let r = b.emit(format!("arith.remui {q}, {n} : index"));
        let t = b.emit(format!("arith.muli {r}, {xsd} : index"));
        base = b.emit(format!("arith.addi {base}, {t} : index"));
    }
    let init_v = b.float(init, c);
    let zero = b.index(0);
    let acc = b.emit(format!("scf.for %r = {zero} to {red_n} step {one} iter_args(%acc = {init_v}) -> ({c}) {{"));
    let rstr = strides(&red_shape);
    let mut off = base.clone();
    for (j, &a) in axes.iter().enumerate() {
        let (s, n, xsd) = (b.index(rstr[j]), b.index(red_shape[j]), b.index(xstr[a]));
        let q = b.emit(format!("arith.divui %r, {s} : index"));
        let r = b.emit(format!("arith.remui {q}, {n} : index"));
        let t = b.emit(format!("arith.muli {r}, {xsd} : index"));
        off = b.emit(format!("arith.addi {off}, {t} : index"));
    }
    let raw = b.emit(format!("memref.load %arg{xp}[{off}] : memref<{}x{st}>", numel(&xs)));
    let v = if st != c { b.emit(format!("arith.extf {raw} : {st} to {c}")) } else { raw };
    let nxt = b.emit(format!("arith.{op} %acc, {v} : {c}"));
    b.stmt(format!("scf.yield {nxt} : {c}"));
    b.stmt("}");
    let result = if finish_mean {
        let n = b.float(numel(&red_shape) as f64, c);
        b.emit(format!("arith.divf {acc}, {n} : {c}"))
    } else {
        acc
    };
    let mut seed = HashMap::new();
    seed.insert(y, result);
    let vals = compute(&mut b, g, &nodes[1..], &params, &scalars, &ys, "%i", c, dt, None, seed, &[], &unsupported)?;
    for (pk, p) in params.iter().enumerate().filter(|(_, p)| p.output) {
        let v = vals.get(&p.value).cloned().ok_or_else(|| unsupported("an output is not computed".into()))?;
        let v = stored(&mut b, p, &v, c);
        b.stmt(format!("memref.store {v}, %arg{pk}[%i] : memref<{}x{}>", p.elements, storage_type(p.dtype).unwrap()));
    }
    b.stmt("}");
    Ok(finish(params, &b, None, [blocks(numel(&ys), BLOCK), 1, 1], [BLOCK, 1, 1]))
}
