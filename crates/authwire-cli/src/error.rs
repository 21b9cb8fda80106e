//! What a command returns when it fails: one line for the user (the cause and the fix) and an
//! exit code for scripts.

use crate::settings::{SECRET_ENV, Settings};
use authwire::{AuthError, error_chain};

/// Exit codes, for scripts (docs/cli.md lists them).
pub(crate) mod exit {
    /// A configuration or input problem.
    pub(crate) const CONFIG: u8 = 1;
    /// No token could be had (the identity provider refused, or could not be reached).
    pub(crate) const AUTH: u8 = 3;
    /// `curl`: the request could not be sent or its answer read.
    pub(crate) const NETWORK: u8 = 4;
    /// `inspect`: the token has expired (scripts use `inspect` as a check).
    pub(crate) const EXPIRED: u8 = 5;
    /// `curl`: the API asked for a step-up (a stronger login, more scope, claims) that could
    /// not be answered here; the challenge is on stderr in one line.
    pub(crate) const STEP_UP: u8 = 6;
    /// `curl`: the server answered with an HTTP error (as `curl -f` does).
    pub(crate) const HTTP: u8 = 22;
}

/// An error for the user: one line, the cause and the fix.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) message: String,
    pub(crate) code: u8,
}

impl CliError {
    /// A configuration or input problem (exit 1).
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: exit::CONFIG,
        }
    }

    /// An API's step-up challenge that could not be answered (exit 6): the challenge, and what
    /// answers it (a login with its `acr_values` and `max_age`, or more scope).
    pub(crate) fn step_up(url: &str, challenge: &authwire::StepUp, login: &str) -> Self {
        use authwire::StepUpReason;
        let fix = match challenge.reason {
            StepUpReason::Authentication => {
                let mut cmd = login.to_owned();
                if !cmd.contains("--browser") {
                    cmd.push_str(" --browser");
                }
                if let Some(acr) = &challenge.acr_values {
                    cmd.push_str(&format!(" --acr-values '{}'", acr.replace('\'', "")));
                }
                if let Some(age) = challenge.max_age {
                    cmd.push_str(&format!(" --max-age {age}"));
                }
                format!("log in again as it asks: `{cmd}`")
            }
            StepUpReason::Scope => "add the scope (--scope) and log in again".to_owned(),
            _ => "log in again".to_owned(),
        };
        Self {
            message: format!("{url} asks for a step-up: {challenge}; {fix}"),
            code: exit::STEP_UP,
        }
    }

    /// A request that could not be sent or read (exit 4).
    pub(crate) fn network(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: exit::NETWORK,
        }
    }

    /// No token could be had for the settings `s` (exit 3): what happened, from where, and the
    /// one thing to do about it, naming the exact command or flag.
    pub(crate) fn auth(e: &AuthError, s: &Settings) -> Self {
        Self::auth_at(e, &s.endpoint, &s.login_command)
    }

    /// [`auth`](Self::auth) from its parts: the identity provider's `endpoint` and the
    /// `authwire login ...` command that logs in with the same settings.
    pub(crate) fn auth_at(e: &AuthError, endpoint: &str, login: &str) -> Self {
        if let Some(line) = transport_failure(e, endpoint) {
            return Self {
                message: format!("{line} (from {endpoint})"),
                code: exit::AUTH,
            };
        }
        let code = e.provider_error().and_then(|p| p.error_code());
        let what = error_chain(e);
        let what = what.strip_prefix("no valid token: ").unwrap_or(&what).to_owned();
        let message = match code {
            Some("login_required") => format!(
                "not logged in: no refresh token is stored for these settings (from {endpoint}); run `{login}`, or give a client secret ({SECRET_ENV} or --client-secret-file)"
            ),
            Some("invalid_grant") => {
                format!("{what} (from {endpoint}); the stored login expired or was revoked: run `{login}`")
            }
            Some("access_denied") => {
                format!(
                    "{what} (from {endpoint}); the login was refused at the identity provider: run `{login}` to try again"
                )
            }
            Some("invalid_client") => {
                format!(
                    "{what} (from {endpoint}); check --client-id and {SECRET_ENV} (or --client-secret-file)"
                )
            }
            Some("invalid_scope") => format!("{what} (from {endpoint}); check --scope"),
            _ if is_dns_failure(&what) => format!(
                "the host name {} did not resolve (from {endpoint}); check the URL and this machine's DNS",
                host_of(endpoint)
            ),
            _ if e.is_transient() => {
                format!(
                    "{what} (from {endpoint}); is the identity provider at {endpoint} up? try again later"
                )
            }
            _ => format!(
                "{} (from {endpoint}); check the identity provider settings (--issuer / --token-url {endpoint})",
                cli_words(&what)
            ),
        };
        Self {
            message,
            code: exit::AUTH,
        }
    }
}

