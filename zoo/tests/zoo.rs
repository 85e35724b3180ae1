//! The zoo's wrappers on the reference interpreter against an unfused reference: the same
//! pictures resized and normalized on the host (loops written from the definitions), the raw
//! model run by the interpreter, and the post-processing (top-k, upsampled argmax, greedy
//! per-class NMS) on the host. The graphs under test do all of it as graph ops.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use xforge_ir::{interp, Tensor};
use xforge_zoo::{Classifier, Detector, Device, Fit, Head, Picture, ScoreFn, Segmenter, TaskConfig};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

fn repo_model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(name)
}

/// A picture of random pixels over a gradient (so that resampling positions matter).
fn picture(w: usize, h: usize, seed: u64) -> Picture {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let rgb = (0..w * h * 3)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let (y, x) = (i / 3 / w, i / 3 % w);
            ((s % 96) as usize + (x * 80 / w) + (y * 60 / h) + (i % 3) * 10) as u8
        })
        .collect();
    Picture::from_rgb(w, h, rgb).unwrap()
}

/// Picture pixels per model-input pixel (y, x) and where the content starts in the model input
/// (y, x): stretched, or letterboxed with one scale and even padding.
fn host_geometry(p: &Picture, c: &TaskConfig) -> (f64, f64, f64, f64) {
    let [hh, ww] = c.input_size;
    let (h, w) = (p.height as f64, p.width as f64);
    match c.fit {
        Fit::Stretch => (h / hh as f64, w / ww as f64, 0.0, 0.0),
        Fit::Letterbox => {
            let s = (h / hh as f64).max(w / ww as f64);
            (s, s, (hh as f64 - h / s) / 2.0, (ww as f64 - w / s) / 2.0)
        }
        Fit::Crop => {
            // torchvision: the shorter side to `resize`, the longer ⌊resize·long/short⌋, then
            // the centre cut out at round((new − crop) / 2), ties to even (Python's round)
            let r = c.resize.unwrap_or(hh.max(ww)) as f64;
            let short = h.min(w);
            let (nh, nw) = ((r * h / short).floor(), (r * w / short).floor());
            let (top, left) = (((nh - hh as f64) / 2.0).round_ties_even(), ((nw - ww as f64) / 2.0).round_ties_even());
            (h / nh, w / nw, -top, -left)
        }
    }
}

/// The model's input for one picture, computed on the host: bilinear (half-pixel, clamped) to
/// [hh, ww], letterboxed or stretched, scaled and normalized, NCHW.
fn host_input(p: &Picture, c: &TaskConfig) -> Vec<f32> {
    let [hh, ww] = c.input_size;
    let (h, w) = (p.height as f64, p.width as f64);
    let (sy, sx, oy, ox) = host_geometry(p, c);
    let px = |y: usize, x: usize, ch: usize| p.rgb[(y * p.width + x) * 3 + ch] as f64;
    let mut out = vec![0f32; 3 * hh * ww];
    for y in 0..hh {
        for x in 0..ww {
            let (cy, cx) = (y as f64 + 0.5, x as f64 + 0.5);
            let inside = cy >= oy && cy < oy + h / sy && cx >= ox && cx < ox + w / sx;
            let fy = ((cy - oy) * sy - 0.5).clamp(0.0, h - 1.0);
            let fx = ((cx - ox) * sx - 0.5).clamp(0.0, w - 1.0);
            let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(p.height - 1), (x0 + 1).min(p.width - 1));
            let (ty, tx) = (fy - y0 as f64, fx - x0 as f64);
            for ch in 0..3 {
                let v = if c.fit == Fit::Letterbox && !inside {
                    c.pad_value as f64
                } else {
                    let top = px(y0, x0, ch) * (1.0 - tx) + px(y0, x1, ch) * tx;
                    let bottom = px(y1, x0, ch) * (1.0 - tx) + px(y1, x1, ch) * tx;
                    top * (1.0 - ty) + bottom * ty
                };
                out[ch * hh * ww + y * ww + x] = ((v / 255.0 - c.mean[ch] as f64) / c.std[ch] as f64) as f32;
            }
        }
    }
    out
}

