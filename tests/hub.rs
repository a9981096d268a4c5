//! The Hugging Face Hub both ways, against a local server on 127.0.0.1 that answers the
//! Hub's HTTP API (tests/support/hub_server.rs): pulling into the standard cache with
//! verification, offline use, publishing and pushing, and every failure path (401, 404, a
//! truncated download, a sha256 mismatch, the network down). The server's fidelity is
//! checked by pulling from it with the official `huggingface_hub` client.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use support::hub_server::{sha256, Faults, HubServer};
use support::python::{python_optional, python_with};
use zoo::models::{create_model, ModelSpec};

/// A scratch home: HF cache, local zoo, images, exported files.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `tricks args` with the Hub at `endpoint`, the cache and zoo in this home, no token.
    fn run(&self, endpoint: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tricks"));
        cmd.args(args)
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HOME", self.path("hf"))
            .env("HF_HUB_CACHE", self.path("hf/hub"))
            .env("TRICKS_ZOO", self.path("zoo"))
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_OFFLINE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("running tricks")
    }

    fn ok(&self, endpoint: &str, env: &[(&str, &str)], args: &[&str]) -> String {
        let out = self.run(endpoint, env, args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "tricks {args:?} failed: {text}");
        text
    }

    fn fails(
        &self,
        endpoint: &str,
        env: &[(&str, &str)],
        args: &[&str],
        needles: &[&str],
    ) -> String {
        let out = self.run(endpoint, env, args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "tricks {args:?} succeeded");
        println!("tricks {args:?}: {err}");
        assert!(!err.contains("panicked"), "tricks {args:?} panicked: {err}");
        for needle in needles {
            assert!(
                err.contains(needle),
                "tricks {args:?}: `{needle}` not in: {err}"
            );
        }
        err
    }

    /// A small image to predict on.
    fn image(&self) -> String {
        let path = self.path("cat.png");
        image::RgbImage::from_fn(80, 60, |x, y| {
            image::Rgb([(x * 3) as u8, (y * 4) as u8, 128])
        })
        .save(&path)
        .unwrap();
        path.to_string_lossy().into_owned()
    }
}

/// `model.safetensors` and `config.json` of a random `name` in timm's Hub layout.
fn timm_files(name: &str, classes: usize, dir: &Path) -> Vec<(String, Vec<u8>)> {
    let spec = ModelSpec::find(name).unwrap().with_num_classes(classes);
    let model = create_model(&spec, &Device::Cpu, 3).unwrap();
    let meta = zoo::export::ExportMeta {
        tag: Some("test".into()),
        input: zoo::registry::InputConfig::imagenet(spec.input_size.1),
        labels: None,
    };
    let formats = zoo::export::ExportFormats {
        safetensors: true,
        onnx: false,
    };
    zoo::export::export(&model, &meta, formats, dir).unwrap();
    ["model.safetensors", "config.json"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
        .collect()
}

fn serve(server: &HubServer, repo: &str, files: &[(String, Vec<u8>)]) {
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    server.add_repo(repo, &files);
}

/// A local-zoo registry with one Hub entry for `repo` whose weights must hash to `sha`.
fn pinned_local_entry(home: &Home, repo: &str, sha: &str, size: usize) {
    std::fs::create_dir_all(home.path("zoo")).unwrap();
    let text = format!(
        r#"schema = 1

[[models]]
name = "resnet10d_tiny.pinned"
version = "1.0.0"
architecture = "resnet10d_tiny"
dataset = "shapes"
num_classes = 4
source = "test server"
license = "mit"
created = "2026-11-29T12:00:00Z"
metrics = {{ top1 = 50.0 }}
input = {{ size = [3, 64, 64], mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225], crop_pct = 0.875, interpolation = "bicubic" }}
origin = {{ hub = "{repo}" }}
files = [{{ role = "safetensors", path = "model.safetensors", size = {size}, sha256 = "{sha}" }}]
"#
    );
    std::fs::write(home.path("zoo/weights.toml"), text).unwrap();
}

