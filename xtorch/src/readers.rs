//! Readers for the usual image-classification files: MNIST's IDX format (optionally gzipped)
//! and CIFAR-10's binary batches. Pixels come out scaled to [0, 1].
use crate::data::{DataError, Dataset, Example};
use std::io::Read;
use std::path::Path;

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let err = |msg: String| DataError::Parse { what: path.display().to_string(), msg };
    let raw = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = vec![];
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| err(format!("gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// An IDX file of unsigned bytes: its dims and data (magic 0x0000_08_NN, NN = the rank).
fn idx_u8(path: &Path, rank: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let b = read_maybe_gz(path)?;
    let err = |msg: String| DataError::Parse { what: path.display().to_string(), msg };
    if b.len() < 4 + 4 * rank || b[0] != 0 || b[1] != 0 || b[2] != 0x08 || b[3] as usize != rank {
        return Err(err(format!(
            "not an IDX file of unsigned bytes and rank {rank} (magic {:02x?})",
            &b[..b.len().min(4)]
        )));
    }
    let dims: Vec<usize> =
        (0..rank).map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize).collect();
    let n: usize = dims.iter().product();
    let data = &b[4 + 4 * rank..];
    if data.len() != n {
        return Err(err(format!("dims {dims:?} need {n} bytes, the file has {}", data.len())));
    }
    Ok((dims, data.to_vec()))
}

/// MNIST-style data: an IDX image file [n, rows, cols] and an IDX label file [n].
pub struct Mnist {
    rows: usize,
    cols: usize,
    images: Vec<u8>,
    labels: Vec<u8>,
}

impl Mnist {
    pub fn from_files(images: &Path, labels: &Path) -> Result<Mnist, DataError> {
        let (d, images) = idx_u8(images, 3)?;
        let (l, labels) = idx_u8(labels, 1)?;
        if d[0] != l[0] {
            return Err(DataError::Parse { what: "MNIST".into(), msg: format!("{} images but {} labels", d[0], l[0]) });
        }
        Ok(Mnist { rows: d[1], cols: d[2], images, labels })
    }
}

impl Dataset for Mnist {
    fn len(&self) -> usize {
        self.labels.len()
    }
    /// [1, rows, cols], pixels / 255.
    fn get(&self, index: usize) -> Result<Example, DataError> {
        let n = self.rows * self.cols;
        let img =
            self.images.get(index * n..(index + 1) * n).ok_or(DataError::OutOfRange { index, len: self.len() })?;
        Ok(Example {
            input: img.iter().map(|&p| p as f32 / 255.0).collect(),
            shape: vec![1, self.rows, self.cols],
            target: self.labels[index] as i64,
        })
    }
}

/// CIFAR-10's binary format: records of a label byte and 3,072 pixel bytes (red, green, blue
/// planes of 32×32), from one or more batch files.
pub struct Cifar10 {
    records: Vec<u8>,
}

pub const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

impl Cifar10 {
    pub fn from_files(paths: &[&Path]) -> Result<Cifar10, DataError> {
        let mut records = vec![];
        for p in paths {
            let b = read_maybe_gz(p)?;
            if b.len() % CIFAR_RECORD != 0 {
                return Err(DataError::Parse {
                    what: p.display().to_string(),
                    msg: format!("{} bytes is not a whole number of {CIFAR_RECORD}-byte records", b.len()),
                });
            }
            if let Some(bad) = b.chunks(CIFAR_RECORD).position(|r| r[0] > 9) {
                return Err(DataError::Parse {
                    what: p.display().to_string(),
                    msg: format!("record {bad} has label {}", b[bad * CIFAR_RECORD]),
                });
            }
            records.extend_from_slice(&b);
        }
        Ok(Cifar10 { records })
    }
}

impl Dataset for Cifar10 {
    fn len(&self) -> usize {
        self.records.len() / CIFAR_RECORD
    }
    /// [3, 32, 32], pixels / 255.
    fn get(&self, index: usize) -> Result<Example, DataError> {
        let r = self
            .records
            .get(index * CIFAR_RECORD..(index + 1) * CIFAR_RECORD)
            .ok_or(DataError::OutOfRange { index, len: self.len() })?;
        Ok(Example {
            input: r[1..].iter().map(|&p| p as f32 / 255.0).collect(),
            shape: vec![3, 32, 32],
            target: r[0] as i64,
        })
    }
}
