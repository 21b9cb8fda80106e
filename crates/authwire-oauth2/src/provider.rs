//! The provider itself: [`OAuth2Provider`], what it is built from, its public methods (log a
//! person in, revoke, the endpoints) and its [`IdentityProvider`] implementation (refresh
//! first, then the configured grant). The work is done by the other modules, one per concern.

use crate::browser::{self, BrowserLogin};
use crate::client_auth::{ClientAuthMethod, credential_fingerprint};
use crate::config::{BuildError, OAuth2ProviderBuilder, expose, parse_url};
use crate::discovery::Endpoints;
use crate::dpop::{self, DpopKey};
use crate::form::Form;
use crate::grants::{AssertionSource, DevicePrompt, Grant};
use crate::response;
use crate::transport::HttpClient;
use authwire::{CacheKey, Clock, IdentityProvider, ProviderError, Token, async_trait};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use tracing::info;
use url::Url;

/// An OAuth 2.0 / OpenID Connect token endpoint as an [`IdentityProvider`].
///
/// Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct OAuth2Provider {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) endpoints: Endpoints,
    /// Configured authorization and revocation endpoints (otherwise discovered).
    pub(crate) authorization_override: Option<Url>,
    pub(crate) revocation_override: Option<Url>,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<SecretString>,
    pub(crate) auth_method: ClientAuthMethod,
    pub(crate) grant: Grant,
    pub(crate) scopes: Vec<String>,
    pub(crate) audience: Option<String>,
    pub(crate) resources: Vec<String>,
    pub(crate) extra_params: Vec<(String, String)>,
    pub(crate) request_timeout: Duration,
    /// Built on first use: a process that finds a cached token never pays for TLS set-up
    /// (loading the system's roots takes milliseconds).
    pub(crate) http: HttpClient,
    pub(crate) allow_insecure_http: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) cache_key: CacheKey,
    /// The DPoP key every token request proves possession of (RFC 9449), if any.
    pub(crate) dpop: Option<DpopKey>,
    pub(crate) dpop_bearer_fallback: bool,
    /// The token endpoint's latest `DPoP-Nonce` (RFC 9449 section 8).
    pub(crate) dpop_nonce: std::sync::Mutex<Option<String>>,
    /// RFC 9126: push browser logins' authorization requests.
    pub(crate) par: bool,
    pub(crate) assertion_audience: crate::AssertionAudience,
    pub(crate) client_capabilities: Vec<String>,
    pub(crate) step_up_login: Option<crate::browser::StepUpLogin>,
    /// The network settings, for the ID token verifier's JWKS downloads.
    pub(crate) transport: authwire_http::Transport,
    /// Checks ID tokens against the issuer's JWKS; built on first use.
    pub(crate) id_token_verifier: OnceCell<authwire_jwt::Verifier>,
}

