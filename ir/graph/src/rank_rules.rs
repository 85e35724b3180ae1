//! Ranks and attribute lengths ONNX's shape inference demands of an op's operands, checked
//! wherever they are known (onnxruntime refuses such models at load): spatial attributes one
//! per spatial axis, Einsum terms one label per axis, 4-D SpaceToDepth and RoiAlign inputs,
//! GatherND index depths within the data, Gemm's shared dimension, Attention's heads.
use crate::infer::Fact;
use crate::{Attr, Node, Op};

/// A value's rank and (possibly unknown) dims, from its fact.
struct Operand<'a>(Option<&'a Fact>);

impl Operand<'_> {
    fn rank(&self) -> Option<usize> {
        self.0?.ty.shape.as_ref().map(|s| s.len())
    }
    fn dim(&self, d: usize) -> Option<usize> {
        self.0?.ty.shape.as_ref()?.get(d)?.known()
    }
    fn present(&self) -> bool {
        self.0.is_some()
    }
    /// Statically empty (a constant or declared shape with no elements).
    fn empty(&self) -> bool {
        self.0.and_then(|f| f.ty.static_shape()).is_some_and(|s| s.contains(&0))
    }
}

fn ints<'a>(n: &'a Node, k: &str) -> Option<&'a [i64]> {
    match n.attr(k) {
        Some(Attr::Ints(v)) => Some(v),
        _ => None,
    }
}

fn int(n: &Node, k: &str) -> Option<i64> {
    match n.attr(k) {
        Some(Attr::Int(v)) => Some(*v),
        _ => None,
    }
}

