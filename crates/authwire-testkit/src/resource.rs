//! The protected resource: an API that accepts only valid bearer tokens from the identity server.

use crate::IdentityServer;
use crate::idp::IdpState;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

struct ResourceState {
    idp: Arc<IdpState>,
    requests: AtomicUsize,
    unauthorized: AtomicUsize,
    forced_401s: AtomicUsize,
    bare_401s: AtomicUsize,
    always_401: std::sync::atomic::AtomicBool,
    authorization_seen: Mutex<std::collections::VecDeque<Option<String>>>,
    bodies_seen: Mutex<std::collections::VecDeque<Vec<u8>>>,
    /// `http://127.0.0.1:PORT`, for the `htu` of DPoP proofs.
    origin: String,
    dpop_seen: Mutex<std::collections::HashSet<String>>,
    dpop_verified: AtomicUsize,
    dpop_seen_proofs: Mutex<std::collections::VecDeque<String>>,
    /// The nonce DPoP proofs must carry, when set.
    dpop_nonce: Mutex<Option<String>>,
    dpop_nonce_challenges: AtomicUsize,
    /// Accept `Authorization: Basic base64(user:token)` (the token as the password, as git and
    /// registry hosts do) and advertise `Basic` in challenges.
    accept_basic: std::sync::atomic::AtomicBool,
    /// Serve the files under this folder for authorized requests (a protected static site: a
    /// git repository over dumb HTTP, say) instead of the JSON answer.
    files: Mutex<Option<std::path::PathBuf>>,
    /// Step-up requirements (issue 28): what a token must carry, else a challenge.
    demands: Mutex<Demands>,
    challenges: AtomicUsize,
}

/// What [`ResourceServer`] demands of a token beyond being valid.
#[derive(Clone, Debug, Default)]
struct Demands {
    acr: Option<String>,
    claims: Option<String>,
    scope: Option<String>,
}

/// How many requests' headers and bodies are remembered (the oldest are forgotten first), so a
/// long soak does not grow without bound.
const REMEMBERED: usize = 10_000;

fn remember<T>(list: &Mutex<std::collections::VecDeque<T>>, item: T) {
    let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
    if list.len() == REMEMBERED {
        list.pop_front();
    }
    list.push_back(item);
}

/// A protected API on its own loopback port. Every path answers `200` with a small JSON body
/// (`{"ok": true, "sub": ..., "path": ..., "method": ...}`) for a valid bearer token from the
/// identity server, and `401` with `WWW-Authenticate: Bearer error="invalid_token"` otherwise.
/// A DPoP-bound token (RFC 9449) is accepted only as `Authorization: DPoP <token>` with a valid,
/// fresh `DPoP` proof of the key it is bound to, for this request's method and URI.
/// `/see-other/<path>` and `/redirect-to/<port>/<path>` redirect (303, and 307 to another
/// loopback port). Stops when dropped.
pub struct ResourceServer {
    state: Arc<ResourceState>,
    task: tokio::task::JoinHandle<()>,
    ca_pem: Option<Vec<u8>>,
}

