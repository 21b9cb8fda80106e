//! An emulator of Google's credential endpoints on one loopback port, written from Google's
//! published documentation: the metadata server (`/computeMetadata/v1/...`, `Metadata-Flavor:
//! Google` required both ways), the OAuth 2.0 token endpoint (`/token`: the JWT bearer grant of
//! service accounts, the refresh grant of authorized users), the STS token exchange
//! (`/v1/token`) and IAM Credentials `generateAccessToken`.

use crate::{CLIENT_PUBLIC_KEY_PEM, IDP_PRIVATE_KEY_PEM};
use authwire::{Clock, SystemClock};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The service account the emulator knows; its key is [`crate::CLIENT_PRIVATE_KEY_PEM`].
pub const GCP_SERVICE_ACCOUNT: &str = "svc@authwire-test.iam.gserviceaccount.com";
/// The `private_key_id` of that key.
pub const GCP_KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";
/// The OAuth client of `authorized_user` files.
pub const GCP_USER_CLIENT_ID: &str =
    "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com";
/// Its secret.
pub const GCP_USER_CLIENT_SECRET: &str = "d-FL95Q19q7MQmFpd7hHD0Ty";
/// The refresh token of the emulator's user.
pub const GCP_USER_REFRESH_TOKEN: &str = "1//0gtest-refresh-token";
/// The workload identity pool provider audience the STS accepts.
pub const GCP_WIF_AUDIENCE: &str =
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/kube";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct GcpState {
    clock: Arc<dyn Clock>,
    base: String,
    /// Issued access tokens: expiry, and who they are for.
    ledger: crate::ledger::Ledger,
    /// Tokens from the STS (federated), usable only for generateAccessToken.
    federated: Mutex<HashSet<String>>,
    metadata_requests: AtomicUsize,
    token_requests: AtomicUsize,
    sts_requests: AtomicUsize,
    impersonations: AtomicUsize,
    subject_tokens: Mutex<Vec<String>>,
    /// What `/subject-token` serves (a URL-sourced subject token, as an Azure VM's IMDS would).
    url_subject_token: Mutex<Option<String>>,
    last_scopes: Mutex<Option<String>>,
    /// The `delegates` of the last generateAccessToken request.
    last_delegates: Mutex<Vec<String>>,
    signing_key: EncodingKey,
    /// The EC2 metadata service of AWS federation.
    imds: crate::gcp_aws::Imds,
    /// AWS subject tokens the STS accepted.
    aws_subjects: AtomicUsize,
}

/// Google's credential endpoints on `127.0.0.1:PORT`. Stops when dropped.
pub struct GcpEmulator {
    state: Arc<GcpState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GcpEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GcpEmulator {
    /// Start on the system clock.
    pub async fn start() -> Self {
        Self::start_with_clock(SystemClock).await
    }

    /// Start, reading time from `clock`.
    pub async fn start_with_clock(clock: impl Clock) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(GcpState {
            ledger: crate::ledger::Ledger::new(clock.clone(), "ya29.emulator-", Duration::from_secs(3599)),
            clock,
            base: format!("http://{addr}"),
            federated: Mutex::default(),
            metadata_requests: AtomicUsize::new(0),
            token_requests: AtomicUsize::new(0),
            sts_requests: AtomicUsize::new(0),
            impersonations: AtomicUsize::new(0),
            subject_tokens: Mutex::default(),
            url_subject_token: Mutex::default(),
            last_scopes: Mutex::default(),
            last_delegates: Mutex::default(),
            signing_key: EncodingKey::from_rsa_pem(IDP_PRIVATE_KEY_PEM.as_bytes()).expect("test key"),
            imds: crate::gcp_aws::Imds::default(),
            aws_subjects: AtomicUsize::new(0),
        });
        let router = Router::new().fallback(route).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { state, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.state.base.clone()
    }

    /// `127.0.0.1:PORT`, what `GCE_METADATA_HOST` holds.
    pub fn host(&self) -> String {
        self.state.base.trim_start_matches("http://").to_owned()
    }

    /// The OAuth 2.0 token endpoint (a key file's `token_uri`).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.state.base)
    }

    /// The STS endpoint (an external account's `token_url`).
    pub fn sts_url(&self) -> String {
        format!("{}/v1/token", self.state.base)
    }

