//! Helpers shared by integration tests: a local Hugging Face Hub and the Python reference
//! checks.

pub mod hub_server;
pub mod python;
