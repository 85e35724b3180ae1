//! Reductions along axes: reduce-*, arg-min/max, softmax family, cumulative sums, top-k.
use super::attrs::{axis, opt, req, NodeAttrs};
use super::OpResult;
use crate::op::Op;
use crate::tensor::{numel, Tensor};

/// Splits `shape` around `axis` into (outer, len, inner) element counts.
pub fn around_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]))
}

/// Normalized, sorted, de-duplicated reduction axes; empty `axes` means all unless `noop`.
fn reduce_axes(axes: Option<Vec<i64>>, rank: usize, noop: bool) -> OpResult<Option<Vec<usize>>> {
    match axes {
        Some(a) if !a.is_empty() => {
            let mut v = a.iter().map(|&x| axis(x, rank)).collect::<OpResult<Vec<_>>>()?;
            v.sort();
            v.dedup();
            Ok(Some(v))
        }
        _ if noop => Ok(None),
        _ => Ok(Some((0..rank).collect())),
    }
}

/// For each input element, the flat index of the output element it reduces into.
fn reduce_map(shape: &[usize], axes: &[usize]) -> (Vec<usize>, usize) {
    let out_shape: Vec<usize> = shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
    let out_n = numel(&out_shape);
    let idx = super::broadcast::broadcast_index(&out_shape, shape);
    (idx, out_n)
}

/// The axes of a reduce op, from its attribute (older opsets) or its second input.
fn axes_of(op: Op, a: &NodeAttrs, opset: i64, ins: &[Option<Tensor>]) -> OpResult<Option<Vec<i64>>> {
    let input_from = if op == Op::ReduceSum { 13 } else { 18 };
    if opset >= input_from {
        Ok(opt(ins, 1).map(|t| t.to_i64()))
    } else if opt(ins, 1).is_some() {
        Err(format!(
            "axes as an input needs opset {input_from} (the model has opset {opset}); use the 'axes' attribute"
        ))
    } else {
        a.ints_opt("axes")
    }
}

