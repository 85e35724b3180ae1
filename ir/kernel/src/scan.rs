//! The scan template: a linear recurrence along one axis (CumSum, CumProd; exclusive and
//! reverse). One thread per line of the axis walks it in order; neighbouring threads take
//! neighbouring inner positions, so loads coalesce.
use crate::body::{compute_type, storage_type, Body};
use crate::kernel::{blocks, finish, Kernel, KernelError, Param};
use xforge_ir::tensor::numel;
use xforge_ir::{Attr, Graph, Node, Op};
use xforge_passes::fusion::FusionGroup;

use crate::knobs::BLOCK;

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
    let mut b = Body::default();
    let (start, step) = b.grid_stride();
    let lines = b.index(outer * inner);
    let (inner_v, len_v, one, zero) = (b.index(inner), b.index(len), b.index(1), b.index(0));
    let last = b.index(len.saturating_sub(1));
    b.stmt(format!("scf.for %line = {start} to {lines} step {step} {{"));
    let o = b.emit(format!("arith.divui %line, {inner_v} : index"));
    let ii = b.emit(format!("arith.remui %line, {inner_v} : index"));
    let ol = b.emit(format!("arith.muli {o}, {len_v} : index"));
    let init_v = b.float(init, c);
    b.emit(format!("scf.for %t = {zero} to {len_v} step {one} iter_args(%acc = {init_v}) -> ({c}) {{"));
    // the position along the axis (walked backwards for reverse scans)
    let k = if reverse { b.emit(format!("arith.subi {last}, %t : index")) } else { "%t".to_string() };
    let row = b.emit(format!("arith.addi {ol}, {k} : index"));
    let row = b.emit(format!("arith.muli {row}, {inner_v} : index"));
    let at = b.emit(format!("arith.addi {row}, {ii} : index"));
    let raw = b.emit(format!("memref.load %arg0[{at}] : memref<{}x{st}>", numel(&xs)));
    let v = if st != c { b.emit(format!("arith.extf {raw} : {st} to {c}")) } else { raw };
    let nxt = b.emit(format!("arith.{op} %acc, {v} : {c}"));
    let out = if exclusive { "%acc".to_string() } else { nxt.clone() };
    let out = if st != c { b.emit(format!("arith.truncf {out} : {c} to {st}")) } else { out };
    b.stmt(format!("memref.store {out}, %arg1[{at}] : memref<{}x{st}>", numel(&xs)));
    b.stmt(format!("scf.yield {nxt} : {c}"));
    b.stmt("}");
    b.stmt("}");
    Ok(finish(params, &b, None, [blocks(outer * inner, BLOCK), 1, 1], [BLOCK, 1, 1]))
}
