//! The [`Authorizer`]: the pipeline, its cache and its shared refresh flight.
//!
//! # How a call flows
//!
//! The hot path ([`Authorizer::cached`]) loads the current [`Entry`] (an `ArcSwap` load, no
//! lock), reads the clock once, runs step 1 and clones the prepared header of this thread's
//! stripe. Nothing else: no lock, no allocation, no shared cache line written.
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

use crate::clock::SharedClock;
use crate::metrics::{Counters, Metrics};
use crate::pipeline::{Entry, update_headers};
use crate::policy::{self, Freshness, Timing};
use crate::request::{Answer, RejectionRules, RetryDecision, Target};
use crate::store::{LeaseGuard, RefreshLease};
use crate::{
    AuthError, CacheKey, Clock, IdentityProvider, ProviderError, StoreError, SystemClock, Token, TokenStore,
};
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

struct Inner {
    /// The token served now, with its schedule and prepared header.
    current: ArcSwapOption<Entry>,
    /// Nanoseconds since the epoch before which no background refresh may start; `u64::MAX`
    /// while a flight runs. Read on the refresh-due path only.
    gate: AtomicU64,
    /// The last refresh failed (for the `stale_served` counter).
    degraded: AtomicBool,
    /// Everything that changes only when a flight starts or ends.
    control: Mutex<Control>,
    shared: Arc<Shared>,
}

/// What a flight needs; the flight task owns a reference to it, not to [`Inner`], so that
/// dropping the last `Authorizer` drops `Inner`, which aborts the flight.
struct Shared {
    provider: Arc<dyn IdentityProvider>,
    store: Option<Arc<dyn TokenStore>>,
    clock: SharedClock,
    key: CacheKey,
    timing: Timing,
    refresh_timeout: Duration,
    store_timeout: Duration,
    lease_ttl: Duration,
    require_store: bool,
    counters: Counters,
}

#[derive(Default)]
struct Control {
    flight: Option<Flight>,
    next_flight_id: u64,
    /// The newest token known, even if expired or rejected: the provider gets it as `current`
    /// so it can use its refresh token.
    held: Option<Arc<Token>>,
    /// A token a server rejected; never adopted again from the store.
    rejected: Option<Arc<Token>>,
    failures: u32,
    retry_not_before: Option<SystemTime>,
    last_error: Option<AuthError>,
    /// When the current token was published.
    published_at: Option<SystemTime>,
    /// A server rejected a token and its replacement has not been published yet.
    rejection_pending: bool,
    /// The current token replaced one that a server rejected.
    published_for_rejection: bool,
    /// Consecutive rejection-caused refreshes (each doubles the wait before the next).
    rejection_streak: u32,
}

type FlightResult = Result<Arc<Entry>, AuthError>;

struct Flight {
    id: u64,
    rx: watch::Receiver<Option<FlightResult>>,
    abort: Option<tokio::task::AbortHandle>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// No usable token: callers are waiting.
    NoValidToken,
    /// The token is in its refresh window: callers are served meanwhile.
    RefreshDue,
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

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
    pub fn authorize<'a>(&'a self, headers: &'a mut HeaderMap) -> Authorize<'a> {
        Authorize {
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

    /// Steps 1-5 for a request to `target`: the request-level entry point of every HTTP
    /// adapter (see [`crate::request`]). Returns the header that was put on `headers`, for
    /// [`Authorizer::decide`] once the answer is in.
    pub fn authorize_target<'a>(
        &'a self,
        target: &Target<'_>,
        headers: &'a mut HeaderMap,
    ) -> AuthorizeTarget<'a> {
        // Bearer tokens do not depend on the target; proofs of possession will.
        let _ = target;
        AuthorizeTarget {
            header: self.authorization_header(),
            headers,
        }
    }

    /// Steps 1-5 for `target` without waiting: when the cached token is usable now, put its
    /// header on `headers` and return it; else `None` and `headers` is untouched (call
    /// [`authorize_target`](Self::authorize_target)). For adapters whose cached path is
    /// synchronous (a tower `Service::call`).
    #[inline]
    pub fn try_authorize_target(&self, target: &Target<'_>, headers: &mut HeaderMap) -> Option<HeaderValue> {
        let _ = target;
        let value = self.cached_authorization_header()?;
        update_headers(headers, value.clone());
        Some(value)
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
        match self.authorization_header().await {
            Ok(fresh) if fresh != *sent => RetryDecision::RetryWith(crate::request::Retry::new(fresh)),
            // No new token (throttled, or the provider gave the same one back) or none at all.
            _ => RetryDecision::Done,
        }
    }

