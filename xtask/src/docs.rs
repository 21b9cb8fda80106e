//! Docs that match the code (part of `cargo xtask ci`):
//!
//! - every crate under `crates/` has a row in the README's crate table;
//! - every flag the docs show on an `authwire` (or `docker-credential-authwire`) command line is a
//!   flag the built binary has, as its own `--help` lists them.
//!
//! A flag counts as shown on a command line when it follows an invocation of the command (the
//! word `authwire` followed by a subcommand or a flag, not a crate name such as `-p authwire`)
//! within the same code span, table cell or line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The subcommands whose `--help` is read.
const SUBCOMMANDS: &[&str] = &[
    "token",
    "header",
    "curl",
    "login",
    "logout",
    "inspect",
    "kube",
    "git-credential",
    "completions",
];

/// Run both checks against the tree at `root` and the binary at `binary`.
pub(crate) fn check(root: &Path, binary: &Path) -> Result<(), String> {
    let mut problems = missing_rows(root)?;
    let known = known_flags(binary)?;
    for file in doc_files(root)? {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let shown = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        for (line, flag) in flags_on_command_lines(&text) {
            if !known.contains(&flag) {
                problems.push(format!(
                    "{shown}:{line}: names {flag}, which `authwire` does not have (see `authwire --help`)"
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "docs do not match the code:\n  {}",
            problems.join("\n  ")
        ))
    }
}

/// Crates under `crates/` without a row `| [`name`](crates/name) |` in README.md.
fn missing_rows(root: &Path) -> Result<Vec<String>, String> {
    let readme = std::fs::read_to_string(root.join("README.md")).map_err(|e| format!("README.md: {e}"))?;
    let mut missing = Vec::new();
    let entries = std::fs::read_dir(root.join("crates")).map_err(|e| format!("crates/: {e}"))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        if !has_row(&readme, &name) {
            missing.push(format!(
                "README.md: the crate table has no row for crates/{name} (add `| [`{name}`](crates/{name}) | what it is |`)"
            ));
        }
    }
    Ok(missing)
}

/// Whether `readme` has a table row for crate `name`.
fn has_row(readme: &str, name: &str) -> bool {
    let cell = format!("| [`{name}`](crates/{name})");
    readme.lines().any(|l| l.trim_start().starts_with(&cell))
}

/// README.md, every crate's README.md, and docs/*.md.
fn doc_files(root: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "crates"] {
        let entries = std::fs::read_dir(root.join(dir)).map_err(|e| format!("{dir}/: {e}"))?;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "md") {
                files.push(path);
            } else if path.join("README.md").is_file() {
                files.push(path.join("README.md"));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Every `--flag` the binary's help lists: `authwire --help`, each subcommand's, and the
/// docker helper's (the same binary under the name `docker-credential-authwire`).
fn known_flags(binary: &Path) -> Result<BTreeSet<String>, String> {
    let mut known = BTreeSet::new();
    let mut helps = vec![run(binary, &["--help"])?];
    for sub in SUBCOMMANDS {
        helps.push(run(binary, &[sub, "--help"])?);
    }
    let docker = binary.with_file_name(format!(
        "docker-credential-authwire{}",
        std::env::consts::EXE_SUFFIX
    ));
    if std::fs::hard_link(binary, &docker).is_ok() || docker.exists() {
        helps.push(run(&docker, &["--help"])?);
    }
    for help in &helps {
        known.extend(flags_in(help));
    }
    Ok(known)
}

fn run(binary: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(binary)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e} (is the CLI built?)", binary.display()))?;
    if !out.status.success() {
        return Err(format!("`{} {}` failed", binary.display(), args.join(" ")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every `--word` in `text`.
fn flags_in(text: &str) -> Vec<String> {
    let mut flags = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at;
        let before_ok = start == 0 || !is_flag_char(bytes[start - 1]);
        let mut end = start + 2;
        while end < bytes.len() && is_flag_char(bytes[end]) {
            end += 1;
        }
        let word = &text[start..end];
        if before_ok && word.len() > 3 && bytes[start + 2].is_ascii_lowercase() {
            flags.push(word.trim_end_matches('-').to_owned());
        }
        i = end.max(start + 2);
    }
    flags
}

fn is_flag_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// `(line number, flag)` for every flag that follows an invocation of `authwire` or
/// `docker-credential-authwire` on a line, up to the end of its code span or table cell.
fn flags_on_command_lines(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = find_invocation(rest) {
            let after = &rest[at..];
            let end = after.find(['`', '|']).unwrap_or(after.len());
            for flag in flags_in(&after[..end]) {
                found.push((n + 1, flag));
            }
            rest = &after[end.max(1).min(after.len())..];
        }
    }
    found
}

/// Where the arguments of the next command invocation in `line` start: after `authwire ` (or
/// `docker-credential-authwire `) followed by a subcommand or a flag; not `-p authwire` or
/// `--bin authwire` (cargo naming a package or a binary), not a crate name like `authwire-cli`.
fn find_invocation(line: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = line[from..].find("authwire ") {
        let start = from + at;
        let end = start + "authwire ".len();
        from = end;
        let before = &line[..start];
        let word_start = before.is_empty()
            || before.ends_with([' ', '`', '(', '$', '\t', '"', '\''])
            || before.ends_with("docker-credential-");
        let named = before.trim_end();
        let package = ["-p", "--package", "--bin"].iter().any(|f| named.ends_with(f));
        if !word_start || package {
            continue;
        }
        let next = line[end..].trim_start();
        let is_sub = SUBCOMMANDS
            .iter()
            .chain(["get", "list", "store", "erase", "version"].iter())
            .any(|s| {
                next.starts_with(s) && !next[s.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
            });
        if is_sub || next.starts_with("--") {
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_read_after_an_invocation_only() {
        let doc = "\
run `authwire token --min-ttl 5m` first
`cargo bench -p authwire --bench hot_path` is not an invocation
cargo build -p authwire-cli --bin authwire --example cli_timing
| `authwire login --browser` | opens a browser --not-this-cell |
`authwire-cli --nope` names the crate
then `curl --fail` and `authwire header --no-such-flag`
$ docker-credential-authwire get --bogus
";
        let found: Vec<(usize, String)> = flags_on_command_lines(doc);
        assert_eq!(
            found,
            vec![
                (1, "--min-ttl".to_owned()),
                (4, "--browser".to_owned()),
                (6, "--no-such-flag".to_owned()),
                (7, "--bogus".to_owned()),
            ]
        );
    }

    #[test]
    fn help_text_yields_its_flags() {
        let help =
            "  --client-id <CLIENT_ID>  The client id.\n  -v, --verbose  Trace\n  --min-ttl <MIN_TTL>\n";
        assert_eq!(flags_in(help), ["--client-id", "--verbose", "--min-ttl"]);
    }

    #[test]
    fn crate_rows_are_found_by_their_link() {
        let readme = "| crate | role |\n| --- | --- |\n| [`authwire`](crates/authwire) | the core |\n";
        assert!(has_row(readme, "authwire"));
        assert!(!has_row(readme, "authwire-proxy"));
    }
}
