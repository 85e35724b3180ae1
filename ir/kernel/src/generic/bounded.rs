//! `Bounded` (interp/bounded.rs): NonZero, Compress and NonMaxSuppression writing their result
//! padded with zeros to the static bound, and the valid length. One thread walks the input in
//! order (results come out in the interpreter's order); NonMaxSuppression visits each class's
//! boxes by falling score without scratch memory: each step scans for the best box ranked below
//! the last one, O(V²) a class for V valid boxes — plain, as generic kernels are (one thread:
//! ssdlite320 with every score kept, V = 27000, takes 37 s on an H200). Given the boxes in
//! score order (input 6), NonMaxSuppression runs as one cooperating block instead (`nms_block`).
use super::scalar::{self as s, konst, Ty, Val};
use super::{Kern, R};
use xforge_ir::tensor::numel;

pub fn bounded(k: &mut Kern) -> R<usize> {
    let a = k.attrs();
    let op = a.string("bounded_op", "")?;
    if op == "NonMaxSuppression" && k.in_val(7).is_some() {
        return nms_masked(k);
    }
    if op == "NonMaxSuppression" && k.in_val(6).is_some() {
        return nms_block(k);
    }
    let bound = a.int("bound", 0)? as usize;
    if op == "NonZero" && k.in_val(2).is_some() {
        return nonzero_tiled(k, bound);
    }
    if op == "NonZero" && numel(&k.in_shape(0)?) >= crate::knobs::NONZERO_BLOCK_MIN {
        return nonzero_block(k, bound);
    }
    let out_shape = k.out_shape(0)?;
    let (p, len) = (k.output(0)?, k.output(1)?);
    let n_out = numel(&out_shape);
    k.for_each(1, |k, _| {
        // every padded entry is written: zeros first
        let odt = Ty::of(k.params[p].dtype);
        k.fold_n(n_out, &[], |k, i, _| {
            let z = konst(&mut k.b, 0.0, odt);
            k.store(p, i, &z);
            Ok(vec![])
        })?;
        let count = match op.as_str() {
            "NonZero" => nonzero(k, p, bound)?,
            "Compress" => compress(k, p, bound)?,
            "NonMaxSuppression" => nms(k, p)?,
            o => return Err(format!("no bounded form of {o}")),
        };
        let z = k.index(0);
        let c = s::from_index(&mut k.b, &count, Ty::Int(64, true));
        k.store(len, &z, &c);
        Ok(())
    })?;
    Ok(1)
}

/// NonZero's input, and whether element `i` counts: non-zero, and inside the valid length
/// (input 1) along `valid_axis` for padded data.
struct NonZeroIn {
    x: usize,
    shape: Vec<usize>,
    limit: Option<(usize, String)>,
}

fn nonzero_in(k: &mut Kern) -> R<NonZeroIn> {
    let shape = k.in_shape(0)?;
    let x = k.input(0)?;
    // padded input: entries at or past the valid length (input 1) along `valid_axis` are left out
    let limit = match k.in_val(1) {
        Some(_) => {
            let ax = k.attrs().int("valid_axis", 0)? as usize;
            let size = *shape.get(ax).ok_or("valid_axis is past the input's rank")?;
            Some((ax, count_in(k, 1, size, size)?))
        }
        None => None,
    };
    Ok(NonZeroIn { x, shape, limit })
}

impl NonZeroIn {
    fn counts(&self, k: &mut Kern, i: &str) -> Val {
        let v = k.load(self.x, i);
        let mut nz = s::cast(&mut k.b, &v, Ty::Bool);
        if let Some((ax, l)) = &self.limit {
            let c = k.coords(i, &self.shape);
            let inside = k.icmp("ult", &c[*ax], l);
            nz = k.and(&nz, &inside);
        }
        nz
    }

    /// How many entries of [lo, hi) count (an index).
    fn count_run(&self, k: &mut Kern, lo: &str, hi: &str) -> R<String> {
        let zero = k.index(0);
        let r = k.fold(lo, hi, &[Val::new(zero, Ty::Index)], |k, i, acc| {
            let nz = self.counts(k, i);
            let one = k.index(1);
            let inc = k.ix("addi", &acc[0].v, &one);
            Ok(vec![Val::new(k.isel(&nz, &inc, &acc[0].v), Ty::Index)])
        })?;
        Ok(r[0].v.clone())
    }

    /// Writes the coordinates of the entries of [lo, hi) that count, from result column `first` on.
    fn write_run(&self, k: &mut Kern, p: usize, bound: usize, lo: &str, hi: &str, first: String) -> R<()> {
        k.fold(lo, hi, &[Val::new(first, Ty::Index)], |k, i, acc| {
            let nz = self.counts(k, i);
            let at = acc[0].v.clone();
            k.when(&nz, |k| {
                self.write(k, p, bound, i, &at);
                Ok(())
            })?;
            let one = k.index(1);
            let inc = k.ix("addi", &at, &one);
            Ok(vec![Val::new(k.isel(&nz, &inc, &at), Ty::Index)])
        })?;
        Ok(())
    }

    /// Writes element `i`'s coordinates as result column `at`.
    fn write(&self, k: &mut Kern, p: usize, bound: usize, i: &str, at: &str) {
        let c = k.coords(i, &self.shape);
        for (d, cd) in c.iter().enumerate() {
            let row = k.index(d * bound);
            let to = k.ix("addi", &row, at);
            let cv = s::from_index(&mut k.b, cd, Ty::Int(64, true));
            k.store(p, &to, &cv);
        }
    }
}

/// Coordinates of each non-zero element, column by column; returns the count (an index).
fn nonzero(k: &mut Kern, p: usize, bound: usize) -> R<String> {
    let a = nonzero_in(k)?;
    let zero = k.index(0);
    let n = numel(&a.shape);
    let r = k.fold_n(n, &[Val::new(zero, Ty::Index)], |k, i, acc| {
        let nz = a.counts(k, i);
        let cnt = acc[0].v.clone();
        k.when(&nz, |k| {
            a.write(k, p, bound, i, &cnt);
            Ok(())
        })?;
        let one = k.index(1);
        let inc = k.ix("addi", &cnt, &one);
        Ok(vec![Val::new(k.isel(&nz, &inc, &cnt), Ty::Index)])
    })?;
    Ok(r[0].v.clone())
}

/// Every padded entry of output `p` (`n` of them) written with zero, the block's `threads`
/// threads striding from `tid`.
fn zero_fill(k: &mut Kern, p: usize, n: usize, tid: &str, threads: usize) {
    let step = k.index(threads);
    let end = k.index(n);
    let iv = k.b.fresh("z");
    k.b.stmt(format!("scf.for {iv} = {tid} to {end} step {step} {{"));
    let z = s::int_konst(&mut k.b, 0, Ty::Int(64, true));
    k.store(p, &iv, &z);
    k.b.stmt("}");
}

