//! Elementwise and broadcasting ops. Floats compute in f64 and round once to the output dtype
//! (f16/bf16 through f32); integers compute in i128 and wrap to the output width.
use super::attrs::{req, NodeAttrs};
use super::broadcast::{broadcast_index, broadcast_shapes};
use super::OpResult;
use crate::dtype::DType;
use crate::op::Op;
use crate::tensor::Tensor;

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// The float function of a unary op, with its attributes read.
fn unary_fn(op: Op, a: &NodeAttrs) -> OpResult<Box<dyn Fn(f64) -> f64>> {
    Ok(match op {
        Op::Abs => Box::new(f64::abs),
        Op::Neg => Box::new(|x: f64| -x),
        Op::Exp => Box::new(f64::exp),
        Op::Log => Box::new(f64::ln),
        Op::Sqrt => Box::new(f64::sqrt),
        Op::Reciprocal => Box::new(|x: f64| 1.0 / x),
        Op::Sin => Box::new(f64::sin),
        Op::Cos => Box::new(f64::cos),
        Op::Tan => Box::new(f64::tan),
        Op::Asin => Box::new(f64::asin),
        Op::Acos => Box::new(f64::acos),
        Op::Atan => Box::new(f64::atan),
        Op::Sinh => Box::new(f64::sinh),
        Op::Cosh => Box::new(f64::cosh),
        Op::Asinh => Box::new(f64::asinh),
        Op::Acosh => Box::new(f64::acosh),
        Op::Atanh => Box::new(f64::atanh),
        Op::Tanh => Box::new(f64::tanh),
        Op::Sigmoid => Box::new(sigmoid),
        Op::Relu => Box::new(|x: f64| if x > 0.0 { x } else { 0.0 }),
        Op::Erf => Box::new(libm::erf),
        Op::Floor => Box::new(f64::floor),
        Op::Ceil => Box::new(f64::ceil),
        Op::Round => Box::new(f64::round_ties_even),
        Op::Sign => Box::new(|x: f64| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }),
        Op::Softplus => Box::new(softplus),
        Op::Softsign => Box::new(|x: f64| x / (1.0 + x.abs())),
        Op::Mish => Box::new(|x: f64| x * softplus(x).tanh()),
        Op::Elu => {
            let al = a.float("alpha", 1.0)? as f64;
            Box::new(move |x: f64| if x >= 0.0 { x } else { al * (x.exp() - 1.0) })
        }
        Op::Selu => {
            let al = a.float("alpha", 1.673_263_2)? as f64;
            let g = a.float("gamma", 1.050_701)? as f64;
            Box::new(move |x: f64| if x > 0.0 { g * x } else { g * (al * x.exp() - al) })
        }
        Op::Celu => {
            let al = a.float("alpha", 1.0)? as f64;
            Box::new(move |x: f64| x.max(0.0) + (al * ((x / al).exp() - 1.0)).min(0.0))
        }
        Op::LeakyRelu => {
            let al = a.float("alpha", 0.01)? as f64;
            Box::new(move |x: f64| if x >= 0.0 { x } else { al * x })
        }
        Op::HardSigmoid => {
            let al = a.float("alpha", 0.2)? as f64;
            let be = a.float("beta", 0.5)? as f64;
            Box::new(move |x: f64| (al * x + be).clamp(0.0, 1.0))
        }
        Op::HardSwish => Box::new(|x: f64| x * (x / 6.0 + 0.5).clamp(0.0, 1.0)),
        Op::ThresholdedRelu => {
            let al = a.float("alpha", 1.0)? as f64;
            Box::new(move |x: f64| if x > al { x } else { 0.0 })
        }
        Op::Shrink => {
            let l = a.float("lambd", 0.5)? as f64;
            let b = a.float("bias", 0.0)? as f64;
            Box::new(move |x: f64| {
                if x < -l {
                    x + b
                } else if x > l {
                    x - b
                } else {
                    0.0
                }
            })
        }
        Op::Gelu => {
            if a.string("approximate", "none")? == "tanh" {
                Box::new(|x: f64| {
                    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
                })
            } else {
                Box::new(|x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)))
            }
        }
        Op::Swish => {
            let al = a.float("alpha", 1.0)? as f64;
            Box::new(move |x: f64| x * sigmoid(al * x))
        }
        _ => return Err(format!("{op} is not a unary float op")),
    })
}

