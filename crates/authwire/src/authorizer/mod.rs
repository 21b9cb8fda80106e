//! The [`Authorizer`]: the pipeline, its cache and its shared refresh flight.
//!
//! # How a call flows
//!
//! The hot path ([`Authorizer::cached_via_slot`]) reads the serial of the current [`Entry`] (one
//! atomic load), and when this thread's slot holds that entry ([`local`]), reads the clock once,
//! runs step 1 on the slot's schedule and clones the slot's header (this thread's stripe). Else
//! ([`Authorizer::cached`]) it loads the entry (an `ArcSwap` load, no lock), does the same and
//! offers the entry to the slot. Nothing else: no lock, no allocation, no shared cache line written.
//!
//! When step 1 says *refresh due*, the caller still gets the current token at once, and the
//! first such caller starts a background flight ([`Inner::start_background`]). When it says
//! *expired* (or there is no token yet), the caller joins the running flight or starts one
//! ([`Authorizer::refresh`]) and waits for it.
//!
//! A flight ([`run_flight`]) is a spawned task, so a caller that gives up does not cancel it for
//! the others. It consults the store, calls the provider at most once, prepares the header,
//! saves the token, and publishes the result to the cache and to every waiter. A failure sets a
//! backoff deadline (from the [`Clock`](crate::Clock)); until it passes, callers get the still
//! valid token or, if there is none, the same error without another provider call.

mod builder;
mod flight;
mod futures;
mod limit;
mod local;
mod refresh;
mod registry;
mod striped;

pub use builder::AuthorizerBuilder;
use flight::*;
pub use futures::{
    AuthorizationHeader, AuthorizationHeaderFuture, Authorize, AuthorizeFuture, AuthorizeTarget,
    AuthorizeTargetFuture,
};
pub use limit::FetchLimit;
use refresh::*;
#[allow(deprecated)]
pub use striped::{StripedAuthorizer, StripedHandle};

use crate::clock::SharedClock;
use crate::clock::{Clock, SystemClock};
use crate::error::{AuthError, ProviderError, StoreError};
use crate::metrics::{Counters, Metrics};
use crate::pipeline::{Entry, Step5, check_expiry, is_bound_header, update_headers};
use crate::policy::{self, Freshness, Timing};
use crate::provider::IdentityProvider;
use crate::request::{Answer, RejectionRules, RetryDecision, StepUp, Target};
use crate::store::TokenStore;
use crate::store::{LeaseGuard, RefreshLease};
use crate::token::{CacheKey, Token};
use arc_swap::ArcSwapOption;
use http::{HeaderMap, HeaderValue};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Makes outgoing requests carry a valid `Authorization` header.
///
/// One `Authorizer` per credential, shared by every task: cloning is cheap (one `Arc`), and all
/// clones share one cache and one refresh. See the [crate docs](crate) for the pipeline and
/// [`AuthorizerBuilder`] for the timing settings.
///
/// Refreshes run as tasks on the current tokio runtime (its time driver must be enabled, as
/// `#[tokio::main]` does). Called outside a runtime, the authorizer still works: the caller that
/// needs a token runs the refresh itself, without timeouts and without background refresh.
///
/// ```
/// use authwire::{async_trait, Authorizer, CacheKey, IdentityProvider, ProviderError, Token};
///
/// struct Fixed;
/// #[async_trait]
/// impl IdentityProvider for Fixed {
///     async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
///         Ok(Token::new("t0k3n"))
///     }
///     fn cache_key(&self) -> CacheKey { CacheKey::from_static("fixed") }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), authwire::AuthError> {
/// let authorizer = Authorizer::new(Fixed);
/// let mut headers = http::HeaderMap::new();
/// authorizer.authorize(&mut headers).await?;
/// assert_eq!(headers["authorization"], "Bearer t0k3n");
/// assert!(headers["authorization"].is_sensitive());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