/// NonZero as one block of NONZERO_THREADS threads: each counts the non-zeros of its run of
/// the input, an inclusive scan of the counts in workgroup memory (log₂ rounds) gives each run
/// its first result column, and each writes its run's coordinates there: the interpreter's
/// order, in two passes over the input instead of one thread's one (ssdlite's 180 NonZeros).
fn nonzero_block(k: &mut Kern, bound: usize) -> R<usize> {
    use crate::knobs::NONZERO_THREADS as NT;
    let out_shape = k.out_shape(0)?;
    let (p, len) = (k.output(0)?, k.output(1)?);
    let a = nonzero_in(k)?;
    let n = numel(&a.shape);
    let run = n.div_ceil(NT);
    let wg_ty = format!("memref<{NT}xindex, #gpu.address_space<workgroup>>");
    k.one_block = Some((NT as u32, format!("%wg : {wg_ty}")));
    let tid = k.b.emit("gpu.thread_id x");
    zero_fill(k, p, numel(&out_shape), &tid, NT);
    // this thread's run [lo, hi)
    let lo = k.ixc("muli", &tid, run);
    let nn = k.index(n);
    let lo = k.b.emit(format!("arith.minui {lo}, {nn} : index"));
    let hi = k.ixc("addi", &lo, run);
    let hi = k.b.emit(format!("arith.minui {hi}, {nn} : index"));
    let mine = a.count_run(k, &lo, &hi)?;
    k.b.stmt(format!("memref.store {mine}, %wg[{tid}] : {wg_ty}"));
    k.b.stmt("gpu.barrier");
    k.inclusive_scan(&wg_ty, "index", 0, &tid, NT);
    let incl = k.b.emit(format!("memref.load %wg[{tid}] : {wg_ty}"));
    let first = k.ix("subi", &incl, &mine);
    a.write_run(k, p, bound, &lo, &hi, first)?;
    let last = k.index(NT - 1);
    let is_last = k.icmp("eq", &tid, &last);
    k.when(&is_last, |k| {
        let t = s::from_index(&mut k.b, &incl, Ty::Int(64, true));
        let z = k.index(0);
        k.store(len, &z, &t);
        Ok(())
    })?;
    Ok(NT)
}

/// NonZero over tiles of `nonzero_tile` elements, one block each, given each tile's first
/// result column (input 2: the exclusive prefix sums of the tiles' counts, which the graph
/// computes before as a row reduction and a CumSum — passes/bounded.rs). A block counts its
/// tile by runs of NONZERO_THREADS threads, scans the counts in workgroup memory and writes its
/// coordinates from its first column on: every SM at work, where `nonzero_block` is one block
/// walking the whole input (RetinaNet's 8 million scores: 4.4 ms). The last block writes the
/// count and zeros past it.
fn nonzero_tiled(k: &mut Kern, bound: usize) -> R<usize> {
    use crate::knobs::NONZERO_THREADS as NT;
    let tile = k.attrs().int("nonzero_tile", 0)?.max(1) as usize;
    let (p, len) = (k.output(0)?, k.output(1)?);
    let a = nonzero_in(k)?;
    let n = numel(&a.shape);
    let tiles = n.div_ceil(tile);
    let offs = k.input(2)?;
    if k.in_shape(2)? != [tiles] || a.limit.is_some() {
        return Err(format!("{tiles} tile offsets of unpadded data expected, not {:?}", k.in_shape(2)?));
    }
    let run = tile.div_ceil(NT);
    let wg_ty = format!("memref<{NT}xi32, #gpu.address_space<workgroup>>");
    k.one_block = Some((NT as u32, format!("%wg : {wg_ty}")));
    k.blocks = u32::try_from(tiles).map_err(|_| "too many tiles")?;
    let tid = k.b.emit("gpu.thread_id x");
    let bid = k.b.emit("gpu.block_id x");
    // this thread's run [lo, hi) of its block's tile
    let t0 = k.ixc("muli", &bid, tile);
    let nn = k.index(n);
    let t1 = k.ixc("addi", &t0, tile);
    let t1 = k.b.emit(format!("arith.minui {t1}, {nn} : index"));
    let lo = k.ixc("muli", &tid, run);
    let lo = k.ix("addi", &t0, &lo);
    let lo = k.b.emit(format!("arith.minui {lo}, {t1} : index"));
    let hi = k.ixc("addi", &lo, run);
    let hi = k.b.emit(format!("arith.minui {hi}, {t1} : index"));
    let mine = a.count_run(k, &lo, &hi)?;
    let m32 = k.b.emit(format!("arith.index_cast {mine} : index to i32"));
    k.b.stmt(format!("memref.store {m32}, %wg[{tid}] : {wg_ty}"));
    k.b.stmt("gpu.barrier");
    k.inclusive_scan(&wg_ty, "i32", 0, &tid, NT);
    let incl = k.b.emit(format!("memref.load %wg[{tid}] : {wg_ty}"));
    let incl = k.b.emit(format!("arith.index_cast {incl} : i32 to index"));
    let off = k.load(offs, &bid);
    let off = s::cast(&mut k.b, &off, Ty::Int(64, true));
    let off = s::to_index(&mut k.b, &off);
    let first = k.ix("addi", &off, &incl);
    let first = k.ix("subi", &first, &mine);
    a.write_run(k, p, bound, &lo, &hi, first)?;
    // the last block: the count, and zeros from it to the bound in every row
    let last = k.index(tiles - 1);
    let is_last = k.icmp("eq", &bid, &last);
    k.when(&is_last, |k| {
        let top = k.index(NT - 1);
        let all = k.b.emit(format!("memref.load %wg[{top}] : {wg_ty}"));
        let all = k.b.emit(format!("arith.index_cast {all} : i32 to index"));
        let total = k.ix("addi", &off, &all);
        let from = k.ix("addi", &total, &tid);
        let (end, step) = (k.index(bound), k.index(NT));
        let c = k.b.fresh("c");
        k.b.stmt(format!("scf.for {c} = {from} to {end} step {step} {{"));
        for d in 0..a.shape.len() {
            let at = k.ixc("addi", &c, d * bound);
            let z = s::int_konst(&mut k.b, 0, Ty::Int(64, true));
            k.store(p, &at, &z);
        }
        k.b.stmt("}");
        let lead = k.icmp("eq", &tid, &top);
        k.when(&lead, |k| {
            let t = s::from_index(&mut k.b, &total, Ty::Int(64, true));
            let z = k.index(0);
            k.store(len, &z, &t);
            Ok(())
        })
    })?;
    Ok(NT * tiles)
}

