//! The scan template: a linear recurrence along one axis (CumSum, CumProd; exclusive and
//! reverse). A block owns 32 neighbouring lines (threads x, whose loads coalesce) and cuts each
//! line into SCAN_CHUNKS stretches (threads y): each thread totals its stretch, the totals meet in
//! workgroup memory, and each thread walks its stretch again from the total of those before it.
use crate::body::{compute_type, storage_type, Body};
use crate::kernel::{finish, Kernel, KernelError, Param};
use xforge_ir::tensor::numel;
use xforge_ir::{Attr, Graph, Node, Op};
use xforge_passes::fusion::FusionGroup;

use crate::knobs::SCAN_CHUNKS;

pub fn scan(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let nodes: Vec<&Node> = grp.nodes.iter().map(|&n| &g.nodes[n]).collect();
    if nodes.len() != 1 {
        return Err(unsupported("a scan with an epilogue is not generated yet".into()));
    }
    let n = nodes[0];
    let (op, init) = match n.op {
        Op::CumSum => ("addf", 0.0),
        Op::CumProd => ("mulf", 1.0),
        o => return Err(unsupported(format!("{o} is not a scan this template knows"))),
    };
    let x = n.inputs[0].ok_or_else(|| unsupported("no input".into()))?;
    let y = n.outputs[0].unwrap();
    let xs = g.ty(x).static_shape().ok_or_else(|| unsupported("shapes are not static".into()))?;
    let dt = g.ty(x).dtype;
    let st = storage_type(dt)
        .filter(|_| dt.is_float())
        .ok_or_else(|| unsupported(format!("scan over {dt} is not generated")))?;
    let axis = n
        .inputs
        .get(1)
        .copied()
        .flatten()
        .and_then(|v| g.weights.get(&v))
        .map(|t| t.to_i64())
        .and_then(|v| v.first().copied())
        .ok_or_else(|| unsupported("the axis is not a constant".into()))?;
    let axis = if axis < 0 { (axis + xs.len() as i64) as usize } else { axis as usize };
    let flag = |k: &str| matches!(n.attr(k), Some(Attr::Int(1)));
    let (exclusive, reverse) = (flag("exclusive"), flag("reverse"));
    if g.weights.contains_key(&x) {
        return Err(unsupported("the scanned value is a weight (it should have been folded)".into()));
    }
    let (outer, len, inner) = (numel(&xs[..axis]), xs[axis], numel(&xs[axis + 1..]));
    let params = vec![
        Param { value: x, dtype: dt, elements: numel(&xs), output: false },
        Param { value: y, dtype: g.ty(y).dtype, elements: numel(&xs), output: true },
    ];
    let c = compute_type(dt);
    let n_el = numel(&xs);
    let lines_n = outer * inner;
    if lines_n * len == 0 {
        return Err(unsupported("an empty scan is not a kernel".into()));
    }
    let chunks = len.next_power_of_two().clamp(1, SCAN_CHUNKS);
    let chunk = len.div_ceil(chunks);
    let part_mem = format!("memref<{}x{c}, #gpu.address_space<workgroup>>", 32 * chunks);
    let mut b = Body::default();
    let tx = b.emit("gpu.thread_id x");
    let ty = b.emit("gpu.thread_id y");
    let (inner_v, len_v, one, zero, c32) = (b.index(inner), b.index(len), b.index(1), b.index(0), b.index(32));
    let last = b.index(len.saturating_sub(1));
    let chunk_v = b.index(chunk);
    // this thread's stretch of the walk: [lo, hi)
    let lo = b.emit(format!("arith.muli {ty}, {chunk_v} : index"));
    let lo = b.emit(format!("arith.minui {lo}, {len_v} : index"));
    let hi = b.emit(format!("arith.addi {lo}, {chunk_v} : index"));
    let hi = b.emit(format!("arith.minui {hi}, {len_v} : index"));
    let init_v = b.float(init, c);
    let (valid, line) = b.tile_loop("tile", lines_n, &tx);
    let o = b.emit(format!("arith.divui {line}, {inner_v} : index"));
    let ii = b.emit(format!("arith.remui {line}, {inner_v} : index"));
    let ol = b.emit(format!("arith.muli {o}, {len_v} : index"));
    // the flat offset of walk step `p` (walked backwards for reverse scans)
    let offset_of = |b: &mut Body, p: &str| {
        let k = if reverse { b.emit(format!("arith.subi {last}, {p} : index")) } else { p.to_string() };
        let row = b.emit(format!("arith.addi {ol}, {k} : index"));
        let row = b.emit(format!("arith.muli {row}, {inner_v} : index"));
        b.emit(format!("arith.addi {row}, {ii} : index"))
    };
    let load = |b: &mut Body, at: &str| {
        let raw = b.emit(format!("memref.load %arg0[{at}] : memref<{n_el}x{st}>"));
        if st != c {
            b.emit(format!("arith.extf {raw} : {st} to {c}"))
        } else {
            raw
        }
    };
    // pass 1: the stretch's total
    let total = b.emit(format!("scf.for %p = {lo} to {hi} step {one} iter_args(%acc = {init_v}) -> ({c}) {{"));
    let at = offset_of(&mut b, "%p");
    let v = load(&mut b, &at);
    let nxt = b.emit(format!("arith.{op} %acc, {v} : {c}"));
    b.stmt(format!("scf.yield {nxt} : {c}"));
    b.stmt("}");
    let slot = b.emit(format!("arith.muli {ty}, {c32} : index"));
    let slot = b.emit(format!("arith.addi {slot}, {tx} : index"));
    b.stmt(format!("memref.store {total}, %part[{slot}] : {part_mem}"));
    b.stmt("gpu.barrier");
    // the totals of the stretches before this one
    let carry = b.emit(format!("scf.for %j = {zero} to {ty} step {one} iter_args(%cin = {init_v}) -> ({c}) {{"));
    let js = b.emit(format!("arith.muli %j, {c32} : index"));
    let js = b.emit(format!("arith.addi {js}, {tx} : index"));
    let pv = b.emit(format!("memref.load %part[{js}] : {part_mem}"));
    let cn = b.emit(format!("arith.{op} %cin, {pv} : {c}"));
    b.stmt(format!("scf.yield {cn} : {c}"));
    b.stmt("}");
    // pass 2: walk the stretch again from the carry, storing each running value
    b.stmt(format!("scf.if {valid} {{"));
    b.emit(format!("scf.for %q = {lo} to {hi} step {one} iter_args(%run = {carry}) -> ({c}) {{"));
    let at = offset_of(&mut b, "%q");
    let v = load(&mut b, &at);
    let nxt = b.emit(format!("arith.{op} %run, {v} : {c}"));
    let out = if exclusive { "%run".to_string() } else { nxt.clone() };
    let out = if st != c { b.emit(format!("arith.truncf {out} : {c} to {st}")) } else { out };
    b.stmt(format!("memref.store {out}, %arg1[{at}] : memref<{n_el}x{st}>"));
    b.stmt(format!("scf.yield {nxt} : {c}"));
    b.stmt("}");
    b.stmt("}");
    // the next tile reuses the totals' memory
    b.stmt("gpu.barrier");
    b.stmt("}");
    let grid = lines_n.div_ceil(32).clamp(1, 1 << 20) as u32;
    Ok(finish(params, &b, Some(&format!("%part : {part_mem}")), [grid, 1, 1], [32, chunks as u32, 1]))
}
