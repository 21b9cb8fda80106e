//! Step 2, the refresh itself: consult the store, take the fleet lease, call the provider,
//! prepare and save the new token.

use super::*;

/// What a flight needs; the flight task owns a reference to it, not to [`Inner`], so that
/// dropping the last `Authorizer` drops `Inner`, which aborts the flight.
pub(super) struct Shared {
    pub(super) provider: Arc<dyn IdentityProvider>,
    pub(super) store: Option<Arc<dyn TokenStore>>,
    pub(super) clock: SharedClock,
    pub(super) key: CacheKey,
    pub(super) timing: Timing,
    pub(super) refresh_timeout: Duration,
    pub(super) store_timeout: Duration,
    pub(super) lease_ttl: Duration,
    pub(super) require_store: bool,
    pub(super) fetch_limit: Option<super::FetchLimit>,
    pub(super) counters: Counters,
    /// Step 5's headers beside `Authorization`, if the provider or the builder named any.
    pub(super) extra_headers: Option<crate::pipeline::ExtraHeaders>,
}

impl Shared {
    /// Step 2, refresh: consult the store, call the provider, prepare and save the new token.
    pub(super) async fn refresh(&self, input: &FlightInput) -> Outcome {
        debug!(cache_key = %self.key, trigger = ?input.trigger, "refresh started");
        let stored = self.load_stored().await;
        let held = input.held.clone();

        // A valid token in the store that is newer than ours (another process refreshed, or
        // this is a restart) is used without a fetch.
        if let Some(entry) = stored.as_ref().and_then(|s| self.adoptable(s, input)) {
            return self.adopt(entry);
        }

        // A slot under the identity provider's limit, before any refresh lease is taken (a
        // lease must not run out while this waits); the wait is not part of the fetch timeout.
        let _slot = match &self.fetch_limit {
            Some(limit) => limit.acquire().await,
            None => None,
        };

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
                Coordination::Unavailable(e) => {
                    // Without the lease, another process may be redeeming the same refresh
                    // token; a rotating identity provider would take the second redemption for
                    // theft and revoke the whole family. While the token still serves, do not
                    // risk it: fail this attempt (transient, with backoff) and keep serving.
                    // Once it no longer serves, refresh alone: availability first (docs/fleet.md).
                    if input.trigger == Trigger::RefreshDue
                        && current.as_deref().is_some_and(|t| t.refresh_token().is_some())
                    {
                        warn!(cache_key = %self.key, "not redeeming the refresh token without the fleet's refresh lease; serving the still-valid token and trying again after backoff");
                        Counters::bump(&self.counters.transient_failures);
                        return Outcome::Failed {
                            error: AuthError::Store(e),
                            newer: None,
                        };
                    }
                    warn!(cache_key = %self.key, "refreshing alone, without the fleet's refresh lease");
                }
            }
        }
        let outcome = self.fetch(current, lease.as_deref()).await;
        if let Some(guard) = lease {
            guard.release().await;
        }
        outcome
    }

    /// A stored token to use instead of fetching: valid, newer than ours, not the one a server
    /// rejected.
    pub(super) fn adoptable(&self, stored: &Arc<Token>, input: &FlightInput) -> Option<Arc<Entry>> {
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
        // A bound token read back from a store is usable only with its proof, which its
        // provider restores from the stored key; without it, prepare refuses the token and
        // the authorizer refreshes instead of sending it bare.
        let stored = match stored.stored_proof_key() {
            Some(key) if stored.proof().is_none() => match self.provider.restore_proof(key) {
                Some(proof) => Arc::new((**stored).clone().with_proof(proof)),
                None => stored.clone(),
            },
            _ => stored.clone(),
        };
        self.prepare(stored, now)
            .ok()
            .filter(|entry| check_expiry(&entry.schedule, now) != Freshness::Expired)
    }

    pub(super) fn adopt(&self, entry: Arc<Entry>) -> Outcome {
        Counters::bump(&self.counters.store_hits);
        debug!(cache_key = %self.key, "refresh found a valid token in the store");
        Outcome::Ready(entry)
    }

    /// Take the store's refresh lease, or wait for the process that holds it. When the store
    /// cannot coordinate (it failed, or the lease stayed taken), the answer is `Unavailable`:
    /// [`refresh`](Self::refresh) then refreshes alone, so that the store is never a single
    /// point of failure, except that it never redeems a still-valid token's refresh token
    /// without the lease.
    pub(super) async fn coordinate(&self, store: &dyn TokenStore, input: &FlightInput) -> Coordination {
        let polls = (self.lease_ttl.as_millis() / FLEET_POLL_INTERVAL.as_millis()).max(1) as u32;
        for attempt in 0..=polls {
            let lease = self
                .bounded(self.store_timeout, store.begin_refresh(&self.key, self.lease_ttl))
                .await
                .unwrap_or(Err(StoreError::timeout(self.store_timeout)));
            match lease {
                Ok(RefreshLease::Held(guard)) => {
                    // Rotation safety: the newest refresh token may have been saved since the
                    // first read; read again now that no one else refreshes.
                    let fresher = self.load_stored().await;
                    if let Some(entry) = fresher.as_ref().and_then(|s| self.adoptable(s, input)) {
                        guard.release().await;
                        return Coordination::Adopt(entry);
                    }
                    return Coordination::Refresh {
                        guard: Some(guard),
                        newest: fresher,
                    };
                }
                Ok(RefreshLease::HeldElsewhere) if can_wait() && attempt < polls => {
                    if attempt == 0 {
                        debug!(cache_key = %self.key, "another process is refreshing; waiting for its token");
                    }
                    self.clock.sleep(FLEET_POLL_INTERVAL).await;
                    let stored = self.load_stored().await;
                    if let Some(entry) = stored.as_ref().and_then(|s| self.adoptable(s, input)) {
                        return Coordination::Adopt(entry);
                    }
                }
                Ok(RefreshLease::HeldElsewhere) => break,
                Ok(_) => {
                    // Uncoordinated: the store does not coordinate; every process refreshes alone.
                    return Coordination::Refresh {
                        guard: None,
                        newest: None,
                    };
                }
                Err(e) => {
                    Counters::bump(&self.counters.store_errors);
                    warn!(cache_key = %self.key, error = %crate::error_chain(&e), "could not take the fleet's refresh lease");
                    return Coordination::Unavailable(e);
                }
            }
        }
        warn!(cache_key = %self.key, lease_ttl = ?self.lease_ttl, "the refresh lease stayed taken by other processes");
        Coordination::Unavailable(StoreError::new(format!(
            "the fleet's refresh lease stayed taken by other processes (lease TTL {:?})",
            self.lease_ttl
        )))
    }

    /// Call the provider, prepare and save the new token.
    pub(super) async fn fetch(&self, current: Option<Arc<Token>>, lease: Option<&dyn LeaseGuard>) -> Outcome {
        Counters::bump(&self.counters.fetches);
        let fetched = match self
            .bounded(
                self.refresh_timeout,
                self.provider.fetch_token(current.as_deref()),
            )
            .await
        {
            Some(result) => result,
            None => Err(ProviderError::timeout(self.refresh_timeout)),
        };
        let outcome = self.complete(fetched, current, lease).await;
        if let Outcome::Failed {
            error: AuthError::Refresh(e),
            ..
        } = &outcome
        {
            let counter = if e.is_transient() {
                &self.counters.transient_failures
            } else {
                &self.counters.permanent_failures
            };
            Counters::bump(counter);
        }
        outcome
    }

    /// What a provider call returned, made ready to serve: the refresh token kept (a refused
    /// answer's, or the old one when none came back), steps 3 and 4 run, and the token saved.
    pub(super) async fn complete(
        &self,
        fetched: Result<Token, ProviderError>,
        current: Option<Arc<Token>>,
        lease: Option<&dyn LeaseGuard>,
    ) -> Outcome {
        let mut token = match fetched {
            Ok(token) => token,
            Err(mut e) => {
                // The provider refused an answer that carried a refresh token: keep it.
                let newer = match e.take_refresh_token() {
                    Some(rt) => Some(self.keep_refresh_token(current.as_deref(), rt, lease).await),
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
                    self.save_kept(&token, lease).await;
                }
                return self.failed(e, Some(token));
            }
        };
        if token.expires_at().is_some_and(|exp| exp <= now) {
            warn!(cache_key = %self.key, "the identity provider issued a token that is already expired by this machine's clock; check the clock");
        }
        // Saved before it is handed out: a rotated refresh token must survive a crash.
        if let Err(e) = self.save(&token, lease).await {
            Counters::bump(&self.counters.store_errors);
            warn!(cache_key = %self.key, error = %crate::error_chain(&e), "could not save the new token to the store");
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
    pub(super) async fn keep_refresh_token(
        &self,
        current: Option<&Token>,
        refresh_token: secrecy::SecretString,
        lease: Option<&dyn LeaseGuard>,
    ) -> Arc<Token> {
        let mut token = current
            .cloned()
            .unwrap_or_else(|| Token::new("unusable").with_expires_at(UNIX_EPOCH + Duration::from_secs(1)));
        token.set_refresh_token(Some(refresh_token));
        let token = Arc::new(token);
        self.save_kept(&token, lease).await;
        token
    }

    /// Save a token kept for its refresh token after a refused answer.
    pub(super) async fn save_kept(&self, token: &Token, lease: Option<&dyn LeaseGuard>) {
        match self.save(token, lease).await {
            Ok(()) => {
                info!(cache_key = %self.key, "kept the refresh token that came with a refused answer");
            }
            Err(e) => {
                Counters::bump(&self.counters.store_errors);
                warn!(cache_key = %self.key, error = %crate::error_chain(&e), "could not save the refresh token that came with a refused answer; it is kept in memory");
            }
        }
    }

    /// A provider's failure as an outcome (counted by [`Shared::fetch`], not here: a step-up's
    /// failure is not a failed refresh).
    pub(super) fn failed(&self, error: ProviderError, newer: Option<Arc<Token>>) -> Outcome {
        Outcome::Failed {
            error: AuthError::Refresh(error),
            newer,
        }
    }

    /// Plan the token's life from when it was issued (or `now`, if unknown) and prepare its
    /// header.
    pub(super) fn prepare(&self, token: Arc<Token>, now: SystemTime) -> Result<Arc<Entry>, ProviderError> {
        let issued_at = token.issued_at().unwrap_or(now);
        let schedule = policy::schedule(&token, issued_at, &self.timing, policy::jitter_unit());
        Entry::prepare(token, schedule).map(|entry| Arc::new(entry.with_extra(self.extra_headers.clone())))
    }

    pub(super) async fn load_stored(&self) -> Option<Arc<Token>> {
        let store = self.store.as_ref()?;
        let loaded = self
            .bounded(self.store_timeout, store.load(&self.key))
            .await
            .unwrap_or(Err(StoreError::timeout(self.store_timeout)));
        match loaded {
            Ok(token) => token.map(Arc::new),
            Err(e) => {
                Counters::bump(&self.counters.store_errors);
                warn!(cache_key = %self.key, error = %crate::error_chain(&e), "could not read the token store; fetching a new token");
                None
            }
        }
    }

    /// Save through the lease when one is held (a fenced save, where the store can), else
    /// plainly.
    pub(super) async fn save(&self, token: &Token, lease: Option<&dyn LeaseGuard>) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let timeout = || Err(StoreError::timeout(self.store_timeout));
        if let Some(lease) = lease
            && let Some(fenced) = self
                .bounded(self.store_timeout, lease.save_under_lease(&self.key, token))
                .await
                .unwrap_or_else(|| Some(timeout()))
        {
            return fenced;
        }
        self.bounded(self.store_timeout, store.save(&self.key, token))
            .await
            .unwrap_or_else(timeout)
    }
}

