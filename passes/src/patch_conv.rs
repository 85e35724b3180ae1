//! Patch convolutions as GEMMs: a Conv whose kernel equals its stride (larger than 1), without
//! padding, dilation or groups, over an input whose height and width are whole numbers of
//! patches (ViT's and Swin's patch embeddings, ConvNeXt's stem) reads every input element once.
//! Its im2col is a permutation, so it is exactly
//!
//! ```text
//! x (N, C, OH·KH, OW·KW) → reshape (N, C, OH, KH, OW, KW) → transpose (N, OH, OW, C, KH, KW)
//!   → reshape (N·OH·OW, C·KH·KW) → Gemm(·, W (K, C·KH·KW), bias, transB) (N·OH·OW, K)
//!   → reshape (N, OH, OW, K) → transpose (N, K, OH, OW)
//! ```
//!
//! which cuBLASLt runs far faster than cuDNN runs the convolution (H100, ViT-B/16 at batch 32 in
//! fp16: 385 µs for cuDNN's best algorithm). The transposes are copies the layout rules may cancel
//! against the model's own (ViT flattens and transposes right after).
//!
//! Where x is the model's own channels-last tensor put back to NCHW (ConvNeXt's downsampling:
//! LayerNorm over channels, `Transpose(0, 3, 1, 2)`, then the 2×2 patch Conv), the patches come
//! from the channels-last tensor directly, with the weights' columns in (KH, KW, C) order:
//!
//! ```text
//! xh (N, OH·KH, OW·KW, C) → reshape (N, OH, KH, OW, KW, C) → transpose (N, OH, OW, KH, KW, C)
//!   → reshape (N·OH·OW, KH·KW·C) → Gemm(·, W (K, KH·KW·C), …)
//! ```
//!
//! one copy whose innermost KW·C elements stay contiguous, instead of two transposes through NCHW.
use crate::rewrite::{node, shape_weight};
use xforge_ir::{Attr, Graph, Node, Op, Tensor, ValueId, ValueType};

/// The Conv's sizes when it is a patch convolution: (N, C, K, OH, OW, KH, KW).
fn patches(g: &Graph, n: &Node) -> Option<[usize; 7]> {
    if n.op != Op::Conv || n.outputs.len() != 1 {
        return None;
    }
    let x = n.inputs.first().copied().flatten()?;
    let w = n.inputs.get(1).copied().flatten()?;
    let [nn, c, h, wd] = g.ty(x).static_shape()?[..] else { return None };
    let [k, wc, kh, kw] = g.weights.get(&w)?.shape()[..] else { return None };
    let ints = |name: &str, default: i64| match n.attr(name) {
        Some(Attr::Ints(v)) => v.clone(),
        None => vec![default; 4],
        _ => vec![i64::MIN],
    };
    let stride = ints("strides", 1);
    let plain = ints("pads", 0).iter().all(|&p| p == 0)
        && ints("dilations", 1).iter().all(|&d| d == 1)
        && matches!(n.attr("group"), None | Some(Attr::Int(1)))
        && match n.attr("auto_pad") {
            None => true,
            Some(Attr::Str(s)) => s == "NOTSET" || s == "VALID",
            _ => false,
        }
        && match n.attr("kernel_shape") {
            None => true,
            Some(Attr::Ints(ks)) => ks == &[kh as i64, kw as i64],
            _ => false,
        }
        && stride.len() == 2;
    let whole = kh > 0 && kw > 0 && h % kh == 0 && wd % kw == 0;
    let bias_ok = match n.inputs.get(2).copied().flatten() {
        None => true,
        Some(b) => g.ty(b).static_shape().as_deref() == Some(&[k][..]),
    };
    (plain
        && whole
        && bias_ok
        && wc == c
        && stride == [kh as i64, kw as i64]
        && kh * kw > 1
        && g.ty(x).dtype.is_float())
    .then_some([nn, c, k, h / kh, wd / kw, kh, kw])
}