#[test]
fn hf_reference_downloads_into_the_standard_cache_and_predicts() {
    let server = HubServer::start();
    let home = Home::new();
    let files = timm_files("resnet10d_tiny", 4, &home.path("src"));
    serve(&server, "acme/tiny.test", &files);
    let image = home.image();
    let out = home.ok(
        &server.endpoint,
        &[],
        &[
            "predict",
            "--weights",
            "hf:acme/tiny.test",
            "--top",
            "3",
            &image,
        ],
    );
    assert_eq!(
        out.lines().filter(|l| l.contains("class ")).count(),
        3,
        "{out}"
    );
    // The standard cache layout, shared with Python's huggingface_hub.
    let repo = home.path("hf/hub/models--acme--tiny.test");
    let commit = std::fs::read_to_string(repo.join("refs/main")).unwrap();
    let snapshot = repo
        .join("snapshots")
        .join(commit.trim())
        .join("model.safetensors");
    assert_eq!(std::fs::read(&snapshot).unwrap(), files[0].1);
    assert!(repo.join("blobs").join(sha256(&files[0].1)).exists());

    // Offline, from the cache: with the flag, with HF_HUB_OFFLINE, and with the network down.
    let down = "http://127.0.0.1:9";
    home.ok(
        down,
        &[],
        &[
            "predict",
            "--offline",
            "--weights",
            "hf:acme/tiny.test",
            &image,
        ],
    );
    home.ok(
        down,
        &[("HF_HUB_OFFLINE", "1")],
        &["predict", "--weights", "hf:acme/tiny.test", &image],
    );
    // Nothing cached and no network: a clear error.
    home.fails(
        down,
        &[],
        &["predict", "--weights", "hf:acme/other", &image],
        &["Hugging Face Hub"],
    );
    home.fails(
        &server.endpoint,
        &[],
        &["predict", "--offline", "--weights", "hf:acme/other", &image],
        &["offline"],
    );
}

#[test]
fn missing_repo_and_file_are_clear_errors() {
    let server = HubServer::start();
    let home = Home::new();
    server.add_repo("acme/empty", &[("README.md", b"hi")]);
    let image = home.image();
    home.fails(
        &server.endpoint,
        &[],
        &["predict", "--weights", "hf:acme/nothing", &image],
        &["not found"],
    );
    home.fails(
        &server.endpoint,
        &[],
        &["predict", "--weights", "hf:acme/empty", &image],
        &["config.json"],
    );
}

#[test]
fn token_is_sent_and_never_shown() {
    let server = HubServer::start();
    let home = Home::new();
    let files = timm_files("resnet10d_tiny", 4, &home.path("src"));
    serve(&server, "acme/private", &files);
    server.set_faults(Faults {
        token: Some("hf_right_token".into()),
        ..Default::default()
    });
    let image = home.image();
    let args = ["predict", "--weights", "hf:acme/private", image.as_str()];
    home.fails(&server.endpoint, &[], &args, &["Authentication required"]);
    let err = home.fails(
        &server.endpoint,
        &[("HF_TOKEN", "hf_wrong_secret")],
        &args,
        &["Authentication required"],
    );
    assert!(!err.contains("hf_wrong_secret"), "token leaked: {err}");
    home.ok(&server.endpoint, &[("HF_TOKEN", "hf_right_token")], &args);
}

#[test]
fn truncated_download_fails_and_leaves_nothing_in_the_cache() {
    let server = HubServer::start();
    let home = Home::new();
    let files = timm_files("resnet10d_tiny", 4, &home.path("src"));
    serve(&server, "acme/tiny", &files);
    server.set_faults(Faults {
        truncate: true,
        ..Default::default()
    });
    let image = home.image();
    home.fails(
        &server.endpoint,
        &[],
        &["predict", "--weights", "hf:acme/tiny", &image],
        &["Hugging Face Hub"],
    );
    let snapshots = home.path("hf/hub/models--acme--tiny/snapshots");
    let complete: Vec<_> = walk(&snapshots)
        .into_iter()
        .filter(|p| p.ends_with("model.safetensors"))
        .collect();
    assert!(
        complete.is_empty(),
        "a truncated file reached the cache: {complete:?}"
    );
}

