//! Object detection: box decoding, score activation and class-aware batched NMS in the graph
//! (ONNX NonMaxSuppression, which the compiler runs as a bounded kernel on the GPU); boxes
//! mapped back to each image's pixels in the graph too. Only the final cut to `max_detections`
//! per image by score, over the few boxes the NMS kept, is done on the host.
use crate::append::Appender;
use crate::config::{Head, ScoreFn, TaskConfig};
use crate::picture::Picture;
use crate::pipeline::{assemble, prepend, Device, Pipeline};
use crate::resample::Geometry;
use crate::ZooError;
use std::path::Path;
use xforge_ir::{Attr, DType, Dim, Graph, Op, Tensor, ValueId};

/// One detected object, in the image's own pixels (x1, y1, x2, y2).
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub class: usize,
    pub label: Option<String>,
    pub score: f32,
    pub bbox: [f32; 4],
}

pub struct Detector {
    pipeline: Pipeline,
    labels: Option<Vec<String>>,
    /// Added to the NMS's class index (1 when the background class 0 was dropped).
    class_offset: usize,
}

/// Boxes [N, A, 4] (x1, y1, x2, y2, model-input pixels) and scores [N, classes, A].
struct Candidates {
    boxes: ValueId,
    scores: ValueId,
    /// The model's classes (the background included), and the first one reported.
    classes: usize,
    class_offset: usize,
}

fn shape_of(g: &Graph, v: ValueId, rank: usize, what: &str) -> Result<Vec<usize>, ZooError> {
    match g.ty(v).shape.as_deref() {
        Some(s) if s.len() == rank && s[1..].iter().all(|d| matches!(d, Dim::Known(_))) => {
            Ok(s.iter().map(|d| if let Dim::Known(k) = d { *k } else { 0 }).collect())
        }
        _ => Err(ZooError::Config(format!("head: the model's output '{}' is {}, {what}", g.name_of(v), g.ty(v)))),
    }
}

fn output_named(g: &Graph, name: &str) -> Result<ValueId, ZooError> {
    g.outputs
        .iter()
        .copied()
        .find(|&o| g.name_of(o) == name)
        .ok_or_else(|| ZooError::Config(format!("head.outputs: the model has no output '{name}'")))
}

/// Concatenates corners `lo` and `hi` ([N, A, 2] each, x then y) into [N, A, 4].
fn corners(a: &mut Appender, lo: ValueId, hi: ValueId) -> ValueId {
    a.op(Op::Concat, &[lo, hi], vec![("axis", Attr::Int(2))])
}

/// YOLO: [N, 4 + classes, A] with (cx, cy, w, h) and sigmoid scores.
fn yolo(a: &mut Appender, out: ValueId) -> Result<Candidates, ZooError> {
    let s = shape_of(a.graph, out, 3, "a YOLO head's is [N, 4 + classes, anchors]")?;
    if s[1] <= 4 {
        return Err(ZooError::Config(format!(
            "head: a YOLO output needs more than 4 channels, '{}' has {}",
            a.graph.name_of(out),
            s[1]
        )));
    }
    let x = a.cast(out, DType::F32);
    let boxes = a.pick(x, 1, &[0, 1, 2, 3]);
    let boxes = a.transpose(boxes, &[0, 2, 1]);
    let centre = a.pick(boxes, 2, &[0, 1]);
    let size = a.pick(boxes, 2, &[2, 3]);
    let half = a.f32s(&[], vec![0.5]);
    let half = a.mul(size, half);
    let lo = a.sub(centre, half);
    let hi = a.add(centre, half);
    let boxes = corners(a, lo, hi);
    let classes: Vec<i64> = (4..s[1] as i64).collect();
    let scores = a.pick(x, 1, &classes);
    Ok(Candidates { boxes, scores, classes: s[1] - 4, class_offset: 0 })
}

