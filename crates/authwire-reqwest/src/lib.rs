//! [`reqwest_middleware`] for authwire: every request to an allowed origin carries a valid
//! `Authorization` header, and a 401 that says the token is bad is answered by one refresh and
//! one retry.
//!
//! ```no_run
//! use authwire::Authorizer;
//! use authwire_oauth2::OAuth2Provider;
//! use authwire_reqwest::AuthMiddleware;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = OAuth2Provider::builder()
//!     .issuer("https://idp.example")
//!     .client_id("orders-service")
//!     .client_secret(std::env::var("CLIENT_SECRET")?)
//!     .build()?;
//! let authorizer = Authorizer::new(provider);
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(AuthMiddleware::for_origins(authorizer, ["https://api.example"])?)
//!     .build();
//! let things = client.get("https://api.example/v1/things").send().await?;
//! # let _ = things; Ok(()) }
//! ```
//!
//! # Behaviour
//!
//! - **Scoping.** The token goes only to the origins (scheme, host, port) given at construction,
//!   so a token meant for one API never leaks to another host the same client talks to. Requests
//!   to other origins pass through untouched. [`AuthMiddleware::any_origin`] opts out, by name.
//!   Plain `http` origins are refused unless they are loopback or
//!   [`allow_insecure_http`](AuthMiddlewareBuilder::allow_insecure_http) is called.
//! - **401.** When the response is 401 and its `WWW-Authenticate` says `invalid_token` (or on any
//!   401, with [`retry_on_any_401`](AuthMiddlewareBuilder::retry_on_any_401)), the middleware
//!   calls [`Authorizer::invalidate`] with the header it sent and, if the body can be replayed
//!   (`Request::try_clone`), retries once with a fresh token. Never more than once, and not at
//!   all with the same token, so a server that always answers 401 cannot make it loop or hammer
//!   the identity provider. A streaming body is not retried: the 401 is returned unchanged.
//! - **Errors.** If no token can be had, the request is not sent; the error is
//!   `reqwest_middleware::Error::Middleware` holding the [`AuthError`], reachable with
//!   `err.downcast_ref::<AuthError>()` on the inner `anyhow::Error`.

use authwire::{AuthError, Authorizer};
use http::{Extensions, HeaderValue, StatusCode, header::AUTHORIZATION};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use std::fmt;
use tracing::debug;
use url::Url;

/// The middleware; cheap to clone (it holds an [`Authorizer`] and the allowed origins).
#[derive(Clone)]
pub struct AuthMiddleware {
    authorizer: Authorizer,
    origins: Option<Vec<Origin>>,
    retry_on_any_401: bool,
}

/// A scheme, host and port, compared as RFC 6454 origins.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    fn of(url: &Url) -> Option<Self> {
        Some(Self {
            scheme: url.scheme().to_ascii_lowercase(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default(),
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}://{}:{p}", self.scheme, self.host),
            None => write!(f, "{}://{}", self.scheme, self.host),
        }
    }
}

/// Why an [`AuthMiddleware`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginError {
    /// An origin is not a URL with a host.
    Invalid {
        /// What was given.
        origin: String,
    },
    /// An origin is plain http to a host that is not loopback.
    Insecure {
        /// What was given.
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
                "{origin} is plain http to a host that is not loopback: tokens would cross the network readable; use https, or call allow_insecure_http()"
            ),
            OriginError::Empty => f.write_str(
                "no origin given: name the APIs that get the token, or use AuthMiddleware::any_origin",
            ),
        }
    }
}

impl std::error::Error for OriginError {}

impl AuthMiddleware {
    /// Attach tokens to requests for these origins only (`https://api.example`,
    /// `http://127.0.0.1:8080`, ...).
    pub fn for_origins<I, S>(authorizer: Authorizer, origins: I) -> Result<Self, OriginError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut b = Self::builder(authorizer);
        for o in origins {
            b = b.origin(o.as_ref());
        }
        b.build()
    }

    /// Attach tokens to every request, whatever its destination. Only for clients that talk to
    /// a single API.
    pub fn any_origin(authorizer: Authorizer) -> Self {
        Self {
            authorizer,
            origins: None,
            retry_on_any_401: false,
        }
    }

    /// Configure a middleware.
    pub fn builder(authorizer: Authorizer) -> AuthMiddlewareBuilder {
        AuthMiddlewareBuilder {
            authorizer,
            origins: Vec::new(),
            any_origin: false,
            allow_insecure_http: false,
            retry_on_any_401: false,
        }
    }

    fn applies_to(&self, url: &Url) -> bool {
        match (&self.origins, Origin::of(url)) {
            (None, _) => true,
            (Some(allowed), Some(origin)) => allowed.contains(&origin),
            (Some(_), None) => false,
        }
    }

    fn token_was_rejected(&self, response: &Response) -> bool {
        response.status() == StatusCode::UNAUTHORIZED
            && (self.retry_on_any_401 || authwire::challenge::token_rejected(response.headers()))
    }
}

