//! The row-reduction template: one block per row of the innermost (reduced) axes. Pass 1 walks
//! the row with the block's threads, computing the elementwise prologue and a one-pass statistic
//! per thread (running max and rescaled sum for softmax, Welford mean/M2 for LayerNorm, sums for
//! RMSNorm and reduce-*); warp shuffles and workgroup memory combine the threads. Pass 2 walks
//! the row again (it is in cache), normalizes, runs the epilogue and stores.
use crate::body::{compute_type, storage_type, Body};
use crate::elementwise::{compute, store_outputs, stored};
use crate::kernel::{finish, input_params, output_params, reduce_axes, Kernel, KernelError, Param};
use crate::knobs;
use std::collections::HashMap;
use xforge_ir::group::FusionGroup;
use xforge_ir::tensor::numel;
use xforge_ir::{Attr, Graph, Node, Op, ValueId};

/// The statistic a row needs.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Stat {
    /// (max, Σ exp(x − max)) for Softmax and LogSoftmax.
    Softmax,
    /// Welford (count, mean, M2) for LayerNormalization.
    Moments,
    /// Σ x² (RMSNormalization, ReduceSumSquare, ReduceL2).
    SumSquares,
    Sum,
    Max,
    Min,
}

fn int_attr(n: &Node, k: &str) -> Option<i64> {
    match n.attr(k) {
        Some(Attr::Int(v)) => Some(*v),
        _ => None,
    }
}

fn float_attr(n: &Node, k: &str, d: f64) -> f64 {
    match n.attr(k) {
        Some(Attr::Float(v)) => *v as f64,
        _ => d,
    }
}

/// Threads that combine a row by shuffles alone: the target's wave (32 on NVIDIA, 64 on CDNA).
fn wave() -> usize {
    crate::target::current().wave
}

/// Short rows of `len` vectors: (threads per row, a power of two below the wave, and rows per
/// block, a power of two dividing `rows` with at most ROW_BLOCK_MAX threads in all); None where
/// a row takes a block of its own.
fn packing(len: usize, rows: usize) -> Option<(usize, usize)> {
    let seg = len.div_ceil(knobs::ROW_VECTORS_PER_THREAD).next_power_of_two();
    if seg >= wave() || std::env::var_os("XFORGE_ROW_PER_BLOCK").is_some() {
        return None;
    }
    // the most rows per block that divide the rows (no row past the end)
    let most = knobs::ROW_BLOCK_MAX / seg;
    let packed = (0..=most.trailing_zeros()).rev().map(|e| 1usize << e).find(|p| rows.is_multiple_of(*p))?;
    (packed * seg >= wave()).then_some((seg, packed))
}

/// Threads per block for rows of `len` vectors: a power of two in wave..=ROW_BLOCK_MAX.
fn block_for(len: usize) -> usize {
    len.div_ceil(knobs::ROW_VECTORS_PER_THREAD).next_power_of_two().clamp(wave(), knobs::ROW_BLOCK_MAX)
}

