//! Configuration: the builder, client authentication methods, grants, build errors.

use crate::OAuth2Provider;
use authwire::{Authorizer, BoxError, Clock, SystemClock, async_trait};
use jsonwebtoken::{Algorithm, EncodingKey};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// How long one HTTP request to the identity provider may take by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest response body read from the identity provider; larger answers are refused.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// How the client proves its identity to the token endpoint (RFC 6749 section 2.3, RFC 7523).
#[derive(Clone)]
#[non_exhaustive]
pub enum ClientAuthMethod {
    /// `client_secret_basic`: HTTP Basic with the id and secret form-urlencoded (the default
    /// when a secret is configured).
    ClientSecretBasic,
    /// `client_secret_post`: id and secret in the request body.
    ClientSecretPost,
    /// `private_key_jwt`: a JWT signed with the client's private key (RFC 7523 section 2.2).
    PrivateKeyJwt {
        /// The signing key.
        key: PrivateKey,
    },
    /// `none`: a public client, identified by `client_id` only (the default without a secret).
    None,
    /// A client assertion made elsewhere (RFC 7521 section 4.2, `client_assertion_type`
    /// jwt-bearer): a Kubernetes projected service-account token for Azure workload identity,
    /// or any federated token. Read again for every token request.
    ClientAssertion(AssertionSource),
}

impl ClientAuthMethod {
    /// The registered name of the method (RFC 7591).
    pub fn name(&self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::PrivateKeyJwt { .. } => "private_key_jwt",
            ClientAuthMethod::None => "none",
            ClientAuthMethod::ClientAssertion(_) => "client_assertion",
        }
    }
}

impl fmt::Debug for ClientAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A private key that signs client assertions; its `Debug` shows only the algorithm and key id.
#[derive(Clone)]
pub struct PrivateKey {
    pub(crate) key: Arc<EncodingKey>,
    pub(crate) algorithm: Algorithm,
    pub(crate) key_id: Option<String>,
    /// The `x5t` header (base64url SHA-1 of the certificate).
    pub(crate) x5t: Option<String>,
    /// The `x5t#S256` header (base64url SHA-256 of the certificate), for Microsoft Entra.
    pub(crate) x5t_s256: Option<String>,
    /// [`credential_fingerprint`] of the PEM, for the cache key.
    pub(crate) fingerprint: Arc<str>,
}