    /// The synchronous half of [`Authorizer::decide`]: whether `answer` rejects the token, and
    /// if so, forget the token that was `sent` (rate-limited). For adapters that never retry.
    pub fn judge(&self, answer: &Answer<'_>, sent: &HeaderValue, rules: RejectionRules) -> bool {
        if !answer.rejects_token(rules) {
            return false;
        }
        self.invalidate(sent);
        true
    }

    /// Steps 1-4: the `Authorization` header value for the current token (marked sensitive).
    ///
    /// Equivalent to `async fn authorization_header(&self) -> Result<HeaderValue, AuthError>`;
    /// the future is written by hand so that the cached path costs no more than its work.
    pub fn authorization_header(&self) -> AuthorizationHeader<'_> {
        AuthorizationHeader {
            authorizer: self,
            refreshing: None,
        }
    }

    /// Steps 1-4 without waiting: the header for the cached token if it is usable now, else
    /// `None` (and nothing is started except, inside the refresh window, the background
    /// refresh). For synchronous code paths; async code calls
    /// [`authorization_header`](Self::authorization_header).
    #[inline]
    pub fn cached_authorization_header(&self) -> Option<HeaderValue> {
        self.cached(Entry::header)
    }

    /// Steps 1-3: the current valid token.
    pub async fn token(&self) -> Result<Arc<Token>, AuthError> {
        if let Some(token) = self.cached(|e| e.token.clone()) {
            return Ok(token);
        }
        Ok(Box::pin(self.refresh()).await?.token.clone())
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
        let inner = &self.inner;
        let mut control = inner.lock();
        let Some(entry) = inner.current.load_full() else {
            return false;
        };
        if !entry.issued(rejected) {
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
        control.rejected = Some(entry.token.clone());
        Counters::bump(&inner.shared.counters.invalidations);
        info!(cache_key = %inner.shared.key, "token rejected by a server; it will be refreshed on the next call");
        true
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
        match entry.check_expiry(now) {
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

    /// The hot path: steps 1 and 3-4 on the cached entry, without locking or allocating.
    /// `None` when there is no usable token and the caller must wait for a refresh.
    #[inline(always)]
    fn cached<T>(&self, take: impl FnOnce(&Entry) -> T) -> Option<T> {
        let guard = self.inner.current.load();
        let entry = guard.as_ref()?;
        let now = self.inner.shared.clock.now();
        match entry.check_expiry(now) {
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
                match entry.check_expiry(now) {
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

/// The future of [`Authorizer::authorization_header`]: the cached path on its first poll, and
/// only when that finds no usable token, the (boxed) wait for a refresh.
#[must_use = "futures do nothing unless polled"]
pub struct AuthorizationHeader<'a> {
    authorizer: &'a Authorizer,
    refreshing: Option<Pin<Box<dyn Future<Output = FlightResult> + Send + 'a>>>,
}

impl Future for AuthorizationHeader<'_> {
    type Output = Result<HeaderValue, AuthError>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        let refreshing = match &mut this.refreshing {
            Some(refreshing) => refreshing,
            None => {
                if let Some(value) = this.authorizer.cached(Entry::header) {
                    return std::task::Poll::Ready(Ok(value));
                }
                this.refreshing.insert(Box::pin(this.authorizer.refresh()))
            }
        };
        refreshing
            .as_mut()
            .poll(cx)
            .map(|result| result.map(|entry| entry.header()))
    }
}

/// The future of [`Authorizer::authorize`].
#[must_use = "futures do nothing unless polled"]
pub struct Authorize<'a> {
    header: AuthorizationHeader<'a>,
    headers: &'a mut HeaderMap,
}

impl Future for Authorize<'_> {
    type Output = Result<(), AuthError>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        Pin::new(&mut this.header).poll(cx).map(|result| {
            // Step 5.
            update_headers(this.headers, result?);
            Ok(())
        })
    }
}

/// The future of [`Authorizer::authorize_target`]: steps 1-5, then the header that was sent.
#[must_use = "futures do nothing unless polled"]
pub struct AuthorizeTarget<'a> {
    header: AuthorizationHeader<'a>,
    headers: &'a mut HeaderMap,
}

