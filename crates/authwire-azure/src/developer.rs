//! A developer's own login: [`AzureCli`] (`az login`) and [`AzureDeveloperCli`] (`azd auth
//! login`), each asked for a token by running it, as `DefaultAzureCredential` does. The program
//! runs once per token (the `Authorizer` caches it until it expires), never per request.

use authwire::{CacheKey, Clock, IdentityProvider, ProviderError, Token, async_trait};
use secrecy::{ExposeSecret as _, SecretString};
use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long `az` or `azd` may take by default (Azure's SDKs allow 10 s).
pub const DEVELOPER_CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// What both tools share: the program, the scope, the tenant, the timeout, the clock.
#[derive(Clone)]
struct Cli {
    program: OsString,
    scope: Option<String>,
    tenant: Option<String>,
    timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl Cli {
    fn new(program: &str) -> Self {
        Self {
            program: OsString::from(authwire_oauth2::process::tool_name(program)),
            scope: None,
            tenant: None,
            timeout: DEVELOPER_CLI_TIMEOUT,
            clock: Arc::new(authwire::SystemClock),
        }
    }

    /// The scope, checked as Azure's SDKs check it before it reaches a command line.
    fn scope(&self, what: &str) -> Result<&str, ProviderError> {
        let scope = self.scope.as_deref().ok_or_else(|| {
            ProviderError::permanent(format!("{what} needs a scope (https://RESOURCE/.default)"))
        })?;
        valid_argument(scope, "scope")?;
        Ok(scope)
    }

    /// Run the tool with `args` (bounded, no shell); `fix` is what its error tells the user.
    async fn run(&self, args: &[&str], tool: &str, fix: &str) -> Result<Vec<u8>, ProviderError> {
        authwire_oauth2::process::run_credential_program(&self.program, args, self.timeout, tool, fix).await
    }

    /// `kind|program|scope|tenant=`: one tool's tokens for one scope and tenant.
    fn cache_key(&self, kind: &str) -> CacheKey {
        CacheKey::new(format!(
            "{kind}|{}|{}|tenant={}",
            self.program.to_string_lossy(),
            self.scope.as_deref().unwrap_or(""),
            self.tenant.as_deref().unwrap_or("")
        ))
    }

    fn tenant(&self) -> Result<Option<&str>, ProviderError> {
        match self.tenant.as_deref() {
            Some(t) => valid_argument(t, "tenant").map(|()| Some(t)),
            None => Ok(None),
        }
    }
}

/// A scope or tenant goes on a command line: letters, digits and `.-_:/` only (no space, no
/// leading dash that would read as an option), as azure-identity requires.
fn valid_argument(value: &str, what: &str) -> Result<(), ProviderError> {
    let ok = !value.is_empty()
        && !value.starts_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ProviderError::permanent(format!(
            "the {what} {value:?} is not valid: letters, digits and . - _ : / only"
        )))
    }
}

/// The token of the account logged in with the Azure CLI (`az login`), from
/// `az account get-access-token --output json --scope SCOPE [--tenant TENANT]`.
///
/// ```no_run
/// let credential = authwire_azure::AzureCli::new().scope("https://management.azure.com/.default");
/// let authorizer = authwire::Authorizer::new(credential);
/// ```
#[derive(Clone)]
pub struct AzureCli(Cli);

/// The token of the account logged in with the Azure Developer CLI (`azd auth login`), from
/// `azd auth token --output json --scope SCOPE [--tenant-id TENANT]`.
#[derive(Clone)]
pub struct AzureDeveloperCli(Cli);

macro_rules! shared_builder {
    ($t:ident, $name:literal) => {
        impl Default for $t {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $t {
            #[doc = concat!("`", $name, "` from `PATH` (`", $name, ".cmd` on Windows), with a 10 s timeout.")]
            pub fn new() -> Self {
                Self(Cli::new($name))
            }

            /// The scope (`https://RESOURCE/.default`); required.
            pub fn scope(mut self, scope: impl Into<String>) -> Self {
                self.0.scope = Some(scope.into());
                self
            }

            /// Ask for a token of this tenant.
            pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
                self.0.tenant = Some(tenant.into());
                self
            }

            /// Run this program instead (a full path).
            pub fn program(mut self, program: impl Into<OsString>) -> Self {
                self.0.program = program.into();
                self
            }

            /// Allow the program this long.
            pub fn timeout(mut self, timeout: Duration) -> Self {
                self.0.timeout = timeout;
                self
            }

            /// Read time from `clock` (tests; the default is the system clock).
            pub fn clock(mut self, clock: impl Clock) -> Self {
                self.0.clock = Arc::new(clock);
                self
            }
        }

        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("program", &self.0.program)
                    .field("scope", &self.0.scope)
                    .field("tenant", &self.0.tenant)
                    .finish_non_exhaustive()
            }
        }
    };
}

