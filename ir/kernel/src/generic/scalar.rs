//! Typed scalars in MLIR text for the generic kernels: every dtype loads into a register type
//! (f16/bf16 widened to f32, bool as i1, integers at their width with their signedness
//! remembered), computes there and stores back rounded once.
use crate::body::Body;
use xforge_ir::DType;

/// A register type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    F32,
    F64,
    /// Bits and signedness (MLIR integers are signless; the ops choose).
    Int(u32, bool),
    Bool,
    /// MLIR's `index` (loop counters and positions carried through loops).
    Index,
}

impl Ty {
    /// The type a dtype computes in.
    pub fn of(dt: DType) -> Ty {
        match dt {
            DType::F16 | DType::BF16 | DType::F32 => Ty::F32,
            DType::F64 => Ty::F64,
            DType::Bool => Ty::Bool,
            d => Ty::Int(d.size() as u32 * 8, d.is_signed_int()),
        }
    }

    pub fn mlir(self) -> String {
        match self {
            Ty::F32 => "f32".into(),
            Ty::F64 => "f64".into(),
            Ty::Int(b, _) => format!("i{b}"),
            Ty::Bool => "i1".into(),
            Ty::Index => "index".into(),
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Ty::F32 | Ty::F64)
    }

    pub fn signed(self) -> bool {
        matches!(self, Ty::Int(_, true))
    }
}

/// The MLIR element type a dtype is stored as (bool as one byte; the narrow types never reach
/// a kernel: the compiler refuses them by name, `xforge_compiler`'s narrow check).
pub fn storage(dt: DType) -> &'static str {
    match dt {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F64 => "f64",
        DType::I64 | DType::U64 => "i64",
        DType::I32 | DType::U32 => "i32",
        DType::I16 | DType::U16 => "i16",
        _ => "i8",
    }
}

/// A value in a register.
#[derive(Clone, Debug, PartialEq)]
pub struct Val {
    pub v: String,
    pub ty: Ty,
}

impl Val {
    pub fn new(v: String, ty: Ty) -> Val {
        Val { v, ty }
    }
}

/// A constant of type `ty` (integers from `x` rounded toward zero, bools from x ≠ 0).
pub fn konst(b: &mut Body, x: f64, ty: Ty) -> Val {
    let v = match ty {
        Ty::F32 | Ty::F64 => b.float(x, &ty.mlir()),
        Ty::Int(bits, _) => {
            // the two's-complement pattern of the value at this width
            let i = x as i128;
            let w = if bits == 64 { i as i64 } else { ((i as i64) << (64 - bits)) >> (64 - bits) };
            b.emit(format!("arith.constant {w} : i{bits}"))
        }
        Ty::Bool => b.emit(format!("arith.constant {}", x != 0.0)),
        Ty::Index => b.index(x as usize),
    };
    Val::new(v, ty)
}

/// An integer constant of type `ty` given exactly.
pub fn int_konst(b: &mut Body, x: i64, ty: Ty) -> Val {
    let v = match ty {
        Ty::Int(bits, _) => {
            let w = if bits == 64 { x } else { (x << (64 - bits)) >> (64 - bits) };
            b.emit(format!("arith.constant {w} : i{bits}"))
        }
        _ => return konst(b, x as f64, ty),
    };
    Val::new(v, ty)
}

/// Widens a loaded storage value to its register type.
pub fn widen(b: &mut Body, raw: String, dt: DType) -> Val {
    let ty = Ty::of(dt);
    let v = match dt {
        DType::F16 | DType::BF16 => b.emit(format!("arith.extf {raw} : {} to f32", storage(dt))),
        DType::Bool => {
            let z = b.emit("arith.constant 0 : i8");
            b.emit(format!("arith.cmpi ne, {raw}, {z} : i8"))
        }
        _ => raw,
    };
    Val::new(v, ty)
}

/// Narrows a value (already of `Ty::of(dt)`) to its storage type.
pub fn narrow(b: &mut Body, v: &Val, dt: DType) -> String {
    match dt {
        DType::F16 | DType::BF16 => b.emit(format!("arith.truncf {} : f32 to {}", v.v, storage(dt))),
        DType::Bool => b.emit(format!("arith.extui {} : i1 to i8", v.v)),
        _ => v.v.clone(),
    }
}