/// The raw model's outputs for one picture, pre-processed on the host.
fn host_run(model: &Path, p: &Picture, c: &TaskConfig) -> Vec<Tensor> {
    let m = xforge_frontend::load(model, &Default::default()).unwrap();
    let name = m.graph.name_of(m.graph.inputs[0]).to_string();
    let [h, w] = c.input_size;
    let x = Tensor::from_f32(vec![1, 3, h, w], host_input(p, c));
    interp::run(&m.graph, &HashMap::from([(name, x)])).unwrap()
}

fn sizes() -> Vec<(usize, usize)> {
    vec![(32, 32), (57, 23), (20, 41), (64, 48), (31, 77)]
}

#[test]
fn classifier_matches_host_preprocessing_and_top_k() {
    let model = repo_model("batch/classifier.onnx");
    let config = TaskConfig { input_size: [16, 16], softmax: false, top_k: 3, ..TaskConfig::default() };
    let mut c = Classifier::new(&model, config.clone(), Device::Interpreter).unwrap();
    let pictures: Vec<Picture> = sizes().iter().enumerate().map(|(i, &(w, h))| picture(w, h, i as u64)).collect();
    let got = c.classify(&pictures).unwrap();
    assert_eq!(got.len(), pictures.len());
    for (p, classes) in pictures.iter().zip(&got) {
        let probs = host_run(&model, p, &config)[0].to_f64();
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        assert_eq!(classes.iter().map(|c| c.index).collect::<Vec<_>>(), order[..3].to_vec());
        for k in classes {
            assert!((k.score as f64 - probs[k.index]).abs() < 1e-5, "{} vs {}", k.score, probs[k.index]);
        }
    }
    // the same pictures one at a time give the same answers (batching changes nothing)
    for (p, want) in pictures.iter().zip(&got) {
        assert_eq!(&c.classify(std::slice::from_ref(p)).unwrap()[0], want);
    }
}

#[test]
fn letterboxed_and_shrunk_pictures_match_the_host() {
    let model = repo_model("batch/classifier.onnx");
    let config =
        TaskConfig { input_size: [16, 16], fit: Fit::Letterbox, softmax: false, top_k: 10, ..TaskConfig::default() };
    let mut c = Classifier::new(&model, config.clone(), Device::Interpreter).unwrap();
    for (i, &(w, h)) in sizes().iter().enumerate() {
        let p = picture(w, h, 10 + i as u64);
        let got = &c.classify(std::slice::from_ref(&p)).unwrap()[0];
        let probs = host_run(&model, &p, &config)[0].to_f64();
        for k in got {
            assert!((k.score as f64 - probs[k.index]).abs() < 1e-5, "{w}×{h}: {} vs {}", k.score, probs[k.index]);
        }
    }
    // a picture over the canvas is shrunk on the CPU first: the same as shrinking it yourself
    let small = TaskConfig { max_image_size: [24, 24], ..config };
    let mut c = Classifier::new(&model, small.clone(), Device::Interpreter).unwrap();
    let big = picture(60, 40, 3);
    let fitted = big.clone().fitted([24, 24]);
    assert_eq!((fitted.width, fitted.height, fitted.original), (24, 16, [40, 60]));
    assert_eq!(c.classify(&[big]).unwrap(), c.classify(&[fitted]).unwrap());
}

