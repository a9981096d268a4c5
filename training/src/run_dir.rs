//! A training run's directory: the one place that knows its files, writes them (atomically,
//! through [`zoo::atomic`]) and reads them back, for the trainer, `--resume`, and every
//! command that takes a run as its weights.
//!
//! | file | what | written |
//! |---|---|---|
//! | `run.json` | [`RunSpec`]: what was asked | at the start |
//! | `recipe.toml` | the effective recipe | at the start |
//! | `classes.json` | class names, in label order | at the start |
//! | `metrics.jsonl` | one [`EpochMetrics`] per line | after every epoch |
//! | `checkpoint.safetensors` | everything needed to resume | after every epoch |
//! | `model.safetensors` | the weights alone, in timm's names | after every epoch |
//! | `.lock` | held while a run trains in the directory | |
//!
//! A writer ([`RunDir::create`], [`RunDir::resume`]) holds an exclusive lock on `.lock` for
//! as long as it lives, so a second run into the same directory fails at once with a clear
//! error instead of interleaving its files; under the lock it removes the temporary files
//! a killed run left behind.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::recipe::Recipe;
use crate::TrainingError;

/// What a run was asked to do (saved as `run.json`, read back by `--resume`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Architecture name.
    pub model: String,
    /// Dataset root in the ImageNet layout.
    pub data: PathBuf,
    /// Pretrained weights to start from (the classifier is replaced if its size differs).
    pub init: Option<PathBuf>,
    /// The zoo entry (`name@version`) those weights came from, recorded as the parent of
    /// checkpoints published from this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Stop at the first unreadable image.
    pub strict: bool,
    /// The recipe.
    pub recipe: Recipe,
}

/// One epoch's numbers, as written to `metrics.jsonl`: what every task records, and the
/// task's own validation numbers (`val_loss`, `top1`, `top5` for classification; `map07`,
/// `map` and the loss parts for detection) on the same line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss (with the recipe's smoothing, mixup and distillation).
    pub train_loss: f64,
    /// Learning rate of the epoch's last update.
    pub lr: f64,
    /// Training throughput.
    pub img_per_s: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
    /// Updates skipped for overflow (f16) in the epoch.
    pub skipped_updates: usize,
    /// Unreadable images skipped so far.
    pub skipped_images: usize,
    /// Loss scale at the end of the epoch.
    pub loss_scale: f64,
    /// The task's validation numbers and training-loss parts, by name.
    #[serde(flatten)]
    pub values: BTreeMap<String, f64>,
}

impl EpochMetrics {
    /// The value named `name`, or NaN if the task did not record it.
    pub fn get(&self, name: &str) -> f64 {
        self.values.get(name).copied().unwrap_or(f64::NAN)
    }

    /// Validation top-1 accuracy in [0, 1] (classification).
    pub fn top1(&self) -> f64 {
        self.get("top1")
    }

    /// Validation top-5 accuracy in [0, 1] (classification).
    pub fn top5(&self) -> f64 {
        self.get("top5")
    }

    /// Mean validation cross-entropy against the true labels (classification).
    pub fn val_loss(&self) -> f64 {
        self.get("val_loss")
    }
}

/// A run directory (see the module doc), locked when opened for writing.
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    /// The exclusive lock of a writer; `None` for a reader.
    _lock: Option<File>,
}

impl RunDir {
    /// `run.json`.
    pub const SPEC: &'static str = "run.json";
    /// `recipe.toml`.
    pub const RECIPE: &'static str = "recipe.toml";
    /// `classes.json`.
    pub const CLASSES: &'static str = "classes.json";
    /// `metrics.jsonl`.
    pub const METRICS: &'static str = "metrics.jsonl";
    /// `checkpoint.safetensors`.
    pub const CHECKPOINT: &'static str = "checkpoint.safetensors";
    /// `model.safetensors`.
    pub const MODEL: &'static str = "model.safetensors";
    /// `.lock`.
    pub const LOCK: &'static str = ".lock";

    /// Whether `path` holds a run (has a `run.json`).
    pub fn is_run(path: &Path) -> bool {
        path.join(Self::SPEC).is_file()
    }

    /// Takes `dir` (created if missing) for a new run; it must not hold one already.
    /// Nothing is recorded until [`Self::start`], so a run that fails to set up (a wrong
    /// dataset path, say) leaves no run behind to get in the way of the next attempt.
    pub fn create(dir: &Path) -> Result<Self, TrainingError> {
        std::fs::create_dir_all(dir).map_err(|e| TrainingError::data(dir, e))?;
        let run = Self::lock(dir)?;
        if Self::is_run(dir) {
            return Err(TrainingError::data(
                dir,
                "already holds a run: use --resume to continue it, or choose another --out",
            ));
        }
        Ok(run)
    }

