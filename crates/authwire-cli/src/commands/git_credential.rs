//! `authwire git-credential ACTION`: git's credential helper (gitcredentials(7)).

use super::helper::{current, forget, is_loopback_authority, read_stdin};
use crate::args::{AuthType, Credentials, GitArgs};
use crate::error::CliError;
use crate::output::out;
use crate::settings;
use authwire::Token;
use authwire::secrecy::ExposeSecret;
use std::time::UNIX_EPOCH;

/// A credential description: `key=value` lines; `key[]` keys repeat.
#[derive(Debug, Default)]
pub(crate) struct Description {
    pub(crate) fields: Vec<(String, String)>,
}

impl Description {
    /// Read a description up to its first empty line.
    pub(crate) fn parse(text: &str) -> Self {
        let fields = text
            .lines()
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { fields }
    }

    /// The first value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key` (for `key[]`).
    pub(crate) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether a request for `protocol://host` is one of ours: a configured host, over https (or
/// http to a loopback address).
pub(crate) fn host_is_ours(d: &Description, hosts: &[String]) -> bool {
    let (Some(protocol), Some(host)) = (d.get("protocol"), d.get("host")) else {
        return false;
    };
    let secure = protocol == "https" || (protocol == "http" && is_loopback_authority(host));
    secure && hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
}

/// The answer to `get`: `authtype=Bearer` when git and the server both can, otherwise
/// username and password.
pub(crate) fn answer(d: &Description, token: &Token, username: &str, authtype: AuthType) -> String {
    let secret = token.access_token().expose_secret();
    let can_bearer = d.all("capability[]").any(|c| c == "authtype");
    let asked_bearer = d.all("wwwauth[]").any(|w| {
        w.split_whitespace()
            .next()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
    });
    let bearer = can_bearer
        && match authtype {
            AuthType::Bearer => true,
            AuthType::Auto => asked_bearer,
            AuthType::Basic => false,
        };
    let mut out = String::new();
    if bearer {
        out.push_str("capability[]=authtype\nauthtype=Bearer\n");
        out.push_str(&format!("credential={secret}\n"));
        // Not for storage helpers: authwire keeps (and refreshes) its own cache.
        out.push_str("ephemeral=true\n");
    } else {
        out.push_str(&format!("username={username}\npassword={secret}\n"));
    }
    if let Some(exp) = token.expires_at() {
        let secs = exp.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        out.push_str(&format!("password_expiry_utc={secs}\n"));
    }
    out
}

/// Run `authwire git-credential`.
pub(crate) async fn exec(credentials: &Credentials, args: GitArgs) -> Result<u8, CliError> {
    let d = Description::parse(&read_stdin()?);
    match args.action.as_str() {
        // authwire owns its cache: what other helpers would store is not ours to keep.
        "store" => Ok(0),
        action @ ("get" | "erase") => {
            let s = settings::resolve(credentials).await?;
            let hosts = if args.hosts.is_empty() {
                &s.hosts
            } else {
                &args.hosts
            };
            if hosts.is_empty() {
                eprintln!(
                    "authwire: git-credential answers only for configured hosts: pass --host HOST (or `hosts` in the profile)"
                );
                return Ok(0);
            }
            if !host_is_ours(&d, hosts) {
                // Not ours: say nothing, so that the next helper in git's list answers.
                return Ok(0);
            }
            if action == "erase" {
                if let Some(rejected) = d.get("password").or(d.get("credential")) {
                    forget(&s, rejected).await?;
                }
                return Ok(0);
            }
            if s.dpop_key.is_some() {
                return Err(CliError::config("git cannot send DPoP proofs: drop --dpop here"));
            }
            let token = current(&s).await.map_err(|e| CliError::auth(&e, &s))?;
            out(&answer(&d, &token, &args.username, args.authtype))
        }
        other => Err(CliError::config(format!(
            "unknown git credential action {other:?} (get, store, erase)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn git_hosts_must_be_configured_and_secure() {
        let d = |p: &str, h: &str| Description::parse(&format!("protocol={p}\nhost={h}\n\n"));
        let hosts = vec!["git.example.com".to_owned(), "127.0.0.1:8080".to_owned()];
        assert!(host_is_ours(&d("https", "git.example.com"), &hosts));
        assert!(host_is_ours(&d("https", "GIT.example.com"), &hosts));
        assert!(host_is_ours(&d("http", "127.0.0.1:8080"), &hosts));
        assert!(
            !host_is_ours(&d("http", "git.example.com"), &hosts),
            "plain http off loopback"
        );
        assert!(!host_is_ours(&d("https", "evil.example.com"), &hosts));
        assert!(!host_is_ours(&d("https", "git.example.com.evil.example"), &hosts));
        assert!(!host_is_ours(
            &Description::parse("host=git.example.com\n"),
            &hosts
        ));
    }

    #[test]
    fn git_answers_bearer_only_when_git_and_the_server_both_can() {
        let token = Token::new("tok").with_expires_at(UNIX_EPOCH + Duration::from_secs(1_900_000_000));
        let plain = Description::parse("protocol=https\nhost=h\n");
        assert_eq!(
            answer(&plain, &token, "oauth2", AuthType::Auto),
            "username=oauth2\npassword=tok\npassword_expiry_utc=1900000000\n"
        );
        let capable = Description::parse(
            "capability[]=authtype\nprotocol=https\nhost=h\nwwwauth[]=Bearer realm=\"x\"\n",
        );
        assert_eq!(
            answer(&capable, &token, "oauth2", AuthType::Auto),
            "capability[]=authtype\nauthtype=Bearer\ncredential=tok\nephemeral=true\npassword_expiry_utc=1900000000\n"
        );
        let basic_server = Description::parse(
            "capability[]=authtype\nprotocol=https\nhost=h\nwwwauth[]=Basic realm=\"x\"\n",
        );
        assert!(answer(&basic_server, &token, "u", AuthType::Auto).starts_with("username=u\n"));
        assert!(answer(&basic_server, &token, "u", AuthType::Bearer).contains("authtype=Bearer"));
        assert!(
            answer(&plain, &token, "u", AuthType::Bearer).starts_with("username=u\n"),
            "git did not announce the capability"
        );
    }
}
