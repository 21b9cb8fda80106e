//! Configuration: the builder, client authentication methods, grants, build errors.

use crate::client_auth::ClientAuthMethod;
use crate::grants::Grant;
use crate::provider::OAuth2Provider;
use authwire::{Clock, SystemClock};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// How long one HTTP request to the identity provider may take by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest response body read from the identity provider; larger answers are refused.
pub use authwire_http::MAX_RESPONSE_BYTES;

/// What is wrong with a provider configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A required setting is missing.
    Missing(&'static str),
    /// A URL does not parse.
    InvalidUrl {
        /// Which setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// A URL would send credentials over plain http to a host that is not loopback.
    InsecureUrl {
        /// Which setting.
        setting: &'static str,
        /// The host.
        host: String,
    },
    /// Two settings contradict each other.
    Conflict(&'static str),
    /// A private key could not be read.
    Key(String),
    /// The HTTP client could not be built. No longer returned by `build`: the client is built
    /// on first use (a cached token needs none), and a failure there is a `ProviderError`.
    HttpClient(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Missing(what) => write!(f, "{what} is required"),
            BuildError::InvalidUrl { setting, reason } => write!(f, "{setting} is not a valid URL: {reason}"),
            BuildError::InsecureUrl { setting, host } => write!(
                f,
                "{setting} uses plain http to {host}, which would expose credentials; use https, or call allow_insecure_http(true) to opt in"
            ),
            BuildError::Conflict(what) => f.write_str(what),
            BuildError::Key(why) => write!(f, "private key could not be read: {why}"),
            BuildError::HttpClient(why) => write!(f, "HTTP client could not be built: {why}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Whether `url` may carry credentials: https, or http to a loopback host, or any http when the
/// user opted in.
pub(crate) fn check_transport(
    url: &Url,
    setting: &'static str,
    allow_insecure_http: bool,
) -> Result<(), BuildError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(url) => Ok(()),
        "http" => Err(BuildError::InsecureUrl {
            setting,
            host: url.host_str().unwrap_or_default().to_owned(),
        }),
        other => Err(BuildError::InvalidUrl {
            setting,
            reason: format!("scheme {other:?} is not http or https"),
        }),
    }
}

fn is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(authwire::is_loopback_host)
}

/// Parse a configured URL and check its transport: https, or plain http to loopback unless
/// `allow_insecure_http`.
pub fn parse_url(value: &str, setting: &'static str, allow_insecure_http: bool) -> Result<Url, BuildError> {
    let url = Url::parse(value).map_err(|e| BuildError::InvalidUrl {
        setting,
        reason: e.to_string(),
    })?;
    check_transport(&url, setting, allow_insecure_http)?;
    Ok(url)
}

/// Configures an [`OAuth2Provider`]; see the [crate docs](crate) for examples.
pub struct OAuth2ProviderBuilder {
    pub(crate) token_url: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) device_authorization_url: Option<String>,
    pub(crate) authorization_url: Option<String>,
    pub(crate) revocation_url: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<SecretString>,
    pub(crate) auth_method: Option<ClientAuthMethod>,
    pub(crate) grant: Grant,
    pub(crate) scopes: Vec<String>,
    pub(crate) audience: Option<String>,
    pub(crate) resources: Vec<String>,
    pub(crate) extra_params: Vec<(String, String)>,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) http_client: Option<reqwest::ClientBuilder>,
    pub(crate) transport: Option<authwire_http::Transport>,
    pub(crate) allow_insecure_http: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) dpop: Option<crate::DpopKey>,
    pub(crate) dpop_bearer_fallback: bool,
    pub(crate) par: bool,
    pub(crate) assertion_audience: crate::AssertionAudience,
    pub(crate) client_capabilities: Vec<String>,
    pub(crate) step_up_login: Option<crate::browser::StepUpLogin>,
}

impl Default for OAuth2ProviderBuilder {
    fn default() -> Self {
        Self {
            token_url: None,
            issuer: None,
            device_authorization_url: None,
            authorization_url: None,
            revocation_url: None,
            client_id: None,
            client_secret: None,
            auth_method: None,
            grant: Grant::default(),
            scopes: Vec::new(),
            audience: None,
            resources: Vec::new(),
            extra_params: Vec::new(),
            request_timeout: None,
            http_client: None,
            transport: None,
            allow_insecure_http: false,
            clock: Arc::new(SystemClock),
            dpop: None,
            dpop_bearer_fallback: false,
            par: false,
            assertion_audience: crate::AssertionAudience::Auto,
            client_capabilities: Vec::new(),
            step_up_login: None,
        }
    }
}