impl OAuth2Provider {
    /// Configure a provider.
    pub fn builder() -> OAuth2ProviderBuilder {
        OAuth2ProviderBuilder::default()
    }

    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub(crate) fn from_builder(b: OAuth2ProviderBuilder) -> Result<Self, BuildError> {
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
        let user_agent = concat!("authwire-oauth2/", env!("CARGO_PKG_VERSION"));
        let transport = b.transport.clone().unwrap_or_default();
        let own_http_client = b.http_client.is_some();
        let http = match b.http_client {
            Some(builder) => HttpClient::from_reqwest_builder(builder),
            None => HttpClient::with_transport(user_agent, &transport),
        };
        let request_timeout = b
            .request_timeout
            .or(transport.configured_timeout())
            .unwrap_or(crate::DEFAULT_REQUEST_TIMEOUT);
        let mut sorted_scopes = b.scopes.clone();
        sorted_scopes.sort();
        sorted_scopes.dedup();
        let mut extra = b.extra_params.clone();
        extra.sort();
        // What proves the client's identity, as a keyed fingerprint (never the secret).
        let mut credentials = Vec::new();
        if let Some(secret) = &b.client_secret {
            credentials.push(credential_fingerprint(expose(secret).as_bytes()));
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
        // RFC 8705: tokens bound to one certificate are useless with another.
        if let Some(der) = transport.client_certificate_der() {
            credentials.push(format!("cert:{}", &credential_fingerprint(der)));
        } else if auth_method.is_mutual_tls() && !own_http_client {
            return Err(BuildError::Missing(
                "a client certificate for tls_client_auth: Transport::identity_pem (the CLI's --cert and --key)",
            ));
        }
        // Tokens bound to one DPoP key are useless with another: the key is part of the key.
        if let Some(key) = &b.dpop {
            credentials.push(format!("dpop:{}", key.thumbprint()));
        }
        // Capabilities change what tokens are issued (Entra issues long-lived CAE tokens to cp1).
        let capabilities = if b.client_capabilities.is_empty() {
            String::new()
        } else {
            format!("|cc={}", b.client_capabilities.join(","))
        };
        let cache_key = CacheKey::new(
            format!(
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
            ) + &capabilities,
        );
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
                request_timeout,
                http,
                allow_insecure_http: insecure,
                clock: b.clock,
                cache_key,
                dpop: b.dpop,
                dpop_bearer_fallback: b.dpop_bearer_fallback,
                dpop_nonce: std::sync::Mutex::new(None),
                par: b.par,
                assertion_audience: b.assertion_audience,
                client_capabilities: b.client_capabilities,
                step_up_login: b.step_up_login,
                transport,
                id_token_verifier: OnceCell::new(),
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
    /// call then waits (at most [`DEFAULT_LOGIN_TIMEOUT`](crate::DEFAULT_LOGIN_TIMEOUT); drop the future to cancel) for the
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

/// The extra a token gets when a person logged in (a browser or device login), kept through its
/// refreshes and stored with it: the grant it came from. A refused refresh token of such a
/// token is not replaced by the configured grant's token (the client's own identity). A token
/// response cannot set it (`response.rs` drops the name).
pub(crate) const PERSON_LOGIN: &str = "authwire_person_login";

/// `token`, marked as a person's login by `grant`.
pub(crate) fn person_login(token: Token, grant: &str) -> Token {
    token.with_extra(PERSON_LOGIN, grant)
}

#[async_trait]
impl IdentityProvider for OAuth2Provider {
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        let inner = &self.inner;
        if let Some(current) = current
            && let Some(refresh_token) = current.refresh_token()
        {
            match inner.refresh_keeping(current, refresh_token, None).await {
                Ok(token) => return Ok(token),
                // A refused refresh token falls back to the configured grant, which gets the
                // same client its token again. Not when the token is a person's login (marked
                // so by the login, not inferred from an ID token: some servers give one to a
                // client credentials token): the configured grant would answer with the
                // client's own identity instead of the person's, silently. The refusal is
                // returned: log in again.
                Err(e)
                    if e.error_code() == Some("invalid_grant")
                        && !matches!(inner.grant, Grant::RefreshToken)
                        && !(current.extra(PERSON_LOGIN).is_some() && inner.grant.needs_no_person()) =>
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

    /// A claims challenge: a refresh asking for the claims (the configured grant when there is
    /// no refresh token and the grant needs no person). A stronger authentication: a browser
    /// login with the challenge's `acr_values` and `max_age`, when
    /// [`step_up_login`](OAuth2ProviderBuilder::step_up_login) is set. More scope: never
    /// (scopes are configuration), an error naming the scope.
    async fn step_up(
        &self,
        current: Option<&Token>,
        step: &authwire::StepUp,
    ) -> Result<Token, ProviderError> {
        let inner = &self.inner;
        match step.reason {
            authwire::StepUpReason::Claims => {
                let claims = step.claims.as_deref();
                if let Some(current) = current
                    && let Some(refresh_token) = current.refresh_token()
                {
                    return inner.refresh_keeping(current, refresh_token, claims).await;
                }
                if inner.grant.needs_no_person() {
                    inner.run_grant_with(claims).await
                } else {
                    Err(ProviderError::permanent(
                        "a claims challenge needs a refresh token or a new login: log in again",
                    ))
                }
            }
            authwire::StepUpReason::Authentication => match &inner.step_up_login {
                Some(login) => {
                    let mut options = login.options.clone();
                    if let Some(acr) = &step.acr_values {
                        options = options.acr_values(acr.clone());
                    }
                    if let Some(max_age) = step.max_age {
                        options = options.max_age(max_age);
                    }
                    let open = login.open.clone();
                    browser::login(inner, &options, |url| open(url)).await
                }
                None => Err(ProviderError::permanent(
                    "a stronger authentication needs a person to log in again (with the challenge's acr_values and max_age)",
                )),
            },
            _ => Err(ProviderError::permanent(format!(
                "the server asks for scope {:?}; scopes are configuration: add it and log in again",
                step.scope.as_deref().unwrap_or("")
            ))),
        }
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