impl Future for AuthorizeTarget<'_> {
    type Output = Result<HeaderValue, AuthError>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        Pin::new(&mut this.header).poll(cx).map(|result| {
            let value = result?;
            // Step 5.
            update_headers(this.headers, value.clone());
            Ok(value)
        })
    }
}

impl fmt::Debug for AuthorizeTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizeTarget")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Authorize<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorize")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AuthorizationHeader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationHeader")
            .field("refreshing", &self.refreshing.is_some())
            .finish()
    }
}

async fn wait_for(mut rx: watch::Receiver<Option<FlightResult>>) -> FlightResult {
    match rx.wait_for(Option::is_some).await {
        Ok(result) => result.clone().unwrap_or(Err(AuthError::RefreshAborted)),
        Err(_) => Err(AuthError::RefreshAborted),
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Control> {
        // Control stays consistent even if a holder panicked: every update is a plain store.
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called from the hot path when the token is in its refresh window.
    #[cold]
    fn refresh_due(self: &Arc<Self>, now: SystemTime) {
        if self.degraded.load(Ordering::Relaxed) {
            Counters::bump(&self.shared.counters.stale_served);
        }
        if nanos_since_epoch(now) < self.gate.load(Ordering::Acquire) {
            return; // a flight runs, or the backoff has not elapsed
        }
        let mut control = self.lock();
        Self::start_background(self, &mut control, now);
    }

    /// Start a background refresh unless one runs or the backoff forbids it.
    fn start_background(this: &Arc<Self>, control: &mut Control, now: SystemTime) {
        if control.flight.is_some() {
            return;
        }
        if let Some(not_before) = control.retry_not_before
            && now < not_before
        {
            this.gate.store(nanos_since_epoch(not_before), Ordering::Release);
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            // No runtime to run it on: the refresh happens when the token expires.
            return;
        }
        Counters::bump(&this.shared.counters.background_refreshes);
        let _ = Self::start_flight(this, control, Trigger::RefreshDue);
    }

    /// Start a flight: spawned on the current runtime, or returned to be run inline by the
    /// caller when there is none.
    fn start_flight(
        this: &Arc<Self>,
        control: &mut Control,
        trigger: Trigger,
    ) -> (watch::Receiver<Option<FlightResult>>, Option<BoxFuture>) {
        control.next_flight_id += 1;
        let id = control.next_flight_id;
        let (tx, rx) = watch::channel(None);
        this.gate.store(u64::MAX, Ordering::Release);
        let runtime = tokio::runtime::Handle::try_current().ok();
        let flight = run_flight(
            this.shared.clone(),
            Arc::downgrade(this),
            FlightInput {
                id,
                trigger,
                held: control.held.clone(),
                rejected: control.rejected.clone(),
                timeouts: runtime.is_some(),
            },
            tx,
        );
        let (abort, inline) = match runtime {
            Some(handle) => (Some(handle.spawn(flight).abort_handle()), None),
            None => (None, Some(Box::pin(flight) as BoxFuture)),
        };
        control.flight = Some(Flight {
            id,
            rx: rx.clone(),
            abort,
        });
        (rx, inline)
    }

    /// Publish a flight's outcome: the cache, the backoff state, the result for the waiters.
    fn finish_flight(&self, id: u64, outcome: Outcome) -> FlightResult {
        let shared = &self.shared;
        let now = shared.clock.now();
        let mut control = self.lock();
        if control.flight.as_ref().is_some_and(|f| f.id == id) {
            control.flight = None;
        }
        match outcome {
            Outcome::Ready(entry) => {
                self.current.store(Some(entry.clone()));
                control.held = Some(entry.token.clone());
                control.rejected = None;
                control.published_at = Some(now);
                control.published_for_rejection = std::mem::take(&mut control.rejection_pending);
                if !control.published_for_rejection {
                    control.rejection_streak = 0;
                }
                control.failures = 0;
                control.retry_not_before = None;
                control.last_error = None;
                self.degraded.store(false, Ordering::Relaxed);
                self.gate.store(0, Ordering::Release);
                Ok(entry)
            }
            Outcome::Failed { error, newer } => {
                if let Some(token) = newer {
                    control.held = Some(token); // never lose a rotated refresh token
                }
                control.failures = control.failures.saturating_add(1);
                let classified = match &error {
                    AuthError::Refresh(e) => e.clone(),
                    other => ProviderError::transient(other.to_string()),
                };
                let delay = policy::backoff(
                    control.failures,
                    &classified,
                    &shared.timing,
                    policy::jitter_unit(),
                );
                let not_before = now + delay;
                control.retry_not_before = Some(not_before);
                control.last_error = Some(error.clone());
                self.degraded.store(true, Ordering::Relaxed);
                self.gate.store(nanos_since_epoch(not_before), Ordering::Release);
                // Log the cause itself (the provider's or the store's error), not the wrapper
                // that callers get.
                let cause: &dyn std::fmt::Display = match &error {
                    AuthError::Refresh(e) => e,
                    AuthError::Store(e) => e,
                    other => other,
                };
                match self.current.load_full() {
                    Some(entry) if entry.not_yet_expired(now) => {
                        warn!(cache_key = %shared.key, error = %cause, retry_in = ?delay,
                            "token refresh failed; serving the still-valid token meanwhile");
                        Ok(entry)
                    }
                    _ => {
                        warn!(cache_key = %shared.key, error = %cause, retry_in = ?delay,
                            "token refresh failed and no valid token is held");
                        Err(error)
                    }
                }
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let control = self.control.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(abort) = control.flight.as_ref().and_then(|f| f.abort.as_ref()) {
            abort.abort();
        }
    }
}

struct FlightInput {
    id: u64,
    trigger: Trigger,
    held: Option<Arc<Token>>,
    rejected: Option<Arc<Token>>,
    timeouts: bool,
}

enum Outcome {
    /// A token to serve: fetched (and saved), or found valid in the store.
    Ready(Arc<Entry>),
    /// No new token. `newer` is a token that was fetched but could not be handed out (kept so
    /// that its refresh token is used next time).
    Failed {
        error: AuthError,
        newer: Option<Arc<Token>>,
    },
}

/// One flight: step 2 for everyone waiting, then publish.
async fn run_flight(
    shared: Arc<Shared>,
    inner: Weak<Inner>,
    input: FlightInput,
    tx: watch::Sender<Option<FlightResult>>,
) {
    let mut guard = FlightGuard {
        inner: inner.clone(),
        id: input.id,
        finished: false,
    };
    let outcome = shared.refresh(&input).await;
    let result = match inner.upgrade() {
        Some(inner) => inner.finish_flight(input.id, outcome),
        None => match outcome {
            Outcome::Ready(entry) => Ok(entry),
            Outcome::Failed { error, .. } => Err(error),
        },
    };
    guard.finished = true;
    let _ = tx.send(Some(result));
}

/// Clears the flight if its task ends without publishing (panic, abort, inline caller dropped),
/// and backs off as after a transient failure, so that a panicking provider is not called in a
/// loop.
struct FlightGuard {
    inner: Weak<Inner>,
    id: u64,
    finished: bool,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(inner) = self.inner.upgrade() {
            let outcome = Outcome::Failed {
                error: AuthError::RefreshAborted,
                newer: None,
            };
            let _ = inner.finish_flight(self.id, outcome);
        }
    }
}

impl Shared {
    /// Step 2, refresh: consult the store, call the provider, prepare and save the new token.
    async fn refresh(&self, input: &FlightInput) -> Outcome {
        debug!(cache_key = %self.key, trigger = ?input.trigger, "refresh started");
        let stored = self.load_stored(input.timeouts).await;
        let held = input.held.clone();

        // A valid token in the store that is newer than ours (another process refreshed, or
        // this is a restart) is used without a fetch.
        if let Some(entry) = stored.as_ref().and_then(|s| self.adoptable(s, input)) {
            return self.adopt(entry);
        }

        // The provider gets the newest token we know of, for its refresh token.
        let mut current = newest(stored, held);
        let mut lease = None;
        if let Some(store) = &self.store {
            match self.coordinate(store.as_ref(), input).await {
                Coordination::Adopt(entry) => return self.adopt(entry),
                Coordination::Refresh {
                    guard,
                    newest: fresher,
                } => {
                    lease = guard;
                    current = newest(fresher, current);
                }
            }
        }
        let outcome = self.fetch(current, input, lease.as_deref()).await;
        if let Some(guard) = lease {
            guard.release().await;
        }
        outcome
    }

    /// A stored token to use instead of fetching: valid, newer than ours, not the one a server
    /// rejected.
    fn adoptable(&self, stored: &Arc<Token>, input: &FlightInput) -> Option<Arc<Entry>> {
        let held = input.held.as_deref();
        let rejected = input
            .rejected
            .as_ref()
            .is_some_and(|r| r.same_access_token(stored));
        let ours = held.is_some_and(|h| h.same_access_token(stored));
        let now = self.clock.now();
        let unexpired = stored.expires_at().is_none_or(|exp| exp > now);
        if rejected || ours || !unexpired || !newer_than(stored, held) {
            return None;
        }
        self.prepare(stored.clone(), now)
            .ok()
            .filter(|entry| entry.check_expiry(now) != Freshness::Expired)
    }

    fn adopt(&self, entry: Arc<Entry>) -> Outcome {
        Counters::bump(&self.counters.store_hits);
        debug!(cache_key = %self.key, "refresh found a valid token in the store");
        Outcome::Ready(entry)
    }

    /// Take the store's refresh lease, or wait for the process that holds it. Falls back to
    /// refreshing alone when the store cannot coordinate (it failed, or the lease outlived its
    /// TTL), so that the store is never a single point of failure.
    async fn coordinate(&self, store: &dyn TokenStore, input: &FlightInput) -> Coordination {
        let alone = Coordination::Refresh {
            guard: None,
            newest: None,
        };
        let polls = (self.lease_ttl.as_millis() / FLEET_POLL_INTERVAL.as_millis()).max(1) as u32;
        for attempt in 0..=polls {
            let lease = bounded(
                input.timeouts,
                self.store_timeout,
                store.begin_refresh(&self.key, self.lease_ttl),
            )
            .await
            .unwrap_or(Err(StoreError::timeout(self.store_timeout)));
            match lease {
                Ok(RefreshLease::Held(guard)) => {
                    // Rotation safety: the newest refresh token may have been saved since the
                    // first read; read again now that no one else refreshes.
                    let fresher = self.load_stored(input.timeouts).await;
                    if let Some(entry) = fresher.as_ref().and_then(|s| self.adoptable(s, input)) {
                        guard.release().await;
                        return Coordination::Adopt(entry);
                    }
                    return Coordination::Refresh {
                        guard: Some(guard),
                        newest: fresher,
                    };
                }
                Ok(RefreshLease::HeldElsewhere) if input.timeouts && attempt < polls => {
                    if attempt == 0 {
                        debug!(cache_key = %self.key, "another process is refreshing; waiting for its token");
                    }
                    tokio::time::sleep(FLEET_POLL_INTERVAL).await;
                    let stored = self.load_stored(input.timeouts).await;
                    if let Some(entry) = stored.as_ref().and_then(|s| self.adoptable(s, input)) {
                        return Coordination::Adopt(entry);
                    }
                }
                Ok(RefreshLease::HeldElsewhere) => {
                    warn!(cache_key = %self.key, lease_ttl = ?self.lease_ttl,
                        "the refresh lease stayed taken by another process; refreshing alone");
                    return alone;
                }
                Ok(_) => return alone, // Uncoordinated
                Err(e) => {
                    Counters::bump(&self.counters.store_errors);
                    warn!(cache_key = %self.key, error = %e, "could not coordinate the refresh through the store; refreshing alone");
                    return alone;
                }
            }
        }
        alone
    }

    /// Call the provider, prepare and save the new token.
    async fn fetch(
        &self,
        current: Option<Arc<Token>>,
        input: &FlightInput,
        lease: Option<&dyn LeaseGuard>,
    ) -> Outcome {
        Counters::bump(&self.counters.fetches);
        let fetched = match bounded(
            input.timeouts,
            self.refresh_timeout,
            self.provider.fetch_token(current.as_deref()),
        )
        .await
        {
            Some(result) => result,
            None => Err(ProviderError::timeout(self.refresh_timeout)),
        };
        let mut token = match fetched {
            Ok(token) => token,
            Err(mut e) => {
                // The provider refused an answer that carried a refresh token: keep it.
                let newer = match e.take_refresh_token() {
                    Some(rt) => Some(
                        self.keep_refresh_token(current.as_deref(), rt, input.timeouts, lease)
                            .await,
                    ),
                    None => None,
                };
                return self.failed(e, newer);
            }
        };
        let now = self.clock.now();
        if token.issued_at().is_none() {
            token = token.with_issued_at(now);
        }
        // RFC 6749 section 6: a new refresh token replaces the old one; none means keep the old.
        if token.refresh_token().is_none()
            && let Some(rt) = current.as_deref().and_then(Token::refresh_token)
        {
            token.set_refresh_token(Some(rt.clone()));
        }
        let token = Arc::new(token);
        // Steps 3 and 4, once for this token.
        let entry = match self.prepare(token.clone(), now) {
            Ok(entry) => entry,
            Err(e) => {
                if token.refresh_token().is_some() {
                    self.save_kept(&token, input.timeouts, lease).await;
                }
                return self.failed(e, Some(token));
            }
        };
        if token.expires_at().is_some_and(|exp| exp <= now) {
            warn!(cache_key = %self.key, "the identity provider issued a token that is already expired by this machine's clock; check the clock");
        }
        // Saved before it is handed out: a rotated refresh token must survive a crash.
        if let Err(e) = self.save(&token, input.timeouts, lease).await {
            Counters::bump(&self.counters.store_errors);
            warn!(cache_key = %self.key, error = %e, "could not save the new token to the store");
            if self.require_store {
                return Outcome::Failed {
                    error: AuthError::Store(e),
                    newer: Some(token),
                };
            }
        }
        info!(
            cache_key = %self.key,
            expires_in = ?token.expires_at().and_then(|e| e.duration_since(now).ok()),
            "token refreshed"
        );
        Outcome::Ready(entry)
    }

    /// A token to remember (and save) for its refresh token only: `current` with `refresh_token`
    /// in place of its own, or, with no current token, one that is expired from the start so
    /// that nobody serves it.
    async fn keep_refresh_token(
        &self,
        current: Option<&Token>,
        refresh_token: secrecy::SecretString,
        timeouts: bool,
        lease: Option<&dyn LeaseGuard>,
    ) -> Arc<Token> {
        let mut token = current
            .cloned()
            .unwrap_or_else(|| Token::new("unusable").with_expires_at(UNIX_EPOCH + Duration::from_secs(1)));
        token.set_refresh_token(Some(refresh_token));
        let token = Arc::new(token);
        self.save_kept(&token, timeouts, lease).await;
        token
    }

    /// Save a token kept for its refresh token after a refused answer.
    async fn save_kept(&self, token: &Token, timeouts: bool, lease: Option<&dyn LeaseGuard>) {
        match self.save(token, timeouts, lease).await {
            Ok(()) => {
                info!(cache_key = %self.key, "kept the refresh token that came with a refused answer");
            }
            Err(e) => {
                Counters::bump(&self.counters.store_errors);
                warn!(cache_key = %self.key, error = %e, "could not save the refresh token that came with a refused answer; it is kept in memory");
            }
        }
    }

    fn failed(&self, error: ProviderError, newer: Option<Arc<Token>>) -> Outcome {
        let counter = if error.is_transient() {
            &self.counters.transient_failures
        } else {
            &self.counters.permanent_failures
        };
        Counters::bump(counter);
        Outcome::Failed {
            error: AuthError::Refresh(error),
            newer,
        }
    }

    /// Plan the token's life from when it was issued (or `now`, if unknown) and prepare its
    /// header.
    fn prepare(&self, token: Arc<Token>, now: SystemTime) -> Result<Arc<Entry>, ProviderError> {
        let issued_at = token.issued_at().unwrap_or(now);
        let schedule = policy::schedule(&token, issued_at, &self.timing, policy::jitter_unit());
        Entry::prepare(token, schedule).map(Arc::new)
    }

    async fn load_stored(&self, timeouts: bool) -> Option<Arc<Token>> {
        let store = self.store.as_ref()?;
        let loaded = bounded(timeouts, self.store_timeout, store.load(&self.key))
            .await
            .unwrap_or(Err(StoreError::timeout(self.store_timeout)));
        match loaded {
            Ok(token) => token.map(Arc::new),
            Err(e) => {
                Counters::bump(&self.counters.store_errors);
                warn!(cache_key = %self.key, error = %e, "could not read the token store; fetching a new token");
                None
            }
        }
    }

    /// Save through the lease when one is held (a fenced save, where the store can), else
    /// plainly.
    async fn save(
        &self,
        token: &Token,
        timeouts: bool,
        lease: Option<&dyn LeaseGuard>,
    ) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let timeout = || Err(StoreError::timeout(self.store_timeout));
        if let Some(lease) = lease
            && let Some(fenced) = bounded(
                timeouts,
                self.store_timeout,
                lease.save_under_lease(&self.key, token),
            )
            .await
            .unwrap_or_else(|| Some(timeout()))
        {
            return fenced;
        }
        bounded(timeouts, self.store_timeout, store.save(&self.key, token))
            .await
            .unwrap_or_else(timeout)
    }
}

/// The newer of two tokens, either of which may be missing.
fn newest(a: Option<Arc<Token>>, b: Option<Arc<Token>>) -> Option<Arc<Token>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if newer_than(&a, Some(&b)) { a } else { b }),
        (a, b) => a.or(b),
    }
}

