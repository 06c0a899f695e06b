//! The crate's unsafe-code scheme, checked on its sources: `proc_guard` is
//! the one module that may hold `unsafe`; every other module is declared
//! under `#[forbid(unsafe_code)]` (in `lib.rs` and `substrate/mod.rs`, the
//! two files that declare the path to it and hold nothing else).

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `unsafe` as a word (`unsafe_code`, `unsafe_audit` are other words).
fn has_unsafe_token(code: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices("unsafe").any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + "unsafe".len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

#[test]
fn the_token_is_told_from_longer_words() {
    assert!(has_unsafe_token("    unsafe { x() }"));
    assert!(has_unsafe_token("unsafe fn f()"));
    assert!(!has_unsafe_token("#[forbid(unsafe_code)] mod unsafe_audit;"));
}

#[test]
fn no_unsafe_outside_proc_guard() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let guard = src().join("substrate").join("proc_guard.rs");
    // This file names the word in its checks' strings.
    let me = src().join("substrate").join("unsafe_audit.rs");
    let mut found = Vec::new();
    for f in files.iter().filter(|f| **f != guard && **f != me) {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if has_unsafe_token(code) || code.contains("allow(unsafe_code)") {
                found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "unsafe outside proc_guard:\n{}", found.join("\n"));
    let text = std::fs::read_to_string(&guard).unwrap();
    assert!(text.contains("#![allow(unsafe_code)]"), "proc_guard says it allows unsafe");
}

/// Every `mod` declared in `file` is under `#[forbid(unsafe_code)]`, but
/// `except` (the path to `proc_guard`).
fn every_mod_forbids(file: &Path, except: &[&str]) {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut missing = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let decl = l.strip_prefix("pub ").unwrap_or(l);
        let decl = decl.strip_prefix("pub(crate) ").unwrap_or(decl);
        let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) else {
            continue;
        };
        if except.contains(&name) {
            continue;
        }
        // The attributes right above the declaration.
        let attrs = lines[..i].iter().rev().take_while(|a| a.starts_with("#["));
        if !attrs.into_iter().any(|a| *a == "#[forbid(unsafe_code)]") {
            missing.push(name.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "{}: modules without #[forbid(unsafe_code)]: {missing:?}",
        file.display()
    );
}

#[test]
fn every_other_module_forbids_unsafe() {
    every_mod_forbids(&src().join("lib.rs"), &["substrate"]);
    every_mod_forbids(&src().join("substrate").join("mod.rs"), &["proc_guard"]);
    for declares_only in [src().join("lib.rs"), src().join("substrate").join("mod.rs")] {
        let text = std::fs::read_to_string(&declares_only).unwrap();
        for word in ["fn ", "impl ", "struct ", "enum ", "trait ", "macro_rules!"] {
            assert!(
                !text.lines().any(|l| !l.trim_start().starts_with("//") && l.contains(word)),
                "{} must only declare modules (found `{word}`): items there would not be under forbid",
                declares_only.display()
            );
        }
    }
}
