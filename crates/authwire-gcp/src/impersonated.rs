//! [`Impersonated`]: a Google service account's token, asked of IAM Credentials
//! (`generateAccessToken`) by any other credential that may act as it (a person's login, a
//! workload's own account), with an optional chain of delegates.

use crate::http::Http;
use authwire::secrecy::ExposeSecret as _;
use authwire::{CacheKey, Clock, IdentityProvider, ProviderError, Token, async_trait};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// IAM Credentials' endpoint, before `/v1/projects/-/serviceAccounts/{email}:generateAccessToken`.
pub const IAM_CREDENTIALS_URL: &str = "https://iamcredentials.googleapis.com";

/// A service account's token, obtained by impersonation: `source` (any [`IdentityProvider`]
/// whose principal has `roles/iam.serviceAccountTokenCreator` on the target, or on the first
/// delegate) asks IAM Credentials for a token of `service_account`.
///
/// ```no_run
/// # async fn run() -> Result<(), authwire_gcp::GcpError> {
/// let me = authwire_gcp::default_credentials().await?;
/// let deployer = authwire_gcp::Impersonated::new(me, "deployer@my-project.iam.gserviceaccount.com")
///     .lifetime(std::time::Duration::from_secs(1800));
/// let authorizer = authwire::Authorizer::new(deployer);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Impersonated {
    source: Arc<dyn IdentityProvider>,
    service_account: String,
    delegates: Vec<String>,
    lifetime: Duration,
    scopes: Vec<String>,
    base: String,
    quota_project: crate::QuotaProject,
    http: Http,
}

impl Impersonated {
    /// `service_account`'s token, asked for by `source`; one hour, cloud-platform, unless told.
    pub fn new(source: impl IdentityProvider, service_account: impl Into<String>) -> Self {
        Self {
            source: Arc::new(source),
            service_account: service_account.into(),
            delegates: Vec::new(),
            lifetime: Duration::from_secs(3600),
            scopes: Vec::new(),
            base: IAM_CREDENTIALS_URL.to_owned(),
            quota_project: crate::QuotaProject::default(),
            http: Http::new(),
        }
    }

    /// Read an `impersonated_service_account` file (what `gcloud auth application-default
    /// login --impersonate-service-account` writes): `source_credentials` (a service account
    /// key or an `authorized_user`), `service_account_impersonation_url`, `delegates`. The URL
    /// must be IAM Credentials' (https, `*.googleapis.com`): a file from an untrusted source
    /// could otherwise send the source's token anywhere.
    pub fn from_json(bytes: &[u8], source: &str) -> Result<Self, crate::GcpError> {
        Self::parse(bytes, source, true)
    }

    /// [`from_json`](Self::from_json) for a file you checked yourself, or an emulator: any
    /// https endpoint, or http to loopback.
    pub fn from_json_allowing_any_endpoint(bytes: &[u8], source: &str) -> Result<Self, crate::GcpError> {
        Self::parse(bytes, source, false)
    }

