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
//!     .client_secret(std::env::var("CLIENT_SECRET").map_err(|_| "set CLIENT_SECRET to the client's secret")?)
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
//!   Plain `http` to a host that is not loopback is refused in every mode, unless
//!   [`allow_insecure_http(true)`](AuthMiddlewareBuilder::allow_insecure_http) says otherwise.
//! - **401.** When the response is 401 and its `WWW-Authenticate` says `invalid_token` (or on any
//!   401, with [`retry_on_any_401`](AuthMiddlewareBuilder::retry_on_any_401)), the token that was
//!   sent is forgotten and, if the body can be replayed (`Request::try_clone`) and the answer did
//!   not come through a redirect, the request is retried once with a fresh token. Never more
//!   than once, and not at all with the same token; a token fetched after a rejection and
//!   rejected again at once is not refetched before the backoff. The rules are the core's
//!   ([`Authorizer::decide`]); this middleware only translates reqwest's types.
//! - **Errors.** If no token can be had, the request is not sent; the error is
//!   `reqwest_middleware::Error::Middleware` holding the [`AuthError`](authwire::AuthError), reachable with
//!   `err.downcast_ref::<AuthError>()` on the inner `anyhow::Error`.

use authwire::{Admission, Answer, Authorizer, Origins, RejectionRules, RetryDecision, Target};
use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use std::fmt;
use tracing::debug;
use url::Url;

pub use authwire::OriginError;

/// The middleware; cheap to clone (it holds an [`Authorizer`] and the allowed origins).
#[derive(Clone)]
pub struct AuthMiddleware {
    authorizer: Authorizer,
    origins: Origins,
    rules: RejectionRules,
}

impl AuthMiddleware {
    /// Attach tokens to requests for these origins only (`https://api.example`,
    /// `http://127.0.0.1:8080`, ...).
    pub fn for_origins<I, S>(authorizer: Authorizer, origins: I) -> Result<Self, OriginError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(Self::with_origins(authorizer, Origins::new(origins)?))
    }

    /// Attach tokens to requests for `origins` (the core's [`Origins`], shared with the other
    /// adapters).
    pub fn with_origins(authorizer: Authorizer, origins: Origins) -> Self {
        Self {
            authorizer,
            origins,
            rules: RejectionRules::default(),
        }
    }

    /// Attach tokens to every request, whatever its destination (still never over plain http
    /// to a host that is not loopback). Only for clients that talk to a single API.
    pub fn any_origin(authorizer: Authorizer) -> Self {
        Self::with_origins(authorizer, Origins::any())
    }

    /// Configure a middleware.
    pub fn builder(authorizer: Authorizer) -> AuthMiddlewareBuilder {
        AuthMiddlewareBuilder {
            authorizer,
            origins: Origins::builder(),
            rules: RejectionRules::default(),
        }
    }
}

/// Configures an [`AuthMiddleware`].
pub struct AuthMiddlewareBuilder {
    authorizer: Authorizer,
    origins: authwire::OriginsBuilder,
    rules: RejectionRules,
}

impl AuthMiddlewareBuilder {
    /// Attach tokens to requests for this origin; repeatable.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origins = self.origins.origin(origin);
        self
    }

    /// Attach tokens to every request (`true`), or only to the named origins (`false`, the
    /// default).
    pub fn any_origin(mut self, on: bool) -> Self {
        self.origins = self.origins.any_origin(on);
        self
    }

    /// Allow plain `http` to hosts that are not loopback (default: refused).
    pub fn allow_insecure_http(mut self, on: bool) -> Self {
        self.origins = self.origins.allow_insecure_http(on);
        self
    }

    /// Refresh and retry on every 401, not only on those whose challenge says `invalid_token`
    /// (for servers that answer a bare 401).
    pub fn retry_on_any_401(mut self, on: bool) -> Self {
        self.rules = self.rules.retry_on_any_401(on);
        self
    }

    /// Check the origins and build.
    pub fn build(self) -> Result<AuthMiddleware, OriginError> {
        Ok(AuthMiddleware {
            authorizer: self.authorizer,
            origins: self.origins.build()?,
            rules: self.rules,
        })
    }
}

/// A request's target, borrowed from its URL.
fn target_of<'a>(method: &'a http::Method, url: &'a Url) -> Target<'a> {
    Target {
        method,
        scheme: url.scheme(),
        host: url.host_str().unwrap_or(""),
        port: url.port(),
        path: url.path(),
        query: url.query(),
    }
}

fn auth_failed(e: impl std::error::Error + Send + Sync + 'static) -> reqwest_middleware::Error {
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
        // The headers are moved out while the target borrows the method and URL.
        let mut headers = std::mem::take(request.headers_mut());
        let target = target_of(request.method(), request.url());
        let sent = match self.origins.admits(&target) {
            Admission::Authorize => self.authorizer.authorize_target(&target, &mut headers).await,
            Admission::Refuse(e) => return Err(auth_failed(e)),
            _ => {
                *request.headers_mut() = headers;
                return next.run(request, extensions).await;
            }
        };
        *request.headers_mut() = headers;
        let sent = sent.map_err(auth_failed)?;
        let replay = request.try_clone();
        let method = request.method().clone();
        let response = next.clone().run(request, extensions).await?;
        // reqwest follows redirects inside `next`: if the answer's URL is not the one we sent
        // to, it came through a redirect, and the first hop may have processed the request.
        let redirected = replay.as_ref().is_none_or(|r| r.url() != response.url());
        let answer = Answer::new(response.status(), response.headers())
            .redirected(redirected)
            .replayable(replay.is_some())
            .for_target(&target_of(&method, response.url()));
        let (retry, mut again) = match (self.authorizer.decide(&answer, &sent, self.rules).await, replay) {
            (RetryDecision::RetryWith(retry), Some(again)) => {
                debug!("token rejected; retrying once with a fresh token");
                (retry, again)
            }
            (RetryDecision::StepUp(step), Some(again)) if !redirected => {
                // What cannot be answered reaches the caller as an error carrying the challenge.
                let retry = self.authorizer.step_up(&step, &sent).await.map_err(auth_failed)?;
                debug!("step-up challenge answered; retrying once with the new token");
                (retry, again)
            }
            _ => return Ok(response),
        };
        let mut headers = std::mem::take(again.headers_mut());
        let applied = retry.apply(&target_of(again.method(), again.url()), &mut headers);
        *again.headers_mut() = headers;
        applied.map_err(auth_failed)?;
        next.run(again, extensions).await
    }
}

impl fmt::Debug for AuthMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthMiddleware")
            .field("authorizer", &self.authorizer)
            .field("origins", &self.origins.to_string())
            .field("rules", &self.rules)
            .finish()
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
