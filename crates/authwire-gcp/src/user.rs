//! `authorized_user` files: a person's refresh token, as `gcloud auth application-default
//! login` writes it (`{"type": "authorized_user", "client_id", "client_secret",
//! "refresh_token", "quota_project_id"}`).

use crate::GcpError;
use crate::http::{Http, fingerprint};
use authwire::{CacheKey, Clock, IdentityProvider, ProviderError, Token, async_trait};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::Arc;

/// A person's credentials: the refresh token grant against Google's token endpoint (a
/// `token_uri` in the file is ignored, as google-auth ignores it; [`token_url`](Self::token_url)
/// changes it), client id and secret in the body as Google's libraries send them.
#[derive(Clone)]
pub struct AuthorizedUser {
    client_id: String,
    client_secret: SecretString,
    refresh_token: SecretString,
    token_uri: String,
    scopes: Vec<String>,
    quota_project: crate::QuotaProject,
    http: Http,
}

#[derive(serde::Deserialize)]
struct UserFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    refresh_token: Option<SecretString>,
    token_uri: Option<String>,
    quota_project_id: Option<String>,
}

impl AuthorizedUser {
    /// Read an `authorized_user` file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, GcpError> {
        let (bytes, shown) = crate::read_file(path.as_ref())?;
        Self::from_json(&bytes, &shown)
    }

    /// Parse an `authorized_user` file's content; `source` names it in errors.
    pub fn from_json(bytes: &[u8], source: &str) -> Result<Self, GcpError> {
        let format = |reason: &str| GcpError::Format {
            source: source.to_owned(),
            reason: reason.to_owned(),
        };
        let file: UserFile = serde_json::from_slice(bytes).map_err(|e| format(&format!("not JSON ({e})")))?;
        if file.kind.as_deref() != Some("authorized_user") {
            return Err(format("\"type\" is not \"authorized_user\""));
        }
        let token_uri = file
            .token_uri
            .unwrap_or_else(|| crate::GOOGLE_TOKEN_URL.to_owned());
        authwire_oauth2::transport::check_url(&token_uri, "token_uri", false)
            .map_err(|e| GcpError::Url(e.to_string()))?;
        Ok(Self {
            client_id: file.client_id.ok_or_else(|| format("no client_id"))?,
            client_secret: file.client_secret.ok_or_else(|| format("no client_secret"))?,
            refresh_token: file
                .refresh_token
                .filter(|r| !r.expose_secret().is_empty())
                .ok_or_else(|| {
                    format("no refresh_token: run `gcloud auth application-default login` again")
                })?,
            token_uri,
            scopes: Vec::new(),
            quota_project: crate::QuotaProject::from_file(file.quota_project_id),
            http: Http::new(),
        })
    }

    /// Ask for this scope (repeatable; Google limits it to what the login granted).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Use another token endpoint than the file's (or Google's).
    pub fn token_url(mut self, url: impl Into<String>) -> Result<Self, GcpError> {
        let url = url.into();
        authwire_oauth2::transport::check_url(&url, "token_url", false)
            .map_err(|e| GcpError::Url(e.to_string()))?;
        self.token_uri = url;
        Ok(self)
    }

    /// Send every request through `transport` (proxy, roots of trust, client certificate,
    /// timeout); see [`authwire_oauth2::Transport`].
    pub fn transport(mut self, transport: authwire_oauth2::Transport) -> Self {
        self.http = self.http.transport(&transport);
        self
    }

    /// Bill and rate-limit requests to this Google Cloud project: sent as `x-goog-user-project`
    /// on every authorized request (a credential file's `quota_project_id`, or
    /// `GOOGLE_CLOUD_QUOTA_PROJECT` through [`default_credentials`](crate::default_credentials)).
    pub fn quota_project(mut self, project: impl Into<String>) -> Self {
        self.quota_project = crate::QuotaProject::new(project);
        self
    }

    /// Read time from `clock` (tests; the default is the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.http.clock = Arc::new(clock);
        self
    }
}

impl AuthorizedUser {
    /// One refresh grant, its answer read by `read` (the access token, or the ID token). A
    /// refresh token the server rotated earlier (kept on `current`, the stored token) wins over
    /// the file's, which it replaced; one the answer does not rotate is kept on the new token.
    async fn refresh(
        &self,
        current: Option<&Token>,
        read: impl FnOnce(&Http, &authwire_oauth2::transport::Reply, &[&str]) -> Result<Token, ProviderError>,
    ) -> Result<Token, ProviderError> {
        let secret = self.client_secret.expose_secret();
        let refresh_token = current
            .and_then(Token::refresh_token)
            .unwrap_or(&self.refresh_token);
        let refresh = refresh_token.expose_secret();
        let scope = self.scopes.join(" ");
        let mut fields = vec![
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", secret),
            ("refresh_token", refresh),
        ];
        if !scope.is_empty() {
            fields.push(("scope", &scope));
        }
        let reply = self
            .http
            .post_form(&self.token_uri, &fields, &[secret, refresh], None)
            .await?;
        let mut token = read(&self.http, &reply, &[secret, refresh])?;
        if token.refresh_token().is_none() {
            // Not rotated: keep using the one we have (never drop a refresh token).
            token.set_refresh_token(Some(refresh_token.clone()));
        }
        Ok(token)
    }

    /// ID tokens of this user (their audience is the OAuth client, as Google issues them to
    /// users), from the same refresh grant: for Cloud Run or IAP from a developer machine, as
    /// google-cloud-auth's `idtoken::user_account` gets them. Needs a login that asked for
    /// `openid` (`gcloud auth application-default login` does).
    ///
    /// ```no_run
    /// # fn run() -> Result<(), authwire_gcp::GcpError> {
    /// let user = authwire_gcp::AuthorizedUser::from_file("application_default_credentials.json")?;
    /// let authorizer = authwire::Authorizer::new(user.id_token());
    /// # Ok(()) }
    /// ```
    pub fn id_token(self) -> UserIdToken {
        UserIdToken { user: self }
    }
}

/// ID tokens of an `authorized_user`; see [`AuthorizedUser::id_token`].
#[derive(Clone, Debug)]
pub struct UserIdToken {
    user: AuthorizedUser,
}

#[async_trait]
impl IdentityProvider for UserIdToken {
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        self.user
            .refresh(current, |http, reply, secrets| {
                http.id_token_answer(
                    reply,
                    secrets,
                    "no id_token in the answer: ID tokens come only with a login that asked for `openid` (run `gcloud auth application-default login` again)",
                )
            })
            .await
    }

    fn cache_key(&self) -> CacheKey {
        CacheKey::new(format!(
            "gcp-authorized-user-id-token|{}",
            self.user.cache_key().as_str()
        ))
    }
}

impl fmt::Debug for AuthorizedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizedUser")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("refresh_token", &"[redacted]")
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IdentityProvider for AuthorizedUser {
    fn request_headers(&self) -> Vec<(authwire::http::HeaderName, authwire::http::HeaderValue)> {
        self.quota_project.headers()
    }

    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        self.refresh(current, |http, reply, secrets| http.token_answer(reply, secrets))
            .await
    }

    fn cache_key(&self) -> CacheKey {
        CacheKey::new(format!(
            "gcp-authorized-user|{}|{}|rt={}|scope={}",
            self.token_uri,
            self.client_id,
            fingerprint(self.refresh_token.expose_secret()),
            self.scopes.join(" ")
        ))
    }
}
