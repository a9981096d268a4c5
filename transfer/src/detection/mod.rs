//! Faster R-CNN (C4) on any zoo ResNet, Section 6.1 of the paper: [`model::FasterRcnn`],
//! its anchors and box coder ([`coder`]), training targets ([`targets`]), data
//! ([`data`]) and the training task ([`task::Detection`]).
//!
//! Departures from GluonCV, by design: continuous box coordinates (torchvision's; no +1 on
//! widths except in the VOC metric, which follows the devkit), anchors centred on the
//! cell centre, and the box deltas clamped at log(1000/16) as torchvision does.

pub mod coder;
pub mod data;
pub mod model;
pub mod targets;
pub mod task;

pub use model::{Detections, FasterRcnn};
pub use task::{Detection, DetectionSpec};