/// Bilinear upsampling of [classes, lh, lw] logits to an h×w image, then the argmax.
#[test]
fn centre_cropped_pictures_match_torchvision_resize_and_crop() {
    let model = repo_model("batch/classifier.onnx");
    // the shorter side to 20, the centre 16×16 cut out (odd spare pixels: ties to even)
    let config = TaskConfig {
        input_size: [16, 16],
        fit: Fit::Crop,
        resize: Some(20),
        softmax: false,
        top_k: 10,
        ..TaskConfig::default()
    };
    let mut c = Classifier::new(&model, config.clone(), Device::Interpreter).unwrap();
    for (i, &(w, h)) in sizes().iter().chain(&[(24, 19), (19, 27)]).enumerate() {
        let p = picture(w, h, 60 + i as u64);
        let got = &c.classify(std::slice::from_ref(&p)).unwrap()[0];
        let probs = host_run(&model, &p, &config)[0].to_f64();
        for k in got {
            assert!((k.score as f64 - probs[k.index]).abs() < 1e-5, "{w}×{h}: {} vs {}", k.score, probs[k.index]);
        }
    }
    // 24×19 → 25×20: 9 spare columns, the crop starts at round(4.5) = 4 (ties to even), the
    // column torchvision's CenterCrop starts at
    let (_, sx, oy, ox) = host_geometry(&picture(24, 19, 9), &config);
    assert_eq!((sx, oy, ox), (24.0 / 25.0, -2.0, -4.0));
    let short = TaskConfig { resize: Some(12), ..config.clone() };
    assert!(matches!(short.check(), Err(xforge_zoo::ZooError::Config(m)) if m.starts_with("resize")));
    let wrong = TaskConfig { fit: Fit::Stretch, ..config };
    assert!(matches!(wrong.check(), Err(xforge_zoo::ZooError::Config(m)) if m.starts_with("resize")));
}

fn host_mask(logits: &[f64], [classes, lh, lw]: [usize; 3], h: usize, w: usize) -> Vec<u32> {
    let mut out = vec![];
    for y in 0..h {
        for x in 0..w {
            let fy = ((y as f64 + 0.5) * lh as f64 / h as f64 - 0.5).clamp(0.0, lh as f64 - 1.0);
            let fx = ((x as f64 + 0.5) * lw as f64 / w as f64 - 0.5).clamp(0.0, lw as f64 - 1.0);
            let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(lh - 1), (x0 + 1).min(lw - 1));
            let (ty, tx) = (fy - y0 as f64, fx - x0 as f64);
            let v = |c: usize| {
                let at = |yy: usize, xx: usize| logits[c * lh * lw + yy * lw + xx];
                (at(y0, x0) * (1.0 - tx) + at(y0, x1) * tx) * (1.0 - ty)
                    + (at(y1, x0) * (1.0 - tx) + at(y1, x1) * tx) * ty
            };
            out.push((0..classes).max_by(|&a, &b| v(a).total_cmp(&v(b))).unwrap() as u32);
        }
    }
    out
}

#[test]
fn segmenter_masks_match_host_upsampling_at_each_pictures_size() {
    let model = models().join("segmenter.onnx");
    let config = TaskConfig { input_size: [32, 32], max_image_size: [80, 80], ..TaskConfig::default() };
    let mut s = Segmenter::new(&model, config.clone(), Device::Interpreter).unwrap();
    let pictures: Vec<Picture> = sizes().iter().enumerate().map(|(i, &(w, h))| picture(w, h, 20 + i as u64)).collect();
    let masks = s.segment(&pictures).unwrap();
    for (p, m) in pictures.iter().zip(&masks) {
        assert_eq!((m.width, m.height), (p.width, p.height));
        let logits = host_run(&model, p, &config)[0].to_f64();
        let want = host_mask(&logits, [5, 16, 16], p.height, p.width);
        let same = want.iter().zip(&m.classes).filter(|(a, b)| a == b).count();
        // ties between two classes may round either way; nothing else may differ
        assert!(same * 1000 >= want.len() * 999, "{}×{}: {same} of {} pixels agree", p.width, p.height, want.len());
        assert!(m.classes.iter().collect::<std::collections::BTreeSet<_>>().len() > 1, "a constant mask tests nothing");
    }
}

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f64; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Greedy NMS per class (ONNX NonMaxSuppression's rule: keep scores above the threshold,
/// suppress IoU above the threshold), then the best `cap` over all classes.
fn host_nms(boxes: &[[f64; 4]], scores: &[Vec<f64>], c: &TaskConfig, cap: usize) -> Vec<(usize, f64, [f64; 4])> {
    let mut kept = vec![];
    for (class, s) in scores.iter().enumerate() {
        let mut order: Vec<usize> = (0..boxes.len()).filter(|&i| s[i] > c.score_threshold as f64).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        let mut mine: Vec<usize> = vec![];
        for i in order {
            if mine.len() < c.max_per_class && mine.iter().all(|&j| iou(&boxes[i], &boxes[j]) <= c.iou_threshold as f64)
            {
                mine.push(i);
            }
        }
        kept.extend(mine.into_iter().map(|i| (class, s[i], boxes[i])));
    }
    kept.sort_by(|a, b| b.1.total_cmp(&a.1));
    kept.truncate(cap);
    kept
}

fn assert_same_detections(got: &[xforge_zoo::Detection], want: &[(usize, f64, [f64; 4])], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} against {want:?}");
    assert!(want.len() >= 3, "{what}: too few boxes survive to test the NMS ({})", want.len());
    for (g, (class, score, bbox)) in got.iter().zip(want) {
        assert_eq!(g.class, *class, "{what}");
        assert!((g.score as f64 - score).abs() < 1e-5, "{what}: score {} vs {score}", g.score);
        for k in 0..4 {
            assert!((g.bbox[k] as f64 - bbox[k]).abs() < 1e-3, "{what}: box {:?} vs {bbox:?}", g.bbox);
        }
    }
}

