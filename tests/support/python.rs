//! Tests that check our files with a reference implementation in Python (ONNX Runtime, the
//! official Hugging Face client) run when the modules are installed. CI installs them and
//! sets `TRICKS_REQUIRE_PYTHON=1`, which turns a missing module into a failure instead of a
//! skip.

#![allow(dead_code)]

use std::process::Command;

/// The Python interpreter when it can import every module of `modules`; `None` (test
/// skipped, with a note) when not, unless `TRICKS_REQUIRE_PYTHON=1`.
pub fn python_with(modules: &[&str]) -> Option<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let import = format!("import {}", modules.join(", "));
    let ok = Command::new(&python)
        .args(["-c", &import])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let message = format!(
        "`{python} -c '{import}'` fails: pip install {}",
        modules.join(" ")
    );
    if std::env::var("TRICKS_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
        panic!("{message} (TRICKS_REQUIRE_PYTHON=1)");
    }
    eprintln!("skipped: {message}");
    None
}

/// Like [`python_with`], for heavy references (torch, timm) that CI does not install: a
/// missing module always skips.
pub fn python_optional(modules: &[&str]) -> Option<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let import = format!("import {}", modules.join(", "));
    let ok = Command::new(&python)
        .args(["-c", &import])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: `{import}` fails (optional reference, not installed by CI)");
    }
    ok.then_some(python)
}
