//! The attention template: softmax(q·kᵀ·scale + mask)·v in one kernel, flash-attention style:
//! keys and values stream through workgroup memory a tile at a time while each query row keeps
//! an online softmax (running max, running sum, rescaled accumulators), so the score matrix
//! never reaches device memory. f16/bf16 heads of 16..=128 (multiples of 16) run on tensor
//! cores (`mma.sync` m16n8k16: nvgpu for f16; nvvm for bf16, whose PTX types MLIR's nvgpu
//! lowering does not deduce), f32 accumulation; other heads and f32 take one thread per query
//! row. The merged-heads Transpose/Reshape after it are its store tail.
use crate::body::{compute_type, storage_type, Body};
use crate::elementwise::float_attr;
use crate::kernel::{finish, input_params, Kernel, KernelError, Param};
use crate::knobs::{
    attn_knob, attn_pipelined, ATTN_KEYS, ATTN_MMA_FILL_BLOCKS, ATTN_MMA_KEYS, ATTN_MMA_ROWS, ATTN_MMA_ROWS_WIDE,
    ATTN_ROWS,
};
use crate::route::{is_tail, routed_outputs, routes, store_routed, tail_sizes, OutputRoute};
use crate::tensor_core::{lane, mma, Lane};
use std::collections::HashMap;
use xforge_ir::group::FusionGroup;
use xforge_ir::tensor::strides;
use xforge_ir::{Attr, DType, Graph, Node, Op, ValueId};

/// Shapes and operands of one Attention node.
struct Heads {
    q: usize,
    k: usize,
    v: usize,
    mask: Option<(usize, Vec<usize>, bool)>,
    batch: usize,
    hq: usize,
    hk: usize,
    s: usize,
    l: usize,
    d: usize,
    dv: usize,
    scale: f64,
    causal: bool,
    dt: DType,
}

fn heads(g: &Graph, n: &Node, params: &[Param]) -> Result<Heads, String> {
    let input = |k: usize| n.inputs.get(k).copied().flatten();
    if (4..n.inputs.len()).any(|k| input(k).is_some()) {
        return Err("past key/value and nonpad lengths are not generated".into());
    }
    let int = |k: &str, d: i64| match n.attr(k) {
        Some(Attr::Int(v)) => *v,
        _ => d,
    };
    if float_attr(n, "softcap", 0.0) != 0.0 || int("left_window_size", -1) >= 0 || int("right_window_size", -1) >= 0 {
        return Err("softcap and sliding windows are not generated".into());
    }
    let param = |v: ValueId| params.iter().position(|p| p.value == v && !p.output).ok_or("an operand is not a buffer");
    let shape = |v: ValueId| g.ty(v).static_shape().filter(|s| s.len() == 4).ok_or("Q, K and V must be static and 4-D");
    let (q, k, v) = (input(0).ok_or("no Q")?, input(1).ok_or("no K")?, input(2).ok_or("no V")?);
    let (qs, ks, vs) = (shape(q)?, shape(k)?, shape(v)?);
    let (batch, hq, s, d) = (qs[0], qs[1], qs[2], qs[3]);
    let (hk, l, dv) = (ks[1], ks[2], vs[3]);
    if ks[0] != batch || vs[0] != batch || ks[3] != d || vs[1] != hk || vs[2] != l || hk == 0 || hq % hk != 0 {
        return Err(format!("Q {qs:?}, K {ks:?}, V {vs:?} do not agree"));
    }
    if batch * hq == 0 || s == 0 || l == 0 || d == 0 || dv == 0 {
        return Err("an empty attention is not a kernel".into());
    }
    let dt = g.ty(q).dtype;
    if g.ty(k).dtype != dt || g.ty(v).dtype != dt || !matches!(dt, DType::F32 | DType::F16 | DType::BF16) {
        return Err("Q, K and V must share one dtype of f32, f16 or bf16".into());
    }
    let mask = match input(3) {
        None => None,
        Some(m) => {
            let ms = g.ty(m).static_shape().ok_or("the mask's shape is not static")?;
            if ms.is_empty() || ms.len() > 4 || ms[ms.len() - 1] != l {
                return Err(format!("a mask of shape {ms:?} over {l} keys is not generated"));
            }
            Some((param(m)?, ms, g.ty(m).dtype == DType::Bool))
        }
    };
    let scale = match n.attr("scale") {
        Some(Attr::Float(x)) => *x as f64,
        _ => 1.0 / (d as f64).sqrt(),
    };
    Ok(Heads {
        q: param(q)?,
        k: param(k)?,
        v: param(v)?,
        mask,
        batch,
        hq,
        hk,
        s,
        l,
        d,
        dv,
        scale,
        causal: int("is_causal", 0) != 0,
        dt,
    })
}

/// Block-level setup shared by both paths: (batch index, query head, key/value head).
fn block_heads(b: &mut Body, a: &Heads) -> (String, String, String) {
    let bh = b.emit("gpu.block_id y");
    let chq = b.index(a.hq);
    let bb = b.emit(format!("arith.divui {bh}, {chq} : index"));
    let h = b.emit(format!("arith.remui {bh}, {chq} : index"));
    let grp = b.index(a.hq / a.hk);
    let kh = b.emit(format!("arith.divui {h}, {grp} : index"));
    (bb, h, kh)
}

