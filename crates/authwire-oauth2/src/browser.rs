//! People logging in through their browser: the authorization code grant (RFC 6749 section
//! 4.1) with PKCE S256 (RFC 7636) on a loopback redirect (RFC 8252 section 7.3), `state`
//! checked, and `iss` checked as RFC 9207 says.
//!
//! What a hostile party can try, and what stops it:
//! - another local process (or a web page, through the browser) sends a forged redirect to our
//!   port: it does not know `state`, so it is answered 400 and the wait goes on; a code it
//!   injected would also fail PKCE;
//! - a slow or silent connection to the port: each is read in its own task, bounded in time and
//!   size, so it cannot hold up the real redirect;
//! - a mix-up (an authorization response from another server): `iss` must name our issuer
//!   (RFC 9207);
//! - secrets on a screen: the code and the verifier go only to the token endpoint; the page the
//!   browser gets echoes nothing from the request.

use crate::discovery::Endpoints;
use crate::form::Form;
use crate::provider::Inner;
use authwire::{ProviderError, Token};
use base64::Engine as _;
use secrecy::SecretString;
use sha2::Digest as _;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;
use url::Url;

/// How long [`OAuth2Provider::browser_login`](crate::OAuth2Provider::browser_login) waits for the
/// browser to come back, by default.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// How long one connection to the redirect listener may take to send its request line.
const CONNECTION_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read from the redirect listener.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// The path of the redirect URI.
const CALLBACK_PATH: &str = "/callback";
/// The path of the one-time link handed to the browser opener (followed by a random token).
const START_PATH: &str = "/start/";
/// At most this many connections to the listener are read at once; a new one beyond it closes
/// the oldest (idle ones: a browser sends its request at once).
const MAX_CONNECTIONS: usize = 64;
/// The pause after a failed `accept` (out of file descriptors, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// By default, how long after the link is handed to the opener a second use of it still stops
/// the login (see [`BrowserLogin::reuse_window`]).
pub const DEFAULT_REUSE_WINDOW: Duration = Duration::from_secs(3);

/// Options of [`browser_login_with`](crate::OAuth2Provider::browser_login_with).
///
/// ```
/// use std::time::Duration;
/// let options = authwire_oauth2::BrowserLogin::new()
///     .prompt("select_account")
///     .login_hint("ada@example.com")
///     .timeout(Duration::from_secs(120));
/// ```
#[derive(Clone, Debug)]
pub struct BrowserLogin {
    prompt: Option<String>,
    login_hint: Option<String>,
    acr_values: Option<String>,
    max_age: Option<u64>,
    timeout: Duration,
    reuse_window: Duration,
}

impl Default for BrowserLogin {
    fn default() -> Self {
        Self {
            prompt: None,
            login_hint: None,
            acr_values: None,
            max_age: None,
            timeout: DEFAULT_LOGIN_TIMEOUT,
            reuse_window: DEFAULT_REUSE_WINDOW,
        }
    }
}

impl BrowserLogin {
    /// The defaults: no `prompt`, no `login_hint`, [`DEFAULT_LOGIN_TIMEOUT`].
    pub fn new() -> Self {
        Self::default()
    }

    /// OpenID Connect `prompt` (`login`, `consent`, `select_account`, `none`).
    pub fn prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }

    /// OpenID Connect `login_hint` (the account to preselect).
    pub fn login_hint(mut self, hint: impl Into<String>) -> Self {
        self.login_hint = Some(hint.into());
        self
    }

    /// OpenID Connect `acr_values`: the authentication context classes asked for,
    /// space-separated (a step-up, RFC 9470 section 4).
    pub fn acr_values(mut self, acr_values: impl Into<String>) -> Self {
        self.acr_values = Some(acr_values.into());
        self
    }

    /// OpenID Connect `max_age`: the most seconds since the person last authenticated; the ID
    /// token must then carry an `auth_time` that recent.
    pub fn max_age(mut self, seconds: u64) -> Self {
        self.max_age = Some(seconds);
        self
    }

    /// How long to wait for the browser to come back (measured on the provider's clock).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long after the login link is handed to the opener its second use still stops the
    /// login ([`DEFAULT_REUSE_WINDOW`]): an answer that arrives sooner is held until then. The
    /// link is visible in the process list to other local users; one who opens it first gets
    /// the authorization request, and the person's browser, opening it second, stops the login
    /// instead of letting theirs complete. Zero turns the wait off (the second use still stops
    /// a login that has not completed).
    pub fn reuse_window(mut self, window: Duration) -> Self {
        self.reuse_window = window;
        self
    }
}

