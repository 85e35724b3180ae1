//! NumPy `.npy` files (format versions 1–3, little-endian, C order) for tensors.
use crate::dtype::DType;
use crate::tensor::{numel, Tensor, TensorData};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NpyError {
    #[error("not a .npy file (bad magic)")]
    Magic,
    #[error("truncated .npy file")]
    Truncated,
    #[error("bad .npy header: {0}")]
    Header(String),
    #[error("unsupported .npy dtype '{0}'")]
    Dtype(String),
    #[error("Fortran-order arrays are not supported")]
    Fortran,
    #[error("data holds {got} bytes but shape {shape:?} of {dtype} needs {want}")]
    Size { got: usize, want: usize, shape: Vec<usize>, dtype: DType },
}

fn descr(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::BF16 => "<f4", // numpy has no bfloat16: written widened to f32
        DType::F64 => "<f8",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
        narrow => descr(stored(narrow)),
    }
}

/// The type an array of `dtype` is written as: itself, or (no numpy type) a wider one that holds
/// every value: f32 for bf16, FP8 and FP4, i8/u8 for the 4- and 2-bit integers.
fn stored(dtype: DType) -> DType {
    match dtype {
        DType::BF16 => DType::F32,
        d if d.is_narrow_float() => DType::F32,
        DType::I4 | DType::I2 => DType::I8,
        DType::U4 | DType::U2 => DType::U8,
        d => d,
    }
}

fn parse_descr(d: &str) -> Option<DType> {
    // an empty descr, or one starting with a multi-byte character, is no dtype (not a panic)
    let (order, code) = d.split_at_checked(1)?;
    if !matches!(order, "<" | "|" | "=") {
        return None;
    }
    Some(match code {
        "f4" => DType::F32,
        "f2" => DType::F16,
        "f8" => DType::F64,
        "i8" => DType::I64,
        "i4" => DType::I32,
        "i2" => DType::I16,
        "i1" => DType::I8,
        "u1" => DType::U8,
        "u2" => DType::U16,
        "u4" => DType::U32,
        "u8" => DType::U64,
        "b1" => DType::Bool,
        _ => return None,
    })
}

/// Serializes a tensor (bf16 and the narrow types widened to a type numpy can read: `stored`).
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    let t = t.cast(stored(t.dtype()));
    let shape = match t.shape() {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", descr(t.dtype()));
    // pad so the data starts on a 64-byte boundary, header ends with '\n'
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(t.data().to_le_bytes());
    out
}

