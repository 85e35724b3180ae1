//! ScatterElements (and the old Scatter) and ScatterND (interp/movement.rs): one thread per
//! output element starts from the data and applies, in order, every update that lands on it,
//! so repeated indices resolve as the interpreter's sequential loop does (the last write wins,
//! reductions apply in update order). ScatterElements looks only along the axis; ScatterND
//! scans the index tuples.
use super::scalar::{self as s, konst, Ty, Val};
use super::{Kern, R};
use xforge_ir::tensor::numel;
use xforge_ir::Op;

fn axis(a: i64, r: usize) -> R<usize> {
    let v = if a < 0 { a + r as i64 } else { a };
    if v < 0 || v as usize >= r.max(1) {
        return Err(format!("axis {a} is out of range for rank {r}"));
    }
    Ok(v as usize)
}

/// `cur` combined with update `u` by the reduction.
fn reduce(k: &mut Kern, red: &str, cur: &Val, u: &Val) -> R<Val> {
    let b = &mut k.b;
    Ok(match red {
        "none" => u.clone(),
        "add" => s::add(b, cur, u),
        "mul" => s::mul(b, cur, u),
        "max" => s::max(b, cur, u),
        "min" => s::min(b, cur, u),
        r => return Err(format!("unknown reduction '{r}'")),
    })
}

/// The index at `at` of parameter `p`, wrapped into [0, dim) when negative, as an i64.
fn index_at(k: &mut Kern, p: usize, at: &str, dim: usize) -> Val {
    let raw = k.load(p, at);
    let i64t = Ty::Int(64, true);
    let v = s::cast(&mut k.b, &raw, i64t);
    let z = konst(&mut k.b, 0.0, i64t);
    let d = konst(&mut k.b, dim as f64, i64t);
    let neg = s::cmp(&mut k.b, "lt", &v, &z);
    let w = s::add(&mut k.b, &v, &d);
    s::select(&mut k.b, &neg, &w, &v)
}

pub fn scatter(k: &mut Kern) -> R<usize> {
    let ds = k.in_shape(0)?;
    let is = k.in_shape(1)?;
    let us = k.in_shape(2)?;
    let red = k.attrs().string("reduction", "none")?;
    let ty = Ty::of(k.in_dtype(0)?);
    let (x, ind, upd, out) = (k.input(0)?, k.input(1)?, k.input(2)?, k.output(0)?);
    let n = numel(&ds);
    let i64t = Ty::Int(64, true);
    if k.n.op == Op::ScatterND {
        let last = *is.last().ok_or("indices must have rank at least 1")?;
        let rows = numel(&is[..is.len() - 1]);
        let chunk: Vec<usize> = ds[last..].to_vec();
        let cn = numel(&chunk);
        k.for_each(n, |k, i| {
            let dc = k.coords(i, &ds);
            let v0 = k.load(x, i);
            // the element's place inside a chunk
            let within = k.flat(&dc[last..], &chunk);
            let v = k.fold_n(rows, &[v0], |k, r, acc| {
                let mut hit = konst(&mut k.b, 1.0, Ty::Bool);
                let row = k.ixc("muli", r, last);
                for j in 0..last {
                    let at = k.ixc("addi", &row, j);
                    let idx = index_at(k, ind, &at, ds[j]);
                    let want = s::from_index(&mut k.b, &dc[j], i64t);
                    let eq = s::cmp(&mut k.b, "eq", &idx, &want);
                    hit = k.and(&hit, &eq);
                }
                let cur = acc[0].clone();
                k.if_else(
                    &hit,
                    &[ty],
                    |k| {
                        let base = k.ixc("muli", r, cn);
                        let at = k.ix("addi", &base, &within);
                        let u = k.load(upd, &at);
                        Ok(vec![reduce(k, &red, &cur, &u)?])
                    },
                    |_| Ok(vec![cur.clone()]),
                )
            })?;
            k.store(out, i, &v[0]);
            Ok(())
        })?;
        return Ok(n);
    }
    if is != us {
        return Err("indices and updates must have one shape".into());
    }
    let ax = axis(k.attrs().int("axis", 0)?, ds.len())?;
    k.for_each(n, |k, i| {
        let dc = k.coords(i, &ds);
        let v0 = k.load(x, i);
        // only updates at this element's coordinates off the axis can land here
        let mut reach = konst(&mut k.b, 1.0, Ty::Bool);
        for d in 0..ds.len() {
            if d != ax {
                let lim = k.index(us[d]);
                let ok = k.icmp("ult", &dc[d], &lim);
                reach = k.and(&reach, &ok);
            }
        }
        let v = k.if_else(
            &reach,
            &[ty],
            |k| {
                k.fold_n(us[ax], &[v0.clone()], |k, j, acc| {
                    let mut uc = dc.clone();
                    uc[ax] = j.to_string();
                    let at = k.flat(&uc, &us);
                    let idx = index_at(k, ind, &at, ds[ax]);
                    let want = s::from_index(&mut k.b, &dc[ax], i64t);
                    let hit = s::cmp(&mut k.b, "eq", &idx, &want);
                    let cur = acc[0].clone();
                    k.if_else(
                        &hit,
                        &[ty],
                        |k| {
                            let u = k.load(upd, &at);
                            Ok(vec![reduce(k, &red, &cur, &u)?])
                        },
                        |_| Ok(vec![cur.clone()]),
                    )
                })
            },
            |_| Ok(vec![v0.clone()]),
        )?;
        k.store(out, i, &v[0]);
        Ok(())
    })?;
    Ok(n)
}
