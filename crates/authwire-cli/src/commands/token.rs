//! `authwire token`: the access token alone on stdout (or as JSON), refreshed first when it
//! has less than `--min-ttl` left.

use crate::args::{Credentials, TokenArgs};
use crate::error::CliError;
use crate::output::{now, out, rfc3339};
use crate::settings;
use crate::trace::{self, Trace};
use authwire::Token;
use authwire::secrecy::ExposeSecret;
use std::time::Duration;

/// Run `authwire token`.
pub(crate) async fn exec(credentials: &Credentials, args: TokenArgs, trace: &Trace) -> Result<u8, CliError> {
    let s = settings::resolve(credentials).await?;
    let authorizer = s.authorizer();
    let mut token = trace::token(&authorizer, &s, trace).await?;
    if let Some(min) = args.min_ttl
        && time_left(&token) < min
    {
        // Less than asked for: forget the cached token (bearer or DPoP-bound) and fetch a new
        // one.
        authorizer.invalidate_token(&token);
        trace.step(
            "step 2 refresh",
            &format!("less than --min-ttl {min:?} left: refreshing first"),
        );
        token = trace::token(&authorizer, &s, trace).await?;
        if time_left(&token) < min {
            eprintln!(
                "authwire: the new token lives less than --min-ttl {min:?}: the identity provider issues shorter ones"
            );
        }
    }
    print(&token, args.json)
}

/// How long `token` has left (a token without a known expiry never counts as too short).
fn time_left(token: &Token) -> Duration {
    token
        .expires_at()
        .map_or(Duration::MAX, |exp| exp.duration_since(now()).unwrap_or_default())
}

fn print(token: &Token, json: bool) -> Result<u8, CliError> {
    if !json {
        return out(&format!("{}\n", token.access_token().expose_secret()));
    }
    let body = serde_json::json!({
        "access_token": token.access_token().expose_secret(),
        "token_type": token.token_type().scheme(),
        "expires_at": token.expires_at().map(rfc3339),
        "scope": token.scope(),
    });
    out(&format!("{body}\n"))
}
