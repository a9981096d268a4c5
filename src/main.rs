//! `tricks`: the Bag of Tricks model zoo, trainer and transfer pipeline in one binary.

/// mimalloc keeps freed pages for reuse; glibc returns every large buffer (activations,
/// gradients) to the kernel and page-faults it back on the next step.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (include/mimalloc.h).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hand freed memory back to the kernel. A step allocates and frees the same large
/// activation and gradient buffers over and over; with mimalloc's default purge delay they
/// went back to the kernel between uses, and zeroing the pages on the next fault
/// (`clear_page_erms`) took a quarter of ResNet-50-D's inference time. The process keeps its
/// peak footprint instead, as PyTorch's caching allocator does.
fn keep_freed_memory() {
    // SAFETY: sets a plain integer option; mimalloc reads it on its next purge decision.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

mod commands;
mod device;
mod draw;
mod plot;
mod progress;
mod weights_ref;

use clap::{Parser, Subcommand};

/// Bag of Tricks for Image Classification (He et al., CVPR 2019) in Rust.
#[derive(Debug, Parser)]
#[command(name = "tricks", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline offline on generated data and write a report.
    Demo(commands::demo::Args),
    /// List every architecture with its parameter count and GMACs at its default input size.
    Models(commands::models::Args),
    /// Write freshly initialised weights of a model (Section 2.1: Xavier, zero biases, γ = 1).
    Init(commands::init::Args),
    /// Run a model on an input tensor and write its logits (and stage features).
    Forward(commands::forward::Args),
    /// Make datasets (`data synth`: the procedural shapes set in the ImageNet layout).
    Data(commands::data::Args),
    /// Train a model on a folder of images with a recipe, or resume a run.
    Train(Box<commands::train::Args>),
    /// The paper's Tables 4 and 6 as one command: each row the previous plus one
    /// refinement, trained over several seeds; a Markdown and JSON table of top-1/top-5.
    Ablate(Box<commands::ablate::Args>),
    /// Top-1/top-5 and the logit gap of a model on a validation folder; `eval detection`:
    /// the VOC metric of detections in the devkit format.
    #[command(args_conflicts_with_subcommands = true)]
    Eval(commands::eval::Args),
    /// Fine-tune a zoo backbone for another task (`transfer detect`: Faster R-CNN on VOC).
    Transfer(commands::transfer::Args),
    /// Print a recipe's learning rate for every update (CSV).
    Schedule(Box<commands::schedule::Args>),
    /// Time inference or a training step (forward, backward, NAG update) of a model.
    Bench(commands::bench::Args),
    /// Export a checkpoint: safetensors + config.json (timm's for a classifier), and ONNX.
    Export(commands::export::Args),
    /// The model zoo: list, show, verify, publish; pull from and push to the Hugging Face Hub.
    Zoo(commands::zoo::Args),
    /// For each image: a classifier's top classes, or a detector's boxes drawn and as JSON.
    Predict(commands::predict::Args),
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    let result = match Cli::parse().command {
        Command::Demo(args) => commands::demo::run(args),
        Command::Models(args) => commands::models::run(args),
        Command::Init(args) => commands::init::run(args),
        Command::Forward(args) => commands::forward::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Data(args) => commands::data::run(args),
        Command::Train(args) => commands::train::run(*args),
        Command::Ablate(args) => commands::ablate::run(*args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Transfer(args) => commands::transfer::run(args),
        Command::Schedule(args) => commands::schedule::run(*args),
        Command::Export(args) => commands::export::run(args),
        Command::Zoo(args) => commands::zoo::run(args),
        Command::Predict(args) => commands::predict::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A reader that stops early (`tricks models | head`) is not a failure.
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once: errors that already include
/// their cause in their message (as `thiserror` variants do) would otherwise repeat it,
/// and so would a context that the error's own message starts with.
fn describe(e: &anyhow::Error) -> String {
    let mut pieces: Vec<String> = Vec::new();
    for link in e.chain() {
        let text = link.to_string();
        if pieces.iter().any(|p| p.contains(&text)) {
            continue;
        }
        match pieces.last_mut() {
            Some(last) if text.contains(last.as_str()) => *last = text,
            _ => pieces.push(text),
        }
    }
    pieces.join(": ")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::IsADirectory, "Is a directory");
        let e = anyhow::Error::new(io)
            .context("writing out/w: Is a directory")
            .context("writing out/w");
        assert_eq!(describe(&e), "writing out/w: Is a directory");
        let e = anyhow::anyhow!("disk full").context("saving the checkpoint");
        assert_eq!(describe(&e), "saving the checkpoint: disk full");
    }
}
