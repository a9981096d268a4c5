//! Publishing: a loaded checkpoint exported into the local zoo as a registry entry, a local
//! entry uploaded to the Hub with its model card, and Hub entries of a registry file pinned
//! (size and sha256 recorded).
//!
//! Files on their way into the zoo or to the Hub are staged under `ZOO/staging/LABEL-PID`,
//! removed afterwards; what a killed process left there is removed by the next publish or
//! push.

use std::path::{Path, PathBuf};

use crate::export::{export, ExportFormats, ExportedFiles};
use crate::local::{sha256_file, LocalZoo};
use crate::reference::{Loaded, RegistryKind, ZooContext};
use crate::registry::{Entry, EntryRef, Origin, Registry, Task, Version};
use crate::{Result, ZooError};

/// What `publish` is asked beyond the checkpoint itself.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// Entry name, timm style `architecture.tag`.
    pub name: String,
    /// Version; an existing one is never overwritten.
    pub version: Version,
    /// Dataset name (default: the checkpoint's provenance).
    pub dataset: Option<String>,
    /// Licence (default: the source's, else apache-2.0).
    pub license: Option<String>,
    /// `NAME@VERSION` it was fine-tuned from (default: the provenance's parent). It must
    /// exist in one of the registries.
    pub parent: Option<String>,
    /// How to describe where the checkpoint came from when its provenance does not say.
    pub source: String,
}

/// The current time as RFC 3339 UTC, to the second.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond");
    now.format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC time formats as RFC 3339")
}

/// Exports `loaded` (safetensors, config and ONNX) and adds it to the local zoo.
pub fn publish(ctx: &ZooContext, loaded: &Loaded, req: PublishRequest) -> Result<Entry> {
    let prov = loaded.provenance.clone();
    let entry = Entry {
        name: req.name.clone(),
        version: req.version,
        task: Task::Classification,
        architecture: loaded.model.spec.name.clone(),
        dataset: req
            .dataset
            .or(prov.dataset)
            .unwrap_or_else(|| "unknown".into()),
        num_classes: loaded.model.spec.num_classes(),
        recipe: prov.recipe,
        source: prov.source.or(Some(req.source)),
        tricks: prov.tricks,
        parent: req.parent.or(prov.parent),
        license: req
            .license
            .or(prov.license)
            .unwrap_or_else(|| "apache-2.0".into()),
        created: now_rfc3339(),
        notes: None,
        metrics: prov.metrics,
        input: loaded.meta.input.clone(),
        origin: Origin {
            hub: None,
            revision: None,
        },
        files: vec![],
    };
    let mut meta = loaded.meta.clone();
    meta.tag = req.name.split_once('.').map(|(_, t)| t.to_string());
    let formats = ExportFormats {
        safetensors: true,
        onnx: true,
    };
    publish_exported(ctx, entry, |dir| export(&loaded.model, &meta, formats, dir))
}