/// # For applications
///
/// Put a valid `Authorization` header on a request ([`authorize`](Self::authorize),
/// [`authorize_request`](Self::authorize_request)), get the header or the token itself
/// ([`authorization_header`](Self::authorization_header), [`token`](Self::token)), and see how
/// things stand ([`state`](Self::state), [`metrics`](Self::metrics)). With reqwest or tower,
/// the `authwire-reqwest` middleware and the `authwire-tower` layer make these calls for you.
impl Authorizer {
    /// An authorizer with every default: no store, the system clock, the default timing.
    pub fn new(provider: impl IdentityProvider) -> Self {
        Self::builder(provider).build()
    }

    /// Configure an authorizer.
    pub fn builder(provider: impl IdentityProvider) -> AuthorizerBuilder {
        AuthorizerBuilder::new(provider)
    }

    /// Steps 1-5: make `headers` carry a valid `Authorization` header (replacing any there).
    ///
    /// Equivalent to `async fn authorize(&self, headers: &mut HeaderMap) -> Result<(), AuthError>`.
    pub fn authorize<'a>(&'a self, headers: &'a mut HeaderMap) -> AuthorizeFuture<'a> {
        AuthorizeFuture {
            header: self.authorization_header(),
            headers,
        }
    }

    /// Steps 1-5 on an [`http::Request`]. Step 5 sees the whole request (method and URI), as
    /// sender-constrained token types will need.
    pub async fn authorize_request<B>(&self, request: &mut http::Request<B>) -> Result<(), AuthError> {
        let (parts, headers) = split_request(request);
        let target = Target::from_uri(&parts.0, &parts.1);
        self.authorize_target(&target, headers).await.map(drop)
    }

