//! The `-v` trace: the pipeline's numbered steps with the time since start, on stderr, and
//! steps 1-3 (check, refresh, retrieve) as every command that needs a token runs them.
//! Never a secret: lengths, schemes and expiry times only.

use crate::error::CliError;
use crate::output::{human_expiry, now};
use crate::settings::Settings;
use authwire::secrecy::ExposeSecret;
use authwire::{Authorizer, Token, TokenState};
use std::sync::Arc;
use std::time::SystemTime;

/// Prints the steps when `-v` is on; a no-op otherwise.
pub(crate) struct Trace {
    on: bool,
    start: SystemTime,
}

impl Trace {
    /// A trace that prints when `on`, timed from now.
    pub(crate) fn new(on: bool) -> Self {
        Self { on, start: now() }
    }

    /// One line: `authwire: [   12.3 ms] STEP: WHAT`.
    pub(crate) fn step(&self, step: &str, what: &str) {
        if self.on {
            let ms = now().duration_since(self.start).unwrap_or_default().as_secs_f64() * 1000.0;
            eprintln!("authwire: [{ms:8.1} ms] {step}: {what}");
        }
    }
}

/// Steps 1-3: check the token in memory, refresh it through the cache or the identity
/// provider, retrieve it; each step traced.
pub(crate) async fn token(
    authorizer: &Authorizer,
    s: &Settings,
    trace: &Trace,
) -> Result<Arc<Token>, CliError> {
    let cache = s.store.as_ref().map_or("no cache", |(_, d)| d.as_str());
    let state = match authorizer.state() {
        TokenState::Missing => "no token in memory (a new process); the refresh reads the cache first",
        TokenState::Fresh { .. } => "the token in memory is fresh",
        TokenState::RefreshDue { .. } => "the token in memory is due for refresh",
        TokenState::Expired => "the token in memory expired",
        _ => "unknown",
    };
    trace.step("step 1 check", &format!("{state} ({cache})"));
    // What this call did, not what the authorizer did before it (`--min-ttl` calls twice).
    let before = authorizer.metrics();
    let token = authorizer.token().await.map_err(|e| CliError::auth(&e, s))?;
    let m = authorizer.metrics();
    let how = if m.fetches > before.fetches {
        format!("fetched a new token from {}", s.endpoint)
    } else if m.store_hits > before.store_hits {
        format!("cache hit in the {cache}: no request to the identity provider")
    } else {
        "served from memory".into()
    };
    trace.step("step 2 refresh", &how);
    let expiry = token
        .expires_at()
        .map_or_else(|| "no known expiry".to_owned(), human_expiry);
    trace.step(
        "step 3 retrieve",
        &format!(
            "{} token, {} bytes, {expiry}",
            token.token_type().scheme(),
            token.access_token().expose_secret().len()
        ),
    );
    Ok(token)
}
