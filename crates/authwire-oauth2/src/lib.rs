//! An OAuth 2.0 / OpenID Connect [`IdentityProvider`] for authwire.
//!
//! Grants: client credentials (the default), refresh token (automatic whenever the current token
//! carries one; rotation kept), JWT bearer (RFC 7523), token exchange (RFC 8693) and device
//! authorization (RFC 8628). Client authentication: `client_secret_basic`,
//! `client_secret_post`, `private_key_jwt`, `none`. Endpoints come from the configuration or
//! from discovery.
//!
//! # Client credentials
//!
//! ```no_run
//! use authwire::Authorizer;
//! use authwire_oauth2::{ClientAuthMethod, OAuth2Provider};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = OAuth2Provider::builder()
//!     .issuer("https://idp.example")          // or .token_url("https://idp.example/oauth2/token")
//!     .client_id("my-client")
//!     .client_secret(std::env::var("CLIENT_SECRET")?)
//!     .auth_method(ClientAuthMethod::ClientSecretBasic)
//!     .scope("api:read")
//!     .audience("https://api.example")
//!     .build()?;
//! let authorizer = Authorizer::new(provider);
//! let header = authorizer.authorization_header().await?;
//! # Ok(()) }
//! ```
//!
//! # Behaviour
//!
//! - **Errors** keep the server's RFC 6749 `error`, `error_description` and `error_uri` and the
//!   HTTP status. `invalid_client`, `invalid_grant`, `unauthorized_client`, `invalid_scope` are
//!   permanent; 5xx, 429, timeouts and network errors are transient, with `Retry-After` (seconds
//!   or HTTP date) honoured. A success status without a usable token is `InvalidResponse`.
//! - **Refresh tokens**: when the current token has one, it is used first; a rotated one replaces
//!   it, and when the server sends none the old one is kept. If the server rejects it
//!   (`invalid_grant`), the configured grant runs instead.
//! - **Security**: credentials go only over https, or plain http to a loopback address, unless
//!   [`allow_insecure_http`](OAuth2ProviderBuilder::allow_insecure_http) is called; redirects
//!   are not followed; bodies are read up to [`MAX_RESPONSE_BYTES`] and never logged; the client
//!   secret and keys never appear in `Debug` or errors.

mod browser;
mod config;
pub mod dpop;
mod response;

pub use browser::{BrowserLogin, DEFAULT_LOGIN_TIMEOUT};
pub use config::{
    AssertionSource, BuildError, ClientAuthMethod, DEFAULT_REQUEST_TIMEOUT, DevicePrompt, DevicePromptFn,
    Grant, MAX_RESPONSE_BYTES, OAuth2ProviderBuilder, PrivateKey, SubjectFn, SubjectTokenSource,
    TokenExchange,
};
pub use dpop::{DpopError, DpopKey, DpopProof};

// Public for the fuzz targets of authwire-reliability only; not part of the API.
#[doc(hidden)]
pub use response::{parse_error, parse_retry_after, parse_token_response};

use authwire::{CacheKey, Clock, IdentityProvider, ProviderError, Token, async_trait};
use base64::Engine as _;
use config::{check_transport, expose, parse_url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::OnceCell;
use tracing::{debug, info};
use url::Url;

const GRANT_TYPE_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const GRANT_TYPE_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An OAuth 2.0 / OpenID Connect token endpoint as an [`IdentityProvider`].
///
/// Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct OAuth2Provider {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Endpoints,
    /// Configured authorization and revocation endpoints (otherwise discovered).
    authorization_override: Option<Url>,
    revocation_override: Option<Url>,
    client_id: String,
    client_secret: Option<SecretString>,
    auth_method: ClientAuthMethod,
    grant: Grant,
    scopes: Vec<String>,
    audience: Option<String>,
    resources: Vec<String>,
    extra_params: Vec<(String, String)>,
    request_timeout: Duration,
    /// Built on first use: a process that finds a cached token never pays for TLS set-up
    /// (loading the system's roots takes milliseconds).
    http: LazyClient,
    allow_insecure_http: bool,
    clock: Arc<dyn Clock>,
    cache_key: CacheKey,
    /// The DPoP key every token request proves possession of (RFC 9449), if any.
    dpop: Option<DpopKey>,
    dpop_bearer_fallback: bool,
    /// The token endpoint's latest `DPoP-Nonce` (RFC 9449 section 8).
    dpop_nonce: std::sync::Mutex<Option<String>>,
}

enum Endpoints {
    Fixed {
        token: Url,
        device: Option<Url>,
    },
    Discovered {
        issuer: Url,
        device_override: Option<Url>,
        metadata: OnceCell<Arc<Metadata>>,
    },
}

/// What discovery found.
struct Metadata {
    /// The issuer identifier, as the document names it (RFC 9207 compares `iss` with it).
    issuer: String,
    token_endpoint: Url,
    device_authorization_endpoint: Option<Url>,
    authorization_endpoint: Option<Url>,
    revocation_endpoint: Option<Url>,
    /// `authorization_response_iss_parameter_supported` (RFC 9207 section 3).
    iss_parameter_supported: bool,
}

impl OAuth2Provider {
    /// Configure a provider.
    pub fn builder() -> OAuth2ProviderBuilder {
        OAuth2ProviderBuilder::default()
    }

