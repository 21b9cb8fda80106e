//! Authorize outgoing HTTP requests.
//!
//! Every request a service sends to a protected API must carry a valid credential. An
//! [`Authorizer`] runs one pipeline for that, shared by all the tasks of a process:
//!
//! 1. **check** whether the cached token has expired, with a margin for clock skew and latency;
//! 2. **refresh** it through the [`IdentityProvider`] when needed: one refresh shared by all
//!    concurrent callers, ahead of expiry in the background, with backoff when the provider
//!    fails, while a still-valid token keeps being served;
//! 3. **retrieve** the access token from the [`Token`];
//! 4. **prepare** the `Authorization` header (`Bearer <token>`, or the token's own scheme),
//!    once per token, marked sensitive;
//! 5. **update** the request's headers with it.
//!
//! A call that finds a valid cached token takes no lock, allocates nothing and writes no shared
//! memory: it loads a pointer, reads the clock and clones a prepared header.
//!
//! # Quick start
//!
//! Pick a provider (`authwire-oauth2` for OAuth 2.0 servers) or write one:
//!
//! ```
//! use authwire::{async_trait, Authorizer, CacheKey, IdentityProvider, ProviderError, Token};
//! use std::time::Duration;
//!
//! struct MyProvider;
//!
//! #[async_trait]
//! impl IdentityProvider for MyProvider {
//!     async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
//!         // Ask your identity provider here; say how long the token lives.
//!         let expires_at = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000);
//!         Ok(Token::new("example-access-token").with_expires_at(expires_at))
//!     }
//!     fn cache_key(&self) -> CacheKey {
//!         CacheKey::from_static("my-provider")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let authorizer = Authorizer::new(MyProvider); // clone it into every task that needs it
//!
//! let mut request = authwire::http::Request::get("https://api.example/v1/things").body(())?;
//! authorizer.authorize_request(&mut request).await?;
//! assert_eq!(request.headers()["authorization"], "Bearer example-access-token");
//! # Ok(()) }
//! ```
//!
//! With reqwest or tower, use the `authwire-reqwest` middleware or the `authwire-tower` layer
//! instead of calling [`Authorizer::authorize`] yourself.
//!
//! # Crate map
//! - the token model: [`Token`], [`TokenType`], [`CacheKey`];
//! - the three traits: [`IdentityProvider`], [`TokenStore`], [`Clock`] (with [`SystemClock`] and,
//!   behind the `test-util` feature, `ManualClock`);
//! - the pipeline: [`Authorizer`], [`AuthorizerBuilder`], and the timing defaults
//!   ([`DEFAULT_EXPIRY_MARGIN`], [`DEFAULT_REFRESH_WINDOW`], ...). `Authorizer`'s methods come
//!   in two groups: for applications (`authorize`, `authorize_request`, `authorization_header`,
//!   `token`, `state`, `metrics`) and for adapter authors (`authorize_target`,
//!   `try_authorize_target[_sent]`, `decide`, `judge`);
//! - [`request`]: the seam adapter authors write against ([`Target`], [`Answer`],
//!   [`RetryDecision`], [`SentToken`], [`Origins`]), with a complete adapter as an example;
//! - errors: [`AuthError`], [`ProviderError`], [`StoreError`];
//! - [`store::encode`] / [`store::decode`]: the one serialisation every store uses.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod authorizer;
pub mod challenge;
mod clock;
pub mod error;
mod metrics;
mod pipeline;
mod policy;
mod provider;
pub mod random;
pub mod request;
pub mod store;
mod token;

pub use async_trait::async_trait;
pub use authorizer::{
    AuthorizationHeader, AuthorizationHeaderFuture, Authorize, AuthorizeFuture, AuthorizeTarget,
    AuthorizeTargetFuture, Authorizer, AuthorizerBuilder, FetchLimit, SentToken, TokenState,
};
#[doc(hidden)]
#[allow(deprecated)]
pub use authorizer::{StripedAuthorizer, StripedHandle};
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use clock::ManualClock;
pub use clock::{Clock, MAX_LIFETIME, Sleep, SystemClock, expiry_after, expiry_at_unix};
pub use error::{
    AuthError, BoxError, BuildError, KeptRefreshToken, ProviderError, SharedError, StoreError, error_chain,
    is_transient_status,
};
pub use metrics::Metrics;
pub use policy::{
    DEFAULT_EXPIRY_MARGIN, DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_BACKOFF, DEFAULT_MIN_BACKOFF,
    DEFAULT_REFRESH_TIMEOUT, DEFAULT_REFRESH_WINDOW, DEFAULT_STORE_TIMEOUT,
};
pub use provider::{IdentityProvider, StaticTokenProvider};
pub use request::{
    Admission, Answer, OriginError, Origins, OriginsBuilder, RejectionRules, Retry, RetryDecision, StepUp,
    StepUpReason, Target, is_loopback_host,
};
pub use store::{LeaseGuard, RefreshLease, TokenStore};
pub use token::{CacheKey, ProofKey, ProofOfPossession, Token, TokenType};

/// The `http` crate, whose `HeaderMap`, `HeaderValue` and `Request` this API uses.
pub use http;
/// The `secrecy` crate, whose `SecretString` holds tokens (`use authwire::secrecy::ExposeSecret`).
pub use secrecy;
