//! The loopback identity provider.

use crate::{CLIENT_PUBLIC_KEY_PEM, IDP_PRIVATE_KEY_PEM, IDP_PUBLIC_KEY_PEM};
use authwire::{Clock, SystemClock};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEY_ID: &str = "testkit-idp-1";
const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
const GRANT_REFRESH_TOKEN: &str = "refresh_token";
const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
const ASSERTION_TYPE_JWT: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const TOKEN_TYPE_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A registered client.
#[derive(Clone, Debug)]
pub struct Client {
    /// The `client_id`.
    pub id: String,
    /// The secret, for `client_secret_basic` / `client_secret_post`; `None` for public clients
    /// and `private_key_jwt` clients.
    pub secret: Option<String>,
    /// The public key (SPKI PEM) for `private_key_jwt`.
    pub public_key_pem: Option<String>,
}

impl Client {
    /// The confidential client registered by default.
    pub const CONFIDENTIAL_ID: &'static str = "client-1";
    /// Its secret. It contains characters that `client_secret_basic` must form-encode.
    pub const CONFIDENTIAL_SECRET: &'static str = "s3cret:with%special+chars";
    /// The public client (no authentication) registered by default.
    pub const PUBLIC_ID: &'static str = "public-1";
    /// The `private_key_jwt` client registered by default, with [`crate::CLIENT_PUBLIC_KEY_PEM`].
    pub const PRIVATE_KEY_JWT_ID: &'static str = "jwt-client-1";

    /// A client that authenticates with a secret.
    pub fn confidential(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: Some(secret.into()),
            public_key_pem: None,
        }
    }

    /// A public client.
    pub fn public(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: None,
            public_key_pem: None,
        }
    }

    /// A client that authenticates with a JWT signed by the private half of `public_key_pem`.
    pub fn private_key_jwt(id: impl Into<String>, public_key_pem: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: None,
            public_key_pem: Some(public_key_pem.into()),
        }
    }
}

/// Behaviour switches of the identity server; change them at run time with
/// [`IdentityServer::update`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long issued access tokens live.
    pub token_lifetime: Duration,
    /// Issue JWT access tokens (RS256) rather than opaque ones.
    pub jwt_access_tokens: bool,
    /// Send `expires_in` in token responses.
    pub send_expires_in: bool,
    /// Issue a refresh token with client-credentials grants too (most servers do not).
    pub refresh_token_for_client_credentials: bool,
    /// Rotate refresh tokens: each use returns a new one and a reused one revokes the family.
    pub rotate_refresh_tokens: bool,
    /// The `interval` of device authorizations, in seconds.
    pub device_interval_secs: u64,
    /// The `expires_in` of device authorizations, in seconds (default 600).
    pub device_expires_in_secs: u64,
    /// Approve device authorizations as soon as they are made.
    pub auto_approve_devices: bool,
    /// Answer the first device-code poll of each authorization with `slow_down`.
    pub device_slow_down_once: bool,
    /// How long a token request takes before it is answered.
    pub token_delay: Duration,
    /// How long a JWKS request takes before it is answered.
    pub jwks_delay: Duration,
    /// Require this nonce in DPoP proofs of token requests (RFC 9449 section 8): a proof
    /// without it is answered `400 use_dpop_nonce` with a `DPoP-Nonce` header.
    pub dpop_nonce: Option<String>,
    /// Answer JWKS requests with this status and no keys (an outage), when set.
    pub jwks_status: Option<u16>,
    /// Serve `/.well-known/openid-configuration` (otherwise only the RFC 8414 document).
    pub openid_discovery: bool,
    /// Put this marker in every opaque access token and refresh token issued, so that a test can
    /// search logs and errors for secrets.
    pub secret_marker: Option<String>,
    /// What the "user" answers at the authorization endpoint: tests approve or deny
    /// automatically, with no login page.
    pub authorization: Approval,
    /// Put `iss` in authorization responses (RFC 9207) and say so in discovery.
    pub authorization_response_iss: bool,
}

/// The automatic answer of the authorization endpoint (see [`Settings::authorization`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approval {
    /// Approve: redirect back with a code.
    Approve,
    /// Deny: redirect back with `error=access_denied`.
    Deny,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            token_lifetime: Duration::from_secs(3600),
            jwt_access_tokens: true,
            send_expires_in: true,
            refresh_token_for_client_credentials: false,
            rotate_refresh_tokens: true,
            device_interval_secs: 0,
            device_expires_in_secs: 600,
            auto_approve_devices: false,
            device_slow_down_once: false,
            token_delay: Duration::ZERO,
            jwks_delay: Duration::ZERO,
            dpop_nonce: None,
            jwks_status: None,
            openid_discovery: true,
            secret_marker: None,
            authorization: Approval::Approve,
            authorization_response_iss: true,
        }
    }
}