    /// Steps 1-4: the `Authorization` header value for the current token (marked sensitive).
    ///
    /// Equivalent to `async fn authorization_header(&self) -> Result<HeaderValue, AuthError>`;
    /// the future is written by hand so that the cached path costs no more than its work.
    pub fn authorization_header(&self) -> AuthorizationHeaderFuture<'_> {
        AuthorizationHeaderFuture {
            authorizer: self,
            refreshing: None,
        }
    }

    /// Steps 1-4 without waiting: the header for the cached token if it is usable now, else
    /// `None` (and nothing is started except, inside the refresh window, the background
    /// refresh). For synchronous code paths; async code calls
    /// [`authorization_header`](Self::authorization_header).
    ///
    /// `None` too for a DPoP-bound token, which never leaves without a proof for its request.
    #[inline]
    pub fn cached_authorization_header(&self) -> Option<HeaderValue> {
        self.cached_header().filter(|v| !is_bound_header(v))
    }

    /// The headers step 5 adds beside `Authorization`: the provider's
    /// [`request_headers`](crate::IdentityProvider::request_headers) and the builder's
    /// [`request_header`](crate::AuthorizerBuilder::request_header)s. [`authorize`](Self::authorize)
    /// and the adapters add them; code that takes [`authorization_header`](Self::authorization_header)
    /// alone adds these itself.
    pub fn request_headers(&self) -> &[(http::HeaderName, HeaderValue)] {
        self.inner
            .shared
            .extra_headers
            .as_ref()
            .map_or(&[], crate::pipeline::ExtraHeaders::as_slice)
    }

    /// Steps 1-3: the current valid token.
    pub async fn token(&self) -> Result<Arc<Token>, AuthError> {
        if let Some(token) = self.cached(|e| e.token.clone()) {
            return Ok(token);
        }
        Ok(Box::pin(self.refresh()).await?.token.clone())
    }

    /// A resource server asked for a DPoP nonce (401, `DPoP error="use_dpop_nonce"`, RFC 9449
    /// section 9): the token is fine; send the request once more with a proof that carries
    /// the server's nonce (remembered for its later requests too).
    async fn retry_with_dpop_nonce(&self, answer: &Answer<'_>) -> RetryDecision {
        self.remember_dpop_nonce(answer);
        let Some(nonce) = answer.dpop_nonce() else {
            return RetryDecision::Done;
        };
        if !answer.is_replayable() || answer.is_redirected() {
            return RetryDecision::Done;
        }
        let step5 = match self.cached(Entry::step5) {
            Some(step5) => step5,
            None => match self.refresh().await {
                Ok(entry) => entry.step5(),
                Err(_) => return RetryDecision::Done,
            },
        };
        if step5.bound.is_none() {
            return RetryDecision::Done;
        }
        debug!(cache_key = %self.inner.shared.key, "the resource server asked for a DPoP nonce; retrying once with it");
        RetryDecision::RetryWith(crate::request::Retry::new(step5, Some(nonce.to_owned())))
    }

    /// Keep a `DPoP-Nonce` the server sent, for its origin.
    fn remember_dpop_nonce(&self, answer: &Answer<'_>) {
        if let Some(nonce) = answer.dpop_nonce() {
            let mut nonces = self
                .inner
                .dpop_nonces
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if nonces.len() >= 1024 && !nonces.contains_key(answer.origin()) {
                nonces.clear(); // a bound: one authorizer talks to a few servers, not thousands
            }
            nonces.insert(answer.origin().to_owned(), nonce.to_owned());
        }
    }

    /// The nonce to put in a bound token's proof for `target` (none for bearer tokens, without
    /// taking the lock).
    pub(super) fn dpop_nonce_for(
        &self,
        step5: &crate::pipeline::Step5,
        target: &Target<'_>,
    ) -> Option<String> {
        step5.bound.as_ref()?;
        let nonces = self
            .inner
            .dpop_nonces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        nonces.get(&crate::request::origin_key(target)).cloned()
    }

    /// Forget the current entry if `issued` says it is the one meant; `by_server` says whether a
    /// server rejected it (else the caller set it aside), for the log.
    fn invalidate_if(&self, issued: impl FnOnce(&Entry) -> bool, by_server: bool) -> bool {
        let inner = &self.inner;
        let mut control = inner.lock();
        let Some(entry) = inner.current.load_full() else {
            return false;
        };
        if !issued(&entry) {
            return false;
        }
        // A token fetched because the previous one was rejected, and rejected again moments
        // later: the problem is not the token (a misconfigured audience, a server that rejects
        // everything). Refetching would only hammer the identity provider; wait, doubling.
        let now = inner.shared.clock.now();
        if control.published_for_rejection
            && let Some(published) = control.published_at
        {
            let cooldown = rejection_cooldown(control.rejection_streak, &inner.shared.timing);
            if now < published + cooldown {
                Counters::bump(&inner.shared.counters.throttled_rejections);
                warn!(cache_key = %inner.shared.key, retry_in = ?(published + cooldown).duration_since(now).unwrap_or_default(),
                    "a token fetched after a rejection was rejected again at once; not refetching yet (check the token's audience and scopes)");
                return false;
            }
            control.rejection_streak = control.rejection_streak.saturating_add(1);
        }
        control.rejection_pending = true;
        inner.current.store(None);
        inner.generation.store(0, Ordering::Release);
        control.rejected = Some(entry.token.clone());
        Counters::bump(&inner.shared.counters.invalidations);
        if by_server {
            info!(cache_key = %inner.shared.key, "token rejected by a server; it will be refreshed on the next call");
        } else {
            info!(cache_key = %inner.shared.key, "token set aside by the caller; it will be refreshed on the next call");
        }
        true
    }

    /// Forget the cached token if it is still `token`, bearer or bound alike; the next call
    /// refreshes (with its refresh token). For a caller that needs more time left than the
    /// cached token has (`authwire token --min-ttl`), or knows the token is no good by other
    /// means. The same rules as [`invalidate`](Self::invalidate) apply, rate limit included.
    pub fn invalidate_token(&self, token: &Token) -> bool {
        let Some(entry) = self.inner.current.load_full() else {
            return false;
        };
        let same = std::ptr::eq(&*entry.token, token)
            || crate::token::constant_time_eq(
                secrecy::ExposeSecret::expose_secret(entry.token.access_token()).as_bytes(),
                secrecy::ExposeSecret::expose_secret(token.access_token()).as_bytes(),
            );
        let header = entry.header();
        same && self.invalidate_if(|e| e.issued(&header), false)
    }

    /// Step 1 as an observation: where the cached token stands now. Starts nothing (unlike the
    /// calls that hand out a token, which start a refresh when one is due).
    ///
    /// ```
    /// # use authwire::{Authorizer, TokenState};
    /// # fn show(authorizer: &Authorizer) {
    /// match authorizer.state() {
    ///     TokenState::Missing => println!("no token yet"),
    ///     TokenState::Fresh { expires_in } => println!("valid, expires in {expires_in:?}"),
    ///     TokenState::RefreshDue { .. } => println!("valid, refresh due"),
    ///     TokenState::Expired => println!("expired"),
    ///     _ => println!("a state added after this was written"),
    /// }
    /// # }
    /// ```
    pub fn state(&self) -> TokenState {
        let Some(entry) = self.inner.current.load_full() else {
            return TokenState::Missing;
        };
        let now = self.inner.shared.clock.now();
        let expires_in = entry
            .token
            .expires_at()
            .map(|e| e.duration_since(now).unwrap_or_default());
        match check_expiry(&entry.schedule, now) {
            Freshness::Fresh => TokenState::Fresh { expires_in },
            Freshness::RefreshDue => TokenState::RefreshDue { expires_in },
            Freshness::Expired => TokenState::Expired,
        }
    }

    /// The counters of this authorizer (shared by its clones).
    pub fn metrics(&self) -> Metrics {
        self.inner.shared.counters.snapshot()
    }

    /// The key this authorizer's tokens are stored under.
    pub fn cache_key(&self) -> &CacheKey {
        &self.inner.shared.key
    }
}

