//! The tiled-transpose template: a group that is one Transpose whose permutation swaps two
//! contiguous runs of axes (after untouched leading axes) is a batch of 2-D transposes
//! [batch, A, B] → [batch, B, A]. Each block stages a TILE×TILE tile in workgroup memory (one
//! padding column against bank conflicts) so both the loads and the stores coalesce.
use crate::body::{storage_type, Body};
use crate::kernel::{finish, input_params, Kernel, KernelError, Param};
use crate::knobs::{TILE, TILE_MAX_SHORT_RUN, TILE_ROWS};
use xforge_ir::group::FusionGroup;
use xforge_ir::tensor::numel;
use xforge_ir::{Attr, Graph, Op};

/// (batch, A, B) of a batched 2-D transpose, when the group is exactly one such Transpose.
pub fn batched_swap(g: &Graph, grp: &FusionGroup) -> Option<(usize, usize, usize)> {
    let [n] = grp.nodes[..] else { return None };
    let node = &g.nodes[n];
    if node.op != Op::Transpose || grp.outputs.len() != 1 || node.outputs[0] != Some(grp.outputs[0]) {
        return None;
    }
    let shape = g.ty(node.inputs[0]?).static_shape()?;
    let rank = shape.len();
    let perm: Vec<usize> = match node.attr("perm") {
        Some(Attr::Ints(p)) => p.iter().map(|&a| usize::try_from(a).ok()).collect::<Option<_>>()?,
        _ => (0..rank).rev().collect(),
    };
    // perm = [0..k) ++ [s..rank) ++ [k..s): untouched axes, then the two runs swapped
    let k = (0..rank).find(|&i| perm[i] != i)?;
    let s = perm[k];
    let expect: Vec<usize> = (0..k).chain(s..rank).chain(k..s).collect();
    let (a, b) = (numel(&shape[k..s]), numel(&shape[s..]));
    (perm == expect && a > TILE_MAX_SHORT_RUN && b > TILE_MAX_SHORT_RUN).then(|| (numel(&shape[..k]), a, b))
}

