//! JwtExpiry: tokens from a real OAuth2 exchange with the testkit's identity server.

use authwire::{Authorizer, Clock, IdentityProvider, ManualClock, SystemClock};
use authwire_jwt::JwtExpiry;
use authwire_oauth2::OAuth2Provider;
use authwire_testkit::{IdentityServer, ResourceServer, Settings};
use std::time::Duration;

fn provider(idp: &IdentityServer, clock: impl Clock) -> OAuth2Provider {
    idp.confidential_client().clock(clock).build().unwrap()
}

#[tokio::test]
async fn round_trip_with_tokens_signed_by_the_testkit() {
    let idp = IdentityServer::start().await;
    let token = idp.mint_access_token("svc-7", Duration::from_secs(600));
    let c = authwire_jwt::inspect(&token).unwrap();
    assert_eq!(c.subject(), Some("svc-7"));
    assert_eq!(c.issuer(), Some(idp.issuer().as_str()));
    assert_eq!(c.algorithm(), Some("RS256"));
    let left = c.expires_at().unwrap().duration_since(SystemClock.now()).unwrap();
    assert!(
        left > Duration::from_secs(590) && left <= Duration::from_secs(602),
        "{left:?}"
    );
}

#[tokio::test]
async fn a_missing_expiry_is_filled_from_exp() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            send_expires_in: false,
            ..Settings::default()
        })
        .start()
        .await;
    let bare = provider(&idp, SystemClock).fetch_token(None).await.unwrap();
    assert_eq!(bare.expires_at(), None, "the server sent no expires_in");
    let filled = JwtExpiry::new(provider(&idp, SystemClock))
        .fetch_token(None)
        .await
        .unwrap();
    let left = filled
        .expires_at()
        .expect("filled from exp")
        .duration_since(SystemClock.now())
        .unwrap();
    assert!(left > Duration::from_secs(3590), "{left:?}");
}

#[tokio::test]
async fn opaque_tokens_pass_through_unchanged() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            send_expires_in: false,
            jwt_access_tokens: false,
            ..Settings::default()
        })
        .start()
        .await;
    let token = JwtExpiry::new(provider(&idp, SystemClock))
        .fetch_token(None)
        .await
        .unwrap();
    assert_eq!(token.expires_at(), None);
}

#[tokio::test]
async fn always_mode_prefers_exp_over_expires_in() {
    let idp = IdentityServer::start().await; // sends expires_in = 3600 and exp = now + 3600 (+1 s rounding)
    let clock = ManualClock::new(SystemClock.now());
    let token = JwtExpiry::new(provider(&idp, clock.clone()))
        .always(true)
        .fetch_token(None)
        .await
        .unwrap();
    let c = authwire_jwt::inspect(authwire::secrecy::ExposeSecret::expose_secret(
        token.access_token(),
    ))
    .unwrap();
    assert_eq!(token.expires_at(), c.expires_at());
}

#[tokio::test]
async fn an_authorizer_refreshes_a_jwt_without_expires_in_before_it_expires() {
    let clock = ManualClock::new(SystemClock.now());
    let idp = IdentityServer::builder()
        .clock(clock.clone())
        .settings(Settings {
            send_expires_in: false,
            token_lifetime: Duration::from_secs(600),
            ..Settings::default()
        })
        .start()
        .await;
    let api = ResourceServer::start(&idp).await;
    let authorizer = Authorizer::builder(JwtExpiry::new(provider(&idp, clock.clone())).clock(clock.clone()))
        .clock(clock.clone())
        .build();
    let http = reqwest::Client::new();
    // Walk through three token lifetimes in 10-second steps, one request each.
    for _ in 0..180 {
        let header = authorizer.authorization_header().await.unwrap();
        let status = http
            .get(api.url())
            .header("authorization", header)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        clock.advance(Duration::from_secs(10));
        tokio::task::yield_now().await;
    }
    assert_eq!(api.unauthorized(), 0, "never sent an expired token");
    let fetched = idp.tokens_issued();
    // The window of a 600 s token is capped at half its life: a refresh every 300-360 s.
    assert!(
        (5..=7).contains(&fetched),
        "one refresh per 300-360 s over 1,800 s: {fetched}"
    );
}
