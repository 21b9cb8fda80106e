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
//! - The header is inserted before the inner service is called; when the token is cached, that is
//!   a header clone and no allocation (the response future is not boxed).
//! - `poll_ready` passes through to the inner service.
//! - On a 401 whose `WWW-Authenticate` says `invalid_token`, the token that was sent is forgotten
//!   ([`Authorizer::invalidate`]), so the next request gets a fresh one.
//! - With [`AuthLayer::retry_once`], such a request is also retried once with a fresh token. That
//!   needs a body that can be replayed, so that mode requires `B: Clone` (hyper's `Full<Bytes>`,
//!   `String`, `()`); streaming bodies (tonic's, hyper's `Incoming`) use the default mode.
//! - Errors are [`BoxError`]s: an [`AuthError`] when no token can be had (the request is then not
//!   sent; `err.downcast_ref::<AuthError>()`), or the inner service's error.
//!
//! [tower]: https://docs.rs/tower

use authwire::{AuthError, Authorizer};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower_layer::Layer;
use tower_service::Service;

/// The error type of [`AuthService`]: an [`AuthError`] or the inner service's error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    _mode: PhantomData<M>,
}

impl AuthLayer {
    /// A layer that authorizes every request with `authorizer`.
    pub fn new(authorizer: Authorizer) -> Self {
        Self {
            authorizer,
            _mode: PhantomData,
        }
    }

    /// Also retry once, with a fresh token, a request whose token the server rejected.
    pub fn retry_once(self) -> AuthLayer<RetryOnce> {
        AuthLayer {
            authorizer: self.authorizer,
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
            _mode: PhantomData,
        }
    }
}

impl<M> fmt::Debug for AuthLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("authorizer", &self.authorizer)
            .finish()
    }
}

/// A service that authorizes requests before passing them to `S`.
#[derive(Clone)]
pub struct AuthService<S, M = NoRetry> {
    inner: S,
    authorizer: Authorizer,
    _mode: PhantomData<M>,
}

impl<S: fmt::Debug, M> fmt::Debug for AuthService<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("inner", &self.inner)
            .field("authorizer", &self.authorizer)
            .finish()
    }
}

fn rejected<B>(response: &Response<B>) -> bool {
    response.status() == StatusCode::UNAUTHORIZED && authwire::challenge::token_rejected(response.headers())
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

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

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(header) = self.authorizer.cached_authorization_header() {
            request.headers_mut().insert(AUTHORIZATION, header.clone());
            return ResponseFuture {
                state: State::Sent {
                    future: self.inner.call(request),
                    sent: header,
                    authorizer: self.authorizer.clone(),
                },
            };
        }
        // No usable cached token: wait for one, then call the service that was made ready.
        let ready = take_ready(&mut self.inner);
        let authorizer = self.authorizer.clone();
        ResponseFuture {
            state: State::Refreshing {
                future: Box::pin(async move {
                    let mut ready = ready;
                    let header = authorizer.authorization_header().await?;
                    request.headers_mut().insert(AUTHORIZATION, header.clone());
                    let response = ready.call(request).await.map_err(Into::into)?;
                    if rejected(&response) {
                        authorizer.invalidate(&header);
                    }
                    Ok(response)
                }),
            },
        }
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
        let ready = take_ready(&mut self.inner);
        let mut spare = self.inner.clone();
        let authorizer = self.authorizer.clone();
        Box::pin(async move {
            let mut ready = ready;
            let sent = authorizer.authorization_header().await?;
            let mut replay = clone_request(&request);
            request.headers_mut().insert(AUTHORIZATION, sent.clone());
            let response = ready.call(request).await.map_err(Into::into)?;
            if !rejected(&response) {
                return Ok(response);
            }
            authorizer.invalidate(&sent);
            let fresh = match authorizer.authorization_header().await {
                Ok(fresh) if fresh != sent => fresh,
                _ => return Ok(response), // no new token: the 401 stands
            };
            replay.headers_mut().insert(AUTHORIZATION, fresh);
            std::future::poll_fn(|cx| spare.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            spare.call(replay).await.map_err(Into::into)
        })
    }
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
        // The header came from the cache and the request is with the inner service.
        Sent { #[pin] future: F, sent: HeaderValue, authorizer: Authorizer },
        // Waiting for a token first.
        Refreshing { future: BoxFuture<Result<Response<ResBody>, BoxError>> },
    }
}

impl<F, E, ResBody> Future for ResponseFuture<F, ResBody>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sent {
                future,
                sent,
                authorizer,
            } => {
                let response = ready!(future.poll(cx)).map_err(Into::into)?;
                if rejected(&response) {
                    authorizer.invalidate(sent);
                }
                Poll::Ready(Ok(response))
            }
            StateProj::Refreshing { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, ResBody> fmt::Debug for ResponseFuture<F, ResBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Sent { .. } => "sent",
            State::Refreshing { .. } => "refreshing",
        };
        f.debug_struct("ResponseFuture").field("state", &state).finish()
    }
}

/// Whether `error` is an authorization failure, and which.
pub fn auth_error(error: &BoxError) -> Option<&AuthError> {
    error.downcast_ref::<AuthError>()
}