/// Emits the combination of two partial statistics (`a`, `b`, of `arity` values each).
fn combine(b: &mut Body, stat: Stat, a: &[String], o: &[String], c: &str) -> Vec<String> {
    let bin = |b: &mut Body, op: &str, p: &str, q: &str| b.emit(format!("arith.{op} {p}, {q} : {c}"));
    match stat {
        Stat::Softmax => {
            // (m, s) ⊕ (m', s') = (M, s·e^(m−M) + s'·e^(m'−M)), M = max(m, m')
            let m = bin(b, "maximumf", &a[0], &o[0]);
            // an empty partial (m = −∞) weighs 0, not exp(−∞ − (−∞)) = NaN
            let ninf = b.float(f64::NEG_INFINITY, c);
            let zero = b.float(0.0, c);
            let weight = |b: &mut Body, mi: &str| {
                let d = bin(b, "subf", mi, &m);
                let e = b.emit(format!("math.exp {d} : {c}"));
                let empty = b.emit(format!("arith.cmpf oeq, {mi}, {ninf} : {c}"));
                b.emit(format!("arith.select {empty}, {zero}, {e} : {c}"))
            };
            let e1 = weight(b, &a[0]);
            let e2 = weight(b, &o[0]);
            let t1 = bin(b, "mulf", &a[1], &e1);
            let t2 = bin(b, "mulf", &o[1], &e2);
            vec![m.clone(), bin(b, "addf", &t1, &t2)]
        }
        Stat::Moments => {
            // parallel Welford: n = na + nb, δ = μb − μa, μ = μa + δ·nb/n, M2 = M2a + M2b + δ²·na·nb/n
            let n = bin(b, "addf", &a[0], &o[0]);
            let zero = b.float(0.0, c);
            let empty = b.emit(format!("arith.cmpf oeq, {n}, {zero} : {c}"));
            let one = b.float(1.0, c);
            let safe = b.emit(format!("arith.select {empty}, {one}, {n} : {c}"));
            let delta = bin(b, "subf", &o[1], &a[1]);
            // one division per combination: 1/n
            let inv = bin(b, "divf", &one, &safe);
            let w = bin(b, "mulf", &o[0], &inv);
            let dw = bin(b, "mulf", &delta, &w);
            let mean = bin(b, "addf", &a[1], &dw);
            let m2 = bin(b, "addf", &a[2], &o[2]);
            let dd = bin(b, "mulf", &delta, &delta);
            let nn = bin(b, "mulf", &a[0], &w);
            let t = bin(b, "mulf", &dd, &nn);
            let m2 = bin(b, "addf", &m2, &t);
            vec![n, mean, m2]
        }
        Stat::SumSquares | Stat::Sum => vec![bin(b, "addf", &a[0], &o[0])],
        Stat::Max => vec![bin(b, "maximumf", &a[0], &o[0])],
        Stat::Min => vec![bin(b, "minimumf", &a[0], &o[0])],
    }
}

/// The statistic of a few values held in registers (a vector's lanes), computed directly:
/// max and Σ exp(x − max) for softmax, mean and Σ (x − mean)² for moments.
fn local(b: &mut Body, stat: Stat, xs: &[String], c: &str) -> Vec<String> {
    if xs.len() == 1 {
        return single(b, stat, &xs[0], c);
    }
    let fold = |b: &mut Body, op: &str, vals: &[String]| {
        vals[1..].iter().fold(vals[0].clone(), |a, v| b.emit(format!("arith.{op} {a}, {v} : {c}")))
    };
    match stat {
        Stat::Softmax => {
            let m = fold(b, "maximumf", xs);
            let es: Vec<String> = xs
                .iter()
                .map(|x| {
                    let d = b.emit(format!("arith.subf {x}, {m} : {c}"));
                    b.emit(format!("math.exp {d} : {c}"))
                })
                .collect();
            vec![m.clone(), fold(b, "addf", &es)]
        }
        Stat::Moments => {
            let n = b.float(xs.len() as f64, c);
            let s = fold(b, "addf", xs);
            let mean = b.emit(format!("arith.divf {s}, {n} : {c}"));
            let sq: Vec<String> = xs
                .iter()
                .map(|x| {
                    let d = b.emit(format!("arith.subf {x}, {mean} : {c}"));
                    b.emit(format!("arith.mulf {d}, {d} : {c}"))
                })
                .collect();
            vec![n, mean, fold(b, "addf", &sq)]
        }
        Stat::SumSquares => {
            let sq: Vec<String> = xs.iter().map(|x| b.emit(format!("arith.mulf {x}, {x} : {c}"))).collect();
            vec![fold(b, "addf", &sq)]
        }
        Stat::Sum => vec![fold(b, "addf", xs)],
        Stat::Max => vec![fold(b, "maximumf", xs)],
        Stat::Min => vec![fold(b, "minimumf", xs)],
    }
}

/// Combines each lane's partial with its xor-shuffle partners at distances seg/2 … 1 (seg a
/// power of two, at most the wave): afterwards every lane holds the statistic of its aligned
/// segment of `seg` lanes (of the wave, for the wave's size). Shuffles span the whole wave
/// (`width` is the wave: MLIR's NVVM lowering makes a narrower width's mask the warp's first
/// lanes only).
fn warp_combine(b: &mut Body, stat: Stat, mut part: Vec<String>, width: &str, c: &str, seg: usize) -> Vec<String> {
    for off in [32, 16, 8, 4, 2, 1].into_iter().filter(|&o| o < seg) {
        let o = b.emit(format!("arith.constant {off} : i32"));
        let other: Vec<String> = part
            .iter()
            .map(|p| {
                let s = b.emit_multi(2, format!("gpu.shuffle xor {p}, {o}, {width} : {c}"));
                format!("{s}#0")
            })
            .collect();
        part = combine(b, stat, &part, &other, c);
    }
    part
}