    fn from_builder(b: OAuth2ProviderBuilder) -> Result<Self, BuildError> {
        let insecure = b.allow_insecure_http;
        let client_id = b
            .client_id
            .filter(|c| !c.is_empty())
            .ok_or(BuildError::Missing("client_id"))?;
        let device_override = b
            .device_authorization_url
            .as_deref()
            .map(|u| parse_url(u, "device_authorization_url", insecure))
            .transpose()?;
        let authorization_override = b
            .authorization_url
            .as_deref()
            .map(|u| parse_url(u, "authorization_url", insecure))
            .transpose()?;
        let revocation_override = b
            .revocation_url
            .as_deref()
            .map(|u| parse_url(u, "revocation_url", insecure))
            .transpose()?;
        let (endpoints, endpoint_for_key) = match (b.token_url, b.issuer) {
            (Some(_), Some(_)) => {
                return Err(BuildError::Conflict("set either token_url or issuer, not both"));
            }
            (None, None) => return Err(BuildError::Missing("token_url or issuer")),
            (Some(t), None) => {
                let token = parse_url(&t, "token_url", insecure)?;
                let key = token.to_string();
                (
                    Endpoints::Fixed {
                        token,
                        device: device_override,
                    },
                    key,
                )
            }
            (None, Some(i)) => {
                let issuer = parse_url(&i, "issuer", insecure)?;
                let key = issuer.to_string();
                (
                    Endpoints::Discovered {
                        issuer,
                        device_override,
                        metadata: OnceCell::new(),
                    },
                    key,
                )
            }
        };
        let auth_method = match (b.auth_method, &b.client_secret) {
            (Some(ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost), None) => {
                return Err(BuildError::Missing(
                    "client_secret (for client_secret_basic or client_secret_post)",
                ));
            }
            (Some(m), _) => m,
            (None, Some(_)) => ClientAuthMethod::ClientSecretBasic,
            (None, None) => ClientAuthMethod::None,
        };
        if matches!(auth_method, ClientAuthMethod::None)
            && matches!(b.grant, Grant::ClientCredentials)
            && b.client_secret.is_none()
        {
            return Err(BuildError::Conflict(
                "the client credentials grant needs client authentication: set client_secret or a private_key_jwt auth_method",
            ));
        }
        // Whoever supplied the builder, credential-bearing requests never follow a redirect.
        let http = LazyClient::new(
            b.http_client
                .unwrap_or_else(|| {
                    reqwest::Client::builder()
                        .user_agent(concat!("authwire-oauth2/", env!("CARGO_PKG_VERSION")))
                })
                .redirect(reqwest::redirect::Policy::none()),
        );
        let mut sorted_scopes = b.scopes.clone();
        sorted_scopes.sort();
        sorted_scopes.dedup();
        let mut extra = b.extra_params.clone();
        extra.sort();
        // What proves the client's identity, as a keyed fingerprint (never the secret).
        let mut credentials = Vec::new();
        if let Some(secret) = &b.client_secret {
            credentials.push(config::credential_fingerprint(expose(secret).as_bytes()));
        }
        if let ClientAuthMethod::PrivateKeyJwt { key } = &auth_method {
            credentials.push(key.fingerprint.to_string());
        }
        if let ClientAuthMethod::ClientAssertion(AssertionSource::File(path)) = &auth_method {
            credentials.push(format!("assertion-file:{}", path.display()));
        }
        if let Grant::JwtBearer(AssertionSource::Signed { key, .. }) = &b.grant {
            credentials.push(key.fingerprint.to_string());
        }
        // Tokens bound to one DPoP key are useless with another: the key is part of the key.
        if let Some(key) = &b.dpop {
            credentials.push(format!("dpop:{}", key.thumbprint()));
        }
        let cache_key = CacheKey::new(format!(
            "oauth2|{endpoint_for_key}|{client_id}|cred={}|{}|scope={}|aud={}|res={}|extra={}",
            credentials.join(","),
            b.grant.name(),
            sorted_scopes.join(" "),
            b.audience.as_deref().unwrap_or(""),
            b.resources.join(" "),
            extra
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&"),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                endpoints,
                authorization_override,
                revocation_override,
                client_id,
                client_secret: b.client_secret,
                auth_method,
                grant: b.grant,
                scopes: b.scopes,
                audience: b.audience,
                resources: b.resources,
                extra_params: b.extra_params,
                request_timeout: b.request_timeout,
                http,
                allow_insecure_http: insecure,
                clock: b.clock,
                cache_key,
                dpop: b.dpop,
                dpop_bearer_fallback: b.dpop_bearer_fallback,
                dpop_nonce: std::sync::Mutex::new(None),
            }),
        })
    }

    /// Run the device authorization grant now (RFC 8628): ask for a device code, tell the user
    /// through `prompt`, poll until they approve, and return the token (with its refresh token,
    /// for a store). This is what `authwire login` does.
    pub async fn device_login(
        &self,
        prompt: impl Fn(&DevicePrompt) + Send + Sync,
    ) -> Result<Token, ProviderError> {
        self.inner.device_flow(&prompt).await
    }

    /// Log a person in through their browser: the authorization code grant with PKCE (RFC 7636,
    /// S256) on a loopback redirect (RFC 8252), with the default [`BrowserLogin`] options.
    ///
    /// `open` receives the authorization URL: open the system browser there, or print it. The
    /// call then waits (at most [`DEFAULT_LOGIN_TIMEOUT`]; drop the future to cancel) for the
    /// browser to come back to `http://127.0.0.1:PORT/callback`, checks `state` (and `iss`,
    /// RFC 9207, when the server sends it or its metadata promises it), answers the browser with
    /// a page saying it can be closed, and redeems the code with its verifier. The token
    /// returned carries the refresh token: save it in a store.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let provider = authwire_oauth2::OAuth2Provider::builder()
    ///     .issuer("https://idp.example")
    ///     .client_id("my-cli")
    ///     .scope("openid offline_access")
    ///     .grant(authwire_oauth2::Grant::RefreshToken)
    ///     .build()?;
    /// let token = provider
    ///     .browser_login(|url| eprintln!("open {url} in your browser"))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn browser_login(&self, open: impl FnOnce(&Url)) -> Result<Token, ProviderError> {
        self.browser_login_with(&BrowserLogin::default(), open).await
    }

    /// [`browser_login`](Self::browser_login) with options (`prompt`, `login_hint`, the
    /// timeout).
    pub async fn browser_login_with(
        &self,
        options: &BrowserLogin,
        open: impl FnOnce(&Url),
    ) -> Result<Token, ProviderError> {
        browser::login(&self.inner, options, open).await
    }

    /// Revoke a token at the server (RFC 7009): the refresh token when `token` has one (which
    /// also ends the access tokens issued with it, section 2.1), otherwise the access token.
    /// The endpoint is [`revocation_url`](OAuth2ProviderBuilder::revocation_url) or the
    /// discovered `revocation_endpoint`. Revoking a token the server no longer knows succeeds.
    pub async fn revoke(&self, token: &Token) -> Result<(), ProviderError> {
        let inner = &self.inner;
        let endpoint = inner.revocation_endpoint().await?;
        let mut form = Form::new();
        match token.refresh_token() {
            Some(rt) => {
                form.push_secret("token", rt.clone());
                form.push("token_type_hint", "refresh_token");
            }
            None => {
                form.push_secret("token", token.access_token().clone());
                form.push("token_type_hint", "access_token");
            }
        }
        inner
            .post(&endpoint, form, false, |status, retry_after, body| {
                if status == 200 {
                    Ok(())
                } else {
                    Err(response::parse_error(
                        status,
                        retry_after,
                        body,
                        inner.clock.now(),
                    ))
                }
            })
            .await
    }

    /// The authorization endpoint (for [`browser_login`](Self::browser_login)): configured, or
    /// discovered; an error when there is none.
    pub async fn authorization_endpoint(&self) -> Result<Url, ProviderError> {
        self.inner.authorization_endpoint().await
    }

    /// The token endpoint, discovering it first if configured with an issuer.
    pub async fn token_endpoint(&self) -> Result<Url, ProviderError> {
        self.inner.token_endpoint().await
    }
}