/// The slices along the axis whose condition holds, in order; returns the count.
fn compress(k: &mut Kern, p: usize, bound: usize) -> R<String> {
    let xs = k.in_shape(0)?;
    let cn = numel(&k.in_shape(1)?);
    let (outer, dim, inner) = match k.attrs().int_opt("axis")? {
        Some(a) => {
            let a = if a < 0 { a + xs.len() as i64 } else { a } as usize;
            (numel(&xs[..a]), xs[a], numel(&xs[a + 1..]))
        }
        None => (1, numel(&xs), 1),
    };
    let (x, cond) = (k.input(0)?, k.input(1)?);
    let zero = k.index(0);
    let r = k.fold_n(dim.min(cn), &[Val::new(zero, Ty::Index)], |k, j, acc| {
        let c = k.load(cond, j);
        let keep = s::cast(&mut k.b, &c, Ty::Bool);
        let cnt = acc[0].v.clone();
        k.when(&keep, |k| {
            k.fold_n(outer * inner, &[], |k, q, _| {
                let o = k.ixc("divui", q, inner);
                let i = k.ixc("remui", q, inner);
                let src = k.ixc("muli", &o, dim);
                let src = k.ix("addi", &src, j);
                let src = k.ixc("muli", &src, inner);
                let src = k.ix("addi", &src, &i);
                let dst = k.ixc("muli", &o, bound);
                let dst = k.ix("addi", &dst, &cnt);
                let dst = k.ixc("muli", &dst, inner);
                let dst = k.ix("addi", &dst, &i);
                let v = k.load(x, &src);
                k.store(p, &dst, &v);
                Ok(vec![])
            })?;
            Ok(())
        })?;
        let one = k.index(1);
        let inc = k.ix("addi", &cnt, &one);
        Ok(vec![Val::new(k.isel(&keep, &inc, &cnt), Ty::Index)])
    })?;
    Ok(r[0].v.clone())
}

/// A scalar operand (input `i`) as a float of type `ct`, or `default` when it is absent.
fn scalar_in(k: &mut Kern, i: usize, ct: Ty, default: Option<f64>) -> R<Option<Val>> {
    if k.in_val(i).is_none() || k.in_shape(i).map(|s| numel(&s) == 0).unwrap_or(true) {
        return Ok(default.map(|d| konst(&mut k.b, d, ct)));
    }
    let pi = k.input(i)?;
    let z = k.index(0);
    let v = k.load(pi, &z);
    Ok(Some(s::cast(&mut k.b, &v, ct)))
}

/// Boxes [B, N, 4] as NonMaxSuppression reads them, and its overlap test.
struct Boxes {
    boxes: usize,
    n: usize,
    center: bool,
    /// the type the corners and IoU are computed in (f64 for f64 boxes, else f32)
    ct: Ty,
    iou_th: Val,
}

/// NonMaxSuppression's operands as the kernel reads them.
struct Nms {
    geo: Boxes,
    scores: usize,
    /// batches, classes
    nb: usize,
    nc: usize,
    /// the per-class limit (at most N, 0 when absent) and the valid boxes (input 5), as indices
    max_out: String,
    valid: String,
    score_th: Option<Val>,
}

/// An i64 scalar input clamped to [0, n], as an index; `absent` when the input is not there.
pub(super) fn count_in(k: &mut Kern, i: usize, n: usize, absent: usize) -> R<String> {
    let present = k.in_val(i).is_some() && k.in_shape(i).map(|s| numel(&s) > 0).unwrap_or(false);
    if !present {
        return Ok(k.index(absent));
    }
    let i64t = Ty::Int(64, true);
    let pi = k.input(i)?;
    let z = k.index(0);
    let v = k.load(pi, &z);
    let v = s::cast(&mut k.b, &v, i64t);
    let zero = konst(&mut k.b, 0.0, i64t);
    let v = s::max(&mut k.b, &v, &zero);
    let nv = konst(&mut k.b, n as f64, i64t);
    let v = s::min(&mut k.b, &v, &nv);
    Ok(s::to_index(&mut k.b, &v))
}

/// The boxes (input 0) with `center_point_box` and the IoU threshold (input `iou_at`).
fn boxes_args(k: &mut Kern, iou_at: usize) -> R<Boxes> {
    let bs = k.in_shape(0)?;
    let center = k.attrs().int("center_point_box", 0)? != 0;
    let ct = if k.in_dtype(0)? == xforge_ir::DType::F64 { Ty::F64 } else { Ty::F32 };
    let iou_th = scalar_in(k, iou_at, ct, Some(0.0))?.expect("a default");
    Ok(Boxes { boxes: k.input(0)?, n: bs[1], center, ct, iou_th })
}

fn nms_args(k: &mut Kern) -> R<Nms> {
    let geo = boxes_args(k, 3)?;
    let (nb, nc, n) = (k.in_shape(0)?[0], k.in_shape(1)?[1], geo.n);
    let scores = k.input(1)?;
    let max_out = count_in(k, 2, n, 0)?;
    // padded boxes: only the first `valid` (input 5) take part
    let valid = if k.in_val(5).is_some() { count_in(k, 5, n, n)? } else { k.index(n) };
    let score_th = scalar_in(k, 4, geo.ct, None)?;
    Ok(Nms { geo, scores, nb, nc, max_out, valid, score_th })
}

impl Boxes {
    /// Corners (y1, x1, y2, x2 ordered low to high) of box `i` of batch `b`.
    fn corners(&self, k: &mut Kern, b: &str, i: &str) -> Vec<Val> {
        let base = k.ixc("muli", b, self.n);
        let base = k.ix("addi", &base, i);
        let base = k.ixc("muli", &base, 4);
        let v: Vec<Val> = (0..4)
            .map(|j| {
                let at = k.ixc("addi", &base, j);
                let x = k.load(self.boxes, &at);
                s::cast(&mut k.b, &x, self.ct)
            })
            .collect();
        let (bb, ct) = (&mut k.b, self.ct);
        if self.center {
            let two = konst(bb, 2.0, ct);
            let hw = s::div(bb, &v[2], &two);
            let hh = s::div(bb, &v[3], &two);
            vec![s::sub(bb, &v[0], &hw), s::sub(bb, &v[1], &hh), s::add(bb, &v[0], &hw), s::add(bb, &v[1], &hh)]
        } else {
            vec![s::min(bb, &v[1], &v[3]), s::min(bb, &v[0], &v[2]), s::max(bb, &v[1], &v[3]), s::max(bb, &v[0], &v[2])]
        }
    }

    /// Whether two boxes overlap by more than the IoU threshold (a zero union never does).
    fn overlaps(&self, k: &mut Kern, a: &[Val], c: &[Val]) -> Val {
        let (bb, ct) = (&mut k.b, self.ct);
        let z = konst(bb, 0.0, ct);
        let lo0 = s::max(bb, &a[0], &c[0]);
        let hi0 = s::min(bb, &a[2], &c[2]);
        let iw = s::sub(bb, &hi0, &lo0);
        let iw = s::max(bb, &iw, &z);
        let lo1 = s::max(bb, &a[1], &c[1]);
        let hi1 = s::min(bb, &a[3], &c[3]);
        let ih = s::sub(bb, &hi1, &lo1);
        let ih = s::max(bb, &ih, &z);
        let inter = s::mul(bb, &iw, &ih);
        let area = |bb: &mut crate::body::Body, v: &[Val]| {
            let w = s::sub(bb, &v[2], &v[0]);
            let h = s::sub(bb, &v[3], &v[1]);
            s::mul(bb, &w, &h)
        };
        let aa = area(bb, a);
        let ac = area(bb, c);
        let u = s::add(bb, &aa, &ac);
        let u = s::sub(bb, &u, &inter);
        let pos = s::cmp(bb, "gt", &u, &z);
        let q = s::div(bb, &inter, &u);
        let iou = s::select(bb, &pos, &q, &z);
        s::cmp(bb, "gt", &iou, &self.iou_th)
    }
}

