//! The pipeline with a store: read before the first fetch, written before a token is handed out.

use crate::support::{Scripted, TestStore, drive, err, ok, settle, t0, token};
use authwire::{AuthError, Authorizer, ManualClock, ProviderError};
use secrecy::ExposeSecret;
use std::sync::atomic::Ordering;
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn a_valid_stored_token_means_no_fetch_at_all() {
    let store = TestStore::default();
    store.put("scripted", token(7, t0(), HOUR));
    let provider = Scripted::new([ok(token(1, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(ManualClock::new(t0()))
        .store(store.clone())
        .build();
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-7");
    assert_eq!(provider.calls(), 0);
    assert_eq!(auth.metrics().store_hits, 1);
}

#[tokio::test]
async fn a_new_token_is_saved_before_it_is_handed_out_and_a_restart_reuses_it() {
    let store = TestStore::default();
    let clock = ManualClock::new(t0());
    let provider = Scripted::new([ok(token(1, t0(), HOUR).with_refresh_token("r1"))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .store(store.clone())
        .build();
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
    let saved = store.get("scripted").expect("saved before the call returned");
    assert_eq!(saved.refresh_token().unwrap().expose_secret(), "r1");
    drop(auth);

    let restarted = Authorizer::builder(provider.clone())
        .clock(clock)
        .store(store.clone())
        .build();
    assert_eq!(restarted.authorization_header().await.unwrap(), "Bearer access-1");
    assert_eq!(provider.calls(), 1, "the restart used the stored token");
}

#[tokio::test]
async fn an_expired_stored_token_lends_its_refresh_token_to_the_fetch() {
    let store = TestStore::default();
    store.put(
        "scripted",
        token(1, t0() - 2 * HOUR, HOUR).with_refresh_token("stored-rt"),
    );
    let provider = Scripted::new([ok(token(2, t0(), HOUR).with_refresh_token("rotated-rt"))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(ManualClock::new(t0()))
        .store(store.clone())
        .build();
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-2");
    assert_eq!(provider.seen_refresh_tokens(), [Some("stored-rt".to_owned())]);
    let saved = store.get("scripted").unwrap();
    assert_eq!(saved.refresh_token().unwrap().expose_secret(), "rotated-rt");
}

#[tokio::test]
async fn a_newer_token_saved_by_another_process_is_adopted_on_refresh() {
    let store = TestStore::default();
    let clock = ManualClock::new(t0());
    let provider = Scripted::new([
        ok(token(1, t0(), HOUR).with_refresh_token("r1")),
        ok(token(9, t0(), 9 * HOUR)),
    ]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .store(store.clone())
        .build();
    auth.authorization_header().await.unwrap();
    // Another replica refreshed and rotated the refresh token.
    store.put("scripted", token(2, t0() + HOUR, HOUR).with_refresh_token("r2"));
    clock.advance(HOUR);
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-2");
    assert_eq!(provider.calls(), 1);
    // When that one expires too, the fetch uses the newest refresh token, not our stale r1.
    clock.advance(HOUR);
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-9");
    assert_eq!(
        provider.seen_refresh_tokens().last().unwrap().as_deref(),
        Some("r2")
    );
}

#[tokio::test]
async fn a_failing_store_does_not_fail_requests() {
    let store = TestStore::default();
    store.fail_load.store(true, Ordering::SeqCst);
    store.fail_save.store(true, Ordering::SeqCst);
    let provider = Scripted::new([ok(token(1, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(ManualClock::new(t0()))
        .store(store.clone())
        .build();
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
    assert_eq!(auth.metrics().store_errors, 2);
    assert_eq!(provider.calls(), 1);
}

#[tokio::test]
async fn a_hanging_store_is_bounded_by_the_store_timeout() {
    let clock = ManualClock::new(t0());
    let store = TestStore::default();
    store.hang.store(true, Ordering::SeqCst);
    let provider = Scripted::new([ok(token(1, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .store(store.clone())
        .store_timeout(Duration::from_secs(2))
        .build();
    assert_eq!(
        drive(&clock, auth.authorization_header()).await.unwrap(),
        "Bearer access-1"
    );
    assert_eq!(auth.metrics().store_errors, 1);
}

#[tokio::test]
async fn require_store_fails_the_call_but_keeps_the_rotated_refresh_token() {
    let store = TestStore::default();
    store.fail_save.store(true, Ordering::SeqCst);
    let clock = ManualClock::new(t0());
    let provider = Scripted::new([
        ok(token(1, t0(), HOUR).with_refresh_token("rotated")),
        ok(token(2, t0(), HOUR)),
    ]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .store(store.clone())
        .require_store(true)
        .build();
    let e = auth.authorization_header().await.unwrap_err();
    assert!(matches!(e, AuthError::Store(_)), "{e:?}");
    assert!(
        authwire::error_chain(&e).contains("save failed on purpose"),
        "{e}"
    );

    store.fail_save.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(2)); // past the backoff
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-2");
    assert_eq!(provider.seen_refresh_tokens()[1].as_deref(), Some("rotated"));
    let saved = store.get("scripted").unwrap();
    assert_eq!(saved.refresh_token().unwrap().expose_secret(), "rotated");
}

#[tokio::test]
async fn an_invalidated_token_is_not_adopted_again_from_the_store() {
    let store = TestStore::default();
    let provider = Scripted::new([ok(token(1, t0(), HOUR)), ok(token(2, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(ManualClock::new(t0()))
        .store(store.clone())
        .build();
    let first = auth.authorization_header().await.unwrap();
    assert!(auth.invalidate(&first));
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-2");
    assert_eq!(provider.calls(), 2);
}

#[tokio::test]
async fn with_an_expired_token_and_a_down_provider_the_error_is_the_providers() {
    let store = TestStore::default();
    let provider = Scripted::new([err(ProviderError::rejected(Some(400), "invalid_grant", None))]);
    let auth = Authorizer::builder(provider)
        .clock(ManualClock::new(t0()))
        .store(store)
        .build();
    let e = auth.authorization_header().await.unwrap_err();
    assert_eq!(
        e.provider_error().and_then(|p| p.error_code()),
        Some("invalid_grant")
    );
}

/// A store whose lease is held by "another process" until `release_after` polls, at which point
/// that process's token appears in the store (or not, if `other_saves` is false).
#[derive(Clone)]
struct LeasedElsewhere {
    inner: TestStore,
    polls: Arc<std::sync::atomic::AtomicUsize>,
    release_after: usize,
    other_saves: Option<authwire::Token>,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

#[authwire::async_trait]
impl TokenStore for LeasedElsewhere {
    async fn load(&self, key: &CacheKey) -> Result<Option<authwire::Token>, authwire::StoreError> {
        self.inner.load(key).await
    }
    async fn save(&self, key: &CacheKey, token: &authwire::Token) -> Result<(), authwire::StoreError> {
        self.inner.save(key, token).await
    }
    async fn delete(&self, key: &CacheKey) -> Result<(), authwire::StoreError> {
        self.inner.delete(key).await
    }
    async fn begin_refresh(
        &self,
        key: &CacheKey,
        _ttl: Duration,
    ) -> Result<RefreshLease, authwire::StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(authwire::StoreError::new("redis is down"));
        }
        let n = self.polls.fetch_add(1, Ordering::SeqCst);
        if n < self.release_after {
            if n + 1 == self.release_after
                && let Some(t) = &self.other_saves
            {
                self.inner.save(key, t).await?;
            }
            return Ok(RefreshLease::HeldElsewhere);
        }
        Ok(RefreshLease::Held(Box::new(NoopGuard)))
    }
}

struct NoopGuard;

#[authwire::async_trait]
impl authwire::LeaseGuard for NoopGuard {
    async fn release(self: Box<Self>) {}
}

use authwire::{CacheKey, RefreshLease, TokenStore};
use std::sync::Arc;

fn leased(release_after: usize, other_saves: Option<authwire::Token>) -> LeasedElsewhere {
    LeasedElsewhere {
        inner: TestStore::default(),
        polls: Arc::default(),
        release_after,
        other_saves,
        fail: Arc::default(),
    }
}

#[tokio::test]
async fn while_another_process_refreshes_its_token_is_awaited_not_fetched_again() {
    let clock = ManualClock::new(t0());
    let store = leased(3, Some(token(9, t0(), HOUR)));
    let provider = Scripted::new([ok(token(1, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .store(store.clone())
        .build();
    assert_eq!(
        drive(&clock, auth.authorization_header()).await.unwrap(),
        "Bearer access-9"
    );
    assert_eq!(provider.calls(), 0, "the other process's token was used");
    assert_eq!(auth.metrics().store_hits, 1);
}

#[tokio::test]
async fn a_lease_that_is_never_released_stops_blocking_after_its_ttl() {
    let clock = ManualClock::new(t0());
    let store = leased(usize::MAX, None);
    let provider = Scripted::new([ok(token(1, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .store(store.clone())
        .refresh_timeout(Duration::from_secs(1))
        .store_timeout(Duration::from_millis(500))
        .refresh_lease_ttl(Duration::from_secs(2))
        .build();
    assert_eq!(
        drive(&clock, auth.authorization_header()).await.unwrap(),
        "Bearer access-1"
    );
    assert_eq!(provider.calls(), 1, "refreshed alone once the lease TTL passed");
    assert!(store.polls.load(Ordering::SeqCst) >= 20, "it waited, polling");
}

#[tokio::test]
async fn when_the_lease_frees_without_a_token_this_process_takes_it_and_refreshes() {
    let clock = ManualClock::new(t0());
    let store = leased(2, None);
    let provider = Scripted::new([ok(token(1, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .store(store.clone())
        .build();
    assert_eq!(
        drive(&clock, auth.authorization_header()).await.unwrap(),
        "Bearer access-1"
    );
    assert_eq!(store.polls.load(Ordering::SeqCst), 3);
    assert_eq!(provider.calls(), 1);
}

#[tokio::test]
async fn a_store_that_cannot_coordinate_does_not_stop_the_refresh() {
    let store = leased(0, None);
    store.fail.store(true, Ordering::SeqCst);
    let provider = Scripted::new([ok(token(1, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(ManualClock::new(t0()))
        .store(store)
        .build();
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
    assert_eq!(auth.metrics().store_errors, 1);
}

/// Issue 29: a lease that the store cannot give (Redis failing over, or a lease its replicas did
/// not acknowledge) must not lead a process to redeem a refresh token another process may be
/// redeeming, while the token it has still serves.
#[tokio::test]
async fn without_the_lease_a_still_valid_tokens_refresh_token_is_not_redeemed() {
    let clock = ManualClock::new(t0());
    let store = leased(0, None);
    let provider = Scripted::new([
        ok(token(1, t0(), HOUR).with_refresh_token("rt-1")),
        ok(token(2, t0(), 2 * HOUR).with_refresh_token("rt-2")),
    ]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .store(store.clone())
        .build();
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");

    // The store fails over; the token enters its refresh window.
    store.fail.store(true, Ordering::SeqCst);
    clock.advance(HOUR - Duration::from_secs(240));
    for _ in 0..20 {
        assert_eq!(
            auth.authorization_header().await.unwrap(),
            "Bearer access-1",
            "the still-valid token keeps being served"
        );
        tokio::task::yield_now().await;
    }
    settle(|| auth.metrics().transient_failures == 1).await;
    assert_eq!(auth.metrics().store_errors, 1);
    assert_eq!(
        provider.calls(),
        1,
        "the refresh token was not redeemed without the lease"
    );

    // The store is back: after the backoff, the refresh runs under the lease.
    store.fail.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(60));
    for _ in 0..1000 {
        if auth.authorization_header().await.unwrap() == "Bearer access-2" {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(provider.calls(), 2, "refreshes resumed");
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-2");
    assert_eq!(provider.seen_refresh_tokens(), [None, Some("rt-1".to_owned())]);
}

#[tokio::test]
async fn without_the_lease_a_token_with_no_refresh_token_is_refreshed_alone() {
    let clock = ManualClock::new(t0());
    let store = leased(0, None);
    let provider = Scripted::new([ok(token(1, t0(), HOUR)), ok(token(2, t0(), 2 * HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .store(store.clone())
        .build();
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
    store.fail.store(true, Ordering::SeqCst);
    clock.advance(HOUR - Duration::from_secs(240));
    auth.authorization_header().await.unwrap();
    settle(|| provider.calls() == 2).await;
}

#[tokio::test]
async fn without_the_lease_an_expired_tokens_refresh_token_is_redeemed_alone() {
    let clock = ManualClock::new(t0());
    let store = leased(0, None);
    let provider = Scripted::new([
        ok(token(1, t0(), HOUR).with_refresh_token("rt-1")),
        ok(token(2, t0(), 3 * HOUR).with_refresh_token("rt-2")),
    ]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .store(store.clone())
        .build();
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
    store.fail.store(true, Ordering::SeqCst);
    // Past expiry: nothing serves, so availability comes first.
    clock.advance(HOUR + Duration::from_secs(1));
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-2");
    assert_eq!(provider.calls(), 2);
}

#[test]
fn a_lease_ttl_shorter_than_a_refresh_is_refused_at_build_time() {
    // Issue 12, item 8: a lease TTL below refresh timeout + store timeouts let a slow holder
    // outlive its lease while another process refreshed with the same refresh token.
    let provider = Scripted::new([ok(token(1, t0(), HOUR))]);
    let e = Authorizer::builder(provider.clone())
        .refresh_timeout(Duration::from_secs(10))
        .store_timeout(Duration::from_secs(2))
        .refresh_lease_ttl(Duration::from_secs(13))
        .try_build()
        .unwrap_err();
    assert_eq!(
        e,
        authwire::BuildError::LeaseTooShort {
            ttl: Duration::from_secs(13),
            needed: Duration::from_secs(14)
        }
    );
    assert!(e.to_string().contains("raise it"), "{e}");
    assert!(
        Authorizer::builder(provider)
            .refresh_timeout(Duration::from_secs(10))
            .store_timeout(Duration::from_secs(2))
            .refresh_lease_ttl(Duration::from_secs(14))
            .try_build()
            .is_ok()
    );
}

#[tokio::test]
async fn a_refresh_token_another_process_kept_beside_the_same_access_token_is_the_one_redeemed() {
    // Review of issue 12 item 7: a process keeps a rotated refresh token beside the access token
    // it already had (same expiry) and saves it. Another process holding that access token with
    // the old refresh token must redeem the new one: with equal expiries, the store wins.
    let store = TestStore::default();
    let clock = ManualClock::new(t0());
    let provider = Scripted::new([
        ok(token(1, t0(), HOUR).with_refresh_token("r1")),
        ok(token(2, t0(), 2 * HOUR)),
    ]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .store(store.clone())
        .build();
    auth.authorization_header().await.unwrap();
    store.put(
        "scripted",
        token(1, t0(), HOUR).with_refresh_token("r2-kept-elsewhere"),
    );
    clock.advance(HOUR + Duration::from_secs(1));
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-2");
    assert_eq!(
        provider
            .seen_refresh_tokens()
            .last()
            .cloned()
            .flatten()
            .as_deref(),
        Some("r2-kept-elsewhere"),
        "before: r1, which reuse detection would answer by revoking the login"
    );
}