/// A box (x1, y1, x2, y2) in model-input pixels brought to the picture's pixels and clipped.
fn to_picture(b: [f64; 4], p: &Picture, c: &TaskConfig) -> [f64; 4] {
    let (h, w) = (p.height as f64, p.width as f64);
    let (sy, sx, oy, ox) = host_geometry(p, c);
    [
        ((b[0] - ox) * sx).clamp(0.0, w),
        ((b[1] - oy) * sy).clamp(0.0, h),
        ((b[2] - ox) * sx).clamp(0.0, w),
        ((b[3] - oy) * sy).clamp(0.0, h),
    ]
}

#[test]
fn yolo_detections_match_host_decoding_and_nms() {
    let model = models().join("yolo.onnx");
    for fit in [Fit::Letterbox, Fit::Stretch] {
        let config = TaskConfig {
            input_size: [32, 32],
            max_image_size: [80, 80],
            fit,
            score_threshold: 0.3,
            iou_threshold: 0.3,
            max_detections: 12,
            max_per_class: 6,
            ..TaskConfig::default()
        };
        let mut d = Detector::new(&model, config.clone(), Device::Interpreter).unwrap();
        let pictures: Vec<Picture> =
            sizes().iter().enumerate().map(|(i, &(w, h))| picture(w, h, 30 + i as u64)).collect();
        let got = d.detect(&pictures).unwrap();
        for (p, dets) in pictures.iter().zip(&got) {
            let out = host_run(&model, p, &config)[0].to_f64(); // [1, 7, 64]
            let a = 64;
            let boxes: Vec<[f64; 4]> = (0..a)
                .map(|i| {
                    let (cx, cy, w, h) = (out[i], out[a + i], out[2 * a + i], out[3 * a + i]);
                    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
                })
                .collect();
            let scores: Vec<Vec<f64>> = (0..3).map(|c| out[(4 + c) * a..(5 + c) * a].to_vec()).collect();
            let want: Vec<_> = host_nms(&boxes, &scores, &config, config.max_detections)
                .into_iter()
                .map(|(c, s, b)| (c, s, to_picture(b, p, &config)))
                .collect();
            assert_same_detections(dets, &want, &format!("{fit:?} {}×{}", p.width, p.height));
        }
    }
}

