//! Narrow element types: the 8- and 4-bit floats (FP8 E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ; FP4
//! E2M1) and the 4- and 2-bit integers. A tensor holds them one element per byte, as the
//! element's bit pattern (its *code*) in the low bits; ONNX files pack the 4- and 2-bit types
//! (`pack`/`unpack`). Conversions follow ONNX's `Cast`: round to nearest, ties to even, with
//! overflow saturating to the largest finite value or (saturate = false) becoming infinity where
//! the type has one and NaN where it does not.
use crate::dtype::DType;

/// A small float format: sign, `exp` exponent bits, `man` mantissa bits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FloatFormat {
    exp: u32,
    man: u32,
    bias: i32,
    /// Codes with every exponent bit set are infinities (mantissa 0) and NaNs (IEEE style: E5M2).
    ieee: bool,
    /// The code of all ones except the sign is NaN, the other all-ones exponents are numbers (E4M3FN).
    fn_nan: bool,
    /// No negative zero: its code (sign bit alone) is the one NaN (the FNUZ types).
    uz: bool,
}

impl FloatFormat {
    pub fn of(dt: DType) -> Option<FloatFormat> {
        let f = |exp, man, bias, ieee, fn_nan, uz| FloatFormat { exp, man, bias, ieee, fn_nan, uz };
        Some(match dt {
            DType::F8E4M3FN => f(4, 3, 7, false, true, false),
            DType::F8E4M3FNUZ => f(4, 3, 8, false, false, true),
            DType::F8E5M2 => f(5, 2, 15, true, false, false),
            DType::F8E5M2FNUZ => f(5, 2, 16, false, false, true),
            DType::F4E2M1 => f(2, 1, 1, false, false, false),
            _ => return None,
        })
    }

    fn sign_bit(self) -> u8 {
        1 << (self.exp + self.man)
    }

    /// The largest code of a finite positive value; codes 0..=this are increasing values.
    fn max_code(self) -> u8 {
        let all = self.sign_bit() - 1;
        if self.ieee {
            all - (1 << self.man) // below the infinity
        } else if self.fn_nan {
            all - 1
        } else {
            all
        }
    }

    /// The value of a non-negative magnitude code (no sign bit), including one past `max_code`.
    fn magnitude(self, c: u32) -> f64 {
        let (e, m) = ((c >> self.man) as i32, c & ((1 << self.man) - 1));
        let frac = m as f64 / (1u32 << self.man) as f64;
        if e == 0 {
            frac * 2f64.powi(1 - self.bias)
        } else {
            (1.0 + frac) * 2f64.powi(e - self.bias)
        }
    }

    pub fn max(self) -> f64 {
        self.magnitude(self.max_code() as u32)
    }

    /// Mantissa bits (the step between values of exponent e is 2^(e - this)).
    pub fn mantissa_bits(self) -> u32 {
        self.man
    }

    /// The exponent of the smallest normal value (subnormals step by 2^(this - mantissa_bits)).
    pub fn min_exponent(self) -> i32 {
        1 - self.bias
    }

    pub fn decode(self, code: u8) -> f64 {
        let s = self.sign_bit();
        let code = code & (s | (s - 1));
        let mag = (code & (s - 1)) as u32;
        let neg = code & s != 0;
        if self.uz && code == s {
            return f64::NAN;
        }
        if mag > self.max_code() as u32 {
            return if self.ieee && mag == self.max_code() as u32 + 1 {
                if neg {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }
            } else {
                f64::NAN
            };
        }
        let v = self.magnitude(mag);
        if neg {
            -v
        } else {
            v
        }
    }

    fn nan(self) -> u8 {
        if self.uz {
            self.sign_bit()
        } else if self.ieee {
            self.max_code() + 3 // past the infinity: the quiet NaN ml_dtypes writes
        } else if self.fn_nan {
            self.max_code() + 1
        } else {
            0 // E2M1 has no NaN: ml_dtypes and ONNX write zero
        }
    }

