//! Convolutions (N-d, grouped, dilated) and transposed convolutions.
use super::attrs::{opt, req, NodeAttrs};
use super::linalg::{FloatBuf, Gemm};
use super::OpResult;
use crate::tensor::{numel, Tensor};

/// Spatial geometry shared by convolution and pooling.
pub struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Padding at the start and end of each spatial axis.
    pub pad_begin: Vec<usize>,
    pub pad_end: Vec<usize>,
    pub out: Vec<usize>,
}

impl Window {
    /// Reads strides, dilations, pads and auto_pad for spatial input dims `input` and `kernel`.
    pub fn new(a: &NodeAttrs, input: &[usize], kernel: Vec<usize>, ceil_mode: bool) -> OpResult<Window> {
        let n = input.len();
        let list = |name: &str, default: usize| -> OpResult<Vec<usize>> {
            match a.ints_opt(name)? {
                None => Ok(vec![default; n]),
                Some(v) if v.len() == n && v.iter().all(|&x| x >= 1) => Ok(v.iter().map(|&x| x as usize).collect()),
                Some(v) => Err(format!("attribute '{name}' = {v:?} does not fit {n} spatial dims")),
            }
        };
        let strides = list("strides", 1)?;
        let dilations = list("dilations", 1)?;
        if kernel.len() != n {
            return Err(format!("kernel rank {} does not match {n} spatial dims", kernel.len()));
        }
        if kernel.contains(&0) {
            return Err(format!("kernel {kernel:?} has an empty axis"));
        }
        let auto = a.string("auto_pad", "NOTSET")?;
        let eff: Vec<usize> = (0..n).map(|i| (kernel[i] - 1) * dilations[i] + 1).collect();
        let (mut pb, mut pe) = (vec![0; n], vec![0; n]);
        match auto.as_str() {
            "NOTSET" => {
                if let Some(p) = a.ints_opt("pads")? {
                    if p.len() != 2 * n || p.iter().any(|&x| x < 0) {
                        return Err(format!("attribute 'pads' = {p:?} does not fit {n} spatial dims"));
                    }
                    pb = p[..n].iter().map(|&x| x as usize).collect();
                    pe = p[n..].iter().map(|&x| x as usize).collect();
                }
            }
            "SAME_UPPER" | "SAME_LOWER" => {
                for i in 0..n {
                    let out = input[i].div_ceil(strides[i]);
                    let total = ((out.max(1) - 1) * strides[i] + eff[i]).saturating_sub(input[i]);
                    let small = total / 2;
                    if auto == "SAME_UPPER" {
                        (pb[i], pe[i]) = (small, total - small);
                    } else {
                        (pb[i], pe[i]) = (total - small, small);
                    }
                }
            }
            "VALID" => {}
            other => return Err(format!("attribute 'auto_pad' has unknown value '{other}'")),
        }
        let mut out = vec![0; n];
        for i in 0..n {
            let span = input[i] + pb[i] + pe[i];
            if span < eff[i] {
                return Err(format!(
                    "window {} (dilated) is larger than the padded input {} on spatial axis {i}",
                    eff[i], span
                ));
            }
            let num = span - eff[i];
            let mut o = if ceil_mode { num.div_ceil(strides[i]) + 1 } else { num / strides[i] + 1 };
            // a window must start inside the input or its leading padding
            if ceil_mode && (o - 1) * strides[i] >= input[i] + pb[i] {
                o -= 1;
            }
            out[i] = o;
        }
        super::check_size(&out)?;
        Ok(Window { kernel, strides, dilations, pad_begin: pb, pad_end: pe, out })
    }
}

/// Calls `f` with every multi-index of `shape` in row-major order.
pub fn each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut ax = shape.len();
        loop {
            if ax == 0 {
                return;
            }
            ax -= 1;
            idx[ax] += 1;
            if idx[ax] < shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
}

fn conv_typed<T: Gemm + Into<f64>>(
    x: &[T],
    w: &[T],
    xs: &[usize],
    ws: &[usize],
    win: &Window,
    group: usize,
) -> Vec<f64> {
    let (n, c) = (xs[0], xs[1]);
    let m = ws[0];
    let cg = c / group;
    let mg = m / group;
    let sp_in = &xs[2..];
    let k_n = numel(&win.kernel);
    let o_n = numel(&win.out);
    let in_n = numel(sp_in);
    let rows = cg * k_n;
    // precompute, per (kernel offset, output position), the input offset or None for padding
    let mut offs: Vec<Option<usize>> = Vec::with_capacity(k_n * o_n);
    each_index(&win.kernel, |k| {
        each_index(&win.out, |o| {
            let mut off = 0usize;
            let mut ok = true;
            for d in 0..k.len() {
                let p = (o[d] * win.strides[d] + k[d] * win.dilations[d]) as isize - win.pad_begin[d] as isize;
                if p < 0 || p as usize >= sp_in[d] {
                    ok = false;
                    break;
                }
                off = off * sp_in[d] + p as usize;
            }
            offs.push(ok.then_some(off));
        })
    });
    let mut out = vec![0f64; n * m * o_n];
    let mut col = vec![T::default(); rows * o_n];
    let mut res = vec![T::default(); mg * o_n];
    for b in 0..n {
        for g in 0..group {
            for ci in 0..cg {
                let plane = &x[(b * c + g * cg + ci) * in_n..][..in_n];
                for kk in 0..k_n {
                    let row = &mut col[(ci * k_n + kk) * o_n..][..o_n];
                    for (o, r) in row.iter_mut().enumerate() {
                        *r = offs[kk * o_n + o].map_or(T::default(), |i| plane[i]);
                    }
                }
            }
            let wg = &w[g * mg * rows..(g + 1) * mg * rows];
            T::gemm(mg, rows, o_n, wg, (rows as isize, 1), &col, (o_n as isize, 1), &mut res);
            for (i, v) in res.iter().enumerate() {
                out[(b * m + g * mg) * o_n + i] = (*v).into();
            }
        }
    }
    out
}

