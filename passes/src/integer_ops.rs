//! The integer contractions become ops every backend compiles: MatMulInteger, ConvInteger,
//! QLinearMatMul and QLinearConv are written out in f64, where the products of 8- and 16-bit
//! integers and their sums are exact (up to 2^53), so the result is the interpreter's to the bit:
//!
//! ```text
//! MatMulInteger(a, b, a_zp, b_zp)   → Cast(MatMul(Cast(a) − a_zp, Cast(b) − b_zp), i32)
//! ConvInteger(x, w, x_zp, w_zp)     → Cast(Conv(Cast(x) − x_zp, Cast(w) − w_zp), i32)
//! QLinearMatMul(a, sa, a_zp, b, sb, b_zp, sy, y_zp)
//!     → Cast(Min(Max(Round(acc · Cast((sa · sb) / sy) + y_zp), lo), hi), y's type)
//! QLinearConv(x, sx, x_zp, w, sw, w_zp, sy, y_zp, bias) → the same with acc + bias
//! ```
//!
//! `(sa · sb) / sy` stays in the scales' type (as the ONNX reference computes it); a per-row
//! zero point or scale of A is reshaped to a column, a per-output-channel one of a convolution
//! to (M, 1, …). A node whose operand ranks or scale sizes are not known stays as it is.
use crate::rewrite::{ints_weight, replace_nodes, Writer};
use xforge_ir::{Attr, DType, Graph, Node, Op, Tensor, ValueId};

/// Lowers every integer contraction it can; returns how many.
pub fn lower_integer_contractions(g: &mut Graph) -> usize {
    replace_nodes(g, |g, n| match n.op {
        Op::MatMulInteger | Op::ConvInteger | Op::QLinearMatMul | Op::QLinearConv => lower(g, n),
        _ => None,
    })
}

/// The integer lowering's own steps.
impl Writer<'_> {
    fn f64(&mut self, x: ValueId) -> ValueId {
        self.op(Op::Cast, &[x], DType::F64, vec![("to", Attr::Int(DType::F64.onnx_code() as i64))])
    }

    fn constant(&mut self, v: f64) -> ValueId {
        self.weight(Tensor::from_f64(DType::F64, vec![], &[v]))
    }

    /// `t` of `len` entries laid along axis `ax` of a rank-`rank` operand: (len, 1, …, 1).
    fn along(&mut self, t: ValueId, len: usize, ax: usize, rank: usize) -> ValueId {
        if len <= 1 || ax + 1 == rank {
            return t;
        }
        let shape: Vec<i64> = std::iter::once(len as i64).chain(std::iter::repeat_n(1, rank - ax - 1)).collect();
        let s = ints_weight(self.g, format!("{}/shape{}", self.base, self.nodes.len()), shape);
        let dt = self.g.ty(t).dtype;
        self.op(Op::Reshape, &[t, s], dt, vec![])
    }

    /// `Cast(x) − zp` (zp along axis `ax` of x when it has more than one entry).
    fn centred(&mut self, x: ValueId, zp: Option<ValueId>, ax: usize) -> Option<ValueId> {
        let rank = self.g.ty(x).shape.as_ref()?.len();
        let xf = self.f64(x);
        let Some(z) = zp else { return Some(xf) };
        let len = self.g.ty(z).static_shape()?.iter().product();
        let zf = self.f64(z);
        let zf = self.along(zf, len, ax, rank);
        Some(self.op(Op::Sub, &[xf, zf], DType::F64, vec![]))
    }
}

fn input(n: &Node, k: usize) -> Option<ValueId> {
    n.inputs.get(k).copied().flatten()
}

