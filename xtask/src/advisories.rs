//! The dependency tree against the RustSec advisory database, offline (part of `cargo xtask
//! ci`): every registry package in `Cargo.lock` is checked against the snapshot in
//! `../shared/advisory-db` (or `AUTHWIRE_ADVISORY_DB`), as `cargo audit` would, without a
//! network or a tool to install.
//!
//! A finding fails the check unless it is fixed, or accepted in [`ACCEPTED`] with the reason
//! it does not apply or cannot be fixed yet. Informational advisories (unmaintained, unsound,
//! notices) count as findings too: each is a decision to write down.

use std::path::{Path, PathBuf};

/// Advisories that are known, examined and accepted: the id, and why. Empty: RUSTSEC-2023-0071
/// (rsa, pulled by jsonwebtoken's rust_crypto backend) left with that backend (issue 26).
const ACCEPTED: &[(&str, &str)] = &[];

/// One advisory that applies to a locked package.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) id: String,
    pub(crate) package: String,
    pub(crate) version: String,
    pub(crate) kind: String,
    pub(crate) title: String,
}

/// Check the workspace at `root`; `Ok` with a line of notes, or the findings not accepted.
pub(crate) fn check(root: &Path) -> Result<String, String> {
    let db = database(root);
    if !db.join("crates").is_dir() {
        return Ok(format!(
            "note: no advisory database at {} (set AUTHWIRE_ADVISORY_DB); the check is skipped",
            db.display()
        ));
    }
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).map_err(|e| format!("Cargo.lock: {e}"))?;
    let findings = scan(&lock, &db)?;
    let (accepted, open): (Vec<_>, Vec<_>) = findings
        .into_iter()
        .partition(|f| ACCEPTED.iter().any(|(id, _)| *id == f.id));
    if open.is_empty() {
        let snapshot = std::fs::read_to_string(db.join("SNAPSHOT")).unwrap_or_default();
        return Ok(format!(
            "{} accepted ({}); database: {}",
            accepted.len(),
            accepted
                .iter()
                .map(|f| f.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            snapshot.lines().next().unwrap_or("(no SNAPSHOT file)")
        ));
    }
    Err(format!(
        "advisories for locked dependencies (fix them, or accept one in xtask/src/advisories.rs with the reason):\n  {}",
        open.iter()
            .map(|f| format!("{} {} {}: {} ({})", f.id, f.package, f.version, f.title, f.kind))
            .collect::<Vec<_>>()
            .join("\n  ")
    ))
}

fn database(root: &Path) -> PathBuf {
    std::env::var_os("AUTHWIRE_ADVISORY_DB").map_or_else(
        || root.parent().unwrap_or(root).join("shared").join("advisory-db"),
        PathBuf::from,
    )
}

/// Every advisory in `db` that applies to a registry package locked in `lock`.
pub(crate) fn scan(lock: &str, db: &Path) -> Result<Vec<Finding>, String> {
    let lock: toml::Value = toml::from_str(lock).map_err(|e| format!("Cargo.lock is not TOML: {e}"))?;
    let packages = lock
        .get("package")
        .and_then(toml::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut findings = Vec::new();
    for package in &packages {
        let field = |k: &str| package.get(k).and_then(toml::Value::as_str);
        let (Some(name), Some(version)) = (field("name"), field("version")) else {
            continue;
        };
        // Workspace and path packages have no source: they are not on crates.io.
        if !field("source").is_some_and(|s| s.starts_with("registry+")) {
            continue;
        }
        let Ok(version) = semver::Version::parse(version) else {
            continue;
        };
        let dir = db.join("crates").join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let text = std::fs::read_to_string(entry.path())
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
            if let Some(finding) = applies(&text, name, &version)? {
                findings.push(finding);
            }
        }
    }
    findings.sort_by(|a, b| (&a.id, &a.package).cmp(&(&b.id, &b.package)));
    findings.dedup();
    Ok(findings)
}

/// The advisory in `text` (Markdown with a ```toml front matter) if it applies to `version`.
fn applies(text: &str, package: &str, version: &semver::Version) -> Result<Option<Finding>, String> {
    let front = text
        .split_once("```toml")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(toml, _)| toml)
        .ok_or_else(|| format!("an advisory of {package} has no ```toml front matter"))?;
    let doc: toml::Value = toml::from_str(front).map_err(|e| format!("an advisory of {package}: {e}"))?;
    let advisory = doc.get("advisory").ok_or("an advisory without [advisory]")?;
    if advisory.get("withdrawn").is_some() {
        return Ok(None);
    }
    let requirements = |k: &str| -> Vec<semver::VersionReq> {
        doc.get("versions")
            .and_then(|v| v.get(k))
            .and_then(toml::Value::as_array)
            .map(|reqs| {
                reqs.iter()
                    .filter_map(toml::Value::as_str)
                    .filter_map(|r| semver::VersionReq::parse(r).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let safe = requirements("patched")
        .iter()
        .chain(&requirements("unaffected"))
        .any(|r| r.matches(version));
    if safe {
        return Ok(None);
    }
    let str_field = |k: &str| {
        advisory
            .get(k)
            .and_then(toml::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let title = text
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let informational = str_field("informational");
    Ok(Some(Finding {
        id: str_field("id"),
        package: package.to_owned(),
        version: version.to_string(),
        kind: if informational.is_empty() {
            "vulnerability".into()
        } else {
            informational
        },
        title,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADVISORY: &str = "```toml\n[advisory]\nid = \"RUSTSEC-2099-0001\"\npackage = \"demo\"\n\n[versions]\npatched = [\">= 1.2.3\"]\nunaffected = [\"< 1.0.0\"]\n```\n\n# Demo is broken\n";

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn versions_between_unaffected_and_patched_are_affected() {
        assert!(applies(ADVISORY, "demo", &v("1.2.2")).unwrap().is_some());
        assert!(applies(ADVISORY, "demo", &v("1.0.0")).unwrap().is_some());
        assert!(applies(ADVISORY, "demo", &v("1.2.3")).unwrap().is_none());
        assert!(applies(ADVISORY, "demo", &v("0.9.9")).unwrap().is_none());
        let f = applies(ADVISORY, "demo", &v("1.1.0")).unwrap().unwrap();
        assert_eq!(
            (f.id.as_str(), f.kind.as_str(), f.title.as_str()),
            ("RUSTSEC-2099-0001", "vulnerability", "Demo is broken")
        );
    }

    #[test]
    fn withdrawn_advisories_do_not_apply_and_informational_ones_say_so() {
        let withdrawn = ADVISORY.replace("[advisory]\n", "[advisory]\nwithdrawn = \"2099-01-01\"\n");
        assert!(applies(&withdrawn, "demo", &v("1.1.0")).unwrap().is_none());
        let unmaintained = ADVISORY.replace("[advisory]\n", "[advisory]\ninformational = \"unmaintained\"\n");
        assert_eq!(
            applies(&unmaintained, "demo", &v("1.1.0")).unwrap().unwrap().kind,
            "unmaintained"
        );
    }

    #[test]
    fn only_registry_packages_of_the_lock_are_checked() {
        let dir = std::env::temp_dir().join(format!("xtask-advisories-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("crates/demo")).unwrap();
        std::fs::write(dir.join("crates/demo/RUSTSEC-2099-0001.md"), ADVISORY).unwrap();
        let lock = "version = 4\n\n[[package]]\nname = \"demo\"\nversion = \"1.1.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n[[package]]\nname = \"demo\"\nversion = \"1.1.0\"\n";
        let found = scan(lock, &dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found.len(), 1, "the path package is not checked: {found:?}");
    }
}