/// A canned failure for the next token requests (see [`IdentityServer::inject`]).
#[derive(Clone, Debug)]
pub struct Fault {
    /// HTTP status to answer with.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// A `Retry-After` header value.
    pub retry_after: Option<String>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// How many requests get this answer.
    pub count: usize,
    /// More headers.
    pub headers: Vec<(&'static str, String)>,
    /// Put the request (its form body and `Authorization` header) into the answer, as a
    /// careless or hostile server does: in `error_description` for JSON, verbatim otherwise.
    pub echo_request: bool,
}

impl Fault {
    /// An answer with this status and body, once.
    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            body: body.into(),
            content_type: "application/json",
            retry_after: None,
            delay: Duration::ZERO,
            count: 1,
            headers: Vec::new(),
            echo_request: false,
        }
    }

    /// An RFC 6749 error whose `error_description` repeats the request it answers (form body
    /// and `Authorization` header), with a control character or two, once.
    pub fn echo_request(status: u16) -> Self {
        let mut f = Self::status(status, Vec::new());
        f.echo_request = true;
        f
    }

    /// An RFC 6749 section 5.2 error answer, once.
    pub fn oauth_error(status: u16, error: &str, description: &str) -> Self {
        Self::status(
            status,
            json!({"error": error, "error_description": description}).to_string(),
        )
    }

    /// Set the `Content-Type`.
    pub fn content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = content_type;
        self
    }

    /// Add a `Retry-After` header.
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    /// Add a header to the answer.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Wait before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Answer this many requests with it.
    pub fn times(mut self, count: usize) -> Self {
        self.count = count;
        self
    }
}

struct RefreshRecord {
    client_id: String,
    subject: String,
    scope: Option<String>,
    family: u64,
    used: bool,
    /// The DPoP key (thumbprint) the refresh token is bound to, if any.
    jkt: Option<String>,
}

/// An authorization code waiting to be redeemed.
struct CodeRecord {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    scope: Option<String>,
    expires: SystemTime,
}

struct DeviceRecord {
    client_id: String,
    user_code: String,
    scope: Option<String>,
    approved: bool,
    denied: bool,
    polls: u32,
}

pub(crate) struct IdpState {
    pub(crate) clock: Arc<dyn Clock>,
    issuer: String,
    settings: Mutex<Settings>,
    clients: Mutex<HashMap<String, Client>>,
    refresh_tokens: Mutex<HashMap<String, RefreshRecord>>,
    revoked_families: Mutex<HashSet<u64>>,
    devices: Mutex<HashMap<String, DeviceRecord>>,
    codes: Mutex<HashMap<String, CodeRecord>>,
    authorization_requests: AtomicUsize,
    revocations: AtomicUsize,
    seen_jti: Mutex<HashSet<String>>,
    /// `jti`s of DPoP proofs seen at the token endpoint.
    dpop_seen: Mutex<HashSet<String>>,
    /// DPoP-bound opaque access tokens and their key thumbprints.
    opaque_cnf: Mutex<HashMap<String, String>>,
    pub(crate) dpop_proofs: AtomicUsize,
    /// Opaque access tokens issued, with their expiry and subject.
    opaque: Mutex<HashMap<String, (SystemTime, String)>>,
    faults: Mutex<VecDeque<Fault>>,
    serial: AtomicU64,
    token_requests: AtomicUsize,
    tokens_issued: AtomicUsize,
    discovery_requests: AtomicUsize,
    jwks_requests: AtomicUsize,
    errors: Mutex<HashMap<String, usize>>,
    grants: Mutex<HashMap<String, usize>>,
    auth_methods: Mutex<Vec<String>>,
    last_form: Mutex<HashMap<String, String>>,
    last_assertion: Mutex<Option<String>>,
    signing_key: EncodingKey,
    pub(crate) verifying_key: DecodingKey,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Configure an [`IdentityServer`] before it starts.
pub struct IdentityServerBuilder {
    clock: Arc<dyn Clock>,
    settings: Settings,
    clients: Vec<Client>,
}

impl IdentityServerBuilder {
    /// Read time from `clock` (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Start with these settings.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Register another client.
    pub fn client(mut self, client: Client) -> Self {
        self.clients.push(client);
        self
    }

    /// Bind `127.0.0.1:0` and serve.
    pub async fn start(self) -> IdentityServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let mut clients: HashMap<String, Client> = [
            Client::confidential(Client::CONFIDENTIAL_ID, Client::CONFIDENTIAL_SECRET),
            Client::public(Client::PUBLIC_ID),
            Client::private_key_jwt(Client::PRIVATE_KEY_JWT_ID, CLIENT_PUBLIC_KEY_PEM),
        ]
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
        for c in self.clients {
            clients.insert(c.id.clone(), c);
        }
        let state = Arc::new(IdpState {
            clock: self.clock,
            issuer: format!("http://{addr}"),
            settings: Mutex::new(self.settings),
            clients: Mutex::new(clients),
            refresh_tokens: Mutex::default(),
            revoked_families: Mutex::default(),
            devices: Mutex::default(),
            codes: Mutex::default(),
            authorization_requests: AtomicUsize::new(0),
            revocations: AtomicUsize::new(0),
            seen_jti: Mutex::default(),
            dpop_seen: Mutex::default(),
            opaque_cnf: Mutex::default(),
            dpop_proofs: AtomicUsize::new(0),
            opaque: Mutex::default(),
            faults: Mutex::default(),
            serial: AtomicU64::new(1),
            token_requests: AtomicUsize::new(0),
            tokens_issued: AtomicUsize::new(0),
            discovery_requests: AtomicUsize::new(0),
            jwks_requests: AtomicUsize::new(0),
            errors: Mutex::default(),
            grants: Mutex::default(),
            auth_methods: Mutex::default(),
            last_form: Mutex::default(),
            last_assertion: Mutex::default(),
            signing_key: EncodingKey::from_rsa_pem(IDP_PRIVATE_KEY_PEM.as_bytes()).expect("test key"),
            verifying_key: DecodingKey::from_rsa_pem(IDP_PUBLIC_KEY_PEM.as_bytes()).expect("test key"),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(openid_discovery))
            .route("/.well-known/oauth-authorization-server", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .route("/device_authorization", post(device_authorization))
            .route("/authorize", get(crate::authorize::authorize))
            .route("/revoke", post(crate::authorize::revoke))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        IdentityServer { addr, state, task }
    }
}

/// An identity provider on a loopback port; it stops when dropped.
pub struct IdentityServer {
    addr: SocketAddr,
    pub(crate) state: Arc<IdpState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for IdentityServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl IdentityServer {
    /// Start with the default settings and clients.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// Configure before starting.
    pub fn builder() -> IdentityServerBuilder {
        IdentityServerBuilder {
            clock: Arc::new(SystemClock),
            settings: Settings::default(),
            clients: Vec::new(),
        }
    }

    /// The issuer URL, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        self.state.issuer.clone()
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.state.issuer)
    }

