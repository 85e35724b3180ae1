//! Losses: SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss.
use super::attrs::{opt, req, NodeAttrs};
use super::OpResult;
use crate::op::Op;
use crate::tensor::{numel, Tensor};

pub fn loss(op: Op, a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Vec<Tensor>> {
    let (x, target) = (req(ins, 0)?, req(ins, 1)?);
    if x.rank() < 2 {
        return Err(format!("input must be (N, C, ...), got {:?}", x.shape()));
    }
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let inner = numel(&x.shape()[2..]);
    let mut tshape = vec![n];
    tshape.extend(&x.shape()[2..]);
    if target.shape() != tshape.as_slice() {
        return Err(format!("target {:?} must have shape {tshape:?}", target.shape()));
    }
    let reduction = a.string("reduction", "mean")?;
    let ignore = a.int_opt("ignore_index")?;
    let weights = opt(ins, 2).map(|w| w.to_f64());
    if let Some(w) = opt(ins, 2).filter(|w| w.shape() != [c]) {
        return Err(format!("weight {:?} must have one entry per class ({c})", w.shape()));
    }
    let v = x.to_f64();
    // log-probabilities along the class axis
    let logp: Vec<f64> = if op == Op::SoftmaxCrossEntropyLoss {
        let mut lp = v.clone();
        for b in 0..n {
            for i in 0..inner {
                let at = |k: usize| (b * c + k) * inner + i;
                let m = (0..c).map(|k| v[at(k)]).fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = (0..c).map(|k| (v[at(k)] - m).exp()).sum::<f64>().ln();
                for k in 0..c {
                    lp[at(k)] = v[at(k)] - m - s;
                }
            }
        }
        lp
    } else {
        v
    };
    let t = target.to_i64();
    let mut losses = vec![0.0; n * inner];
    let mut wsum = 0.0;
    for b in 0..n {
        for i in 0..inner {
            let label = t[b * inner + i];
            if Some(label) == ignore {
                continue;
            }
            if label < 0 || label as usize >= c {
                return Err(format!("target {label} is out of range for {c} classes"));
            }
            let w = weights.as_ref().map_or(1.0, |w| w[label as usize]);
            losses[b * inner + i] = -logp[(b * c + label as usize) * inner + i] * w;
            wsum += w;
        }
    }
    let out = match reduction.as_str() {
        "none" => Tensor::from_f64(x.dtype(), tshape, &losses),
        "sum" => Tensor::from_f64(x.dtype(), vec![], &[losses.iter().sum()]),
        "mean" => {
            Tensor::from_f64(x.dtype(), vec![], &[if wsum == 0.0 { 0.0 } else { losses.iter().sum::<f64>() / wsum }])
        }
        r => return Err(format!("unknown reduction '{r}'")),
    };
    let mut res = vec![out];
    if op == Op::SoftmaxCrossEntropyLoss {
        res.push(Tensor::from_f64(x.dtype(), x.shape().to_vec(), &logp));
    }
    Ok(res)
}
