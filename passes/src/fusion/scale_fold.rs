//! Scale folding: a constant scale along the output columns of a MatMul by a weight folds into
//! that weight (and its bias): `(x·W + b)·s` → `x·(W·s) + b·s`. Layer scales after a Linear
//! (ConvNeXt's γ, CaiT, ...) then leave the GEMM an epilogue the library runs (bias, residual).
use super::analysis::{FusionAnalysis, FusionGraph};
use super::language::{ENode, Head};
use super::rules::{add_op, rule, weight_in as weight};
use egg::{Id, Rewrite, Subst};
use xforge_ir::{Op, Tensor};

fn var(s: &str) -> egg::Var {
    s.parse().expect("var")
}

/// The values of a tensor that varies along its last axis only, as `n` per-column entries
/// (a one-element tensor broadcasts).
fn per_column(t: &Tensor, n: usize) -> Option<Vec<f64>> {
    let s = t.shape();
    let lead_ones = s.len() < 2 || s[..s.len() - 1].iter().all(|&d| d == 1);
    if !t.dtype().is_float() || !lead_ones {
        return None;
    }
    let v = t.to_f64();
    match v.len() {
        1 => Some(vec![v[0]; n]),
        l if l == n => Some(v),
        _ => None,
    }
}

/// `Mul(MatMul(x, W) [+ b], s)` with `s` on either side and the bias on either side of its Add.
fn fold(eg: &mut FusionGraph, s: &Subst, with_bias: bool, bias_first: bool) -> Option<Id> {
    let (x, w, sc) = (s[var("?x")], s[var("?w")], s[var("?s")]);
    let (wk, wt) = weight(eg, w)?;
    let (sk, st) = weight(eg, sc)?;
    if wt.rank() != 2 || !wt.dtype().is_float() {
        return None;
    }
    let n = wt.shape()[1];
    let scale = per_column(&st, n)?;
    // the product keeps the GEMM's shape: the scale must not broadcast it to more dims
    if st.rank() > eg[x].data.ty().shape.as_ref()?.len() {
        return None;
    }
    let wv: Vec<f64> = wt.to_f64().iter().enumerate().map(|(i, v)| v * scale[i % n]).collect();
    let w2 = eg.analysis.rule_weight(format!("scale-fold w {wk} {sk}"), "scale_folded_w", || {
        Tensor::from_f64(wt.dtype(), wt.shape().to_vec(), &wv)
    });
    let w2 = eg.add(ENode { head: Head::Weight(w2), args: vec![] });
    let mm = add_op(eg, Op::MatMul, vec![], &[x, w2]);
    if !with_bias {
        return Some(mm);
    }
    let (bk, bt) = weight(eg, s[var("?b")])?;
    let bias = per_column(&bt, n)?;
    if bt.len() != n && bt.len() != 1 {
        return None;
    }
    let bv: Vec<f64> = bias.iter().zip(&scale).map(|(b, s)| b * s).collect();
    let shape = if bt.len() == n { bt.shape().to_vec() } else { vec![n] };
    let b2 = eg
        .analysis
        .rule_weight(format!("scale-fold b {bk} {sk}"), "scale_folded_b", || Tensor::from_f64(bt.dtype(), shape, &bv));
    let b2 = eg.add(ENode { head: Head::Weight(b2), args: vec![] });
    Some(add_op(eg, Op::Add, vec![], &if bias_first { [b2, mm] } else { [mm, b2] }))
}

pub fn scale_fold_rules() -> Vec<Rewrite<ENode, FusionAnalysis>> {
    vec![
        rule("scale-fold-mb", "(Mul (Add (MatMul ?x ?w) ?b) ?s)", |eg, s, _| fold(eg, s, true, false)),
        rule("scale-fold-bm", "(Mul (Add ?b (MatMul ?x ?w)) ?s)", |eg, s, _| fold(eg, s, true, true)),
        rule("scale-fold-s-mb", "(Mul ?s (Add (MatMul ?x ?w) ?b))", |eg, s, _| fold(eg, s, true, false)),
        rule("scale-fold-s-bm", "(Mul ?s (Add ?b (MatMul ?x ?w)))", |eg, s, _| fold(eg, s, true, true)),
        rule("scale-fold-m", "(Mul (MatMul ?x ?w) ?s)", |eg, s, _| fold(eg, s, false, false)),
        rule("scale-fold-s-m", "(Mul ?s (MatMul ?x ?w))", |eg, s, _| fold(eg, s, false, false)),
    ]
}