    /// An OAuth2 provider builder for the default confidential client of this server.
    pub fn confidential_client(&self) -> authwire_oauth2::OAuth2ProviderBuilder {
        crate::confidential_client(self.token_url())
    }

    /// The JWKS endpoint.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.state.issuer)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Change settings while running.
    pub fn update(&self, change: impl FnOnce(&mut Settings)) {
        change(&mut lock(&self.state.settings));
    }

    /// Answer the next token requests with `fault` (queued after earlier faults).
    pub fn inject(&self, fault: Fault) {
        lock(&self.state.faults).push_back(fault);
    }

    /// Drop every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.state.faults).clear();
    }

    /// DPoP proofs on token requests that verified.
    pub fn dpop_proofs(&self) -> usize {
        self.state.dpop_proofs.load(Ordering::SeqCst)
    }

    /// Token endpoint requests received (including failed ones).
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Access tokens issued.
    pub fn tokens_issued(&self) -> usize {
        self.state.tokens_issued.load(Ordering::SeqCst)
    }

    /// Discovery documents served.
    pub fn discovery_requests(&self) -> usize {
        self.state.discovery_requests.load(Ordering::SeqCst)
    }

    /// JWKS documents served.
    pub fn jwks_requests(&self) -> usize {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    /// Error answers of the token endpoint with this RFC 6749 `error` code (`invalid_grant`...).
    pub fn errors(&self, code: &str) -> usize {
        lock(&self.state.errors).get(code).copied().unwrap_or(0)
    }

    /// Token requests by `grant_type`.
    pub fn grant_count(&self, grant_type: &str) -> usize {
        lock(&self.state.grants).get(grant_type).copied().unwrap_or(0)
    }

    /// The client-authentication method of each token request, in order
    /// (`client_secret_basic`, `client_secret_post`, `private_key_jwt`, `none`).
    pub fn auth_methods(&self) -> Vec<String> {
        lock(&self.state.auth_methods).clone()
    }

    /// The form parameters of the last token request, without secrets
    /// (`client_secret`, `client_assertion`, `assertion`, `refresh_token`, `subject_token`,
    /// `device_code` are replaced by `<present>`).
    pub fn last_form(&self) -> HashMap<String, String> {
        lock(&self.state.last_form).clone()
    }

    /// The authorization endpoint.
    pub fn authorization_url(&self) -> String {
        format!("{}/authorize", self.state.issuer)
    }

    /// The revocation endpoint (RFC 7009).
    pub fn revocation_url(&self) -> String {
        format!("{}/revoke", self.state.issuer)
    }

    /// Requests to the authorization endpoint.
    pub fn authorization_requests(&self) -> usize {
        self.state.authorization_requests.load(Ordering::SeqCst)
    }

    /// Revocation requests that authenticated and revoked something (RFC 7009).
    pub fn revocations(&self) -> usize {
        self.state.revocations.load(Ordering::SeqCst)
    }

    /// The `assertion` of the last JWT bearer grant request, as sent (a test server: tests read
    /// its claims).
    pub fn last_assertion(&self) -> Option<String> {
        lock(&self.state.last_assertion).clone()
    }

    /// Approve the device authorization with this user code. Returns whether it existed.
    pub fn approve_device(&self, user_code: &str) -> bool {
        let mut devices = lock(&self.state.devices);
        let found = devices.values_mut().find(|d| d.user_code == user_code);
        found.map(|d| d.approved = true).is_some()
    }

    /// Deny the device authorization with this user code.
    pub fn deny_device(&self, user_code: &str) -> bool {
        let mut devices = lock(&self.state.devices);
        let found = devices.values_mut().find(|d| d.user_code == user_code);
        found.map(|d| d.denied = true).is_some()
    }

    /// Revoke every refresh token issued so far.
    pub fn revoke_all_refresh_tokens(&self) {
        let families: Vec<u64> = lock(&self.state.refresh_tokens)
            .values()
            .map(|r| r.family)
            .collect();
        lock(&self.state.revoked_families).extend(families);
    }

    /// Issue a refresh token for `client_id` directly (as if a user had logged in earlier).
    pub fn issue_refresh_token(&self, client_id: &str, scope: Option<&str>) -> String {
        self.state
            .new_refresh_token(client_id, client_id, scope.map(str::to_owned), None)
    }

    /// Sign a JWT access token for `subject` with the server's key, as the token endpoint would.
    pub fn mint_access_token(&self, subject: &str, lifetime: Duration) -> String {
        self.state
            .jwt_access_token(subject, subject, None, None, lifetime)
    }
}

impl IdpState {
    fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::SeqCst)
    }

    pub(crate) fn now_secs(&self) -> u64 {
        secs(self.clock.now())
    }

    fn new_refresh_token(
        &self,
        client_id: &str,
        subject: &str,
        scope: Option<String>,
        family: Option<u64>,
    ) -> String {
        let n = self.next_serial();
        let marker = lock(&self.settings).secret_marker.clone().unwrap_or_default();
        let token = format!("rt-{marker}{n}-{}", random_hex());
        lock(&self.refresh_tokens).insert(
            token.clone(),
            RefreshRecord {
                client_id: client_id.to_owned(),
                subject: subject.to_owned(),
                scope,
                family: family.unwrap_or(n),
                used: false,
                jkt: None,
            },
        );
        token
    }

    fn jwt_access_token(
        &self,
        subject: &str,
        client_id: &str,
        scope: Option<&str>,
        audience: Option<&str>,
        lifetime: Duration,
    ) -> String {
        let now = self.now_secs();
        // `exp` is whole seconds: round up, so that the token lives at least `expires_in`.
        let exp = secs(self.clock.now() + lifetime) + 1;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEY_ID.into());
        let claims = json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": audience.unwrap_or("testkit-api"),
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": format!("at-{}", self.next_serial()),
        });
        jsonwebtoken::encode(&header, &claims, &self.signing_key).expect("sign with the test key")
    }

    /// The access token bound to the DPoP key `jkt`: a JWT re-signed with `cnf.jkt`, or an
    /// opaque token recorded as bound.
    fn bind_access_token(&self, token: &str, jkt: &str) -> String {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims::<&str>(&[]);
        match jsonwebtoken::decode::<Value>(token, &self.verifying_key, &validation) {
            Ok(data) => {
                let mut claims = data.claims;
                claims["cnf"] = json!({ "jkt": jkt });
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some(KEY_ID.into());
                jsonwebtoken::encode(&header, &claims, &self.signing_key).expect("sign with the test key")
            }
            Err(_) => {
                lock(&self.opaque_cnf).insert(token.to_owned(), jkt.to_owned());
                token.to_owned()
            }
        }
    }

    /// The DPoP key thumbprint an access token is bound to (`cnf.jkt`), if any. Call after
    /// [`check_access_token`](Self::check_access_token) succeeded.
    pub(crate) fn access_token_jkt(&self, token: &str) -> Option<String> {
        if let Some(jkt) = lock(&self.opaque_cnf).get(token) {
            return Some(jkt.clone());
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims::<&str>(&[]);
        let data = jsonwebtoken::decode::<Value>(token, &self.verifying_key, &validation).ok()?;
        data.claims["cnf"]["jkt"].as_str().map(str::to_owned)
    }

    /// Whether `token` is a valid access token issued here, and its subject.
    pub(crate) fn check_access_token(&self, token: &str) -> Result<String, &'static str> {
        if let Some((exp, sub)) = lock(&self.opaque).get(token) {
            return if self.clock.now() < *exp {
                Ok(sub.clone())
            } else {
                Err("the access token expired")
            };
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false; // checked against the server's clock below
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Value>(token, &self.verifying_key, &validation)
            .map_err(|_| "the access token is not one this server issued")?;
        let exp = data.claims["exp"].as_u64().ok_or("the access token has no exp")?;
        if self.now_secs() >= exp {
            return Err("the access token expired");
        }
        Ok(data.claims["sub"].as_str().unwrap_or_default().to_owned())
    }

    fn issue(
        &self,
        client_id: &str,
        subject: &str,
        scope: Option<String>,
        audience: Option<&str>,
        refresh: Option<String>,
    ) -> Value {
        let settings = lock(&self.settings).clone();
        let access = if settings.jwt_access_tokens {
            self.jwt_access_token(
                subject,
                client_id,
                scope.as_deref(),
                audience,
                settings.token_lifetime,
            )
        } else {
            let marker = settings.secret_marker.clone().unwrap_or_default();
            let t = format!("opaque-{marker}{}-{}", self.next_serial(), random_hex());
            lock(&self.opaque).insert(
                t.clone(),
                (self.clock.now() + settings.token_lifetime, subject.to_owned()),
            );
            t
        };
        self.tokens_issued.fetch_add(1, Ordering::SeqCst);
        let mut body = json!({"access_token": access, "token_type": "Bearer"});
        if settings.send_expires_in {
            body["expires_in"] = json!(settings.token_lifetime.as_secs());
        }
        // OpenID Connect: an ID token when `openid` was asked for.
        if scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|x| x == "openid"))
        {
            body["id_token"] = json!(self.id_token(subject, client_id, settings.token_lifetime));
        }
        if let Some(s) = scope {
            body["scope"] = json!(s);
        }
        if let Some(r) = refresh {
            body["refresh_token"] = json!(r);
        }
        body
    }

    /// An OpenID Connect ID token (RS256) for `subject`, audience `client_id`.
    fn id_token(&self, subject: &str, client_id: &str, lifetime: Duration) -> String {
        let now = self.now_secs();
        let claims = json!({
            "iss": self.issuer, "sub": subject, "aud": client_id,
            "iat": now, "exp": now + lifetime.as_secs(),
            "jti": format!("id-{}", self.next_serial()),
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEY_ID.into());
        jsonwebtoken::encode(&header, &claims, &self.signing_key).expect("sign an ID token")
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn random_hex() -> String {
    authwire::random::hex(8)
}

type Form = HashMap<String, String>;

/// Marks an error answer with its code, for the counters (not part of the OAuth answer).
const ERROR_CODE_HEADER: &str = "x-testkit-error";

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(error) {
        r.headers_mut().insert(ERROR_CODE_HEADER, v);
    }
    r
}

fn ok_json(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        axum::Json(body),
    )
        .into_response()
}

