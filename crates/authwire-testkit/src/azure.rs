//! An emulator of Azure's credential endpoints on one loopback port, written from Microsoft's
//! published documentation: IMDS (`/metadata/identity/oauth2/token`, `Metadata: true`), App
//! Service's identity endpoint (`/msi/token`, `X-IDENTITY-HEADER`, api-version 2019-08-01) and
//! Entra ID's v2.0 token endpoint (`/{tenant}/oauth2/v2.0/token`: client credentials with a
//! secret, a federated assertion or a certificate assertion with `x5t`).

use crate::CLIENT_PUBLIC_KEY_PEM;
use authwire::{Clock, SystemClock};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The tenant the emulator serves.
pub const AZURE_TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The app registration's client id.
pub const AZURE_CLIENT_ID: &str = "5a3a0b7c-1f2e-4d3c-9b8a-7f6e5d4c3b2a";
/// The app registration's secret.
pub const AZURE_CLIENT_SECRET: &str = "Azu~re.S3cret-for_tests";
/// A user-assigned managed identity's client id.
pub const AZURE_USER_ASSIGNED_CLIENT_ID: &str = "0d5bd2a1-7f3e-4c6b-8a9d-1e2f3a4b5c6d";
/// The object (principal) id of the same user-assigned identity.
pub const AZURE_USER_ASSIGNED_OBJECT_ID: &str = "6a7b8c9d-0e1f-4a2b-9c3d-4e5f6a7b8c9d";
/// The Azure resource id of the same user-assigned identity.
pub const AZURE_USER_ASSIGNED_RESOURCE_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-1";
/// App Service's `IDENTITY_HEADER`.
pub const AZURE_IDENTITY_HEADER: &str = "e4b2a7c9-identity-header";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct AzureState {
    clock: Arc<dyn Clock>,
    base: String,
    ledger: crate::ledger::Ledger,
    federated_token: Mutex<Option<String>>,
    /// The trusted certificate's thumbprints: SHA-1 (`x5t`) and SHA-256 (`x5t#S256`).
    certificate_x5t: Mutex<Option<(String, String)>>,
    /// The `x5c` header of the last certificate assertion accepted.
    last_x5c: Mutex<Option<Vec<String>>>,
    seen_jti: Mutex<HashSet<String>>,
    imds_requests: AtomicUsize,
    app_service_requests: AtomicUsize,
    entra_requests: AtomicUsize,
    last_resource: Mutex<Option<String>>,
    last_form: Mutex<HashMap<String, String>>,
}

/// Azure's credential endpoints on `127.0.0.1:PORT`. Stops when dropped.
pub struct AzureEmulator {
    state: Arc<AzureState>,
    task: tokio::task::JoinHandle<()>,
    ca_pem: Option<Vec<u8>>,
}

impl Drop for AzureEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AzureEmulator {
    /// Start on the system clock.
    pub async fn start() -> Self {
        Self::start_with_clock(SystemClock).await
    }

    /// Start, reading time from `clock`.
    pub async fn start_with_clock(clock: impl Clock) -> Self {
        Self::serve(Arc::new(clock), None).await
    }

    /// Start over HTTPS with a throwaway CA ([`ca_pem`](Self::ca_pem)): Microsoft's MSAL (under
    /// azure-identity) talks to an authority only over https.
    pub async fn start_tls() -> Self {
        let (tls, ca) = crate::tls::throwaway();
        let mut emulator = Self::serve(Arc::new(SystemClock), Some(tls)).await;
        emulator.ca_pem = Some(ca);
        emulator
    }

