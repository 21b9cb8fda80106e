//! For adapter authors: the request-level seam that HTTP adapters (reqwest, tower, the CLI,
//! yours) call, so that step 5 and the rules for rejected requests are written once, here.
//! Applications do not need this module: they call [`Authorizer::authorize`](crate::Authorizer::authorize)
//! or use an adapter.
//!
//! An adapter does three things per request, each a call into this module:
//!
//! 1. **scope**: [`Origins::admits`] says whether the request's destination gets the token at
//!    all ([`Admission`]): tokens go only to origins the user named, and never over plain http
//!    to a host that is not loopback unless the user opted in by name;
//! 2. **authorize**: [`Authorizer::authorize_target`](crate::Authorizer::authorize_target) runs
//!    steps 1-5 for a [`Target`] (method and URI) and its headers; an adapter whose cached path
//!    must not wait (a tower `Service::call`) tries
//!    [`try_authorize_target_sent`](crate::Authorizer::try_authorize_target_sent) first, which
//!    hands back a [`SentToken`] to judge the answer with;
//! 3. **judge the answer**: [`Authorizer::decide`](crate::Authorizer::decide) takes what came
//!    back ([`Answer`]: status, challenges, whether a redirect happened, whether the request can
//!    be sent again) and the header that was sent, forgets a rejected token, and says
//!    [`RetryDecision::RetryWith`] a new header, or [`RetryDecision::Done`]. An adapter that
//!    never retries calls [`Authorizer::judge`](crate::Authorizer::judge) (or
//!    [`SentToken::judge`]) instead.
//!
//! ```
//! use authwire::{Answer, Authorizer, Origins, RejectionRules, RetryDecision, StaticTokenProvider, Target};
//! use authwire::http::{self, HeaderMap, Method, StatusCode};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let authorizer = Authorizer::new(StaticTokenProvider::new("t0k3n"));
//! let origins = Origins::new(["https://api.example"])?;
//!
//! let uri: http::Uri = "https://api.example/v1/things?page=2".parse()?;
//! let target = Target::from_uri(&Method::GET, &uri);
//! assert!(origins.admits(&target).authorize());
//!
//! let mut headers = HeaderMap::new();
//! let sent = authorizer.authorize_target(&target, &mut headers).await?;
//! assert_eq!(headers["authorization"], "Bearer t0k3n");
//!
//! // The server accepted it: nothing to do.
//! let ok = HeaderMap::new();
//! let decision = authorizer.decide(&Answer::new(StatusCode::OK, &ok), &sent, RejectionRules::default()).await;
//! assert!(matches!(decision, RetryDecision::Done));
//! # Ok(()) }
//! ```
//!
//! # A complete adapter
//!
//! For a client whose `send` takes the headers and returns the answer's status and headers:
//! scope, authorize, send, judge, and send once more with a new header when the token was
//! rejected. The reqwest middleware and the tower layer are this loop, in their own types.
//!
//! ```
//! use authwire::http::{self, HeaderMap, HeaderValue, Method, StatusCode, Uri};
//! use authwire::request::{Answer, Origins, RejectionRules, RetryDecision, Target};
//! use authwire::{async_trait, AuthError, Authorizer, CacheKey, IdentityProvider, ProviderError, Token};
//! use std::future::Future;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! async fn send_authorized<F, Fut>(
//!     authorizer: &Authorizer,
//!     origins: &Origins,
//!     method: &Method,
//!     uri: &Uri,
//!     send: F,
//! ) -> Result<(StatusCode, HeaderMap), AuthError>
//! where
//!     F: Fn(HeaderMap) -> Fut,
//!     Fut: Future<Output = (StatusCode, HeaderMap)>,
//! {
//!     let target = Target::from_uri(method, uri);
//!     let mut headers = HeaderMap::new();
//!     if !origins.admits(&target).authorize() {
//!         return Ok(send(headers).await); // not an origin the user named: no token leaves
//!     }
//!     let sent = authorizer.authorize_target(&target, &mut headers).await?;
//!     let (status, answer_headers) = send(headers.clone()).await;
//!     let answer = Answer::new(status, &answer_headers)
//!         .for_target(&target)
//!         .replayable(true); // this request has no body, so it can be sent again
//!     match authorizer.decide(&answer, &sent, RejectionRules::default()).await {
//!         RetryDecision::RetryWith(retry) => {
//!             retry.apply(&target, &mut headers)?;
//!             Ok(send(headers).await) // the answer to the retry is final
//!         }
//!         _ => Ok((status, answer_headers)),
//!     }
//! }
//!
//! // A provider that issues `token-1`, `token-2`, ...; the server below has revoked `token-1`.
//! struct Numbered(AtomicUsize);
//! #[async_trait]
//! impl IdentityProvider for Numbered {
//!     async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
//!         Ok(Token::new(format!("token-{}", self.0.fetch_add(1, Ordering::SeqCst) + 1)))
//!     }
//!     fn cache_key(&self) -> CacheKey { CacheKey::from_static("numbered") }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = |headers: HeaderMap| async move {
//!     if headers["authorization"] == "Bearer token-1" {
//!         let mut challenge = HeaderMap::new();
//!         challenge.insert("www-authenticate", HeaderValue::from_static(r#"Bearer error="invalid_token""#));
//!         (StatusCode::UNAUTHORIZED, challenge)
//!     } else {
//!         (StatusCode::OK, HeaderMap::new())
//!     }
//! };
//! let authorizer = Authorizer::new(Numbered(AtomicUsize::new(0)));
//! let origins = Origins::new(["https://api.example"])?;
//! let uri: Uri = "https://api.example/v1/things".parse()?;
//! let (status, _) = send_authorized(&authorizer, &origins, &Method::GET, &uri, server).await?;
//! assert_eq!(status, StatusCode::OK);
//! assert_eq!(authorizer.metrics().fetches, 2, "one refresh for the rejected token");
//! # Ok(()) }
//! ```

