//! Linear quantization: QuantizeLinear / DequantizeLinear (per tensor, per axis and blocked
//! scales), DynamicQuantizeLinear, the *Integer ops (int32 results) and the QLinear* ops,
//! following the ONNX definitions and their reference implementation's order of operations
//! (integer accumulation, then one float factor, round half to even, saturate). 8- and 16-bit
//! integer types; scales must be positive and finite.
use super::attrs::{axis, opt, req, NodeAttrs};
use super::OpResult;
use crate::dtype::DType;
use crate::tensor::Tensor;
use half::{bf16, f16};

/// The values an integer type holds.
fn range(dt: DType) -> Option<(f64, f64)> {
    match dt {
        DType::I32 => Some((i32::MIN as f64, i32::MAX as f64)),
        _ => dt.quantized_range(),
    }
}

/// `v` rounded to the precision of float type `dt` (arithmetic in that type, as NumPy does).
fn round_to(dt: DType, v: f64) -> f64 {
    match dt {
        DType::F16 => f16::from_f64(v).to_f64(),
        DType::BF16 => bf16::from_f64(v).to_f64(),
        DType::F32 => v as f32 as f64,
        _ => v,
    }
}

/// Round half to even, then clamp into `dt`'s range.
fn saturate(dt: DType, v: f64) -> f64 {
    let (lo, hi) = range(dt).expect("an integer type");
    v.round_ties_even().clamp(lo, hi)
}

/// Checks that every scale is positive and finite (the error names the input).
fn check_scales(s: &Tensor, what: &str) -> OpResult<Vec<f64>> {
    if !s.dtype().is_float() {
        return Err(format!("{what} must be a float tensor, got {}", s.dtype()));
    }
    let v = s.to_f64();
    if let Some(bad) = v.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
        return Err(format!("{what} holds {bad}; scales must be positive and finite"));
    }
    Ok(v)
}

/// For each element of `x`, the index of its scale (and zero point) in `s`: per tensor (one
/// value), per axis (1-D along `axis`) or blocked (`s` of x's rank, `block` elements of `axis`
/// per entry).
fn scale_index(x: &[usize], s: &[usize], ax: i64, block: i64) -> OpResult<Vec<usize>> {
    let n: usize = x.iter().product();
    let count: usize = s.iter().product();
    if count == 1 {
        return Ok(vec![0; n]);
    }
    let a = axis(ax, x.len())?;
    let strides = crate::tensor::strides(x);
    if block <= 0 {
        if s.len() != 1 || s[0] != x[a] {
            return Err(format!("per-axis scales {s:?} do not match axis {a} of {x:?}"));
        }
        return Ok((0..n).map(|i| (i / strides[a]) % x[a]).collect());
    }
    let b = block as usize;
    let want: Vec<usize> = x.iter().enumerate().map(|(k, &d)| if k == a { d.div_ceil(b) } else { d }).collect();
    if s != want.as_slice() {
        return Err(format!("blocked scales {s:?} do not fit {x:?} in blocks of {b} along axis {a} (want {want:?})"));
    }
    let sst = crate::tensor::strides(s);
    Ok((0..n)
        .map(|i| {
            (0..x.len())
                .map(|k| {
                    let c = (i / strides[k]) % x[k];
                    (if k == a { c / b } else { c }) * sst[k]
                })
                .sum()
        })
        .collect())
}

/// The zero point's values (zeros when absent), checked against the scale's shape and `dt`.
fn zero_points(zp: Option<&Tensor>, scale: &Tensor, dt: DType, what: &str) -> OpResult<Vec<f64>> {
    match zp {
        None => Ok(vec![0.0; scale.len().max(1)]),
        Some(z) => {
            if z.dtype() != dt {
                return Err(format!("{what} is {}, the quantized data {dt}", z.dtype()));
            }
            if z.len() != scale.len() {
                return Err(format!("{what} {:?} and its scale {:?} differ in shape", z.shape(), scale.shape()));
            }
            Ok(z.to_f64())
        }
    }
}

