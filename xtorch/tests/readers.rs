//! Readers (MNIST IDX, CIFAR-10 binary) on files written here, and the transforms.
use std::io::Write;
use xtorch::data::{Dataset, Example};
use xtorch::loader::{DataLoader, LoaderConfig};
use xtorch::readers::{Cifar10, Mnist, CIFAR_RECORD};
use xtorch::rng::Rng;
use xtorch::transforms::{Normalize, RandomCrop, RandomHorizontalFlip, Transform, Transformed};

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

#[test]
fn mnist_idx_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..3 * 2 * 3).map(|i| (i * 10) as u8).collect();
    let images = dir.path().join("images.idx");
    std::fs::write(&images, idx(&[3, 2, 3], &pixels)).unwrap();
    let labels = dir.path().join("labels.idx.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&idx(&[3], &[7, 1, 9])).unwrap();
    std::fs::write(&labels, gz.finish().unwrap()).unwrap();
    let m = Mnist::from_files(&images, &labels).unwrap();
    assert_eq!(m.len(), 3);
    let e = m.get(1).unwrap();
    assert_eq!(e.shape, vec![1, 2, 3]);
    assert_eq!(e.target, 1);
    assert_eq!(e.input[0], 60.0 / 255.0);
    // wrong magic, short data and a count mismatch are refused with the file named
    let bad = dir.path().join("bad.idx");
    std::fs::write(&bad, idx(&[3], &[1, 2, 3])).unwrap();
    let e = Mnist::from_files(&bad, &labels).err().unwrap().to_string();
    assert!(e.contains("bad.idx") && e.contains("rank 3"), "{e}");
    std::fs::write(&bad, idx(&[3, 2, 3], &pixels[..10])).unwrap();
    let e = Mnist::from_files(&bad, &labels).err().unwrap().to_string();
    assert!(e.contains("need 18 bytes") && e.contains("has 10"), "{e}");
    let four = dir.path().join("four.idx");
    std::fs::write(&four, idx(&[4], &[1, 2, 3, 4])).unwrap();
    let e = Mnist::from_files(&images, &four).err().unwrap().to_string();
    assert!(e.contains("3 images but 4 labels"), "{e}");
}

#[test]
fn cifar10_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = vec![];
    for label in [3u8, 8] {
        b.push(label);
        b.extend((0..3 * 32 * 32).map(|i| (i % 256) as u8));
    }
    let p = dir.path().join("data_batch_1.bin");
    std::fs::write(&p, &b).unwrap();
    let c = Cifar10::from_files(&[&p, &p]).unwrap();
    assert_eq!(c.len(), 4);
    let e = c.get(3).unwrap();
    assert_eq!((e.shape.clone(), e.target), (vec![3, 32, 32], 8));
    assert_eq!(e.input[255], 1.0);
    std::fs::write(&p, &b[..CIFAR_RECORD + 5]).unwrap();
    let e = Cifar10::from_files(&[&p]).err().unwrap().to_string();
    assert!(e.contains("data_batch_1.bin") && e.contains("3078 bytes"), "{e}");
}

fn image(c: usize, h: usize, w: usize) -> Example {
    Example { input: (0..c * h * w).map(|i| i as f32).collect(), shape: vec![c, h, w], target: 0 }
}

#[test]
fn normalize_flip_and_crop() {
    let mut rng = Rng::new(0);
    let n = Normalize { mean: vec![1.0, 2.0], std: vec![2.0, 4.0] };
    let e = n.apply(image(2, 1, 2), &mut rng).unwrap();
    assert_eq!(e.input, [-0.5, 0.0, 0.0, 0.25]);
    let e = RandomHorizontalFlip { p: 1.0 }.apply(image(1, 2, 3), &mut rng).unwrap();
    assert_eq!(e.input, [2.0, 1.0, 0.0, 5.0, 4.0, 3.0]);
    let e = RandomHorizontalFlip { p: 0.0 }.apply(image(1, 2, 3), &mut rng).unwrap();
    assert_eq!(e.input, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    // a 4×4 crop of a 4×4 image padded by 1: a shifted copy with a zero border where it left the image
    let mut seen = std::collections::HashSet::new();
    for s in 0..200 {
        let e = RandomCrop { size: 4, padding: 1 }.apply(image(1, 4, 4), &mut Rng::new(s)).unwrap();
        assert_eq!(e.shape, vec![1, 4, 4]);
        let nonzero = e.input.iter().filter(|&&v| v != 0.0).count();
        assert!(nonzero >= 8, "{:?}", e.input);
        seen.insert(e.input.iter().map(|v| *v as i64).collect::<Vec<i64>>());
    }
    assert_eq!(seen.len(), 9, "all 3×3 offsets occur");
    // the unshifted crop is the image itself
    assert!(seen.contains(&(0..16).collect::<Vec<i64>>()));
}

#[test]
fn augmentations_depend_on_seed_epoch_and_index_not_on_workers() {
    struct Images;
    impl Dataset for Images {
        fn len(&self) -> usize {
            64
        }
        fn get(&self, i: usize) -> Result<Example, xtorch::data::DataError> {
            let mut e = image(1, 6, 6);
            e.target = i as i64;
            Ok(e)
        }
    }
    let loader = |workers| {
        let t: Vec<Box<dyn Transform>> =
            vec![Box::new(RandomCrop { size: 6, padding: 2 }), Box::new(RandomHorizontalFlip { p: 0.5 })];
        DataLoader::new(Transformed::new(Images, t, 5), LoaderConfig { batch_size: 8, workers, ..Default::default() })
    };
    let pixels = |l: &DataLoader, epoch| -> Vec<f32> {
        l.epoch(epoch).flat_map(|b| Vec::<f32>::try_from(b.unwrap().inputs.flatten(0, -1)).unwrap()).collect()
    };
    let (a, b) = (loader(0), loader(3));
    let e0 = pixels(&a, 0);
    assert_eq!(e0, pixels(&b, 0));
    assert_eq!(pixels(&a, 1), pixels(&b, 1));
    assert_ne!(e0, pixels(&a, 1), "another epoch, other augmentations");
    assert_eq!(e0, pixels(&b, 0), "epoch 0 again gives epoch 0's");
}
