//! `DataLoader`: batches of a `Dataset` assembled by worker threads ahead of the training loop
//! (bounded prefetch), shuffled per epoch by seed, with or without the last short batch.
//!
//! Batch `b` of an epoch is built by worker `b % workers` and handed over on that worker's own
//! bounded channel, so batches arrive in order whatever the threads' timing: an epoch is the same
//! sequence of batches for any number of workers. A worker whose dataset returns an error or
//! panics hands the error over in its batch's place, and the loop gets it instead of waiting.
use crate::data::{DataError, Dataset, Example};
use crate::rng::Rng;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use tch::{Device, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("batch {batch}: {source}")]
    Data { batch: usize, source: DataError },
    #[error("batch {batch}: example {index} has shape {got:?}, the batch's first has {want:?}")]
    Shape { batch: usize, index: usize, got: Vec<usize>, want: Vec<usize> },
    #[error("batch {batch}: data loader worker {worker} panicked: {msg}")]
    WorkerPanic { batch: usize, worker: usize, msg: String },
}

/// Inputs stacked along a new first axis (f32) and their targets (i64).
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
}

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    /// Shuffle seed; epoch e uses an order derived from (seed, e).
    pub seed: u64,
    pub drop_last: bool,
    /// Worker threads; 0 builds batches on the calling thread.
    pub workers: usize,
    /// Batches each worker may have ready ahead of the loop.
    pub prefetch: usize,
    /// Batches in page-locked host memory (built so by the workers, when a CUDA device is
    /// present), which the `Trainer` copies to the GPU without waiting for it.
    pub pin_memory: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 32,
            shuffle: false,
            seed: 0,
            drop_last: false,
            workers: 2,
            prefetch: 2,
            pin_memory: false,
        }
    }
}

pub struct DataLoader {
    data: Arc<dyn Dataset>,
    cfg: LoaderConfig,
}

impl DataLoader {
    pub fn new(data: impl Dataset + 'static, cfg: LoaderConfig) -> DataLoader {
        assert!(cfg.batch_size > 0, "batch size 0");
        DataLoader { data: Arc::new(data), cfg }
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.data
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        let n = self.data.len();
        if self.cfg.drop_last {
            n / self.cfg.batch_size
        } else {
            n.div_ceil(self.cfg.batch_size)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The example order of `epoch`.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.data.len()).collect();
        if self.cfg.shuffle {
            let seed = self.cfg.seed ^ (epoch as u64).wrapping_mul(0xd1b5_4a32_d192_ed03);
            Rng::new(seed).shuffle(&mut idx);
        }
        idx
    }

    /// The batches of `epoch`, in order.
    pub fn epoch(&self, epoch: usize) -> Epoch {
        self.data.set_epoch(epoch);
        let order = self.order(epoch);
        let batches: Vec<Vec<usize>> = order
            .chunks(self.cfg.batch_size)
            .filter(|c| !self.cfg.drop_last || c.len() == self.cfg.batch_size)
            .map(|c| c.to_vec())
            .collect();
        let batches = Arc::new(batches);
        let mut workers = vec![];
        for w in 0..self.cfg.workers {
            let (tx, rx) = sync_channel(self.cfg.prefetch.max(1));
            let data = self.data.clone();
            let batches = batches.clone();
            let n = self.cfg.workers;
            let pin = self.cfg.pin_memory;
            let handle = std::thread::Builder::new()
                .name(format!("xtorch-loader-{w}"))
                .spawn(move || {
                    for b in (w..batches.len()).step_by(n) {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            batch(&*data, b, &batches[b], pin)
                        }))
                        .unwrap_or_else(|p| {
                            Err(LoaderError::WorkerPanic { batch: b, worker: w, msg: panic_message(&p) })
                        });
                        let failed = r.is_err();
                        if tx.send(r).is_err() || failed {
                            return; // the epoch was dropped, or this worker's error ends it
                        }
                    }
                })
                .expect("spawning a data loader worker");
            workers.push((rx, Some(handle)));
        }
        Epoch { data: self.data.clone(), batches, next: 0, workers, failed: false, pin: self.cfg.pin_memory }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// `collate`, then the batch moved to page-locked memory when asked and a GPU is there.
fn batch(data: &dyn Dataset, b: usize, indices: &[usize], pin: bool) -> Result<Batch, LoaderError> {
    let batch = collate(data, b, indices)?;
    if !pin || !tch::Cuda::is_available() {
        return Ok(batch);
    }
    let gpu = Device::Cuda(0);
    Ok(Batch { inputs: batch.inputs.pin_memory(gpu), targets: batch.targets.pin_memory(gpu) })
}

/// Stacks the examples at `indices` into one batch.
pub fn collate(data: &dyn Dataset, batch: usize, indices: &[usize]) -> Result<Batch, LoaderError> {
    let mut inputs: Vec<f32> = vec![];
    let mut targets = Vec::with_capacity(indices.len());
    let mut shape: Option<Vec<usize>> = None;
    for &i in indices {
        let Example { input, shape: s, target } = data.get(i).map_err(|source| LoaderError::Data { batch, source })?;
        match &shape {
            None => shape = Some(s),
            Some(want) if *want != s => {
                return Err(LoaderError::Shape { batch, index: i, got: s, want: want.clone() });
            }
            _ => {}
        }
        inputs.extend_from_slice(&input);
        targets.push(target);
    }
    let mut dims = vec![indices.len() as i64];
    dims.extend(shape.unwrap_or_default().iter().map(|&d| d as i64));
    Ok(Batch { inputs: Tensor::from_slice(&inputs).view(dims.as_slice()), targets: Tensor::from_slice(&targets) })
}

/// A worker's channel of collated batches and its thread.
type Worker = (Receiver<Result<Batch, LoaderError>>, Option<JoinHandle<()>>);

/// One epoch's batches; dropping it stops its workers.
pub struct Epoch {
    data: Arc<dyn Dataset>,
    batches: Arc<Vec<Vec<usize>>>,
    next: usize,
    workers: Vec<Worker>,
    failed: bool,
    pin: bool,
}

impl Iterator for Epoch {
    type Item = Result<Batch, LoaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.batches.len() {
            return None;
        }
        let b = self.next;
        self.next += 1;
        let r = if self.workers.is_empty() {
            batch(&*self.data, b, &self.batches[b], self.pin)
        } else {
            let w = b % self.workers.len();
            match self.workers[w].0.recv() {
                Ok(r) => r,
                // the worker is gone without sending: it can only have died outside `collate`
                Err(_) => Err(LoaderError::WorkerPanic { batch: b, worker: w, msg: "worker exited".into() }),
            }
        };
        self.failed = r.is_err();
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.batches.len() - self.next.min(self.batches.len());
        (0, Some(n))
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        // closing the receivers makes blocked workers' sends fail, so they return
        let handles: Vec<_> = self.workers.iter_mut().filter_map(|(_, h)| h.take()).collect();
        self.workers.clear();
        for h in handles {
            let _ = h.join();
        }
    }
}
