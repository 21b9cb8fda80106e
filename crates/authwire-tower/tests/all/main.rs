//! The layer around a real hyper client, against the testkit's servers over loopback.

mod grpc;

use authwire::{AuthError, Authorizer};
use authwire_oauth2::OAuth2Provider;
use authwire_testkit::{Client, IdentityServer, ResourceServer};
use authwire_tower::{AuthLayer, BoxError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use tower_layer::Layer;
use tower_service::Service;

async fn servers(secret: &str) -> (IdentityServer, ResourceServer, Authorizer) {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    let provider = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(secret)
        .build()
        .unwrap();
    (idp, api, Authorizer::new(provider))
}

fn hyper_client() -> HyperClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    HyperClient::builder(TokioExecutor::new()).build_http()
}

async fn send<S>(service: &mut S, request: http::Request<Full<Bytes>>) -> Result<(u16, String), BoxError>
where
    S: Service<
            http::Request<Full<Bytes>>,
            Response = http::Response<hyper::body::Incoming>,
            Error = BoxError,
        >,
{
    std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
    let response = service.call(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn get(url: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn a_hyper_client_through_the_layer_gets_in() {
    let (idp, api, authorizer) = servers(Client::CONFIDENTIAL_SECRET).await;
    let mut service = AuthLayer::new(authorizer).layer(hyper_client());
    for _ in 0..3 {
        let (status, body) = send(&mut service, get(&format!("{}/v1/things", api.url())))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""ok":true"#), "{body}");
    }
    assert_eq!(idp.tokens_issued(), 1, "the token is cached across requests");
}

#[tokio::test]
async fn a_rejected_token_is_forgotten_so_the_next_request_refreshes() {
    let (idp, api, authorizer) = servers(Client::CONFIDENTIAL_SECRET).await;
    let mut service = AuthLayer::new(authorizer.clone()).layer(hyper_client());
    send(&mut service, get(&api.url())).await.unwrap();
    api.reject_next(1);
    let (status, _) = send(&mut service, get(&api.url())).await.unwrap();
    assert_eq!(status, 401, "no retry in the default mode");
    assert_eq!(authorizer.metrics().invalidations, 1);
    let (status, _) = send(&mut service, get(&api.url())).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(idp.tokens_issued(), 2);
}

#[tokio::test]
async fn retry_once_replays_a_rejected_request_with_a_fresh_token() {
    let (idp, api, authorizer) = servers(Client::CONFIDENTIAL_SECRET).await;
    let mut service = AuthLayer::new(authorizer.clone())
        .retry_once()
        .layer(hyper_client());
    send(&mut service, get(&api.url())).await.unwrap();
    api.reject_next(1);
    let post = http::Request::post(api.url())
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let (status, _) = send(&mut service, post).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(api.requests(), 3);
    assert_eq!(idp.tokens_issued(), 2);
    assert_eq!(api.bodies_seen()[2], b"payload");

    api.always_reject(true);
    let (status, _) = send(&mut service, get(&api.url())).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(
        api.requests(),
        4,
        "no retry: the token fetched after a rejection moments ago was rejected again (issue 12 item 13)"
    );
    assert_eq!(authorizer.metrics().throttled_rejections, 1);
    assert_eq!(idp.tokens_issued(), 2, "no refetch storm");
}

#[tokio::test]
async fn without_a_token_the_request_is_not_sent_and_the_error_is_typed() {
    let (_idp, api, authorizer) = servers("wrong").await;
    let mut service = AuthLayer::new(authorizer).layer(hyper_client());
    let e = send(&mut service, get(&api.url())).await.unwrap_err();
    let auth = authwire_tower::auth_error(&e).expect("an AuthError");
    assert!(matches!(auth, AuthError::Refresh(_)));
    assert_eq!(api.requests(), 0);
}

#[tokio::test]
async fn for_origins_attaches_the_token_to_named_origins_only() {
    // Issue 12, item 4: the layer attached the token to any host.
    let (idp, api, authorizer) = servers(Client::CONFIDENTIAL_SECRET).await;
    let other = ResourceServer::start(&idp).await;
    let mut service = AuthLayer::for_origins(authorizer, [api.url()])
        .unwrap()
        .layer(hyper_client());
    let (status, _) = send(&mut service, get(&format!("{}/v1", api.url())))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _) = send(&mut service, get(&format!("{}/v1", other.url())))
        .await
        .unwrap();
    assert_eq!(status, 401, "passed through without a token");
    assert_eq!(other.authorization_seen(), [None]);
    assert!(
        AuthLayer::for_origins(
            Authorizer::new(authwire::StaticTokenProvider::new("t")),
            ["http://api.example"]
        )
        .is_err()
    );
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_in_every_mode() {
    // Issue 12, item 4: `AuthLayer::new` sent the token over plain http to any host. The
    // inner service records what reached it; nothing is sent anywhere.
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let inner = {
        let reached = reached.clone();
        tower_service_fn(move |_req: http::Request<Full<Bytes>>| {
            reached.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok::<_, BoxError>(http::Response::new(())))
        })
    };
    let authorizer = Authorizer::new(authwire::StaticTokenProvider::new("t0k3n"));
    let mut service = AuthLayer::new(authorizer.clone()).layer(inner.clone());
    std::future::poll_fn(|cx| service.poll_ready(cx)).await.unwrap();
    let e = service.call(get("http://api.example/v1")).await.unwrap_err();
    assert!(e.downcast_ref::<authwire::OriginError>().is_some(), "{e}");
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0, "not sent");
    // Loopback and https are fine; insecure http by name too.
    service.call(get("http://127.0.0.1:9/v1")).await.unwrap();
    service.call(get("https://api.example/v1")).await.unwrap();
    let origins = authwire::Origins::builder()
        .any_origin(true)
        .allow_insecure_http(true)
        .build()
        .unwrap();
    let mut opted = AuthLayer::with_origins(authorizer, origins).layer(inner);
    opted.call(get("http://api.example/v1")).await.unwrap();
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A cloneable service from a closure (tower's `service_fn`, without the dependency).
fn tower_service_fn<F>(f: F) -> ServiceFn<F> {
    ServiceFn(f)
}

#[derive(Clone)]
struct ServiceFn<F>(F);

impl<F, Fut, Req, Res> Service<Req> for ServiceFn<F>
where
    F: FnMut(Req) -> Fut,
    Fut: std::future::Future<Output = Result<Res, BoxError>>,
{
    type Response = Res;
    type Error = BoxError;
    type Future = Fut;
    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Req) -> Fut {
        (self.0)(req)
    }
}

#[tokio::test]
async fn a_dpop_bound_token_gets_a_proof_through_the_layer() {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    let provider = idp
        .confidential_client()
        .dpop(authwire_oauth2::DpopKey::generate_es256().unwrap())
        .build()
        .unwrap();
    let mut service = AuthLayer::for_origins(Authorizer::new(provider), [api.url()])
        .unwrap()
        .layer(hyper_client());
    for _ in 0..2 {
        // The first request waits for the token; the second takes the cached path.
        let (status, body) = send(&mut service, get(&format!("{}/v1/things?x=1", api.url())))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(api.dpop_proofs_verified(), 2);
    assert_eq!(idp.tokens_issued(), 1);
}

#[tokio::test]
async fn without_retry_a_resource_servers_dpop_nonce_is_kept_for_the_next_request() {
    // Issue 14 follow-up: the default (no-retry) mode judged answers without their origin, so a
    // resource server's DPoP-Nonce was not kept and every request met `use_dpop_nonce` again.
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    api.require_dpop_nonce("rs-nonce-1");
    let provider = idp
        .confidential_client()
        .dpop(authwire_oauth2::DpopKey::generate_es256().unwrap())
        .build()
        .unwrap();
    let mut service = AuthLayer::for_origins(Authorizer::new(provider), [api.url()])
        .unwrap()
        .layer(hyper_client());
    let url = format!("{}/v1/things", api.url());
    // Warm the token (this request waits for it), then the cached path.
    let (first, _) = send(&mut service, get(&url)).await.unwrap();
    assert_eq!(
        first, 401,
        "no nonce yet: the server asks for one (no retry in this mode)"
    );
    let (second, body) = send(&mut service, get(&url)).await.unwrap();
    assert_eq!(second, 200, "the nonce from the first answer was used: {body}");
    let (third, _) = send(&mut service, get(&url)).await.unwrap();
    assert_eq!(third, 200);
    assert_eq!(api.dpop_nonce_challenges(), 1);
}

#[tokio::test]
async fn retry_once_answers_a_claims_challenge_and_reports_what_cannot_be_answered() {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    let provider = idp
        .confidential_client()
        .client_capabilities(["cp1"])
        .build()
        .unwrap();
    let authorizer = Authorizer::new(provider);
    let mut service = AuthLayer::new(authorizer.clone())
        .retry_once()
        .layer(hyper_client());
    api.require_claims(Some(r#"{"access_token":{"nbf":{"essential":true,"value":"7"}}}"#));
    let (status, body) = send(&mut service, get(&api.url())).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!((api.challenges(), api.requests()), (1, 2));

    api.require_scope(Some("admin"));
    let err = send(&mut service, get(&api.url())).await.unwrap_err();
    let auth = err.downcast_ref::<AuthError>().expect("an AuthError");
    assert_eq!(auth.step_up_challenge().unwrap().scope.as_deref(), Some("admin"));
    assert_eq!(api.requests(), 3, "sent once, not replayed");
}