impl Nms {
    /// The score of box `i` in the scores row starting at `srow`.
    fn score(&self, k: &mut Kern, srow: &str, i: &str) -> Val {
        let at = k.ix("addi", srow, i);
        let v = k.load(self.scores, &at);
        s::cast(&mut k.b, &v, self.geo.ct)
    }

    /// Whether box `i` takes part: valid, and above the score threshold if there is one.
    fn candidate(&self, k: &mut Kern, srow: &str, i: &str) -> Val {
        let mut ok = k.icmp("ult", i, &self.valid);
        if let Some(th) = &self.score_th {
            let v = self.score(k, srow, i);
            let over = s::cmp(&mut k.b, "gt", &v, th);
            ok = k.and(&ok, &over);
        }
        ok
    }
}

fn or(k: &mut Kern, a: &Val, c: &Val) -> Val {
    Val::new(k.b.emit(format!("arith.ori {}, {} : i1", a.v, c.v)), Ty::Bool)
}

fn not(k: &mut Kern, a: &Val) -> Val {
    let t = konst(&mut k.b, 1.0, Ty::Bool);
    Val::new(k.b.emit(format!("arith.xori {}, {} : i1", a.v, t.v)), Ty::Bool)
}

/// When `keep`, writes the row (batch, class, box) of output `p` at `start + kept`; returns the
/// count after it (an index).
fn keep_row(k: &mut Kern, p: usize, keep: &Val, start: &str, kept: &str, row: [&String; 3]) -> R<String> {
    k.when(keep, |k| {
        let r = k.ix("addi", start, kept);
        let at = k.ixc("muli", &r, 3);
        for (j, v) in row.into_iter().enumerate() {
            let a = k.ixc("addi", &at, j);
            let x = s::from_index(&mut k.b, v, Ty::Int(64, true));
            k.store(p, &a, &x);
        }
        Ok(())
    })?;
    let one = k.index(1);
    let inc = k.ix("addi", kept, &one);
    Ok(k.isel(keep, &inc, kept))
}

/// Greedy non-maximum suppression per (batch, class), rows (batch, class, box) in order; one
/// thread, no scratch memory: each step scans for the best box ranked below the last one.
fn nms(k: &mut Kern, p: usize) -> R<String> {
    let a = nms_args(k)?;
    let (n, nc) = (a.geo.n, a.nc);
    let zero = k.index(0);
    let total = k.fold_n(a.nb * nc, &[Val::new(zero, Ty::Index)], |k, bc, acc| {
        let start = acc[0].v.clone();
        let b = k.ixc("divui", bc, nc);
        let c = k.ixc("remui", bc, nc);
        let srow = k.ixc("muli", bc, n);
        let inf = konst(&mut k.b, f64::INFINITY, a.geo.ct);
        let z = k.index(0);
        let none = k.index(n);
        // carried: kept, last score, last index (n before the first), finished
        let fin = konst(&mut k.b, 0.0, Ty::Bool);
        let init = [Val::new(z.clone(), Ty::Index), inf, Val::new(none.clone(), Ty::Index), fin];
        // one step takes one box (kept or not) or finds none left: `valid` steps are enough, and
        // each scans the valid boxes only (O(valid²), not O(N²), for a padded input)
        let z0 = k.index(0);
        let valid = a.valid.clone();
        let r = k.fold(&z0, &valid, &init, |k, _, st| {
            let (kept, last_s, last_i) = (st[0].v.clone(), st[1].clone(), st[2].v.clone());
            // the best box ranked after (last_s, last_i): lower score, or equal score at a higher index
            let ninf = konst(&mut k.b, f64::NEG_INFINITY, a.geo.ct);
            let z = k.index(0);
            let nn = k.index(n);
            let found = konst(&mut k.b, 0.0, Ty::Bool);
            let z1 = k.index(0);
            let best = k.fold(&z1, &valid, &[ninf, Val::new(z, Ty::Index), found], |k, i, acc| {
                let v = a.score(k, &srow, i);
                let lower = s::cmp(&mut k.b, "lt", &v, &last_s);
                let eq = s::cmp(&mut k.b, "eq", &v, &last_s);
                let after = k.icmp("ugt", i, &last_i);
                // before the first step last_i = n: equal scores come from the first box on
                let first = k.icmp("eq", &last_i, &nn);
                let after = or(k, &after, &first);
                let tie = k.and(&eq, &after);
                let below = or(k, &lower, &tie);
                let cand = a.candidate(k, &srow, i);
                let ok = k.and(&below, &cand);
                // better than the best so far: higher score, or the first seen at that score
                let higher = s::cmp(&mut k.b, "gt", &v, &acc[0]);
                let nf = not(k, &acc[2]);
                let better = or(k, &higher, &nf);
                let take = k.and(&ok, &better);
                let s_ = s::select(&mut k.b, &take, &v, &acc[0]);
                let i_ = k.isel(&take, i, &acc[1].v);
                let f_ = or(k, &acc[2], &take);
                Ok(vec![s_, Val::new(i_, Ty::Index), f_])
            })?;
            let (bs_, bi, bf) = (best[0].clone(), best[1].v.clone(), best[2].clone());
            let room = k.icmp("ult", &kept, &a.max_out);
            let not_fin = not(k, &st[3]);
            let go = k.and(&bf, &room);
            let go = k.and(&go, &not_fin);
            // suppressed by a kept box of this class?
            let mine = a.geo.corners(k, &b, &bi);
            let z = k.index(0);
            let no = konst(&mut k.b, 0.0, Ty::Bool);
            let sup = k.fold(&z, &kept, &[no], |k, j, acc| {
                let row = k.ix("addi", &start, j);
                let at = k.ixc("muli", &row, 3);
                let at = k.ixc("addi", &at, 2);
                let other = k.load(p, &at);
                let oi = s::to_index(&mut k.b, &other);
                let theirs = a.geo.corners(k, &b, &oi);
                let over = a.geo.overlaps(k, &theirs, &mine);
                Ok(vec![or(k, &acc[0], &over)])
            })?;
            let keep_it = not(k, &sup[0]);
            let keep_it = k.and(&go, &keep_it);
            let kept2 = keep_row(k, p, &keep_it, &start, &kept, [&b, &c, &bi])?;
            // done once no box is left or the class is full
            let nf = not(k, &bf);
            let full = k.icmp("uge", &kept2, &a.max_out);
            let full = or(k, &full, &nf);
            let fin = or(k, &st[3], &full);
            let ls = s::select(&mut k.b, &go, &bs_, &last_s);
            let li = k.isel(&go, &bi, &last_i);
            Ok(vec![Val::new(kept2, Ty::Index), ls, Val::new(li, Ty::Index), fin])
        })?;
        let next = k.ix("addi", &start, &r[0].v);
        Ok(vec![Val::new(next, Ty::Index)])
    })?;
    Ok(total[0].v.clone())
}