    /// The CA of a [`start_tls`](Self::start_tls) emulator (PEM).
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    async fn serve(clock: Arc<dyn Clock>, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Arc::new(AzureState {
            ledger: crate::ledger::Ledger::new(
                clock.clone(),
                "eyJ0eXAi.azure-emulator-",
                Duration::from_secs(86_399),
            ),
            clock,
            base: format!("{scheme}://{addr}"),
            federated_token: Mutex::default(),
            certificate_x5t: Mutex::default(),
            last_x5c: Mutex::default(),
            seen_jti: Mutex::default(),
            imds_requests: AtomicUsize::new(0),
            app_service_requests: AtomicUsize::new(0),
            entra_requests: AtomicUsize::new(0),
            last_resource: Mutex::default(),
            last_form: Mutex::default(),
        });
        let router = Router::new().fallback(route).with_state(state.clone());
        let task = crate::tls::spawn(listener, router, tls);
        Self {
            state,
            task,
            ca_pem: None,
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` for [`start_tls`](Self::start_tls)): IMDS's base (`AZURE_POD_IDENTITY_AUTHORITY_HOST`) and the
    /// authority host (`AZURE_AUTHORITY_HOST`).
    pub fn url(&self) -> String {
        self.state.base.clone()
    }

    /// App Service's `IDENTITY_ENDPOINT`.
    pub fn identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.state.base)
    }

    /// The tenant's token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/{AZURE_TENANT_ID}/oauth2/v2.0/token", self.state.base)
    }

    /// The federated token (the projected service-account token) that the app trusts now.
    pub fn set_federated_token(&self, token: &str) {
        *lock(&self.state.federated_token) = Some(token.to_owned());
    }

    /// Trust certificate assertions for this certificate (PEM; its key is
    /// [`crate::CLIENT_PRIVATE_KEY_PEM`]): RS256 with its SHA-1 `x5t`, or PS256 with its SHA-256
    /// `x5t#S256`, as Entra ID accepts them.
    pub fn trust_certificate(&self, pem: &str) {
        use base64::Engine as _;
        use sha2::Digest as _;
        let body: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("a PEM certificate");
        let b64 = |d: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d);
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
        *lock(&self.state.certificate_x5t) = Some((b64(sha1.as_ref()), b64(&sha2::Sha256::digest(&der))));
    }

    /// The `x5c` header (standard base64 DER certificates, leaf first) of the last certificate
    /// assertion accepted, if it had one.
    pub fn last_x5c(&self) -> Option<Vec<String>> {
        lock(&self.state.last_x5c).clone()
    }

    /// How long tokens issued from now on live.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state.ledger.set_lifetime(lifetime);
    }

    /// Whether `token` is a live token issued here; `Some(principal)` if so.
    pub fn check_token(&self, token: &str) -> Option<String> {
        self.state.ledger.check(token)
    }

    /// IMDS requests (any).
    pub fn imds_requests(&self) -> usize {
        self.state.imds_requests.load(Ordering::SeqCst)
    }

    /// App Service identity endpoint requests.
    pub fn app_service_requests(&self) -> usize {
        self.state.app_service_requests.load(Ordering::SeqCst)
    }

    /// Entra token endpoint requests.
    pub fn entra_requests(&self) -> usize {
        self.state.entra_requests.load(Ordering::SeqCst)
    }

    /// The `resource` of the last managed identity request.
    pub fn last_resource(&self) -> Option<String> {
        lock(&self.state.last_resource).clone()
    }

    /// The last token endpoint form, secrets replaced by `<present>`.
    pub fn last_form(&self) -> HashMap<String, String> {
        lock(&self.state.last_form).clone()
    }
}

