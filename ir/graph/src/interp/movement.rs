//! Data movement and shape ops: each builds, for every output element, the flat index of the
//! input element it copies, then gathers.
use super::attrs::{axis, opt, req, scalar, scalar_i64, NodeAttrs};
use super::broadcast::{broadcast_index, broadcast_shapes};
use super::conv::each_index;
use super::OpResult;
use crate::dtype::DType;
use crate::tensor::{numel, strides, Tensor, TensorData};

pub fn shape_of(a: &NodeAttrs, x: &Tensor) -> OpResult<Tensor> {
    let r = x.rank() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(a.int("start", 0)?);
    let end = clamp(a.int_opt("end")?.unwrap_or(r));
    let dims: Vec<i64> = x.shape()[start..end.max(start)].iter().map(|&d| d as i64).collect();
    Ok(Tensor::from_i64(vec![dims.len()], dims))
}

/// The target shape of Reshape: `0` copies the input dim (unless `allowzero`), `-1` is inferred.
pub fn reshape_target(input: &[usize], spec: &[i64], allowzero: bool) -> OpResult<Vec<usize>> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => {
                out.push(*input.get(i).ok_or_else(|| format!("shape {spec:?}: 0 at {i} has no input dim"))?)
            }
            s if s >= 0 => out.push(s as usize),
            _ => return Err(format!("invalid target shape {spec:?}")),
        }
    }
    let too_large = || format!("cannot reshape {input:?} to {spec:?}: more elements than any tensor holds");
    let n = crate::tensor::checked_numel(input).ok_or_else(too_large)?;
    if let Some(i) = infer {
        let rest = crate::tensor::checked_numel(&out).ok_or_else(too_large)?;
        if rest == 0 || !n.is_multiple_of(rest) {
            return Err(format!("cannot reshape {input:?} to {spec:?}"));
        }
        out[i] = n / rest;
    }
    if crate::tensor::checked_numel(&out) != Some(n) {
        return Err(format!("cannot reshape {input:?} ({n} elements) to {spec:?}"));
    }
    Ok(out)
}

pub fn flatten(a: &NodeAttrs, x: &Tensor) -> OpResult<Tensor> {
    let r = x.rank() as i64;
    let ax = a.int("axis", 1)?;
    if ax < -r || ax > r {
        return Err(format!("axis {ax} is out of range for rank {r}"));
    }
    let ax = if ax < 0 { ax + r } else { ax } as usize;
    Ok(x.reshape(vec![numel(&x.shape()[..ax]), numel(&x.shape()[ax..])]))
}

pub fn expand(x: &Tensor, shape: &Tensor) -> OpResult<Tensor> {
    let target: Vec<usize> = shape.to_i64().iter().map(|&d| d.max(0) as usize).collect();
    let out = broadcast_shapes(&[x.shape(), &target])?;
    Ok(x.take(&broadcast_index(x.shape(), &out), out))
}

pub fn transpose(x: &Tensor, perm: Option<Vec<i64>>) -> OpResult<Tensor> {
    let r = x.rank();
    let perm: Vec<usize> = match perm {
        Some(p) => p.iter().map(|&v| axis(v, r)).collect::<OpResult<_>>()?,
        None => (0..r).rev().collect(),
    };
    x.transposed(&perm).ok_or_else(|| format!("perm {perm:?} is not a permutation of {r} axes"))
}

fn index_value(i: i64, dim: usize) -> OpResult<usize> {
    let j = if i < 0 { i + dim as i64 } else { i };
    if j < 0 || j >= dim as i64 {
        return Err(format!("index {i} is out of bounds for a dimension of size {dim}"));
    }
    Ok(j as usize)
}