#[test]
fn anchor_detections_match_host_box_decoding_and_nms() {
    let model = models().join("ssd.onnx");
    let anchors_path = models().join("anchors.npy");
    // clip: the decoded boxes clipped to the 32×32 input before the NMS (torchvision's way)
    let mut outside = 0;
    for clip in [false, true] {
        let config = TaskConfig {
            input_size: [32, 32],
            max_image_size: [80, 80],
            head: Head::Anchors {
                anchors: anchors_path.clone(),
                weights: [10.0, 10.0, 5.0, 5.0],
                scores: ScoreFn::Softmax,
                outputs: None,
                clip,
            },
            score_threshold: 0.4,
            iou_threshold: 0.4,
            max_detections: 10,
            max_per_class: 5,
            labels: Some(vec!["background".into(), "a".into(), "b".into(), "c".into()]),
            ..TaskConfig::default()
        };
        let mut d = Detector::new(&model, config.clone(), Device::Interpreter).unwrap();
        let anchors = xforge_ir::npy::from_bytes(&std::fs::read(&anchors_path).unwrap()).unwrap().to_f64();
        let pictures: Vec<Picture> =
            sizes().iter().enumerate().map(|(i, &(w, h))| picture(w, h, 40 + i as u64)).collect();
        let got = d.detect(&pictures).unwrap();
        for (p, dets) in pictures.iter().zip(&got) {
            let outs = host_run(&model, p, &config);
            let (reg, cls) = (outs[0].to_f64(), outs[1].to_f64()); // [1, 64, 4] each
            let boxes: Vec<[f64; 4]> = (0..64)
                .map(|i| {
                    let an = &anchors[4 * i..4 * i + 4];
                    let (aw, ah) = (an[2] - an[0], an[3] - an[1]);
                    let (acx, acy) = (an[0] + aw / 2.0, an[1] + ah / 2.0);
                    let d = &reg[4 * i..4 * i + 4];
                    let clamp = (1000.0f64 / 16.0).ln();
                    let (cx, cy) = (d[0] / 10.0 * aw + acx, d[1] / 10.0 * ah + acy);
                    let (w, h) = ((d[2] / 5.0).min(clamp).exp() * aw, (d[3] / 5.0).min(clamp).exp() * ah);
                    let b = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0];
                    outside += b.iter().any(|&v| !(0.0..=32.0).contains(&v)) as usize;
                    if clip {
                        b.map(|v| v.clamp(0.0, 32.0))
                    } else {
                        b
                    }
                })
                .collect();
            let probs: Vec<Vec<f64>> = (0..64)
                .map(|i| {
                    let l = &cls[4 * i..4 * i + 4];
                    let m = l.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = l.iter().map(|v| (v - m).exp()).collect();
                    let s: f64 = e.iter().sum();
                    e.iter().map(|v| v / s).collect()
                })
                .collect();
            let scores: Vec<Vec<f64>> = (1..4).map(|c| (0..64).map(|i| probs[i][c]).collect()).collect();
            let want: Vec<_> = host_nms(&boxes, &scores, &config, config.max_detections)
                .into_iter()
                .map(|(c, s, b)| (c + 1, s, to_picture(b, p, &config)))
                .collect();
            assert_same_detections(dets, &want, &format!("clip {clip} {}×{}", p.width, p.height));
            assert!(dets.iter().all(|d| d.label.as_deref() == Some(["background", "a", "b", "c"][d.class])));
        }
    }
    assert!(outside > 0, "no decoded box reaches outside the input: clipping is untested");
}

#[test]
fn pictures_decode_from_png_and_jpeg_and_bad_ones_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let p = picture(40, 30, 5);
    let img = image::RgbImage::from_raw(40, 30, p.rgb.clone()).unwrap();
    let png = dir.path().join("a.png");
    let jpg = dir.path().join("b.jpg");
    img.save(&png).unwrap();
    img.save(&jpg).unwrap();
    assert_eq!(Picture::open(&png, 1 << 20).unwrap(), p);
    let j = Picture::open(&jpg, 1 << 20).unwrap();
    assert_eq!((j.width, j.height), (40, 30));
    let truncated = dir.path().join("c.png");
    let bytes = std::fs::read(&png).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let text = dir.path().join("d.png");
    std::fs::write(&text, b"not an image").unwrap();
    let missing = dir.path().join("e.png");
    // over the pixel limit: refused before decoding
    let e = Picture::open(&png, 100).unwrap_err().to_string();
    assert!(e.contains("a.png") && e.contains("limit"), "{e}");

    let model = repo_model("batch/classifier.onnx");
    let config = TaskConfig { input_size: [16, 16], softmax: false, ..TaskConfig::default() };
    let mut c = Classifier::new(&model, config, Device::Interpreter).unwrap();
    let paths = [png.as_path(), truncated.as_path(), jpg.as_path(), text.as_path(), missing.as_path()];
    let results = c.classify_files(&paths);
    assert_eq!(results.len(), 5);
    assert_eq!(results[0].as_ref().unwrap(), &c.classify(&[p]).unwrap()[0]);
    assert!(results[2].is_ok());
    for (k, name) in [(1, "c.png"), (3, "d.png"), (4, "e.png")] {
        let e = results[k].as_ref().unwrap_err().to_string();
        assert!(e.contains(name), "{name}: {e}");
    }
}