pub fn reduce(op: Op, a: &NodeAttrs, opset: i64, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let x = req(ins, 0)?;
    let keep = a.int("keepdims", 1)? != 0;
    let noop = a.int("noop_with_empty_axes", 0)? != 0;
    let shape = x.shape();
    let Some(axes) = reduce_axes(axes_of(op, a, opset, ins)?, shape.len(), noop)? else {
        return Ok(x.clone());
    };
    let (map, out_n) = reduce_map(shape, &axes);
    let v = x.to_f64();
    let init = match op {
        Op::ReduceMax => f64::NEG_INFINITY,
        Op::ReduceMin => f64::INFINITY,
        Op::ReduceProd => 1.0,
        _ => 0.0,
    };
    let mut acc = vec![init; out_n];
    let mut count = vec![0usize; out_n];
    let max = if op == Op::ReduceLogSumExp {
        let mut m = vec![f64::NEG_INFINITY; out_n];
        for (i, &o) in map.iter().enumerate() {
            m[o] = m[o].max(v[i]);
        }
        m.iter().map(|&x| if x.is_finite() { x } else { 0.0 }).collect()
    } else {
        vec![]
    };
    for (i, &o) in map.iter().enumerate() {
        let x = v[i];
        let a = &mut acc[o];
        count[o] += 1;
        *a = match op {
            Op::ReduceSum | Op::ReduceMean => *a + x,
            Op::ReduceMax => {
                if x.is_nan() || a.is_nan() {
                    f64::NAN
                } else {
                    a.max(x)
                }
            }
            Op::ReduceMin => {
                if x.is_nan() || a.is_nan() {
                    f64::NAN
                } else {
                    a.min(x)
                }
            }
            Op::ReduceProd => *a * x,
            Op::ReduceL1 => *a + x.abs(),
            Op::ReduceL2 | Op::ReduceSumSquare => *a + x * x,
            Op::ReduceLogSum => *a + x,
            Op::ReduceLogSumExp => *a + (x - max[o]).exp(),
            _ => return Err(format!("{op} is not a reduction")),
        };
    }
    for (o, a) in acc.iter_mut().enumerate() {
        *a = match op {
            Op::ReduceMean => *a / count[o] as f64,
            Op::ReduceL2 => a.sqrt(),
            Op::ReduceLogSum => a.ln(),
            Op::ReduceLogSumExp => a.ln() + max[o],
            _ => *a,
        };
    }
    let out_shape = reduced_shape(shape, &axes, keep);
    if x.dtype().is_float() {
        Ok(Tensor::from_f64(x.dtype(), out_shape, &acc))
    } else {
        // integer reductions: recompute exactly where f64 could lose precision
        if matches!(op, Op::ReduceSum | Op::ReduceProd | Op::ReduceSumSquare | Op::ReduceMax | Op::ReduceMin) {
            let iv = x.to_i128();
            let mut acc: Vec<Option<i128>> = vec![None; out_n];
            for (i, &o) in map.iter().enumerate() {
                let x = iv[i];
                acc[o] = Some(match (acc[o], op) {
                    (None, Op::ReduceSumSquare) => x * x,
                    (None, _) => x,
                    (Some(a), Op::ReduceSum) => a.wrapping_add(x),
                    (Some(a), Op::ReduceProd) => a.wrapping_mul(x),
                    (Some(a), Op::ReduceSumSquare) => a.wrapping_add(x * x),
                    (Some(a), Op::ReduceMax) => a.max(x),
                    (Some(a), _) => a.min(x),
                });
            }
            let bool_ = x.dtype() == crate::dtype::DType::Bool;
            let empty = match op {
                Op::ReduceProd => 1,
                Op::ReduceMax if bool_ => 0,
                Op::ReduceMin if bool_ => 1,
                Op::ReduceMax => i128::MIN,
                Op::ReduceMin => i128::MAX,
                _ => 0,
            };
            let v: Vec<i128> = acc.into_iter().map(|a| a.unwrap_or(empty)).collect();
            return Ok(Tensor::from_i128(x.dtype(), out_shape, &v));
        }
        Ok(Tensor::from_f64(x.dtype(), out_shape, &acc.iter().map(|v| v.floor()).collect::<Vec<_>>()))
    }
}

fn reduced_shape(shape: &[usize], axes: &[usize], keep: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
            (true, true) => Some(1),
            (true, false) => None,
            _ => Some(d),
        })
        .collect()
}

pub fn arg_reduce(op: Op, a: &NodeAttrs, x: &Tensor) -> OpResult<Tensor> {
    let ax = axis(a.int("axis", 0)?, x.rank())?;
    let keep = a.int("keepdims", 1)? != 0;
    let last = a.int("select_last_index", 0)? != 0;
    let (outer, len, inner) = around_axis(x.shape(), ax);
    if len == 0 {
        return Err(format!("cannot take {op} over an empty axis"));
    }
    let v = x.to_f64();
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0usize;
            for k in 1..len {
                let (c, b) = (v[(o * len + k) * inner + i], v[(o * len + best) * inner + i]);
                let better = if op == Op::ArgMax { c > b || (last && c == b) } else { c < b || (last && c == b) };
                if better {
                    best = k;
                }
            }
            out.push(best as i64);
        }
    }
    Ok(Tensor::from_i64(reduced_shape(x.shape(), &[ax], keep), out))
}

/// Softmax, LogSoftmax and Hardmax. Before opset 13 the input is coerced to 2-D at `axis`.
pub fn softmax(op: Op, a: &NodeAttrs, opset: i64, x: &Tensor) -> OpResult<Tensor> {
    let rank = x.rank();
    let (outer, len, inner) = if opset < 13 {
        let ax = axis(a.int("axis", 1)?, rank.max(1))?;
        (numel(&x.shape()[..ax]), numel(&x.shape()[ax..]), 1)
    } else {
        if rank == 0 {
            return Err("input must have rank at least 1".into());
        }
        around_axis(x.shape(), axis(a.int("axis", -1)?, rank)?)
    };
    let v = x.to_f64();
    let mut out = vec![0.0; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let m = (0..len).map(|k| v[at(k)]).fold(f64::NEG_INFINITY, f64::max);
            match op {
                Op::Hardmax => {
                    if let Some(k) = (0..len).find(|&k| v[at(k)] == m) {
                        out[at(k)] = 1.0;
                    }
                }
                _ => {
                    let s: f64 = (0..len).map(|k| (v[at(k)] - m).exp()).sum();
                    for k in 0..len {
                        out[at(k)] =
                            if op == Op::LogSoftmax { v[at(k)] - m - s.ln() } else { (v[at(k)] - m).exp() / s };
                    }
                }
            }
        }
    }
    Ok(Tensor::from_f64(x.dtype(), x.shape().to_vec(), &out))
}