pub use crate::authorizer::{AuthorizeTarget, AuthorizeTargetFuture, SentToken};

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Where a request goes: its method and the parts of its URI that authorization needs.
///
/// Borrowed from the adapter's own request type, so building one costs nothing. Proofs of
/// possession (DPoP) sign the method and URI; origin scoping reads scheme, host and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// The request method.
    pub method: &'a Method,
    /// `https` or `http` (any case).
    pub scheme: &'a str,
    /// The host as in the URI (`api.example`, `127.0.0.1`, `[::1]`).
    pub host: &'a str,
    /// The port, if the URI names one (else the scheme's default).
    pub port: Option<u16>,
    /// The path, `/` if empty.
    pub path: &'a str,
    /// The query, without `?`.
    pub query: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// The target of a request to `uri`. A relative URI (`/pkg.Service/Method`, as a tonic
    /// channel's requests have above the layer that adds the origin) has an empty scheme and
    /// host: see [`Target::is_relative`].
    pub fn from_uri(method: &'a Method, uri: &'a http::Uri) -> Self {
        Self {
            method,
            scheme: uri.scheme_str().unwrap_or(""),
            host: uri.host().unwrap_or(""),
            port: uri.port_u16(),
            path: if uri.path().is_empty() { "/" } else { uri.path() },
            query: uri.query(),
        }
    }

    /// Whether the URI had no scheme or host: the destination is decided further down (a
    /// client or channel built for one server).
    pub fn is_relative(&self) -> bool {
        self.scheme.is_empty() || self.host.is_empty()
    }

    /// The port, or the scheme's default (443 for https, 80 for http).
    pub fn port_or_default(&self) -> Option<u16> {
        self.port.or_else(|| default_port(self.scheme))
    }
}

/// `scheme://host:port`, lowercased: the key under which a server's DPoP nonce is kept.
pub(crate) fn origin_key(target: &Target<'_>) -> String {
    format!(
        "{}://{}:{}",
        target.scheme.to_ascii_lowercase(),
        target.host.to_ascii_lowercase(),
        target.port_or_default().unwrap_or(0)
    )
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        None
    }
}