#[test]
fn configurations_that_do_not_fit_the_model_are_errors_naming_the_field() {
    let model = repo_model("batch/classifier.onnx");
    let err = |c: TaskConfig| Classifier::new(&model, c, Device::Interpreter).err().expect("accepted").to_string();
    let base = TaskConfig { input_size: [16, 16], ..TaskConfig::default() };
    let e = err(TaskConfig { input_size: [224, 224], ..base.clone() });
    assert!(e.contains("input_size") && e.contains("f32[batch,3,16,16]"), "{e}");
    let e = err(TaskConfig { labels: Some(vec!["a".into(), "b".into()]), ..base.clone() });
    assert!(e.contains("labels: 2 names for a model of 10 classes"), "{e}");
    let e = err(TaskConfig { std: [0.2, 0.0, 0.2], ..base.clone() });
    assert!(e.contains("std: entry 1"), "{e}");
    let e = err(TaskConfig { labels_file: Some("/nonexistent/labels.txt".into()), ..base.clone() });
    assert!(e.contains("/nonexistent/labels.txt"), "{e}");
    // a segmenter's or detector's output on a classifier's model
    let e = Segmenter::new(&model, base.clone(), Device::Interpreter).err().unwrap().to_string();
    assert!(e.contains("a segmenter's is [N, classes, h, w]"), "{e}");
    let e = Detector::new(&model, base.clone(), Device::Interpreter).err().unwrap().to_string();
    assert!(e.contains("a YOLO head's is [N, 4 + classes, anchors]"), "{e}");
    // a task.toml with an unknown field or a bad value names it
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("task.toml");
    std::fs::write(&f, "input_size = [16, 16]\nscore_treshold = 0.5\n").unwrap();
    let e = TaskConfig::read(&f).unwrap_err().to_string();
    assert!(e.contains("score_treshold"), "{e}");
    std::fs::write(&f, "iou_threshold = 1.5\n").unwrap();
    let e = TaskConfig::read(&f).unwrap_err().to_string();
    assert!(e.contains("iou_threshold: 1.5"), "{e}");
}

/// The four task graphs of the tests above, with canvases of `canvas` pixels.
fn task_graphs(canvas: usize) -> Vec<(&'static str, xforge_ir::Graph)> {
    let anchors = models().join("anchors.npy");
    let small = TaskConfig { input_size: [32, 32], max_image_size: [canvas, canvas], ..TaskConfig::default() };
    let ssd = TaskConfig {
        head: Head::Anchors {
            anchors,
            weights: [10.0, 10.0, 5.0, 5.0],
            scores: ScoreFn::Softmax,
            outputs: None,
            clip: false,
        },
        score_threshold: 0.4,
        ..small.clone()
    };
    let classifier = TaskConfig { input_size: [16, 16], ..small.clone() };
    let yolo = TaskConfig { fit: Fit::Letterbox, score_threshold: 0.3, ..small.clone() };
    let dev = || Device::Interpreter;
    vec![
        (
            "classifier",
            Classifier::new(&repo_model("batch/classifier.onnx"), classifier, dev()).unwrap().pipeline().graph.clone(),
        ),
        ("segmenter", Segmenter::new(&models().join("segmenter.onnx"), small, dev()).unwrap().pipeline().graph.clone()),
        ("yolo", Detector::new(&models().join("yolo.onnx"), yolo, dev()).unwrap().pipeline().graph.clone()),
        ("ssd", Detector::new(&models().join("ssd.onnx"), ssd, dev()).unwrap().pipeline().graph.clone()),
    ]
}

/// Two pictures packed as a task graph's inputs.
fn canvas_feed(canvas: usize) -> HashMap<String, Tensor> {
    let (a, b) = (picture(canvas, canvas * 3 / 4, 50), picture(canvas / 3, canvas - 1, 51));
    let batch = xforge_zoo::picture::CanvasBatch::pack(&[&a, &b], [canvas, canvas]);
    HashMap::from([
        (
            xforge_zoo::pipeline::PIXELS.to_string(),
            Tensor::new(vec![2, canvas, canvas, 3], xforge_ir::TensorData::U8(batch.pixels)),
        ),
        (xforge_zoo::pipeline::EXTENT.to_string(), Tensor::from_f32(vec![2, 2], batch.extent)),
    ])
}

