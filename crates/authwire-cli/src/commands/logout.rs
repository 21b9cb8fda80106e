//! `authwire logout`: revoke the cached refresh token at the server (RFC 7009), then delete
//! exactly the entries `authwire token` with the same flags uses.

use crate::args::Credentials;
use crate::error::{CliError, exit};
use crate::settings;
use authwire::error_chain;

/// Run `authwire logout`. A failed revocation is reported (exit 3) and the local copy is
/// deleted anyway.
pub(crate) async fn exec(credentials: &Credentials) -> Result<u8, CliError> {
    let s = settings::resolve(credentials).await?;
    let Some((store, description)) = &s.store else {
        return Err(CliError::config("there is no cache to log out of (--cache none)"));
    };
    let token_key = s.cache_key();
    let mut keys = vec![token_key.clone()];
    if s.dpop_key.is_some() {
        keys.push(settings::dpop_key_entry(&s.endpoint, &s.client_id));
    }
    let mut revocation_failed = false;
    if let Ok(Some(token)) = store.load(&token_key).await
        && token.refresh_token().is_some()
        && let Some(provider) = &s.oauth2
    {
        match provider.revoke(&token).await {
            Ok(()) => eprintln!("authwire: the refresh token was revoked at the server"),
            Err(e) => {
                revocation_failed = true;
                let what = error_chain(&e);
                let hint = if what.contains("no revocation endpoint") {
                    "pass --revocation-url"
                } else {
                    "it may stay valid at the server until it expires"
                };
                eprintln!("authwire: the refresh token was NOT revoked at the server: {what}; {hint}");
            }
        }
    }
    let mut removed = 0;
    for key in &keys {
        let there = store.load(key).await.map(|t| t.is_some()).unwrap_or(true);
        store
            .delete(key)
            .await
            .map_err(|e| CliError::config(error_chain(&e)))?;
        removed += usize::from(there);
    }
    match removed {
        0 => eprintln!(
            "authwire: nothing to log out of: no cached token for these settings in the {description}"
        ),
        1 => eprintln!("authwire: logged out; the cached token was removed from the {description}"),
        _ => eprintln!(
            "authwire: logged out; the cached token and its DPoP key were removed from the {description}"
        ),
    }
    Ok(if revocation_failed { exit::AUTH } else { 0 })
}
