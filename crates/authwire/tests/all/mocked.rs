//! Unit tests of the pipeline's steps against a mockall provider.

use crate::support::t0;
use authwire::{Authorizer, CacheKey, IdentityProvider, ManualClock, ProviderError, Token, async_trait};
use secrecy::ExposeSecret;
use std::time::Duration;

// mockall cannot mock `Option<&Token>` in an async trait, so the mock is a synchronous seam with
// owned arguments, and `MockProvider` adapts it to `IdentityProvider`.
mockall::mock! {
    pub Fetch {
        fn fetch(&self, current: Option<Token>) -> Result<Token, ProviderError>;
    }
}

struct MockProvider(MockFetch);

impl MockProvider {
    fn expect_fetch_token(&mut self) -> &mut __mock_MockFetch::__fetch::Expectation {
        self.0.expect_fetch()
    }
}

#[async_trait]
impl IdentityProvider for MockProvider {
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        self.0.fetch(current.cloned())
    }
    fn cache_key(&self) -> CacheKey {
        CacheKey::from_static("mock")
    }
}

fn provider() -> MockProvider {
    MockProvider(MockFetch::new())
}

#[tokio::test]
async fn valid_token_is_fetched_once_then_served_from_cache() {
    let clock = ManualClock::new(t0());
    let mut p = provider();
    p.expect_fetch_token()
        .withf(Option::is_none)
        .times(1)
        .returning(|_| Ok(Token::new("first").with_expires_at(t0() + Duration::from_secs(3600))));
    let auth = Authorizer::builder(p).clock(clock.clone()).build();
    for _ in 0..5 {
        let mut headers = http::HeaderMap::new();
        auth.authorize(&mut headers).await.unwrap();
        assert_eq!(headers["authorization"], "Bearer first");
        clock.advance(Duration::from_secs(60));
    }
    assert_eq!(auth.metrics().fetches, 1);
}

#[tokio::test]
async fn expired_token_is_passed_to_the_provider_with_its_refresh_token() {
    let clock = ManualClock::new(t0());
    let mut p = provider();
    let mut seq = mockall::Sequence::new();
    p.expect_fetch_token()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| {
            Ok(Token::new("a1")
                .with_refresh_token("r1")
                .with_expires_at(t0() + Duration::from_secs(100)))
        });
    p.expect_fetch_token()
        .withf(|current| {
            current
                .as_ref()
                .is_some_and(|t| t.refresh_token().is_some_and(|r| r.expose_secret() == "r1"))
        })
        .times(1)
        .in_sequence(&mut seq)
        // The server sends no new refresh token: the old one must be kept (RFC 6749 section 6).
        .returning(|_| Ok(Token::new("a2").with_expires_at(t0() + Duration::from_secs(1000))));
    let auth = Authorizer::builder(p).clock(clock.clone()).build();
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer a1");
    clock.advance(Duration::from_secs(100));
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer a2");
    let token = auth.token().await.unwrap();
    assert_eq!(token.refresh_token().unwrap().expose_secret(), "r1");
}

#[tokio::test]
async fn a_token_type_the_client_cannot_use_is_an_error_and_its_refresh_token_is_kept() {
    // Issue 12, item 15 (RFC 6749 section 7.1): before, this went out as `mac x`.
    let mut p = provider();
    p.expect_fetch_token().times(1).returning(|_| {
        Ok(Token::new("x")
            .with_token_type("mac".into())
            .with_refresh_token("r-mac"))
    });
    p.expect_fetch_token()
        .times(1)
        .withf(|current| {
            current
                .as_ref()
                .and_then(Token::refresh_token)
                .map(|r| r.expose_secret())
                == Some("r-mac")
        })
        .returning(|_| Ok(Token::new("y")));
    let clock = ManualClock::new(t0());
    let auth = Authorizer::builder(p).clock(clock.clone()).build();
    let e = auth.authorization_header().await.unwrap_err();
    assert!(authwire::error_chain(&e).contains("\"mac\""), "{e}");
    clock.advance(Duration::from_secs(120)); // past the backoff
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer y");
}

