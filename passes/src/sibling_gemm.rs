//! Horizontal fusion of sibling matrix products: `MatMul(x, W_i)` (+ `Add(·, b_i)`) for several
//! constant 2-D `W_i` over the same `x` become one `MatMul(x, [W_1 … W_n])` (+ one bias Add) and
//! a `Split` along the last axis — BERT's Q, K and V projections become one GEMM.
use crate::rewrite::{consumers, toposort};
use xforge_ir::{Attr, Graph, Node, Op, Tensor, TensorData, ValueId, ValueType};

/// One sibling: its MatMul node, weight, and (bias node, bias) when a constant bias follows.
struct Sibling {
    matmul: usize,
    w: Tensor,
    bias: Option<(usize, Tensor)>,
}

fn concat_cols(parts: &[&Tensor]) -> Tensor {
    // each part is [K, N_i]: interleave rows
    let k = parts[0].shape()[0];
    let mut rows: Vec<TensorData> = vec![];
    for r in 0..k {
        for p in parts {
            let n = p.shape()[1];
            rows.push(p.data().take(&(r * n..(r + 1) * n).collect::<Vec<_>>()));
        }
    }
    let n: usize = parts.iter().map(|p| p.shape()[1]).sum();
    Tensor::new(vec![k, n], TensorData::concat(&rows.iter().collect::<Vec<_>>()))
}

/// Returns the number of MatMul groups merged.
pub fn merge_sibling_matmuls(g: &mut Graph) -> usize {
    let uses = consumers(g);
    let mut merged = 0;
    let mut remove: Vec<usize> = vec![];
    let mut inserts: Vec<(usize, Vec<Node>)> = vec![];
    let inputs: Vec<ValueId> = (0..g.values.len() as u32).map(ValueId).collect();
    for x in inputs {
        let mut sibs: Vec<Sibling> = vec![];
        for &(ni, pos) in &uses[x.index()] {
            let n = &g.nodes[ni];
            if n.op != Op::MatMul || pos != 0 {
                continue;
            }
            let Some(w) = n.inputs[1].and_then(|v| g.weights.get(&v)) else { continue };
            if w.rank() != 2 {
                continue;
            }
            let out = n.outputs[0].expect("matmul output");
            let bias = match uses[out.index()].as_slice() {
                [(bi, _)] if g.nodes[*bi].op == Op::Add && !g.outputs.contains(&out) => {
                    let b = &g.nodes[*bi];
                    let other = if b.inputs[0] == Some(out) { b.inputs[1] } else { b.inputs[0] };
                    other
                        .and_then(|v| g.weights.get(&v))
                        .filter(|t| t.shape() == [w.shape()[1]])
                        .map(|t| (*bi, t.clone()))
                }
                _ => None,
            };
            sibs.push(Sibling { matmul: ni, w: w.clone(), bias });
        }
        if sibs.len() < 2 {
            continue;
        }
        let (k, dt) = (sibs[0].w.shape()[0], sibs[0].w.dtype());
        // all weights must agree in K and dtype; biases all present or all absent
        if sibs.iter().any(|s| s.w.shape()[0] != k || s.w.dtype() != dt)
            || sibs.iter().any(|s| s.bias.is_some() != sibs[0].bias.is_some())
        {
            continue;
        }
        let widths: Vec<usize> = sibs.iter().map(|s| s.w.shape()[1]).collect();
        let total: usize = widths.iter().sum();
        let wcat = concat_cols(&sibs.iter().map(|s| &s.w).collect::<Vec<_>>());
        let Some(xs) = g.ty(x).shape.clone() else { continue };
        let mut yshape = xs.clone();
        if let Some(last) = yshape.last_mut() {
            *last = xforge_ir::Dim::Known(total);
        }
        let first = &g.nodes[sibs[0].matmul].name.clone();
        let w_id = g.add_value(format!("{first}_merged_w"), ValueType::known(dt, &[k, total]));
        g.weights.insert(w_id, wcat);
        let mm_out = g.add_value(format!("{first}_merged"), ValueType::new(dt, yshape.clone()));
        let mut nodes = vec![Node {
            name: format!("{first}_merged"),
            op: Op::MatMul,
            inputs: vec![Some(x), Some(w_id)],
            outputs: vec![Some(mm_out)],
            attrs: Default::default(),
        }];
        let mut split_in = mm_out;
        if sibs[0].bias.is_some() {
            let parts: Vec<&TensorData> = sibs.iter().map(|s| s.bias.as_ref().unwrap().1.data()).collect();
            let b_id = g.add_value(format!("{first}_merged_b"), ValueType::known(dt, &[total]));
            g.weights.insert(b_id, Tensor::new(vec![total], TensorData::concat(&parts)));
            let add_out = g.add_value(format!("{first}_merged_biased"), ValueType::new(dt, yshape.clone()));
            nodes.push(Node {
                name: format!("{first}_merged_bias"),
                op: Op::Add,
                inputs: vec![Some(mm_out), Some(b_id)],
                outputs: vec![Some(add_out)],
                attrs: Default::default(),
            });
            split_in = add_out;
        }
        let sizes =
            g.add_value(format!("{first}_split_sizes"), ValueType::known(xforge_ir::DType::I64, &[widths.len()]));
        g.weights.insert(sizes, Tensor::from_i64(vec![widths.len()], widths.iter().map(|&w| w as i64).collect()));
        // the split writes the values the old nodes produced
        let outs: Vec<Option<ValueId>> = sibs
            .iter()
            .map(|s| {
                Some(match &s.bias {
                    Some((bi, _)) => g.nodes[*bi].outputs[0].unwrap(),
                    None => g.nodes[s.matmul].outputs[0].unwrap(),
                })
            })
            .collect();
        let mut split = Node {
            name: format!("{first}_split"),
            op: Op::Split,
            inputs: vec![Some(split_in)],
            outputs: outs,
            attrs: Default::default(),
        };
        split.attrs.insert("axis".into(), Attr::Int(-1));
        if g.opset >= 13 {
            split.inputs.push(Some(sizes));
        } else {
            split.attrs.insert("split".into(), Attr::Ints(widths.iter().map(|&w| w as i64).collect()));
        }
        nodes.push(split);
        // placed at the last sibling; `toposort` then moves consumers of earlier siblings after it
        let at = sibs.iter().map(|s| s.bias.as_ref().map_or(s.matmul, |b| b.0.max(s.matmul))).max().unwrap();
        for s in &sibs {
            remove.push(s.matmul);
            if let Some((bi, _)) = s.bias {
                remove.push(bi);
            }
        }
        inserts.push((at, nodes));
        merged += 1;
    }
    if merged == 0 {
        return 0;
    }
    let old = std::mem::take(&mut g.nodes);
    for (i, n) in old.into_iter().enumerate() {
        if !remove.contains(&i) {
            g.nodes.push(n);
        }
        for (at, ns) in &inserts {
            if *at == i {
                g.nodes.extend(ns.iter().cloned());
            }
        }
    }
    toposort(g);
    merged
}