fn lower(g: &mut Graph, n: &Node) -> Option<Vec<Node>> {
    let y = n.outputs.first().copied().flatten()?;
    let conv = matches!(n.op, Op::ConvInteger | Op::QLinearConv);
    let linear = matches!(n.op, Op::QLinearMatMul | Op::QLinearConv);
    // operand slots: (a, a_zp, b, b_zp)
    let (a, azp, b, bzp) = if linear {
        (input(n, 0)?, input(n, 2), input(n, 3)?, input(n, 5))
    } else {
        (input(n, 0)?, input(n, 2), input(n, 1)?, input(n, 3))
    };
    let ra = g.ty(a).shape.as_ref()?.len();
    let rb = g.ty(b).shape.as_ref()?.len();
    // everything the writing below reads is checked first: a node it cannot lower stays whole
    let count = |v: Option<ValueId>| v.map(|v| g.ty(v).static_shape().map(|s| s.iter().product::<usize>()));
    let scales = |k: usize| if linear { count(input(n, k)) } else { None };
    let sizes = [count(azp), count(bzp), scales(1), scales(4), scales(8)];
    let out = if linear { input(n, 7).map(|z| g.ty(z).dtype).unwrap_or(g.ty(a).dtype) } else { DType::I32 };
    let a_per_entry = sizes[0].flatten().unwrap_or(1) > 1 || (conv && sizes[2].flatten().unwrap_or(1) > 1);
    let ok = (conv || ra >= 2)
        && sizes.iter().all(|s| s.is_none_or(|c| c.is_some()))
        && !(conv && a_per_entry)
        && (!linear || (input(n, 4).is_some() && input(n, 6).is_some() && out.quantized_range().is_some()));
    if !ok {
        return None;
    }
    let mut w = Writer::new(g, &n.name);
    // zero points: a's per row (matmul) or scalar (conv); b's per column (matmul) or per output channel (conv)
    let (za, zb) = if conv { (0, 0) } else { (ra - 2, rb - 1) };
    let af = w.centred(a, azp, za)?;
    let bf = w.centred(b, bzp, zb)?;
    let mut acc = if conv {
        let attrs: Vec<(&str, Attr)> = n.attrs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        w.op(Op::Conv, &[af, bf], DType::F64, attrs)
    } else {
        w.op(Op::MatMul, &[af, bf], DType::F64, vec![])
    };
    if !linear {
        w.op(Op::Cast, &[acc], DType::I32, vec![("to", Attr::Int(DType::I32.onnx_code() as i64))]);
        return finish(w, y);
    }
    let (sa, sb, sy, yzp) = (input(n, 1)?, input(n, 4)?, input(n, 6)?, input(n, 7));
    let (na, nb) = (sizes[2].flatten()?, sizes[3].flatten()?);
    let out_rank = if conv { ra } else { ra.max(rb) };
    if conv {
        if let (Some(bias), Some(Some(m))) = (input(n, 8), sizes[4]) {
            let bf = w.f64(bias);
            let bf = w.along(bf, m, 1, out_rank);
            acc = w.op(Op::Add, &[acc, bf], DType::F64, vec![]);
        }
    }
    // the factor (sa · sb) / sy in the scales' type: per row of A, per column of B, per output channel
    let st = w.g.ty(sa).dtype;
    let sa = if conv { sa } else { w.along(sa, na, out_rank - 2, out_rank) };
    let sb = if conv { w.along(sb, nb, 1, out_rank) } else { sb };
    let prod = w.op(Op::Mul, &[sa, sb], st, vec![]);
    let factor = w.op(Op::Div, &[prod, sy], st, vec![]);
    let factor = w.f64(factor);
    let mut v = w.op(Op::Mul, &[acc, factor], DType::F64, vec![]);
    if let Some(z) = yzp {
        let zf = w.f64(z);
        v = w.op(Op::Add, &[v, zf], DType::F64, vec![]);
    }
    let (lo, hi) = out.quantized_range()?;
    let r = w.op(Op::Round, &[v], DType::F64, vec![]);
    let (lo, hi) = (w.constant(lo), w.constant(hi));
    let r = w.op(Op::Max, &[r, lo], DType::F64, vec![]);
    let r = w.op(Op::Min, &[r, hi], DType::F64, vec![]);
    w.op(Op::Cast, &[r], out, vec![("to", Attr::Int(out.onnx_code() as i64))]);
    finish(w, y)
}

/// Points the last node at the replaced node's output (its own value is left to dead-code
/// elimination).
fn finish(w: Writer, y: ValueId) -> Option<Vec<Node>> {
    let Writer { g, mut nodes, .. } = w;
    let last = nodes.last_mut()?;
    if let Some(old) = last.outputs[0] {
        g.undeclared.remove(&old);
    }
    last.outputs = vec![Some(y)];
    Some(nodes)
}
