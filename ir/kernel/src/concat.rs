//! Concat of group inputs, then the group's elementwise epilogue (DenseNet's concatenation of
//! every earlier layer's features followed by batch norm and ReLU): one grid-stride loop per
//! operand, each thread moving a run of neighbouring elements of its operand to where they lie
//! in the output (16-byte vectors where the runs allow), so no element tests which operand holds
//! it (the elementwise template's pull walks a chain of one test per operand).
use crate::body::{compute_type, storage_type, Body};
use crate::elementwise::{compute, store_outputs};
use crate::kernel::{blocks, finish, input_params, output_params, Kernel, KernelError};
use crate::knobs::BLOCK;
use crate::pooling::store_run;
use std::collections::HashMap;
use xforge_ir::group::FusionGroup;
use xforge_ir::tensor::numel;
use xforge_ir::{Graph, Node, Op, OpKind};

/// The Concat's axis (made non-negative) when group `grp` is a Concat of values read from
/// outside the group, of static shapes, then elementwise work on its output.
fn concat_axis(g: &Graph, grp: &FusionGroup) -> Option<usize> {
    let n = &g.nodes[*grp.nodes.first()?];
    if n.op != Op::Concat || n.inputs.len() < 2 {
        return None;
    }
    let y = n.outputs.first().copied().flatten()?;
    let ys = g.ty(y).static_shape()?;
    let inputs_outside =
        n.inputs.iter().all(|v| v.is_some_and(|v| grp.inputs.contains(&v) && g.ty(v).static_shape().is_some()));
    let rest_elementwise = grp.nodes[1..].iter().all(|&m| {
        let m = &g.nodes[m];
        matches!(m.op.kind(), OpKind::Elementwise | OpKind::Broadcast)
            && m.outputs.iter().flatten().all(|&o| g.ty(o).static_shape().as_deref() == Some(ys.as_slice()))
    });
    let ax = crate::elementwise::axis(n, ys.len())?;
    (inputs_outside && rest_elementwise && g.ty(y).dtype.is_float() && numel(&ys) > 0).then_some(ax)
}

/// Whether this template runs group `grp`.
pub fn applies(g: &Graph, grp: &FusionGroup) -> bool {
    concat_axis(g, grp).is_some()
}

pub fn concat(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let ax = concat_axis(g, grp).ok_or_else(|| unsupported("not a Concat of inputs with an epilogue".into()))?;
    let nodes: Vec<&Node> = grp.nodes.iter().map(|&n| &g.nodes[n]).collect();
    let cat = nodes[0];
    let y = cat.outputs[0].unwrap();
    let ys = g.ty(y).static_shape().unwrap();
    let (mut params, scalars) = input_params(g, &grp.inputs, &[], true).map_err(unsupported)?;
    params.extend(output_params(g, &grp.outputs, numel(&ys), "the Concat's output size").map_err(unsupported)?);
    if params.iter().filter(|p| p.output).any(|p| p.elements != numel(&ys)) {
        return Err(unsupported("an output is not of the Concat's shape".into()));
    }
    let dt = g.ty(y).dtype;
    let c = compute_type(dt);
    let esize = dt.size();
    // elements after the axis, and the output's run per outer index
    let after: usize = ys[ax + 1..].iter().product();
    let out_run = ys[ax] * after;
    let parts: Vec<(usize, usize, usize)> = {
        let mut start = 0;
        let mut v = vec![];
        for x in cat.inputs.iter().flatten() {
            let xs = g.ty(*x).static_shape().unwrap();
            let k = params
                .iter()
                .position(|p| p.value == *x && !p.output)
                .ok_or_else(|| unsupported("an operand is not an input".into()))?;
            if g.ty(*x).dtype != dt {
                return Err(unsupported("operands of another dtype".into()));
            }
            v.push((k, xs[ax] * after, start * after));
            start += xs[ax];
        }
        v
    };
    // 16-byte runs where every operand's run, offset and the output's run are whole vectors
    let vector = 16 / esize;
    let lanes = if parts.iter().all(|&(_, run, off)| run.is_multiple_of(vector) && off.is_multiple_of(vector))
        && out_run.is_multiple_of(vector)
    {
        vector
    } else {
        1
    };
    let outer: usize = ys[..ax].iter().product();
    let st = storage_type(dt).unwrap();
    let mut b = Body::default();
    let (start, step) = b.grid_stride();
    let epilogue = &nodes[1..];
    for (p, (k, run, off)) in parts.into_iter().enumerate() {
        // a thread moves `lanes` neighbouring elements of operand k
        let total = outer * run / lanes;
        if total == 0 {
            continue;
        }
        let n = b.index(total);
        b.stmt(format!("scf.for %j{p} = {start} to {n} step {step} {{"));
        let lv = b.index(lanes);
        let j = b.emit(format!("arith.muli %j{p}, {lv} : index"));
        let (runv, outv, offv) = (b.index(run), b.index(out_run), b.index(off));
        let o = b.emit(format!("arith.divui {j}, {runv} : index"));
        let r = b.emit(format!("arith.remui {j}, {runv} : index"));
        let base = b.emit(format!("arith.muli {o}, {outv} : index"));
        let base = b.emit(format!("arith.addi {base}, {offv} : index"));
        let at = b.emit(format!("arith.addi {base}, {r} : index"));
        let xs_elems = params[k].elements;
        let vals: Vec<String> = if lanes > 1 {
            let v = b.emit(format!(
                "vector.load %arg{k}[{j}] {{alignment = 16}} : memref<{xs_elems}x{st}>, vector<{lanes}x{st}>"
            ));
            (0..lanes)
                .map(|e| {
                    let x = b.emit(format!("vector.extract {v}[{e}] : {st} from vector<{lanes}x{st}>"));
                    if st != c {
                        b.emit(format!("arith.extf {x} : {st} to {c}"))
                    } else {
                        x
                    }
                })
                .collect()
        } else {
            let x = b.emit(format!("memref.load %arg{k}[{j}] : memref<{xs_elems}x{st}>"));
            vec![if st != c { b.emit(format!("arith.extf {x} : {st} to {c}")) } else { x }]
        };
        let mut run_vals = vec![];
        for (e, x) in vals.into_iter().enumerate() {
            let ev = b.index(e);
            let i = b.emit(format!("arith.addi {at}, {ev} : index"));
            let mut seed = HashMap::new();
            seed.insert(y, x);
            let out = compute(&mut b, g, epilogue, &params, &scalars, &ys, &i, c, dt, None, seed, &[], &unsupported)?;
            run_vals.push((i, out));
        }
        if lanes > 1 {
            store_run(&mut b, &params, &run_vals, c).map_err(unsupported)?;
        } else {
            store_outputs(&mut b, &params, &run_vals[0].1, &run_vals[0].0, c).map_err(unsupported)?;
        }
        b.stmt("}");
    }
    Ok(finish(params, &b, None, [blocks(numel(&ys) / lanes, BLOCK), 1, 1], [BLOCK, 1, 1]))
}