/// Anchors: regressions [N, A, 4] against fixed anchors, logits [N, A, classes].
fn anchored(
    a: &mut Appender,
    deltas: ValueId,
    logits: ValueId,
    anchors: &Path,
    weights: [f32; 4],
    scores: ScoreFn,
    clip: Option<[usize; 2]>,
) -> Result<Candidates, ZooError> {
    let bytes = std::fs::read(anchors).map_err(|e| ZooError::file(anchors, e))?;
    let t = xforge_ir::npy::from_bytes(&bytes)
        .map_err(|e| ZooError::Config(format!("head.anchors: {}: {e}", anchors.display())))?;
    let ds = shape_of(a.graph, deltas, 3, "box regressions are [N, anchors, 4]")?;
    let ls = shape_of(a.graph, logits, 3, "class logits are [N, anchors, classes]")?;
    let n = ds[1];
    if t.shape() != [n, 4] || ds[2] != 4 || ls[1] != n {
        return Err(ZooError::Config(format!(
            "head.anchors: {} anchors {:?} for regressions {ds:?} and logits {ls:?}",
            anchors.display(),
            t.shape()
        )));
    }
    if weights.iter().any(|w| !w.is_finite() || *w <= 0.0) {
        return Err(ZooError::Config(format!("head.weights: {weights:?} must be positive")));
    }
    let v = t.to_f64();
    let (mut centre, mut size) = (vec![], vec![]);
    for k in 0..n {
        let [x1, y1, x2, y2] = [v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]].map(|x| x as f32);
        if !(x2 > x1 && y2 > y1 && [x1, y1, x2, y2].iter().all(|x| x.is_finite())) {
            return Err(ZooError::Config(format!(
                "head.anchors: anchor {k} [{x1}, {y1}, {x2}, {y2}] is empty or not finite"
            )));
        }
        centre.extend([(x1 + x2) / 2.0, (y1 + y2) / 2.0]);
        size.extend([x2 - x1, y2 - y1]);
    }
    let centre = a.f32s(&[n, 2], centre);
    let size = a.f32s(&[n, 2], size);
    let d = a.cast(deltas, DType::F32);
    let w = a.f32s(&[4], weights.iter().map(|w| 1.0 / w).collect());
    let d = a.mul(d, w);
    let shift = a.pick(d, 2, &[0, 1]);
    let grow = a.pick(d, 2, &[2, 3]);
    // torchvision's BoxCoder clamp: no box grows more than 1000/16 times its anchor
    let most = a.f32s(&[], vec![(1000.0f32 / 16.0).ln()]);
    let grow = a.min(grow, most);
    let moved = a.mul(shift, size);
    let centre = a.add(moved, centre);
    let grow = a.op(Op::Exp, &[grow], vec![]);
    let wh = a.mul(grow, size);
    let half = a.f32s(&[], vec![0.5]);
    let half = a.mul(wh, half);
    let lo = a.sub(centre, half);
    let hi = a.add(centre, half);
    let mut boxes = corners(a, lo, hi);
    // torchvision's SSD and RetinaNet clip the decoded boxes to the input before their NMS
    if let Some([h, w]) = clip {
        let zero = a.f32s(&[], vec![0.0]);
        let limit = a.f32s(&[4], vec![w as f32, h as f32, w as f32, h as f32]);
        let b = a.max(boxes, zero);
        boxes = a.min(b, limit);
    }
    let l = a.cast(logits, DType::F32);
    let (p, class_offset) = match scores {
        ScoreFn::Softmax => {
            let p = a.op(Op::Softmax, &[l], vec![("axis", Attr::Int(-1))]);
            let classes: Vec<i64> = (1..ls[2] as i64).collect();
            if classes.is_empty() {
                return Err(ZooError::Config("head.scores: softmax needs a class besides the background".into()));
            }
            (a.pick(p, 2, &classes), 1)
        }
        ScoreFn::Sigmoid => (a.op(Op::Sigmoid, &[l], vec![]), 0),
    };
    let scores = a.transpose(p, &[0, 2, 1]);
    Ok(Candidates { boxes, scores, classes: ls[2], class_offset })
}

impl Detector {
    pub fn new(model: &Path, config: TaskConfig, device: Device) -> Result<Detector, ZooError> {
        Detector::from_graph(crate::import(model)?, config, device)
    }