/// The box at sorted position `r` of the order row starting at `srow` (an index; order entries
/// clamped to [0, n), as the interpreter's overlap mask reads them).
fn sorted_box(k: &mut Kern, order: usize, srow: &str, r: &str, n: usize) -> String {
    let i64t = Ty::Int(64, true);
    let at = k.ix("addi", srow, r);
    let i = k.load(order, &at);
    let i = s::cast(&mut k.b, &i, i64t);
    let lo = s::int_konst(&mut k.b, 0, i64t);
    let hi = s::int_konst(&mut k.b, n as i64 - 1, i64t);
    let i = s::max(&mut k.b, &i, &lo);
    let i = s::min(&mut k.b, &i, &hi);
    s::to_index(&mut k.b, &i)
}

/// Member `m` of the chunk starting at sorted position `r0`: its box, and whether it is a
/// candidate (inside the order, valid, above the score threshold).
fn member(k: &mut Kern, a: &Nms, order: usize, srow: &str, r0: &str, m: &str) -> (String, Val) {
    let n = a.geo.n;
    let r = k.ix("addi", r0, m);
    let nn = k.index(n);
    let inside = k.icmp("ult", &r, &nn);
    let z = k.index(0);
    let rr = k.isel(&inside, &r, &z);
    let i = sorted_box(k, order, srow, &rr, n);
    let cand = a.candidate(k, srow, &i);
    (i, k.and(&inside, &cand))
}

/// NmsOverlapMask(boxes, order, iou_threshold) (interp/detection.rs): one thread per 32-bit
/// word of the mask: bit j of word w of row r is whether the box at sorted position 32w + j (after
/// r) overlaps the box at position r. Words at or before the row's own are zero.
pub fn overlap_mask(k: &mut Kern) -> R<usize> {
    let geo = boxes_args(k, 2)?;
    let (bs, os) = (k.in_shape(0)?, k.in_shape(1)?);
    let n = geo.n;
    if os.len() != 3 || os[0] != bs[0] || os[2] != n {
        return Err(format!("the score order has shape {os:?}, not [{}, C, {n}]", bs[0]));
    }
    let (nb, nc) = (bs[0], os[1]);
    let words = n.div_ceil(BITS);
    let order = k.input(1)?;
    let out = k.output(0)?;
    let total = nb * nc * n * words;
    let i32t = Ty::Int(32, true);
    k.for_each(total, |k, i| {
        // threads run along the rows (r fastest): a warp's 32 threads test the same 32 later
        // boxes, so their loads are one broadcast each instead of 32 scattered ones
        let bc = k.ixc("divui", i, words * n);
        let rem = k.ixc("remui", i, words * n);
        let w = k.ixc("divui", &rem, n);
        let r = k.ixc("remui", &rem, n);
        let b = k.ixc("divui", &bc, nc);
        let srow = k.ixc("muli", &bc, n);
        // positions 32w .. 32w + 31: any after r?
        let last = k.ixc("muli", &w, BITS);
        let last = k.ixc("addi", &last, BITS - 1);
        let any = k.icmp("ugt", &last, &r);
        let word = k.if_else(
            &any,
            &[i32t],
            |k| {
                let mine = sorted_box(k, order, &srow, &r, n);
                let mine = geo.corners(k, &b, &mine);
                let z32 = s::int_konst(&mut k.b, 0, i32t);
                let first = k.ixc("muli", &w, BITS);
                k.fold_n(BITS, &[z32], |k, j, acc| {
                    let p = k.ix("addi", &first, j);
                    let after = k.icmp("ugt", &p, &r);
                    let nn = k.index(n);
                    let inside = k.icmp("ult", &p, &nn);
                    let ok = k.and(&after, &inside);
                    let z = k.index(0);
                    let pc = k.isel(&inside, &p, &z);
                    let theirs = sorted_box(k, order, &srow, &pc, n);
                    let theirs = geo.corners(k, &b, &theirs);
                    let over = geo.overlaps(k, &mine, &theirs);
                    let set = k.and(&ok, &over);
                    let bit = Val::new(k.b.emit(format!("arith.extui {} : i1 to i32", set.v)), i32t);
                    let j32 = Val::new(k.b.emit(format!("arith.index_cast {j} : index to i32")), i32t);
                    let bit = Val::new(k.b.emit(format!("arith.shli {}, {} : i32", bit.v, j32.v)), i32t);
                    Ok(vec![Val::new(k.b.emit(format!("arith.ori {}, {} : i32", acc[0].v, bit.v)), i32t)])
                })
            },
            |k| Ok(vec![s::int_konst(&mut k.b, 0, i32t)]),
        )?;
        let row = k.ixc("muli", &bc, n);
        let row = k.ix("addi", &row, &r);
        let at = k.ixc("muli", &row, words);
        let at = k.ix("addi", &at, &w);
        k.store(out, &at, &word[0]);
        Ok(())
    })?;
    Ok(total)
}

/// Bits a word of the overlap mask (the interpreter's MASK_WORD_BITS).
const BITS: usize = xforge_ir::interp::MASK_WORD_BITS;

