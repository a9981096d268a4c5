//! Errors of the zoo crate: what went wrong and with which model or file.

use std::path::PathBuf;

/// Everything that can go wrong building a model or reading and writing its weights.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // Each variant's message documents it and names its fields.
pub enum ZooError {
    #[error("unknown model `{name}`; known models: {known}")]
    UnknownModel { name: String, known: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{path}: not a readable safetensors file: {reason}")]
    BadWeightsFile { path: PathBuf, reason: String },
    #[error("{path}: tensor `{name}` that {model} needs is missing")]
    MissingTensor {
        path: PathBuf,
        name: String,
        model: String,
    },
    #[error("{path}: tensor `{name}` has shape {found:?}, {model} needs {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        model: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: {count} tensor(s) that {model} does not have, e.g. `{example}` (is this the right --model?)")]
    UnexpectedTensors {
        path: PathBuf,
        model: String,
        count: usize,
        example: String,
    },
    #[error("{path}: none of its tensors (e.g. `{example}`) belongs to {model}: not weights of this model")]
    NoMatchingTensors {
        path: PathBuf,
        model: String,
        example: String,
    },
    #[error("{path}: tensor `{name}` {reason}")]
    BadTensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("Hugging Face Hub: {0}")]
    Hub(String),
    #[error("{path}: {reason}")]
    Registry { path: String, reason: String },
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`ZooError`].
pub type Result<T> = std::result::Result<T, ZooError>;