    /// Records the new run: writes `spec` as `run.json`, `recipe` as `recipe.toml`, and
    /// empties `metrics.jsonl`.
    pub fn start<S>(&self, spec: &S, recipe: &str) -> Result<(), TrainingError>
    where
        S: Serialize + DeserializeOwned + PartialEq,
    {
        self.write_spec(spec)?;
        self.write(Self::RECIPE, recipe.as_bytes())?;
        self.write(Self::METRICS, b"")
    }

    /// The run's task as `run.json` names it: `classification` (runs that name none),
    /// `detection`, ….
    pub fn task(&self) -> Result<String, TrainingError> {
        let value: serde_json::Value = serde_json::from_str(&self.read(Self::SPEC)?)
            .map_err(|e| TrainingError::data(&self.path(Self::SPEC), e))?;
        Ok(value
            .get("task")
            .and_then(|t| t.as_str())
            .unwrap_or("classification")
            .to_string())
    }

    /// Opens the run in `dir` to continue it (locked).
    pub fn resume(dir: &Path) -> Result<Self, TrainingError> {
        if !Self::is_run(dir) {
            return Err(TrainingError::data(
                dir,
                "holds no run to resume (no run.json)",
            ));
        }
        Self::lock(dir)
    }

    /// Opens the run in `dir` to read it (no lock: reading a finished run, or one that is
    /// still training, is always safe since every file is replaced whole).
    pub fn open(dir: &Path) -> Result<Self, TrainingError> {
        if !Self::is_run(dir) {
            return Err(TrainingError::data(
                dir,
                "a directory without run.json is not a training run",
            ));
        }
        Ok(Self {
            root: dir.to_path_buf(),
            _lock: None,
        })
    }

