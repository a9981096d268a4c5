//! `tricks models`: the architecture table.

use std::io::Write;

use anyhow::Result;
use zoo::models::ModelSpec;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only models whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<14} {:>10} {:>8} {:>10}",
        "model", "params (M)", "GMACs", "input"
    )?;
    for spec in ModelSpec::all() {
        if let Some(f) = &args.filter {
            if !spec.name.contains(f.as_str()) {
                continue;
            }
        }
        let (params, macs) = spec.params_and_macs()?;
        let (c, h, w) = spec.input_size;
        writeln!(
            out,
            "{:<14} {:>10.2} {:>8.2} {:>10}",
            spec.name,
            params as f64 / 1e6,
            macs as f64 / 1e9,
            format!("{c}x{h}x{w}")
        )?;
    }
    Ok(())
}