pub fn gather(x: &Tensor, ind: &Tensor, ax: i64) -> OpResult<Tensor> {
    let ax = axis(ax, x.rank())?;
    let (outer, len, inner) = super::reduce::around_axis(x.shape(), ax);
    let iv = ind.to_i64().iter().map(|&i| index_value(i, len)).collect::<OpResult<Vec<_>>>()?;
    super::check_size(&[outer, iv.len(), inner])?;
    let mut idx = Vec::with_capacity(outer * iv.len() * inner);
    for o in 0..outer {
        for &k in &iv {
            for i in 0..inner {
                idx.push((o * len + k) * inner + i);
            }
        }
    }
    let mut shape = x.shape()[..ax].to_vec();
    shape.extend(ind.shape());
    shape.extend(&x.shape()[ax + 1..]);
    Ok(x.take(&idx, shape))
}

/// Flat offsets into `x` of the elements that `ind` addresses along axis `ax` (each index
/// replaces its own position's coordinate on that axis).
fn element_offsets(x: &Tensor, ind: &Tensor, ax: usize) -> OpResult<Vec<usize>> {
    if ind.rank() != x.rank() {
        return Err("indices must have the rank of data".into());
    }
    // off the gathered axis an index is its own coordinate: it must lie inside the data
    if let Some(d) = (0..x.rank()).find(|&d| d != ax && ind.shape()[d] > x.shape()[d]) {
        return Err(format!("indices {:?} are larger than data {:?} along axis {d}", ind.shape(), x.shape()));
    }
    let st = strides(x.shape());
    let iv = ind.to_i64();
    let mut idx = Vec::with_capacity(ind.len());
    let mut n = 0;
    let mut err = None;
    each_index(ind.shape(), |o| {
        let mut off = 0;
        for d in 0..o.len() {
            let c = if d == ax {
                index_value(iv[n], x.shape()[ax]).unwrap_or_else(|e| {
                    err = Some(e);
                    0
                })
            } else {
                o[d]
            };
            off += c * st[d];
        }
        idx.push(off);
        n += 1;
    });
    match err {
        Some(e) => Err(e),
        None => Ok(idx),
    }
}

pub fn gather_elements(a: &NodeAttrs, x: &Tensor, ind: &Tensor) -> OpResult<Tensor> {
    let ax = axis(a.int("axis", 0)?, x.rank())?;
    Ok(x.take(&element_offsets(x, ind, ax)?, ind.shape().to_vec()))
}

pub fn gather_nd(a: &NodeAttrs, x: &Tensor, ind: &Tensor) -> OpResult<Tensor> {
    let b = a.int("batch_dims", 0)? as usize;
    let q = ind.rank();
    let k = *ind.shape().last().ok_or("indices must have rank >= 1")?;
    if b + k > x.rank() {
        return Err("indices address more dims than data has".into());
    }
    if k == 0 {
        return Err("the indices' last dim must be at least 1 (ONNX GatherND)".into());
    }
    let batch = numel(&x.shape()[..b]);
    let slice_shape = &x.shape()[b + k..];
    let slice_n = numel(slice_shape);
    let st = strides(&x.shape()[b..]);
    let per_batch = numel(&x.shape()[b..]);
    if b >= q || ind.shape()[..b] != x.shape()[..b] {
        return Err(format!("indices {:?} and data {:?} do not share {b} batch dims", ind.shape(), x.shape()).into());
    }
    let iv = ind.to_i64();
    // one tuple of k indices per position of the indices' leading dims
    let tuples = numel(&ind.shape()[..q - 1]);
    let tuples_per_batch = tuples / batch.max(1);
    super::check_size(&[tuples, slice_n])?;
    let mut idx = Vec::new();
    for t in 0..tuples {
        let bi = t / tuples_per_batch.max(1);
        let mut off = bi * per_batch;
        for j in 0..k {
            off += index_value(iv[t * k + j], x.shape()[b + j])? * st[j];
        }
        idx.extend(off..off + slice_n);
    }
    let mut shape = ind.shape()[..q - 1].to_vec();
    shape.extend(slice_shape);
    Ok(x.take(&idx, shape))
}