/// Combines the warps' statistics of a block-wide row (each warp's lanes hold their warp's):
/// lane 0 of each warp writes, warp 0 combines, thread 0 publishes; every thread gets the row's.
#[allow(clippy::too_many_arguments)]
fn across_warps(
    b: &mut Body,
    stat: Stat,
    part: Vec<String>,
    tid: &str,
    width: &str,
    warps: usize,
    red_mem: &str,
    c: &str,
) -> Vec<String> {
    let k = part.len();
    // across warps: lane 0 of each warp writes, warp 0 combines, thread 0 publishes
    let cw = b.index(wave());
    let lane = b.emit(format!("arith.remui {tid}, {cw} : index"));
    let warp = b.emit(format!("arith.divui {tid}, {cw} : index"));
    let c0 = b.index(0);
    let is_lane0 = b.emit(format!("arith.cmpi eq, {lane}, {c0} : index"));
    let kk = b.index(k);
    b.stmt(format!("scf.if {is_lane0} {{"));
    for (j, p) in part.iter().enumerate() {
        let jj = b.index(j);
        let w = b.emit(format!("arith.muli {warp}, {kk} : index"));
        let at = b.emit(format!("arith.addi {w}, {jj} : index"));
        b.stmt(format!("memref.store {p}, %red[{at}] : {red_mem}"));
    }
    b.stmt("}");
    b.stmt("gpu.barrier");
    let is_warp0 = b.emit(format!("arith.cmpi eq, {warp}, {c0} : index"));
    let is_t0 = b.emit(format!("arith.cmpi eq, {tid}, {c0} : index"));
    b.stmt(format!("scf.if {is_warp0} {{"));
    let nw = b.index(warps);
    let has = b.emit(format!("arith.cmpi ult, {lane}, {nw} : index"));
    let ident = identity(b, stat, c);
    let mut wpart = vec![];
    for (j, id) in ident.iter().enumerate() {
        let jj = b.index(j);
        let l = b.emit(format!("arith.minui {lane}, {nw} : index"));
        let w = b.emit(format!("arith.muli {l}, {kk} : index"));
        let at = b.emit(format!("arith.addi {w}, {jj} : index"));
        let v = b.emit(format!("memref.load %red[{at}] : {red_mem}"));
        wpart.push(b.emit(format!("arith.select {has}, {v}, {id} : {c}")));
    }
    wpart = warp_combine(b, stat, wpart, width, c, wave());
    b.stmt(format!("scf.if {is_t0} {{"));
    for (j, p) in wpart.iter().enumerate() {
        let at = b.index(warps * k + j);
        b.stmt(format!("memref.store {p}, %red[{at}] : {red_mem}"));
    }
    b.stmt("}");
    b.stmt("}");
    b.stmt("gpu.barrier");
    (0..k)
        .map(|j| {
            let at = b.index(warps * k + j);
            b.emit(format!("memref.load %red[{at}] : {red_mem}"))
        })
        .collect()
}

fn arity(stat: Stat) -> usize {
    match stat {
        Stat::Softmax => 2,
        Stat::Moments => 3,
        _ => 1,
    }
}

/// The identity of a statistic (what an empty partial holds).
fn identity(b: &mut Body, stat: Stat, c: &str) -> Vec<String> {
    match stat {
        Stat::Softmax => vec![b.float(f64::NEG_INFINITY, c), b.float(0.0, c)],
        Stat::Moments => vec![b.float(0.0, c), b.float(0.0, c), b.float(0.0, c)],
        Stat::Max => vec![b.float(f64::NEG_INFINITY, c)],
        Stat::Min => vec![b.float(f64::INFINITY, c)],
        _ => vec![b.float(0.0, c)],
    }
}