/// # For adapter authors
///
/// The request-level seam every HTTP adapter is written against (the reqwest middleware, the
/// tower layer, the CLI, yours): authorize a request to a [`Target`], then judge the answer and
/// retry once when the token was rejected. The [`request`](crate::request) module puts these
/// calls in order, with [`Origins`](crate::Origins), [`Answer`], [`SentToken`] and a complete
/// adapter as an example.
impl Authorizer {
    /// Steps 1-5 for a request to `target`: the request-level entry point of every HTTP
    /// adapter (see [`crate::request`]). Returns the header that was put on `headers`, for
    /// [`Authorizer::decide`] once the answer is in.
    pub fn authorize_target<'a>(
        &'a self,
        target: &'a Target<'a>,
        headers: &'a mut HeaderMap,
    ) -> AuthorizeTargetFuture<'a> {
        AuthorizeTargetFuture {
            authorizer: self,
            target,
            headers,
            refreshing: None,
        }
    }

    /// Steps 1-5 for `target` without waiting: when the cached token is usable now, put its
    /// header on `headers` and return it; else `None` and `headers` is untouched (call
    /// [`authorize_target`](Self::authorize_target)). For adapters whose cached path is
    /// synchronous (a tower `Service::call`).
    #[inline]
    pub fn try_authorize_target(&self, target: &Target<'_>, headers: &mut HeaderMap) -> Option<HeaderValue> {
        let step5 = self.cached_step5()?;
        let nonce = self.dpop_nonce_for(&step5, target);
        step5.apply(target, nonce.as_deref(), headers).ok()
    }

    /// [`try_authorize_target`](Self::try_authorize_target) for adapters that keep, until the
    /// answer arrives, only what judging it needs: a [`SentToken`] (three words, no reference
    /// count) instead of a clone of the header. When the answer comes, call its
    /// [`judge`](SentToken::judge).
    ///
    /// ```
    /// # use authwire::{Answer, Authorizer, RejectionRules, Target};
    /// # async fn send(authorizer: &Authorizer) {
    /// let (method, uri) = (http::Method::GET, "https://api.example/v1/things".parse().unwrap());
    /// let mut headers = http::HeaderMap::new();
    /// let target = Target::from_uri(&method, &uri);
    /// if let Some(sent) = authorizer.try_authorize_target_sent(&target, &mut headers) {
    ///     // ... send the request with `headers`; then, with the answer's status and headers:
    ///     let answer_headers = http::HeaderMap::new();
    ///     let answer = Answer::new(http::StatusCode::OK, &answer_headers);
    ///     assert!(!sent.judge(&answer, RejectionRules::default()));
    /// }
    /// # }
    /// ```
    // The slot probe and the arc-swap fallback are written out here rather than through
    // `cached_via_slot` and `Step5::apply`: that shared route costs the tower layer about 25 ns
    // (three runs each; the extra `Step5` moves), a tenth of a request in `tower_adapter`.
    #[inline(always)]
    pub fn try_authorize_target_sent(
        &self,
        target: &Target<'_>,
        headers: &mut HeaderMap,
    ) -> Option<SentToken> {
        let serial = self.inner.generation.load(Ordering::Acquire);
        let now = self.inner.shared.clock.now_coarse();
        if let Some(header) = local::probe(serial, now) {
            crate::pipeline::add_extra_headers(self.inner.shared.extra_headers.as_ref(), headers);
            update_headers(headers, header);
            return Some(SentToken {
                authorizer: registry::number(&self.inner),
                serial,
                bound: 0,
            });
        }
        let (serial, step5) = self.cached_at(now, |entry| {
            if !entry.is_bound() {
                local::fill(entry);
            }
            (entry.serial, entry.step5())
        })?;
        let bound = u64::from(step5.bound.is_some());
        let nonce = self.dpop_nonce_for(&step5, target);
        step5.apply(target, nonce.as_deref(), headers).ok()?;
        Some(SentToken {
            authorizer: registry::number(&self.inner),
            serial,
            bound,
        })
    }

    /// The rules for a rejected request, in one place: given what came back for a request that
    /// carried `sent`, forget the token if the answer rejects it ([`Authorizer::invalidate`],
    /// rate-limited), and say whether to send the request once more with a new header.
    ///
    /// A retry is offered only when the answer rejected the token, the adapter can replay the
    /// request, no redirect happened (the first hop may have processed it), and a different
    /// token is now available. The answer to that retry is final: adapters do not call `decide`
    /// for it.
    pub async fn decide(
        &self,
        answer: &Answer<'_>,
        sent: &HeaderValue,
        rules: RejectionRules,
    ) -> RetryDecision {
        if answer.asks_for_dpop_nonce() {
            return self.retry_with_dpop_nonce(answer).await;
        }
        if let Some(step) = answer.step_up_for(sent) {
            if is_bound_header(sent) {
                self.remember_dpop_nonce(answer);
            }
            debug!(cache_key = %self.inner.shared.key, challenge = step.reason.error_code(), "the resource server asks for a step-up");
            return RetryDecision::StepUp(step);
        }
        if !self.judge(answer, sent, rules) {
            return RetryDecision::Done;
        }
        if !answer.is_replayable() {
            debug!(cache_key = %self.inner.shared.key, "token rejected; the request cannot be replayed, so it is not retried");
            return RetryDecision::Done;
        }
        if answer.is_redirected() {
            debug!(cache_key = %self.inner.shared.key, "token rejected after a redirect; not retried (the first hop may have processed the request)");
            return RetryDecision::Done;
        }
        let fresh = match self.cached(Entry::step5) {
            Some(step5) => Ok(step5),
            None => self.refresh().await.map(|entry| entry.step5()),
        };
        match fresh {
            Ok(step5) if step5.header != *sent => {
                RetryDecision::RetryWith(crate::request::Retry::new(step5, None))
            }
            // No new token (throttled, or the provider gave the same one back) or none at all.
            _ => RetryDecision::Done,
        }
    }

    /// Answer a step-up challenge ([`RetryDecision::StepUp`]) that met a request carrying
    /// `sent`: ask the provider for a token that satisfies it
    /// ([`IdentityProvider::step_up`]), serve that token from now on (saved to the store like
    /// any refresh), and say how to authorize the one replay.
    ///
    /// One step-up runs at a time; callers that met the same challenge while it ran get its
    /// result (its token, or its error) without asking the provider again, and the token that
    /// answered a challenge is never stepped up again for the same challenge (a server that
    /// is not satisfied would otherwise cost a token request per request). Not bounded by the refresh timeout: answering
    /// may need a person (a login). When the provider cannot answer, the error is
    /// [`AuthError::StepUpRequired`] with the challenge and the provider's error; the current
    /// token keeps being served, and nothing is retried.
    pub async fn step_up(
        &self,
        step: &StepUp,
        sent: &HeaderValue,
    ) -> Result<crate::request::Retry, AuthError> {
        let seen = self.inner.step_ups_done.load(Ordering::Acquire);
        let mut last = self.inner.step_up.lock().await;
        // One ran while this caller waited, for the same challenge: share its result.
        if self.inner.step_ups_done.load(Ordering::Acquire) != seen
            && let Some((answered, result)) = &*last
            && answered == step
        {
            match result {
                Ok(header) => {
                    if let Some(step5) = self
                        .cached(Entry::step5)
                        .filter(|s| s.header == *header && s.header != *sent)
                    {
                        return Ok(crate::request::Retry::new(step5, None));
                    }
                }
                Err(e) => return Err(e.clone()),
            }
        }
        let shared = &self.inner.shared;
        // The token that answered this very challenge met it again: the server is not
        // satisfied by what the provider can give, and asking again would only repeat it.
        if let Some((answered, Ok(header))) = &*last
            && answered == step
            && header == sent
        {
            warn!(cache_key = %shared.key, challenge = step.reason.error_code(), "the token that answered this challenge met it again; not asking the provider again");
            return Err(AuthError::StepUpRequired {
                challenge: Box::new(step.clone()),
                cause: Some(ProviderError::permanent(
                    "the token that answered this challenge was challenged again",
                )),
            });
        }
        Counters::bump(&shared.counters.step_ups);
        let current = self.inner.lock().held.clone();
        let fetched = shared.provider.step_up(current.as_deref(), step).await;
        let result = match shared.complete(fetched, current, None).await {
            Outcome::Ready(entry) => {
                let step5 = entry.step5();
                // Published like a flight's result (the cache, the slots, the backoff state).
                let id = self.inner.lock().next_flight_id.wrapping_add(1 << 63);
                let _ = self.inner.finish_flight(id, Outcome::Ready(entry));
                info!(cache_key = %shared.key, challenge = step.reason.error_code(), "answered a step-up challenge");
                Ok(step5)
            }
            Outcome::Failed { error, newer } => {
                if let Some(token) = newer {
                    self.inner.lock().held = Some(token); // never lose a rotated refresh token
                }
                let cause = match error {
                    AuthError::Refresh(e) => Some(e),
                    _ => None,
                };
                warn!(cache_key = %shared.key, challenge = step.reason.error_code(),
                    error = %cause.as_ref().map(|e| crate::error_chain(e)).unwrap_or_default(),
                    "could not answer a step-up challenge");
                Err(AuthError::StepUpRequired {
                    challenge: Box::new(step.clone()),
                    cause,
                })
            }
        };
        *last = Some((
            step.clone(),
            result.as_ref().map(|s| s.header.clone()).map_err(Clone::clone),
        ));
        self.inner.step_ups_done.fetch_add(1, Ordering::Release);
        result.map(|step5| crate::request::Retry::new(step5, None))
    }

    /// The synchronous half of [`Authorizer::decide`]: whether `answer` rejects the token, and
    /// if so, forget the token that was `sent` (rate-limited). For adapters that never retry.
    pub fn judge(&self, answer: &Answer<'_>, sent: &HeaderValue, rules: RejectionRules) -> bool {
        // Nonces matter only to bound tokens' proofs: a bearer request skips the lookup.
        if is_bound_header(sent) {
            self.remember_dpop_nonce(answer);
        }
        if !answer.rejects_token(rules) {
            return false;
        }
        self.invalidate(sent);
        true
    }

    /// Forget the cached token if it is still the one that `rejected` carried (a server answered
    /// 401 to it); the next call refreshes. Returns whether anything was forgotten.
    ///
    /// Comparing with the rejected header means that many requests failing with the same token
    /// cause one refresh, not one each. The token's refresh token is kept for that refresh.
    ///
    /// Refreshes caused by rejections are rate-limited: when the token was itself fetched
    /// because of a rejection and is rejected again before the minimum backoff has passed
    /// (doubling with each such round, up to the maximum backoff), it is kept, `false` is
    /// returned and [`Metrics::throttled_rejections`] counts it. A server that rejects every
    /// token then costs one fetch per backoff, not one per request.
    pub fn invalidate(&self, rejected: &HeaderValue) -> bool {
        self.invalidate_if(|entry| entry.issued(rejected), true)
    }
}