enum Coordination {
    /// Another process refreshed: use its token.
    Adopt(Arc<Entry>),
    /// Refresh here, holding the lease if there is one; `newest` is a token read after taking it.
    Refresh {
        guard: Option<Box<dyn LeaseGuard>>,
        newest: Option<Arc<Token>>,
    },
}

/// How often a process waiting for another's refresh reads the store.
const FLEET_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Whether `a` is a newer token than `b`: it expires later (a token without expiry is not newer
/// than one with an expiry).
fn newer_than(a: &Token, b: Option<&Token>) -> bool {
    let Some(b) = b else { return true };
    match (a.expires_at(), b.expires_at()) {
        (Some(x), Some(y)) => x > y,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

async fn bounded<F: Future>(enabled: bool, limit: Duration, f: F) -> Option<F::Output> {
    if enabled {
        tokio::time::timeout(limit, f).await.ok()
    } else {
        Some(f.await)
    }
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

fn nanos_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1))
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

/// Configures an [`Authorizer`]; every setting has a documented default.
///
/// ```
/// use authwire::{async_trait, Authorizer, CacheKey, IdentityProvider, ProviderError, Token};
/// use std::time::Duration;
/// # struct P;
/// # #[async_trait] impl IdentityProvider for P {
/// #     async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> { Ok(Token::new("t")) }
/// #     fn cache_key(&self) -> CacheKey { CacheKey::from_static("p") }
/// # }
/// let authorizer = Authorizer::builder(P)
///     .expiry_margin(Duration::from_secs(60))     // default 30 s
///     .refresh_window(Duration::from_secs(600))   // default 5 min
///     .refresh_timeout(Duration::from_secs(10))   // default 30 s
///     .build();
/// ```
pub struct AuthorizerBuilder {
    provider: Arc<dyn IdentityProvider>,
    store: Option<Arc<dyn TokenStore>>,
    clock: SharedClock,
    timing: Timing,
    refresh_timeout: Duration,
    store_timeout: Duration,
    lease_ttl: Option<Duration>,
    require_store: bool,
    cache_key: Option<CacheKey>,
}

impl AuthorizerBuilder {
    fn new(provider: impl IdentityProvider) -> Self {
        Self {
            provider: Arc::new(provider),
            store: None,
            clock: Arc::new(SystemClock),
            timing: Timing::default(),
            refresh_timeout: policy::DEFAULT_REFRESH_TIMEOUT,
            store_timeout: policy::DEFAULT_STORE_TIMEOUT,
            lease_ttl: None,
            require_store: false,
            cache_key: None,
        }
    }

    /// Persist and share tokens through `store` (default: none, memory only).
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Read time from `clock` (default: [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Treat a token as expired this long before its expiry
    /// (default [`DEFAULT_EXPIRY_MARGIN`](crate::DEFAULT_EXPIRY_MARGIN), 30 s; never more than a
    /// quarter of the token's lifetime).
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.timing.expiry_margin = margin;
        self
    }

    /// Refresh in the background this long before expiry
    /// (default [`DEFAULT_REFRESH_WINDOW`](crate::DEFAULT_REFRESH_WINDOW), 5 min; never more
    /// than half the token's lifetime).
    pub fn refresh_window(mut self, window: Duration) -> Self {
        self.timing.refresh_window = window;
        self
    }

    /// Randomise the refresh point within the last fifth of the window so that a fleet does not
    /// refresh in step (default: on).
    pub fn jitter(mut self, on: bool) -> Self {
        self.timing.jitter = on;
        self
    }

    /// The wait after the first transient failure and the longest wait, which is also the wait
    /// after a permanent failure (defaults [`DEFAULT_MIN_BACKOFF`](crate::DEFAULT_MIN_BACKOFF)
    /// 1 s and [`DEFAULT_MAX_BACKOFF`](crate::DEFAULT_MAX_BACKOFF) 60 s). If `min` exceeds
    /// `max`, `max` is raised to `min`.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.timing.min_backoff = min;
        self.timing.max_backoff = max.max(min);
        self
    }

    /// Give up on one provider call after this long, as a transient failure
    /// (default [`DEFAULT_REFRESH_TIMEOUT`](crate::DEFAULT_REFRESH_TIMEOUT), 30 s).
    pub fn refresh_timeout(mut self, timeout: Duration) -> Self {
        self.refresh_timeout = timeout;
        self
    }

    /// Give up on one store operation after this long
    /// (default [`DEFAULT_STORE_TIMEOUT`](crate::DEFAULT_STORE_TIMEOUT), 5 s).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// How long a fleet-wide refresh lease may be held (see [`TokenStore::begin_refresh`]):
    /// the longest a process waits for another's refresh before refreshing alone. Default:
    /// the refresh timeout plus twice the store timeout (40 s with the defaults).
    pub fn refresh_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }

    /// Fail the call with [`AuthError::Store`] when a new token cannot be saved, instead of
    /// serving it unsaved (default: off). For tools whose refresh token would otherwise be lost
    /// at exit; the token is kept in memory and the save is retried with the next refresh.
    pub fn require_store(mut self, required: bool) -> Self {
        self.require_store = required;
        self
    }

    /// Store tokens under `key` instead of the provider's [`IdentityProvider::cache_key`].
    pub fn cache_key(mut self, key: CacheKey) -> Self {
        self.cache_key = Some(key);
        self
    }

    /// The authorizer, after checking the settings that can be wrong: a refresh lease TTL
    /// shorter than the refresh timeout plus two store timeouts (taking the lease and saving)
    /// would let a slow holder outlive its lease while another process refreshes with the same
    /// refresh token.
    pub fn try_build(self) -> Result<Authorizer, crate::BuildError> {
        let needed = self.refresh_timeout + 2 * self.store_timeout;
        if let Some(ttl) = self.lease_ttl
            && ttl < needed
        {
            return Err(crate::BuildError::LeaseTooShort { ttl, needed });
        }
        Ok(self.build())
    }

    /// The authorizer. A refresh lease TTL that [`try_build`](Self::try_build) would refuse is
    /// raised to the least safe value instead, with a warning.
    pub fn build(mut self) -> Authorizer {
        let needed = self.refresh_timeout + 2 * self.store_timeout;
        if let Some(ttl) = self.lease_ttl
            && ttl < needed
        {
            warn!(lease_ttl = ?ttl, raised_to = ?needed,
                "the refresh lease TTL is shorter than the refresh timeout plus two store timeouts; raised");
            self.lease_ttl = Some(needed);
        }
        let key = self.cache_key.unwrap_or_else(|| self.provider.cache_key());
        Authorizer {
            inner: Arc::new(Inner {
                current: ArcSwapOption::empty(),
                gate: AtomicU64::new(0),
                degraded: AtomicBool::new(false),
                control: Mutex::new(Control::default()),
                shared: Arc::new(Shared {
                    provider: self.provider,
                    store: self.store,
                    clock: self.clock,
                    key,
                    timing: self.timing,
                    refresh_timeout: self.refresh_timeout,
                    store_timeout: self.store_timeout,
                    lease_ttl: self
                        .lease_ttl
                        .unwrap_or(self.refresh_timeout + 2 * self.store_timeout),
                    require_store: self.require_store,
                    counters: Counters::default(),
                }),
            }),
        }
    }
}

impl fmt::Debug for AuthorizerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizerBuilder")
            .field("cache_key", &self.cache_key)
            .field("timing", &self.timing)
            .field("refresh_timeout", &self.refresh_timeout)
            .field("store_timeout", &self.store_timeout)
            .field("store", &self.store.is_some())
            .field("require_store", &self.require_store)
            .finish_non_exhaustive()
    }
}
