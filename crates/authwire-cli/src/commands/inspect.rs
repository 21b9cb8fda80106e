//! `authwire inspect [TOKEN|-]`: a JWT's header and claims and its expiry in human time; with
//! no token, the current one. Exit 5 when it has expired, so scripts can use it as a check.

use crate::args::{Credentials, InspectArgs};
use crate::error::{CliError, exit};
use crate::output::{human_expiry, now, out, rfc3339};
use crate::settings;
use crate::trace::{self, Trace};
use authwire::secrecy::ExposeSecret;

/// Run `authwire inspect`.
pub(crate) async fn exec(
    credentials: &Credentials,
    args: InspectArgs,
    trace: &Trace,
) -> Result<u8, CliError> {
    match args.token {
        Some(t) => show(&read_token_arg(&t).await?, None),
        None => {
            let s = settings::resolve(credentials).await?;
            let token = trace::token(&s.authorizer(), &s, trace).await?;
            show(token.access_token().expose_secret(), s.dpop_key.as_ref())
        }
    }
}

async fn read_token_arg(arg: &str) -> Result<String, CliError> {
    if arg != "-" {
        return Ok(arg.to_owned());
    }
    use tokio::io::AsyncReadExt;
    let mut s = String::new();
    tokio::io::stdin()
        .take(authwire_jwt::MAX_TOKEN_BYTES as u64 + 1)
        .read_to_string(&mut s)
        .await
        .map_err(|e| CliError::config(format!("cannot read the token from stdin: {e}")))?;
    Ok(s.trim().to_owned())
}

/// Show a token's claims; for a DPoP-bound one, its `cnf.jkt` and whether this client's key is
/// the one it is bound to.
fn show(token: &str, key: Option<&authwire_oauth2::DpopKey>) -> Result<u8, CliError> {
    let claims =
        authwire_jwt::inspect(token).map_err(|e| CliError::config(format!("cannot inspect: {e}")))?;
    let pretty = |v: &serde_json::Map<String, serde_json::Value>| {
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into())
    };
    let mut text = format!(
        "header: {}\nclaims: {}\n",
        pretty(claims.header()),
        pretty(claims.all())
    );
    if let Some(exp) = claims.expires_at() {
        text.push_str(&format!("expires: {} ({})\n", rfc3339(exp), human_expiry(exp)));
    }
    if let Some(jkt) = claims
        .all()
        .get("cnf")
        .and_then(|c| c.get("jkt"))
        .and_then(|j| j.as_str())
    {
        let verdict = match key {
            Some(k) if k.thumbprint() == jkt => "matches this client's DPoP key",
            Some(_) => "does NOT match this client's DPoP key",
            None => "DPoP-bound; pass --dpop to compare with this client's key",
        };
        text.push_str(&format!("cnf.jkt: {jkt} ({verdict})\n"));
    }
    text.push_str("(not verified: inspect reads a token, it does not check its signature)\n");
    let printed = out(&text)?;
    if claims.expires_at().is_some_and(|exp| exp <= now()) {
        eprintln!("authwire: the token has expired");
        return Ok(exit::EXPIRED);
    }
    Ok(printed)
}
