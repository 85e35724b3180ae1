//! The contraction template for generated GEMM groups: a MatMul (batched, broadcast) or Gemm
//! whose epilogue a vendor library cannot run (erf-GELU, head-major stores through Split and
//! Transpose). The epilogue runs on each output where the accumulator lies, then the store tail.
//! - f16/bf16 with 8-element rows: tensor cores. GEMM_MMA_WARPS_M × GEMM_MMA_WARPS_N warps of
//!   64×32 outputs; K advances GEMM_MMA_K at a time through workgroup memory (16-byte copies,
//!   rows padded by 8 elements so fragment loads hit distinct banks).
//! - otherwise: blocks of GEMM_THREADS² threads own GEMM_TILE² outputs, (GEMM_TILE /
//!   GEMM_THREADS)² per thread, K in steps of GEMM_K through workgroup memory (f32).
//!
//! Accumulators are f32 in both.
use crate::body::{compute_type, storage_type, Body};
use crate::elementwise::{compute, float_attr};
use crate::kernel::{finish, input_params, Kernel, KernelError, Param};
use crate::knobs::{GEMM_K, GEMM_MMA_K, GEMM_MMA_WARPS_M, GEMM_MMA_WARPS_N, GEMM_THREADS, GEMM_TILE};
use crate::route::{is_tail, routed_outputs, routes, store_routed, tail_sizes, OutputRoute};
use crate::tensor_core::{lane, mma, Lane};
use std::collections::HashMap;
use xforge_ir::group::FusionGroup;
use xforge_ir::tensor::{numel, strides};
use xforge_ir::{Attr, Graph, Node, Op, ValueId};

/// A contraction's operands and layout.
struct Contraction {
    a: ValueId,
    b: ValueId,
    /// Gemm's C (added as beta·C) and its scale.
    c: Option<(ValueId, f64)>,
    alpha: f64,
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
}

fn contraction(g: &Graph, node: &Node) -> Result<Contraction, String> {
    let input = |k: usize| node.inputs.get(k).copied().flatten();
    let (a, b) = (input(0).ok_or("no A")?, input(1).ok_or("no B")?);
    let sa = g.ty(a).static_shape().ok_or("shapes are not static")?;
    let sb = g.ty(b).static_shape().ok_or("shapes are not static")?;
    if sa.len() < 2 || sb.len() < 2 {
        return Err("a contraction of 1-D operands is not generated".into());
    }
    let (ra, rb) = (sa.len(), sb.len());
    let int = |k: &str| matches!(node.attr(k), Some(Attr::Int(1)));
    let (trans_a, trans_b) = if node.op == Op::Gemm { (int("transA"), int("transB")) } else { (false, false) };
    let (m, ka) = if trans_a { (sa[ra - 1], sa[ra - 2]) } else { (sa[ra - 2], sa[ra - 1]) };
    let (kb, n) = if trans_b { (sb[rb - 1], sb[rb - 2]) } else { (sb[rb - 2], sb[rb - 1]) };
    if ka != kb {
        return Err(format!("node '{}': inner dimensions {ka} and {kb} differ", node.name));
    }
    let c = match (node.op, input(2)) {
        (Op::Gemm, Some(c)) => Some((c, float_attr(node, "beta", 1.0))),
        _ => None,
    };
    let alpha = if node.op == Op::Gemm { float_attr(node, "alpha", 1.0) } else { 1.0 };
    Ok(Contraction { a, b, c, alpha, trans_a, trans_b, m, n, k: ka })
}

/// Offset of the batch slice `coords` (of the output's batch dims) in an operand of `shape`
/// whose leading dims broadcast against them.
fn batch_offset(b: &mut Body, coords: &[String], shape: &[usize]) -> String {
    let r = shape.len();
    let st = strides(shape);
    let lead = r - 2;
    let mut off = b.index(0);
    for d in 0..lead {
        if shape[d] == 1 {
            continue;
        }
        let c = &coords[coords.len() - lead + d];
        let s = b.index(st[d]);
        let t = b.emit(format!("arith.muli {c}, {s} : index"));
        off = b.emit(format!("arith.addi {off}, {t} : index"));
    }
    off
}

