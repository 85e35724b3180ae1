//! The recurrent networks RNN, GRU and LSTM, as ONNX defines them: gates in the order the spec
//! gives (GRU z, r, h; LSTM i, o, f, c), forward, reverse or bidirectional, layout 0
//! ([T, B, ·]) or 1 ([B, T, ·]), optional biases, initial states, LSTM peepholes, a cell clip,
//! LSTM's coupled input-forget gate, the activation list with its alphas and betas (taken in
//! order by the functions that use them, as onnxruntime does), and per-batch sequence lengths
//! (steps past a sequence's end give zeros and leave its state as it was; reverse runs each
//! sequence from its own last step). Shapes are checked by `sequence_shapes`; computed in f64.
use super::attrs::{opt, req, NodeAttrs};
use super::{check_size, OpResult};
use crate::op::Op;
use crate::sequence_shapes::{recurrent_dims, Activation};
use crate::shape::Dim;
use crate::tensor::Tensor;

pub fn recurrent(op: Op, a: &NodeAttrs, ins: &[Option<Tensor>], n_out: usize) -> OpResult<Vec<Tensor>> {
    let shape = |k: usize| opt(ins, k).map(|t| t.shape().iter().map(|&d| Dim::Known(d)).collect::<Vec<_>>());
    let present = |k: usize| opt(ins, k).is_some();
    let r = recurrent_dims(a.0, &present, &shape)?;
    let k = |d: &Dim| d.known().unwrap_or(0);
    let (t, b, inp, h, dirs, gates) = (k(&r.t), k(&r.b), k(&r.input), r.hidden, r.dirs, r.gates);
    let x = req(ins, 0)?.to_f64();
    let (w, rr) = (req(ins, 1)?.to_f64(), req(ins, 2)?.to_f64());
    let bias = opt(ins, 3).map(|t| t.to_f64());
    let lens: Vec<usize> = match opt(ins, 4) {
        Some(l) => l
            .to_i64()
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= t)
                    .ok_or_else(|| format!("sequence_lens[{i}] = {n} is outside 0..={t}"))
            })
            .collect::<OpResult<_>>()?,
        None => vec![t; b],
    };
    let h0 = opt(ins, 5).map(|t| t.to_f64());
    let c0 = opt(ins, 6).map(|t| t.to_f64());
    let peep = opt(ins, 7).map(|t| t.to_f64());
    check_size(&[t, dirs, b, h])?;
    let clip = a.float_opt("clip")?.map(|c| c as f64);
    let lbr = a.int("linear_before_reset", 0)? != 0;
    let coupled = a.int("input_forget", 0)? != 0;
    // element (t, b, i) of X and (d, b, j) of the states, by layout
    let xi =
        |s: usize, bi: usize, i: usize| if r.layout == 0 { (s * b + bi) * inp + i } else { (bi * t + s) * inp + i };
    let si = |d: usize, bi: usize, j: usize| if r.layout == 0 { (d * b + bi) * h + j } else { (bi * dirs + d) * h + j };
    let yi = |s: usize, d: usize, bi: usize, j: usize| {
        if r.layout == 0 {
            ((s * dirs + d) * b + bi) * h + j
        } else {
            ((bi * t + s) * dirs + d) * h + j
        }
    };
    let mut y = vec![0.0; t * dirs * b * h];
    let mut yh = vec![0.0; dirs * b * h];
    let mut yc = vec![0.0; dirs * b * h];
    let gh = gates * h;
    for d in 0..dirs {
        let acts: &[Activation] = &r.activations[d];
        let reverse = r.reverse[d];
        let wd = &w[d * gh * inp..(d + 1) * gh * inp];
        let rd = &rr[d * gh * h..(d + 1) * gh * h];
        // Wb + Rb per gate row (GRU keeps Rb of its h gate apart: linear_before_reset puts it inside)
        let wb = |row: usize| bias.as_ref().map_or(0.0, |bv| bv[d * 2 * gh + row]);
        let rb = |row: usize| bias.as_ref().map_or(0.0, |bv| bv[d * 2 * gh + gh + row]);
        let pre = |v: f64| clip.map_or(v, |c| v.clamp(-c, c));
        for bi in 0..b {
            let mut hs: Vec<f64> = (0..h).map(|j| h0.as_ref().map_or(0.0, |v| v[si(d, bi, j)])).collect();
            let mut cs: Vec<f64> = (0..h).map(|j| c0.as_ref().map_or(0.0, |v| v[si(d, bi, j)])).collect();
            for s in 0..lens[bi] {
                let step = if reverse { lens[bi] - 1 - s } else { s };
                let xw = |row: usize| (0..inp).map(|i| wd[row * inp + i] * x[xi(step, bi, i)]).sum::<f64>();
                let hr = |row: usize, hv: &[f64]| (0..h).map(|i| rd[row * h + i] * hv[i]).sum::<f64>();
                let mut next = vec![0.0; h];
                match op {
                    Op::RNN => {
                        for (j, n) in next.iter_mut().enumerate() {
                            *n = acts[0].apply(pre(xw(j) + hr(j, &hs) + wb(j) + rb(j)));
                        }
                    }
                    Op::GRU => {
                        let z: Vec<f64> =
                            (0..h).map(|j| acts[0].apply(pre(xw(j) + hr(j, &hs) + wb(j) + rb(j)))).collect();
                        let rg: Vec<f64> = (0..h)
                            .map(|j| acts[0].apply(pre(xw(h + j) + hr(h + j, &hs) + wb(h + j) + rb(h + j))))
                            .collect();
                        let reset: Vec<f64> = (0..h).map(|j| rg[j] * hs[j]).collect();
                        for (j, n) in next.iter_mut().enumerate() {
                            let row = 2 * h + j;
                            let inner = if lbr { rg[j] * (hr(row, &hs) + rb(row)) } else { hr(row, &reset) + rb(row) };
                            let cand = acts[1].apply(pre(xw(row) + wb(row) + inner));
                            *n = (1.0 - z[j]) * cand + z[j] * hs[j];
                        }
                    }
                    _ => {
                        let p = |k: usize, j: usize| peep.as_ref().map_or(0.0, |v| v[d * 3 * h + k * h + j]);
                        let g = |row: usize| xw(row) + hr(row, &hs) + wb(row) + rb(row);
                        let mut c_new = vec![0.0; h];
                        for j in 0..h {
                            let i_g = acts[0].apply(pre(g(j) + p(0, j) * cs[j]));
                            let f_g =
                                if coupled { 1.0 - i_g } else { acts[0].apply(pre(g(2 * h + j) + p(2, j) * cs[j])) };
                            let c_g = acts[1].apply(pre(g(3 * h + j)));
                            c_new[j] = f_g * cs[j] + i_g * c_g;
                            let o_g = acts[0].apply(pre(g(h + j) + p(1, j) * c_new[j]));
                            next[j] = o_g * acts[2].apply(c_new[j]);
                        }
                        cs = c_new;
                    }
                }
                hs = next;
                for (j, &v) in hs.iter().enumerate() {
                    y[yi(step, d, bi, j)] = v;
                }
            }
            for j in 0..h {
                yh[si(d, bi, j)] = hs[j];
                yc[si(d, bi, j)] = cs[j];
            }
        }
    }
    let dt = req(ins, 0)?.dtype();
    let y_shape = if r.layout == 0 { vec![t, dirs, b, h] } else { vec![b, t, dirs, h] };
    let s_shape = if r.layout == 0 { vec![dirs, b, h] } else { vec![b, dirs, h] };
    let mut outs = vec![Tensor::from_f64(dt, y_shape, &y), Tensor::from_f64(dt, s_shape.clone(), &yh)];
    if op == Op::LSTM {
        outs.push(Tensor::from_f64(dt, s_shape, &yc));
    }
    outs.truncate(n_out.max(1));
    Ok(outs)
}
