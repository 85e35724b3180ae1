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
        let shape_of = |g: &mut Graph, suffix: &str, dims: &[usize]| {
            let v =
                g.add_value(format!("{name}.{suffix}_shape"), ValueType::known(xforge_ir::DType::I64, &[dims.len()]));
            g.weights.insert(v, Tensor::from_i64(vec![dims.len()], dims.iter().map(|&d| d as i64).collect()));
            v
        };
        let mut push = |op: Op, inputs: Vec<ValueId>, out: ValueId, attrs: Vec<(&str, Attr)>, what: &str| {
            nodes.push(Node {
                name: format!("{name}.{what}"),
                op,
                inputs: inputs.into_iter().map(Some).collect(),
                outputs: vec![Some(out)],
                attrs: attrs.into_iter().map(|(k, a)| (k.to_string(), a)).collect(),
            })
        };
        let s6 = shape_of(g, "split", &[nn, c, oh, kh, ow, kw]);
        let x6 = value(g, "split", &[nn, c, oh, kh, ow, kw]);
        push(Op::Reshape, vec![x, s6], x6, vec![], "split");
        let xt = value(g, "patches", &[nn, oh, ow, c, kh, kw]);
        push(Op::Transpose, vec![x6], xt, vec![("perm", Attr::Ints(vec![0, 2, 4, 1, 3, 5]))], "patches");
        let s2 = shape_of(g, "rows", &[nn * oh * ow, c * kh * kw]);
        let x2 = value(g, "rows", &[nn * oh * ow, c * kh * kw]);
        push(Op::Reshape, vec![xt, s2], x2, vec![], "rows");
        // W (K, C, KH, KW) as (K, C·KH·KW): the same elements in the same order
        let wt = g.weights[&w].clone();
        let w2 = g.add_value(format!("{name}.weight_rows"), ValueType::known(wt.dtype(), &[k, c * kh * kw]));
        g.weights.insert(w2, Tensor::new(vec![k, c * kh * kw], wt.data().clone()));
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
