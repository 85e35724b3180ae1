//! Elementwise and broadcasting ops of any dtype (interp/elementwise.rs): one thread per output
//! element reads each operand at its broadcast index. Views copy (same flat index).
use super::scalar::{self as s, konst, Ty, Val};
use super::{Kern, R};
use crate::body::Body;
use xforge_ir::interp::NodeAttrs;
use xforge_ir::tensor::numel;
use xforge_ir::{DType, Op};

/// Which inputs an op reads as values: views and CastLike only their data.
fn value_inputs(k: &Kern) -> Vec<usize> {
    match k.n.op {
        Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze | Op::Identity | Op::CastLike | Op::Dropout => {
            vec![0]
        }
        _ => (0..k.n.inputs.len()).filter(|&i| k.in_val(i).is_some()).collect(),
    }
}

pub fn elementwise(k: &mut Kern) -> R<usize> {
    let op = k.n.op;
    let out_shape = k.out_shape(0)?;
    let out_dt = k.out_dtype(0)?;
    let n = numel(&out_shape);
    let view = matches!(op, Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze | Op::Identity | Op::Dropout);
    if op == Op::Dropout {
        let training = k.konst(2).map(|t| t.to_f64().first().copied().unwrap_or(0.0) != 0.0);
        let ratio = k.konst(1).map(|t| t.to_f64().first().copied().unwrap_or(0.5)).unwrap_or(0.5);
        match training {
            Some(true) if ratio > 0.0 => return Err("training mode with a non-zero ratio is random".into()),
            None if k.in_val(2).is_some() => return Err("training_mode is known only at run time".into()),
            _ => {}
        }
    }
    let reads = value_inputs(k);
    let mut ins = vec![];
    for &j in &reads {
        let shape = k.in_shape(j)?;
        if !view && shape.len() > out_shape.len() {
            return Err(format!("input {j} has more axes than the output"));
        }
        ins.push((k.input(j)?, shape));
    }
    let out = k.output(0)?;
    let mask = if op == Op::Dropout && k.out_val(1).is_some() { Some(k.output(1)?) } else { None };
    k.for_each(n, |k, i| {
        let oc = if view { vec![] } else { k.coords(i, &out_shape) };
        let mut args = vec![];
        for (p, shape) in &ins {
            let at = if view || *shape == out_shape { i.to_string() } else { k.broadcast_at(&oc, shape) };
            args.push(k.load(*p, &at));
        }
        let v = apply(k, &args, out_dt)?;
        k.store(out, i, &v);
        if let Some(m) = mask {
            let t = konst(&mut k.b, 1.0, Ty::Bool);
            k.store(m, i, &t);
        }
        Ok(())
    })?;
    Ok(n)
}

fn fattr(a: &NodeAttrs, name: &str, d: f32) -> R<f64> {
    Ok(a.float(name, d)? as f64)
}

fn sigmoid(b: &mut Body, x: &Val) -> Val {
    // 1/(1+e^-x) for x ≥ 0, e^x/(1+e^x) below: no overflow either way
    let (one, zero) = (konst(b, 1.0, x.ty), konst(b, 0.0, x.ty));
    let ge = s::cmp(b, "ge", x, &zero);
    let nx = s::neg(b, x);
    let m = s::select(b, &ge, &nx, x);
    let e = s::math(b, "exp", &m);
    let d = s::add(b, &one, &e);
    let num = s::select(b, &ge, &one, &e);
    s::div(b, &num, &d)
}

fn softplus(b: &mut Body, x: &Val) -> Val {
    let t = konst(b, 30.0, x.ty);
    let big = s::cmp(b, "gt", x, &t);
    let e = s::math(b, "exp", x);
    let l = s::math(b, "log1p", &e);
    s::select(b, &big, x, &l)
}

/// `lo ≤ v ≤ hi` by comparisons (NaN passes through, as in the interpreter).
fn clamp(b: &mut Body, v: &Val, lo: Option<&Val>, hi: Option<&Val>) -> Val {
    let mut v = v.clone();
    if let Some(lo) = lo {
        let lt = s::cmp(b, "lt", &v, lo);
        v = s::select(b, &lt, lo, &v);
    }
    if let Some(hi) = hi {
        let gt = s::cmp(b, "gt", &v, hi);
        v = s::select(b, &gt, hi, &v);
    }
    v
}

