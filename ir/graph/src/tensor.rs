//! Dense tensors: a shape and row-major data of one dtype, shared by reference counting so that
//! weights are stored once however many values or graphs point at them.
use crate::dtype::DType;
use crate::narrow;
use half::{bf16, f16};
use std::sync::Arc;

/// Row-major element storage, one variant per dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I16(Vec<i16>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    /// A narrow type (narrow.rs): each element's code, one per byte.
    Narrow(DType, Vec<u8>),
}

/// Runs `$body` with `$v` bound to the inner `Vec` of any variant.
#[macro_export]
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::tensor::TensorData::F32($v) => $body,
            $crate::tensor::TensorData::F16($v) => $body,
            $crate::tensor::TensorData::BF16($v) => $body,
            $crate::tensor::TensorData::F64($v) => $body,
            $crate::tensor::TensorData::I64($v) => $body,
            $crate::tensor::TensorData::I32($v) => $body,
            $crate::tensor::TensorData::I16($v) => $body,
            $crate::tensor::TensorData::I8($v) => $body,
            $crate::tensor::TensorData::U8($v) => $body,
            $crate::tensor::TensorData::U16($v) => $body,
            $crate::tensor::TensorData::U32($v) => $body,
            $crate::tensor::TensorData::U64($v) => $body,
            $crate::tensor::TensorData::Bool($v) => $body,
            $crate::tensor::TensorData::Narrow(_, $v) => $body,
        }
    };
}

