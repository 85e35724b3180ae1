//! The column-reduction template: reductions over axes that are not innermost. A block owns 32
//! neighbouring outputs (threads x, whose loads coalesce along the kept inner axes) and splits
//! their reduced elements among COLUMN_SLICES threads y; the partials meet in workgroup memory.
//! The group's elementwise epilogue follows.
use crate::body::{compute_type, storage_type, Body};
use crate::elementwise::{compute, store_outputs};
use crate::kernel::{finish, input_params, output_params, reduce_axes, Kernel, KernelError};
use std::collections::HashMap;
use xforge_ir::group::FusionGroup;
use xforge_ir::tensor::{numel, strides};
use xforge_ir::{Graph, Node, Op, ValueId};

use crate::knobs::{COLUMN_SLICES, COLUMN_UNROLL};

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
    let axes = reduce_axes(g, red).map_err(unsupported)?;
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
    params.extend(output_params(g, &grp.outputs, numel(&ys), "the reduced size").map_err(unsupported)?);
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
    // 32 neighbouring outputs per block (coalesced), SLICES threads sharing each one's reduced
    // elements; the slices' partials meet in workgroup memory
    let total_n = numel(&ys);
    if total_n == 0 || numel(&xs) == 0 {
        return Err(unsupported("an empty reduction is not a kernel".into()));
    }
    let slices = numel(&red_shape).next_power_of_two().clamp(1, COLUMN_SLICES);
    let tx = b.emit("gpu.thread_id x");
    let ty = b.emit("gpu.thread_id y");
    let c32 = b.index(32);
    let sl = b.index(slices);
    let red_n = b.index(numel(&red_shape));
    let part_mem = format!("memref<{}x{c}, #gpu.address_space<workgroup>>", 32 * slices);
    let (valid, i) = b.tile_loop("t", total_n, &tx);
    // offset of the kept coordinates in the input
    let kstr = strides(&kept_shape);
    let mut base = b.index(0);
    for (j, &a) in kept.iter().enumerate() {
        let (s, n, xsd) = (b.index(kstr[j]), b.index(kept_shape[j]), b.index(xstr[a]));
        let q = b.emit(format!("arith.divui {i}, {s} : index"));
        let r = b.emit(format!("arith.remui {q}, {n} : index"));
        let t = b.emit(format!("arith.muli {r}, {xsd} : index"));
        base = b.emit(format!("arith.addi {base}, {t} : index"));
    }
    let init_v = b.float(init, c);
    // the reduced axes, neighbours that are contiguous in the input folded into one (NHWC's H
    // and W: H·W elements C apart), so an element's offset costs one multiply per folded axis
    let mut folded: Vec<(usize, usize)> = vec![];
    for &a in &axes {
        match folded.last_mut() {
            Some((n, st)) if *st == xs[a] * xstr[a] => (*n, *st) = (*n * xs[a], xstr[a]),
            _ => folded.push((xs[a], xstr[a])),
        }
    }
    let fstr = strides(&folded.iter().map(|f| f.0).collect::<Vec<_>>());
    let load = |b: &mut Body, r: &str| {
        let mut off = base.clone();
        for (j, &(n, stride)) in folded.iter().enumerate() {
            let q = if fstr[j] == 1 {
                r.to_string()
            } else {
                let s = b.index(fstr[j]);
                b.emit(format!("arith.divui {r}, {s} : index"))
            };
            let q = if j == 0 {
                q
            } else {
                let n = b.index(n);
                b.emit(format!("arith.remui {q}, {n} : index"))
            };
            let sd = b.index(stride);
            let t = b.emit(format!("arith.muli {q}, {sd} : index"));
            off = b.emit(format!("arith.addi {off}, {t} : index"));
        }
        let raw = b.emit(format!("memref.load %arg{xp}[{off}] : memref<{}x{st}>", numel(&xs)));
        if st != c {
            b.emit(format!("arith.extf {raw} : {st} to {c}"))
        } else {
            raw
        }
    };
    // COLUMN_UNROLL independent loads in flight per thread (one chain of dependent adds would
    // wait on each load in turn), then the rest one at a time
    let red_total = numel(&red_shape);
    let unroll = COLUMN_UNROLL.min(red_total / slices).max(1);
    let step = slices * unroll;
    let main_end = red_total / step * step;
    let (cstep, cmain) = (b.index(step), b.index(main_end));
    let accs: Vec<String> = (0..unroll).map(|k| format!("%acc{k} = {init_v}")).collect();
    let types = vec![c; unroll].join(", ");
    let main = b.emit_multi(
        unroll,
        format!("scf.for %r = {ty} to {cmain} step {cstep} iter_args({}) -> ({types}) {{", accs.join(", ")),
    );
    let mut next = vec![];
    for k in 0..unroll {
        let r = if k == 0 {
            "%r".to_string()
        } else {
            let o = b.index(k * slices);
            b.emit(format!("arith.addi %r, {o} : index"))
        };
        let v = load(&mut b, &r);
        next.push(b.emit(format!("arith.{op} %acc{k}, {v} : {c}")));
    }
    b.stmt(format!("scf.yield {} : {types}", next.join(", ")));
    b.stmt("}");
    let mut acc = format!("{main}#0");
    for k in 1..unroll {
        acc = b.emit(format!("arith.{op} {acc}, {main}#{k} : {c}"));
    }
    let tail0 = b.emit(format!("arith.addi {cmain}, {ty} : index"));
    let acc = b.emit(format!("scf.for %rt = {tail0} to {red_n} step {sl} iter_args(%acct = {acc}) -> ({c}) {{"));
    let v = load(&mut b, "%rt");
    let nxt = b.emit(format!("arith.{op} %acct, {v} : {c}"));
    b.stmt(format!("scf.yield {nxt} : {c}"));
    b.stmt("}");
    let slot = b.emit(format!("arith.muli {ty}, {c32} : index"));
    let slot = b.emit(format!("arith.addi {slot}, {tx} : index"));
    b.stmt(format!("memref.store {acc}, %part[{slot}] : {part_mem}"));
    b.stmt("gpu.barrier");
    let zero = b.index(0);
    let first = b.emit(format!("arith.cmpi eq, {ty}, {zero} : index"));
    b.stmt(format!("scf.if {first} {{"));
    let mut acc = init_v.clone();
    for k in 0..slices {
        let at = b.index(k * 32);
        let at = b.emit(format!("arith.addi {at}, {tx} : index"));
        let v = b.emit(format!("memref.load %part[{at}] : {part_mem}"));
        acc = b.emit(format!("arith.{op} {acc}, {v} : {c}"));
    }
    let result = if finish_mean {
        let n = b.float(numel(&red_shape) as f64, c);
        b.emit(format!("arith.divf {acc}, {n} : {c}"))
    } else {
        acc
    };
    let mut seed = HashMap::new();
    seed.insert(y, result);
    let vals = compute(&mut b, g, &nodes[1..], &params, &scalars, &ys, &i, c, dt, None, seed, &[], &unsupported)?;
    b.stmt(format!("scf.if {valid} {{"));
    store_outputs(&mut b, &params, &vals, &i, c).map_err(unsupported)?;
    b.stmt("}");
    b.stmt("}");
    // the next tile reuses the partials' memory
    b.stmt("gpu.barrier");
    b.stmt("}");
    let grid = total_n.div_ceil(32).clamp(1, 1 << 20) as u32;
    Ok(finish(params, &b, Some(&format!("%part : {part_mem}")), [grid, 1, 1], [32, slices as u32, 1]))
}