/// Unary ops: float math, plus the integer forms of Abs, Neg, Sign, Relu and the bit/logic ops.
pub fn unary(op: Op, a: &NodeAttrs, x: &Tensor) -> OpResult<Tensor> {
    let dt = x.dtype();
    let shape = x.shape().to_vec();
    match op {
        Op::Not => {
            if dt != DType::Bool {
                return Err(format!("input must be bool, got {dt}"));
            }
            let v: Vec<f64> = x.to_f64().iter().map(|&b| (b == 0.0) as u8 as f64).collect();
            return Ok(Tensor::from_f64(DType::Bool, shape, &v));
        }
        Op::BitwiseNot => {
            if !dt.is_int() {
                return Err(format!("input must be an integer tensor, got {dt}"));
            }
            let v: Vec<i128> = x.to_i128().iter().map(|&i| !i).collect();
            return Ok(Tensor::from_i128(dt, shape, &v));
        }
        Op::IsNaN => {
            let v: Vec<bool> = x.to_f64().iter().map(|f| f.is_nan()).collect();
            return Ok(Tensor::from_bool(shape, v));
        }
        Op::IsInf => {
            let neg = a.int("detect_negative", 1)? != 0;
            let pos = a.int("detect_positive", 1)? != 0;
            let v = x.to_f64().iter().map(|f| f.is_infinite() && ((*f > 0.0 && pos) || (*f < 0.0 && neg))).collect();
            return Ok(Tensor::from_bool(shape, v));
        }
        _ => {}
    }
    if dt.is_float() {
        let f = unary_fn(op, a)?;
        return Ok(x.map_f64(f));
    }
    let f: fn(i128) -> i128 = match op {
        Op::Abs => |i| i.abs(),
        Op::Neg => |i| -i,
        Op::Sign => |i| i.signum(),
        Op::Relu => |i| i.max(0),
        Op::Floor | Op::Ceil | Op::Round => |i| i,
        _ => return Err(format!("input must be a float tensor, got {dt}")),
    };
    if dt == DType::Bool {
        return Err("input must be numeric, got bool".into());
    }
    Ok(Tensor::from_i128(dt, shape, &x.to_i128().into_iter().map(f).collect::<Vec<_>>()))
}

/// Broadcasts `ins` to one shape and returns each input's values (read by `values`) laid out
/// in that shape.
fn broadcast_as<T: Copy>(ins: &[&Tensor], values: impl Fn(&Tensor) -> Vec<T>) -> OpResult<(Vec<usize>, Vec<Vec<T>>)> {
    let shapes: Vec<&[usize]> = ins.iter().map(|t| t.shape()).collect();
    let out = broadcast_shapes(&shapes)?;
    let vals = ins
        .iter()
        .map(|t| {
            let v = values(t);
            if t.shape() == out.as_slice() {
                v
            } else {
                broadcast_index(t.shape(), &out).into_iter().map(|i| v[i]).collect()
            }
        })
        .collect();
    Ok((out, vals))
}

fn broadcast_f64(ins: &[&Tensor]) -> OpResult<(Vec<usize>, Vec<Vec<f64>>)> {
    broadcast_as(ins, Tensor::to_f64)
}

fn broadcast_i128(ins: &[&Tensor]) -> OpResult<(Vec<usize>, Vec<Vec<i128>>)> {
    broadcast_as(ins, Tensor::to_i128)
}

fn same_dtype(a: &Tensor, b: &Tensor) -> OpResult<()> {
    if a.dtype() != b.dtype() {
        return Err(format!("inputs have different dtypes {} and {}", a.dtype(), b.dtype()));
    }
    Ok(())
}

fn python_mod(a: i128, b: i128) -> i128 {
    let r = a % b;
    if r != 0 && ((r < 0) != (b < 0)) {
        r + b
    } else {
        r
    }
}

