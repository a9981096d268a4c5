//! A parallel, deterministic data loader, generic over what a sample is ([`Source`]: an
//! image and its label here, an image and its boxes in detection, …).
//!
//! Each batch is decoded and augmented on a pool of worker threads while the trainer works
//! on earlier ones; at most `prefetch` finished batches wait in a bounded channel. Every
//! sample draws its augmentation from its own generator seeded by (seed, epoch, position),
//! and the epoch's order from one seeded by (seed, epoch), so the batches are the same
//! whatever the number of threads. A file that cannot be decoded is skipped and reported,
//! or, when strict, ends the epoch with an error naming it.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::augment::{train_transform, val_transform, AugmentConfig};
use super::folder::Sample;
use super::image::Image;
use crate::TrainingError;

/// What a loader reads: a list of samples, each decoded (and, in training, augmented with
/// its own generator) on a worker thread, then collated into a batch.
pub trait Source: Send + Sync + 'static {
    /// One decoded, transformed sample.
    type Item: Send + 'static;
    /// What a batch of them becomes.
    type Batch: Send + 'static;

    /// Samples in the source.
    fn len(&self) -> usize;

    /// Whether the source is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `index`, augmented with `rng` in training (`None`: the validation transform).
    /// The error names the file.
    fn load(&self, index: usize, rng: Option<&mut ChaCha8Rng>) -> Result<Self::Item, String>;

    /// A batch of loaded samples (at least one), in order.
    fn collate(&self, items: Vec<Self::Item>) -> Result<Self::Batch, TrainingError>;
}

/// How a loader batches, whatever its source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batching {
    /// Samples per batch (the last batch of an epoch may be smaller; in training it is
    /// dropped so that every step sees a full batch).
    pub batch_size: usize,
    /// Training (shuffled, augmented) or validation (in order, not augmented).
    pub train: bool,
    /// Base seed of the order and of the augmentation.
    pub seed: u64,
    /// Decoding threads.
    pub workers: usize,
    /// Finished batches that may wait for the trainer.
    pub prefetch: usize,
    /// Stop at the first unreadable sample instead of skipping it.
    pub strict: bool,
}

/// How a classification loader batches and augments.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Images per batch (the last batch of an epoch may be smaller; in training it is
    /// dropped so that every step sees a full batch).
    pub batch_size: usize,
    /// Training (shuffled, augmented) or validation (in order, resized and centre-cropped).
    pub train: bool,
    /// The augmentation.
    pub augment: AugmentConfig,
    /// Base seed of the order and of the augmentation.
    pub seed: u64,
    /// Decoding threads.
    pub workers: usize,
    /// Finished batches that may wait for the trainer.
    pub prefetch: usize,
    /// Stop at the first unreadable image instead of skipping it.
    pub strict: bool,
}

/// A batch of images `(N, 3, H, W)` with their labels.
#[derive(Debug)]
pub struct Batch {
    /// Normalised images.
    pub images: Tensor,
    /// Class indices.
    pub labels: Vec<u32>,
}

/// Labelled images in the ImageNet layout, with the Section 2.1 transforms.
pub struct Images {
    samples: Vec<Sample>,
    augment: AugmentConfig,
}

impl Source for Images {
    type Item = (Vec<f32>, u32);
    type Batch = Batch;

    fn len(&self) -> usize {
        self.samples.len()
    }

    fn load(&self, index: usize, rng: Option<&mut ChaCha8Rng>) -> Result<Self::Item, String> {
        let sample = &self.samples[index];
        let img = Image::open(&sample.path)?;
        let pixels = match rng {
            Some(rng) => train_transform(rng, &img, &self.augment),
            None => val_transform(&img, &self.augment),
        };
        Ok((pixels, sample.label))
    }

    fn collate(&self, items: Vec<Self::Item>) -> Result<Batch, TrainingError> {
        let s = self.augment.size;
        let n = items.len();
        let mut data = Vec::with_capacity(n * 3 * s * s);
        let mut labels = Vec::with_capacity(n);
        for (pixels, label) in items {
            data.extend_from_slice(&pixels);
            labels.push(label);
        }
        let images = Tensor::from_vec(data, (n, 3, s, s), &Device::Cpu)?;
        Ok(Batch { images, labels })
    }
}

/// The files skipped so far because they could not be decoded.
#[derive(Debug, Default, Clone)]
pub struct SkipReport {
    /// One message per skipped file, naming it.
    pub skipped: Vec<String>,
}

