//! The middleware against the testkit's identity server and protected APIs, over real HTTP.

mod dpop;
mod step_up;

use authwire::{AuthError, Authorizer, ManualClock};
use authwire_oauth2::OAuth2Provider;
use authwire_reqwest::AuthMiddleware;
use authwire_testkit::{Client, IdentityServer, ResourceServer};
use reqwest_middleware::ClientWithMiddleware;
use std::time::{Duration, SystemTime};

struct Setup {
    idp: IdentityServer,
    api: ResourceServer,
    authorizer: Authorizer,
    client: ClientWithMiddleware,
}

async fn setup_with(clock: Option<ManualClock>, secret: &str) -> Setup {
    let idp = match &clock {
        Some(c) => IdentityServer::builder().clock(c.clone()).start().await,
        None => IdentityServer::start().await,
    };
    let api = ResourceServer::start(&idp).await;
    let mut provider = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(secret);
    if let Some(c) = &clock {
        provider = provider.clock(c.clone());
    }
    let mut authorizer = Authorizer::builder(provider.build().unwrap());
    if let Some(c) = &clock {
        authorizer = authorizer.clock(c.clone());
    }
    let authorizer = authorizer.build();
    let middleware = AuthMiddleware::for_origins(authorizer.clone(), [api.url()]).unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build();
    Setup {
        idp,
        api,
        authorizer,
        client,
    }
}

impl Setup {
    /// A client on the same authorizer that retries on any 401 (bare challenges too).
    fn lenient_client(&self) -> ClientWithMiddleware {
        let middleware = AuthMiddleware::builder(self.authorizer.clone())
            .origin(self.api.url())
            .retry_on_any_401(true)
            .build()
            .unwrap();
        reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(middleware)
            .build()
    }
}

async fn setup() -> Setup {
    setup_with(None, Client::CONFIDENTIAL_SECRET).await
}