/// The additive bias of score (bb, h, row, key) in f32: the mask (bool: keep or −∞), −∞ past
/// the keys or above the diagonal when causal. `row` and `key` may lie past the end (clamped
/// for the load).
fn bias(b: &mut Body, a: &Heads, params: &[Param], at: [&str; 4]) -> String {
    let [bb, h, row, key] = at;
    let ninf = b.float(f64::NEG_INFINITY, "f32");
    let cl = b.index(a.l);
    let mut val = b.float(0.0, "f32");
    if let Some((pm, ms, is_bool)) = &a.mask {
        let lastk = b.index(a.l - 1);
        let lasts = b.index(a.s - 1);
        let kc = b.emit(format!("arith.minui {key}, {lastk} : index"));
        let rc = b.emit(format!("arith.minui {row}, {lasts} : index"));
        let full = [bb.to_string(), h.to_string(), rc, kc];
        let st = strides(ms);
        let mut off = b.index(0);
        for (k, &dim) in ms.iter().enumerate() {
            if dim == 1 {
                continue;
            }
            let s = b.index(st[k]);
            let t = b.emit(format!("arith.muli {}, {s} : index", full[4 - ms.len() + k]));
            off = b.emit(format!("arith.addi {off}, {t} : index"));
        }
        let p = &params[*pm];
        let sty = storage_type(p.dtype).unwrap();
        let raw = b.emit(format!("memref.load %arg{pm}[{off}] : memref<{}x{sty}>", p.elements.max(1)));
        val = if *is_bool {
            let z = b.emit("arith.constant 0 : i8");
            let keep = b.emit(format!("arith.cmpi ne, {raw}, {z} : i8"));
            b.emit(format!("arith.select {keep}, {val}, {ninf} : f32"))
        } else if sty != "f32" {
            b.emit(format!("arith.extf {raw} : {sty} to f32"))
        } else {
            raw
        };
    }
    let mut out_of = b.emit(format!("arith.cmpi uge, {key}, {cl} : index"));
    if a.causal {
        let above = b.emit(format!("arith.cmpi ugt, {key}, {row} : index"));
        out_of = b.emit(format!("arith.ori {out_of}, {above} : i1"));
    }
    b.emit(format!("arith.select {out_of}, {ninf}, {val} : f32"))
}

/// One online-softmax step for a row: the new max (m_new), the max to subtract (0 while the
/// row is all −∞) and the old accumulators' correction exp(m − safe) (`exp` or `exp2`, the
/// base the scores are in).
fn online(b: &mut Body, m: &str, mx: &str, exp: &str) -> (String, String, String) {
    let m_new = b.emit(format!("arith.maximumf {m}, {mx} : f32"));
    let ninf = b.float(f64::NEG_INFINITY, "f32");
    let zero = b.float(0.0, "f32");
    let dead = b.emit(format!("arith.cmpf oeq, {m_new}, {ninf} : f32"));
    let safe = b.emit(format!("arith.select {dead}, {zero}, {m_new} : f32"));
    let dm = b.emit(format!("arith.subf {m}, {safe} : f32"));
    let corr = b.emit(format!("math.{exp} {dm} : f32"));
    (m_new, safe, corr)
}

/// 1/l, or 0 for a row whose every score was masked (the interpreter's convention).
fn reciprocal(b: &mut Body, l: &str) -> String {
    let zero = b.float(0.0, "f32");
    let one = b.float(1.0, "f32");
    let pos = b.emit(format!("arith.cmpf ogt, {l}, {zero} : f32"));
    let r = b.emit(format!("arith.divf {one}, {l} : f32"));
    b.emit(format!("arith.select {pos}, {r}, {zero} : f32"))
}

pub fn attention(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let nodes: Vec<&Node> = grp.nodes.iter().map(|&n| &g.nodes[n]).collect();
    let anchor = nodes[0];
    if anchor.op != Op::Attention {
        return Err(unsupported(format!("{} is not attention", anchor.op)));
    }
    let tail = &nodes[1..];
    if let Some(n) = tail.iter().find(|n| !is_tail(n.op)) {
        return Err(unsupported(format!("node '{}' ({}) follows attention's store tail", n.name, n.op)));
    }
    let y = anchor.outputs[0].ok_or_else(|| unsupported("no output".into()))?;
    if anchor.outputs.iter().skip(1).flatten().any(|o| grp.outputs.contains(o)) {
        return Err(unsupported("attention's present key/value and score outputs are not generated".into()));
    }
    let sizes = tail_sizes(tail);
    let (mut params, _) = input_params(g, &grp.inputs, &sizes, false).map_err(unsupported)?;
    params.extend(routed_outputs(g, &grp.outputs).map_err(unsupported)?);
    let a = heads(g, anchor, &params).map_err(unsupported)?;
    let outs = routes(g, tail, &params, &[y]).map_err(unsupported)?;
    if a.batch * a.hq > 65535 {
        return Err(unsupported("more than 65535 heads in one launch".into()));
    }
    let tensor_cores = crate::target::current().matrix == crate::target::MatrixUnit::MmaSync
        && matches!(a.dt, DType::F16 | DType::BF16)
        && a.d % 16 == 0
        && a.dv % 16 == 0
        && a.d <= 128
        && a.dv <= 128;
    if tensor_cores {
        Ok(mma_kernel(&a, params, &outs, y).map_err(unsupported)?)
    } else {
        Ok(row_kernel(&a, params, &outs, y).map_err(unsupported)?)
    }
}

