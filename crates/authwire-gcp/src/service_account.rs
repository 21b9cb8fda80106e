//! Service account key files: `{"type": "service_account", "client_email", "private_key",
//! "private_key_id", "token_uri", ...}`, as the IAM console and `gcloud iam service-accounts
//! keys create` write them.

use crate::GcpError;
use crate::http::{Http, fingerprint};
use authwire::{CacheKey, Clock, IdentityProvider, ProviderError, Token, async_trait};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google's assertions and self-signed JWTs live one hour.
const JWT_LIFETIME: Duration = Duration::from_secs(3600);

/// A service account key: tokens from its `token_uri` by the JWT bearer grant (RFC 7523, as
/// Google's OAuth 2.0 for server-to-server applications describes), or self-signed JWT access
/// tokens where Google accepts them ([`self_signed_jwt`](Self::self_signed_jwt)).
///
/// ```no_run
/// # fn run() -> Result<(), authwire_gcp::GcpError> {
/// let provider = authwire_gcp::ServiceAccountKey::from_file("/secrets/sa.json")?
///     .scope("https://www.googleapis.com/auth/cloud-platform");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServiceAccountKey {
    client_email: String,
    private_key_id: Option<String>,
    key: Arc<EncodingKey>,
    key_fingerprint: String,
    token_uri: String,
    scopes: Vec<String>,
    self_signed: Option<SelfSigned>,
    /// `sub` for domain-wide delegation (a Workspace user to act as).
    subject: Option<String>,
    quota_project: crate::QuotaProject,
    http: Http,
}

#[derive(Clone, Debug)]
enum SelfSigned {
    /// `scope` claim (Google's "self-signed JWT with scopes").
    Scopes,
    /// `aud` claim: the API's service name, `https://SERVICE.googleapis.com/`.
    Audience(String),
}

#[derive(serde::Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<SecretString>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    quota_project_id: Option<String>,
}

impl ServiceAccountKey {
    /// Read a key file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, GcpError> {
        let (bytes, shown) = crate::read_file(path.as_ref())?;
        Self::from_json(&bytes, &shown)
    }

    /// Parse a key file's content; `source` names it in errors.
    pub fn from_json(bytes: &[u8], source: &str) -> Result<Self, GcpError> {
        let format = |reason: &str| GcpError::Format {
            source: source.to_owned(),
            reason: reason.to_owned(),
        };
        // serde_json's messages name positions, never content: safe with a private key inside.
        let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| format(&format!("not JSON ({e})")))?;
        if file.kind.as_deref() != Some("service_account") {
            return Err(format("\"type\" is not \"service_account\""));
        }
        let client_email = file
            .client_email
            .filter(|e| !e.is_empty())
            .ok_or_else(|| format("no client_email"))?;
        let pem = file.private_key.ok_or_else(|| format("no private_key"))?;
        let key = EncodingKey::from_rsa_pem(pem.expose_secret().as_bytes())
            .map_err(|_| format("private_key is not an RSA key in PEM"))?;
        let token_uri = file
            .token_uri
            .unwrap_or_else(|| crate::GOOGLE_TOKEN_URL.to_owned());
        authwire_oauth2::transport::check_url(&token_uri, "token_uri", false)
            .map_err(|e| GcpError::Url(e.to_string()))?;
        Ok(Self {
            client_email,
            private_key_id: file.private_key_id,
            key: Arc::new(key),
            key_fingerprint: fingerprint(pem.expose_secret()),
            token_uri,
            scopes: Vec::new(),
            self_signed: None,
            subject: None,
            quota_project: crate::QuotaProject::from_file(file.quota_project_id),
            http: Http::new(),
        })
    }

    /// Ask for this scope (repeatable). With none, the token asks for
    /// [`CLOUD_PLATFORM_SCOPE`](crate::CLOUD_PLATFORM_SCOPE), as Google's own libraries' builders
    /// do (Google's token endpoint answers an assertion without a scope with `invalid_scope`).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// The scopes asked for: those given, else cloud-platform.
    fn scopes(&self) -> Vec<String> {
        crate::scopes_or_cloud_platform(&self.scopes)
    }

    /// Act as this Workspace user (domain-wide delegation: the JWT's `sub`).
    pub fn subject(mut self, user: impl Into<String>) -> Self {
        self.subject = Some(user.into());
        self
    }

    /// Sign access tokens here instead of asking the token endpoint (no network at all): a JWT
    /// with the scopes as its `scope` claim, which Google APIs accept from service accounts.
    pub fn self_signed_jwt(mut self) -> Self {
        self.self_signed = Some(SelfSigned::Scopes);
        self
    }

    /// Self-signed JWTs for one API by audience (`https://pubsub.googleapis.com/`).
    pub fn self_signed_jwt_for(mut self, audience: impl Into<String>) -> Self {
        self.self_signed = Some(SelfSigned::Audience(audience.into()));
        self
    }

    /// Bill and rate-limit requests to this Google Cloud project: sent as `x-goog-user-project`
    /// on every authorized request (a credential file's `quota_project_id`, or
    /// `GOOGLE_CLOUD_QUOTA_PROJECT` through [`default_credentials`](crate::default_credentials)).
    pub fn quota_project(mut self, project: impl Into<String>) -> Self {
        self.quota_project = crate::QuotaProject::new(project);
        self
    }

    /// Send every request through `transport` (proxy, roots of trust, client certificate,
    /// timeout); see [`authwire_oauth2::Transport`].
    pub fn transport(mut self, transport: authwire_oauth2::Transport) -> Self {
        self.http = self.http.transport(&transport);
        self
    }

    /// Read time from `clock` (tests; the default is the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.http.clock = Arc::new(clock);
        self
    }

    /// The service account's e-mail address.
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    fn sign(
        &self,
        mut claims: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(String, u64), ProviderError> {
        let now = self
            .http
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let exp = now + JWT_LIFETIME.as_secs();
        claims.insert("iss".into(), self.client_email.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), exp.into());
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.private_key_id.clone();
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| {
            ProviderError::permanent(format!("could not sign with the service account key: {e}"))
        })?;
        Ok((jwt, exp))
    }
}