/// NonMaxSuppression from the overlap mask of its score order (input 7; the order is input 6)
/// as one block of NMS_THREADS threads. The boxes suppressed so far are a bit set over sorted
/// positions in workgroup memory; candidates go 32 at a time (one word): the chunk's lanes fetch
/// their box, whether it is a candidate and their row's word of the chunk, thread 0 settles the
/// chunk in order from those words, and every thread ORs the kept members' rows into the words
/// after the chunk. Work per chunk: 32 steps of one thread and one pass over the words left —
/// no overlap test at all (the mask kernel made them all, in parallel).
fn nms_masked(k: &mut Kern) -> R<usize> {
    let out_shape = k.out_shape(0)?;
    let (p, len) = (k.output(0)?, k.output(1)?);
    let (order, mask) = (k.input(6)?, k.input(7)?);
    let a = nms_args(k)?;
    let (n, nc) = (a.geo.n, a.nc);
    let words = n.div_ceil(BITS);
    let (os, ms) = (k.in_shape(6)?, k.in_shape(7)?);
    if os != [a.nb, nc, n] || ms != [a.nb, nc, n, words] {
        return Err(format!("the score order {os:?} and its overlap mask {ms:?} do not fit [{}, {nc}, {n}]", a.nb));
    }
    if words > crate::knobs::NMS_MASK_MAX_WORDS {
        return Err(format!("{n} boxes are more than a block's bit set holds"));
    }
    let nt = NMS_THREADS;
    // workgroup i32s: [0, words) suppressed bits; then the chunk's boxes, candidate flags and
    // diagonal words (BITS each); then the kept members' bits and the count
    let (box0, ok0, diag0) = (words, words + BITS, words + 2 * BITS);
    let (kept_at, cnt_at) = (words + 3 * BITS, words + 3 * BITS + 1);
    let wg_ty = format!("memref<{}xi32, #gpu.address_space<workgroup>>", cnt_at + 1);
    k.one_block = Some((nt as u32, format!("%wg : {wg_ty}")));
    let (i32t, i64t) = (Ty::Int(32, true), Ty::Int(64, true));
    let wload = |k: &mut Kern, at: &str| Val::new(k.b.emit(format!("memref.load %wg[{at}] : {wg_ty}")), i32t);
    let wstore = |k: &mut Kern, v: &Val, at: &str| k.b.stmt(format!("memref.store {}, %wg[{at}] : {wg_ty}", v.v));
    let i32op = |k: &mut Kern, op: &str, x: &Val, y: &Val| {
        Val::new(k.b.emit(format!("arith.{op} {}, {} : i32", x.v, y.v)), i32t)
    };
    let barrier = |k: &mut Kern| k.b.stmt("gpu.barrier");
    let tid = k.b.emit("gpu.thread_id x");
    zero_fill(k, p, numel(&out_shape), &tid, nt);
    let z32 = s::int_konst(&mut k.b, 0, i32t);
    let lanes = k.index(BITS);
    let lead = k.icmp("ult", &tid, &lanes);
    let z = k.index(0);
    let is0 = k.icmp("eq", &tid, &z);
    let zero = k.index(0);
    let total = k.fold_n(a.nb * nc, &[Val::new(zero, Ty::Index)], |k, bc, acc| {
        let start = acc[0].v.clone();
        let b = k.ixc("divui", bc, nc);
        let c = k.ixc("remui", bc, nc);
        let srow = k.ixc("muli", bc, n);
        // nothing suppressed yet
        let (stepn, end) = (k.index(nt), k.index(words));
        let zv = k.b.fresh("z");
        k.b.stmt(format!("scf.for {zv} = {tid} to {end} step {stepn} {{"));
        wstore(k, &z32, &zv);
        k.b.stmt("}");
        barrier(k);
        let zero = k.index(0);
        let kept = k.fold_n(words, &[Val::new(zero, Ty::Index)], |k, q, acc| {
            let kept = acc[0].v.clone();
            let r0 = k.ixc("muli", q, BITS);
            // the chunk's lanes: member `tid`'s box, candidacy and word `q` of its mask row
            k.when(&lead, |k| {
                let (bx, ok) = member(k, &a, order, &srow, &r0, &tid);
                let r = k.ix("addi", &r0, &tid);
                let last = k.index(n - 1);
                let past = k.icmp("ugt", &r, &last);
                let r = k.isel(&past, &last, &r);
                let row = k.ix("addi", &srow, &r);
                let at = k.ixc("muli", &row, words);
                let at = k.ix("addi", &at, q);
                let d = k.load(mask, &at);
                let d = s::cast(&mut k.b, &d, i32t);
                let d = s::select(&mut k.b, &ok, &d, &z32);
                let b32 = Val::new(k.b.emit(format!("arith.index_cast {bx} : index to i32")), i32t);
                let ok32 = Val::new(k.b.emit(format!("arith.extui {} : i1 to i32", ok.v)), i32t);
                for (base, v) in [(box0, &b32), (ok0, &ok32), (diag0, &d)] {
                    let at = k.ixc("addi", &tid, base);
                    wstore(k, v, &at);
                }
                Ok(())
            })?;
            barrier(k);
            // thread 0 settles the chunk in order
            k.when(&is0, |k| {
                let rem = wload(k, q);
                let init = [Val::new(kept.clone(), Ty::Index), rem, z32.clone()];
                let r = k.fold_n(BITS, &init, |k, m, acc| {
                    let (cnt, rem, bits) = (acc[0].v.clone(), acc[1].clone(), acc[2].clone());
                    let at = k.ixc("addi", m, box0);
                    let bx = wload(k, &at);
                    let bx = k.b.emit(format!("arith.index_cast {} : i32 to index", bx.v));
                    let at = k.ixc("addi", m, ok0);
                    let ok = wload(k, &at);
                    let at = k.ixc("addi", m, diag0);
                    let d = wload(k, &at);
                    let m32 = Val::new(k.b.emit(format!("arith.index_cast {m} : index to i32")), i32t);
                    let one32 = s::int_konst(&mut k.b, 1, i32t);
                    let bit = i32op(k, "shli", &one32, &m32);
                    let hit = i32op(k, "andi", &rem, &bit);
                    let free = Val::new(k.b.emit(format!("arith.cmpi eq, {}, {} : i32", hit.v, z32.v)), Ty::Bool);
                    let cand = Val::new(k.b.emit(format!("arith.cmpi ne, {}, {} : i32", ok.v, z32.v)), Ty::Bool);
                    let room = k.icmp("ult", &cnt, &a.max_out);
                    let keep = k.and(&cand, &free);
                    let keep = k.and(&keep, &room);
                    let cnt2 = keep_row(k, p, &keep, &start, &cnt, [&b, &c, &bx])?;
                    let rem_or = i32op(k, "ori", &rem, &d);
                    let rem2 = s::select(&mut k.b, &keep, &rem_or, &rem);
                    let set = i32op(k, "ori", &bits, &bit);
                    let bits2 = s::select(&mut k.b, &keep, &set, &bits);
                    Ok(vec![Val::new(cnt2, Ty::Index), rem2, bits2])
                })?;
                let at = k.index(kept_at);
                wstore(k, &r[2], &at);
                let c32 = Val::new(k.b.emit(format!("arith.index_cast {} : index to i32", r[0].v)), i32t);
                let at = k.index(cnt_at);
                wstore(k, &c32, &at);
                Ok(())
            })?;
            barrier(k);
            let at = k.index(kept_at);
            let bits = wload(k, &at);
            let at = k.index(cnt_at);
            let c32 = wload(k, &at);
            let kept2 = k.b.emit(format!("arith.index_cast {} : i32 to index", c32.v));
            // every thread: the kept members' rows ORed into the words after the chunk
            let any = Val::new(k.b.emit(format!("arith.cmpi ne, {}, {} : i32", bits.v, z32.v)), Ty::Bool);
            k.when(&any, |k| {
                let from = k.ixc("addi", q, 1);
                let from = k.ix("addi", &from, &tid);
                let (step, end) = (k.index(nt), k.index(words));
                let x = k.b.fresh("x");
                k.b.stmt(format!("scf.for {x} = {from} to {end} step {step} {{"));
                // the 32 rows' words loaded at once (unrolled, each kept or not by its bit): one
                // load latency a chunk instead of one per kept member
                let last = k.index(n - 1);
                let mut acc = z32.clone();
                for m in 0..BITS {
                    // row r0 + m of this (batch, class), the last one past the end
                    let r = k.ixc("addi", &r0, m);
                    let past = k.icmp("ugt", &r, &last);
                    let r = k.isel(&past, &last, &r);
                    let row = k.ix("addi", &srow, &r);
                    let at = k.ixc("muli", &row, words);
                    let at = k.ix("addi", &at, &x);
                    let v = k.load(mask, &at);
                    let v = s::cast(&mut k.b, &v, i32t);
                    let sh = s::int_konst(&mut k.b, m as i64, i32t);
                    let bit = i32op(k, "shrui", &bits, &sh);
                    let one32 = s::int_konst(&mut k.b, 1, i32t);
                    let bit = i32op(k, "andi", &bit, &one32);
                    let set = Val::new(k.b.emit(format!("arith.cmpi ne, {}, {} : i32", bit.v, z32.v)), Ty::Bool);
                    let v = s::select(&mut k.b, &set, &v, &z32);
                    acc = i32op(k, "ori", &acc, &v);
                }
                let old = wload(k, &x);
                let new = i32op(k, "ori", &old, &acc);
                wstore(k, &new, &x);
                k.b.stmt("}");
                Ok(())
            })?;
            barrier(k);
            Ok(vec![Val::new(kept2, Ty::Index)])
        })?;
        let next = k.ix("addi", &start, &kept[0].v);
        Ok(vec![Val::new(next, Ty::Index)])
    })?;
    k.when(&is0, |k| {
        let t = s::from_index(&mut k.b, &total[0].v, i64t);
        let z = k.index(0);
        k.store(len, &z, &t);
        Ok(())
    })?;
    Ok(nt)
}

