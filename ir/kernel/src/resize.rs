//! Resize and Upsample with constant scales or sizes (a segmentation head's upsampling to the
//! image, a feature pyramid's nearest doubling), then the group's elementwise epilogue. One
//! thread per output element: along each resized axis the output coordinate's taps (input
//! index and weight, computed at compile time in f64 by the interpreter's plan, so nearest
//! rounding and weights match it exactly) come from two small tables; axes that keep their
//! length read the output coordinate itself. The taps are unrolled: a bilinear 2-D resize is
//! four loads and three fused multiply-adds per element.
use crate::body::{compute_type, storage_type, Body};
use crate::elementwise::{compute, coords, store_outputs};
use crate::kernel::{blocks, finish, input_params, output_params, Kernel, KernelError, Param};
use crate::knobs::{BLOCK, RESIZE_MAX_TAPS, RESIZE_MAX_TERMS};
use std::collections::HashMap;
use xforge_ir::group::FusionGroup;
use xforge_ir::interp::{resize_plan, NodeAttrs};
use xforge_ir::tensor::{numel, strides};
use xforge_ir::{DType, Graph, Node, Op, OpKind, Tensor, ValueId};

/// Taps of one axis: per output coordinate `k` (input index, weight) pairs, or None where the
/// axis keeps its length and every output coordinate reads its own.
type AxisTaps = Option<(usize, Vec<(usize, f64)>)>;

/// The taps per axis of Resize/Upsample node `n`, when its scales or sizes are constants, no
/// coordinate falls outside (tf_crop_and_resize's extrapolation) and no axis needs more than
/// RESIZE_MAX_TAPS taps per coordinate.
fn axis_taps(g: &Graph, n: &Node) -> Result<Vec<AxisTaps>, String> {
    let x = n.inputs.first().copied().flatten().ok_or("no input")?;
    let in_shape = g.ty(x).static_shape().ok_or("shapes are not static")?;
    let mut ins: Vec<Option<Tensor>> = vec![None];
    for v in n.inputs.iter().skip(1) {
        ins.push(match v {
            None => None,
            Some(v) => Some(g.weights.get(v).cloned().ok_or("scales or sizes are known only at run time")?),
        });
    }
    let plan = resize_plan(&NodeAttrs(n), g.opset, &in_shape, &ins, n.op == Op::Upsample)?;
    let y = n.outputs.first().copied().flatten().ok_or("no output")?;
    if g.ty(y).static_shape().as_deref() != Some(plan.out_shape.as_slice()) {
        return Err("the plan's shape is not the output's".into());
    }
    let mut axes = vec![];
    for (d, taps) in plan.per_axis.iter().enumerate() {
        let taps: Vec<&Vec<(isize, f64)>> = taps
            .iter()
            .map(|t| t.as_ref().ok_or("a coordinate falls outside (extrapolation)"))
            .collect::<Result<_, _>>()?;
        let identity = plan.out_shape[d] == in_shape[d]
            && taps.iter().enumerate().all(|(o, t)| t.iter().all(|&(i, w)| (i == o as isize && w == 1.0) || w == 0.0));
        if identity {
            axes.push(None);
            continue;
        }
        let k = taps.iter().map(|t| t.iter().filter(|(_, w)| *w != 0.0).count()).max().unwrap_or(1).max(1);
        if k > RESIZE_MAX_TAPS {
            return Err(format!("{k} taps per coordinate (antialiasing) is over {RESIZE_MAX_TAPS}"));
        }
        let mut flat = vec![];
        for t in taps {
            let mut kept: Vec<(usize, f64)> =
                t.iter().filter(|(_, w)| *w != 0.0).map(|&(i, w)| (i.max(0) as usize, w)).collect();
            // padded with weight 0 on a valid index
            kept.resize(k, (kept.first().map_or(0, |t| t.0), 0.0));
            flat.extend(kept);
        }
        axes.push(Some((k, flat)));
    }
    let terms: usize = axes.iter().map(|a| a.as_ref().map_or(1, |(k, _)| *k)).product();
    if terms > RESIZE_MAX_TERMS {
        return Err(format!("{terms} taps per element is over {RESIZE_MAX_TERMS}"));
    }
    Ok(axes)
}

/// Whether group `grp` is a Resize/Upsample this template runs, then elementwise work on its
/// output.
pub fn applies(g: &Graph, grp: &FusionGroup) -> bool {
    let Some(&first) = grp.nodes.first() else { return false };
    let n = &g.nodes[first];
    matches!(n.op, Op::Resize | Op::Upsample)
        && n.inputs.first().copied().flatten().is_some_and(|x| g.ty(x).dtype.is_float())
        && grp.nodes[1..].iter().all(|&m| matches!(g.nodes[m].op.kind(), OpKind::Elementwise | OpKind::Broadcast))
        && axis_taps(g, n).is_ok()
}

