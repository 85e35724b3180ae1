//! xforge's task wrappers: an ONNX model and a small task configuration in, images in, labels,
//! boxes and masks out in the image's own pixels. Decoding runs on the CPU; the resize,
//! normalization and layout change before the model and the softmax/top-k, box decoding + NMS
//! and mask upsampling + argmax after it are graph ops in the same graph as the model, so the
//! compiler fuses them with the model's kernels on the GPU (and the interpreter runs them on a
//! machine without one).
//!
//! ```no_run
//! use xforge_zoo::{Classifier, Device, Picture, TaskConfig};
//! let mut c = Classifier::new("model.onnx".as_ref(), TaskConfig::default(), Device::Interpreter)?;
//! let picture = Picture::open("cat.jpg".as_ref(), 1 << 26)?;
//! for class in &c.classify(&[picture])?[0] {
//!     println!("{} {:.3}", class.index, class.score);
//! }
//! # Ok::<(), xforge_zoo::ZooError>(())
//! ```
pub mod append;
pub mod bench;
pub mod classifier;
pub mod config;
pub mod detector;
pub mod draw;
pub mod embedder;
pub mod picture;
pub mod pipeline;
pub mod resample;
pub mod segmenter;

pub use classifier::{Class, Classifier};
pub use config::{Fit, Head, Layout, ScoreFn, TaskConfig};
pub use detector::{Detection, Detector};
pub use embedder::TextEmbedder;
pub use picture::Picture;
pub use pipeline::{Device, Pipeline};
pub use segmenter::{Mask, Segmenter};
pub use xforge_compiler::Precision;

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    /// A task configuration that is invalid or does not fit the model (names the field).
    #[error("task configuration: {0}")]
    Config(String),
    /// An image that cannot be decoded or is out of bounds.
    #[error("image: {0}")]
    Image(String),
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error(transparent)]
    Import(#[from] xforge_frontend::ImportError),
    #[error(transparent)]
    Interpret(#[from] xforge_ir::interp::InterpError),
    #[error(transparent)]
    Compile(#[from] xforge_compiler::CompileError),
    #[error("runtime: {0}")]
    Runtime(String),
}

impl ZooError {
    /// Whether the input (model, configuration, image) is at fault rather than xforge.
    pub fn is_user_error(&self) -> bool {
        match self {
            ZooError::Config(_)
            | ZooError::Image(_)
            | ZooError::File { .. }
            | ZooError::Import(_)
            | ZooError::Interpret(_) => true,
            ZooError::Compile(e) => e.is_input_error(),
            ZooError::Runtime(_) => false,
        }
    }

    pub(crate) fn file(path: &Path, e: std::io::Error) -> ZooError {
        ZooError::File { path: path.display().to_string(), why: e.to_string() }
    }
}

impl From<xforge_runtime::RuntimeError> for ZooError {
    fn from(e: xforge_runtime::RuntimeError) -> ZooError {
        ZooError::Runtime(e.to_string())
    }
}

/// Imports the model a wrapper is built on (shapes inferred, symbolic batch kept).
pub(crate) fn import(model: &Path) -> Result<xforge_ir::Graph, ZooError> {
    Ok(xforge_frontend::load(model, &Default::default())?.graph)
}

/// Decodes every file, runs the good ones together and puts each result (or its decoding error)
/// back in the caller's order: one bad image fails only itself.
pub(crate) fn per_item<T>(
    paths: &[&Path],
    max_pixels: u64,
    mut run: impl FnMut(&[Picture]) -> Result<Vec<T>, ZooError>,
) -> Vec<Result<T, ZooError>> {
    let decoded: Vec<Result<Picture, ZooError>> = paths.iter().map(|p| Picture::open(p, max_pixels)).collect();
    let good: Vec<Picture> = decoded.iter().filter_map(|d| d.as_ref().ok().cloned()).collect();
    let mut results = match run(&good) {
        Ok(r) => r.into_iter().map(Ok).collect::<Vec<_>>().into_iter(),
        Err(e) => {
            let msg = e.to_string();
            return decoded.into_iter().map(|d| d.and_then(|_| Err(ZooError::Runtime(msg.clone())))).collect();
        }
    };
    decoded.into_iter().map(|d| d.and_then(|_| results.next().expect("one result per good image"))).collect()
}