/// A loader over a [`Source`].
pub struct Loader<S: Source = Images> {
    source: Arc<S>,
    cfg: Batching,
    pool: Arc<rayon::ThreadPool>,
    skips: Arc<Mutex<SkipReport>>,
}

/// SplitMix64 finaliser: decorrelates seeds built from small integers.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Loader<Images> {
    /// A classification loader over `samples`.
    pub fn new(samples: Vec<Sample>, cfg: LoaderConfig) -> Result<Self, TrainingError> {
        let batching = Batching {
            batch_size: cfg.batch_size,
            train: cfg.train,
            seed: cfg.seed,
            workers: cfg.workers,
            prefetch: cfg.prefetch,
            strict: cfg.strict,
        };
        Self::over(
            Images {
                samples,
                augment: cfg.augment,
            },
            batching,
        )
    }
}

impl<S: Source> Loader<S> {
    /// A loader over `source`.
    pub fn over(source: S, cfg: Batching) -> Result<Self, TrainingError> {
        if cfg.batch_size == 0 {
            return Err(TrainingError::Config(
                "batch size must be at least 1".into(),
            ));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.workers.max(1))
            .thread_name(|i| format!("loader-{i}"))
            .build()
            .map_err(|e| TrainingError::Config(format!("loader threads: {e}")))?;
        Ok(Self {
            source: Arc::new(source),
            cfg,
            pool: Arc::new(pool),
            skips: Arc::default(),
        })
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.source.len();
        if self.cfg.train {
            n / self.cfg.batch_size
        } else {
            n.div_ceil(self.cfg.batch_size)
        }
    }

    /// The order of samples in `epoch`: a seeded shuffle in training, the file order
    /// otherwise.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.source.len()).collect();
        if self.cfg.train {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.cfg.seed ^ mix(epoch as u64 + 1)));
            order.shuffle(&mut rng);
        }
        order
    }

    /// Files skipped so far.
    pub fn skips(&self) -> SkipReport {
        self.skips.lock().expect("skip report lock").clone()
    }

    /// The batches of `epoch`, produced ahead on the workers, starting at batch `first`
    /// (to resume inside an epoch). A worker that fails (an error, or a panic) ends the
    /// epoch with that error; an epoch never ends early without one.
    pub fn epoch(&self, epoch: usize, first: usize) -> EpochBatches<S::Batch> {
        let (tx, rx) = sync_channel(self.cfg.prefetch.max(1));
        let order = self.order(epoch);
        let (source, cfg, pool, skips) = (
            self.source.clone(),
            self.cfg,
            self.pool.clone(),
            self.skips.clone(),
        );
        let batches = self.batches_per_epoch();
        std::thread::spawn(move || {
            for b in first..batches {
                let positions: Vec<usize> =
                    (b * cfg.batch_size..((b + 1) * cfg.batch_size).min(order.len())).collect();
                let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    pool.install(|| make_batch(&*source, &order, &positions, &cfg, epoch, &skips))
                }));
                let batch = made.unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("no message");
                    Err(TrainingError::Config(format!(
                        "a loader worker failed on batch {b} of epoch {}: {what}",
                        epoch + 1
                    )))
                });
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return; // The trainer stopped listening, or the epoch ended in an error.
                }
            }
        });
        EpochBatches {
            rx,
            expected: batches.saturating_sub(first),
            received: 0,
            done: false,
        }
    }
}

/// The batches of one epoch ([`Loader::epoch`]): exactly as many as the epoch has, or an
/// error where the loader failed.
pub struct EpochBatches<B> {
    rx: Receiver<Result<B, TrainingError>>,
    expected: usize,
    received: usize,
    done: bool,
}

impl<B> Iterator for EpochBatches<B> {
    type Item = Result<B, TrainingError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.received == self.expected {
            return None;
        }
        match self.rx.recv() {
            Ok(batch) => {
                self.received += 1;
                self.done = batch.is_err();
                Some(batch)
            }
            Err(_) => {
                self.done = true;
                Some(Err(TrainingError::Config(format!(
                    "the data loader stopped after {} of {} batches",
                    self.received, self.expected
                ))))
            }
        }
    }
}

