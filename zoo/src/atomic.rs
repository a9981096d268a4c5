//! Writing a file so that a reader, or a run killed half-way, sees either the old file or
//! the new one whole: the one way every file of the project is written (weights, checkpoints,
//! registries, run records, ONNX graphs, zoo blobs).
//!
//! The bytes go to a hidden sibling `.NAME.tmp-PID` in the same directory (so the rename
//! cannot cross file systems), which is flushed to disk, renamed over `NAME`, and the
//! directory is flushed so that the rename itself survives a power loss. A temporary file
//! left by a killed process keeps that prefix, so [`remove_leftovers`] can find it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The prefix-and-marker shape of every temporary name: `.NAME.tmp-PID`.
const TMP_MARKER: &str = ".tmp-";

/// The temporary sibling `path` is written through by this process.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{TMP_MARKER}{}", std::process::id()))
}

/// An I/O error that names the file it happened on.
fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` atomically (see the module doc).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |tmp| {
        let mut file = File::create(tmp)?;
        file.write_all(bytes)
    })
}

/// Atomically replaces `path` with what `fill` writes to the temporary path it is given
/// (for writers that take a path, such as safetensors'). On an error the temporary file is
/// removed and `path` is left as it was; the caller names `path` in its message.
pub fn write_with(path: &Path, fill: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let tmp = temporary_sibling(path);
    let result = fill(&tmp).and_then(|()| commit(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Flushes `tmp`, renames it over `path` and flushes the directory.
fn commit(tmp: &Path, path: &Path) -> io::Result<()> {
    File::open(tmp).and_then(|f| f.sync_all())?;
    fs::rename(tmp, path)?;
    sync_dir(path)
}

/// Flushes the directory holding `path`, so that a rename into it is durable. (Where the
/// platform cannot open a directory, as on Windows, there is nothing to flush.)
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match File::open(dir) {
        Ok(d) => d.sync_all().or_else(|e| {
            // Some file systems refuse fsync on a directory; the rename stands.
            if e.kind() == io::ErrorKind::InvalidInput {
                Ok(())
            } else {
                Err(named(dir, e))
            }
        }),
        Err(_) if cfg!(windows) => Ok(()),
        Err(e) => Err(named(dir, e)),
    }
}

/// Whether `name` is a temporary name of [`write_with`] (`.NAME.tmp-PID`).
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(TMP_MARKER)
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the temporary files that killed processes left in `dir` (not those of a process
/// still running, which may be writing them), and returns their paths. Call it only while
/// holding whatever lock guards `dir`.
pub fn remove_leftovers(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(named(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| named(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_temporary(&name) {
            continue;
        }
        let pid = name.rsplit_once(TMP_MARKER).map(|(_, p)| p);
        if pid.and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id()) {
            continue;
        }
        if pid.is_some_and(process_alive) {
            continue;
        }
        fs::remove_file(entry.path()).map_err(|e| named(&entry.path(), e))?;
        removed.push(entry.path());
    }
    Ok(removed)
}

/// Whether a process with this id runs (on Linux, where /proc tells; elsewhere assumed
/// gone, which the directory's lock makes safe).
fn process_alive(pid: &str) -> bool {
    cfg!(target_os = "linux") && Path::new("/proc").join(pid).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        write(&path, b"first").unwrap();
        write(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_failed_writer_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        write(&path, b"old").unwrap();
        let err = write_with(&path, |tmp| {
            fs::write(tmp, b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn leftovers_of_dead_processes_are_removed_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that cannot be running (above Linux's pid_max).
        let dead = dir.path().join(".model.safetensors.tmp-4294967");
        let ours = temporary_sibling(&dir.path().join("checkpoint.safetensors"));
        let keep = dir.path().join("model.safetensors");
        for p in [&dead, &ours, &keep] {
            fs::write(p, b"x").unwrap();
        }
        let removed = remove_leftovers(dir.path()).unwrap();
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!dead.exists() && ours.exists() && keep.exists());
        assert!(is_temporary(".weights.toml.tmp-12"));
        assert!(
            !is_temporary("weights.toml") && !is_temporary(".x.tmp-") && !is_temporary(".x.tmp-1a")
        );
    }
}
