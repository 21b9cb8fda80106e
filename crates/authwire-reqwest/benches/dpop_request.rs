//! What DPoP adds to a request through the middleware (issue 14): the same GET to a loopback
//! server that answers 200 to anything, with a cached Bearer token and with a cached DPoP-bound
//! token of the same size from the same identity server (one proof signed per request). The
//! server verifies nothing, so the difference is the client's cost and the proof's bytes on the
//! wire. Recorded in docs/PERFORMANCE.md.

use authwire::secrecy::SecretString;
use authwire::{
    Authorizer, CacheKey, IdentityProvider, ProofOfPossession, ProviderError, Target, Token, TokenType,
    async_trait,
};
use std::sync::Arc;

/// A proof computed once and sent with every request: the same bytes on the wire as a real one,
/// without the signature, to tell the signing cost from the header's.
/// With a spin, it burns that long first: the CPU time of a real proof without its work, to
/// tell the signature's cost from what any 20 µs pause in the request costs on loopback.
struct PrecomputedProof(http::HeaderValue, Duration);

impl ProofOfPossession for PrecomputedProof {
    fn proof(
        &self,
        _: &Target<'_>,
        _: &SecretString,
        _: Option<&str>,
    ) -> Result<(http::HeaderName, http::HeaderValue), ProviderError> {
        // A busy wait on the Clock seam, like every other time read here.
        let clock = authwire::SystemClock;
        let until = authwire::Clock::now(&clock) + self.1;
        while authwire::Clock::now(&clock) < until {
            std::hint::spin_loop();
        }
        Ok((http::HeaderName::from_static("dpop"), self.0.clone()))
    }
}

/// Hands out `token`, bound to a precomputed proof.
struct Precomputed(String, http::HeaderValue, Duration);

#[async_trait]
impl IdentityProvider for Precomputed {
    async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
        let now = authwire::Clock::now(&authwire::SystemClock);
        Ok(Token::new(self.0.clone())
            .with_token_type(TokenType::DPoP)
            .with_expires_at(now + Duration::from_secs(3600))
            .with_proof(Arc::new(PrecomputedProof(self.1.clone(), self.2))))
    }
    fn cache_key(&self) -> CacheKey {
        CacheKey::from_static("precomputed")
    }
}
use authwire_oauth2::DpopKey;
use authwire_reqwest::AuthMiddleware;
use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;

/// The loopback API and identity server, on a runtime of their own (one worker thread), so
/// that the client's runtime measures the client.
fn servers() -> (String, authwire_testkit::IdentityServer) {
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
            let idp = authwire_testkit::IdentityServer::start().await;
            tx.send((format!("http://{addr}/v1/things?page=2"), idp)).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

fn requests(c: &mut Criterion) {
    // The client as a CLI or a small service runs it: one thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (url, idp) = servers();
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
    // The same token and a real proof's bytes, precomputed.
    let (token, proof) = runtime.block_on(async {
        let uri: http::Uri = url.parse().unwrap();
        let target = Target::from_uri(&http::Method::GET, &uri);
        let mut headers = http::HeaderMap::new();
        let sent = bound_authorizer
            .authorize_target(&target, &mut headers)
            .await
            .unwrap();
        let token = sent.to_str().unwrap().trim_start_matches("DPoP ").to_owned();
        (token, headers["dpop"].clone())
    });
    let precomputed = client(Authorizer::new(Precomputed(
        token.clone(),
        proof.clone(),
        Duration::ZERO,
    )));
    // As long as a real proof takes (step5_without_http below), spent spinning.
    let spinning = client(Authorizer::new(Precomputed(
        token,
        proof,
        Duration::from_micros(20),
    )));
    let mut group = c.benchmark_group("request_through_middleware");
    for (name, client) in [
        ("bearer", &bearer),
        ("dpop", &bound),
        ("dpop_precomputed_proof", &precomputed),
        ("dpop_precomputed_proof_after_20us_spin", &spinning),
    ] {
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
    // The same with the caches cooled between calls (4 MiB touched, untimed), as the HTTP work
    // around each proof does in a real request.
    let mut scratch = vec![0u8; 4 << 20];
    group.bench_function("dpop_authorize_target_cold_cache", |b| {
        b.to_async(&runtime).iter_batched(
            || {
                for (i, byte) in scratch.iter_mut().enumerate().step_by(64) {
                    *byte = byte.wrapping_add(i as u8);
                }
                headers.clone()
            },
            |mut h| {
                let (authorizer, target) = (&bound_authorizer, &target);
                async move {
                    authorizer.authorize_target(target, &mut h).await.unwrap();
                }
            },
            criterion::BatchSize::PerIteration,
        )
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