// The machinery behind both halves: the hot path, refreshes, rejection bookkeeping.
impl Authorizer {
    /// The hot path for a header: this thread's slot when it holds the current entry
    /// ([`local`]), else [`cached`](Self::cached), offering the entry to the slot. A
    /// bound token's header is returned too (callers refuse it or add its proof).
    #[inline(always)]
    fn cached_header(&self) -> Option<HeaderValue> {
        self.cached_via_slot(|header| header, |entry| entry.header())
    }

    /// [`cached_header`](Self::cached_header) for step 5 (a slot hit is an unbound token).
    #[inline(always)]
    fn cached_step5(&self) -> Option<Step5> {
        self.cached_via_slot(
            |header| Step5 {
                header,
                bound: None,
                extra: self.inner.shared.extra_headers.clone(),
            },
            Entry::step5,
        )
    }

    /// Steps 1 and 3-4 from this thread's slot (`hit` gets its header), else from the entry
    /// through [`cached`](Self::cached) (`miss`), offering an unbound entry to the slot.
    #[inline(always)]
    fn cached_via_slot<T>(
        &self,
        hit: impl FnOnce(HeaderValue) -> T,
        miss: impl FnOnce(&Entry) -> T,
    ) -> Option<T> {
        let serial = self.inner.generation.load(Ordering::Acquire);
        let now = self.inner.shared.clock.now_coarse();
        if let Some(header) = local::probe(serial, now) {
            return Some(hit(header));
        }
        self.cached_at(now, |entry| {
            if !entry.is_bound() {
                local::fill(entry);
            }
            miss(entry)
        })
    }

