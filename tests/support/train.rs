//! Helpers of the training tests (`train_cli.rs`, `train_reliability.rs`): running the
//! binary, a small generated dataset, small training flags, comparing weights.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};

pub fn tricks(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tricks"))
        .args(args)
        .output()
        .expect("running tricks")
}

pub fn ok(args: &[&str]) -> String {
    let out = tricks(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Generates the shapes dataset at 40×40 into `out`: `classes` classes of `train` and `val`
/// images each.
pub fn synth(out: &Path, classes: usize, train: usize, val: usize, seed: u64) {
    let n = |v: usize| v.to_string();
    ok(&[
        "data",
        "synth",
        "--out",
        s(out),
        "--classes",
        &n(classes),
        "--train-per-class",
        &n(train),
        "--val-per-class",
        &n(val),
        "--size",
        "40",
        "--seed",
        &seed.to_string(),
    ]);
}

/// A small generated dataset (3 classes of 40×40 images) shared by the tests.
pub fn dataset() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        synth(dir.path(), 3, 32, 6, 3);
        dir
    })
    .path()
}

/// Training flags small enough for a test: 12 batches of 8 per epoch, 32×32 crops.
pub const SMALL: [&str; 10] = [
    "--model",
    "resnet10d_tiny",
    "--batch-size",
    "8",
    "--size",
    "32",
    "--workers",
    "2",
    "--seed",
    "5",
];

pub fn train(recipe: &str, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tricks"));
    cmd.args([
        "train",
        "--recipe",
        recipe,
        "--data",
        s(dataset()),
        "--out",
        s(out),
    ])
    .args(SMALL)
    .args(extra);
    cmd
}

pub fn weights(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

pub fn metrics_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl")).map_or(0, |t| t.lines().count())
}

/// Every tensor of the safetensors file `a` equals `b`'s, bit for bit.
pub fn assert_same_bits(a: &Path, b: &Path) {
    let (a_t, b_t) = (weights(a), weights(b));
    assert_eq!(
        a_t.keys().collect::<std::collections::BTreeSet<_>>(),
        b_t.keys().collect::<std::collections::BTreeSet<_>>(),
        "{} and {} hold different tensors",
        a.display(),
        b.display()
    );
    let bits = |t: &Tensor| -> Vec<u64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .into_iter()
            .map(f64::to_bits)
            .collect()
    };
    for (name, t) in &a_t {
        assert!(
            bits(t) == bits(&b_t[name]),
            "{name} differs: {}",
            b.display()
        );
    }
}

/// Temporary files (`.NAME.tmp-PID`) left in `dir`.
pub fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

/// Starts a run with `fresh` (until `run.json` exists, then continues it with `resume`) and
/// SIGKILLs each attempt once it has finished an epoch of its own, `delays_ms[attempt]`
/// later, so that the kills land at different points of different epochs: right after an
/// epoch's metrics line (between it and the checkpoint, or inside the writes), early in the
/// next epoch, in its middle. Stops once `dir` holds `stop_at` metrics lines; returns how
/// many attempts were killed.
pub fn kill_repeatedly(
    dir: &Path,
    delays_ms: &[u64],
    stop_at: usize,
    fresh: impl Fn() -> Command,
    resume: impl Fn() -> Command,
) -> usize {
    let mut kills = 0;
    for (attempt, delay) in delays_ms.iter().enumerate() {
        let before = metrics_lines(dir);
        if before >= stop_at {
            break;
        }
        // A run killed before it wrote run.json has to start anew.
        let mut cmd = if dir.join("run.json").exists() {
            resume()
        } else {
            fresh()
        };
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while metrics_lines(dir) <= before && child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(120),
                "attempt {attempt} made no progress"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        std::thread::sleep(std::time::Duration::from_millis(*delay));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    kills
}
