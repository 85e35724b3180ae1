//! A skip concatenation: `cat([x, body(x)], channels)` on [N, C, H, W] (a U-Net level: the
//! encoder's features beside the upsampled features from below). The body's parameters live
//! under "body"; its output must keep N, H and W.
use crate::modules::{Sequential, ShapeError};
use tch::Tensor;

#[derive(Debug)]
pub struct Concat {
    pub body: Sequential,
}

impl Concat {
    /// [N, C + C', H, W] where the body gives [N, C', H, W]; the first body layer that cannot
    /// take its input is named "block.body.i", a body that changes N, H or W names the block.
    pub fn out_shape(&self, name: &str, shape: &[i64]) -> Result<Vec<i64>, ShapeError> {
        let body = self.body.check(shape).map_err(|mut e| {
            e.layer = format!("{name}.body.{}", e.layer);
            e
        })?;
        match (shape, &body[..]) {
            ([n, c, h, w], [n2, c2, h2, w2]) if n == n2 && h == h2 && w == w2 => Ok(vec![*n, c + c2, *h, *w]),
            _ => Err(ShapeError {
                layer: name.to_string(),
                kind: "Concat",
                got: shape.to_vec(),
                want: format!("an [N, C, H, W] input for which the body ({body:?}) keeps N, H and W"),
            }),
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        Tensor::cat(&[xs.shallow_clone(), self.body.forward_t(xs, train)], 1)
    }
}
