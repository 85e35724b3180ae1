//! Semantic segmentation: the class logits resampled (bilinear) onto each image's own pixels,
//! then the argmax, all in the graph; the mask comes back at the image's size.
use crate::append::Appender;
use crate::config::TaskConfig;
use crate::picture::Picture;
use crate::pipeline::{assemble, prepend, Device, Pipeline};
use crate::resample::{bilinear, Geometry};
use crate::ZooError;
use std::path::Path;
use xforge_ir::{Attr, DType, Dim, Graph, Op};

/// A class per pixel, row by row, at the image's own size.
#[derive(Clone, Debug, PartialEq)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    pub classes: Vec<u32>,
}

impl Mask {
    pub fn at(&self, y: usize, x: usize) -> u32 {
        self.classes[y * self.width + x]
    }
}

pub struct Segmenter {
    pipeline: Pipeline,
    labels: Option<Vec<String>>,
}

impl Segmenter {
    pub fn new(model: &Path, config: TaskConfig, device: Device) -> Result<Segmenter, ZooError> {
        Segmenter::from_graph(crate::import(model)?, config, device)
    }

    /// A segmenter around an imported model whose first output is logits [N, classes, h, w].
    pub fn from_graph(mut g: Graph, config: TaskConfig, device: Device) -> Result<Segmenter, ZooError> {
        config.check()?;
        let (pre, geo) = prepend(&mut g, &config)?;
        let &logits = g.outputs.first().ok_or_else(|| ZooError::Config("the model has no outputs".into()))?;
        let (classes, lh, lw) = match g.ty(logits).shape.as_deref() {
            Some([_, Dim::Known(c), Dim::Known(h), Dim::Known(w)]) => (*c, *h, *w),
            _ => {
                return Err(ZooError::Config(format!(
                    "the model's output '{}' is {}, a segmenter's is [N, classes, h, w]",
                    g.name_of(logits),
                    g.ty(logits)
                )))
            }
        };
        let labels = config.labels_for(classes)?;
        let [h, w] = config.input_size;
        let [ch, cw] = config.max_image_size;
        let mut a = Appender::new(&mut g, "zoo_post");
        // image pixel → model-input pixel → logit cell: the inverse of the input's geometry,
        // then the logits' own stride
        let stride = a.f32s(&[1, 2], vec![lh as f32 / h as f32, lw as f32 / w as f32]);
        let scale = a.div(stride, geo.scale);
        let shift = a.mul(geo.shift, scale);
        let zero = a.f32s(&[], vec![0.0]);
        let shift = a.sub(zero, shift);
        let limit = a.f32s(&[1, 2], vec![lh as f32, lw as f32]);
        let x = a.cast(logits, DType::F32);
        let x = a.transpose(x, &[0, 2, 3, 1]);
        let up = bilinear(&mut a, x, [lh, lw, classes], [ch, cw], Geometry { scale, shift }, limit);
        let mask = a.op(Op::ArgMax, &[up], vec![("axis", Attr::Int(3)), ("keepdims", Attr::Int(0))]);
        let post = a.nodes;
        assemble(&mut g, pre, post, vec![mask])?;
        Ok(Segmenter { pipeline: Pipeline::new(g, config, device), labels })
    }

    pub fn labels(&self) -> Option<&[String]> {
        self.labels.as_deref()
    }

    /// Each picture's mask at its own (original) size.
    pub fn segment(&mut self, pictures: &[Picture]) -> Result<Vec<Mask>, ZooError> {
        let [ch, cw] = self.pipeline.config.max_image_size;
        let max = self.pipeline.config.max_image_size;
        let mut out = vec![];
        for chunk in self.pipeline.run(pictures)? {
            let m = chunk.outputs[0].to_i64();
            let n = (pictures.len() - chunk.first).min(chunk.outputs[0].shape()[0]);
            for i in 0..n {
                let p = &pictures[chunk.first + i];
                let [oh, ow] = p.original;
                let [fh, fw] = p.fitted_size(max);
                // the canvas holds the fitted picture; a shrunk one is read back nearest-neighbour
                let classes = (0..oh * ow)
                    .map(|k| {
                        let (y, x) = (k / ow * fh / oh, k % ow * fw / ow);
                        m[i * ch * cw + y * cw + x] as u32
                    })
                    .collect();
                out.push(Mask { width: ow, height: oh, classes });
            }
        }
        Ok(out)
    }

    pub fn segment_files(&mut self, paths: &[&Path]) -> Vec<Result<Mask, ZooError>> {
        crate::per_item(paths, self.pipeline.config.max_decoded_pixels, |p| self.segment(p))
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }
}