/// Float unary math of the interpreter's `unary_fn`.
fn float_unary(k: &mut Kern, x: &Val) -> R<Val> {
    let op = k.n.op;
    let a = k.attrs();
    let b = &mut k.b;
    let t = x.ty;
    let zero = konst(b, 0.0, t);
    let one = konst(b, 1.0, t);
    Ok(match op {
        Op::Abs => s::math(b, "absf", x),
        Op::Neg => s::neg(b, x),
        Op::Exp => s::math(b, "exp", x),
        Op::Log => s::math(b, "log", x),
        Op::Sqrt => s::math(b, "sqrt", x),
        Op::Sin => s::math(b, "sin", x),
        Op::Cos => s::math(b, "cos", x),
        Op::Tan => s::math(b, "tan", x),
        Op::Asin => s::math(b, "asin", x),
        Op::Acos => s::math(b, "acos", x),
        Op::Atan => s::math(b, "atan", x),
        Op::Sinh => s::math(b, "sinh", x),
        Op::Cosh => s::math(b, "cosh", x),
        Op::Asinh => s::math(b, "asinh", x),
        Op::Acosh => s::math(b, "acosh", x),
        Op::Atanh => s::math(b, "atanh", x),
        Op::Tanh => s::math(b, "tanh", x),
        Op::Erf => s::math(b, "erf", x),
        Op::Floor => s::math(b, "floor", x),
        Op::Ceil => s::math(b, "ceil", x),
        Op::Round => s::math(b, "roundeven", x),
        Op::Reciprocal => s::div(b, &one, x),
        Op::Sigmoid => sigmoid(b, x),
        Op::Relu => {
            let gt = s::cmp(b, "gt", x, &zero);
            s::select(b, &gt, x, &zero)
        }
        Op::Sign => {
            let (gt, lt) = (s::cmp(b, "gt", x, &zero), s::cmp(b, "lt", x, &zero));
            let m1 = konst(b, -1.0, t);
            let v = s::select(b, &lt, &m1, x);
            s::select(b, &gt, &one, &v)
        }
        Op::Softplus => softplus(b, x),
        Op::Softsign => {
            let a = s::math(b, "absf", x);
            let d = s::add(b, &one, &a);
            s::div(b, x, &d)
        }
        Op::Mish => {
            let sp = softplus(b, x);
            let th = s::math(b, "tanh", &sp);
            s::mul(b, x, &th)
        }
        Op::Elu | Op::Selu | Op::Celu => {
            let (al, ga) = match op {
                Op::Elu => (fattr(&a, "alpha", 1.0)?, 1.0),
                Op::Selu => (fattr(&a, "alpha", 1.673_263_2)?, fattr(&a, "gamma", 1.050_701)?),
                _ => (fattr(&a, "alpha", 1.0)?, 1.0),
            };
            let b = &mut k.b;
            let alv = konst(b, al, t);
            match op {
                Op::Elu => {
                    let ge = s::cmp(b, "ge", x, &zero);
                    let e = s::math(b, "exp", x);
                    let e1 = s::sub(b, &e, &one);
                    let neg = s::mul(b, &alv, &e1);
                    s::select(b, &ge, x, &neg)
                }
                Op::Selu => {
                    let gv = konst(b, ga, t);
                    let gt = s::cmp(b, "gt", x, &zero);
                    let e = s::math(b, "exp", x);
                    let ae = s::mul(b, &alv, &e);
                    let neg = s::sub(b, &ae, &alv);
                    let v = s::select(b, &gt, x, &neg);
                    s::mul(b, &gv, &v)
                }
                _ => {
                    let xa = s::div(b, x, &alv);
                    let e = s::math(b, "exp", &xa);
                    let e1 = s::sub(b, &e, &one);
                    let a = s::mul(b, &alv, &e1);
                    let pos = s::max(b, x, &zero);
                    let lt = s::cmp(b, "lt", &a, &zero);
                    let negpart = s::select(b, &lt, &a, &zero);
                    s::add(b, &pos, &negpart)
                }
            }
        }
        Op::LeakyRelu => {
            let al = fattr(&a, "alpha", 0.01)?;
            let b = &mut k.b;
            let alv = konst(b, al, t);
            let ge = s::cmp(b, "ge", x, &zero);
            let ax = s::mul(b, &alv, x);
            s::select(b, &ge, x, &ax)
        }
        Op::HardSigmoid | Op::HardSwish => {
            let (al, be) = if op == Op::HardSwish {
                (1.0 / 6.0, 0.5)
            } else {
                (fattr(&a, "alpha", 0.2)?, fattr(&a, "beta", 0.5)?)
            };
            let b = &mut k.b;
            let (alv, bev) = (konst(b, al, t), konst(b, be, t));
            let v = s::mul(b, &alv, x);
            let v = s::add(b, &v, &bev);
            let v = clamp(b, &v, Some(&zero), Some(&one));
            if op == Op::HardSwish {
                s::mul(b, x, &v)
            } else {
                v
            }
        }
        Op::ThresholdedRelu => {
            let al = fattr(&a, "alpha", 1.0)?;
            let b = &mut k.b;
            let alv = konst(b, al, t);
            let gt = s::cmp(b, "gt", x, &alv);
            s::select(b, &gt, x, &zero)
        }
        Op::Shrink => {
            let (l, bias) = (fattr(&a, "lambd", 0.5)?, fattr(&a, "bias", 0.0)?);
            let b = &mut k.b;
            let (lv, nl, bv) = (konst(b, l, t), konst(b, -l, t), konst(b, bias, t));
            let below = s::cmp(b, "lt", x, &nl);
            let above = s::cmp(b, "gt", x, &lv);
            let xb = s::add(b, x, &bv);
            let xs = s::sub(b, x, &bv);
            let v = s::select(b, &above, &xs, &zero);
            s::select(b, &below, &xb, &v)
        }
        Op::Gelu => {
            let tanh = a.string("approximate", "none")? == "tanh";
            let b = &mut k.b;
            let half = konst(b, 0.5, t);
            let inner = if tanh {
                let (c, a) = (konst(b, (2.0 / std::f64::consts::PI).sqrt(), t), konst(b, 0.044715, t));
                let x3 = s::mul(b, x, x);
                let x3 = s::mul(b, &x3, x);
                let v = s::mul(b, &a, &x3);
                let v = s::add(b, x, &v);
                let v = s::mul(b, &c, &v);
                s::math(b, "tanh", &v)
            } else {
                let r = konst(b, std::f64::consts::FRAC_1_SQRT_2, t);
                let v = s::mul(b, x, &r);
                s::math(b, "erf", &v)
            };
            let v = s::add(b, &one, &inner);
            let v = s::mul(b, x, &v);
            s::mul(b, &half, &v)
        }
        Op::Swish => {
            let al = fattr(&a, "alpha", 1.0)?;
            let b = &mut k.b;
            let alv = konst(b, al, t);
            let ax = s::mul(b, &alv, x);
            let sg = sigmoid(b, &ax);
            s::mul(b, x, &sg)
        }
        op => return Err(format!("{op} does not take float inputs")),
    })
}

