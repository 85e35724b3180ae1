//! Data sets: the `Dataset` trait, subsets and a seeded train/test split, and scikit-learn's
//! bundled digits data.
use crate::rng::Rng;
use std::io::Read;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("index {index} out of range for a data set of {len} examples")]
    OutOfRange { index: usize, len: usize },
    #[error("{what}: {msg}")]
    Parse { what: String, msg: String },
    #[error("{0}")]
    Other(String),
}

/// One example: a float input of `shape` (row-major) and a class label.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub input: Vec<f32>,
    pub shape: Vec<usize>,
    pub target: i64,
}

/// Indexed access to examples; `DataLoader` workers call `get` from several threads.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn get(&self, index: usize) -> Result<Example, DataError>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Told by the `DataLoader` before an epoch's batches are built (random transforms use it).
    fn set_epoch(&self, _epoch: usize) {}
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, index: usize) -> Result<Example, DataError> {
        (**self).get(index)
    }
    fn set_epoch(&self, epoch: usize) {
        (**self).set_epoch(epoch)
    }
}

/// The examples of `base` at `indices`, in that order.
pub struct Subset<D> {
    base: D,
    indices: Vec<usize>,
}

impl<D: Dataset> Subset<D> {
    pub fn new(base: D, indices: Vec<usize>) -> Subset<D> {
        Subset { base, indices }
    }
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl<D: Dataset> Dataset for Subset<D> {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, index: usize) -> Result<Example, DataError> {
        let i = *self.indices.get(index).ok_or(DataError::OutOfRange { index, len: self.indices.len() })?;
        self.base.get(i)
    }
    fn set_epoch(&self, epoch: usize) {
        self.base.set_epoch(epoch)
    }
}

/// Indices 0..n shuffled by `seed`, cut into (train, test) with round(n · test_fraction) test examples.
pub fn split_indices(n: usize, test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    assert!((0.0..=1.0).contains(&test_fraction), "test fraction {test_fraction} outside [0, 1]");
    let mut idx: Vec<usize> = (0..n).collect();
    Rng::new(seed).shuffle(&mut idx);
    let n_test = (n as f64 * test_fraction).round() as usize;
    let test = idx[..n_test].to_vec();
    let train = idx[n_test..].to_vec();
    (train, test)
}

/// A seeded split of one data set into a training and a test subset that share it.
pub fn train_test_split<D: Dataset>(data: D, test_fraction: f64, seed: u64) -> (Subset<Arc<D>>, Subset<Arc<D>>) {
    let data = Arc::new(data);
    let (train, test) = split_indices(data.len(), test_fraction, seed);
    (Subset::new(data.clone(), train), Subset::new(data, test))
}

/// scikit-learn's digits data (`sklearn.datasets.load_digits`): 1,797 8×8 images of handwritten
/// digits (UCI "Optical Recognition of Handwritten Digits", test part), pixels 0..=16. The file
/// `data/digits.csv.gz` is a verbatim copy of `sklearn/datasets/data/digits.csv.gz` from the
/// scikit-learn 1.9.1 wheel (BSD-3-Clause); each row is 64 pixels then the label.
pub struct Digits {
    images: Vec<[u8; 64]>,
    labels: Vec<u8>,
}

const DIGITS_CSV_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

impl Digits {
    /// The bundled copy (compiled into the crate).
    pub fn load() -> Result<Digits, DataError> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(DIGITS_CSV_GZ)
            .read_to_string(&mut text)
            .map_err(|e| DataError::Parse { what: "digits.csv.gz".into(), msg: e.to_string() })?;
        Self::parse(&text)
    }

    /// Rows of 64 pixel values in 0..=16 and a label in 0..=9, comma-separated.
    pub fn parse(text: &str) -> Result<Digits, DataError> {
        let mut images = vec![];
        let mut labels = vec![];
        for (line_no, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let err = |msg: String| DataError::Parse { what: format!("digits line {}", line_no + 1), msg };
            let vals: Vec<u8> = line
                .split(',')
                .map(|f| f.trim().parse::<f64>().map_err(|e| err(format!("{f:?}: {e}"))).map(|v| v as u8))
                .collect::<Result<_, _>>()?;
            if vals.len() != 65 {
                return Err(err(format!("{} fields, expected 65", vals.len())));
            }
            if vals[..64].iter().any(|&p| p > 16) || vals[64] > 9 {
                return Err(err("pixel above 16 or label above 9".into()));
            }
            images.push(vals[..64].try_into().unwrap());
            labels.push(vals[64]);
        }
        Ok(Digits { images, labels })
    }

    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
}

impl Dataset for Digits {
    fn len(&self) -> usize {
        self.images.len()
    }
    /// Pixels scaled to [0, 1], shape [1, 8, 8] (one channel).
    fn get(&self, index: usize) -> Result<Example, DataError> {
        let img = self.images.get(index).ok_or(DataError::OutOfRange { index, len: self.images.len() })?;
        Ok(Example {
            input: img.iter().map(|&p| p as f32 / 16.0).collect(),
            shape: vec![1, 8, 8],
            target: self.labels[index] as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_has_1797_images_of_every_class() {
        let d = Digits::load().unwrap();
        assert_eq!(d.len(), 1797);
        for c in 0..10u8 {
            let n = d.labels().iter().filter(|&&l| l == c).count();
            assert!((174..=183).contains(&n), "class {c}: {n}");
        }
        let e = d.get(0).unwrap();
        assert_eq!(e.shape, vec![1, 8, 8]);
        assert_eq!(e.target, 0);
        assert!(matches!(d.get(1797), Err(DataError::OutOfRange { .. })));
    }

    #[test]
    fn a_split_is_disjoint_complete_and_seeded() {
        let (tr, te) = split_indices(1797, 0.2, 3);
        assert_eq!(te.len(), 359);
        assert_eq!(tr.len() + te.len(), 1797);
        let mut all: Vec<usize> = tr.iter().chain(&te).copied().collect();
        all.sort();
        assert_eq!(all, (0..1797).collect::<Vec<_>>());
        assert_eq!(split_indices(1797, 0.2, 3), (tr, te.clone()));
        assert_ne!(split_indices(1797, 0.2, 4).1, te);
    }

    #[test]
    fn a_malformed_row_is_refused_with_its_line() {
        let e = Digits::parse(&format!("{}\n1,2,3\n", ["0"; 65].join(","))).err().unwrap().to_string();
        assert!(e.contains("line 2") && e.contains("3 fields"), "{e}");
    }
}