/// Everything both paths need about a GEMM group.
struct Plan<'g> {
    g: &'g Graph,
    ct: Contraction,
    y: ValueId,
    ys: Vec<usize>,
    dt: xforge_ir::DType,
    epilogue: Vec<&'g Node>,
    params: Vec<Param>,
    scalars: HashMap<ValueId, f64>,
    outs: Vec<OutputRoute>,
    pa: usize,
    pb: usize,
    batch: Vec<usize>,
}

fn plan<'g>(
    g: &'g Graph,
    grp: &FusionGroup,
    unsupported: &dyn Fn(String) -> KernelError,
) -> Result<Plan<'g>, KernelError> {
    let nodes: Vec<&Node> = grp.nodes.iter().map(|&n| &g.nodes[n]).collect();
    let anchor = nodes[0];
    if !matches!(anchor.op, Op::MatMul | Op::Gemm) {
        return Err(unsupported(format!("{} is not a contraction this template knows", anchor.op)));
    }
    let ct = contraction(g, anchor).map_err(unsupported)?;
    let y = anchor.outputs[0].ok_or_else(|| unsupported("no output".into()))?;
    let ys = g.ty(y).static_shape().ok_or_else(|| unsupported("shapes are not static".into()))?;
    let dt = g.ty(ct.a).dtype;
    if g.ty(ct.b).dtype != dt || !dt.is_float() {
        return Err(unsupported(format!("operands of {} and {} are not generated", dt, g.ty(ct.b).dtype)));
    }
    if ct.m == 0 || ct.n == 0 || ct.k == 0 {
        return Err(unsupported("an empty contraction is not a kernel".into()));
    }
    // the epilogue: elementwise nodes on the contraction's space; then the store tail
    let split = nodes[1..].iter().position(|n| is_tail(n.op)).map_or(nodes.len(), |p| p + 1);
    let (epilogue, tail) = (nodes[1..split].to_vec(), &nodes[split..]);
    if let Some(n) = tail.iter().find(|n| !is_tail(n.op)) {
        return Err(unsupported(format!("node '{}' ({}) follows the store tail", n.name, n.op)));
    }
    // the tail's sizes and shapes are compiled in
    let sizes = tail_sizes(tail);
    let (mut params, scalars) = input_params(g, &grp.inputs, &sizes, true).map_err(unsupported)?;
    let at = |v: ValueId| params.iter().position(|p| p.value == v && !p.output);
    let (pa, pb) = match (at(ct.a), at(ct.b)) {
        (Some(x), Some(z)) => (x, z),
        _ => return Err(unsupported("the operands must be buffers".into())),
    };
    params.extend(routed_outputs(g, &grp.outputs).map_err(unsupported)?);
    let computed: Vec<ValueId> = std::iter::once(y).chain(epilogue.iter().filter_map(|n| n.outputs[0])).collect();
    let outs = routes(g, tail, &params, &computed).map_err(unsupported)?;
    let batch: Vec<usize> = ys[..ys.len() - 2].to_vec();
    if numel(&batch) > 65535 {
        return Err(unsupported("more than 65535 batches in one launch".into()));
    }
    Ok(Plan { g, ct, y, ys, dt, epilogue, params, scalars, outs, pa, pb, batch })
}

/// A block's place: its batch coordinates, the operands' batch offsets, the first row and
/// column of its tile and the batch's first output.
struct Frame {
    bcoords: Vec<String>,
    a_off: String,
    b_off: String,
    m0: String,
    n0: String,
    zbase: String,
}

fn frame(b: &mut Body, p: &Plan, tile_m: usize, tile_n: usize) -> Frame {
    let bx = b.emit("gpu.block_id x");
    let by = b.emit("gpu.block_id y");
    let bz = b.emit("gpu.block_id z");
    let (ctm, ctn) = (b.index(tile_m), b.index(tile_n));
    let n0 = b.emit(format!("arith.muli {bx}, {ctn} : index"));
    let m0 = b.emit(format!("arith.muli {by}, {ctm} : index"));
    let bcoords = crate::elementwise::coords(b, &bz, &p.batch);
    let sa = p.g.ty(p.ct.a).static_shape().unwrap();
    let sb = p.g.ty(p.ct.b).static_shape().unwrap();
    let a_off = batch_offset(b, &bcoords, &sa);
    let b_off = batch_offset(b, &bcoords, &sb);
    let mn = b.index(p.ct.m * p.ct.n);
    let zbase = b.emit(format!("arith.muli {bz}, {mn} : index"));
    Frame { bcoords, a_off, b_off, m0, n0, zbase }
}

