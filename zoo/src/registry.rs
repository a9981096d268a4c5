//! The zoo's registry of published checkpoints, `weights.toml`.
//!
//! One [`Entry`] per published checkpoint *version*: what it is (architecture, dataset,
//! classes), how it was made (recipe or source, parent), how good it is (metrics), how to
//! feed it (input configuration, as timm's `pretrained_cfg`), where its bytes are (files
//! with size and sha256, origin on the Hub or in a local zoo) and under which licence.
//!
//! Two registries exist side by side: the repository's `weights.toml`, embedded in the
//! binary ([`Registry::shipped`]), and a local zoo directory's own `weights.toml` for what
//! the user publishes ([`crate::local::LocalZoo`]). Parsing is strict: unknown keys, a bad
//! version, an unknown architecture, a malformed sha256 or a duplicated `name@version` are
//! rejected with the file, the line and the reason.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::models::ModelSpec;
use crate::{Result, ZooError};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The registry shipped with this build.
pub const SHIPPED: &str = include_str!("../../weights.toml");

/// A parsed `weights.toml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Registry {
    /// Schema version of the file.
    pub schema: u32,
    /// Published checkpoints, in file order.
    pub models: Vec<Entry>,
}

/// One published version of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The checkpoint's name, timm style: `architecture.tag` (`resnet50d.gluon_in1k`).
    pub name: String,
    /// Semantic version `MAJOR.MINOR.PATCH`.
    pub version: Version,
    /// What the model does; classification when absent.
    #[serde(default, skip_serializing_if = "Task::is_classification")]
    pub task: Task,
    /// The zoo architecture (`tricks models`) the weights are for; for a detector or a
    /// segmenter, its backbone's (the heads are described by its `config.json`).
    pub architecture: String,
    /// The dataset it was trained (or fine-tuned) on: `imagenet-1k`, `voc2007`, ….
    pub dataset: String,
    /// Classes of its classifier (of a detector: object classes, background not counted).
    pub num_classes: usize,
    /// The recipe it was trained with (a recipe name or file), when we trained it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    /// Where the weights came from, when we did not train them (`GluonCV via timm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The tricks of the paper the recipe used (`cosine`, `label_smoothing`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tricks: Vec<String>,
    /// `name@version` of the checkpoint this one was fine-tuned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Licence identifier (SPDX where one exists).
    pub license: String,
    /// Creation time, RFC 3339 (`2026-11-29T12:00:00Z`).
    pub created: String,
    /// Anything a reader should know (how the sha256 was obtained, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Measured quality: `top1`, `top5` (percent) for classifiers, `map`, `miou`, `pixacc`
    /// for transfer models.
    pub metrics: BTreeMap<String, f64>,
    /// How to preprocess an image for it.
    pub input: InputConfig,
    /// Where the files live.
    pub origin: Origin,
    /// Its files.
    pub files: Vec<FileEntry>,
}

/// What a published model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// An image classifier (timm's layout).
    #[default]
    Classification,
    /// An object detector (Faster R-CNN on a zoo backbone, Section 6.1).
    Detection,
    /// A semantic segmenter (FCN on a zoo backbone, Section 6.2).
    Segmentation,
}

impl Task {
    /// Whether this is the default, [`Task::Classification`].
    pub fn is_classification(&self) -> bool {
        *self == Task::Classification
    }

    /// The lower-case name used in files (`classification`, `detection`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Detection => "detection",
            Task::Segmentation => "segmentation",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The input configuration, as timm's `pretrained_cfg` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// `[channels, height, width]` of the network's input.
    pub size: [usize; 3],
    /// Per-channel mean subtracted after scaling pixels to [0, 1].
    pub mean: [f64; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f64; 3],
    /// Fraction of the resized image kept by the centre crop: the image is resized so its
    /// short side is `size / crop_pct`, then cropped to `size`.
    pub crop_pct: f64,
    /// Resampling used by the resize.
    pub interpolation: Interpolation,
}

