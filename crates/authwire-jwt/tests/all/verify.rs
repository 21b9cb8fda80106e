//! Signature verification against the testkit's JWKS, over HTTP.

use authwire::{Authorizer, IdentityProvider, ManualClock, SystemClock};
use authwire_jwt::{JwtError, JwtExpiry, Verifier};
use authwire_testkit::{CLIENT_PRIVATE_KEY_PEM, IdentityServer};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::time::Duration;

fn verifier(idp: &IdentityServer) -> Verifier {
    Verifier::builder()
        .jwks_url(idp.jwks_url())
        .issuer(idp.issuer())
        .audience("testkit-api")
        .build()
        .unwrap()
}

#[tokio::test]
async fn tokens_of_the_issuer_verify() {
    let idp = IdentityServer::start().await;
    let v = verifier(&idp);
    let c = v
        .verify(&idp.mint_access_token("svc", Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(c.subject(), Some("svc"));
    v.verify(&idp.mint_access_token("svc2", Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(idp.jwks_requests(), 1, "keys are cached");
}

#[tokio::test]
async fn tampered_foreign_expired_and_misaddressed_tokens_fail() {
    let idp = IdentityServer::start().await;
    let v = verifier(&idp);
    let good = idp.mint_access_token("svc", Duration::from_secs(60));

    // Tampered payload: same header and signature, another subject.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&parts[1])
                .unwrap(),
        )
        .unwrap()
        .replace("svc", "adm"),
    );
    assert!(matches!(
        v.verify(&parts.join(".")).await,
        Err(JwtError::Verification { .. })
    ));

    // Signed by another key under the issuer's kid.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = authwire_jwt::inspect(&good).unwrap().key_id().map(str::to_owned);
    let claims =
        serde_json::json!({"iss": idp.issuer(), "aud": "testkit-api", "sub": "svc", "exp": 4_000_000_000u64});
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(CLIENT_PRIVATE_KEY_PEM.as_bytes()).unwrap(),
    )
    .unwrap();
    let e = v.verify(&forged).await.unwrap_err();
    assert!(e.to_string().contains("InvalidSignature"), "{e}");

    // Expired, beyond the leeway.
    let expired = idp.mint_access_token("svc", Duration::ZERO);
    let later = Verifier::builder()
        .jwks_url(idp.jwks_url())
        .clock(ManualClock::new(
            authwire::Clock::now(&SystemClock) + Duration::from_secs(120),
        ))
        .build()
        .unwrap();
    assert!(
        later
            .verify(&expired)
            .await
            .unwrap_err()
            .to_string()
            .contains("expired")
    );

    // Wrong issuer or audience.
    let strict = Verifier::builder()
        .jwks_url(idp.jwks_url())
        .issuer("https://other")
        .build()
        .unwrap();
    assert!(strict.verify(&good).await.is_err());
    let strict = Verifier::builder()
        .jwks_url(idp.jwks_url())
        .audience("another-api")
        .build()
        .unwrap();
    assert!(strict.verify(&good).await.is_err());
}

#[tokio::test]
async fn the_algorithm_allow_list_is_enforced_and_none_is_never_accepted() {
    let idp = IdentityServer::start().await;
    let es_only = Verifier::builder()
        .jwks_url(idp.jwks_url())
        .algorithms([Algorithm::ES256])
        .build()
        .unwrap();
    let e = es_only
        .verify(&idp.mint_access_token("svc", Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not allowed"), "{e}");
    let unsecured = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#)
    );
    assert!(verifier(&idp).verify(&unsecured).await.is_err());
}

#[tokio::test]
async fn an_unknown_kid_refreshes_the_jwks_at_most_once_a_minute() {
    let idp = IdentityServer::start().await;
    let clock = ManualClock::new(authwire::Clock::now(&SystemClock));
    let v = Verifier::builder()
        .jwks_url(idp.jwks_url())
        .clock(clock.clone())
        .build()
        .unwrap();
    v.verify(&idp.mint_access_token("svc", Duration::from_secs(600)))
        .await
        .unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rotated-key".into());
    let claims = serde_json::json!({"sub": "svc", "exp": 4_000_000_000u64});
    let unknown = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(CLIENT_PRIVATE_KEY_PEM.as_bytes()).unwrap(),
    )
    .unwrap();
    for _ in 0..5 {
        assert!(v.verify(&unknown).await.is_err());
    }
    assert_eq!(idp.jwks_requests(), 1, "rate-limited");
    clock.advance(Duration::from_secs(61));
    assert!(v.verify(&unknown).await.is_err());
    assert_eq!(idp.jwks_requests(), 2, "refetched once the interval passed");
}

#[tokio::test]
async fn jwt_expiry_can_verify_before_trusting_exp() {
    let idp = IdentityServer::start().await;
    let provider = idp.confidential_client().build().unwrap();
    let verified = JwtExpiry::new(provider.clone()).verify_with(verifier(&idp));
    assert!(verified.fetch_token(None).await.is_ok());
    let wrong_audience = Verifier::builder()
        .jwks_url(idp.jwks_url())
        .audience("not-us")
        .build()
        .unwrap();
    let authorizer = Authorizer::new(JwtExpiry::new(provider).verify_with(wrong_audience));
    let e = authorizer.authorization_header().await.unwrap_err();
    assert!(e.to_string().contains("failed verification"), "{e}");
}

#[tokio::test]
async fn a_refresh_token_beside_an_access_token_that_fails_verification_is_handed_back() {
    // Issue 12, item 7: when JwtExpiry's verification failed, the (rotated) refresh token that
    // came with the access token was dropped.
    use authwire::secrecy::ExposeSecret;
    use authwire::{CacheKey, ProviderError, Token, async_trait};
    let idp = IdentityServer::start().await;
    struct WithRefresh(String);
    #[async_trait]
    impl IdentityProvider for WithRefresh {
        async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
            Ok(Token::new(self.0.clone()).with_refresh_token("rt-ROTATED-7"))
        }
        fn cache_key(&self) -> CacheKey {
            CacheKey::from_static("with-refresh")
        }
    }
    let wrong_audience = Verifier::builder()
        .jwks_url(idp.jwks_url())
        .issuer(idp.issuer())
        .audience("not-us")
        .build()
        .unwrap();
    let p = JwtExpiry::new(WithRefresh(idp.mint_access_token("svc", Duration::from_secs(60))))
        .verify_with(wrong_audience);
    let e = p.fetch_token(None).await.unwrap_err();
    assert_eq!(
        e.received_refresh_token().map(|r| r.expose_secret()),
        Some("rt-ROTATED-7")
    );
    assert!(!format!("{e} {e:?}").contains("ROTATED"));
}
