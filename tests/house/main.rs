//! The house rules, checked: the top-level modules of the core import each other only
//! downwards through the layers `docs/ARCHITECTURE.md` draws (so no cycle can form), and every
//! source file and function stays small enough to read in one sitting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The longest source file, in lines (its tests live beside it in `tests.rs`).
const MAX_FILE_LINES: usize = 500;
/// The longest function, in lines, outside tests.
const MAX_FN_LINES: usize = 80;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code before its first `#[cfg(test)]`.
fn code(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// The layer of each top-level module, from the table under "## Layers".
fn layers() -> BTreeMap<String, usize> {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let section = doc
        .split("## Layers")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has ## Layers");
    let mut layers = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(layer) = cells.get(1).and_then(|c| c.parse::<usize>().ok()) else {
            continue;
        };
        for m in cells[2].split(',').map(|m| m.trim().trim_matches('`')) {
            assert!(
                layers.insert(m.to_string(), layer).is_none(),
                "{m} is in two layers"
            );
        }
    }
    layers
}

/// The top-level module a file of `src/` belongs to.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(root().join("src")).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a piece of code names with `crate::`.
fn imports(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            found.extend(group.split(',').filter_map(|p| first_segment(p.trim())));
        } else {
            found.extend(first_segment(rest));
        }
    }
    found
}

fn first_segment(path: &str) -> Option<String> {
    let name: String = path
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

#[test]
fn modules_import_only_from_the_layers_below_their_own() {
    let layers = layers();
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(file);
        if module == "main" || module == "lib" {
            continue;
        }
        let Some(own) = layers.get(&module) else {
            wrong.push(format!("{module} is in no layer of docs/ARCHITECTURE.md"));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in imports(code(&text)) {
            if used == module {
                continue;
            }
            match layers.get(&used) {
                Some(l) if l < own => {}
                Some(l) => wrong.push(format!(
                    "{} uses {used} (layer {l}) from {module} (layer {own})",
                    file.display()
                )),
                None => wrong.push(format!("{used} is in no layer of docs/ARCHITECTURE.md")),
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
    for m in layers.keys() {
        let exists =
            root().join("src").join(m).is_dir() || root().join(format!("src/{m}.rs")).is_file();
        assert!(
            exists,
            "docs/ARCHITECTURE.md names a module src/ lacks: {m}"
        );
    }
}

/// Each function of `code` longer than `MAX_FN_LINES`: (line, first line, length). A function
/// ends at the first line that closes it at its own indentation (as rustfmt writes it).
fn long_functions(code: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let head = ["pub ", "pub(crate) ", "pub(super) ", "async ", "const "]
            .iter()
            .fold(trimmed, |t, p| t.strip_prefix(p).unwrap_or(t));
        let head = head.strip_prefix("async ").unwrap_or(head);
        if !head.starts_with("fn ") || trimmed.ends_with(';') {
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        let close = format!("{indent}}}");
        if let Some(end) = lines[i..].iter().position(|l| *l == close) {
            if end + 1 > MAX_FN_LINES {
                long.push((i + 1, trimmed.to_string(), end + 1));
            }
        }
    }
    long
}

#[test]
fn files_and_functions_are_short_enough_to_read_in_one_sitting() {
    let mut files = Vec::new();
    for dir in [
        "src",
        "src-tauri/src",
        "tests/mock-upstream/src",
        "bench/src",
    ] {
        rust_files(&root().join(dir), &mut files);
    }
    let mut long = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        let n = text.lines().count();
        if n > MAX_FILE_LINES {
            long.push(format!("{name}: {n} lines (at most {MAX_FILE_LINES})"));
        }
        // Table-like test cases may run long; the code they test may not.
        if file.ends_with("tests.rs") {
            continue;
        }
        for (line, head, len) in long_functions(code(&text)) {
            long.push(format!(
                "{name}:{line}: {head} is {len} lines (at most {MAX_FN_LINES})"
            ));
        }
    }
    assert!(
        long.is_empty(),
        "too long to read in one sitting:\n{}",
        long.join("\n")
    );
}
