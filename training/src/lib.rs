//! Training zoo models with the paper's recipe: optimisers now; schedules, the tricks, data
//! and the trainer as they land.
//!
//! - [`optim::Nag`]: Nesterov accelerated gradient with momentum and weight decay
//!   (Section 2.1), with the no-bias-decay split of Section 3.1.
//! - [`step::TrainStep`]: one forward, cross-entropy backward and optimiser update.
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
pub mod schedule;
pub mod step;
pub mod trainer;

pub use error::TrainingError;