#[test]
fn sha256_mismatch_is_refused_and_the_download_deleted() {
    let server = HubServer::start();
    let home = Home::new();
    let files = timm_files("resnet10d_tiny", 4, &home.path("src"));
    serve(&server, "acme/pinned", &files);
    let good = sha256(&files[0].1);
    pinned_local_entry(&home, "acme/pinned", &good, files[0].1.len());
    // The right bytes verify.
    let out = home.ok(
        &server.endpoint,
        &[],
        &["zoo", "pull", "resnet10d_tiny.pinned"],
    );
    assert!(out.contains("sha256 verified"), "{out}");
    // Bytes changed on the server (same length, new ETag): refused, and deleted.
    let home2 = Home::new();
    pinned_local_entry(&home2, "acme/pinned", &good, files[0].1.len());
    server.set_faults(Faults {
        corrupt: true,
        ..Default::default()
    });
    // A corrupted body with the original ETag: the hash check is the only defence.
    home2.fails(
        &server.endpoint,
        &[],
        &["zoo", "pull", "resnet10d_tiny.pinned"],
        &["sha256 mismatch", "deleted"],
    );
    let left: Vec<_> = walk(&home2.path("hf/hub"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    assert!(
        !left.iter().any(|p| std::fs::read(p)
            .map(|b| b.len() == files[0].1.len())
            .unwrap_or(false)),
        "bad file kept: {left:?}"
    );
}

#[test]
fn publish_push_and_pull_back() {
    let server = HubServer::start();
    let home = Home::new();
    let src = home.path("src");
    timm_files("resnet10d_tiny", 4, &src);
    let weights = src.join("model.safetensors");
    let weights = weights.to_str().unwrap();
    let publish = |version: &str| {
        home.run(
            &server.endpoint,
            &[],
            &[
                "zoo",
                "publish",
                weights,
                "--name",
                "resnet10d_tiny.mine",
                "--version",
                version,
            ],
        )
    };
    let out = publish("0.1.0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Versions are immutable.
    let again = publish("0.1.0");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already published"));
    // A parent that exists in neither registry is refused, not recorded.
    let orphan = home.run(
        &server.endpoint,
        &[],
        &[
            "zoo",
            "publish",
            weights,
            "--name",
            "resnet10d_tiny.orphan",
            "--version",
            "0.1.0",
            "--parent",
            "nothere@1.0.0",
        ],
    );
    assert!(!orphan.status.success());
    let err = String::from_utf8_lossy(&orphan.stderr);
    assert!(
        err.contains("nothere@1.0.0") && err.contains("neither registry"),
        "{err}"
    );
    // A Hub repository id the Hub would refuse is refused before anything is sent.
    let bad = home.run(
        &server.endpoint,
        &[],
        &[
            "zoo",
            "push",
            "resnet10d_tiny.mine@0.1.0",
            "--repo",
            "me/bad name",
        ],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("not a Hub repository id"), "{err}");
    let list = home.ok(&server.endpoint, &[], &["zoo", "list"]);
    assert!(
        list.lines()
            .any(|l| l.contains("resnet10d_tiny.mine") && l.contains("local")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.contains("resnet50d.gluon_in1k") && l.contains("shipped")),
        "{list}"
    );
    home.ok(&server.endpoint, &[], &["zoo", "verify"]);

    let out = home.ok(
        &server.endpoint,
        &[("HF_TOKEN", "hf_push_token")],
        &[
            "zoo",
            "push",
            "resnet10d_tiny.mine@0.1.0",
            "--repo",
            "me/tiny",
            "--private",
        ],
    );
    assert!(!out.contains("hf_push_token"), "{out}");
    let pushed = server.files("me/tiny").expect("repository created");
    let names: Vec<&str> = pushed.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "README.md",
            "config.json",
            "model.onnx",
            "model.safetensors"
        ]
    );
    assert_eq!(server.commits("me/tiny"), 2, "creation + one upload commit");
    assert!(server.is_private("me/tiny"));
    let card = String::from_utf8(pushed["README.md"].clone()).unwrap();
    assert!(card.starts_with("---\nlibrary_name: timm\n"), "{card}");
    for needle in ["tags:", "datasets:", "metrics:", "model-index:"] {
        assert!(
            card.contains(needle),
            "{needle} missing from the card:\n{card}"
        );
    }
    assert_eq!(pushed["model.safetensors"], std::fs::read(weights).unwrap());

    // What was pushed runs when pulled back.
    let image = home.image();
    home.ok(
        &server.endpoint,
        &[],
        &["predict", "--weights", "hf:me/tiny", &image],
    );

    // A tampered zoo file is caught by verify.
    let blobs: Vec<_> = walk(&home.path("zoo/blobs"));
    std::fs::write(&blobs[0], b"tampered").unwrap();
    home.fails(
        &server.endpoint,
        &[],
        &["zoo", "verify"],
        &["failed verification"],
    );
}

#[test]
fn pin_records_size_and_sha256_in_the_registry() {
    let server = HubServer::start();
    let home = Home::new();
    let files = timm_files("resnet18", 1000, &home.path("src"));
    serve(&server, "timm/resnet18.gluon_in1k", &files);
    let registry = home.path("weights.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/weights.toml"),
        &registry,
    )
    .unwrap();
    let reg = registry.to_str().unwrap();
    let out = home.ok(
        &server.endpoint,
        &[],
        &["zoo", "pin", "resnet18.gluon_in1k", "--registry", reg],
    );
    assert!(out.contains(&sha256(&files[0].1)), "{out}");
    let text = std::fs::read_to_string(&registry).unwrap();
    let parsed = zoo::registry::Registry::parse(&text, "pinned").unwrap();
    let entry = parsed
        .find(&"resnet18.gluon_in1k".parse().unwrap())
        .unwrap();
    assert_eq!(
        entry.files[0].sha256.as_deref(),
        Some(sha256(&files[0].1).as_str())
    );
    assert_eq!(entry.files[0].size, Some(files[0].1.len() as u64));
    // Other entries and the comments are untouched.
    assert!(text.starts_with("# The tricks model zoo registry"));
    assert_eq!(
        parsed.models.len(),
        zoo::registry::Registry::shipped().unwrap().models.len()
    );
}