impl fmt::Debug for OAuth2Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("OAuth2Provider")
            .field("cache_key", &i.cache_key)
            .field("client_id", &i.client_id)
            .field("client_secret", &i.client_secret.as_ref().map(|_| "[redacted]"))
            .field("auth_method", &i.auth_method)
            .field("grant", &i.grant)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IdentityProvider for OAuth2Provider {
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        let inner = &self.inner;
        if let Some(refresh_token) = current.and_then(Token::refresh_token) {
            match inner
                .refresh_keeping(refresh_token, current.and_then(Token::id_token))
                .await
            {
                Ok(token) => return Ok(token),
                Err(e)
                    if e.error_code() == Some("invalid_grant")
                        && !matches!(inner.grant, Grant::RefreshToken) =>
                {
                    info!(client_id = %inner.client_id, "refresh token rejected (invalid_grant); using the {} grant", inner.grant.name());
                }
                Err(e) => return Err(e),
            }
        }
        inner.run_grant().await
    }

    fn cache_key(&self) -> CacheKey {
        self.inner.cache_key.clone()
    }

    /// A stored DPoP-bound token is usable again when its key is this provider's key.
    fn restore_proof(&self, key: &authwire::ProofKey) -> Option<Arc<dyn authwire::ProofOfPossession>> {
        let ours = self.inner.dpop.as_ref()?;
        if key.kind != dpop::KEY_KIND {
            return None;
        }
        let stored = DpopKey::from_pkcs8_pem(key.material.expose_secret().as_bytes()).ok()?;
        (stored.thumbprint() == ours.thumbprint()).then(|| {
            Arc::new(dpop::DpopSigner::new(stored, self.inner.clock.clone()))
                as Arc<dyn authwire::ProofOfPossession>
        })
    }
}

impl Inner {
    async fn token_endpoint(&self) -> Result<Url, ProviderError> {
        match &self.endpoints {
            Endpoints::Fixed { token, .. } => Ok(token.clone()),
            Endpoints::Discovered { .. } => Ok(self.metadata().await?.token_endpoint.clone()),
        }
    }

    async fn device_endpoint(&self) -> Result<Url, ProviderError> {
        let configured = match &self.endpoints {
            Endpoints::Fixed { device, .. } => device.as_ref(),
            Endpoints::Discovered { device_override, .. } => device_override.as_ref(),
        };
        self.optional_endpoint(
            configured,
            |m| m.device_authorization_endpoint.as_ref(),
            "no device authorization endpoint: set device_authorization_url or use an issuer that publishes one",
        )
        .await
    }

    /// The authorization endpoint: configured, or discovered.
    async fn authorization_endpoint(&self) -> Result<Url, ProviderError> {
        self.optional_endpoint(
            self.authorization_override.as_ref(),
            |m| m.authorization_endpoint.as_ref(),
            "no authorization endpoint: set authorization_url or use an issuer that publishes one",
        )
        .await
    }

    /// The revocation endpoint (RFC 7009): configured, or discovered.
    async fn revocation_endpoint(&self) -> Result<Url, ProviderError> {
        self.optional_endpoint(
            self.revocation_override.as_ref(),
            |m| m.revocation_endpoint.as_ref(),
            "no revocation endpoint: set revocation_url or use an issuer that publishes one (RFC 7009)",
        )
        .await
    }