/// Output (mi, nj) of the frame's batch: alpha, beta·C, the epilogue and the routed stores,
/// skipped past the edges.
fn store_element(
    b: &mut Body,
    p: &Plan,
    f: &Frame,
    acc: &str,
    mi: &str,
    nj: &str,
    unsupported: &dyn Fn(String) -> KernelError,
) -> Result<(), KernelError> {
    let c = compute_type(p.dt);
    let (cm, cn) = (b.index(p.ct.m), b.index(p.ct.n));
    let ok1 = b.emit(format!("arith.cmpi ult, {mi}, {cm} : index"));
    let ok2 = b.emit(format!("arith.cmpi ult, {nj}, {cn} : index"));
    let ok = b.emit(format!("arith.andi {ok1}, {ok2} : i1"));
    b.stmt(format!("scf.if {ok} {{"));
    let flat = b.emit(format!("arith.muli {mi}, {cn} : index"));
    let flat = b.emit(format!("arith.addi {flat}, {nj} : index"));
    let flat = b.emit(format!("arith.addi {flat}, {} : index", f.zbase));
    let mut v = acc.to_string();
    if p.ct.alpha != 1.0 {
        let al = b.float(p.ct.alpha, c);
        v = b.emit(format!("arith.mulf {v}, {al} : {c}"));
    }
    let (g, params, scalars, ys, dt) = (p.g, &p.params, &p.scalars, &p.ys, p.dt);
    if let Some((cv, beta)) = p.ct.c {
        let loaded = compute(b, g, &[], params, scalars, ys, &flat, c, dt, None, HashMap::new(), &[cv], unsupported)?;
        let cval = match (loaded.get(&cv), scalars.get(&cv)) {
            (Some(x), _) => x.clone(),
            (None, Some(&s)) => b.float(s, c),
            _ => return Err(unsupported("Gemm's C is not readable".into())),
        };
        let cval = if beta != 1.0 {
            let bt = b.float(beta, c);
            b.emit(format!("arith.mulf {cval}, {bt} : {c}"))
        } else {
            cval
        };
        v = b.emit(format!("arith.addf {v}, {cval} : {c}"));
    }
    let mut seed = HashMap::new();
    seed.insert(p.y, v);
    let vals = compute(b, g, &p.epilogue, params, scalars, ys, &flat, c, dt, None, seed, &[], unsupported)?;
    let at: Vec<String> = f.bcoords.iter().cloned().chain([mi.to_string(), nj.to_string()]).collect();
    store_routed(b, params, &p.outs, &vals, &at, ys, c, 1).map_err(unsupported)?;
    b.stmt("}");
    Ok(())
}

pub fn gemm(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let p = plan(g, grp, &unsupported)?;
    let ct = &p.ct;
    // tensor cores need 16-byte rows along each operand's contiguous axis
    let a_rows = if ct.trans_a { ct.m } else { ct.k };
    let b_rows = if ct.trans_b { ct.k } else { ct.n };
    let half = matches!(p.dt, xforge_ir::DType::F16 | xforge_ir::DType::BF16);
    let mma = crate::target::current().matrix == crate::target::MatrixUnit::MmaSync;
    if mma && half && a_rows % 8 == 0 && b_rows % 8 == 0 {
        tensor_core_gemm(&p, &unsupported)
    } else {
        simt_gemm(&p, &unsupported)
    }
}

/// Grid of (column tiles, row tiles, batches), refusing launches past the limits.
fn grid(p: &Plan, tile_m: usize, tile_n: usize) -> Result<[u32; 3], String> {
    if p.ct.m.div_ceil(tile_m) > 65535 {
        return Err("too many row tiles for one launch".into());
    }
    Ok([p.ct.n.div_ceil(tile_n).min(1 << 31) as u32, p.ct.m.div_ceil(tile_m) as u32, numel(&p.batch).max(1) as u32])
}