#[test]
fn official_python_client_downloads_from_the_test_server() {
    let Some(python) = python_with(&["huggingface_hub"]) else {
        return;
    };
    let server = HubServer::start();
    let home = Home::new();
    let files = timm_files("resnet10d_tiny", 4, &home.path("src"));
    serve(&server, "acme/tiny", &files);
    let script = "import sys\nfrom huggingface_hub import hf_hub_download\n\
                  hf_hub_download('acme/tiny', 'config.json', cache_dir=sys.argv[1])\n\
                  p = hf_hub_download('acme/tiny', 'model.safetensors', cache_dir=sys.argv[1])\nprint(p)";
    let out = Command::new(python)
        .args(["-c", script, home.path("py").to_str().unwrap()])
        .env("HF_ENDPOINT", &server.endpoint)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_XET", "1")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "huggingface_hub failed: {stderr}");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(std::fs::read(&path).unwrap(), files[0].1);
    // And ours reads the cache the Python client wrote.
    let out = home.ok(
        "http://127.0.0.1:9",
        &[("HF_HUB_CACHE", home.path("py").to_str().unwrap())],
        &[
            "export",
            "hf:acme/tiny",
            "--offline",
            "--safetensors",
            "--out",
            home.path("out").to_str().unwrap(),
        ],
    );
    assert!(out.contains("model.safetensors"), "{out}");
}

