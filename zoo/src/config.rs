//! The task configuration (`task.toml`): what the model expects and how to read its outputs.
//! Every field has a default that fits torchvision's ImageNet models, so an empty file is a
//! classifier at 224×224.
use crate::ZooError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// How an image is brought to the model's input size.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Each axis scaled on its own (torchvision's `Resize((h, w))`).
    #[default]
    Stretch,
    /// One scale for both axes, the rest padded evenly on both sides (YOLO's letterbox).
    Letterbox,
    /// The shorter side resized to `resize` (the longer one in proportion, rounded down), then
    /// the centre `input_size` cut out (torchvision's `Resize(256)` + `CenterCrop(224)`, the
    /// crop's offset rounded half to even as Python's `round`).
    Crop,
}

/// The model input's layout.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    #[default]
    Nchw,
    Nhwc,
}

/// How a detector's outputs read.
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Head {
    /// One output [N, 4 + classes, anchors]: (cx, cy, w, h) in input pixels, then the class
    /// scores after their sigmoid (Ultralytics YOLOv8 and later).
    #[default]
    Yolo,
    /// Box regressions [N, anchors, 4] against fixed anchors (xyxy, input pixels; a `.npy` of
    /// [anchors, 4]) with torchvision's box coder weights, and class logits [N, anchors,
    /// classes] (SSD: softmax with class 0 the background; RetinaNet: sigmoid).
    Anchors {
        anchors: PathBuf,
        #[serde(default = "default_coder")]
        weights: [f32; 4],
        #[serde(default)]
        scores: ScoreFn,
        /// Outputs by name: (boxes, logits); default the first two.
        #[serde(default)]
        outputs: Option<[String; 2]>,
        /// Decoded boxes clipped to the model input before the NMS (torchvision's SSD and
        /// RetinaNet `postprocess_detections`); otherwise only the final boxes are clipped.
        #[serde(default)]
        clip: bool,
    },
}

fn default_coder() -> [f32; 4] {
    [10.0, 10.0, 5.0, 5.0]
}

/// The activation that turns class logits into scores.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScoreFn {
    /// Softmax over the classes; class 0 is the background and never reported.
    #[default]
    Softmax,
    Sigmoid,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// The model's input [height, width].
    pub input_size: [usize; 2],
    /// Per-channel mean and standard deviation of pixels scaled to [0, 1] (RGB).
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub layout: Layout,
    pub fit: Fit,
    /// The letterbox's padding value, in pixels (0–255).
    pub pad_value: f32,
    /// `fit = "crop"`: the length the shorter side is resized to before the centre crop
    /// (default: the input's longer side, so nothing but the longer axis is cut).
    pub resize: Option<usize>,
    /// The largest image taken as is [height, width]: the compiled graph's canvas. Larger
    /// images are shrunk on the CPU first (their results still in their own pixels).
    pub max_image_size: [usize; 2],
    /// The most pixels a decoded image may have (decompression bombs are refused).
    pub max_decoded_pixels: u64,
    /// Class names in output order: a list here, or a file of one name per line.
    pub labels: Option<Vec<String>>,
    pub labels_file: Option<PathBuf>,
    /// Classifiers: how many of the best classes to report.
    pub top_k: usize,
    /// Classifiers: whether the model's output still needs a softmax.
    pub softmax: bool,
    /// Detectors.
    pub head: Head,
    pub score_threshold: f32,
    pub iou_threshold: f32,
    pub max_detections: usize,
    /// Detectors: the most boxes kept per class by the NMS.
    pub max_per_class: usize,
    /// Text embedders: the tokenizer (a Hugging Face `tokenizer.json`).
    pub tokenizer: Option<PathBuf>,
    /// Text embedders: the most tokens per text (longer texts are truncated) when the model
    /// does not fix its sequence length.
    pub max_length: usize,
}

impl Default for TaskConfig {
    fn default() -> TaskConfig {
        TaskConfig {
            input_size: [224, 224],
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            layout: Layout::Nchw,
            fit: Fit::Stretch,
            pad_value: 114.0,
            resize: None,
            max_image_size: [1024, 1024],
            max_decoded_pixels: 64 << 20,
            labels: None,
            labels_file: None,
            top_k: 5,
            softmax: true,
            head: Head::Yolo,
            score_threshold: 0.25,
            iou_threshold: 0.45,
            max_detections: 100,
            max_per_class: 100,
            tokenizer: None,
            max_length: 128,
        }
    }
}