/// Whether `host` (as in a URI: `127.0.0.1`, `[::1]`, `localhost`) is a loopback host.
///
/// The one loopback rule of the workspace: plain http is acceptable only to these hosts.
///
/// ```
/// assert!(authwire::is_loopback_host("127.0.0.1"));
/// assert!(authwire::is_loopback_host("127.8.9.10"));
/// assert!(authwire::is_loopback_host("[::1]"));
/// assert!(authwire::is_loopback_host("LocalHost"));
/// assert!(!authwire::is_loopback_host("localhost.evil.example"));
/// assert!(!authwire::is_loopback_host("10.0.0.1"));
/// ```
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return ip.is_loopback();
    }
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse::<Ipv6Addr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// One origin (RFC 6454): scheme, host and port, compared case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    https: bool,
    host: Box<str>,
    port: u16,
}

impl Origin {
    fn of(target: &Target<'_>) -> Option<Self> {
        let https = if target.scheme.eq_ignore_ascii_case("https") {
            true
        } else if target.scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return None;
        };
        Some(Self {
            https,
            host: target.host.to_ascii_lowercase().into(),
            port: target.port_or_default()?,
        })
    }

    fn matches(&self, target: &Target<'_>) -> bool {
        self.https == target.scheme.eq_ignore_ascii_case("https")
            && self.host.eq_ignore_ascii_case(target.host)
            && Some(self.port) == target.port_or_default()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// The origins a token may be sent to, shared by every HTTP adapter.
///
/// - Named origins: requests to other origins pass through untouched (no token).
/// - [`Origins::any`]: every destination gets the token, which is only right for a client that
///   talks to a single API.
/// - In both modes, plain `http` to a host that is not loopback is refused (the token would
///   cross the network readable), unless allowed by name with
///   [`OriginsBuilder::allow_insecure_http`].
///
/// ```
/// use authwire::{Origins, Target};
/// let origins = Origins::new(["https://api.example", "http://127.0.0.1:8080"])?;
/// let uri: http::Uri = "https://API.example:443/v1".parse()?;
/// assert!(origins.admits(&Target::from_uri(&http::Method::GET, &uri)).authorize());
/// let uri: http::Uri = "https://api.example.evil.test/".parse()?;
/// assert!(!origins.admits(&Target::from_uri(&http::Method::GET, &uri)).authorize());
/// assert!(Origins::new(["http://api.example"]).is_err()); // plain http off loopback
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origins {
    /// `None`: any origin.
    named: Option<Box<[Origin]>>,
    allow_insecure_http: bool,
}

/// What an adapter does with a request, from [`Origins::admits`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Authorize it.
    Authorize,
    /// Send it untouched: its origin was not named.
    PassThrough,
    /// Do not send it: it would carry the token over plain http to a host that is not loopback.
    Refuse(OriginError),
}

impl Admission {
    /// Whether the request gets the token.
    pub fn authorize(&self) -> bool {
        matches!(self, Admission::Authorize)
    }
}

impl Origins {
    /// Tokens go to these origins only (`https://api.example`, `http://127.0.0.1:8080`, ...).
    /// Plain http is accepted for loopback hosts only; see [`Origins::builder`] to opt in.
    pub fn new<I, S>(origins: I) -> Result<Self, OriginError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut b = Self::builder();
        for o in origins {
            b = b.origin(o.as_ref());
        }
        b.build()
    }

    /// Tokens go to every destination (still never over plain http off loopback).
    pub fn any() -> Self {
        Self {
            named: None,
            allow_insecure_http: false,
        }
    }

    /// Configure origins.
    pub fn builder() -> OriginsBuilder {
        OriginsBuilder::default()
    }

    /// Whether every origin is admitted.
    pub fn is_any(&self) -> bool {
        self.named.is_none()
    }

    /// What to do with a request to `target`.
    ///
    /// A relative target (no scheme or host) is authorized only by [`Origins::any`]: its
    /// destination was fixed by whoever built the client below the adapter.
    #[inline]
    pub fn admits(&self, target: &Target<'_>) -> Admission {
        if target.is_relative() {
            return if self.named.is_none() {
                Admission::Authorize
            } else {
                Admission::PassThrough
            };
        }
        let named = match &self.named {
            Some(named) => {
                if !named.iter().any(|o| o.matches(target)) {
                    return Admission::PassThrough;
                }
                true
            }
            None => false,
        };
        if target.scheme.eq_ignore_ascii_case("https") {
            return Admission::Authorize;
        }
        if target.scheme.eq_ignore_ascii_case("http") {
            // Named origins were checked at construction; here only `any` needs the rule.
            if named || self.allow_insecure_http || is_loopback_host(target.host) {
                return Admission::Authorize;
            }
            return Admission::Refuse(OriginError::Insecure {
                origin: format!("http://{}", target.host),
            });
        }
        Admission::Refuse(OriginError::Invalid {
            origin: target.scheme.to_owned(),
        })
    }
}