#[test]
fn timm_loads_what_we_push_from_the_hub() {
    let Some(python) = python_optional(&["timm", "torch", "huggingface_hub", "safetensors"]) else {
        return;
    };
    let server = HubServer::start();
    let home = Home::new();
    let src = home.path("src");
    timm_files("resnet18", 4, &src);
    let weights = src.join("model.safetensors");
    let w = weights.to_str().unwrap();
    home.ok(
        &server.endpoint,
        &[],
        &[
            "zoo",
            "publish",
            w,
            "--name",
            "resnet18.mine",
            "--version",
            "1.0.0",
        ],
    );
    home.ok(
        &server.endpoint,
        &[],
        &["zoo", "push", "resnet18.mine@1.0.0", "--repo", "me/r18"],
    );
    // timm reads config.json and model.safetensors from the Hub and must give our logits.
    let input = home.path("input.safetensors");
    let x = ops::gradcheck::uniform(&[1, 3, 224, 224], 5, &Device::Cpu)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    zoo::weights::save_tensors(&[("input".to_string(), x)].into(), &input).unwrap();
    let logits = home.path("logits.safetensors");
    let (i, l) = (input.to_str().unwrap(), logits.to_str().unwrap());
    home.ok(
        &server.endpoint,
        &[],
        &[
            "forward",
            "--model",
            "resnet18",
            "--weights",
            w,
            "--input",
            i,
            "--output",
            l,
        ],
    );
    // timm 1.0.15 cannot import huggingface_hub 2.x, so the official client downloads and
    // timm loads the files the way the model card says.
    let script = "import sys, json, timm, torch\nfrom huggingface_hub import hf_hub_download\n\
                  from safetensors.torch import load_file\n\
                  cfg = json.load(open(hf_hub_download('me/r18', 'config.json')))\n\
                  w = hf_hub_download('me/r18', 'model.safetensors')\n\
                  m = timm.create_model(cfg['architecture'], pretrained=True, num_classes=cfg['num_classes'],\n\
                      pretrained_cfg_overlay=dict(cfg['pretrained_cfg'], file=w)).eval()\n\
                  x = load_file(sys.argv[1])['input']\nref = load_file(sys.argv[2])['logits']\n\
                  with torch.no_grad(): y = m(x)\n\
                  err = ((y - ref).abs().max() / ref.abs().max()).item()\n\
                  print(cfg['pretrained_cfg']['crop_pct'], err)\nassert err < 1e-4, err";
    let out = Command::new(python)
        .args(["-c", script, i, l])
        .env("HF_ENDPOINT", &server.endpoint)
        .env("HF_HUB_CACHE", home.path("py"))
        .env("HF_HUB_DISABLE_XET", "1")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("timm: {text}");
    assert!(out.status.success(), "timm failed: {text}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `model.safetensors` and `config.json` of a small random detector on `resnet10d_tiny`.
fn detector_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    use transfer::detection::{DetectorConfig, FasterRcnn};
    let detection = training::recipe::DetectionConfig {
        min_size: 64,
        max_size: 96,
        rpn_channels: 16,
        rpn_pre_nms_test: 200,
        rpn_post_nms_test: 20,
        ..Default::default()
    };
    let vars = candle_nn::VarMap::new();
    FasterRcnn::new("resnet10d_tiny", 20, &detection, &vars, 5, &Device::Cpu).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    zoo::weights::save_weights(&vars, &dir.join("model.safetensors")).unwrap();
    let config = DetectorConfig {
        task: zoo::registry::Task::Detection,
        architecture: transfer::detection::saved::ARCHITECTURE.into(),
        backbone: "resnet10d_tiny".into(),
        num_classes: 20,
        label_names: transfer::voc::VOC_CLASSES.map(String::from).to_vec(),
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        detection,
        onnx_input_size: None,
    };
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    ["model.safetensors", "config.json"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
        .collect()
}

#[test]
fn a_detector_on_the_hub_predicts_publishes_and_pushes_with_a_detection_card() {
    let server = HubServer::start();
    let home = Home::new();
    serve(&server, "acme/detector", &detector_files(&home.path("src")));
    let image = home.image();
    let out = home.path("pred");
    home.ok(
        &server.endpoint,
        &[],
        &[
            "predict",
            "--weights",
            "hf:acme/detector",
            &image,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(out.join("cat.png").is_file() && out.join("cat.json").is_file());
    home.ok(
        &server.endpoint,
        &[],
        &[
            "zoo",
            "publish",
            "hf:acme/detector",
            "--name",
            "resnet10d_tiny.acme_det",
            "--version",
            "1.0.0",
            "--dataset",
            "voc2007",
        ],
    );
    home.ok(
        &server.endpoint,
        &[("HF_TOKEN", "hf_test")],
        &[
            "zoo",
            "push",
            "resnet10d_tiny.acme_det@1.0.0",
            "--repo",
            "me/det",
        ],
    );
    let files = server.files("me/det").expect("pushed");
    for f in [
        "model.safetensors",
        "config.json",
        "model.onnx",
        "README.md",
    ] {
        assert!(files.contains_key(f), "{f} not pushed: {:?}", files.keys());
    }
    let card = String::from_utf8_lossy(&files["README.md"]).into_owned();
    assert!(card.contains("pipeline_tag: object-detection"), "{card}");
    assert!(card.contains("tricks predict --weights hf:me/det IMAGE --out DIR"));
    // What was pushed predicts the same detections as the original.
    let again = home.path("pred2");
    home.ok(
        &server.endpoint,
        &[],
        &[
            "predict",
            "--weights",
            "hf:me/det",
            &image,
            "--out",
            again.to_str().unwrap(),
        ],
    );
    let dets = |dir: &Path| {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cat.json")).unwrap()).unwrap();
        v["detections"].clone()
    };
    assert_eq!(dets(&out), dets(&again));
    // A classifier's reference is not a detector's, and the other way round.
    home.fails(
        &server.endpoint,
        &[],
        &[
            "eval",
            "--weights",
            "hf:me/det",
            "--data",
            home.path("nowhere").to_str().unwrap(),
        ],
        &["config.json", "detection model, not a classifier"],
    );
}