/// A browser login that answers step-up challenges (see
/// [`OAuth2ProviderBuilder::step_up_login`](crate::OAuth2ProviderBuilder::step_up_login)).
#[derive(Clone)]
pub(crate) struct StepUpLogin {
    pub(crate) options: BrowserLogin,
    pub(crate) open: std::sync::Arc<dyn Fn(&Url) + Send + Sync>,
}

/// A base64url string of `bytes` random bytes.
fn random_b64(bytes: usize) -> Result<String, ProviderError> {
    let mut buf = vec![0u8; bytes];
    authwire::random::secure_fill(&mut buf)
        .map_err(|e| ProviderError::permanent(format!("no secure random numbers: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// RFC 7636 section 4.2: `BASE64URL(SHA256(ASCII(code_verifier)))`.
pub(crate) fn s256_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

pub(crate) async fn login(
    inner: &Inner,
    options: &BrowserLogin,
    open: impl FnOnce(&Url),
) -> Result<Token, ProviderError> {
    let endpoint = inner.authorization_endpoint().await?;
    // RFC 9207: with an issuer, the response's `iss` must name it; when the metadata promises
    // `iss`, a response without one is refused too.
    let expected_iss = match &inner.endpoints {
        Endpoints::Discovered { .. } => {
            let m = inner.metadata().await?;
            Some((m.issuer.clone(), m.iss_parameter_supported))
        }
        Endpoints::Fixed { .. } => None,
    };
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| {
        ProviderError::permanent(format!(
            "cannot listen on 127.0.0.1 for the browser's redirect: {e}"
        ))
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| ProviderError::permanent(format!("the redirect listener has no address: {e}")))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}{CALLBACK_PATH}");
    // 32 random bytes: a 43-character verifier, the RFC 7636 minimum length and its advice.
    let verifier = random_b64(32)?;
    let state = random_b64(24)?;

    // OpenID Connect Core 3.1.2.1: a nonce binds the ID token to this login.
    let openid = inner.scopes.iter().any(|s| s == "openid");
    let nonce = if openid { Some(random_b64(24)?) } else { None };
    let mut params: Vec<(&str, String)> = vec![
        ("response_type", "code".into()),
        ("client_id", inner.client_id.clone()),
        ("redirect_uri", redirect_uri.clone()),
        ("state", state.clone()),
        ("code_challenge", s256_challenge(&verifier)),
        ("code_challenge_method", "S256".into()),
    ];
    if !inner.scopes.is_empty() {
        params.push(("scope", inner.scopes.join(" ")));
    }
    if let Some(a) = &inner.audience {
        params.push(("audience", a.clone()));
    }
    for r in &inner.resources {
        params.push(("resource", r.clone()));
    }
    for (name, value) in [
        ("prompt", options.prompt.clone()),
        ("login_hint", options.login_hint.clone()),
        ("nonce", nonce.clone()),
        ("acr_values", options.acr_values.clone()),
        ("max_age", options.max_age.map(|m| m.to_string())),
    ] {
        if let Some(v) = value {
            params.push((name, v));
        }
    }
    if let Some(claims) = inner.claims_request(None)? {
        params.push(("claims", claims));
    }
    let mut url = endpoint;
    match inner.pushed_authorization_endpoint().await? {
        // RFC 9126 section 4: only client_id and request_uri go through the browser.
        Some(par) => {
            let request_uri = inner.push_authorization_request(&par, &params).await?;
            url.query_pairs_mut()
                .append_pair("client_id", &inner.client_id)
                .append_pair("request_uri", &request_uri);
        }
        None => {
            let mut q = url.query_pairs_mut();
            for (k, v) in &params {
                q.append_pair(k, v);
            }
        }
    }
    // The opener gets a one-time link to this listener, not the authorization URL: its command
    // line (and the browser's) is visible to other local users. The first use of the link
    // redirects to the authorization URL; a second use stops the login.
    let start_path = format!("{START_PATH}{}", random_b64(24)?);
    let start = Url::parse(&format!("http://127.0.0.1:{port}{start_path}"))
        .map_err(|e| ProviderError::permanent(format!("the login link is not a URL: {e}")))?;
    let opened_at = inner.clock.now();
    open(&start);

    let expect = Expect {
        state: &state,
        expected_iss: expected_iss.as_ref(),
        start_path: &start_path,
        authorization_url: &url,
        hold_until: opened_at + options.reuse_window,
    };
    let code = tokio::select! {
        code = wait_for_code(&listener, &expect, &*inner.clock) => code?,
        () = inner.clock.sleep(options.timeout) => {
            return Err(ProviderError::permanent(format!(
                "no answer from the browser within {}s: the login was not completed; run it again",
                options.timeout.as_secs()
            )));
        }
    };
    drop(listener);

    let mut form = Form::new();
    form.push("grant_type", "authorization_code");
    form.push_secret("code", code);
    form.push("redirect_uri", &redirect_uri);
    form.push_secret("code_verifier", SecretString::from(verifier));
    let token = inner.token_request(form).await?;
    // Checked before anything is kept: a login whose ID token fails is no login.
    if openid && token.id_token().is_none() {
        return Err(ProviderError::invalid_response(
            Some(200),
            "the login asked for openid and the answer has no ID token (OpenID Connect Core 3.1.3.3)",
        ));
    }
    let expect = crate::oidc::Expect {
        nonce: nonce.as_deref(),
        max_age: options.max_age,
        subject: None,
    };
    inner.check_id_token(&token, &expect).await?;
    Ok(crate::provider::person_login(token, "authorization_code"))
}

impl Inner {
    /// Where to push authorization requests, when they are pushed: with `par(true)` or when
    /// discovery requires it (RFC 9126 section 5), the discovered endpoint.
    async fn pushed_authorization_endpoint(&self) -> Result<Option<Url>, ProviderError> {
        let metadata = match &self.endpoints {
            Endpoints::Discovered { .. } => Some(self.metadata().await?),
            Endpoints::Fixed { .. } => None,
        };
        let required = metadata.is_some_and(|m| m.require_par);
        if !(self.par || required) {
            return Ok(None);
        }
        metadata
            .and_then(|m| {
                self.mtls_alias(m, |a| a.pushed_authorization_request_endpoint.as_ref())
                    .or(m.par_endpoint.as_ref())
                    .cloned()
            })
            .map(Some)
            .ok_or_else(|| {
                ProviderError::permanent(
                    "pushed authorization requests were asked for and the issuer publishes no pushed_authorization_request_endpoint (RFC 9126)",
                )
            })
    }

    /// RFC 9126 section 2: POST the request's parameters, authenticated (and with a DPoP proof
    /// when tokens are bound); the answer is `201` with `request_uri` and `expires_in`.
    async fn push_authorization_request(
        &self,
        endpoint: &Url,
        params: &[(&str, String)],
    ) -> Result<String, ProviderError> {
        // Every parameter of the authorization request, client_id included (RFC 9126
        // section 2.1); client authentication does not add it twice.
        let mut form = Form::new();
        for (k, v) in params {
            form.push(k, v);
        }
        self.post(endpoint, form, true, |status, retry_after, body| {
            if !(200..300).contains(&status) {
                return Err(crate::response::parse_error(
                    status,
                    retry_after,
                    body,
                    self.clock.now(),
                ));
            }
            let doc: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
                ProviderError::invalid_response(Some(status), "the pushed authorization response is not JSON")
            })?;
            let uri = doc["request_uri"]
                .as_str()
                .filter(|u| !u.is_empty() && u.len() <= 2048);
            uri.map(str::to_owned).ok_or_else(|| {
                ProviderError::invalid_response(
                    Some(status),
                    "the pushed authorization response has no request_uri",
                )
            })
        })
        .await
    }
}

/// What the listener waits for.
struct Expect<'a> {
    state: &'a str,
    expected_iss: Option<&'a (String, bool)>,
    /// The one-time link's path.
    start_path: &'a str,
    /// Where the link's first use is redirected.
    authorization_url: &'a Url,
    /// A valid answer is held until then, so that a second use of the link can still stop the
    /// login.
    hold_until: std::time::SystemTime,
}

