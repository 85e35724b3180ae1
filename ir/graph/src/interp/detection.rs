//! Detection post-processing: NonMaxSuppression and RoiAlign.
use super::attrs::{opt, req, NodeAttrs};
use super::OpResult;
use crate::tensor::{numel, Tensor, TensorData};

fn iou(a: [f64; 4], b: [f64; 4], center: bool) -> f64 {
    let corners = |v: [f64; 4]| {
        if center {
            [v[0] - v[2] / 2.0, v[1] - v[3] / 2.0, v[0] + v[2] / 2.0, v[1] + v[3] / 2.0]
        } else {
            // [y1, x1, y2, x2] in any corner order
            [v[1].min(v[3]), v[0].min(v[2]), v[1].max(v[3]), v[0].max(v[2])]
        }
    };
    let (a, b) = (corners(a), corners(b));
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |v: [f64; 4]| (v[2] - v[0]) * (v[3] - v[1]);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

pub fn nms(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (boxes, scores) = (req(ins, 0)?, req(ins, 1)?);
    if boxes.rank() != 3 || boxes.shape()[2] != 4 || scores.rank() != 3 {
        return Err(format!("boxes {:?} must be [B, N, 4] and scores {:?} [B, C, N]", boxes.shape(), scores.shape()));
    }
    let (nb, nbox) = (boxes.shape()[0], boxes.shape()[1]);
    let nc = scores.shape()[1];
    if scores.shape()[0] != nb || scores.shape()[2] != nbox {
        return Err(format!("scores {:?} do not match boxes {:?}", scores.shape(), boxes.shape()));
    }
    let max_out = opt(ins, 2).filter(|t| !t.is_empty()).map(|t| t.to_i64()[0]).unwrap_or(0).max(0) as usize;
    let iou_th = opt(ins, 3).filter(|t| !t.is_empty()).map(|t| t.to_f64()[0]).unwrap_or(0.0);
    let score_th = opt(ins, 4).filter(|t| !t.is_empty()).map(|t| t.to_f64()[0]);
    let center = a.int("center_point_box", 0)? != 0;
    let bv = boxes.to_f64();
    let sv = scores.to_f64();
    let mut out = vec![];
    for b in 0..nb {
        for c in 0..nc {
            let s = &sv[(b * nc + c) * nbox..][..nbox];
            let mut order: Vec<usize> = (0..nbox).filter(|&i| score_th.is_none_or(|t| s[i] > t)).collect();
            order.sort_by(|&p, &q| s[q].partial_cmp(&s[p]).unwrap_or(std::cmp::Ordering::Equal).then(p.cmp(&q)));
            let mut kept: Vec<usize> = vec![];
            for i in order {
                if kept.len() >= max_out {
                    break;
                }
                let bx = |k: usize| -> [f64; 4] { bv[(b * nbox + k) * 4..][..4].try_into().unwrap() };
                if kept.iter().all(|&k| iou(bx(k), bx(i), center) <= iou_th) {
                    kept.push(i);
                }
            }
            for k in kept {
                out.extend([b as i64, c as i64, k as i64]);
            }
        }
    }
    let n = out.len() / 3;
    Ok(Tensor::from_i64(vec![n, 3], out))
}

/// Bits a word of NmsOverlapMask's rows.
pub const MASK_WORD_BITS: usize = 32;

/// NmsOverlapMask(boxes [B, N, 4], order [B, C, N], iou_threshold?) (xforge's own): for each
/// (batch, class) and sorted position r, bit j of word w is set where the position p = 32w + j
/// comes after r and the boxes at positions r and p overlap by more than the threshold (IoU as
/// NonMaxSuppression's) → i32 [B, C, N, ⌈N/32⌉]. Order entries are clamped to [0, N).
pub fn overlap_mask(a: &NodeAttrs, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (boxes, order) = (req(ins, 0)?, req(ins, 1)?);
    let (bs, os) = (boxes.shape(), order.shape());
    if bs.len() != 3 || bs[2] != 4 || os.len() != 3 || os[0] != bs[0] || os[2] != bs[1] {
        return Err(format!("boxes {bs:?} must be [B, N, 4] and the order {os:?} [B, C, N]"));
    }
    let (nb, nc, n) = (bs[0], os[1], bs[1]);
    let words = n.div_ceil(MASK_WORD_BITS);
    let shape = vec![nb, nc, n, words];
    super::check_size(&shape)?;
    let iou_th = opt(ins, 2).filter(|t| !t.is_empty()).map(|t| t.to_f64()[0]).unwrap_or(0.0);
    let center = a.int("center_point_box", 0)? != 0;
    let (bv, ov) = (boxes.to_f64(), order.to_i64());
    let mut out = vec![0u32; numel(&shape)];
    for b in 0..nb {
        let bx = |k: usize| -> [f64; 4] { bv[(b * n + k) * 4..][..4].try_into().unwrap() };
        for c in 0..nc {
            let row = &ov[(b * nc + c) * n..][..n];
            let at = |r: usize| row[r].clamp(0, n as i64 - 1) as usize;
            for r in 0..n {
                let words_r = &mut out[((b * nc + c) * n + r) * words..][..words];
                for p in r + 1..n {
                    if iou(bx(at(r)), bx(at(p)), center) > iou_th {
                        words_r[p / MASK_WORD_BITS] |= 1 << (p % MASK_WORD_BITS);
                    }
                }
            }
        }
    }
    // the words as i32 bit patterns
    Ok(Tensor::new(shape, TensorData::I32(out.into_iter().map(|w| w as i32).collect())))
}

fn bilinear(plane: &[f64], h: usize, w: usize, y: f64, x: f64) -> [(usize, f64); 4] {
    if y < -1.0 || y > h as f64 || x < -1.0 || x > w as f64 {
        return [(0, 0.0); 4];
    }
    let (y, x) = (y.max(0.0), x.max(0.0));
    let (mut yl, mut xl) = (y as usize, x as usize);
    let (mut y, mut x) = (y, x);
    let yh = if yl >= h - 1 {
        yl = h - 1;
        y = yl as f64;
        yl
    } else {
        yl + 1
    };
    let xh = if xl >= w - 1 {
        xl = w - 1;
        x = xl as f64;
        xl
    } else {
        xl + 1
    };
    let (ly, lx) = (y - yl as f64, x - xl as f64);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    let _ = plane;
    [(yl * w + xl, hy * hx), (yl * w + xh, hy * lx), (yh * w + xl, ly * hx), (yh * w + xh, ly * lx)]
}

pub fn roi_align(a: &NodeAttrs, opset: i64, ins: &[Option<Tensor>]) -> OpResult<Tensor> {
    let (x, rois, bidx) = (req(ins, 0)?, req(ins, 1)?, req(ins, 2)?);
    if x.rank() != 4 || rois.rank() != 2 || rois.shape()[1] != 4 {
        return Err(format!("X {:?} must be 4-D and rois {:?} [R, 4]", x.shape(), rois.shape()));
    }
    let (c, h, w) = (x.shape()[1], x.shape()[2], x.shape()[3]);
    let (oh, ow) = (a.int("output_height", 1)?, a.int("output_width", 1)?);
    if oh < 1 || ow < 1 {
        return Err(format!("output_height {oh} and output_width {ow} must be at least 1"));
    }
    let (oh, ow) = (oh as usize, ow as usize);
    super::check_size(&[rois.shape()[0], c, oh, ow])?;
    let ratio = a.int("sampling_ratio", 0)?;
    let scale = a.float("spatial_scale", 1.0)? as f64;
    let is_max = a.string("mode", "avg")? == "max";
    let default_mode = if opset >= 16 { "half_pixel" } else { "output_half_pixel" };
    let offset = if a.string("coordinate_transformation_mode", default_mode)? == "half_pixel" { 0.5 } else { 0.0 };
    let rv = rois.to_f64();
    let bi = bidx.to_i64();
    let xv = x.to_f64();
    let nr = rois.shape()[0];
    let mut out = vec![0.0; nr * c * oh * ow];
    // an empty feature map: every sample lies outside it, and such samples are 0
    if h == 0 || w == 0 {
        return Ok(Tensor::from_f64(x.dtype(), vec![nr, c, oh, ow], &out));
    }
    for r in 0..nr {
        let b =
            bi.get(r).copied().filter(|&b| b >= 0 && (b as usize) < x.shape()[0]).ok_or("batch index out of range")?
                as usize;
        let (x1, y1, x2, y2) = (
            rv[r * 4] * scale - offset,
            rv[r * 4 + 1] * scale - offset,
            rv[r * 4 + 2] * scale - offset,
            rv[r * 4 + 3] * scale - offset,
        );
        let (mut rw, mut rh) = (x2 - x1, y2 - y1);
        if offset == 0.0 {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (bh, bw) = (rh / oh as f64, rw / ow as f64);
        let gh = if ratio > 0 { ratio as usize } else { (rh / oh as f64).ceil() as usize };
        let gw = if ratio > 0 { ratio as usize } else { (rw / ow as f64).ceil() as usize };
        // the sampling work of this roi stays within the element limit (a huge roi or
        // sampling_ratio would overflow or run for ever)
        super::check_size(&[c, oh, ow, gh, gw]).map_err(|e| format!("roi {r}'s sampling grid {gh}×{gw}: {e}"))?;
        let count = (gh * gw).max(1) as f64;
        for ch in 0..c {
            let plane = &xv[(b * c + ch) * h * w..][..h * w];
            for ph in 0..oh {
                for pw in 0..ow {
                    let mut acc = if is_max { f64::NEG_INFINITY } else { 0.0 };
                    let mut any = false;
                    for iy in 0..gh {
                        let y = y1 + ph as f64 * bh + (iy as f64 + 0.5) * bh / gh as f64;
                        for ix in 0..gw {
                            let xx = x1 + pw as f64 * bw + (ix as f64 + 0.5) * bw / gw as f64;
                            let t = bilinear(plane, h, w, y, xx);
                            if is_max {
                                let m = t.iter().map(|&(i, wt)| wt * plane[i]).fold(f64::NEG_INFINITY, f64::max);
                                acc = acc.max(m);
                                any = true;
                            } else {
                                acc += t.iter().map(|&(i, wt)| wt * plane[i]).sum::<f64>();
                            }
                        }
                    }
                    out[((r * c + ch) * oh + ph) * ow + pw] = if is_max {
                        if any {
                            acc
                        } else {
                            0.0
                        }
                    } else {
                        acc / count
                    };
                }
            }
        }
    }
    Ok(Tensor::from_f64(x.dtype(), vec![nr, c, oh, ow], &out))
}
