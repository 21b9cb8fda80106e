//! Signature verification against a JWKS (feature `verify`).

use crate::inspect::{Claims, JwtError, MAX_TOKEN_BYTES};
use authwire::{Clock, SystemClock};
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;

/// The JWKS is fetched again for an unknown `kid` at most this often.
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// How long one JWKS download may take (the default client's timeout).
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWKS document read.
const USER_AGENT: &str = concat!("authwire-jwt/", env!("CARGO_PKG_VERSION"));

/// Verifies JWTs: signature against a JWKS, algorithm allow-list, `exp`/`nbf` against the
/// [`Clock`], `iss` and `aud`. Cheap to clone.
///
/// Safe by default: a token must carry `exp`, `iss` and `aud` must be configured (or waived by
/// name: [`VerifierBuilder::any_issuer`], [`VerifierBuilder::any_audience`]), and the JWKS URL
/// must be https (or http to loopback). Verifying a token whose key is cached never waits for a
/// JWKS download; a download for an unknown `kid` runs once for all who need it, with a
/// timeout, and at most once per [`DEFAULT_MIN_REFRESH_INTERVAL`] whether it succeeded or not.
///
/// The allow-list defaults to the asymmetric algorithms (RS256/384/512, PS256/384/512,
/// ES256/384, EdDSA): `none` is never accepted, and HMAC algorithms only when listed, so a
/// public key can never be used as an HMAC secret (the "HS/RS confusion").
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    /// The keys: read by every verification, written only after a download.
    keys: std::sync::RwLock<Cache>,
    /// Held while a download runs, so that one runs at a time.
    refetch: Mutex<()>,
    require_exp: bool,
    algorithms: Vec<Algorithm>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    min_refresh: Duration,
    leeway: Duration,
    clock: Arc<dyn Clock>,
}

enum Source {
    Url {
        url: String,
        http: authwire_http::HttpClient,
        timeout: Duration,
    },
    Fixed,
}

struct Cache {
    set: JwkSet,
    /// When the last download was tried (it may have failed).
    tried_at: Option<SystemTime>,
}

/// Configures a [`Verifier`].
pub struct VerifierBuilder {
    jwks_url: Option<String>,
    jwks: Option<JwkSet>,
    algorithms: Vec<Algorithm>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    min_refresh: Duration,
    leeway: Duration,
    clock: Arc<dyn Clock>,
    http: Option<reqwest::Client>,
    transport: Option<authwire_http::Transport>,
    any_issuer: bool,
    any_audience: bool,
    require_exp: bool,
    allow_insecure_http: bool,
}