impl AzureState {
    fn issue(&self, who: &str) -> (String, Duration, SystemTime) {
        let issued = self.ledger.issue(who);
        (issued.token, issued.lifetime, issued.expires)
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn route(
    State(s): State<Arc<AzureState>>,
    uri: Uri,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let q: HashMap<String, String> = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    match uri.path() {
        "/metadata/identity/oauth2/token" => imds(&s, &q, &headers),
        path if path == format!("/{AZURE_TENANT_ID}/v2.0/.well-known/openid-configuration") => {
            openid_configuration(&s)
        }
        "/msi/token" => app_service(&s, &q, &headers),
        path if path == format!("/{AZURE_TENANT_ID}/oauth2/v2.0/token") => entra(&s, &body),
        path if path.ends_with("/oauth2/v2.0/token") => error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS90002: Tenant not found. Check to make sure you have the correct tenant ID.",
        ),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[allow(clippy::result_large_err)] // a test server: the error is the finished answer
/// Entra ID's OpenID Connect discovery document for the tenant (what MSAL reads first).
fn openid_configuration(s: &AzureState) -> Response {
    let tenant = format!("{}/{AZURE_TENANT_ID}", s.base);
    axum::Json(json!({
        "token_endpoint": format!("{tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{}/{AZURE_TENANT_ID}/discovery/v2.0/keys", s.base),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{tenant}/v2.0"),
        "authorization_endpoint": format!("{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{tenant}/oauth2/v2.0/devicecode"),
        "end_session_endpoint": format!("{tenant}/oauth2/v2.0/logout"),
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com"
    }))
    .into_response()
}

#[allow(clippy::result_large_err)] // a test server: the error is the finished answer
fn managed_identity_token(
    s: &AzureState,
    q: &HashMap<String, String>,
    resource_id_param: &str,
) -> Result<(String, Duration, SystemTime, String), Response> {
    let Some(resource) = q.get("resource").filter(|r| !r.is_empty()) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required audience parameter not specified",
        ));
    };
    // A user-assigned identity by exactly one of its client id, object id or resource id
    // (IMDS calls the last `msi_res_id`, App Service `mi_res_id`).
    let given: Vec<(&str, &str)> = [
        ("client_id", AZURE_USER_ASSIGNED_CLIENT_ID),
        ("object_id", AZURE_USER_ASSIGNED_OBJECT_ID),
        (resource_id_param, AZURE_USER_ASSIGNED_RESOURCE_ID),
    ]
    .into_iter()
    .filter_map(|(name, known)| q.get(name).map(|v| (v.as_str(), known)))
    .collect();
    let identity = match given.as_slice() {
        [] => "system-assigned".to_owned(),
        [(value, known)] if value == known => AZURE_USER_ASSIGNED_CLIENT_ID.to_owned(),
        [_] => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Identity not found",
            ));
        }
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Only one of client_id, object_id and the resource id may be given",
            ));
        }
    };
    *lock(&s.last_resource) = Some(resource.clone());
    let (token, lifetime, exp) = s.issue(&identity);
    Ok((token, lifetime, exp, resource.clone()))
}

fn imds(s: &AzureState, q: &HashMap<String, String>, headers: &HeaderMap) -> Response {
    s.imds_requests.fetch_add(1, Ordering::SeqCst);
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request_102",
            "Required metadata header not specified",
        );
    }
    if headers.contains_key("x-forwarded-for") {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request_103",
            "Request denied: X-Forwarded-For",
        );
    }
    if q.get("api-version").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required parameter api-version not specified",
        );
    }
    match managed_identity_token(s, q, "msi_res_id") {
        Err(r) => r,
        Ok((token, lifetime, exp, resource)) => {
            let now = secs(s.clock.now());
            axum::Json(json!({
                "access_token": token,
                "client_id": q.get("client_id").map_or("00000000-0000-0000-0000-0000000000aa", String::as_str),
                "expires_in": lifetime.as_secs().to_string(),
                "expires_on": secs(exp).to_string(),
                "ext_expires_in": lifetime.as_secs().to_string(),
                "not_before": now.to_string(),
                "resource": resource,
                "token_type": "Bearer"
            }))
            .into_response()
        }
    }
}