/// Clamped (begin, end, count) of a slice of an axis of length `d`; `s` is non-zero.
pub fn slice_bounds(d: i64, start: i64, end: i64, s: i64) -> (i64, i64, usize) {
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (b, e) = if s > 0 {
        (norm(start).clamp(0, d), norm(end).clamp(0, d))
    } else {
        (norm(start).clamp(-1, d - 1), norm(end).clamp(-1, d - 1))
    };
    // in i128: a step of i64::MAX (or MIN) overflows i64 here
    let (b2, e2, s2) = (b as i128, e as i128, s as i128);
    let n = if s2 > 0 { (e2 - b2 + s2 - 1).div_euclid(s2) } else { (b2 - e2 - s2 - 1).div_euclid(-s2) };
    (b, e, n.clamp(0, d.max(0) as i128) as usize)
}

/// Slice with starts/ends/axes/steps already read.
pub fn slice(
    x: &Tensor,
    starts: &[i64],
    ends: &[i64],
    axes: Option<Vec<i64>>,
    steps: Option<Vec<i64>>,
) -> OpResult<Tensor> {
    let r = x.rank();
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&v| axis(v, r)).collect::<OpResult<_>>()?,
        // without axes, starts run over the first axes: no more of them than the rank
        None if starts.len() > r => {
            return Err(format!("{} starts without axes for an input of rank {r}", starts.len()));
        }
        None => (0..starts.len()).collect(),
    };
    let steps = steps.unwrap_or(vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps must have one length".into());
    }
    let mut begin = vec![0i64; r];
    let mut step = vec![1i64; r];
    let mut shape = x.shape().to_vec();
    for i in 0..starts.len() {
        let (ax, s) = (axes[i], steps[i]);
        if s == 0 {
            return Err("slice step cannot be 0".into());
        }
        let (b, _, n) = slice_bounds(x.shape()[ax] as i64, starts[i], ends[i], s);
        begin[ax] = b;
        step[ax] = s;
        shape[ax] = n;
    }
    let st = strides(x.shape());
    let mut idx = Vec::with_capacity(numel(&shape));
    each_index(&shape, |o| {
        idx.push((0..r).map(|d| ((begin[d] + o[d] as i64 * step[d]) as usize) * st[d]).sum());
    });
    Ok(x.take(&idx, shape))
}

pub fn concat(ins: &[&Tensor], ax: i64) -> OpResult<Tensor> {
    let first = ins.first().ok_or("needs at least one input")?;
    let ax = axis(ax, first.rank())?;
    let mut shape = first.shape().to_vec();
    shape[ax] = 0;
    for t in ins {
        if t.rank() != first.rank() || t.dtype() != first.dtype() {
            return Err(format!("inputs {:?} and {:?} cannot be concatenated", first.shape(), t.shape()));
        }
        for d in 0..t.rank() {
            if d != ax && t.shape()[d] != first.shape()[d] {
                return Err(format!("inputs {:?} and {:?} differ outside axis {ax}", first.shape(), t.shape()));
            }
        }
        shape[ax] += t.shape()[ax];
    }
    let outer = numel(&shape[..ax]);
    let mut parts: Vec<TensorData> = Vec::new();
    for o in 0..outer {
        for t in ins {
            let chunk = numel(&t.shape()[ax..]);
            parts.push(t.data().take(&(o * chunk..(o + 1) * chunk).collect::<Vec<_>>()));
        }
    }
    let refs: Vec<&TensorData> = parts.iter().collect();
    let data = if refs.is_empty() { first.data().take(&[]) } else { TensorData::concat(&refs) };
    Ok(Tensor::new(shape, data))
}