    /// Takes the directory's lock, or fails naming the directory if another process holds
    /// it; then removes what killed runs left behind.
    fn lock(dir: &Path) -> Result<Self, TrainingError> {
        let path = dir.join(Self::LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| TrainingError::data(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(TrainingError::data(
                    dir,
                    "another run is using this directory (it holds .lock); wait for it or choose another --out",
                ))
            }
            Err(TryLockError::Error(e)) => return Err(TrainingError::data(&path, e)),
        }
        zoo::atomic::remove_leftovers(dir).map_err(|e| TrainingError::data(dir, e))?;
        Ok(Self {
            root: dir.to_path_buf(),
            _lock: Some(file),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of one of the run's files (`RunDir::MODEL`, …).
    pub fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    /// Replaces `file` with `bytes` atomically.
    pub fn write(&self, file: &str, bytes: &[u8]) -> Result<(), TrainingError> {
        let path = self.path(file);
        zoo::atomic::write(&path, bytes).map_err(|e| TrainingError::data(&path, e))
    }

    fn read(&self, file: &str) -> Result<String, TrainingError> {
        let path = self.path(file);
        std::fs::read_to_string(&path).map_err(|e| TrainingError::data(&path, e))
    }

    /// `run.json`, as the run's spec type (an error naming the file if it is another
    /// task's).
    pub fn spec<S: DeserializeOwned>(&self) -> Result<S, TrainingError> {
        serde_json::from_str(&self.read(Self::SPEC)?)
            .map_err(|e| TrainingError::data(&self.path(Self::SPEC), e))
    }

    /// Writes `run.json`, refusing settings that would not read back as they are (JSON
    /// writes NaN as `null`, which `--resume` could not parse).
    pub fn write_spec<S>(&self, spec: &S) -> Result<(), TrainingError>
    where
        S: Serialize + DeserializeOwned + PartialEq,
    {
        let text = serde_json::to_string_pretty(spec).map_err(|e| {
            TrainingError::Config(format!("the run's settings cannot be written: {e}"))
        })?;
        let back: Result<S, _> = serde_json::from_str(&text);
        if back.as_ref().ok() != Some(spec) {
            return Err(TrainingError::Config(
                "the run's settings would not read back as written (a NaN or infinite value?): nothing was written".into(),
            ));
        }
        self.write(Self::SPEC, text.as_bytes())
    }

    /// `classes.json`.
    pub fn classes(&self) -> Result<Vec<String>, TrainingError> {
        serde_json::from_str(&self.read(Self::CLASSES)?)
            .map_err(|e| TrainingError::data(&self.path(Self::CLASSES), e))
    }

    /// Writes `classes.json`.
    pub fn write_classes(&self, classes: &[String]) -> Result<(), TrainingError> {
        let text = serde_json::to_string(classes).expect("strings serialise");
        self.write(Self::CLASSES, text.as_bytes())
    }

    /// Every epoch's metrics recorded so far (a line a killed run left half-written is
    /// dropped with the epochs after it: those epochs are run again).
    pub fn metrics(&self) -> Result<Vec<EpochMetrics>, TrainingError> {
        let path = self.path(Self::METRICS);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(TrainingError::data(&path, e)),
        };
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map_while(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// The last epoch's metrics, or an error if the run has not finished one.
    pub fn last_metrics(&self) -> Result<EpochMetrics, TrainingError> {
        self.metrics()?
            .pop()
            .ok_or_else(|| TrainingError::data(&self.root, "the run has not finished an epoch yet"))
    }

    /// Keeps the metrics of the first `epochs` epochs only (those that a resumed run does
    /// not run again).
    pub fn truncate_metrics(&self, epochs: usize) -> Result<(), TrainingError> {
        let kept: String = self
            .metrics()?
            .iter()
            .filter(|m| m.epoch <= epochs)
            .map(|m| serde_json::to_string(m).expect("metrics serialise") + "\n")
            .collect();
        self.write(Self::METRICS, kept.as_bytes())
    }

    /// Appends one epoch's metrics, flushed to disk.
    pub fn append_metrics(&self, m: &EpochMetrics) -> Result<(), TrainingError> {
        let path = self.path(Self::METRICS);
        let line = serde_json::to_string(m).map_err(|e| {
            TrainingError::Config(format!("epoch {} metrics cannot be written: {e}", m.epoch))
        })?;
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| TrainingError::data(&path, e))?;
        writeln!(f, "{line}")
            .and_then(|()| f.sync_all())
            .map_err(|e| TrainingError::data(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl RunDir {
        fn started(self, spec: &RunSpec) -> Self {
            self.start(spec, &spec.recipe.to_toml()).unwrap();
            self
        }
    }

    #[test]
    fn a_run_that_never_started_leaves_no_run() {
        let dir = tempfile::tempdir().unwrap();
        drop(RunDir::create(dir.path()).unwrap());
        assert!(!RunDir::is_run(dir.path()));
        drop(RunDir::create(dir.path()).unwrap().started(&spec()));
        assert!(RunDir::is_run(dir.path()));
    }

    fn spec() -> RunSpec {
        RunSpec {
            model: "resnet10d_tiny".into(),
            data: "data".into(),
            init: None,
            parent: None,
            strict: false,
            recipe: Recipe::default(),
        }
    }

    fn metrics(epoch: usize) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: 1.0,
            lr: 0.1,
            img_per_s: 10.0,
            seconds: 1.0,
            skipped_updates: 0,
            skipped_images: 0,
            loss_scale: 1.0,
            values: BTreeMap::from([("top1".into(), 0.5), ("val_loss".into(), 1.0)]),
        }
    }

    #[test]
    fn writes_and_reads_back_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap().started(&spec());
        run.write_classes(&["a".into(), "b".into()]).unwrap();
        for e in 1..=3 {
            run.append_metrics(&metrics(e)).unwrap();
        }
        drop(run);
        let read = RunDir::open(dir.path()).unwrap();
        assert_eq!(read.spec::<RunSpec>().unwrap(), spec());
        assert_eq!(read.task().unwrap(), "classification");
        assert_eq!(read.classes().unwrap(), ["a", "b"]);
        assert_eq!(read.last_metrics().unwrap().epoch, 3);
        let resumed = RunDir::resume(dir.path()).unwrap();
        resumed.truncate_metrics(1).unwrap();
        assert_eq!(resumed.metrics().unwrap(), vec![metrics(1)]);
    }

    #[test]
    fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunDir::create(dir.path()).unwrap().started(&spec());
        let err = RunDir::resume(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another run is using this directory"), "{err}");
        drop(first);
        RunDir::resume(dir.path()).unwrap();
    }

    #[test]
    fn create_refuses_an_existing_run_and_resume_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = RunDir::resume(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no run to resume"), "{err}");
        drop(RunDir::create(dir.path()).unwrap().started(&spec()));
        let err = RunDir::create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("already holds a run"), "{err}");
    }

    #[test]
    fn a_half_written_metrics_line_ends_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap().started(&spec());
        run.append_metrics(&metrics(1)).unwrap();
        let text = std::fs::read_to_string(run.path(RunDir::METRICS)).unwrap();
        std::fs::write(run.path(RunDir::METRICS), text + "{\"epoch\": 2, \"tra").unwrap();
        assert_eq!(run.metrics().unwrap(), vec![metrics(1)]);
    }

    #[test]
    fn leftovers_of_a_killed_run_are_removed_on_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(RunDir::create(dir.path()).unwrap().started(&spec()));
        let leftover = dir.path().join(".model.safetensors.tmp-4294967");
        std::fs::write(&leftover, b"half").unwrap();
        drop(RunDir::resume(dir.path()).unwrap());
        assert!(!leftover.exists());
    }
}