impl ServiceAccountKey {
    /// ID tokens for `audience` (a Cloud Run URL, an IAP client id) instead of access tokens:
    /// an assertion with `target_audience`, answered by Google's token endpoint with an
    /// `id_token`, used until its `exp`.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), authwire_gcp::GcpError> {
    /// let key = authwire_gcp::ServiceAccountKey::from_file("/run/secrets/sa.json")?;
    /// let authorizer = authwire::Authorizer::new(key.id_token("https://service-abc.run.app"));
    /// # Ok(()) }
    /// ```
    pub fn id_token(self, audience: impl Into<String>) -> ServiceAccountIdToken {
        ServiceAccountIdToken {
            key: self,
            audience: audience.into(),
        }
    }
}

/// ID tokens of a service account key for one audience; see [`ServiceAccountKey::id_token`].
#[derive(Clone, Debug)]
pub struct ServiceAccountIdToken {
    key: ServiceAccountKey,
    audience: String,
}

#[async_trait]
impl IdentityProvider for ServiceAccountIdToken {
    async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
        let k = &self.key;
        let mut claims = serde_json::Map::new();
        claims.insert("aud".into(), crate::GOOGLE_TOKEN_URL.into());
        claims.insert("target_audience".into(), self.audience.clone().into());
        let (assertion, _) = k.sign(claims)?;
        let reply = k
            .http
            .post_form(
                &k.token_uri,
                &[("grant_type", GRANT_JWT_BEARER), ("assertion", &assertion)],
                &[&assertion],
                None,
            )
            .await?;
        k.http
            .id_token_answer(&reply, &[&assertion], "no id_token in the answer")
    }

    fn cache_key(&self) -> CacheKey {
        CacheKey::new(format!(
            "gcp-service-account-id-token|{}|{}|key={}|aud={}",
            self.key.client_email, self.key.token_uri, self.key.key_fingerprint, self.audience
        ))
    }
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &"[redacted]")
            .field("token_uri", &self.token_uri)
            .field("scopes", &self.scopes)
            .field("self_signed", &self.self_signed)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IdentityProvider for ServiceAccountKey {
    fn request_headers(&self) -> Vec<(authwire::http::HeaderName, authwire::http::HeaderValue)> {
        self.quota_project.headers()
    }

    async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
        let mut claims = serde_json::Map::new();
        if let Some(mode) = &self.self_signed {
            claims.insert("sub".into(), self.client_email.clone().into());
            match mode {
                SelfSigned::Scopes => {
                    claims.insert("scope".into(), self.scopes().join(" ").into());
                }
                SelfSigned::Audience(aud) => {
                    claims.insert("aud".into(), aud.clone().into());
                }
            }
            let (jwt, exp) = self.sign(claims)?;
            return Ok(Token::new(jwt).with_expires_at(UNIX_EPOCH + Duration::from_secs(exp)));
        }
        // Google: "When making an access token request this value is always
        // https://oauth2.googleapis.com/token", whatever `token_uri` the request goes to (and
        // google-auth does the same).
        claims.insert("aud".into(), crate::GOOGLE_TOKEN_URL.into());
        claims.insert("scope".into(), self.scopes().join(" ").into());
        if let Some(sub) = &self.subject {
            claims.insert("sub".into(), sub.clone().into());
        }
        let (assertion, _) = self.sign(claims)?;
        let reply = self
            .http
            .post_form(
                &self.token_uri,
                &[("grant_type", GRANT_JWT_BEARER), ("assertion", &assertion)],
                &[&assertion],
                None,
            )
            .await?;
        self.http.token_answer(&reply, &[&assertion])
    }

    fn cache_key(&self) -> CacheKey {
        let mut scopes = self.scopes();
        scopes.sort();
        CacheKey::new(format!(
            "gcp-service-account|{}|{}|key={}|sub={}|self-signed={:?}|scope={}",
            self.client_email,
            self.token_uri,
            self.key_fingerprint,
            self.subject.as_deref().unwrap_or(""),
            self.self_signed,
            scopes.join(" ")
        ))
    }
}
