//! The cost of authorizing a request when a valid token is cached, on one and two threads,
//! beside a baseline that does the least such a call can do; and a cold-cache storm.
//!
//! Run with `cargo xtask bench` (figures in docs/PERFORMANCE.md).

#![allow(missing_docs)]

use arc_swap::ArcSwap;
use authwire::{
    Authorizer, CacheKey, Clock, IdentityProvider, ProviderError, SystemClock, Token, async_trait,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

const JWT_SIZED_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwic3ViIjoiY2xpZW50LTEyMyIsImF1ZCI6Imh0dHBzOi8vYXBpLmV4YW1wbGUiLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTcwMDAwMDAwMCwic2NvcGUiOiJhcGk6cmVhZCBhcGk6d3JpdGUifQ.c2lnbmF0dXJlLXBsYWNlaG9sZGVyLXRoYXQtaXMtYWJvdXQtdGhlLXNpemUtb2YtYW4tcnNhLXNpZ25hdHVyZS14eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eA";

/// The baseline: ArcSwap load + clock read + expiry compare + HeaderValue clone + HeaderMap insert.
struct Baseline {
    current: ArcSwap<(HeaderValue, SystemTime)>,
}

impl Baseline {
    fn new() -> Self {
        let mut value = HeaderValue::from_str(&format!("Bearer {JWT_SIZED_TOKEN}")).unwrap();
        value.set_sensitive(true);
        let expires = SystemClock.now() + Duration::from_secs(3600);
        Self {
            current: ArcSwap::from_pointee((value, expires)),
        }
    }

    #[inline]
    fn authorize(&self, clock: &dyn Clock, headers: &mut HeaderMap) -> bool {
        let guard = self.current.load();
        if clock.now() < guard.1 {
            headers.insert(AUTHORIZATION, guard.0.clone());
            true
        } else {
            false
        }
    }
}

struct LongLived;

#[async_trait]
impl IdentityProvider for LongLived {
    async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
        Ok(Token::new(JWT_SIZED_TOKEN).with_expires_at(SystemClock.now() + Duration::from_secs(3600)))
    }
    fn cache_key(&self) -> CacheKey {
        CacheKey::from_static("bench")
    }
}

/// Poll a future once: the cached path completes without waiting, so this measures the
/// authorizer and not an executor.
fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::pin!(fut).poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn warm_authorizer() -> Authorizer {
    let auth = Authorizer::new(LongLived);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(auth.authorization_header()).unwrap();
    auth
}

/// Per-call time on each of `threads` threads running `f` `iters` times at once.
fn per_call_on_threads(threads: usize, iters: u64, f: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(threads);
    let total: Duration = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = SystemClock.now();
                    for _ in 0..iters {
                        f();
                    }
                    SystemClock.now().duration_since(start).unwrap_or_default()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    // criterion divides by `iters`: report the mean over threads of each thread's time.
    total / threads as u32
}

fn hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("cached_token");
    let baseline = Baseline::new();
    let clock = SystemClock;
    let auth = warm_authorizer();

    for threads in [1usize, 2] {
        // The naive floor of issue 16 as it names it: an ArcSwap load, SystemTime::now, a
        // comparison, a header clone; beside `authorization_header` on the same threads.
        group.bench_with_input(
            BenchmarkId::new("naive_floor", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    per_call_on_threads(threads, iters, &|| {
                        let g = black_box(&baseline).current.load();
                        assert!(clock.now() < g.1);
                        black_box(g.0.clone());
                    })
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("authorization_header_threads", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    per_call_on_threads(threads, iters, &|| {
                        black_box(
                            poll_once(black_box(&auth).authorization_header())
                                .unwrap()
                                .unwrap(),
                        );
                    })
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("baseline", threads), &threads, |b, &threads| {
            b.iter_custom(|iters| {
                per_call_on_threads(threads, iters, &|| {
                    thread_local!(static HEADERS: std::cell::RefCell<HeaderMap> = std::cell::RefCell::new(HeaderMap::new()));
                    HEADERS.with_borrow_mut(|h| assert!(black_box(&baseline).authorize(&clock, h)));
                })
            })
        });
        group.bench_with_input(BenchmarkId::new("authorize", threads), &threads, |b, &threads| {
            b.iter_custom(|iters| {
                per_call_on_threads(threads, iters, &|| {
                    thread_local!(static HEADERS: std::cell::RefCell<HeaderMap> = std::cell::RefCell::new(HeaderMap::new()));
                    HEADERS.with_borrow_mut(|h| {
                        poll_once(black_box(&auth).authorize(h)).unwrap().unwrap();
                    });
                })
            })
        });
    }
    group.bench_function("cached_authorization_header/1", |b| {
        b.iter(|| black_box(&auth).cached_authorization_header().unwrap())
    });
    group.bench_function("baseline_header_only/1", |b| {
        b.iter(|| {
            let g = black_box(&baseline).current.load();
            assert!(clock.now() < g.1);
            g.0.clone()
        })
    });
    group.bench_function("baseline_header_async/1", |b| {
        b.iter(|| {
            poll_once(async {
                let g = black_box(&baseline).current.load();
                if clock.now() < g.1 {
                    Ok(g.0.clone())
                } else {
                    Err(authwire::AuthError::RefreshAborted)
                }
            })
            .unwrap()
            .unwrap()
        })
    });
    group.bench_function("authorization_header/1", |b| {
        b.iter(|| {
            poll_once(black_box(&auth).authorization_header())
                .unwrap()
                .unwrap()
        })
    });
    group.finish();
}

struct Slow {
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl IdentityProvider for Slow {
    async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(Token::new("storm").with_expires_at(SystemClock.now() + Duration::from_secs(3600)))
    }
    fn cache_key(&self) -> CacheKey {
        CacheKey::from_static("storm")
    }
}

/// 10,000 callers on a cold cache, a provider that takes 50 ms: one fetch, all done in ~50 ms.
fn storm(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("cold_storm");
    group.sample_size(10);
    group.bench_function("10000_callers_50ms_provider", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let calls = Arc::new(AtomicUsize::new(0));
                let auth = Authorizer::new(Slow { calls: calls.clone() });
                let start = SystemClock.now();
                let tasks: Vec<_> = (0..10_000)
                    .map(|_| {
                        let auth = auth.clone();
                        tokio::spawn(async move { auth.authorization_header().await.map(|_| ()) })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap().unwrap();
                }
                total += SystemClock.now().duration_since(start).unwrap_or_default();
                assert_eq!(
                    calls.load(Ordering::SeqCst),
                    1,
                    "one provider call for 10,000 callers"
                );
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, hot_path, storm);
criterion_main!(benches);
