//! The metadata server of GCE, GKE (workload identity), Cloud Run and Cloud Functions:
//! `GET http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token`
//! with `Metadata-Flavor: Google`, as Google documents it. `GCE_METADATA_HOST` (`host:port`)
//! points it elsewhere, as in Google's own libraries.

use crate::http::Http;
use authwire::{CacheKey, Clock, IdentityProvider, ProviderError, Token, async_trait};
use base64::Engine as _;
use std::sync::Arc;
use std::time::Duration;

/// The metadata server's host name.
pub const METADATA_HOST: &str = "metadata.google.internal";
/// The address the metadata server is probed at (no DNS lookup, which can be slow off GCP).
pub const METADATA_IP: &str = "169.254.169.254";
/// How long [`crate::default_credentials`] waits for the metadata server to answer its probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

const FLAVOR: &str = "metadata-flavor";

/// Tokens of the instance's (or the pod's, or the service's) service account.
///
/// ```no_run
/// let provider = authwire_gcp::MetadataServer::new()
///     .scope("https://www.googleapis.com/auth/cloud-platform");
/// let id_tokens = authwire_gcp::MetadataServer::new().id_token("https://my-service-abc.a.run.app");
/// ```
#[derive(Clone, Debug)]
pub struct MetadataServer {
    base: String,
    account: String,
    scopes: Vec<String>,
    quota_project: crate::QuotaProject,
    http: Http,
}

impl Default for MetadataServer {
    fn default() -> Self {
        Self::new()
    }
}

impl MetadataServer {
    /// The metadata server at `GCE_METADATA_HOST`, or `metadata.google.internal`.
    pub fn new() -> Self {
        Self::from_env(&|name| std::env::var(name).ok())
    }

    pub(crate) fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let host = env("GCE_METADATA_HOST")
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| METADATA_HOST.to_owned());
        Self {
            base: format!("http://{host}"),
            account: "default".into(),
            scopes: Vec::new(),
            quota_project: crate::QuotaProject::default(),
            http: Http::metadata().with_timeout(Duration::from_secs(10)),
        }
    }

    /// Use the metadata server at this URL (`http://127.0.0.1:8080`), whatever the environment
    /// says.
    pub fn endpoint(mut self, base: impl Into<String>) -> Self {
        self.base = base.into().trim_end_matches('/').to_owned();
        self
    }

    /// Another service account attached to the instance than `default` (its e-mail).
    pub fn account(mut self, email: impl Into<String>) -> Self {
        self.account = email.into();
        self
    }

    /// Ask for this scope (repeatable; GKE and Cloud Run honour them, GCE gives the instance's).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Use `transport`'s roots of trust and timeout. Never its proxy: requests to the
    /// metadata server go direct, as Google's libraries send them.
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

    /// ID tokens for `audience` from the same server (`.../identity?audience=...&format=full`):
    /// what Cloud Run, Cloud Functions and IAP check.
    pub fn id_token(self, audience: impl Into<String>) -> MetadataIdToken {
        MetadataIdToken {
            server: self,
            audience: audience.into(),
        }
    }

    fn url(&self, leaf: &str) -> String {
        format!(
            "{}/computeMetadata/v1/instance/service-accounts/{}/{leaf}",
            self.base,
            urlencode(&self.account)
        )
    }

    async fn get(&self, url: &str) -> Result<authwire_oauth2::transport::Reply, ProviderError> {
        let request = authwire::http::Request::get(url).header(FLAVOR, "Google");
        let reply = self.http.send(request, Vec::new()).await.map_err(|e| {
            if e.is_transient() && e.status().is_none() {
                ProviderError::transient(format!(
                    "no metadata server answered at {}: not on Google Cloud? set GOOGLE_APPLICATION_CREDENTIALS ({})",
                    self.base,
                    authwire::error_chain(&e)
                ))
            } else {
                e
            }
        })?;
        if reply.status == 404 {
            return Err(ProviderError::permanent(format!(
                "the metadata server has no service account {:?} here (HTTP 404): check the instance's or pod's service account",
                self.account
            )));
        }
        if (200..300).contains(&reply.status) && !from_metadata_server(&reply) {
            return Err(ProviderError::invalid_response(
                Some(reply.status),
                "the answer has no `Metadata-Flavor: Google` header: it did not come from a metadata server",
            ));
        }
        Ok(reply)
    }
}

