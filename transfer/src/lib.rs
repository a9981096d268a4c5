//! Transfer learning on zoo backbones (Section 6 of the paper).
//!
//! - [`voc`]: Pascal VOC on disk (the devkit layout, its classes, the results format);
//!   [`synth_voc`]: a generated dataset in that layout.
//! - [`detection`]: Faster R-CNN in the C4 layout (GluonCV's `faster_rcnn_resnet50_v1b_voc`,
//!   the model of the paper's Table 8) on any zoo ResNet, trained by the shared loop of
//!   [`training::trainer`] as a [`training::trainer::Task`].
//!
//! - [`ade20k`]: ADE20K on disk (the `ADEChallengeData2016` layout, its 150 classes, the
//!   mask encoding); [`synth_ade`]: a generated dataset in that layout.
//!
//! - [`segmentation`]: the ADE20K metric over predicted label files; the FCN segmenter on
//!   ADE20K (Table 9) is not built yet.

#![warn(missing_docs)]

pub mod ade20k;
pub mod backbone;
pub mod detection;
pub mod saved;
pub mod segmentation;
pub mod synth_ade;
pub mod synth_voc;
pub mod voc;

use std::path::Path;

/// What can go wrong in transfer learning.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A bad setting.
    #[error("{0}")]
    Config(String),
    /// A bad or missing file; the message names it.
    #[error("{0}")]
    Data(String),
    /// From the training crate.
    #[error(transparent)]
    Training(#[from] training::TrainingError),
    /// From the zoo.
    #[error(transparent)]
    Zoo(Box<zoo::ZooError>),
    /// From Candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<zoo::ZooError> for TransferError {
    fn from(e: zoo::ZooError) -> Self {
        Self::Zoo(Box::new(e))
    }
}

impl TransferError {
    /// An error about `path`.
    pub fn data(path: &Path, what: impl std::fmt::Display) -> Self {
        Self::Data(format!("{}: {what}", path.display()))
    }
}

/// Opens the run in `dir` to resume it and reads its `run.json`, refusing a run of another
/// task than `task` by name.
pub(crate) fn resume_spec<S: serde::de::DeserializeOwned>(
    dir: &Path,
    task: &str,
) -> Result<(training::run_dir::RunDir, S), TransferError> {
    let run = training::run_dir::RunDir::resume(dir)?;
    let found = run.task()?;
    if found != task {
        return Err(TransferError::data(
            dir,
            format!("is a {found} run, not a {task} run"),
        ));
    }
    let spec = run.spec()?;
    Ok((run, spec))
}

impl From<TransferError> for training::TrainingError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Training(t) => t,
            other => training::TrainingError::Config(other.to_string()),
        }
    }
}
