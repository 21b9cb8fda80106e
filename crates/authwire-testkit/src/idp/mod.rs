//! The loopback identity provider: one module per endpoint family (`discovery`, `token`,
//! `device`, `authorize`, `revoke`), the shared state in `state`, what a test configures in
//! `config`, the wire format in `wire`. Arrows run from this module to the endpoints and from
//! the endpoints to `state`, `config` and `wire`; no endpoint module imports another but
//! `token`, which uses `client_auth` and the PKCE check of `authorize`.

mod authorize;
mod client_auth;
mod config;
mod device;
mod discovery;
mod revoke;
mod state;
mod token;
mod wire;

pub use config::{Approval, Client, Fault, IdTokenTamper, Settings, TlsClientAuth};
pub(crate) use state::IdpState;

use crate::{CLIENT_PUBLIC_KEY_PEM, IDP_PRIVATE_KEY_PEM, IDP_PUBLIC_KEY_PEM};
use authwire::{Clock, SystemClock};
use axum::Router;
use axum::routing::{get, post};
use jsonwebtoken::{DecodingKey, EncodingKey};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Configure an [`IdentityServer`] before it starts.
pub struct IdentityServerBuilder {
    clock: Arc<dyn Clock>,
    settings: Settings,
    clients: Vec<Client>,
    bind: Option<SocketAddr>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The CA whose client certificates `tls_client_auth` accepts, with [`mtls`](Self::mtls).
    client_ca: Option<Vec<u8>>,
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