/// The partial statistic of one element `x`.
fn single(b: &mut Body, stat: Stat, x: &str, c: &str) -> Vec<String> {
    match stat {
        Stat::Softmax => vec![x.to_string(), b.float(1.0, c)],
        Stat::Moments => vec![b.float(1.0, c), x.to_string(), b.float(0.0, c)],
        Stat::SumSquares => vec![b.emit(format!("arith.mulf {x}, {x} : {c}"))],
        _ => vec![x.to_string()],
    }
}

/// Whether every output has the reduction input's size (per-row ops) — vectors are stored then.
fn outs_row_sized(params: &[Param], in_shape: &[usize], per_row: bool) -> bool {
    !per_row || params.iter().filter(|p| p.output).all(|p| p.elements == numel(in_shape))
}

/// One aligned 16-byte vector load per row-shaped input parameter, at flat offset `at`.
fn vector_loads(
    b: &mut Body,
    params: &[Param],
    row_params: &[usize],
    at: &str,
    lanes: usize,
) -> HashMap<usize, String> {
    let mut vecs = HashMap::new();
    if lanes == 1 {
        return vecs;
    }
    for &pk in row_params {
        let p = &params[pk];
        if !p.dtype.is_float() {
            continue;
        }
        let st = storage_type(p.dtype).unwrap();
        vecs.insert(
            pk,
            b.emit(format!(
                "vector.load %arg{pk}[{at}] {{alignment = 16}} : memref<{}x{st}>, vector<{lanes}x{st}>",
                p.elements
            )),
        );
    }
    vecs
}