/// The newer of two tokens, either of which may be missing.
///
/// `stored` wins unless `held` is strictly newer: the store is written after every fetch (and
/// when a process keeps a rotated refresh token beside the access token it already had, with
/// the same expiry), so on a tie it holds the latest refresh token.
pub(super) fn newest(stored: Option<Arc<Token>>, held: Option<Arc<Token>>) -> Option<Arc<Token>> {
    match (stored, held) {
        (Some(stored), Some(held)) => Some(if newer_than(&held, Some(&stored)) {
            held
        } else {
            stored
        }),
        (stored, held) => stored.or(held),
    }
}

pub(super) enum Coordination {
    /// Another process refreshed: use its token.
    Adopt(Arc<Entry>),
    /// Refresh here, holding the lease if there is one; `newest` is a token read after taking it.
    Refresh {
        guard: Option<Box<dyn LeaseGuard>>,
        newest: Option<Arc<Token>>,
    },
    /// The store could not coordinate (it failed, or the lease stayed taken past its TTL):
    /// refresh alone, unless a still-valid token's refresh token would be redeemed without the
    /// lease.
    Unavailable(StoreError),
}

/// How often a process waiting for another's refresh reads the store.
pub(super) const FLEET_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Whether `a` is a newer token than `b`: it expires later (a token without expiry is not newer
/// than one with an expiry).
pub(super) fn newer_than(a: &Token, b: Option<&Token>) -> bool {
    let Some(b) = b else { return true };
    match (a.expires_at(), b.expires_at()) {
        (Some(x), Some(y)) => x > y,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Whether this task may wait: on a tokio runtime. Called outside one (the authorizer then runs
/// a refresh inline in the caller), nothing is timed and nobody is waited for.
pub(super) fn can_wait() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

impl Shared {
    /// `f`, given up after `limit` on the authorizer's clock (the one source of time); `None`
    /// when it ran out. Unbounded outside a runtime (see [`can_wait`]).
    pub(super) async fn bounded<F: Future>(&self, limit: Duration, f: F) -> Option<F::Output> {
        if !can_wait() {
            return Some(f.await);
        }
        let mut f = std::pin::pin!(f);
        let mut timer = self.clock.sleep(limit);
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(out) = f.as_mut().poll(cx) {
                return std::task::Poll::Ready(Some(out));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await
    }
}
