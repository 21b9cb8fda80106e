//! [`HttpClient`]: one request, sent by the rules (no redirects, bounded bodies, errors that
//! say what went wrong and name no secret).

use crate::transport::Transport;
use authwire::ProviderError;
use authwire::http::{self, HeaderMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The largest response body read; larger answers are refused.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

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
    /// A client with the default [`Transport`] (the environment's proxy, the system's roots)
    /// that sends `user_agent`.
    pub fn new(user_agent: &str) -> Self {
        Self::with_transport(user_agent, &Transport::new())
    }

    /// A client with `transport`'s proxy, roots, client certificate and timeout.
    pub fn with_transport(user_agent: &str, transport: &Transport) -> Self {
        Self::lazy(
            Recipe::Transport {
                user_agent: user_agent.to_owned(),
                direct: false,
            },
            Some(transport.clone()),
        )
    }

    /// A client for a metadata endpoint (the GCE metadata server, Azure IMDS, App Service):
    /// never through a proxy, whatever the environment or the transport says, as the
    /// clouds' own libraries do. The transport's timeout still applies.
    pub fn metadata(user_agent: &str, transport: &Transport) -> Self {
        let direct = Transport::new().no_proxy(true);
        let direct = match transport.configured_timeout() {
            Some(t) => direct.timeout(t),
            None => direct,
        };
        Self::lazy(
            Recipe::Transport {
                user_agent: user_agent.to_owned(),
                direct: true,
            },
            Some(direct),
        )
    }

    /// A client from a reqwest builder the user configured (authwire-oauth2's `http_client`
    /// escape hatch); redirects are turned off whatever it said. Not part of the stable API:
    /// reqwest's types do not cross it otherwise.
    #[doc(hidden)]
    pub fn from_reqwest_builder(builder: reqwest::ClientBuilder) -> Self {
        Self::lazy(Recipe::Builder(Box::new(builder)), None)
    }

    /// A client the user built (authwire-jwt's `http_client` escape hatch). Redirect answers
    /// are still refused, bodies still bounded. Not part of the stable API.
    #[doc(hidden)]
    pub fn from_reqwest_client(client: reqwest::Client) -> Self {
        let lazy = LazyClient {
            recipe: std::sync::Mutex::new(None),
            client: std::sync::OnceLock::new(),
            transport: None,
        };
        let _ = lazy.client.set(Ok(client));
        Self { lazy: Arc::new(lazy) }
    }

    fn lazy(recipe: Recipe, transport: Option<Transport>) -> Self {
        Self {
            lazy: Arc::new(LazyClient {
                recipe: std::sync::Mutex::new(Some(recipe)),
                client: std::sync::OnceLock::new(),
                transport,
            }),
        }
    }

    /// The timeout the transport was given, if any: providers use it when their own is not
    /// set.
    pub fn configured_timeout(&self) -> Option<Duration> {
        self.lazy
            .transport
            .as_ref()
            .and_then(Transport::configured_timeout)
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
        let mut request = reqwest::Request::try_from(request).map_err(|e| self.network_error(e))?;
        *request.timeout_mut() = Some(timeout);
        self.execute(request).await
    }

    /// Send a request and read the answer: network errors are transient, a redirect (which is
    /// never followed) and a body over [`MAX_RESPONSE_BYTES`] are refused.
    async fn execute(&self, request: reqwest::Request) -> Result<Reply, ProviderError> {
        let client = self.lazy.get()?;
        let url = request.url().clone();
        let response = client.execute(request).await.map_err(|e| self.network_error(e))?;
        let status = response.status().as_u16();
        // Redirects are off in every client we build; a redirect answer, or an answer from another
        // URL, is refused and its body is not read.
        if response.status().is_redirection() || response.url() != &url {
            return Err(ProviderError::invalid_response(
                Some(status),
                format!(
                    "{} answered with a redirect; requests that carry credentials never follow redirects: configure the URL it points to",
                    without_query(&url)
                ),
            ));
        }
        if status == 407 {
            // Only a proxy asks for proxy credentials; its body is not ours to read.
            return Err(ProviderError::permanent(ProxyRefused {
                proxy: self.proxy_for(&url),
                status: Some(407),
                url: without_query(&url),
            }));
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

    fn proxy_for(&self, url: &url::Url) -> Option<String> {
        self.lazy.transport.as_ref().and_then(|t| t.proxy_for(url))
    }

    fn network_error(&self, e: reqwest::Error) -> ProviderError {
        let url = e.url().map(without_query).unwrap_or_default();
        if let Some(problem) = certificate_problem(&e) {
            return ProviderError::transient(CertificateError { problem, url });
        }
        if let Some(status) = tunnel_refusal(&e) {
            let proxy = e.url().and_then(|u| self.proxy_for(u));
            let refused = ProxyRefused { proxy, status, url };
            return if status == Some(407) {
                ProviderError::permanent(refused)
            } else {
                ProviderError::transient(refused)
            };
        }
        // reqwest errors name the URL, never the body or headers.
        let what = if e.is_timeout() {
            "request timed out to"
        } else if e.is_connect() && chain_has(&e, |s| s.starts_with("dns error")) {
            "could not resolve the host name of"
        } else if e.is_connect() {
            "could not connect to"
        } else {
            "request failed to"
        };
        ProviderError::transient(NetworkError { what, source: e })
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("built", &self.lazy.client.get().is_some())
            .field("transport", &self.lazy.transport)
            .finish()
    }
}

/// How to build the client when it is first needed: nothing is done before (a process that
/// finds its token in a cache pays for neither the builder nor TLS set-up).
enum Recipe {
    /// From the client's transport.
    Transport { user_agent: String, direct: bool },
    /// From a reqwest builder the user configured.
    Builder(Box<reqwest::ClientBuilder>),
}

/// A `reqwest::Client` built from its recipe the first time it is needed.
struct LazyClient {
    recipe: std::sync::Mutex<Option<Recipe>>,
    client: std::sync::OnceLock<Result<reqwest::Client, String>>,
    transport: Option<Transport>,
}

impl LazyClient {
    /// The client, built now if it was not yet. Redirects are off whatever the recipe said.
    fn get(&self) -> Result<&reqwest::Client, ProviderError> {
        self.client
            .get_or_init(|| {
                let recipe = self
                    .recipe
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                let builder = match (recipe, &self.transport) {
                    (Some(Recipe::Builder(b)), _) => *b,
                    (Some(Recipe::Transport { user_agent, direct }), Some(t)) => {
                        t.builder(&user_agent, direct)?
                    }
                    _ => return Err("the HTTP client could not be built".into()),
                };
                builder
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| authwire::error_chain(&e))
            })
            .as_ref()
            .map_err(|e| ProviderError::permanent(format!("cannot set up the HTTP client: {e}")))
    }
}

/// Read a body, refusing more than [`MAX_RESPONSE_BYTES`].
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    let status = response.status().as_u16();
    let url = without_query(response.url());
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
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        // reqwest's body errors name neither the body nor a header.
        ProviderError::transient(format!(
            "the answer from {url} broke off: {}",
            authwire::error_chain(&e)
        ))
    })? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn without_query(url: &url::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

/// Whether any error in `e`'s source chain displays as something `test` accepts.
fn chain_has(e: &(dyn std::error::Error + 'static), test: impl Fn(&str) -> bool) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if test(&s.to_string()) {
            return true;
        }
        source = s.source();
    }
    false
}

