//! The kernel every convolution of ResNet-50-D and MobileNet v1 gets ([`ops::plan`]), as
//! tables committed under `tests/fixtures/kernels/`: inference on frozen weights with and
//! without AVX-512F, and a training step. A change to the planner's rules shows here as a
//! diff of these tables; `TRICKS_UPDATE_KERNEL_TABLES=1 cargo test --test kernel_table`
//! rewrites them after a deliberate change.

use std::path::Path;

use candle_core::Device;
use ops::plan::Target;
use zoo::models::{create_model, ModelSpec};
use zoo::walk::KernelTable;

fn table(model: &str, batch: usize, size: usize, avx512f: bool, train: bool) -> String {
    let spec = ModelSpec::find(model).unwrap();
    let net = create_model(&spec, &Device::Cpu, 0).unwrap();
    let target = Target { cpu: true, avx512f };
    let mut t = KernelTable::new(batch, target, train);
    net.net.kernel_table(&mut t, size, size).unwrap();
    format!(
        "# {model}, batch {batch} at {size}x{size}, {}, {}\n# layer  input (CxHxW) -> C_out  window/stride  layout  kernel\n{}",
        if train { "training step" } else { "inference on frozen weights" },
        if avx512f { "AVX-512F" } else { "no AVX-512" },
        t.to_text()
    )
}

fn check(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kernels")
        .join(format!("{name}.txt"));
    if std::env::var_os("TRICKS_UPDATE_KERNEL_TABLES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (TRICKS_UPDATE_KERNEL_TABLES=1 writes it)",
            path.display()
        )
    });
    if expected != text {
        let diff: Vec<String> = expected
            .lines()
            .zip(text.lines())
            .filter(|(a, b)| a != b)
            .take(10)
            .map(|(a, b)| format!("  expected: {a}\n  got:      {b}"))
            .collect();
        panic!(
            "{name}: the kernel plan changed ({} vs {} lines):\n{}",
            expected.lines().count(),
            text.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn resnet50d_kernels() {
    check(
        "resnet50d_b16_224_avx512",
        &table("resnet50d", 16, 224, true, false),
    );
    check(
        "resnet50d_b16_224_no_avx512",
        &table("resnet50d", 16, 224, false, false),
    );
    check(
        "resnet50d_b16_224_train",
        &table("resnet50d", 16, 224, true, true),
    );
}

#[test]
fn mobilenet_kernels() {
    check(
        "mobilenetv1_100_b16_224_avx512",
        &table("mobilenetv1_100", 16, 224, true, false),
    );
    check(
        "mobilenetv1_100_b16_224_train",
        &table("mobilenetv1_100", 16, 224, true, true),
    );
}

#[test]
fn the_tables_name_every_convolution() {
    // ResNet-50-D: 3 stem convolutions, 16 blocks of 3, 4 shortcut convolutions.
    let t = table("resnet50d", 16, 224, true, false);
    assert_eq!(
        t.lines().filter(|l| !l.starts_with('#')).count(),
        3 + 16 * 3 + 4
    );
    // MobileNet v1: the stem and 13 depthwise + pointwise pairs.
    let t = table("mobilenetv1_100", 16, 224, true, false);
    assert_eq!(
        t.lines().filter(|l| !l.starts_with('#')).count(),
        1 + 13 * 2
    );
}
