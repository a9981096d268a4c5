//! Faster R-CNN (C4) on any zoo ResNet, Section 6.1 of the paper: [`model::FasterRcnn`],
//! its anchors and box coder ([`coder`]), training targets ([`targets`]), data
//! ([`data`]), the training task ([`task::Detection`]), the files of a trained detector
//! ([`saved`]) and its ONNX graph ([`onnx`]).
//!
//! Departures from GluonCV, by design: continuous box coordinates (torchvision's; no +1 on
//! widths except in the VOC metric, which follows the devkit), anchors centred on the
//! cell centre, and the box deltas clamped at log(1000/16) as torchvision does.

pub mod coder;
pub mod data;
pub mod model;
pub mod onnx;
pub mod saved;
pub mod targets;
pub mod task;

pub use model::{Detections, FasterRcnn};
pub use saved::{DetectorConfig, SavedDetector};
pub use task::{Detection, DetectionSpec};