/// One thread per query row; ATTN_KEYS keys per tile in workgroup memory (f32).
fn row_kernel(a: &Heads, params: Vec<Param>, outs: &[OutputRoute], y: ValueId) -> Result<Kernel, String> {
    let c = compute_type(a.dt);
    let st = storage_type(a.dt).unwrap();
    // a query row and its output in registers: shorter key tiles where registers are tight
    let keys = if crate::target::current().tight_registers() { ATTN_KEYS / 2 } else { ATTN_KEYS };
    let rows = ATTN_ROWS;
    let mut b = Body::default();
    let tid = b.emit("gpu.thread_id x");
    let bx = b.emit("gpu.block_id x");
    let (bb, h, kh) = block_heads(&mut b, a);
    let crows = b.index(rows);
    let row = b.emit(format!("arith.muli {bx}, {crows} : index"));
    let row = b.emit(format!("arith.addi {row}, {tid} : index"));
    let lasts = b.index(a.s - 1);
    let rc = b.emit(format!("arith.minui {row}, {lasts} : index"));
    let load = |b: &mut Body, p: usize, at: &str| {
        let raw = b.emit(format!("memref.load %arg{p}[{at}] : memref<{}x{st}>", params[p].elements));
        if st != c {
            b.emit(format!("arith.extf {raw} : {st} to {c}"))
        } else {
            raw
        }
    };
    // this row's query, in registers
    let (chq, cs, cd) = (b.index(a.hq), b.index(a.s), b.index(a.d));
    let qrow = b.emit(format!("arith.muli {bb}, {chq} : index"));
    let qrow = b.emit(format!("arith.addi {qrow}, {h} : index"));
    let qrow = b.emit(format!("arith.muli {qrow}, {cs} : index"));
    let qrow = b.emit(format!("arith.addi {qrow}, {rc} : index"));
    let qoff = b.emit(format!("arith.muli {qrow}, {cd} : index"));
    let q: Vec<String> = (0..a.d)
        .map(|d| {
            let o = b.index(d);
            let at = b.emit(format!("arith.addi {qoff}, {o} : index"));
            load(&mut b, a.q, &at)
        })
        .collect();
    let (chk, cl) = (b.index(a.hk), b.index(a.l));
    let kvrow = b.emit(format!("arith.muli {bb}, {chk} : index"));
    let kvrow = b.emit(format!("arith.addi {kvrow}, {kh} : index"));
    let kvrow = b.emit(format!("arith.muli {kvrow}, {cl} : index"));
    let ninf = b.float(f64::NEG_INFINITY, c);
    let zero = b.float(0.0, c);
    let scale = b.float(a.scale, c);
    let (c0, ckeys, lastl) = (b.index(0), b.index(keys), b.index(a.l - 1));
    let state = |pfx: &str| -> Vec<String> {
        std::iter::once(format!("%{pfx}m"))
            .chain([format!("%{pfx}l")])
            .chain((0..a.dv).map(|d| format!("%{pfx}o{d}")))
            .collect()
    };
    let types = vec![c; a.dv + 2].join(", ");
    let init: Vec<String> =
        state("t").iter().enumerate().map(|(i, s)| format!("{s} = {}", if i == 0 { &ninf } else { &zero })).collect();
    let kwg = format!("memref<{}x{c}, #gpu.address_space<workgroup>>", keys * a.d);
    let vwg = format!("memref<{}x{c}, #gpu.address_space<workgroup>>", keys * a.dv);
    let ltiles = b.index(a.l.div_ceil(keys) * keys);
    let outer = b.emit_multi(
        a.dv + 2,
        format!("scf.for %kt = {c0} to {ltiles} step {ckeys} iter_args({}) -> ({types}) {{", init.join(", ")),
    );
    b.stmt("gpu.barrier");
    // the block loads the tile's keys and values (rows past the end repeat the last key)
    for (p, width, mem, wg) in [(a.k, a.d, "%ks", &kwg), (a.v, a.dv, "%vs", &vwg)] {
        let (n, w, step) = (b.index(keys * width), b.index(width), b.index(rows));
        b.stmt(format!("scf.for %e = {tid} to {n} step {step} {{"));
        let j = b.emit(format!("arith.divui %e, {w} : index"));
        let d = b.emit(format!("arith.remui %e, {w} : index"));
        let key = b.emit(format!("arith.addi %kt, {j} : index"));
        let key = b.emit(format!("arith.minui {key}, {lastl} : index"));
        let at = b.emit(format!("arith.addi {kvrow}, {key} : index"));
        let at = b.emit(format!("arith.muli {at}, {w} : index"));
        let at = b.emit(format!("arith.addi {at}, {d} : index"));
        let v = load(&mut b, p, &at);
        b.stmt(format!("memref.store {v}, {mem}[%e] : {wg}"));
        b.stmt("}");
    }
    b.stmt("gpu.barrier");
    let one = b.index(1);
    let inner = b.emit_multi(
        a.dv + 2,
        format!(
            "scf.for %j = {c0} to {ckeys} step {one} iter_args({}) -> ({types}) {{",
            state("t").iter().zip(state("i")).map(|(t, i)| format!("{i} = {t}")).collect::<Vec<_>>().join(", ")
        ),
    );
    let cdw = b.index(a.d);
    let kbase = b.emit(format!("arith.muli %j, {cdw} : index"));
    let mut s = zero.clone();
    for (d, qd) in q.iter().enumerate() {
        let o = b.index(d);
        let at = b.emit(format!("arith.addi {kbase}, {o} : index"));
        let kv = b.emit(format!("memref.load %ks[{at}] : {kwg}"));
        s = b.emit(format!("math.fma {qd}, {kv}, {s} : {c}"));
    }
    let s = b.emit(format!("arith.mulf {s}, {scale} : {c}"));
    let key = b.emit("arith.addi %kt, %j : index");
    let bias_v = bias(&mut b, a, &params, [&bb, &h, &row, &key]);
    let s = b.emit(format!("arith.addf {s}, {bias_v} : {c}"));
    let (m_new, safe, corr) = online(&mut b, "%im", &s, "exp");
    let ds = b.emit(format!("arith.subf {s}, {safe} : {c}"));
    let p = b.emit(format!("math.exp {ds} : {c}"));
    let l = b.emit(format!("arith.mulf %il, {corr} : {c}"));
    let l = b.emit(format!("arith.addf {l}, {p} : {c}"));
    let cdv = b.index(a.dv);
    let vbase = b.emit(format!("arith.muli %j, {cdv} : index"));
    let mut next = vec![m_new, l];
    for d in 0..a.dv {
        let o = b.index(d);
        let at = b.emit(format!("arith.addi {vbase}, {o} : index"));
        let vv = b.emit(format!("memref.load %vs[{at}] : {vwg}"));
        let pv = b.emit(format!("arith.mulf {p}, {vv} : {c}"));
        next.push(b.emit(format!("math.fma %io{d}, {corr}, {pv} : {c}")));
    }
    b.stmt(format!("scf.yield {} : {types}", next.join(", ")));
    b.stmt("}");
    let carried: Vec<String> = (0..a.dv + 2).map(|i| format!("{inner}#{i}")).collect();
    b.stmt(format!("scf.yield {} : {types}", carried.join(", ")));
    b.stmt("}");
    let inv = reciprocal(&mut b, &format!("{outer}#1"));
    let valid = b.emit(format!("arith.cmpi ult, {row}, {cs} : index"));
    b.stmt(format!("scf.if {valid} {{"));
    let space = [a.batch, a.hq, a.s, a.dv];
    for d in 0..a.dv {
        let v = b.emit(format!("arith.mulf {outer}#{}, {inv} : {c}", d + 2));
        let mut vals = HashMap::new();
        vals.insert(y, v);
        let col = b.index(d);
        store_routed(&mut b, &params, outs, &vals, &[bb.clone(), h.clone(), row.clone(), col], &space, c, 1)?;
    }
    b.stmt("}");
    let grid = [a.s.div_ceil(rows) as u32, (a.batch * a.hq) as u32, 1];
    let shared = format!("%ks : {kwg}, %vs : {vwg}");
    Ok(finish(params, &b, Some(&shared), grid, [rows as u32, 1, 1]))
}