fn make_batch<S: Source>(
    source: &S,
    order: &[usize],
    positions: &[usize],
    cfg: &Batching,
    epoch: usize,
    skips: &Mutex<SkipReport>,
) -> Result<S::Batch, TrainingError> {
    let loaded: Vec<Result<S::Item, String>> = positions
        .par_iter()
        .map(|&pos| {
            if cfg.train {
                let seed = mix(cfg.seed ^ mix((epoch as u64) << 32 | pos as u64));
                source.load(order[pos], Some(&mut ChaCha8Rng::seed_from_u64(seed)))
            } else {
                source.load(order[pos], None)
            }
        })
        .collect();
    let mut items = Vec::with_capacity(positions.len());
    for item in loaded {
        match item {
            Ok(item) => items.push(item),
            Err(message) if cfg.strict => return Err(TrainingError::Image(message)),
            Err(message) => skips
                .lock()
                .expect("skip report lock")
                .skipped
                .push(message),
        }
    }
    if items.is_empty() {
        return Err(TrainingError::Image(
            "every image of a batch was unreadable".into(),
        ));
    }
    source.collate(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(dir: &std::path::Path, n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                let path = dir.join(format!("{i}.png"));
                let v = (i * 20 % 255) as f32;
                Image::filled(20 + i, 18, [v, 255. - v, 100.])
                    .save_png(&path)
                    .unwrap();
                Sample {
                    path,
                    label: (i % 3) as u32,
                }
            })
            .collect()
    }

    fn cfg(workers: usize) -> LoaderConfig {
        LoaderConfig {
            batch_size: 4,
            train: true,
            augment: AugmentConfig {
                size: 8,
                ..Default::default()
            },
            seed: 7,
            workers,
            prefetch: 2,
            strict: false,
        }
    }

    fn collect(loader: &Loader, epoch: usize) -> Vec<(Vec<f32>, Vec<u32>)> {
        loader
            .epoch(epoch, 0)
            .map(|b| {
                let b = b.unwrap();
                (b.images.flatten_all().unwrap().to_vec1().unwrap(), b.labels)
            })
            .collect()
    }

    #[test]
    fn a_worker_that_panics_ends_the_epoch_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(2);
        // Not a probability: the flip's coin panics inside a worker (validation refuses
        // it before a run; the loader must not hide it either way).
        c.augment.flip_prob = 2.0;
        let loader = Loader::new(dataset(dir.path(), 8), c).unwrap();
        let results: Vec<_> = loader.epoch(0, 0).collect();
        assert_eq!(results.len(), 1, "the epoch stops at the failure");
        let err = results[0].as_ref().unwrap_err().to_string();
        assert!(err.contains("loader worker failed on batch 0"), "{err}");
    }

    #[test]
    fn batches_do_not_depend_on_the_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        let samples = dataset(dir.path(), 10);
        let one = Loader::new(samples.clone(), cfg(1)).unwrap();
        let three = Loader::new(samples, cfg(3)).unwrap();
        assert_eq!(one.batches_per_epoch(), 2); // 10 / 4, last partial batch dropped
        let a = collect(&one, 0);
        assert_eq!(a, collect(&three, 0));
        assert_ne!(
            a,
            collect(&one, 1),
            "a new epoch reshuffles and re-augments"
        );
        // Resuming at batch 1 gives the same batch 1.
        let resumed: Vec<_> = three.epoch(0, 1).map(|b| b.unwrap().labels).collect();
        assert_eq!(resumed, [a[1].1.clone()]);
    }

    #[test]
    fn corrupt_images_are_skipped_or_stop_a_strict_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut samples = dataset(dir.path(), 4);
        std::fs::write(&samples[2].path, b"\x89PNG truncated").unwrap();
        let val = LoaderConfig {
            train: false,
            ..cfg(2)
        };
        let loader = Loader::new(samples.clone(), val.clone()).unwrap();
        let batches = collect(&loader, 0);
        assert_eq!(batches[0].1.len(), 3);
        let skips = loader.skips().skipped;
        assert_eq!(skips.len(), 1);
        assert!(skips[0].contains("2.png"), "{skips:?}");

        let strict = Loader::new(
            samples.clone(),
            LoaderConfig {
                strict: true,
                ..val
            },
        )
        .unwrap();
        let err = strict.epoch(0, 0).next().unwrap().unwrap_err().to_string();
        assert!(err.contains("2.png"), "{err}");

        samples[0].path = dir.path().join("gone.png");
        let loader = Loader::new(
            samples,
            LoaderConfig {
                train: false,
                ..cfg(1)
            },
        )
        .unwrap();
        collect(&loader, 0);
        assert!(loader
            .skips()
            .skipped
            .iter()
            .any(|s| s.contains("gone.png")));
    }
}