/// Candidates a block decides at once (one bit each of an i32 mask).
const NMS_CHUNK: usize = 32;
/// Threads of the block: NMS_CHUNK candidates × NMS_CHUNK slices of the kept boxes.
const NMS_THREADS: usize = NMS_CHUNK * NMS_CHUNK;

/// NonMaxSuppression by one block of NMS_THREADS threads, given each (batch, class)'s boxes in
/// falling score order (input 6, TopK's indices; ties by index, as the greedy order). Candidates
/// go NMS_CHUNK at a time: thread (s, a) tests candidate a against every NMS_CHUNK-th box kept so
/// far, starting at s, and against chunk member s; the overlaps within the chunk become one bit
/// mask per candidate, and thread 0 settles the chunk in order from the masks. Work per chunk
/// is kept/NMS_CHUNK overlap tests a thread, so ssdlite's 27000 boxes take milliseconds where the
/// one-thread walk took 37 s. Rows (batch, class, box) in order, zeros past the count.
fn nms_block(k: &mut Kern) -> R<usize> {
    let out_shape = k.out_shape(0)?;
    let (p, len) = (k.output(0)?, k.output(1)?);
    let order = k.input(6)?;
    let a = nms_args(k)?;
    let (n, nc) = (a.geo.n, a.nc);
    let os = k.in_shape(6)?;
    if os != [a.nb, nc, n] {
        return Err(format!("the score order has shape {os:?}, not [{}, {nc}, {n}]", a.nb));
    }
    let (ch, nt) = (NMS_CHUNK, NMS_THREADS);
    // workgroup i32s: [0, ch) suppressed-by-kept flags, [ch, ch + nt) pair overlaps,
    // [ch + nt, 2ch + nt) each candidate's mask of earlier overlapping members, then the count
    let (sup0, pair0, mask0, cnt_at) = (0, ch, ch + nt, 2 * ch + nt);
    let wg_len = cnt_at + 1;
    let wg_ty = format!("memref<{wg_len}xi32, #gpu.address_space<workgroup>>");
    k.one_block = Some((nt as u32, format!("%wg : {wg_ty}")));
    let i32t = Ty::Int(32, true);
    let i64t = Ty::Int(64, true);
    let wload = |k: &mut Kern, at: &str| Val::new(k.b.emit(format!("memref.load %wg[{at}] : {wg_ty}")), i32t);
    let wstore = |k: &mut Kern, v: &Val, at: &str| k.b.stmt(format!("memref.store {}, %wg[{at}] : {wg_ty}", v.v));
    let barrier = |k: &mut Kern| k.b.stmt("gpu.barrier");
    let tid = k.b.emit("gpu.thread_id x");
    let slice = k.ixc("divui", &tid, ch);
    let lane = k.ixc("remui", &tid, ch);
    zero_fill(k, p, numel(&out_shape), &tid, nt);
    let z32 = s::int_konst(&mut k.b, 0, i32t);
    let first_lane = k.index(ch);
    let lead = k.icmp("ult", &tid, &first_lane);
    k.when(&lead, |k| {
        let at = k.ixc("addi", &lane, sup0);
        wstore(k, &z32, &at);
        Ok(())
    })?;
    barrier(k);
    let chunks = n.div_ceil(ch);
    let zero = k.index(0);
    let total = k.fold_n(a.nb * nc, &[Val::new(zero, Ty::Index)], |k, bc, acc| {
        let start = acc[0].v.clone();
        let b = k.ixc("divui", bc, nc);
        let c = k.ixc("remui", bc, nc);
        let srow = k.ixc("muli", bc, n);
        // the box at sorted position r0 + m of this class, and whether it is a candidate
        let member = |k: &mut Kern, r0: &str, m: &str| member(k, &a, order, &srow, r0, m);
        let zero = k.index(0);
        let kept = k.fold_n(chunks, &[Val::new(zero, Ty::Index)], |k, q, acc| {
            let kept = acc[0].v.clone();
            let r0 = k.ixc("muli", q, ch);
            let (mine, ok) = member(k, &r0, &lane);
            let room = k.icmp("ult", &kept, &a.max_out);
            let test = k.and(&ok, &room);
            // against the kept boxes slice, slice + ch, ...: any overlap marks the candidate
            k.when(&test, |k| {
                let corners = a.geo.corners(k, &b, &mine);
                let stepc = k.index(ch);
                let jv = k.b.fresh("j");
                k.b.stmt(format!("scf.for {jv} = {slice} to {kept} step {stepc} {{"));
                let row = k.ix("addi", &start, &jv);
                let at = k.ixc("muli", &row, 3);
                let at = k.ixc("addi", &at, 2);
                let other = k.load(p, &at);
                let oi = s::to_index(&mut k.b, &other);
                let theirs = a.geo.corners(k, &b, &oi);
                let over = a.geo.overlaps(k, &theirs, &corners);
                k.when(&over, |k| {
                    let one = s::int_konst(&mut k.b, 1, i32t);
                    let at = k.ixc("addi", &lane, sup0);
                    wstore(k, &one, &at);
                    Ok(())
                })?;
                k.b.stmt("}");
                Ok(())
            })?;
            // pair (slice, lane): does earlier member `slice` overlap member `lane`?
            let (other, ok_o) = member(k, &r0, &slice);
            let earlier = k.icmp("ult", &slice, &lane);
            let both = k.and(&ok, &ok_o);
            let both = k.and(&both, &earlier);
            let flag = k.if_else(
                &both,
                &[Ty::Bool],
                |k| {
                    let x = a.geo.corners(k, &b, &other);
                    let y = a.geo.corners(k, &b, &mine);
                    Ok(vec![a.geo.overlaps(k, &x, &y)])
                },
                |k| Ok(vec![konst(&mut k.b, 0.0, Ty::Bool)]),
            )?;
            let f32v = Val::new(k.b.emit(format!("arith.extui {} : i1 to i32", flag[0].v)), i32t);
            let pat = k.ixc("muli", &slice, ch);
            let pat = k.ix("addi", &pat, &lane);
            let pat = k.ixc("addi", &pat, pair0);
            wstore(k, &f32v, &pat);
            barrier(k);
            // member `tid`'s mask of the earlier members overlapping it
            k.when(&lead, |k| {
                let m = k.fold_n(ch, &[z32.clone()], |k, e, acc| {
                    let at = k.ixc("muli", e, ch);
                    let at = k.ix("addi", &at, &tid);
                    let at = k.ixc("addi", &at, pair0);
                    let f = wload(k, &at);
                    let e32 = Val::new(k.b.emit(format!("arith.index_cast {e} : index to i32")), i32t);
                    let bit = Val::new(k.b.emit(format!("arith.shli {}, {} : i32", f.v, e32.v)), i32t);
                    Ok(vec![Val::new(k.b.emit(format!("arith.ori {}, {} : i32", acc[0].v, bit.v)), i32t)])
                })?;
                let at = k.ixc("addi", &tid, mask0);
                wstore(k, &m[0], &at);
                Ok(())
            })?;
            barrier(k);
            // thread 0 settles the chunk in order
            let z = k.index(0);
            let is0 = k.icmp("eq", &tid, &z);
            k.when(&is0, |k| {
                let init = [Val::new(kept.clone(), Ty::Index), z32.clone()];
                let r = k.fold_n(ch, &init, |k, m, acc| {
                    let (cnt, bits) = (acc[0].v.clone(), acc[1].clone());
                    let (box_m, ok_m) = member(k, &r0, m);
                    let at = k.ixc("addi", m, sup0);
                    let sup = wload(k, &at);
                    let at = k.ixc("addi", m, mask0);
                    let mask = wload(k, &at);
                    let zz = s::int_konst(&mut k.b, 0, i32t);
                    let free = Val::new(k.b.emit(format!("arith.cmpi eq, {}, {} : i32", sup.v, zz.v)), Ty::Bool);
                    let hit = Val::new(k.b.emit(format!("arith.andi {}, {} : i32", mask.v, bits.v)), i32t);
                    let clear = Val::new(k.b.emit(format!("arith.cmpi eq, {}, {} : i32", hit.v, zz.v)), Ty::Bool);
                    let room = k.icmp("ult", &cnt, &a.max_out);
                    let keep = k.and(&ok_m, &free);
                    let keep = k.and(&keep, &clear);
                    let keep = k.and(&keep, &room);
                    let cnt2 = keep_row(k, p, &keep, &start, &cnt, [&b, &c, &box_m])?;
                    let m32 = Val::new(k.b.emit(format!("arith.index_cast {m} : index to i32")), i32t);
                    let one32 = s::int_konst(&mut k.b, 1, i32t);
                    let bit = Val::new(k.b.emit(format!("arith.shli {}, {} : i32", one32.v, m32.v)), i32t);
                    let set = Val::new(k.b.emit(format!("arith.ori {}, {} : i32", bits.v, bit.v)), i32t);
                    let bits2 = s::select(&mut k.b, &keep, &set, &bits);
                    Ok(vec![Val::new(cnt2, Ty::Index), bits2])
                })?;
                let c32 = Val::new(k.b.emit(format!("arith.index_cast {} : index to i32", r[0].v)), i32t);
                let at = k.index(cnt_at);
                wstore(k, &c32, &at);
                Ok(())
            })?;
            barrier(k);
            let at = k.index(cnt_at);
            let c32 = wload(k, &at);
            let kept2 = k.b.emit(format!("arith.index_cast {} : i32 to index", c32.v));
            k.when(&lead, |k| {
                let at = k.ixc("addi", &lane, sup0);
                wstore(k, &z32, &at);
                Ok(())
            })?;
            barrier(k);
            Ok(vec![Val::new(kept2, Ty::Index)])
        })?;
        let next = k.ix("addi", &start, &kept[0].v);
        Ok(vec![Val::new(next, Ty::Index)])
    })?;
    let z = k.index(0);
    let is0 = k.icmp("eq", &tid, &z);
    k.when(&is0, |k| {
        let t = s::from_index(&mut k.b, &total[0].v, i64t);
        let z = k.index(0);
        k.store(len, &z, &t);
        Ok(())
    })?;
    Ok(nt)
}

