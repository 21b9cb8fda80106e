//! Step 2, the flight: one shared refresh for all callers, its gate, the backoff state, and the
//! publication of its result to the cache and to every waiter.

use super::*;

pub(super) struct Inner {
    /// The token served now, with its schedule and prepared header.
    pub(super) current: ArcSwapOption<Entry>,
    /// The serial of `current`'s entry, 0 when there is none: what the per-thread slots
    /// ([`super::local`]) are checked against. Written after `current`, under `control`.
    pub(super) generation: AtomicU64,
    /// The number under which [`super::registry`] knows this authorizer (0: not registered).
    pub(super) registered: AtomicU64,
    /// Nanoseconds since the epoch before which no background refresh may start; `u64::MAX`
    /// while a flight runs. Read on the refresh-due path only.
    pub(super) gate: AtomicU64,
    /// The last refresh failed (for the `stale_served` counter).
    pub(super) degraded: AtomicBool,
    /// Everything that changes only when a flight starts or ends.
    pub(super) control: Mutex<Control>,
    pub(super) shared: Arc<Shared>,
    /// The latest `DPoP-Nonce` of each resource server (origin -> nonce), shared by every
    /// request of this authorizer (RFC 9449 section 9). Read only for bound tokens.
    pub(super) dpop_nonces: Mutex<std::collections::HashMap<String, String>>,
    /// Held while a step-up runs (one at a time), with the last challenge answered and the
    /// header that answered it, so that callers that met the same challenge share one answer.
    pub(super) step_up: tokio::sync::Mutex<Option<(crate::request::StepUp, Result<HeaderValue, AuthError>)>>,
    /// Step-ups finished; a caller that saw this change while it waited for the lock shares
    /// the result of the one that ran.
    pub(super) step_ups_done: AtomicU64,
}

#[derive(Default)]
pub(super) struct Control {
    pub(super) flight: Option<Flight>,
    pub(super) next_flight_id: u64,
    /// The newest token known, even if expired or rejected: the provider gets it as `current`
    /// so it can use its refresh token.
    pub(super) held: Option<Arc<Token>>,
    /// A token a server rejected; never adopted again from the store.
    pub(super) rejected: Option<Arc<Token>>,
    pub(super) failures: u32,
    pub(super) retry_not_before: Option<SystemTime>,
    pub(super) last_error: Option<AuthError>,
    /// When the current token was published.
    pub(super) published_at: Option<SystemTime>,
    /// A server rejected a token and its replacement has not been published yet.
    pub(super) rejection_pending: bool,
    /// The current token replaced one that a server rejected.
    pub(super) published_for_rejection: bool,
    /// Consecutive rejection-caused refreshes (each doubles the wait before the next).
    pub(super) rejection_streak: u32,
}

pub(super) type FlightResult = Result<Arc<Entry>, AuthError>;

pub(super) struct Flight {
    pub(super) id: u64,
    pub(super) rx: watch::Receiver<Option<FlightResult>>,
    pub(super) abort: Option<tokio::task::AbortHandle>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Trigger {
    /// No usable token: callers are waiting.
    NoValidToken,
    /// The token is in its refresh window: callers are served meanwhile.
    RefreshDue,
}

pub(super) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

pub(super) async fn wait_for(mut rx: watch::Receiver<Option<FlightResult>>) -> FlightResult {
    match rx.wait_for(Option::is_some).await {
        Ok(result) => result.clone().unwrap_or(Err(AuthError::RefreshAborted)),
        Err(_) => Err(AuthError::RefreshAborted),
    }
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, Control> {
        // Control stays consistent even if a holder panicked: every update is a plain store.
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called from the hot path when the token is in its refresh window.
    #[cold]
    pub(super) fn refresh_due(self: &Arc<Self>, now: SystemTime) {
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
    pub(super) fn start_background(this: &Arc<Self>, control: &mut Control, now: SystemTime) {
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
    pub(super) fn start_flight(
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
    pub(super) fn finish_flight(&self, id: u64, outcome: Outcome) -> FlightResult {
        let shared = &self.shared;
        let now = shared.clock.now();
        let mut control = self.lock();
        if control.flight.as_ref().is_some_and(|f| f.id == id) {
            control.flight = None;
        }
        match outcome {
            Outcome::Ready(entry) => {
                self.current.store(Some(entry.clone()));
                self.generation.store(entry.serial, Ordering::Release);
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
                let cause: &(dyn std::error::Error + 'static) = match &error {
                    AuthError::Refresh(e) => e,
                    AuthError::Store(e) => e,
                    other => other,
                };
                match self.current.load_full() {
                    Some(entry) if entry.not_yet_expired(now) => {
                        warn!(cache_key = %shared.key, error = %crate::error_chain(cause), retry_in = ?delay,
                            "token refresh failed; serving the still-valid token meanwhile");
                        Ok(entry)
                    }
                    _ => {
                        warn!(cache_key = %shared.key, error = %crate::error_chain(cause), retry_in = ?delay,
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
        super::registry::remove(*self.registered.get_mut());
        let control = self.control.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(abort) = control.flight.as_ref().and_then(|f| f.abort.as_ref()) {
            abort.abort();
        }
    }
}

pub(super) struct FlightInput {
    pub(super) id: u64,
    pub(super) trigger: Trigger,
    pub(super) held: Option<Arc<Token>>,
    pub(super) rejected: Option<Arc<Token>>,
}

pub(super) enum Outcome {
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
pub(super) async fn run_flight(
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
pub(super) struct FlightGuard {
    pub(super) inner: Weak<Inner>,
    pub(super) id: u64,
    pub(super) finished: bool,
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

pub(super) fn nanos_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1))
}
