//! Windowed ops of any rank (interp/conv.rs, interp/pool.rs): Conv (groups, dilations, any
//! padding, channels-first or -last), ConvTranspose and the pools, one thread per output
//! element looping over its window. A window position p = o·stride + k·dilation − pad is
//! inside the input when p (as an index, which wraps below zero) is below the dim.
use super::scalar::{self as s, konst, Ty, Val};
use super::{Kern, R};
use xforge_ir::interp::{self, Window};
use xforge_ir::tensor::{numel, strides};
use xforge_ir::Op;

/// Physical offset of logical (N, C, spatial...) coordinates in a channels-first or -last
/// buffer of logical shape `shape`.
fn offset(k: &mut Kern, c: &[String], shape: &[usize], nhwc: bool) -> String {
    if !nhwc {
        return k.flat(c, shape);
    }
    let mut phys: Vec<String> = vec![c[0].clone()];
    phys.extend_from_slice(&c[2..]);
    phys.push(c[1].clone());
    let mut ps = vec![shape[0]];
    ps.extend_from_slice(&shape[2..]);
    ps.push(shape[1]);
    k.flat(&phys, &ps)
}

/// A logical NCHW shape from a channels-last one.
fn logical(shape: &[usize]) -> Vec<usize> {
    let mut v = vec![shape[0], shape[shape.len() - 1]];
    v.extend_from_slice(&shape[1..shape.len() - 1]);
    v
}

pub fn conv(k: &mut Kern) -> R<usize> {
    let nhwc = k.n.op == Op::ConvNhwc;
    let (xs0, ws) = (k.in_shape(0)?, k.in_shape(1)?);
    if xs0.len() < 3 || ws.len() != xs0.len() {
        return Err("X and W must both be (N, C, spatial...)".into());
    }
    let xs = if nhwc { logical(&xs0) } else { xs0 };
    let group = k.attrs().int("group", 1)?.max(1) as usize;
    let (c, m) = (xs[1], ws[0]);
    if c % group != 0 || m % group != 0 || ws[1] * group != c {
        return Err(format!("channels: X has {c}, W {ws:?}, group {group} do not agree"));
    }
    let win = Window::new(&k.attrs(), &xs[2..], ws[2..].to_vec(), false)?;
    let (cg, mg) = (c / group, m / group);
    let mut os = vec![xs[0], m];
    os.extend(&win.out);
    let nsp = xs.len() - 2;
    let kn = numel(&win.kernel);
    let ct = Ty::of(k.out_dtype(0)?);
    let (x, w, out) = (k.input(0)?, k.input(1)?, k.output(0)?);
    let bias = if k.in_val(2).is_some() { Some(k.input(2)?) } else { None };
    let total = numel(&os);
    k.for_each(total, |k, i| {
        // output coordinates in logical order
        let phys_os = if nhwc {
            let mut v = vec![os[0]];
            v.extend_from_slice(&os[2..]);
            v.push(os[1]);
            v
        } else {
            os.clone()
        };
        let pc = k.coords(i, &phys_os);
        let oc: Vec<String> = if nhwc {
            let mut v = vec![pc[0].clone(), pc[pc.len() - 1].clone()];
            v.extend_from_slice(&pc[1..pc.len() - 1]);
            v
        } else {
            pc
        };
        let g = k.ixc("divui", &oc[1], mg);
        let c0 = k.ixc("muli", &g, cg);
        let init = konst(&mut k.b, 0.0, ct);
        let acc = k.fold_n(cg * kn, &[init], |k, q, acc| {
            let ci = k.ixc("divui", q, kn);
            let kq = k.ixc("remui", q, kn);
            let kc = k.coords(&kq, &win.kernel);
            let mut inside = konst(&mut k.b, 1.0, Ty::Bool);
            let ch = k.ix("addi", &c0, &ci);
            let mut xc = vec![oc[0].clone(), ch];
            for d in 0..nsp {
                let a = k.ixc("muli", &oc[2 + d], win.strides[d]);
                let b = k.ixc("muli", &kc[d], win.dilations[d]);
                let p = k.ix("addi", &a, &b);
                let p = k.ixc("subi", &p, win.pad_begin[d]);
                let lim = k.index(xs[2 + d]);
                let ok = k.icmp("ult", &p, &lim);
                inside = k.and(&inside, &ok);
                xc.push(p);
            }
            let v = k.if_else(
                &inside,
                &[ct],
                |k| {
                    let at = offset(k, &xc, &xs, nhwc);
                    let xv = k.load(x, &at);
                    let xv = s::cast(&mut k.b, &xv, ct);
                    // W[m, ci, kernel...]
                    let wm = k.ixc("muli", &oc[1], cg * kn);
                    let wc = k.ixc("muli", &ci, kn);
                    let wa = k.ix("addi", &wm, &wc);
                    let wa = k.ix("addi", &wa, &kq);
                    let wv = k.load(w, &wa);
                    let wv = s::cast(&mut k.b, &wv, ct);
                    let p = s::mul(&mut k.b, &xv, &wv);
                    Ok(vec![s::add(&mut k.b, &acc[0], &p)])
                },
                |_| Ok(vec![acc[0].clone()]),
            )?;
            Ok(v)
        })?;
        let mut v = acc[0].clone();
        if let Some(bp) = bias {
            let bv = k.load(bp, &oc[1]);
            let bv = s::cast(&mut k.b, &bv, ct);
            v = s::add(&mut k.b, &v, &bv);
        }
        k.store(out, i, &v);
        Ok(())
    })?;
    Ok(total)
}

