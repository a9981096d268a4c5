//! The architecture as a test: no module of `ops` or `zoo` imports a module that imports it
//! back (directly or through others), and `ops`' kernels are leaves (no kernel imports
//! another kernel, the planner or an entry point).
//!
//! The graph is read from the sources: every `crate::a::b` path and `use crate::{…}` group
//! (and `super::…`) outside test code names the longest module of the crate it starts
//! with. Test code (`#[cfg(test)]` modules and `tests.rs` files) may import anything and
//! is left out. References to the crate root (its re-exports) are left out too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`kernels::conv_gemm`) of every source file under `src`, with its text.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel: PathBuf = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            if parts.last().is_some_and(|p| p == "tests") {
                continue; // test code
            }
            out.insert(parts.join("::"), std::fs::read_to_string(&path).unwrap());
        }
    }
    out
}

/// `text` without its test modules (`#[cfg(test)]` followed by a `mod … {` block) and
/// without comments.
fn production_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            let next = lines.peek().map(|l| l.trim_start().to_string());
            if next
                .as_deref()
                .is_some_and(|n| n.starts_with("mod ") || n.starts_with("pub(crate) mod "))
            {
                let header = lines.next().unwrap();
                if header.trim_end().ends_with(';') {
                    continue; // `mod tests;`: a tests.rs file, skipped by `modules`
                }
                // Skip the block by brace depth.
                let mut depth =
                    header.matches('{').count() as i64 - header.matches('}').count() as i64;
                for l in lines.by_ref() {
                    depth += l.matches('{').count() as i64 - l.matches('}').count() as i64;
                    if depth <= 0 {
                        break;
                    }
                }
                continue;
            }
        }
        if trimmed.starts_with("//") {
            continue;
        }
        out.push_str(line.split(" // ").next().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn ident_len(s: &str) -> usize {
    s.bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count()
}

/// The paths named after each `prefix::` in `code`: `a::b::c`, and for a group
/// `prefix::{a::b, c}` each item (one level of nesting is enough here).
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let mut path = Vec::new();
        let mut s = rest;
        loop {
            let n = ident_len(s);
            if n == 0 {
                break;
            }
            path.push(s[..n].to_string());
            s = &s[n..];
            if let Some(t) = s.strip_prefix("::") {
                s = t;
            } else {
                break;
            }
        }
        if s.starts_with('{') {
            let end = s.find('}').unwrap_or(s.len());
            for item in s[1..end].split(',') {
                let item = item.trim();
                let mut p = path.clone();
                p.extend(
                    item.split("::")
                        .map(|x| x[..ident_len(x.trim())].to_string())
                        .filter(|x| !x.is_empty()),
                );
                out.push(p.join("::"));
            }
        } else if !path.is_empty() {
            out.push(path.join("::"));
        }
    }
    out
}

/// The longest module of `known` that `path` starts with.
fn module_of(path: &str, known: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| known.contains(m))
}

/// Module → the modules its production code imports.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let known: BTreeSet<String> = mods.keys().filter(|m| !m.is_empty()).cloned().collect();
    let mut g = BTreeMap::new();
    for (name, text) in &mods {
        if name.is_empty() {
            continue; // the crate root re-exports everything
        }
        let code = production_code(text);
        let mut deps = BTreeSet::new();
        for p in paths_after(&code, "crate::") {
            if let Some(m) = module_of(&p, &known) {
                deps.insert(m);
            }
        }
        // `super::x` from `a::b` (file `a/b.rs`) is `a::x`; from `a` (`a/mod.rs`) it is the
        // root's `x`.
        let parent: Vec<&str> = name.split("::").collect();
        let parent = parent[..parent.len() - 1].join("::");
        for p in paths_after(&code, "super::") {
            let full = if parent.is_empty() {
                p
            } else {
                format!("{parent}::{p}")
            };
            if let Some(m) = module_of(&full, &known) {
                deps.insert(m);
            }
        }
        deps.remove(name);
        g.insert(name.clone(), deps);
    }
    g
}

/// A cycle through `start`, if any (depth-first search).
fn cycle_from(g: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(node).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            // A parent module and its children are one unit for `super::` lookups.
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if visit(g, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    visit(g, start, start, &mut path, &mut seen).then_some(path)
}

fn assert_acyclic(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(krate)
        .join("src");
    let g = graph(&src);
    assert!(
        !g.is_empty(),
        "{krate}: no modules found under {}",
        src.display()
    );
    // A child importing its parent (`blocked::pool` → `blocked`) is how Rust shares a
    // module's private items with its submodules; a cycle only counts between modules
    // neither of which contains the other.
    let contains = |a: &str, b: &str| b.starts_with(&format!("{a}::"));
    let filtered: BTreeMap<String, BTreeSet<String>> = g
        .iter()
        .map(|(m, deps)| {
            let deps = deps
                .iter()
                .filter(|d| !contains(m, d) && !contains(d, m))
                .cloned()
                .collect();
            (m.clone(), deps)
        })
        .collect();
    for m in filtered.keys() {
        if let Some(cycle) = cycle_from(&filtered, m) {
            panic!("{krate}: import cycle {}", cycle.join(" -> "));
        }
    }
    g
}

#[test]
fn ops_has_no_import_cycle_and_its_kernels_are_leaves() {
    let g = assert_acyclic("ops");
    let entry_or_plan = ["plan", "conv", "pool", "norm", "blocked"];
    for (m, deps) in &g {
        // The NCHW kernels import shared types and helpers only.
        if m.starts_with("kernels::") {
            for d in deps {
                assert!(
                    !d.starts_with("kernels::") && !entry_or_plan.contains(&d.as_str()),
                    "kernel {m} imports {d}"
                );
            }
        }
        // The blocked kernels share their family's items (`blocked`) and its microkernel
        // (`blocked::kernel`, what the NCHW kernels' `gemm` is to them), nothing else of ops
        // above the shared layer.
        if m.starts_with("blocked::") {
            for d in deps {
                let family = d == "blocked" || d == "blocked::kernel";
                assert!(
                    family
                        || !(d.starts_with("kernels::")
                            || d.starts_with("blocked::")
                            || entry_or_plan.contains(&d.as_str())),
                    "blocked kernel {m} imports {d}"
                );
            }
        }
    }
    // The planner decides from the shared types and the kernels' own capability rules.
    for d in &g["plan"] {
        assert!(
            d == "geometry" || d.starts_with("kernels::"),
            "plan imports {d}"
        );
    }
}

#[test]
fn zoo_training_transfer_and_eval_have_no_import_cycle() {
    for krate in ["zoo", "training", "transfer", "eval"] {
        assert_acyclic(krate);
    }
}

#[test]
fn the_reader_sees_imports_and_skips_tests() {
    let code = "use crate::{a::X, b};\nfn f() { crate::c::d(); super::e(); }\n#[cfg(test)]\nmod tests {\n    use crate::z;\n}\n";
    let prod = production_code(code);
    assert!(!prod.contains("crate::z"));
    let mut paths = paths_after(&prod, "crate::");
    paths.sort();
    assert_eq!(paths, ["a::X", "b", "c::d"]);
    assert_eq!(paths_after(&prod, "super::"), ["e"]);
    let known: BTreeSet<String> = ["a", "c", "a::k"].map(String::from).into();
    assert_eq!(module_of("a::X", &known).as_deref(), Some("a"));
    assert_eq!(module_of("a::k::Y", &known).as_deref(), Some("a::k"));
    let g = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert!(cycle_from(&g, "a").is_some());
}
