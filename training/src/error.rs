//! Errors of the training crate: bad data, bad settings, and the failures below them.

use std::fmt::Display;
use std::path::{Path, PathBuf};

/// What can stop a training run or a data job.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // Each variant's message documents it and names its fields.
pub enum TrainingError {
    #[error("{path}: {reason}")]
    Data { path: PathBuf, reason: String },
    #[error("unreadable image {0}")]
    Image(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Zoo(Box<zoo::ZooError>),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<zoo::ZooError> for TrainingError {
    fn from(e: zoo::ZooError) -> Self {
        Self::Zoo(Box::new(e))
    }
}

impl TrainingError {
    /// A data error about `path`.
    pub fn data(path: &Path, reason: impl Display) -> Self {
        Self::Data {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}