async fn openid_discovery(state: State<Arc<IdpState>>) -> Response {
    if !lock(&state.settings).openid_discovery {
        return StatusCode::NOT_FOUND.into_response();
    }
    discovery(state).await
}

async fn discovery(State(s): State<Arc<IdpState>>) -> Response {
    s.discovery_requests.fetch_add(1, Ordering::SeqCst);
    let i = &s.issuer;
    axum::Json(json!({
        "issuer": i,
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "device_authorization_endpoint": format!("{i}/device_authorization"),
        "authorization_endpoint": format!("{i}/authorize"),
        "revocation_endpoint": format!("{i}/revoke"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": lock(&s.settings).authorization_response_iss,
        "grant_types_supported": [GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN, GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE, GRANT_DEVICE_CODE],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn jwks(State(s): State<Arc<IdpState>>) -> Response {
    s.jwks_requests.fetch_add(1, Ordering::SeqCst);
    let (delay, status) = {
        let settings = lock(&s.settings);
        (settings.jwks_delay, settings.jwks_status)
    };
    tokio::time::sleep(delay).await;
    if let Some(status) = status {
        return StatusCode::from_u16(status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
    }
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&s.signing_key, Algorithm::RS256)
        .expect("jwk from the test key");
    jwk.common.key_id = Some(KEY_ID.into());
    axum::Json(json!({ "keys": [jwk] })).into_response()
}

fn parse_form(body: &[u8]) -> Form {
    // serde_urlencoded via axum would reject unusual bodies; parse leniently and let the
    // handlers answer invalid_request for what is missing.
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi * 16 + lo);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 6749 section 2.3: which client is this, and did it prove it?
#[allow(clippy::result_large_err)] // a test server: the error is the finished HTTP answer
fn authenticate(s: &IdpState, headers: &HeaderMap, form: &Form) -> Result<(Client, &'static str), Response> {
    let invalid = |why: &str| {
        let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"testkit\""),
        );
        r
    };
    let clients = lock(&s.clients);
    if let Some(auth) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let encoded = auth
            .strip_prefix("Basic ")
            .ok_or_else(|| invalid("unsupported Authorization scheme"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| invalid("Basic credentials are not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid("Basic credentials are not UTF-8"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| invalid("Basic credentials without ':'"))?;
        // RFC 6749 section 2.3.1: both parts are form-urlencoded before base64.
        let (id, secret) = (form_decode(id), form_decode(secret));
        let client = clients.get(&id).ok_or_else(|| invalid("unknown client"))?;
        if client.secret.as_deref() != Some(secret.as_str()) {
            return Err(invalid("client authentication failed"));
        }
        return Ok((client.clone(), "client_secret_basic"));
    }
    if form.get("client_assertion_type").map(String::as_str) == Some(ASSERTION_TYPE_JWT) {
        let assertion = form
            .get("client_assertion")
            .ok_or_else(|| invalid("client_assertion missing"))?;
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Value>(assertion)
            .map_err(|_| invalid("client_assertion is not a JWT"))?;
        let iss = unverified.claims["iss"].as_str().unwrap_or_default().to_owned();
        let client = clients.get(&iss).ok_or_else(|| invalid("unknown client"))?;
        let pem = client
            .public_key_pem
            .as_ref()
            .ok_or_else(|| invalid("client has no registered key"))?;
        let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| invalid("bad registered key"))?;
        let claims = verify_assertion(
            s,
            assertion,
            &key,
            &[s.issuer.clone(), format!("{}/token", s.issuer)],
        )
        .map_err(invalid)?;
        if claims["sub"].as_str() != Some(client.id.as_str()) {
            return Err(invalid("client_assertion sub must be the client_id"));
        }
        if form.get("client_id").is_some_and(|id| id != &client.id) {
            return Err(invalid("client_id does not match the assertion"));
        }
        return Ok((client.clone(), "private_key_jwt"));
    }
    let id = form
        .get("client_id")
        .ok_or_else(|| invalid("no client authentication"))?;
    let client = clients.get(id).ok_or_else(|| invalid("unknown client"))?;
    match (&client.secret, form.get("client_secret")) {
        (Some(expected), Some(given)) if expected == given => Ok((client.clone(), "client_secret_post")),
        (Some(_), _) => Err(invalid("client authentication failed")),
        (None, Some(_)) => Err(invalid("public clients have no secret")),
        (None, None) if client.public_key_pem.is_some() => {
            Err(invalid("this client must use private_key_jwt"))
        }
        (None, None) => Ok((client.clone(), "none")),
    }
}

/// Verify a JWT assertion signed by `key`: audience, expiry, single use of `jti`.
fn verify_assertion(
    s: &IdpState,
    jwt: &str,
    key: &DecodingKey,
    audiences: &[String],
) -> Result<Value, &'static str> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.algorithms = vec![
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
    ];
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let data = jsonwebtoken::decode::<Value>(jwt, key, &validation)
        .map_err(|_| "assertion signature or format is invalid")?;
    let c = data.claims;
    let aud_ok = match &c["aud"] {
        Value::String(a) => audiences.contains(a),
        Value::Array(list) => list
            .iter()
            .any(|a| a.as_str().is_some_and(|a| audiences.iter().any(|x| x == a))),
        _ => false,
    };
    if !aud_ok {
        return Err("assertion audience is not this server");
    }
    if c["exp"].as_u64().is_none_or(|exp| exp <= s.now_secs()) {
        return Err("assertion expired");
    }
    if let Some(jti) = c["jti"].as_str()
        && !lock(&s.seen_jti).insert(jti.to_owned())
    {
        return Err("assertion jti was used before");
    }
    Ok(c)
}

async fn token(State(s): State<Arc<IdpState>>, headers: HeaderMap, body: Bytes) -> Response {
    let response = token_inner(s.clone(), headers, body).await;
    if let Some(code) = response
        .headers()
        .get(ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        *lock(&s.errors).entry(code.to_owned()).or_default() += 1;
    }
    response
}

async fn token_inner(s: Arc<IdpState>, headers: HeaderMap, body: Bytes) -> Response {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    let delay = lock(&s.settings).token_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let fault = {
        let mut faults = lock(&s.faults);
        let fault = faults.front_mut().map(|f| {
            f.count -= 1;
            f.clone()
        });
        if faults.front().is_some_and(|f| f.count == 0) {
            faults.pop_front();
        }
        fault
    };
    if let Some(f) = fault {
        tokio::time::sleep(f.delay).await;
        let body = if f.echo_request {
            let form = String::from_utf8_lossy(&body);
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let decoded: String = form_urlencoded::parse(form.as_bytes())
                .map(|(k, v)| format!("{k}={v}\r\n"))
                .collect();
            if f.content_type == "application/json" {
                json!({"error": "invalid_request",
                       "error_description": format!("bad request\u{1b}[31m: {form} decoded {decoded} auth {auth}")})
                .to_string()
                .into_bytes()
            } else {
                format!("<html>bad request: {form} {auth}</html>").into_bytes()
            }
        } else {
            f.body
        };
        let mut r = (
            StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(f.content_type));
        if let Some(ra) = f.retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
            r.headers_mut().insert(header::RETRY_AFTER, ra);
        }
        for (name, value) in f.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                r.headers_mut().insert(name, v);
            }
        }
        return r;
    }

    let form = parse_form(&body);
    {
        let redacted = form
            .iter()
            .map(|(k, v)| {
                let secret = [
                    "client_secret",
                    "client_assertion",
                    "assertion",
                    "refresh_token",
                    "subject_token",
                    "device_code",
                    "code",
                    "code_verifier",
                ];
                (
                    k.clone(),
                    if secret.contains(&k.as_str()) {
                        "<present>".to_owned()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect();
        *lock(&s.last_form) = redacted;
    }
    if let Some(a) = form.get("assertion") {
        *lock(&s.last_assertion) = Some(a.clone());
    }
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    *lock(&s.grants).entry(grant.clone()).or_default() += 1;

    let (client, method) = match authenticate(&s, &headers, &form) {
        Ok(c) => c,
        Err(r) => return r,
    };
    lock(&s.auth_methods).push(method.to_owned());
    let scope = form.get("scope").cloned();
    let audience = form.get("audience").map(String::as_str);

    // DPoP (RFC 9449): a proof binds the tokens issued to its key.
    let jkt = match headers.get("dpop").and_then(|v| v.to_str().ok()) {
        None => None,
        Some(proof) => {
            let nonce = lock(&s.settings).dpop_nonce.clone();
            let htu = format!("{}/token", s.issuer);
            let expect = crate::dpop::Expect {
                method: "POST",
                htu: &htu,
                access_token: None,
                nonce: nonce.as_deref(),
                now_secs: s.now_secs(),
            };
            match crate::dpop::check(proof, &expect, &s.dpop_seen) {
                Ok(jkt) => {
                    s.dpop_proofs.fetch_add(1, Ordering::SeqCst);
                    Some(jkt)
                }
                Err(crate::dpop::Refused::UseNonce) => {
                    let mut r = oauth_error(
                        StatusCode::BAD_REQUEST,
                        "use_dpop_nonce",
                        "Authorization server requires nonce in DPoP proof",
                    );
                    if let Some(v) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
                        r.headers_mut().insert("dpop-nonce", v);
                    }
                    return r;
                }
                Err(crate::dpop::Refused::Invalid(why)) => {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", why);
                }
            }
        }
    };
    // A refresh token bound to a key is redeemed only with a proof of that key.
    if grant == "refresh_token" {
        let bound = form
            .get("refresh_token")
            .and_then(|rt| lock(&s.refresh_tokens).get(rt).and_then(|r| r.jkt.clone()));
        if bound.is_some() && bound != jkt {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the refresh token is bound to another DPoP key",
            );
        }
    }
    let response = grant_response(&s, &grant, &client, method, &form, scope, audience);
    match jkt {
        Some(jkt) => bind_response(&s, response, &jkt).await,
        None => response,
    }
}

/// Issue a DPoP-bound answer: `token_type: DPoP`, `cnf.jkt` in the access token, the refresh
/// token bound to the key.
async fn bind_response(s: &IdpState, response: Response, jkt: &str) -> Response {
    if response.status() != StatusCode::OK {
        return response;
    }
    let Ok(bytes) = axum::body::to_bytes(response.into_body(), 1 << 20).await else {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "unreadable answer",
        );
    };
    let Ok(mut body) = serde_json::from_slice::<Value>(&bytes) else {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "unreadable answer",
        );
    };
    let access = body["access_token"].as_str().unwrap_or_default().to_owned();
    body["access_token"] = json!(s.bind_access_token(&access, jkt));
    body["token_type"] = json!("DPoP");
    if let Some(rt) = body["refresh_token"].as_str()
        && let Some(record) = lock(&s.refresh_tokens).get_mut(rt)
    {
        record.jkt = Some(jkt.to_owned());
    }
    ok_json(body)
}

