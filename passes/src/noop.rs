//! Removes ops that do nothing: Identity, inference-mode Dropout, Cast to the same dtype,
//! Reshape/Flatten/Squeeze/Unsqueeze/Expand to the same static shape, Pad by zeros, Slice of
//! step 1 over everything, and Transpose pairs that
//! compose to the identity (a pair that does not becomes one Transpose). A Transpose that moves
//! only axes of size 1 becomes the Reshape it is.
use crate::rewrite::replace_uses;
use xforge_ir::{Attr, DType, Graph, Op, ValueId, ValueType};

fn perm(n: &xforge_ir::Node, rank: usize) -> Option<Vec<usize>> {
    match n.attr("perm") {
        Some(Attr::Ints(p)) => {
            p.iter().map(|&v| usize::try_from(if v < 0 { v + rank as i64 } else { v }).ok()).collect()
        }
        None => Some((0..rank).rev().collect()),
        _ => None,
    }
}

/// Whether permutation `p` of a value of `shape` keeps the order of its axes longer than 1 (a
/// Reshape in effect; the cost model prices such a Transpose as a view too).
pub(crate) fn keeps_nonunit_order(shape: &[usize], p: &[usize]) -> bool {
    let kept: Vec<usize> = p.iter().copied().filter(|&k| shape.get(k).is_some_and(|&d| d != 1)).collect();
    kept.windows(2).all(|w| w[0] < w[1])
}

/// Whether a permutation of `x` keeps the order of its axes longer than 1 (static shapes).
fn moves_only_unit_axes(g: &Graph, x: ValueId, p: &[usize]) -> bool {
    g.ty(x).static_shape().is_some_and(|s| keeps_nonunit_order(&s, p))
}

/// Returns the number of nodes bypassed (run `dce` afterwards to drop them).
/// Input `k` of `n` as constant integers.
fn const_ints(g: &Graph, n: &xforge_ir::Node, k: usize) -> Option<Vec<i64>> {
    n.inputs.get(k).copied().flatten().and_then(|v| g.weights.get(&v)).map(|t| t.to_i64())
}

/// Whether a pool's window is one element that steps by one with no padding.
fn single_element_window(n: &xforge_ir::Node) -> bool {
    let all = |k: &str, v: i64, absent: bool| match n.attr(k) {
        Some(xforge_ir::Attr::Ints(x)) => x.iter().all(|&d| d == v),
        None => absent,
        _ => false,
    };
    let auto = matches!(n.attr("auto_pad"), Some(xforge_ir::Attr::Str(m)) if m != "NOTSET");
    !auto && all("kernel_shape", 1, false) && all("strides", 1, true) && all("pads", 0, true)
}

pub fn remove_noops(g: &mut Graph) -> usize {
    let mut removed = 0;
    for i in 0..g.nodes.len() {
        let n = g.nodes[i].clone();
        let Some(out) = n.outputs.first().copied().flatten() else { continue };
        let Some(x) = n.inputs.first().copied().flatten() else { continue };
        let same_type = g.ty(x) == g.ty(out) && g.ty(out).static_shape().is_some();
        let bypass: Option<ValueId> = match n.op {
            Op::Identity => Some(x),
            // inference Dropout: its mask output must be unused
            Op::Dropout
                if n.outputs.iter().skip(1).all(|o| o.is_none()) && n.inputs.get(2).copied().flatten().is_none() =>
            {
                Some(x)
            }
            Op::Cast | Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze | Op::Expand if same_type => Some(x),
            // a Pad of zeros everywhere (Swin's pad to whole windows when they already fit)
            Op::Pad if same_type && const_ints(g, &n, 1).is_some_and(|p| p.iter().all(|&v| v == 0)) => Some(x),
            // a Slice of constant bounds and step 1 that keeps the shape keeps everything (a
            // negative step reverses; bounds known only at run time may cut a padded value)
            Op::Slice
                if same_type
                    && [1, 2].iter().all(|&k| const_ints(g, &n, k).is_some())
                    && [3, 4]
                        .iter()
                        .all(|&k| n.inputs.get(k).copied().flatten().is_none() || const_ints(g, &n, k).is_some())
                    && const_ints(g, &n, 4).is_none_or(|s| s.iter().all(|&v| v == 1)) =>
            {
                Some(x)
            }
            // a window of one element, stride 1, no pads (torchvision's AdaptiveAvgPool2d(7) on
            // VGG's 7×7 maps): each output is its input
            Op::AveragePool | Op::MaxPool
                if same_type && n.outputs.iter().skip(1).all(|o| o.is_none()) && single_element_window(&n) =>
            {
                Some(x)
            }
            Op::Transpose => {
                let rank = g.ty(x).shape.as_ref().map(|s| s.len());
                let p = rank.and_then(|r| perm(&n, r));
                match p {
                    Some(p) if p.iter().enumerate().all(|(i, &v)| i == v) => Some(x),
                    // moving only axes of size 1 keeps every element's place: a view
                    Some(p) if moves_only_unit_axes(g, x, &p) => {
                        let dims: Vec<i64> = g.ty(out).static_shape().unwrap().iter().map(|&d| d as i64).collect();
                        let shape =
                            g.add_value(format!("{}_shape", n.name), ValueType::known(DType::I64, &[dims.len()]));
                        g.weights.insert(shape, xforge_ir::Tensor::from_i64(vec![dims.len()], dims));
                        let node = &mut g.nodes[i];
                        node.op = Op::Reshape;
                        node.attrs.clear();
                        node.inputs = vec![Some(x), Some(shape)];
                        removed += 1;
                        None
                    }
                    Some(p2) => {
                        // Transpose(Transpose(y, p1), p2) == Transpose(y, p1∘p2)
                        let inner = g.nodes[..i].iter().position(|m| m.op == Op::Transpose && m.outputs[0] == Some(x));
                        match inner.map(|j| (j, g.nodes[j].clone())) {
                            Some((_, m)) => {
                                let y = m.inputs[0].expect("transpose input");
                                let p1 = perm(&m, p2.len());
                                match p1 {
                                    Some(p1) => {
                                        let composed: Vec<usize> = p2.iter().map(|&k| p1[k]).collect();
                                        if composed.iter().enumerate().all(|(i, &v)| i == v) {
                                            Some(y)
                                        } else {
                                            g.nodes[i].inputs[0] = Some(y);
                                            g.nodes[i].attrs.insert(
                                                "perm".into(),
                                                Attr::Ints(composed.iter().map(|&v| v as i64).collect()),
                                            );
                                            removed += 1;
                                            None
                                        }
                                    }
                                    None => None,
                                }
                            }
                            None => None,
                        }
                    }
                    None => None,
                }
            }
            _ => None,
        };
        if let Some(src) = bypass {
            if !g.outputs.contains(&out) {
                replace_uses(g, out, src);
                removed += 1;
                continue;
            }
            // a graph output keeps its name: the source's producer writes it directly
            let producer = g.nodes[..i].iter().position(|m| m.outputs.contains(&Some(src)));
            if let (Some(p), false) = (producer, g.outputs.contains(&src)) {
                for o in g.nodes[p].outputs.iter_mut() {
                    if *o == Some(src) {
                        *o = Some(out);
                    }
                }
                g.nodes[i].outputs[0] = None;
                replace_uses(g, src, out);
                removed += 1;
            }
        }
    }
    removed
}