pub fn conv_transpose(k: &mut Kern) -> R<usize> {
    let (xs, ws) = (k.in_shape(0)?, k.in_shape(1)?);
    let tw = interp::transposed_window(&k.attrs(), &xs, &ws)?;
    let nsp = xs.len() - 2;
    let group = tw.group;
    let c = xs[1];
    let (cg, mg) = (c / group, ws[1]);
    let m = mg * group;
    let kernel: Vec<usize> = ws[2..].to_vec();
    let kn = numel(&kernel);
    let mut os = vec![xs[0], m];
    os.extend(&tw.out);
    let ct = Ty::of(k.out_dtype(0)?);
    let (x, w, out) = (k.input(0)?, k.input(1)?, k.output(0)?);
    let bias = if k.in_val(2).is_some() { Some(k.input(2)?) } else { None };
    let total = numel(&os);
    let i64t = Ty::Int(64, true);
    k.for_each(total, |k, i| {
        let oc = k.coords(i, &os);
        let g = k.ixc("divui", &oc[1], mg);
        let mo = k.ixc("remui", &oc[1], mg);
        let c0 = k.ixc("muli", &g, cg);
        let init = konst(&mut k.b, 0.0, ct);
        let acc = k.fold_n(cg * kn, &[init], |k, q, acc| {
            let ci = k.ixc("divui", q, kn);
            let kq = k.ixc("remui", q, kn);
            let kc = k.coords(&kq, &kernel);
            let ch = k.ix("addi", &c0, &ci);
            let mut ok = konst(&mut k.b, 1.0, Ty::Bool);
            let mut xc = vec![oc[0].clone(), ch.clone()];
            for d in 0..nsp {
                // t = o + pad − k·dil must be a non-negative multiple of the stride below in·stride
                let o = s::from_index(&mut k.b, &oc[2 + d], i64t);
                let kd = s::from_index(&mut k.b, &kc[d], i64t);
                let (pad, dil, st) = (
                    konst(&mut k.b, tw.pad_begin[d] as f64, i64t),
                    konst(&mut k.b, tw.dilations[d] as f64, i64t),
                    konst(&mut k.b, tw.strides[d] as f64, i64t),
                );
                let t = s::add(&mut k.b, &o, &pad);
                let kdl = s::mul(&mut k.b, &kd, &dil);
                let t = s::sub(&mut k.b, &t, &kdl);
                let z = konst(&mut k.b, 0.0, i64t);
                let nonneg = s::cmp(&mut k.b, "ge", &t, &z);
                let r = Val::new(k.b.emit(format!("arith.remsi {}, {} : i64", t.v, st.v)), i64t);
                let exact = s::cmp(&mut k.b, "eq", &r, &z);
                let ip = s::div(&mut k.b, &t, &st);
                let lim = konst(&mut k.b, xs[2 + d] as f64, i64t);
                let below = s::cmp(&mut k.b, "lt", &ip, &lim);
                for c in [nonneg, exact, below] {
                    ok = k.and(&ok, &c);
                }
                let ipc = s::max(&mut k.b, &ip, &z);
                xc.push(s::to_index(&mut k.b, &ipc));
            }
            let v = k.if_else(
                &ok,
                &[ct],
                |k| {
                    let at = k.flat(&xc, &xs);
                    let xv = k.load(x, &at);
                    let xv = s::cast(&mut k.b, &xv, ct);
                    // W[ch, mo, kernel...]
                    let wa = k.ixc("muli", &ch, mg * kn);
                    let wm = k.ixc("muli", &mo, kn);
                    let wa = k.ix("addi", &wa, &wm);
                    let wa = k.ix("addi", &wa, &kq);
                    let wv = k.load(w, &wa);
                    let wv = s::cast(&mut k.b, &wv, ct);
                    let p = s::mul(&mut k.b, &xv, &wv);
                    Ok(vec![s::add(&mut k.b, &acc[0], &p)])
                },
                |_| Ok(vec![acc[0].clone()]),
            )?;
            Ok(v)
        })?;
        let mut v = acc[0].clone();
        if let Some(bp) = bias {
            let bv = k.load(bp, &oc[1]);
            let bv = s::cast(&mut k.b, &bv, ct);
            v = s::add(&mut k.b, &v, &bv);
        }
        k.store(out, i, &v);
        Ok(())
    })?;
    Ok(total)
}