pub fn dequantize(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (x, s) = (req(ins, 0)?, req(ins, 1)?);
    if range(x.dtype()).is_none() && !x.dtype().is_narrow_float() {
        return Err(format!("x of type {} is not a supported quantized type", x.dtype()));
    }
    let scales = check_scales(s, "x_scale")?;
    let zps = zero_points(opt(ins, 2), s, x.dtype(), "x_zero_point")?;
    float_zero(x.dtype(), &zps, "x_zero_point")?;
    let idx = scale_index(x.shape(), s.shape(), a.int("axis", 1)?, a.int("block_size", 0)?)?;
    let out = match a.int("output_dtype", 0)? {
        0 => s.dtype(),
        c => DType::from_onnx_code(c as i32)
            .filter(|d| d.is_float())
            .ok_or_else(|| format!("output_dtype {c} is not a float type"))?,
    };
    let v: Vec<f64> = x.to_f64().iter().zip(&idx).map(|(&q, &k)| round_to(out, (q - zps[k]) * scales[k])).collect();
    Ok(Tensor::from_f64(out, x.shape().to_vec(), &v))
}

pub fn quantize(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (x, s) = (req(ins, 0)?, req(ins, 1)?);
    if !x.dtype().is_float() {
        return Err(format!("x must be a float tensor, got {}", x.dtype()));
    }
    let scales = check_scales(s, "y_scale")?;
    let out = match (opt(ins, 2), a.int("output_dtype", 0)?) {
        (Some(z), c) if c != 0 && DType::from_onnx_code(c as i32) != Some(z.dtype()) => {
            return Err(format!("output_dtype {c} differs from the zero point's type {}", z.dtype()))
        }
        (Some(z), _) => z.dtype(),
        (None, 0) => DType::U8,
        (None, c) => DType::from_onnx_code(c as i32).ok_or_else(|| format!("output_dtype {c} is not a type"))?,
    };
    if (range(out).is_none() || out == DType::I32) && !out.is_narrow_float() {
        return Err(format!("{out} is not a supported quantized type (2- to 16-bit integers, FP8, FP4)"));
    }
    let zps = zero_points(opt(ins, 2), s, out, "y_zero_point")?;
    float_zero(out, &zps, "y_zero_point")?;
    let idx = scale_index(x.shape(), s.shape(), a.int("axis", 1)?, a.int("block_size", 0)?)?;
    // x / scale in the wider of their types, then round half to even, add the zero point,
    // saturate
    let dt = if x.dtype() == s.dtype() { x.dtype() } else { DType::F32 };
    let scaled = x.to_f64().into_iter().zip(&idx).map(|(r, &k)| (round_to(dt, r / scales[k]), k));
    if out.is_narrow_float() {
        // a float type rounds by itself: x / scale cast to it (FP4 always saturates)
        let sat = a.int("saturate", 1)? != 0;
        let codes = scaled.map(|(q, _)| crate::narrow::encode(out, q, sat)).collect();
        return Ok(Tensor::new(x.shape().to_vec(), crate::tensor::TensorData::Narrow(out, codes)));
    }
    let v: Vec<f64> = scaled.map(|(q, k)| saturate(out, q.round_ties_even() + zps[k])).collect();
    Ok(Tensor::from_f64(out, x.shape().to_vec(), &v))
}

/// A float quantized type has no zero point to speak of: one given must be zero.
fn float_zero(dt: DType, zps: &[f64], what: &str) -> OpResult<()> {
    if dt.is_narrow_float() && zps.iter().any(|&z| z != 0.0) {
        return Err(format!("{what} of the float type {dt} must be zero"));
    }
    Ok(())
}