    /// The hot path: steps 1 and 3-4 on the cached entry, without locking or allocating.
    /// `None` when there is no usable token and the caller must wait for a refresh.
    #[inline(always)]
    fn cached<T>(&self, take: impl FnOnce(&Entry) -> T) -> Option<T> {
        self.cached_at(self.inner.shared.clock.now_coarse(), take)
    }

    /// [`cached`](Self::cached) with the (coarse) time already read.
    #[inline(always)]
    fn cached_at<T>(&self, now: SystemTime, take: impl FnOnce(&Entry) -> T) -> Option<T> {
        let guard = self.inner.current.load();
        let entry = guard.as_ref()?;
        match check_expiry(&entry.schedule, now) {
            Freshness::Fresh => Some(take(entry)),
            Freshness::RefreshDue => {
                self.inner.refresh_due(now);
                Some(take(entry))
            }
            Freshness::Expired => None,
        }
    }

    /// Step 2 for a caller without a usable token: join the running flight or start one, and
    /// wait for its result.
    async fn refresh(&self) -> FlightResult {
        let (rx, inline) = {
            let mut control = self.inner.lock();
            let now = self.inner.shared.clock.now();
            // Check again under the lock: a flight may have finished since the hot path looked.
            if let Some(entry) = self.inner.current.load_full() {
                match check_expiry(&entry.schedule, now) {
                    Freshness::Fresh => return Ok(entry),
                    Freshness::RefreshDue => {
                        Inner::start_background(&self.inner, &mut control, now);
                        return Ok(entry);
                    }
                    Freshness::Expired => {}
                }
            }
            if let Some(flight) = &control.flight {
                Counters::bump(&self.inner.shared.counters.joined_flights);
                (flight.rx.clone(), None)
            } else {
                if let (Some(not_before), Some(error)) = (control.retry_not_before, &control.last_error)
                    && now < not_before
                {
                    // Refreshing fails: a token past its margin but not expired still serves.
                    if let Some(entry) = self.inner.current.load_full().filter(|e| e.not_yet_expired(now)) {
                        Counters::bump(&self.inner.shared.counters.stale_served);
                        return Ok(entry);
                    }
                    return Err(error.clone());
                }
                Inner::start_flight(&self.inner, &mut control, Trigger::NoValidToken)
            }
        };
        if let Some(flight) = inline {
            flight.await;
        }
        wait_for(rx).await
    }
}

