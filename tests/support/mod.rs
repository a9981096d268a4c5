//! Helpers shared by integration tests: a local Hugging Face Hub, the Python reference
//! checks, comparisons with timm's fixtures, and the training tests' helpers.

pub mod hub_server;
pub mod parity;
pub mod python;
pub mod train;
