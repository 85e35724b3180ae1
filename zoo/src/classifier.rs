//! Image classification: softmax (unless the model ends in one) and top-k in the graph.
use crate::append::Appender;
use crate::config::TaskConfig;
use crate::picture::Picture;
use crate::pipeline::{assemble, prepend, Device, Pipeline};
use crate::ZooError;
use std::path::Path;
use xforge_ir::{Attr, Dim, Graph, Op, Tensor};

/// One of an image's best classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Class {
    pub index: usize,
    pub label: Option<String>,
    pub score: f32,
}

pub struct Classifier {
    pipeline: Pipeline,
    labels: Option<Vec<String>>,
}

impl Classifier {
    pub fn new(model: &Path, config: TaskConfig, device: Device) -> Result<Classifier, ZooError> {
        Classifier::from_graph(crate::import(model)?, config, device)
    }

    /// A classifier around an imported model whose first output is [N, classes].
    pub fn from_graph(mut g: Graph, config: TaskConfig, device: Device) -> Result<Classifier, ZooError> {
        config.check()?;
        let (pre, _) = prepend(&mut g, &config)?;
        let &logits = g.outputs.first().ok_or_else(|| ZooError::Config("the model has no outputs".into()))?;
        let classes = match g.ty(logits).shape.as_deref() {
            Some([_, Dim::Known(c)]) => *c,
            _ => {
                return Err(ZooError::Config(format!(
                    "the model's output '{}' is {}, a classifier's is [N, classes]",
                    g.name_of(logits),
                    g.ty(logits)
                )))
            }
        };
        let labels = config.labels_for(classes)?;
        let mut a = Appender::new(&mut g, "zoo_post");
        let mut p = a.cast(logits, xforge_ir::DType::F32);
        if config.softmax {
            p = a.op(Op::Softmax, &[p], vec![("axis", Attr::Int(-1))]);
        }
        let k = a.constant(Tensor::from_i64(vec![1], vec![config.top_k.min(classes) as i64]));
        let top = a.multi(Op::TopK, &[Some(p), Some(k)], vec![("axis", Attr::Int(-1))], 2);
        let post = a.nodes;
        assemble(&mut g, pre, post, top)?;
        Ok(Classifier { pipeline: Pipeline::new(g, config, device), labels })
    }

    /// The best `top_k` classes of each picture, best first.
    pub fn classify(&mut self, pictures: &[Picture]) -> Result<Vec<Vec<Class>>, ZooError> {
        let mut out = vec![];
        for chunk in self.pipeline.run(pictures)? {
            let (scores, indices) = (chunk.outputs[0].to_f64(), chunk.outputs[1].to_i64());
            let k = chunk.outputs[0].shape()[1];
            let n = (pictures.len() - chunk.first).min(chunk.outputs[0].shape()[0]);
            for i in 0..n {
                out.push(
                    (0..k)
                        .map(|j| {
                            let index = indices[i * k + j] as usize;
                            let label = self.labels.as_ref().map(|l| l[index].clone());
                            Class { index, label, score: scores[i * k + j] as f32 }
                        })
                        .collect(),
                );
            }
        }
        Ok(out)
    }

    /// Decodes and classifies image files: an image that cannot be read fails on its own.
    pub fn classify_files(&mut self, paths: &[&Path]) -> Vec<Result<Vec<Class>, ZooError>> {
        crate::per_item(paths, self.pipeline.config.max_decoded_pixels, |p| self.classify(p))
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }
}
