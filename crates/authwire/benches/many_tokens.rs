//! Issue 16, part 4 in criterion: how the cached path's cost grows when one thread serves many
//! tokens (a multi-tenant process), and a cold start of many authorizers with and without a
//! bound on concurrent fetches. Memory per authorizer is measured by the `many_authorizers`
//! example (resident memory is not a time).
//!
//! Run with `cargo xtask bench many_tokens` (figures in docs/PERFORMANCE.md).

#![allow(missing_docs)]

use authwire::{
    Authorizer, CacheKey, Clock, FetchLimit, IdentityProvider, ProviderError, SystemClock, Token, async_trait,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Issues one tenant's 1 KB token; counts fetches in flight (and the most seen at once).
struct Tenant {
    n: usize,
    in_flight: Arc<(AtomicUsize, AtomicUsize)>,
}

#[async_trait]
impl IdentityProvider for Tenant {
    async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
        let (now, most) = &*self.in_flight;
        let current = now.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(current, Ordering::SeqCst);
        // The identity provider's round trip, as a few scheduler turns.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        now.fetch_sub(1, Ordering::SeqCst);
        let token = format!("{:08}{}", self.n, "x".repeat(1016));
        Ok(Token::new(token).with_expires_at(SystemClock.now() + Duration::from_secs(3600)))
    }
    fn cache_key(&self) -> CacheKey {
        CacheKey::new(format!("tenant-{}", self.n))
    }
}

fn tenants(count: usize, limit: Option<&FetchLimit>) -> (Vec<Authorizer>, Arc<(AtomicUsize, AtomicUsize)>) {
    let in_flight = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let authorizers = (0..count)
        .map(|n| {
            let builder = Authorizer::builder(Tenant {
                n,
                in_flight: in_flight.clone(),
            });
            match limit {
                Some(limit) => builder.fetch_limit(limit).build(),
                None => builder.build(),
            }
        })
        .collect();
    (authorizers, in_flight)
}

fn poll_once<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::pin!(fut).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the cached path does not wait"),
    }
}

fn many_tokens(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("many_tokens");

    // One thread cycling through N warm authorizers: with N above the thread's slots (8),
    // every call misses its slot and takes the arc-swap path.
    for count in [1usize, 8, 64, 10_000] {
        let (authorizers, _) = tenants(count, None);
        rt.block_on(async {
            for a in &authorizers {
                a.authorization_header().await.unwrap();
            }
        });
        group.bench_with_input(BenchmarkId::new("round_robin_header", count), &count, |b, _| {
            let mut next = 0;
            b.iter(|| {
                let a = &authorizers[next];
                next = if next + 1 == authorizers.len() {
                    0
                } else {
                    next + 1
                };
                black_box(poll_once(black_box(a).authorization_header()).unwrap())
            })
        });
    }

    // 1,000 tenants cold-starting at once on a 2-worker runtime, every fetch a few scheduler
    // turns long: all of them at once, or at most 8 in flight (`FetchLimit`).
    for (name, limit) in [("unbounded", None), ("fetch_limit_8", Some(FetchLimit::new(8)))] {
        let mut most = 0;
        group.sample_size(10);
        group.bench_function(BenchmarkId::new("cold_start_1000", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (authorizers, in_flight) = tenants(1000, limit.as_ref());
                    let start = SystemClock.now();
                    rt.block_on(async {
                        let tasks: Vec<_> = authorizers
                            .into_iter()
                            .map(|a| tokio::spawn(async move { a.authorization_header().await.map(|_| ()) }))
                            .collect();
                        for t in tasks {
                            t.await.unwrap().unwrap();
                        }
                    });
                    total += SystemClock.now().duration_since(start).unwrap_or_default();
                    most = most.max(in_flight.1.load(Ordering::SeqCst));
                }
                total
            })
        });
        if let Some(limit) = &limit {
            assert!(
                most <= limit.max(),
                "{most} fetches in flight with a limit of {}",
                limit.max()
            );
        }
        eprintln!("many_tokens/cold_start_1000/{name}: at most {most} fetches in flight");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = many_tokens
}
criterion_main!(benches);