/// Parses a `.npy` file.
pub fn from_bytes(b: &[u8]) -> Result<Tensor, NpyError> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(NpyError::Magic);
    }
    let (hlen, start): (usize, usize) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            if b.len() < 12 {
                return Err(NpyError::Truncated);
            }
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => return Err(NpyError::Header(format!("format version {v}"))),
    };
    let end = start.checked_add(hlen).filter(|&e| e <= b.len()).ok_or(NpyError::Truncated)?;
    let header = std::str::from_utf8(&b[start..end]).map_err(|_| NpyError::Header("not text".into()))?;
    let field = |key: &str| -> Result<&str, NpyError> {
        let quoted = format!("'{key}'");
        let at = header.find(&quoted).ok_or_else(|| NpyError::Header(format!("no '{key}'")))?;
        // a key given twice is ambiguous (numpy's own parser refuses a repeated key too)
        if header[at + quoted.len()..].contains(&quoted) {
            return Err(NpyError::Header(format!("'{key}' given twice")));
        }
        let rest = header[at + key.len() + 2..].trim_start();
        rest.strip_prefix(':').map(str::trim_start).ok_or_else(|| NpyError::Header(format!("malformed '{key}'")))
    };
    let d = field("descr")?;
    let d = d.strip_prefix('\'').and_then(|s| s.split('\'').next()).ok_or_else(|| NpyError::Header("descr".into()))?;
    let dtype = parse_descr(d).ok_or_else(|| NpyError::Dtype(d.to_string()))?;
    if field("fortran_order")?.starts_with("True") {
        return Err(NpyError::Fortran);
    }
    let s = field("shape")?;
    let s = s.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or_else(|| NpyError::Header("shape".into()))?;
    let shape: Vec<usize> = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| x.trim_end_matches('L').parse().map_err(|_| NpyError::Header(format!("shape entry '{x}'"))))
        .collect::<Result<_, _>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| NpyError::Header("shape overflows".into()))?;
    let want = n.checked_mul(dtype.size()).ok_or_else(|| NpyError::Header("shape overflows".into()))?;
    let data = &b[end..];
    if data.len() != want {
        return Err(NpyError::Size { got: data.len(), want, shape, dtype });
    }
    let td = TensorData::from_le_bytes(dtype, data).expect("length checked");
    debug_assert_eq!(numel(&shape), td.len());
    Ok(Tensor::new(shape, td))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype() {
        for dt in DType::ALL {
            let t = Tensor::from_f64(dt, vec![2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
            let back = from_bytes(&to_bytes(&t)).unwrap();
            if dt == DType::BF16 || dt.is_narrow() {
                assert_eq!(back.dtype(), stored(dt), "{dt}");
                assert_eq!(back.to_f64(), t.to_f64(), "{dt}");
            } else {
                assert_eq!(back, t, "{dt}");
            }
        }
        let s = Tensor::scalar_f32(2.5);
        assert_eq!(from_bytes(&to_bytes(&s)).unwrap(), s);
        let e = Tensor::zeros(DType::I64, vec![0, 4]);
        assert_eq!(from_bytes(&to_bytes(&e)).unwrap(), e);
    }

    #[test]
    fn header_is_aligned_and_numpy_shaped() {
        let b = to_bytes(&Tensor::zeros(DType::F32, vec![7]));
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert!(std::str::from_utf8(&b[10..10 + hlen]).unwrap().contains("'shape': (7,)"));
    }

    /// Replaces `from` by `to` (same length) in a byte string.
    fn patch(b: &[u8], from: &str, to: &str) -> Vec<u8> {
        let at = b.windows(from.len()).position(|w| w == from.as_bytes()).unwrap();
        let mut out = b.to_vec();
        out.splice(at..at + from.len(), to.bytes());
        out
    }

    #[test]
    fn malformed_files_are_errors() {
        let good = to_bytes(&Tensor::from_f32(vec![2, 2], vec![1.0; 4]));
        assert_eq!(from_bytes(b"hello world"), Err(NpyError::Magic));
        for cut in [0, 5, 9, 11, 40, good.len() - 1] {
            assert!(from_bytes(&good[..cut]).is_err(), "cut {cut}");
        }
        assert_eq!(
            from_bytes(&patch(&good, "'fortran_order': False", "'fortran_order': True ")),
            Err(NpyError::Fortran)
        );
        assert!(matches!(from_bytes(&patch(&good, "'<f4'", "'<U1'")), Err(NpyError::Dtype(_))));
        // found by the npy fuzz target: an empty descr and one starting with a 2-byte character
        assert!(matches!(from_bytes(&patch(&good, "'<f4'", "''   ")), Err(NpyError::Dtype(_))));
        assert!(matches!(from_bytes(&patch(&good, "'<f4'", "'éf'")), Err(NpyError::Dtype(_))));
        assert!(matches!(from_bytes(&patch(&good, "(2, 2)", "(2, 3)")), Err(NpyError::Size { .. })));
        assert!(matches!(from_bytes(&patch(&good, "(2, 2)", "(x, 2)")), Err(NpyError::Header(_))));
        // a key given twice (the second would silently lose): same length, so the data still fits
        let twice = patch(&good, "}             ", "'shape':(9,)} ");
        assert_eq!(
            from_bytes(&twice),
            Err(NpyError::Header("'shape' given twice".into())),
            "{:?}",
            String::from_utf8_lossy(&twice[..80])
        );
    }
}