/// Like `with_data!`, but rebuilds the same variant from the `Vec` that `$body` returns.
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::F16($v) => TensorData::F16($body),
            TensorData::BF16($v) => TensorData::BF16($body),
            TensorData::F64($v) => TensorData::F64($body),
            TensorData::I64($v) => TensorData::I64($body),
            TensorData::I32($v) => TensorData::I32($body),
            TensorData::I16($v) => TensorData::I16($body),
            TensorData::I8($v) => TensorData::I8($body),
            TensorData::U8($v) => TensorData::U8($body),
            TensorData::U16($v) => TensorData::U16($body),
            TensorData::U32($v) => TensorData::U32($body),
            TensorData::U64($v) => TensorData::U64($body),
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::Narrow(d, $v) => TensorData::Narrow(*d, $body),
        }
    };
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::F64(_) => DType::F64,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::I16(_) => DType::I16,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::U16(_) => DType::U16,
            TensorData::U32(_) => DType::U32,
            TensorData::U64(_) => DType::U64,
            TensorData::Bool(_) => DType::Bool,
            TensorData::Narrow(d, _) => *d,
        }
    }

    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` zero elements of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> TensorData {
        TensorData::from_f64(dtype, &vec![0.0; n])
    }

    /// Converts f64 values to `dtype`. Floats round to nearest (f16/bf16 through f32, as ONNX
    /// Runtime computes them); integers truncate toward zero and saturate; bool is `v != 0`.
    pub fn from_f64(dtype: DType, v: &[f64]) -> TensorData {
        match dtype {
            DType::F32 => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
            DType::F16 => TensorData::F16(v.iter().map(|&x| f16::from_f32(x as f32)).collect()),
            DType::BF16 => TensorData::BF16(v.iter().map(|&x| bf16::from_f32(x as f32)).collect()),
            DType::F64 => TensorData::F64(v.to_vec()),
            DType::I64 => TensorData::I64(v.iter().map(|&x| x as i64).collect()),
            DType::I32 => TensorData::I32(v.iter().map(|&x| x as i32).collect()),
            DType::I16 => TensorData::I16(v.iter().map(|&x| x as i16).collect()),
            DType::I8 => TensorData::I8(v.iter().map(|&x| x as i8).collect()),
            DType::U8 => TensorData::U8(v.iter().map(|&x| x as u8).collect()),
            DType::U16 => TensorData::U16(v.iter().map(|&x| x as u16).collect()),
            DType::U32 => TensorData::U32(v.iter().map(|&x| x as u32).collect()),
            DType::U64 => TensorData::U64(v.iter().map(|&x| x as u64).collect()),
            DType::Bool => TensorData::Bool(v.iter().map(|&x| x != 0.0).collect()),
            d => TensorData::Narrow(d, v.iter().map(|&x| narrow::encode(d, x, true)).collect()),
        }
    }

    /// Converts integers to `dtype`, wrapping like a two's-complement cast.
    pub fn from_i128(dtype: DType, v: &[i128]) -> TensorData {
        match dtype {
            DType::I64 => TensorData::I64(v.iter().map(|&x| x as i64).collect()),
            DType::I32 => TensorData::I32(v.iter().map(|&x| x as i32).collect()),
            DType::I16 => TensorData::I16(v.iter().map(|&x| x as i16).collect()),
            DType::I8 => TensorData::I8(v.iter().map(|&x| x as i8).collect()),
            DType::U8 => TensorData::U8(v.iter().map(|&x| x as u8).collect()),
            DType::U16 => TensorData::U16(v.iter().map(|&x| x as u16).collect()),
            DType::U32 => TensorData::U32(v.iter().map(|&x| x as u32).collect()),
            DType::U64 => TensorData::U64(v.iter().map(|&x| x as u64).collect()),
            DType::Bool => TensorData::Bool(v.iter().map(|&x| x != 0).collect()),
            d if narrow::int_bits(d).is_some() => {
                TensorData::Narrow(d, v.iter().map(|&x| narrow::wrap(d, x)).collect())
            }
            _ => TensorData::from_f64(dtype, &v.iter().map(|&x| x as f64).collect::<Vec<_>>()),
        }
    }

    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            TensorData::BF16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            TensorData::F64(v) => v.clone(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I16(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U16(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
            TensorData::Narrow(d, v) => v.iter().map(|&x| narrow::decode(*d, x)).collect(),
        }
    }

    /// Integer view of the elements; floats truncate toward zero.
    pub fn to_i128(&self) -> Vec<i128> {
        match self {
            TensorData::I64(v) => v.iter().map(|&x| x as i128).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as i128).collect(),
            TensorData::I16(v) => v.iter().map(|&x| x as i128).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as i128).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as i128).collect(),
            TensorData::U16(v) => v.iter().map(|&x| x as i128).collect(),
            TensorData::U32(v) => v.iter().map(|&x| x as i128).collect(),
            TensorData::U64(v) => v.iter().map(|&x| x as i128).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as i128).collect(),
            other => other.to_f64().iter().map(|&x| x as i128).collect(),
        }
    }

    /// Picks elements by flat index: `out[i] = self[idx[i]]`.
    pub fn take(&self, idx: &[usize]) -> TensorData {
        map_data!(self, v => idx.iter().map(|&i| v[i]).collect())
    }

    /// Writes `src[i]` to `self[idx[i]]`; both must be of the same dtype.
    pub fn put(&mut self, idx: &[usize], src: &TensorData) {
        macro_rules! put_as {
            ($($var:ident),*) => {
                match (self, src) {
                    $((TensorData::$var(d), TensorData::$var(s)) => {
                        for (k, &i) in idx.iter().enumerate() { d[i] = s[k]; }
                    })*
                    (d, s) => panic!("put: dtype {} into {}", s.dtype(), d.dtype()),
                }
            };
        }
        if let (TensorData::Narrow(a, d), TensorData::Narrow(b, s)) = (&mut *self, src) {
            assert_eq!(a, b, "put: dtype {b} into {a}");
            for (k, &i) in idx.iter().enumerate() {
                d[i] = s[k];
            }
            return;
        }
        put_as!(F32, F16, BF16, F64, I64, I32, I16, I8, U8, U16, U32, U64, Bool)
    }

    /// Concatenates data of one dtype in order.
    pub fn concat(parts: &[&TensorData]) -> TensorData {
        let mut out = parts[0].take(&[]);
        for p in parts {
            out.extend(p);
        }
        out
    }

    fn extend(&mut self, other: &TensorData) {
        macro_rules! ext {
            ($($var:ident),*) => {
                match (self, other) {
                    $((TensorData::$var(d), TensorData::$var(s)) => d.extend_from_slice(s),)*
                    (d, s) => panic!("concat: dtype {} onto {}", s.dtype(), d.dtype()),
                }
            };
        }
        if let (TensorData::Narrow(a, d), TensorData::Narrow(b, s)) = (&mut *self, other) {
            assert_eq!(a, b, "concat: dtype {b} onto {a}");
            return d.extend_from_slice(s);
        }
        ext!(F32, F16, BF16, F64, I64, I32, I16, I8, U8, U16, U32, U64, Bool)
    }

    /// Converts to another dtype with ONNX `Cast` semantics (float→int truncates, →bool is `!= 0`).
    pub fn cast(&self, to: DType) -> TensorData {
        if self.dtype() == to {
            return self.clone();
        }
        let int_exact = !self.dtype().is_float() && !to.is_float();
        if int_exact {
            TensorData::from_i128(to, &self.to_i128())
        } else if self.dtype().is_float() && to.is_int() {
            // NaN and out-of-range values are undefined in ONNX; saturate like Rust `as` does.
            TensorData::from_f64(to, &self.to_f64().iter().map(|x| x.trunc()).collect::<Vec<_>>())
        } else if to == DType::F16 || to == DType::BF16 {
            // Round once, straight from the source precision (what numpy and ORT do for f64).
            let v = self.to_f64();
            match to {
                DType::F16 => TensorData::F16(v.iter().map(|&x| f16::from_f64(x)).collect()),
                _ => TensorData::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect()),
            }
        } else {
            TensorData::from_f64(to, &self.to_f64())
        }
    }

    /// Raw little-endian bytes.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I8(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::U8(v) => v.clone(),
            TensorData::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::U64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8).collect(),
            TensorData::Narrow(_, v) => v.clone(),
        }
    }

    /// Parses raw little-endian bytes; `None` if the length is not a multiple of the element size.
    pub fn from_le_bytes(dtype: DType, b: &[u8]) -> Option<TensorData> {
        let n = dtype.size();
        if !b.len().is_multiple_of(n) {
            return None;
        }
        macro_rules! parse {
            ($t:ty, $n:expr) => {
                b.chunks_exact($n).map(|c| <$t>::from_le_bytes(c.try_into().unwrap())).collect()
            };
        }
        Some(match dtype {
            DType::F32 => TensorData::F32(parse!(f32, 4)),
            DType::F16 => TensorData::F16(parse!(f16, 2)),
            DType::BF16 => TensorData::BF16(parse!(bf16, 2)),
            DType::F64 => TensorData::F64(parse!(f64, 8)),
            DType::I64 => TensorData::I64(parse!(i64, 8)),
            DType::I32 => TensorData::I32(parse!(i32, 4)),
            DType::I16 => TensorData::I16(parse!(i16, 2)),
            DType::I8 => TensorData::I8(b.iter().map(|&x| x as i8).collect()),
            DType::U8 => TensorData::U8(b.to_vec()),
            DType::U16 => TensorData::U16(parse!(u16, 2)),
            DType::U32 => TensorData::U32(parse!(u32, 4)),
            DType::U64 => TensorData::U64(parse!(u64, 8)),
            DType::Bool => TensorData::Bool(b.iter().map(|&x| x != 0).collect()),
            d => TensorData::Narrow(d, b.iter().map(|&x| narrow::wrap(d, x as i128)).collect()),
        })
    }
}

/// A dense tensor. Cloning shares the data.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Arc<TensorData>,
}

/// `||a - b||₂ / ||b||₂` over all elements (the plain norm of a − b when b is zero).
pub fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (x, y) = (a.to_f64(), b.to_f64());
    let num: f64 = x.iter().zip(&y).map(|(p, q)| (p - q) * (p - q)).sum();
    let den: f64 = y.iter().map(|q| q * q).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Number of elements of a shape; saturates at usize::MAX (declared shapes come from strangers,
/// and every size check refuses that), see `checked_numel` where exactness matters.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
}

/// Number of elements of a shape, None when it does not fit in usize.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Row-major strides of a shape, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl Tensor {
    /// Panics if the data length does not match the shape (an internal invariant).
    pub fn new(shape: Vec<usize>, data: TensorData) -> Tensor {
        assert_eq!(numel(&shape), data.len(), "tensor data does not match shape {shape:?}");
        Tensor { shape, data: Arc::new(data) }
    }

    pub fn from_f64(dtype: DType, shape: Vec<usize>, v: &[f64]) -> Tensor {
        Tensor::new(shape, TensorData::from_f64(dtype, v))
    }

    pub fn from_i128(dtype: DType, shape: Vec<usize>, v: &[i128]) -> Tensor {
        Tensor::new(shape, TensorData::from_i128(dtype, v))
    }

    pub fn from_f32(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::new(shape, TensorData::F32(v))
    }

    pub fn from_i64(shape: Vec<usize>, v: Vec<i64>) -> Tensor {
        Tensor::new(shape, TensorData::I64(v))
    }

    pub fn from_bool(shape: Vec<usize>, v: Vec<bool>) -> Tensor {
        Tensor::new(shape, TensorData::Bool(v))
    }

    pub fn scalar_f32(x: f32) -> Tensor {
        Tensor::from_f32(vec![], vec![x])
    }

    pub fn scalar_i64(x: i64) -> Tensor {
        Tensor::from_i64(vec![], vec![x])
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = numel(&shape);
        Tensor::new(shape, TensorData::zeros(dtype, n))
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Bytes of element storage.
    pub fn nbytes(&self) -> usize {
        self.len() * self.dtype().size()
    }

    /// True when both tensors share one allocation (weights are stored once).
    pub fn shares_data(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }

    pub fn to_f64(&self) -> Vec<f64> {
        self.data.to_f64()
    }

    pub fn to_i128(&self) -> Vec<i128> {
        self.data.to_i128()
    }

    /// Elements as i64 (floats truncate).
    pub fn to_i64(&self) -> Vec<i64> {
        self.data.to_i128().into_iter().map(|x| x as i64).collect()
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &*self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Same data, new shape of equal element count.
    pub fn reshape(&self, shape: Vec<usize>) -> Tensor {
        assert_eq!(numel(&shape), self.len());
        Tensor { shape, data: self.data.clone() }
    }

    /// Gathers elements by flat index into a tensor of `shape`.
    pub fn take(&self, idx: &[usize], shape: Vec<usize>) -> Tensor {
        Tensor::new(shape, self.data.take(idx))
    }

    /// The axes permuted as ONNX Transpose does (axis `i` of the result is axis `perm[i]`);
    /// None unless `perm` is a permutation of the axes.
    pub fn transposed(&self, perm: &[usize]) -> Option<Tensor> {
        let r = self.rank();
        let mut seen = vec![false; r];
        if perm.len() != r || perm.iter().any(|&p| p >= r || std::mem::replace(&mut seen[p], true)) {
            return None;
        }
        let mut st = vec![1usize; r];
        for a in (0..r.saturating_sub(1)).rev() {
            st[a] = st[a + 1] * self.shape[a + 1];
        }
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let pst: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
        let mut idx = Vec::with_capacity(self.len());
        let mut at = vec![0usize; r];
        for _ in 0..self.len() {
            idx.push(at.iter().zip(&pst).map(|(a, b)| a * b).sum());
            // the next index of the result, last axis fastest
            for a in (0..r).rev() {
                at[a] += 1;
                if at[a] < shape[a] {
                    break;
                }
                at[a] = 0;
            }
        }
        Some(self.take(&idx, shape))
    }

    pub fn cast(&self, to: DType) -> Tensor {
        if self.dtype() == to {
            return self.clone();
        }
        Tensor::new(self.shape.clone(), self.data.cast(to))
    }

    /// Applies `f` elementwise in f64 and rounds back to this tensor's (float) dtype.
    pub fn map_f64(&self, f: impl Fn(f64) -> f64) -> Tensor {
        let v: Vec<f64> = self.to_f64().into_iter().map(f).collect();
        Tensor::from_f64(self.dtype(), self.shape.clone(), &v)
    }
}