    /// An endpoint a server may not have: the configured one, else the discovered one, else
    /// an error that names the setting.
    async fn optional_endpoint(
        &self,
        configured: Option<&Url>,
        discovered: fn(&Metadata) -> Option<&Url>,
        missing: &'static str,
    ) -> Result<Url, ProviderError> {
        if let Some(url) = configured {
            return Ok(url.clone());
        }
        let found = match &self.endpoints {
            Endpoints::Fixed { .. } => None,
            Endpoints::Discovered { .. } => discovered(self.metadata().await?).cloned(),
        };
        found.ok_or_else(|| ProviderError::permanent(missing))
    }

    /// Discovery, cached after the first success (failures are not cached).
    async fn metadata(&self) -> Result<&Arc<Metadata>, ProviderError> {
        let Endpoints::Discovered { issuer, metadata, .. } = &self.endpoints else {
            unreachable!("metadata() is only called for discovered endpoints")
        };
        metadata.get_or_try_init(|| self.discover(issuer)).await
    }

    async fn discover(&self, issuer: &Url) -> Result<Arc<Metadata>, ProviderError> {
        let base = issuer.as_str().trim_end_matches('/');
        let oidc = format!("{base}/.well-known/openid-configuration");
        // RFC 8414 section 3.1: the well-known segment goes between host and path.
        let path = issuer.path().trim_end_matches('/');
        let mut rfc8414 = issuer.clone();
        rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
        let mut last_error = None;
        for url in [oidc, rfc8414.to_string()] {
            match self.fetch_metadata(&url, base).await {
                Ok(m) => return Ok(Arc::new(m)),
                Err(e) => {
                    debug!(url = %url, error = %authwire::error_chain(&e), "discovery document not usable");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ProviderError::permanent("discovery failed")))
    }

    async fn fetch_metadata(&self, url: &str, expected_issuer: &str) -> Result<Metadata, ProviderError> {
        let request = self
            .http
            .get()?
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.request_timeout);
        let Reply {
            status,
            retry_after,
            body,
            ..
        } = send(request).await?;
        let doc = self.json_answer(status, retry_after.as_deref(), &body, || {
            format!("discovery document at {url}")
        })?;
        let field = |name: &str| doc.get(name).and_then(Value::as_str);
        let issuer = field("issuer").unwrap_or_default();
        if issuer.trim_end_matches('/') != expected_issuer {
            return Err(ProviderError::invalid_response(
                Some(status),
                format!(
                    "discovery document names issuer {issuer:?}, expected {expected_issuer:?} (RFC 8414 section 3.3)"
                ),
            ));
        }
        let endpoint = |name: &'static str| -> Result<Option<Url>, ProviderError> {
            field(name)
                .map(|u| {
                    let url = Url::parse(u).map_err(|e| {
                        ProviderError::invalid_response(
                            Some(status),
                            format!("discovered {name} is not a URL: {e}"),
                        )
                    })?;
                    check_transport(&url, name, self.allow_insecure_http)
                        .map_err(|e| ProviderError::invalid_response(Some(status), e.to_string()))?;
                    Ok(url)
                })
                .transpose()
        };
        let token_endpoint = endpoint("token_endpoint")?.ok_or_else(|| {
            ProviderError::invalid_response(Some(status), "discovery document has no token_endpoint")
        })?;
        Ok(Metadata {
            issuer: issuer.to_owned(),
            token_endpoint,
            device_authorization_endpoint: endpoint("device_authorization_endpoint")?,
            authorization_endpoint: endpoint("authorization_endpoint")?,
            revocation_endpoint: endpoint("revocation_endpoint")?,
            iss_parameter_supported: doc
                .get("authorization_response_iss_parameter_supported")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// A success answer's JSON document, or the error the answer describes.
    fn json_answer(
        &self,
        status: u16,
        retry_after: Option<&str>,
        body: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<Value, ProviderError> {
        if !(200..300).contains(&status) {
            return Err(response::parse_error(status, retry_after, body, self.clock.now()));
        }
        serde_json::from_slice(body)
            .map_err(|_| ProviderError::invalid_response(Some(status), format!("{} is not JSON", what())))
    }

    /// The configured grant, without a refresh token.
    async fn run_grant(&self) -> Result<Token, ProviderError> {
        let mut form = Form::new();
        match &self.grant {
            Grant::ClientCredentials => {
                form.push("grant_type", "client_credentials");
            }
            Grant::JwtBearer(source) => {
                let assertion = self.assertion(source).await?;
                form.push("grant_type", GRANT_TYPE_JWT_BEARER);
                form.push_secret("assertion", assertion);
            }
            Grant::TokenExchange(exchange) => {
                let subject = exchange.subject.subject_token().await.map_err(|e| {
                    ProviderError::transient(format!(
                        "could not obtain the subject token: {}",
                        authwire::error_chain(&*e)
                    ))
                })?;
                form.push("grant_type", GRANT_TYPE_TOKEN_EXCHANGE);
                form.push_secret("subject_token", subject);
                form.push("subject_token_type", &exchange.subject_token_type);
                if let Some(t) = &exchange.requested_token_type {
                    form.push("requested_token_type", t);
                }
            }
            Grant::DeviceCode(prompt) => {
                let prompt = prompt.0.clone();
                return self.device_flow(&move |p: &DevicePrompt| prompt(p)).await;
            }
            Grant::RefreshToken => {
                return Err(ProviderError::rejected(
                    None,
                    "login_required",
                    Some("no refresh token is stored; log in first (authwire login)".into()),
                ));
            }
        }
        self.push_request_params(&mut form);
        self.token_request(form).await
    }

    /// A refresh that keeps what the server did not send again: the refresh token (not
    /// rotated) and the ID token (OpenID Connect Core 12.2: a refresh may omit it).
    async fn refresh_keeping(
        &self,
        refresh_token: &SecretString,
        id_token: Option<&SecretString>,
    ) -> Result<Token, ProviderError> {
        let mut token = self.refresh_inner(refresh_token).await?;
        if token.id_token().is_none() {
            token.set_id_token(id_token.cloned());
        }
        Ok(token)
    }

    async fn refresh_inner(&self, refresh_token: &SecretString) -> Result<Token, ProviderError> {
        let mut form = Form::new();
        form.push("grant_type", "refresh_token");
        form.push_secret("refresh_token", refresh_token.clone());
        // No scope: RFC 6749 section 6 keeps the originally granted scope.
        let mut token = self.token_request(form).await?;
        if token.refresh_token().is_none() {
            // The server did not rotate it: keep using the old one.
            token.set_refresh_token(Some(refresh_token.clone()));
        }
        Ok(token)
    }

    fn push_request_params(&self, form: &mut Form) {
        if !self.scopes.is_empty() {
            form.push("scope", &self.scopes.join(" "));
        }
        if let Some(a) = &self.audience {
            form.push("audience", a);
        }
        for r in &self.resources {
            form.push("resource", r);
        }
        for (k, v) in &self.extra_params {
            form.push(k, v);
        }
    }

    async fn assertion(&self, source: &AssertionSource) -> Result<SecretString, ProviderError> {
        match source {
            AssertionSource::Fn(f) => f().map(SecretString::from).map_err(|e| {
                ProviderError::transient(format!(
                    "could not obtain the assertion: {}",
                    authwire::error_chain(&*e)
                ))
            }),
            AssertionSource::Signed {
                key,
                issuer,
                subject,
                claims,
            } => {
                let audience = self.token_endpoint().await?;
                self.sign_jwt_with(
                    key,
                    issuer,
                    subject,
                    audience.as_str(),
                    Duration::from_secs(300),
                    claims,
                )
            }
            AssertionSource::File(path) => read_assertion_file(path).await,
        }
    }

    fn sign_jwt(
        &self,
        key: &PrivateKey,
        iss: &str,
        sub: &str,
        aud: &str,
        life: Duration,
    ) -> Result<SecretString, ProviderError> {
        self.sign_jwt_with(key, iss, sub, aud, life, &serde_json::Map::new())
    }

    fn sign_jwt_with(
        &self,
        key: &PrivateKey,
        iss: &str,
        sub: &str,
        aud: &str,
        life: Duration,
        extra: &serde_json::Map<String, Value>,
    ) -> Result<SecretString, ProviderError> {
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut header = jsonwebtoken::Header::new(key.algorithm);
        header.kid = key.key_id.clone();
        let mut claims = extra.clone();
        for (name, value) in [
            ("iss", Value::from(iss)),
            ("aud", Value::from(aud)),
            ("iat", Value::from(now)),
            ("exp", Value::from(now + life.as_secs())),
            ("jti", Value::from(random_id())),
        ] {
            claims.insert(name.into(), value);
        }
        if sub.is_empty() {
            claims.remove("sub");
        } else {
            claims.insert("sub".into(), Value::from(sub));
        }
        if let Some(x5t) = &key.x5t {
            header.x5t = Some(x5t.clone());
        }
        if let Some(x5t) = &key.x5t_s256 {
            header.x5t_s256 = Some(x5t.clone());
        }
        jsonwebtoken::encode(&header, &claims, &key.key)
            .map(SecretString::from)
            .map_err(|e| ProviderError::permanent(format!("could not sign the assertion: {e}")))
    }

    /// POST a form to the token endpoint with client authentication, and read the answer.
    async fn token_request(&self, form: Form) -> Result<Token, ProviderError> {
        let endpoint = self.token_endpoint().await?;
        let token = self
            .post(&endpoint, form, true, |status, retry_after, body| {
                response::parse_token_response(status, retry_after, body, self.clock.now())
            })
            .await?;
        self.bind(token)
    }

    /// With DPoP, a token must come back bound (`token_type: DPoP`); it then carries its
    /// proof of possession. RFC 9449 section 5: a client that asked for a bound token must not
    /// use a bearer one as if it were bound.
    fn bind(&self, token: Token) -> Result<Token, ProviderError> {
        let Some(key) = &self.dpop else {
            return Ok(token);
        };
        match token.token_type() {
            authwire::TokenType::DPoP => {
                Ok(token.with_proof(Arc::new(dpop::DpopSigner::new(key.clone(), self.clock.clone()))))
            }
            authwire::TokenType::Bearer if self.dpop_bearer_fallback => Ok(token),
            other => {
                let shown: String = other
                    .scheme()
                    .chars()
                    .filter(char::is_ascii_graphic)
                    .take(16)
                    .collect();
                let e = ProviderError::invalid_response(
                    Some(200),
                    format!(
                        "asked for a DPoP-bound token (RFC 9449) but the server issued token type {shown:?}, usable by anyone who holds it; allow that with dpop_bearer_fallback(true)"
                    ),
                );
                Err(match token.refresh_token() {
                    Some(rt) => e.with_refresh_token(rt.clone()),
                    None => e,
                })
            }
        }
    }

    /// POST `form` with client authentication and `parse` the answer. Every error, whatever
    /// the server put in it, is scrubbed of what this request carried
    /// ([`ProviderError::redact_sent`]).
    async fn post<T>(
        &self,
        endpoint: &Url,
        form: Form,
        token_endpoint: bool,
        parse: impl FnOnce(u16, Option<&str>, &[u8]) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let mut sent = form.secrets();
        let answer = self
            .send_form_dpop(endpoint, form, token_endpoint, &mut sent)
            .await;
        answer
            .and_then(|reply| parse(reply.status, reply.retry_after.as_deref(), &reply.body))
            .map_err(|e| e.redact_sent(&sent))
    }

    /// Send a form; with DPoP and to the token endpoint, with a proof, answering
    /// `use_dpop_nonce` (400 + `DPoP-Nonce`) with one retry carrying the server's nonce.
    async fn send_form_dpop(
        &self,
        endpoint: &Url,
        form: Form,
        token_endpoint: bool,
        sent: &mut Vec<SecretString>,
    ) -> Result<Reply, ProviderError> {
        let key = self.dpop.as_ref().filter(|_| token_endpoint);
        for attempt in 0..2 {
            let proof = match key {
                Some(key) => Some(self.token_endpoint_proof(key, endpoint)?),
                None => None,
            };
            let reply = self.send_form(endpoint, form.clone(), proof, sent).await?;
            if key.is_none() {
                return Ok(reply);
            }
            if let Some(nonce) = &reply.dpop_nonce {
                *self
                    .dpop_nonce
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(nonce.clone());
            }
            let asked_for_nonce = reply.status == 400
                && reply.dpop_nonce.is_some()
                && response::error_code(&reply.body).as_deref() == Some("use_dpop_nonce");
            if !(asked_for_nonce && attempt == 0) {
                return Ok(reply);
            }
            debug!("the token endpoint asked for a DPoP nonce; retrying once with it");
        }
        unreachable!("the loop returns on its second pass")
    }

    fn token_endpoint_proof(&self, key: &DpopKey, endpoint: &Url) -> Result<String, ProviderError> {
        let nonce = self
            .dpop_nonce
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        key.proof(&DpopProof {
            method: "POST",
            uri: endpoint.as_str(),
            access_token: None,
            nonce: nonce.as_deref(),
            issued_at: self.clock.now(),
        })
        .map_err(|e| ProviderError::permanent(e.to_string()))
    }

    async fn send_form(
        &self,
        endpoint: &Url,
        mut form: Form,
        dpop_proof: Option<String>,
        sent: &mut Vec<SecretString>,
    ) -> Result<Reply, ProviderError> {
        let mut request = self
            .http
            .get()?
            .post(endpoint.clone())
            .timeout(self.request_timeout);
        if let Some(proof) = dpop_proof {
            let mut value = reqwest::header::HeaderValue::from_str(&proof)
                .map_err(|_| ProviderError::permanent("the DPoP proof is not a header value"))?;
            value.set_sensitive(true);
            request = request.header("dpop", value);
        }
        match &self.auth_method {
            ClientAuthMethod::ClientSecretBasic => {
                let secret = self.client_secret.as_ref().map(expose).unwrap_or_default();
                // RFC 6749 section 2.3.1: form-urlencode id and secret, then base64.
                let pair = format!("{}:{}", form_encode(&self.client_id), form_encode(secret));
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                sent.extend(encodings(secret));
                sent.push(SecretString::from(encoded.clone()));
                let value = format!("Basic {encoded}");
                let mut value = reqwest::header::HeaderValue::from_str(&value)
                    .map_err(|_| ProviderError::permanent("client credentials cannot form a Basic header"))?;
                value.set_sensitive(true);
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            ClientAuthMethod::ClientSecretPost => {
                form.push("client_id", &self.client_id);
                if let Some(s) = &self.client_secret {
                    sent.extend(encodings(expose(s)));
                    form.push_secret("client_secret", s.clone());
                }
            }
            ClientAuthMethod::PrivateKeyJwt { key } => {
                let assertion = self.sign_jwt(
                    key,
                    &self.client_id,
                    &self.client_id,
                    endpoint.as_str(),
                    Duration::from_secs(60),
                )?;
                form.push("client_id", &self.client_id);
                form.push("client_assertion_type", CLIENT_ASSERTION_TYPE);
                sent.extend(encodings(expose(&assertion)));
                form.push_secret("client_assertion", assertion);
            }
            ClientAuthMethod::None => {
                form.push("client_id", &self.client_id);
            }
            ClientAuthMethod::ClientAssertion(source) => {
                let assertion = self.assertion(source).await?;
                form.push("client_id", &self.client_id);
                form.push("client_assertion_type", CLIENT_ASSERTION_TYPE);
                sent.extend(encodings(expose(&assertion)));
                form.push_secret("client_assertion", assertion);
            }
        }
        send(
            request
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(reqwest::header::ACCEPT, "application/json")
                .body(form.finish()),
        )
        .await
    }

    /// RFC 8628: device authorization request, user prompt, polling.
    async fn device_flow(
        &self,
        prompt: &(dyn Fn(&DevicePrompt) + Send + Sync),
    ) -> Result<Token, ProviderError> {
        let endpoint = self.device_endpoint().await?;
        let mut form = Form::new();
        if !self.scopes.is_empty() {
            form.push("scope", &self.scopes.join(" "));
        }
        let (status, doc) = self
            .post(&endpoint, form, false, |status, retry_after, body| {
                let doc = self.json_answer(status, retry_after, body, || {
                    "device authorization response".into()
                })?;
                Ok((status, doc))
            })
            .await?;
        let text = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_owned);
        let device_code = text("device_code").ok_or_else(|| {
            ProviderError::invalid_response(Some(status), "device authorization response has no device_code")
        })?;
        let user_code = text("user_code").ok_or_else(|| {
            ProviderError::invalid_response(Some(status), "device authorization response has no user_code")
        })?;
        let verification_uri = text("verification_uri")
            .or_else(|| text("verification_url")) // an older draft's name, still served by some
            .ok_or_else(|| {
                ProviderError::invalid_response(
                    Some(status),
                    "device authorization response has no verification_uri",
                )
            })?;
        let (expires_in, mut interval) = device_timing(&doc);
        prompt(&DevicePrompt {
            user_code,
            verification_uri,
            verification_uri_complete: text("verification_uri_complete"),
            expires_in,
        });
        let deadline = self.clock.now() + expires_in;
        let device_code = SecretString::from(device_code);
        loop {
            self.clock.sleep(interval).await;
            if self.clock.now() >= deadline {
                return Err(ProviderError::rejected(
                    None,
                    "expired_token",
                    Some("the device code expired before the user approved it".into()),
                ));
            }
            let mut form = Form::new();
            form.push("grant_type", GRANT_TYPE_DEVICE_CODE);
            form.push_secret("device_code", device_code.clone());
            match self.token_request(form).await {
                Ok(token) => return Ok(token),
                Err(e) => match e.error_code() {
                    Some("authorization_pending") => continue,
                    // RFC 8628 section 3.5: slow down by 5 seconds for this and later polls.
                    Some("slow_down") => {
                        interval = (interval + Duration::from_secs(5)).min(MAX_DEVICE_POLL_INTERVAL);
                    }
                    _ => return Err(e),
                },
            }
        }
    }
}

/// The longest device code lifetime honoured (RFC 8628 `expires_in`); longer ones are cut, so
/// that a server cannot keep a login waiting for days.
pub const MAX_DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(3600);

/// The longest wait between two device flow polls (`interval`, and after `slow_down`).
pub const MAX_DEVICE_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// A device authorization's lifetime and poll interval, bounded: a hostile or broken server
/// must not make us wait for hours between polls or overflow the clock.
fn device_timing(doc: &Value) -> (Duration, Duration) {
    let seconds = |name: &str, default: u64| doc.get(name).and_then(Value::as_u64).unwrap_or(default);
    let expires_in = Duration::from_secs(seconds("expires_in", 600)).min(MAX_DEVICE_CODE_LIFETIME);
    let interval =
        Duration::from_secs(seconds("interval", 5)).clamp(Duration::from_secs(1), MAX_DEVICE_POLL_INTERVAL);
    (expires_in, interval)
}

#[cfg(test)]
mod device_tests {
    use super::*;

    #[test]
    fn device_timing_is_bounded() {
        // Issue 12, item 12: a huge expires_in panicked (clock overflow), a huge interval hung.
        let doc = serde_json::json!({"expires_in": u64::MAX, "interval": u64::MAX});
        assert_eq!(
            device_timing(&doc),
            (MAX_DEVICE_CODE_LIFETIME, MAX_DEVICE_POLL_INTERVAL)
        );
        let doc = serde_json::json!({"expires_in": 900, "interval": 0});
        assert_eq!(
            device_timing(&doc),
            (Duration::from_secs(900), Duration::from_secs(1))
        );
        let doc = serde_json::json!({});
        assert_eq!(
            device_timing(&doc),
            (Duration::from_secs(600), Duration::from_secs(5))
        );
    }
}

/// A form body being built. Secret values are exposed only here, when serialised for the wire.
#[derive(Clone)]
struct Form {
    fields: Vec<(String, FieldValue)>,
}

#[derive(Clone)]
enum FieldValue {
    Plain(String),
    Secret(SecretString),
}

impl Form {
    fn new() -> Self {
        Self { fields: Vec::new() }
    }

    fn push(&mut self, name: &str, value: &str) {
        self.fields
            .push((name.to_owned(), FieldValue::Plain(value.to_owned())));
    }

    fn push_secret(&mut self, name: &str, value: SecretString) {
        self.fields.push((name.to_owned(), FieldValue::Secret(value)));
    }

    /// Every secret value of the form, as sent and as form-encoded.
    fn secrets(&self) -> Vec<SecretString> {
        self.fields
            .iter()
            .filter_map(|(_, v)| match v {
                FieldValue::Secret(s) => Some(encodings(s.expose_secret())),
                FieldValue::Plain(_) => None,
            })
            .flatten()
            .collect()
    }

    fn finish(self) -> Vec<u8> {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.fields {
            let value = match v {
                FieldValue::Plain(p) => p.as_str(),
                FieldValue::Secret(sec) => sec.expose_secret(),
            };
            s.append_pair(k, value);
        }
        s.finish().into_bytes()
    }
}

/// A secret as sent: raw, and form-encoded when that differs.
fn encodings(secret: &str) -> Vec<SecretString> {
    let encoded = form_encode(secret);
    if encoded == secret {
        vec![SecretString::from(secret.to_owned())]
    } else {
        vec![SecretString::from(secret.to_owned()), SecretString::from(encoded)]
    }
}

fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn network_error(e: reqwest::Error) -> ProviderError {
    // reqwest errors name the URL, never the body or headers.
    let what = if e.is_timeout() {
        "request timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    ProviderError::transient(NetworkError { what, source: e })
}

#[derive(Debug)]
struct NetworkError {
    what: &'static str,
    source: reqwest::Error,
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source.url() {
            Some(url) => write!(
                f,
                "{} to {}",
                self.what,
                url.as_str().split('?').next().unwrap_or_default()
            ),
            None => f.write_str(self.what),
        }
    }
}

impl std::error::Error for NetworkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.source)
    }
}

