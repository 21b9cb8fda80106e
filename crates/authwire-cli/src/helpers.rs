//! The CLI as the credential helper of other tools: kubectl's exec credential plugin, git's
//! credential helper protocol, docker's credential helper protocol. All three use the same
//! profiles and cache as `authwire token`, print the secret only in the protocol's own answer
//! on stdout, and keep everything else (prompts, errors) on stderr.

use crate::settings::{self, Settings};
use crate::{AuthError, CliError, Credentials, LoginArgs, exit};
use authwire::Token;
use authwire::secrecy::ExposeSecret;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most a helper reads from stdin: the protocols' messages are a few hundred bytes.
const MAX_INPUT: u64 = 64 * 1024;

fn read_stdin() -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_INPUT)
        .read_to_string(&mut text)
        .map_err(|e| CliError::config(format!("cannot read the request on stdin: {e}")))?;
    Ok(text)
}

/// Write the protocol's answer (it carries the secret) to stdout, and nothing else there.
fn answer(text: &str) -> Result<u8, CliError> {
    crate::out(text)
}

/// The current token for these settings, from the cache or the identity provider.
async fn current(s: &Settings) -> Result<Arc<Token>, AuthError> {
    settings::authorizer(s).token().await
}

/// Mark the cached token as expired, keeping its refresh token, when it is still `rejected`:
/// the next request refreshes. Another token (a newer one, or another helper's) is left alone.
async fn forget(s: &Settings, rejected: &str) -> Result<bool, CliError> {
    let Some((store, _)) = &s.store else {
        return Ok(false);
    };
    let key = s.cache_key();
    let Ok(Some(token)) = store.load(&key).await else {
        return Ok(false);
    };
    if !token.same_access_token(&Token::new(rejected)) {
        return Ok(false);
    }
    let expired = token.with_expires_at(UNIX_EPOCH + Duration::from_secs(1));
    store
        .save(&key, &expired)
        .await
        .map_err(|e| CliError::config(authwire::error_chain(&e)))?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// kubectl: client-go's exec credential plugin.

const KUBE_V1: &str = "client.authentication.k8s.io/v1";
const KUBE_V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

/// What `KUBERNETES_EXEC_INFO` says: the API version to answer in, and whether a person is there.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ExecInfo {
    pub(crate) api_version: String,
    pub(crate) interactive: bool,
}

pub(crate) fn exec_info(raw: Option<&str>) -> Result<ExecInfo, CliError> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        // client-go always sets it for v1; without it, answer v1 and never prompt.
        return Ok(ExecInfo {
            api_version: KUBE_V1.into(),
            interactive: false,
        });
    };
    let doc: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| CliError::config(format!("KUBERNETES_EXEC_INFO is not JSON: {e}")))?;
    let api_version = doc.get("apiVersion").and_then(|v| v.as_str()).unwrap_or(KUBE_V1);
    if api_version != KUBE_V1 && api_version != KUBE_V1BETA1 {
        return Err(CliError::config(format!(
            "KUBERNETES_EXEC_INFO asks for apiVersion {api_version:?}; authwire speaks {KUBE_V1} and {KUBE_V1BETA1}"
        )));
    }
    let interactive = doc
        .pointer("/spec/interactive")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    Ok(ExecInfo {
        api_version: api_version.to_owned(),
        interactive,
    })
}

/// The `ExecCredential` kubectl reads: the token and when it expires (RFC 3339), so kubectl
/// caches it until then and asks again after.
pub(crate) fn exec_credential(info: &ExecInfo, token: &str, expires: Option<SystemTime>) -> String {
    let mut status = serde_json::json!({ "token": token });
    if let Some(at) = expires {
        status["expirationTimestamp"] = serde_json::json!(crate::rfc3339(at));
    }
    let doc = serde_json::json!({
        "kind": "ExecCredential",
        "apiVersion": info.api_version,
        "spec": { "interactive": info.interactive },
        "status": status,
    });
    format!("{doc}\n")
}

