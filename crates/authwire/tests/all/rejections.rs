//! The request-level seam: rejected answers, retries, and the rate limit on refreshes caused by
//! rejections (issue 12, item 13), on a `ManualClock`.

use authwire::{
    Answer, Authorizer, CacheKey, IdentityProvider, ManualClock, ProviderError, RejectionRules,
    RetryDecision, Target, Token, async_trait,
};
use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Issues `access-1`, `access-2`, ... living an hour.
#[derive(Clone)]
struct Counting {
    calls: Arc<AtomicU32>,
    clock: ManualClock,
}

#[async_trait]
impl IdentityProvider for Counting {
    async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Token::new(format!("access-{n}"))
            .with_expires_at(authwire::Clock::now(&self.clock) + Duration::from_secs(3600)))
    }
    fn cache_key(&self) -> CacheKey {
        CacheKey::from_static("counting")
    }
}

fn setup() -> (Authorizer, Counting, ManualClock) {
    let clock = ManualClock::new(crate::support::t0());
    let provider = Counting {
        calls: Arc::default(),
        clock: clock.clone(),
    };
    let authorizer = Authorizer::builder(provider.clone())
        .clock(clock.clone())
        .backoff(Duration::from_secs(1), Duration::from_secs(8))
        .build();
    (authorizer, provider, clock)
}

fn invalid_token() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer error="invalid_token""#),
    );
    h
}

/// One request against a server that rejects every token, as an adapter runs it: authorize,
/// send (here: answered 401), decide, and at most one retry.
async fn request_to_a_server_that_rejects_everything(authorizer: &Authorizer) -> usize {
    let uri: http::Uri = "https://api.example/v1".parse().unwrap();
    let target = Target::from_uri(&Method::POST, &uri);
    let mut headers = HeaderMap::new();
    let sent = authorizer.authorize_target(&target, &mut headers).await.unwrap();
    let rejection = invalid_token();
    let answer = Answer::new(StatusCode::UNAUTHORIZED, &rejection).replayable(true);
    match authorizer.decide(&answer, &sent, RejectionRules::default()).await {
        RetryDecision::RetryWith(retry) => {
            assert_ne!(*retry.header(), sent, "a retry never carries the rejected token");
            2
        }
        _ => 1,
    }
}

