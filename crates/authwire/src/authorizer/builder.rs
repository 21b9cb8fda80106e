//! [`AuthorizerBuilder`]: every setting of an [`Authorizer`] and its documented default.

use super::*;

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
    fetch_limit: Option<super::FetchLimit>,
    request_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl AuthorizerBuilder {
    pub(super) fn new(provider: impl IdentityProvider) -> Self {
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
            fetch_limit: None,
            request_headers: Vec::new(),
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

    /// Give up on one [`IdentityProvider::fetch_token`] call after this long, as a transient
    /// failure (default [`DEFAULT_FETCH_TIMEOUT`](crate::DEFAULT_FETCH_TIMEOUT), 30 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.refresh_timeout = timeout;
        self
    }

    /// Share a bound on concurrent fetches with the other authorizers of the same identity
    /// provider (see [`FetchLimit`](super::FetchLimit)). Default: unbounded.
    pub fn fetch_limit(mut self, limit: &super::FetchLimit) -> Self {
        self.fetch_limit = Some(limit.clone());
        self
    }

    /// The former name of [`fetch_timeout`](Self::fetch_timeout): it bounds one provider call,
    /// not a whole refresh (which also reads and writes the store).
    pub fn refresh_timeout(self, timeout: Duration) -> Self {
        self.fetch_timeout(timeout)
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
    pub fn try_build(self) -> Result<Authorizer, crate::error::BuildError> {
        let needed = self.refresh_timeout + 2 * self.store_timeout;
        if let Some(ttl) = self.lease_ttl
            && ttl < needed
        {
            return Err(crate::error::BuildError::LeaseTooShort { ttl, needed });
        }
        Ok(self.build())
    }

    /// Add this header to every request beside `Authorization` (step 5), after the provider's
    /// own [`request_headers`](crate::IdentityProvider::request_headers) (a header named by both
    /// is this one). `Authorization` and `DPoP` are the pipeline's: they are never overridden.
    ///
    /// ```
    /// use authwire::{Authorizer, StaticTokenProvider};
    /// use http::{HeaderMap, HeaderName, HeaderValue};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), authwire::AuthError> {
    /// let authorizer = Authorizer::builder(StaticTokenProvider::new("t"))
    ///     .request_header(HeaderName::from_static("x-goog-user-project"), HeaderValue::from_static("billing-project"))
    ///     .build();
    /// let mut headers = HeaderMap::new();
    /// authorizer.authorize(&mut headers).await?;
    /// assert_eq!(headers["x-goog-user-project"], "billing-project");
    /// assert_eq!(headers["authorization"], "Bearer t");
    /// # Ok(()) }
    /// ```
    pub fn request_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.request_headers.push((name, value));
        self
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
        let mut extra = self.provider.request_headers();
        extra.extend(self.request_headers);
        extra.retain(|(name, _)| name != http::header::AUTHORIZATION && name.as_str() != "dpop");
        let extra_headers = (!extra.is_empty()).then(|| crate::pipeline::ExtraHeaders::new(extra));
        Authorizer {
            inner: Arc::new(Inner {
                current: ArcSwapOption::empty(),
                generation: AtomicU64::new(0),
                registered: AtomicU64::new(0),
                gate: AtomicU64::new(0),
                degraded: AtomicBool::new(false),
                control: Mutex::new(Control::default()),
                dpop_nonces: Mutex::default(),
                step_up: tokio::sync::Mutex::const_new(None),
                step_ups_done: AtomicU64::new(0),
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
                    fetch_limit: self.fetch_limit,
                    counters: Counters::default(),
                    extra_headers,
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
