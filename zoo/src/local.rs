//! A local zoo directory: the user's own published checkpoints.
//!
//! Layout:
//!
//! ```text
//! DIR/weights.toml          the local registry (same schema as the shipped one)
//! DIR/weights.toml.lock     taken while the registry is rewritten
//! DIR/blobs/<sha256>        every file, content addressed
//! ```
//!
//! Publishing copies the files into `blobs/` first (a temporary name, then a rename, so a
//! blob is either complete or absent), then rewrites `weights.toml` under an exclusive file
//! lock: the registry is re-read inside the lock, so two concurrent publishes both land.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::registry::{Entry, FileEntry, FileRole, Registry};
use crate::{Result, ZooError};

/// A local zoo rooted at a directory.
#[derive(Debug, Clone)]
pub struct LocalZoo {
    root: PathBuf,
}

/// The outcome of checking one file against its recorded sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCheck {
    /// Present with the recorded hash.
    Ok,
    /// Not on disk.
    Missing,
    /// Present with another hash (the one found).
    Mismatch(String),
}

impl LocalZoo {
    /// The zoo at `root` (created on first publish).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The default location: `$TRICKS_ZOO`, else `$XDG_CACHE_HOME/tricks/zoo`, else
    /// `~/.cache/tricks/zoo`.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("TRICKS_ZOO") {
            return dir.into();
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        cache.join("tricks").join("zoo")
    }

    /// The zoo's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the local registry file.
    pub fn registry_path(&self) -> PathBuf {
        self.root.join("weights.toml")
    }

    /// Where the file with hash `sha256` is stored.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(sha256)
    }

    /// The local registry; empty when the zoo has none yet.
    pub fn registry(&self) -> Result<Registry> {
        let path = self.registry_path();
        match fs::read_to_string(&path) {
            Ok(text) => Registry::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::new()),
            Err(source) => Err(ZooError::Io { path, source }),
        }
    }

    /// Stores `files` (role, name in the entry, path on disk) under their hashes and adds
    /// `entry` with those files to the registry. Fails if `entry`'s name and version exist.
    pub fn publish(
        &self,
        mut entry: Entry,
        files: &[(FileRole, String, PathBuf)],
    ) -> Result<Entry> {
        let blobs = self.root.join("blobs");
        fs::create_dir_all(&blobs).map_err(|source| ZooError::Io {
            path: blobs.clone(),
            source,
        })?;
        if self.registry()?.models.iter().any(|e| e.id() == entry.id()) {
            return Err(already_published(&entry));
        }
        entry.files = files
            .iter()
            .map(|(role, name, path)| {
                let (sha256, size) = self.store_blob(path)?;
                Ok(FileEntry {
                    role: *role,
                    path: name.clone(),
                    size: Some(size),
                    sha256: Some(sha256),
                })
            })
            .collect::<Result<_>>()?;
        let _lock = self.lock()?;
        // Under the lock: what killed publishes left (a half-copied blob, a registry being
        // rewritten) goes. Temporaries of live processes are kept.
        for dir in [&self.root, &blobs] {
            crate::atomic::remove_leftovers(dir).map_err(|source| ZooError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut registry = self.registry()?;
        if registry.models.iter().any(|e| e.id() == entry.id()) {
            return Err(already_published(&entry));
        }
        registry.models.push(entry.clone());
        // Validate through the parser before anything reaches the disk.
        let text = registry.to_toml()?;
        Registry::parse(&text, "new local registry")?;
        write_atomically(&self.registry_path(), text.as_bytes())?;
        Ok(entry)
    }

    /// Checks every file of every entry against its recorded size and sha256.
    pub fn verify(&self) -> Result<Vec<(String, FileEntry, FileCheck)>> {
        let mut report = Vec::new();
        for entry in self.registry()?.models {
            for file in &entry.files {
                let sha = file.sha256.as_deref().unwrap_or_default();
                let check = check_recorded(&self.blob_path(sha), file)?;
                report.push((entry.id(), file.clone(), check));
            }
        }
        Ok(report)
    }

    /// Hashes `path` and copies it to `blobs/<sha256>` unless already there.
    fn store_blob(&self, path: &Path) -> Result<(String, u64)> {
        let (sha256, size) = sha256_file(path)?;
        let blob = self.blob_path(&sha256);
        if !blob.exists() {
            crate::atomic::write_with(&blob, |tmp| fs::copy(path, tmp).map(drop))
                .map_err(|source| ZooError::Io { path: blob, source })?;
        }
        Ok((sha256, size))
    }

    /// An exclusive lock on the registry, released when dropped.
    fn lock(&self) -> Result<File> {
        let path = self.root.join("weights.toml.lock");
        let io = |source| ZooError::Io {
            path: path.clone(),
            source,
        };
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(file)
    }
}

fn already_published(entry: &Entry) -> ZooError {
    ZooError::Config(format!(
        "{} is already published in the local zoo; versions are immutable: publish a new version",
        entry.id()
    ))
}

/// Lower-case hex sha256 and size of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let io = |source| ZooError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let digest = hasher.finalize();
    Ok((digest.iter().map(|b| format!("{b:02x}")).collect(), size))
}