impl Verifier {
    /// Configure a verifier.
    pub fn builder() -> VerifierBuilder {
        VerifierBuilder {
            jwks_url: None,
            jwks: None,
            algorithms: vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::EdDSA,
            ],
            issuers: Vec::new(),
            audiences: Vec::new(),
            min_refresh: DEFAULT_MIN_REFRESH_INTERVAL,
            leeway: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
            http: None,
            transport: None,
            any_issuer: false,
            any_audience: false,
            require_exp: true,
            allow_insecure_http: false,
        }
    }

    /// Verify `token` and return its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLarge { size: token.len() });
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| fail(format!("bad header: {e}")))?;
        if !self.inner.algorithms.contains(&header.alg) {
            return Err(fail(format!("algorithm {:?} is not allowed", header.alg)));
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.validate_exp = false; // checked below against the Clock
        validation.validate_nbf = false;
        validation.set_required_spec_claims::<&str>(&[]);
        if self.inner.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.inner.audiences);
        }
        if !self.inner.issuers.is_empty() {
            validation.set_issuer(&self.inner.issuers);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| fail(format!("{:?}", e.kind())))?;
        let header_map = header_object(token)?;
        let claims = Claims::from_parts(header_map, data.claims)?;
        if self.inner.require_exp && claims.expires_at().is_none() {
            return Err(fail("the token has no exp claim".into()));
        }
        let now = self.inner.clock.now();
        if let Some(exp) = claims.expires_at()
            && now >= exp + self.inner.leeway
        {
            return Err(fail("the token has expired".into()));
        }
        if let Some(nbf) = claims.not_before()
            && now + self.inner.leeway < nbf
        {
            return Err(fail("the token is not valid yet (nbf)".into()));
        }
        Ok(claims)
    }

    /// The key for `kid`. A known key is found without waiting for anything; an unknown `kid`
    /// downloads the JWKS again, one download at a time and at most once per
    /// `min_refresh_interval` (failed downloads count).
    async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, JwtError> {
        if let Some(key) = self.cached_key(kid)? {
            return Ok(key);
        }
        let Source::Url { url, http, timeout } = &self.inner.source else {
            return Err(fail(format!("no key with kid {kid:?}")));
        };
        self.check_rate(kid)?;
        let _downloading = self.inner.refetch.lock().await;
        // Someone else may have downloaded while we waited.
        if let Some(key) = self.cached_key(kid)? {
            return Ok(key);
        }
        self.check_rate(kid)?;
        self.keys_mut().tried_at = Some(self.inner.clock.now());
        let set = fetch_jwks(http, url, *timeout).await?;
        let found = find(&set, kid);
        self.keys_mut().set = set;
        found?.ok_or_else(|| fail(format!("no key with kid {kid:?} in the JWKS at {url}")))
    }

    fn cached_key(&self, kid: Option<&str>) -> Result<Option<DecodingKey>, JwtError> {
        let keys = self
            .inner
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        find(&keys.set, kid)
    }

    fn keys_mut(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.inner
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuse a download tried less than `min_refresh_interval` ago.
    fn check_rate(&self, kid: Option<&str>) -> Result<(), JwtError> {
        let tried_at = self
            .inner
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tried_at;
        let now = self.inner.clock.now();
        if tried_at.is_some_and(|at| now.duration_since(at).unwrap_or_default() < self.inner.min_refresh) {
            return Err(fail(format!(
                "no key with kid {kid:?} (the JWKS was fetched less than {:?} ago)",
                self.inner.min_refresh
            )));
        }
        Ok(())
    }
}

fn fail(reason: String) -> JwtError {
    JwtError::Verification { reason }
}

fn find(set: &JwkSet, kid: Option<&str>) -> Result<Option<DecodingKey>, JwtError> {
    let jwk = match kid {
        Some(kid) => set.find(kid),
        // Without a kid, only an unambiguous set will do.
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    };
    jwk.map(|k| DecodingKey::from_jwk(k).map_err(|e| fail(format!("unusable key in the JWKS: {e}"))))
        .transpose()
}

fn header_object(token: &str) -> Result<Map<String, Value>, JwtError> {
    let first = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first.trim_end_matches('='))
        .map_err(|_| JwtError::Base64 { part: "header" })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::NotJson { part: "header" }),
    }
}