/// The certificate problem behind a failed handshake, if that is what failed.
fn certificate_problem(e: &reqwest::Error) -> Option<CertificateProblem> {
    find_rustls(e).map(CertificateProblem::from_rustls)
}

/// The rustls error in `e`'s chain. `io::Error::source` skips the error it wraps, so wrapped
/// errors are looked into with `get_ref`.
fn find_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = s
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| find_rustls(inner))
        {
            return Some(tls);
        }
        source = s.source();
    }
    None
}

/// A proxy that would not open a tunnel (`CONNECT`): `Some(407)` when it asked for
/// credentials. hyper-util's tunnel error is not public; its message is.
fn tunnel_refusal(e: &reqwest::Error) -> Option<Option<u16>> {
    if chain_has(e, |s| s.contains("proxy authorization required")) {
        Some(Some(407))
    } else if chain_has(e, |s| s.starts_with("tunnel error")) {
        Some(None)
    } else {
        None
    }
}

/// What was wrong with a TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// The server's certificate is signed by a CA that is not trusted here (a private CA, or a
    /// self-signed certificate).
    UnknownIssuer,
    /// The server's certificate has expired, or is not valid yet.
    Expired,
    /// The server's certificate is for another host name.
    WrongHost,
    /// The server's certificate is revoked.
    Revoked,
    /// The server asked for a client certificate and none was given, or refused the one given.
    ClientCertificateRefused,
    /// Another handshake failure.
    Other,
}

