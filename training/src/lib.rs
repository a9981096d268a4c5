//! Training zoo models with the paper's recipes (Sections 2, 3 and 5).
//!
//! - [`data`]: the ImageNet folder layout, the Section 2.1 augmentation, a deterministic
//!   parallel loader, and the procedural shapes dataset.
//! - [`optim::Nag`]: Nesterov accelerated gradient with momentum and weight decay
//!   (Section 2.1), with the no-bias-decay split of Section 3.1.
//! - [`schedule`]: warmup, step and cosine decay, linear scaling.
//! - [`loss`]: label smoothing, mixup, knowledge distillation.
//! - [`precision`]: FP16/BF16 with f32 master weights and dynamic loss scaling.
//! - [`recipe`]: a run's settings as TOML with the paper's defaults.
//! - [`trainer`] and [`checkpoint`]: the training loop and resumption; [`run_dir`]: the
//!   run directory's files, written and read in one place, locked while a run uses it.
//! - [`weights`]: weights from any reference, a run directory included.
//! - [`step::TrainStep`]: one bare forward, cross-entropy backward and update (benchmarks).
//!
//! Nothing here knows a particular architecture: it works on any [`zoo::Classifier`] and the
//! [`candle_nn::VarMap`] that holds its parameters.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod data;
mod error;
pub mod loss;
pub mod optim;
pub mod precision;
pub mod recipe;
pub mod run_dir;
pub mod schedule;
pub mod step;
pub mod trainer;
pub mod weights;

pub use error::TrainingError;