/// Binary arithmetic, comparison, logic and bit ops with broadcasting.
pub fn binary(op: Op, a: &NodeAttrs, x: &Tensor, y: &Tensor) -> OpResult<Tensor> {
    let dt = x.dtype();
    if op != Op::Pow && op != Op::PRelu {
        same_dtype(x, y)?;
    }
    let cmp = matches!(op, Op::Equal | Op::Less | Op::Greater | Op::LessOrEqual | Op::GreaterOrEqual);
    if cmp {
        let ints = !dt.is_float();
        let (shape, v) = if ints {
            let (s, v) = broadcast_i128(&[x, y])?;
            (s, v.into_iter().map(|c| c.into_iter().map(|i| i as f64).collect()).collect::<Vec<Vec<f64>>>())
        } else {
            broadcast_f64(&[x, y])?
        };
        let (p, q) = (&v[0], &v[1]);
        let r: Vec<bool> = if ints && matches!(op, Op::Equal) {
            // exact for 64-bit integers
            let (_, iv) = broadcast_i128(&[x, y])?;
            iv[0].iter().zip(&iv[1]).map(|(a, b)| a == b).collect()
        } else {
            p.iter()
                .zip(q)
                .map(|(&a, &b)| match op {
                    Op::Equal => a == b,
                    Op::Less => a < b,
                    Op::Greater => a > b,
                    Op::LessOrEqual => a <= b,
                    _ => a >= b,
                })
                .collect()
        };
        return Ok(Tensor::from_bool(shape, r));
    }
    if matches!(op, Op::And | Op::Or | Op::Xor) {
        if dt != DType::Bool {
            return Err(format!("inputs must be bool, got {dt}"));
        }
        let (shape, v) = broadcast_i128(&[x, y])?;
        let r = v[0]
            .iter()
            .zip(&v[1])
            .map(|(&a, &b)| match op {
                Op::And => a & b,
                Op::Or => a | b,
                _ => a ^ b,
            })
            .collect::<Vec<_>>();
        return Ok(Tensor::from_i128(DType::Bool, shape, &r));
    }
    if dt == DType::Bool {
        return Err(format!("{op} does not take bool inputs"));
    }
    if dt.is_float() {
        let (shape, v) = broadcast_f64(&[x, y])?;
        let fmod = a.int("fmod", 0)? != 0;
        let f: fn(f64, f64) -> f64 = match op {
            Op::Add => |a, b| a + b,
            Op::Sub => |a, b| a - b,
            Op::Mul => |a, b| a * b,
            Op::Div => |a, b| a / b,
            Op::Pow => f64::powf,
            Op::PRelu => |a, b| if a < 0.0 { a * b } else { a },
            Op::Mod if fmod => |a, b| a % b,
            Op::Mod => |a, b| {
                let r = a % b;
                if r != 0.0 && ((r < 0.0) != (b < 0.0)) {
                    r + b
                } else {
                    r
                }
            },
            _ => return Err(format!("{op} does not take float inputs")),
        };
        let r: Vec<f64> = v[0].iter().zip(&v[1]).map(|(&a, &b)| f(a, b)).collect();
        return Ok(Tensor::from_f64(dt, shape, &r));
    }
    if op == Op::Pow && y.dtype().is_float() {
        let (shape, v) = broadcast_f64(&[x, y])?;
        let r: Vec<f64> = v[0].iter().zip(&v[1]).map(|(&a, &b)| a.powf(b)).collect();
        return Ok(Tensor::from_f64(dt, shape, &r));
    }
    let (shape, v) = broadcast_i128(&[x, y])?;
    let bits = (dt.size() * 8) as u32;
    let left = a.string("direction", "")? == "LEFT";
    let fmod = a.int("fmod", 0)? != 0;
    let mut r = Vec::with_capacity(v[0].len());
    for (&p, &q) in v[0].iter().zip(&v[1]) {
        r.push(match op {
            Op::Add => p.wrapping_add(q),
            Op::Sub => p.wrapping_sub(q),
            Op::Mul => p.wrapping_mul(q),
            Op::Div | Op::Mod if q == 0 => return Err("integer division by zero".into()),
            Op::Div => p / q,
            Op::Mod if fmod => p % q,
            Op::Mod => python_mod(p, q),
            Op::Pow => {
                if q < 0 {
                    (p as f64).powf(q as f64) as i128
                } else {
                    // square-and-multiply; wrapping is exact modulo the output width
                    let (mut acc, mut base, mut e) = (1i128, p, q);
                    while e > 0 {
                        if e & 1 == 1 {
                            acc = acc.wrapping_mul(base);
                        }
                        base = base.wrapping_mul(base);
                        e >>= 1;
                    }
                    acc
                }
            }
            Op::PRelu => {
                if p < 0 {
                    p * q
                } else {
                    p
                }
            }
            Op::BitShift => {
                // shift amounts are unsigned: negative ones are huge and shift everything out
                if q < 0 || q >= bits as i128 {
                    if left || p >= 0 {
                        0
                    } else {
                        -1
                    }
                } else if left {
                    p << q
                } else {
                    p >> q
                }
            }
            Op::BitwiseAnd => p & q,
            Op::BitwiseOr => p | q,
            Op::BitwiseXor => p ^ q,
            _ => return Err(format!("{op} does not take integer inputs")),
        });
    }
    Ok(Tensor::from_i128(dt, shape, &r))
}

