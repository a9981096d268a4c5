//! The zoo's registry of published checkpoints, `weights.toml`.
//!
//! The repository's `weights.toml` is embedded in the binary. This version of the schema
//! holds its version number and a list of entries; the fields of an entry (name, version,
//! files with sha256, metrics, input configuration, origin) arrive with the zoo's publishing
//! work, and until then a file with entries is rejected rather than half-read.

use serde::Deserialize;

use crate::{Result, ZooError};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The registry shipped with this build.
pub const SHIPPED: &str = include_str!("../../weights.toml");

/// A parsed `weights.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Schema version of the file.
    pub schema: u32,
    /// Published checkpoints.
    #[serde(default)]
    pub models: Vec<toml::Table>,
}

impl Registry {
    /// Parses `text` read from `path` (used in errors), rejecting unknown schema versions
    /// and unknown keys with the line and the reason.
    pub fn parse(text: &str, path: &str) -> Result<Self> {
        let registry: Registry = toml::from_str(text).map_err(|e| ZooError::Registry {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        if registry.schema != SCHEMA_VERSION {
            return Err(ZooError::Registry {
                path: path.to_string(),
                reason: format!(
                    "schema version {} is not supported (this build reads {SCHEMA_VERSION})",
                    registry.schema
                ),
            });
        }
        if !registry.models.is_empty() {
            return Err(ZooError::Registry {
                path: path.to_string(),
                reason:
                    "entries need the registry schema of the zoo release; this build reads none"
                        .into(),
            });
        }
        Ok(registry)
    }

    /// The registry embedded in the binary.
    pub fn shipped() -> Result<Self> {
        Self::parse(SHIPPED, "weights.toml")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_registry_parses() {
        assert_eq!(Registry::shipped().unwrap().schema, SCHEMA_VERSION);
    }

    #[test]
    fn rejects_bad_files_with_reason() {
        let err = Registry::parse("schema = 2\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("schema version 2"), "{err}");
        let err = Registry::parse("schema = 1\nfoo = 3\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field") && err.contains("line 2"),
            "{err}"
        );
        let err = Registry::parse("schema = [", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.toml"), "{err}");
    }
}