/// Where an authorizer's cached token stands (see [`Authorizer::state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenState {
    /// No token is cached.
    Missing,
    /// A token is cached and used as is. `expires_in` is `None` for tokens without a known expiry.
    Fresh {
        /// Time left before `expires_at`.
        expires_in: Option<Duration>,
    },
    /// A token is cached and used, and a background refresh is due.
    RefreshDue {
        /// Time left before `expires_at`.
        expires_in: Option<Duration>,
    },
    /// The cached token is no longer used: the next call refreshes first.
    Expired,
}

/// How long a token fetched after a rejection must live before a rejection of it causes another
/// fetch: the minimum backoff, doubled for each consecutive rejection-caused refresh, at most
/// the maximum backoff.
fn rejection_cooldown(streak: u32, timing: &Timing) -> Duration {
    timing
        .min_backoff
        .saturating_mul(1u32 << streak.min(20))
        .min(timing.max_backoff)
}

/// A request's method and URI (borrowed apart from its headers, which step 5 writes).
fn split_request<B>(request: &mut http::Request<B>) -> ((http::Method, http::Uri), &mut HeaderMap) {
    let parts = (request.method().clone(), request.uri().clone());
    (parts, request.headers_mut())
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.inner.current.load_full();
        f.debug_struct("Authorizer")
            .field("cache_key", &self.inner.shared.key)
            .field("token", &current.as_ref().map(|e| &e.token))
            .field("timing", &self.inner.shared.timing)
            .field("store", &self.inner.shared.store.is_some())
            .finish_non_exhaustive()
    }
}