fn grant_response(
    s: &Arc<IdpState>,
    grant: &str,
    client: &Client,
    method: &str,
    form: &Form,
    scope: Option<String>,
    audience: Option<&str>,
) -> Response {
    let s = s.clone();
    let (client, form) = (client.clone(), form.clone());
    match grant {
        GRANT_CLIENT_CREDENTIALS => {
            if method == "none" {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unauthorized_client",
                    "public clients cannot use client credentials",
                );
            }
            // Read the flag first: the settings lock must not be held while issuing.
            let with_refresh = lock(&s.settings).refresh_token_for_client_credentials;
            let refresh =
                with_refresh.then(|| s.new_refresh_token(&client.id, &client.id, scope.clone(), None));
            ok_json(s.issue(&client.id, &client.id, scope, audience, refresh))
        }
        GRANT_REFRESH_TOKEN => refresh_grant(&s, &client, &form),
        GRANT_JWT_BEARER => {
            let Some(assertion) = form.get("assertion") else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "assertion missing");
            };
            let key = DecodingKey::from_rsa_pem(CLIENT_PUBLIC_KEY_PEM.as_bytes()).expect("test key");
            match verify_assertion(
                &s,
                assertion,
                &key,
                &[s.issuer.clone(), format!("{}/token", s.issuer)],
            ) {
                Ok(claims) => {
                    let sub = claims["sub"].as_str().unwrap_or_default().to_owned();
                    ok_json(s.issue(&client.id, &sub, scope, audience, None))
                }
                Err(why) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why),
            }
        }
        GRANT_TOKEN_EXCHANGE => {
            let (Some(subject), Some(subject_type)) =
                (form.get("subject_token"), form.get("subject_token_type"))
            else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "subject_token and subject_token_type are required",
                );
            };
            if subject_type != TOKEN_TYPE_ACCESS {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "unsupported subject_token_type",
                );
            }
            match s.check_access_token(subject) {
                Ok(sub) => {
                    let mut body = s.issue(&client.id, &sub, scope, audience, None);
                    body["issued_token_type"] = json!(TOKEN_TYPE_ACCESS);
                    ok_json(body)
                }
                Err(why) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why),
            }
        }
        GRANT_DEVICE_CODE => device_grant(&s, &client, &form),
        GRANT_AUTHORIZATION_CODE => code_grant(&s, &client, &form),
        "" => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type missing"),
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "this grant type is not supported",
        ),
    }
}

