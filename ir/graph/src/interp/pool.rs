//! Pooling: max (with indices), average, Lp, and the global forms.
use super::attrs::{req, NodeAttrs};
use super::conv::{each_index, Window};
use super::OpResult;
use crate::op::Op;
use crate::tensor::{numel, strides, Tensor};

pub fn pool(op: Op, a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Vec<Tensor>> {
    let x = req(ins, 0)?;
    if x.rank() < 3 {
        return Err(format!("input must be (N, C, spatial...), got {:?}", x.shape()));
    }
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let sp = x.shape()[2..].to_vec();
    let global = matches!(op, Op::GlobalAveragePool | Op::GlobalMaxPool);
    let kernel: Vec<usize> = if global {
        sp.clone()
    } else {
        a.ints_opt("kernel_shape")?.ok_or("missing attribute 'kernel_shape'")?.iter().map(|&v| v as usize).collect()
    };
    let win = if global {
        Window {
            kernel: kernel.clone(),
            strides: vec![1; sp.len()],
            dilations: vec![1; sp.len()],
            pad_begin: vec![0; sp.len()],
            pad_end: vec![0; sp.len()],
            out: vec![1; sp.len()],
        }
    } else {
        Window::new(a, &sp, kernel, a.int("ceil_mode", 0)? != 0)?
    };
    let include_pad = a.int("count_include_pad", 0)? != 0;
    let p = a.int("p", 2)? as f64;
    let is_max = matches!(op, Op::MaxPool | Op::GlobalMaxPool);
    let v = x.to_f64();
    let in_n = numel(&sp);
    let o_n = numel(&win.out);
    let in_str = strides(&sp);
    let mut out = Vec::with_capacity(n * c * o_n);
    let mut idx_out = Vec::new();
    let nd = sp.len();
    for plane in 0..n * c {
        let base = plane * in_n;
        each_index(&win.out, |o| {
            let (mut acc, mut cnt, mut best) = (if is_max { f64::NEG_INFINITY } else { 0.0 }, 0usize, None);
            let mut padded_cnt = 0usize;
            each_index(&win.kernel, |k| {
                let mut off = 0usize;
                let mut inside = true;
                let mut in_padded = true;
                for d in 0..nd {
                    let pos = (o[d] * win.strides[d] + k[d] * win.dilations[d]) as isize - win.pad_begin[d] as isize;
                    if pos < 0 || pos as usize >= sp[d] {
                        inside = false;
                    }
                    if pos < -(win.pad_begin[d] as isize) || pos >= (sp[d] + win.pad_end[d]) as isize {
                        in_padded = false;
                    }
                    if inside {
                        off += pos as usize * in_str[d];
                    }
                }
                if in_padded {
                    padded_cnt += 1;
                }
                if !inside {
                    return;
                }
                let val = v[base + off];
                cnt += 1;
                if is_max {
                    if best.is_none() || val > acc {
                        acc = val;
                        best = Some(off);
                    }
                } else if op == Op::LpPool {
                    acc += val.abs().powf(p);
                } else {
                    acc += val;
                }
            });
            out.push(match op {
                Op::AveragePool | Op::GlobalAveragePool => {
                    acc / (if include_pad { padded_cnt } else { cnt }).max(1) as f64
                }
                Op::LpPool => acc.powf(1.0 / p),
                _ => acc,
            });
            if is_max {
                idx_out.push((plane * in_n + best.unwrap_or(0)) as i64);
            }
        });
    }
    let mut shape = vec![n, c];
    shape.extend(&win.out);
    let mut res = vec![Tensor::from_f64(x.dtype(), shape.clone(), &out)];
    if op == Op::MaxPool {
        if a.int("storage_order", 0)? != 0 {
            // column-major indices within each plane
            for i in idx_out.iter_mut() {
                let plane = *i as usize / in_n;
                let mut rem = *i as usize % in_n;
                let mut coords = vec![0; nd];
                for d in (0..nd).rev() {
                    coords[d] = rem % sp[d];
                    rem /= sp[d];
                }
                let mut cm = 0usize;
                let mut mul = 1usize;
                for d in 0..nd {
                    cm += coords[d] * mul;
                    mul *= sp[d];
                }
                *i = (plane * in_n + cm) as i64;
            }
        }
        res.push(Tensor::from_i64(shape, idx_out));
    }
    Ok(res)
}