fn retry_after_header(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// What came back for a request: status, `Retry-After`, `DPoP-Nonce`, headers, body
/// (size-limited).
#[derive(Debug)]
#[non_exhaustive]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The raw `Retry-After` value.
    pub retry_after: Option<String>,
    /// The `DPoP-Nonce` value (RFC 9449 section 8), if short enough to be one.
    pub dpop_nonce: Option<String>,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body, at most [`MAX_RESPONSE_BYTES`].
    pub body: Vec<u8>,
}

/// Send a request and read the answer: network errors are transient, a redirect (which is
/// never followed) and a body over [`MAX_RESPONSE_BYTES`] are refused.
async fn send(request: reqwest::RequestBuilder) -> Result<Reply, ProviderError> {
    let (client, request) = request.build_split();
    let request = request.map_err(network_error)?;
    let url = request.url().clone();
    let response = client.execute(request).await.map_err(network_error)?;
    let status = response.status().as_u16();
    // Redirects are off in every client we build; a redirect answer, or an answer from another
    // URL, is refused and its body is not read.
    if response.status().is_redirection() || response.url() != &url {
        return Err(ProviderError::invalid_response(
            Some(status),
            format!(
                "{} answered with a redirect; requests that carry credentials never follow redirects: configure the URL it points to",
                url.as_str().split('?').next().unwrap_or_default()
            ),
        ));
    }
    let retry_after = retry_after_header(&response);
    let dpop_nonce = response
        .headers()
        .get("dpop-nonce")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 512)
        .map(str::to_owned);
    let headers = response.headers().clone();
    let body = read_limited(response).await?;
    Ok(Reply {
        status,
        retry_after,
        dpop_nonce,
        headers,
        body,
    })
}