/// ConcatBounded(d0, l0, d1, l1, ...) (interp/bounded.rs): the first `l_j` entries of each part
/// along `axis`, one after another, zeros past their total; and the total. One thread per output
/// entry, which finds its part by walking the lengths.
pub fn concat(k: &mut Kern) -> R<usize> {
    let out_shape = k.out_shape(0)?;
    let ax = k.attrs().int("axis", 0)?;
    let r = out_shape.len();
    let ax = if ax < 0 { ax + r as i64 } else { ax } as usize;
    if ax >= r || k.n.inputs.len() % 2 != 0 {
        return Err("inputs come in (data, length) pairs along an axis of the result".into());
    }
    let (bound, inner) = (out_shape[ax], numel(&out_shape[ax + 1..]));
    let it = Ty::Int(64, true);
    let mut parts = vec![];
    for j in 0..k.n.inputs.len() / 2 {
        let s = k.in_shape(2 * j)?;
        parts.push((k.input(2 * j)?, k.input(2 * j + 1)?, s[ax]));
    }
    let (out, total_p) = (k.output(0)?, k.output(1)?);
    let odt = Ty::of(k.params[out].dtype);
    let n = numel(&out_shape);
    k.for_each(n, |k, i| {
        let o = k.ixc("divui", i, bound * inner);
        let rem = k.ixc("remui", i, bound * inner);
        let pos = k.ixc("divui", &rem, inner);
        let ii = k.ixc("remui", &rem, inner);
        // each part's length within [0, its size], and where it starts
        let mut off = k.index(0);
        for &(d, l, size) in &parts {
            let z = k.index(0);
            let lv = k.load(l, &z);
            let lv = s::cast(&mut k.b, &lv, it);
            let lo = s::int_konst(&mut k.b, 0, it);
            let hi = s::int_konst(&mut k.b, size as i64, it);
            let lv = s::max(&mut k.b, &lv, &lo);
            let lv = s::min(&mut k.b, &lv, &hi);
            let lv = s::to_index(&mut k.b, &lv);
            let end = k.ix("addi", &off, &lv);
            let from = k.icmp("uge", &pos, &off);
            let to = k.icmp("ult", &pos, &end);
            let here = k.and(&from, &to);
            let start = off.clone();
            k.when(&here, |k| {
                let q = k.ix("subi", &pos, &start);
                let at = k.ixc("muli", &o, size * inner);
                let t = k.ixc("muli", &q, inner);
                let at = k.ix("addi", &at, &t);
                let at = k.ix("addi", &at, &ii);
                let v = k.load(d, &at);
                k.store(out, i, &v);
                Ok(())
            })?;
            off = end;
        }
        let past = k.icmp("uge", &pos, &off);
        k.when(&past, |k| {
            let zv = konst(&mut k.b, 0.0, odt);
            k.store(out, i, &zv);
            Ok(())
        })?;
        let z = k.index(0);
        let first = k.icmp("eq", i, &z);
        k.when(&first, |k| {
            let t = s::from_index(&mut k.b, &off, it);
            let z = k.index(0);
            k.store(total_p, &z, &t);
            Ok(())
        })
    })?;
    Ok(n)
}
