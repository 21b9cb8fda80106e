//! The cached call with and without a Redis store (issue 29: "the cached call's cost unchanged
//! by the store"). The store is a real Redis Cluster of six `redis-server` processes (the
//! testkit's), so `cargo xtask bench` needs `redis-server` as the tests do.
//!
//! A valid cached token never touches the store: the two figures should match within noise.

use authwire::{
    Authorizer, CacheKey, Clock, IdentityProvider, ProviderError, SystemClock, Token, async_trait,
};
use authwire_redis::RedisStore;
use criterion::{Criterion, criterion_group, criterion_main};
use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

struct LongLived;

#[async_trait]
impl IdentityProvider for LongLived {
    async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
        Ok(Token::new("bench-token").with_expires_at(SystemClock.now() + Duration::from_secs(24 * 3600)))
    }
    fn cache_key(&self) -> CacheKey {
        CacheKey::from_static("bench")
    }
}

/// Poll once: the cached path completes without waiting.
fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::pin!(fut).poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn cached(c: &mut Criterion) {
    // The cluster connection's tasks run on this runtime for the whole benchmark.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (cluster, plain, stored) = rt.block_on(async {
        let cluster = authwire_testkit::RedisCluster::start().await;
        let store = RedisStore::from_url(&cluster.url()).connect().await.unwrap();
        let plain = Authorizer::new(LongLived);
        let stored = Authorizer::builder(LongLived).store(store).build();
        plain.authorization_header().await.unwrap();
        stored.authorization_header().await.unwrap();
        (cluster, plain, stored)
    });
    let mut group = c.benchmark_group("cached_with_store");
    group.bench_function("no_store", |b| {
        b.iter(|| {
            poll_once(black_box(&plain).authorization_header())
                .unwrap()
                .unwrap()
        })
    });
    group.bench_function("redis_cluster_store", |b| {
        b.iter(|| {
            poll_once(black_box(&stored).authorization_header())
                .unwrap()
                .unwrap()
        })
    });
    group.finish();
    drop((plain, stored));
    drop(cluster);
}

criterion_group!(benches, cached);
criterion_main!(benches);
