//! A [tower] layer for authwire: every request through the wrapped service carries a valid
//! `Authorization` header. Works with hyper clients, tonic channels and any
//! `Service<http::Request<B>>`.
//!
//! ```
//! use authwire::{async_trait, Authorizer, CacheKey, IdentityProvider, ProviderError, Token};
//! use authwire_tower::AuthLayer;
//! use tower_layer::Layer;
//! use tower_service::Service;
//!
//! # struct Fixed;
//! # #[async_trait] impl IdentityProvider for Fixed {
//! #     async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> { Ok(Token::new("t0k3n")) }
//! #     fn cache_key(&self) -> CacheKey { CacheKey::from_static("fixed") }
//! # }
//! /// Stands for a hyper client or a tonic channel: echoes the header it got.
//! #[derive(Clone)]
//! struct Echo;
//! impl Service<http::Request<()>> for Echo {
//!     type Response = http::Response<String>;
//!     type Error = std::convert::Infallible;
//!     type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
//!     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
//!         std::task::Poll::Ready(Ok(()))
//!     }
//!     fn call(&mut self, req: http::Request<()>) -> Self::Future {
//!         let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
//!         std::future::ready(Ok(http::Response::new(auth)))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), authwire_tower::BoxError> {
//! let mut service = AuthLayer::new(Authorizer::new(Fixed)).layer(Echo);
//! std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
//! let response = service.call(http::Request::new(())).await?;
//! assert_eq!(response.body(), "Bearer t0k3n");
//! # Ok(()) }
//! ```
//!
//! # Behaviour
//!
//! - **Scoping.** [`AuthLayer::for_origins`] attaches the token only to requests for those
//!   origins (scheme, host, port); other requests pass through untouched. [`AuthLayer::new`]
//!   attaches it to every request. In both modes a request over plain `http` to a host that is
//!   not loopback is refused with an error (the token would cross the network readable) unless
//!   the [`Origins`] allow it by name. Relative URIs (a tonic channel's requests, above the
//!   layer that adds its origin) are authorized by [`AuthLayer::new`] only.
//! - The header is inserted before the inner service is called; when the token is cached, that is
//!   a header clone and no allocation (the response future is not boxed).
//! - `poll_ready` passes through to the inner service.
//! - A response that rejects the token (a 401 whose `WWW-Authenticate` says `invalid_token`, or
//!   gRPC `grpc-status: 16` UNAUTHENTICATED in a trailers-only response) makes the authorizer
//!   forget the token that was sent ([`SentToken::judge`](authwire::SentToken::judge): the
//!   response future holds that plain token, not the authorizer), so the next request gets a
//!   fresh one.
//! - With [`AuthLayer::retry_once`], such a request is also retried once with a fresh token
//!   ([`Authorizer::decide`]). That needs a body that can be replayed, so that mode requires
//!   `B: Clone` (hyper's `Full<Bytes>`, `String`, `()`); streaming bodies (tonic's, hyper's
//!   `Incoming`) use the default mode. Put redirect-following layers *outside* this one, so that
//!   every hop is scoped and no redirected request is replayed.
//! - Errors are [`BoxError`]s: an [`AuthError`] when no token can be had, an [`OriginError`]
//!   when the destination is refused (the request is then not sent;
//!   `err.downcast_ref::<AuthError>()`), or the inner service's error.
//!
//! [tower]: https://docs.rs/tower

use authwire::{Admission, Answer, AuthError, Authorizer, RejectionRules, RetryDecision, SentToken, Target};
pub use authwire::{OriginError, Origins};
use http::{HeaderMap, HeaderValue, Request, Response};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower_layer::Layer;
use tower_service::Service;

/// The error type of [`AuthService`]: an [`AuthError`], an [`OriginError`], or the inner
/// service's error.
pub type BoxError = authwire::BoxError;

/// Mode marker: insert the header, forget rejected tokens, do not retry (any body type).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRetry;

/// Mode marker: as [`NoRetry`], and retry a rejected request once with a fresh token
/// (bodies must be `Clone`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryOnce;

/// Wraps services in [`AuthService`].
#[derive(Clone)]
pub struct AuthLayer<M = NoRetry> {
    authorizer: Authorizer,
    origins: Origins,
    _mode: PhantomData<M>,
}

impl AuthLayer {
    /// A layer that authorizes every request with `authorizer` (never over plain http to a host
    /// that is not loopback).
    pub fn new(authorizer: Authorizer) -> Self {
        Self::with_origins(authorizer, Origins::any())
    }

