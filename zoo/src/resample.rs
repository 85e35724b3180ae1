//! Bilinear resampling written as graph ops, per image of a batch: the compiler fuses it with
//! the model's first kernels (pre-processing) or its last (masks back to the image's size).
//!
//! Coordinates are continuous pixels (a pixel's centre at i + 0.5). Image n's geometry is a
//! per-axis affine map from output to source coordinates, `src = dst · scale + shift`, with
//! `scale` and `shift` values [N, 2] (y, x) computed in the graph from each image's extent. The
//! sampling is PyTorch's `interpolate(mode="bilinear", align_corners=False, antialias=False)`:
//! half-pixel centres, edges clamped.
use crate::append::Appender;
use xforge_ir::{Attr, DType, Op, ValueId};

/// An affine map per image and axis: values [N, 2] (y, x).
#[derive(Clone, Copy)]
pub struct Geometry {
    pub scale: ValueId,
    pub shift: ValueId,
}

/// Samples `src` [N, hs, ws, c] (any dtype; channels last) at an [N, ho, wo] grid under `geo`,
/// reading only inside `limit` [N, 2] (each image's valid source height and width): returns f32
/// [N, ho, wo, c].
pub fn bilinear(
    a: &mut Appender,
    src: ValueId,
    [hs, ws, c]: [usize; 3],
    [ho, wo]: [usize; 2],
    geo: Geometry,
    limit: ValueId,
) -> ValueId {
    // per axis: the two source rows (columns) each output row (column) reads, and the weight
    // of the second; shapes [N, len]
    let mut axis = |k: i64, len: usize| {
        let centres = a.f32s(&[1, len], (0..len).map(|i| i as f32 + 0.5).collect());
        let scale = a.pick(geo.scale, 1, &[k]);
        let shift = a.pick(geo.shift, 1, &[k]);
        let one = a.f32s(&[], vec![1.0]);
        let half = a.f32s(&[], vec![0.5]);
        let zero = a.f32s(&[], vec![0.0]);
        let last = a.pick(limit, 1, &[k]);
        let last = a.sub(last, one);
        let p = a.mul(centres, scale);
        let p = a.add(p, shift);
        let p = a.sub(p, half);
        let p = a.max(p, zero);
        let p = a.min(p, last);
        let lo = a.op(Op::Floor, &[p], vec![]);
        let frac = a.sub(p, lo);
        let hi = a.add(lo, one);
        let hi = a.min(hi, last);
        (a.cast(lo, DType::I64), a.cast(hi, DType::I64), frac)
    };
    let (y0, y1, fy) = axis(0, ho);
    let (x0, x1, fx) = axis(1, wo);
    // flat row index of (n, y, x) in src viewed as [N·hs·ws, c]
    let n = a.batch_of(src);
    let zero = a.constant(xforge_ir::Tensor::scalar_i64(0));
    let step = a.constant(xforge_ir::Tensor::scalar_i64(1));
    let images = a.op(Op::Range, &[zero, n, step], vec![]);
    let plane = a.constant(xforge_ir::Tensor::scalar_i64((hs * ws) as i64));
    let base = a.mul(images, plane);
    let base = a.reshape(base, &[-1, 1, 1]);
    let width = a.constant(xforge_ir::Tensor::scalar_i64(ws as i64));
    let rows = |a: &mut Appender, y: ValueId| {
        let y = a.reshape(y, &[0, ho as i64, 1]);
        let y = a.mul(y, width);
        a.add(base, y)
    };
    let (r0, r1) = (rows(a, y0), rows(a, y1));
    let x0 = a.reshape(x0, &[0, 1, wo as i64]);
    let x1 = a.reshape(x1, &[0, 1, wo as i64]);
    let flat = a.reshape(src, &[-1, c as i64]);
    let tap = |a: &mut Appender, r: ValueId, x: ValueId| {
        let i = a.add(r, x);
        let v = a.op(Op::Gather, &[flat, i], vec![("axis", Attr::Int(0))]);
        a.cast(v, DType::F32)
    };
    let (v00, v01, v10, v11) = (tap(a, r0, x0), tap(a, r0, x1), tap(a, r1, x0), tap(a, r1, x1));
    let fy = a.reshape(fy, &[0, ho as i64, 1, 1]);
    let fx = a.reshape(fx, &[0, 1, wo as i64, 1]);
    let lerp = |a: &mut Appender, p: ValueId, q: ValueId, t: ValueId| {
        let d = a.sub(q, p);
        let d = a.mul(d, t);
        a.add(p, d)
    };
    let top = lerp(a, v00, v01, fx);
    let bottom = lerp(a, v10, v11, fx);
    lerp(a, top, bottom, fy)
}

/// Whether each output pixel's centre falls inside image n's content, [N, ho, wo, 1] bool:
/// `offset` [N, 2] is where the content starts and `size` [N, 2] how large it is (output pixels).
pub fn inside(a: &mut Appender, [ho, wo]: [usize; 2], offset: ValueId, size: ValueId) -> ValueId {
    let mut axis = |k: i64, len: usize, shape: [i64; 4]| {
        let centres = a.f32s(&[1, len], (0..len).map(|i| i as f32 + 0.5).collect());
        let start = a.pick(offset, 1, &[k]);
        let extent = a.pick(size, 1, &[k]);
        let end = a.add(start, extent);
        let after = a.op(Op::GreaterOrEqual, &[centres, start], vec![]);
        let before = a.op(Op::Less, &[centres, end], vec![]);
        let both = a.op(Op::And, &[after, before], vec![]);
        a.reshape(both, &shape)
    };
    let ys = axis(0, ho, [0, ho as i64, 1, 1]);
    let xs = axis(1, wo, [0, 1, wo as i64, 1]);
    a.op(Op::And, &[ys, xs], vec![])
}