impl fmt::Display for Origins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.named {
            None => f.write_str("any origin"),
            Some(named) => {
                for (i, o) in named.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{o}")?;
                }
                Ok(())
            }
        }
    }
}

/// Configures [`Origins`].
#[derive(Clone, Debug, Default)]
pub struct OriginsBuilder {
    origins: Vec<String>,
    any: bool,
    allow_insecure_http: bool,
}

impl OriginsBuilder {
    /// Admit this origin; repeatable.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origins.push(origin.into());
        self
    }

    /// Admit every origin (`true`), or only the named ones (`false`, the default).
    pub fn any_origin(mut self, on: bool) -> Self {
        self.any = on;
        self
    }

    /// Allow plain `http` to hosts that are not loopback (default: refused).
    pub fn allow_insecure_http(mut self, on: bool) -> Self {
        self.allow_insecure_http = on;
        self
    }

    /// Check the origins.
    pub fn build(self) -> Result<Origins, OriginError> {
        if self.any {
            return Ok(Origins {
                named: None,
                allow_insecure_http: self.allow_insecure_http,
            });
        }
        if self.origins.is_empty() {
            return Err(OriginError::Empty);
        }
        let named = self
            .origins
            .iter()
            .map(|o| parse_origin(o, self.allow_insecure_http))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Origins {
            named: Some(named.into()),
            allow_insecure_http: self.allow_insecure_http,
        })
    }
}

fn parse_origin(given: &str, allow_insecure_http: bool) -> Result<Origin, OriginError> {
    let invalid = || OriginError::Invalid {
        origin: given.to_owned(),
    };
    let uri: http::Uri = given.parse().map_err(|_| invalid())?;
    let target = Target::from_uri(&Method::GET, &uri);
    if target.is_relative() || uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid());
    }
    let origin = Origin::of(&target).ok_or_else(invalid)?;
    if !origin.https && !allow_insecure_http && !is_loopback_host(&origin.host) {
        return Err(OriginError::Insecure {
            origin: format!("http://{}", origin.host),
        });
    }
    Ok(origin)
}

/// Why [`Origins`] could not be built, or a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginError {
    /// An origin is not an `https` or `http` URL with a host.
    Invalid {
        /// What was given.
        origin: String,
    },
    /// An origin is plain http to a host that is not loopback.
    Insecure {
        /// The origin.
        origin: String,
    },
    /// No origin was given.
    Empty,
}

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginError::Invalid { origin } => {
                write!(f, "{origin:?} is not an origin like https://api.example")
            }
            OriginError::Insecure { origin } => write!(
                f,
                "{origin} is plain http to a host that is not loopback: the token would cross the network readable; use https, or allow insecure http by name"
            ),
            OriginError::Empty => {
                f.write_str("no origin given: name the APIs that get the token, or admit any origin by name")
            }
        }
    }
}

impl std::error::Error for OriginError {}

/// What came back for an authorized request, as [`Authorizer::decide`](crate::Authorizer::decide)
/// needs it.
#[derive(Clone, Debug)]
pub struct Answer<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
    trailers: Option<&'a HeaderMap>,
    redirected: bool,
    replayable: bool,
    origin: Option<String>,
}