    /// A layer that authorizes requests for these origins only (`https://api.example`,
    /// `http://127.0.0.1:8080`, ...); other requests pass through untouched.
    pub fn for_origins<I, S>(authorizer: Authorizer, origins: I) -> Result<Self, OriginError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(Self::with_origins(authorizer, Origins::new(origins)?))
    }

    /// A layer that authorizes requests admitted by `origins`.
    pub fn with_origins(authorizer: Authorizer, origins: Origins) -> Self {
        Self {
            authorizer,
            origins,
            _mode: PhantomData,
        }
    }

    /// Also retry once, with a fresh token, a request whose token the server rejected.
    pub fn retry_once(self) -> AuthLayer<RetryOnce> {
        AuthLayer {
            authorizer: self.authorizer,
            origins: self.origins,
            _mode: PhantomData,
        }
    }
}

impl<S, M> Layer<S> for AuthLayer<M> {
    type Service = AuthService<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authorizer: self.authorizer.clone(),
            origins: self.origins.clone(),
            _mode: PhantomData,
        }
    }
}

impl<M> fmt::Debug for AuthLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("authorizer", &self.authorizer)
            .field("origins", &self.origins.to_string())
            .finish()
    }
}

/// A service that authorizes requests before passing them to `S`.
#[derive(Clone)]
pub struct AuthService<S, M = NoRetry> {
    inner: S,
    authorizer: Authorizer,
    origins: Origins,
    _mode: PhantomData<M>,
}

impl<S: fmt::Debug, M> fmt::Debug for AuthService<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("inner", &self.inner)
            .field("authorizer", &self.authorizer)
            .field("origins", &self.origins.to_string())
            .finish()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the synchronous part of `call` found.
enum Start {
    /// The cached token is on the request.
    Cached(SentToken),
    /// No usable cached token: wait for one.
    Wait,
    /// Not for this layer's origins.
    PassThrough,
    /// Refused destination.
    Refused(OriginError),
}

/// Scope the request and, when the token is cached, authorize it in place.
#[inline(always)]
fn start<B>(authorizer: &Authorizer, origins: &Origins, request: &mut Request<B>) -> Start {
    // The headers are moved out while the target borrows the method and URI.
    let mut headers = std::mem::take(request.headers_mut());
    let target = Target::from_uri(request.method(), request.uri());
    let start = match origins.admits(&target) {
        Admission::Authorize => match authorizer.try_authorize_target_sent(&target, &mut headers) {
            Some(sent) => Start::Cached(sent),
            None => Start::Wait,
        },
        Admission::Refuse(e) => Start::Refused(e),
        _ => Start::PassThrough,
    };
    *request.headers_mut() = headers;
    start
}

/// Steps 1-5 for a request that had to wait for a token.
async fn authorize<B>(authorizer: &Authorizer, request: &mut Request<B>) -> Result<HeaderValue, AuthError> {
    let mut headers = std::mem::take(request.headers_mut());
    let sent = {
        let target = Target::from_uri(request.method(), request.uri());
        authorizer.authorize_target(&target, &mut headers).await
    };
    *request.headers_mut() = headers;
    sent
}

fn answer<B>(response: &Response<B>) -> Answer<'_> {
    Answer::new(response.status(), response.headers())
}

impl<S, B, ResBody> Service<Request<B>> for AuthService<S, NoRetry>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let state = match start(&self.authorizer, &self.origins, &mut request) {
            Start::Cached(sent) => {
                // A bound token's answer may carry a DPoP nonce for this origin (RFC 9449
                // section 9): keep the target for it; a bearer request keeps nothing.
                let target = sent
                    .is_bound()
                    .then(|| Box::new((request.method().clone(), request.uri().clone())));
                State::Sent {
                    future: self.inner.call(request),
                    sent: Some(sent),
                    target,
                }
            }
            Start::PassThrough => State::Sent {
                future: self.inner.call(request),
                sent: None,
                target: None,
            },
            Start::Refused(e) => State::Other {
                // An async block, so that the future holds the error only (not a response type).
                future: Box::pin(async move { Err(e.into()) }),
            },
            Start::Wait => {
                // Wait for a token, then call the service that was made ready.
                let mut ready = take_ready(&mut self.inner);
                let authorizer = self.authorizer.clone();
                State::Other {
                    future: Box::pin(async move {
                        let sent = authorize(&authorizer, &mut request).await?;
                        let (method, uri) = (request.method().clone(), request.uri().clone());
                        let response = ready.call(request).await.map_err(Into::into)?;
                        let target = Target::from_uri(&method, &uri);
                        authorizer.judge(
                            &answer(&response).for_target(&target),
                            &sent,
                            RejectionRules::default(),
                        );
                        Ok(response)
                    }),
                }
            }
        };
        ResponseFuture { state }
    }
}

