//! The contraction template for generated GEMM groups: a MatMul (batched, broadcast) or Gemm
//! whose epilogue a vendor library cannot run (erf-GELU, head-major stores through Split and
//! Transpose). Blocks of GEMM_THREADS² threads own GEMM_TILE² outputs, GEMM_TILE/GEMM_THREADS
//! squared per thread; K advances GEMM_K at a time through workgroup memory (f32); the
//! accumulators stay f32. The epilogue runs on each output where it lies, then the store tail.
use crate::body::{compute_type, storage_type, Body};
use crate::elementwise::{compute, float_attr};
use crate::kernel::{finish, input_params, Kernel, KernelError, Param};
use crate::knobs::{GEMM_K, GEMM_THREADS, GEMM_TILE};
use crate::route::{is_tail, routes, store_routed};
use std::collections::HashMap;
use xforge_ir::tensor::{numel, strides};
use xforge_ir::{Attr, Graph, Node, Op, ValueId};
use xforge_passes::fusion::FusionGroup;

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

pub fn gemm(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
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
    let (epilogue, tail) = (&nodes[1..split], &nodes[split..]);
    if let Some(n) = tail.iter().find(|n| !is_tail(n.op)) {
        return Err(unsupported(format!("node '{}' ({}) follows the store tail", n.name, n.op)));
    }
    // the tail's sizes and shapes are compiled in
    let sizes: Vec<ValueId> = tail.iter().flat_map(|n| n.inputs.iter().skip(1).flatten().copied()).collect();
    let (mut params, scalars) = input_params(g, &grp.inputs, &sizes, true).map_err(unsupported)?;
    let at = |v: ValueId| params.iter().position(|p| p.value == v && !p.output);
    let (pa, pb) = match (at(ct.a), at(ct.b)) {
        (Some(x), Some(z)) => (x, z),
        _ => return Err(unsupported("the operands must be buffers".into())),
    };
    for &o in &grp.outputs {
        let ty = g.ty(o);
        let s =
            ty.static_shape().ok_or_else(|| unsupported(format!("output '{}' has no static shape", g.name_of(o))))?;
        storage_type(ty.dtype)
            .filter(|_| ty.dtype.is_float())
            .ok_or_else(|| unsupported(format!("output dtype {} is not supported", ty.dtype)))?;
        params.push(Param { value: o, dtype: ty.dtype, elements: numel(&s), output: true });
    }
    let computed: Vec<ValueId> = std::iter::once(y).chain(epilogue.iter().filter_map(|n| n.outputs[0])).collect();
    let outs = routes(g, tail, &params, &computed).map_err(unsupported)?;
    let c = compute_type(dt);
    let st = storage_type(dt).unwrap();
    let (m, n, k) = (ct.m, ct.n, ct.k);
    let batch: Vec<usize> = ys[..ys.len() - 2].to_vec();
    let (tile, threads, kstep) = (GEMM_TILE, GEMM_THREADS, GEMM_K);
    let per = tile / threads;
    let wg = format!("memref<{}x{c}, #gpu.address_space<workgroup>>", tile * kstep);
    let mut b = Body::default();
    let tx = b.emit("gpu.thread_id x");
    let ty = b.emit("gpu.thread_id y");
    let bx = b.emit("gpu.block_id x");
    let by = b.emit("gpu.block_id y");
    let bz = b.emit("gpu.block_id z");
    let ctile = b.index(tile);
    let n0 = b.emit(format!("arith.muli {bx}, {ctile} : index"));
    let m0 = b.emit(format!("arith.muli {by}, {ctile} : index"));
    let bcoords = crate::elementwise::coords(&mut b, &bz, &batch);
    let sa = g.ty(ct.a).static_shape().unwrap();
    let sb = g.ty(ct.b).static_shape().unwrap();
    let a_off = batch_offset(&mut b, &bcoords, &sa);
    let b_off = batch_offset(&mut b, &bcoords, &sb);
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
    for (which, trans, p, off, outer) in
        [("As", ct.trans_a, pa, &a_off, (&m0, &cm)), ("Bs", ct.trans_b, pb, &b_off, (&n0, &cn))]
    {
        let elems = params[p].elements;
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
            let (major, minor, minor_n) = if along_k { (&o, &kk, k) } else { (&kk, &o, outer_len(which, m, n)) };
            let cmin = b.index(minor_n);
            let idx = b.emit(format!("arith.muli {major}, {cmin} : index"));
            let idx = b.emit(format!("arith.addi {idx}, {minor} : index"));
            let idx = b.emit(format!("arith.addi {idx}, {off} : index"));
            let idx = b.emit(format!("arith.select {ok}, {idx}, {zero_i} : index"));
            let raw = b.emit(format!("memref.load %arg{p}[{idx}] : memref<{elems}x{st}>"));
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
    let alpha = (ct.alpha != 1.0).then(|| b.float(ct.alpha, c));
    let mn = b.index(m * n);
    let zbase = b.emit(format!("arith.muli {bz}, {mn} : index"));
    for i in 0..per {
        for j in 0..per {
            let mi = b.emit(format!("arith.addi {m0}, {} : index", rows[i]));
            let nj = b.emit(format!("arith.addi {n0}, {} : index", cols[j]));
            let ok1 = b.emit(format!("arith.cmpi ult, {mi}, {cm} : index"));
            let ok2 = b.emit(format!("arith.cmpi ult, {nj}, {cn} : index"));
            let ok = b.emit(format!("arith.andi {ok1}, {ok2} : i1"));
            b.stmt(format!("scf.if {ok} {{"));
            let flat = b.emit(format!("arith.muli {mi}, {cn} : index"));
            let flat = b.emit(format!("arith.addi {flat}, {nj} : index"));
            let flat = b.emit(format!("arith.addi {flat}, {zbase} : index"));
            let mut v = format!("{acc}#{}", i * per + j);
            if let Some(al) = &alpha {
                v = b.emit(format!("arith.mulf {v}, {al} : {c}"));
            }
            if let Some((cv, beta)) = ct.c {
                let loaded = compute(
                    &mut b,
                    g,
                    &[],
                    &params,
                    &scalars,
                    &ys,
                    &flat,
                    c,
                    dt,
                    None,
                    HashMap::new(),
                    &[cv],
                    &unsupported,
                )?;
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
            seed.insert(y, v);
            let vals =
                compute(&mut b, g, epilogue, &params, &scalars, &ys, &flat, c, dt, None, seed, &[], &unsupported)?;
            let at: Vec<String> = bcoords.iter().cloned().chain([mi, nj]).collect();
            store_routed(&mut b, &params, &outs, &vals, &at, &ys, c).map_err(unsupported)?;
            b.stmt("}");
        }
    }
    let nb = numel(&batch);
    if nb > 65535 || m.div_ceil(tile) > 65535 {
        return Err(unsupported("too many batches or row tiles for one launch".into()));
    }
    let grid = [n.div_ceil(tile).min(1 << 31) as u32, m.div_ceil(tile) as u32, nb.max(1) as u32];
    let shared = format!("%As : {wg}, %Bs : {wg}");
    Ok(finish(params, &b, Some(&shared), grid, [threads as u32, threads as u32, 1]))
}

/// The extent of a tile's outer index: M for A, N for B.
fn outer_len(which: &str, m: usize, n: usize) -> usize {
    if which == "As" {
        m
    } else {
        n
    }
}