pub fn split(a: &NodeAttrs, opset: i64, ins: &[Option<Tensor>], n_out: usize) -> OpResult<Vec<Tensor>> {
    let x = req(ins, 0)?;
    let ax = axis(a.int("axis", 0)?, x.rank())?;
    let d = x.shape()[ax];
    let sizes: Vec<usize> = match if opset >= 13 { opt(ins, 1).map(|t| t.to_i64()) } else { a.ints_opt("split")? } {
        Some(s) => s.iter().map(|&v| v as usize).collect(),
        None => {
            let parts = match a.int_opt("num_outputs")? {
                Some(k) if k != n_out as i64 => {
                    return Err(format!("num_outputs {k} must equal the node's {n_out} outputs"))
                }
                _ => n_out.max(1),
            };
            let chunk = d.div_ceil(parts);
            (0..parts).map(|i| chunk.min(d.saturating_sub(i * chunk))).collect()
        }
    };
    if sizes.iter().sum::<usize>() != d {
        return Err(format!("split sizes {sizes:?} do not sum to the axis length {d}"));
    }
    let mut start = 0;
    let mut outs = vec![];
    for s in sizes {
        outs.push(slice(x, &[start as i64], &[(start + s) as i64], Some(vec![ax as i64]), None)?);
        start += s;
    }
    Ok(outs)
}

pub fn squeeze(x: &Tensor, axes: Option<Vec<i64>>) -> OpResult<Tensor> {
    let r = x.rank();
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&v| axis(v, r)).collect::<OpResult<_>>()?,
        None => (0..r).filter(|&i| x.shape()[i] == 1).collect(),
    };
    if let Some(&bad) = axes.iter().find(|&&a| x.shape()[a] != 1) {
        return Err(format!("cannot squeeze axis {bad} of size {}", x.shape()[bad]));
    }
    let shape = (0..r).filter(|i| !axes.contains(i)).map(|i| x.shape()[i]).collect();
    Ok(x.reshape(shape))
}

pub fn unsqueeze(x: &Tensor, axes: &[i64]) -> OpResult<Tensor> {
    let r = x.rank() + axes.len();
    let mut ax: Vec<usize> = axes.iter().map(|&v| axis(v, r)).collect::<OpResult<_>>()?;
    ax.sort();
    if ax.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("axes {axes:?} repeat"));
    }
    let mut shape = x.shape().to_vec();
    for a in ax {
        shape.insert(a, 1);
    }
    Ok(x.reshape(shape))
}

pub fn tile(x: &Tensor, reps: &Tensor) -> OpResult<Tensor> {
    let r = reps.to_i64();
    if r.len() != x.rank() || r.iter().any(|&v| v < 0) {
        return Err(format!("repeats {r:?} must have one non-negative entry per axis of {:?}", x.shape()));
    }
    let shape: Vec<usize> = x.shape().iter().zip(&r).map(|(&d, &k)| d.saturating_mul(k as usize)).collect();
    super::check_size(&shape)?;
    let st = strides(x.shape());
    let mut idx = Vec::with_capacity(numel(&shape));
    each_index(&shape, |o| idx.push(o.iter().enumerate().map(|(d, &i)| (i % x.shape()[d]) * st[d]).sum()));
    Ok(x.take(&idx, shape))
}