/// Checks `n` against its operands' facts; the error says which rank or attribute is wrong.
pub fn check(n: &Node, ins: &[Option<Fact>], opset: i64) -> Result<(), String> {
    use Op::*;
    let x = |k: usize| Operand(ins.get(k).and_then(|f| f.as_ref()));
    let need_rank = |k: usize, what: &str, ok: &[usize]| match x(k).rank() {
        Some(r) if !ok.contains(&r) => {
            let want: Vec<String> = ok.iter().map(|r| r.to_string()).collect();
            Err(format!("{what} has rank {r}; {} takes rank {}", n.op, want.join(" or ")))
        }
        _ => Ok(()),
    };
    if let Some(Attr::Str(p)) = n.attr("auto_pad") {
        if !matches!(p.as_str(), "NOTSET" | "SAME_UPPER" | "SAME_LOWER" | "VALID") {
            return Err(format!("auto_pad '{p}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"));
        }
    }
    match n.op {
        Conv | ConvTranspose | ConvInteger | QLinearConv | MaxPool | AveragePool | LpPool => {
            if let Some(r) = x(0).rank() {
                if r < 2 {
                    return Err(format!("the input has rank {r}; {} takes rank 2 or more", n.op));
                }
                let sp = r - 2;
                for (k, len) in [
                    ("kernel_shape", sp),
                    ("strides", sp),
                    ("dilations", sp),
                    ("pads", 2 * sp),
                    ("output_padding", sp),
                    ("output_shape", sp),
                ] {
                    if let Some(v) = ints(n, k) {
                        // output_shape may also hold the whole shape
                        if v.len() != len && !(k == "output_shape" && v.len() == r) {
                            return Err(format!("{k} {v:?} has {} entries; a rank-{r} input needs {len}", v.len()));
                        }
                    }
                }
            }
            // the window's attributes agree with each other whatever the input's rank
            if let Some(k) = ints(n, "kernel_shape").map(|v| v.len()) {
                if k == 0 {
                    return Err("kernel_shape is empty".into());
                }
                for (key, per) in [("strides", 1), ("dilations", 1), ("pads", 2)] {
                    if let Some(v) = ints(n, key).filter(|v| v.len() != per * k) {
                        return Err(format!("{key} {v:?} has {} entries for a {k}-D kernel", v.len()));
                    }
                }
            }
            for k in ["kernel_shape", "strides", "dilations"] {
                if let Some(v) = ints(n, k).filter(|v| v.iter().any(|&d| d < 1)) {
                    return Err(format!("{k} {v:?} must be positive"));
                }
            }
            // ConvTranspose's input channels split into its groups
            if let (ConvTranspose, Some(c), Some(g)) = (n.op, x(0).dim(1), int(n, "group")) {
                if g > 0 && c % g as usize != 0 {
                    return Err(format!("{c} input channels do not split into {g} groups"));
                }
            }
            // without kernel_shape the weight's spatial dims are the kernel
            if matches!(n.op, Conv | ConvTranspose) && ints(n, "kernel_shape").is_none() {
                if let Some(r) = x(1).rank() {
                    if let Some(d) = (2..r).find(|&d| x(1).dim(d) == Some(0)) {
                        return Err(format!("the weight's kernel axis {d} is 0: kernels must be positive"));
                    }
                }
            }
        }
        GlobalAveragePool | GlobalMaxPool => {
            if let Some(r) = x(0).rank().filter(|&r| r < 2) {
                return Err(format!("the input has rank {r}; {} takes rank 2 or more", n.op));
            }
        }
        SpaceToDepth | DepthToSpace => need_rank(0, "the input", &[4])?,
        RoiAlign => {
            need_rank(0, "the input", &[4])?;
            need_rank(1, "rois", &[2])?;
            need_rank(2, "batch_indices", &[1])?;
        }
        Reshape => need_rank(1, "the shape", &[1])?,
        GatherND => {
            let b = int(n, "batch_dims").unwrap_or(0);
            if let (Some(rd), Some(ri)) = (x(0).rank(), x(1).rank()) {
                if rd == 0 || ri == 0 {
                    return Err("GatherND's data and indices must have rank 1 or more".into());
                }
                if b < 0 || b as usize >= rd.min(ri) {
                    return Err(format!("batch_dims {b} must be below both ranks ({rd}, {ri})"));
                }
                if let Some(last) = x(1).dim(ri - 1) {
                    if last > rd - b as usize {
                        return Err(format!("an index of {last} coordinates is deeper than the data's rank {rd}"));
                    }
                }
            }
        }
        // from opset 11 scales (input 2) or sizes (input 3), one of them; an empty one is absent
        Resize if opset >= 11 => {
            let given = |k: usize| x(k).present() && !x(k).empty();
            if given(2) == given(3) {
                let which = if given(2) { "both are" } else { "neither is" };
                return Err(format!("Resize takes scales or sizes, and {which} given"));
            }
        }
        Gemm => {
            need_rank(0, "A", &[2])?;
            need_rank(1, "B", &[2])?;
            let (ta, tb) = (int(n, "transA").unwrap_or(0) != 0, int(n, "transB").unwrap_or(0) != 0);
            let ka = x(0).dim(if ta { 0 } else { 1 });
            let kb = x(1).dim(if tb { 1 } else { 0 });
            if let (Some(a), Some(b)) = (ka, kb) {
                if a != b {
                    return Err(format!("A's {a} columns do not meet B's {b} rows"));
                }
            }
        }
        Pad => {
            let axes = ins.get(3).and_then(|f| f.as_ref()).and_then(|f| f.konst.as_ref()).map(|t| t.to_i64());
            if let (Some(axes), Some(r)) = (&axes, x(0).rank()) {
                if let Some(a) = axes.iter().find(|&&a| a < -(r as i64) || a >= r as i64) {
                    return Err(format!("axis {a} is out of range for rank {r}"));
                }
            }
            // pads: an input from opset 11, an attribute before
            let pads = ins.get(1).and_then(|f| f.as_ref()).and_then(|f| f.konst.as_ref()).map(|t| t.len());
            let pads = pads.or(ints(n, "pads").map(|p| p.len()));
            let axes_n = axes.map(|a| a.len()).or(x(0).rank());
            if let (Some(p), Some(a)) = (pads, axes_n) {
                if p != 2 * a {
                    return Err(format!("{p} pads for {a} axes (two per axis)"));
                }
            }
        }
        // a body gives the node's outputs (a Loop's also its condition first)
        Scan | Loop => {
            if let Some(Attr::Graph(body)) = n.attr("body") {
                let want = n.outputs.len() + usize::from(n.op == Loop);
                if body.outputs.len() != want {
                    return Err(format!("the body has {} outputs, the node needs {want}", body.outputs.len()));
                }
            }
            if let Some(m) = int(n, "num_scan_inputs").filter(|&m| m < 1 || m as usize > n.inputs.len()) {
                return Err(format!("num_scan_inputs {m} must be between 1 and the node's {} inputs", n.inputs.len()));
            }
        }
        Einsum => {
            if let Some(Attr::Str(eq)) = n.attr("equation") {
                einsum(eq, ins)?;
            }
        }
        Attention => {
            // onnxruntime runs Attention as its function body, where Q·K and ·V share one type
            let dt = |k: usize| ins.get(k).and_then(|f| f.as_ref()).map(|f| f.ty.dtype);
            if let (Some(q), Some(v)) = (dt(0), dt(2)) {
                if q != v {
                    return Err(format!("V is {v} but Q is {q}: they must share one type"));
                }
            }
            need_rank(0, "Q", &[3, 4])?;
            need_rank(1, "K", &[3, 4])?;
            need_rank(2, "V", &[3, 4])?;
            if x(4).present() {
                need_rank(4, "past_key", &[4])?;
            }
            if x(5).present() {
                need_rank(5, "past_value", &[4])?;
            }
            for k in ["q_num_heads", "kv_num_heads"] {
                if let Some(h) = int(n, k).filter(|&h| h < 1) {
                    return Err(format!("{k} {h} must be positive"));
                }
            }
            if x(0).rank() == Some(3) {
                for k in ["q_num_heads", "kv_num_heads"] {
                    if int(n, k).is_none() {
                        return Err(format!("3-D inputs need the {k} attribute"));
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// An Einsum equation against its operands: a term per operand, a label per axis (an ellipsis
/// standing for the rest), output labels that some input has.
fn einsum(eq: &str, ins: &[Option<Fact>]) -> Result<(), String> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, out) = match eq.split_once("->") {
        Some((l, o)) => (l, Some(o)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ins.len() {
        return Err(format!("the equation has {} operands, the node {}", terms.len(), ins.len()));
    }
    for (k, t) in terms.iter().enumerate() {
        let labels = t.replace("...", "").chars().count();
        let ellipsis = t.contains("...");
        if let Some(r) = ins[k].as_ref().and_then(|f| f.ty.shape.as_ref()).map(|s| s.len()) {
            if (!ellipsis && labels != r) || (ellipsis && labels > r) {
                return Err(format!("term '{t}' has {labels} labels for input {k} of rank {r}"));
            }
        }
    }
    if let Some(o) = out {
        if let Some(c) = o.replace("...", "").chars().find(|c| !lhs.contains(*c)) {
            return Err(format!("output label '{c}' is in no input"));
        }
    }
    Ok(())
}
