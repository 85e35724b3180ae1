//! Typed access to a node's attributes and inputs, with errors that name the field.
use super::OpResult;
use crate::attr::Attr;
use crate::graph::{Graph, Node};
use crate::tensor::Tensor;

pub struct NodeAttrs<'a>(pub &'a Node);

impl<'a> NodeAttrs<'a> {
    fn get(&self, name: &str) -> Option<&'a Attr> {
        self.0.attrs.get(name)
    }

    fn wrong(&self, name: &str, want: &str, got: &Attr) -> String {
        format!("attribute '{name}' must be {want}, got {}", got.kind())
    }

    pub fn int_opt(&self, name: &str) -> OpResult<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(a) => Err(self.wrong(name, "an int", a)),
        }
    }

    pub fn int(&self, name: &str, default: i64) -> OpResult<i64> {
        Ok(self.int_opt(name)?.unwrap_or(default))
    }

    pub fn float_opt(&self, name: &str) -> OpResult<Option<f32>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Float(v)) => Ok(Some(*v)),
            Some(Attr::Int(v)) => Ok(Some(*v as f32)),
            Some(a) => Err(self.wrong(name, "a float", a)),
        }
    }

    pub fn float(&self, name: &str, default: f32) -> OpResult<f32> {
        Ok(self.float_opt(name)?.unwrap_or(default))
    }

    pub fn ints_opt(&self, name: &str) -> OpResult<Option<Vec<i64>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(Attr::Int(v)) => Ok(Some(vec![*v])),
            Some(a) => Err(self.wrong(name, "a list of ints", a)),
        }
    }

    pub fn floats_opt(&self, name: &str) -> OpResult<Option<Vec<f32>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v.clone())),
            Some(Attr::Float(v)) => Ok(Some(vec![*v])),
            Some(a) => Err(self.wrong(name, "a list of floats", a)),
        }
    }

    pub fn string(&self, name: &str, default: &str) -> OpResult<String> {
        match self.get(name) {
            None => Ok(default.to_string()),
            Some(Attr::Str(s)) => Ok(s.clone()),
            Some(a) => Err(self.wrong(name, "a string", a)),
        }
    }

    pub fn tensor_opt(&self, name: &str) -> OpResult<Option<&'a Tensor>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Tensor(t)) => Ok(Some(t)),
            Some(a) => Err(self.wrong(name, "a tensor", a)),
        }
    }

    pub fn graph(&self, name: &str) -> OpResult<&'a Graph> {
        match self.get(name) {
            Some(Attr::Graph(g)) => Ok(g),
            None => Err(format!("missing attribute '{name}'")),
            Some(a) => Err(self.wrong(name, "a graph", a)),
        }
    }
}

/// Input `i`, which the op requires.
pub(crate) fn req(ins: &[Option<Tensor>], i: usize) -> OpResult<&Tensor> {
    ins.get(i).and_then(|t| t.as_ref()).ok_or_else(|| format!("missing required input {i}"))
}

/// Input `i` if given.
pub(crate) fn opt(ins: &[Option<Tensor>], i: usize) -> Option<&Tensor> {
    ins.get(i).and_then(|t| t.as_ref())
}

/// The one value of a scalar-like input (`what` names it in the error): ONNX gives these as
/// rank-0 or one-element tensors, and an empty one is an error, not a default.
pub(crate) fn scalar(t: &Tensor, what: &str) -> OpResult<f64> {
    match t.len() {
        1 => Ok(t.to_f64()[0]),
        _ => Err(format!("{what} must hold one value, got shape {:?}", t.shape())),
    }
}

/// Like `scalar`, for integer inputs (exact beyond 2^53).
pub(crate) fn scalar_i64(t: &Tensor, what: &str) -> OpResult<i64> {
    match t.len() {
        1 => Ok(t.to_i64()[0]),
        _ => Err(format!("{what} must hold one value, got shape {:?}", t.shape())),
    }
}

/// Normalizes a possibly negative axis against `rank`.
pub(crate) fn axis(a: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    if a < -r || a >= r {
        return Err(format!("axis {a} is out of range for rank {rank}"));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}