pub fn pool(k: &mut Kern) -> R<usize> {
    let op = k.n.op;
    let xs = k.in_shape(0)?;
    if xs.len() < 3 {
        return Err("input must be (N, C, spatial...)".into());
    }
    let sp = xs[2..].to_vec();
    let nsp = sp.len();
    let global = matches!(op, Op::GlobalAveragePool | Op::GlobalMaxPool);
    let a = k.attrs();
    let win = if global {
        Window {
            kernel: sp.clone(),
            strides: vec![1; nsp],
            dilations: vec![1; nsp],
            pad_begin: vec![0; nsp],
            pad_end: vec![0; nsp],
            out: vec![1; nsp],
        }
    } else {
        let kernel: Vec<usize> = a
            .ints_opt("kernel_shape")?
            .ok_or("missing attribute 'kernel_shape'")?
            .iter()
            .map(|&v| v as usize)
            .collect();
        Window::new(&a, &sp, kernel, a.int("ceil_mode", 0)? != 0)?
    };
    let include_pad = a.int("count_include_pad", 0)? != 0;
    let p = a.int("p", 2)? as f64;
    let is_max = matches!(op, Op::MaxPool | Op::GlobalMaxPool);
    let column_major = a.int("storage_order", 0)? != 0;
    let dt = k.in_dtype(0)?;
    // max keeps the input's type; the others average or take powers in floats
    let ct = if is_max {
        Ty::of(dt)
    } else if dt == xforge_ir::DType::F64 {
        Ty::F64
    } else {
        Ty::F32
    };
    let mut os = vec![xs[0], xs[1]];
    os.extend(&win.out);
    let in_n = numel(&sp);
    let in_st = strides(&sp);
    let kn = numel(&win.kernel);
    let (x, out) = (k.input(0)?, k.output(0)?);
    let idx = if op == Op::MaxPool && k.out_val(1).is_some() { Some(k.output(1)?) } else { None };
    let total = numel(&os);
    k.for_each(total, |k, i| {
        let oc = k.coords(i, &os);
        let o_n = numel(&win.out);
        let plane = k.ixc("divui", i, o_n);
        let base = k.ixc("muli", &plane, in_n);
        let init = if is_max { super::reduce::extreme(&mut k.b, ct, false) } else { konst(&mut k.b, 0.0, ct) };
        let zero = k.index(0);
        let z = k.index(0);
        let none = konst(&mut k.b, 0.0, Ty::Bool);
        // carried: accumulator, count inside, count inside the padded input, best offset, found
        let carried =
            [init, Val::new(zero.clone(), Ty::Index), Val::new(z, Ty::Index), Val::new(zero, Ty::Index), none];
        let res = k.fold_n(kn, &carried, |k, q, acc| {
            let kc = k.coords(q, &win.kernel);
            let mut inside = konst(&mut k.b, 1.0, Ty::Bool);
            let mut padded = konst(&mut k.b, 1.0, Ty::Bool);
            let mut off = k.index(0);
            for d in 0..nsp {
                let a = k.ixc("muli", &oc[2 + d], win.strides[d]);
                let b = k.ixc("muli", &kc[d], win.dilations[d]);
                let pp = k.ix("addi", &a, &b);
                let p = k.ixc("subi", &pp, win.pad_begin[d]);
                let lim = k.index(sp[d]);
                let ok = k.icmp("ult", &p, &lim);
                inside = k.and(&inside, &ok);
                // inside the padded input: pp < pad_begin + dim + pad_end
                let plim = k.index(win.pad_begin[d] + sp[d] + win.pad_end[d]);
                let pok = k.icmp("ult", &pp, &plim);
                padded = k.and(&padded, &pok);
                let t = k.ixc("muli", &p, in_st[d]);
                off = k.ix("addi", &off, &t);
            }
            let one = k.index(1);
            let pcnt = k.ix("addi", &acc[2].v, &one);
            let pcnt = k.isel(&padded, &pcnt, &acc[2].v);
            let tys: Vec<Ty> = acc.iter().map(|v| v.ty).collect();
            let acc0 = acc.to_vec();
            let mut r = k.if_else(
                &inside,
                &tys,
                |k| {
                    let at = k.ix("addi", &base, &off);
                    let v = k.load(x, &at);
                    let v = s::cast(&mut k.b, &v, ct);
                    let one = k.index(1);
                    let cnt = k.ix("addi", &acc0[1].v, &one);
                    let mut next = acc0.clone();
                    next[1] = Val::new(cnt, Ty::Index);
                    if is_max {
                        // the first maximum wins (strictly greater replaces)
                        let gt = s::cmp(&mut k.b, "gt", &v, &acc0[0]);
                        let nf = {
                            let t = konst(&mut k.b, 1.0, Ty::Bool);
                            Val::new(k.b.emit(format!("arith.xori {}, {} : i1", acc0[4].v, t.v)), Ty::Bool)
                        };
                        let take = Val::new(k.b.emit(format!("arith.ori {}, {} : i1", gt.v, nf.v)), Ty::Bool);
                        next[0] = s::select(&mut k.b, &take, &v, &acc0[0]);
                        next[3] = Val::new(k.isel(&take, &off, &acc0[3].v), Ty::Index);
                        next[4] = konst(&mut k.b, 1.0, Ty::Bool);
                    } else if op == Op::LpPool {
                        let av = s::abs(&mut k.b, &v);
                        let pv = konst(&mut k.b, p, ct);
                        let t = Val::new(k.b.emit(format!("math.powf {}, {} : {}", av.v, pv.v, ct.mlir())), ct);
                        next[0] = s::add(&mut k.b, &acc0[0], &t);
                    } else {
                        next[0] = s::add(&mut k.b, &acc0[0], &v);
                    }
                    Ok(next)
                },
                |_| Ok(acc0.clone()),
            )?;
            r[2] = Val::new(pcnt, Ty::Index);
            Ok(r)
        })?;
        let v = match op {
            Op::AveragePool | Op::GlobalAveragePool => {
                let cnt = if include_pad { &res[2] } else { &res[1] };
                let one = k.index(1);
                let c1 = k.b.emit(format!("arith.maxui {}, {one} : index", cnt.v));
                let cf = s::from_index(&mut k.b, &c1, ct);
                s::div(&mut k.b, &res[0], &cf)
            }
            Op::LpPool => {
                let inv = konst(&mut k.b, 1.0 / p, ct);
                Val::new(k.b.emit(format!("math.powf {}, {} : {}", res[0].v, inv.v, ct.mlir())), ct)
            }
            _ => res[0].clone(),
        };
        k.store(out, i, &v);
        if let Some(ip) = idx {
            let best = if column_major {
                // column-major position within the plane
                let c = k.coords(&res[3].v, &sp);
                let mut acc = k.index(0);
                let mut mul = 1;
                for d in 0..nsp {
                    let t = k.ixc("muli", &c[d], mul);
                    acc = k.ix("addi", &acc, &t);
                    mul *= sp[d];
                }
                acc
            } else {
                res[3].v.clone()
            };
            let at = k.ix("addi", &base, &best);
            let bv = s::from_index(&mut k.b, &at, Ty::Int(64, true));
            k.store(ip, i, &bv);
        }
        Ok(())
    })?;
    Ok(total)
}

