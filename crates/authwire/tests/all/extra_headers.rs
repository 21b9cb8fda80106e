//! Issue 30: a credential's headers beside `Authorization` (Google's `x-goog-user-project`),
//! added in step 5 on every path: `authorize`, `authorize_target`, the synchronous cached path
//! and its per-thread slot, and the one retry after a rejection.

use crate::support::{Scripted, ok, t0, token};
use authwire::{Answer, Authorizer, IdentityProvider, ManualClock, RejectionRules, RetryDecision, Target};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

/// A provider whose credential names a quota project.
#[derive(Clone)]
struct WithQuotaProject(Scripted);

#[authwire::async_trait]
impl IdentityProvider for WithQuotaProject {
    async fn fetch_token(
        &self,
        current: Option<&authwire::Token>,
    ) -> Result<authwire::Token, authwire::ProviderError> {
        self.0.fetch_token(current).await
    }
    fn cache_key(&self) -> authwire::CacheKey {
        self.0.cache_key()
    }
    fn request_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        vec![
            (
                HeaderName::from_static("x-goog-user-project"),
                HeaderValue::from_static("billing-1"),
            ),
            // A credential cannot replace the pipeline's own header.
            (
                http::header::AUTHORIZATION,
                HeaderValue::from_static("Basic planted"),
            ),
        ]
    }
}

fn authorizer(provider: Scripted) -> Authorizer {
    Authorizer::builder(WithQuotaProject(provider))
        .clock(ManualClock::new(t0()))
        .request_header(
            HeaderName::from_static("x-extra"),
            HeaderValue::from_static("yes"),
        )
        .build()
}

fn check(headers: &HeaderMap, access: &str) {
    assert_eq!(headers["x-goog-user-project"], "billing-1");
    assert_eq!(headers["x-extra"], "yes");
    assert_eq!(headers["authorization"], format!("Bearer {access}").as_str());
    assert_eq!(headers.get_all("authorization").iter().count(), 1);
}

#[tokio::test]
async fn every_step5_path_adds_the_credentials_headers() {
    let auth = authorizer(Scripted::new([
        ok(token(1, t0(), HOUR)),
        ok(token(2, t0(), HOUR)),
    ]));
    assert_eq!(
        auth.request_headers().len(),
        2,
        "Authorization was dropped from the extras"
    );

    let mut headers = HeaderMap::new();
    auth.authorize(&mut headers).await.unwrap();
    check(&headers, "access-1");

    let (method, uri) = (
        http::Method::GET,
        "https://api.example/v1".parse::<http::Uri>().unwrap(),
    );
    let target = Target::from_uri(&method, &uri);
    let mut headers = HeaderMap::new();
    auth.authorize_target(&target, &mut headers).await.unwrap();
    check(&headers, "access-1");

    // The synchronous path, twice: the second time from this thread's slot.
    for _ in 0..2 {
        let mut headers = HeaderMap::new();
        auth.try_authorize_target_sent(&target, &mut headers)
            .expect("cached");
        check(&headers, "access-1");
        let mut headers = HeaderMap::new();
        auth.try_authorize_target(&target, &mut headers).expect("cached");
        check(&headers, "access-1");
    }

    // The retry after a rejection carries them too.
    let sent = HeaderValue::from_static("Bearer access-1");
    let mut answer_headers = HeaderMap::new();
    answer_headers.insert(
        "www-authenticate",
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    let answer = Answer::new(StatusCode::UNAUTHORIZED, &answer_headers).replayable(true);
    let RetryDecision::RetryWith(retry) = auth.decide(&answer, &sent, RejectionRules::default()).await else {
        panic!("a rejected token is retried once")
    };
    let mut headers = HeaderMap::new();
    retry.apply(&target, &mut headers).unwrap();
    check(&headers, "access-2");
}

#[tokio::test]
async fn without_extra_headers_only_authorization_is_added() {
    let auth = Authorizer::builder(Scripted::new([ok(token(1, t0(), HOUR))]))
        .clock(ManualClock::new(t0()))
        .build();
    assert!(auth.request_headers().is_empty());
    let mut headers = HeaderMap::new();
    auth.authorize(&mut headers).await.unwrap();
    assert_eq!(headers.len(), 1);
}
