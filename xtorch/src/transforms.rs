//! Per-example transforms on [C, H, W] inputs: normalization, random horizontal flips and
//! random crops with zero padding. Random choices come from (seed, epoch, example index), so an
//! epoch's augmentations are the same for any number of loader workers and differ between epochs.
use crate::data::{DataError, Dataset, Example};
use crate::rng::Rng;
use std::sync::atomic::{AtomicUsize, Ordering};

pub trait Transform: Send + Sync {
    fn apply(&self, ex: Example, rng: &mut Rng) -> Result<Example, DataError>;
}

fn chw(ex: &Example) -> Result<(usize, usize, usize), DataError> {
    match ex.shape[..] {
        [c, h, w] => Ok((c, h, w)),
        _ => Err(DataError::Other(format!("image transforms take [C, H, W], got {:?}", ex.shape))),
    }
}

/// (x − mean[c]) / std[c] per channel.
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Transform for Normalize {
    fn apply(&self, mut ex: Example, _rng: &mut Rng) -> Result<Example, DataError> {
        let (c, h, w) = chw(&ex)?;
        if self.mean.len() != c || self.std.len() != c {
            return Err(DataError::Other(format!("Normalize has {} means for {c} channels", self.mean.len())));
        }
        for (i, v) in ex.input.iter_mut().enumerate() {
            let ch = i / (h * w);
            *v = (*v - self.mean[ch]) / self.std[ch];
        }
        Ok(ex)
    }
}

/// Mirrors the image left to right with probability `p`.
pub struct RandomHorizontalFlip {
    pub p: f64,
}

impl Transform for RandomHorizontalFlip {
    fn apply(&self, mut ex: Example, rng: &mut Rng) -> Result<Example, DataError> {
        let (_, _, w) = chw(&ex)?;
        if rng.uniform() < self.p {
            for row in ex.input.chunks_mut(w) {
                row.reverse();
            }
        }
        Ok(ex)
    }
}

/// Pads `padding` zeros on every side, then takes a `size`×`size` window at a random place.
pub struct RandomCrop {
    pub size: usize,
    pub padding: usize,
}

impl Transform for RandomCrop {
    fn apply(&self, ex: Example, rng: &mut Rng) -> Result<Example, DataError> {
        let (c, h, w) = chw(&ex)?;
        let (ph, pw) = (h + 2 * self.padding, w + 2 * self.padding);
        if self.size > ph || self.size > pw {
            return Err(DataError::Other(format!("crop {} larger than the padded {ph}×{pw}", self.size)));
        }
        let top = rng.below((ph - self.size + 1) as u64) as usize;
        let left = rng.below((pw - self.size + 1) as u64) as usize;
        let s = self.size;
        let mut out = vec![0.0f32; c * s * s];
        for ch in 0..c {
            for y in 0..s {
                for x in 0..s {
                    // position in the unpadded image
                    let (iy, ix) =
                        ((top + y) as isize - self.padding as isize, (left + x) as isize - self.padding as isize);
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                        out[(ch * s + y) * s + x] = ex.input[(ch * h + iy as usize) * w + ix as usize];
                    }
                }
            }
        }
        Ok(Example { input: out, shape: vec![c, s, s], target: ex.target })
    }
}

/// A data set whose examples pass through `transforms` in order.
pub struct Transformed<D> {
    base: D,
    transforms: Vec<Box<dyn Transform>>,
    seed: u64,
    epoch: AtomicUsize,
}

impl<D: Dataset> Transformed<D> {
    pub fn new(base: D, transforms: Vec<Box<dyn Transform>>, seed: u64) -> Transformed<D> {
        Transformed { base, transforms, seed, epoch: AtomicUsize::new(0) }
    }
}

impl<D: Dataset> Dataset for Transformed<D> {
    fn len(&self) -> usize {
        self.base.len()
    }
    fn get(&self, index: usize) -> Result<Example, DataError> {
        let e = self.epoch.load(Ordering::Relaxed) as u64;
        let mut rng = Rng::new(
            self.seed ^ e.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (index as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f),
        );
        let mut ex = self.base.get(index)?;
        for t in &self.transforms {
            ex = t.apply(ex, &mut rng)?;
        }
        Ok(ex)
    }
    fn set_epoch(&self, epoch: usize) {
        self.epoch.store(epoch, Ordering::Relaxed);
        self.base.set_epoch(epoch);
    }
}
