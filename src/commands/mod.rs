//! One module per subcommand; each has its clap `Args` and a `run`.

pub mod ablate;
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
pub mod transfer;
pub mod zoo;

/// A command-line count of at least 1 (`--iters`, `--iters-per-epoch`).
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
