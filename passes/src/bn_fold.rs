//! Folds an inference BatchNormalization into the Conv (or Gemm with transB) that feeds it:
//! W' = W·s, B' = (B − mean)·s + beta with s = scale / sqrt(var + eps), per output channel.
use crate::rewrite::consumers;
use xforge_ir::{Attr, Graph, Op, Tensor};

fn float_attr(n: &xforge_ir::Node, k: &str, d: f32) -> f64 {
    match n.attr(k) {
        Some(Attr::Float(v)) => *v as f64,
        _ => d as f64,
    }
}

/// Returns the number of BatchNormalizations folded.
pub fn fold_batch_norms(g: &mut Graph) -> usize {
    let mut folded = 0;
    loop {
        let uses = consumers(g);
        let mut done = false;
        for bi in 0..g.nodes.len() {
            let bn = &g.nodes[bi];
            if bn.op != Op::BatchNormalization || bn.outputs.iter().skip(1).any(|o| o.is_some()) {
                continue;
            }
            if matches!(bn.attr("training_mode"), Some(Attr::Int(1))) {
                continue;
            }
            let Some(y) = bn.inputs[0] else { continue };
            let params: Option<Vec<Vec<f64>>> =
                bn.inputs[1..].iter().map(|i| i.and_then(|v| g.weights.get(&v)).map(|t| t.to_f64())).collect();
            let Some(params) = params.filter(|p| p.len() == 4) else { continue };
            let Some(pi) = g.nodes.iter().position(|n| n.outputs.first() == Some(&Some(y))) else { continue };
            let prod = &g.nodes[pi];
            if uses[y.index()].len() != 1 || g.outputs.contains(&y) {
                continue;
            }
            let gemm_t = prod.op == Op::Gemm && matches!(prod.attr("transB"), Some(Attr::Int(1)));
            if !(prod.op == Op::Conv || gemm_t) {
                continue;
            }
            let Some(w) = prod.inputs[1].and_then(|v| g.weights.get(&v)).cloned() else { continue };
            let c = w.shape()[0];
            if params.iter().any(|p| p.len() != c) || !w.dtype().is_float() {
                continue;
            }
            let eps = float_attr(bn, "epsilon", 1e-5);
            let (scale, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
            let s: Vec<f64> = (0..c).map(|k| scale[k] / (var[k] + eps).sqrt()).collect();
            let bias_in = match prod.inputs.get(2).copied().flatten() {
                Some(b) => match g.weights.get(&b) {
                    Some(t) if t.len() == c => t.to_f64(),
                    _ => continue,
                },
                None => vec![0.0; c],
            };
            if gemm_t
                && (matches!(prod.attr("alpha"), Some(Attr::Float(a)) if *a != 1.0)
                    || matches!(prod.attr("beta"), Some(Attr::Float(b)) if *b != 1.0))
            {
                continue;
            }
            let per = w.len() / c;
            let wv: Vec<f64> = w.to_f64().iter().enumerate().map(|(i, v)| v * s[i / per]).collect();
            let bv: Vec<f64> = (0..c).map(|k| (bias_in[k] - mean[k]) * s[k] + beta[k]).collect();
            let dt = w.dtype();
            let out = bn.outputs[0].expect("BN output");
            let w_id = g.add_value(
                format!("{}_bnfolded_w", g.name_of(prod.inputs[1].unwrap())),
                g.ty(prod.inputs[1].unwrap()).clone(),
            );
            g.weights.insert(w_id, Tensor::from_f64(dt, w.shape().to_vec(), &wv));
            let b_id = g.add_value(format!("{}_bnfolded_b", g.nodes[pi].name), xforge_ir::ValueType::known(dt, &[c]));
            g.weights.insert(b_id, Tensor::from_f64(dt, vec![c], &bv));
            let prod = &mut g.nodes[pi];
            prod.inputs[1] = Some(w_id);
            if prod.inputs.len() < 3 {
                prod.inputs.push(Some(b_id));
            } else {
                prod.inputs[2] = Some(b_id);
            }
            prod.outputs[0] = Some(out);
            g.nodes.remove(bi);
            folded += 1;
            done = true;
            break;
        }
        if !done {
            return folded;
        }
    }
}

/// Rewrites each inference BatchNormalization that no contraction absorbed (after a Concat, a
/// pool, an input) as x·a + b with per-channel constants a = scale / sqrt(var + eps) and
/// b = beta − mean·a shaped [C, 1, ...]: elementwise work that fuses with its neighbours.
/// Returns the number rewritten.
pub fn batch_norms_to_affine(g: &mut Graph) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        let bn = &g.nodes[i];
        let ok = bn.op == Op::BatchNormalization
            && !bn.outputs.iter().skip(1).any(|o| o.is_some())
            && !matches!(bn.attr("training_mode"), Some(Attr::Int(1)));
        let x = bn.inputs.first().copied().flatten();
        let params: Option<Vec<Vec<f64>>> =
            bn.inputs.iter().skip(1).map(|v| v.and_then(|v| g.weights.get(&v)).map(|t| t.to_f64())).collect();
        let shape = x.and_then(|x| g.ty(x).static_shape());
        let (Some(x), Some(params), Some(shape), true) = (x, params, shape, ok) else {
            i += 1;
            continue;
        };
        let dt = g.ty(x).dtype;
        if params.len() != 4 || shape.len() < 2 || !dt.is_float() || params.iter().any(|p| p.len() != shape[1]) {
            i += 1;
            continue;
        }
        let c = shape[1];
        let eps = float_attr(bn, "epsilon", 1e-5);
        let (scale, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
        let a: Vec<f64> = (0..c).map(|k| scale[k] / (var[k] + eps).sqrt()).collect();
        let b: Vec<f64> = (0..c).map(|k| beta[k] - mean[k] * a[k]).collect();
        let mut pshape = vec![c];
        pshape.extend(std::iter::repeat_n(1, shape.len() - 2));
        let name = bn.name.clone();
        let out = bn.outputs[0].expect("BN output");
        let a_id = g.add_value(format!("{name}_scale"), xforge_ir::ValueType::known(dt, &pshape));
        g.weights.insert(a_id, Tensor::from_f64(dt, pshape.clone(), &a));
        let b_id = g.add_value(format!("{name}_shift"), xforge_ir::ValueType::known(dt, &pshape));
        g.weights.insert(b_id, Tensor::from_f64(dt, pshape.clone(), &b));
        let mid = g.add_value(format!("{name}_scaled"), xforge_ir::ValueType::known(dt, &shape));
        let mul = xforge_ir::Node {
            name: format!("{name}/scale"),
            op: Op::Mul,
            inputs: vec![Some(x), Some(a_id)],
            outputs: vec![Some(mid)],
            attrs: Default::default(),
        };
        let add = xforge_ir::Node {
            name: format!("{name}/shift"),
            op: Op::Add,
            inputs: vec![Some(mid), Some(b_id)],
            outputs: vec![Some(out)],
            attrs: Default::default(),
        };
        g.nodes.splice(i..=i, [mul, add]);
        n += 1;
        i += 2;
    }
    n
}