    fn parse(bytes: &[u8], shown: &str, google_only: bool) -> Result<Self, crate::GcpError> {
        use crate::GcpError;
        #[derive(serde::Deserialize)]
        struct File {
            service_account_impersonation_url: Option<String>,
            source_credentials: Option<serde_json::Value>,
            #[serde(default)]
            delegates: Vec<String>,
            quota_project_id: Option<String>,
        }
        let format = |reason: &str| GcpError::Format {
            source: shown.to_owned(),
            reason: reason.to_owned(),
        };
        let file: File = serde_json::from_slice(bytes).map_err(|e| format(&format!("not JSON ({e})")))?;
        let url = file
            .service_account_impersonation_url
            .ok_or_else(|| format("no service_account_impersonation_url"))?;
        let parsed =
            url::Url::parse(&url).map_err(|_| format("service_account_impersonation_url is not a URL"))?;
        if google_only {
            crate::external_account::google_endpoint(
                &parsed,
                "service_account_impersonation_url",
                "googleapis.com",
                "Impersonated::from_json_allowing_any_endpoint",
            )?;
        } else {
            authwire_oauth2::transport::check_url(&url, "service_account_impersonation_url", false)
                .map_err(|e| GcpError::Url(e.to_string()))?;
        }
        let path = parsed.path();
        let (base_path, email) = path
            .split_once("/v1/projects/-/serviceAccounts/")
            .and_then(|(base, rest)| Some((base, rest.strip_suffix(":generateAccessToken")?)))
            .ok_or_else(|| format("service_account_impersonation_url is not a generateAccessToken URL"))?;
        let source_doc = file
            .source_credentials
            .ok_or_else(|| format("no source_credentials"))?;
        let source_bytes = serde_json::to_vec(&source_doc).map_err(|_| format("source_credentials"))?;
        let source_shown = format!("{shown} (source_credentials)");
        let source: Arc<dyn IdentityProvider> = match source_doc.get("type").and_then(|t| t.as_str()) {
            Some("service_account") => {
                Arc::new(crate::ServiceAccountKey::from_json(&source_bytes, &source_shown)?)
            }
            Some("authorized_user") => {
                Arc::new(crate::AuthorizedUser::from_json(&source_bytes, &source_shown)?)
            }
            _ => {
                return Err(format(
                    "source_credentials must be a service_account key or authorized_user credentials",
                ));
            }
        };
        let mut base = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or_default());
        if let Some(port) = parsed.port() {
            base.push_str(&format!(":{port}"));
        }
        base.push_str(base_path);
        Ok(Self {
            source,
            service_account: email.to_owned(),
            delegates: file.delegates,
            lifetime: Duration::from_secs(3600),
            scopes: Vec::new(),
            base,
            quota_project: crate::QuotaProject::from_file(file.quota_project_id),
            http: Http::new(),
        })
    }

    /// The chain of service accounts between the source and the target, each allowed to
    /// impersonate the next (e-mails, or `projects/-/serviceAccounts/EMAIL`).
    pub fn delegates<I, S>(mut self, delegates: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.delegates = delegates.into_iter().map(Into::into).collect();
        self
    }

    /// How long the token lives (at most one hour unless the organisation allows twelve).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Ask for this scope (repeatable; default: cloud-platform).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// ID tokens of the service account for `audience` instead of access tokens, from IAM
    /// Credentials `generateIdToken` (with the e-mail claim), used until their `exp`.
    pub fn id_token(self, audience: impl Into<String>) -> ImpersonatedIdToken {
        ImpersonatedIdToken {
            inner: self,
            audience: audience.into(),
        }
    }

    /// Ask IAM Credentials at this base URL instead of Google's (an emulator on loopback).
    pub fn endpoint(mut self, base: impl Into<String>) -> Self {
        self.base = base.into().trim_end_matches('/').to_owned();
        self
    }

    /// Send every request through `transport`; see [`authwire_oauth2::Transport`].
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

    fn scopes(&self) -> Vec<String> {
        crate::scopes_or_cloud_platform(&self.scopes)
    }

    /// The URL of IAM Credentials' `method` for the target, with the e-mail as Google's
    /// libraries put it (as is): an address that could leave its path segment (`/`, `?`, `#`,
    /// `..`) is refused.
    fn url(&self, method: &str) -> Result<String, ProviderError> {
        let email = &self.service_account;
        let plain = !email.is_empty()
            && !email.contains("..")
            && email
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "@.-_".contains(c));
        if !plain {
            return Err(ProviderError::permanent(format!(
                "{email:?} is not a service account e-mail address"
            )));
        }
        Ok(format!(
            "{}/v1/projects/-/serviceAccounts/{email}:{method}",
            self.base
        ))
    }
}

impl fmt::Debug for Impersonated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Impersonated")
            .field("service_account", &self.service_account)
            .field("delegates", &self.delegates)
            .field("source", &format_args!("{}", self.source.cache_key()))
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IdentityProvider for Impersonated {
    fn request_headers(&self) -> Vec<(authwire::http::HeaderName, authwire::http::HeaderValue)> {
        self.quota_project.headers()
    }

    async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
        let url = self.url("generateAccessToken")?;
        let source = self.source.fetch_token(None).await?;
        generate_access_token(
            &self.http,
            &url,
            &source,
            &self.scopes(),
            self.lifetime,
            &self.delegates,
        )
        .await
    }

    fn cache_key(&self) -> CacheKey {
        let mut scopes = self.scopes();
        scopes.sort();
        CacheKey::new(format!(
            "gcp-impersonated|{}|{}|delegates={}|scope={}|source={}",
            self.base,
            self.service_account,
            self.delegates.join(","),
            scopes.join(" "),
            self.source.cache_key()
        ))
    }
}

