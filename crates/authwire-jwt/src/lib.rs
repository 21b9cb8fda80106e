//! JWT expiry inspection for authwire.
//!
//! Many identity providers hand out JWT access tokens, and some omit `expires_in`. A caller
//! then either uses the token until a server rejects it or guesses. This crate reads the token:
//!
//! - [`inspect`] decodes a JWT's header and claims *without verifying it*: for scheduling and
//!   for showing a token to a person, never for access decisions;
//! - [`JwtExpiry`] wraps any [`IdentityProvider`] and fills a missing expiry from the token's
//!   `exp`, so the [`Authorizer`](authwire::Authorizer) refreshes it in time. Opaque tokens pass
//!   through unchanged;
//! - with the `verify` feature, `Verifier` checks signatures against a JWKS (fetched from a URL
//!   or given), with an algorithm allow-list and issuer and audience checks.
//!
//! ```
//! use authwire::{async_trait, Authorizer, CacheKey, IdentityProvider, ProviderError, Token};
//! use authwire_jwt::JwtExpiry;
//! # struct MyProvider;
//! # #[async_trait] impl IdentityProvider for MyProvider {
//! #     async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> { Ok(Token::new("opaque")) }
//! #     fn cache_key(&self) -> CacheKey { CacheKey::from_static("p") }
//! # }
//! let authorizer = Authorizer::new(JwtExpiry::new(MyProvider));
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod inspect;
#[cfg(feature = "verify")]
mod verify;

/// The transport JWKS downloads go through (the same type as `authwire_oauth2::Transport`).
#[cfg(feature = "verify")]
pub use authwire_http::Transport;
pub use inspect::{Claims, JwtError, MAX_TOKEN_BYTES, inspect};
#[cfg(feature = "verify")]
#[cfg_attr(docsrs, doc(cfg(feature = "verify")))]
pub use verify::{DEFAULT_JWKS_TIMEOUT, DEFAULT_MIN_REFRESH_INTERVAL, Verifier, VerifierBuilder};

use authwire::secrecy::ExposeSecret;
use authwire::{CacheKey, Clock, IdentityProvider, ProviderError, SystemClock, Token, async_trait};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Clock drift beyond which [`JwtExpiry`] warns that `nbf` or `iat` lie in the future.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Wraps a provider and sets a token's expiry from its JWT `exp` claim when the provider did not
/// say (or always, with [`always`](Self::always)).
pub struct JwtExpiry<P> {
    inner: P,
    always: bool,
    clock: Arc<dyn Clock>,
    max_skew: Duration,
    #[cfg(feature = "verify")]
    verifier: Option<Verifier>,
}

impl<P: IdentityProvider> JwtExpiry<P> {
    /// Fill missing expiries of `inner`'s tokens.
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            always: false,
            clock: Arc::new(SystemClock),
            max_skew: DEFAULT_MAX_CLOCK_SKEW,
            #[cfg(feature = "verify")]
            verifier: None,
        }
    }

    /// Take the expiry from `exp` even when the provider gave one (when `expires_in` is known to
    /// be wrong or coarser than the token).
    /// `false` (the default) fills only a missing expiry.
    pub fn always(mut self, on: bool) -> Self {
        self.always = on;
        self
    }

    /// Read time from `clock` (for the drift warning).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Warn when `nbf` or `iat` lie more than `skew` in the future
    /// (default [`DEFAULT_MAX_CLOCK_SKEW`], 60 s): this machine's clock is probably behind.
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_skew = skew;
        self
    }

    /// Verify each token's signature and claims before trusting its `exp` (feature `verify`).
    /// A token that fails verification is an unusable response from the provider.
    #[cfg(feature = "verify")]
    #[cfg_attr(docsrs, doc(cfg(feature = "verify")))]
    pub fn verify_with(mut self, verifier: Verifier) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    async fn claims(&self, token: &str) -> Result<Result<Claims, JwtError>, ProviderError> {
        #[cfg(feature = "verify")]
        if let Some(v) = &self.verifier {
            return match v.verify(token).await {
                Ok(c) => Ok(Ok(c)),
                Err(e @ JwtError::Verification { .. }) => {
                    Err(ProviderError::invalid_response(None, e.to_string()))
                }
                Err(e) => Ok(Err(e)),
            };
        }
        Ok(inspect(token))
    }

    fn verifies(&self) -> bool {
        #[cfg(feature = "verify")]
        return self.verifier.is_some();
        #[cfg(not(feature = "verify"))]
        false
    }

    fn check_drift(&self, claims: &Claims) {
        let horizon = self.clock.now() + self.max_skew;
        for (name, at) in [("nbf", claims.not_before()), ("iat", claims.issued_at())] {
            if let Some(at) = at.filter(|at| *at > horizon) {
                let ahead = at.duration_since(self.clock.now()).unwrap_or_default();
                warn!(claim = name, ahead = ?ahead, "the token's {name} lies in the future: this machine's clock may be behind the issuer's");
            }
        }
    }
}

#[async_trait]
impl<P: IdentityProvider> IdentityProvider for JwtExpiry<P> {
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        let token = self.inner.fetch_token(current).await?;
        if !self.always && token.expires_at().is_some() && !self.verifies() {
            return Ok(token);
        }
        let claims = self.claims(token.access_token().expose_secret()).await;
        // Verification failed (a JWKS outage, a bad signature): the access token is refused,
        // but a refresh token that came with it is handed back, never dropped.
        let claims = claims.map_err(|e| match token.refresh_token() {
            Some(rt) => e.with_refresh_token(rt.clone()),
            None => e,
        })?;
        match claims {
            Ok(claims) => {
                self.check_drift(&claims);
                Ok(match claims.expires_at() {
                    Some(exp) if self.always || token.expires_at().is_none() => token.with_expires_at(exp),
                    _ => token,
                })
            }
            Err(why) => {
                // Opaque tokens are normal: say so quietly, without the token.
                debug!(reason = %why, "access token is not an inspectable JWT; its expiry stays as the provider said");
                Ok(token)
            }
        }
    }

    fn cache_key(&self) -> CacheKey {
        self.inner.cache_key()
    }

    fn restore_proof(&self, key: &authwire::ProofKey) -> Option<Arc<dyn authwire::ProofOfPossession>> {
        self.inner.restore_proof(key)
    }
}

impl<P: fmt::Debug> fmt::Debug for JwtExpiry<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtExpiry")
            .field("inner", &self.inner)
            .field("always", &self.always)
            .field("max_skew", &self.max_skew)
            .finish_non_exhaustive()
    }
}

/// docs/jwt.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/jwt.md")]
pub struct JwtGuide;
