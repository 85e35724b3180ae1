//! Resize (opset 10+) and Upsample: nearest, linear and cubic, every coordinate transform.
use super::attrs::{axis, opt, req, NodeAttrs};
use super::conv::each_index;
use super::OpResult;
use crate::tensor::{numel, strides, Tensor};

struct Plan {
    mode: String,
    coord: String,
    nearest: String,
    cubic_a: f64,
    exclude_outside: bool,
    extrapolation: f64,
}

/// Source coordinate of output coordinate `o`; `out_len` is the unrounded `scale · in_len`.
fn src_coord(p: &Plan, o: f64, scale: f64, in_len: usize, out_int: usize, roi: (f64, f64)) -> f64 {
    let i = in_len as f64;
    let on = scale * i;
    match p.coord.as_str() {
        "asymmetric" => o / scale,
        "pytorch_half_pixel" => {
            if on == 1.0 {
                -0.5
            } else {
                (o + 0.5) / scale - 0.5
            }
        }
        "align_corners" => {
            if on == 1.0 {
                0.0
            } else {
                o * (i - 1.0) / (on - 1.0)
            }
        }
        "tf_crop_and_resize" => {
            let x = if on == 1.0 {
                (roi.1 - roi.0) * (i - 1.0) / 2.0
            } else {
                o * (roi.1 - roi.0) * (i - 1.0) / (on - 1.0)
            };
            x + roi.0 * (i - 1.0)
        }
        "half_pixel_symmetric" => {
            let adj = out_int as f64 / on;
            let offset = i / 2.0 * (1.0 - adj);
            offset + (o + 0.5) / scale - 0.5
        }
        _ => (o + 0.5) / scale - 0.5, // half_pixel
    }
}

/// Keys cubic kernel with coefficient `a`.
fn cubic(a: f64, x: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// Interpolation weights for a source coordinate whose fractional part is `ratio` in (0, 1].
fn coefficients(p: &Plan, ratio: f64, scale: f64, antialias: bool) -> Vec<f64> {
    let normalize = |c: Vec<f64>| {
        let s: f64 = c.iter().sum();
        c.into_iter().map(|v| v / s).collect::<Vec<_>>()
    };
    match (p.mode.as_str(), antialias) {
        ("linear", false) => vec![1.0 - ratio, ratio],
        ("linear", true) => {
            let s = scale.min(1.0);
            let start = (-1.0 / s).floor() as i64 + 1;
            let footprint = 2 - 2 * start;
            normalize(
                (start..start + footprint).map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0)).collect(),
            )
        }
        (_, false) => vec![
            cubic(p.cubic_a, ratio + 1.0),
            cubic(p.cubic_a, ratio),
            cubic(p.cubic_a, 1.0 - ratio),
            cubic(p.cubic_a, 2.0 - ratio),
        ],
        (_, true) => {
            let s = scale.min(1.0);
            let start = (-2.0 / s).floor() as i64 + 1;
            normalize((start..2 - start).map(|i| cubic(p.cubic_a, s * (i as f64 - ratio))).collect())
        }
    }
}

/// (input index, weight) pairs that make one output coordinate along an axis.
pub type Taps = Vec<(isize, f64)>;

/// Weights of the taps around source coordinate `x` along one axis of length `n`.
fn taps(p: &Plan, x: f64, n: usize, scale: f64, antialias: bool) -> Taps {
    if p.mode == "nearest" {
        let r = match p.nearest.as_str() {
            "round_prefer_ceil" => (x + 0.5).floor(),
            "floor" => x.floor(),
            "ceil" => x.ceil(),
            // round_prefer_floor
            _ => (x - 0.5).ceil(),
        };
        return vec![((r as isize).clamp(0, n as isize - 1), 1.0)];
    }
    let ratio = if x.fract() == 0.0 { 1.0 } else { x - x.floor() };
    let mut c = coefficients(p, ratio, scale, antialias);
    let k = c.len();
    // the k integers nearest to x (ties to the smaller), inside the edge-padded axis
    let pad = k.div_ceil(2) as f64;
    let limit = n as f64 + 2.0 * pad;
    let first = ((x + pad - k as f64 / 2.0).ceil()).clamp(0.0, limit - k as f64) - pad;
    let idx: Vec<isize> = (0..k).map(|j| first as isize + j as isize).collect();
    if p.exclude_outside {
        for (j, &i) in idx.iter().enumerate() {
            if i < 0 || i >= n as isize {
                c[j] = 0.0;
            }
        }
        let s: f64 = c.iter().sum();
        c.iter_mut().for_each(|v| *v /= s);
    }
    idx.into_iter().map(|i| i.clamp(0, n as isize - 1)).zip(c).collect()
}

