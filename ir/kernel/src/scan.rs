//! The scan template: a linear recurrence along one axis (CumSum, CumProd; exclusive and
//! reverse). A block owns 32 neighbouring lines (threads x, whose loads coalesce; pairs of
//! lines for 2-byte elements, so a warp moves 128 bytes per step) and walks
//! them in rounds of SCAN_CHUNKS × SCAN_RUN steps: thread y loads SCAN_RUN consecutive steps
//! into registers (each element is read once), scans them, the threads' totals meet in
//! workgroup memory, and each thread stores its steps from the line's running total plus the
//! totals of the threads before it.
use crate::body::{compute_type, storage_type, Body};
use crate::kernel::{finish, Kernel, KernelError, Param};
use xforge_ir::group::FusionGroup;
use xforge_ir::tensor::numel;
use xforge_ir::{Attr, Graph, Node, Op};

use crate::knobs::{SCAN_CHUNKS, SCAN_RUN};

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
    let rank = xs.len() as i64;
    if !(-rank..rank).contains(&axis) {
        return Err(unsupported(format!("axis {axis} is out of range for rank {rank}")));
    }
    let axis = if axis < 0 { (axis + rank) as usize } else { axis as usize };
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
    // rounds of SCAN_CHUNKS × SCAN_RUN steps: thread y holds SCAN_RUN consecutive steps
    let chunks = len.div_ceil(SCAN_RUN).next_power_of_two().clamp(1, SCAN_CHUNKS);
    let round = chunks * SCAN_RUN;
    // 2-byte elements move in pairs of neighbouring lines, so a warp reads 128 bytes per step
    let lanes = if st != c && inner % 2 == 0 { 2 } else { 1 };
    // the scan's value type: one line, or a pair of lines in lock step
    let (vt, vst) = if lanes == 1 {
        (c.to_string(), st.to_string())
    } else {
        (format!("vector<2x{c}>"), format!("vector<2x{st}>"))
    };
    let part_mem = format!("memref<{}x{c}, #gpu.address_space<workgroup>>", 32 * chunks * lanes);
    let mut b = Body::default();
    let tx = b.emit("gpu.thread_id x");
    let ty = b.emit("gpu.thread_id y");
    let (inner_v, len_v, one, zero, c32) = (b.index(inner), b.index(len), b.index(1), b.index(0), b.index(32));
    let last = b.index(len - 1);
    let (run_v, round_v, rounds_v) = (b.index(SCAN_RUN), b.index(round), b.index(len.div_ceil(round)));
    let my_first = b.emit(format!("arith.muli {ty}, {run_v} : index"));
    let slot = b.emit(format!("arith.muli {ty}, {c32} : index"));
    let slot = b.emit(format!("arith.addi {slot}, {tx} : index"));
    let (lanes_v, groups_v) = (b.index(lanes), b.index(inner / lanes));
    let slot = b.emit(format!("arith.muli {slot}, {lanes_v} : index"));
    let init_v = if lanes == 1 { b.float(init, c) } else { b.emit(format!("arith.constant dense<{init:?}> : {vt}")) };
    let (valid, line) = b.tile_loop("tile", lines_n / lanes, &tx);
    let o = b.emit(format!("arith.divui {line}, {groups_v} : index"));
    let ii = b.emit(format!("arith.remui {line}, {groups_v} : index"));
    let ii = b.emit(format!("arith.muli {ii}, {lanes_v} : index"));
    let ol = b.emit(format!("arith.muli {o}, {len_v} : index"));
    // the flat offset of walk step `p` (walked backwards for reverse scans)
    let offset_of = |b: &mut Body, p: &str| {
        let k = if reverse { b.emit(format!("arith.subi {last}, {p} : index")) } else { p.to_string() };
        let row = b.emit(format!("arith.addi {ol}, {k} : index"));
        let row = b.emit(format!("arith.muli {row}, {inner_v} : index"));
        b.emit(format!("arith.addi {row}, {ii} : index"))
    };
    let combine = |b: &mut Body, x: &str, y: &str| b.emit(format!("arith.{op} {x}, {y} : {vt}"));
    // the thread's steps of round `r`: (in the line, flat offset), clamped to the last step
    let round_steps = |b: &mut Body, r: &str| -> Vec<(String, String)> {
        let p0 = b.emit(format!("arith.muli {r}, {round_v} : index"));
        let p0 = b.emit(format!("arith.addi {p0}, {my_first} : index"));
        (0..SCAN_RUN)
            .map(|e| {
                let ce = b.index(e);
                let p = b.emit(format!("arith.addi {p0}, {ce} : index"));
                let inb = b.emit(format!("arith.cmpi ult, {p}, {len_v} : index"));
                let pc = b.emit(format!("arith.minui {p}, {last} : index"));
                (inb, offset_of(b, &pc))
            })
            .collect()
    };
    let load = |b: &mut Body, at: &str| {
        if lanes == 1 {
            b.emit(format!("memref.load %arg0[{at}] : memref<{n_el}x{st}>"))
        } else {
            b.emit(format!("vector.load %arg0[{at}] {{alignment = 4}} : memref<{n_el}x{st}>, {vst}"))
        }
    };
    // round 0's loads; each round then issues the next round's loads before its own work, so
    // the reads stay in flight through the barriers (each element is still read once)
    let first: Vec<String> = round_steps(&mut b, &zero).iter().map(|(_, at)| load(&mut b, at)).collect();
    let carried: Vec<String> = first.iter().enumerate().map(|(e, v)| format!("%raw{e} = {v}")).collect();
    // every thread of a line carries the line's total so far (`base`)
    b.emit_multi(
        SCAN_RUN + 1,
        format!(
            "scf.for %r = {zero} to {rounds_v} step {one} iter_args(%base = {init_v}, {}) -> ({vt}, {}) {{",
            carried.join(", "),
            vec![vst.as_str(); SCAN_RUN].join(", ")
        ),
    );
    let r1 = b.emit(format!("arith.addi %r, {one} : index"));
    let ahead: Vec<String> = round_steps(&mut b, &r1).iter().map(|(_, at)| load(&mut b, at)).collect();
    let steps: Vec<(String, String, String)> =
        round_steps(&mut b, "%r").into_iter().enumerate().map(|(e, (inb, at))| (inb, at, format!("%raw{e}"))).collect();
    let mut incl = vec![];
    let mut acc = init_v.clone();
    for (inb, _, raw) in &steps {
        let v = if st != c { b.emit(format!("arith.extf {raw} : {vst} to {vt}")) } else { raw.clone() };
        let v = b.emit(format!("arith.select {inb}, {v}, {init_v} : {vt}"));
        acc = combine(&mut b, &acc, &v);
        incl.push(acc.clone());
    }
    if lanes == 1 {
        b.stmt(format!("memref.store {acc}, %part[{slot}] : {part_mem}"));
    } else {
        b.stmt(format!("vector.store {acc}, %part[{slot}] : {part_mem}, {vt}"));
    }
    b.stmt("gpu.barrier");
    // the totals of the threads before this one, and of the whole round
    let (mut before, mut all) = (init_v.clone(), init_v.clone());
    for j in 0..chunks {
        let at = b.index(j * 32);
        let at = b.emit(format!("arith.addi {at}, {tx} : index"));
        let at = b.emit(format!("arith.muli {at}, {lanes_v} : index"));
        let pv = if lanes == 1 {
            b.emit(format!("memref.load %part[{at}] : {part_mem}"))
        } else {
            b.emit(format!("vector.load %part[{at}] : {part_mem}, {vt}"))
        };
        let cj = b.index(j);
        let earlier = b.emit(format!("arith.cmpi ult, {cj}, {ty} : index"));
        let with = combine(&mut b, &before, &pv);
        before = b.emit(format!("arith.select {earlier}, {with}, {before} : {vt}"));
        all = combine(&mut b, &all, &pv);
    }
    // the next round overwrites the totals
    b.stmt("gpu.barrier");
    let start = combine(&mut b, "%base", &before);
    for (e, (inb, at, _)) in steps.iter().enumerate() {
        let out = match (exclusive, e) {
            (true, 0) => start.clone(),
            (true, _) => combine(&mut b, &start, &incl[e - 1]),
            (false, _) => combine(&mut b, &start, &incl[e]),
        };
        let out = if st != c { b.emit(format!("arith.truncf {out} : {vt} to {vst}")) } else { out };
        let ok = b.emit(format!("arith.andi {valid}, {inb} : i1"));
        b.stmt(format!("scf.if {ok} {{"));
        if lanes == 1 {
            b.stmt(format!("memref.store {out}, %arg1[{at}] : memref<{n_el}x{st}>"));
        } else {
            b.stmt(format!("vector.store {out}, %arg1[{at}] {{alignment = 4}} : memref<{n_el}x{st}>, {vst}"));
        }
        b.stmt("}");
    }
    let next = combine(&mut b, "%base", &all);
    b.stmt(format!("scf.yield {next}, {} : {vt}, {}", ahead.join(", "), vec![vst.as_str(); SCAN_RUN].join(", ")));
    b.stmt("}");
    b.stmt("}");
    let grid = (lines_n / lanes).div_ceil(32).clamp(1, 1 << 20) as u32;
    Ok(finish(params, &b, Some(&format!("%part : {part_mem}")), [grid, 1, 1], [32, chunks as u32, 1]))
}