impl CertificateProblem {
    /// The certificate problem behind a failed request, found anywhere in `error`'s chain (a
    /// `ProviderError` from any authwire provider, an `AuthError`, a reqwest error from an
    /// adapter's own client); `None` when no TLS handshake failed.
    pub fn find_in(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut source = Some(error);
        while let Some(s) = source {
            if let Some(e) = s.downcast_ref::<CertificateError>() {
                return Some(e.problem);
            }
            source = s.source();
        }
        find_rustls(error).map(Self::from_rustls)
    }

    fn from_rustls(e: &rustls::Error) -> Self {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        match e {
            E::InvalidCertificate(c) => match c {
                C::UnknownIssuer | C::BadSignature => Self::UnknownIssuer,
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
                    Self::Expired
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => Self::WrongHost,
                C::Revoked => Self::Revoked,
                // The platform verifier says "other" for a chain it cannot build, as for an
                // unknown issuer.
                C::Other(o) if o.to_string().to_ascii_lowercase().contains("issuer") => Self::UnknownIssuer,
                _ => Self::Other,
            },
            E::AlertReceived(A::CertificateRequired | A::BadCertificate | A::UnknownCA | A::AccessDenied) => {
                Self::ClientCertificateRefused
            }
            _ => Self::Other,
        }
    }

    /// What it means, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::UnknownIssuer => {
                "the server's certificate is signed by an unknown issuer (a private CA, or self-signed)"
            }
            Self::Expired => "the server's certificate has expired or is not valid yet",
            Self::WrongHost => "the server's certificate is for another host name",
            Self::Revoked => "the server's certificate is revoked",
            Self::ClientCertificateRefused => {
                "the server asked for a client certificate and refused the one sent (or none was sent)"
            }
            Self::Other => "the TLS handshake failed",
        }
    }
}

/// A TLS handshake that failed on a certificate: the source of the [`ProviderError`] it
/// becomes. Names the URL (without its query), never a secret.
#[derive(Debug)]
pub struct CertificateError {
    problem: CertificateProblem,
    url: String,
}

impl CertificateError {
    /// What was wrong.
    pub fn problem(&self) -> CertificateProblem {
        self.problem
    }
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS to {} failed: {}", self.url, self.problem.describe())?;
        match self.problem {
            CertificateProblem::UnknownIssuer => {
                f.write_str("; trust its CA with Transport::root_certificates_pem")
            }
            CertificateProblem::ClientCertificateRefused => {
                f.write_str("; give one with Transport::identity_pem")
            }
            _ => Ok(()),
        }
    }
}

impl std::error::Error for CertificateError {}

/// A proxy that refused a request: the source of the [`ProviderError`] it becomes. Names the
/// proxy without its credentials.
#[derive(Debug)]
pub struct ProxyRefused {
    proxy: Option<String>,
    status: Option<u16>,
    url: String,
}

impl ProxyRefused {
    /// The proxy's status, when it sent one (`407`: it wants credentials).
    pub fn status(&self) -> Option<u16> {
        self.status
    }
}

impl fmt::Display for ProxyRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proxy = self.proxy.as_deref().unwrap_or("a proxy");
        match self.status {
            Some(407) => write!(
                f,
                "the proxy {proxy} refused the request to {} with 407 (Proxy Authentication Required): put the proxy's user and password in its URL (http://user:password@host:port)",
                self.url
            ),
            Some(status) => write!(
                f,
                "the proxy {proxy} refused the request to {} with {status}",
                self.url
            ),
            None => write!(
                f,
                "the proxy {proxy} would not open a tunnel to {}: it refused the CONNECT (wrong proxy credentials, or a destination it does not allow)",
                self.url
            ),
        }
    }
}

impl std::error::Error for ProxyRefused {}

#[derive(Debug)]
struct NetworkError {
    what: &'static str,
    source: reqwest::Error,
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source.url() {
            Some(url) => write!(f, "{} {}", self.what, without_query(url)),
            None => f.write_str(self.what.trim_end_matches(" to").trim_end_matches(" of")),
        }
    }
}

impl std::error::Error for NetworkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.source)
    }
}