/// Read a body, refusing more than [`MAX_RESPONSE_BYTES`].
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    let status = response.status().as_u16();
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(ProviderError::invalid_response(
            Some(status),
            format!("response body is larger than {MAX_RESPONSE_BYTES} bytes"),
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(network_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ProviderError::invalid_response(
                Some(status),
                format!("response body is larger than {MAX_RESPONSE_BYTES} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// HTTP for provider crates built on this one (`authwire-gcp`, `authwire-azure`), with the
/// same rules as the OAuth2 provider: no redirects followed, bounded bodies, network errors
/// transient, https (or plain http to loopback) unless allowed by name, errors that never quote
/// a secret. Not needed to use the OAuth2 provider itself.
pub mod transport {
    pub use crate::config::{MAX_RESPONSE_BYTES, credential_fingerprint, parse_url as check_url};
    pub use crate::response::{parse_error, parse_retry_after, parse_token_response};
    pub use crate::{LazyClient, Reply};

    /// Send a request and read the answer (see [`Reply`]).
    pub async fn send(request: reqwest::RequestBuilder) -> Result<Reply, authwire::ProviderError> {
        crate::send(request).await
    }

    /// A client builder for credential-bearing requests: no redirects, authwire's user agent.
    pub fn client_builder(user_agent: &'static str) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .user_agent(user_agent)
            .redirect(reqwest::redirect::Policy::none())
    }
}

/// A `reqwest::Client` built from its builder the first time it is needed (a process that
/// finds its token in a cache never pays for TLS set-up).
pub struct LazyClient {
    builder: std::sync::Mutex<Option<reqwest::ClientBuilder>>,
    client: std::sync::OnceLock<Result<reqwest::Client, String>>,
}

impl LazyClient {
    /// A client to be built from `builder` on first use.
    pub fn new(builder: reqwest::ClientBuilder) -> Self {
        Self {
            builder: std::sync::Mutex::new(Some(builder)),
            client: std::sync::OnceLock::new(),
        }
    }

    /// The client, built now if it was not yet.
    pub fn get(&self) -> Result<&reqwest::Client, ProviderError> {
        self.client
            .get_or_init(|| {
                let builder = self
                    .builder
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                match builder {
                    Some(b) => b.build().map_err(|e| authwire::error_chain(&e)),
                    None => Err("the HTTP client could not be built".into()),
                }
            })
            .as_ref()
            .map_err(|e| ProviderError::permanent(format!("cannot set up the HTTP client: {e}")))
    }
}

/// The largest assertion file read.
const MAX_ASSERTION_BYTES: u64 = 64 * 1024;

/// An assertion from a file, read now (Kubernetes rotates projected tokens in place).
async fn read_assertion_file(path: &std::path::Path) -> Result<SecretString, ProviderError> {
    use tokio::io::AsyncReadExt as _;
    let shown = path.display();
    let file = tokio::fs::File::open(path).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ProviderError::permanent(format!(
            "the assertion file {shown} does not exist: is the token volume mounted (AZURE_FEDERATED_TOKEN_FILE, a projected service-account token)?"
        )),
        _ => ProviderError::transient(format!("cannot read the assertion file {shown}: {e}")),
    })?;
    let mut text = String::new();
    file.take(MAX_ASSERTION_BYTES + 1)
        .read_to_string(&mut text)
        .await
        .map_err(|e| ProviderError::transient(format!("cannot read the assertion file {shown}: {e}")))?;
    if text.len() as u64 > MAX_ASSERTION_BYTES {
        return Err(ProviderError::permanent(format!(
            "the assertion file {shown} is larger than {MAX_ASSERTION_BYTES} bytes"
        )));
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        // Being rewritten, most likely: try again shortly.
        return Err(ProviderError::transient(format!(
            "the assertion file {shown} is empty"
        )));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

fn random_id() -> String {
    authwire::random::hex(16)
}

/// docs/providers.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/providers.md")]
pub struct ProvidersGuide;

/// docs/dpop.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/dpop.md")]
pub struct DpopGuide;