pub(crate) async fn kube(credentials: &Credentials, id_token: bool) -> Result<u8, CliError> {
    let info = exec_info(std::env::var("KUBERNETES_EXEC_INFO").ok().as_deref())?;
    if credentials.dpop {
        return Err(CliError::config(
            "kubectl cannot send DPoP proofs: drop --dpop for `authwire kube`",
        ));
    }
    let s = settings::resolve(credentials, false).await?;
    let token = match current(&s).await {
        Ok(t) => t,
        Err(e) if needs_login(&e) && info.interactive => {
            eprintln!("authwire: no valid login for this cluster's identity provider; logging in");
            let login_settings = settings::resolve(credentials, true).await?;
            crate::login(&login_settings, &LoginArgs::interactive()).await?;
            current(&s).await.map_err(|e| CliError::auth(&e, &s.endpoint))?
        }
        Err(e) => {
            let mut error = CliError::auth(&e, &s.endpoint);
            if needs_login(&e) {
                error.message.push_str(" (kubectl runs this plugin non-interactively here: run `authwire login` with the same flags in a terminal)");
            }
            return Err(error);
        }
    };
    let (secret, expires) = if id_token {
        let (id, exp) = fresh_id_token(&s, token).await?;
        (id, exp)
    } else {
        (
            token.access_token().expose_secret().to_owned(),
            token.expires_at(),
        )
    };
    answer(&exec_credential(&info, &secret, expires))
}

fn needs_login(e: &AuthError) -> bool {
    matches!(
        e.provider_error().and_then(|p| p.error_code()),
        Some("login_required" | "invalid_grant")
    )
}

/// The ID token and its `exp`: refreshed first when the cached one has expired or is about to
/// (kubectl would send it until the time we print).
async fn fresh_id_token(s: &Settings, token: Arc<Token>) -> Result<(String, Option<SystemTime>), CliError> {
    let read = |t: &Token| -> Result<(String, Option<SystemTime>), CliError> {
        let id = t.id_token().ok_or_else(|| {
            CliError::config(
                "the identity provider returned no ID token: add --scope openid (and log in again)",
            )
        })?;
        let exp = authwire_jwt::inspect(id.expose_secret())
            .map_err(|e| CliError::config(format!("the ID token cannot be read: {e}")))?
            .expires_at();
        Ok((id.expose_secret().to_owned(), exp))
    };
    let (id, exp) = read(&token)?;
    let margin = authwire::Clock::now(&authwire::SystemClock) + Duration::from_secs(60);
    if exp.is_none_or(|e| e > margin) {
        return Ok((id, exp));
    }
    let authorizer = settings::authorizer(s);
    let cached = authorizer
        .token()
        .await
        .map_err(|e| CliError::auth(&e, &s.endpoint))?;
    authorizer.invalidate_token(&cached);
    let renewed = authorizer
        .token()
        .await
        .map_err(|e| CliError::auth(&e, &s.endpoint))?;
    let (id, exp) = read(&renewed)?;
    if exp.is_some_and(|e| e <= authwire::Clock::now(&authwire::SystemClock)) {
        return Err(CliError {
            message:
                "the identity provider did not issue a new ID token on refresh: run `authwire login` again"
                    .into(),
            code: exit::AUTH,
        });
    }
    Ok((id, exp))
}

// ---------------------------------------------------------------------------------------------
// git: gitcredentials(7).

/// A credential description: `key=value` lines; `key[]` keys repeat.
#[derive(Debug, Default)]
pub(crate) struct Description {
    pub(crate) fields: Vec<(String, String)>,
}

