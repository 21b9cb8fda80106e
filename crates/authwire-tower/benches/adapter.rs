//! What the tower layer adds to the core (issue 16): `AuthService::call` on an always-ready
//! inner service, polled to completion, beside the core's own request-level calls on the same
//! request (`try_authorize_target_sent`, which the layer wraps, and `try_authorize_target`), on
//! one and two threads at once.

#![allow(missing_docs)]

use authwire::{
    Authorizer, CacheKey, Clock, IdentityProvider, ProviderError, SystemClock, Target, Token, async_trait,
};
use authwire_tower::AuthLayer;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

struct LongLived;

#[async_trait]
impl IdentityProvider for LongLived {
    async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
        Ok(
            Token::new("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJlLXBsYWNlaG9sZGVy")
                .with_expires_at(SystemClock.now() + Duration::from_secs(3600)),
        )
    }
    fn cache_key(&self) -> CacheKey {
        CacheKey::from_static("tower-bench")
    }
}

/// An inner service that answers at once.
#[derive(Clone)]
struct Ok200;

impl Service<http::Request<()>> for Ok200 {
    type Response = http::Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<http::Response<()>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        ready(Ok(http::Response::new(())))
    }
}

/// The least a tower service can do around the core call: what an adapter that added nothing
/// would be (no origin check, no judging of the answer, the inner future returned as it is).
struct Minimal<S> {
    inner: S,
    authorizer: Authorizer,
}

impl<S: Service<http::Request<()>>> Service<http::Request<()>> for Minimal<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, mut req: http::Request<()>) -> S::Future {
        let mut headers = std::mem::take(req.headers_mut());
        let target = Target::from_uri(req.method(), req.uri());
        black_box(
            self.authorizer
                .try_authorize_target_sent(&target, &mut headers)
                .unwrap(),
        );
        *req.headers_mut() = headers;
        self.inner.call(req)
    }
}

fn poll_once<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::pin!(fut).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the cached path does not wait"),
    }
}

fn request() -> http::Request<()> {
    http::Request::get("https://api.example/v1/things")
        .body(())
        .unwrap()
}

/// A request through `core` (a core call, which must find the cached token), then through an
/// inner service on this thread.
#[inline(always)]
fn core_then_inner<T>(core: impl FnOnce(&Target<'_>, &mut http::HeaderMap) -> Option<T>) {
    thread_local!(static INNER: std::cell::RefCell<Ok200> = const { std::cell::RefCell::new(Ok200) });
    INNER.with_borrow_mut(|inner| {
        let mut req = request();
        let mut headers = std::mem::take(req.headers_mut());
        let target = Target::from_uri(req.method(), req.uri());
        black_box(core(&target, &mut headers).unwrap());
        *req.headers_mut() = headers;
        black_box(poll_once(inner.call(req)).unwrap());
    });
}

fn on_threads(threads: usize, iters: u64, f: &(dyn Fn() + Sync)) -> Duration {
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
    total / threads as u32
}

fn adapter(c: &mut Criterion) {
    let authorizer = Authorizer::new(LongLived);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(authorizer.authorization_header()).unwrap();
    let layer = AuthLayer::new(authorizer.clone());
    let mut group = c.benchmark_group("tower_adapter");
    for threads in [1usize, 2] {
        // The core call the adapter wraps, then the same inner service through the same
        // harness: what an adapter that added nothing would cost. `try_authorize_target_sent` is
        // the call the layer makes since issue 16 (it keeps a SentToken, not a header clone).
        group.bench_with_input(
            BenchmarkId::new("core_call_then_inner_service", threads),
            &threads,
            |b, &t| {
                b.iter_custom(|iters| {
                    on_threads(t, iters, &|| {
                        core_then_inner(|target, headers| {
                            black_box(&authorizer).try_authorize_target(target, headers)
                        })
                    })
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("core_sent_call_then_inner_service", threads),
            &threads,
            |b, &t| {
                b.iter_custom(|iters| {
                    on_threads(t, iters, &|| {
                        core_then_inner(|target, headers| {
                            black_box(&authorizer).try_authorize_target_sent(target, headers)
                        })
                    })
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("minimal_service_call", threads), &threads, |b, &t| {
            b.iter_custom(|iters| {
                on_threads(t, iters, &|| {
                    thread_local!(static SERVICE: std::cell::RefCell<Option<Minimal<Ok200>>> = const { std::cell::RefCell::new(None) });
                    SERVICE.with_borrow_mut(|s| {
                        let svc = s.get_or_insert_with(|| Minimal {
                            inner: Ok200,
                            authorizer: authorizer.clone(),
                        });
                        black_box(poll_once(svc.call(request())).unwrap());
                    });
                })
            })
        });
        group.bench_with_input(BenchmarkId::new("auth_service_call", threads), &threads, |b, &t| {
            b.iter_custom(|iters| {
                on_threads(t, iters, &|| {
                    thread_local!(static SERVICE: std::cell::RefCell<Option<authwire_tower::AuthService<Ok200>>> = const { std::cell::RefCell::new(None) });
                    SERVICE.with_borrow_mut(|s| {
                        let svc = s.get_or_insert_with(|| layer.layer(Ok200));
                        black_box(poll_once(svc.call(request())).unwrap());
                    });
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = adapter
}
criterion_main!(benches);