/// Configures an [`AuthMiddleware`].
pub struct AuthMiddlewareBuilder {
    authorizer: Authorizer,
    origins: Vec<String>,
    any_origin: bool,
    allow_insecure_http: bool,
    retry_on_any_401: bool,
}

impl AuthMiddlewareBuilder {
    /// Attach tokens to requests for this origin; repeatable.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origins.push(origin.into());
        self
    }

    /// Attach tokens to every request.
    pub fn any_origin(mut self) -> Self {
        self.any_origin = true;
        self
    }

    /// Allow plain `http` origins that are not loopback.
    pub fn allow_insecure_http(mut self) -> Self {
        self.allow_insecure_http = true;
        self
    }

    /// Refresh and retry on every 401, not only on those whose challenge says `invalid_token`
    /// (for servers that answer a bare 401).
    pub fn retry_on_any_401(mut self, on: bool) -> Self {
        self.retry_on_any_401 = on;
        self
    }

    /// Check the origins and build.
    pub fn build(self) -> Result<AuthMiddleware, OriginError> {
        let origins = if self.any_origin {
            None
        } else {
            if self.origins.is_empty() {
                return Err(OriginError::Empty);
            }
            let parsed = self
                .origins
                .iter()
                .map(|o| parse_origin(o, self.allow_insecure_http))
                .collect::<Result<Vec<_>, _>>()?;
            Some(parsed)
        };
        Ok(AuthMiddleware {
            authorizer: self.authorizer,
            origins,
            retry_on_any_401: self.retry_on_any_401,
        })
    }
}

fn parse_origin(given: &str, allow_insecure_http: bool) -> Result<Origin, OriginError> {
    let invalid = || OriginError::Invalid {
        origin: given.to_owned(),
    };
    let url = Url::parse(given).map_err(|_| invalid())?;
    let origin = Origin::of(&url).ok_or_else(invalid)?;
    match origin.scheme.as_str() {
        "https" => Ok(origin),
        "http" if allow_insecure_http || is_loopback(&url) => Ok(origin),
        "http" => Err(OriginError::Insecure {
            origin: origin.to_string(),
        }),
        _ => Err(invalid()),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn auth_failed(e: AuthError) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(e)
}

#[authwire::async_trait]
impl Middleware for AuthMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if !self.applies_to(request.url()) {
            return next.run(request, extensions).await;
        }
        let sent: HeaderValue = self
            .authorizer
            .authorization_header()
            .await
            .map_err(auth_failed)?;
        request.headers_mut().insert(AUTHORIZATION, sent.clone());
        let replay = request.try_clone();
        let response = next.clone().run(request, extensions).await?;
        if !self.token_was_rejected(&response) {
            return Ok(response);
        }
        // The server rejected the token: forget it (unless a refresh already replaced it), so
        // that this and every later request gets a fresh one.
        self.authorizer.invalidate(&sent);
        let Some(mut retry) = replay else {
            debug!("401 for a request whose body cannot be replayed; not retrying");
            return Ok(response);
        };
        let fresh = match self.authorizer.authorization_header().await {
            Ok(fresh) if fresh != sent => fresh,
            // No new token (the provider gave the same one back) or none at all: the 401 stands.
            _ => return Ok(response),
        };
        debug!("401 with a rejected token; retrying once with a fresh token");
        retry.headers_mut().insert(AUTHORIZATION, fresh);
        next.run(retry, extensions).await
    }
}

impl fmt::Debug for AuthMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origins = self
            .origins
            .as_ref()
            .map(|o| o.iter().map(ToString::to_string).collect::<Vec<_>>());
        f.debug_struct("AuthMiddleware")
            .field("authorizer", &self.authorizer)
            .field("origins", &origins)
            .field("retry_on_any_401", &self.retry_on_any_401)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let o = |s: &str| Origin::of(&Url::parse(s).unwrap()).unwrap();
        assert_eq!(o("https://API.example/x?y"), o("https://api.example:443"));
        assert_ne!(o("https://api.example"), o("http://api.example"));
        assert_ne!(o("https://api.example"), o("https://api.example:8443"));
        assert_ne!(o("https://api.example"), o("https://api.example.evil.test"));
    }

    #[test]
    fn insecure_origins_need_an_opt_in() {
        assert!(parse_origin("http://127.0.0.1:8080", false).is_ok());
        assert!(parse_origin("http://localhost", false).is_ok());
        assert!(matches!(
            parse_origin("http://api.example", false),
            Err(OriginError::Insecure { .. })
        ));
        assert!(parse_origin("http://api.example", true).is_ok());
        assert!(matches!(
            parse_origin("api.example", false),
            Err(OriginError::Invalid { .. })
        ));
        assert!(matches!(
            parse_origin("ftp://x", true),
            Err(OriginError::Invalid { .. })
        ));
    }
}

/// The README's quick start, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct Readme;

/// docs/http.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/http.md")]
pub struct HttpGuide;