/// The channels-last tensor (N, H, W, C) that `x` (N, C, H, W) is `Transpose(0, 3, 1, 2)` of.
fn channels_last_source(g: &Graph, x: ValueId, nchw: [usize; 4]) -> Option<ValueId> {
    let t = g.nodes.iter().find(|n| n.outputs.contains(&Some(x)))?;
    let perm_ok = matches!(t.attr("perm"), Some(Attr::Ints(p)) if p == &[0, 3, 1, 2]);
    let xh = t.inputs.first().copied().flatten()?;
    let [n, c, h, w] = nchw;
    (t.op == Op::Transpose && perm_ok && g.ty(xh).static_shape().as_deref() == Some(&[n, h, w, c][..])).then_some(xh)
}

/// Rewrites every patch convolution; returns how many.
pub fn patch_convs_to_gemms(g: &mut Graph) -> usize {
    let mut done = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        let Some([nn, c, k, oh, ow, kh, kw]) = patches(g, &g.nodes[i]) else {
            i += 1;
            continue;
        };
        let conv = g.nodes[i].clone();
        let (x, w, bias, y) = (
            conv.inputs[0].unwrap(),
            conv.inputs[1].unwrap(),
            conv.inputs.get(2).copied().flatten(),
            conv.outputs[0].unwrap(),
        );
        let dt = g.ty(x).dtype;
        let name = conv.name.clone();
        let mut nodes = vec![];
        let value = |g: &mut Graph, suffix: &str, shape: &[usize]| {
            g.add_value(format!("{name}.{suffix}"), ValueType::known(dt, shape))
        };
        let shape_of =
            |g: &mut Graph, suffix: &str, dims: &[usize]| shape_weight(g, format!("{name}.{suffix}_shape"), dims);
        let mut push = |op: Op, inputs: Vec<ValueId>, out: ValueId, attrs: Vec<(&str, Attr)>, what: &str| {
            nodes.push(node(&name, what, op, &inputs, out, attrs))
        };
        let wt = g.weights[&w].clone();
        // the patches' source, its split into patches and their order, and W's columns in that
        // order: from the channels-last tensor (KH, KW, C), else from x (C, KH, KW)
        let nhwc = channels_last_source(g, x, [nn, c, oh * kh, ow * kw]);
        let (source, split, perm, w_cols) = match nhwc.zip(wt.transposed(&[0, 2, 3, 1])) {
            Some((xh, w_khwc)) => (xh, [nn, oh, kh, ow, kw, c], [0, 1, 3, 2, 4, 5], w_khwc.data().clone()),
            None => (x, [nn, c, oh, kh, ow, kw], [0, 2, 4, 1, 3, 5], wt.data().clone()),
        };
        let s6 = shape_of(g, "split", &split);
        let x6 = value(g, "split", &split);
        push(Op::Reshape, vec![source, s6], x6, vec![], "split");
        let patches: Vec<usize> = perm.iter().map(|&p| split[p]).collect();
        let xt = value(g, "patches", &patches);
        push(
            Op::Transpose,
            vec![x6],
            xt,
            vec![("perm", Attr::Ints(perm.iter().map(|&p| p as i64).collect()))],
            "patches",
        );
        let s2 = shape_of(g, "rows", &[nn * oh * ow, c * kh * kw]);
        let x2 = value(g, "rows", &[nn * oh * ow, c * kh * kw]);
        push(Op::Reshape, vec![xt, s2], x2, vec![], "rows");
        // W (K, C, KH, KW) as (K, C·KH·KW), each kernel's weights in the patches' order
        let w2 = g.add_value(format!("{name}.weight_rows"), ValueType::known(wt.dtype(), &[k, c * kh * kw]));
        g.weights.insert(w2, Tensor::new(vec![k, c * kh * kw], w_cols));
        let y2 = value(g, "gemm", &[nn * oh * ow, k]);
        let mut ins = vec![x2, w2];
        ins.extend(bias);
        push(Op::Gemm, ins, y2, vec![("transB", Attr::Int(1))], "gemm");
        let s4 = shape_of(g, "grid", &[nn, oh, ow, k]);
        let y4 = value(g, "grid", &[nn, oh, ow, k]);
        push(Op::Reshape, vec![y2, s4], y4, vec![], "grid");
        push(Op::Transpose, vec![y4], y, vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))], "nchw");
        let added = nodes.len();
        g.nodes.splice(i..=i, nodes);
        i += added;
        done += 1;
    }
    done
}
