//! Examples that paste and run (part of `cargo xtask ci`): the README's quick start and the core
//! crate's quick start, built as a new user would build them, in a project of their own whose
//! `[dependencies]` are exactly the README's lines. Our crates are not on crates.io yet, so
//! `[patch.crates-io]` points their names at this checkout; everything else resolves as it would
//! for the user.
//!
//! Doctests cannot catch what this catches: a doctest sees every dependency of its crate (a
//! quick start that names `http::` compiles there and fails in a new project), and it does not
//! read the README's dependency block at all.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Our crates that the README's dependency block may name.
const OURS: &[&str] = &[
    "authwire",
    "authwire-oauth2",
    "authwire-reqwest",
    "authwire-tower",
    "authwire-jwt",
    "authwire-memory",
    "authwire-file",
    "authwire-keyring",
    "authwire-redis",
    "authwire-gcp",
    "authwire-azure",
];

/// Build both examples in `<target>/readme-example`.
pub(crate) fn check(root: &Path, target: &Path) -> Result<(), String> {
    let readme = std::fs::read_to_string(root.join("README.md")).map_err(|e| format!("README.md: {e}"))?;
    let quick_start =
        section(&readme, "## Quick start").ok_or("README.md has no \"## Quick start\" section")?;
    let dependencies = fenced(quick_start, "toml")
        .ok_or("the README's quick start has no ```toml block with its [dependencies]")?;
    if !dependencies.trim_start().starts_with("[dependencies]") {
        return Err("the README's ```toml block must start with [dependencies]".into());
    }
    let main = fenced(quick_start, "rust").ok_or("the README's quick start has no ```rust block")?;

    let lib = std::fs::read_to_string(root.join("crates/authwire/src/lib.rs"))
        .map_err(|e| format!("crates/authwire/src/lib.rs: {e}"))?;
    let core = doc_example(&lib, "//! # Quick start")
        .ok_or("crates/authwire/src/lib.rs has no example under \"# Quick start\"")?;

    let dir = target.join("readme-example");
    std::fs::create_dir_all(dir.join("src/bin")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut manifest = String::from(
        "# Written by `cargo xtask examples`: the README's quick start as a new project.\n\
         [package]\nname = \"readme-example\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
         [workspace]\n\n",
    );
    manifest.push_str(dependencies.trim());
    manifest.push_str("\n\n[patch.crates-io]\n");
    for name in OURS {
        let path = root.join("crates").join(name);
        manifest.push_str(&format!(
            "{name} = {{ path = {:?} }}\n",
            path.display().to_string()
        ));
    }
    write(&dir.join("Cargo.toml"), &manifest)?;
    write(&dir.join("src/main.rs"), &main)?;
    write(&dir.join("src/bin/core_quick_start.rs"), &core)?;

    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", target)
        .args(["check", "--quiet", "--bins"])
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the README's quick start or the core crate's quick start does not build in a new project ({}); see above",
            dir.display()
        ))
    }
}

fn write(path: &PathBuf, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The text from `heading` to the next heading of the same or a higher level.
fn section<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    let start = text.find(&format!("\n{heading}\n"))? + 1;
    let level = heading.chars().take_while(|c| *c == '#').count();
    let body = &text[start + heading.len()..];
    let end = body
        .lines()
        .scan(0, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line))
        })
        .find(|(_, line)| {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            hashes > 0 && hashes <= level && line[hashes..].starts_with(' ')
        })
        .map_or(body.len(), |(at, _)| at);
    Some(&body[..end])
}

/// The first fenced block whose info string starts with `lang` (```rust,no_run counts as rust).
fn fenced(text: &str, lang: &str) -> Option<String> {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("```") {
            let info = line.trim_start().trim_start_matches('`');
            if info.split(',').next() == Some(lang) {
                let body: Vec<&str> = lines
                    .by_ref()
                    .take_while(|l| !l.trim_start().starts_with("```"))
                    .collect();
                return Some(body.join("\n") + "\n");
            }
            // Skip a block of another language.
            for l in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
            }
        }
    }
    None
}

/// The first code block after `heading` in `//!` docs, as rustdoc compiles it: the `//! `
/// prefix removed and hidden lines (`# ...`) shown.
fn doc_example(source: &str, heading: &str) -> Option<String> {
    let after = &source[source.find(heading)?..];
    let docs: Vec<&str> = after
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| {
            l.strip_prefix("//! ")
                .or_else(|| l.strip_prefix("//!"))
                .unwrap_or(l)
        })
        .collect();
    let code = fenced(&docs.join("\n"), "").or_else(|| fenced(&docs.join("\n"), "rust"))?;
    Some(
        code.lines()
            .map(|l| {
                let t = l.trim_start();
                if t == "#" {
                    ""
                } else if let Some(rest) = t.strip_prefix("# ") {
                    rest
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "# x\n\n## Quick start\n\nIn Cargo.toml:\n\n```toml\n[dependencies]\nauthwire = \"0.1\"\n```\n\n```rust,no_run\nfn main() {}\n```\n\n## Workspace\n\n```rust\nfn other() {}\n```\n";

    #[test]
    fn the_quick_start_blocks_are_found() {
        let s = section(README, "## Quick start").unwrap();
        assert!(!s.contains("Workspace"));
        assert_eq!(fenced(s, "toml").unwrap(), "[dependencies]\nauthwire = \"0.1\"\n");
        assert_eq!(fenced(s, "rust").unwrap(), "fn main() {}\n");
    }

    #[test]
    fn doc_examples_show_their_hidden_lines() {
        let src = "//! # Quick start\n//!\n//! ```\n//! use x::y;\n//! # fn main() {\n//! let a = 1;\n//! # }\n//! ```\n//! more\nuse z;\n";
        assert_eq!(
            doc_example(src, "//! # Quick start").unwrap(),
            "use x::y;\nfn main() {\nlet a = 1;\n}\n"
        );
    }
}
