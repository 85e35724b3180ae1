//! Static and symbolic shapes of graph values.
use crate::dtype::DType;
use std::fmt;

/// One dimension: a known size or a named symbol such as `batch`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(usize),
    Sym(String),
}

impl Dim {
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// The type of a graph value: dtype plus shape; `shape: None` means the rank is unknown.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ValueType {
    pub dtype: DType,
    pub shape: Option<Vec<Dim>>,
}

impl ValueType {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> ValueType {
        ValueType { dtype, shape: Some(shape) }
    }

    pub fn known(dtype: DType, shape: &[usize]) -> ValueType {
        ValueType::new(dtype, shape.iter().map(|&d| Dim::Known(d)).collect())
    }

    pub fn unranked(dtype: DType) -> ValueType {
        ValueType { dtype, shape: None }
    }

    /// The shape if every dimension is known.
    pub fn static_shape(&self) -> Option<Vec<usize>> {
        self.shape.as_ref()?.iter().map(Dim::known).collect()
    }

    /// Whether a concrete tensor shape fits this type (symbols match anything).
    pub fn admits(&self, shape: &[usize]) -> bool {
        match &self.shape {
            None => true,
            Some(dims) => {
                dims.len() == shape.len() && dims.iter().zip(shape).all(|(d, &s)| d.known().is_none_or(|k| k == s))
            }
        }
    }
}

/// Prints a shape as `[1,3,batch]`, or `[?]` for unknown rank.
pub fn shape_str(shape: &Option<Vec<Dim>>) -> String {
    match shape {
        None => "[?]".to_string(),
        Some(d) => format!("[{}]", d.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")),
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, shape_str(&self.shape))
    }
}