/// A keyed fingerprint of a credential (client secret, private key): 16 hex digits of
/// HMAC-SHA256 keyed with the credential itself over a fixed label.
///
/// It goes into cache keys so that two configurations that differ only in their credential
/// never share stored tokens (a wrong secret must not be handed the right one's token from a
/// shared store), and it is the same in every process and after every restart. It is keyed
/// and cut to 64 bits so that it is not a hash of the secret to look up; a guessable secret
/// stays guessable, as it is against the token endpoint.
pub fn credential_fingerprint(credential: &[u8]) -> String {
    let mac = EncodingKey::from_secret(credential)
        .and_then(|key| {
            jsonwebtoken::crypto::sign(b"authwire credential fingerprint v1", &key, Algorithm::HS256)
        })
        .unwrap_or_default();
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, mac).unwrap_or_default();
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl PrivateKey {
    /// An RSA key in PEM (PKCS#1 or PKCS#8), signing with RS256.
    pub fn rsa_pem(pem: &[u8]) -> Result<Self, BuildError> {
        let key = EncodingKey::from_rsa_pem(pem).map_err(|e| BuildError::Key(e.to_string()))?;
        Ok(Self {
            key: Arc::new(key),
            algorithm: Algorithm::RS256,
            key_id: None,
            x5t: None,
            x5t_s256: None,
            fingerprint: credential_fingerprint(pem).into(),
        })
    }

    /// An EC P-256 key in PEM (PKCS#8), signing with ES256.
    pub fn ec_pem(pem: &[u8]) -> Result<Self, BuildError> {
        let key = EncodingKey::from_ec_pem(pem).map_err(|e| BuildError::Key(e.to_string()))?;
        Ok(Self {
            key: Arc::new(key),
            algorithm: Algorithm::ES256,
            key_id: None,
            x5t: None,
            x5t_s256: None,
            fingerprint: credential_fingerprint(pem).into(),
        })
    }

    /// Sign with another algorithm of the key's family (for example PS256 for an RSA key).
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Name the key in the JWT header (`kid`), as servers with several registered keys need.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// Put `x5t` (the base64url SHA-1 thumbprint of the key's certificate) in the header of the
    /// assertions: how Microsoft Entra finds a certificate credential.
    pub fn with_x5t(mut self, thumbprint: impl Into<String>) -> Self {
        self.x5t = Some(thumbprint.into());
        self
    }

    /// Put `x5t#S256` (the base64url SHA-256 thumbprint of the key's certificate, RFC 7515
    /// section 4.1.8) in the header: what Microsoft's MSAL sends with PS256 certificate
    /// assertions.
    pub fn with_x5t_s256(mut self, thumbprint: impl Into<String>) -> Self {
        self.x5t_s256 = Some(thumbprint.into());
        self
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// How the provider obtains a token when it has no usable refresh token.
///
/// Whatever the grant, a current token that carries a refresh token is refreshed first
/// (RFC 6749 section 6); if the server rejects the refresh token, the grant below runs.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Grant {
    /// Client credentials (RFC 6749 section 4.4): the client acts on its own behalf.
    #[default]
    ClientCredentials,
    /// JWT bearer assertion (RFC 7523 section 2.1).
    JwtBearer(AssertionSource),
    /// Token exchange (RFC 8693).
    TokenExchange(TokenExchange),
    /// Device authorization (RFC 8628), for tools on machines without a browser: the user is
    /// prompted through the callback, then the provider polls.
    DeviceCode(DevicePromptFn),
    /// Refresh only: the refresh token comes from a store (after `authwire login`); without one,
    /// the provider fails with `login_required`.
    RefreshToken,
}

impl Grant {
    /// JWT bearer with assertions from `f` (called for each token request).
    pub fn jwt_bearer(f: impl Fn() -> Result<String, BoxError> + Send + Sync + 'static) -> Self {
        Grant::JwtBearer(AssertionSource::Fn(Arc::new(f)))
    }

    /// JWT bearer with assertions signed here: `iss` = `issuer`, `sub` = `subject`, `aud` = the
    /// token endpoint, valid for 5 minutes.
    pub fn jwt_bearer_signed(key: PrivateKey, issuer: impl Into<String>, subject: impl Into<String>) -> Self {
        Grant::JwtBearer(AssertionSource::Signed {
            key,
            issuer: issuer.into(),
            subject: subject.into(),
            claims: serde_json::Map::new(),
        })
    }

    /// Token exchange of the token that `subject` gives.
    pub fn token_exchange(subject: impl SubjectTokenSource) -> Self {
        Grant::TokenExchange(TokenExchange::new(subject))
    }

    /// Device authorization, telling the user what to do through `prompt`.
    pub fn device_code(prompt: impl Fn(&DevicePrompt) + Send + Sync + 'static) -> Self {
        Grant::DeviceCode(DevicePromptFn(Arc::new(prompt)))
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::JwtBearer(_) => "jwt_bearer",
            Grant::TokenExchange(_) => "token_exchange",
            Grant::DeviceCode(_) => "device_code",
            Grant::RefreshToken => "refresh_token",
        }
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where assertions come from: for the JWT bearer grant ([`Grant::JwtBearer`]) and for client
/// authentication by assertion ([`ClientAuthMethod::ClientAssertion`]).
///
/// ```
/// use authwire_oauth2::AssertionSource;
/// // Kubernetes rotates the projected token: the file is read for every token request.
/// let source = AssertionSource::file("/var/run/secrets/tokens/idp-token");
/// let source = AssertionSource::from_fn(|| Ok(std::env::var("MY_ASSERTION")?));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum AssertionSource {
    /// A function that returns a signed assertion.
    Fn(Arc<dyn Fn() -> Result<String, BoxError> + Send + Sync>),
    /// Assertions signed here with this key.
    Signed {
        /// The signing key.
        key: PrivateKey,
        /// `iss` of the assertion.
        issuer: String,
        /// `sub` of the assertion: whom the token is for. Empty: no `sub` claim (Google's
        /// service-account assertions have none).
        subject: String,
        /// More claims (Google puts `scope` in the assertion); they cannot replace `iss`,
        /// `sub`, `aud`, `iat`, `exp` or `jti`.
        claims: serde_json::Map<String, serde_json::Value>,
    },
    /// The content of a file, read again for every request (whitespace around it trimmed).
    File(std::path::PathBuf),
}

impl AssertionSource {
    /// The assertion in `path`, read for every token request.
    pub fn file(path: impl Into<std::path::PathBuf>) -> Self {
        AssertionSource::File(path.into())
    }

    /// The assertion that `f` returns, called for every token request.
    pub fn from_fn(f: impl Fn() -> Result<String, BoxError> + Send + Sync + 'static) -> Self {
        AssertionSource::Fn(Arc::new(f))
    }

    /// Assertions signed here: `iss` = `issuer`, `sub` = `subject` (none when empty), `aud` =
    /// the token endpoint.
    pub fn signed(key: PrivateKey, issuer: impl Into<String>, subject: impl Into<String>) -> Self {
        AssertionSource::Signed {
            key,
            issuer: issuer.into(),
            subject: subject.into(),
            claims: serde_json::Map::new(),
        }
    }

    /// Add a claim to signed assertions (ignored for the other sources).
    pub fn with_claim(mut self, name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        if let AssertionSource::Signed { claims, .. } = &mut self {
            claims.insert(name.into(), value.into());
        }
        self
    }
}

impl fmt::Debug for AssertionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssertionSource::Fn(_) => f.write_str("AssertionSource::Fn"),
            AssertionSource::Signed { issuer, .. } => f
                .debug_struct("AssertionSource::Signed")
                .field("issuer", issuer)
                .finish_non_exhaustive(),
            AssertionSource::File(path) => f.debug_tuple("AssertionSource::File").field(path).finish(),
        }
    }
}