impl TaskConfig {
    /// Reads a `task.toml`; relative paths in it are taken from the file's folder.
    pub fn read(path: &Path) -> Result<TaskConfig, ZooError> {
        let text = std::fs::read_to_string(path).map_err(|e| ZooError::file(path, e))?;
        TaskConfig::parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(|e| {
            ZooError::Config(format!(
                "{}: {}",
                path.display(),
                e.to_string().trim_start_matches("task configuration: ")
            ))
        })
    }

    /// A configuration from TOML text; relative paths in it are taken from `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<TaskConfig, ZooError> {
        let mut c: TaskConfig = toml::from_str(text).map_err(|e| ZooError::Config(e.message().to_string()))?;
        if let Some(f) = &mut c.labels_file {
            *f = dir.join(&*f);
        }
        if let Some(t) = &mut c.tokenizer {
            *t = dir.join(&*t);
        }
        if let Head::Anchors { anchors, .. } = &mut c.head {
            *anchors = dir.join(&*anchors);
        }
        c.check()?;
        Ok(c)
    }

    /// Refuses values no model can use, naming the field.
    pub fn check(&self) -> Result<(), ZooError> {
        let bad = |field: &str, why: String| Err(ZooError::Config(format!("{field}: {why}")));
        let [h, w] = self.input_size;
        if h == 0 || w == 0 || h > 8192 || w > 8192 {
            return bad("input_size", format!("{h}×{w} is not within 1..=8192"));
        }
        let [ch, cw] = self.max_image_size;
        if ch == 0 || cw == 0 || ch * cw > 1 << 26 {
            return bad("max_image_size", format!("{ch}×{cw} is empty or over 2^26 pixels"));
        }
        if let Some(i) = self.std.iter().position(|s| !s.is_finite() || *s <= 0.0) {
            return bad("std", format!("entry {i} is {} (must be positive)", self.std[i]));
        }
        if let Some(i) = self.mean.iter().position(|m| !m.is_finite()) {
            return bad("mean", format!("entry {i} is not finite"));
        }
        if let Some(r) = self.resize {
            if r < h.max(w) || r > 8192 {
                return bad("resize", format!("{r} must be within {}..=8192 (the crop is {h}×{w})", h.max(w)));
            }
            if self.fit != Fit::Crop {
                return bad("resize", "only fit = \"crop\" resizes the shorter side".into());
            }
        }
        if !(0.0..=255.0).contains(&self.pad_value) {
            return bad("pad_value", format!("{} is not a pixel value", self.pad_value));
        }
        for (field, v) in [("score_threshold", self.score_threshold), ("iou_threshold", self.iou_threshold)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(field, format!("{v} is not within [0, 1]"));
            }
        }
        for (field, v) in [
            ("top_k", self.top_k),
            ("max_detections", self.max_detections),
            ("max_per_class", self.max_per_class),
            ("max_length", self.max_length),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if self.max_length > 1 << 16 {
            return bad("max_length", format!("{} tokens is over 65536", self.max_length));
        }
        if self.labels.is_some() && self.labels_file.is_some() {
            return bad("labels", "give labels or labels_file, not both".into());
        }
        Ok(())
    }

    /// The class names, if the configuration gives any, checked against the model's `classes`.
    pub fn labels_for(&self, classes: usize) -> Result<Option<Vec<String>>, ZooError> {
        let labels = self.label_names()?;
        match &labels {
            Some(l) if l.len() != classes => {
                Err(ZooError::Config(format!("labels: {} names for a model of {classes} classes", l.len())))
            }
            _ => Ok(labels),
        }
    }

    /// The class names, if the configuration gives any.
    pub fn label_names(&self) -> Result<Option<Vec<String>>, ZooError> {
        if let Some(l) = &self.labels {
            return Ok(Some(l.clone()));
        }
        let Some(f) = &self.labels_file else { return Ok(None) };
        let text = std::fs::read_to_string(f).map_err(|e| ZooError::file(f, e))?;
        Ok(Some(text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()))
    }
}
