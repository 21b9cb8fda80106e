//! The shared refresh flight: contention, background refresh, cancellation, invalidation.

use crate::support::{Scripted, ok, settle, t0, token};
use authwire::{Authorizer, ManualClock};
use std::sync::Arc;
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_callers_on_a_cold_cache_cause_one_fetch() {
    let clock = ManualClock::new(t0());
    let provider = Scripted::gated([ok(token(1, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone()).clock(clock).build();

    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.authorization_header().await })
        })
        .collect();
    // Hold the provider until every caller is waiting on the one flight.
    let all_joined = async {
        while auth.metrics().joined_flights < 999 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), all_joined)
        .await
        .unwrap_or_else(|_| panic!("callers did not all join: {:?}", auth.metrics()));
    provider.release(1);
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "Bearer access-1");
    }
    assert_eq!(provider.calls(), 1);
    assert_eq!(auth.metrics().fetches, 1);
}

#[tokio::test]
async fn inside_the_refresh_window_callers_get_the_old_token_at_once_while_one_refresh_runs() {
    let clock = ManualClock::new(t0());
    let provider = Scripted::gated([ok(token(1, t0(), HOUR)), ok(token(2, t0(), 2 * HOUR))]);
    let auth = Authorizer::builder(provider.clone()).clock(clock.clone()).build();
    provider.release(1);
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");

    // 4 minutes before expiry: inside the 5-minute window whatever the jitter.
    clock.advance(HOUR - Duration::from_secs(240));
    for _ in 0..50 {
        assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
    }
    settle(|| provider.calls() == 2).await;
    assert_eq!(provider.completed(), 1, "the refresh is still held at the gate");
    assert_eq!(auth.metrics().background_refreshes, 1);

    provider.release(1);
    settle(|| provider.completed() == 2).await;
    let mut seen_new = false;
    for _ in 0..1000 {
        if auth.authorization_header().await.unwrap() == "Bearer access-2" {
            seen_new = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(seen_new, "the background refresh's token is served once it lands");
    assert_eq!(provider.calls(), 2);
}

#[tokio::test]
async fn state_reports_step_one_without_starting_anything() {
    use authwire::TokenState;
    let clock = ManualClock::new(t0());
    let provider = Scripted::new([ok(token(1, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .jitter(false)
        .build();
    assert_eq!(auth.state(), TokenState::Missing);
    auth.authorization_header().await.unwrap();
    assert_eq!(
        auth.state(),
        TokenState::Fresh {
            expires_in: Some(HOUR)
        }
    );
    clock.advance(HOUR - Duration::from_secs(100));
    assert_eq!(
        auth.state(),
        TokenState::RefreshDue {
            expires_in: Some(Duration::from_secs(100))
        }
    );
    clock.advance(Duration::from_secs(80));
    assert_eq!(auth.state(), TokenState::Expired);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(provider.calls(), 1, "state() started no refresh");
}

#[tokio::test]
async fn a_caller_dropping_its_future_does_not_cancel_the_flight_for_others() {
    let provider = Scripted::gated([ok(token(1, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone())
        .clock(ManualClock::new(t0()))
        .build();

    let first = tokio::spawn({
        let auth = auth.clone();
        async move { auth.authorization_header().await }
    });
    settle(|| provider.calls() == 1).await;
    let second = tokio::spawn({
        let auth = auth.clone();
        async move { auth.authorization_header().await }
    });
    settle(|| auth.metrics().joined_flights == 1).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    provider.release(1);
    assert_eq!(second.await.unwrap().unwrap(), "Bearer access-1");
    assert_eq!(provider.calls(), 1);
    assert!(!provider.dropped_mid_call());
}

#[tokio::test]
async fn dropping_the_authorizer_aborts_its_background_refresh() {
    let clock = ManualClock::new(t0());
    let provider = Scripted::gated([ok(token(1, t0(), HOUR))]);
    let auth = Authorizer::builder(provider.clone()).clock(clock.clone()).build();
    provider.release(1);
    auth.authorization_header().await.unwrap();
    clock.advance(HOUR - Duration::from_secs(200));
    auth.authorization_header().await.unwrap(); // starts the background refresh
    settle(|| provider.calls() == 2).await;

    drop(auth);
    settle(|| provider.dropped_mid_call()).await;
    assert_eq!(provider.completed(), 1);
}

#[tokio::test]
async fn invalidate_forgets_only_the_rejected_token_and_keeps_its_refresh_token() {
    let clock = ManualClock::new(t0());
    let provider = Scripted::new([
        ok(token(1, t0(), HOUR).with_refresh_token("r1")),
        ok(token(2, t0(), HOUR)),
    ]);
    let auth = Authorizer::builder(provider.clone()).clock(clock).build();
    let first = auth.authorization_header().await.unwrap();

    let unrelated = http::HeaderValue::from_static("Bearer someone-else");
    assert!(!auth.invalidate(&unrelated));
    assert!(auth.invalidate(&first));
    // A second 401 for the same token (another request in flight) changes nothing more.
    assert!(!auth.invalidate(&first));

    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-2");
    assert!(!auth.invalidate(&first), "the old header no longer matches");
    assert_eq!(provider.calls(), 2);
    assert_eq!(provider.seen_refresh_tokens(), [None, Some("r1".to_owned())]);
    assert_eq!(auth.metrics().invalidations, 1);
}

#[tokio::test]
async fn token_without_expiry_is_used_until_invalidated() {
    let clock = ManualClock::new(t0());
    let provider = Scripted::new([
        ok(authwire::Token::new("forever")),
        ok(authwire::Token::new("next")),
    ]);
    let auth = Authorizer::builder(provider.clone()).clock(clock.clone()).build();
    let h = auth.authorization_header().await.unwrap();
    clock.advance(Duration::from_secs(365 * 24 * 3600));
    assert_eq!(auth.authorization_header().await.unwrap(), h);
    assert_eq!(provider.calls(), 1);
    auth.invalidate(&h);
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer next");
}

#[tokio::test]
async fn short_lived_tokens_are_not_refetched_on_every_call() {
    let clock = ManualClock::new(t0());
    let provider = Scripted::new((1..=100).map(|n| ok(token(n, t0(), Duration::from_secs(5)))));
    let auth = Authorizer::builder(provider.clone()).clock(clock).build();
    for _ in 0..100 {
        auth.authorization_header().await.unwrap();
    }
    assert_eq!(provider.calls(), 1);
}

#[tokio::test]
async fn token_expired_on_arrival_is_reused_for_a_second_not_refetched_per_call() {
    let clock = ManualClock::new(t0());
    let stale = token(1, t0() - HOUR, Duration::from_secs(60));
    let provider = Scripted::new([ok(stale)]);
    let auth = Authorizer::builder(provider.clone()).clock(clock.clone()).build();
    for _ in 0..100 {
        assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
    }
    // Not even a background refetch: a broken issuer gets at most one fetch a second.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(provider.calls(), 1);
    clock.advance(Duration::from_secs(2));
    auth.authorization_header().await.unwrap();
    assert!(provider.calls() >= 2);
}

#[tokio::test]
async fn clock_jumping_forward_past_expiry_refreshes_and_backwards_keeps_serving() {
    let clock = ManualClock::new(t0());
    let provider = Scripted::new([ok(token(1, t0(), HOUR)), ok(token(2, t0() + 2 * HOUR, HOUR))]);
    let auth = Authorizer::builder(provider.clone()).clock(clock.clone()).build();
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
    clock.set(t0() - Duration::from_secs(86_400));
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-1");
    clock.set(t0() + 2 * HOUR);
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer access-2");
    assert_eq!(provider.calls(), 2);
}

/// A minimal executor, to run the authorizer outside any tokio runtime.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn works_without_a_tokio_runtime() {
    let clock = ManualClock::new(t0());
    let provider = Scripted::new([ok(token(1, t0(), HOUR)), ok(token(2, t0(), 2 * HOUR))]);
    let auth = Authorizer::builder(provider.clone()).clock(clock.clone()).build();
    assert_eq!(block_on(auth.authorization_header()).unwrap(), "Bearer access-1");
    // In the window there is no background refresh without a runtime; at expiry the caller
    // refreshes itself.
    clock.advance(HOUR - Duration::from_secs(200));
    assert_eq!(block_on(auth.authorization_header()).unwrap(), "Bearer access-1");
    assert_eq!(provider.calls(), 1);
    clock.advance(Duration::from_secs(190));
    assert_eq!(block_on(auth.authorization_header()).unwrap(), "Bearer access-2");
}

/// An identity provider shared by many tenants' authorizers that counts the calls it is
/// serving at once, and holds each until the test opens its gate.
struct CountingProvider {
    tenant: usize,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    peak: Arc<std::sync::atomic::AtomicUsize>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[authwire::async_trait]
impl authwire::IdentityProvider for CountingProvider {
    async fn fetch_token(
        &self,
        _: Option<&authwire::Token>,
    ) -> Result<authwire::Token, authwire::ProviderError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
        self.gate.acquire().await.expect("open").forget();
        self.in_flight.fetch_sub(1, SeqCst);
        Ok(authwire::Token::new(format!("tenant-{}", self.tenant)).with_expires_at(t0() + HOUR))
    }
    fn cache_key(&self) -> authwire::CacheKey {
        authwire::CacheKey::new(format!("tenant-{}", self.tenant))
    }
}

/// A cold start of `tenants` authorizers against one provider; the peak of calls in flight.
async fn cold_start(tenants: usize, limit: Option<&authwire::FetchLimit>) -> usize {
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let clock = ManualClock::new(t0());
    let tasks: Vec<_> = (0..tenants)
        .map(|tenant| {
            let provider = CountingProvider {
                tenant,
                in_flight: in_flight.clone(),
                peak: peak.clone(),
                gate: gate.clone(),
            };
            let mut builder = Authorizer::builder(provider).clock(clock.clone());
            if let Some(limit) = limit {
                builder = builder.fetch_limit(limit);
            }
            let auth = builder.build();
            tokio::spawn(async move { auth.authorization_header().await })
        })
        .collect();
    // Let every tenant start, then let the provider answer them all.
    let expected = limit.map_or(tenants, |l| l.max().min(tenants));
    tokio::time::timeout(Duration::from_secs(20), async {
        while in_flight.load(std::sync::atomic::Ordering::SeqCst) < expected {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the tenants started");
    gate.add_permits(tenants);
    for (tenant, task) in tasks.into_iter().enumerate() {
        // No failure from our own queueing: every tenant gets its own token.
        assert_eq!(
            task.await.unwrap().unwrap(),
            format!("Bearer tenant-{tenant}").as_str()
        );
    }
    peak.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_limit_bounds_a_cold_start_of_many_authorizers() {
    // Issue 16: without a bound, a cold start puts every tenant's request in flight at once.
    assert_eq!(cold_start(500, None).await, 500);
    let limit = authwire::FetchLimit::new(8);
    assert_eq!(cold_start(500, Some(&limit)).await, 8);
    assert_eq!(limit.in_flight(), 0, "every slot was given back");
}