    /// `generateAccessToken` for `service_account`.
    pub fn impersonation_url(&self, service_account: &str) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken",
            self.state.base
        )
    }

    /// A service account key file for [`GCP_SERVICE_ACCOUNT`], with `token_uri` here.
    pub fn service_account_key_json(&self) -> String {
        json!({
            "type": "service_account",
            "project_id": "authwire-test",
            "private_key_id": GCP_KEY_ID,
            "private_key": crate::CLIENT_PRIVATE_KEY_PEM,
            "client_email": GCP_SERVICE_ACCOUNT,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_url(),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/svc",
            "universe_domain": "googleapis.com"
        })
        .to_string()
    }

    /// An `authorized_user` file for the emulator's user (with `token_uri` here, as recent
    /// gcloud versions write it).
    pub fn authorized_user_json(&self) -> String {
        json!({
            "type": "authorized_user",
            "client_id": GCP_USER_CLIENT_ID,
            "client_secret": GCP_USER_CLIENT_SECRET,
            "refresh_token": GCP_USER_REFRESH_TOKEN,
            "token_uri": self.token_url(),
            "quota_project_id": "authwire-test"
        })
        .to_string()
    }

    /// An `external_account` file reading its subject token from `subject_file`, impersonating
    /// `impersonate` when given.
    pub fn external_account_json(&self, subject_file: &str, impersonate: Option<&str>) -> String {
        let mut doc = json!({
            "type": "external_account",
            "audience": GCP_WIF_AUDIENCE,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": self.sts_url(),
            "credential_source": {"file": subject_file, "format": {"type": "text"}},
            "universe_domain": "googleapis.com"
        });
        if let Some(sa) = impersonate {
            doc["service_account_impersonation_url"] = json!(self.impersonation_url(sa));
        }
        doc.to_string()
    }

    /// An `external_account` file for AWS federation (`environment_id` `aws1`): region,
    /// credentials and the IMDSv2 session token from this emulator's EC2 metadata service.
    pub fn aws_external_account_json(&self) -> String {
        let base = &self.state.base;
        json!({
            "type": "external_account",
            "audience": GCP_WIF_AUDIENCE,
            "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
            "token_url": self.sts_url(),
            "credential_source": {
                "environment_id": "aws1",
                "region_url": format!("{base}/latest/meta-data/placement/availability-zone"),
                "url": format!("{base}/latest/meta-data/iam/security-credentials"),
                "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
                "imdsv2_session_token_url": format!("{base}/latest/api/token")
            }
        })
        .to_string()
    }

    /// AWS subject tokens the STS accepted (each one a signature it verified).
    pub fn aws_subject_tokens(&self) -> usize {
        self.state.aws_subjects.load(Ordering::SeqCst)
    }

    /// EC2 metadata requests refused for lack of an IMDSv2 session token.
    pub fn imds_refused(&self) -> usize {
        self.state.imds.refused.load(Ordering::SeqCst)
    }

    /// Serve `token` at `/subject-token` (JSON `{"access_token": ...}`, only to requests with
    /// `Metadata: True`, as an Azure VM's IMDS serves the token a URL-sourced external account
    /// reads).
    pub fn set_url_subject_token(&self, token: &str) {
        *lock(&self.state.url_subject_token) = Some(token.to_owned());
    }

    /// An `external_account` file whose subject token comes from `/subject-token` here (JSON
    /// format, field `access_token`, header `Metadata: True`).
    pub fn external_account_url_json(&self) -> String {
        json!({
            "type": "external_account",
            "audience": GCP_WIF_AUDIENCE,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": self.sts_url(),
            "credential_source": {
                "url": format!("{}/subject-token", self.state.base),
                "headers": {"Metadata": "True"},
                "format": {"type": "json", "subject_token_field_name": "access_token"}
            }
        })
        .to_string()
    }

    /// How long tokens issued from now on live.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state.ledger.set_lifetime(lifetime);
    }

    /// Whether `token` is a live access token issued here; `Some(principal)` if so.
    pub fn check_token(&self, token: &str) -> Option<String> {
        self.state.ledger.check(token)
    }

    /// Metadata server requests (any path).
    pub fn metadata_requests(&self) -> usize {
        self.state.metadata_requests.load(Ordering::SeqCst)
    }

    /// Requests to `/token`.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Requests to the STS.
    pub fn sts_requests(&self) -> usize {
        self.state.sts_requests.load(Ordering::SeqCst)
    }

    /// The `delegates` of the last `generateAccessToken` request.
    pub fn last_delegates(&self) -> Vec<String> {
        lock(&self.state.last_delegates).clone()
    }

    /// `generateAccessToken` calls that issued a token.
    pub fn impersonations(&self) -> usize {
        self.state.impersonations.load(Ordering::SeqCst)
    }

    /// The subject tokens the STS received, in order.
    pub fn subject_tokens(&self) -> Vec<String> {
        lock(&self.state.subject_tokens).clone()
    }

    /// The scopes of the last token request of any kind.
    pub fn last_scopes(&self) -> Option<String> {
        lock(&self.state.last_scopes).clone()
    }
}

