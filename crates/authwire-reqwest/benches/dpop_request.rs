//! What DPoP adds to a request through the middleware (issue 14): the same GET to a loopback
//! server that answers 200 to anything, with a cached Bearer token and with a cached DPoP-bound
//! token of the same size from the same identity server (one proof signed per request). The
//! server verifies nothing, so the difference is the client's cost and the proof's bytes on the
//! wire. Recorded in docs/PERFORMANCE.md.

use authwire::Authorizer;
use authwire_oauth2::DpopKey;
use authwire_reqwest::AuthMiddleware;
use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;

fn requests(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (url, idp, _server) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(|| async { "ok" });
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let idp = authwire_testkit::IdentityServer::start().await;
        (format!("http://{addr}/v1/things?page=2"), idp, server)
    });
    let client = |authorizer: Authorizer| {
        reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(AuthMiddleware::any_origin(authorizer))
            .build()
    };
    // Both tokens come from the same identity server, so they are the same size.
    let bearer = client(Authorizer::new(idp.confidential_client().build().unwrap()));
    // The bound token comes from a real DPoP token request, so it carries the real proof.
    let bound_authorizer = Authorizer::new(
        idp.confidential_client()
            .dpop(DpopKey::generate_es256().unwrap())
            .build()
            .unwrap(),
    );
    let bound = client(bound_authorizer.clone());
    let mut group = c.benchmark_group("request_through_middleware");
    for (name, client) in [("bearer", &bearer), ("dpop", &bound)] {
        runtime.block_on(async { client.get(&url).send().await.unwrap() }); // fetch the token
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let r = client.get(&url).send().await.unwrap();
                assert!(r.status().is_success());
            })
        });
    }
    group.finish();

    // Step 5 alone for the bound token, without HTTP: the proof and the headers.
    let mut group = c.benchmark_group("step5_without_http");
    let uri: http::Uri = url.parse().unwrap();
    let method = http::Method::GET;
    let target = authwire::Target::from_uri(&method, &uri);
    let mut headers = http::HeaderMap::new();
    group.bench_function("dpop_authorize_target", |b| {
        b.to_async(&runtime).iter(|| async {
            bound_authorizer
                .authorize_target(&target, &mut headers.clone())
                .await
                .unwrap();
        })
    });
    headers.clear();
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    targets = requests
}
criterion_main!(benches);
