//! Numpy-style broadcasting.
use super::OpResult;
use crate::tensor::{numel, strides};

/// The broadcast shape of several shapes, or an error naming both sides of the conflict.
pub fn broadcast_shapes(shapes: &[&[usize]]) -> OpResult<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {:?} cannot be broadcast together", shapes));
            }
        }
    }
    super::check_size(&out)?;
    Ok(out)
}

/// For each element of `out_shape` (row-major), the flat index into a tensor of `in_shape` that
/// broadcasts to it. `in_shape` must broadcast to `out_shape`.
pub fn broadcast_index(in_shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let n = numel(out_shape);
    if in_shape == out_shape {
        return (0..n).collect();
    }
    let rank = out_shape.len();
    let off = rank - in_shape.len();
    let in_str = strides(in_shape);
    // stride of each output axis in the input (0 where broadcast)
    let st: Vec<usize> =
        (0..rank).map(|i| if i < off || in_shape[i - off] == 1 { 0 } else { in_str[i - off] }).collect();
    let mut idx = Vec::with_capacity(n);
    let mut counter = vec![0usize; rank];
    let mut cur = 0usize;
    for _ in 0..n {
        idx.push(cur);
        // increment the multi-index, updating `cur`
        for ax in (0..rank).rev() {
            counter[ax] += 1;
            cur += st[ax];
            if counter[ax] < out_shape[ax] {
                break;
            }
            cur -= st[ax] * counter[ax];
            counter[ax] = 0;
        }
    }
    idx
}