#[tokio::test]
async fn a_server_that_rejects_every_token_costs_one_fetch_per_backoff_not_one_per_request() {
    let (authorizer, provider, clock) = setup();
    let mut sent = 0;
    for _ in 0..20 {
        sent += request_to_a_server_that_rejects_everything(&authorizer).await;
    }
    // First fetch, then one refetch for the first rejection; every later rejection of the
    // refetched token comes within the 1 s backoff and is throttled.
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2, "before the fix: 21");
    assert_eq!(sent, 21, "one retry, then none");
    let m = authorizer.metrics();
    assert_eq!(m.invalidations, 1);
    assert_eq!(m.throttled_rejections, 19);

    // After the backoff, one more refetch; the next one waits twice as long.
    clock.advance(Duration::from_millis(1_100));
    request_to_a_server_that_rejects_everything(&authorizer).await;
    assert_eq!(provider.calls.load(Ordering::SeqCst), 3);
    clock.advance(Duration::from_millis(1_100));
    request_to_a_server_that_rejects_everything(&authorizer).await;
    assert_eq!(provider.calls.load(Ordering::SeqCst), 3, "2 s now");
    clock.advance(Duration::from_millis(1_000));
    request_to_a_server_that_rejects_everything(&authorizer).await;
    assert_eq!(provider.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_rejection_of_a_token_that_was_not_fetched_for_a_rejection_is_honoured_at_once() {
    let (authorizer, provider, clock) = setup();
    let mut headers = HeaderMap::new();
    let uri: http::Uri = "https://api.example/".parse().unwrap();
    let target = Target::from_uri(&Method::GET, &uri);
    let first = authorizer.authorize_target(&target, &mut headers).await.unwrap();
    assert!(
        authorizer.invalidate(&first),
        "a token that served fine is refetched when rejected"
    );
    let second = authorizer.authorization_header().await.unwrap();
    assert_ne!(first, second);
    // The replacement served for a while (longer than the backoff) before its rejection.
    clock.advance(Duration::from_secs(30));
    assert!(authorizer.invalidate(&second));
    authorizer.authorization_header().await.unwrap();
    assert_eq!(provider.calls.load(Ordering::SeqCst), 3);
    assert_eq!(authorizer.metrics().throttled_rejections, 0);
}

#[tokio::test]
async fn no_retry_after_a_redirect_or_without_a_replayable_request() {
    let (authorizer, provider, clock) = setup();
    let rejection = invalid_token();
    for answer in [
        Answer::new(StatusCode::UNAUTHORIZED, &rejection)
            .replayable(true)
            .redirected(true),
        Answer::new(StatusCode::UNAUTHORIZED, &rejection).replayable(false),
    ] {
        clock.advance(Duration::from_secs(60)); // past any rejection cooldown
        let sent = authorizer.authorization_header().await.unwrap();
        let decision = authorizer.decide(&answer, &sent, RejectionRules::default()).await;
        assert!(matches!(decision, RetryDecision::Done), "{answer:?}");
        // The token is still forgotten: the next request gets a new one.
        assert_ne!(authorizer.authorization_header().await.unwrap(), sent);
    }
    assert!(provider.calls.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn an_answer_that_does_not_blame_the_token_changes_nothing() {
    let (authorizer, provider, _clock) = setup();
    let sent = authorizer.authorization_header().await.unwrap();
    let bare = HeaderMap::new();
    for status in [StatusCode::OK, StatusCode::FORBIDDEN, StatusCode::UNAUTHORIZED] {
        let answer = Answer::new(status, &bare).replayable(true);
        let decision = authorizer.decide(&answer, &sent, RejectionRules::default()).await;
        assert!(matches!(decision, RetryDecision::Done));
    }
    let answer = Answer::new(StatusCode::UNAUTHORIZED, &bare).replayable(true);
    let decision = authorizer
        .decide(&answer, &sent, RejectionRules::default().retry_on_any_401(true))
        .await;
    assert!(
        matches!(decision, RetryDecision::RetryWith(_)),
        "a bare 401 counts when asked"
    );
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
}

// `SentToken`: what an adapter keeps of a request until its answer arrives (issue 16).

/// A warm authorizer's cached token on a GET: what was sent, and the request's headers.
async fn sent_by(authorizer: &Authorizer) -> (authwire::SentToken, HeaderMap) {
    authorizer.authorization_header().await.unwrap();
    let (method, uri) = (
        Method::GET,
        "https://api.example/v1".parse::<http::Uri>().unwrap(),
    );
    let mut headers = HeaderMap::new();
    let sent = authorizer
        .try_authorize_target_sent(&Target::from_uri(&method, &uri), &mut headers)
        .expect("cached");
    (sent, headers)
}

/// `sent.judge` on a 401 whose challenge says `invalid_token`.
fn judge_rejection(sent: &authwire::SentToken) -> bool {
    let rejection = invalid_token();
    sent.judge(
        &Answer::new(StatusCode::UNAUTHORIZED, &rejection),
        RejectionRules::default(),
    )
}

#[tokio::test]
async fn a_sent_token_makes_its_authorizer_forget_a_rejected_token() {
    let (authorizer, provider, _clock) = setup();
    let (sent, headers) = sent_by(&authorizer).await;
    assert_eq!(headers["authorization"], "Bearer access-1");
    assert!(!sent.is_bound());

    let ok = HeaderMap::new();
    assert!(!sent.judge(&Answer::new(StatusCode::OK, &ok), RejectionRules::default()));
    assert_eq!(
        authorizer.cached_authorization_header().unwrap(),
        "Bearer access-1"
    );

    assert!(judge_rejection(&sent));
    assert_eq!(authorizer.cached_authorization_header(), None, "forgotten");
    assert_eq!(
        authorizer.authorization_header().await.unwrap(),
        "Bearer access-2"
    );
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_late_rejection_of_a_replaced_token_forgets_nothing() {
    let (authorizer, provider, clock) = setup();
    let (old, headers) = sent_by(&authorizer).await;
    // The token is replaced (rejected by another request), and the rejection cooldown passes.
    assert!(authorizer.invalidate(&headers["authorization"]));
    assert_eq!(
        authorizer.authorization_header().await.unwrap(),
        "Bearer access-2"
    );
    clock.advance(Duration::from_secs(60));
    // Then the first request's answer arrives: it rejected access-1, not access-2.
    assert!(judge_rejection(&old));
    assert_eq!(
        authorizer.cached_authorization_header().unwrap(),
        "Bearer access-2"
    );
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_sent_token_does_not_keep_its_authorizer_alive() {
    let (authorizer, provider, _clock) = setup();
    let (sent, _) = sent_by(&authorizer).await;
    assert_eq!(
        Arc::strong_count(&provider.calls),
        2,
        "the authorizer's provider and ours"
    );
    drop(authorizer);
    assert_eq!(
        Arc::strong_count(&provider.calls),
        1,
        "the authorizer and its provider are gone"
    );
    // Its authorizer is gone: the answer is still judged, and there is nothing to forget.
    assert!(judge_rejection(&sent));
    // A default token stands for no token: it is never anyone's.
    let (other, _, _) = setup();
    other.authorization_header().await.unwrap();
    assert!(judge_rejection(&authwire::SentToken::default()));
    assert!(other.cached_authorization_header().is_some(), "not forgotten");
}