/// `Conv(X, W, B?)`.
pub fn conv(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (x, w) = (req(ins, 0)?, req(ins, 1)?);
    if x.rank() < 3 || w.rank() != x.rank() {
        return Err(format!("X {:?} and W {:?} must both be (N, C, spatial...)", x.shape(), w.shape()));
    }
    if x.dtype() != w.dtype() || !x.dtype().is_float() {
        return Err(format!("X and W must share a float dtype, got {} and {}", x.dtype(), w.dtype()));
    }
    let group = a.int("group", 1)?.max(1) as usize;
    let (c, m) = (x.shape()[1], w.shape()[0]);
    if c % group != 0 || m % group != 0 || w.shape()[1] * group != c {
        return Err(format!("channels: X has {c}, W {:?}, group {group} do not agree", w.shape()));
    }
    let kernel = match a.ints_opt("kernel_shape")? {
        Some(k) => k.iter().map(|&v| v as usize).collect(),
        None => w.shape()[2..].to_vec(),
    };
    if kernel != w.shape()[2..] {
        return Err(format!("kernel_shape {kernel:?} does not match W {:?}", w.shape()));
    }
    let win = Window::new(a, &x.shape()[2..], kernel, false)?;
    let mut out = match (FloatBuf::of(x), FloatBuf::of(w)) {
        (FloatBuf::F32(xv), FloatBuf::F32(wv)) => conv_typed(&xv, &wv, x.shape(), w.shape(), &win, group),
        (FloatBuf::F64(xv), FloatBuf::F64(wv)) => conv_typed(&xv, &wv, x.shape(), w.shape(), &win, group),
        _ => unreachable!("same dtype"),
    };
    let o_n = numel(&win.out);
    if let Some(b) = opt(ins, 2) {
        if b.shape() != [m] {
            return Err(format!("B must have shape [{m}], got {:?}", b.shape()));
        }
        let bv = b.to_f64();
        for (i, v) in out.iter_mut().enumerate() {
            *v += bv[(i / o_n) % m];
        }
    }
    let mut shape = vec![x.shape()[0], m];
    shape.extend(&win.out);
    Ok(Tensor::from_f64(x.dtype(), shape, &out))
}

/// `ConvTranspose(X, W, B?)`: scatters each input element through the kernel.
/// Where a ConvTranspose puts its input: group, strides, dilations, the padding before each
/// spatial axis and the output's spatial dims (from output_shape, auto_pad or pads).
pub struct TransposedWindow {
    pub group: usize,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pad_begin: Vec<usize>,
    pub out: Vec<usize>,
}