/// RoiAlign: one thread per output element averages (or takes the largest of) bilinear
/// samples on a grid over its bin; the grid size may depend on the RoI (sampling_ratio 0).
pub fn roi_align(k: &mut Kern) -> R<usize> {
    let xs = k.in_shape(0)?;
    if xs.len() != 4 {
        return Err("X must be 4-D".into());
    }
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let rois = k.in_shape(1)?;
    let nr = rois[0];
    let a = k.attrs();
    let (oh, ow) = (a.int("output_height", 1)? as usize, a.int("output_width", 1)? as usize);
    let ratio = a.int("sampling_ratio", 0)?;
    let scale = a.float("spatial_scale", 1.0)? as f64;
    let is_max = a.string("mode", "avg")? == "max";
    let default_mode = if k.opset() >= 16 { "half_pixel" } else { "output_half_pixel" };
    let offset = if a.string("coordinate_transformation_mode", default_mode)? == "half_pixel" { 0.5 } else { 0.0 };
    let ct = if k.in_dtype(0)? == xforge_ir::DType::F64 { Ty::F64 } else { Ty::F32 };
    let (x, rp, bp, out) = (k.input(0)?, k.input(1)?, k.input(2)?, k.output(0)?);
    let total = nr * c * oh * ow;
    let i64t = Ty::Int(64, true);
    k.for_each(total, |k, i| {
        let oc = k.coords(i, &[nr, c, oh, ow]);
        let (r, ch, ph, pw) = (&oc[0], &oc[1], &oc[2], &oc[3]);
        let bi = k.load(bp, r);
        let bi = s::cast(&mut k.b, &bi, i64t);
        let (z, top) = (konst(&mut k.b, 0.0, i64t), konst(&mut k.b, (n - 1) as f64, i64t));
        let bi = s::max(&mut k.b, &bi, &z);
        let bi = s::min(&mut k.b, &bi, &top);
        let b = s::to_index(&mut k.b, &bi);
        let t = k.ixc("muli", &b, c);
        let t = k.ix("addi", &t, ch);
        let plane = k.ixc("muli", &t, h * w);
        let base = k.ixc("muli", r, 4);
        let mut corner = vec![];
        for j in 0..4 {
            let at = k.ixc("addi", &base, j);
            let v = k.load(rp, &at);
            let v = s::cast(&mut k.b, &v, ct);
            let sc = konst(&mut k.b, scale, ct);
            let off = konst(&mut k.b, offset, ct);
            let v = s::mul(&mut k.b, &v, &sc);
            corner.push(s::sub(&mut k.b, &v, &off));
        }
        let (x1, y1) = (corner[0].clone(), corner[1].clone());
        let mut rw = s::sub(&mut k.b, &corner[2], &x1);
        let mut rh = s::sub(&mut k.b, &corner[3], &y1);
        if offset == 0.0 {
            let one = konst(&mut k.b, 1.0, ct);
            rw = s::max(&mut k.b, &rw, &one);
            rh = s::max(&mut k.b, &rh, &one);
        }
        let (ohv, owv) = (konst(&mut k.b, oh as f64, ct), konst(&mut k.b, ow as f64, ct));
        let bh = s::div(&mut k.b, &rh, &ohv);
        let bw = s::div(&mut k.b, &rw, &owv);
        // samples per bin along each axis, as indices (at least 0)
        let grid = |k: &mut Kern, bin: &Val| -> String {
            if ratio > 0 {
                return k.index(ratio as usize);
            }
            let c = s::math(&mut k.b, "ceil", bin);
            let ci = s::cast(&mut k.b, &c, i64t);
            let z = konst(&mut k.b, 0.0, i64t);
            let ci = s::max(&mut k.b, &ci, &z);
            s::to_index(&mut k.b, &ci)
        };
        let (gh, gw) = (grid(k, &bh), grid(k, &bw));
        let ghf = s::from_index(&mut k.b, &gh, ct);
        let gwf = s::from_index(&mut k.b, &gw, ct);
        let phf = s::from_index(&mut k.b, ph, ct);
        let pwf = s::from_index(&mut k.b, pw, ct);
        let t = s::mul(&mut k.b, &phf, &bh);
        let ystart = s::add(&mut k.b, &y1, &t);
        let t = s::mul(&mut k.b, &pwf, &bw);
        let xstart = s::add(&mut k.b, &x1, &t);
        let ystep = s::div(&mut k.b, &bh, &ghf);
        let xstep = s::div(&mut k.b, &bw, &gwf);
        let init = konst(&mut k.b, if is_max { f64::NEG_INFINITY } else { 0.0 }, ct);
        let zero = k.index(0);
        let acc = k.fold(&zero, &gh, &[init], |k, iy, acc| {
            let z = k.index(0);
            k.fold(&z, &gw, &[acc[0].clone()], |k, ix, acc| {
                let half = konst(&mut k.b, 0.5, ct);
                let iyf = s::from_index(&mut k.b, iy, ct);
                let iyf = s::add(&mut k.b, &iyf, &half);
                let t = s::mul(&mut k.b, &iyf, &ystep);
                let y = s::add(&mut k.b, &ystart, &t);
                let ixf = s::from_index(&mut k.b, ix, ct);
                let ixf = s::add(&mut k.b, &ixf, &half);
                let t = s::mul(&mut k.b, &ixf, &xstep);
                let xx = s::add(&mut k.b, &xstart, &t);
                let v = bilinear(k, x, &plane, h, w, &y, &xx, ct, is_max)?;
                Ok(vec![if is_max { s::max(&mut k.b, &acc[0], &v) } else { s::add(&mut k.b, &acc[0], &v) }])
            })
        })?;
        let cnt = k.ix("muli", &gh, &gw);
        let v = if is_max {
            // no samples: 0
            let none = k.icmp("eq", &cnt, &zero);
            let zf = konst(&mut k.b, 0.0, ct);
            s::select(&mut k.b, &none, &zf, &acc[0])
        } else {
            let one = k.index(1);
            let c1 = k.b.emit(format!("arith.maxui {cnt}, {one} : index"));
            let cf = s::from_index(&mut k.b, &c1, ct);
            s::div(&mut k.b, &acc[0], &cf)
        };
        k.store(out, i, &v);
        Ok(())
    })?;
    Ok(total)
}

