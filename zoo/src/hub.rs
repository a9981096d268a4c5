//! The Hugging Face Hub, both ways, through hf-hub.
//!
//! Downloads land in the standard Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`,
//! else `~/.cache/huggingface/hub`), so files pulled here are shared with Python's
//! `huggingface_hub`, and the other way round. `HF_ENDPOINT` and `HF_TOKEN` are honoured;
//! `--offline` or `HF_HUB_OFFLINE=1` answers from the cache alone.
//!
//! A file whose registry entry records a sha256 is verified after the download; a mismatch
//! deletes the cached copy and fails. The token never appears in an error: messages are
//! scrubbed of it before they leave this module.

use std::path::{Path, PathBuf};

use hf_hub::repository::CommitOperation;
use hf_hub::{HFClientBuilder, HFClientSync, HFError, RepoTypeModel};

use crate::local::{check_file, FileCheck};
use crate::{Result, ZooError};

/// A connection to the Hub (or to whatever `HF_ENDPOINT` points at).
pub struct Hub {
    client: HFClientSync,
    offline: bool,
    token: Option<String>,
}

/// Whether `HF_HUB_OFFLINE` asks for offline mode (`1`, `true`, `yes`, `on`).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

impl Hub {
    /// A client configured from the environment; `offline` (or `HF_HUB_OFFLINE`) serves from
    /// the cache only.
    pub fn from_env(offline: bool) -> Result<Self> {
        let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        let client = HFClientBuilder::new()
            .retry_max_attempts(2)
            .retry_base_delay(std::time::Duration::from_millis(200))
            .build_sync()
            .map_err(|e| hub_error(&e, token.as_deref()))?;
        Ok(Self {
            client,
            offline: offline || offline_from_env(),
            token,
        })
    }

    /// Whether only the cache is used.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// Downloads `file` of the model repository `repo` at `revision` into the cache (or finds
    /// it there) and returns its path. With `expected_sha256`, the bytes are verified; a
    /// mismatch deletes the cached copy and is an error.
    pub fn download(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        expected_sha256: Option<&str>,
    ) -> Result<PathBuf> {
        let (owner, name) = split_repo(repo)?;
        let path = self
            .client
            .model(owner, name)
            .download_file()
            .filename(file)
            .revision(revision)
            .local_files_only(self.offline)
            .send()
            .map_err(|e| {
                let mut message = scrubbed(&e, self.token.as_deref());
                if self.offline {
                    message.push_str(" (offline: only the local Hugging Face cache was searched)");
                }
                ZooError::Hub(message)
            })?;
        if let Some(expected) = expected_sha256 {
            if let FileCheck::Mismatch(found) = check_file(&path, expected)? {
                delete_cached(&path);
                return Err(ZooError::Hub(format!(
                    "{repo}/{file}@{revision}: sha256 mismatch: the registry expects {expected}, the download has {found}; the downloaded file was deleted"
                )));
            }
        }
        Ok(path)
    }

    /// Creates the model repository `repo` if needed (private when asked) and uploads
    /// `files` (name in the repository, path on disk) in one commit. Returns the commit id.
    pub fn push(
        &self,
        repo: &str,
        private: bool,
        files: &[(String, PathBuf)],
        message: &str,
    ) -> Result<String> {
        if self.offline {
            return Err(ZooError::Hub("cannot push while offline".into()));
        }
        let (owner, name) = split_repo(repo)?;
        let scrub = |e: HFError| hub_error(&e, self.token.as_deref());
        self.client
            .create_repository()
            .repo_id(repo)
            .repo_type(RepoTypeModel)
            .private(private)
            .exist_ok(true)
            .send()
            .map_err(scrub)?;
        let operations = files
            .iter()
            .map(|(in_repo, path)| CommitOperation::add_file(in_repo.clone(), path.clone()))
            .collect();
        let info = self
            .client
            .model(owner, name)
            .create_commit()
            .operations(operations)
            .commit_message(message)
            .send()
            .map_err(scrub)?;
        Ok(info.commit_oid.or(info.commit_url).unwrap_or_default())
    }
}

fn split_repo(repo: &str) -> Result<(&str, &str)> {
    check_repo_id(repo)?;
    Ok(repo.split_once('/').expect("checked"))
}

/// Checks a Hub repository id `OWNER/NAME` by the Hub's rules before anything is sent:
/// each part 1–96 characters of letters, digits, `-`, `_` and `.`, neither starting nor
/// ending with `-` or `.`, and without `--` or `..`.
pub fn check_repo_id(repo: &str) -> Result<()> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
            && !p.contains("--")
            && !p.contains("..")
    };
    match repo.split_once('/') {
        Some((owner, name)) if part_ok(owner) && part_ok(name) => Ok(()),
        _ => Err(ZooError::Config(format!(
            "`{repo}` is not a Hub repository id OWNER/NAME (letters, digits, `-`, `_`, `.`; at most 96 each)"
        ))),
    }
}

/// The error as text, with the token (if any) replaced by `***`.
fn scrubbed(e: &HFError, token: Option<&str>) -> String {
    let message = e.to_string();
    match token {
        Some(token) => message.replace(token, "***"),
        None => message,
    }
}

fn hub_error(e: &HFError, token: Option<&str>) -> ZooError {
    ZooError::Hub(scrubbed(e, token))
}

/// Removes a cached file: the blob a snapshot link points at, and the link.
fn delete_cached(path: &Path) {
    if let Ok(blob) = std::fs::canonicalize(path) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(path);
}