pub fn pad(a: &NodeAttrs, opset: i64, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let x = req(ins, 0)?;
    let r = x.rank();
    let mode = a.string("mode", "constant")?;
    let (pads, value, axes) = if opset < 11 {
        (a.ints_opt("pads")?.ok_or("missing attribute 'pads'")?, a.float("value", 0.0)? as f64, None)
    } else {
        let v = opt(ins, 2).filter(|t| !t.is_empty()).map(|t| t.to_f64()[0]).unwrap_or(0.0);
        (req(ins, 1)?.to_i64(), v, opt(ins, 3).map(|t| t.to_i64()))
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&v| axis(v, r)).collect::<OpResult<_>>()?,
        None => (0..r).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!("pads {pads:?} must have 2 entries per padded axis ({})", axes.len()));
    }
    let mut before = vec![0i64; r];
    let mut after = vec![0i64; r];
    for (i, &ax) in axes.iter().enumerate() {
        before[ax] = pads[i];
        after[ax] = pads[axes.len() + i];
    }
    let sized: Vec<i64> =
        (0..r).map(|d| (x.shape()[d] as i64).saturating_add(before[d]).saturating_add(after[d])).collect();
    if let Some(d) = sized.iter().position(|&n| n < 0) {
        return Err(format!("pads {pads:?} remove more than axis {d}'s {} elements", x.shape()[d]));
    }
    let shape: Vec<usize> = sized.iter().map(|&n| n as usize).collect();
    super::check_size(&shape)?;
    if !matches!(mode.as_str(), "constant" | "edge" | "wrap" | "reflect") {
        return Err(format!("unknown pad mode '{mode}'"));
    }
    // edge, wrap and reflect read the axis they pad: an empty one has nothing to read
    if mode != "constant" {
        if let Some(d) = (0..r).find(|&d| x.shape()[d] == 0 && (before[d] > 0 || after[d] > 0)) {
            return Err(format!("mode '{mode}' pads axis {d}, which is empty"));
        }
    }
    let st = strides(x.shape());
    let mut idx = Vec::with_capacity(numel(&shape));
    let mut fill = Vec::new();
    let mut err = None;
    each_index(&shape, |o| {
        let mut off = 0usize;
        let mut outside = false;
        for d in 0..r {
            let n = x.shape()[d] as i64;
            let mut p = o[d] as i64 - before[d];
            if p < 0 || p >= n {
                match mode.as_str() {
                    "constant" => outside = true,
                    "edge" => p = p.clamp(0, n - 1),
                    "wrap" => p = p.rem_euclid(n),
                    "reflect" => {
                        if n == 1 {
                            p = 0
                        } else {
                            let period = 2 * (n - 1);
                            p = p.rem_euclid(period);
                            if p >= n {
                                p = period - p;
                            }
                        }
                    }
                    m => err = Some(format!("unknown pad mode '{m}'")),
                }
            }
            if !outside {
                off += p as usize * st[d];
            }
        }
        fill.push(outside);
        idx.push(if outside { 0 } else { off });
    });
    if let Some(e) = err {
        return Err(e);
    }
    if x.is_empty() && fill.iter().any(|f| !f) {
        return Err("cannot pad an empty tensor in this mode".into());
    }
    let mut data =
        if x.is_empty() { TensorData::from_f64(x.dtype(), &vec![0.0; idx.len()]) } else { x.data().take(&idx) };
    let at: Vec<usize> = (0..fill.len()).filter(|&i| fill[i]).collect();
    data.put(&at, &TensorData::from_f64(x.dtype(), &vec![value; at.len()]));
    Ok(Tensor::new(shape, data))
}

pub fn depth_space(to_space: bool, a: &NodeAttrs, x: &Tensor) -> OpResult<Tensor> {
    let b = a.int("blocksize", 0)? as usize;
    if x.rank() != 4 || b == 0 {
        return Err(format!("input must be 4-D with blocksize >= 1, got {:?}", x.shape()));
    }
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    if to_space {
        if c % (b * b) != 0 {
            return Err(format!("channels {c} not divisible by blocksize² {}", b * b));
        }
        let crd = a.string("mode", "DCR")? == "CRD";
        let t =
            if crd { x.reshape(vec![n, c / (b * b), b, b, h, w]) } else { x.reshape(vec![n, b, b, c / (b * b), h, w]) };
        let perm = if crd { vec![0, 1, 4, 2, 5, 3] } else { vec![0, 3, 4, 1, 5, 2] };
        Ok(transpose(&t, Some(perm))?.reshape(vec![n, c / (b * b), h * b, w * b]))
    } else {
        if h % b != 0 || w % b != 0 {
            return Err(format!("spatial dims {h}x{w} not divisible by blocksize {b}"));
        }
        let t = x.reshape(vec![n, c, h / b, b, w / b, b]);
        let perm = if a.string("mode", "DCR")? == "CRD" { vec![0, 1, 3, 5, 2, 4] } else { vec![0, 3, 5, 1, 2, 4] };
        Ok(transpose(&t, Some(perm))?.reshape(vec![n, c * b * b, h / b, w / b]))
    }
}

