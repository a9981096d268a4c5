//! One module per subcommand; each has its clap `Args` and a `run`.

pub mod bench;
pub mod data;
pub mod demo;
pub mod eval;
pub mod export;
pub mod forward;
pub mod init;
pub mod models;
pub mod predict;
pub mod schedule;
pub mod train;
pub mod zoo;