/// (y u8, y_scale f32, y_zero_point u8) covering [min(x, 0), max(x, 0)] with 256 levels.
pub fn dynamic_quantize(x: &Tensor) -> OpResult<Vec<Tensor>> {
    if x.dtype() != DType::F32 {
        return Err(format!("x must be f32, got {}", x.dtype()));
    }
    let v = x.to_f64();
    if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
        return Err(format!("x holds {bad}: no scale covers it"));
    }
    let lo = v.iter().cloned().fold(0.0f64, f64::min) as f32;
    let hi = v.iter().cloned().fold(0.0f64, f64::max) as f32;
    // all zeros: a scale of 1/255 (the reference's "max == min ? 1")
    let scale = if hi == lo { 1.0 } else { hi - lo } / 255.0f32;
    let zp = ((0.0 - lo / scale) as f64).clamp(0.0, 255.0).round_ties_even();
    let q: Vec<f64> =
        v.iter().map(|&r| saturate(DType::U8, ((r as f32) / scale).round_ties_even() as f64 + zp)).collect();
    Ok(vec![
        Tensor::from_f64(DType::U8, x.shape().to_vec(), &q),
        Tensor::from_f32(vec![], vec![scale]),
        Tensor::from_f64(DType::U8, vec![], &[zp]),
    ])
}

/// `x - zp` as i64, with `zp` per tensor or per entry of `axis` (a 1-D zero point of that
/// axis's length); `what` names the zero point in errors.
fn centred(x: &Tensor, zp: Option<&Tensor>, ax: usize, what: &str) -> OpResult<Tensor> {
    if range(x.dtype()).is_none() {
        return Err(format!("{} is not a supported quantized type", x.dtype()));
    }
    let v = x.to_i128();
    let out: Vec<i128> = match zp {
        None => v,
        Some(z) => {
            if z.dtype() != x.dtype() {
                return Err(format!("{what} is {}, its data {}", z.dtype(), x.dtype()));
            }
            let zv = z.to_i128();
            if zv.len() == 1 {
                v.iter().map(|q| q - zv[0]).collect()
            } else if z.rank() == 1 && ax < x.rank() && zv.len() == x.shape()[ax] {
                let stride = crate::tensor::strides(x.shape())[ax];
                v.iter().enumerate().map(|(i, q)| q - zv[(i / stride) % zv.len()]).collect()
            } else {
                return Err(format!(
                    "{what} {:?} is neither a scalar nor one per entry of axis {ax} of {:?}",
                    z.shape(),
                    x.shape()
                ));
            }
        }
    };
    Ok(Tensor::from_i128(DType::I64, x.shape().to_vec(), &out))
}

/// The axis a per-row (A) zero point or scale runs along: the rows of A's last matrix.
fn row_axis(t: &Tensor) -> usize {
    t.rank().saturating_sub(2)
}

pub fn matmul_integer(ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (a, b) = (req(ins, 0)?, req(ins, 1)?);
    let a = centred(a, opt(ins, 2), row_axis(a), "a_zero_point")?;
    let b = centred(b, opt(ins, 3), b.rank().saturating_sub(1), "b_zero_point")?;
    Ok(super::linalg::matmul(&a, &b)?.cast(DType::I32))
}

pub fn conv_integer(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (x, w) = (req(ins, 0)?, req(ins, 1)?);
    let x = centred(x, opt(ins, 2), usize::MAX, "x_zero_point")?.cast(DType::F64);
    let w = centred(w, opt(ins, 3), 0, "w_zero_point")?.cast(DType::F64);
    Ok(super::conv::conv(a, &[Some(x), Some(w)])?.cast(DType::I32))
}

/// A scale's values, one per tensor or one per entry of `ax` of `of` (broadcast by index).
fn per(s: &Tensor, what: &str, of: &[usize], ax: usize) -> OpResult<Vec<f64>> {
    let v = check_scales(s, what)?;
    if v.len() == 1 || (s.rank() == 1 && ax < of.len() && v.len() == of[ax]) {
        Ok(v)
    } else {
        Err(format!("{what} {:?} is neither a scalar nor one per entry of axis {ax} of {of:?}", s.shape()))
    }
}