/// The geometry of a ConvTranspose of X of `xs` by W of `ws`.
pub fn transposed_window(a: &NodeAttrs, xs: &[usize], ws: &[usize]) -> OpResult<TransposedWindow> {
    struct S<'a>(&'a [usize]);
    impl S<'_> {
        fn rank(&self) -> usize {
            self.0.len()
        }
        fn shape(&self) -> &[usize] {
            self.0
        }
    }
    let (x, w) = (S(xs), S(ws));
    if x.rank() < 3 || w.rank() != x.rank() {
        return Err(format!("X {:?} and W {:?} must both be (N, C, spatial...)", x.shape(), w.shape()));
    }
    let nsp = x.rank() - 2;
    let group = a.int("group", 1)?.max(1) as usize;
    let c = x.shape()[1];
    if w.shape()[0] != c || c % group != 0 {
        return Err(format!("W {:?} does not match {c} input channels with group {group}", w.shape()));
    }
    let kernel: Vec<usize> = w.shape()[2..].to_vec();
    // each value at least `min` (a negative one would wrap around as a size)
    let list = |name: &str, d: i64, min: i64, len: usize| -> OpResult<Vec<usize>> {
        let v = a.ints_opt(name)?.unwrap_or_else(|| vec![d; len]);
        match v.iter().find(|&&x| x < min) {
            Some(x) => Err(format!("{name} {v:?}: {x} is below {min}")),
            None => Ok(v.iter().map(|&x| x as usize).collect()),
        }
    };
    let strides = list("strides", 1, 1, nsp)?;
    let dil = list("dilations", 1, 1, nsp)?;
    let outpad = list("output_padding", 0, 0, nsp)?;
    let input = &x.shape()[2..];
    if input.contains(&0) || kernel.contains(&0) {
        return Err(format!("an empty input {input:?} or kernel {kernel:?} has no transposed convolution"));
    }
    let mut pads = list("pads", 0, 0, 2 * nsp)?;
    if pads.len() != 2 * nsp || strides.len() != nsp || dil.len() != nsp || outpad.len() != nsp {
        return Err("strides, dilations, output_padding and pads must match the spatial rank".into());
    }
    let auto = a.string("auto_pad", "NOTSET")?;
    let full: Vec<usize> = (0..nsp)
        .map(|i| {
            let reach = (kernel[i] - 1).checked_mul(dil[i]);
            strides[i]
                .checked_mul(input[i] - 1)
                .zip(reach)
                .and_then(|(a, b)| a.checked_add(b)?.checked_add(outpad[i])?.checked_add(1))
                .ok_or_else(|| format!("the output of spatial axis {i} is larger than any tensor"))
        })
        .collect::<OpResult<_>>()?;
    let out_shape: Vec<usize> = if let Some(os) = a.ints_opt("output_shape")? {
        if os.len() < nsp || os.iter().any(|&v| v < 0) {
            return Err(format!("output_shape {os:?} does not fit {nsp} spatial dims"));
        }
        let os: Vec<usize> = os.iter().rev().take(nsp).rev().map(|&v| v as usize).collect();
        for i in 0..nsp {
            let total = full[i].saturating_sub(os[i]);
            if auto == "SAME_UPPER" {
                (pads[i], pads[nsp + i]) = (total / 2, total - total / 2);
            } else {
                (pads[i], pads[nsp + i]) = (total - total / 2, total / 2);
            }
        }
        os
    } else if auto == "SAME_UPPER" || auto == "SAME_LOWER" {
        (0..nsp)
            .map(|i| {
                let o = input[i].saturating_mul(strides[i]);
                let total = full[i].saturating_sub(o);
                if auto == "SAME_UPPER" {
                    (pads[i], pads[nsp + i]) = (total / 2, total - total / 2);
                } else {
                    (pads[i], pads[nsp + i]) = (total - total / 2, total / 2);
                }
                o
            })
            .collect()
    } else {
        (0..nsp)
            .map(|i| {
                full[i].checked_sub(pads[i]).and_then(|v| v.checked_sub(pads[nsp + i])).ok_or_else(|| {
                    format!("pads {:?} remove more than the {} elements of spatial axis {i}", pads, full[i])
                })
            })
            .collect::<OpResult<_>>()?
    };
    Ok(TransposedWindow { group, strides, dilations: dil, pad_begin: pads[..nsp].to_vec(), out: out_shape })
}

pub fn conv_transpose(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (x, w) = (req(ins, 0)?, req(ins, 1)?);
    let TransposedWindow { group, strides, dilations: dil, pad_begin: pads, out: out_shape } =
        transposed_window(a, x.shape(), w.shape())?;
    let nsp = x.rank() - 2;
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let mg = w.shape()[1];
    let m = mg * group;
    let cg = c / group;
    let kernel: Vec<usize> = w.shape()[2..].to_vec();
    let input = &x.shape()[2..];
    let mut full_shape = vec![n, m];
    full_shape.extend(&out_shape);
    super::check_size(&full_shape)?;
    let xv = x.to_f64();
    let wv = w.to_f64();
    let in_n = numel(input);
    let k_n = numel(&kernel);
    let o_n = numel(&out_shape);
    let mut out = vec![0f64; n * m * o_n];
    for b in 0..n {
        for g in 0..group {
            for ci in 0..cg {
                let ch = g * cg + ci;
                let mut pos = 0usize;
                each_index(input, |ip| {
                    let xval = xv[(b * c + ch) * in_n + pos];
                    pos += 1;
                    let mut kpos = 0usize;
                    each_index(&kernel, |kp| {
                        let mut off = 0usize;
                        let mut ok = true;
                        for d in 0..nsp {
                            let p = (ip[d] * strides[d] + kp[d] * dil[d]) as isize - pads[d] as isize;
                            if p < 0 || p as usize >= out_shape[d] {
                                ok = false;
                                break;
                            }
                            off = off * out_shape[d] + p as usize;
                        }
                        if ok {
                            for mo in 0..mg {
                                out[(b * m + g * mg + mo) * o_n + off] += xval * wv[(ch * mg + mo) * k_n + kpos];
                            }
                        }
                        kpos += 1;
                    });
                });
            }
        }
    }
    if let Some(bias) = opt(ins, 2) {
        let bv = bias.to_f64();
        if bv.len() != m {
            return Err(format!("B must have {m} elements, got {}", bv.len()));
        }
        for (i, v) in out.iter_mut().enumerate() {
            *v += bv[(i / o_n) % m];
        }
    }
    let mut shape = vec![n, m];
    shape.extend(out_shape);
    Ok(Tensor::from_f64(x.dtype(), shape, &out))
}