impl<'a> Answer<'a> {
    /// A response with this status and these headers, not redirected, not replayable.
    pub fn new(status: StatusCode, headers: &'a HeaderMap) -> Self {
        Self {
            status,
            headers,
            trailers: None,
            redirected: false,
            replayable: false,
            origin: None,
        }
    }

    /// The request went to `target`: a `DPoP-Nonce` in the answer is remembered for its origin
    /// (RFC 9449 section 9), and a `use_dpop_nonce` challenge is answered with one retry.
    pub fn for_target(mut self, target: &Target<'_>) -> Self {
        self.origin = Some(origin_key(target));
        self
    }

    /// The `DPoP-Nonce` the server sent, if any (bounded: at most 512 visible characters).
    pub(crate) fn dpop_nonce(&self) -> Option<&str> {
        self.headers
            .get(&DPOP_NONCE)
            .and_then(|v| v.to_str().ok())
            .filter(|n| !n.is_empty() && n.len() <= 512)
    }

    /// Whether the server asks for a DPoP nonce: a 401 whose DPoP challenge says
    /// `error="use_dpop_nonce"` (RFC 9449 section 9).
    pub(crate) fn asks_for_dpop_nonce(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
            && self
                .headers
                .get_all(http::header::WWW_AUTHENTICATE)
                .iter()
                .any(|v| {
                    v.to_str().is_ok_and(|v| {
                        crate::challenge::parse(v).iter().any(|c| {
                            c.scheme.eq_ignore_ascii_case("dpop")
                                && c.param("error") == Some("use_dpop_nonce")
                        })
                    })
                })
    }

    pub(crate) fn origin(&self) -> &str {
        self.origin.as_deref().unwrap_or("")
    }

    /// The response came through one or more redirects (its URL is not the one the request was
    /// sent to). Such a request is never sent again: the first hop may have processed it.
    pub fn redirected(mut self, redirected: bool) -> Self {
        self.redirected = redirected;
        self
    }

    /// The adapter holds a copy of the request it could send again (a body that can be
    /// replayed). Without one, a rejected token is still forgotten, but there is no retry.
    pub fn replayable(mut self, replayable: bool) -> Self {
        self.replayable = replayable;
        self
    }

    /// gRPC trailers, when the adapter has them (a trailers-only response has them in the
    /// headers already).
    pub fn trailers(mut self, trailers: Option<&'a HeaderMap>) -> Self {
        self.trailers = trailers;
        self
    }

    /// Whether the response came through a redirect.
    pub fn is_redirected(&self) -> bool {
        self.redirected
    }

    /// Whether the adapter can send the request again.
    pub fn is_replayable(&self) -> bool {
        self.replayable
    }

    /// The step-up challenge in this answer, if any: a 401 or 403 whose `Bearer` or `DPoP`
    /// challenge says `insufficient_user_authentication`, `insufficient_scope` or
    /// `insufficient_claims` (see [`StepUp`]). Parameters longer than 4 KiB or not visible
    /// ASCII are ignored; a claims challenge whose `claims` is not a JSON object is not one.
    pub fn step_up(&self) -> Option<StepUp> {
        if self.status != StatusCode::UNAUTHORIZED && self.status != StatusCode::FORBIDDEN {
            return None;
        }
        self.headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(crate::challenge::parse)
            .find_map(|c| StepUp::from_challenge(&c))
    }

    /// [`Answer::step_up`], unless a parameter repeats the credential that was `sent`.
    pub(crate) fn step_up_for(&self, sent: &HeaderValue) -> Option<StepUp> {
        let step = self.step_up()?;
        let credential = sent
            .to_str()
            .ok()
            .and_then(|s| s.split_once(' '))
            .map_or("", |(_, c)| c.trim());
        (!step.mentions(credential)).then_some(step)
    }

    /// Whether this answer says the token was rejected, under `rules`:
    /// - HTTP 401 whose `WWW-Authenticate` says `invalid_token` (RFC 6750 section 3.1, RFC 9449
    ///   section 7.1), or any 401 with [`RejectionRules::retry_on_any_401`];
    /// - gRPC status 16 (`UNAUTHENTICATED`), in the headers (trailers-only) or the trailers.
    pub fn rejects_token(&self, rules: RejectionRules) -> bool {
        if self.status == StatusCode::UNAUTHORIZED {
            return rules.any_401 || crate::challenge::token_rejected(self.headers);
        }
        grpc_unauthenticated(self.headers) || self.trailers.is_some_and(grpc_unauthenticated)
    }
}

