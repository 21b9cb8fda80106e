//! authwire beside other Rust token libraries, in one process and one criterion run (issue 16).
//!
//! Every library gets its token from the same loopback token endpoint, once, and is then asked
//! for it again and again: the cached path, which is what a service pays on every request. Each
//! is used through its public API only, as its documentation shows:
//!
//! - `authwire`: `Authorizer::authorization_header()` over `authwire_gcp::AuthorizedUser`, the
//!   ready `Authorization` value.
//! - `google-cloud-auth` 1.x: `Credentials::headers()` over `user_account` credentials (a
//!   `HeaderMap` with the `Authorization` value), and `AccessTokenCredentials::access_token()`.
//! - `gcp_auth` 0.12: `TokenProvider::token()` over `CustomServiceAccount` (an `Arc<Token>`;
//!   `token_then_header` also builds the `Authorization` value from it, as a caller must).
//! - The naive floor of issue 16: an `ArcSwap` load, `SystemTime::now`, a comparison, a header
//!   clone.
//!
//! Each future is polled once with a no-op waker: on a cached token all of them complete on the
//! first poll (the bench checks), so no executor is measured. Threads: 1 and 2, every thread
//! calling at once; the figure is the time per call on each thread.

// The naive floor is defined with `SystemTime::now`, and the harness times with `Instant`: the
// project's rule that time comes through its `Clock` is for library code, not for this bench.
#![allow(clippy::disallowed_methods)]

use arc_swap::ArcSwap;
use authwire_outside_bench::{JWT_SIZED_TOKEN, TokenServer, throwaway_rsa_key};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gcp_auth::TokenProvider;
use http::{Extensions, HeaderValue};
use std::future::Future;
use std::hint::black_box;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

/// Poll once; every cached path here is ready at once, and anything else is a broken bench.
fn ready<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::pin!(fut).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a cached token was not ready on the first poll"),
    }
}

/// Per-call time on each of `threads` threads running `f` `iters` times at once.
fn per_call_on_threads(threads: usize, iters: u64, f: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(threads);
    let total: Duration = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        f();
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total / threads as u32
}

fn authorized_user() -> serde_json::Value {
    serde_json::json!({
        "type": "authorized_user",
        "client_id": "outside-bench.apps.example",
        "client_secret": "outside-bench-secret",
        "refresh_token": "outside-bench-refresh-token",
    })
}

fn outside(c: &mut Criterion) {
    let server = TokenServer::start().expect("a loopback token endpoint");
    // One current-thread runtime fetches every first token; it is not driven afterwards, so no
    // library's background task runs during the measurement (none would: tokens last an hour).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();

    let authwire = {
        let user = authwire_gcp::AuthorizedUser::from_json(authorized_user().to_string().as_bytes(), "bench")
            .unwrap()
            .token_url(server.url.clone())
            .unwrap();
        let auth = authwire::Authorizer::new(user);
        let header = rt.block_on(auth.authorization_header()).unwrap();
        assert_eq!(header.to_str().unwrap(), format!("Bearer {JWT_SIZED_TOKEN}"));
        auth
    };

    let gca_headers = google_cloud_auth::credentials::user_account::Builder::new(authorized_user())
        .with_token_uri(server.url.clone())
        .build()
        .unwrap();
    let gca_token = google_cloud_auth::credentials::user_account::Builder::new(authorized_user())
        .with_token_uri(server.url.clone())
        .build_access_token_credentials()
        .unwrap();
    rt.block_on(async {
        let headers = gca_headers.headers(Extensions::new()).await.unwrap();
        let google_cloud_auth::credentials::CacheableResource::New { data, .. } = headers else {
            panic!("the first call has no entity tag to match")
        };
        assert_eq!(
            data[http::header::AUTHORIZATION],
            format!("Bearer {JWT_SIZED_TOKEN}")
        );
        assert_eq!(gca_token.access_token().await.unwrap().token, JWT_SIZED_TOKEN);
    });

    let scopes = ["https://www.googleapis.com/auth/cloud-platform"];
    let gcp_auth_sa = {
        let key = serde_json::json!({
            "type": "service_account",
            "project_id": "outside-bench",
            "private_key_id": "k1",
            "private_key": throwaway_rsa_key(),
            "client_email": "bench@outside-bench.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": server.url,
        });
        let sa = gcp_auth::CustomServiceAccount::from_json(&key.to_string()).unwrap();
        assert_eq!(rt.block_on(sa.token(&scopes)).unwrap().as_str(), JWT_SIZED_TOKEN);
        sa
    };
    let fetched = server.requests();
    assert_eq!(fetched, 4, "each library fetched its token once");

    let naive = {
        let mut value = HeaderValue::from_str(&format!("Bearer {JWT_SIZED_TOKEN}")).unwrap();
        value.set_sensitive(true);
        ArcSwap::from_pointee((value, SystemTime::now() + Duration::from_secs(3600)))
    };

    let mut group = c.benchmark_group("outside");
    for threads in [1usize, 2] {
        let mut bench = |name: &str, f: &(dyn Fn() + Sync)| {
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
                b.iter_custom(|iters| per_call_on_threads(threads, iters, f))
            });
        };
        bench("naive_floor", &|| {
            let g = black_box(&naive).load();
            assert!(SystemTime::now() < g.1);
            black_box(g.0.clone());
        });
        bench("authwire_authorization_header", &|| {
            black_box(ready(black_box(&authwire).authorization_header()).unwrap());
        });
        bench("google_cloud_auth_headers", &|| {
            black_box(ready(black_box(&gca_headers).headers(Extensions::new())).unwrap());
        });
        bench("google_cloud_auth_access_token", &|| {
            black_box(ready(black_box(&gca_token).access_token()).unwrap());
        });
        bench("gcp_auth_token", &|| {
            black_box(ready(black_box(&gcp_auth_sa).token(&scopes)).unwrap());
        });
        bench("gcp_auth_token_then_header", &|| {
            let token = ready(black_box(&gcp_auth_sa).token(&scopes)).unwrap();
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.as_str())).unwrap();
            value.set_sensitive(true);
            black_box(value);
        });
    }
    group.finish();
    assert_eq!(
        server.requests(),
        fetched,
        "every measured call was served from a cache"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = outside
}
criterion_main!(benches);