/// Compares the file at `path` with what the registry records of it: its size where
/// recorded (a mismatch is reported as `"N bytes, the registry says M"`), then its sha256.
pub fn check_recorded(path: &Path, file: &FileEntry) -> Result<FileCheck> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(FileCheck::Missing);
    };
    if let Some(size) = file.size {
        if meta.len() != size {
            return Ok(FileCheck::Mismatch(format!(
                "{} bytes, the registry says {size}",
                meta.len()
            )));
        }
    }
    match &file.sha256 {
        Some(sha) => check_file(path, sha),
        None => Ok(FileCheck::Ok),
    }
}

/// Compares the file at `path` with `sha256`.
pub fn check_file(path: &Path, sha256: &str) -> Result<FileCheck> {
    if !path.exists() {
        return Ok(FileCheck::Missing);
    }
    let (found, _) = sha256_file(path)?;
    Ok(if found == sha256 {
        FileCheck::Ok
    } else {
        FileCheck::Mismatch(found)
    })
}

/// Writes `bytes` to `path` atomically ([`crate::atomic::write`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::atomic::write(path, bytes).map_err(|source| ZooError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{InputConfig, Origin, Version};

    fn entry(name: &str, version: Version) -> Entry {
        Entry {
            name: name.into(),
            version,
            task: Default::default(),
            architecture: "resnet10d_tiny".into(),
            dataset: "shapes".into(),
            num_classes: 10,
            recipe: Some("baseline".into()),
            source: None,
            tricks: vec![],
            parent: None,
            license: "mit".into(),
            created: "2026-11-29T12:00:00Z".into(),
            notes: None,
            metrics: [("top1".to_string(), 50.0)].into(),
            input: InputConfig::imagenet(64),
            origin: Origin {
                hub: None,
                revision: None,
            },
            files: vec![],
        }
    }

    #[test]
    fn a_publish_removes_what_killed_publishes_left() {
        let dir = tempfile::tempdir().unwrap();
        let zoo = LocalZoo::new(dir.path().join("zoo"));
        let blobs = zoo.root().join("blobs");
        fs::create_dir_all(&blobs).unwrap();
        // Temporaries of a process that no longer runs (a pid above Linux's pid_max).
        let stale = [
            zoo.root().join(".weights.toml.tmp-4294967"),
            blobs.join(".0123abcd.tmp-4294967"),
        ];
        for p in &stale {
            fs::write(p, b"half").unwrap();
        }
        let file = dir.path().join("w.safetensors");
        fs::write(&file, b"weights").unwrap();
        let files = [(FileRole::Safetensors, "model.safetensors".to_string(), file)];
        zoo.publish(entry("a", Version(1, 0, 0)), &files).unwrap();
        if cfg!(target_os = "linux") {
            for p in &stale {
                assert!(!p.exists(), "{} was left", p.display());
            }
        }
    }

    #[test]
    fn publishes_content_addressed_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let zoo = LocalZoo::new(dir.path().join("zoo"));
        let file = dir.path().join("w.safetensors");
        fs::write(&file, b"weights").unwrap();
        let files = [(
            FileRole::Safetensors,
            "model.safetensors".to_string(),
            file.clone(),
        )];
        let published = zoo.publish(entry("a", Version(1, 0, 0)), &files).unwrap();
        let sha = published.files[0].sha256.clone().unwrap();
        assert_eq!(sha, sha256_file(&file).unwrap().0);
        assert_eq!(fs::read(zoo.blob_path(&sha)).unwrap(), b"weights");
        let err = zoo
            .publish(entry("a", Version(1, 0, 0)), &files)
            .unwrap_err();
        assert!(err.to_string().contains("already published"), "{err}");
        zoo.publish(entry("a", Version(1, 1, 0)), &files).unwrap();
        assert_eq!(zoo.registry().unwrap().models.len(), 2);
        assert!(zoo
            .verify()
            .unwrap()
            .iter()
            .all(|(_, _, c)| *c == FileCheck::Ok));
        // A recorded size that disagrees with the file, next to the right sha256.
        let registry = fs::read_to_string(zoo.registry_path()).unwrap();
        assert!(registry.contains("size = 7"), "{registry}");
        fs::write(
            zoo.registry_path(),
            registry.replace("size = 7", "size = 123"),
        )
        .unwrap();
        let report = zoo.verify().unwrap();
        assert!(
            report.iter().all(
                |(_, _, c)| matches!(c, FileCheck::Mismatch(m) if m.contains("registry says 123"))
            ),
            "{report:?}"
        );
        fs::write(zoo.registry_path(), registry).unwrap();
        fs::write(zoo.blob_path(&sha), b"tampered").unwrap();
        assert!(zoo
            .verify()
            .unwrap()
            .iter()
            .all(|(_, _, c)| matches!(c, FileCheck::Mismatch(_))));
    }

    #[test]
    fn concurrent_publishes_both_land() {
        let dir = tempfile::tempdir().unwrap();
        let zoo = LocalZoo::new(dir.path().join("zoo"));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let zoo = zoo.clone();
                let file = dir.path().join(format!("w{i}"));
                fs::write(&file, format!("weights {i}")).unwrap();
                std::thread::spawn(move || {
                    let files = [(FileRole::Safetensors, "model.safetensors".to_string(), file)];
                    zoo.publish(entry(&format!("m{i}"), Version(1, 0, 0)), &files)
                        .unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(zoo.registry().unwrap().models.len(), 8);
    }

    #[test]
    fn sha256_matches_the_standard_test_vector() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("abc");
        fs::write(&file, b"abc").unwrap();
        let (sha, size) = sha256_file(&file).unwrap();
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(size, 3);
    }
}
