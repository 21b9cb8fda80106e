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
    timeout: Duration,
}

impl Default for BrowserLogin {
    fn default() -> Self {
        Self {
            prompt: None,
            login_hint: None,
            timeout: DEFAULT_LOGIN_TIMEOUT,
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

    /// How long to wait for the browser to come back (measured on the provider's clock).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
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

    let mut url = endpoint;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &inner.client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("state", &state)
            .append_pair("code_challenge", &s256_challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        if !inner.scopes.is_empty() {
            q.append_pair("scope", &inner.scopes.join(" "));
        }
        if let Some(a) = &inner.audience {
            q.append_pair("audience", a);
        }
        for r in &inner.resources {
            q.append_pair("resource", r);
        }
        if let Some(p) = &options.prompt {
            q.append_pair("prompt", p);
        }
        if let Some(h) = &options.login_hint {
            q.append_pair("login_hint", h);
        }
    }
    open(&url);

    let code = tokio::select! {
        code = wait_for_code(&listener, &state, expected_iss.as_ref()) => code?,
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
    inner.token_request(form).await
}

/// What one connection to the listener brought.
struct Callback {
    params: HashMap<String, String>,
    stream: TcpStream,
}

/// Accept connections until one carries our `state`; answer each.
async fn wait_for_code(
    listener: &TcpListener,
    state: &str,
    expected_iss: Option<&(String, bool)>,
) -> Result<SecretString, ProviderError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Callback>(8);
    let mut readers = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let tx = tx.clone();
                readers.spawn(async move {
                    if let Some(callback) = read_callback(stream).await {
                        let _ = tx.send(callback).await;
                    }
                });
            }
            Some(Callback { params, mut stream }) = rx.recv() => {
                let get = |name: &str| params.get(name).map(String::as_str);
                if get("state") != Some(state) {
                    debug!("a redirect without this login's state was refused");
                    respond(&mut stream, 400, "This sign-in response does not belong to the login in progress and was ignored.").await;
                    continue;
                }
                if let Some((issuer, required)) = expected_iss {
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
                respond(&mut stream, 200, "Signed in. You can close this window and return to the terminal.").await;
                return Ok(SecretString::from(code.to_owned()));
            }
        }
    }
}

/// Read one request; `Some` for a GET of the callback path, with its query parameters. Other
/// requests (a favicon, a probe) are answered 404 here.
async fn read_callback(mut stream: TcpStream) -> Option<Callback> {
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
    if method != "GET" || path != CALLBACK_PATH {
        respond(&mut stream, 404, "Not found.").await;
        return None;
    }
    let params = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    Some(Callback { params, stream })
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
