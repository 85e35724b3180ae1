//! `xforge._xforge.ZooTask`: the zoo's wrappers (`xforge.zoo` in Python wraps them in classes
//! with NumPy results). A configuration crosses as TOML text; an image as a path, the file's
//! bytes, or raw RGB8 pixels with their width and height. Each image's result or error comes
//! back in its place: one bad image fails alone.
use crate::{BadInputError, BadModelError, XforgeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::path::Path;
use std::sync::Mutex;
use xforge_zoo::{Classifier, Detector, Device, Picture, Segmenter, TaskConfig, TextEmbedder, ZooError};

pub(crate) fn zoo_error(e: ZooError) -> PyErr {
    let msg = e.to_string();
    match e {
        ZooError::Import(_) => BadModelError::new_err(msg),
        e if e.is_user_error() => BadInputError::new_err(msg),
        _ => XforgeError::new_err(msg),
    }
}

enum Task {
    Classifier(Classifier),
    Detector(Detector),
    Segmenter(Segmenter),
    Embedder(TextEmbedder),
}

/// Runs from several Python threads are serialized.
#[pyclass(module = "xforge._xforge", frozen)]
pub(crate) struct ZooTask {
    task: Mutex<Task>,
    max_pixels: u64,
}

/// A batch's results before they become Python objects.
enum Results {
    Classes(Vec<Vec<xforge_zoo::Class>>),
    Detections(Vec<Vec<xforge_zoo::Detection>>),
    Masks(Vec<xforge_zoo::Mask>),
}

/// An image as Python gives it: a path (str), encoded bytes, or (rgb bytes, width, height).
fn picture(item: &Bound<'_, PyAny>, max_pixels: u64) -> Result<Picture, ZooError> {
    if let Ok(p) = item.extract::<String>() {
        return Picture::open(Path::new(&p), max_pixels);
    }
    if let Ok(b) = item.downcast::<PyBytes>() {
        return Picture::decode(b.as_bytes(), max_pixels);
    }
    if let Ok((rgb, w, h)) = item.extract::<(Vec<u8>, usize, usize)>() {
        if (w as u64).saturating_mul(h as u64) > max_pixels {
            return Err(ZooError::Image(format!("{w}×{h} is over the limit of {max_pixels} pixels")));
        }
        return Picture::from_rgb(w, h, rgb);
    }
    Err(ZooError::Image("an image is a path, the file's bytes or an RGB8 array (H, W, 3)".into()))
}

#[pymethods]
impl ZooTask {
    /// `kind` is classifier, detector, segmenter or embedder; `config` TOML text whose relative
    /// paths are taken from `base_dir`; `device` "interp" or "gpu".
    #[new]
    #[pyo3(signature = (kind, model, config = "", base_dir = ".", device = "interp", precision = "fp16"))]
    fn new(
        py: Python<'_>,
        kind: &str,
        model: &str,
        config: &str,
        base_dir: &str,
        device: &str,
        precision: &str,
    ) -> PyResult<ZooTask> {
        let cfg = TaskConfig::parse(config, Path::new(base_dir)).map_err(zoo_error)?;
        let device = match device {
            "interp" => Device::Interpreter,
            "gpu" => Device::Gpu { index: 0, precision: crate::precision(precision)? },
            o => return Err(BadInputError::new_err(format!("device '{o}': interp or gpu"))),
        };
        let max_pixels = cfg.max_decoded_pixels;
        let model = Path::new(model);
        let task = py
            .allow_threads(|| {
                Ok(match kind {
                    "classifier" => Task::Classifier(Classifier::new(model, cfg, device)?),
                    "detector" => Task::Detector(Detector::new(model, cfg, device)?),
                    "segmenter" => Task::Segmenter(Segmenter::new(model, cfg, device)?),
                    "embedder" => Task::Embedder(TextEmbedder::new(model, cfg, device)?),
                    o => {
                        return Err(ZooError::Config(format!(
                            "task '{o}': classifier, detector, segmenter or embedder"
                        )))
                    }
                })
            })
            .map_err(zoo_error)?;
        Ok(ZooTask { task: Mutex::new(task), max_pixels })
    }

    /// Runs the task on a list of images (texts for an embedder). Returns one entry per item:
    /// (True, result) or (False, error message). Results: classifier [(index, label, score)],
    /// detector [(class, label, score, (x1, y1, x2, y2))], segmenter (width, height, u32 bytes),
    /// embedder f32 bytes.
    fn run<'py>(&self, py: Python<'py>, items: &Bound<'py, PyList>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let mut task = self.task.lock().map_err(|_| XforgeError::new_err("an earlier run panicked"))?;
        if let Task::Embedder(e) = &mut *task {
            let texts: Vec<String> = items.extract().map_err(|_| BadInputError::new_err("texts: a list of str"))?;
            let refs: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
            let out = py.allow_threads(|| e.embed(&refs)).map_err(zoo_error)?;
            return out
                .iter()
                .map(|v| {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    (true, PyBytes::new(py, &bytes)).into_pyobject(py)
                })
                .collect();
        }
        let decoded: Vec<Result<Picture, ZooError>> = items.iter().map(|i| picture(&i, self.max_pixels)).collect();
        let good: Vec<Picture> = decoded.iter().filter_map(|d| d.as_ref().ok().cloned()).collect();
        let task = &mut *task;
        let results = py
            .allow_threads(|| {
                Ok::<_, ZooError>(match task {
                    Task::Classifier(c) => Results::Classes(c.classify(&good)?),
                    Task::Detector(d) => Results::Detections(d.detect(&good)?),
                    Task::Segmenter(s) => Results::Masks(s.segment(&good)?),
                    Task::Embedder(_) => unreachable!("handled above"),
                })
            })
            .map_err(zoo_error)?;
        let objects: Vec<Bound<'py, PyAny>> = match results {
            Results::Classes(all) => all
                .into_iter()
                .map(|cs| {
                    let v: Vec<(usize, Option<String>, f32)> =
                        cs.into_iter().map(|c| (c.index, c.label, c.score)).collect();
                    Ok(v.into_pyobject(py)?.into_any())
                })
                .collect::<PyResult<_>>()?,
            Results::Detections(all) => all
                .into_iter()
                .map(|ds| {
                    let v: Vec<(usize, Option<String>, f32, (f32, f32, f32, f32))> = ds
                        .into_iter()
                        .map(|d| (d.class, d.label, d.score, (d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3])))
                        .collect();
                    Ok(v.into_pyobject(py)?.into_any())
                })
                .collect::<PyResult<_>>()?,
            Results::Masks(all) => all
                .into_iter()
                .map(|m| {
                    let bytes: Vec<u8> = m.classes.iter().flat_map(|c| c.to_le_bytes()).collect();
                    Ok((m.width, m.height, PyBytes::new(py, &bytes)).into_pyobject(py)?.into_any())
                })
                .collect::<PyResult<_>>()?,
        };
        let mut objects = objects.into_iter();
        decoded
            .into_iter()
            .map(|d| match d {
                Ok(_) => (true, objects.next().expect("one result per decoded image")).into_pyobject(py),
                Err(e) => (false, e.to_string().into_pyobject(py)?.into_any()).into_pyobject(py),
            })
            .collect()
    }
}