impl Description {
    pub(crate) fn parse(text: &str) -> Self {
        let fields = text
            .lines()
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { fields }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// How `get` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AuthType {
    /// Bearer when git can send it (`capability[]=authtype`) and the server asked for it
    /// (`wwwauth[]` names Bearer); otherwise username and password.
    Auto,
    /// Always username and password (the token as the password).
    Basic,
    /// Always `authtype=Bearer` (git 2.46 or later).
    Bearer,
}

/// Whether a request for `protocol://host` is one of ours: a configured host, over https (or
/// http to a loopback address).
pub(crate) fn git_host_is_ours(d: &Description, hosts: &[String]) -> bool {
    let (Some(protocol), Some(host)) = (d.get("protocol"), d.get("host")) else {
        return false;
    };
    let bare = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let secure = protocol == "https" || (protocol == "http" && authwire::request::is_loopback_host(bare));
    secure && hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
}

pub(crate) fn git_answer(d: &Description, token: &Token, username: &str, authtype: AuthType) -> String {
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

pub(crate) async fn git(
    credentials: &Credentials,
    action: &str,
    hosts: &[String],
    username: &str,
    authtype: AuthType,
) -> Result<u8, CliError> {
    let d = Description::parse(&read_stdin()?);
    match action {
        // authwire owns its cache: what other helpers would store is not ours to keep.
        "store" => Ok(0),
        "get" | "erase" => {
            let s = settings::resolve(credentials, false).await?;
            let hosts = if hosts.is_empty() { &s.hosts } else { hosts };
            if hosts.is_empty() {
                eprintln!(
                    "authwire: git-credential answers only for configured hosts: pass --host HOST (or `hosts` in the profile)"
                );
                return Ok(0);
            }
            if !git_host_is_ours(&d, hosts) {
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
            let token = current(&s).await.map_err(|e| CliError::auth(&e, &s.endpoint))?;
            answer(&git_answer(&d, &token, username, authtype))
        }
        other => Err(CliError::config(format!(
            "unknown git credential action {other:?} (get, store, erase)"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// docker: the credential helper protocol (docker-credential-helpers).

/// What docker-credential-helpers answer when they have nothing for a server; docker treats it
/// as "no credentials" rather than as a failure.
const DOCKER_NOT_FOUND: &str = "credentials not found in native keychain";

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

pub(crate) async fn docker(action: &str) -> Result<u8, CliError> {
    let input = read_stdin()?;
    match action {
        "get" => {
            let host = registry_host(&input);
            if host.is_empty() || !settings::profile_names()?.iter().any(|p| p == &host) {
                let _ = answer(&format!("{DOCKER_NOT_FOUND}\n"));
                return Ok(1);
            }
            let credentials = Credentials::for_profile(&host);
            let s = settings::resolve(&credentials, false).await?;
            let token = current(&s).await.map_err(|e| CliError::auth(&e, &s.endpoint))?;
            let body = serde_json::json!({
                "ServerURL": input.trim(),
                "Username": s.username.as_deref().unwrap_or("oauth2accesstoken"),
                "Secret": token.access_token().expose_secret(),
            });
            answer(&format!("{body}\n"))
        }
        "list" => {
            let mut listed = BTreeMap::new();
            for name in settings::profile_names()?
                .into_iter()
                .filter(|n| looks_like_host(n))
            {
                let username =
                    settings::profile_username(&name)?.unwrap_or_else(|| "oauth2accesstoken".into());
                listed.insert(name, username);
            }
            answer(&format!("{}\n", serde_json::json!(listed)))
        }
        // docker login stores what it was given; authwire owns its cache, so nothing to keep.
        "store" => Ok(0),
        "erase" => {
            let host = registry_host(&input);
            if settings::profile_names()?.iter().any(|p| p == &host) {
                let s = settings::resolve(&Credentials::for_profile(&host), false).await?;
                if let Some((store, _)) = &s.store {
                    let key = s.cache_key();
                    store
                        .delete(&key)
                        .await
                        .map_err(|e| CliError::config(authwire::error_chain(&e)))?;
                }
            }
            Ok(0)
        }
        "version" => answer(&format!(
            "docker-credential-authwire (authwire {})\n",
            env!("CARGO_PKG_VERSION")
        )),
        other => Err(CliError::config(format!(
            "usage: docker-credential-authwire get|list|store|erase|version (not {other:?})"
        ))),
    }
}

/// Run as `docker-credential-authwire ACTION`: one line of error on stderr, as docker shows it.
pub(crate) fn docker_main(args: &[String]) -> std::process::ExitCode {
    let action = args.get(1).cloned().unwrap_or_default();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("docker-credential-authwire: cannot start: {e}");
            return std::process::ExitCode::from(exit::CONFIG);
        }
    };
    match runtime.block_on(docker(&action)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("docker-credential-authwire: {}", e.message);
            std::process::ExitCode::from(e.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_info_picks_the_version_and_interactivity() {
        let v1beta1 = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{"interactive":true}}"#;
        assert_eq!(
            exec_info(Some(v1beta1))
                .ok()
                .map(|i| (i.api_version, i.interactive)),
            Some((KUBE_V1BETA1.to_owned(), true))
        );
        let none = exec_info(None).ok().unwrap();
        assert_eq!((none.api_version.as_str(), none.interactive), (KUBE_V1, false));
        assert!(exec_info(Some(r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1"}"#)).is_err());
        assert!(exec_info(Some("{")).is_err());
    }

    #[test]
    fn git_hosts_must_be_configured_and_secure() {
        let d = |p: &str, h: &str| Description::parse(&format!("protocol={p}\nhost={h}\n\n"));
        let hosts = vec!["git.example.com".to_owned(), "127.0.0.1:8080".to_owned()];
        assert!(git_host_is_ours(&d("https", "git.example.com"), &hosts));
        assert!(git_host_is_ours(&d("https", "GIT.example.com"), &hosts));
        assert!(git_host_is_ours(&d("http", "127.0.0.1:8080"), &hosts));
        assert!(
            !git_host_is_ours(&d("http", "git.example.com"), &hosts),
            "plain http off loopback"
        );
        assert!(!git_host_is_ours(&d("https", "evil.example.com"), &hosts));
        assert!(!git_host_is_ours(
            &d("https", "git.example.com.evil.example"),
            &hosts
        ));
        assert!(!git_host_is_ours(
            &Description::parse("host=git.example.com\n"),
            &hosts
        ));
    }

    #[test]
    fn git_answers_bearer_only_when_git_and_the_server_both_can() {
        let token = Token::new("tok").with_expires_at(UNIX_EPOCH + Duration::from_secs(1_900_000_000));
        let plain = Description::parse("protocol=https\nhost=h\n");
        assert_eq!(
            git_answer(&plain, &token, "oauth2", AuthType::Auto),
            "username=oauth2\npassword=tok\npassword_expiry_utc=1900000000\n"
        );
        let capable = Description::parse(
            "capability[]=authtype\nprotocol=https\nhost=h\nwwwauth[]=Bearer realm=\"x\"\n",
        );
        assert_eq!(
            git_answer(&capable, &token, "oauth2", AuthType::Auto),
            "capability[]=authtype\nauthtype=Bearer\ncredential=tok\nephemeral=true\npassword_expiry_utc=1900000000\n"
        );
        let basic_server = Description::parse(
            "capability[]=authtype\nprotocol=https\nhost=h\nwwwauth[]=Basic realm=\"x\"\n",
        );
        assert!(git_answer(&basic_server, &token, "u", AuthType::Auto).starts_with("username=u\n"));
        assert!(git_answer(&basic_server, &token, "u", AuthType::Bearer).contains("authtype=Bearer"));
        assert!(
            git_answer(&plain, &token, "u", AuthType::Bearer).starts_with("username=u\n"),
            "git did not announce the capability"
        );
    }

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
    fn exec_credentials_have_the_shape_client_go_reads() {
        let info = ExecInfo {
            api_version: KUBE_V1.into(),
            interactive: false,
        };
        let doc: serde_json::Value = serde_json::from_str(&exec_credential(
            &info,
            "tok",
            Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
        ))
        .unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "kind": "ExecCredential",
                "apiVersion": "client.authentication.k8s.io/v1",
                "spec": {"interactive": false},
                "status": {"token": "tok", "expirationTimestamp": "2030-03-17T17:46:40Z"}
            })
        );
    }
}