/// Header names looked up in every answer, parsed once.
static DPOP_NONCE: http::HeaderName = http::HeaderName::from_static("dpop-nonce");
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// `grpc-status: 16` (UNAUTHENTICATED).
fn grpc_unauthenticated(headers: &HeaderMap) -> bool {
    headers
        .get(&GRPC_STATUS)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"16")
}

/// Which answers count as a rejected token (see [`Answer::rejects_token`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectionRules {
    any_401: bool,
}

impl RejectionRules {
    /// Treat every 401 as a rejected token, not only those whose challenge says `invalid_token`
    /// (for servers that answer a bare 401). Default: off.
    pub fn retry_on_any_401(mut self, on: bool) -> Self {
        self.any_401 = on;
        self
    }
}

/// What an adapter does after an answer, from [`Authorizer::decide`](crate::Authorizer::decide).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum RetryDecision {
    /// Hand the answer to the caller as it is.
    Done,
    /// Send the same request once more, to the same URL, after [`Retry::apply`] to its
    /// headers. The answer to the retry is final: adapters do not decide again for it.
    RetryWith(Retry),
    /// The resource server wants a different token, not a fresher one of the same kind: a
    /// stronger or more recent authentication (RFC 9470), more scope (RFC 6750 section 3.1), or
    /// claims (an Entra claims challenge). An adapter that can replay the request asks
    /// [`Authorizer::step_up`](crate::Authorizer::step_up) for such a token and sends the
    /// request once more with it; when that fails, the caller gets
    /// [`AuthError::StepUpRequired`](crate::AuthError::StepUpRequired), carrying the challenge.
    /// Never more than one replay.
    StepUp(StepUp),
}

/// What a resource server's step-up challenge asks for (see [`RetryDecision::StepUp`] and
/// [`IdentityProvider::step_up`](crate::IdentityProvider::step_up)).
///
/// Read from a `WWW-Authenticate: Bearer` (or `DPoP`) challenge of a 401 or 403 answer:
///
/// ```
/// use authwire::http::{HeaderMap, HeaderValue, StatusCode};
/// use authwire::{Answer, StepUp, StepUpReason};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("www-authenticate", HeaderValue::from_static(
///     r#"Bearer error="insufficient_user_authentication", acr_values="phr", max_age="300""#));
/// let step = Answer::new(StatusCode::UNAUTHORIZED, &headers).step_up().unwrap();
/// assert_eq!(step.reason, StepUpReason::Authentication);
/// assert_eq!(step.acr_values.as_deref(), Some("phr"));
/// assert_eq!(step.max_age, Some(300));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepUp {
    /// Which challenge this is.
    pub reason: StepUpReason,
    /// `acr_values`: the authentication context classes the server accepts, space-separated
    /// (RFC 9470 section 3).
    pub acr_values: Option<String>,
    /// `max_age`: the most seconds since the person last authenticated (RFC 9470 section 3).
    pub max_age: Option<u64>,
    /// `scope`: the scope the request needs (RFC 6750 section 3).
    pub scope: Option<String>,
    /// `claims`: the claims request, decoded from the challenge's base64url into its JSON text
    /// (OpenID Connect Core section 5.5, as Entra's claims challenges carry it).
    pub claims: Option<String>,
}

/// The kind of a [`StepUp`] challenge, from its `error` code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepUpReason {
    /// `insufficient_user_authentication` (RFC 9470): authenticate again, as `acr_values` and
    /// `max_age` say.
    Authentication,
    /// `insufficient_scope` (RFC 6750 section 3.1): the token lacks `scope`.
    Scope,
    /// `insufficient_claims` (Entra's claims challenge, continuous access evaluation): ask for
    /// a token with `claims`.
    Claims,
}

