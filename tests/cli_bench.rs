//! `tricks bench` as a user runs it: each workload prints its rate, and a malformed
//! `--conv` shape is a clear error.

use std::process::{Command, Output};

fn tricks(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tricks"))
        .args(args)
        .output()
        .expect("running tricks")
}

fn stdout_of(args: &[&str]) -> String {
    let out = tricks(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_workload_reports_its_rate() {
    let tiny = ["--model", "resnet10d_tiny", "--batch", "2", "--iters", "1"];
    let inference = stdout_of(&[&["bench"][..], &tiny].concat());
    assert!(inference.contains("inference batch 2 at 64x64") && inference.contains("img/s"));
    let train = stdout_of(&[&["bench", "--train"][..], &tiny].concat());
    assert!(train.contains("training step") && train.contains("GFLOP/s"));
    let conv = [
        "bench",
        "--conv",
        "3,5,3,2,9",
        "--batch",
        "3",
        "--iters",
        "1",
    ];
    let out = stdout_of(&conv);
    assert!(out.contains("conv 3->5 3x3/2 at 9x9, batch 3") && out.contains(" ms"));
    assert!(
        out.contains("kernel: "),
        "the planned kernel is printed: {out}"
    );
    let out = stdout_of(&[&conv[..], &["--train"]].concat());
    assert!(out.contains("forward + both gradients"), "{out}");
}

#[test]
fn malformed_conv_shapes_are_clear_errors() {
    for (shape, needle) in [
        ("64,64,3,1", "C_IN,C_OUT,K,STRIDE,SIZE"),
        ("64,64,three,1,56", "invalid digit"),
        ("8,8,0,1,5", "must be positive"),
    ] {
        let out = tricks(&["bench", "--conv", shape]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{shape} succeeded");
        assert!(
            !err.contains("panicked") && err.contains(needle),
            "{shape}: {err}"
        );
    }
}

#[test]
fn zero_counts_are_errors_not_nonsense_rates() {
    for args in [
        &["bench", "--model", "resnet10d_tiny", "--iters", "0"][..],
        &["schedule", "--iters-per-epoch", "0"][..],
    ] {
        let out = tricks(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains("must be at least 1"), "{args:?}: {err}");
    }
}

#[test]
fn kernels_lists_every_convolution_with_its_kernel() {
    let out = stdout_of(&["bench", "--model", "resnet50d", "--kernels"]);
    assert!(out.contains("inference (frozen)"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("layer")).count(),
        16 * 3 + 4
    );
    assert!(out.contains("conv1.0") && out.contains("gemm"), "{out}");
}