/// ID tokens of an impersonated service account; see [`Impersonated::id_token`].
#[derive(Clone, Debug)]
pub struct ImpersonatedIdToken {
    inner: Impersonated,
    audience: String,
}

#[async_trait]
impl IdentityProvider for ImpersonatedIdToken {
    async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
        let i = &self.inner;
        let url = i.url("generateIdToken")?;
        let source = i.source.fetch_token(None).await?;
        let body = serde_json::json!({ "audience": self.audience, "includeEmail": true });
        let (doc, status) =
            iam_credentials(&i.http, &url, &source, body, &i.delegates, "generateIdToken").await?;
        let jwt = doc
            .get("token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ProviderError::invalid_response(Some(status), "no token in the answer"))?;
        let exp = crate::metadata::jwt_exp(jwt)
            .ok_or_else(|| ProviderError::invalid_response(Some(status), "the ID token has no `exp`"))?;
        Ok(Token::new(jwt).with_expires_at(authwire::expiry_at_unix(i.http.now(), exp)))
    }

    fn cache_key(&self) -> CacheKey {
        CacheKey::new(format!(
            "{}|id-token-aud={}",
            self.inner.cache_key(),
            self.audience
        ))
    }
}

/// IAM Credentials `generateAccessToken` at `url`, authorized by `bearer`'s token: `{"scope",
/// "lifetime", "delegates"}` in, `{"accessToken", "expireTime"}` out.
pub(crate) async fn generate_access_token(
    http: &Http,
    url: &str,
    bearer: &Token,
    scopes: &[String],
    lifetime: Duration,
    delegates: &[String],
) -> Result<Token, ProviderError> {
    let body = serde_json::json!({
        "scope": scopes,
        "lifetime": format!("{}s", lifetime.as_secs()),
    });
    let (doc, status) = iam_credentials(http, url, bearer, body, delegates, "generateAccessToken").await?;
    let token = doc
        .get("accessToken")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ProviderError::invalid_response(Some(status), "no accessToken in the answer"))?;
    let expires = doc
        .get("expireTime")
        .and_then(|t| t.as_str())
        .and_then(authwire_oauth2::transport::parse_rfc3339)
        .ok_or_else(|| {
            ProviderError::invalid_response(Some(status), "no RFC 3339 expireTime in the answer")
        })?;
    Ok(Token::new(token).with_expires_at(expires))
}

/// POST `body` (with `delegates`, when any) to an IAM Credentials `method` at `url`,
/// authorized by `bearer`'s token, which is scrubbed from any error; the answer's JSON and
/// status.
async fn iam_credentials(
    http: &Http,
    url: &str,
    bearer: &Token,
    mut body: serde_json::Value,
    delegates: &[String],
    method: &str,
) -> Result<(serde_json::Value, u16), ProviderError> {
    let bearer = bearer.access_token().expose_secret();
    let delegates = resource_names(delegates);
    if !delegates.is_empty() {
        body["delegates"] = serde_json::json!(delegates);
    }
    let authorization = authwire_oauth2::transport::secret_header(&format!("Bearer {bearer}"))
        .map_err(|e| crate::http::redact(e, &[bearer]))?;
    let request = authwire::http::Request::post(url)
        .header(authwire::http::header::AUTHORIZATION, authorization)
        .header(authwire::http::header::CONTENT_TYPE, "application/json");
    let reply = http
        .send(request, body.to_string().into_bytes())
        .await
        .map_err(|e| crate::http::redact(e, &[bearer]))?;
    if !(200..300).contains(&reply.status) {
        return Err(http.error_answer(&reply, &[bearer]));
    }
    let doc = serde_json::from_slice(&reply.body).map_err(|_| {
        ProviderError::invalid_response(Some(reply.status), format!("the {method} answer is not JSON"))
    })?;
    Ok((doc, reply.status))
}

/// Delegates as IAM wants them: `projects/-/serviceAccounts/EMAIL` (an e-mail is completed).
fn resource_names(delegates: &[String]) -> Vec<String> {
    delegates
        .iter()
        .map(|d| {
            if d.starts_with("projects/") {
                d.clone()
            } else {
                format!("projects/-/serviceAccounts/{d}")
            }
        })
        .collect()
}