impl InputConfig {
    /// timm's default ImageNet configuration at `size × size`: ImageNet mean and std,
    /// crop fraction 0.875, bicubic.
    pub fn imagenet(size: usize) -> Self {
        Self {
            size: [3, size, size],
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            crop_pct: 0.875,
            interpolation: Interpolation::Bicubic,
        }
    }
}

/// Resampling filters of timm's `pretrained_cfg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (triangle filter, antialiased when shrinking).
    Bilinear,
    /// Bicubic (Catmull-Rom-like, antialiased when shrinking).
    Bicubic,
}

impl Interpolation {
    /// The name timm uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Interpolation::Nearest => "nearest",
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        }
    }
}

/// Where an entry's files live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// The Hub repository `owner/name`; absent for a local zoo's own checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// The Hub revision (branch, tag or commit); `main` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

impl Origin {
    /// The revision to fetch.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

/// What a file of an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileRole {
    /// The weights in timm's names.
    Safetensors,
    /// The exported ONNX graph.
    Onnx,
    /// timm's `config.json` (`pretrained_cfg`).
    Config,
}

/// One file of an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// What it is.
    pub role: FileRole,
    /// Its name in the Hub repository (or in the export directory).
    pub path: String,
    /// Size in bytes, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Lower-case hex sha256 of its bytes, once known (`tricks zoo pin` records it for Hub
    /// files; a local zoo stores its files under this name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A semantic version `MAJOR.MINOR.PATCH`, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64, pub u64, pub u64);

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = s.split('.').collect();
        let bad = || format!("`{s}` is not a semantic version MAJOR.MINOR.PATCH");
        if parts.len() != 3 {
            return Err(bad());
        }
        let number = |p: &str| {
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                Err(bad())
            } else {
                p.parse::<u64>().map_err(|_| bad())
            }
        };
        Ok(Version(
            number(parts[0])?,
            number(parts[1])?,
            number(parts[2])?,
        ))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A reference to an entry: `NAME` (its latest version) or `NAME@VERSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRef {
    /// The entry's name.
    pub name: String,
    /// The version; the latest when absent.
    pub version: Option<Version>,
}

impl std::str::FromStr for EntryRef {
    type Err = ZooError;

    fn from_str(s: &str) -> Result<Self> {
        let (name, version) = match s.split_once('@') {
            Some((n, v)) => (n, Some(v.parse().map_err(ZooError::Config)?)),
            None => (s, None),
        };
        if name.is_empty() {
            return Err(ZooError::Config(format!("`{s}`: empty model name")));
        }
        Ok(Self {
            name: name.to_string(),
            version,
        })
    }
}

impl fmt::Display for EntryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

impl Entry {
    /// `name@version`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The file of `role`, if the entry has one.
    pub fn file(&self, role: FileRole) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.role == role)
    }

    /// Checks what the types cannot: known architecture, well-formed hashes, sane input
    /// configuration, a weights file. Returns the reason of the first problem.
    fn validate(&self) -> std::result::Result<(), String> {
        if self.name.is_empty() || self.name.contains(['@', '/', ' ']) {
            return Err(format!(
                "`{}` is not a valid name (no '@', '/' or spaces)",
                self.name
            ));
        }
        ModelSpec::find(&self.architecture).map_err(|e| e.to_string())?;
        if self.num_classes == 0 {
            return Err("num_classes must be positive".into());
        }
        if self.recipe.is_none() && self.source.is_none() {
            return Err(
                "an entry needs `recipe` (how we trained it) or `source` (where it came from)"
                    .into(),
            );
        }
        if let Some(parent) = &self.parent {
            let parsed: EntryRef = parent.parse().map_err(|e: ZooError| e.to_string())?;
            if parsed.version.is_none() {
                return Err(format!(
                    "parent `{parent}` must name a version: NAME@VERSION"
                ));
            }
        }
        check_timestamp(&self.created)?;
        let input = &self.input;
        if input.size[0] == 0 || input.size[1] < 32 || input.size[2] < 32 {
            return Err(format!("input size {:?} is too small", input.size));
        }
        if !(input.crop_pct > 0.0 && input.crop_pct <= 1.0) {
            return Err(format!("crop_pct {} must be in (0, 1]", input.crop_pct));
        }
        if input.std.iter().any(|&s| s <= 0.0 || !s.is_finite())
            || input.mean.iter().any(|m| !m.is_finite())
        {
            return Err("mean must be finite and std positive".into());
        }
        if let Some(hub) = &self.origin.hub {
            let ok = hub.split('/').count() == 2 && hub.split('/').all(|p| !p.is_empty());
            if !ok {
                return Err(format!("origin.hub `{hub}` must be OWNER/NAME"));
            }
        } else if self.origin.revision.is_some() {
            return Err("origin.revision needs origin.hub".into());
        }
        if self.file(FileRole::Safetensors).is_none() {
            return Err("files must include the weights (role = \"safetensors\")".into());
        }
        if !self.task.is_classification() && self.file(FileRole::Config).is_none() {
            return Err(format!(
                "a {} entry needs its config.json (role = \"config\"): it describes the heads",
                self.task
            ));
        }
        let mut roles = HashSet::new();
        for file in &self.files {
            if !roles.insert(file.role) {
                return Err(format!("two files with role {:?}", file.role));
            }
            if file.path.is_empty()
                || file.path.starts_with('/')
                || file.path.split('/').any(|p| p == "..")
            {
                return Err(format!(
                    "file path `{}` must be relative, without `..`",
                    file.path
                ));
            }
            if let Some(sha) = &file.sha256 {
                if sha.len() != 64
                    || !sha
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(format!(
                        "sha256 of {} is not 64 lower-case hex digits",
                        file.path
                    ));
                }
            }
            if file.sha256.is_some() != file.size.is_some() {
                return Err(format!("{}: give size and sha256 together", file.path));
            }
            if self.origin.hub.is_none() && file.sha256.is_none() {
                return Err(format!(
                    "{}: a local file needs its sha256 (its name in the zoo)",
                    file.path
                ));
            }
        }
        Ok(())
    }
}

/// Checks `YYYY-MM-DDTHH:MM:SS` followed by `Z` or an offset (RFC 3339, seconds precision or
/// finer).
fn check_timestamp(s: &str) -> std::result::Result<(), String> {
    let bad = || format!("created `{s}` is not an RFC 3339 time like 2026-11-29T12:00:00Z");
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err(bad());
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shape = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let tail = &s[19..];
    let tail = tail
        .strip_prefix('.')
        .map_or(tail, |t| t.trim_start_matches(|c: char| c.is_ascii_digit()));
    let zone = tail == "Z"
        || (tail.len() == 6
            && (tail.starts_with('+') || tail.starts_with('-'))
            && &tail[3..4] == ":");
    let month: u32 = s[5..7].parse().unwrap_or(0);
    let day: u32 = s[8..10].parse().unwrap_or(0);
    if shape && zone && (1..=12).contains(&month) && (1..=31).contains(&day) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// The raw file layout, with the span of each entry for error messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    schema: u32,
    #[serde(default)]
    models: Vec<toml::Spanned<Entry>>,
}

impl Registry {
    /// An empty registry of the current schema.
    pub fn new() -> Self {
        Self {
            schema: SCHEMA_VERSION,
            models: Vec::new(),
        }
    }

    /// Parses `text` read from `path` (used in errors), rejecting unknown schema versions,
    /// unknown keys and inconsistent entries with the line and the reason.
    pub fn parse(text: &str, path: &str) -> Result<Self> {
        let error = |reason: String| ZooError::Registry {
            path: path.to_string(),
            reason,
        };
        let raw: RawRegistry =
            toml::from_str(text).map_err(|e| error(e.to_string().trim_end().to_string()))?;
        if raw.schema != SCHEMA_VERSION {
            return Err(error(format!(
                "schema version {} is not supported (this build reads {SCHEMA_VERSION})",
                raw.schema
            )));
        }
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let mut seen = HashSet::new();
        let mut models = Vec::with_capacity(raw.models.len());
        for spanned in raw.models {
            let line = line_of(spanned.span().start);
            let entry = spanned.into_inner();
            let at =
                |reason: String| error(format!("line {line}: entry `{}`: {reason}", entry.id()));
            entry.validate().map_err(at)?;
            if !seen.insert(entry.id()) {
                return Err(at("this name and version appear twice".into()));
            }
            models.push(entry);
        }
        Ok(Self {
            schema: raw.schema,
            models,
        })
    }

    /// The registry embedded in the binary.
    pub fn shipped() -> Result<Self> {
        Self::parse(SHIPPED, "weights.toml (shipped)")
    }

    /// The entry `r` names: its version, or the highest version of that name.
    pub fn find(&self, r: &EntryRef) -> Option<&Entry> {
        self.models
            .iter()
            .filter(|e| e.name == r.name && r.version.is_none_or(|v| v == e.version))
            .max_by_key(|e| e.version)
    }

    /// The file as TOML, entries in order.
    pub fn to_toml(&self) -> Result<String> {
        let mut text = String::from(
            "# The tricks model zoo registry: one entry per published checkpoint version.\n\
             # Schema: see the README's \"Model zoo\" section.\n",
        );
        text.push_str(&toml::to_string(self).map_err(|e| ZooError::Config(e.to_string()))?);
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: &str = r#"
schema = 1

[[models]]
name = "resnet50d.test"
version = "1.2.3"
architecture = "resnet50d"
dataset = "imagenet-1k"
num_classes = 1000
source = "test"
license = "apache-2.0"
created = "2026-11-29T12:00:00Z"
metrics = { top1 = 79.078, top5 = 94.468 }
input = { size = [3, 224, 224], mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225], crop_pct = 0.875, interpolation = "bicubic" }
origin = { hub = "timm/resnet50d.gluon_in1k" }
files = [{ role = "safetensors", path = "model.safetensors" }]
"#;

    #[test]
    fn shipped_registry_parses_and_has_the_gluon_weights() {
        let registry = Registry::shipped().unwrap();
        assert_eq!(registry.schema, SCHEMA_VERSION);
        let r: EntryRef = "resnet50d.gluon_in1k".parse().unwrap();
        let entry = registry.find(&r).expect("resnet50d.gluon_in1k ships");
        assert_eq!(entry.metrics["top1"], 79.078);
        for name in [
            "inception_v3.tv_in1k",
            "inception_v3.gluon_in1k",
            "mobilenetv1_100.ra4_e3600_r224_in1k",
        ] {
            assert!(
                registry.find(&name.parse().unwrap()).is_some(),
                "{name} missing"
            );
        }
        assert_eq!(registry.models.len(), 18);
        assert_eq!(
            entry.origin.hub.as_deref(),
            Some("timm/resnet50d.gluon_in1k")
        );
    }

    #[test]
    fn parses_an_entry_and_round_trips() {
        let registry = Registry::parse(ENTRY, "x.toml").unwrap();
        let entry = &registry.models[0];
        assert_eq!(entry.version, Version(1, 2, 3));
        assert_eq!(entry.input.interpolation, Interpolation::Bicubic);
        let again = Registry::parse(&registry.to_toml().unwrap(), "y.toml").unwrap();
        assert_eq!(again, registry);
    }

    fn error_of(text: &str) -> String {
        Registry::parse(text, "x.toml").unwrap_err().to_string()
    }

    #[test]
    fn rejects_bad_files_with_line_and_reason() {
        assert!(error_of("schema = 2\n").contains("schema version 2"));
        let err = error_of("schema = 1\nfoo = 3\n");
        assert!(
            err.contains("unknown field") && err.contains("line 2"),
            "{err}"
        );
        assert!(error_of("schema = [").starts_with("x.toml"));
        let cases = [
            (
                "version = \"1.2.3\"",
                "version = \"1.2\"",
                "semantic version",
            ),
            (
                "resnet50d\"\ndataset",
                "resnet51x\"\ndataset",
                "unknown model",
            ),
            ("num_classes = 1000", "num_classes = 0", "num_classes"),
            ("source = \"test\"", "", "recipe"),
            ("12:00:00Z", "12:00", "RFC 3339"),
            ("crop_pct = 0.875", "crop_pct = 1.5", "crop_pct"),
            ("\"bicubic\"", "\"lanczos\"", "unknown variant"),
            ("timm/resnet50d.gluon_in1k", "resnet50d", "OWNER/NAME"),
            (
                "path = \"model.safetensors\" }",
                "path = \"model.safetensors\", sha256 = \"abc\", size = 3 }",
                "64 lower-case hex",
            ),
            (
                "path = \"model.safetensors\" }",
                "path = \"../model.safetensors\" }",
                "relative",
            ),
            ("role = \"safetensors\"", "role = \"onnx\"", "weights"),
            (
                "architecture = \"resnet50d\"",
                "task = \"detection\"\narchitecture = \"resnet50d\"",
                "config.json",
            ),
            (
                "architecture = \"resnet50d\"",
                "task = \"captioning\"\narchitecture = \"resnet50d\"",
                "unknown variant",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(ENTRY.contains(from), "{from}");
            let err = error_of(&ENTRY.replacen(from, to, 1));
            assert!(err.contains(expected), "{from} -> {to}: {err}");
            assert!(err.contains("line "), "{err}");
        }
        let twice = format!("{ENTRY}{}", ENTRY.replace("schema = 1", ""));
        let err = error_of(&twice);
        assert!(
            err.contains("appear twice") && err.contains("line 20"),
            "{err}"
        );
    }

    #[test]
    fn a_detector_entry_states_its_task_and_round_trips() {
        let text = ENTRY
            .replace(
                "architecture = \"resnet50d\"",
                "task = \"detection\"\narchitecture = \"resnet50d\"",
            )
            .replace(
                "files = [",
                "files = [{ role = \"config\", path = \"config.json\" }, ",
            );
        let registry = Registry::parse(&text, "x.toml").unwrap();
        assert_eq!(registry.models[0].task, Task::Detection);
        let written = registry.to_toml().unwrap();
        assert!(written.contains("task = \"detection\""), "{written}");
        assert_eq!(Registry::parse(&written, "y.toml").unwrap(), registry);
        // A classifier's entry does not mention its task.
        let plain = Registry::parse(ENTRY, "x.toml").unwrap().to_toml().unwrap();
        assert!(!plain.contains("task"), "{plain}");
    }

    #[test]
    fn finds_latest_or_exact_version() {
        let text = format!(
            "{ENTRY}{}",
            ENTRY.replace("schema = 1", "").replace("1.2.3", "1.10.0")
        );
        let registry = Registry::parse(&text, "x.toml").unwrap();
        let latest = registry.find(&"resnet50d.test".parse().unwrap()).unwrap();
        assert_eq!(latest.version, Version(1, 10, 0));
        let exact = registry
            .find(&"resnet50d.test@1.2.3".parse().unwrap())
            .unwrap();
        assert_eq!(exact.version, Version(1, 2, 3));
        assert!(registry
            .find(&"resnet50d.test@2.0.0".parse().unwrap())
            .is_none());
        assert!("x@1.0".parse::<EntryRef>().is_err());
        assert!("01.0.0".parse::<Version>().is_err());
    }
}