    /// The code of `v`, rounded to nearest even. Inputs are rounded to f32 first, as ONNX's
    /// reference converts them.
    pub fn encode(self, v: f64, saturate: bool) -> u8 {
        let v = v as f32 as f64;
        let s = self.sign_bit();
        let sign = if v.is_sign_negative() && !self.uz { s } else { 0 };
        if v.is_nan() {
            return if self.nan() == 0 { s } else { self.nan() };
        }
        let sign_nz = if v.is_sign_negative() { s } else { 0 }; // a nonzero result keeps its sign
        let a = v.abs();
        let top = self.max_code() as u32;
        let overflow = || -> u8 {
            if saturate || self.nan() == 0 && !self.ieee {
                sign_nz | self.max_code()
            } else if self.ieee {
                sign_nz | (self.max_code() + 1)
            } else {
                self.nan() | if self.fn_nan { sign_nz } else { 0 }
            }
        };
        if a.is_infinite() {
            return overflow();
        }
        // the largest code at or below a (values increase with the code)
        let (mut lo, mut hi) = (0u32, top + 1);
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if self.magnitude(mid) <= a {
                lo = mid
            } else {
                hi = mid
            }
        }
        let code = if lo >= top && a > self.max() {
            // beyond the largest value: the next step up is max + its ulp (an overflow)
            let next = 2.0 * self.magnitude(top) - self.magnitude(top - 1);
            let (dl, dh) = (a - self.max(), next - a);
            if dl < dh || (dl == dh && top.is_multiple_of(2)) {
                top
            } else {
                return overflow();
            }
        } else {
            let (dl, dh) = (a - self.magnitude(lo), self.magnitude(lo + 1) - a);
            if dl < dh || (dl == dh && lo.is_multiple_of(2)) {
                lo
            } else {
                lo + 1
            }
        };
        if code == 0 {
            return sign; // zero keeps its sign where the type has a negative zero
        }
        sign_nz | code as u8
    }
}

/// Bits of a narrow integer type, and whether it is signed.
pub fn int_bits(dt: DType) -> Option<(u32, bool)> {
    match dt {
        DType::I4 => Some((4, true)),
        DType::U4 => Some((4, false)),
        DType::I2 => Some((2, true)),
        DType::U2 => Some((2, false)),
        _ => None,
    }
}

/// Elements per byte in an ONNX file (low bits first): 2 for 4-bit types, 4 for 2-bit, else 1.
pub fn per_byte(dt: DType) -> usize {
    match dt {
        DType::I4 | DType::U4 | DType::F4E2M1 => 2,
        DType::I2 | DType::U2 => 4,
        _ => 1,
    }
}

fn mask(dt: DType) -> u8 {
    match per_byte(dt) {
        2 => 0x0f,
        4 => 0x03,
        _ => 0xff,
    }
}

/// The value of a code of any narrow type.
pub fn decode(dt: DType, code: u8) -> f64 {
    match (FloatFormat::of(dt), int_bits(dt)) {
        (Some(f), _) => f.decode(code),
        (_, Some((bits, signed))) => {
            let c = (code & mask(dt)) as i32;
            (if signed && c >= 1 << (bits - 1) { c - (1 << bits) } else { c }) as f64
        }
        _ => unreachable!("{dt} is not a narrow type"),
    }
}

/// The code of `v`: floats as `FloatFormat::encode`; integers truncated toward zero, and zero
/// when that is out of the type's range (as ONNX's reference, through ml_dtypes, casts).
pub fn encode(dt: DType, v: f64, saturate: bool) -> u8 {
    match FloatFormat::of(dt) {
        Some(f) => f.encode(v, saturate),
        None => {
            let (lo, hi) = dt.quantized_range().expect("a narrow integer type");
            let t = v.trunc();
            if t >= lo && t <= hi {
                wrap(dt, t as i128)
            } else {
                0
            }
        }
    }
}

/// The code of integer `v`, wrapped to the type's bits.
pub fn wrap(dt: DType, v: i128) -> u8 {
    (v as u8) & mask(dt)
}

/// Packs codes as ONNX stores them (low bits first; the last byte padded with zeros).
pub fn pack(dt: DType, codes: &[u8]) -> Vec<u8> {
    let k = per_byte(dt);
    let bits = 8 / k;
    codes.chunks(k).map(|c| c.iter().enumerate().fold(0u8, |b, (i, &x)| b | ((x & mask(dt)) << (i * bits)))).collect()
}

/// Unpacks `n` codes from ONNX's packed bytes; `None` when the byte count does not fit `n`.
pub fn unpack(dt: DType, bytes: &[u8], n: usize) -> Option<Vec<u8>> {
    let k = per_byte(dt);
    if bytes.len() != n.div_ceil(k) {
        return None;
    }
    let bits = 8 / k;
    Some((0..n).map(|i| (bytes[i / k] >> ((i % k) * bits)) & mask(dt)).collect())
}