    /// Serve on `addr` instead of a port the OS picks (`cargo xtask idp`'s fixed ports). Only
    /// loopback addresses: this server hands out tokens to anyone who asks.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        assert!(
            addr.ip().is_loopback(),
            "the test identity provider serves loopback only"
        );
        self.bind = Some(addr);
        self
    }

    /// Serve https with `ca`'s certificate for `127.0.0.1` (the issuer is then
    /// `https://127.0.0.1:PORT`); with `require_client_certificate`, only to clients that
    /// present a certificate `ca` signed (mutual TLS).
    pub fn tls(mut self, ca: &crate::TestCa, require_client_certificate: bool) -> Self {
        self.tls = Some(ca.acceptor(require_client_certificate));
        self
    }

    /// Serve https with `ca`'s certificate, asking every client for a certificate without
    /// requiring one, and publish `mtls_endpoint_aliases` (RFC 8705 section 5): at
    /// `/mtls/token` and `/mtls/par` a client's certificate authenticates it
    /// ([`Client::tls_client_auth`], [`Client::self_signed_tls_client_auth`]) and the tokens
    /// issued there are bound to it (`cnf.x5t#S256`).
    pub fn mtls(mut self, ca: &crate::TestCa) -> Self {
        self.tls = Some(ca.acceptor_any_client_certificate());
        self.client_ca = Some(ca.ca_pem().to_vec());
        self
    }

    /// Bind (`127.0.0.1:0` unless [`bind`](Self::bind) said otherwise) and serve.
    pub async fn start(self) -> IdentityServer {
        self.try_start().await.expect("bind a loopback port")
    }

    /// [`start`](Self::start), with a port that cannot be bound (in use) as an error.
    pub async fn try_start(self) -> std::io::Result<IdentityServer> {
        let at = self.bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = tokio::net::TcpListener::bind(at).await?;
        let addr = listener.local_addr()?;
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
            issuer: format!("{}://{addr}", if self.tls.is_some() { "https" } else { "http" }),
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
            client_assertion_audiences: Mutex::default(),
            contexts: Mutex::default(),
            pushed: Mutex::default(),
            par_requests: AtomicUsize::new(0),
            client_ca: self.client_ca,
            cert_bound: Mutex::default(),
            last_authorization: Mutex::default(),
            signing_key: EncodingKey::from_rsa_pem(IDP_PRIVATE_KEY_PEM.as_bytes()).expect("test key"),
            verifying_key: DecodingKey::from_rsa_pem(IDP_PUBLIC_KEY_PEM.as_bytes()).expect("test key"),
        });
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(discovery::openid_discovery),
            )
            .route(
                "/.well-known/oauth-authorization-server",
                get(discovery::discovery),
            )
            .route("/jwks", get(discovery::jwks))
            .route("/token", post(token::token::<false>))
            .route("/device_authorization", post(device::device_authorization))
            .route("/authorize", get(authorize::authorize))
            .route("/par", post(authorize::par::<false>))
            .route("/mtls/par", post(authorize::par::<true>))
            .route("/mtls/token", post(token::token::<true>))
            .route("/revoke", post(revoke::revoke))
            .with_state(state.clone());
        let task = crate::tls::spawn(listener, router, self.tls);
        Ok(IdentityServer { addr, state, task })
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
            bind: None,
            tls: None,
            client_ca: None,
        }
    }

    /// The issuer URL, `http://127.0.0.1:PORT` (`https://` when started with
    /// [`tls`](IdentityServerBuilder::tls)).
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
        change(&mut state::lock(&self.state.settings));
    }

    /// Answer the next token requests with `fault` (queued after earlier faults).
    pub fn inject(&self, fault: Fault) {
        state::lock(&self.state.faults).push_back(fault);
    }

    /// Drop every queued fault.
    pub fn clear_faults(&self) {
        state::lock(&self.state.faults).clear();
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
        state::lock(&self.state.errors).get(code).copied().unwrap_or(0)
    }

    /// Token requests by `grant_type`.
    pub fn grant_count(&self, grant_type: &str) -> usize {
        state::lock(&self.state.grants)
            .get(grant_type)
            .copied()
            .unwrap_or(0)
    }

    /// The client-authentication method of each token request, in order
    /// (`client_secret_basic`, `client_secret_post`, `private_key_jwt`, `none`).
    pub fn auth_methods(&self) -> Vec<String> {
        state::lock(&self.state.auth_methods).clone()
    }

    /// The form parameters of the last token request, without secrets
    /// (`client_secret`, `client_assertion`, `assertion`, `refresh_token`, `subject_token`,
    /// `device_code` are replaced by `<present>`).
    pub fn last_form(&self) -> HashMap<String, String> {
        state::lock(&self.state.last_form).clone()
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

    /// The `aud` claim of each verified `private_key_jwt` client assertion, as JSON text
    /// (`"https://..."`, or an array).
    pub fn client_assertion_audiences(&self) -> Vec<String> {
        state::lock(&self.state.client_assertion_audiences).clone()
    }

    /// Requests to the pushed authorization request endpoint (RFC 9126).
    pub fn par_requests(&self) -> usize {
        self.state.par_requests.load(Ordering::SeqCst)
    }

    /// The parameters of the last authorization request, as the server used them (a pushed
    /// request's, when the browser brought a `request_uri`).
    pub fn last_authorization(&self) -> HashMap<String, String> {
        state::lock(&self.state.last_authorization).clone()
    }

    /// The `acr` and claims an access token issued here carries, if it is one.
    pub fn token_context(&self, access_token: &str) -> Option<(Option<String>, Option<String>)> {
        self.state.context_of(access_token).map(|c| (c.acr, c.claims))
    }

    /// Revocation requests that authenticated and revoked something (RFC 7009).
    pub fn revocations(&self) -> usize {
        self.state.revocations.load(Ordering::SeqCst)
    }

    /// The `assertion` of the last JWT bearer grant request, as sent (a test server: tests read
    /// its claims).
    pub fn last_assertion(&self) -> Option<String> {
        state::lock(&self.state.last_assertion).clone()
    }

    /// Approve the device authorization with this user code. Returns whether it existed.
    pub fn approve_device(&self, user_code: &str) -> bool {
        let mut devices = state::lock(&self.state.devices);
        let found = devices.values_mut().find(|d| d.user_code == user_code);
        found.map(|d| d.approved = true).is_some()
    }

    /// Deny the device authorization with this user code.
    pub fn deny_device(&self, user_code: &str) -> bool {
        let mut devices = state::lock(&self.state.devices);
        let found = devices.values_mut().find(|d| d.user_code == user_code);
        found.map(|d| d.denied = true).is_some()
    }

    /// Revoke every refresh token issued so far.
    pub fn revoke_all_refresh_tokens(&self) {
        let families: Vec<u64> = state::lock(&self.state.refresh_tokens)
            .values()
            .map(|r| r.family)
            .collect();
        state::lock(&self.state.revoked_families).extend(families);
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

    /// A client assertion for the [`Client::PRIVATE_KEY_JWT_ID`] client, signed with its key
    /// (what a federated identity's token would be: a file a platform mounts, a CI job's OIDC
    /// token), with `jti` and five minutes of life.
    pub fn federated_assertion(&self, jti: &str) -> String {
        let now = self
            .state
            .clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = serde_json::json!({
            "iss": Client::PRIVATE_KEY_JWT_ID, "sub": Client::PRIVATE_KEY_JWT_ID,
            "aud": self.token_url(), "iat": now, "exp": now + 300, "jti": jti,
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(crate::CLIENT_PRIVATE_KEY_PEM.as_bytes()).expect("the test key"),
        )
        .expect("sign the assertion")
    }
}