impl StepUpReason {
    /// The challenge's `error` code.
    pub fn error_code(self) -> &'static str {
        match self {
            StepUpReason::Authentication => "insufficient_user_authentication",
            StepUpReason::Scope => "insufficient_scope",
            StepUpReason::Claims => "insufficient_claims",
        }
    }
}

/// The most bytes of a challenge parameter kept (a claims request is a small JSON object).
const MAX_CHALLENGE_PARAM: usize = 4096;

impl StepUp {
    /// A challenge of this kind with no parameters (for providers' tests and for adapters that
    /// read challenges themselves).
    pub fn new(reason: StepUpReason) -> Self {
        Self {
            reason,
            acr_values: None,
            max_age: None,
            scope: None,
            claims: None,
        }
    }

    /// Set `acr_values`.
    pub fn with_acr_values(mut self, acr_values: impl Into<String>) -> Self {
        self.acr_values = Some(acr_values.into());
        self
    }

    /// Set `max_age`, in seconds.
    pub fn with_max_age(mut self, seconds: u64) -> Self {
        self.max_age = Some(seconds);
        self
    }

    /// Set `scope`.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Set `claims` (the JSON text of a claims request).
    pub fn with_claims(mut self, claims: impl Into<String>) -> Self {
        self.claims = Some(claims.into());
        self
    }

    /// Read a step-up challenge from one parsed challenge, if it is one.
    fn from_challenge(c: &crate::challenge::Challenge) -> Option<Self> {
        let token_scheme = c.scheme.eq_ignore_ascii_case("bearer") || c.scheme.eq_ignore_ascii_case("dpop");
        if !token_scheme {
            return None;
        }
        let reason = match c.param("error")? {
            "insufficient_user_authentication" => StepUpReason::Authentication,
            "insufficient_scope" => StepUpReason::Scope,
            "insufficient_claims" => StepUpReason::Claims,
            _ => return None,
        };
        let text = |name: &str| {
            c.param(name)
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= MAX_CHALLENGE_PARAM)
                .filter(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
                .map(str::to_owned)
        };
        let claims = match text("claims") {
            Some(encoded) => Some(decode_claims(&encoded)?),
            None => None,
        };
        if reason == StepUpReason::Claims && claims.is_none() {
            return None; // a claims challenge without claims cannot be answered by anyone
        }
        Some(Self {
            reason,
            acr_values: text("acr_values"),
            max_age: c.param("max_age").and_then(|v| v.trim().parse().ok()),
            scope: text("scope"),
            claims,
        })
    }

    /// Whether any parameter contains `secret` (a server that echoes the rejected token back in
    /// a challenge must not get it into an error message).
    fn mentions(&self, secret: &str) -> bool {
        !secret.is_empty()
            && [&self.acr_values, &self.scope, &self.claims]
                .iter()
                .any(|v| v.as_deref().is_some_and(|v| v.contains(secret)))
    }
}

impl fmt::Display for StepUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason.error_code())?;
        if let Some(v) = &self.acr_values {
            write!(f, " acr_values={v:?}")?;
        }
        if let Some(v) = self.max_age {
            write!(f, " max_age={v}")?;
        }
        if let Some(v) = &self.scope {
            write!(f, " scope={v:?}")?;
        }
        if let Some(v) = &self.claims {
            write!(f, " claims={v}")?;
        }
        Ok(())
    }
}

/// A challenge's `claims`: base64url (padded or not) of a JSON object, as Entra sends it; the
/// JSON text itself is accepted too. Anything else is not a claims request.
fn decode_claims(encoded: &str) -> Option<String> {
    use base64::Engine as _;
    let looks_like_json = encoded.starts_with('{');
    let text = if looks_like_json {
        encoded.to_owned()
    } else {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .or_else(|_| {
                base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded.trim_end_matches('='))
            })
            .ok()?;
        String::from_utf8(bytes).ok()?
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(_)) => Some(text),
        _ => None,
    }
}

/// How to authorize the one retry of a rejected request (see [`RetryDecision::RetryWith`]).
#[derive(Clone)]
pub struct Retry {
    step5: crate::pipeline::Step5,
    nonce: Option<String>,
}