/// Which token a request carried, for judging its answer later ([`SentToken::judge`]): the
/// authorizer and the cached entry it came from, and whether it is bound (DPoP). Plain data: no
/// token, no header, no reference count, so a response future keeps it for free. From
/// [`Authorizer::try_authorize_target_sent`].
///
/// The default is no token at all: judging it forgets nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SentToken {
    /// The authorizer's number in the registry (0: none).
    authorizer: u64,
    /// The entry's serial (0: none).
    serial: u64,
    /// 1 for a bound token, else 0. A whole word, not a `bool`: values holding a `SentToken`
    /// are moved as whole words, and a byte written alone then read back inside a wider load
    /// stalls store-to-load forwarding (measured in the tower layer's response future).
    bound: u64,
}

impl SentToken {
    /// Whether the token is bound to a key (DPoP): its answers may carry a nonce for the origin.
    pub fn is_bound(&self) -> bool {
        self.bound != 0
    }

    /// [`Authorizer::judge`] for the request that carried this token: whether `answer` rejects
    /// it, and if so, make its authorizer forget it (rate-limited) unless it has been replaced
    /// since; a bound token's answer also updates the origin's DPoP nonce (the answer must then
    /// know its origin, [`Answer::for_target`]). The authorizer is not kept alive by the token:
    /// if it has been dropped, there is nothing to forget.
    #[inline]
    pub fn judge(&self, answer: &Answer<'_>, rules: RejectionRules) -> bool {
        if self.bound == 0 && !answer.rejects_token(rules) {
            return false; // the common case: no lookup at all
        }
        self.judge_slow(answer, rules)
    }

    #[cold]
    fn judge_slow(&self, answer: &Answer<'_>, rules: RejectionRules) -> bool {
        let rejected = answer.rejects_token(rules);
        let Some(authorizer) = registry::find(self.authorizer) else {
            return rejected;
        };
        if self.is_bound() {
            authorizer.remember_dpop_nonce(answer);
        }
        if rejected {
            authorizer.invalidate_if(|entry| entry.serial == self.serial, true);
        }
        rejected
    }
}