/// The op on loaded operands; the result is stored as `out_dt`.
fn apply(k: &mut Kern, args: &[Val], out_dt: DType) -> R<Val> {
    let op = k.n.op;
    let x = args.first().cloned().ok_or("no operand")?;
    let t = x.ty;
    let a = k.attrs();
    let opset = k.opset();
    let present: Vec<bool> = (0..3).map(|i| k.in_val(i).is_some()).collect();
    if op.kind() == xforge_ir::OpKind::Elementwise
        && op != Op::Clip
        && t.is_float()
        && !matches!(op, Op::Identity | Op::Dropout | Op::Cast | Op::CastLike | Op::IsNaN | Op::IsInf)
        && !matches!(op, Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze)
    {
        return float_unary(k, &x);
    }
    let b = &mut k.b;
    let two = |args: &[Val]| -> R<Val> { args.get(1).cloned().ok_or_else(|| "a second operand is missing".into()) };
    Ok(match op {
        Op::Identity | Op::Dropout | Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze => x,
        Op::Cast | Op::CastLike => s::cast(b, &x, Ty::of(out_dt)),
        Op::Not => {
            let tr = konst(b, 1.0, Ty::Bool);
            Val::new(b.emit(format!("arith.xori {}, {} : i1", x.v, tr.v)), Ty::Bool)
        }
        Op::BitwiseNot => {
            let m = s::int_konst(b, -1, t);
            Val::new(b.emit(format!("arith.xori {}, {} : {}", x.v, m.v, t.mlir())), t)
        }
        Op::IsNaN => Val::new(b.emit(format!("arith.cmpf uno, {}, {} : {}", x.v, x.v, t.mlir())), Ty::Bool),
        Op::IsInf => {
            let neg = a.int("detect_negative", 1)? != 0;
            let pos = a.int("detect_positive", 1)? != 0;
            let (pinf, ninf) = (konst(b, f64::INFINITY, t), konst(b, f64::NEG_INFINITY, t));
            let p = s::cmp(b, "eq", &x, &pinf);
            let n = s::cmp(b, "eq", &x, &ninf);
            let f = konst(b, 0.0, Ty::Bool);
            let p = if pos { p } else { f.clone() };
            let n = if neg { n } else { f };
            Val::new(b.emit(format!("arith.ori {}, {} : i1", p.v, n.v)), Ty::Bool)
        }
        Op::Abs | Op::Neg | Op::Sign | Op::Relu | Op::Floor | Op::Ceil | Op::Round if !t.is_float() => {
            let zero = konst(b, 0.0, t);
            match op {
                Op::Abs => s::abs(b, &x),
                Op::Neg => s::neg(b, &x),
                Op::Relu => s::max(b, &x, &zero),
                Op::Sign => {
                    let (gt, lt) = (s::cmp(b, "gt", &x, &zero), s::cmp(b, "lt", &x, &zero));
                    let (one, m1) = (konst(b, 1.0, t), s::int_konst(b, -1, t));
                    let v = s::select(b, &lt, &m1, &zero);
                    s::select(b, &gt, &one, &v)
                }
                _ => x,
            }
        }
        op if op.kind() == xforge_ir::OpKind::Elementwise && op != Op::Clip => {
            return Err(format!("{op} takes float inputs, got {}", t.mlir()));
        }
        Op::Clip => {
            let (lo, hi) = if opset < 11 {
                (a.float_opt("min")?.map(|v| konst(b, v as f64, t)), a.float_opt("max")?.map(|v| konst(b, v as f64, t)))
            } else {
                let mut it = args[1..].iter();
                let lo = if present[1] { it.next().cloned() } else { None };
                let hi = if present[2] { it.next().cloned() } else { None };
                (lo, hi)
            };
            clamp(b, &x, lo.as_ref(), hi.as_ref())
        }
        Op::Where => s::select(b, &x, &two(args)?, &args[2]),
        Op::Min | Op::Max | Op::Sum | Op::Mean => {
            let mut acc = x.clone();
            for y in &args[1..] {
                acc = match op {
                    Op::Min => s::min(b, &acc, y),
                    Op::Max => s::max(b, &acc, y),
                    _ => s::add(b, &acc, y),
                };
            }
            if op == Op::Mean {
                let n = konst(b, args.len() as f64, t);
                acc = s::div(b, &acc, &n);
            }
            acc
        }
        Op::Equal | Op::Less | Op::Greater | Op::LessOrEqual | Op::GreaterOrEqual => {
            let y = two(args)?;
            let pred = match op {
                Op::Equal => "eq",
                Op::Less => "lt",
                Op::Greater => "gt",
                Op::LessOrEqual => "le",
                _ => "ge",
            };
            if t == Ty::Bool {
                // bools compare as 0/1
                let (a, c) = (s::cast(b, &x, Ty::Int(8, false)), s::cast(b, &y, Ty::Int(8, false)));
                s::cmp(b, pred, &a, &c)
            } else {
                s::cmp(b, pred, &x, &y)
            }
        }
        Op::And | Op::Or | Op::Xor | Op::BitwiseAnd | Op::BitwiseOr | Op::BitwiseXor => {
            let y = two(args)?;
            let f = match op {
                Op::And | Op::BitwiseAnd => "andi",
                Op::Or | Op::BitwiseOr => "ori",
                _ => "xori",
            };
            Val::new(b.emit(format!("arith.{f} {}, {} : {}", x.v, y.v, t.mlir())), t)
        }
        Op::BitShift => {
            let y = two(args)?;
            let left = a.string("direction", "")? == "LEFT";
            let Ty::Int(bits, signed) = t else { return Err("BitShift takes integers".into()) };
            let lim = konst(b, bits as f64, Ty::Int(bits, false));
            let big = s::cmp(b, "ge", &Val::new(y.v.clone(), Ty::Int(bits, false)), &lim);
            let f = if left {
                "shli"
            } else if signed {
                "shrsi"
            } else {
                "shrui"
            };
            let sh = Val::new(b.emit(format!("arith.{f} {}, {} : i{bits}", x.v, y.v)), t);
            // shifted out entirely: 0 (or −1 for negative values shifted right)
            let zero = konst(b, 0.0, t);
            let out = if !left && signed {
                let neg = s::cmp(b, "lt", &x, &zero);
                let m1 = s::int_konst(b, -1, t);
                s::select(b, &neg, &m1, &zero)
            } else {
                zero
            };
            s::select(b, &big, &out, &sh)
        }
        Op::Add => s::add(b, &x, &two(args)?),
        Op::Sub => s::sub(b, &x, &two(args)?),
        Op::Mul => s::mul(b, &x, &two(args)?),
        Op::Div => s::div(b, &x, &two(args)?),
        Op::Pow => {
            let y = two(args)?;
            if t.is_float() {
                let y = s::cast(b, &y, t);
                Val::new(b.emit(format!("math.powf {}, {} : {}", x.v, y.v, t.mlir())), t)
            } else if y.ty.is_float() {
                let xf = s::cast(b, &x, Ty::F64);
                let yf = s::cast(b, &y, Ty::F64);
                let p = Val::new(b.emit(format!("math.powf {}, {} : f64", xf.v, yf.v)), Ty::F64);
                s::cast(b, &p, t)
            } else {
                s::ipow(b, &x, &y)
            }
        }
        Op::Mod => {
            let y = two(args)?;
            let fmod = a.int("fmod", 0)? != 0;
            let r = s::bin(b, &x, &y, "remf", "remsi", "remui");
            if fmod || !t.signed() && !t.is_float() {
                r
            } else {
                // the sign of the divisor (Python's %)
                let zero = konst(b, 0.0, t);
                let nz = s::cmp(b, "ne", &r, &zero);
                let rn = s::cmp(b, "lt", &r, &zero);
                let yn = s::cmp(b, "lt", &y, &zero);
                let differ = Val::new(b.emit(format!("arith.xori {}, {} : i1", rn.v, yn.v)), Ty::Bool);
                let fix = Val::new(b.emit(format!("arith.andi {}, {} : i1", nz.v, differ.v)), Ty::Bool);
                let ry = s::add(b, &r, &y);
                s::select(b, &fix, &ry, &r)
            }
        }
        Op::PRelu => {
            let y = s::cast(b, &two(args)?, t);
            let zero = konst(b, 0.0, t);
            let lt = s::cmp(b, "lt", &x, &zero);
            let xy = s::mul(b, &x, &y);
            s::select(b, &lt, &xy, &x)
        }
        op => return Err(format!("{op} is not an elementwise op")),
    })
}

/// Output 0 as a copy of input 0 (same element count).
pub fn elementwise_copy(k: &mut Kern) -> R<usize> {
    let n = numel(&k.out_shape(0)?);
    let (x, out) = (k.input(0)?, k.output(0)?);
    k.for_each(n, |k, i| {
        let v = k.load(x, i);
        k.store(out, i, &v);
        Ok(())
    })?;
    Ok(n)
}