fn simt_gemm(p: &Plan, unsupported: &dyn Fn(String) -> KernelError) -> Result<Kernel, KernelError> {
    let ct = &p.ct;
    let c = compute_type(p.dt);
    let st = storage_type(p.dt).unwrap();
    let (m, n, k) = (ct.m, ct.n, ct.k);
    let (tile, threads, kstep) = (GEMM_TILE, GEMM_THREADS, GEMM_K);
    let per = tile / threads;
    let wg = format!("memref<{}x{c}, #gpu.address_space<workgroup>>", tile * kstep);
    let mut b = Body::default();
    let tx = b.emit("gpu.thread_id x");
    let ty = b.emit("gpu.thread_id y");
    let f = frame(&mut b, p, tile, tile);
    let ctile = b.index(tile);
    let cthreads = b.index(threads);
    let lin = b.emit(format!("arith.muli {ty}, {cthreads} : index"));
    let lin = b.emit(format!("arith.addi {lin}, {tx} : index"));
    let zero_f = b.float(0.0, c);
    let zero_i = b.index(0);
    let (cm, cn, ck) = (b.index(m), b.index(n), b.index(k));
    // each thread's rows ty + threads·i and columns tx + threads·j of the tile
    let rows: Vec<String> = (0..per)
        .map(|i| {
            let o = b.index(threads * i);
            b.emit(format!("arith.addi {ty}, {o} : index"))
        })
        .collect();
    let cols: Vec<String> = (0..per)
        .map(|j| {
            let o = b.index(threads * j);
            b.emit(format!("arith.addi {tx}, {o} : index"))
        })
        .collect();
    let acc_init: Vec<String> = (0..per * per).map(|q| format!("%acc{q} = {zero_f}")).collect();
    let kpad = b.index(k.div_ceil(kstep) * kstep);
    let ckstep = b.index(kstep);
    let acc = b.emit_multi(
        per * per,
        format!(
            "scf.for %kt = {zero_i} to {kpad} step {ckstep} iter_args({}) -> ({}) {{",
            acc_init.join(", "),
            vec![c; per * per].join(", ")
        ),
    );
    // the previous step's tiles are read by every thread before they are overwritten
    b.stmt("gpu.barrier");
    let loads = tile * kstep / (threads * threads);
    let (pa, pb) = (p.pa, p.pb);
    // (tile, transposed, parameter, batch offset, (first outer index, its extent value, extent))
    for (which, trans, pk, off, outer) in
        [("As", ct.trans_a, pa, &f.a_off, (&f.m0, &cm, m)), ("Bs", ct.trans_b, pb, &f.b_off, (&f.n0, &cn, n))]
    {
        let elems = p.params[pk].elements;
        for r in 0..loads {
            let e = b.index(threads * threads * r);
            let e = b.emit(format!("arith.addi {lin}, {e} : index"));
            // the index running along memory is the fastest across threads (coalesced loads):
            // k for row-major A and transposed B, the outer index otherwise
            let along_k = (which == "As") != trans;
            let (ol, kl) = if along_k {
                let ckk = b.index(kstep);
                (b.emit(format!("arith.divui {e}, {ckk} : index")), b.emit(format!("arith.remui {e}, {ckk} : index")))
            } else {
                (
                    b.emit(format!("arith.remui {e}, {ctile} : index")),
                    b.emit(format!("arith.divui {e}, {ctile} : index")),
                )
            };
            let o = b.emit(format!("arith.addi {}, {ol} : index", outer.0));
            let kk = b.emit(format!("arith.addi %kt, {kl} : index"));
            let ok1 = b.emit(format!("arith.cmpi ult, {o}, {} : index", outer.1));
            let ok2 = b.emit(format!("arith.cmpi ult, {kk}, {ck} : index"));
            let ok = b.emit(format!("arith.andi {ok1}, {ok2} : i1"));
            // element (o, k): A is [M, K] (or [K, M] transposed), B is [K, N] (or [N, K])
            let (major, minor, minor_n) = if along_k { (&o, &kk, k) } else { (&kk, &o, outer.2) };
            let cmin = b.index(minor_n);
            let idx = b.emit(format!("arith.muli {major}, {cmin} : index"));
            let idx = b.emit(format!("arith.addi {idx}, {minor} : index"));
            let idx = b.emit(format!("arith.addi {idx}, {off} : index"));
            let idx = b.emit(format!("arith.select {ok}, {idx}, {zero_i} : index"));
            let raw = b.emit(format!("memref.load %arg{pk}[{idx}] : memref<{elems}x{st}>"));
            let v = if st != c { b.emit(format!("arith.extf {raw} : {st} to {c}")) } else { raw };
            let v = b.emit(format!("arith.select {ok}, {v}, {zero_f} : {c}"));
            let slot = b.emit(format!("arith.muli {kl}, {ctile} : index"));
            let slot = b.emit(format!("arith.addi {slot}, {ol} : index"));
            b.stmt(format!("memref.store {v}, %{which}[{slot}] : {wg}"));
        }
    }
    b.stmt("gpu.barrier");
    let mut accs: Vec<String> = (0..per * per).map(|q| format!("%acc{q}")).collect();
    for kk in 0..kstep {
        let base = b.index(kk * tile);
        let av: Vec<String> = rows
            .iter()
            .map(|r| {
                let s = b.emit(format!("arith.addi {base}, {r} : index"));
                b.emit(format!("memref.load %As[{s}] : {wg}"))
            })
            .collect();
        let bv: Vec<String> = cols
            .iter()
            .map(|r| {
                let s = b.emit(format!("arith.addi {base}, {r} : index"));
                b.emit(format!("memref.load %Bs[{s}] : {wg}"))
            })
            .collect();
        for i in 0..per {
            for j in 0..per {
                accs[i * per + j] = b.emit(format!("math.fma {}, {}, {} : {c}", av[i], bv[j], accs[i * per + j]));
            }
        }
    }
    b.stmt(format!("scf.yield {} : {}", accs.join(", "), vec![c; per * per].join(", ")));
    b.stmt("}");
    for (i, row) in rows.iter().enumerate() {
        for (j, col) in cols.iter().enumerate() {
            let mi = b.emit(format!("arith.addi {}, {row} : index", f.m0));
            let nj = b.emit(format!("arith.addi {}, {col} : index", f.n0));
            store_element(&mut b, p, &f, &format!("{acc}#{}", i * per + j), &mi, &nj, unsupported)?;
        }
    }
    let grid = grid(p, tile, tile).map_err(unsupported)?;
    let shared = format!("%As : {wg}, %Bs : {wg}");
    Ok(finish(p.params.clone(), &b, Some(&shared), grid, [threads as u32, threads as u32, 1]))
}