pub fn trilu(a: &NodeAttrs, x: &Tensor, k: Option<&Tensor>) -> OpResult<Tensor> {
    if x.rank() < 2 {
        return Err("input must have rank >= 2".into());
    }
    let upper = a.int("upper", 1)? != 0;
    let k = k.map(|t| scalar_i64(t, "k")).transpose()?.unwrap_or(0);
    let (rows, cols) = (x.shape()[x.rank() - 2], x.shape()[x.rank() - 1]);
    let zero: Vec<usize> = (0..x.len())
        .filter(|&i| {
            let (r, c) = (((i / cols) % rows) as i64, (i % cols) as i64);
            if upper {
                c - r < k
            } else {
                c - r > k
            }
        })
        .collect();
    let mut d = x.data().clone();
    d.put(&zero, &TensorData::zeros(x.dtype(), zero.len()));
    Ok(Tensor::new(x.shape().to_vec(), d))
}

pub fn scatter_elements(a: &NodeAttrs, x: &Tensor, ind: &Tensor, upd: &Tensor) -> OpResult<Tensor> {
    let ax = axis(a.int("axis", 0)?, x.rank())?;
    if ind.shape() != upd.shape() {
        return Err("indices and updates must have one shape".into());
    }
    scatter_into(a, x, &element_offsets(x, ind, ax)?, upd, 1)
}

/// Writes (or reduces) `upd`, in chunks of `chunk` elements, at `dst` offsets of a copy of `x`.
fn scatter_into(a: &NodeAttrs, x: &Tensor, dst: &[usize], upd: &Tensor, chunk: usize) -> OpResult<Tensor> {
    let red = a.string("reduction", "none")?;
    if x.dtype() != upd.dtype() {
        return Err(format!("updates dtype {} differs from data dtype {}", upd.dtype(), x.dtype()));
    }
    let positions: Vec<usize> = dst.iter().flat_map(|&d| d..d + chunk).collect();
    if red == "none" {
        let mut d = x.data().clone();
        d.put(&positions, upd.data());
        return Ok(Tensor::new(x.shape().to_vec(), d));
    }
    let mut v = x.to_f64();
    let u = upd.to_f64();
    for (k, &p) in positions.iter().enumerate() {
        v[p] = match red.as_str() {
            "add" => v[p] + u[k],
            "mul" => v[p] * u[k],
            "max" => v[p].max(u[k]),
            "min" => v[p].min(u[k]),
            r => return Err(format!("unknown reduction '{r}'")),
        };
    }
    Ok(Tensor::from_f64(x.dtype(), x.shape().to_vec(), &v))
}

pub fn scatter_nd(a: &NodeAttrs, x: &Tensor, ind: &Tensor, upd: &Tensor) -> OpResult<Tensor> {
    let k = *ind.shape().last().ok_or("indices must have rank >= 1")?;
    if k > x.rank() {
        return Err("index tuples are longer than data's rank".into());
    }
    let st = strides(x.shape());
    let chunk = numel(&x.shape()[k..]);
    let iv = ind.to_i64();
    let mut dst = vec![];
    for t in 0..iv.len() / k.max(1) {
        let mut off = 0;
        for j in 0..k {
            off += index_value(iv[t * k + j], x.shape()[j])? * st[j];
        }
        dst.push(off);
    }
    if dst.len() * chunk != upd.len() {
        return Err(format!("updates {:?} do not match indices {:?}", upd.shape(), ind.shape()));
    }
    scatter_into(a, x, &dst, upd, chunk)
}

