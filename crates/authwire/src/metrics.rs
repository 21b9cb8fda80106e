//! Counters an [`Authorizer`](crate::Authorizer) keeps for dashboards and tests.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of an authorizer's counters, from [`Authorizer::metrics`](crate::Authorizer::metrics).
///
/// Cache hits are not counted: counting them would write a shared cache line on the hot path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Calls to [`IdentityProvider::fetch_token`](crate::IdentityProvider::fetch_token).
    pub fetches: u64,
    /// Fetches that failed transiently (network, timeout, 5xx, 429).
    pub transient_failures: u64,
    /// Fetches that failed permanently (rejected credentials or grant, unusable response).
    pub permanent_failures: u64,
    /// Refreshes that found a valid token in the store (written by another process or an earlier
    /// run) and used it without a fetch.
    pub store_hits: u64,
    /// Callers that found a refresh already running and waited for it instead of starting one.
    pub joined_flights: u64,
    /// Refreshes started ahead of expiry, in the background.
    pub background_refreshes: u64,
    /// Calls answered with the current token while its refresh was failing.
    pub stale_served: u64,
    /// Store loads or saves that failed (the pipeline went on without the store).
    pub store_errors: u64,
    /// Tokens forgotten because a server rejected them ([`Authorizer::invalidate`](crate::Authorizer::invalidate)).
    pub invalidations: u64,
    /// Rejections that did not cause a refetch: the token had been fetched moments before,
    /// after another rejection, so the problem is not the token (see
    /// [`Authorizer::invalidate`](crate::Authorizer::invalidate)).
    pub throttled_rejections: u64,
    /// Calls to [`IdentityProvider::step_up`](crate::IdentityProvider::step_up), answering a
    /// resource server's step-up challenge.
    pub step_ups: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) fetches: AtomicU64,
    pub(crate) transient_failures: AtomicU64,
    pub(crate) permanent_failures: AtomicU64,
    pub(crate) store_hits: AtomicU64,
    pub(crate) joined_flights: AtomicU64,
    pub(crate) background_refreshes: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) throttled_rejections: AtomicU64,
    pub(crate) step_ups: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Metrics {
        Metrics {
            fetches: self.fetches.load(Relaxed),
            transient_failures: self.transient_failures.load(Relaxed),
            permanent_failures: self.permanent_failures.load(Relaxed),
            store_hits: self.store_hits.load(Relaxed),
            joined_flights: self.joined_flights.load(Relaxed),
            background_refreshes: self.background_refreshes.load(Relaxed),
            stale_served: self.stale_served.load(Relaxed),
            store_errors: self.store_errors.load(Relaxed),
            invalidations: self.invalidations.load(Relaxed),
            throttled_rejections: self.throttled_rejections.load(Relaxed),
            step_ups: self.step_ups.load(Relaxed),
        }
    }
}
