//! HTTP for credential-bearing requests: the OAuth2 provider's, and that of provider crates
//! built on this one (`authwire-gcp`, `authwire-azure`). Not needed to use the OAuth2 provider
//! itself.
//!
//! The rules hold whoever built the client: redirects are never followed (an answer that is a
//! redirect is refused unread), bodies are read up to [`MAX_RESPONSE_BYTES`], network errors
//! are transient, and errors name the URL without its query, never a header or a body.
//!
//! Requests and answers are the `http` crate's types, which the core
//! re-exports: no reqwest type crosses this module's surface, so a reqwest major version is not
//! a breaking change of ours.
//!
//! ```no_run
//! use authwire::http;
//! use authwire_oauth2::transport::HttpClient;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), authwire::ProviderError> {
//! let client = HttpClient::new("my-provider/1.0");
//! let request = http::Request::get("https://idp.example/.well-known/openid-configuration")
//!     .header(http::header::ACCEPT, "application/json");
//! let reply = client.send(request, Vec::new(), Duration::from_secs(10)).await?;
//! assert!(reply.body.len() <= authwire_oauth2::MAX_RESPONSE_BYTES);
//! # Ok(()) }
//! ```

pub use crate::client_auth::credential_fingerprint;
pub use crate::config::{MAX_RESPONSE_BYTES, parse_url as check_url};
pub use crate::response::{parse_error, parse_retry_after, parse_token_response};

use authwire::ProviderError;
use authwire::http::{self, HeaderMap, HeaderValue};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What came back for a request: status, `Retry-After`, `DPoP-Nonce`, headers, body
/// (size-limited).
#[derive(Debug)]
#[non_exhaustive]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The raw `Retry-After` value.
    pub retry_after: Option<String>,
    /// The `DPoP-Nonce` value (RFC 9449 section 8), if short enough to be one.
    pub dpop_nonce: Option<String>,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, at most [`MAX_RESPONSE_BYTES`].
    pub body: Vec<u8>,
}

/// An HTTP client for credential-bearing requests, built on first use (a process that finds
/// its token in a cache never pays for TLS set-up). Cheap to clone: clones share the client
/// and its connections.
#[derive(Clone)]
pub struct HttpClient {
    lazy: Arc<LazyClient>,
}

impl HttpClient {
    /// A client that sends `user_agent`, follows no redirect, and trusts the system's roots.
    pub fn new(user_agent: &'static str) -> Self {
        Self::from_builder(reqwest::Client::builder().user_agent(user_agent))
    }