async fn fetch_jwks(
    http: &authwire_http::HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<JwkSet, JwtError> {
    let request =
        authwire::http::Request::get(url).header(authwire::http::header::ACCEPT, "application/json");
    let reply = http
        .send(request, Vec::new(), timeout)
        .await
        .map_err(|e| fail(format!("could not fetch the JWKS: {}", authwire::error_chain(&e))))?;
    if !(200..300).contains(&reply.status) {
        return Err(fail(format!("the JWKS at {url} answered HTTP {}", reply.status)));
    }
    serde_json::from_slice(&reply.body).map_err(|e| fail(format!("the JWKS at {url} is not a JWK set: {e}")))
}

impl VerifierBuilder {
    /// Fetch keys from this JWKS URL (on first use, and again for an unknown `kid`).
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// Use these keys (a JWK set, as JSON).
    pub fn jwks_json(mut self, json: &str) -> Result<Self, JwtError> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| fail(format!("not a JWK set: {e}")))?;
        self.jwks = Some(set);
        Ok(self)
    }

    /// Accept only these algorithms.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Require `iss` to be this issuer (repeatable: any of them).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Require `aud` to contain this audience (repeatable: any of them).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Fetch the JWKS again for an unknown `kid` at most this often
    /// (default [`DEFAULT_MIN_REFRESH_INTERVAL`], 60 s).
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh = interval;
        self
    }

    /// Tolerate this much clock skew on `exp` and `nbf` (default 30 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Read time from `clock`.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Fetch the JWKS through `transport` (proxy, roots of trust, client certificate,
    /// timeout; see `authwire_oauth2::Transport`, the same type). Without one, the default:
    /// the environment's proxy variables, the system's roots, [`DEFAULT_JWKS_TIMEOUT`].
    pub fn transport(mut self, transport: authwire_http::Transport) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Fetch the JWKS with this client: the escape hatch for what
    /// [`transport`](Self::transport) does not cover. Redirects are still refused, bodies still
    /// bounded, and each download is still bounded by [`DEFAULT_JWKS_TIMEOUT`].
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Accept any `iss` (`true`), instead of requiring an [`issuer`](Self::issuer) (default
    /// `false`: [`build`](Self::build) fails without one).
    pub fn any_issuer(mut self, on: bool) -> Self {
        self.any_issuer = on;
        self
    }

    /// Accept any `aud` (`true`), instead of requiring an [`audience`](Self::audience) (default
    /// `false`: [`build`](Self::build) fails without one).
    pub fn any_audience(mut self, on: bool) -> Self {
        self.any_audience = on;
        self
    }

    /// Require an `exp` claim (default `true`); a token without one never expires.
    pub fn require_exp(mut self, on: bool) -> Self {
        self.require_exp = on;
        self
    }

    /// Allow a plain-http JWKS URL to a host that is not loopback (default `false`): anyone on
    /// the path could then substitute keys.
    pub fn allow_insecure_http(mut self, on: bool) -> Self {
        self.allow_insecure_http = on;
        self
    }

    /// Build; needs a JWKS URL (https, or http to loopback) or keys, at least one algorithm, and
    /// an issuer and an audience, or their waivers.
    pub fn build(self) -> Result<Verifier, JwtError> {
        if self.algorithms.is_empty() {
            return Err(fail("no algorithm is allowed".into()));
        }
        if self.issuers.is_empty() && !self.any_issuer {
            return Err(fail(
                "no issuer configured: set issuer(..), or accept any with any_issuer(true)".into(),
            ));
        }
        if self.audiences.is_empty() && !self.any_audience {
            return Err(fail(
                "no audience configured: set audience(..), or accept any with any_audience(true)".into(),
            ));
        }
        let (source, set) = match (self.jwks_url, self.jwks) {
            (Some(url), None) => {
                check_jwks_url(&url, self.allow_insecure_http)?;
                let transport = self.transport.unwrap_or_default();
                let timeout = transport.configured_timeout().unwrap_or(DEFAULT_JWKS_TIMEOUT);
                let http = match self.http {
                    Some(client) => authwire_http::HttpClient::from_reqwest_client(client),
                    None => authwire_http::HttpClient::with_transport(USER_AGENT, &transport),
                };
                (Source::Url { url, http, timeout }, JwkSet { keys: Vec::new() })
            }
            (None, Some(set)) => (Source::Fixed, set),
            _ => return Err(fail("give either a JWKS URL or keys".into())),
        };
        Ok(Verifier {
            inner: Arc::new(Inner {
                source,
                keys: std::sync::RwLock::new(Cache { set, tried_at: None }),
                refetch: Mutex::new(()),
                require_exp: self.require_exp,
                algorithms: self.algorithms,
                issuers: self.issuers,
                audiences: self.audiences,
                min_refresh: self.min_refresh,
                leeway: self.leeway,
                clock: self.clock,
            }),
        })
    }
}

/// A JWKS URL must be https, or http to loopback unless allowed by name.
fn check_jwks_url(url: &str, allow_insecure_http: bool) -> Result<(), JwtError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| fail(format!("the JWKS URL {url:?} is not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || parsed.host_str().is_some_and(authwire::is_loopback_host) => Ok(()),
        "http" => Err(fail(format!(
            "the JWKS URL {url} is plain http to a host that is not loopback: anyone on the path could substitute keys; use https, or allow_insecure_http(true)"
        ))),
        other => Err(fail(format!("the JWKS URL scheme {other:?} is not https"))),
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.inner.source {
            Source::Url { url, .. } => url.as_str(),
            Source::Fixed => "fixed keys",
        };
        f.debug_struct("Verifier")
            .field("source", &source)
            .field("algorithms", &self.inner.algorithms)
            .field("issuers", &self.inner.issuers)
            .field("audiences", &self.inner.audiences)
            .finish()
    }
}