pub fn range(start: &Tensor, limit: &Tensor, delta: &Tensor) -> OpResult<Tensor> {
    let dt = start.dtype();
    let (s, l, d) = (scalar(start, "start")?, scalar(limit, "limit")?, scalar(delta, "delta")?);
    if !(s.is_finite() && l.is_finite() && d.is_finite()) {
        return Err(format!("start {s}, limit {l} and delta {d} must be finite"));
    }
    if d == 0.0 {
        return Err("delta cannot be 0".into());
    }
    let n = ((l - s) / d).ceil().max(0.0);
    if !n.is_finite() {
        return Err("start, limit and delta must be finite".into());
    }
    let n = n as usize;
    super::check_size(&[n])?;
    if dt.is_float() {
        Ok(Tensor::from_f64(dt, vec![n], &(0..n).map(|i| s + i as f64 * d).collect::<Vec<_>>()))
    } else {
        let (s, d) = (start.to_i128()[0], delta.to_i128()[0]);
        Ok(Tensor::from_i128(dt, vec![n], &(0..n).map(|i| s + i as i128 * d).collect::<Vec<_>>()))
    }
}

pub fn constant_of_shape(a: &NodeAttrs, shape: &Tensor) -> OpResult<Tensor> {
    let spec = shape.to_i64();
    if spec.iter().any(|&d| d < 0) {
        return Err(format!("shape {spec:?} has a negative dim"));
    }
    let dims: Vec<usize> = spec.iter().map(|&d| d as usize).collect();
    super::check_size(&dims)?;
    let n = numel(&dims);
    Ok(match a.tensor_opt("value")? {
        Some(v) if v.len() == 1 => v.take(&vec![0; n], dims),
        Some(_) => return Err("attribute 'value' must hold one element".into()),
        None => Tensor::zeros(DType::F32, dims),
    })
}

pub fn eye_like(a: &NodeAttrs, x: &Tensor) -> OpResult<Tensor> {
    if x.rank() != 2 {
        return Err("input must be 2-D".into());
    }
    let dt = match a.int_opt("dtype")? {
        Some(c) => DType::from_onnx_code(c as i32).ok_or_else(|| format!("unsupported dtype code {c}"))?,
        None => x.dtype(),
    };
    let k = a.int("k", 0)?;
    let (r, c) = (x.shape()[0], x.shape()[1]);
    super::check_size(&[r, c])?;
    let v: Vec<f64> = (0..r * c).map(|i| ((i % c) as i64 - (i / c) as i64 == k) as u8 as f64).collect();
    Ok(Tensor::from_f64(dt, vec![r, c], &v))
}

pub fn one_hot(a: &NodeAttrs, ind: &Tensor, depth: &Tensor, values: &Tensor) -> OpResult<Tensor> {
    let depth = scalar(depth, "depth")? as i64;
    if depth <= 0 || values.len() != 2 {
        return Err("depth must be positive and values must hold [off, on]".into());
    }
    let r = ind.rank() + 1;
    let ax = axis(a.int("axis", -1)?, r)?;
    let iv = ind.to_i64();
    let outer = numel(&ind.shape()[..ax]);
    let inner = numel(&ind.shape()[ax..]);
    super::check_size(&[outer, depth as usize, inner])?;
    let mut src = vec![0usize; outer * depth as usize * inner];
    for o in 0..outer {
        for i in 0..inner {
            let mut k = iv[o * inner + i];
            if k < 0 {
                k += depth;
            }
            if (0..depth).contains(&k) {
                src[(o * depth as usize + k as usize) * inner + i] = 1;
            }
        }
    }
    let mut shape = ind.shape().to_vec();
    shape.insert(ax, depth as usize);
    Ok(values.take(&src, shape))
}

pub fn non_zero(x: &Tensor) -> Tensor {
    let v = x.to_f64();
    let r = x.rank();
    let mut coords: Vec<Vec<i64>> = vec![vec![]; r];
    let mut n = 0;
    let mut i = 0;
    each_index(x.shape(), |o| {
        if v[i] != 0.0 {
            for d in 0..r {
                coords[d].push(o[d] as i64);
            }
            n += 1;
        }
        i += 1;
    });
    if r == 0 && !v.is_empty() && v[0] != 0.0 {
        n = 1;
    }
    Tensor::from_i64(vec![r, n], coords.concat())
}

