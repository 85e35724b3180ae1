//! Data movement made only of a store tail (views, Transposes, Splits of one buffer): each
//! element is read once, in order, and written where the tail sends it. This is a library
//! GEMM's head split (Q, K and V in head-major order) when the GEMM itself runs in cuBLASLt.
use crate::body::{compute_type, storage_type, Body};
use crate::elementwise::{coords, load_param};
use crate::kernel::{blocks, finish, input_params, Kernel, KernelError};
use crate::knobs::BLOCK;
use crate::route::{is_tail, moves_runs, routed_outputs, routes, store_routed, tail_sizes};
use std::collections::HashMap;
use xforge_ir::group::FusionGroup;
use xforge_ir::tensor::numel;
use xforge_ir::{Graph, Node};

/// Whether a group is a store tail with at least one Split or Transpose.
pub fn applies(g: &Graph, grp: &FusionGroup) -> bool {
    let nodes: Vec<&Node> = grp.nodes.iter().map(|&n| &g.nodes[n]).collect();
    nodes.iter().all(|n| is_tail(n.op)) && nodes.iter().any(|n| !crate::elementwise::is_view(n.op))
}

pub fn routed_copy(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let tail: Vec<&Node> = grp.nodes.iter().map(|&n| &g.nodes[n]).collect();
    let sizes = tail_sizes(&tail);
    let (mut params, scalars) = input_params(g, &grp.inputs, &sizes, true).map_err(unsupported)?;
    // one buffer moves: its elements are the iteration space
    let [source] = params.as_slice() else {
        return Err(unsupported(format!("{} buffers move (one is copied through a tail)", params.len())));
    };
    if !scalars.is_empty() {
        return Err(unsupported("a one-element weight moves".into()));
    }
    let (x, dt) = (source.value, source.dtype);
    let xs = g.ty(x).static_shape().ok_or_else(|| unsupported("shapes are not static".into()))?;
    params.extend(routed_outputs(g, &grp.outputs).map_err(unsupported)?);
    let outs = routes(g, &tail, &params, &[x]).map_err(unsupported)?;
    let c = compute_type(dt);
    let n = numel(&xs);
    // runs of up to 16 bytes move as one vector where every route keeps them together (the
    // index arithmetic, not the bytes, bounds an element-wise copy)
    let same_type = params.iter().all(|p| p.dtype == dt);
    let widest = 16 / dt.size().max(1);
    let width = std::iter::successors(Some(widest), |w| Some(w / 2))
        .take_while(|&w| w > 1 && same_type)
        .find(|&w| moves_runs(&outs, &xs, w))
        .unwrap_or(1);
    let mut b = Body::default();
    let (start, step) = b.grid_stride();
    let end = b.index(n / width);
    // %i: the element (one a thread), or %g: the run, from element %g·width
    let i = if width > 1 {
        b.stmt(format!("scf.for %g = {start} to {end} step {step} {{"));
        let w = b.index(width);
        b.emit(format!("arith.muli %g, {w} : index"))
    } else {
        b.stmt(format!("scf.for %i = {start} to {end} step {step} {{"));
        "%i".to_string()
    };
    let v = if width > 1 {
        let st = storage_type(dt).unwrap();
        b.emit(format!(
            "vector.load %arg0[{i}] {{alignment = {}}} : memref<{}x{st}>, vector<{width}x{st}>",
            width * dt.size(),
            n.max(1)
        ))
    } else {
        load_param(&mut b, &params, x, &i, c).unwrap()
    };
    let at = coords(&mut b, &i, &xs);
    let vals: HashMap<_, _> = [(x, v)].into_iter().collect();
    store_routed(&mut b, &params, &outs, &vals, &at, &xs, c, width).map_err(unsupported)?;
    b.stmt("}");
    Ok(finish(params, &b, None, [blocks(n / width, BLOCK), 1, 1], [BLOCK, 1, 1]))
}