/// A failed TLS handshake or a proxy's refusal anywhere in `e`'s chain, in one line that says
/// what was wrong and names the flag that fixes it; `None` for any other failure. `url` is
/// where the request went.
pub(crate) fn transport_failure(e: &(dyn std::error::Error + 'static), url: &str) -> Option<String> {
    use authwire_oauth2::transport::{CertificateProblem as P, ProxyRefused};
    if let Some(problem) = P::find_in(e) {
        let fix = match problem {
            P::UnknownIssuer => "trust its CA with --cacert FILE (PEM)",
            P::Expired => {
                "check this machine's clock; otherwise the server must renew it (--cacert cannot fix this)"
            }
            P::WrongHost => "check the URL's host name (--cacert cannot fix this)",
            P::Revoked => "the server needs a new certificate (--cacert cannot fix this)",
            P::ClientCertificateRefused => {
                "pass --cert FILE --key FILE with a certificate the server accepts"
            }
            _ => "check --cacert, --cert and --key",
        };
        return Some(format!(
            "TLS to {} failed: {}; {fix}",
            host_of(url),
            problem.describe()
        ));
    }
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<ProxyRefused>() {
            let text = refused.to_string().replace(
                "put the proxy's user and password in its URL (http://user:password@host:port)",
                "put the proxy's user and password in its URL (https_proxy=http://user:password@host:port, or --proxy), or pass --no-proxy",
            );
            return Some(text);
        }
        source = s.source();
    }
    None
}

/// Whether an error chain says a host name did not resolve (hyper's "dns error", the system
/// resolver's "failed to lookup address").
fn is_dns_failure(chain: &str) -> bool {
    chain.contains("dns error")
        || chain.contains("failed to lookup address")
        || chain.contains("could not resolve")
}

/// The host of a URL, or the text itself.
fn host_of(endpoint: &str) -> String {
    url::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| endpoint.to_owned())
}

/// A configuration the OAuth2 provider refused to build, in the CLI's words: a setting is the
/// flag that sets it, and the opt-in is `--allow-insecure-http`.
pub(crate) fn build_error(e: &authwire_oauth2::BuildError) -> CliError {
    match e {
        authwire_oauth2::BuildError::InsecureUrl { setting, host } => CliError::config(format!(
            "--{} uses plain http to {host}, which would expose credentials; use https, or pass --allow-insecure-http to opt in",
            setting.replace('_', "-")
        )),
        other => CliError::config(other.to_string()),
    }
}

/// A library's words in an error found at run time (a discovered endpoint over plain http), in
/// the CLI's: `allow_insecure_http(true)` is `--allow-insecure-http` here.
pub(crate) fn cli_words(text: &str) -> String {
    text.replace(
        "call allow_insecure_http(true) to opt in",
        "pass --allow-insecure-http to opt in",
    )
    .replace("allow_insecure_http(true)", "--allow-insecure-http")
}

#[cfg(test)]
mod tests {
    use super::*;
    use authwire::ProviderError;

    fn message(e: ProviderError) -> String {
        CliError::auth_at(
            &AuthError::Refresh(e),
            "https://idp.example/token",
            "authwire login --profile me",
        )
        .message
    }

    #[test]
    fn not_logged_in_names_the_exact_command_once() {
        let m = message(ProviderError::rejected(
            None,
            "login_required",
            Some("no refresh token is stored; a person must log in first".into()),
        ));
        assert_eq!(
            m,
            "not logged in: no refresh token is stored for these settings (from https://idp.example/token); run `authwire login --profile me`, or give a client secret (AUTHWIRE_CLIENT_SECRET or --client-secret-file)"
        );
        assert_eq!(m.matches("authwire login").count(), 1);
    }

    #[test]
    fn a_host_that_does_not_resolve_is_named() {
        let dns = std::io::Error::other(
            "dns error: failed to lookup address information: Name or service not known",
        );
        let m = message(ProviderError::transient(dns));
        assert_eq!(
            m,
            "the host name idp.example did not resolve (from https://idp.example/token); check the URL and this machine's DNS"
        );
    }

    #[test]
    fn library_settings_are_named_as_flags() {
        let e = authwire_oauth2::BuildError::InsecureUrl {
            setting: "issuer",
            host: "idp.example".into(),
        };
        assert_eq!(
            build_error(&e).message,
            "--issuer uses plain http to idp.example, which would expose credentials; use https, or pass --allow-insecure-http to opt in"
        );
        assert_eq!(
            cli_words(
                "discovered token_endpoint uses plain http to idp.example, which would expose credentials; use https, or call allow_insecure_http(true) to opt in"
            ),
            "discovered token_endpoint uses plain http to idp.example, which would expose credentials; use https, or pass --allow-insecure-http to opt in"
        );
    }
}