pub fn resize(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let nodes: Vec<&Node> = grp.nodes.iter().map(|&n| &g.nodes[n]).collect();
    let rs = nodes[0];
    let axes = axis_taps(g, rs).map_err(unsupported)?;
    let x = rs.inputs[0].unwrap();
    let y = rs.outputs[0].unwrap();
    let xs = g.ty(x).static_shape().unwrap();
    let ys = g.ty(y).static_shape().unwrap();
    // the scales and sizes are compiled in
    let skip: Vec<ValueId> = rs.inputs.iter().skip(1).flatten().copied().collect();
    let (mut params, scalars) = input_params(g, &grp.inputs, &skip, false).map_err(unsupported)?;
    params.extend(output_params(g, &grp.outputs, numel(&ys), "the resize's output size").map_err(unsupported)?);
    let xp = params
        .iter()
        .position(|p| p.value == x && !p.output)
        .ok_or_else(|| unsupported("the resized value is computed in the group".into()))?;
    let dt = g.ty(x).dtype;
    let c = compute_type(dt);
    let st = storage_type(dt).ok_or_else(|| unsupported(format!("{dt} data is not supported")))?;
    // per resized axis an i32 index table and an f32 weight table, compiled in
    let mut constants = vec![];
    let mut tables: Vec<Option<(usize, usize, usize)>> = vec![];
    for a in &axes {
        tables.push(a.as_ref().map(|(k, taps)| {
            let mut table = |t: Tensor| {
                let at = params.len();
                params.push(Param { value: ValueId(u32::MAX), dtype: t.dtype(), elements: t.len(), output: false });
                constants.push((at, std::sync::Arc::<[u8]>::from(t.data().to_le_bytes())));
                at
            };
            let idx =
                table(Tensor::from_i64(vec![taps.len()], taps.iter().map(|t| t.0 as i64).collect()).cast(DType::I32));
            let wt =
                table(Tensor::from_f64(DType::F32, vec![taps.len()], &taps.iter().map(|t| t.1).collect::<Vec<_>>()));
            (*k, idx, wt)
        }));
    }
    let mut b = Body::default();
    let (start, step) = b.grid_stride();
    let total = b.index(numel(&ys));
    b.stmt(format!("scf.for %i = {start} to {total} step {step} {{"));
    let oc = coords(&mut b, "%i", &ys);
    // per axis: (input index · stride, weight) for each tap
    let xst = strides(&xs);
    let mut per_axis: Vec<Vec<(String, Option<String>)>> = vec![];
    for (d, t) in tables.iter().enumerate() {
        let sv = b.index(xst[d]);
        per_axis.push(match *t {
            None => vec![(b.emit(format!("arith.muli {}, {sv} : index", oc[d])), None)],
            Some((k, ip, wp)) => {
                let kv = b.index(k);
                let base = b.emit(format!("arith.muli {}, {kv} : index", oc[d]));
                (0..k)
                    .map(|j| {
                        let jv = b.index(j);
                        let at = b.emit(format!("arith.addi {base}, {jv} : index"));
                        let raw = b.emit(format!("memref.load %arg{ip}[{at}] : memref<{}xi32>", params[ip].elements));
                        let iv = b.emit(format!("arith.index_cast {raw} : i32 to index"));
                        let off = b.emit(format!("arith.muli {iv}, {sv} : index"));
                        let w = b.emit(format!("memref.load %arg{wp}[{at}] : memref<{}xf32>", params[wp].elements));
                        let w = if c == "f32" { w } else { b.emit(format!("arith.extf {w} : f32 to {c}")) };
                        (off, Some(w))
                    })
                    .collect()
            }
        });
    }
    // Σ over every combination of the axes' taps of Π weights · x
    let mut terms: Vec<(String, Option<String>)> = vec![(b.index(0), None)];
    for taps in &per_axis {
        let mut next = vec![];
        for (off, w) in &terms {
            for (o2, w2) in taps {
                let at = b.emit(format!("arith.addi {off}, {o2} : index"));
                let weight = match (w, w2) {
                    (Some(a), Some(bw)) => Some(b.emit(format!("arith.mulf {a}, {bw} : {c}"))),
                    (a, bw) => a.clone().or_else(|| bw.clone()),
                };
                next.push((at, weight));
            }
        }
        terms = next;
    }
    let mut acc: Option<String> = None;
    for (at, w) in terms {
        let raw = b.emit(format!("memref.load %arg{xp}[{at}] : memref<{}x{st}>", numel(&xs)));
        let v = if st != c { b.emit(format!("arith.extf {raw} : {st} to {c}")) } else { raw };
        acc = Some(match (acc, w) {
            (None, None) => v,
            (None, Some(w)) => b.emit(format!("arith.mulf {v}, {w} : {c}")),
            (Some(a), None) => b.emit(format!("arith.addf {a}, {v} : {c}")),
            (Some(a), Some(w)) => b.emit(format!("math.fma {v}, {w}, {a} : {c}")),
        });
    }
    let mut seed = HashMap::new();
    seed.insert(y, acc.unwrap());
    let vals = compute(&mut b, g, &nodes[1..], &params, &scalars, &ys, "%i", c, dt, None, seed, &[], &unsupported)?;
    store_outputs(&mut b, &params, &vals, "%i", c).map_err(unsupported)?;
    b.stmt("}");
    let mut k = finish(params, &b, None, [blocks(numel(&ys), BLOCK), 1, 1], [BLOCK, 1, 1]);
    k.constants.extend(constants);
    Ok(k)
}