/// What one connection to the listener asked for.
enum Request {
    /// `GET` of the one-time login link.
    Start(TcpStream),
    /// `GET` of the callback, with its query parameters.
    Callback {
        params: HashMap<String, String>,
        stream: TcpStream,
    },
}

/// Serve the listener until one connection brings the answer for our `state`, the login link
/// having been used exactly once; answer each connection.
async fn wait_for_code(
    listener: &TcpListener,
    expect: &Expect<'_>,
    clock: &dyn authwire::Clock,
) -> Result<SecretString, ProviderError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Request>(8);
    // The connections being read, oldest first: at most MAX_CONNECTIONS (a flood of idle
    // connections closes its own oldest, never starves the browser's).
    let mut readers: std::collections::VecDeque<tokio::task::JoinHandle<()>> =
        std::collections::VecDeque::new();
    let mut starts = 0usize;
    // A valid answer, held until `hold_until`.
    let mut held: Option<(SecretString, TcpStream)> = None;
    loop {
        let hold = async {
            match &held {
                Some(_) => {
                    let left = expect.hold_until.duration_since(clock.now()).unwrap_or_default();
                    clock.sleep(left).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors (a flood), most likely: pause instead of spinning.
                        debug!(error = %e, "the redirect listener could not accept; pausing");
                        clock.sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                readers.retain(|r| !r.is_finished());
                if readers.len() >= MAX_CONNECTIONS
                    && let Some(oldest) = readers.pop_front()
                {
                    oldest.abort();
                }
                let tx = tx.clone();
                let start_path = expect.start_path.to_owned();
                readers.push_back(tokio::spawn(async move {
                    if let Some(request) = read_request(stream, &start_path).await {
                        let _ = tx.send(request).await;
                    }
                }));
            }
            () = hold => {
                let Some((code, mut stream)) = held.take() else { continue };
                respond(&mut stream, 200, "Signed in. You can close this window and return to the terminal.").await;
                return Ok(code);
            }
            Some(request) = rx.recv() => match request {
                Request::Start(mut stream) => {
                    starts += 1;
                    if starts == 1 {
                        redirect(&mut stream, expect.authorization_url).await;
                        continue;
                    }
                    respond(&mut stream, 400, "This sign-in link was already used, so the login was stopped. Run the login again from the terminal.").await;
                    if let Some((_, mut waiting)) = held.take() {
                        respond(&mut waiting, 400, "The login was stopped: its link was used twice. See the terminal.").await;
                    }
                    return Err(ProviderError::permanent(
                        "the login link was opened twice, so the login was stopped: another program on this machine may have used it first (the link is visible in the process list); run the login again",
                    ));
                }
                Request::Callback { params, mut stream } => {
                    let get = |name: &str| params.get(name).map(String::as_str);
                    if get("state") != Some(expect.state) || starts == 0 || held.is_some() {
                        debug!("a redirect without this login's state, or before its link was opened, was refused");
                        respond(&mut stream, 400, "This sign-in response does not belong to the login in progress and was ignored.").await;
                        continue;
                    }
                    if let Some((issuer, required)) = expect.expected_iss {
                        match get("iss") {
                            Some(iss) if iss == issuer => {}
                            None if !required => {}
                            other => {
                                respond(&mut stream, 400, "Sign-in failed: the response came from an unexpected server. See the terminal.").await;
                                return Err(ProviderError::permanent(format!(
                                    "the authorization response names issuer {:?}, expected {issuer:?} (RFC 9207: a mix-up attack, or a misconfigured issuer)",
                                    other.unwrap_or("(none)").chars().filter(|c| !c.is_control()).take(200).collect::<String>()
                                )));
                            }
                        }
                    }
                    if let Some(error) = get("error") {
                        respond(&mut stream, 200, "Sign-in did not complete. You can close this window; the terminal says why.").await;
                        return Err(ProviderError::rejected(
                            None,
                            error,
                            get("error_description").map(str::to_owned),
                        ));
                    }
                    let Some(code) = get("code").filter(|c| !c.is_empty()) else {
                        respond(&mut stream, 400, "Sign-in failed: the response carries no code. See the terminal.").await;
                        return Err(ProviderError::invalid_response(
                            None,
                            "the authorization response has neither code nor error",
                        ));
                    };
                    held = Some((SecretString::from(code.to_owned()), stream));
                }
            },
        }
    }
}

