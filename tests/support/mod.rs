//! Helpers shared by integration tests: a local Hugging Face Hub, the Python reference
//! checks, and comparisons with timm's fixtures.

pub mod hub_server;
pub mod parity;
pub mod python;