#[tokio::test]
async fn request_headers_are_updated_in_place() {
    let mut p = provider();
    p.expect_fetch_token()
        .times(1)
        .returning(|_| Ok(Token::new("req")));
    let auth = Authorizer::new(p);
    let mut request = http::Request::post("https://api.example/x")
        .header("authorization", "Basic stale")
        .header("x-other", "kept")
        .body(())
        .unwrap();
    auth.authorize_request(&mut request).await.unwrap();
    assert_eq!(request.headers().get_all("authorization").iter().count(), 1);
    assert_eq!(request.headers()["authorization"], "Bearer req");
    assert_eq!(request.headers()["x-other"], "kept");
}

#[tokio::test]
async fn header_unsafe_token_is_a_clear_error_not_a_panic() {
    let mut p = provider();
    p.expect_fetch_token()
        .times(1)
        .returning(|_| Ok(Token::new("SECRET\r\nX-Injected: yes")));
    let auth = Authorizer::new(p);
    let e = auth.authorization_header().await.unwrap_err();
    let msg = authwire::error_chain(&e);
    assert!(msg.contains("cannot go into an Authorization header"), "{msg}");
    assert!(!msg.contains("SECRET") && !format!("{e:?}").contains("SECRET"));
    assert!(matches!(
        e,
        authwire::AuthError::Refresh(ProviderError::InvalidResponse { .. })
    ));
}

#[tokio::test]
async fn debug_output_never_shows_secrets() {
    let mut p = provider();
    p.expect_fetch_token()
        .returning(|_| Ok(Token::new("SECRET-access").with_refresh_token("SECRET-refresh")));
    let builder = Authorizer::builder(p);
    let builder_dbg = format!("{builder:?}");
    let auth = builder.build();
    auth.authorization_header().await.unwrap();
    let token = auth.token().await.unwrap();
    for text in [
        builder_dbg,
        format!("{auth:?}"),
        format!("{auth:#?}"),
        format!("{token:?}"),
    ] {
        assert!(!text.contains("SECRET"), "{text}");
    }
}

#[tokio::test]
async fn a_refresh_token_that_came_with_a_refused_answer_is_kept_saved_and_redeemed_next() {
    // Issue 12, item 7: a rotated refresh token that arrived beside an unusable access token
    // (bad expires_in, failed JWT verification) was dropped, and the next refresh redeemed
    // the old one: with reuse detection, the whole login was revoked.
    let mut p = provider();
    p.expect_fetch_token().times(1).returning(|_| {
        Ok(Token::new("a1")
            .with_refresh_token("r1")
            .with_expires_at(t0() + Duration::from_secs(100)))
    });
    p.expect_fetch_token()
        .times(1)
        .withf(|c| {
            c.as_ref()
                .and_then(Token::refresh_token)
                .map(|r| r.expose_secret())
                == Some("r1")
        })
        .returning(|_| {
            Err(
                ProviderError::invalid_response(Some(200), "expires_in is not a number of seconds")
                    .with_refresh_token("r2-rotated".into()),
            )
        });
    p.expect_fetch_token()
        .times(1)
        .withf(|c| {
            c.as_ref()
                .and_then(Token::refresh_token)
                .map(|r| r.expose_secret())
                == Some("r2-rotated")
        })
        .returning(|_| Ok(Token::new("a3").with_expires_at(t0() + Duration::from_secs(4000))));
    let clock = ManualClock::new(t0());
    let store = crate::support::TestStore::default();
    let auth = Authorizer::builder(p)
        .clock(clock.clone())
        .store(store.clone())
        .build();
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer a1");
    clock.advance(Duration::from_secs(101)); // truly expired: nothing to serve meanwhile
    let e = auth.authorization_header().await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains("r2-rotated"),
        "the error shows no refresh token: {shown}"
    );
    assert!(
        e.provider_error().unwrap().received_refresh_token().is_none(),
        "taken out before the error is shared"
    );
    let saved = store.get(auth.cache_key().as_str()).expect("saved");
    assert_eq!(
        saved.refresh_token().unwrap().expose_secret(),
        "r2-rotated",
        "saved for other processes and restarts"
    );
    clock.advance(Duration::from_secs(120)); // past the backoff
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer a3");
}