impl<S, B, ResBody> Service<Request<B>> for AuthService<S, RetryOnce>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Clone + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<ResBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let mut ready = take_ready(&mut self.inner);
        let mut spare = self.inner.clone();
        let authorizer = self.authorizer.clone();
        let admission = start_admission(&self.origins, &request);
        Box::pin(async move {
            match admission {
                Admission::Authorize => {}
                Admission::Refuse(e) => return Err(e.into()),
                _ => return ready.call(request).await.map_err(Into::into),
            }
            let mut replay = clone_request(&request);
            let sent = authorize(&authorizer, &mut request).await?;
            let response = ready.call(request).await.map_err(Into::into)?;
            let seen = answer(&response)
                .replayable(true)
                .for_target(&Target::from_uri(replay.method(), replay.uri()));
            let retry = match authorizer.decide(&seen, &sent, RejectionRules::default()).await {
                RetryDecision::RetryWith(retry) => retry,
                // Answered once, or the caller gets the error carrying the challenge.
                RetryDecision::StepUp(step) => authorizer.step_up(&step, &sent).await?,
                _ => return Ok(response),
            };
            let mut headers = std::mem::take(replay.headers_mut());
            let applied = retry.apply(&Target::from_uri(replay.method(), replay.uri()), &mut headers);
            *replay.headers_mut() = headers;
            applied?;
            std::future::poll_fn(|cx| spare.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            spare.call(replay).await.map_err(Into::into)
        })
    }
}

fn start_admission<B>(origins: &Origins, request: &Request<B>) -> Admission {
    origins.admits(&Target::from_uri(request.method(), request.uri()))
}

/// The service that `poll_ready` prepared, leaving a fresh clone in its place (tower's usual
/// way to move a ready service into a future).
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

fn clone_request<B: Clone>(request: &Request<B>) -> Request<B> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

pin_project_lite::pin_project! {
    /// The response future of [`AuthService`] in the default mode.
    pub struct ResponseFuture<F, ResBody> {
        #[pin]
        state: State<F, ResBody>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, ResBody> {
        // The request is with the inner service: with the cached token (`sent`), or passed
        // through untouched (`None`).
        Sent {
            #[pin] future: F,
            // The token sent (plain data: it finds its authorizer only if the answer rejects
            // it); `None` for a request passed through.
            sent: Option<SentToken>,
            // For a bound token: the request's method and URI, for the answer's DPoP nonce.
            target: Option<Box<(http::Method, http::Uri)>>,
        },
        // Waiting for a token first, or a refused destination (the request was not sent).
        Other { future: BoxFuture<Result<Response<ResBody>, BoxError>> },
    }
}

impl<F, E, ResBody> Future for ResponseFuture<F, ResBody>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResBody>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sent { future, sent, target } => {
                let response = ready!(future.poll(cx)).map_err(Into::into)?;
                if let Some(sent) = sent {
                    match target {
                        Some(t) => {
                            let target = Target::from_uri(&t.0, &t.1);
                            sent.judge(&answer(&response).for_target(&target), RejectionRules::default());
                        }
                        None => {
                            sent.judge(&answer(&response), RejectionRules::default());
                        }
                    }
                }
                Poll::Ready(Ok(response))
            }
            StateProj::Other { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, ResBody> fmt::Debug for ResponseFuture<F, ResBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Sent { .. } => "sent",
            State::Other { .. } => "waiting",
        };
        f.debug_struct("ResponseFuture").field("state", &state).finish()
    }
}

/// The headers of a gRPC answer say UNAUTHENTICATED (for tests and diagnostics).
#[doc(hidden)]
pub fn grpc_unauthenticated(headers: &HeaderMap) -> bool {
    Answer::new(http::StatusCode::OK, headers).rejects_token(RejectionRules::default())
}

/// Whether `error` is an authorization failure, and which.
pub fn auth_error(error: &BoxError) -> Option<&AuthError> {
    error.downcast_ref::<AuthError>()
}