/// Variadic Min/Max/Sum/Mean with broadcasting.
pub fn variadic(op: Op, ins: &[&Tensor]) -> OpResult<Tensor> {
    if ins.is_empty() {
        return Err("needs at least one input".into());
    }
    for t in &ins[1..] {
        same_dtype(ins[0], t)?;
    }
    let dt = ins[0].dtype();
    if dt.is_float() {
        let (shape, v) = broadcast_f64(ins)?;
        let mut acc = v[0].clone();
        for other in &v[1..] {
            for (a, &b) in acc.iter_mut().zip(other) {
                *a = match op {
                    Op::Min => {
                        if a.is_nan() || b.is_nan() {
                            f64::NAN
                        } else {
                            a.min(b)
                        }
                    }
                    Op::Max => {
                        if a.is_nan() || b.is_nan() {
                            f64::NAN
                        } else {
                            a.max(b)
                        }
                    }
                    _ => *a + b,
                };
            }
        }
        if op == Op::Mean {
            acc.iter_mut().for_each(|a| *a /= ins.len() as f64);
        }
        return Ok(Tensor::from_f64(dt, shape, &acc));
    }
    let (shape, v) = broadcast_i128(ins)?;
    let mut acc = v[0].clone();
    for other in &v[1..] {
        for (a, &b) in acc.iter_mut().zip(other) {
            *a = match op {
                Op::Min => (*a).min(b),
                Op::Max => (*a).max(b),
                _ => *a + b,
            };
        }
    }
    if op == Op::Mean {
        acc.iter_mut().for_each(|a| *a /= ins.len() as i128);
    }
    Ok(Tensor::from_i128(dt, shape, &acc))
}

/// `Where(cond, x, y)` with three-way broadcasting, any dtype.
pub fn where_(c: &Tensor, x: &Tensor, y: &Tensor) -> OpResult<Tensor> {
    if c.dtype() != DType::Bool {
        return Err(format!("condition must be bool, got {}", c.dtype()));
    }
    same_dtype(x, y)?;
    let shape = broadcast_shapes(&[c.shape(), x.shape(), y.shape()])?;
    let cv = c.to_f64();
    let ci = broadcast_index(c.shape(), &shape);
    let xs = x.data().take(&broadcast_index(x.shape(), &shape));
    let mut out = y.data().take(&broadcast_index(y.shape(), &shape));
    let pick: Vec<usize> = (0..ci.len()).filter(|&i| cv[ci[i]] != 0.0).collect();
    out.put(&pick, &xs.take(&pick));
    Ok(Tensor::new(shape, out))
}

/// `Clip(x, min?, max?)`; bounds come from inputs (opset 11+) or attributes.
pub fn clip(a: &NodeAttrs, opset: i64, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let x = req(ins, 0)?;
    let (lo, hi) = if opset < 11 {
        (a.float_opt("min")?.map(|v| v as f64), a.float_opt("max")?.map(|v| v as f64))
    } else {
        let get = |i: usize| -> OpResult<Option<f64>> {
            match super::attrs::opt(ins, i) {
                None => Ok(None),
                Some(t) if t.len() == 1 => Ok(Some(t.to_f64()[0])),
                Some(t) => Err(format!("bound input {i} must be a scalar, got shape {:?}", t.shape())),
            }
        };
        (get(1)?, get(2)?)
    };
    let f = |v: f64| {
        let v = lo.map_or(v, |l| if v < l { l } else { v });
        hi.map_or(v, |h| if v > h { h } else { v })
    };
    if x.dtype().is_float() {
        Ok(x.map_f64(f))
    } else {
        let v: Vec<i128> = x.to_i128().into_iter().map(|i| f(i as f64) as i128).collect();
        Ok(Tensor::from_i128(x.dtype(), x.shape().to_vec(), &v))
    }
}

/// ONNX `Cast` to `to`; `saturate` (default true) says whether a float too large for an FP8
/// type becomes its largest value or infinity/NaN.
pub fn cast(x: &Tensor, to: DType, saturate: bool) -> Tensor {
    if to.is_narrow_float() && !saturate && x.dtype() != to {
        let codes = x.to_f64().iter().map(|&v| crate::narrow::encode(to, v, false)).collect();
        return Tensor::new(x.shape().to_vec(), crate::tensor::TensorData::Narrow(to, codes));
    }
    Tensor::new(x.shape().to_vec(), x.data().cast(to))
}