/// CumSum / CumProd along the axis given by input 1.
pub fn cumulative(op: Op, a: &NodeAttrs, x: &Tensor, ax: &Tensor) -> OpResult<Tensor> {
    if ax.len() != 1 {
        return Err("axis input must hold one value".into());
    }
    let ax = axis(ax.to_i64()[0], x.rank())?;
    let exclusive = a.int("exclusive", 0)? != 0;
    let reverse = a.int("reverse", 0)? != 0;
    let (outer, len, inner) = around_axis(x.shape(), ax);
    let prod = op == Op::CumProd;
    let float = x.dtype().is_float();
    let fv = x.to_f64();
    let iv = if float { vec![] } else { x.to_i128() };
    let mut fo = vec![0.0; fv.len()];
    let mut io = vec![0i128; iv.len()];
    for o in 0..outer {
        for i in 0..inner {
            let (mut fa, mut ia) = if prod { (1.0, 1i128) } else { (0.0, 0i128) };
            for step in 0..len {
                let k = if reverse { len - 1 - step } else { step };
                let at = (o * len + k) * inner + i;
                if exclusive {
                    if float {
                        fo[at] = fa
                    } else {
                        io[at] = ia
                    }
                }
                if float {
                    fa = if prod { fa * fv[at] } else { fa + fv[at] };
                } else {
                    ia = if prod { ia.wrapping_mul(iv[at]) } else { ia.wrapping_add(iv[at]) };
                }
                if !exclusive {
                    if float {
                        fo[at] = fa
                    } else {
                        io[at] = ia
                    }
                }
            }
        }
    }
    Ok(if float {
        Tensor::from_f64(x.dtype(), x.shape().to_vec(), &fo)
    } else {
        Tensor::from_i128(x.dtype(), x.shape().to_vec(), &io)
    })
}

/// TopK: values and int64 indices; ties keep the lower index first.
pub fn topk(a: &NodeAttrs, opset: i64, ins: &[Option<Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = req(ins, 0)?;
    let k = if opset < 10 { a.int("k", 0)? } else { req(ins, 1)?.to_i64().first().copied().ok_or("K is empty")? };
    let ax = axis(a.int("axis", -1)?, x.rank())?;
    let largest = a.int("largest", 1)? != 0;
    let (outer, len, inner) = around_axis(x.shape(), ax);
    if k < 0 || k as usize > len {
        return Err(format!("K = {k} is out of range for an axis of length {len}"));
    }
    let k = k as usize;
    let v = x.to_f64();
    let mut idx_out = Vec::with_capacity(outer * k * inner);
    let mut src = vec![0usize; outer * k * inner];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            let mut order: Vec<usize> = (0..len).collect();
            order.sort_by(|&p, &q| {
                let (a, b) = (v[at(p)], v[at(q)]);
                let c = if largest { b.partial_cmp(&a) } else { a.partial_cmp(&b) };
                c.unwrap_or(std::cmp::Ordering::Equal).then(p.cmp(&q))
            });
            for (r, &j) in order.iter().take(k).enumerate() {
                src[(o * k + r) * inner + i] = at(j);
            }
        }
    }
    let mut shape = x.shape().to_vec();
    shape[ax] = k;
    for &s in &src {
        let rem = s % (len * inner);
        idx_out.push((rem / inner) as i64);
    }
    Ok(vec![x.take(&src, shape.clone()), Tensor::from_i64(shape, idx_out)])
}