#[tokio::test]
async fn requests_carry_the_header_and_other_origins_never_see_it() {
    let s = setup().await;
    let other = ResourceServer::start(&s.idp).await;
    let r = s
        .client
        .get(format!("{}/v1/things", s.api.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.api.authorization_seen();
    assert!(
        seen[0].as_deref().is_some_and(|h| h.starts_with("Bearer ey")),
        "{seen:?}"
    );

    let r = s
        .client
        .get(format!("{}/v1/things", other.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the other API got no token");
    assert_eq!(other.authorization_seen(), [None]);
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once_and_the_request_retried() {
    let s = setup().await;
    s.client.get(s.api.url()).send().await.unwrap();
    s.api.reject_next(1); // as if the token had been revoked
    let r = s
        .client
        .post(format!("{}/v1/orders", s.api.url()))
        .body("order-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.api.requests(), 3);
    assert_eq!(s.idp.tokens_issued(), 2, "one refresh");
    assert_eq!(s.authorizer.metrics().invalidations, 1);
    let seen = s.api.authorization_seen();
    assert_ne!(seen[1], seen[2], "the retry carried the fresh token");
    let bodies = s.api.bodies_seen();
    assert_eq!(
        bodies[1..],
        [b"order-1".to_vec(), b"order-1".to_vec()],
        "the body was replayed"
    );
}

#[tokio::test]
async fn a_server_that_always_says_401_gets_one_retry_and_no_refetch_storm() {
    // Issue 12, item 13: before, every rejected request caused a token fetch (4 for 3 requests,
    // 101 for 100).
    let s = setup().await;
    s.api.always_reject(true);
    let r = s.client.get(s.api.url()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(s.api.requests(), 2, "one retry, no loop");
    for _ in 0..20 {
        let r = s.client.get(s.api.url()).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(
        s.api.requests(),
        22,
        "no retry while the fresh token is rejected at once"
    );
    assert_eq!(
        s.idp.tokens_issued(),
        2,
        "the first fetch and one refetch, not one per request"
    );
    assert_eq!(s.authorizer.metrics().throttled_rejections, 20);
}

#[tokio::test]
async fn a_post_answered_with_a_redirect_to_a_401_is_never_sent_again() {
    // Issue 12, item 1: the middleware judged the final response after reqwest followed a
    // 303, and POSTed the order a second time.
    let s = setup().await;
    s.client.get(s.api.url()).send().await.unwrap();
    s.api.reject_next(1); // the page the 303 leads to says the token is bad
    let r = s
        .client
        .post(format!("{}/see-other/v1/orders/1", s.api.url()))
        .body("order-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the answer stands");
    assert_eq!(
        s.api.requests(),
        3,
        "the GET, the POST and the GET it was redirected to: no replay"
    );
    let bodies = s.api.bodies_seen();
    assert_eq!(
        bodies.iter().filter(|b| b.as_slice() == b"order-1").count(),
        1,
        "the order was posted once"
    );
    // The token was still forgotten: the next request carries a new one.
    assert_eq!(s.client.get(s.api.url()).send().await.unwrap().status(), 200);
    assert_eq!(s.idp.tokens_issued(), 2);

    // With retry on any 401, a 307 to another origin that answers 401 is not replayed either.
    let lenient = s.lenient_client();
    let elsewhere = ResourceServer::start(&s.idp).await;
    let port = elsewhere.url().rsplit(':').next().unwrap().to_owned();
    let before = s.api.requests();
    let r = lenient
        .post(format!("{}/redirect-to/{port}/v1/orders", s.api.url()))
        .body("order-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(s.api.requests(), before + 1, "the first hop saw one POST");
    assert_eq!(elsewhere.requests(), 1);
    assert_eq!(
        elsewhere.authorization_seen(),
        [None],
        "reqwest drops the token across origins"
    );
}

#[tokio::test]
async fn plain_http_to_a_host_that_is_not_loopback_is_refused_even_for_any_origin() {
    let s = setup().await;
    // `api.example` is pinned to the loopback API, so even a regression sends nothing off
    // this machine; the name is what makes it "not loopback" to the middleware.
    let addr: std::net::SocketAddr = s.api.url().trim_start_matches("http://").parse().unwrap();
    let http = reqwest::Client::builder()
        .resolve("api.example", addr)
        .build()
        .unwrap();
    let any = reqwest_middleware::ClientBuilder::new(http)
        .with(AuthMiddleware::any_origin(s.authorizer.clone()))
        .build();
    let e = any
        .get(format!("http://api.example:{}/v1", addr.port()))
        .send()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("plain http"), "{e}");
    assert_eq!(s.api.requests(), 0, "nothing was sent");
    assert_eq!(s.idp.tokens_issued(), 0, "not even a token was fetched");
}

#[tokio::test]
async fn a_401_that_does_not_blame_the_token_is_not_retried_unless_asked() {
    let s = setup().await;
    s.client.get(s.api.url()).send().await.unwrap();
    // A bare `Bearer realm` challenge does not say the token is bad: returned as is.
    s.api.reject_next_without_reason(1);
    assert_eq!(s.client.get(s.api.url()).send().await.unwrap().status(), 401);
    assert_eq!(s.api.requests(), 2, "not retried");
    assert_eq!(
        s.authorizer.metrics().invalidations,
        0,
        "the token was not blamed"
    );

    let lenient = s.lenient_client();
    s.api.reject_next_without_reason(1);
    assert_eq!(
        lenient.get(s.api.url()).send().await.unwrap().status(),
        200,
        "retried when asked"
    );
    assert_eq!(s.api.requests(), 4);
    assert_eq!(s.idp.tokens_issued(), 2);
}

#[tokio::test]
async fn a_streaming_body_is_not_retried_but_the_token_is_still_forgotten() {
    let s = setup().await;
    s.client.get(s.api.url()).send().await.unwrap();
    s.api.reject_next(1);
    let body = reqwest::Body::wrap(http_body_util::Full::new(bytes::Bytes::from_static(b"stream")));
    let r = s.client.post(s.api.url()).body(body).send().await.unwrap();
    assert_eq!(r.status(), 401, "returned unchanged");
    assert_eq!(s.api.requests(), 2, "no retry");
    // The next request gets a fresh token.
    assert_eq!(s.client.get(s.api.url()).send().await.unwrap().status(), 200);
    assert_eq!(s.idp.tokens_issued(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_with_an_expired_token_cause_one_refresh() {
    let clock = ManualClock::new(SystemTime::now_for_tests());
    let s = setup_with(Some(clock.clone()), Client::CONFIDENTIAL_SECRET).await;
    assert_eq!(s.client.get(s.api.url()).send().await.unwrap().status(), 200);
    clock.advance(Duration::from_secs(2 * 3600)); // the token expired
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (s.client.clone(), s.api.url());
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    assert_eq!(s.idp.tokens_issued(), 2, "one refresh for 50 concurrent requests");
    assert_eq!(s.api.unauthorized(), 0);
}

#[tokio::test]
async fn no_token_means_no_request_and_a_typed_error() {
    let s = setup_with(None, "wrong-secret").await;
    let e = s.client.get(s.api.url()).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(inner) = &e else {
        panic!("{e:?}")
    };
    let auth = inner.downcast_ref::<AuthError>().expect("an AuthError");
    assert_eq!(
        auth.provider_error().and_then(|p| p.error_code()),
        Some("invalid_client")
    );
    assert_eq!(s.api.requests(), 0, "the request was not sent without its header");
    assert!(!format!("{e:?} {e}").contains(Client::CONFIDENTIAL_SECRET));
}

#[test]
fn origins_must_be_given_or_waived_by_name() {
    let auth = Authorizer::new(authwire_testkit::SequenceProvider::new(
        "k",
        Duration::from_secs(60),
        authwire::SystemClock,
    ));
    let none: [&str; 0] = [];
    assert!(AuthMiddleware::for_origins(auth.clone(), none).is_err());
    assert!(AuthMiddleware::for_origins(auth.clone(), ["http://api.example"]).is_err());
    assert!(AuthMiddleware::for_origins(auth.clone(), ["https://api.example"]).is_ok());
    let _ = AuthMiddleware::any_origin(auth);
}

trait NowForTests {
    fn now_for_tests() -> SystemTime;
}

impl NowForTests for SystemTime {
    /// The real time, read through the one allowed clock.
    fn now_for_tests() -> SystemTime {
        authwire::Clock::now(&authwire::SystemClock)
    }
}