impl OAuth2ProviderBuilder {
    /// The token endpoint. Either this or [`issuer`](Self::issuer) is required.
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
        self
    }

    /// The issuer; its endpoints are found through discovery
    /// (`/.well-known/openid-configuration`, then RFC 8414
    /// `/.well-known/oauth-authorization-server`) on first use, and cached.
    pub fn issuer(mut self, url: impl Into<String>) -> Self {
        self.issuer = Some(url.into());
        self
    }

    /// The device authorization endpoint, when it is not discovered from the issuer.
    pub fn device_authorization_url(mut self, url: impl Into<String>) -> Self {
        self.device_authorization_url = Some(url.into());
        self
    }

    /// The authorization endpoint, for [`browser_login`](OAuth2Provider::browser_login)
    /// (otherwise found by discovery).
    pub fn authorization_url(mut self, url: impl Into<String>) -> Self {
        self.authorization_url = Some(url.into());
        self
    }

    /// The revocation endpoint (RFC 7009), for [`revoke`](OAuth2Provider::revoke) (otherwise
    /// found by discovery).
    pub fn revocation_url(mut self, url: impl Into<String>) -> Self {
        self.revocation_url = Some(url.into());
        self
    }

    /// The `client_id` (required).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// The client secret, kept as a `SecretString`.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(SecretString::from(secret.into()));
        self
    }

    /// The client authentication method (default: `client_secret_basic` with a secret, `none`
    /// without).
    pub fn auth_method(mut self, method: ClientAuthMethod) -> Self {
        self.auth_method = Some(method);
        self
    }

    /// The grant (default: client credentials).
    pub fn grant(mut self, grant: impl Into<Grant>) -> Self {
        self.grant = grant.into();
        self
    }

    /// Ask for a scope; repeatable, and a space-delimited list counts as several.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        let scope = scope.into();
        self.scopes.extend(scope.split_whitespace().map(str::to_owned));
        self
    }

    /// The `audience` parameter (Auth0, RFC 8693).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// A `resource` indicator (RFC 8707); repeatable.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self
    }

    /// Another form parameter for token requests. Not for secrets: they are part of the cache
    /// key and of `Debug`.
    pub fn extra_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_params.push((name.into(), value.into()));
        self
    }

    /// The timeout of each HTTP request (default: the [transport](Self::transport)'s, else
    /// [`DEFAULT_REQUEST_TIMEOUT`], 20 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Reach the identity provider through `transport` (every request: token, discovery,
    /// device, revocation): its proxy, roots of trust, client certificate and timeout. Without
    /// one, the default [`Transport`](crate::Transport) (the environment's proxy variables,
    /// the system's roots). [`http_client`](Self::http_client), if also given, wins.
    ///
    /// ```
    /// # fn run(ca_pem: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    /// let transport = authwire_oauth2::Transport::new()
    ///     .proxy("http://proxy.corp.example:3128")?
    ///     .root_certificates_pem(ca_pem)?;
    /// let provider = authwire_oauth2::OAuth2Provider::builder()
    ///     .token_url("https://idp.corp.example/token")
    ///     .client_id("c")
    ///     .client_secret("s")
    ///     .transport(transport)
    ///     .build()?;
    /// # let _ = provider; Ok(()) }
    /// ```
    pub fn transport(mut self, transport: crate::Transport) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Build the HTTP client from this reqwest builder: the escape hatch for what
    /// [`transport`](Self::transport) does not cover (pool sizes, DNS overrides...).
    ///
    /// It takes a builder, not a client, because the provider sets its redirect policy to
    /// `none`: requests to the token endpoint carry credentials (client secret, refresh token,
    /// assertion), and must never follow a redirect, whoever configured the client. A redirect
    /// answer is an error that names the configuration to fix.
    ///
    /// ```
    /// let provider = authwire_oauth2::OAuth2Provider::builder()
    ///     .token_url("https://idp.example/token")
    ///     .client_id("c")
    ///     .client_secret("s")
    ///     .http_client(reqwest::Client::builder().pool_max_idle_per_host(2))
    ///     .build()?;
    /// # let _ = provider; Ok::<(), authwire_oauth2::BuildError>(())
    /// ```
    pub fn http_client(mut self, client: reqwest::ClientBuilder) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Allow plain http to hosts that are not loopback (`true`), or refuse it (`false`, the
    /// default). Tokens and secrets then cross the network readable by anyone on the path.
    pub fn allow_insecure_http(mut self, on: bool) -> Self {
        self.allow_insecure_http = on;
        self
    }

    /// Bind tokens to `key` (DPoP, RFC 9449): every token request, of every grant, carries a
    /// proof; tokens must come back `token_type: DPoP` and then carry their proof of possession,
    /// so that the [`Authorizer`](authwire::Authorizer) adds a fresh proof to each request.
    pub fn dpop(mut self, key: crate::DpopKey) -> Self {
        self.dpop = Some(key);
        self
    }

    /// With [`dpop`](Self::dpop): accept a Bearer token when the server does not bind tokens
    /// (`true`), instead of refusing it (`false`, the default; RFC 9449 section 5).
    pub fn dpop_bearer_fallback(mut self, on: bool) -> Self {
        self.dpop_bearer_fallback = on;
        self
    }

    /// Push every browser login's authorization request first (RFC 9126, pushed authorization
    /// requests): the client authenticates to the server's
    /// `pushed_authorization_request_endpoint` (with a DPoP proof when tokens are bound), and
    /// only `client_id` and the one-time `request_uri` go through the browser. On by itself
    /// when discovery says `require_pushed_authorization_requests`; an issuer that publishes no
    /// such endpoint makes the login fail.
    pub fn par(mut self, on: bool) -> Self {
        self.par = on;
        self
    }

    /// The `aud` of `private_key_jwt` assertions ([`AssertionAudience`](crate::AssertionAudience);
    /// default `Auto`: the issuer for servers that require pushed authorization requests, as
    /// FAPI 2.0 asks, else the endpoint).
    pub fn assertion_audience(mut self, audience: crate::AssertionAudience) -> Self {
        self.assertion_audience = audience;
        self
    }

    /// Declare client capabilities, sent with every token request as the claims request
    /// `{"access_token":{"xms_cc":{"values":[...]}}}` (Microsoft Entra; `cp1` says the client
    /// handles claims challenges, which turns on continuous access evaluation). A claims
    /// challenge's claims are merged into the same request.
    pub fn client_capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.client_capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// Answer `insufficient_user_authentication` challenges (RFC 9470) with a browser login
    /// asking for the challenge's `acr_values` and `max_age`, opened by `open` with `options`
    /// (only where a person is there to log in). Without this, such a challenge is reported
    /// as [`AuthError::StepUpRequired`](authwire::AuthError::StepUpRequired).
    pub fn step_up_login(
        mut self,
        options: crate::BrowserLogin,
        open: impl Fn(&url::Url) + Send + Sync + 'static,
    ) -> Self {
        self.step_up_login = Some(crate::browser::StepUpLogin {
            options,
            open: Arc::new(open),
        });
        self
    }

    /// Read time from `clock` (for `expires_in`, `Retry-After` dates and assertions).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Check the configuration and build the provider.
    pub fn build(self) -> Result<OAuth2Provider, BuildError> {
        OAuth2Provider::from_builder(self)
    }
}

