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
        .any_issuer(true)
        .any_audience(true)
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
        .any_audience(true)
        .build()
        .unwrap();
    assert!(strict.verify(&good).await.is_err());
    let strict = Verifier::builder()
        .jwks_url(idp.jwks_url())
        .audience("another-api")
        .any_issuer(true)
        .build()
        .unwrap();
    assert!(strict.verify(&good).await.is_err());
}

#[tokio::test]
async fn the_algorithm_allow_list_is_enforced_and_none_is_never_accepted() {
    let idp = IdentityServer::start().await;
    let es_only = Verifier::builder()
        .jwks_url(idp.jwks_url())
        .any_issuer(true)
        .any_audience(true)
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
        .any_issuer(true)
        .any_audience(true)
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
        .any_issuer(true)
        .build()
        .unwrap();
    let authorizer = Authorizer::new(JwtExpiry::new(provider).verify_with(wrong_audience));
    let e = authorizer.authorization_header().await.unwrap_err();
    assert!(authwire::error_chain(&e).contains("failed verification"), "{e}");
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

fn forged_with_kid(kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let claims = serde_json::json!({"sub": "svc", "exp": 4_000_000_000u64});
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(CLIENT_PRIVATE_KEY_PEM.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_hanging_jwks_download_never_blocks_verification_with_a_known_key() {
    // Issue 12, item 11: the key-cache lock was held across the download, and the default
    // client had no timeout, so one hanging refetch blocked every verification.
    let idp = IdentityServer::start().await;
    let v = Verifier::builder()
        .jwks_url(idp.jwks_url())
        .issuer(idp.issuer())
        .audience("testkit-api")
        .min_refresh_interval(Duration::ZERO)
        .build()
        .unwrap();
    let good = idp.mint_access_token("svc", Duration::from_secs(600));
    v.verify(&good).await.unwrap();
    idp.update(|s| s.jwks_delay = Duration::from_secs(3600));
    let stuck = {
        let v = v.clone();
        tokio::spawn(async move { v.verify(&forged_with_kid("unknown")).await })
    };
    for _ in 0..10_000 {
        if idp.jwks_requests() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(idp.jwks_requests(), 2, "the second download started (and hangs)");
    // The download hangs; a token with a known key verifies anyway. (The bound only turns a
    // regression into a failure instead of a hung test.)
    let known = tokio::time::timeout(Duration::from_secs(5), v.verify(&good)).await;
    assert!(matches!(known, Ok(Ok(_))), "{known:?}");
    stuck.abort();
}

#[tokio::test]
async fn failed_jwks_downloads_are_rate_limited_too() {
    // Issue 12, item 11: 25 forged kids against a failing JWKS endpoint made 25 downloads.
    let idp = IdentityServer::start().await;
    idp.update(|s| s.jwks_status = Some(503));
    let v = verifier(&idp);
    for n in 0..25 {
        assert!(v.verify(&forged_with_kid(&format!("forged-{n}"))).await.is_err());
    }
    assert_eq!(idp.jwks_requests(), 1);
}

#[tokio::test]
async fn safe_defaults_https_or_loopback_exp_issuer_and_audience_required() {
    // Issue 12, item 11: plain-http JWKS URLs to any host were accepted, and by default a token
    // without exp, or with any iss and aud, verified.
    let base = || Verifier::builder().issuer("https://idp.example").audience("api");
    let e = base().jwks_url("http://idp.example/jwks").build().unwrap_err();
    assert!(e.to_string().contains("plain http"), "{e}");
    assert!(
        base()
            .jwks_url("http://idp.example/jwks")
            .allow_insecure_http(true)
            .build()
            .is_ok()
    );
    assert!(base().jwks_url("http://127.0.0.1:1/jwks").build().is_ok());
    assert!(base().jwks_url("https://idp.example/jwks").build().is_ok());
    let e = Verifier::builder()
        .jwks_url("https://idp.example/jwks")
        .audience("api")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("any_issuer(true)"), "{e}");
    let e = Verifier::builder()
        .jwks_url("https://idp.example/jwks")
        .issuer("i")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("any_audience(true)"), "{e}");

    let idp = IdentityServer::start().await;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = None;
    let no_exp = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"iss": idp.issuer(), "aud": "testkit-api", "sub": "svc"}),
        &EncodingKey::from_rsa_pem(CLIENT_PRIVATE_KEY_PEM.as_bytes()).unwrap(),
    )
    .unwrap();
    let client_keys = Verifier::builder()
        .jwks_json(&client_jwks())
        .unwrap()
        .issuer(idp.issuer())
        .audience("testkit-api");
    let e = client_keys.build().unwrap().verify(&no_exp).await.unwrap_err();
    assert!(e.to_string().contains("no exp"), "{e}");
    let lenient = Verifier::builder()
        .jwks_json(&client_jwks())
        .unwrap()
        .issuer(idp.issuer())
        .audience("testkit-api")
        .require_exp(false)
        .build()
        .unwrap();
    assert!(lenient.verify(&no_exp).await.is_ok());
}

/// The testkit client's public key as a JWK set.
fn client_jwks() -> String {
    let key = EncodingKey::from_rsa_pem(CLIENT_PRIVATE_KEY_PEM.as_bytes()).unwrap();
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    serde_json::json!({ "keys": [jwk] }).to_string()
}

#[tokio::test]
async fn the_jwks_comes_through_the_transport() {
    let idp = IdentityServer::start().await;
    let proxy = authwire_testkit::ForwardProxy::start().await;
    let v = Verifier::builder()
        .jwks_url(idp.jwks_url())
        .issuer(idp.issuer())
        .audience("testkit-api")
        .transport(authwire_jwt::Transport::new().proxy(&proxy.url()).unwrap())
        .build()
        .unwrap();
    v.verify(&idp.mint_access_token("svc", Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(proxy.requests(), [format!("GET {} HTTP/1.1", idp.jwks_url())]);
}