/// Resize as separable taps: per axis and output coordinate, the (input index, weight) pairs
/// whose product over the axes weights each input element, or None where the coordinate falls
/// outside (tf_crop_and_resize: the output is `extrapolation` there).
pub struct ResizePlan {
    pub out_shape: Vec<usize>,
    pub per_axis: Vec<Vec<Option<Taps>>>,
    pub extrapolation: f64,
}

/// The taps of a Resize/Upsample of an input of `in_shape`; `ins` holds its constant operands
/// (the data slot may be empty).
pub fn resize_plan(
    a: &NodeAttrs,
    opset: i64,
    in_shape: &[usize],
    ins: &[Option<Tensor>],
    upsample: bool,
) -> OpResult<ResizePlan> {
    let r = in_shape.len();
    let plan = Plan {
        mode: a.string("mode", "nearest")?,
        coord: if upsample || opset < 11 {
            "asymmetric".into()
        } else {
            a.string("coordinate_transformation_mode", "half_pixel")?
        },
        nearest: if upsample || opset < 11 { "floor".into() } else { a.string("nearest_mode", "round_prefer_floor")? },
        cubic_a: a.float("cubic_coeff_a", -0.75)? as f64,
        exclude_outside: a.int("exclude_outside", 0)? != 0,
        extrapolation: a.float("extrapolation_value", 0.0)? as f64,
    };
    let known = |what: &str, v: &str, of: &[&str]| -> OpResult<()> {
        if of.contains(&v) {
            Ok(())
        } else {
            Err(format!("unknown {what} '{v}' (one of {})", of.join(", ")))
        }
    };
    known("mode", &plan.mode, &["nearest", "linear", "cubic"])?;
    known(
        "coordinate_transformation_mode",
        &plan.coord,
        &[
            "half_pixel",
            "half_pixel_symmetric",
            "pytorch_half_pixel",
            "align_corners",
            "asymmetric",
            "tf_half_pixel_for_nearest",
            "tf_crop_and_resize",
        ],
    )?;
    known("nearest_mode", &plan.nearest, &["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])?;
    let antialias = a.int("antialias", 0)? != 0;
    let axes: Vec<usize> = match a.ints_opt("axes")? {
        Some(v) => v.iter().map(|&v| axis(v, r)).collect::<OpResult<_>>()?,
        None => (0..r).collect(),
    };
    let (roi_t, scales_t, sizes_t) = if upsample {
        (
            None,
            Some(if opset < 9 {
                Tensor::from_f64(
                    crate::dtype::DType::F32,
                    vec![r],
                    &a.floats_opt("scales")?.unwrap_or_default().iter().map(|&v| v as f64).collect::<Vec<_>>(),
                )
            } else {
                req(ins, 1)?.clone()
            }),
            None,
        )
    } else if opset < 11 {
        (None, Some(req(ins, 1)?.clone()), None)
    } else {
        (
            opt(ins, 1).filter(|t| !t.is_empty()).cloned(),
            opt(ins, 2).filter(|t| !t.is_empty()).cloned(),
            opt(ins, 3).filter(|t| !t.is_empty()).cloned(),
        )
    };
    let mut scales = vec![1.0f64; r];
    let mut out_shape = in_shape.to_vec();
    let policy = a.string("keep_aspect_ratio_policy", "stretch")?;
    known("keep_aspect_ratio_policy", &policy, &["stretch", "not_larger", "not_smaller"])?;
    if let Some(s) = sizes_t {
        let s = s.to_i64();
        if s.len() != axes.len() {
            return Err(format!("sizes {s:?} must have one entry per resized axis"));
        }
        if s.iter().any(|&v| v < 0) {
            return Err(format!("sizes {s:?} must not be negative"));
        }
        // sizes scale each axis by size / length: an empty axis has no scale
        if let Some(&ax) = axes.iter().find(|&&ax| in_shape[ax] == 0) {
            return Err(format!("axis {ax} is empty: sizes {s:?} cannot scale it"));
        }
        let mut sc: Vec<f64> = axes.iter().zip(&s).map(|(&ax, &v)| v as f64 / in_shape[ax] as f64).collect();
        if policy != "stretch" {
            let k = if policy == "not_larger" {
                sc.iter().cloned().fold(f64::INFINITY, f64::min)
            } else {
                sc.iter().cloned().fold(0.0, f64::max)
            };
            sc = vec![k; sc.len()];
            for (i, &ax) in axes.iter().enumerate() {
                out_shape[ax] = (in_shape[ax] as f64 * k).round() as usize;
                scales[ax] = sc[i];
            }
        } else {
            for (i, &ax) in axes.iter().enumerate() {
                out_shape[ax] = s[i] as usize;
                scales[ax] = sc[i];
            }
        }
    } else if let Some(s) = scales_t {
        let s = s.to_f64();
        if s.len() != axes.len() {
            return Err(format!("scales {s:?} must have one entry per resized axis"));
        }
        for (i, &ax) in axes.iter().enumerate() {
            if s[i] <= 0.0 {
                return Err(format!("scale {} must be positive", s[i]));
            }
            if !s[i].is_finite() {
                return Err(format!("scale {} is not finite", s[i]));
            }
            scales[ax] = s[i];
            out_shape[ax] = (in_shape[ax] as f64 * s[i]).floor() as usize;
        }
    } else {
        return Err("one of scales and sizes is required".into());
    }
    super::check_size(&out_shape)?;
    // each axis alone too (the plan holds taps per coordinate of every axis, even where another
    // axis makes the tensor empty)
    for &d in &out_shape {
        super::check_size(&[d])?;
    }
    // an output element of an empty axis would have nothing to read
    if let Some(d) = (0..r).find(|&d| in_shape[d] == 0 && out_shape[d] > 0) {
        return Err(format!("axis {d} is empty and cannot be resized to {}", out_shape[d]));
    }
    let mut roi = vec![(0.0, 1.0); r];
    if let Some(t) = roi_t {
        let v = t.to_f64();
        if v.len() == 2 * axes.len() {
            for (i, &ax) in axes.iter().enumerate() {
                roi[ax] = (v[i], v[axes.len() + i]);
            }
        }
    }
    // per axis and output coordinate: the taps, or None when outside (tf_crop_and_resize)
    let per_axis: Vec<Vec<Option<Taps>>> = (0..r)
        .map(|d| {
            (0..out_shape[d])
                .map(|o| {
                    if out_shape[d] == in_shape[d] && scales[d] == 1.0 && plan.coord != "tf_crop_and_resize" {
                        return Some(vec![(o as isize, 1.0)]);
                    }
                    let c = src_coord(&plan, o as f64, scales[d], in_shape[d], out_shape[d], roi[d]);
                    if plan.coord == "tf_crop_and_resize" && (c < 0.0 || c > (in_shape[d] - 1) as f64) {
                        return None;
                    }
                    Some(taps(&plan, c, in_shape[d], scales[d], antialias))
                })
                .collect()
        })
        .collect();
    Ok(ResizePlan { out_shape, per_axis, extrapolation: plan.extrapolation })
}

pub fn resize(a: &NodeAttrs, opset: i64, ins: &[Option<Tensor>], upsample: bool) -> OpResult<Tensor> {
    let x = req(ins, 0)?;
    let r = x.rank();
    let ResizePlan { out_shape, per_axis, extrapolation } = resize_plan(a, opset, x.shape(), ins, upsample)?;
    let v = x.to_f64();
    let st = strides(x.shape());
    let mut out = Vec::with_capacity(numel(&out_shape));
    each_index(&out_shape, |o| {
        let lists: Vec<&Option<Vec<(isize, f64)>>> = (0..r).map(|d| &per_axis[d][o[d]]).collect();
        if lists.iter().any(|l| l.is_none()) {
            out.push(extrapolation);
            return;
        }
        let lists: Vec<&Vec<(isize, f64)>> = lists.into_iter().map(|l| l.as_ref().unwrap()).collect();
        let counts: Vec<usize> = lists.iter().map(|l| l.len()).collect();
        let mut acc = 0.0;
        each_index(&counts, |k| {
            let mut w = 1.0;
            let mut off = 0usize;
            for d in 0..r {
                let (j, wt) = lists[d][k[d]];
                w *= wt;
                off += j as usize * st[d];
            }
            acc += w * v[off];
        });
        out.push(acc);
    });
    if x.dtype().is_float() {
        Ok(Tensor::from_f64(x.dtype(), out_shape, &out))
    } else {
        Ok(Tensor::from_f64(x.dtype(), out_shape, &out.iter().map(|v| v.round()).collect::<Vec<_>>()))
    }
}