/// Converts `x` to `to` as ONNX's Cast does (floats to integers toward zero, anything to bool
/// as x ≠ 0, bools to 0 or 1).
pub fn cast(b: &mut Body, x: &Val, to: Ty) -> Val {
    if x.ty == to {
        return x.clone();
    }
    let (f, t) = (x.ty.mlir(), to.mlir());
    let v = match (x.ty, to) {
        (Ty::F32, Ty::F64) => b.emit(format!("arith.extf {} : f32 to f64", x.v)),
        (Ty::F64, Ty::F32) => b.emit(format!("arith.truncf {} : f64 to f32", x.v)),
        (Ty::F32 | Ty::F64, Ty::Int(_, s)) => {
            b.emit(format!("arith.{} {} : {f} to {t}", if s { "fptosi" } else { "fptoui" }, x.v))
        }
        (Ty::Int(_, s), Ty::F32 | Ty::F64) => {
            b.emit(format!("arith.{} {} : {f} to {t}", if s { "sitofp" } else { "uitofp" }, x.v))
        }
        (Ty::Bool, Ty::F32 | Ty::F64) => b.emit(format!("arith.uitofp {} : i1 to {t}", x.v)),
        (Ty::Bool, Ty::Int(..)) => b.emit(format!("arith.extui {} : i1 to {t}", x.v)),
        (Ty::F32 | Ty::F64, Ty::Bool) => {
            let z = b.float(0.0, &f);
            b.emit(format!("arith.cmpf une, {}, {z} : {f}", x.v))
        }
        (Ty::Int(..), Ty::Bool) => {
            let z = b.emit(format!("arith.constant 0 : {f}"));
            b.emit(format!("arith.cmpi ne, {}, {z} : {f}", x.v))
        }
        (Ty::Int(fb, s), Ty::Int(tb, _)) => {
            if tb > fb {
                b.emit(format!("arith.{} {} : {f} to {t}", if s { "extsi" } else { "extui" }, x.v))
            } else if tb < fb {
                b.emit(format!("arith.trunci {} : {f} to {t}", x.v))
            } else {
                x.v.clone()
            }
        }
        (Ty::Index, Ty::Int(..)) => b.emit(format!("arith.index_cast {} : index to {t}", x.v)),
        (Ty::Int(..), Ty::Index) => b.emit(format!("arith.index_cast {} : {f} to index", x.v)),
        (Ty::Index, _) => {
            let i = b.emit(format!("arith.index_cast {} : index to i64", x.v));
            return cast(b, &Val::new(i, Ty::Int(64, true)), to);
        }
        _ => unreachable!("cast {:?} to {:?}", x.ty, to),
    };
    Val::new(v, to)
}

/// An `index` as a register value of type `ty`.
pub fn from_index(b: &mut Body, i: &str, ty: Ty) -> Val {
    let i64v = b.emit(format!("arith.index_cast {i} : index to i64"));
    cast(b, &Val::new(i64v, Ty::Int(64, true)), ty)
}

/// An integer value as an `index` (sign-extended through i64).
pub fn to_index(b: &mut Body, x: &Val) -> String {
    let w = cast(b, x, Ty::Int(64, true));
    b.emit(format!("arith.index_cast {} : i64 to index", w.v))
}

/// `a op b` for two values of one type; `fop`/`iop`/`uop` name the float, signed and unsigned
/// arith ops.
pub fn bin(b: &mut Body, a: &Val, c: &Val, fop: &str, iop: &str, uop: &str) -> Val {
    let op = match a.ty {
        Ty::F32 | Ty::F64 => fop,
        Ty::Int(_, true) => iop,
        _ => uop,
    };
    Val::new(b.emit(format!("arith.{op} {}, {} : {}", a.v, c.v, a.ty.mlir())), a.ty)
}

pub fn add(b: &mut Body, a: &Val, c: &Val) -> Val {
    bin(b, a, c, "addf", "addi", "addi")
}

pub fn sub(b: &mut Body, a: &Val, c: &Val) -> Val {
    bin(b, a, c, "subf", "subi", "subi")
}

pub fn mul(b: &mut Body, a: &Val, c: &Val) -> Val {
    bin(b, a, c, "mulf", "muli", "muli")
}

pub fn div(b: &mut Body, a: &Val, c: &Val) -> Val {
    bin(b, a, c, "divf", "divsi", "divui")
}