/// The sum (or max) of a value over the four threads of a quad (they share a row).
fn quad(b: &mut Body, v: &str, op: &str) -> String {
    let width = b.emit("arith.constant 32 : i32");
    let mut v = v.to_string();
    for off in [1, 2] {
        let o = b.emit(format!("arith.constant {off} : i32"));
        let s = b.emit_multi(2, format!("gpu.shuffle xor {v}, {o}, {width} : f32"));
        v = b.emit(format!("arith.{op} {v}, {s}#0 : f32"));
    }
    v
}

/// One 16-byte copy a thread makes of every key/value tile: from operand `param` (rows of
/// `width`), tile row `row` at column `col`, to offset `to` of workgroup buffer `mem` (of type
/// `wg`, tiles of `size` elements); `inside` guards the last round of a synchronous copy, which
/// may have more threads than copies (a pipelined one repeats the last copy instead).
struct TileCopy<'a> {
    param: usize,
    width: usize,
    row: String,
    col: String,
    to: String,
    inside: Option<String>,
    mem: &'static str,
    wg: &'a str,
    size: usize,
}

/// The largest static workgroup memory of a kernel (bytes): larger needs an opt-in launch.
const STATIC_WORKGROUP_BYTES: usize = 48 * 1024;

/// Warps of 16 query rows, ATTN_MMA_ROWS per block; ATTN_MMA_KEYS keys and values per tile in
/// workgroup memory (rows padded by 8 elements, so fragment loads hit distinct banks). Scores,
/// the online softmax and the output accumulators stay in mma fragments: a thread holds rows g
/// and g+8 (g = lane/4) at columns 2·(lane%4) + {0, 1} of each 8-wide tile, and the
/// probabilities of two neighbouring score tiles are exactly the A fragment of the P·V product.
///
/// Two ways to feed the tensor cores (`attn_pipelined`): pipelined (the default) — tiles two
/// deep, the next tile's `cp.async` copies in flight while this tile's products run, key
/// fragments by `ldmatrix` and value fragments by `ldmatrix.trans` (four 8×8 matrices each: two
/// 8-wide tiles of a 16-deep step) — or synchronous (XFORGE_ATTN_PIPELINE=0, the measured
/// baseline) — each tile loaded into registers, stored to workgroup memory, fragments read by
/// 32-bit and 16-bit loads.
fn mma_kernel(a: &Heads, params: Vec<Param>, outs: &[OutputRoute], y: ValueId) -> Result<Kernel, String> {
    let t = storage_type(a.dt).unwrap();
    let pipelined = attn_pipelined();
    // wider blocks where they still fill the GPU
    let wide = pipelined && a.batch * a.hq * a.s.div_ceil(ATTN_MMA_ROWS_WIDE) >= ATTN_MMA_FILL_BLOCKS;
    let rows = attn_knob("XFORGE_ATTN_MMA_ROWS", if wide { ATTN_MMA_ROWS_WIDE } else { ATTN_MMA_ROWS });
    let (kstride, vstride) = (a.d + 8, a.dv + 8);
    let mut keys = attn_knob("XFORGE_ATTN_MMA_KEYS", ATTN_MMA_KEYS);
    // two tiles of keys and values within static workgroup memory
    while pipelined && keys > 16 && 2 * keys * (kstride + vstride) * 2 > STATIC_WORKGROUP_BYTES {
        keys -= 16;
    }
    let depth = if pipelined { 2 } else { 1 };
    // one warp per 16 query rows
    let threads = rows / 16 * 32;
    let (ksize, vsize) = (keys * kstride, keys * vstride);
    let kwg = format!("memref<{}x{t}, #gpu.address_space<workgroup>>", depth * ksize);
    let vwg = format!("memref<{}x{t}, #gpu.address_space<workgroup>>", depth * vsize);
    let mref = |p: usize| format!("memref<{}x{t}>", params[p].elements);
    let mut b = Body::default();
    let tid = b.emit("gpu.thread_id x");
    let bx = b.emit("gpu.block_id x");
    let (bb, h, kh) = block_heads(&mut b, a);
    let Lane { warp, lane: ln, g: gq, t2 } = lane(&mut b, &tid);
    let c16 = b.index(16);
    let crows = b.index(rows);
    let r0 = b.emit(format!("arith.muli {bx}, {crows} : index"));
    let w16 = b.emit(format!("arith.muli {warp}, {c16} : index"));
    let r0 = b.emit(format!("arith.addi {r0}, {w16} : index"));
    let r0 = b.emit(format!("arith.addi {r0}, {gq} : index"));
    let c8 = b.index(8);
    let r1 = b.emit(format!("arith.addi {r0}, {c8} : index"));
    let lasts = b.index(a.s - 1);
    let (chq, cs, chk, cl) = (b.index(a.hq), b.index(a.s), b.index(a.hk), b.index(a.l));
    let qhead = b.emit(format!("arith.muli {bb}, {chq} : index"));
    let qhead = b.emit(format!("arith.addi {qhead}, {h} : index"));
    let qhead = b.emit(format!("arith.muli {qhead}, {cs} : index"));
    let cd = b.index(a.d);
    let qoff = |b: &mut Body, r: &str| {
        let rc = b.emit(format!("arith.minui {r}, {lasts} : index"));
        let o = b.emit(format!("arith.addi {qhead}, {rc} : index"));
        b.emit(format!("arith.muli {o}, {cd} : index"))
    };
    let (q0, q1) = (qoff(&mut b, &r0), qoff(&mut b, &r1));
    let pair = |b: &mut Body, src: &str, ty: &str, at: &str| {
        b.emit(format!("vector.load {src}[{at}] {{alignment = 4}} : {ty}, vector<2x{t}>"))
    };
    // the warp's query rows as A fragments, one per 16 columns of the head
    let qa: Vec<Vec<String>> = (0..a.d / 16)
        .map(|ks| {
            [(&q0, 0), (&q1, 0), (&q0, 8), (&q1, 8)]
                .iter()
                .map(|(base, extra)| {
                    let o = b.index(16 * ks + extra);
                    let at = b.emit(format!("arith.addi {base}, {o} : index"));
                    let at = b.emit(format!("arith.addi {at}, {t2} : index"));
                    pair(&mut b, &format!("%arg{}", a.q), &mref(a.q), &at)
                })
                .collect()
        })
        .collect();
    let kvrow = b.emit(format!("arith.muli {bb}, {chk} : index"));
    let kvrow = b.emit(format!("arith.addi {kvrow}, {kh} : index"));
    let kvrow = b.emit(format!("arith.muli {kvrow}, {cl} : index"));
    let ninf = b.float(f64::NEG_INFINITY, "f32");
    let zero = b.float(0.0, "f32");
    // scores in base 2: exp2 is one instruction
    let scale = b.float(a.scale * std::f64::consts::LOG2_E, "f32");
    let log2e = b.float(std::f64::consts::LOG2_E, "f32");
    let (c0, ckeys, lastl) = (b.index(0), b.index(keys), b.index(a.l - 1));
    let nacc = a.dv / 8 * 4;
    // this thread's share of a tile's 16-byte copies (rows past the end repeat the last key)
    let mut copies = vec![];
    for (param, width, stride, mem, wg, size) in
        [(a.k, a.d, kstride, "%ks", &kwg, ksize), (a.v, a.dv, vstride, "%vs", &vwg, vsize)]
    {
        let per_row = width / 8;
        let total = keys * per_row;
        for r in 0..total.div_ceil(threads) {
            let e = b.index(threads * r);
            let e = b.emit(format!("arith.addi {tid}, {e} : index"));
            let e = if pipelined {
                let last = b.index(total - 1);
                b.emit(format!("arith.minui {e}, {last} : index"))
            } else {
                e
            };
            let cpr = b.index(per_row);
            let row = b.emit(format!("arith.divui {e}, {cpr} : index"));
            let cv = b.emit(format!("arith.remui {e}, {cpr} : index"));
            let col = b.emit(format!("arith.muli {cv}, {c8} : index"));
            let cst = b.index(stride);
            let to = b.emit(format!("arith.muli {row}, {cst} : index"));
            let to = b.emit(format!("arith.addi {to}, {col} : index"));
            let inside = (!pipelined && (r + 1) * threads > total).then(|| {
                let cap = b.index(total);
                b.emit(format!("arith.cmpi ult, {e}, {cap} : index"))
            });
            copies.push(TileCopy { param, width, row, col, to, inside, mem, wg, size });
        }
    }
    // the source offset of a copy of the tile at key `kt` (every load in bounds)
    let source = |b: &mut Body, c: &TileCopy, kt: &str| {
        let key = b.emit(format!("arith.addi {kt}, {} : index", c.row));
        let key = b.emit(format!("arith.minui {key}, {lastl} : index"));
        let cw = b.index(c.width);
        let at = b.emit(format!("arith.addi {kvrow}, {key} : index"));
        let at = b.emit(format!("arith.muli {at}, {cw} : index"));
        b.emit(format!("arith.addi {at}, {} : index", c.col))
    };
    // pipelined: the tile at key `kt` into buffer `buf` (0 or 1) as one cp.async group
    let copy_tile = |b: &mut Body, kt: &str, buf: &str| -> String {
        let tokens: Vec<String> = copies
            .iter()
            .map(|c| {
                let at = source(b, c, kt);
                let size = b.index(c.size);
                let to = b.emit(format!("arith.muli {buf}, {size} : index"));
                let to = b.emit(format!("arith.addi {to}, {} : index", c.to));
                b.emit(format!(
                    "nvgpu.device_async_copy %arg{}[{at}], {}[{to}], 8 {{bypassL1}} : {} to {}",
                    c.param,
                    c.mem,
                    mref(c.param),
                    c.wg
                ))
            })
            .collect();
        b.emit(format!("nvgpu.device_async_create_group {}", tokens.join(", ")))
    };
    // pipelined: ldmatrix row addresses — lane l gives row l % 8 of matrix l / 8; keys take
    // matrices (keys +0/+8 by l/16, head columns +0/+8 by (l/8) % 2), values (keys by
    // (l/8) % 2, value columns by l/16); then the first tile's copies
    let (c2, lanes) = if pipelined {
        let c2 = b.index(2);
        let lr = b.emit(format!("arith.remui {ln}, {c8} : index"));
        let mi = b.emit(format!("arith.divui {ln}, {c8} : index"));
        let mlo = b.emit(format!("arith.remui {mi}, {c2} : index"));
        let mhi = b.emit(format!("arith.divui {mi}, {c2} : index"));
        let mut lane_at = |row_half: &str, col_half: &str, stride: usize| {
            let r = b.emit(format!("arith.muli {row_half}, {c8} : index"));
            let r = b.emit(format!("arith.addi {r}, {lr} : index"));
            let cst = b.index(stride);
            let r = b.emit(format!("arith.muli {r}, {cst} : index"));
            let c = b.emit(format!("arith.muli {col_half}, {c8} : index"));
            b.emit(format!("arith.addi {r}, {c} : index"))
        };
        let lanes = (lane_at(&mhi, &mlo, kstride), lane_at(&mlo, &mhi, vstride));
        copy_tile(&mut b, &c0, &c0);
        (c2, Some(lanes))
    } else {
        (String::new(), None)
    };
    let ldmatrix = |b: &mut Body, mem: &str, wg: &str, at: &str, transpose: bool| -> Vec<String> {
        let m = b.emit(format!(
            "nvgpu.ldmatrix {mem}[{at}] {{numTiles = 4 : i32, transpose = {transpose}}} : {wg} -> vector<4x2x{t}>"
        ));
        (0..4).map(|i| b.emit(format!("vector.extract {m}[{i}] : vector<2x{t}> from vector<4x2x{t}>"))).collect()
    };
    let vec8 = format!("vector<8x{t}>");
    let types = vec!["f32"; 4 + nacc].join(", ");
    let mut init =
        vec![format!("%m0 = {ninf}"), format!("%m1 = {ninf}"), format!("%l0 = {zero}"), format!("%l1 = {zero}")];
    init.extend((0..nacc).map(|i| format!("%o{i} = {zero}")));
    let ltiles = b.index(a.l.div_ceil(keys) * keys);
    let lp = b.emit_multi(
        4 + nacc,
        format!("scf.for %kt = {c0} to {ltiles} step {ckeys} iter_args({}) -> ({types}) {{", init.join(", ")),
    );
    // where this tile's keys and values start in workgroup memory, plus this lane's ldmatrix row
    let bufs = if let Some((klane, vlane)) = &lanes {
        // tile i is in buffer i % 2; every warp is done with the other buffer (tile i − 1)
        // before tile i + 1 goes there, and this tile's group is complete when at most the
        // next one is in flight
        let ti = b.emit(format!("arith.divui %kt, {ckeys} : index"));
        let cur = b.emit(format!("arith.remui {ti}, {c2} : index"));
        let c1 = b.index(1);
        let other = b.emit(format!("arith.subi {c1}, {cur} : index"));
        b.stmt("gpu.barrier");
        let next_kt = b.emit(format!("arith.addi %kt, {ckeys} : index"));
        let group = copy_tile(&mut b, &next_kt, &other);
        b.stmt(format!("nvgpu.device_async_wait {group} {{numGroups = 1 : i32}}"));
        b.stmt("gpu.barrier");
        let (cks, cvs) = (b.index(ksize), b.index(vsize));
        let kbuf = b.emit(format!("arith.muli {cur}, {cks} : index"));
        let kbuf = b.emit(format!("arith.addi {kbuf}, {klane} : index"));
        let vbuf = b.emit(format!("arith.muli {cur}, {cvs} : index"));
        let vbuf = b.emit(format!("arith.addi {vbuf}, {vlane} : index"));
        Some((kbuf, vbuf))
    } else {
        b.stmt("gpu.barrier");
        let tile: Vec<String> = copies
            .iter()
            .map(|c| {
                let at = source(&mut b, c, "%kt");
                b.emit(format!("vector.load %arg{}[{at}] {{alignment = 16}} : {}, {vec8}", c.param, mref(c.param)))
            })
            .collect();
        for (c, v) in copies.iter().zip(&tile) {
            if let Some(inside) = &c.inside {
                b.stmt(format!("scf.if {inside} {{"));
            }
            b.stmt(format!("vector.store {v}, {}[{}] {{alignment = 16}} : {}, {vec8}", c.mem, c.to, c.wg));
            if c.inside.is_some() {
                b.stmt("}");
            }
        }
        b.stmt("gpu.barrier");
        None
    };
    // scale, mask, causal and the tile's ragged end of score tile n
    let finish_scores = |b: &mut Body, acc: &mut [String], n: usize| {
        for (e, s) in acc.iter_mut().enumerate() {
            let col = b.index(8 * n + e % 2);
            let key = b.emit(format!("arith.addi %kt, {col} : index"));
            let key = b.emit(format!("arith.addi {key}, {t2} : index"));
            let row = if e < 2 { &r0 } else { &r1 };
            let bv = bias(b, a, &params, [&bb, &h, row, &key]);
            let x = b.emit(format!("arith.mulf {s}, {scale} : f32"));
            let bv = if a.mask.is_some() { b.emit(format!("arith.mulf {bv}, {log2e} : f32")) } else { bv };
            *s = b.emit(format!("arith.addf {x}, {bv} : f32"));
        }
    };
    // scores: 8-key tiles, fragments s[n][0..4]
    let mut sc: Vec<Vec<String>> = vec![];
    if let Some((kbuf, _)) = &bufs {
        // two tiles per ldmatrix
        for np in 0..keys / 16 {
            let mut accs = [vec![zero.clone(); 4], vec![zero.clone(); 4]];
            for (ks, qf) in qa.iter().enumerate() {
                let o = b.index(16 * np * kstride + 16 * ks);
                let at = b.emit(format!("arith.addi {kbuf}, {o} : index"));
                let f = ldmatrix(&mut b, "%ks", &kwg, &at, false);
                accs[0] = mma(&mut b, t, qf, &f[0..2], &accs[0]);
                accs[1] = mma(&mut b, t, qf, &f[2..4], &accs[1]);
            }
            for (half, mut acc) in accs.into_iter().enumerate() {
                finish_scores(&mut b, &mut acc, 2 * np + half);
                sc.push(acc);
            }
        }
    } else {
        let ckst = b.index(kstride);
        for n in 0..keys / 8 {
            let kr = b.index(8 * n);
            let kr = b.emit(format!("arith.addi {kr}, {gq} : index"));
            let kr = b.emit(format!("arith.muli {kr}, {ckst} : index"));
            let kr = b.emit(format!("arith.addi {kr}, {t2} : index"));
            let mut acc = vec![zero.clone(); 4];
            for (ks, qf) in qa.iter().enumerate() {
                let bf: Vec<String> = [0, 8]
                    .iter()
                    .map(|extra| {
                        let o = b.index(16 * ks + extra);
                        let at = b.emit(format!("arith.addi {kr}, {o} : index"));
                        pair(&mut b, "%ks", &kwg, &at)
                    })
                    .collect();
                acc = mma(&mut b, t, qf, &bf, &acc);
            }
            finish_scores(&mut b, &mut acc, n);
            sc.push(acc);
        }
    }
    // the online softmax of rows g (elements 0, 1) and g + 8 (elements 2, 3)
    let mut corr = vec![];
    let mut next = vec![];
    let mut lsum = vec![];
    let mut ps: Vec<Vec<String>> = vec![vec![String::new(); 4]; keys / 8];
    for half in 0..2 {
        let mut mx = ninf.clone();
        for s in &sc {
            for e in [2 * half, 2 * half + 1] {
                mx = b.emit(format!("arith.maximumf {mx}, {} : f32", s[e]));
            }
        }
        let mx = quad(&mut b, &mx, "maximumf");
        let (m_new, safe, cr) = online(&mut b, &format!("%m{half}"), &mx, "exp2");
        let mut l = b.emit(format!("arith.mulf %l{half}, {cr} : f32"));
        for (n, s) in sc.iter().enumerate() {
            for e in [2 * half, 2 * half + 1] {
                let d = b.emit(format!("arith.subf {}, {safe} : f32", s[e]));
                let p = b.emit(format!("math.exp2 {d} : f32"));
                l = b.emit(format!("arith.addf {l}, {p} : f32"));
                ps[n][e] = p;
            }
        }
        next.push(m_new);
        lsum.push(l);
        corr.push(cr);
    }
    next.extend(lsum);
    // P as A fragments: score tiles 2kk and 2kk + 1 make up 16 keys
    let pack = |b: &mut Body, x: &str, z: &str| {
        let xh = b.emit(format!("arith.truncf {x} : f32 to {t}"));
        let zh = b.emit(format!("arith.truncf {z} : f32 to {t}"));
        b.emit(format!("vector.from_elements {xh}, {zh} : vector<2x{t}>"))
    };
    let pa: Vec<Vec<String>> = (0..keys / 16)
        .map(|kk| {
            let (lo, hi) = (&ps[2 * kk], &ps[2 * kk + 1]);
            vec![
                pack(&mut b, &lo[0], &lo[1]),
                pack(&mut b, &lo[2], &lo[3]),
                pack(&mut b, &hi[0], &hi[1]),
                pack(&mut b, &hi[2], &hi[3]),
            ]
        })
        .collect();
    // the accumulators of value columns 8jv.. rescaled
    let rescaled = |b: &mut Body, jv: usize| -> Vec<String> {
        (0..4)
            .map(|e| {
                let o = format!("%o{}", jv * 4 + e);
                b.emit(format!("arith.mulf {o}, {} : f32", corr[e / 2]))
            })
            .collect()
    };
    if let Some((_, vbuf)) = &bufs {
        // value columns 16nv..16nv+15 of keys 16kk.. per ldmatrix.trans
        let mut acc: Vec<Vec<String>> = (0..a.dv / 8).map(|jv| rescaled(&mut b, jv)).collect();
        for (kk, pf) in pa.iter().enumerate() {
            for nv in 0..a.dv / 16 {
                let o = b.index(16 * kk * vstride + 16 * nv);
                let at = b.emit(format!("arith.addi {vbuf}, {o} : index"));
                let f = ldmatrix(&mut b, "%vs", &vwg, &at, true);
                acc[2 * nv] = mma(&mut b, t, pf, &f[0..2], &acc[2 * nv]);
                acc[2 * nv + 1] = mma(&mut b, t, pf, &f[2..4], &acc[2 * nv + 1]);
            }
        }
        next.extend(acc.into_iter().flatten());
    } else {
        let cvst = b.index(vstride);
        for jv in 0..a.dv / 8 {
            let mut acc = rescaled(&mut b, jv);
            let colv = b.index(8 * jv);
            let colv = b.emit(format!("arith.addi {colv}, {gq} : index"));
            for (kk, pf) in pa.iter().enumerate() {
                // B fragment: keys 16kk + 2t + {0, 1} (and + 8) of column 8jv + g
                let bf: Vec<String> = [0, 8]
                    .iter()
                    .map(|extra| {
                        let k0 = b.index(16 * kk + extra);
                        let k0 = b.emit(format!("arith.addi {k0}, {t2} : index"));
                        let at0 = b.emit(format!("arith.muli {k0}, {cvst} : index"));
                        let at0 = b.emit(format!("arith.addi {at0}, {colv} : index"));
                        let at1 = b.emit(format!("arith.addi {at0}, {cvst} : index"));
                        let x0 = b.emit(format!("memref.load %vs[{at0}] : {vwg}"));
                        let x1 = b.emit(format!("memref.load %vs[{at1}] : {vwg}"));
                        b.emit(format!("vector.from_elements {x0}, {x1} : vector<2x{t}>"))
                    })
                    .collect();
                acc = mma(&mut b, t, pf, &bf, &acc);
            }
            next.extend(acc);
        }
    }
    b.stmt(format!("scf.yield {} : {types}", next.join(", ")));
    b.stmt("}");
    if pipelined {
        // the last (unused) tile's copies land before the block ends
        b.stmt("nvvm.cp.async.wait.group 0");
    }
    let inv: Vec<String> = (0..2)
        .map(|half| {
            let l = quad(&mut b, &format!("{lp}#{}", 2 + half), "addf");
            reciprocal(&mut b, &l)
        })
        .collect();
    let space = [a.batch, a.hq, a.s, a.dv];
    for jv in 0..a.dv / 8 {
        for e in 0..4 {
            let row = if e < 2 { &r0 } else { &r1 };
            let valid = b.emit(format!("arith.cmpi ult, {row}, {cs} : index"));
            b.stmt(format!("scf.if {valid} {{"));
            let v = b.emit(format!("arith.mulf {lp}#{}, {} : f32", 4 + jv * 4 + e, inv[e / 2]));
            let col = b.index(8 * jv + e % 2);
            let col = b.emit(format!("arith.addi {col}, {t2} : index"));
            let mut vals = HashMap::new();
            vals.insert(y, v);
            store_routed(&mut b, &params, outs, &vals, &[bb.clone(), h.clone(), row.clone(), col], &space, "f32", 1)?;
            b.stmt("}");
        }
    }
    let grid = [a.s.div_ceil(rows) as u32, (a.batch * a.hq) as u32, 1];
    // cp.async and ldmatrix move 16-byte rows: both buffers aligned to 16
    let align = if pipelined { " {llvm.align = 16 : i64}" } else { "" };
    let shared = format!("%ks : {kwg}{align}, %vs : {vwg}{align}");
    Ok(finish(params, &b, Some(&shared), grid, [threads as u32, 1, 1]))
}