fn app_service(s: &AzureState, q: &HashMap<String, String>, headers: &HeaderMap) -> Response {
    s.app_service_requests.fetch_add(1, Ordering::SeqCst);
    if headers.get("x-identity-header").and_then(|v| v.to_str().ok()) != Some(AZURE_IDENTITY_HEADER) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"statusCode": 400, "message": "No X-IDENTITY-HEADER header or invalid header value"}),
            ),
        )
            .into_response();
    }
    if q.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"statusCode": 400, "message": "api-version 2019-08-01 required"})),
        )
            .into_response();
    }
    match managed_identity_token(s, q, "mi_res_id") {
        Err(r) => r,
        Ok((token, _, exp, resource)) => axum::Json(json!({
            "access_token": token,
            "expires_on": secs(exp).to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": q.get("client_id").map_or("00000000-0000-0000-0000-0000000000aa", String::as_str)
        }))
        .into_response(),
    }
}

fn aadsts(status: StatusCode, error: &str, code: u32, text: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {text}\r\nTrace ID: 0000\r\nCorrelation ID: 0000\r\nTimestamp: 2026-11-29 00:00:00Z"),
            "error_codes": [code],
            "timestamp": "2026-11-29 00:00:00Z",
            "trace_id": "00000000-0000-0000-0000-000000000000",
            "correlation_id": "00000000-0000-0000-0000-000000000000"
        })),
    )
        .into_response()
}

fn entra(s: &AzureState, body: &[u8]) -> Response {
    s.entra_requests.fetch_add(1, Ordering::SeqCst);
    let f: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    *lock(&s.last_form) = f
        .iter()
        .map(|(k, v)| {
            let secret = ["client_secret", "client_assertion"].contains(&k.as_str());
            (k.clone(), if secret { "<present>".into() } else { v.clone() })
        })
        .collect();
    let get = |k: &str| f.get(k).map(String::as_str);
    if get("grant_type") != Some("client_credentials") {
        return aadsts(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if get("client_id") != Some(AZURE_CLIENT_ID) {
        return aadsts(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            "Application was not found in the directory.",
        );
    }
    if !get("scope").is_some_and(|s| s.ends_with("/.default")) {
        return aadsts(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
        );
    }
    let authenticated = match (
        get("client_secret"),
        get("client_assertion_type"),
        get("client_assertion"),
    ) {
        (Some(secret), _, _) => secret == AZURE_CLIENT_SECRET,
        (None, Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"), Some(assertion)) => {
            federated_or_certificate(s, assertion)
        }
        _ => false,
    };
    if !authenticated {
        return aadsts(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    let (token, lifetime, _) = s.issue(AZURE_CLIENT_ID);
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": token
    }))
    .into_response()
}

fn federated_or_certificate(s: &AzureState, assertion: &str) -> bool {
    if lock(&s.federated_token).as_deref() == Some(assertion) {
        return true;
    }
    let Some((x5t, x5t_s256)) = lock(&s.certificate_x5t).clone() else {
        return false;
    };
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return false;
    };
    // MSAL pads its base64url thumbprints with `=`; compare without padding.
    let same =
        |sent: Option<&String>, trusted: &str| sent.is_some_and(|t| t.trim_end_matches('=') == trusted);
    let algorithm = match header.alg {
        Algorithm::RS256 if same(header.x5t.as_ref(), &x5t) => Algorithm::RS256,
        Algorithm::PS256 if same(header.x5t_s256.as_ref(), &x5t_s256) => Algorithm::PS256,
        _ => return false,
    };
    let mut v = Validation::new(algorithm);
    v.set_audience(&[format!("{}/{AZURE_TENANT_ID}/oauth2/v2.0/token", s.base)]);
    v.set_issuer(&[AZURE_CLIENT_ID]);
    v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let key = DecodingKey::from_rsa_pem(CLIENT_PUBLIC_KEY_PEM.as_bytes()).expect("test key");
    let Ok(data) = jsonwebtoken::decode::<Value>(assertion, &key, &v) else {
        return false;
    };
    *lock(&s.last_x5c) = header.x5c.clone();
    data.claims["sub"] == AZURE_CLIENT_ID
        && data.claims["jti"]
            .as_str()
            .is_some_and(|j| lock(&s.seen_jti).insert(j.to_owned()))
}