impl GcpState {
    fn issue(&self, who: &str) -> (String, Duration) {
        let issued = self.ledger.issue(who);
        (issued.token, issued.lifetime)
    }

    fn now_secs(&self) -> u64 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn query(raw: Option<String>) -> HashMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

async fn route(
    State(s): State<Arc<GcpState>>,
    method: axum::http::Method,
    uri: Uri,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if path.starts_with("/latest/") {
        return crate::gcp_aws::metadata(&s.imds, &method, &path, &headers);
    }
    if path == "/" || path.starts_with("/computeMetadata/") {
        return metadata(&s, &path, query(raw), &headers);
    }
    if path == "/token" {
        return token(&s, &body);
    }
    if path == "/v1/token" {
        return sts(&s, &body);
    }
    if path == "/subject-token" {
        let token = lock(&s.url_subject_token).clone();
        return match (headers.get("metadata").and_then(|v| v.to_str().ok()), token) {
            (Some("True"), Some(t)) => {
                axum::Json(json!({"access_token": t, "token_type": "Bearer"})).into_response()
            }
            (Some("True"), None) => StatusCode::NOT_FOUND.into_response(),
            _ => (StatusCode::BAD_REQUEST, "Required metadata header not specified").into_response(),
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/projects/-/serviceAccounts/")
        && let Some(sa) = rest.strip_suffix(":generateIdToken")
    {
        return generate_id_token(&s, sa, &headers, &body);
    }
    if let Some(rest) = path.strip_prefix("/v1/projects/-/serviceAccounts/")
        && let Some(sa) = rest.strip_suffix(":generateAccessToken")
    {
        return generate_access_token(&s, sa, &headers, &body);
    }
    StatusCode::NOT_FOUND.into_response()
}

fn flavored(mut r: Response) -> Response {
    r.headers_mut()
        .insert("metadata-flavor", HeaderValue::from_static("Google"));
    r
}

fn metadata(s: &GcpState, path: &str, q: HashMap<String, String>, headers: &HeaderMap) -> Response {
    s.metadata_requests.fetch_add(1, Ordering::SeqCst);
    if path == "/" {
        return flavored("computeMetadata/\n".into_response());
    }
    // As the real server: the header is required, and proxied requests are refused.
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return flavored((StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header.").into_response());
    }
    if headers.contains_key("x-forwarded-for") {
        return flavored((StatusCode::FORBIDDEN, "Request denied: X-Forwarded-For").into_response());
    }
    if path == "/computeMetadata/v1/project/project-id" {
        return flavored("authwire-test".into_response());
    }
    let Some(rest) = path.strip_prefix("/computeMetadata/v1/instance/service-accounts/") else {
        return flavored((StatusCode::NOT_FOUND, "not found").into_response());
    };
    let (account, leaf) = rest.split_once('/').unwrap_or((rest, ""));
    let account = form_urlencoded::parse(format!("a={account}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if account != "default" && account != GCP_SERVICE_ACCOUNT {
        return flavored((StatusCode::NOT_FOUND, "not found").into_response());
    }
    match leaf {
        // What google-auth reads first: the account's e-mail and scopes.
        "" => flavored(
            axum::Json(json!({
                "aliases": ["default"],
                "email": GCP_SERVICE_ACCOUNT,
                "scopes": ["https://www.googleapis.com/auth/cloud-platform"]
            }))
            .into_response(),
        ),
        "email" => flavored(GCP_SERVICE_ACCOUNT.into_response()),
        "token" => {
            *lock(&s.last_scopes) = q.get("scopes").cloned();
            let (token, lifetime) = s.issue(GCP_SERVICE_ACCOUNT);
            flavored(
                axum::Json(json!({
                    "access_token": token, "expires_in": lifetime.as_secs(), "token_type": "Bearer"
                }))
                .into_response(),
            )
        }
        "identity" => {
            let Some(audience) = q.get("audience").filter(|a| !a.is_empty()) else {
                return flavored(
                    (StatusCode::BAD_REQUEST, "non-empty audience parameter required").into_response(),
                );
            };
            flavored(google_id_token(s, audience).into_response())
        }
        _ => flavored((StatusCode::NOT_FOUND, "not found").into_response()),
    }
}

/// IAM Credentials `generateIdToken` for `sa`: `{"audience", "includeEmail", "delegates"}` in,
/// `{"token"}` out, authorized as `generateAccessToken` is.
fn generate_id_token(s: &GcpState, sa: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|b| lock(&s.federated).contains(b) || s.ledger.check(b).is_some()) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}})),
        )
            .into_response();
    }
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let Some(audience) = request["audience"].as_str().filter(|a| !a.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"code": 400, "message": "Audience required.", "status": "INVALID_ARGUMENT"}})),
        )
            .into_response();
    };
    *lock(&s.last_delegates) = request["delegates"]
        .as_array()
        .map(|d| d.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    axum::Json(json!({ "token": google_id_token_for(s, audience, sa) })).into_response()
}