impl Retry {
    pub(crate) fn new(step5: crate::pipeline::Step5, nonce: Option<String>) -> Self {
        Self { step5, nonce }
    }

    /// Step 5 for the retry: put the fresh `Authorization` header (and, for a bound token, a
    /// fresh proof for `target`) on the copy of the request.
    pub fn apply(self, target: &Target<'_>, headers: &mut HeaderMap) -> Result<(), crate::error::AuthError> {
        self.step5.apply(target, self.nonce.as_deref(), headers).map(drop)
    }

    /// The fresh header (never the one that was rejected).
    pub fn header(&self) -> &HeaderValue {
        &self.step5.header
    }
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("header", &self.step5.header)
            .field("bound", &self.step5.bound.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(m: &'a Method, uri: &'a http::Uri) -> Target<'a> {
        Target::from_uri(m, uri)
    }

    fn admits(origins: &Origins, uri: &str) -> Admission {
        let uri: http::Uri = uri.parse().unwrap();
        origins.admits(&target(&Method::GET, &uri))
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let o = Origins::new(["https://API.example"]).unwrap();
        assert!(admits(&o, "https://api.example/x?y").authorize());
        assert!(admits(&o, "https://api.example:443/").authorize());
        assert_eq!(admits(&o, "https://api.example:8443/"), Admission::PassThrough);
        assert_eq!(
            admits(&o, "https://api.example.evil.test/"),
            Admission::PassThrough
        );
        assert_eq!(admits(&o, "http://api.example/"), Admission::PassThrough);
    }

    #[test]
    fn plain_http_off_loopback_is_refused_in_every_mode() {
        assert!(Origins::new(["http://127.0.0.1:8080", "http://localhost", "http://[::1]:1"]).is_ok());
        assert!(matches!(
            Origins::new(["http://api.example"]),
            Err(OriginError::Insecure { .. })
        ));
        let any = Origins::any();
        assert!(matches!(
            admits(&any, "http://api.example/"),
            Admission::Refuse(_)
        ));
        assert!(admits(&any, "http://127.0.0.1:9/").authorize());
        assert!(admits(&any, "https://anything.example/").authorize());
        let opted = Origins::builder()
            .any_origin(true)
            .allow_insecure_http(true)
            .build()
            .unwrap();
        assert!(admits(&opted, "http://api.example/").authorize());
        assert!(
            Origins::builder()
                .origin("http://api.example")
                .allow_insecure_http(true)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn malformed_origins_are_refused() {
        for bad in [
            "api.example",
            "ftp://x",
            "https://",
            "https://user@api.example",
            "",
        ] {
            assert!(Origins::new([bad]).is_err(), "{bad:?} accepted");
        }
        let none: [&str; 0] = [];
        assert_eq!(Origins::new(none), Err(OriginError::Empty));
    }

    #[test]
    fn rejections_are_read_from_401_challenges_and_grpc_status() {
        let mut h = HeaderMap::new();
        let rules = RejectionRules::default();
        assert!(!Answer::new(StatusCode::UNAUTHORIZED, &h).rejects_token(rules));
        assert!(Answer::new(StatusCode::UNAUTHORIZED, &h).rejects_token(rules.retry_on_any_401(true)));
        h.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer error="invalid_token""#),
        );
        assert!(Answer::new(StatusCode::UNAUTHORIZED, &h).rejects_token(rules));
        assert!(!Answer::new(StatusCode::FORBIDDEN, &h).rejects_token(rules));

        let mut g = HeaderMap::new();
        g.insert("grpc-status", HeaderValue::from_static("16"));
        assert!(
            Answer::new(StatusCode::OK, &g).rejects_token(rules),
            "trailers-only"
        );
        let empty = HeaderMap::new();
        assert!(
            Answer::new(StatusCode::OK, &empty)
                .trailers(Some(&g))
                .rejects_token(rules)
        );
        g.insert("grpc-status", HeaderValue::from_static("7"));
        assert!(
            !Answer::new(StatusCode::OK, &g).rejects_token(rules),
            "PERMISSION_DENIED is not"
        );
    }
}