impl Drop for ResourceServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ResourceServer {
    /// Serve on `127.0.0.1:0`, trusting tokens of `idp`.
    pub async fn start(idp: &IdentityServer) -> Self {
        Self::serve(idp, None, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind a loopback port")
    }

    /// Serve on `addr` (a loopback address), trusting tokens of `idp`; an address in use is an
    /// error.
    pub async fn try_start_on(idp: &IdentityServer, addr: SocketAddr) -> std::io::Result<Self> {
        assert!(addr.ip().is_loopback(), "the test API serves loopback only");
        Self::serve(idp, None, addr).await
    }

    /// The same over HTTPS, with a server certificate for `127.0.0.1` from a throwaway CA
    /// ([`ca_pem`](Self::ca_pem)), made with the `openssl` tool. For clients that send tokens
    /// only over TLS (kubectl's exec credentials, say).
    pub async fn start_tls(idp: &IdentityServer) -> Self {
        let (tls, ca) = crate::tls::throwaway();
        let mut server = Self::serve(idp, Some(tls), SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind a loopback port");
        server.ca_pem = Some(ca);
        server
    }

    /// The CA that signed the certificate of a [`start_tls`](Self::start_tls) server (PEM).
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    async fn serve(
        idp: &IdentityServer,
        tls: Option<tokio_rustls::TlsAcceptor>,
        at: SocketAddr,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(at).await?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Arc::new(ResourceState {
            idp: idp.state.clone(),
            requests: AtomicUsize::new(0),
            unauthorized: AtomicUsize::new(0),
            forced_401s: AtomicUsize::new(0),
            bare_401s: AtomicUsize::new(0),
            always_401: Default::default(),
            authorization_seen: Mutex::default(),
            bodies_seen: Mutex::default(),
            origin: format!("{scheme}://{addr}"),
            dpop_seen: Mutex::default(),
            dpop_verified: AtomicUsize::new(0),
            dpop_seen_proofs: Mutex::default(),
            dpop_nonce: Mutex::default(),
            dpop_nonce_challenges: AtomicUsize::new(0),
            accept_basic: Default::default(),
            files: Mutex::default(),
            demands: Mutex::default(),
            challenges: AtomicUsize::new(0),
        });
        let router = Router::new().fallback(handle).with_state(state.clone());
        let task = crate::tls::spawn(listener, router, tls);
        Ok(Self {
            state,
            task,
            ca_pem: None,
        })
    }

    /// Serve https with `ca`'s certificate, asking clients for a certificate (any; not
    /// required): a certificate-bound token (`cnf.x5t#S256`, RFC 8705 section 3) is accepted
    /// only over a connection that presents that certificate.
    pub async fn start_mtls(idp: &IdentityServer, ca: &crate::TestCa) -> Self {
        let mut server = Self::serve(
            idp,
            Some(ca.acceptor_any_client_certificate()),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("bind a loopback port");
        server.ca_pem = Some(ca.ca_pem().to_vec());
        server
    }

    /// Demand tokens whose login reached `acr` (the first of the authorization request's
    /// `acr_values`); others get `401` with `Bearer error="insufficient_user_authentication",
    /// acr_values="<acr>"` (RFC 9470). `None` stops demanding.
    pub fn require_acr(&self, acr: Option<&str>) {
        lock(&self.state.demands).acr = acr.map(str::to_owned);
    }

    /// Demand tokens asked for with these claims (a JSON claims request; each member of its
    /// `access_token` object must have been asked for): others get Entra's claims challenge,
    /// `401` with `Bearer error="insufficient_claims", claims="<base64 of the JSON>"`.
    pub fn require_claims(&self, claims_json: Option<&str>) {
        lock(&self.state.demands).claims = claims_json.map(str::to_owned);
    }

    /// Answer every authorized request `403` with `Bearer error="insufficient_scope",
    /// scope="<scope>"` (RFC 6750 section 3.1). `None` stops.
    pub fn require_scope(&self, scope: Option<&str>) {
        lock(&self.state.demands).scope = scope.map(str::to_owned);
    }

    /// How many step-up challenges were sent.
    pub fn challenges(&self) -> usize {
        self.state.challenges.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:PORT` (`https://` for [`start_tls`](Self::start_tls)).
    pub fn url(&self) -> String {
        self.state.origin.clone()
    }

    /// Requests received.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests answered 401.
    pub fn unauthorized(&self) -> usize {
        self.state.unauthorized.load(Ordering::SeqCst)
    }

    /// Answer the next `n` requests 401 whatever their token (as after a revocation).
    pub fn reject_next(&self, n: usize) {
        self.state.forced_401s.fetch_add(n, Ordering::SeqCst);
    }

    /// Answer the next `n` requests 401 with a bare `Bearer realm="testkit"` challenge, which
    /// does not say whether the token is to blame.
    pub fn reject_next_without_reason(&self, n: usize) {
        self.state.bare_401s.fetch_add(n, Ordering::SeqCst);
    }

    /// Answer every request 401 (`true`) or check tokens again (`false`).
    pub fn always_reject(&self, on: bool) {
        self.state.always_401.store(on, Ordering::SeqCst);
    }

    /// The `Authorization` header of the requests received, in order (the last 10,000).
    pub fn authorization_seen(&self) -> Vec<Option<String>> {
        let seen = self
            .state
            .authorization_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        seen.iter().cloned().collect()
    }

    /// Require this nonce in DPoP proofs (RFC 9449 section 9), replacing any earlier one: a
    /// proof without it is answered `401` with `WWW-Authenticate: DPoP error="use_dpop_nonce"`
    /// and `DPoP-Nonce`.
    pub fn require_dpop_nonce(&self, nonce: &str) {
        *self.state.dpop_nonce.lock().unwrap_or_else(|e| e.into_inner()) = Some(nonce.to_owned());
    }

    /// How many `use_dpop_nonce` challenges were sent.
    pub fn dpop_nonce_challenges(&self) -> usize {
        self.state.dpop_nonce_challenges.load(Ordering::SeqCst)
    }

    /// DPoP proofs that verified (signature, `htm`, `htu`, `ath`, fresh `jti`, bound key).
    pub fn dpop_proofs_verified(&self) -> usize {
        self.state.dpop_verified.load(Ordering::SeqCst)
    }

    /// The `DPoP` headers received, in order (to replay one in a test).
    pub fn dpop_proofs_seen(&self) -> Vec<String> {
        let seen = self
            .state
            .dpop_seen_proofs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        seen.iter().cloned().collect()
    }

    /// Accept `Authorization: Basic` with the token as the password (the username is ignored),
    /// and advertise `Basic realm="testkit"` (only) when no credentials came, as git hosts do.
    pub fn accept_basic(&self, on: bool) {
        self.state.accept_basic.store(on, Ordering::SeqCst);
    }

    /// Answer authorized requests with the files under `dir` (404 for what is not there),
    /// instead of the JSON body.
    pub fn serve_files(&self, dir: impl Into<std::path::PathBuf>) {
        *self.state.files.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir.into());
    }

    /// The body of the requests received, in order (the last 10,000).
    pub fn bodies_seen(&self) -> Vec<Vec<u8>> {
        let seen = self.state.bodies_seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().cloned().collect()
    }
}

/// The marker of a proof that lacks the nonce the server requires.
const USE_DPOP_NONCE: &str = "use_dpop_nonce";

fn unauthorized(state: &ResourceState, description: &str) -> Response {
    state.unauthorized.fetch_add(1, Ordering::SeqCst);
    let challenge =
        format!("Bearer realm=\"testkit\", error=\"invalid_token\", error_description=\"{description}\"");
    let mut r = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "invalid_token"})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The challenge for a valid token that does not meet the server's demands, if any.
fn step_up_challenge(state: &ResourceState, token: &str) -> Option<Response> {
    let demands = lock(&state.demands).clone();
    let context = state.idp.context_of(token).unwrap_or_default();
    let (status, challenge) = if let Some(acr) = demands.acr.filter(|a| context.acr.as_ref() != Some(a)) {
        (
            StatusCode::UNAUTHORIZED,
            format!(
                r#"Bearer realm="testkit", error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="{acr}""#
            ),
        )
    } else if let Some(claims) = demands
        .claims
        .filter(|c| !claims_met(c, context.claims.as_deref()))
    {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(claims);
        (
            StatusCode::UNAUTHORIZED,
            format!(
                r#"Bearer realm="", authorization_uri="{}/authorize", error="insufficient_claims", claims="{encoded}""#,
                state.idp.issuer()
            ),
        )
    } else if let Some(scope) = demands.scope {
        (
            StatusCode::FORBIDDEN,
            format!(r#"Bearer realm="testkit", error="insufficient_scope", scope="{scope}""#),
        )
    } else {
        return None;
    };
    let mut r = (status, axum::Json(json!({"error": "step_up"}))).into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    Some(r)
}

/// Whether a token asked for with `asked` claims meets the `required` claims request: every
/// member of the required `access_token` object was asked for.
fn claims_met(required: &str, asked: Option<&str>) -> bool {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    let (Some(required), Some(asked)) = (parse(required), asked.and_then(parse)) else {
        return false;
    };
    let empty = serde_json::Map::new();
    let asked = asked["access_token"].as_object().unwrap_or(&empty);
    required["access_token"]
        .as_object()
        .unwrap_or(&empty)
        .iter()
        .all(|(k, v)| asked.get(k) == Some(v))
}

fn redirect(status: StatusCode, location: String) -> Response {
    let mut r = status.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn handle(State(state): State<Arc<ResourceState>>, request: Request) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    remember(&state.authorization_seen, authorization.clone());
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    remember(&state.bodies_seen, body.to_vec());

    // `/see-other/<path>` answers `303 See Other` to `/<path>` (as a form post's handler
    // does), `/redirect-to/<port>/<path>` answers `307` to that port on loopback; neither
    // checks tokens: the redirect itself is what a test looks at.
    if let Some(rest) = parts.uri.path().strip_prefix("/see-other/") {
        return redirect(StatusCode::SEE_OTHER, format!("/{rest}"));
    }
    if let Some(rest) = parts.uri.path().strip_prefix("/redirect-to/") {
        let (port, path) = rest.split_once('/').unwrap_or((rest, ""));
        return redirect(
            StatusCode::TEMPORARY_REDIRECT,
            format!("http://127.0.0.1:{port}/{path}"),
        );
    }
    if state.always_401.load(Ordering::SeqCst) {
        return unauthorized(&state, "rejected by test");
    }
    let bare = state
        .bare_401s
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if bare {
        let mut r = unauthorized(&state, "");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"testkit\""),
        );
        return r;
    }
    let forced = state
        .forced_401s
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if forced {
        return unauthorized(&state, "token revoked");
    }
    let basic = state.accept_basic.load(Ordering::SeqCst);
    let from_basic = authorization
        .as_deref()
        .and_then(|a| a.split_once(' '))
        .filter(|(scheme, _)| basic && scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, encoded)| {
            use base64::Engine as _;
            let pair = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
            let pair = String::from_utf8(pair).ok()?;
            pair.split_once(':').map(|(_, token)| token.to_owned())
        });
    let (scheme, token) = match (
        &from_basic,
        authorization.as_deref().and_then(|a| a.split_once(' ')),
    ) {
        (Some(token), _) => ("Bearer", token.as_str()),
        (None, Some((scheme, token))) if scheme.eq_ignore_ascii_case("bearer") => ("Bearer", token),
        (None, Some((scheme, token))) if scheme.eq_ignore_ascii_case("dpop") => ("DPoP", token),
        _ => {
            let mut r = unauthorized(&state, "no bearer token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"testkit\""),
            );
            if basic {
                // As git hosts do: Basic only, the token as the password.
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"testkit\""),
                );
            }
            return r;
        }
    };
    // RFC 8705 section 3: a certificate-bound token only with its certificate.
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<crate::tls::PeerCertificate>>()
        .and_then(|c| c.0.0.as_deref())
        .map(crate::tls::x5t_s256);
    let checked = state.idp.check_access_token(token).and_then(|sub| {
        match state.idp.access_token_x5t(token) {
            Some(x5t) if peer.as_deref() != Some(x5t.as_str()) => {
                return Err("the token is bound to a client certificate this connection did not present");
            }
            _ => {}
        }
        let bound = state.idp.access_token_jkt(token);
        match (scheme, bound) {
            ("Bearer", None) => Ok(sub),
            ("Bearer", Some(_)) => Err("a DPoP-bound token was sent as a bearer token"),
            (_, None) => Err("a bearer token was sent with the DPoP scheme"),
            (_, Some(jkt)) => {
                let proof = parts.headers.get("dpop").and_then(|v| v.to_str().ok());
                let Some(proof) = proof else {
                    return Err("no DPoP proof");
                };
                remember(&state.dpop_seen_proofs, proof.to_owned());
                let htu = format!("{}{}", state.origin, parts.uri.path());
                let nonce = state.dpop_nonce.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let expect = crate::dpop::Expect {
                    method: parts.method.as_str(),
                    htu: &htu,
                    access_token: Some(token),
                    nonce: nonce.as_deref(),
                    now_secs: state.idp.now_secs(),
                };
                match crate::dpop::check(proof, &expect, &state.dpop_seen) {
                    Ok(proof_jkt) if proof_jkt == jkt => {
                        state.dpop_verified.fetch_add(1, Ordering::SeqCst);
                        Ok(sub)
                    }
                    Ok(_) => Err("the DPoP proof is signed by another key than the token is bound to"),
                    Err(crate::dpop::Refused::Invalid(why)) => Err(why),
                    Err(crate::dpop::Refused::UseNonce) => Err(USE_DPOP_NONCE),
                }
            }
        }
    });
    // A valid token that does not meet the server's demands gets their challenge.
    if checked.is_ok()
        && let Some(challenge) = step_up_challenge(&state, token)
    {
        state.challenges.fetch_add(1, Ordering::SeqCst);
        return challenge;
    }
    match checked {
        Err(USE_DPOP_NONCE) => {
            state.dpop_nonce_challenges.fetch_add(1, Ordering::SeqCst);
            let mut r = (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "use_dpop_nonce"})),
            )
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "DPoP error=\"use_dpop_nonce\", error_description=\"Resource server requires nonce in DPoP proof\"",
                ),
            );
            let nonce = state.dpop_nonce.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(v) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
                r.headers_mut().insert("dpop-nonce", v);
            }
            r
        }
        Ok(_) if state.files.lock().unwrap_or_else(|e| e.into_inner()).is_some() => {
            let dir = state.files.lock().unwrap_or_else(|e| e.into_inner()).clone();
            serve_file(dir.as_deref(), parts.uri.path())
        }
        Ok(sub) => axum::Json(json!({
            "ok": true,
            "sub": sub,
            "path": parts.uri.path(),
            "method": parts.method.as_str(),
        }))
        .into_response(),
        Err(why) => unauthorized(&state, why),
    }
}

/// A file under `dir` for a request path; nothing outside it.
fn serve_file(dir: Option<&std::path::Path>, path: &str) -> Response {
    let Some(dir) = dir else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let relative = path.trim_start_matches('/');
    if relative
        .split('/')
        .any(|p| p == ".." || p.is_empty() && !relative.is_empty())
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    match std::fs::read(dir.join(relative)) {
        Ok(bytes) => {
            // A JSON document that names its media type (an OCI or Docker manifest) is served
            // as that type, as registries do.
            let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned));
            let mut r = (StatusCode::OK, bytes).into_response();
            if let Some(v) = media_type.and_then(|m| HeaderValue::from_str(&m).ok()) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
