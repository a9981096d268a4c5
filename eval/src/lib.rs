//! Metrics and reports, independent of any framework: plain slices in, numbers out.
//!
//! - [`TopK`]: top-1/top-5 accuracy of a classifier (the paper's Tables 1–6).
//! - [`voc`]: Pascal VOC detection AP and mAP, 11-point and area (Table 8).
//! - [`segmentation`]: pixel accuracy and mean IoU from a confusion matrix (Table 9).

#![warn(missing_docs)]

pub mod segmentation;
mod topk;
pub mod voc;

pub use topk::{rank_of_label, TopK};

/// Errors of malformed metric inputs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[allow(missing_docs)] // The fields are named by the messages.
pub enum EvalError {
    /// The flat scores are not a whole number of rows.
    #[error("{scores} scores do not divide into rows of {classes} classes")]
    Shape { scores: usize, classes: usize },
    /// Scores and labels disagree on the number of samples.
    #[error("{rows} rows of scores but {labels} labels")]
    LabelCount { rows: usize, labels: usize },
    /// A label names no class.
    #[error("label {label} is outside 0..{classes}")]
    LabelRange { label: usize, classes: usize },
    /// A class index names no class.
    #[error("{what} has class {class}, outside 0..{classes}")]
    ClassRange {
        what: String,
        class: usize,
        classes: usize,
    },
    /// A detection that cannot be scored.
    #[error("bad detection {0}")]
    BadDetection(String),
}
