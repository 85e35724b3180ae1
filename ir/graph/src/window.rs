//! Windowed ops that one generated kernel runs window by window: the pools and the depthwise
//! convolution (one filter per channel), which is a weighted pool. The partitioner, the cost
//! model and the pooling template all ask here, so they agree on what is one.
use crate::attr::Attrs;
use crate::{Attr, Op};

/// Largest window (taps) the pooling template unrolls.
pub const MAX_WINDOW: usize = 64;

/// The window [kh, kw] of a depthwise 2-D convolution: a `Conv` (NCHW) or `ConvNhwc` whose
/// `group` equals its channels, one filter per channel (weight [C, 1, kh, kw]), explicit pads,
/// at most MAX_WINDOW taps. `x` and `w` are the input's and weight's shapes.
pub fn depthwise_window(op: Op, attrs: &Attrs, x: &[usize], w: &[usize]) -> Option<[usize; 2]> {
    let c = match op {
        Op::Conv if x.len() == 4 => x[1],
        Op::ConvNhwc if x.len() == 4 => x[3],
        _ => return None,
    };
    let group = match attrs.get("group") {
        Some(Attr::Int(g)) => *g,
        _ => 1,
    };
    // auto_pad SAME_* places its pads by the input size: only explicit pads are generated
    let explicit = match attrs.get("auto_pad") {
        None => true,
        Some(Attr::Str(s)) => s == "NOTSET" || s == "VALID",
        _ => false,
    };
    let pads_ok = match attrs.get("pads") {
        None => true,
        Some(Attr::Ints(p)) => p.len() == 4 && p.iter().all(|&v| v >= 0),
        _ => false,
    };
    let ints_ok = |k: &str| match attrs.get(k) {
        None => true,
        Some(Attr::Ints(v)) => v.len() == 2 && v.iter().all(|&s| s >= 1),
        _ => false,
    };
    (c > 1
        && group == c as i64
        && w.len() == 4
        && w[0] == c
        && w[1] == 1
        && w[2] * w[3] <= MAX_WINDOW
        && explicit
        && pads_ok
        && ints_ok("strides")
        && ints_ok("dilations"))
    .then_some([w[2], w[3]])
}

/// `depthwise_window` of a graph node (static shapes of its input and weight).
pub fn node_depthwise_window(g: &crate::Graph, n: &crate::Node) -> Option<[usize; 2]> {
    let x = g.ty(n.inputs.first().copied().flatten()?).static_shape()?;
    let w = g.ty(n.inputs.get(1).copied().flatten()?).static_shape()?;
    depthwise_window(n.op, &n.attrs, &x, &w)
}
