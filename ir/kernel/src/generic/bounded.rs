//! `Bounded` (interp/bounded.rs): NonZero, Compress and NonMaxSuppression writing their result
//! padded with zeros to the static bound, and the valid length. One thread walks the input in
//! order (results come out in the interpreter's order); NonMaxSuppression visits each class's
//! boxes by falling score without scratch memory: each step scans for the best box ranked below
//! the last one, O(V²) a class for V valid boxes — plain, as generic kernels are (one thread:
//! ssdlite320 with every score kept, V = 27000, takes 37 s on an H200; a parallel NMS is due).
use super::scalar::{self as s, konst, Ty, Val};
use super::{Kern, R};
use xforge_ir::tensor::numel;

pub fn bounded(k: &mut Kern) -> R<usize> {
    let a = k.attrs();
    let op = a.string("bounded_op", "")?;
    let bound = a.int("bound", 0)? as usize;
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

/// Coordinates of each non-zero element, column by column; returns the count (an index).
fn nonzero(k: &mut Kern, p: usize, bound: usize) -> R<String> {
    let xs = k.in_shape(0)?;
    let x = k.input(0)?;
    // padded input: entries at or past the valid length (input 1) along `valid_axis` are left out
    let limit = match k.in_val(1) {
        Some(_) => {
            let ax = k.attrs().int("valid_axis", 0)? as usize;
            let size = *xs.get(ax).ok_or("valid_axis is past the input's rank")?;
            let pl = k.input(1)?;
            let z = k.index(0);
            let l = k.load(pl, &z);
            let it = Ty::Int(64, true);
            let l = s::cast(&mut k.b, &l, it);
            let lo = s::int_konst(&mut k.b, 0, it);
            let hi = s::int_konst(&mut k.b, size as i64, it);
            let l = s::max(&mut k.b, &l, &lo);
            let l = s::min(&mut k.b, &l, &hi);
            Some((ax, s::to_index(&mut k.b, &l)))
        }
        None => None,
    };
    let zero = k.index(0);
    let n = numel(&xs);
    let r = k.fold_n(n, &[Val::new(zero, Ty::Index)], |k, i, acc| {
        let v = k.load(x, i);
        let mut nz = s::cast(&mut k.b, &v, Ty::Bool);
        if let Some((ax, l)) = &limit {
            let c = k.coords(i, &xs);
            let inside = k.icmp("ult", &c[*ax], l);
            nz = k.and(&nz, &inside);
        }
        let cnt = acc[0].v.clone();
        k.when(&nz, |k| {
            let c = k.coords(i, &xs);
            for (d, cd) in c.iter().enumerate() {
                let row = k.index(d * bound);
                let at = k.ix("addi", &row, &cnt);
                let cv = s::from_index(&mut k.b, cd, Ty::Int(64, true));
                k.store(p, &at, &cv);
            }
            Ok(())
        })?;
        let one = k.index(1);
        let inc = k.ix("addi", &cnt, &one);
        Ok(vec![Val::new(k.isel(&nz, &inc, &cnt), Ty::Index)])
    })?;
    Ok(r[0].v.clone())
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

/// Greedy non-maximum suppression per (batch, class), rows (batch, class, box) in order.
fn nms(k: &mut Kern, p: usize) -> R<String> {
    let bs = k.in_shape(0)?;
    let ss = k.in_shape(1)?;
    let (nb, n, nc) = (bs[0], bs[1], ss[1]);
    let center = k.attrs().int("center_point_box", 0)? != 0;
    let ct = if k.in_dtype(0)? == xforge_ir::DType::F64 { Ty::F64 } else { Ty::F32 };
    let (boxes, scores) = (k.input(0)?, k.input(1)?);
    let i64t = Ty::Int(64, true);
    // the per-class limit: at most N, and 0 when absent
    let max_out = match k.in_val(2) {
        Some(_) if k.in_shape(2).map(|s| numel(&s) > 0).unwrap_or(false) => {
            let pi = k.input(2)?;
            let z = k.index(0);
            let v = k.load(pi, &z);
            let v = s::cast(&mut k.b, &v, i64t);
            let zero = konst(&mut k.b, 0.0, i64t);
            let v = s::max(&mut k.b, &v, &zero);
            let nv = konst(&mut k.b, n as f64, i64t);
            let v = s::min(&mut k.b, &v, &nv);
            s::to_index(&mut k.b, &v)
        }
        _ => k.index(0),
    };
    // padded boxes: only the first `valid` (input 5) take part
    let valid = match k.in_val(5) {
        Some(_) => {
            let pi = k.input(5)?;
            let z = k.index(0);
            let v = k.load(pi, &z);
            let v = s::cast(&mut k.b, &v, i64t);
            let zero = konst(&mut k.b, 0.0, i64t);
            let v = s::max(&mut k.b, &v, &zero);
            let nv = konst(&mut k.b, n as f64, i64t);
            let v = s::min(&mut k.b, &v, &nv);
            s::to_index(&mut k.b, &v)
        }
        None => k.index(n),
    };
    let iou_th = scalar_in(k, 3, ct, Some(0.0))?.expect("a default");
    let score_th = scalar_in(k, 4, ct, None)?;
    // corners (y1, x1, y2, x2) of box i of batch b
    let corners = |k: &mut Kern, b: &str, i: &str| -> Vec<Val> {
        let base = k.ixc("muli", b, n);
        let base = k.ix("addi", &base, i);
        let base = k.ixc("muli", &base, 4);
        let v: Vec<Val> = (0..4)
            .map(|j| {
                let at = k.ixc("addi", &base, j);
                let x = k.load(boxes, &at);
                s::cast(&mut k.b, &x, ct)
            })
            .collect();
        let bb = &mut k.b;
        if center {
            let two = konst(bb, 2.0, ct);
            let hw = s::div(bb, &v[2], &two);
            let hh = s::div(bb, &v[3], &two);
            vec![s::sub(bb, &v[0], &hw), s::sub(bb, &v[1], &hh), s::add(bb, &v[0], &hw), s::add(bb, &v[1], &hh)]
        } else {
            vec![s::min(bb, &v[1], &v[3]), s::min(bb, &v[0], &v[2]), s::max(bb, &v[1], &v[3]), s::max(bb, &v[0], &v[2])]
        }
    };
    let iou = |k: &mut Kern, a: &[Val], c: &[Val]| -> Val {
        let bb = &mut k.b;
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
        s::select(bb, &pos, &q, &z)
    };
    let zero = k.index(0);
    let total = k.fold_n(nb * nc, &[Val::new(zero, Ty::Index)], |k, bc, acc| {
        let start = acc[0].v.clone();
        let b = k.ixc("divui", bc, nc);
        let c = k.ixc("remui", bc, nc);
        let srow = k.ixc("muli", bc, n);
        let score = |k: &mut Kern, i: &str| -> Val {
            let at = k.ix("addi", &srow, i);
            let v = k.load(scores, &at);
            s::cast(&mut k.b, &v, ct)
        };
        let inf = konst(&mut k.b, f64::INFINITY, ct);
        let z = k.index(0);
        let none = k.index(n);
        // carried: kept, last score, last index (n before the first), finished
        let fin = konst(&mut k.b, 0.0, Ty::Bool);
        let init = [Val::new(z.clone(), Ty::Index), inf, Val::new(none.clone(), Ty::Index), fin];
        // one step takes one box (kept or not) or finds none left: `valid` steps are enough, and
        // each scans the valid boxes only (O(valid²), not O(N²), for a padded input)
        let z0 = k.index(0);
        let r = k.fold(&z0, &valid, &init, |k, _, st| {
            let (kept, last_s, last_i) = (st[0].v.clone(), st[1].clone(), st[2].v.clone());
            // the best box ranked after (last_s, last_i): lower score, or equal score at a higher index
            let ninf = konst(&mut k.b, f64::NEG_INFINITY, ct);
            let z = k.index(0);
            let nn = k.index(n);
            let found = konst(&mut k.b, 0.0, Ty::Bool);
            let z1 = k.index(0);
            let best = k.fold(&z1, &valid, &[ninf, Val::new(z, Ty::Index), found], |k, i, acc| {
                let v = score(k, i);
                let lower = s::cmp(&mut k.b, "lt", &v, &last_s);
                let eq = s::cmp(&mut k.b, "eq", &v, &last_s);
                let after = k.icmp("ugt", i, &last_i);
                // before the first step last_i = n: equal scores come from the first box on
                let first = k.icmp("eq", &last_i, &nn);
                let after = Val::new(k.b.emit(format!("arith.ori {}, {} : i1", after.v, first.v)), Ty::Bool);
                let tie = k.and(&eq, &after);
                let below = Val::new(k.b.emit(format!("arith.ori {}, {} : i1", lower.v, tie.v)), Ty::Bool);
                let inside = k.icmp("ult", i, &valid);
                let mut ok = k.and(&below, &inside);
                if let Some(th) = &score_th {
                    let over = s::cmp(&mut k.b, "gt", &v, th);
                    ok = k.and(&ok, &over);
                }
                // better than the best so far: higher score, or the first seen at that score
                let higher = s::cmp(&mut k.b, "gt", &v, &acc[0]);
                let nf = {
                    let t = konst(&mut k.b, 1.0, Ty::Bool);
                    Val::new(k.b.emit(format!("arith.xori {}, {} : i1", acc[2].v, t.v)), Ty::Bool)
                };
                let better = Val::new(k.b.emit(format!("arith.ori {}, {} : i1", higher.v, nf.v)), Ty::Bool);
                let take = k.and(&ok, &better);
                let s_ = s::select(&mut k.b, &take, &v, &acc[0]);
                let i_ = k.isel(&take, i, &acc[1].v);
                let f_ = Val::new(k.b.emit(format!("arith.ori {}, {} : i1", acc[2].v, take.v)), Ty::Bool);
                Ok(vec![s_, Val::new(i_, Ty::Index), f_])
            })?;
            let (bs_, bi, bf) = (best[0].clone(), best[1].v.clone(), best[2].clone());
            let room = k.icmp("ult", &kept, &max_out);
            let not_fin = {
                let t = konst(&mut k.b, 1.0, Ty::Bool);
                Val::new(k.b.emit(format!("arith.xori {}, {} : i1", st[3].v, t.v)), Ty::Bool)
            };
            let go = k.and(&bf, &room);
            let go = k.and(&go, &not_fin);
            // suppressed by a kept box of this class?
            let mine = corners(k, &b, &bi);
            let z = k.index(0);
            let no = konst(&mut k.b, 0.0, Ty::Bool);
            let sup = k.fold(&z, &kept, &[no], |k, j, acc| {
                let row = k.ix("addi", &start, j);
                let at = k.ixc("muli", &row, 3);
                let at = k.ixc("addi", &at, 2);
                let other = k.load(p, &at);
                let oi = s::to_index(&mut k.b, &other);
                let theirs = corners(k, &b, &oi);
                let v = iou(k, &theirs, &mine);
                let over = s::cmp(&mut k.b, "gt", &v, &iou_th);
                Ok(vec![Val::new(k.b.emit(format!("arith.ori {}, {} : i1", acc[0].v, over.v)), Ty::Bool)])
            })?;
            let t = konst(&mut k.b, 1.0, Ty::Bool);
            let keep_it = Val::new(k.b.emit(format!("arith.xori {}, {} : i1", sup[0].v, t.v)), Ty::Bool);
            let keep_it = k.and(&go, &keep_it);
            k.when(&keep_it, |k| {
                let row = k.ix("addi", &start, &kept);
                let at = k.ixc("muli", &row, 3);
                for (j, v) in [&b, &c, &bi].into_iter().enumerate() {
                    let a = k.ixc("addi", &at, j);
                    let x = s::from_index(&mut k.b, v, i64t);
                    k.store(p, &a, &x);
                }
                Ok(())
            })?;
            let one = k.index(1);
            let inc = k.ix("addi", &kept, &one);
            let kept2 = k.isel(&keep_it, &inc, &kept);
            // done once no box is left or the class is full
            let t = konst(&mut k.b, 1.0, Ty::Bool);
            let nf = Val::new(k.b.emit(format!("arith.xori {}, {} : i1", bf.v, t.v)), Ty::Bool);
            let full = {
                let f = k.icmp("uge", &kept2, &max_out);
                Val::new(k.b.emit(format!("arith.ori {}, {} : i1", f.v, nf.v)), Ty::Bool)
            };
            let fin = Val::new(k.b.emit(format!("arith.ori {}, {} : i1", st[3].v, full.v)), Ty::Bool);
            let ls = s::select(&mut k.b, &go, &bs_, &last_s);
            let li = k.isel(&go, &bi, &last_i);
            Ok(vec![Val::new(kept2, Ty::Index), ls, Val::new(li, Ty::Index), fin])
        })?;
        let next = k.ix("addi", &start, &r[0].v);
        Ok(vec![Val::new(next, Ty::Index)])
    })?;
    Ok(total[0].v.clone())
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
