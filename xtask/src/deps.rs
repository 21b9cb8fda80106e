//! `cargo xtask ci`'s unused-dependency check: every dependency a member declares must be named
//! in that member's Rust sources (or in the Markdown its doctests include), as `name::`,
//! `use name`, `name!` or `extern crate name`. Like cargo-machete, but needing nothing installed.

use std::fs;
use std::path::{Path, PathBuf};

/// Dependencies declared but never named, as `crate: dependency (section)` lines.
pub(crate) fn unused(root: &Path) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for member in members(root)? {
        let manifest = fs::read_to_string(member.join("Cargo.toml"))
            .map_err(|e| format!("{}: {e}", member.display()))?;
        let name = package_name(&manifest).unwrap_or_else(|| member.display().to_string());
        let text = sources(&member, root)?;
        for (dep, section) in dependencies(&manifest) {
            if ALLOWED.contains(&(name.as_str(), dep.as_str())) {
                continue;
            }
            let ident = dep.replace('-', "_");
            let used = [
                format!("{ident}::"),
                format!("use {ident}"),
                format!("{ident}!"),
                format!("crate {ident}"),
            ]
            .iter()
            .any(|needle| text.contains(needle.as_str()));
            if !used {
                found.push(format!("{name}: {dep} ({section})"));
            }
        }
    }
    Ok(found)
}

/// Dependencies used without being named: only for their features or as a test's subject.
const ALLOWED: &[(&str, &str)] = &[
    // The binary the tests run (CARGO_BIN_EXE_authwire) is this crate's own.
    ("authwire-cli", "authwire-cli"),
];

fn members(root: &Path) -> Result<Vec<PathBuf>, String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml")).map_err(|e| e.to_string())?;
    let start = manifest.find("members = [").ok_or("no workspace members")?;
    let end = manifest[start..].find(']').ok_or("unterminated members")? + start;
    Ok(manifest[start..end]
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix('"')?
                .split('"')
                .next()
                .map(|m| root.join(m))
        })
        .collect())
}

fn package_name(manifest: &str) -> Option<String> {
    manifest.lines().find_map(|l| {
        l.trim()
            .strip_prefix("name = \"")?
            .strip_suffix('"')
            .map(str::to_owned)
    })
}

/// `(name, section)` of every dependency of a manifest, in every dependency table.
fn dependencies(manifest: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut section: Option<String> = None;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            let is_deps = line.ends_with("dependencies]");
            section = is_deps.then(|| line.trim_matches(['[', ']']).to_owned());
            continue;
        }
        let Some(section) = &section else { continue };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split(['=', '.']).next().unwrap_or("").trim();
        if !key.is_empty() {
            out.push((key.to_owned(), section.clone()));
        }
    }
    out
}

/// All `.rs` files of a member, and the Markdown files they `include_str!`.
fn sources(member: &Path, root: &Path) -> Result<String, String> {
    let mut text = String::new();
    let mut stack = vec![member.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?);
            }
        }
    }
    // Doctests of included Markdown (the README, docs/) use dependencies too.
    let included: Vec<PathBuf> = text
        .split("include_str!(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|p| p.ends_with(".md"))
        .map(|p| root.join(p.trim_start_matches("../")))
        .collect();
    for path in included {
        if let Ok(md) = fs::read_to_string(&path) {
            text.push_str(&md);
        }
    }
    Ok(text)
}
