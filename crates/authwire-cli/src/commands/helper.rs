//! What the three credential helpers (kubectl, git, docker) share: a bounded read of the
//! protocol's request on stdin, the current token, and forgetting a token the server rejected.
//! Each prints the secret only in its protocol's answer on stdout; prompts and errors go to
//! stderr.

use crate::error::CliError;
use crate::settings::Settings;
use authwire::{AuthError, Token};
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// The most a helper reads from stdin: the protocols' messages are a few hundred bytes.
const MAX_INPUT: u64 = 64 * 1024;

/// The request on stdin, at most [`MAX_INPUT`] bytes.
pub(super) fn read_stdin() -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_INPUT)
        .read_to_string(&mut text)
        .map_err(|e| CliError::config(format!("cannot read the request on stdin: {e}")))?;
    Ok(text)
}

/// The current token for these settings, from the cache or the identity provider.
pub(super) async fn current(s: &Settings) -> Result<Arc<Token>, AuthError> {
    s.authorizer().token().await
}

/// Whether `authority` (`host`, `host:port`, `[v6]:port`, as git and docker send it) names a
/// loopback address: the one place plain http may carry a token.
pub(super) fn is_loopback_authority(authority: &str) -> bool {
    let host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(authority, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    authwire::request::is_loopback_host(host)
}

/// Whether `e` means a person has to log in (again).
pub(super) fn needs_login(e: &AuthError) -> bool {
    matches!(
        e.provider_error().and_then(|p| p.error_code()),
        Some("login_required" | "invalid_grant")
    )
}

/// Mark the cached token as expired, keeping its refresh token, when it is still `rejected`:
/// the next request refreshes. Another token (a newer one, or another helper's) is left alone.
pub(super) async fn forget(s: &Settings, rejected: &str) -> Result<bool, CliError> {
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