impl fmt::Debug for OAuth2ProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2ProviderBuilder")
            .field("token_url", &self.token_url)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|s| redact(s)))
            .field("auth_method", &self.auth_method)
            .field("grant", &self.grant)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

fn redact(_: &SecretString) -> &'static str {
    "[redacted]"
}

/// Exposes a secret for the wire: one of the two places secrets are exposed (the other is step 4,
/// the header; see docs/design.md).
pub(crate) fn expose(secret: &SecretString) -> &str {
    secret.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_rules() {
        let ok = |u: &str, insecure| parse_url(u, "token_url", insecure).is_ok();
        assert!(ok("https://idp.example/token", false));
        assert!(ok("http://127.0.0.1:8080/token", false));
        assert!(ok("http://127.9.9.9/token", false));
        assert!(ok("http://[::1]:80/token", false));
        assert!(ok("http://localhost/token", false));
        assert!(!ok("http://idp.example/token", false));
        assert!(!ok("http://10.0.0.1/token", false));
        assert!(ok("http://idp.example/token", true));
        assert!(!ok("ftp://idp.example/token", true));
        let e = parse_url("http://idp.example/token", "token_url", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "token_url uses plain http to idp.example, which would expose credentials; use https, or call allow_insecure_http(true) to opt in"
        );
    }

    #[test]
    fn builder_debug_redacts_the_secret() {
        let b = OAuth2ProviderBuilder::default()
            .client_id("c")
            .client_secret("SECRET-VALUE");
        let s = format!("{b:?}");
        assert!(!s.contains("SECRET-VALUE") && s.contains("[redacted]"), "{s}");
    }

    #[test]
    fn scopes_split_on_whitespace() {
        let b = OAuth2ProviderBuilder::default().scope("a b").scope("c");
        assert_eq!(b.scopes, ["a", "b", "c"]);
    }
}
