//! The DataLoader: batch counts, drop_last, seeded order independent of the worker count, and
//! failing or panicking datasets surfacing as errors instead of hanging the loop.
use xtorch::data::{DataError, Dataset, Example};
use xtorch::loader::{DataLoader, LoaderConfig, LoaderError};

/// Example i is [i] with target i; `fail_at` fails (or panics) there.
struct Numbers {
    n: usize,
    fail_at: Option<usize>,
    panic: bool,
}

impl Dataset for Numbers {
    fn len(&self) -> usize {
        self.n
    }
    fn get(&self, i: usize) -> Result<Example, DataError> {
        if Some(i) == self.fail_at {
            if self.panic {
                panic!("example {i} is cursed");
            }
            return Err(DataError::Other(format!("example {i} is unreadable")));
        }
        Ok(Example { input: vec![i as f32], shape: vec![1], target: i as i64 })
    }
}

fn numbers(n: usize) -> Numbers {
    Numbers { n, fail_at: None, panic: false }
}

fn targets(l: &DataLoader, epoch: usize) -> Vec<Vec<i64>> {
    l.epoch(epoch).map(|b| Vec::<i64>::try_from(b.unwrap().targets).unwrap()).collect()
}

#[test]
fn batches_cover_the_data_once_with_and_without_the_last_short_batch() {
    let cfg = LoaderConfig { batch_size: 4, ..Default::default() };
    let l = DataLoader::new(numbers(10), cfg.clone());
    assert_eq!(l.len(), 3);
    assert_eq!(targets(&l, 0), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    let b = l.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.inputs.size(), vec![4, 1]);
    let l = DataLoader::new(numbers(10), LoaderConfig { drop_last: true, ..cfg });
    assert_eq!(l.len(), 2);
    assert_eq!(targets(&l, 0), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
}

#[test]
fn shuffles_depend_on_seed_and_epoch_not_on_workers() {
    let l = |workers, seed| {
        DataLoader::new(
            numbers(103),
            LoaderConfig {
                batch_size: 8,
                shuffle: true,
                seed,
                workers,
                prefetch: 1,
                drop_last: false,
                pin_memory: false,
            },
        )
    };
    let e0 = targets(&l(0, 7), 0);
    let mut all: Vec<i64> = e0.concat();
    all.sort();
    assert_eq!(all, (0..103).collect::<Vec<_>>());
    assert_ne!(e0.concat(), (0..103).collect::<Vec<_>>());
    for w in [1, 2, 5] {
        assert_eq!(targets(&l(w, 7), 0), e0, "{w} workers");
    }
    assert_ne!(targets(&l(2, 7), 1), e0, "each epoch its own order");
    assert_ne!(targets(&l(2, 8), 0), e0, "each seed its own order");
}

#[test]
fn a_dataset_error_reaches_the_loop_and_ends_the_epoch() {
    for workers in [0, 1, 3] {
        let l = DataLoader::new(
            Numbers { n: 40, fail_at: Some(21), panic: false },
            LoaderConfig { batch_size: 4, workers, ..Default::default() },
        );
        let got: Vec<_> = l.epoch(0).collect();
        assert_eq!(got.len(), 6, "5 good batches, then the error, then nothing ({workers} workers)");
        assert!(got[..5].iter().all(|b| b.is_ok()));
        let e = got[5].as_ref().err().unwrap().to_string();
        assert!(e.contains("batch 5") && e.contains("example 21 is unreadable"), "{e}");
    }
}

#[test]
fn a_panicking_worker_is_an_error_not_a_hang() {
    for workers in [1, 4] {
        let l = DataLoader::new(
            Numbers { n: 40, fail_at: Some(9), panic: true },
            LoaderConfig { batch_size: 4, workers, ..Default::default() },
        );
        let got: Vec<_> = l.epoch(0).collect();
        assert_eq!(got.len(), 3);
        match &got[2] {
            Err(LoaderError::WorkerPanic { batch: 2, msg, .. }) => {
                assert!(msg.contains("example 9 is cursed"), "{msg}")
            }
            other => panic!("{:?}", other.as_ref().err()),
        }
    }
}

#[test]
fn dropping_an_epoch_early_stops_its_workers() {
    let l =
        DataLoader::new(numbers(10_000), LoaderConfig { batch_size: 2, workers: 4, prefetch: 1, ..Default::default() });
    for _ in 0..3 {
        let mut e = l.epoch(0);
        e.next().unwrap().unwrap();
        drop(e); // joins the workers: this returns only if they stopped
    }
}

#[test]
fn mixed_example_shapes_are_refused() {
    struct Ragged;
    impl Dataset for Ragged {
        fn len(&self) -> usize {
            4
        }
        fn get(&self, i: usize) -> Result<Example, DataError> {
            Ok(Example { input: vec![0.0; i + 1], shape: vec![i + 1], target: 0 })
        }
    }
    let l = DataLoader::new(Ragged, LoaderConfig { batch_size: 4, workers: 0, ..Default::default() });
    let e = l.epoch(0).next().unwrap().err().unwrap().to_string();
    assert!(e.contains("example 1") && e.contains("[2]") && e.contains("[1]"), "{e}");
}
