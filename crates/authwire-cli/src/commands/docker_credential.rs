//! `docker-credential-authwire ACTION`: docker's credential helper protocol
//! (docker-credential-helpers), spoken when the binary is installed or linked under that name.
//!
//! One rule decides which profile answers for a registry, for `get`, `erase` and `list` alike
//! ([`profile_for`]): a profile named after the registry's host (a name with a dot or a port,
//! or `localhost`), reached over https, or plain http only to a loopback address.

use super::helper::{current, is_loopback_authority, read_stdin};
use crate::args::Credentials;
use crate::error::CliError;
use crate::output::out;
use crate::settings;
use authwire::secrecy::ExposeSecret;
use std::collections::BTreeMap;

/// What docker-credential-helpers answer when they have nothing for a server; docker treats it
/// as "no credentials" rather than as a failure.
const NOT_FOUND: &str = "credentials not found in native keychain";

/// The username sent when the profile names none (the one Google's and Azure's registries take).
const DEFAULT_USERNAME: &str = "oauth2accesstoken";

/// `--help`.
const USAGE: &str = "\
docker-credential-authwire: docker's credential helper, answered with authwire's tokens

Usage: docker-credential-authwire <get|list|store|erase|version>

  get      read a registry URL on stdin; print {\"ServerURL\",\"Username\",\"Secret\"} with the
           current token of the profile named after the registry's host
  list     print {\"registry host\": \"username\"} for every such profile
  erase    forget the cached token of that profile (docker logout)
  store    accepted and ignored: authwire keeps its own cache
  version  print the version

A profile answers for a registry when it is named after the registry's host (a name with a dot
or a port, or `localhost`), and the registry is reached over https (plain http only to a
loopback address). Install: link this binary as `docker-credential-authwire` on PATH and set
\"credsStore\": \"authwire\" (or a \"credHelpers\" entry) in ~/.docker/config.json.
See docs/docker.md.
";

/// The registry host of a server URL as docker sends it (`https://host:port/v1/`, `host:port`).
pub(crate) fn registry_host(server: &str) -> String {
    let s = server.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    s.split('/').next().unwrap_or_default().to_ascii_lowercase()
}

/// Profiles named after a registry host: a name with a dot or a port, or `localhost`.
fn looks_like_host(name: &str) -> bool {
    name.contains('.') || name.contains(':') || name == "localhost"
}

/// The profile that answers for `server` (what docker sends), if any: the one rule for `get`,
/// `erase` and `list`.
pub(crate) fn profile_for(server: &str, profiles: &[String]) -> Option<String> {
    let server = server.trim();
    let host = registry_host(server);
    if host.is_empty() || !looks_like_host(&host) {
        return None;
    }
    let secure = match server.split_once("://") {
        None => true, // docker's bare `host[:port]` means https
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => true,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => is_loopback_authority(&host),
        Some(_) => false,
    };
    (secure && profiles.iter().any(|p| p == &host)).then_some(host)
}

/// Run `docker-credential-authwire ACTION`.
pub(crate) async fn exec(action: &str) -> Result<u8, CliError> {
    match action {
        "-h" | "--help" | "help" => return out(USAGE),
        "version" | "--version" | "-V" => {
            return out(&format!(
                "docker-credential-authwire (authwire {})\n",
                env!("CARGO_PKG_VERSION")
            ));
        }
        // docker login stores what it was given; authwire owns its cache, so nothing is kept.
        // The input (the registry's password among it) is still read to its end, then wiped:
        // a helper that exits before its input is written breaks the writer's pipe.
        "store" => {
            drop(authwire::secrecy::zeroize::Zeroizing::new(read_stdin()?));
            return Ok(0);
        }
        "get" | "list" | "erase" => {}
        other => {
            return Err(CliError::config(format!(
                "usage: docker-credential-authwire get|list|store|erase|version (not {other:?}); see --help"
            )));
        }
    }
    let input = read_stdin()?;
    let profiles = settings::profile_names()?;
    match action {
        "get" => {
            let Some(profile) = profile_for(&input, &profiles) else {
                let _ = out(&format!("{NOT_FOUND}\n"));
                return Ok(1);
            };
            let s = settings::resolve(&Credentials::for_profile(&profile)).await?;
            let token = current(&s).await.map_err(|e| CliError::auth(&e, &s))?;
            let body = serde_json::json!({
                "ServerURL": input.trim(),
                "Username": s.username.as_deref().unwrap_or(DEFAULT_USERNAME),
                "Secret": token.access_token().expose_secret(),
            });
            out(&format!("{body}\n"))
        }
        "list" => {
            let mut listed = BTreeMap::new();
            for name in profiles.iter().filter(|n| profile_for(n, &profiles).is_some()) {
                let username = settings::profile_username(name)?.unwrap_or_else(|| DEFAULT_USERNAME.into());
                listed.insert(name.clone(), username);
            }
            out(&format!("{}\n", serde_json::json!(listed)))
        }
        _ => {
            if let Some(profile) = profile_for(&input, &profiles) {
                let s = settings::resolve(&Credentials::for_profile(&profile)).await?;
                if let Some((store, _)) = &s.store {
                    store
                        .delete(&s.cache_key())
                        .await
                        .map_err(|e| CliError::config(authwire::error_chain(&e)))?;
                }
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts_are_read_from_what_docker_sends() {
        assert_eq!(
            registry_host("https://Registry.example.com/v1/\n"),
            "registry.example.com"
        );
        assert_eq!(registry_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(registry_host("us-docker.pkg.dev"), "us-docker.pkg.dev");
    }

    #[test]
    fn one_rule_picks_the_profile_for_get_erase_and_list() {
        // Issue 24, item 5: `get` answered for any profile named like the URL's host, including
        // names that are not registry hosts and plain-http URLs off loopback.
        let profiles: Vec<String> = ["registry.example.com", "localhost:5000", "me", "127.0.0.1:5000"]
            .map(String::from)
            .to_vec();
        let pick = |s: &str| profile_for(s, &profiles);
        assert_eq!(
            pick("https://registry.example.com/v1/"),
            Some("registry.example.com".into())
        );
        assert_eq!(pick("registry.example.com"), Some("registry.example.com".into()));
        assert_eq!(pick("http://127.0.0.1:5000"), Some("127.0.0.1:5000".into()));
        assert_eq!(pick("http://localhost:5000/v2/"), Some("localhost:5000".into()));
        assert_eq!(
            pick("http://registry.example.com"),
            None,
            "plain http off loopback"
        );
        assert_eq!(
            pick("https://me"),
            None,
            "a profile name that is not a registry host"
        );
        assert_eq!(pick("me"), None);
        assert_eq!(pick("ftp://registry.example.com"), None);
        assert_eq!(pick("https://evil.example.com"), None);
        assert_eq!(pick(""), None);
    }
}
