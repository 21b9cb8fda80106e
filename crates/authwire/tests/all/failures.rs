//! The failure matrix: what callers see, and when the provider is called again.

use crate::support::{Scripted, drive, err, ok, settle, t0, token};
use authwire::{AuthError, Authorizer, ManualClock, ProviderError};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

fn down() -> ProviderError {
    ProviderError::unavailable(Some(503), "service unavailable")
}

#[tokio::test]
async fn transient_failure_with_a_valid_token_keeps_serving_it_and_backs_off() {
    let clock = ManualClock::new(t0());
    let provider = Scripted::new([
        ok(token(1, t0(), HOUR)),
        err(down()),
        err(down()),
        ok(token(2, t0(), 2 * HOUR)),
    ]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .jitter(false)
        .build();
    auth.authorization_header().await.unwrap();

    clock.advance(HOUR - Duration::from_secs(280)); // in the window, far from expiry
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
    settle(|| provider.completed() == 2).await;
    settle(|| auth.metrics().transient_failures == 1).await;

    // Still served, and no new attempt before the first backoff (0.5-1 s) elapses.
    for _ in 0..20 {
        assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
        tokio::task::yield_now().await;
    }
    assert_eq!(provider.calls(), 2);
    assert!(auth.metrics().stale_served >= 20);

    clock.advance(Duration::from_secs(1));
    auth.authorization_header().await.unwrap();
    settle(|| provider.completed() == 3).await;
    settle(|| auth.metrics().transient_failures == 2).await;
    // Second failure: backoff 1-2 s.
    clock.advance(Duration::from_millis(900));
    auth.authorization_header().await.unwrap();
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(provider.calls(), 3);
    clock.advance(Duration::from_millis(1200));
    auth.authorization_header().await.unwrap();
    settle(|| provider.completed() == 4).await;
    settle(|| {
        auth.cached_authorization_header()
            .is_some_and(|h| h == "Bearer access-2")
    })
    .await;
}

#[tokio::test]
async fn expired_token_and_failing_provider_return_the_providers_error_without_hammering_it() {
    let clock = ManualClock::new(t0());
    let provider = Scripted::new([err(down()), ok(token(1, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone()).clock(clock.clone()).build();

    let e = auth.authorization_header().await.unwrap_err();
    let AuthError::Refresh(pe) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(pe.status(), Some(503));
    assert!(pe.is_transient());
    assert_eq!(
        authwire::error_chain(&e),
        "no valid token: identity provider unavailable (HTTP 503): service unavailable"
    );
    assert_eq!(
        e.to_string(),
        "no valid token",
        "Display says this level only; the cause is source()"
    );

    // Until the backoff (0.5-1 s) elapses: the same error, no provider call.
    for _ in 0..10 {
        let again = auth.authorization_header().await.unwrap_err();
        assert_eq!(again.to_string(), e.to_string());
    }
    clock.advance(Duration::from_millis(400));
    assert!(auth.authorization_header().await.is_err());
    assert_eq!(provider.calls(), 1);

    clock.advance(Duration::from_millis(700));
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
    assert_eq!(provider.calls(), 2);
}

#[tokio::test]
async fn permanent_rejection_is_not_retried_in_a_loop() {
    let clock = ManualClock::new(t0());
    let rejected = ProviderError::rejected(
        Some(401),
        "invalid_client",
        Some("client authentication failed".into()),
    );
    let provider = Scripted::new([err(rejected)]);
    let auth = Authorizer::builder(provider.clone()).clock(clock.clone()).build();
    for _ in 0..100 {
        let e = auth.authorization_header().await.unwrap_err();
        assert_eq!(
            e.provider_error().and_then(|p| p.error_code()),
            Some("invalid_client")
        );
        assert!(!e.is_transient());
    }
    clock.advance(authwire::DEFAULT_MAX_BACKOFF - Duration::from_secs(1));
    assert!(auth.authorization_header().await.is_err());
    assert_eq!(provider.calls(), 1);
    clock.advance(Duration::from_secs(2));
    assert!(auth.authorization_header().await.is_err());
    assert_eq!(
        provider.calls(),
        2,
        "one more try once the longest backoff has passed"
    );
    assert_eq!(auth.metrics().permanent_failures, 2);
}

#[tokio::test]
async fn retry_after_from_the_provider_is_honoured() {
    let clock = ManualClock::new(t0());
    let slow_down =
        ProviderError::rejected(Some(429), "slow_down", None).with_retry_after(Duration::from_secs(120));
    let provider = Scripted::new([err(slow_down), ok(token(1, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone()).clock(clock.clone()).build();
    assert!(auth.authorization_header().await.is_err());
    clock.advance(Duration::from_secs(119));
    assert!(auth.authorization_header().await.is_err());
    assert_eq!(provider.calls(), 1);
    clock.advance(Duration::from_secs(2));
    assert!(auth.authorization_header().await.is_ok());
    assert_eq!(provider.calls(), 2);
}

#[tokio::test]
async fn all_waiters_of_a_failed_flight_get_the_same_error() {
    let provider = Scripted::gated([err(down())]);
    let auth = Authorizer::builder(provider.clone())
        .clock(ManualClock::new(t0()))
        .build();
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.authorization_header().await })
        })
        .collect();
    settle(|| auth.metrics().joined_flights == 49).await;
    provider.release(1);
    for w in waiters {
        let e = w.await.unwrap().unwrap_err();
        assert_eq!(e.provider_error().and_then(ProviderError::status), Some(503));
    }
    assert_eq!(provider.calls(), 1);
}

#[tokio::test]
async fn a_hanging_provider_is_cut_off_by_the_refresh_timeout() {
    let clock = ManualClock::new(t0());
    let provider = Scripted::gated([ok(token(1, t0(), HOUR))]); // never released
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .refresh_timeout(Duration::from_secs(5))
        .build();
    // drive() moves the ManualClock to the timeout while the flight waits.
    let e = drive(&clock, auth.authorization_header()).await.unwrap_err();
    assert!(e.is_transient());
    assert!(authwire::error_chain(&e).contains("no answer within 5s"), "{e}");
    assert!(provider.dropped_mid_call(), "the hung call was cancelled");
}

#[tokio::test]
async fn a_panicking_provider_gives_an_error_and_a_backoff_not_a_panic() {
    struct Panics(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    #[authwire::async_trait]
    impl authwire::IdentityProvider for Panics {
        async fn fetch_token(&self, _: Option<&authwire::Token>) -> Result<authwire::Token, ProviderError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            panic!("provider bug")
        }
        fn cache_key(&self) -> authwire::CacheKey {
            authwire::CacheKey::from_static("panics")
        }
    }
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clock = ManualClock::new(t0());
    let auth = Authorizer::builder(Panics(calls.clone()))
        .clock(clock.clone())
        .build();
    for _ in 0..2 {
        assert!(matches!(
            auth.authorization_header().await,
            Err(AuthError::RefreshAborted)
        ));
    }
    let called = || calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        called(),
        1,
        "the second call was answered from the backoff, not by the provider"
    );
    clock.advance(Duration::from_secs(120)); // past the longest backoff
    assert!(auth.authorization_header().await.is_err());
    assert_eq!(called(), 2, "tried again once the backoff elapsed");
}

#[tokio::test]
async fn while_refreshing_fails_a_token_is_served_through_its_margin_until_it_truly_expires() {
    let clock = ManualClock::new(t0());
    let provider = Scripted::new([ok(token(1, t0(), HOUR)), err(down())]);
    let auth = Authorizer::builder(provider.clone()).clock(clock.clone()).build();
    auth.authorization_header().await.unwrap();
    // Past the 30 s margin, 10 s before expires_at: the refresh fails, the token still serves.
    clock.advance(HOUR - Duration::from_secs(10));
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
    assert_eq!(
        auth.authorization_header().await.unwrap(),
        "Bearer access-1",
        "during the backoff too"
    );
    assert!(auth.metrics().stale_served >= 1);
    // Truly expired: the provider's error.
    clock.advance(Duration::from_secs(11));
    let e = auth.authorization_header().await.unwrap_err();
    assert_eq!(e.provider_error().and_then(ProviderError::status), Some(503));
}