fn refresh_grant(s: &IdpState, client: &Client, form: &Form) -> Response {
    let Some(presented) = form.get("refresh_token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token missing",
        );
    };
    let rotate = lock(&s.settings).rotate_refresh_tokens;
    let (subject, scope, family) = {
        let mut tokens = lock(&s.refresh_tokens);
        let Some(record) = tokens.get_mut(presented) else {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown refresh token");
        };
        if record.client_id != client.id {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "refresh token was issued to another client",
            );
        }
        if lock(&s.revoked_families).contains(&record.family) {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "refresh token revoked");
        }
        if record.used {
            // Reuse of a rotated refresh token: revoke the whole family (OAuth 2.0 Security BCP).
            lock(&s.revoked_families).insert(record.family);
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "refresh token reuse detected; the token family is revoked",
            );
        }
        if rotate {
            record.used = true;
        }
        (record.subject.clone(), record.scope.clone(), record.family)
    };
    let scope = form.get("scope").cloned().or(scope);
    let new_refresh = rotate.then(|| s.new_refresh_token(&client.id, &subject, scope.clone(), Some(family)));
    ok_json(s.issue(
        &client.id,
        &subject,
        scope,
        form.get("audience").map(String::as_str),
        new_refresh,
    ))
}

fn device_grant(s: &IdpState, client: &Client, form: &Form) -> Response {
    let Some(code) = form.get("device_code") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "device_code missing");
    };
    let slow_down_once = lock(&s.settings).device_slow_down_once;
    let scope = {
        let mut devices = lock(&s.devices);
        let Some(d) = devices.get_mut(code) else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "expired_token",
                "unknown or expired device code",
            );
        };
        if d.client_id != client.id {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "device code was issued to another client",
            );
        }
        d.polls += 1;
        if slow_down_once && d.polls == 1 {
            return oauth_error(StatusCode::BAD_REQUEST, "slow_down", "polling too fast");
        }
        if d.denied {
            devices.remove(code);
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "access_denied",
                "the user denied the request",
            );
        }
        if !d.approved {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "authorization_pending",
                "waiting for the user",
            );
        }
        let scope = d.scope.clone();
        devices.remove(code);
        scope
    };
    let subject = format!("user-of-{}", client.id);
    let refresh = s.new_refresh_token(&client.id, &subject, scope.clone(), None);
    ok_json(s.issue(&client.id, &subject, scope, None, Some(refresh)))
}