/// Read one request: the login link or the callback (`GET` only); anything else (a favicon, a
/// probe) is answered 404 here.
async fn read_request(mut stream: TcpStream, start_path: &str) -> Option<Request> {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(CONNECTION_READ_TIMEOUT, async {
        let mut buf = [0u8; 2048];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some(())
    })
    .await;
    if !matches!(read, Ok(Some(()))) {
        return None;
    }
    let line = head.split(|&b| b == b'\r' || b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match (method, path) {
        ("GET", CALLBACK_PATH) => {
            let params = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
            Some(Request::Callback { params, stream })
        }
        ("GET", p) if p == start_path => Some(Request::Start(stream)),
        _ => {
            respond(&mut stream, 404, "Not found.").await;
            None
        }
    }
}

/// Send the browser on to the authorization URL.
async fn redirect(stream: &mut TcpStream, to: &Url) {
    let answer = format!(
        "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n"
    );
    let _ = tokio::time::timeout(CONNECTION_READ_TIMEOUT, async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A small page for the browser; nothing from the request is echoed.
async fn respond(stream: &mut TcpStream, status: u16, text: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Not Found",
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>authwire</title></head><body><p>{text}</p></body></html>\n"
    );
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(CONNECTION_READ_TIMEOUT, async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_rfc_7636_appendix_b() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_are_43_unreserved_characters_and_differ() {
        let a = random_b64(32).unwrap();
        let b = random_b64(32).unwrap();
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a, b);
    }
}