/// The bilinear sample of an (h, w) plane at (y, x): the weighted sum of its four neighbours,
/// or (for max pooling) the largest weighted neighbour; 0 outside [−1, h] × [−1, w].
#[allow(clippy::too_many_arguments)]
fn bilinear(
    k: &mut Kern,
    x: usize,
    plane: &str,
    h: usize,
    w: usize,
    y: &Val,
    xx: &Val,
    ct: Ty,
    is_max: bool,
) -> R<Val> {
    let b = &mut k.b;
    let (m1, hf, wf, zero, one) =
        (konst(b, -1.0, ct), konst(b, h as f64, ct), konst(b, w as f64, ct), konst(b, 0.0, ct), konst(b, 1.0, ct));
    let c1 = s::cmp(b, "lt", y, &m1);
    let c2 = s::cmp(b, "gt", y, &hf);
    let c3 = s::cmp(b, "lt", xx, &m1);
    let c4 = s::cmp(b, "gt", xx, &wf);
    let mut outside = c1;
    for c in [c2, c3, c4] {
        outside = Val::new(b.emit(format!("arith.ori {}, {} : i1", outside.v, c.v)), Ty::Bool);
    }
    let y = s::max(b, y, &zero);
    let xv = s::max(b, xx, &zero);
    // low corner, clamped to the last row or column (then the sample sits on it)
    let clamp = |b: &mut crate::body::Body, v: &Val, n: usize| -> (Val, Val, Val) {
        let fl = s::math(b, "floor", v);
        let last = konst(b, (n - 1) as f64, ct);
        let at_end = s::cmp(b, "ge", &fl, &last);
        let lo = s::select(b, &at_end, &last, &fl);
        let pos = s::select(b, &at_end, &last, v);
        let one = konst(b, 1.0, ct);
        let up = s::add(b, &lo, &one);
        let hi = s::select(b, &at_end, &lo, &up);
        (lo, hi, pos)
    };
    let (yl, yh, y) = clamp(b, &y, h);
    let (xl, xh, xv) = clamp(b, &xv, w);
    let ly = s::sub(b, &y, &yl);
    let lx = s::sub(b, &xv, &xl);
    let hy = s::sub(b, &one, &ly);
    let hx = s::sub(b, &one, &lx);
    let i64t = Ty::Int(64, true);
    let idx = |b: &mut crate::body::Body, r: &Val, c: &Val| -> String {
        let ri = s::cast(b, r, i64t);
        let ci = s::cast(b, c, i64t);
        let wv = konst(b, w as f64, i64t);
        let t = s::mul(b, &ri, &wv);
        let t = s::add(b, &t, &ci);
        s::to_index(b, &t)
    };
    let taps = [
        (yl.clone(), xl.clone(), s::mul(b, &hy, &hx)),
        (yl.clone(), xh.clone(), s::mul(b, &hy, &lx)),
        (yh.clone(), xl, s::mul(b, &ly, &hx)),
        (yh, xh, s::mul(b, &ly, &lx)),
    ];
    let mut acc: Option<Val> = None;
    for (r, c, wt) in taps {
        let at = idx(&mut k.b, &r, &c);
        let at = k.ix("addi", plane, &at);
        let v = k.load(x, &at);
        let v = s::cast(&mut k.b, &v, ct);
        let wt = s::select(&mut k.b, &outside, &zero, &wt);
        let t = s::mul(&mut k.b, &wt, &v);
        acc = Some(match acc {
            None => t,
            Some(a) if is_max => s::max(&mut k.b, &a, &t),
            Some(a) => s::add(&mut k.b, &a, &t),
        });
    }
    Ok(acc.unwrap())
}