fn from_metadata_server(reply: &authwire_oauth2::transport::Reply) -> bool {
    reply
        .headers
        .get(FLAVOR)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("Google"))
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Whether a metadata server answers at `base` within `timeout`. Sends nothing secret; used by
/// [`crate::default_credentials`] before it chooses the metadata server.
pub(crate) async fn probe(base: &str, timeout: Duration) -> bool {
    let http = Http::metadata().with_timeout(timeout);
    let request = authwire::http::Request::get(format!("{base}/")).header(FLAVOR, "Google");
    match tokio::time::timeout(timeout, http.send(request, Vec::new())).await {
        Ok(Ok(reply)) => from_metadata_server(&reply),
        _ => false,
    }
}

#[async_trait]
impl IdentityProvider for MetadataServer {
    fn request_headers(&self) -> Vec<(authwire::http::HeaderName, authwire::http::HeaderValue)> {
        self.quota_project.headers()
    }

    async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
        let mut url = self.url("token");
        if !self.scopes.is_empty() {
            url.push_str("?scopes=");
            url.push_str(&urlencode(&self.scopes.join(",")));
        }
        let reply = self.get(&url).await?;
        self.http.token_answer(&reply, &[])
    }

    fn cache_key(&self) -> CacheKey {
        let mut scopes = self.scopes.clone();
        scopes.sort();
        CacheKey::new(format!(
            "gcp-metadata|{}|{}|scope={}",
            self.base,
            self.account,
            scopes.join(" ")
        ))
    }
}

/// ID tokens for one audience from the metadata server; the token's own `exp` is its expiry.
#[derive(Clone, Debug)]
pub struct MetadataIdToken {
    server: MetadataServer,
    audience: String,
}

#[async_trait]
impl IdentityProvider for MetadataIdToken {
    async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
        let url = format!(
            "{}?audience={}&format=full",
            self.server.url("identity"),
            urlencode(&self.audience)
        );
        let reply = self.server.get(&url).await?;
        if !(200..300).contains(&reply.status) {
            return Err(self.server.http.error_answer(&reply, &[]));
        }
        parse_id_token(reply.status, &reply.body, self.server.http.now())
    }

    fn cache_key(&self) -> CacheKey {
        CacheKey::new(format!(
            "gcp-metadata-id-token|{}|{}|aud={}",
            self.server.base, self.server.account, self.audience
        ))
    }
}

/// The `exp` claim of a JWT, unverified (the issuer is the metadata server we asked).
pub(crate) fn jwt_exp(jwt: &str) -> Option<u64> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()
}

/// The metadata server's ID token answer: the JWT as text, its `exp` the token's expiry
/// (through the core's capped conversion: a huge `exp` is a century away, not a panic). Public
/// for the fuzz targets of authwire-reliability only.
#[doc(hidden)]
pub fn parse_id_token(status: u16, body: &[u8], now: std::time::SystemTime) -> Result<Token, ProviderError> {
    let jwt = std::str::from_utf8(body)
        .map(|s| s.trim().to_owned())
        .map_err(|_| ProviderError::invalid_response(Some(status), "the ID token is not text"))?;
    let exp = jwt_exp(&jwt).ok_or_else(|| {
        ProviderError::invalid_response(
            Some(status),
            "the metadata server's answer is not a JWT with `exp`",
        )
    })?;
    Ok(Token::new(jwt).with_expires_at(authwire::expiry_at_unix(now, exp)))
}
