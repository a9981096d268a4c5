//! `tricks zoo`: the registries (shipped and local), publishing, and the Hugging Face Hub.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use zoo::export::{export, ExportFormats};
use zoo::local::{sha256_file, FileCheck};
use zoo::registry::{Entry, EntryRef, Origin as HubOrigin, Version};

use crate::weights_ref::{fetch, find_entry, load, registries, Origin, ZooArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub zoo: ZooArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Every entry of the shipped and the local registry, as a table.
    List,
    /// Everything an entry records.
    Show {
        /// NAME or NAME@VERSION.
        entry: String,
    },
    /// Check every local zoo file, and every cached Hub file with a recorded sha256.
    Verify,
    /// Download an entry's files into the Hugging Face cache (verified when pinned).
    Pull {
        /// NAME or NAME@VERSION.
        entry: String,
    },
    /// Download an entry's Hub files and record their size and sha256 in a registry file.
    Pin {
        /// NAME or NAME@VERSION.
        entry: String,
        /// The registry file to update.
        #[arg(long, default_value = "weights.toml")]
        registry: PathBuf,
    },
    /// Export a checkpoint and add it to the local zoo as NAME@VERSION.
    Publish(PublishArgs),
    /// Upload a local zoo entry to a Hub repository in one commit, with a model card.
    Push {
        /// NAME@VERSION of a local zoo entry.
        entry: String,
        /// The Hub repository, OWNER/NAME (created if needed).
        #[arg(long)]
        repo: String,
        /// Create the repository private.
        #[arg(long)]
        private: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// A run directory, a safetensors file (with --model), `zoo:` or `hf:` reference.
    pub checkpoint: String,
    /// Entry name, timm style `architecture.tag` (e.g. `resnet10d_tiny.shapes_tricks`).
    #[arg(long)]
    pub name: String,
    /// Semantic version MAJOR.MINOR.PATCH; an existing version is never overwritten.
    #[arg(long)]
    pub version: String,
    /// Architecture of a bare safetensors file.
    #[arg(long)]
    pub model: Option<String>,
    /// Dataset name (default: the run's data folder name).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Licence (SPDX identifier; default: the source entry's, else apache-2.0).
    #[arg(long)]
    pub license: Option<String>,
    /// NAME@VERSION this checkpoint was fine-tuned from.
    #[arg(long)]
    pub parent: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::List => list(&args.zoo),
        Command::Show { entry } => show(&args.zoo, &entry),
        Command::Verify => verify(&args.zoo),
        Command::Pull { entry } => pull(&args.zoo, &entry),
        Command::Pin { entry, registry } => pin(&args.zoo, &entry, &registry),
        Command::Publish(p) => publish(&args.zoo, p),
        Command::Push {
            entry,
            repo,
            private,
        } => push(&args.zoo, &entry, &repo, private),
    }
}

fn metric(e: &Entry, key: &str) -> String {
    e.metrics.get(key).map_or("-".into(), |v| format!("{v:.2}"))
}

fn list(args: &ZooArgs) -> Result<()> {
    println!(
        "{:<36} {:<8} {:<16} {:<12} {:>6} {:>6}  {:<8} {:<7}",
        "name", "version", "architecture", "dataset", "top1", "top5", "registry", "sha256"
    );
    for (origin, registry) in registries(&args.local())? {
        for e in &registry.models {
            let pinned = e.files.iter().all(|f| f.sha256.is_some());
            println!(
                "{:<36} {:<8} {:<16} {:<12} {:>6} {:>6}  {:<8} {:<7}",
                e.name,
                e.version.to_string(),
                e.architecture,
                e.dataset,
                metric(e, "top1"),
                metric(e, "top5"),
                origin.label(),
                if pinned { "pinned" } else { "-" }
            );
        }
    }
    Ok(())
}