/// A Google-style ID token for the emulator's service account and `audience`, one hour long.
fn google_id_token(s: &GcpState, audience: &str) -> String {
    google_id_token_for(s, audience, GCP_SERVICE_ACCOUNT)
}

/// A Google-style ID token for `email` and `audience`, one hour long.
fn google_id_token_for(s: &GcpState, audience: &str, email: &str) -> String {
    let now = s.now_secs();
    let claims = json!({
        "iss": "https://accounts.google.com", "aud": audience, "azp": "100000000000000000001",
        "sub": "100000000000000000001", "email": email, "email_verified": true,
        "iat": now, "exp": now + 3600,
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("emulator".into());
    jsonwebtoken::encode(&header, &claims, &s.signing_key).expect("sign")
}

fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn token(s: &GcpState, body: &[u8]) -> Response {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    let f = form(body);
    match f.get("grant_type").map(String::as_str) {
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let Some(assertion) = f.get("assertion") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Missing required parameter: assertion",
                );
            };
            let header = jsonwebtoken::decode_header(assertion).ok();
            if header.as_ref().and_then(|h| h.kid.as_deref()) != Some(GCP_KEY_ID) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT Signature.");
            }
            let mut v = Validation::new(Algorithm::RS256);
            // Google's audience for assertions, whatever URL they are posted to.
            v.set_audience(&["https://oauth2.googleapis.com/token"]);
            v.set_issuer(&[GCP_SERVICE_ACCOUNT]);
            v.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
            let key = DecodingKey::from_rsa_pem(CLIENT_PUBLIC_KEY_PEM.as_bytes()).expect("test key");
            let Ok(data) = jsonwebtoken::decode::<Value>(assertion, &key, &v) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT Signature.");
            };
            let c = data.claims;
            let (iat, exp) = (c["iat"].as_u64().unwrap_or(0), c["exp"].as_u64().unwrap_or(0));
            if exp <= iat || exp - iat > 3600 {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
                );
            }
            // An ID token, as Google answers an assertion with `target_audience`.
            if let Some(audience) = c["target_audience"].as_str().filter(|a| !a.is_empty()) {
                *lock(&s.last_scopes) = None;
                return axum::Json(json!({ "id_token": google_id_token(s, audience) })).into_response();
            }
            let Some(scope) = c["scope"].as_str() else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "Invalid OAuth scope or ID token audience provided.",
                );
            };
            *lock(&s.last_scopes) = Some(scope.to_owned());
            let (token, lifetime) = s.issue(GCP_SERVICE_ACCOUNT);
            axum::Json(
                json!({"access_token": token, "expires_in": lifetime.as_secs(), "token_type": "Bearer"}),
            )
            .into_response()
        }
        Some("refresh_token") => {
            if f.get("client_id").map(String::as_str) != Some(GCP_USER_CLIENT_ID)
                || f.get("client_secret").map(String::as_str) != Some(GCP_USER_CLIENT_SECRET)
            {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "The OAuth client was not found.",
                );
            }
            if f.get("refresh_token").map(String::as_str) != Some(GCP_USER_REFRESH_TOKEN) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Token has been expired or revoked.",
                );
            }
            *lock(&s.last_scopes) = f.get("scope").cloned();
            let (token, lifetime) = s.issue("user@example.com");
            // As Google answers a refresh of a login that asked for `openid` (gcloud's does): an
            // ID token for the user, its audience the OAuth client.
            axum::Json(json!({
                "access_token": token, "expires_in": lifetime.as_secs(), "token_type": "Bearer",
                "scope": "https://www.googleapis.com/auth/cloud-platform openid",
                "id_token": google_id_token_for(s, GCP_USER_CLIENT_ID, "user@example.com"),
            }))
            .into_response()
        }
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type.",
        ),
    }
}

