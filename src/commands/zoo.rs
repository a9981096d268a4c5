//! `tricks zoo`: the registries (shipped and local), publishing, and the Hugging Face Hub.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use transfer::detection::SavedDetector;
use zoo::local::{sha256_file, FileCheck};
use zoo::publish::PublishRequest;
use zoo::reference::WeightsRef;
use zoo::registry::{Entry, EntryRef, Task, Version};

use crate::weights_ref::ZooArgs;

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
        entry: EntryRef,
    },
    /// Check every local zoo file, and every cached Hub file with a recorded sha256.
    Verify,
    /// Download an entry's files into the Hugging Face cache (verified when pinned).
    Pull {
        /// NAME or NAME@VERSION.
        entry: EntryRef,
    },
    /// Download an entry's Hub files and record their size and sha256 in a registry file.
    Pin {
        /// NAME or NAME@VERSION.
        entry: EntryRef,
        /// The registry file to update.
        #[arg(long, default_value = "weights.toml")]
        registry: PathBuf,
    },
    /// Export a checkpoint and add it to the local zoo as NAME@VERSION.
    Publish(PublishArgs),
    /// Upload a local zoo entry to a Hub repository in one commit, with a model card.
    Push {
        /// NAME@VERSION of a local zoo entry.
        entry: EntryRef,
        /// The Hub repository, OWNER/NAME (created if needed).
        #[arg(long, value_parser = parse_repo)]
        repo: String,
        /// Create the repository private.
        #[arg(long)]
        private: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// A run directory, a safetensors file (with --model), `zoo:` or `hf:` reference.
    pub checkpoint: WeightsRef,
    /// Entry name, timm style `architecture.tag` (e.g. `resnet10d_tiny.shapes_tricks`).
    #[arg(long)]
    pub name: String,
    /// Semantic version MAJOR.MINOR.PATCH; an existing version is never overwritten.
    #[arg(long)]
    pub version: Version,
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
    /// A detector's ONNX input size, HEIGHTxWIDTH (default: its shorter side `min_size`,
    /// 4:3 landscape).
    #[arg(long, value_parser = crate::commands::export::parse_size)]
    pub onnx_size: Option<[usize; 2]>,
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

/// An entry's headline metrics: top-1/top-5 of a classifier, the two mAPs of a detector.
fn headline(e: &Entry) -> [String; 2] {
    let keys = match e.task {
        Task::Classification => ["top1", "top5"],
        Task::Detection => ["map07", "map"],
        Task::Segmentation => ["pixacc", "miou"],
    };
    keys.map(|k| metric(e, k))
}

fn list(args: &ZooArgs) -> Result<()> {
    // The two metric columns: top-1/top-5 of classifiers, VOC2007/area mAP of detectors.
    println!(
        "{:<36} {:<8} {:<14} {:<16} {:<12} {:>10} {:>8}  {:<8} {:<7}",
        "name",
        "version",
        "task",
        "architecture",
        "dataset",
        "top1|map07",
        "top5|map",
        "registry",
        "sha256"
    );
    for (origin, registry) in args.context().registries()? {
        for e in &registry.models {
            let pinned = e.files.iter().all(|f| f.sha256.is_some());
            let [m1, m2] = headline(e);
            println!(
                "{:<36} {:<8} {:<14} {:<16} {:<12} {:>10} {:>8}  {:<8} {:<7}",
                e.name,
                e.version.to_string(),
                e.task.as_str(),
                e.architecture,
                e.dataset,
                m1,
                m2,
                origin.label(),
                if pinned { "pinned" } else { "-" }
            );
        }
    }
    Ok(())
}

fn show(args: &ZooArgs, entry: &EntryRef) -> Result<()> {
    let (origin, e) = args.context().find_entry(entry)?;
    println!("# {} ({} registry)", e.id(), origin.label());
    let text = toml::to_string_pretty(&e).context("formatting the entry")?;
    print!("{text}");
    Ok(())
}

fn verify(args: &ZooArgs) -> Result<()> {
    let ctx = args.context();
    let zoo = &ctx.local;
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
    for (_, registry) in ctx.registries()? {
        for e in registry.models.iter().filter(|e| e.origin.hub.is_some()) {
            for f in &e.files {
                let Some(sha) = &f.sha256 else {
                    println!("hub      {:<36} {:<20} not pinned", e.id(), f.path);
                    continue;
                };
                let repo = e.origin.hub.as_deref().unwrap_or_default();
                let status =
                    match cache_only.download(repo, e.origin.revision(), &f.path, Some(sha)) {
                        Ok(path) => match zoo::local::check_recorded(&path, f)? {
                            FileCheck::Ok => "ok".to_string(),
                            FileCheck::Missing => "not cached".to_string(),
                            FileCheck::Mismatch(found) => {
                                bad += 1;
                                format!("MISMATCH: {found}")
                            }
                        },
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

fn pull(args: &ZooArgs, entry: &EntryRef) -> Result<()> {
    let ctx = args.context();
    let (_, e) = ctx.find_entry(entry)?;
    for f in &e.files {
        let path = ctx.fetch(&e, f.role)?;
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

fn pin(args: &ZooArgs, entry: &EntryRef, registry: &Path) -> Result<()> {
    let (e, files) = zoo::publish::pin(&args.context(), registry, entry)?;
    for f in files {
        println!("{:<20} {:>12} bytes  sha256 {}", f.path, f.size, f.sha256);
    }
    println!("pinned {} in {}", e.id(), registry.display());
    Ok(())
}

fn publish(args: &ZooArgs, p: PublishArgs) -> Result<()> {
    let ctx = args.context();
    let request = PublishRequest {
        name: p.name,
        version: p.version,
        dataset: p.dataset,
        license: p.license,
        parent: p.parent,
        source: format!("exported from {}", p.checkpoint),
    };
    let entry = match transfer::saved::task_of(&p.checkpoint, &ctx)? {
        Task::Detection => {
            let det = SavedDetector::load(&p.checkpoint, &ctx)?;
            let size = p.onnx_size.unwrap_or_else(|| det.default_onnx_size());
            det.publish(&ctx, request, size)?
        }
        Task::Segmentation => {
            if p.onnx_size.is_some() {
                bail!("--onnx-size is for detectors: a segmenter's ONNX graph takes any size");
            }
            transfer::segmentation::SavedSegmenter::load(&p.checkpoint, &ctx)?
                .publish(&ctx, request)?
        }
        Task::Classification => {
            if p.onnx_size.is_some() {
                bail!("--onnx-size is for detectors: a classifier's ONNX graph takes any size");
            }
            let loaded = training::weights::load(&p.checkpoint, p.model.as_deref(), &ctx)?;
            zoo::publish::publish(&ctx, &loaded, request)?
        }
    };
    let zoo = &ctx.local;
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

fn push(args: &ZooArgs, entry: &EntryRef, repo: &str, private: bool) -> Result<()> {
    let (e, commit) = zoo::publish::push(&args.context(), entry, repo, private)?;
    println!("pushed {} to {repo} (commit {commit})", e.id());
    Ok(())
}

/// A Hub repository id, checked before anything is sent.
fn parse_repo(s: &str) -> Result<String, String> {
    zoo::hub::check_repo_id(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}