fn show(args: &ZooArgs, entry: &str) -> Result<()> {
    let (origin, e) = find_entry(&args.local(), &entry.parse()?)?;
    println!("# {} ({} registry)", e.id(), origin.label());
    let text = toml::to_string_pretty(&e).context("formatting the entry")?;
    print!("{text}");
    Ok(())
}

fn verify(args: &ZooArgs) -> Result<()> {
    let zoo = args.local();
    let mut bad = 0;
    for (id, file, check) in zoo.verify()? {
        let status = match check {
            FileCheck::Ok => "ok".to_string(),
            FileCheck::Missing => {
                bad += 1;
                "MISSING".to_string()
            }
            FileCheck::Mismatch(found) => {
                bad += 1;
                format!("MISMATCH (found {found})")
            }
        };
        println!("local    {id:<36} {:<20} {status}", file.path);
    }
    // Hub files: only those already in the cache can be checked without the network.
    let cache_only = zoo::hub::Hub::from_env(true)?;
    for (_, registry) in registries(&zoo)? {
        for e in registry.models.iter().filter(|e| e.origin.hub.is_some()) {
            for f in &e.files {
                let Some(sha) = &f.sha256 else {
                    println!("hub      {:<36} {:<20} not pinned", e.id(), f.path);
                    continue;
                };
                let repo = e.origin.hub.as_deref().unwrap_or_default();
                let status =
                    match cache_only.download(repo, e.origin.revision(), &f.path, Some(sha)) {
                        Ok(_) => "ok".to_string(),
                        Err(err) if err.to_string().contains("mismatch") => {
                            bad += 1;
                            format!("MISMATCH: {err}")
                        }
                        Err(_) => "not cached".to_string(),
                    };
                println!("hub      {:<36} {:<20} {status}", e.id(), f.path);
            }
        }
    }
    if bad > 0 {
        bail!("{bad} file(s) failed verification");
    }
    Ok(())
}

fn pull(args: &ZooArgs, entry: &str) -> Result<()> {
    let zoo = args.local();
    let (_, e) = find_entry(&zoo, &entry.parse()?)?;
    let hub = args.hub()?;
    for f in &e.files {
        let path = fetch(&zoo, &hub, &e, f.role)?;
        let note = match &f.sha256 {
            Some(_) => "sha256 verified".to_string(),
            None => format!(
                "not pinned (sha256 {}; `tricks zoo pin {}` records it)",
                sha256_file(&path)?.0,
                e.id()
            ),
        };
        println!("{:<20} {}  {note}", f.path, path.display());
    }
    Ok(())
}

fn pin(args: &ZooArgs, entry: &str, registry: &Path) -> Result<()> {
    let r: EntryRef = entry.parse()?;
    let text = std::fs::read_to_string(registry)
        .with_context(|| format!("reading {}", registry.display()))?;
    let parsed = zoo::registry::Registry::parse(&text, &registry.display().to_string())?;
    let e = parsed
        .find(&r)
        .with_context(|| format!("{} has no entry {r}", registry.display()))?
        .clone();
    let Some(repo) = e.origin.hub.as_deref() else {
        bail!(
            "{} is not a Hub entry: local files are pinned when published",
            e.id()
        );
    };
    let hub = args.hub()?;
    let mut doc: toml_edit::DocumentMut =
        text.parse().context("parsing the registry for editing")?;
    let models = doc["models"]
        .as_array_of_tables_mut()
        .context("`models` is not an array of tables")?;
    let table = models
        .iter_mut()
        .find(|t| {
            t.get("name").and_then(|v| v.as_str()) == Some(e.name.as_str())
                && t.get("version").and_then(|v| v.as_str()) == Some(e.version.to_string().as_str())
        })
        .context("entry not found for editing")?;
    let files = table["files"]
        .as_array_mut()
        .context("`files` must be an inline array")?;
    for (i, f) in e.files.iter().enumerate() {
        let path = hub.download(repo, e.origin.revision(), &f.path, f.sha256.as_deref())?;
        let (sha, size) = sha256_file(&path)?;
        let file = files
            .get_mut(i)
            .and_then(|v| v.as_inline_table_mut())
            .context("each file must be an inline table")?;
        file.insert("size", (size as i64).into());
        file.insert("sha256", sha.clone().into());
        println!("{:<20} {size:>12} bytes  sha256 {sha}", f.path);
    }
    table.remove("notes");
    let new_text = doc.to_string();
    zoo::registry::Registry::parse(&new_text, "pinned registry")?;
    zoo::local::write_atomically(registry, new_text.as_bytes())?;
    println!("pinned {} in {}", e.id(), registry.display());
    Ok(())
}