pub fn compress(a: &NodeAttrs, x: &Tensor, cond: &Tensor) -> OpResult<Tensor> {
    let c = cond.to_f64();
    match a.int_opt("axis")? {
        None => {
            let idx: Vec<usize> = (0..x.len().min(c.len())).filter(|&i| c[i] != 0.0).collect();
            Ok(x.take(&idx, vec![idx.len()]))
        }
        Some(ax) => {
            let ax = axis(ax, x.rank())?;
            let keep: Vec<i64> = (0..x.shape()[ax].min(c.len())).filter(|&i| c[i] != 0.0).map(|i| i as i64).collect();
            let n = keep.len();
            let t = Tensor::from_i64(vec![n], keep);
            gather(x, &t, ax as i64)
        }
    }
}

pub fn reverse_sequence(a: &NodeAttrs, x: &Tensor, lens: &Tensor) -> OpResult<Tensor> {
    let bax = a.int("batch_axis", 1)? as usize;
    let tax = a.int("time_axis", 0)? as usize;
    if x.rank() < 2 || bax >= x.rank() || tax >= x.rank() {
        return Err("batch_axis/time_axis out of range".into());
    }
    let l = lens.to_i64();
    let st = strides(x.shape());
    let mut idx = Vec::with_capacity(x.len());
    each_index(x.shape(), |o| {
        let n = l.get(o[bax]).copied().unwrap_or(0) as usize;
        let t = if o[tax] < n { n - 1 - o[tax] } else { o[tax] };
        idx.push(o.iter().enumerate().map(|(d, &v)| if d == tax { t } else { v } * st[d]).sum());
    });
    Ok(x.take(&idx, x.shape().to_vec()))
}

pub fn center_crop_pad(a: &NodeAttrs, x: &Tensor, shape: &Tensor) -> OpResult<Tensor> {
    let r = x.rank();
    let target = shape.to_i64();
    let axes: Vec<usize> = match a.ints_opt("axes")? {
        Some(v) => v.iter().map(|&v| axis(v, r)).collect::<OpResult<_>>()?,
        None => (0..r).collect(),
    };
    if target.len() != axes.len() {
        return Err("shape must have one entry per axis".into());
    }
    let mut out_shape = x.shape().to_vec();
    let mut shift = vec![0i64; r];
    if target.iter().any(|&t| t < 0) {
        return Err(format!("shape {target:?} has a negative dim"));
    }
    for (i, &ax) in axes.iter().enumerate() {
        let (d, t) = (x.shape()[ax] as i64, target[i]);
        out_shape[ax] = t as usize;
        // crop: take from (d-t)/2; pad: place at (t-d)/2
        shift[ax] = if t <= d { (d - t) / 2 } else { -((t - d) / 2) };
    }
    super::check_size(&out_shape)?;
    // nothing to crop from: all padding
    if x.len() == 0 {
        return Ok(Tensor::zeros(x.dtype(), out_shape));
    }
    let st = strides(x.shape());
    let mut idx = vec![];
    let mut fill = vec![];
    each_index(&out_shape, |o| {
        let mut off = 0usize;
        let mut outside = false;
        for d in 0..r {
            let p = o[d] as i64 + shift[d];
            if p < 0 || p >= x.shape()[d] as i64 {
                outside = true;
            } else {
                off += p as usize * st[d];
            }
        }
        fill.push(outside);
        idx.push(if outside { 0 } else { off });
    });
    let mut data = x.data().take(&idx);
    let at: Vec<usize> = (0..fill.len()).filter(|&i| fill[i]).collect();
    data.put(&at, &TensorData::zeros(x.dtype(), at.len()));
    Ok(Tensor::new(out_shape, data))
}