/// Tensor cores: warps of 64×32 outputs (4×4 m16n8 tiles, 64 f32 accumulators per thread).
/// Tiles are kept [row][k] for A and [column][k] for B in workgroup memory, so every
/// fragment register is one aligned 4-byte load.
fn tensor_core_gemm(p: &Plan, unsupported: &dyn Fn(String) -> KernelError) -> Result<Kernel, KernelError> {
    let ct = &p.ct;
    let t = storage_type(p.dt).unwrap();
    let (m, n, k) = (ct.m, ct.n, ct.k);
    let (wm, wn, kstep) = (GEMM_MMA_WARPS_M, GEMM_MMA_WARPS_N, GEMM_MMA_K);
    let (tile_m, tile_n) = (64 * wm, 32 * wn);
    let threads = 32 * wm * wn;
    let stride = kstep + 8;
    let awg = format!("memref<{}x{t}, #gpu.address_space<workgroup>>", tile_m * stride);
    let bwg = format!("memref<{}x{t}, #gpu.address_space<workgroup>>", tile_n * stride);
    let mut b = Body::default();
    let tid = b.emit("gpu.thread_id x");
    let f = frame(&mut b, p, tile_m, tile_n);
    let Lane { warp, g: gq, t2, .. } = lane(&mut b, &tid);
    let c8 = b.index(8);
    let cwn = b.index(wn);
    let wy = b.emit(format!("arith.divui {warp}, {cwn} : index"));
    let wx = b.emit(format!("arith.remui {warp}, {cwn} : index"));
    let (c64, c32i) = (b.index(64), b.index(32));
    let wrow = b.emit(format!("arith.muli {wy}, {c64} : index"));
    let wcol = b.emit(format!("arith.muli {wx}, {c32i} : index"));
    // rows g (+ 8) of each 16-row tile, column g of each 8-column tile
    let arow: Vec<(String, String)> = (0..4)
        .map(|i| {
            let o = b.index(16 * i);
            let r = b.emit(format!("arith.addi {wrow}, {o} : index"));
            let r = b.emit(format!("arith.addi {r}, {gq} : index"));
            let r8 = b.emit(format!("arith.addi {r}, {c8} : index"));
            (r, r8)
        })
        .collect();
    let bcol: Vec<String> = (0..4)
        .map(|j| {
            let o = b.index(8 * j);
            let r = b.emit(format!("arith.addi {wcol}, {o} : index"));
            b.emit(format!("arith.addi {r}, {gq} : index"))
        })
        .collect();
    let zero = b.float(0.0, "f32");
    let zero_i = b.index(0);
    let nacc = 4 * 4 * 4;
    let types = vec!["f32"; nacc].join(", ");
    let init: Vec<String> = (0..nacc).map(|q| format!("%acc{q} = {zero}")).collect();
    let kpad = b.index(k.div_ceil(kstep) * kstep);
    let ckstep = b.index(kstep);
    let acc = b.emit_multi(
        nacc,
        format!("scf.for %kt = {zero_i} to {kpad} step {ckstep} iter_args({}) -> ({types}) {{", init.join(", ")),
    );
    b.stmt("gpu.barrier");
    let cstride = b.index(stride);
    // copies: 8 elements along the operand's contiguous axis; rows past the edge read zeros
    for (pk, trans_k, rows_n, off, outer0, outer_n, mem, wg) in [
        (p.pa, !ct.trans_a, tile_m, &f.a_off, &f.m0, m, "%As", &awg),
        (p.pb, ct.trans_b, tile_n, &f.b_off, &f.n0, n, "%Bs", &bwg),
    ] {
        let elems = p.params[pk].elements;
        let mref = format!("memref<{elems}x{t}>");
        // vectors per tile: rows_n × kstep elements in runs of 8
        let runs = rows_n * kstep / 8;
        for r in 0..runs.div_ceil(threads) {
            let e = b.index(threads * r);
            let e = b.emit(format!("arith.addi {tid}, {e} : index"));
            let (ol, kl) = if trans_k {
                // contiguous along k: run e covers k = 8·(e % (kstep/8)) .. + 8 of row e / (kstep/8)
                let cpr = b.index(kstep / 8);
                let ol = b.emit(format!("arith.divui {e}, {cpr} : index"));
                let kv = b.emit(format!("arith.remui {e}, {cpr} : index"));
                (ol, b.emit(format!("arith.muli {kv}, {c8} : index")))
            } else {
                // contiguous along the outer axis: run e covers rows 8·(e % (rows/8)) .. + 8 at k = e / (rows/8)
                let cpr = b.index(rows_n / 8);
                let ov = b.emit(format!("arith.remui {e}, {cpr} : index"));
                (b.emit(format!("arith.muli {ov}, {c8} : index")), b.emit(format!("arith.divui {e}, {cpr} : index")))
            };
            let o = b.emit(format!("arith.addi {outer0}, {ol} : index"));
            let kk = b.emit(format!("arith.addi %kt, {kl} : index"));
            let (co, ck) = (b.index(outer_n), b.index(k));
            let ok1 = b.emit(format!("arith.cmpi ult, {o}, {co} : index"));
            let ok2 = b.emit(format!("arith.cmpi ult, {kk}, {ck} : index"));
            let ok = b.emit(format!("arith.andi {ok1}, {ok2} : i1"));
            let (major, minor, minor_n) = if trans_k { (&o, &kk, k) } else { (&kk, &o, outer_n) };
            let cmin = b.index(minor_n);
            let idx = b.emit(format!("arith.muli {major}, {cmin} : index"));
            let idx = b.emit(format!("arith.addi {idx}, {minor} : index"));
            let idx = b.emit(format!("arith.addi {idx}, {off} : index"));
            let idx = b.emit(format!("arith.select {ok}, {idx}, {zero_i} : index"));
            let raw = b.emit(format!("vector.load %arg{pk}[{idx}] {{alignment = 16}} : {mref}, vector<8x{t}>"));
            let zv = b.emit(format!("arith.constant dense<0.0> : vector<8x{t}>"));
            let v = b.emit(format!("arith.select {ok}, {raw}, {zv} : vector<8x{t}>"));
            // the last round of copies may have more threads than copies
            let ragged = (r + 1) * threads > runs;
            if ragged {
                let cap = b.index(runs);
                let inside = b.emit(format!("arith.cmpi ult, {e}, {cap} : index"));
                b.stmt(format!("scf.if {inside} {{"));
            }
            if trans_k {
                let slot = b.emit(format!("arith.muli {ol}, {cstride} : index"));
                let slot = b.emit(format!("arith.addi {slot}, {kl} : index"));
                b.stmt(format!("vector.store {v}, {mem}[{slot}] {{alignment = 16}} : {wg}, vector<8x{t}>"));
            } else {
                for i in 0..8 {
                    let x = b.emit(format!("vector.extract {v}[{i}] : {t} from vector<8x{t}>"));
                    let ci = b.index(i);
                    let row = b.emit(format!("arith.addi {ol}, {ci} : index"));
                    let slot = b.emit(format!("arith.muli {row}, {cstride} : index"));
                    let slot = b.emit(format!("arith.addi {slot}, {kl} : index"));
                    b.stmt(format!("memref.store {x}, {mem}[{slot}] : {wg}"));
                }
            }
            if ragged {
                b.stmt("}");
            }
        }
    }
    b.stmt("gpu.barrier");
    let pair = |b: &mut Body, mem: &str, wg: &str, row: &str, col: usize| {
        let s = b.emit(format!("arith.muli {row}, {cstride} : index"));
        let ci = b.index(col);
        let s = b.emit(format!("arith.addi {s}, {ci} : index"));
        let s = b.emit(format!("arith.addi {s}, {t2} : index"));
        b.emit(format!("vector.load {mem}[{s}] {{alignment = 4}} : {wg}, vector<2x{t}>"))
    };
    let mut accs: Vec<String> = (0..nacc).map(|q| format!("%acc{q}")).collect();
    for ks in 0..kstep / 16 {
        let af: Vec<Vec<String>> = arow
            .iter()
            .map(|(r, r8)| {
                vec![
                    pair(&mut b, "%As", &awg, r, 16 * ks),
                    pair(&mut b, "%As", &awg, r8, 16 * ks),
                    pair(&mut b, "%As", &awg, r, 16 * ks + 8),
                    pair(&mut b, "%As", &awg, r8, 16 * ks + 8),
                ]
            })
            .collect();
        let bf: Vec<Vec<String>> = bcol
            .iter()
            .map(|c| vec![pair(&mut b, "%Bs", &bwg, c, 16 * ks), pair(&mut b, "%Bs", &bwg, c, 16 * ks + 8)])
            .collect();
        for (i, a_frag) in af.iter().enumerate() {
            for (j, b_frag) in bf.iter().enumerate() {
                let q = (i * 4 + j) * 4;
                let out = mma(&mut b, t, a_frag, b_frag, &accs[q..q + 4]);
                accs[q..q + 4].clone_from_slice(&out);
            }
        }
    }
    b.stmt(format!("scf.yield {} : {types}", accs.join(", ")));
    b.stmt("}");
    for (i, (r, r8)) in arow.iter().enumerate() {
        for (j, bc) in bcol.iter().enumerate() {
            for e in 0..4 {
                let row = if e < 2 { r } else { r8 };
                let mi = b.emit(format!("arith.addi {}, {row} : index", f.m0));
                let col = b.emit(format!("arith.addi {}, {bc} : index", f.n0));
                // bcol holds column g; the accumulator's columns are 2t, 2t + 1
                let col = b.emit(format!("arith.subi {col}, {gq} : index"));
                let col = b.emit(format!("arith.addi {col}, {t2} : index"));
                let col = if e % 2 == 1 {
                    let one = b.index(1);
                    b.emit(format!("arith.addi {col}, {one} : index"))
                } else {
                    col
                };
                store_element(&mut b, p, &f, &format!("{acc}#{}", (i * 4 + j) * 4 + e), &mi, &col, unsupported)?;
            }
        }
    }
    let grid = grid(p, tile_m, tile_n).map_err(unsupported)?;
    let shared = format!("%As : {awg}, %Bs : {bwg}");
    Ok(finish(p.params.clone(), &b, Some(&shared), grid, [threads as u32, 1, 1]))
}