/// The task graphs compiled for the GPU, their kernels run on the host (those without
/// inter-thread communication; the rest through the interpreter), against the interpreter on
/// the uncompiled graph: the u8 canvas gathers, the geometry, the NMS and the mask argmax as
/// the GPU would compute them, at fp32 and at fp16 storage.
#[test]
fn compiled_task_graphs_compute_what_the_interpreter_does() {
    for canvas in [80, 1400] {
        let feed = canvas_feed(canvas);
        for (name, g) in task_graphs(canvas) {
            let bound = xforge_zoo::pipeline::bind_batch(&g, 2).unwrap();
            let want = interp::run(&bound, &feed).unwrap();
            for precision in [xforge_zoo::Precision::Fp32, xforge_zoo::Precision::Fp16] {
                let what = format!("{name} at {} on a {canvas}² canvas", precision.name());
                let compiler = xforge_compiler::Compiler::new("sm_90").precision(precision);
                let fused = compiler.fuse(&bound).unwrap_or_else(|e| panic!("{what}: {e}"));
                let (library, _) = xforge_compiler::build::library_plans(&fused, false);
                let (kernels, missing) = xforge_compiler::build::generate_kernels(&fused, &library);
                assert!(missing.is_empty(), "{what}: {missing:?}");
                let kernels: HashMap<_, _> = kernels.into_iter().collect();
                let (got, stats) = xforge_testsuite::host_kernels::run_plan(&fused, &kernels, &feed).unwrap();
                assert!(stats.host_kernels > 0, "{what}: no kernel ran on the host");
                let fp32 = precision == xforge_zoo::Precision::Fp32;
                if !fp32 && name != "classifier" && name != "segmenter" {
                    // f16 scores reorder near-ties, so the kept boxes are compared as sets; on
                    // the large canvas the random model's own f16 noise, scaled 44 times, is
                    // what differs (its positions are checked at fp32, the f32 index arithmetic
                    // by the classifier and the segmenter at fp16)
                    if canvas > 100 {
                        continue;
                    }
                    let rows = |t: &Tensor| t.to_f64().chunks(4).map(|c| c.to_vec()).collect::<Vec<_>>();
                    let (a, b) = (rows(&got[0]), rows(&want[0]));
                    // a score at the threshold may fall either side
                    assert!(
                        a.len().abs_diff(b.len()) * 50 <= b.len().max(1),
                        "{what}: {} boxes against {}",
                        a.len(),
                        b.len()
                    );
                    let near = |r: &Vec<f64>| b.iter().any(|q| r.iter().zip(q).all(|(x, y)| (x - y).abs() < 0.5));
                    let matched = a.iter().filter(|r| near(r)).count();
                    assert!(matched * 10 >= a.len() * 9, "{what}: {matched} of {} boxes match", a.len());
                    continue;
                }
                let tol = if fp32 { 1e-4 } else { 2e-2 };
                for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(a.shape(), b.shape(), "{what}: output {k}");
                    if a.dtype().is_float() {
                        let e = xforge_ir::tensor::rel_l2(a, b);
                        assert!(e < tol, "{what}: output {k} differs by {e:e}");
                    } else {
                        let same = a.to_i64().iter().zip(b.to_i64()).filter(|(x, y)| **x == *y).count();
                        let need = if fp32 { 999 } else { 990 };
                        assert!(same * 1000 >= a.len() * need, "{what}: output {k}: {same} of {} agree", a.len());
                    }
                }
            }
        }
    }
    // and each builds a whole artifact
    for (name, g) in task_graphs(64) {
        let bound = xforge_zoo::pipeline::bind_batch(&g, 2).unwrap();
        let a = xforge_compiler::Compiler::new("sm_90")
            .compile_graph(&bound, name.into())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!a.kernels.names.is_empty(), "{name}");
    }
}