/// What a device authorization asks the user to do (RFC 8628 section 3.2).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DevicePrompt {
    /// The code the user enters.
    pub user_code: String,
    /// Where the user goes.
    pub verification_uri: String,
    /// The same with the code filled in, if the server offers it.
    pub verification_uri_complete: Option<String>,
    /// How long the code stays valid.
    pub expires_in: Duration,
}

/// The callback of [`Grant::DeviceCode`].
#[derive(Clone)]
pub struct DevicePromptFn(pub(crate) Arc<dyn Fn(&DevicePrompt) + Send + Sync>);

/// Where the subject token of a token exchange comes from: another [`Authorizer`] (its token),
/// or a function.
#[async_trait]
pub trait SubjectTokenSource: Send + Sync + 'static {
    /// The subject token.
    async fn subject_token(&self) -> Result<SecretString, BoxError>;
}

#[async_trait]
impl SubjectTokenSource for Authorizer {
    async fn subject_token(&self) -> Result<SecretString, BoxError> {
        let token = self.token().await?;
        Ok(token.access_token().clone())
    }
}

/// A [`SubjectTokenSource`] from a function.
pub struct SubjectFn<F>(pub F);

#[async_trait]
impl<F> SubjectTokenSource for SubjectFn<F>
where
    F: Fn() -> Result<String, BoxError> + Send + Sync + 'static,
{
    async fn subject_token(&self) -> Result<SecretString, BoxError> {
        (self.0)().map(SecretString::from)
    }
}

/// Token exchange settings (RFC 8693 section 2.1).
#[derive(Clone)]
pub struct TokenExchange {
    pub(crate) subject: Arc<dyn SubjectTokenSource>,
    pub(crate) subject_token_type: String,
    pub(crate) requested_token_type: Option<String>,
}

impl TokenExchange {
    /// Exchange an access token from `subject`.
    pub fn new(subject: impl SubjectTokenSource) -> Self {
        Self {
            subject: Arc::new(subject),
            subject_token_type: "urn:ietf:params:oauth:token-type:access_token".into(),
            requested_token_type: None,
        }
    }

    /// The type of the subject token (default `urn:ietf:params:oauth:token-type:access_token`).
    pub fn subject_token_type(mut self, token_type: impl Into<String>) -> Self {
        self.subject_token_type = token_type.into();
        self
    }

    /// Ask for a token of this type.
    pub fn requested_token_type(mut self, token_type: impl Into<String>) -> Self {
        self.requested_token_type = Some(token_type.into());
        self
    }
}

impl From<TokenExchange> for Grant {
    fn from(t: TokenExchange) -> Self {
        Grant::TokenExchange(t)
    }
}

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
    pub(crate) request_timeout: Duration,
    pub(crate) http_client: Option<reqwest::ClientBuilder>,
    pub(crate) allow_insecure_http: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) dpop: Option<crate::DpopKey>,
    pub(crate) dpop_bearer_fallback: bool,
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
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            http_client: None,
            allow_insecure_http: false,
            clock: Arc::new(SystemClock),
            dpop: None,
            dpop_bearer_fallback: false,
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

    /// The timeout of each HTTP request (default [`DEFAULT_REQUEST_TIMEOUT`], 20 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Build the HTTP client from this builder (proxies, root certificates, timeouts...).
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