/// max/min that propagate NaN for floats.
pub fn max(b: &mut Body, a: &Val, c: &Val) -> Val {
    if a.ty == Ty::Bool {
        return Val::new(b.emit(format!("arith.ori {}, {} : i1", a.v, c.v)), Ty::Bool);
    }
    bin(b, a, c, "maximumf", "maxsi", "maxui")
}

pub fn min(b: &mut Body, a: &Val, c: &Val) -> Val {
    if a.ty == Ty::Bool {
        return Val::new(b.emit(format!("arith.andi {}, {} : i1", a.v, c.v)), Ty::Bool);
    }
    bin(b, a, c, "minimumf", "minsi", "minui")
}

/// A comparison (`eq`, `ne`, `lt`, `le`, `gt`, `ge`) as an i1; floats ordered (false with NaN).
pub fn cmp(b: &mut Body, pred: &str, a: &Val, c: &Val) -> Val {
    let t = a.ty.mlir();
    let v = if a.ty.is_float() {
        let p = match pred {
            "ne" => "une".to_string(),
            p => format!("o{p}"),
        };
        b.emit(format!("arith.cmpf {p}, {}, {} : {t}", a.v, c.v))
    } else {
        let p = match pred {
            "eq" | "ne" => pred.to_string(),
            p if a.ty.signed() => format!("s{p}"),
            p => format!("u{p}"),
        };
        b.emit(format!("arith.cmpi {p}, {}, {} : {t}", a.v, c.v))
    };
    Val::new(v, Ty::Bool)
}

pub fn select(b: &mut Body, c: &Val, x: &Val, y: &Val) -> Val {
    Val::new(b.emit(format!("arith.select {}, {}, {} : {}", c.v, x.v, y.v, x.ty.mlir())), x.ty)
}

pub fn neg(b: &mut Body, x: &Val) -> Val {
    if x.ty.is_float() {
        Val::new(b.emit(format!("arith.negf {} : {}", x.v, x.ty.mlir())), x.ty)
    } else {
        let z = konst(b, 0.0, x.ty);
        sub(b, &z, x)
    }
}

/// A float math-dialect function of one operand.
pub fn math(b: &mut Body, f: &str, x: &Val) -> Val {
    Val::new(b.emit(format!("math.{f} {} : {}", x.v, x.ty.mlir())), x.ty)
}

pub fn abs(b: &mut Body, x: &Val) -> Val {
    match x.ty {
        Ty::F32 | Ty::F64 => math(b, "absf", x),
        Ty::Int(_, true) => {
            let z = konst(b, 0.0, x.ty);
            let lt = cmp(b, "lt", x, &z);
            let n = neg(b, x);
            select(b, &lt, &n, x)
        }
        _ => x.clone(),
    }
}

/// Integer power by squaring over the exponent's bits (exponents below 0 give 0 except for
/// bases ±1, as integer division of 1 by the power would).
pub fn ipow(b: &mut Body, x: &Val, e: &Val) -> Val {
    let ty = x.ty;
    let one = konst(b, 1.0, ty);
    let mut acc = one.clone();
    let mut base = x.clone();
    let e = cast(b, e, Ty::Int(64, true));
    let e1 = konst(b, 1.0, Ty::Int(64, true));
    let e0 = konst(b, 0.0, Ty::Int(64, true));
    for k in 0..64 {
        let sh = konst(b, k as f64, Ty::Int(64, true));
        let s = b.emit(format!("arith.shrui {}, {} : i64", e.v, sh.v));
        let bit = b.emit(format!("arith.andi {s}, {} : i64", e1.v));
        let on = b.emit(format!("arith.cmpi ne, {bit}, {} : i64", e0.v));
        let m = mul(b, &acc, &base);
        acc = select(b, &Val::new(on, Ty::Bool), &m, &acc);
        if k < 63 {
            base = mul(b, &base, &base);
        }
    }
    // a negative exponent: (x as f64)^e truncated, which is 1 for x = 1, ±1 for x = −1, else 0
    let z = konst(b, 0.0, Ty::Int(64, true));
    let negative = cmp(b, "lt", &Val::new(e.v.clone(), Ty::Int(64, true)), &z);
    let xf = cast(b, x, Ty::F64);
    let ef = cast(b, &e, Ty::F64);
    let p = Val::new(b.emit(format!("math.powf {}, {} : f64", xf.v, ef.v)), Ty::F64);
    let p = cast(b, &p, ty);
    select(b, &negative, &p, &acc)
}