#[test]
fn text_embeddings_are_the_mean_of_the_real_tokens_normalized() {
    let model = repo_model("bert_tiny.onnx");
    let config = TaskConfig { tokenizer: Some(models().join("tokenizer.json")), ..TaskConfig::default() };
    let mut e = xforge_zoo::TextEmbedder::new(&model, config, Device::Interpreter).unwrap();
    let texts = ["The cat sat on the mat.", "A big red car ran fast", "kernels fusing graphs", ""];
    let got = e.embed(&texts).unwrap();
    let tokens = e.tokenize(&texts).unwrap();
    assert_eq!(tokens[0][0], 2, "[CLS] first");
    assert!(tokens[2].len() > 4, "unknown words are split into pieces: {:?}", tokens[2]);
    let m = xforge_frontend::load(&model, &Default::default()).unwrap();
    for ((t, v), text) in tokens.iter().zip(&got).zip(texts) {
        let mut ids = vec![0i64; 32];
        for (j, &id) in t.iter().enumerate() {
            ids[j] = id as i64;
        }
        let h =
            interp::run(&m.graph, &HashMap::from([("input".to_string(), Tensor::from_i64(vec![1, 32], ids))])).unwrap();
        let h = h[0].to_f64(); // [1, 32, 128]
        let mut mean = vec![0f64; 128];
        for j in 0..t.len() {
            for d in 0..128 {
                mean[d] += h[j * 128 + d] / t.len() as f64;
            }
        }
        let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert_eq!(v.len(), 128);
        let cos: f64 = v.iter().zip(&mean).map(|(a, b)| *a as f64 * b / norm).sum();
        assert!(cos > 0.99999, "{text:?}: cosine {cos}");
        let len: f64 = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!((len - 1.0).abs() < 1e-5, "{text:?}: length {len}");
    }
    assert!(got[0].iter().zip(&got[1]).any(|(a, b)| (a - b).abs() > 1e-3), "different texts, different embeddings");
    // a missing or broken tokenizer is an error naming it
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("tokenizer.json");
    std::fs::write(&broken, "{\"version\": ").unwrap();
    let c = TaskConfig { tokenizer: Some(broken), ..TaskConfig::default() };
    let err = xforge_zoo::TextEmbedder::new(&model, c, Device::Interpreter).err().unwrap().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    let err =
        xforge_zoo::TextEmbedder::new(&model, TaskConfig::default(), Device::Interpreter).err().unwrap().to_string();
    assert!(err.contains("tokenizer"), "{err}");
}

/// The embedder's graph (model + pooling + normalization) compiles for the GPU, and its
/// kernels run on the host compute what the interpreter does.
#[test]
fn the_text_embedder_graph_compiles_and_matches_the_interpreter() {
    let config = TaskConfig { tokenizer: Some(models().join("tokenizer.json")), ..TaskConfig::default() };
    let e = xforge_zoo::TextEmbedder::new(&repo_model("bert_tiny.onnx"), config, Device::Interpreter).unwrap();
    let g = e.pipeline().graph.clone();
    let tokens = e.tokenize(&["a small model of the river"]).unwrap();
    let mut ids = vec![0i64; 32];
    let mut mask = vec![0i64; 32];
    for (j, &t) in tokens[0].iter().enumerate() {
        ids[j] = t as i64;
        mask[j] = 1;
    }
    let feed = HashMap::from([
        ("input".to_string(), Tensor::from_i64(vec![1, 32], ids)),
        (xforge_zoo::embedder::MASK.to_string(), Tensor::from_i64(vec![1, 32], mask)),
    ]);
    let want = interp::run(&g, &feed).unwrap();
    let compiler = xforge_compiler::Compiler::new("sm_90");
    let fused = compiler.fuse(&g).unwrap();
    let (library, _) = xforge_compiler::build::library_plans(&fused, false);
    let (kernels, missing) = xforge_compiler::build::generate_kernels(&fused, &library);
    assert!(missing.is_empty(), "{missing:?}");
    let (got, _) = xforge_testsuite::host_kernels::run_plan(&fused, &kernels.into_iter().collect(), &feed).unwrap();
    let err = xforge_ir::tensor::rel_l2(&got[0], &want[0]);
    assert!(err < 1e-4, "relative L2 {err:e}");
    compiler.compile_graph(&g, "embedder".into()).unwrap();
}
