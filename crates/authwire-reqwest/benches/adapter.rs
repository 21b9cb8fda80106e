//! What the reqwest middleware adds (issue 16): the same GET to a loopback server through a
//! bare reqwest-middleware client and through one with `AuthMiddleware` (a cached bearer
//! token), on a current-thread client runtime with the server on its own thread.

#![allow(missing_docs)]

use authwire::{Authorizer, StaticTokenProvider};
use authwire_reqwest::AuthMiddleware;
use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;

fn server() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = axum::Router::new().fallback(|| async { "ok" });
            tokio::spawn(async move { axum::serve(listener, app).await });
            tx.send(format!("http://{addr}/v1/things")).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

fn middleware(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = server();
    let bare = reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).build();
    let authorizer = Authorizer::new(StaticTokenProvider::new(
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.c2ln",
    ));
    let authed = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::any_origin(authorizer))
        .build();
    let mut group = c.benchmark_group("reqwest_middleware");
    for (name, client) in [("bare_client", &bare), ("with_auth_middleware", &authed)] {
        runtime.block_on(async { client.get(&url).send().await.unwrap() }); // connect, warm the token
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let r = client.get(&url).send().await.unwrap();
                assert!(r.status().is_success());
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    targets = middleware
}
criterion_main!(benches);
