//! Training runs under hostile conditions: killed with SIGKILL at many points and resumed
//! to the same bits, two runs into one directory, settings out of their domain, a dataset
//! overwritten, images over the limits, a run that fails to start, datasets and teachers
//! that cannot work. Each must end in a clear error or the right answer, never a panic or
//! an exit 0 after a failure.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::train::*;

#[test]
fn a_run_killed_at_many_points_resumes_to_the_same_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    // The `tricks` recipe exercises warmup, cosine decay, mixup, label smoothing, zero-γ and
    // gradient accumulation: all of their state must survive the restarts.
    let extra = [
        "--epochs",
        "8",
        "--accumulate",
        "2",
        "--warmup-epochs",
        "1",
        "--precision",
        "f32",
    ];
    let out = train("tricks", &whole, &extra).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGKILL at spread-out points of different epochs.
    let kills = kill_repeatedly(
        &killed,
        &[0, 40, 90, 10, 140, 60, 0, 120],
        7,
        || train("tricks", &killed, &extra),
        || {
            let mut c = Command::new(env!("CARGO_BIN_EXE_tricks"));
            c.args(["train", "--resume", s(&killed)]);
            c
        },
    );
    assert!(kills >= 5, "only {kills} attempts were killed");

    let out = tricks(&["train", "--resume", s(&killed)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(metrics_lines(&killed), 8);
    assert_same_bits(
        &whole.join("model.safetensors"),
        &killed.join("model.safetensors"),
    );
    assert_same_bits(
        &whole.join("checkpoint.safetensors"),
        &killed.join("checkpoint.safetensors"),
    );
    assert_eq!(temporaries(&killed), Vec::<String>::new());
    // The finished run's files agree with each other: run.json reads back, and resuming a
    // finished run does nothing.
    let again = ok(&["train", "--resume", s(&killed)]);
    assert!(again.contains("already finished"), "{again}");
    assert_same_bits(
        &whole.join("model.safetensors"),
        &killed.join("model.safetensors"),
    );
}

#[test]
fn a_second_run_into_the_same_directory_is_refused_while_the_first_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("run");
    let mut first = train("baseline", &out_dir, &["--epochs", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !out_dir.join("run.json").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the first run never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = tricks(&["train", "--resume", s(&out_dir)]);
    let still_running = first.try_wait().unwrap().is_none();
    first.kill().ok();
    first.wait().unwrap();
    if still_running {
        assert!(!second.status.success());
        let err = String::from_utf8_lossy(&second.stderr);
        assert!(err.contains("another run is using this directory"), "{err}");
    }
}

#[test]
fn resume_refuses_recipe_flags_and_says_when_it_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let out = tricks(&["train", "--resume", s(&dir), "--epochs", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("recipe flags apply to new runs"),
        "{err}"
    );
    let out = tricks(&["train", "--resume", s(&dir)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no run to resume"),
        "{err}"
    );
}

#[test]
fn bad_flags_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, value, field) in [
        ("--flip-prob", "2", "augment.flip_prob"),
        ("--crop-area-min", "2", "augment.crop_area"),
        ("--crop-area-min", "nan", "augment.crop_area"),
        ("--lighting-std", "nan", "augment.lighting_std"),
        ("--weight-decay", "nan", "weight_decay"),
        ("--lr", "-1", "lr"),
        ("--momentum", "2", "momentum"),
        ("--lr-step-factor", "-5", "lr_step_factor"),
        ("--lr-step-epochs", "5,2", "lr_step_epochs"),
        ("--label-smoothing", "1", "label_smoothing"),
        ("--accumulate", "0", "accumulate"),
        ("--epochs", "0", "epochs"),
    ] {
        let dir = tmp
            .path()
            .join(format!("run{}", flag.trim_start_matches('-')));
        let out = train("baseline", &dir, &[&format!("{flag}={value}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(err.contains(&format!("`{field}`")), "{flag} {value}: {err}");
        assert!(!dir.join("run.json").exists(), "{flag} {value} wrote a run");
    }
    // A crop of 100000 pixels a side: refused before the loader allocates anything.
    let dir = tmp.path().join("huge");
    let out = tricks(&[
        "train",
        "--model",
        "resnet10d_tiny",
        "--data",
        s(dataset()),
        "--out",
        s(&dir),
        "--size",
        "100000",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("`augment.size`"),
        "{err}"
    );
}

#[test]
fn data_synth_refuses_to_overwrite_a_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    synth(tmp.path(), 2, 2, 1, 0);
    let out = tricks(&["data", "synth", "--out", s(tmp.path()), "--classes", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already holds a dataset"),
        "{err}"
    );
}

#[test]
fn image_limits_are_configurable_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |var: &str, value: &str, out: &str| {
        train(
            "baseline",
            &tmp.path().join(out),
            &["--epochs", "1", "--strict"],
        )
        .env(var, value)
        .output()
        .unwrap()
    };
    // A limit below the dataset's 40×40 images: the first one is refused, naming the file.
    let out = run("TRICKS_MAX_IMAGE_PIXELS", "10", "small");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("1600 pixels, more than the 10") && err.contains(".png"),
        "{err}"
    );
    // A value that is no limit at all is an error naming the variable.
    let out = run("TRICKS_MAX_IMAGE_ASPECT", "none", "bad");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("TRICKS_MAX_IMAGE_ASPECT=none"),
        "{err}"
    );
}

#[test]
fn a_run_that_fails_to_set_up_leaves_the_directory_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = tricks(&[
        "train",
        "--model",
        "resnet10d_tiny",
        "--data",
        s(&tmp.path().join("nowhere")),
        "--out",
        s(&dir),
    ]);
    assert!(!out.status.success());
    assert!(
        !dir.join("run.json").exists(),
        "a run that never started was recorded"
    );
    let out = train("baseline", &dir, &["--epochs", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_one_class_dataset_and_a_teacher_of_other_classes_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, 2, 8, 2, 1);
    let teacher = tmp.path().join("teacher.safetensors");
    ok(&[
        "init",
        "--model",
        "resnet10d_tiny",
        "--num-classes",
        "1000",
        "--out",
        s(&teacher),
    ]);
    let run = |data: &Path, extra: &[&str], out: &str| {
        let mut args = vec![
            "train",
            "--model",
            "resnet10d_tiny",
            "--data",
            s(data),
            "--out",
        ];
        let out = tmp.path().join(out);
        args.push(s(&out));
        args.extend_from_slice(&["--batch-size", "4", "--size", "32", "--epochs", "1"]);
        args.extend_from_slice(extra);
        let o = tricks(&args);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = run(&data, &["--teacher", s(&teacher)], "t");
    assert!(err.contains("has 1000 classes, the data 2"), "{err}");
    // One class left: a classifier needs two (ε = 0, so it is not about label smoothing).
    for split in ["train", "val"] {
        let mut names: Vec<_> = std::fs::read_dir(data.join(split))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        std::fs::remove_dir_all(&names[0]).unwrap();
    }
    let err = run(&data, &["--label-smoothing", "0"], "one");
    assert!(err.contains("holds 1 class folder"), "{err}");
}
