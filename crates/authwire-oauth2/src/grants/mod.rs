//! The grants (RFC 6749 section 4 and its extensions): what a provider runs when it has no
//! usable refresh token, the refresh itself (section 6, rotation kept), and where assertions
//! come from. The device flow (RFC 8628) is in [`device`].

pub(crate) mod device;

use crate::client_auth::PrivateKey;
use crate::form::Form;
use crate::provider::Inner;
use authwire::{Authorizer, BoxError, ProviderError, Token, async_trait};
use secrecy::SecretString;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

const GRANT_TYPE_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

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

    /// Whether the grant gets a token with no person present (the client's own, or an
    /// assertion's or a subject token's identity): not a login.
    pub(crate) fn needs_no_person(&self) -> bool {
        matches!(
            self,
            Grant::ClientCredentials | Grant::JwtBearer(_) | Grant::TokenExchange(_)
        )
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
/// authentication by assertion ([`ClientAuthMethod::ClientAssertion`](crate::ClientAuthMethod::ClientAssertion)).
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
    /// An async function that returns an assertion (fetched from somewhere).
    AsyncFn(Arc<AsyncAssertionFn>),
    /// GitHub Actions' OIDC token for a workflow run, for this audience.
    GithubActions {
        /// The `aud` the token is asked for.
        audience: String,
        /// The runner's endpoint and request token; `None`: `ACTIONS_ID_TOKEN_REQUEST_URL` and
        /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`, read for every token request.
        endpoint: Option<(String, SecretString)>,
    },
}

/// What [`AssertionSource::from_async_fn`] keeps.
pub type AsyncAssertionFn = dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, BoxError>> + Send>>
    + Send
    + Sync;

impl AssertionSource {
    /// The assertion in `path`, read for every token request.
    pub fn file(path: impl Into<std::path::PathBuf>) -> Self {
        AssertionSource::File(path.into())
    }

    /// The assertion that `f` returns, called for every token request.
    pub fn from_fn(f: impl Fn() -> Result<String, BoxError> + Send + Sync + 'static) -> Self {
        AssertionSource::Fn(Arc::new(f))
    }

    /// The assertion the future that `f` returns resolves to, awaited for every token request
    /// (an assertion fetched from a service).
    ///
    /// ```
    /// use authwire_oauth2::AssertionSource;
    /// let source = AssertionSource::from_async_fn(|| async {
    ///     Ok::<_, authwire::BoxError>(String::from("eyJ..."))
    /// });
    /// ```
    pub fn from_async_fn<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<String, BoxError>> + Send + 'static,
    {
        AssertionSource::AsyncFn(Arc::new(move || Box::pin(f())))
    }

    /// GitHub Actions' OIDC token of the workflow run, asked for `audience` from the runner's
    /// endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL`, with `ACTIONS_ID_TOKEN_REQUEST_TOKEN` as its
    /// bearer token), for every token request: a workflow gets a cloud or identity provider
    /// token with no stored secret. The job needs `permissions: id-token: write`.
    ///
    /// ```
    /// let source = authwire_oauth2::AssertionSource::github_actions("api://AzureADTokenExchange");
    /// ```
    pub fn github_actions(audience: impl Into<String>) -> Self {
        AssertionSource::GithubActions {
            audience: audience.into(),
            endpoint: None,
        }
    }

    /// [`github_actions`](Self::github_actions) with the endpoint and request token given
    /// rather than read from the environment.
    pub fn github_actions_at(
        audience: impl Into<String>,
        request_url: impl Into<String>,
        request_token: impl Into<String>,
    ) -> Self {
        AssertionSource::GithubActions {
            audience: audience.into(),
            endpoint: Some((request_url.into(), SecretString::from(request_token.into()))),
        }
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
            AssertionSource::AsyncFn(_) => f.write_str("AssertionSource::AsyncFn"),
            AssertionSource::GithubActions { audience, .. } => f
                .debug_struct("AssertionSource::GithubActions")
                .field("audience", audience)
                .finish_non_exhaustive(),
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

impl Inner {
    /// The configured grant, without a refresh token.
    pub(crate) async fn run_grant(&self) -> Result<Token, ProviderError> {
        self.run_grant_with(None).await
    }

    /// The configured grant, asking for `challenge`'s claims (merged with the client's
    /// capabilities) when given.
    pub(crate) async fn run_grant_with(&self, challenge: Option<&str>) -> Result<Token, ProviderError> {
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
                    Some("no refresh token is stored; a person must log in first".into()),
                ));
            }
        }
        self.push_request_params(&mut form);
        if let Some(claims) = self.claims_request(challenge)? {
            form.push("claims", &claims);
        }
        self.token_request(form).await
    }

    /// A refresh that keeps what the server did not send again: the refresh token (not
    /// rotated) and the ID token (OpenID Connect Core 12.2: a refresh may omit it).
    ///
    /// A new ID token is checked (OpenID Connect Core 12.2: same subject); one that fails is an
    /// error that still carries the refresh token the answer brought, so it is not lost.
    pub(crate) async fn refresh_keeping(
        &self,
        current: &Token,
        refresh_token: &SecretString,
        challenge: Option<&str>,
    ) -> Result<Token, ProviderError> {
        let mut token = self.refresh_inner(refresh_token, challenge).await?;
        let expect = crate::oidc::Expect {
            subject: Self::id_token_subject(Some(current)),
            ..Default::default()
        };
        if let Err(e) = self.check_id_token(&token, &expect).await {
            return Err(match token.take_refresh_token() {
                Some(rt) => e.with_refresh_token(rt),
                None => e,
            });
        }
        if token.id_token().is_none() {
            token.set_id_token(current.id_token().cloned());
        }
        // A person's login stays one through its refreshes.
        if let Some(login) = current.extra(crate::provider::PERSON_LOGIN)
            && token.extra(crate::provider::PERSON_LOGIN).is_none()
        {
            token = token.with_extra(crate::provider::PERSON_LOGIN, login.clone());
        }
        Ok(token)
    }

    async fn refresh_inner(
        &self,
        refresh_token: &SecretString,
        challenge: Option<&str>,
    ) -> Result<Token, ProviderError> {
        let mut form = Form::new();
        form.push("grant_type", "refresh_token");
        form.push_secret("refresh_token", refresh_token.clone());
        // No scope: RFC 6749 section 6 keeps the originally granted scope.
        if let Some(claims) = self.claims_request(challenge)? {
            form.push("claims", &claims);
        }
        let mut token = self.token_request(form).await?;
        if token.refresh_token().is_none() {
            // The server did not rotate it: keep using the old one.
            token.set_refresh_token(Some(refresh_token.clone()));
        }
        Ok(token)
    }

    pub(crate) fn push_request_params(&self, form: &mut Form) {
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

    pub(crate) async fn assertion(&self, source: &AssertionSource) -> Result<SecretString, ProviderError> {
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
            AssertionSource::AsyncFn(f) => f().await.map(SecretString::from).map_err(|e| {
                ProviderError::transient(format!(
                    "could not obtain the assertion: {}",
                    authwire::error_chain(&*e)
                ))
            }),
            AssertionSource::GithubActions { audience, endpoint } => {
                self.github_actions_token(audience, endpoint.as_ref()).await
            }
        }
    }

    /// GitHub Actions' OIDC token for `audience` (the runner's documented endpoint: `GET
    /// $ACTIONS_ID_TOKEN_REQUEST_URL&audience=AUD` with `Authorization: Bearer
    /// $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, answering `{"value": "<JWT>"}`).
    async fn github_actions_token(
        &self,
        audience: &str,
        endpoint: Option<&(String, SecretString)>,
    ) -> Result<SecretString, ProviderError> {
        use secrecy::ExposeSecret as _;
        let (url, token) = match endpoint {
            Some((url, token)) => (url.clone(), token.clone()),
            None => {
                let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
                let (Some(url), Some(token)) = (
                    var("ACTIONS_ID_TOKEN_REQUEST_URL"),
                    var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
                ) else {
                    return Err(ProviderError::permanent(
                        "not in a GitHub Actions job that may request an OIDC token: ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set (give the job `permissions: id-token: write`)",
                    ));
                };
                (url, SecretString::from(token))
            }
        };
        let mut parsed =
            crate::config::parse_url(&url, "ACTIONS_ID_TOKEN_REQUEST_URL", self.allow_insecure_http)
                .map_err(|e| ProviderError::permanent(e.to_string()))?;
        parsed.query_pairs_mut().append_pair("audience", audience);
        let request = authwire::http::Request::get(parsed.as_str())
            .header(authwire::http::header::ACCEPT, "application/json")
            .header(
                authwire::http::header::AUTHORIZATION,
                crate::transport::secret_header(&format!("Bearer {}", token.expose_secret()))?,
            );
        let sent = [token.clone()];
        let reply = self
            .http
            .send(request, Vec::new(), self.request_timeout)
            .await
            .map_err(|e| e.redact_sent(&sent))?;
        if !(200..300).contains(&reply.status) {
            let e = format!(
                "GitHub's OIDC token endpoint answered {} (is `permissions: id-token: write` set for the job?)",
                reply.status
            );
            // A runner having a bad moment (5xx, 429) is retried with backoff; a refusal is not.
            return Err(if authwire::is_transient_status(reply.status) {
                ProviderError::transient(e)
            } else {
                ProviderError::permanent(e)
            });
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            value: Option<SecretString>,
        }
        let answer: Answer = serde_json::from_slice(&reply.body).map_err(|_| {
            ProviderError::invalid_response(
                Some(reply.status),
                "GitHub's OIDC token endpoint did not answer JSON",
            )
        })?;
        answer.value.ok_or_else(|| {
            ProviderError::invalid_response(
                Some(reply.status),
                "GitHub's OIDC token endpoint answered no `value`",
            )
        })
    }
}

/// The largest assertion file read.
const MAX_ASSERTION_BYTES: u64 = 64 * 1024;

/// An assertion from a file, read now (Kubernetes rotates projected tokens in place).
async fn read_assertion_file(path: &std::path::Path) -> Result<SecretString, ProviderError> {
    use secrecy::ExposeSecret as _;
    let text = crate::transport::read_credential_file(path, "the assertion file", MAX_ASSERTION_BYTES)
        .await
        .map_err(|e| match authwire::error_chain(&e).contains("does not exist") {
            // Name the variables that usually point at it.
            true => ProviderError::permanent(format!(
                "the assertion file {} does not exist: is the token volume mounted (AZURE_FEDERATED_TOKEN_FILE, a projected service-account token)?",
                path.display()
            )),
            false => e,
        })?;
    let trimmed = text.expose_secret().trim();
    if trimmed.is_empty() {
        // Being rewritten, most likely: try again shortly.
        return Err(ProviderError::transient(format!(
            "the assertion file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}