    /// A client from a reqwest builder the user configured (the OAuth2 provider's
    /// `http_client` escape hatch); redirects are turned off whatever it said.
    pub(crate) fn from_builder(builder: reqwest::ClientBuilder) -> Self {
        Self {
            lazy: Arc::new(LazyClient {
                builder: std::sync::Mutex::new(Some(builder.redirect(reqwest::redirect::Policy::none()))),
                client: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Send `request` with `body`, allowing it `timeout` in all, and read the answer (see
    /// [`Reply`]). A request that cannot be formed (a header value with a newline, say) is a
    /// permanent error that names neither the value nor the body.
    pub async fn send(
        &self,
        request: http::request::Builder,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Reply, ProviderError> {
        let request = request
            .body(body)
            .map_err(|e| ProviderError::permanent(format!("cannot form the request: {e}")))?;
        let mut request = reqwest::Request::try_from(request).map_err(network_error)?;
        *request.timeout_mut() = Some(timeout);
        execute(self.lazy.get()?, request).await
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("built", &self.lazy.client.get().is_some())
            .finish()
    }
}

/// A header value that carries a secret: marked sensitive, so that HTTP/2's header
/// compression never indexes it and `Debug` of the request does not show it.
pub fn secret_header(value: &str) -> Result<HeaderValue, ProviderError> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| ProviderError::permanent("a credential cannot form a header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Read a credential kept in a file (a projected service-account token, a federated token, a
/// subject token), now: files are rotated in place. `what` names it in errors ("the assertion
/// file"). Refused with a permanent error: anything but a regular file (a FIFO or a device
/// would block until the fetch times out, a folder is a mistake), and a file over `max` bytes
/// (never silently cut). A missing file is permanent too (the volume is not mounted); other
/// read errors are transient.
pub async fn read_credential_file(
    path: &std::path::Path,
    what: &str,
    max: u64,
) -> Result<secrecy::SecretString, ProviderError> {
    use tokio::io::AsyncReadExt as _;
    let shown = path.display();
    let mut options = tokio::fs::OpenOptions::new();
    options.read(true);
    // Opening a FIFO for reading waits for a writer; non-blocking, the open returns at once
    // and the check below refuses it.
    #[cfg(unix)]
    options.custom_flags(libc::O_NONBLOCK);
    let file = options.open(path).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ProviderError::permanent(format!(
            "{what} {shown} does not exist: is the token volume mounted?"
        )),
        _ => ProviderError::transient(format!("cannot read {what} {shown}: {e}")),
    })?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| ProviderError::transient(format!("cannot read {what} {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(ProviderError::permanent(format!(
            "{what} {shown} is not a regular file (a folder, a FIFO or a device): not read"
        )));
    }
    if meta.len() > max {
        return Err(ProviderError::permanent(format!(
            "{what} {shown} is larger than {max} bytes"
        )));
    }
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .await
        .map_err(|e| ProviderError::transient(format!("cannot read {what} {shown}: {e}")))?;
    if text.len() as u64 > max {
        // It grew between the check and the read.
        return Err(ProviderError::permanent(format!(
            "{what} {shown} is larger than {max} bytes"
        )));
    }
    Ok(secrecy::SecretString::from(text))
}

/// A `reqwest::Client` built from its builder the first time it is needed.
struct LazyClient {
    builder: std::sync::Mutex<Option<reqwest::ClientBuilder>>,
    client: std::sync::OnceLock<Result<reqwest::Client, String>>,
}

impl LazyClient {
    /// The client, built now if it was not yet.
    fn get(&self) -> Result<&reqwest::Client, ProviderError> {
        self.client
            .get_or_init(|| {
                let builder = self
                    .builder
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                match builder {
                    Some(b) => b.build().map_err(|e| authwire::error_chain(&e)),
                    None => Err("the HTTP client could not be built".into()),
                }
            })
            .as_ref()
            .map_err(|e| ProviderError::permanent(format!("cannot set up the HTTP client: {e}")))
    }
}

/// Send a request and read the answer: network errors are transient, a redirect (which is
/// never followed) and a body over [`MAX_RESPONSE_BYTES`] are refused.
async fn execute(client: &reqwest::Client, request: reqwest::Request) -> Result<Reply, ProviderError> {
    let url = request.url().clone();
    let response = client.execute(request).await.map_err(network_error)?;
    let status = response.status().as_u16();
    // Redirects are off in every client we build; a redirect answer, or an answer from another
    // URL, is refused and its body is not read.
    if response.status().is_redirection() || response.url() != &url {
        return Err(ProviderError::invalid_response(
            Some(status),
            format!(
                "{} answered with a redirect; requests that carry credentials never follow redirects: configure the URL it points to",
                url.as_str().split('?').next().unwrap_or_default()
            ),
        ));
    }
    let header = |name: http::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header(http::header::RETRY_AFTER);
    let dpop_nonce = header(http::header::HeaderName::from_static("dpop-nonce"))
        .filter(|v| !v.is_empty() && v.len() <= 512);
    let headers = response.headers().clone();
    let body = read_limited(response).await?;
    Ok(Reply {
        status,
        retry_after,
        dpop_nonce,
        headers,
        body,
    })
}

/// Read a body, refusing more than [`MAX_RESPONSE_BYTES`].
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    let status = response.status().as_u16();
    let too_large = || {
        ProviderError::invalid_response(
            Some(status),
            format!("response body is larger than {MAX_RESPONSE_BYTES} bytes"),
        )
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(network_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn network_error(e: reqwest::Error) -> ProviderError {
    // reqwest errors name the URL, never the body or headers.
    let what = if e.is_timeout() {
        "request timed out to"
    } else if e.is_connect() && is_dns(&e) {
        "could not resolve the host name of"
    } else if e.is_connect() {
        "could not connect to"
    } else {
        "request failed to"
    };
    ProviderError::transient(NetworkError { what, source: e })
}

/// Whether a connect error is a name that did not resolve (hyper-util calls it "dns error",
/// whichever resolver answered).
fn is_dns(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.to_string().starts_with("dns error") {
            return true;
        }
        source = s.source();
    }
    false
}

#[derive(Debug)]
struct NetworkError {
    what: &'static str,
    source: reqwest::Error,
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source.url() {
            Some(url) => write!(
                f,
                "{} {}",
                self.what,
                url.as_str().split('?').next().unwrap_or_default()
            ),
            None => f.write_str(self.what.trim_end_matches(" to").trim_end_matches(" of")),
        }
    }
}

impl std::error::Error for NetworkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.source)
    }
}