    pub fn from_graph(mut g: Graph, config: TaskConfig, device: Device) -> Result<Detector, ZooError> {
        config.check()?;
        let (pre, geo) = prepend(&mut g, &config)?;
        let outputs = g.outputs.clone();
        let first = |k: usize| {
            outputs
                .get(k)
                .copied()
                .ok_or_else(|| ZooError::Config(format!("head: the model has {} outputs", outputs.len())))
        };
        let mut a = Appender::new(&mut g, "zoo_post");
        let c = match &config.head {
            Head::Yolo => yolo(&mut a, first(0)?)?,
            Head::Anchors { anchors, weights, scores, outputs: names, clip } => {
                let (d, l) = match names {
                    Some([d, l]) => (output_named(a.graph, d)?, output_named(a.graph, l)?),
                    None => (first(0)?, first(1)?),
                };
                anchored(&mut a, d, l, anchors, *weights, *scores, clip.then_some(config.input_size))?
            }
        };
        let labels = config.labels_for(c.classes)?;
        let per_class = a.constant(Tensor::from_i64(vec![1], vec![config.max_per_class as i64]));
        let iou = a.f32s(&[1], vec![config.iou_threshold]);
        let floor = a.f32s(&[1], vec![config.score_threshold]);
        let keep = a.op(Op::NonMaxSuppression, &[c.boxes, c.scores, per_class, iou, floor], vec![]);
        let score = a.op(Op::GatherND, &[c.scores, keep], vec![]);
        let which = a.pick(keep, 1, &[0, 2]);
        let boxes = a.op(Op::GatherND, &[c.boxes, which], vec![]);
        let boxes = to_image(&mut a, boxes, keep, geo);
        let post = a.nodes;
        assemble(&mut g, pre, post, vec![boxes, score, keep])?;
        Ok(Detector { pipeline: Pipeline::new(g, config, device), labels, class_offset: c.class_offset })
    }

    /// Each picture's detections, best first, at most `max_detections`.
    pub fn detect(&mut self, pictures: &[Picture]) -> Result<Vec<Vec<Detection>>, ZooError> {
        let max = self.pipeline.config.max_image_size;
        let cap = self.pipeline.config.max_detections;
        let mut out: Vec<Vec<Detection>> = vec![vec![]; pictures.len()];
        for chunk in self.pipeline.run(pictures)? {
            let (boxes, scores, keep) =
                (chunk.outputs[0].to_f64(), chunk.outputs[1].to_f64(), chunk.outputs[2].to_i64());
            for k in 0..chunk.outputs[1].len() {
                let (b, class) = (keep[3 * k] as usize, keep[3 * k + 1] as usize + self.class_offset);
                let Some(p) = pictures.get(chunk.first + b) else { continue };
                // boxes are in the fitted picture's pixels: clip there, then scale to the original
                let [fh, fw] = p.fitted_size(max);
                let [oh, ow] = p.original;
                let (sx, sy) = (ow as f64 / fw as f64, oh as f64 / fh as f64);
                let c = |v: f64, hi: usize, s: f64| (v.clamp(0.0, hi as f64) * s) as f32;
                let bb = &boxes[4 * k..4 * k + 4];
                let bbox = [c(bb[0], fw, sx), c(bb[1], fh, sy), c(bb[2], fw, sx), c(bb[3], fh, sy)];
                let label = self.labels.as_ref().and_then(|l| l.get(class).cloned());
                out[chunk.first + b].push(Detection { class, label, score: scores[k] as f32, bbox });
            }
        }
        for d in &mut out {
            d.sort_by(|a, b| b.score.total_cmp(&a.score));
            d.truncate(cap);
        }
        Ok(out)
    }

    pub fn detect_files(&mut self, paths: &[&Path]) -> Vec<Result<Vec<Detection>, ZooError>> {
        crate::per_item(paths, self.pipeline.config.max_decoded_pixels, |p| self.detect(p))
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }
}

/// Boxes [K, 4] (x1, y1, x2, y2, model-input pixels) of the images `keep[:, 0]` names, in those
/// images' pixels: the input geometry (y, x) applied per box.
fn to_image(a: &mut Appender, boxes: ValueId, keep: ValueId, geo: Geometry) -> ValueId {
    let image = a.pick(keep, 1, &[0]);
    let image = a.reshape(image, &[-1]);
    let mut per_box = |v: ValueId| {
        let xy = a.pick(v, 1, &[1, 0, 1, 0]);
        a.op(Op::Gather, &[xy, image], vec![("axis", Attr::Int(0))])
    };
    let scale = per_box(geo.scale);
    let shift = per_box(geo.shift);
    let b = a.mul(boxes, scale);
    a.add(b, shift)
}