shared_builder!(AzureCli, "az");
shared_builder!(AzureDeveloperCli, "azd");

#[async_trait]
impl IdentityProvider for AzureCli {
    async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
        let c = &self.0;
        let scope = c.scope("AzureCli")?;
        let mut args = vec![
            "account",
            "get-access-token",
            "--output",
            "json",
            "--scope",
            scope,
        ];
        if let Some(t) = c.tenant()? {
            args.extend(["--tenant", t]);
        }
        let out = c.run(&args, "az", "run `az login`").await?;
        parse_az(&out, c.clock.now())
    }

    fn cache_key(&self) -> CacheKey {
        self.0.cache_key("azure-cli")
    }
}

#[async_trait]
impl IdentityProvider for AzureDeveloperCli {
    async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
        let c = &self.0;
        let scope = c.scope("AzureDeveloperCli")?;
        let mut args = vec!["auth", "token", "--output", "json", "--scope", scope];
        if let Some(t) = c.tenant()? {
            args.extend(["--tenant-id", t]);
        }
        let out = c.run(&args, "azd", "run `azd auth login`").await?;
        parse_azd(&out, c.clock.now())
    }

    fn cache_key(&self) -> CacheKey {
        self.0.cache_key("azure-developer-cli")
    }
}

fn bad(what: &str, why: &str) -> ProviderError {
    ProviderError::invalid_response(None, format!("{what}: {why}"))
}

fn fresh(
    token: SecretString,
    expires_at: SystemTime,
    now: SystemTime,
    what: &str,
    fix: &str,
) -> Result<Token, ProviderError> {
    if expires_at <= now {
        return Err(bad(
            what,
            &format!("the token it gave has already expired: {fix}"),
        ));
    }
    Ok(Token::new(token.expose_secret()).with_expires_at(expires_at))
}

/// `az account get-access-token --output json`: `{"accessToken", "expiresOn": "local time",
/// "expires_on": EPOCH, "tokenType", "subscription", "tenant"}`. `expires_on` (az 2.54 and
/// later) is read; `expiresOn` is a local time without a zone, which is not guessed at.
pub(crate) fn parse_az(out: &[u8], now: SystemTime) -> Result<Token, ProviderError> {
    #[derive(serde::Deserialize)]
    struct Az {
        #[serde(rename = "accessToken")]
        access_token: Option<SecretString>,
        expires_on: Option<serde_json::Value>,
    }
    let what = "az account get-access-token";
    let az: Az = serde_json::from_slice(out).map_err(|_| bad(what, "the output is not the JSON expected"))?;
    let token = az.access_token.ok_or_else(|| bad(what, "no accessToken"))?;
    let epoch = match az.expires_on {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| bad(what, "no expires_on (az 2.54 or later gives one): upgrade az"))?;
    fresh(
        token,
        authwire::expiry_at_unix(now, epoch),
        now,
        what,
        "run `az login`",
    )
}

/// `azd auth token --output json`: `{"token", "expiresOn": "RFC 3339"}`.
pub(crate) fn parse_azd(out: &[u8], now: SystemTime) -> Result<Token, ProviderError> {
    #[derive(serde::Deserialize)]
    struct Azd {
        token: Option<SecretString>,
        #[serde(rename = "expiresOn")]
        expires_on: Option<String>,
    }
    let what = "azd auth token";
    let azd: Azd =
        serde_json::from_slice(out).map_err(|_| bad(what, "the output is not the JSON expected"))?;
    let token = azd.token.ok_or_else(|| bad(what, "no token"))?;
    let expires_at = azd
        .expires_on
        .as_deref()
        .and_then(authwire_oauth2::transport::parse_rfc3339)
        .ok_or_else(|| bad(what, "no RFC 3339 expiresOn"))?;
    fresh(token, expires_at, now, what, "run `azd auth login`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_tenants_that_could_be_options_are_refused() {
        assert!(valid_argument("https://management.azure.com/.default", "scope").is_ok());
        assert!(valid_argument("--output=x", "scope").is_err());
        assert!(valid_argument("a b", "scope").is_err());
        assert!(valid_argument("t;rm", "tenant").is_err());
    }
}
