//! An image-classification dataset in the ImageNet folder layout:
//! `ROOT/train/<class>/*.{jpg,jpeg,png}` and `ROOT/val/<class>/…`.

use std::path::{Path, PathBuf};

use crate::TrainingError;

/// One image and its class index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The image file.
    pub path: PathBuf,
    /// Index into the dataset's class list.
    pub label: u32,
}

/// The samples of one split, with the class list (sorted folder names) they index into.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFolder {
    /// Class names, sorted; a label is an index into this list.
    pub classes: Vec<String>,
    /// Every image of the split, sorted by class then file name.
    pub samples: Vec<Sample>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, TrainingError> {
    let entries = std::fs::read_dir(dir).map_err(|e| TrainingError::data(dir, e))?;
    let mut paths = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrainingError::data(dir, e))?;
    paths.sort();
    Ok(paths)
}

impl ImageFolder {
    /// The class names of `root/train`: its sub-folders, sorted.
    pub fn class_names(root: &Path) -> Result<Vec<String>, TrainingError> {
        Self::class_names_of(root, "train")
    }

    /// The class names of `root/split`: its sub-folders, sorted. A folder name that is not
    /// UTF-8 is an error naming it (a class name must survive `classes.json`).
    pub fn class_names_of(root: &Path, split: &str) -> Result<Vec<String>, TrainingError> {
        let dir = root.join(split);
        let mut classes = Vec::new();
        for p in read_dir_sorted(&dir)?.into_iter().filter(|p| p.is_dir()) {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                return Err(TrainingError::data(
                    &p,
                    "class folder name is not valid UTF-8: rename it",
                ));
            };
            classes.push(name.to_string());
        }
        if classes.is_empty() {
            return Err(TrainingError::data(&dir, "no class folders"));
        }
        Ok(classes)
    }

    /// The split `split` ("train" or "val") of the dataset at `root`, labelled with
    /// `classes`. Every class must have a folder with at least one image, and the split may
    /// hold no other class.
    pub fn open(root: &Path, split: &str, classes: &[String]) -> Result<Self, TrainingError> {
        let dir = root.join(split);
        for found in read_dir_sorted(&dir)?.iter().filter(|p| p.is_dir()) {
            let Some(name) = found.file_name().and_then(|n| n.to_str()) else {
                return Err(TrainingError::data(
                    found,
                    "class folder name is not valid UTF-8: rename it",
                ));
            };
            if !classes.iter().any(|c| c == name) {
                return Err(TrainingError::data(
                    found,
                    "class folder not in the training classes",
                ));
            }
        }
        let mut samples = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let class_dir = dir.join(class);
            if !class_dir.is_dir() {
                return Err(TrainingError::data(&class_dir, "missing class folder"));
            }
            let before = samples.len();
            for path in read_dir_sorted(&class_dir)? {
                if is_image(&path) && std::fs::metadata(&path).is_err() {
                    // `is_file` is false for these, which would drop them without a word.
                    return Err(TrainingError::data(
                        &path,
                        "a broken or looping symbolic link, not an image",
                    ));
                }
                if path.is_file() && is_image(&path) {
                    samples.push(Sample {
                        path,
                        label: label as u32,
                    });
                }
            }
            if samples.len() == before {
                return Err(TrainingError::data(
                    &class_dir,
                    "no .jpg, .jpeg or .png images",
                ));
            }
        }
        Ok(Self {
            classes: classes.to_vec(),
            samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn broken_links_and_non_utf8_names_are_errors_naming_them() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("train/a/1.png"));
        touch(&dir.path().join("train/b/1.png"));
        std::os::unix::fs::symlink("nowhere.png", dir.path().join("train/a/2.png")).unwrap();
        let classes = ImageFolder::class_names(dir.path()).unwrap();
        let err = ImageFolder::open(dir.path(), "train", &classes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2.png") && err.contains("symbolic link"),
            "{err}"
        );
        let bad = std::ffi::OsStr::from_bytes(b"caf\xe9");
        std::fs::create_dir_all(dir.path().join("train").join(bad)).unwrap();
        let err = ImageFolder::class_names(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid UTF-8"), "{err}");
    }

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn reads_the_imagenet_layout() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        touch(&r.join("train/dog/b.JPG"));
        touch(&r.join("train/dog/a.png"));
        touch(&r.join("train/dog/notes.txt"));
        touch(&r.join("train/cat/x.jpeg"));
        touch(&r.join("val/cat/y.jpg"));
        touch(&r.join("val/dog/z.png"));
        let classes = ImageFolder::class_names(r).unwrap();
        assert_eq!(classes, ["cat", "dog"]);
        let train = ImageFolder::open(r, "train", &classes).unwrap();
        let got: Vec<(String, u32)> = train
            .samples
            .iter()
            .map(|s| {
                (
                    s.path.file_name().unwrap().to_string_lossy().into_owned(),
                    s.label,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("x.jpeg".into(), 0),
                ("a.png".into(), 1),
                ("b.JPG".into(), 1)
            ]
        );
        assert_eq!(
            ImageFolder::open(r, "val", &classes).unwrap().samples.len(),
            2
        );
    }

    #[test]
    fn missing_extra_or_empty_classes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        touch(&r.join("train/cat/a.jpg"));
        touch(&r.join("train/dog/b.jpg"));
        touch(&r.join("val/cat/c.jpg"));
        let classes = ImageFolder::class_names(r).unwrap();
        let err = ImageFolder::open(r, "val", &classes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("val/dog") && err.contains("missing class folder"),
            "{err}"
        );
        touch(&r.join("val/dog/d.txt"));
        let err = ImageFolder::open(r, "val", &classes)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no .jpg"), "{err}");
        touch(&r.join("val/dog/d.jpg"));
        touch(&r.join("val/cow/e.jpg"));
        let err = ImageFolder::open(r, "val", &classes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cow") && err.contains("not in the training classes"),
            "{err}"
        );
        let err = ImageFolder::class_names(&r.join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nowhere"), "{err}");
    }
}