/// Adds `entry` to the local zoo with the files `export` writes into a fresh staging
/// directory (removed afterwards, whatever happens). The parent, when the entry names one,
/// must be `NAME@VERSION` of an entry of either registry. Every task publishes through
/// here: classifiers by [`publish`], detectors and segmenters by the crate that knows them.
pub fn publish_exported<E: From<ZooError>>(
    ctx: &ZooContext,
    entry: Entry,
    export: impl FnOnce(&Path) -> std::result::Result<ExportedFiles, E>,
) -> std::result::Result<Entry, E> {
    if let Some(parent) = &entry.parent {
        let r: EntryRef = parent.parse()?;
        if r.version.is_none() {
            return Err(ZooError::Config(format!("parent `{parent}`: give NAME@VERSION")).into());
        }
        ctx.find_entry(&r).map_err(|_| {
            ZooError::Config(format!(
                "parent `{parent}` is in neither registry; `tricks zoo list` shows the entries"
            ))
        })?;
    }
    let zoo = &ctx.local;
    let staging = staging_dir(zoo, &format!("publish-{}", entry.name))?;
    let result = export(&staging).and_then(|files| Ok(zoo.publish(entry, &files)?));
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Uploads the local entry `r` (`NAME@VERSION`) to the Hub repository `repo` in one commit
/// with its model card; returns the entry and the commit id.
pub fn push(ctx: &ZooContext, r: &EntryRef, repo: &str, private: bool) -> Result<(Entry, String)> {
    if r.version.is_none() {
        return Err(ZooError::Config("push needs NAME@VERSION".into()));
    }
    crate::hub::check_repo_id(repo)?;
    let (kind, e) = ctx.find_entry(r)?;
    if kind != RegistryKind::Local {
        return Err(ZooError::Config(format!(
            "{} is a shipped entry; push publishes local zoo entries",
            e.id()
        )));
    }
    let hub = ctx.hub()?;
    let staging = staging_dir(&ctx.local, &format!("push-{}", e.id()))?;
    let result = (|| {
        let mut files = Vec::new();
        for f in &e.files {
            let path = ctx.fetch(&e, f.role)?;
            let named = staging.join(&f.path);
            std::fs::copy(&path, &named).map_err(|source| ZooError::Io {
                path: named.clone(),
                source,
            })?;
            files.push((f.path.clone(), named));
        }
        let card = staging.join("README.md");
        crate::atomic::write(&card, crate::card::model_card(&e, repo).as_bytes()).map_err(
            |source| ZooError::Io {
                path: card.clone(),
                source,
            },
        )?;
        files.push(("README.md".to_string(), card));
        hub.push(
            repo,
            private,
            &files,
            &format!("Upload {} with tricks", e.id()),
        )
    })();
    let _ = std::fs::remove_dir_all(&staging);
    Ok((e, result?))
}

/// A fresh working directory `ZOO/staging/<label>-<pid>`; the caller removes it. Staging
/// directories of processes that no longer run are removed first.
fn staging_dir(zoo: &LocalZoo, label: &str) -> Result<PathBuf> {
    let root = zoo.root().join("staging");
    remove_dead_staging(&root);
    let dir = root.join(format!("{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| ZooError::Io {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// Removes `root/*-PID` directories whose process is gone (on Linux, where /proc tells).
fn remove_dead_staging(root: &Path) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, pid)) = name.rsplit_once('-') else {
            continue;
        };
        let dead = pid
            .parse::<u32>()
            .is_ok_and(|p| p != std::process::id() && !Path::new("/proc").join(pid).exists());
        if dead {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// One file pinned by [`pin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedFile {
    /// Path in the repository.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Lower-case hex sha256.
    pub sha256: String,
}

/// Downloads the Hub files of entry `r` of the registry file `registry` and records their
/// size and sha256 in it (the file's formatting and comments kept, `notes` dropped),
/// atomically and only once the edited registry parses.
pub fn pin(ctx: &ZooContext, registry: &Path, r: &EntryRef) -> Result<(Entry, Vec<PinnedFile>)> {
    let fail = |reason: String| ZooError::Registry {
        path: registry.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(registry).map_err(|source| ZooError::Io {
        path: registry.to_path_buf(),
        source,
    })?;
    let parsed = Registry::parse(&text, &registry.display().to_string())?;
    let e = parsed
        .find(r)
        .ok_or_else(|| fail(format!("no entry {r}")))?
        .clone();
    let Some(repo) = e.origin.hub.as_deref() else {
        return Err(ZooError::Config(format!(
            "{} is not a Hub entry: local files are pinned when published",
            e.id()
        )));
    };
    let hub = ctx.hub()?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|err| fail(format!("cannot be edited: {err}")))?;
    let models = doc["models"]
        .as_array_of_tables_mut()
        .ok_or_else(|| fail("`models` is not an array of tables".into()))?;
    let version = e.version.to_string();
    let table = models
        .iter_mut()
        .find(|t| {
            t.get("name").and_then(|v| v.as_str()) == Some(e.name.as_str())
                && t.get("version").and_then(|v| v.as_str()) == Some(version.as_str())
        })
        .ok_or_else(|| fail(format!("entry {} not found for editing", e.id())))?;
    let files = table["files"]
        .as_array_mut()
        .ok_or_else(|| fail("`files` must be an inline array".into()))?;
    let mut pinned = Vec::new();
    for (i, f) in e.files.iter().enumerate() {
        let path = hub.download(repo, e.origin.revision(), &f.path, f.sha256.as_deref())?;
        let (sha256, size) = sha256_file(&path)?;
        let file = files
            .get_mut(i)
            .and_then(|v| v.as_inline_table_mut())
            .ok_or_else(|| fail("each file must be an inline table".into()))?;
        file.insert("size", (size as i64).into());
        file.insert("sha256", sha256.clone().into());
        pinned.push(PinnedFile {
            path: f.path.clone(),
            size,
            sha256,
        });
    }
    table.remove("notes");
    let new_text = doc.to_string();
    Registry::parse(&new_text, "pinned registry")?;
    if let Some(dir) = registry.parent().filter(|d| !d.as_os_str().is_empty()) {
        // A pin killed while it rewrote this file left a temporary beside it.
        let _ = crate::atomic::remove_leftovers(dir);
    }
    crate::local::write_atomically(registry, new_text.as_bytes())?;
    Ok((e, pinned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_rfc3339_utc_to_the_second() {
        let t = now_rfc3339();
        assert_eq!(t.len(), "2026-12-01T19:22:06Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(t.as_str() > "2026-01-01");
    }
}
