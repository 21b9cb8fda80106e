//! DPoP (RFC 9449) at the token endpoint, against the testkit's strict identity server.

use crate::confidential;
use authwire::secrecy::ExposeSecret;
use authwire::{IdentityProvider, TokenType};
use authwire_oauth2::{DpopKey, Grant, OAuth2Provider};
use authwire_testkit::{Client, Fault, IdentityServer, Settings};
use base64::Engine as _;

/// The `cnf.jkt` of a JWT access token.
fn jkt_of(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?,
    )
    .ok()?;
    claims["cnf"]["jkt"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn token_requests_carry_a_proof_and_tokens_come_back_bound_to_the_key() {
    let idp = IdentityServer::start().await;
    let key = DpopKey::generate_es256().unwrap();
    let provider = confidential(&idp).dpop(key.clone()).build().unwrap();
    let token = provider.fetch_token(None).await.unwrap();
    assert_eq!(token.token_type(), &TokenType::DPoP);
    assert!(
        token.proof().is_some(),
        "a bound token carries its proof of possession"
    );
    assert_eq!(
        jkt_of(token.access_token().expose_secret()),
        Some(key.thumbprint())
    );
    assert_eq!(idp.dpop_proofs(), 1);
    // The key is part of the cache key: tokens bound to another key are never loaded.
    let other = confidential(&idp)
        .dpop(DpopKey::generate_es256().unwrap())
        .build()
        .unwrap();
    assert_ne!(provider.cache_key(), other.cache_key());
    assert_ne!(
        provider.cache_key(),
        confidential(&idp).build().unwrap().cache_key()
    );
}

#[tokio::test]
async fn use_dpop_nonce_is_answered_by_exactly_one_retry_and_the_nonce_is_remembered() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            dpop_nonce: Some("nonce-from-the-server".into()),
            ..Settings::default()
        })
        .start()
        .await;
    let provider = confidential(&idp)
        .dpop(DpopKey::generate_es256().unwrap())
        .build()
        .unwrap();
    let token = provider.fetch_token(None).await.unwrap();
    assert_eq!(token.token_type(), &TokenType::DPoP);
    assert_eq!(idp.token_requests(), 2, "one refusal, one retry with the nonce");
    provider.fetch_token(None).await.unwrap();
    assert_eq!(
        idp.token_requests(),
        3,
        "the nonce was remembered: no second refusal"
    );
}

#[tokio::test]
async fn a_bound_refresh_token_is_redeemed_only_with_its_key() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            refresh_token_for_client_credentials: true,
            ..Settings::default()
        })
        .start()
        .await;
    let key = DpopKey::generate_es256().unwrap();
    let provider = confidential(&idp).dpop(key.clone()).build().unwrap();
    let first = provider.fetch_token(None).await.unwrap();
    assert!(first.refresh_token().is_some());
    let refreshed = provider.fetch_token(Some(&first)).await.unwrap();
    assert_eq!(
        jkt_of(refreshed.access_token().expose_secret()),
        Some(key.thumbprint())
    );
    assert_eq!(idp.grant_count("refresh_token"), 1);

    let thief = confidential(&idp)
        .dpop(DpopKey::generate_es256().unwrap())
        .grant(Grant::RefreshToken)
        .build()
        .unwrap();
    let e = thief.fetch_token(Some(&refreshed)).await.unwrap_err();
    assert_eq!(e.error_code(), Some("invalid_grant"), "{e}");
}

#[tokio::test]
async fn a_bearer_token_where_a_bound_one_was_asked_for_is_refused_unless_allowed_by_name() {
    let idp = IdentityServer::start().await;
    let bearer =
        r#"{"access_token":"plain-bearer","token_type":"Bearer","expires_in":60,"refresh_token":"rt-kept"}"#;
    idp.inject(Fault::status(200, bearer));
    let provider = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(Client::CONFIDENTIAL_SECRET)
        .dpop(DpopKey::generate_es256().unwrap())
        .build()
        .unwrap();
    let e = provider.fetch_token(None).await.unwrap_err();
    assert!(e.to_string().contains("dpop_bearer_fallback(true)"), "{e}");
    assert_eq!(
        e.received_refresh_token().map(|r| r.expose_secret().to_owned()),
        Some("rt-kept".to_owned()),
        "the refresh token that came with it is not lost"
    );
    idp.inject(Fault::status(200, bearer));
    let lenient = confidential(&idp)
        .dpop(DpopKey::generate_es256().unwrap())
        .dpop_bearer_fallback(true)
        .build()
        .unwrap();
    let token = lenient.fetch_token(None).await.unwrap();
    assert_eq!(token.token_type(), &TokenType::Bearer);
    assert!(token.proof().is_none());
}