fn sts(s: &GcpState, body: &[u8]) -> Response {
    s.sts_requests.fetch_add(1, Ordering::SeqCst);
    let f = form(body);
    let get = |k: &str| f.get(k).map(String::as_str);
    if get("grant_type") != Some("urn:ietf:params:oauth:grant-type:token-exchange") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type.",
        );
    }
    if get("requested_token_type") != Some("urn:ietf:params:oauth:token-type:access_token") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid requested_token_type.",
        );
    }
    if get("audience") != Some(GCP_WIF_AUDIENCE) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid.",
        );
    }
    let subject = match (get("subject_token"), get("subject_token_type")) {
        (Some(subject), Some("urn:ietf:params:oauth:token-type:jwt")) => subject,
        // AWS: a signed GetCallerIdentity request, checked as Google's STS checks it (here by
        // recomputing the signature with the secret key the metadata service handed out).
        (Some(subject), Some("urn:ietf:params:aws:token-type:aws4_request")) => {
            if let Err(why) = crate::gcp_aws::check_subject_token(subject, GCP_WIF_AUDIENCE) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    &format!("The AWS subject token is invalid: {why}."),
                );
            }
            s.aws_subjects.fetch_add(1, Ordering::SeqCst);
            subject
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Invalid subject_token or subject_token_type.",
            );
        }
    };
    // A subject token is accepted once: a federated token that is never rotated would be reused.
    if lock(&s.subject_tokens).iter().any(|t| t == subject) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The subject token was already used.",
        );
    }
    lock(&s.subject_tokens).push(subject.to_owned());
    *lock(&s.last_scopes) = get("scope").map(str::to_owned);
    let (token, lifetime) = s.issue("federated");
    lock(&s.federated).insert(token.clone());
    axum::Json(json!({
        "access_token": token,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs()
    }))
    .into_response()
}

fn generate_access_token(s: &GcpState, sa: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // A federated token from the STS, or an access token this emulator issued (a source
    // credential impersonating another account).
    let valid = bearer.is_some_and(|b| lock(&s.federated).contains(b) || s.ledger.check(b).is_some());
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}})),
        )
            .into_response();
    }
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let Some(scopes) = request["scope"].as_array().filter(|a| !a.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"error": {"code": 400, "message": "Scope required.", "status": "INVALID_ARGUMENT"}}),
            ),
        )
            .into_response();
    };
    *lock(&s.last_scopes) = Some(
        scopes
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
    );
    *lock(&s.last_delegates) = request["delegates"]
        .as_array()
        .map(|d| d.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    s.impersonations.fetch_add(1, Ordering::SeqCst);
    let (token, lifetime) = s.issue(sa);
    let expire = s.clock.now() + lifetime;
    axum::Json(json!({"accessToken": token, "expireTime": rfc3339(expire)})).into_response()
}

/// RFC 3339 in UTC to the second, as IAM Credentials writes `expireTime` (google-auth parses
/// exactly `%Y-%m-%dT%H:%M:%SZ`).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}
