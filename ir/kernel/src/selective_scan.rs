//! The selective-scan template (com.xforge `SelectiveScan`, docs/ops/selective_scan.md), first
//! form: one thread per (batch, channel) walks the sequence with its whole state in registers
//! (the state never reaches device memory), reads u, delta and z once, and reads B and C at the
//! same address as its neighbours in the warp (consecutive channels share a group), so each
//! warp-wide load of them is one transaction. Not yet chunked over the sequence: at batch 1 a
//! 1536-channel model fills 6 blocks of 256 threads.
use crate::body::{compute_type, storage_type, Body};
use crate::elementwise::{load_param, stored};
use crate::kernel::{blocks, finish, memref, Kernel, KernelError, Param};
use crate::knobs::{BLOCK, SSM_MAX_STATE};
use xforge_ir::tensor::numel;
use xforge_ir::{Attr, Graph, Op, ValueId};
use xforge_passes::fusion::FusionGroup;

pub fn selective_scan(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let [node] = grp.nodes.as_slice() else {
        return Err(unsupported("a selective scan with a prologue or epilogue is not generated yet".into()));
    };
    let node = &g.nodes[*node];
    if node.op != Op::SelectiveScan {
        return Err(unsupported(format!("{} is not a selective scan", node.op)));
    }
    let input = |k: usize| node.inputs.get(k).copied().flatten();
    let shape = |v: ValueId| g.ty(v).static_shape().ok_or_else(|| unsupported("shapes are not static".into()));
    let (u, a) = (input(0).unwrap(), input(2).unwrap());
    let us = shape(u)?;
    let [nb, nd, nl] = us[..] else { return Err(unsupported("u is not (batch, dim, len)".into())) };
    let n = shape(a)?[1];
    let bs = shape(input(3).unwrap())?;
    let groups = if bs.len() == 4 { bs[1] } else { 1 };
    if n > SSM_MAX_STATE || n == 0 || groups == 0 || nd % groups != 0 || nb * nd * nl == 0 {
        return Err(unsupported(format!(
            "state size {n} (at most {SSM_MAX_STATE} held in registers), {groups} groups"
        )));
    }
    // parameters: the present inputs in order, then out and (when asked) the last state
    let mut params = vec![];
    let mut slot = [None; 8];
    for (k, s) in slot.iter_mut().enumerate() {
        if let Some(v) = input(k) {
            let ty = g.ty(v);
            storage_type(ty.dtype)
                .filter(|_| ty.dtype.is_float())
                .ok_or_else(|| unsupported(format!("input {k} is {}", ty.dtype)))?;
            *s = Some(params.len());
            params.push(Param { value: v, dtype: ty.dtype, elements: numel(&shape(v)?), output: false });
        }
    }
    let outs: Vec<ValueId> = node.output_ids().collect();
    for (k, &o) in outs.iter().enumerate() {
        if !grp.outputs.contains(&o) && k > 0 {
            continue;
        }
        params.push(Param { value: o, dtype: g.ty(o).dtype, elements: numel(&shape(o)?), output: true });
    }
    let out_param = slot.iter().flatten().count();
    let last_param = (params.len() > out_param + 1).then_some(out_param + 1);
    let c = compute_type(g.ty(u).dtype);
    let softplus = matches!(node.attr("delta_softplus"), Some(Attr::Int(v)) if *v != 0);
    let mut b = Body::default();
    // input k's value at `i`, widened to the compute type
    let load = |b: &mut Body, k: usize, i: &str| load_param(b, &params, input(k).unwrap(), i, c).unwrap();
    let store = |b: &mut Body, k: usize, i: &str, v: &str| {
        let sv = stored(b, &params[k], v, c);
        b.stmt(format!("memref.store {sv}, %arg{k}[{i}] : {}", memref(&params[k])));
    };
    let tid = b.emit("gpu.thread_id x");
    let bid = b.emit("gpu.block_id x");
    let bdim = b.emit("gpu.block_dim x");
    let line = b.emit(format!("arith.muli {bid}, {bdim} : index"));
    let line = b.emit(format!("arith.addi {line}, {tid} : index"));
    let lines = b.index(nb * nd);
    let inside = b.emit(format!("arith.cmpi ult, {line}, {lines} : index"));
    b.stmt(format!("scf.if {inside} {{"));
    let (dv, lv, nv, zero_i) = (b.index(nd), b.index(nl), b.index(n), b.index(0));
    let one_i = b.index(1);
    let bi = b.emit(format!("arith.divui {line}, {dv} : index"));
    let ch = b.emit(format!("arith.remui {line}, {dv} : index"));
    let per_group = b.index(nd / groups);
    let grp_i = b.emit(format!("arith.divui {ch}, {per_group} : index"));
    let gv = b.index(groups);
    // B/C row base of (batch, group): ((bi·G + g)·n)·L
    let bg = b.emit(format!("arith.muli {bi}, {gv} : index"));
    let bg = b.emit(format!("arith.addi {bg}, {grp_i} : index"));
    let bg = b.emit(format!("arith.muli {bg}, {nv} : index"));
    let proj_base = b.emit(format!("arith.muli {bg}, {lv} : index"));
    let row_base = b.emit(format!("arith.muli {line}, {lv} : index"));
    // per channel: A's row, D, delta_bias
    let a_base = b.emit(format!("arith.muli {ch}, {nv} : index"));
    let av: Vec<String> = (0..n)
        .map(|s| {
            let off = b.index(s);
            let i = b.emit(format!("arith.addi {a_base}, {off} : index"));
            load(&mut b, 2, &i)
        })
        .collect();
    let d_val = slot[5].map(|_| load(&mut b, 5, &ch));
    let bias = slot[7].map(|_| load(&mut b, 7, &ch));
    let zero = b.float(0.0, c);
    let one = b.float(1.0, c);
    let twenty = b.float(20.0, c);
    let inits = (0..n).map(|s| format!("%h{s} = {zero}")).collect::<Vec<_>>().join(", ");
    let types = vec![c; n].join(", ");
    let carried =
        b.emit_multi(n, format!("scf.for %t = {zero_i} to {lv} step {one_i} iter_args({inits}) -> ({types}) {{"));
    let i = b.emit(format!("arith.addi {row_base}, %t : index"));
    let uval = load(&mut b, 0, &i);
    let mut dt = load(&mut b, 1, &i);
    if let Some(bias) = &bias {
        dt = b.emit(format!("arith.addf {dt}, {bias} : {c}"));
    }
    if softplus {
        // PyTorch's softplus: x above 20 is kept, else log(1 + exp(x))
        let e = b.emit(format!("math.exp {dt} : {c}"));
        let l1p = b.emit(format!("math.log1p {e} : {c}"));
        let big = b.emit(format!("arith.cmpf ogt, {dt}, {twenty} : {c}"));
        dt = b.emit(format!("arith.select {big}, {dt}, {l1p} : {c}"));
    }
    let du = b.emit(format!("arith.mulf {dt}, {uval} : {c}"));
    let mut y = zero.clone();
    let mut next = vec![];
    for (s, a_s) in av.iter().enumerate() {
        let so = b.index(s);
        let pi = b.emit(format!("arith.muli {so}, {lv} : index"));
        let pi = b.emit(format!("arith.addi {pi}, %t : index"));
        let pi = b.emit(format!("arith.addi {pi}, {proj_base} : index"));
        let bval = load(&mut b, 3, &pi);
        let cval = load(&mut b, 4, &pi);
        let x = b.emit(format!("arith.mulf {dt}, {a_s} : {c}"));
        let decay = b.emit(format!("math.exp {x} : {c}"));
        let kept = b.emit(format!("arith.mulf {decay}, %h{s} : {c}"));
        let h = b.emit(format!("math.fma {du}, {bval}, {kept} : {c}"));
        y = b.emit(format!("math.fma {h}, {cval}, {y} : {c}"));
        next.push(h);
    }
    if let Some(dv) = &d_val {
        y = b.emit(format!("math.fma {dv}, {uval}, {y} : {c}"));
    }
    if slot[6].is_some() {
        let z = load(&mut b, 6, &i);
        let nz = b.emit(format!("arith.negf {z} : {c}"));
        let e = b.emit(format!("math.exp {nz} : {c}"));
        let den = b.emit(format!("arith.addf {one}, {e} : {c}"));
        let silu = b.emit(format!("arith.divf {z}, {den} : {c}"));
        y = b.emit(format!("arith.mulf {y}, {silu} : {c}"));
    }
    store(&mut b, out_param, &i, &y);
    b.stmt(format!("scf.yield {} : {types}", next.join(", ")));
    b.stmt("}");
    if let Some(k) = last_param {
        let base = b.emit(format!("arith.muli {line}, {nv} : index"));
        for s in 0..n {
            let off = b.index(s);
            let at = b.emit(format!("arith.addi {base}, {off} : index"));
            store(&mut b, k, &at, &format!("{carried}#{s}"));
        }
    }
    b.stmt("}");
    Ok(finish(params, &b, None, [blocks(nb * nd, BLOCK), 1, 1], [BLOCK, 1, 1]))
}