async fn device_authorization(State(s): State<Arc<IdpState>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    let (client, _) = match authenticate(&s, &headers, &form) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let settings = lock(&s.settings).clone();
    let n = s.next_serial();
    let device_code = format!("dc-{n}-{}", random_hex());
    let user_code = format!("WXYZ-{:04}", n % 10_000);
    lock(&s.devices).insert(
        device_code.clone(),
        DeviceRecord {
            client_id: client.id.clone(),
            user_code: user_code.clone(),
            scope: form.get("scope").cloned(),
            approved: settings.auto_approve_devices,
            denied: false,
            polls: 0,
        },
    );
    let verification_uri = format!("{}/device", s.issuer);
    ok_json(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": format!("{verification_uri}?user_code={user_code}"),
        "expires_in": settings.device_expires_in_secs,
        "interval": settings.device_interval_secs,
    }))
}

/// RFC 6749 section 4.1.3 with RFC 7636 section 4.6: the code, once, by the client it was issued
/// to, with the same redirect URI and the verifier whose S256 hash is the challenge.
fn code_grant(s: &IdpState, client: &Client, form: &Form) -> Response {
    let (Some(code), Some(verifier)) = (form.get("code"), form.get("code_verifier")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code and code_verifier are required (PKCE is mandatory here)",
        );
    };
    // A code is redeemed at most once, whatever the outcome.
    let Some(record) = lock(&s.codes).remove(code) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown, used or expired authorization code",
        );
    };
    if record.client_id != client.id || record.expires <= s.clock.now() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the code was issued to another client, or expired",
        );
    }
    if form.get("redirect_uri") != Some(&record.redirect_uri) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri differs from the authorization request's",
        );
    }
    if crate::authorize::s256(verifier) != record.code_challenge {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verification failed: the code_verifier does not match the code_challenge",
        );
    }
    let subject = format!("user-of-{}", client.id);
    let refresh = s.new_refresh_token(&client.id, &subject, record.scope.clone(), None);
    ok_json(s.issue(&client.id, &subject, record.scope, None, Some(refresh)))
}