/// Requantizes an i32 accumulator `acc` (shape `shape`): `acc · factor[k] + y_zp` rounded and
/// saturated, `factor[k]` per entry `k` of axis `ax` (or one).
fn requantize(acc: &Tensor, factor: &[f64], ax: usize, yzp: Option<&Tensor>, fallback: DType) -> OpResult<Tensor> {
    let (out, zp) = match yzp {
        Some(z) if z.len() == 1 => (z.dtype(), z.to_f64()[0]),
        Some(z) => return Err(format!("y_zero_point must be a scalar, got {:?}", z.shape())),
        None => (fallback, 0.0),
    };
    if range(out).is_none() || out == DType::I32 {
        return Err(format!("y_zero_point of type {out} is not a supported quantized type"));
    }
    let stride = if factor.len() > 1 { crate::tensor::strides(acc.shape())[ax] } else { 1 };
    let v: Vec<f64> = acc
        .to_f64()
        .iter()
        .enumerate()
        .map(|(i, &c)| saturate(out, c * factor[(i / stride) % factor.len()] + zp))
        .collect();
    Ok(Tensor::from_f64(out, acc.shape().to_vec(), &v))
}

/// The combined factor `sa · sb / sy` per output entry, in the scales' type (as the ONNX
/// reference computes it).
fn factors(sa: &[f64], sb: &[f64], sy: f64, dt: DType) -> Vec<f64> {
    let n = sa.len().max(sb.len());
    (0..n).map(|k| round_to(dt, round_to(dt, sa[k % sa.len()] * sb[k % sb.len()]) / sy)).collect()
}

pub fn qlinear_matmul(ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (a, sa, b, sb, sy) = (req(ins, 0)?, req(ins, 1)?, req(ins, 3)?, req(ins, 4)?, req(ins, 6)?);
    let sav = per(sa, "a_scale", a.shape(), row_axis(a))?;
    let sbv = per(sb, "b_scale", b.shape(), b.rank().saturating_sub(1))?;
    let syv = per(sy, "y_scale", &[], 0)?;
    if sav.len() > 1 && sbv.len() > 1 {
        return Err("a_scale per row and b_scale per column together are not supported".into());
    }
    let acc = matmul_integer(&[Some(a.clone()), Some(b.clone()), opt(ins, 2).cloned(), opt(ins, 5).cloned()])?;
    let f = factors(&sav, &sbv, syv[0], sa.dtype());
    // a per-row factor runs along the output's rows, a per-column one along its columns
    let ax = if sav.len() > 1 { acc.rank().saturating_sub(2) } else { acc.rank().saturating_sub(1) };
    requantize(&acc, &f, ax, opt(ins, 7), a.dtype())
}

pub fn qlinear_conv(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (x, sx, w, sw, sy) = (req(ins, 0)?, req(ins, 1)?, req(ins, 3)?, req(ins, 4)?, req(ins, 6)?);
    let sxv = per(sx, "x_scale", &[], 0)?;
    let swv = per(sw, "w_scale", w.shape(), 0)?;
    let syv = per(sy, "y_scale", &[], 0)?;
    let mut acc = conv_integer(a, &[Some(x.clone()), Some(w.clone()), opt(ins, 2).cloned(), opt(ins, 5).cloned()])?;
    if let Some(bias) = opt(ins, 8) {
        let m = acc.shape()[1];
        if bias.dtype() != DType::I32 || bias.shape() != [m] {
            return Err(format!("B must be i32 [{m}], got {} {:?}", bias.dtype(), bias.shape()));
        }
        let plane: usize = acc.shape()[2..].iter().product();
        let bv = bias.to_i128();
        let v: Vec<i128> = acc.to_i128().iter().enumerate().map(|(i, c)| c + bv[(i / plane) % m]).collect();
        acc = Tensor::from_i128(DType::I32, acc.shape().to_vec(), &v);
    }
    let f = factors(&sxv, &swv, syv[0], sx.dtype());
    requantize(&acc, &f, 1, opt(ins, 7), x.dtype())
}
