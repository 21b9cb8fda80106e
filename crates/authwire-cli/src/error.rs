//! What a command returns when it fails: one line for the user (the cause and the fix) and an
//! exit code for scripts.

use crate::settings::SECRET_ENV;
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

    /// A request that could not be sent or read (exit 4).
    pub(crate) fn network(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: exit::NETWORK,
        }
    }

    /// No token could be had from `endpoint` (exit 3), with what to do about it.
    pub(crate) fn auth(e: &AuthError, endpoint: &str) -> Self {
        let hint = match e.provider_error().and_then(|p| p.error_code()) {
            Some("invalid_client") => format!("check --client-id and {SECRET_ENV} (or --client-secret-file)"),
            Some("login_required") => {
                format!(
                    "run `authwire login`, or give a client secret ({SECRET_ENV} or --client-secret-file)"
                )
            }
            Some("invalid_grant") => {
                "the stored login expired or was revoked: run `authwire login` again".into()
            }
            Some("invalid_scope") => "check --scope".into(),
            Some("access_denied") => {
                "the login was refused at the identity provider; run `authwire login` to try again".into()
            }
            _ if e.is_transient() => format!("is the identity provider at {endpoint} up? try again later"),
            _ => format!("check the identity provider settings (--issuer / --token-url {endpoint})"),
        };
        let what = error_chain(e);
        let what = what.strip_prefix("no valid token: ").unwrap_or(&what).to_owned();
        Self {
            message: format!("{what} (from {endpoint}); {hint}"),
            code: exit::AUTH,
        }
    }
}
