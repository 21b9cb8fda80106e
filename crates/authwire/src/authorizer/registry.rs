//! Authorizers that have handed out a [`SentToken`](super::SentToken), by number, held weakly:
//! so that an adapter's response future can judge its answer holding plain data only, with no
//! reference count to write per request (see [`Authorizer::try_authorize_target_sent`]).
//!
//! An authorizer is registered the first time it hands out a `SentToken` (most never are) and
//! removed when it is dropped. Numbers are never reused, so a token whose authorizer is gone
//! finds nothing, and judging its answer forgets nothing.

use super::{Authorizer, Inner};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};

static REGISTRY: RwLock<BTreeMap<u64, Weak<Inner>>> = RwLock::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

/// This authorizer's number, registering it on first use.
#[inline(always)]
pub(super) fn number(inner: &Arc<Inner>) -> u64 {
    match inner.registered.load(Ordering::Acquire) {
        0 => register(inner),
        n => n,
    }
}

#[cold]
fn register(inner: &Arc<Inner>) -> u64 {
    let mut map = REGISTRY.write().unwrap_or_else(PoisonError::into_inner);
    let n = inner.registered.load(Ordering::Acquire);
    if n != 0 {
        return n; // another thread registered it meanwhile
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    map.insert(n, Arc::downgrade(inner));
    inner.registered.store(n, Ordering::Release);
    n
}

/// The authorizer with this number, if it is still alive.
pub(super) fn find(n: u64) -> Option<Authorizer> {
    let inner = REGISTRY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&n)?
        .upgrade()?;
    Some(Authorizer { inner })
}

/// Called when an authorizer is dropped.
pub(super) fn remove(n: u64) {
    if n != 0 {
        REGISTRY
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&n);
    }
}