/// The current time as RFC 3339 UTC.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn publish(args: &ZooArgs, p: PublishArgs) -> Result<()> {
    let version: Version = p.version.parse().map_err(anyhow::Error::msg)?;
    let loaded = load(&p.checkpoint, p.model.as_deref(), args)?;
    let zoo = args.local();
    let staging = staging_dir(&zoo, &format!("publish-{}", p.name))?;
    let formats = ExportFormats {
        safetensors: true,
        onnx: true,
    };
    let mut meta = loaded.meta.clone();
    meta.tag = p.name.split_once('.').map(|(_, t)| t.to_string());
    let files = export(&loaded.model, &meta, formats, &staging)?;
    let prov = loaded.provenance;
    let entry = Entry {
        name: p.name.clone(),
        version,
        architecture: loaded.model.spec.name.clone(),
        dataset: p
            .dataset
            .or(prov.dataset)
            .unwrap_or_else(|| "unknown".into()),
        num_classes: loaded.model.spec.num_classes(),
        recipe: prov.recipe,
        source: prov
            .source
            .or_else(|| Some(format!("exported from {}", p.checkpoint))),
        tricks: prov.tricks,
        parent: p.parent.or(prov.parent),
        license: p
            .license
            .or(prov.license)
            .unwrap_or_else(|| "apache-2.0".into()),
        created: now_rfc3339(),
        notes: None,
        metrics: prov.metrics,
        input: loaded.meta.input,
        origin: HubOrigin {
            hub: None,
            revision: None,
        },
        files: vec![],
    };
    let result = zoo.publish(entry, &files);
    let _ = std::fs::remove_dir_all(&staging);
    let entry = result?;
    println!("published {} in {}", entry.id(), zoo.root().display());
    for f in &entry.files {
        println!(
            "  {:<20} {:>10} bytes  sha256 {}",
            f.path,
            f.size.unwrap_or(0),
            f.sha256.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// The Hub model card: YAML front matter (library, tags, datasets, metrics as a
/// model-index) and a description with the metrics, the recipe and its tricks.
pub fn model_card(e: &Entry, repo: &str) -> String {
    let mut card = String::from("---\nlibrary_name: timm\n");
    card.push_str(&format!("license: {}\n", e.license));
    card.push_str("tags:\n- image-classification\n- timm\n- tricks\n- bag-of-tricks\n");
    for t in &e.tricks {
        card.push_str(&format!("- {}\n", t.replace('_', "-")));
    }
    card.push_str(&format!(
        "datasets:\n- {}\nmetrics:\n- accuracy\n",
        e.dataset
    ));
    card.push_str(&format!(
        "model-index:\n- name: {}\n  results:\n  - task:\n      type: image-classification\n    dataset:\n      name: {}\n      type: {}\n    metrics:\n",
        e.name, e.dataset, e.dataset
    ));
    for (key, label) in [("top1", "Top-1 accuracy"), ("top5", "Top-5 accuracy")] {
        if let Some(v) = e.metrics.get(key) {
            card.push_str(&format!(
                "    - type: accuracy\n      name: {label}\n      value: {v:.3}\n"
            ));
        }
    }
    card.push_str("---\n\n");
    card.push_str(&format!("# {}\n\n", e.name));
    card.push_str(&format!(
        "A `{}` image classifier ({} classes, dataset `{}`), version {}, made with tricks: the \
         *Bag of Tricks for Image Classification* (He et al., CVPR 2019) in Rust. Tensor names \
         are timm's.\n\n## Usage\n\n```python\nimport timm\nmodel = timm.create_model(\"hf-hub:{repo}\", pretrained=True)\n```\n\n\
         With a timm that cannot reach the Hub itself, load the downloaded files:\n\n```python\n\
         import json, timm\nfrom huggingface_hub import hf_hub_download\n\
         cfg = json.load(open(hf_hub_download(\"{repo}\", \"config.json\")))\n\
         model = timm.create_model(cfg[\"architecture\"], pretrained=True, num_classes=cfg[\"num_classes\"],\n\
             pretrained_cfg_overlay=dict(cfg[\"pretrained_cfg\"], file=hf_hub_download(\"{repo}\", \"model.safetensors\")))\n```\n\n\
         In Rust: `tricks predict --weights hf:{repo} IMAGE`.\n\n",
        e.architecture, e.num_classes, e.dataset, e.version
    ));
    card.push_str("## Metrics\n\n| metric | value |\n|---|---|\n");
    for (k, v) in &e.metrics {
        card.push_str(&format!("| {k} | {v:.3} |\n"));
    }
    card.push_str("\n## Training\n\n");
    if e.tricks.is_empty() {
        card.push_str("Tricks of the paper used: none (the baseline).\n\n");
    } else {
        card.push_str(&format!(
            "Tricks of the paper used: {}.\n\n",
            e.tricks.join(", ")
        ));
    }
    if let Some(parent) = &e.parent {
        card.push_str(&format!("Fine-tuned from `{parent}`.\n\n"));
    }
    if let Some(recipe) = &e.recipe {
        card.push_str(&format!(
            "Recipe:\n\n```toml\n{}\n```\n\n",
            recipe.trim_end()
        ));
    }
    let i = &e.input;
    card.push_str(&format!(
        "## Input\n\n{}×{} RGB, resized ({}) so the crop keeps {:.3} of the short side, centre-cropped, \
         normalised with mean {:?} and std {:?}.\n\n## Files\n\n`model.safetensors` (timm names), \
         `config.json` (timm `pretrained_cfg`), `model.onnx` (opset 19, input `input`, output `logits`).\n",
        i.size[1], i.size[2], i.interpolation.as_str(), i.crop_pct, i.mean, i.std
    ));
    card
}

fn push(args: &ZooArgs, entry: &str, repo: &str, private: bool) -> Result<()> {
    let r: EntryRef = entry.parse()?;
    if r.version.is_none() {
        bail!("push needs NAME@VERSION");
    }
    let zoo = args.local();
    let (origin, e) = find_entry(&zoo, &r)?;
    if origin != Origin::Local {
        bail!(
            "{} is a shipped entry; push publishes local zoo entries",
            e.id()
        );
    }
    let hub = args.hub()?;
    let staging = staging_dir(&zoo, &format!("push-{}", e.id()))?;
    let mut files = Vec::new();
    for f in &e.files {
        let path = fetch(&zoo, &hub, &e, f.role)?;
        let named = staging.join(&f.path);
        std::fs::copy(&path, &named).with_context(|| format!("staging {}", f.path))?;
        files.push((f.path.clone(), named));
    }
    let card = staging.join("README.md");
    std::fs::write(&card, model_card(&e, repo))?;
    files.push(("README.md".to_string(), card));
    let result = hub.push(
        repo,
        private,
        &files,
        &format!("Upload {} with tricks", e.id()),
    );
    let _ = std::fs::remove_dir_all(&staging);
    let commit = result?;
    println!("pushed {} to {repo} (commit {commit})", e.id());
    Ok(())
}

/// A fresh working directory `ZOO/staging/<label>-<pid>` for files on their way into the zoo
/// or to the Hub; the caller removes it.
fn staging_dir(zoo: &zoo::local::LocalZoo, label: &str) -> Result<PathBuf> {
    let dir = zoo
        .root()
        .join("staging")
        .join(format!("{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