pub fn row_reduction(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let nodes: Vec<&Node> = grp.nodes.iter().map(|&n| &g.nodes[n]).collect();
    let ai = nodes
        .iter()
        .position(|n| {
            matches!(
                n.op,
                Op::Softmax
                    | Op::LogSoftmax
                    | Op::LayerNormalization
                    | Op::RMSNormalization
                    | Op::ReduceSum
                    | Op::ReduceMean
                    | Op::ReduceMax
                    | Op::ReduceMin
                    | Op::ReduceSumSquare
                    | Op::ReduceL2
                    | Op::GlobalAveragePool
                    | Op::GlobalMaxPool
            )
        })
        .ok_or_else(|| unsupported("no reduction this template knows".into()))?;
    let anchor = nodes[ai];
    let (prologue, epilogue) = (&nodes[..ai], &nodes[ai + 1..]);
    if nodes.iter().any(|n| n.op.kind() == xforge_ir::OpKind::Reduction && !std::ptr::eq(*n, anchor)) {
        return Err(unsupported("more than one reduction".into()));
    }
    let x = anchor.inputs[0].ok_or_else(|| unsupported("the reduction has no input".into()))?;
    let in_shape = g.ty(x).static_shape().ok_or_else(|| unsupported("shapes are not static".into()))?;
    let rank = in_shape.len();
    // the reduced axes must be a suffix: rows of `len` contiguous elements
    let axes: Vec<usize> = match anchor.op {
        Op::Softmax | Op::LogSoftmax => {
            let a = int_attr(anchor, "axis").unwrap_or(-1);
            vec![if a < 0 { (a + rank as i64) as usize } else { a as usize }]
        }
        Op::LayerNormalization | Op::RMSNormalization => {
            let a = int_attr(anchor, "axis").unwrap_or(-1);
            let a = if a < 0 { (a + rank as i64) as usize } else { a as usize };
            (a..rank).collect()
        }
        // the spatial axes of (N, C, spatial...)
        Op::GlobalAveragePool | Op::GlobalMaxPool => (2..rank).collect(),
        _ => {
            let ax = reduce_axes(g, anchor).map_err(unsupported)?;
            if ax.is_empty() {
                (0..rank).collect()
            } else {
                let mut v: Vec<usize> =
                    ax.iter().map(|&a| if a < 0 { (a + rank as i64) as usize } else { a as usize }).collect();
                v.sort();
                v
            }
        }
    };
    if axes.is_empty() || axes.iter().enumerate().any(|(i, &a)| a != rank - axes.len() + i) {
        return Err(unsupported(format!("reduced axes {axes:?} are not the innermost of rank {rank}")));
    }
    let len = numel(&in_shape[rank - axes.len()..]);
    let rows = numel(&in_shape[..rank - axes.len()]);
    let stat = match anchor.op {
        Op::Softmax | Op::LogSoftmax => Stat::Softmax,
        Op::LayerNormalization => Stat::Moments,
        Op::RMSNormalization | Op::ReduceSumSquare | Op::ReduceL2 => Stat::SumSquares,
        Op::ReduceSum | Op::ReduceMean | Op::GlobalAveragePool => Stat::Sum,
        Op::ReduceMax | Op::GlobalMaxPool => Stat::Max,
        _ => Stat::Min,
    };
    let per_row = matches!(anchor.op, Op::Softmax | Op::LogSoftmax | Op::LayerNormalization | Op::RMSNormalization);
    if anchor.outputs.iter().skip(1).any(|o| o.is_some()) {
        return Err(unsupported("LayerNormalization's mean and inverse-std outputs are not generated".into()));
    }
    let y = anchor.outputs[0].unwrap();
    let out_space = g.ty(y).static_shape().ok_or_else(|| unsupported("shapes are not static".into()))?;
    // parameters: every input except inlined scalars, then the outputs
    // a reduce-* op's axes input is compiled in
    let axes_input: Vec<ValueId> = anchor.inputs.get(1).copied().flatten().filter(|_| !per_row).into_iter().collect();
    let (mut params, scalars) = input_params(g, &grp.inputs, &axes_input, false).map_err(unsupported)?;
    params
        .extend(output_params(g, &grp.outputs, numel(&out_space), "the reduction's output size").map_err(unsupported)?);
    let dt = g.ty(x).dtype;
    if !dt.is_float() {
        return Err(unsupported(format!("reduction over {dt} is not supported")));
    }
    let c = compute_type(dt);
    // rows of whole 16-byte vectors move as vectors: one per thread per step
    let esize = dt.size();
    let vectorizable = (len * esize).is_multiple_of(16)
        && params.iter().filter(|p| !p.output && p.elements == numel(&in_shape)).all(|p| p.dtype.size() == esize)
        && outs_row_sized(&params, &in_shape, per_row);
    let lanes = if vectorizable { 16 / esize } else { 1 };
    // threads per row: a block, or, for short rows, an aligned segment of a warp with several
    // rows per block (shuffles alone combine a row: no barrier, no shared memory)
    let (seg, packed) = packing(len.div_ceil(lanes), rows).unwrap_or((block_for(len.div_ceil(lanes)), 1));
    let block = seg * packed;
    let warps = block / wave();
    let k = arity(stat);
    let mut b = Body::default();
    let (tid, row, bdim) = if packed > 1 {
        // row = block · packed + thread / seg; the thread's place in its row = thread mod seg
        let t = b.emit("gpu.thread_id x");
        let blk = b.emit("gpu.block_id x");
        let (segv, pv) = (b.index(seg), b.index(packed));
        let within = b.emit(format!("arith.divui {t}, {segv} : index"));
        let first = b.emit(format!("arith.muli {blk}, {pv} : index"));
        let row = b.emit(format!("arith.addi {first}, {within} : index"));
        (b.emit(format!("arith.remui {t}, {segv} : index")), row, segv)
    } else {
        (b.emit("gpu.thread_id x"), b.emit("gpu.block_id x"), b.emit("gpu.block_dim x"))
    };
    let lenv = b.index(len);
    let base = b.emit(format!("arith.muli {row}, {lenv} : index"));
    // 16-byte vectors along the row when rows are whole, aligned vectors and every row-shaped
    // operand has the input's element size; lanes are computed as scalars
    let row_params: Vec<usize> =
        (0..params.len()).filter(|&pk| params[pk].elements == numel(&in_shape) && !params[pk].output).collect();
    let vl = b.index(lanes);
    let stride = b.emit(format!("arith.muli {bdim}, {vl} : index"));
    let start = b.emit(format!("arith.muli {tid}, {vl} : index"));
    // a row of a few whole vectors per thread stays in registers between the passes
    let per_thread = len / (lanes * seg);
    let resident = if per_row
        && lanes > 1
        && len.is_multiple_of(lanes * seg)
        && (1..=knobs::ROW_RESIDENT_VECTORS).contains(&per_thread)
    {
        per_thread
    } else {
        0
    };
    // the reduction input at the `lanes` elements from flat offset `at`
    let lane_values = |b: &mut Body, at: &str| -> Result<Vec<String>, KernelError> {
        let vecs = vector_loads(b, &params, &row_params, at, lanes);
        let mut xs = vec![];
        for lane in 0..lanes {
            let off = b.index(lane);
            let i = b.emit(format!("arith.addi {at}, {off} : index"));
            let lanes_arg = (lanes > 1).then_some((&vecs, lane, lanes));
            let vals = compute(
                b,
                g,
                prologue,
                &params,
                &scalars,
                &in_shape,
                &i,
                c,
                dt,
                lanes_arg,
                HashMap::new(),
                &[x],
                &unsupported,
            )?;
            xs.push(
                vals.get(&x)
                    .cloned()
                    .ok_or_else(|| unsupported("the reduction's input is not computed in the group".into()))?,
            );
        }
        Ok(xs)
    };
    // pass 1: per-thread partials (each vector's own statistic, then one combination)
    let mut kept: Vec<Vec<String>> = vec![];
    // resident softmax keeps e^(x − m_thread) instead of x: one exp per element, not two
    let kept_exps = resident > 0 && anchor.op == Op::Softmax;
    let mut thread_max = String::new();
    // a resident row: the thread's whole share is loaded once, its statistic taken directly
    for v in 0..resident {
        let vv = b.index(v);
        let off = b.emit(format!("arith.muli {stride}, {vv} : index"));
        let c1 = b.emit(format!("arith.addi {start}, {off} : index"));
        let at1 = b.emit(format!("arith.addi {base}, {c1} : index"));
        kept.push(lane_values(&mut b, &at1)?);
    }
    let mut part: Vec<String> = if kept_exps {
        let all: Vec<String> = kept.iter().flatten().cloned().collect();
        let m = all[1..].iter().fold(all[0].clone(), |a, v| b.emit(format!("arith.maximumf {a}, {v} : {c}")));
        // a thread whose values are all −∞ holds exps of 0 (its partial is empty), not NaN
        let ninf = b.float(f64::NEG_INFINITY, c);
        let zero = b.float(0.0, c);
        let empty = b.emit(format!("arith.cmpf oeq, {m}, {ninf} : {c}"));
        let shift = b.emit(format!("arith.select {empty}, {zero}, {m} : {c}"));
        for xs in kept.iter_mut() {
            for x in xs.iter_mut() {
                let d = b.emit(format!("arith.subf {x}, {shift} : {c}"));
                *x = b.emit(format!("math.exp {d} : {c}"));
            }
        }
        let es: Vec<String> = kept.iter().flatten().cloned().collect();
        let sum = es[1..].iter().fold(es[0].clone(), |a, v| b.emit(format!("arith.addf {a}, {v} : {c}")));
        thread_max = m.clone();
        vec![m, sum]
    } else if resident > 0 {
        let all: Vec<String> = kept.iter().flatten().cloned().collect();
        local(&mut b, stat, &all, c)
    } else {
        let init = identity(&mut b, stat, c);
        let types = vec![c; k].join(", ");
        let accs: Vec<String> = (0..k).map(|j| format!("%acc{j}")).collect();
        let iter_args = accs.iter().zip(&init).map(|(a, i)| format!("{a} = {i}")).collect::<Vec<_>>().join(", ");
        let head = format!("scf.for %c1 = {start} to {lenv} step {stride} iter_args({iter_args}) -> ({types}) {{");
        let res = if k == 1 { b.emit(head) } else { b.emit_multi(k, head) };
        let at1 = b.emit(format!("arith.addi {base}, %c1 : index"));
        let xs = lane_values(&mut b, &at1)?;
        let own = local(&mut b, stat, &xs, c);
        let acc = combine(&mut b, stat, &accs, &own, c);
        b.stmt(format!("scf.yield {} : {types}", acc.join(", ")));
        b.stmt("}");
        if k == 1 {
            vec![res]
        } else {
            (0..k).map(|j| format!("{res}#{j}")).collect()
        }
    };
    // warp reduction with xor shuffles
    let width = b.emit(format!("arith.constant {} : i32", wave()));
    part = warp_combine(&mut b, stat, part, &width, c, seg.min(wave()));
    let red_mem = format!("memref<{}x{c}, #gpu.address_space<workgroup>>", warps * k + k);
    let total = if packed > 1 { part } else { across_warps(&mut b, stat, part, &tid, &width, warps, &red_mem, c) };
    let lenf = b.float(len as f64, c);
    // softmax multiplies by 1/Σ (and, with kept exps, by e^(m_thread − M)) instead of dividing
    let softmax_scale = if anchor.op == Op::Softmax {
        let one = b.float(1.0, c);
        let inv = b.emit(format!("arith.divf {one}, {} : {c}", total[1]));
        Some(if kept_exps {
            let d = b.emit(format!("arith.subf {thread_max}, {} : {c}", total[0]));
            let w = b.emit(format!("math.exp {d} : {c}"));
            // an empty thread partial weighs 0, whatever the row's maximum
            let ninf = b.float(f64::NEG_INFINITY, c);
            let zero = b.float(0.0, c);
            let empty = b.emit(format!("arith.cmpf oeq, {thread_max}, {ninf} : {c}"));
            let w = b.emit(format!("arith.select {empty}, {zero}, {w} : {c}"));
            b.emit(format!("arith.mulf {w}, {inv} : {c}"))
        } else {
            inv
        })
    } else {
        None
    };
    let outs: Vec<(usize, &Param)> = params.iter().enumerate().filter(|(_, p)| p.output).collect();
    if per_row {
        // pass 2: normalize each element, run the epilogue, store (kept values, or read again)
        let steps: Vec<(String, Option<usize>)> = if resident > 0 {
            (0..resident)
                .map(|v| {
                    let vv = b.index(v);
                    let off = b.emit(format!("arith.muli {stride}, {vv} : index"));
                    (b.emit(format!("arith.addi {start}, {off} : index")), Some(v))
                })
                .collect()
        } else {
            b.stmt(format!("scf.for %c2 = {start} to {lenv} step {stride} {{"));
            vec![("%c2".to_string(), None)]
        };
        for (c2, kept_at) in steps {
            let at2 = b.emit(format!("arith.addi {base}, {c2} : index"));
            let xs = match kept_at {
                Some(v) => kept[v].clone(),
                None => lane_values(&mut b, &at2)?,
            };
            // scale and bias are read once per vector too, at the same column
            let column_params: Vec<usize> = anchor.inputs[1..]
                .iter()
                .flatten()
                .filter_map(|w| params.iter().position(|p| p.value == *w && !p.output))
                .filter(|&pk| params[pk].elements == len && params[pk].dtype.size() == esize)
                .collect();
            let col_vecs = vector_loads(&mut b, &params, &column_params, &c2, lanes);
            let mut lane_outs: Vec<Vec<String>> = vec![vec![]; params.len()];
            for (lane, xv) in xs.iter().cloned().enumerate() {
                let off = b.index(lane);
                let i2 = b.emit(format!("arith.addi {at2}, {off} : index"));
                let col = b.emit(format!("arith.addi {c2}, {off} : index"));
                let yv = match anchor.op {
                    Op::Softmax | Op::LogSoftmax => {
                        let scale = softmax_scale.as_deref().unwrap_or_default();
                        if kept_exps {
                            b.emit(format!("arith.mulf {xv}, {scale} : {c}"))
                        } else if anchor.op == Op::Softmax {
                            let d = b.emit(format!("arith.subf {xv}, {} : {c}", total[0]));
                            let e = b.emit(format!("math.exp {d} : {c}"));
                            b.emit(format!("arith.mulf {e}, {scale} : {c}"))
                        } else {
                            let d = b.emit(format!("arith.subf {xv}, {} : {c}", total[0]));
                            let l = b.emit(format!("math.log {} : {c}", total[1]));
                            b.emit(format!("arith.subf {d}, {l} : {c}"))
                        }
                    }
                    _ => {
                        let eps = b.float(float_attr(anchor, "epsilon", 1e-5), c);
                        let (centered, var) = if anchor.op == Op::LayerNormalization {
                            let v = b.emit(format!("arith.divf {}, {lenf} : {c}", total[2]));
                            (b.emit(format!("arith.subf {xv}, {} : {c}", total[1])), v)
                        } else {
                            (xv.clone(), b.emit(format!("arith.divf {}, {lenf} : {c}", total[0])))
                        };
                        let ve = b.emit(format!("arith.addf {var}, {eps} : {c}"));
                        let r = b.emit(format!("math.rsqrt {ve} : {c}"));
                        let mut v = b.emit(format!("arith.mulf {centered}, {r} : {c}"));
                        // scale (and bias) are indexed by the position in the row
                        for (slot, op) in [(1usize, "mulf"), (2, "addf")] {
                            let Some(w) = anchor.inputs.get(slot).copied().flatten() else { continue };
                            if anchor.op == Op::RMSNormalization && slot == 2 {
                                continue;
                            }
                            let wv = match (scalars.get(&w), params.iter().position(|p| p.value == w)) {
                                (Some(&s), _) => b.float(s, c),
                                (None, Some(pk)) => {
                                    let p = &params[pk];
                                    let st = storage_type(p.dtype).unwrap();
                                    let idx = if p.elements == len { col.clone() } else { i2.clone() };
                                    let raw = match col_vecs.get(&pk) {
                                        Some(vec) => b.emit(format!(
                                            "vector.extract {vec}[{lane}] : {st} from vector<{lanes}x{st}>"
                                        )),
                                        None => {
                                            b.emit(format!("memref.load %arg{pk}[{idx}] : memref<{}x{st}>", p.elements))
                                        }
                                    };
                                    if st != c {
                                        b.emit(format!("arith.extf {raw} : {st} to {c}"))
                                    } else {
                                        raw
                                    }
                                }
                                _ => return Err(unsupported("a normalization parameter is not an input".into())),
                            };
                            v = b.emit(format!("arith.{op} {v}, {wv} : {c}"));
                        }
                        v
                    }
                };
                let mut seed: HashMap<ValueId, String> = HashMap::new();
                seed.insert(y, yv);
                let vals = compute(
                    &mut b,
                    g,
                    epilogue,
                    &params,
                    &scalars,
                    &out_space,
                    &i2,
                    c,
                    dt,
                    None,
                    seed,
                    &[],
                    &unsupported,
                )?;
                for (pk, p) in &outs {
                    let v =
                        vals.get(&p.value).cloned().ok_or_else(|| unsupported("an output is not computed".into()))?;
                    let v = stored(&mut b, p, &v, c);
                    if lanes > 1 {
                        lane_outs[*pk].push(v);
                    } else {
                        b.stmt(format!(
                            "memref.store {v}, %arg{pk}[{i2}] : memref<{}x{}>",
                            p.elements,
                            storage_type(p.dtype).unwrap()
                        ));
                    }
                }
            }
            if lanes > 1 {
                for (pk, p) in &outs {
                    let st = storage_type(p.dtype).unwrap();
                    let mut v = b.emit(format!("arith.constant dense<0.0> : vector<{lanes}x{st}>"));
                    for (lane, x) in lane_outs[*pk].iter().enumerate() {
                        v = b.emit(format!("vector.insert {x}, {v} [{lane}] : {st} into vector<{lanes}x{st}>"));
                    }
                    b.stmt(format!(
                        "vector.store {v}, %arg{pk}[{at2}] {{alignment = 16}} : memref<{}x{st}>, vector<{lanes}x{st}>",
                        p.elements
                    ));
                }
            }
        }
        if resident == 0 {
            b.stmt("}");
        }
    } else {
        // one value per row: thread 0 finishes it, runs the epilogue and stores
        let c0 = b.index(0);
        let is_t0 = b.emit(format!("arith.cmpi eq, {tid}, {c0} : index"));
        b.stmt(format!("scf.if {is_t0} {{"));
        let r = match anchor.op {
            Op::ReduceMean | Op::GlobalAveragePool => b.emit(format!("arith.divf {}, {lenf} : {c}", total[0])),
            Op::ReduceL2 => b.emit(format!("math.sqrt {} : {c}", total[0])),
            _ => total[0].clone(),
        };
        let mut seed: HashMap<ValueId, String> = HashMap::new();
        seed.insert(y, r);
        let vals =
            compute(&mut b, g, epilogue, &params, &scalars, &out_space, &row, c, dt, None, seed, &[], &unsupported)?;
        store_outputs(&mut b, &params, &vals, &row, c).map_err(unsupported)?;
        b.stmt("}");
    }
    let workgroup = format!("%red : {red_mem}");
    let shared = (packed == 1).then_some(workgroup.as_str());
    Ok(finish(params, &b, shared, [(rows / packed) as u32, 1, 1], [block as u32, 1, 1]))
}