pub fn transpose(g: &Graph, grp: &FusionGroup, gi: usize) -> Result<Kernel, KernelError> {
    let unsupported = |why: String| KernelError::Unsupported { group: gi, why };
    let (batch, a, b_len) = batched_swap(g, grp).ok_or_else(|| unsupported("not a batched 2-D transpose".into()))?;
    if batch * a * b_len == 0 {
        return Err(unsupported("an empty transpose is not a kernel".into()));
    }
    if batch > 65535 || a.div_ceil(TILE) > 65535 {
        return Err(unsupported(format!("a grid of {batch}×{} tiles is too tall", a.div_ceil(TILE))));
    }
    let y = grp.outputs[0];
    let ty = g.ty(y);
    let st = storage_type(ty.dtype).ok_or_else(|| unsupported(format!("dtype {} is not supported", ty.dtype)))?;
    let (mut params, _) = input_params(g, &grp.inputs, &[], false).map_err(unsupported)?;
    if params.len() != 1 {
        return Err(unsupported("a one-element transpose input is not a kernel".into()));
    }
    let n = batch * a * b_len;
    params.push(Param { value: y, dtype: ty.dtype, elements: n, output: true });
    // elements narrower than 4 bytes move `pack` at a time (a warp moves 128 bytes per row) when
    // both extents are whole packs; the tile grows to 32·pack square
    let esize = ty.dtype.size();
    let pack = if esize < 4 && a.is_multiple_of(4 / esize) && b_len.is_multiple_of(4 / esize) { 4 / esize } else { 1 };
    let tile_n = TILE * pack;
    let tile_mem = format!("memref<{}x{st}, #gpu.address_space<workgroup>>", tile_n * (tile_n + 1));
    let vec_ty = format!("vector<{pack}x{st}>");
    let align = esize * pack;
    let mut b = Body::default();
    let tx = b.emit("gpu.thread_id x");
    let ty_ = b.emit("gpu.thread_id y");
    let bx = b.emit("gpu.block_id x");
    let by = b.emit("gpu.block_id y");
    let bz = b.emit("gpu.block_id z");
    let tile = b.index(tile_n);
    let pitch = b.index(tile_n + 1);
    let pk = b.index(pack);
    let (av, bv) = (b.index(a), b.index(b_len));
    let ab = b.index(a * b_len);
    let base = b.emit(format!("arith.muli {bz}, {ab} : index"));
    let col0 = b.emit(format!("arith.muli {bx}, {tile} : index"));
    let row0 = b.emit(format!("arith.muli {by}, {tile} : index"));
    // this thread's first element of a tile row
    let lane0 = b.emit(format!("arith.muli {tx}, {pk} : index"));
    // every thread moves tile_n / TILE_ROWS packs in and as many out
    let steps: Vec<String> = (0..tile_n / TILE_ROWS)
        .map(|j| {
            let off = b.index(j * TILE_ROWS);
            b.emit(format!("arith.addi {ty_}, {off} : index"))
        })
        .collect();
    // in[base + (row0 + r)·B + col0 + lane0 ..] → tile[r][lane0 ..]; coordinates are clamped
    // instead of guarded so every load is in flight before the first store (ragged edges load
    // duplicates that are never written out)
    let (a_last, b_last) = (b.index(a - 1), b.index(b_len - pack));
    let col = b.emit(format!("arith.addi {col0}, {lane0} : index"));
    let col = b.emit(format!("arith.minui {col}, {b_last} : index"));
    let loaded: Vec<String> = steps
        .iter()
        .map(|r| {
            let row = b.emit(format!("arith.addi {row0}, {r} : index"));
            let row = b.emit(format!("arith.minui {row}, {a_last} : index"));
            let at = b.emit(format!("arith.muli {row}, {bv} : index"));
            let at = b.emit(format!("arith.addi {at}, {col} : index"));
            let at = b.emit(format!("arith.addi {at}, {base} : index"));
            if pack == 1 {
                b.emit(format!("memref.load %arg0[{at}] : memref<{n}x{st}>"))
            } else {
                b.emit(format!("vector.load %arg0[{at}] {{alignment = {align}}} : memref<{n}x{st}>, {vec_ty}"))
            }
        })
        .collect();
    for (r, v) in steps.iter().zip(&loaded) {
        for l in 0..pack {
            let x = if pack == 1 { v.clone() } else { b.emit(format!("vector.extract {v}[{l}] : {st} from {vec_ty}")) };
            let t = b.emit(format!("arith.muli {r}, {pitch} : index"));
            let t = b.emit(format!("arith.addi {t}, {lane0} : index"));
            let lo = b.index(l);
            let t = b.emit(format!("arith.addi {t}, {lo} : index"));
            b.stmt(format!("memref.store {x}, %tile[{t}] : {tile_mem}"));
        }
    }
    b.stmt("gpu.barrier");
    for r in &steps {
        // tile[lane0 ..][r] → out[base + (col0 + r)·A + row0 + lane0 ..]
        let orow = b.emit(format!("arith.addi {col0}, {r} : index"));
        let ocol = b.emit(format!("arith.addi {row0}, {lane0} : index"));
        let in_r = b.emit(format!("arith.cmpi ult, {orow}, {bv} : index"));
        let in_c = b.emit(format!("arith.cmpi ult, {ocol}, {av} : index"));
        let ok = b.emit(format!("arith.andi {in_r}, {in_c} : i1"));
        b.stmt(format!("scf.if {ok} {{"));
        let vals: Vec<String> = (0..pack)
            .map(|l| {
                let lo = b.index(l);
                let src = b.emit(format!("arith.addi {lane0}, {lo} : index"));
                let t = b.emit(format!("arith.muli {src}, {pitch} : index"));
                let t = b.emit(format!("arith.addi {t}, {r} : index"));
                b.emit(format!("memref.load %tile[{t}] : {tile_mem}"))
            })
            .collect();
        let at = b.emit(format!("arith.muli {orow}, {av} : index"));
        let at = b.emit(format!("arith.addi {at}, {ocol} : index"));
        let at = b.emit(format!("arith.addi {at}, {base} : index"));
        if pack == 1 {
            b.stmt(format!("memref.store {}, %arg1[{at}] : memref<{n}x{st}>", vals[0]));
        } else {
            let mut v = b.emit(format!("arith.constant dense<0> : vector<{pack}xi{}>", esize * 8));
            v = b.emit(format!("arith.bitcast {v} : vector<{pack}xi{}> to {vec_ty}", esize * 8));
            for (l, x) in vals.iter().enumerate() {
                v = b.emit(format!("vector.insert {x}, {v} [{l}] : {st} into {vec_ty}"));
            }
            b.stmt(format!("vector.store {v}, %arg1[{at}] {{alignment = {align}}} : memref<{n}x{st}>, {vec_ty}"));
        }
        b.stmt("}");
    }
    let grid = [b_len.div_ceil(tile_n) as u32, a.div_ceil(tile_n) as u32, batch as u32];
    Ok(finish(params, &b, Some(&format!("%tile : {tile_mem}")), grid, [TILE as u32, TILE_ROWS as u32, 1]))
}