impl IdpState {
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    pub(crate) fn client(&self, id: &str) -> Option<Client> {
        lock(&self.clients).get(id).cloned()
    }

    pub(crate) fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    pub(crate) fn count_authorization_request(&self) {
        self.authorization_requests.fetch_add(1, Ordering::SeqCst);
    }

    /// Keep a new authorization code for ten minutes.
    pub(crate) fn new_code(
        &self,
        client_id: &str,
        redirect_uri: &str,
        code_challenge: &str,
        scope: Option<String>,
    ) -> String {
        let code = format!("code-{}-{}", self.next_serial(), random_hex());
        lock(&self.codes).insert(
            code.clone(),
            CodeRecord {
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                code_challenge: code_challenge.to_owned(),
                scope,
                expires: self.clock.now() + Duration::from_secs(600),
            },
        );
        code
    }

    #[allow(clippy::result_large_err)] // as `authenticate`: the error is the answer to send
    pub(crate) fn authenticate_client(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(Client, Form), Response> {
        let form = parse_form(body);
        authenticate(self, headers, &form).map(|(c, _)| (c, form))
    }

    /// RFC 7009 section 2.1: revoke a refresh token (and its family) or an opaque access token
    /// of this client. Returns whether something was revoked.
    pub(crate) fn revoke(&self, client_id: &str, token: &str) -> bool {
        let family = lock(&self.refresh_tokens)
            .get(token)
            .filter(|r| r.client_id == client_id)
            .map(|r| r.family);
        let revoked = match family {
            Some(f) => {
                lock(&self.revoked_families).insert(f);
                true
            }
            None => lock(&self.opaque).remove(token).is_some(),
        };
        if revoked {
            self.revocations.fetch_add(1, Ordering::SeqCst);
        }
        revoked
    }
}
