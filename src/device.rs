//! `--device`: where a command runs.

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// `cpu`, `cuda` (the first GPU) or `cuda:N`. CUDA needs a build with `--features cuda`;
/// without it, or without a GPU, the error says so.
pub fn parse(spec: &str) -> Result<Device> {
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:") {
            Some(n) => n
                .parse()
                .with_context(|| format!("--device {other}: expected cuda:N with N a GPU index"))?,
            None => bail!("--device {other}: expected cpu, cuda or cuda:N"),
        },
    };
    Device::new_cuda(ordinal).with_context(|| {
        format!(
            "--device {spec}: no CUDA device{}",
            if cfg!(feature = "cuda") {
                ""
            } else {
                " (this build has no CUDA support: rebuild with --features cuda)"
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_nonsense() {
        assert!(parse("cpu").unwrap().is_cpu());
        for bad in ["gpu", "cuda:x", "cuda:-1", ""] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("--device"), "{bad}: {err}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let err = format!("{:#}", parse("cuda").unwrap_err());
        assert!(err.contains("--features cuda"), "{err}");
    }
}
