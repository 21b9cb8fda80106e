//! Issue 28: OpenID Connect ID tokens checked before they are kept (nonce, signature, iss,
//! aud, azp, exp), pushed authorization requests (RFC 9126), and step-up answers (claims,
//! acr), against the testkit's identity server over real sockets.

use authwire::{IdentityProvider, ProviderError, StepUp, StepUpReason, Token};
use authwire_oauth2::{BrowserLogin, DpopKey, Grant, OAuth2Provider};
use authwire_testkit::{Client, IdTokenTamper, IdentityServer, ScriptedBrowser};
use std::time::Duration;

fn public_login(idp: &IdentityServer) -> authwire_oauth2::OAuth2ProviderBuilder {
    OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::PUBLIC_ID)
        .grant(Grant::RefreshToken)
        .scope("openid offline_access")
}

/// Run a browser login to the end with a scripted browser; also returns the authorization URL
/// the browser was sent to.
async fn login(provider: &OAuth2Provider, options: BrowserLogin) -> (Result<Token, ProviderError>, url::Url) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let p = provider.clone();
    let options = options.reuse_window(Duration::ZERO);
    let task = tokio::spawn(async move {
        p.browser_login_with(&options, move |url| {
            let _ = tx.send(url.clone());
        })
        .await
    });
    let link = rx.await.unwrap();
    let browser = ScriptedBrowser::new();
    let authorization = browser.open(link.as_str()).await.unwrap();
    let _ = browser.login(authorization.as_str()).await;
    (task.await.unwrap(), authorization)
}

fn param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn claims_of(jwt: &authwire::secrecy::SecretString) -> serde_json::Value {
    use authwire::secrecy::ExposeSecret;
    let c = authwire_jwt::inspect(jwt.expose_secret()).unwrap();
    serde_json::Value::Object(c.all().clone())
}

#[tokio::test]
async fn a_login_that_asks_for_openid_sends_a_nonce_and_keeps_a_checked_id_token() {
    let idp = IdentityServer::start().await;
    let provider = public_login(&idp).build().unwrap();
    let (token, url) = login(&provider, BrowserLogin::new()).await;
    let token = token.unwrap();
    let nonce = param(&url, "nonce").expect("a nonce");
    assert!(nonce.len() >= 32, "{nonce}");
    let claims = claims_of(token.id_token().unwrap());
    assert_eq!(claims["nonce"], nonce.as_str());
    assert_eq!(claims["azp"], Client::PUBLIC_ID);
    assert!(
        idp.jwks_requests() >= 1,
        "the signature was checked against the JWKS"
    );

    // Two logins, two nonces.
    let (_, again) = login(&provider, BrowserLogin::new()).await;
    assert_ne!(param(&again, "nonce"), Some(nonce));

    // Without openid there is no nonce.
    let plain = OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::PUBLIC_ID)
        .grant(Grant::RefreshToken)
        .scope("offline_access")
        .build()
        .unwrap();
    let (token, url) = login(&plain, BrowserLogin::new()).await;
    assert!(token.is_ok());
    assert_eq!(param(&url, "nonce"), None);
}

#[tokio::test]
async fn an_id_token_that_fails_any_check_fails_the_login() {
    for (tamper, says) in [
        (IdTokenTamper::Nonce, "nonce"),
        (IdTokenTamper::Audience, "InvalidAudience"),
        (IdTokenTamper::Issuer, "InvalidIssuer"),
        (IdTokenTamper::Expired, "expired"),
        (IdTokenTamper::Signature, "InvalidSignature"),
    ] {
        let idp = IdentityServer::start().await;
        idp.update(|s| s.id_token_tamper = Some(tamper));
        let provider = public_login(&idp).build().unwrap();
        let (token, _) = login(&provider, BrowserLogin::new()).await;
        let err = token.expect_err(says);
        let shown = authwire::error_chain(&err);
        assert!(shown.contains("the ID token was refused"), "{tamper:?}: {shown}");
        assert!(shown.contains(says), "{tamper:?}: {shown}");
        assert!(!shown.contains("eyJ"), "no token in the error: {shown}");
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn a_refreshed_id_token_is_checked_and_a_refused_one_keeps_the_refresh_token() {
    let idp = IdentityServer::start().await;
    let provider = public_login(&idp).build().unwrap();
    let (token, _) = login(&provider, BrowserLogin::new()).await;
    let token = token.unwrap();
    let refreshed = provider.fetch_token(Some(&token)).await.unwrap();
    assert!(
        claims_of(refreshed.id_token().unwrap()).get("nonce").is_none(),
        "a refresh has no nonce"
    );

    idp.update(|s| s.id_token_tamper = Some(IdTokenTamper::Signature));
    let err = provider.fetch_token(Some(&refreshed)).await.unwrap_err();
    assert!(
        authwire::error_chain(&err).contains("the ID token was refused"),
        "{err}"
    );
    assert!(
        err.received_refresh_token().is_some(),
        "the rotated refresh token the refused answer brought is handed back, not lost"
    );
}

#[tokio::test]
async fn a_pushed_authorization_request_sends_only_client_id_and_request_uri_through_the_browser() {
    let idp = IdentityServer::start().await;
    let provider = public_login(&idp).par(true).build().unwrap();
    let (token, url) = login(&provider, BrowserLogin::new().login_hint("ada")).await;
    token.unwrap();
    let names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    assert_eq!(names, ["client_id", "request_uri"], "{url}");
    assert!(
        param(&url, "request_uri")
            .unwrap()
            .starts_with("urn:ietf:params:oauth:request_uri:")
    );
    assert_eq!(idp.par_requests(), 1);
    let used = idp.last_authorization();
    assert_eq!(used.get("login_hint").map(String::as_str), Some("ada"));
    assert_eq!(
        used.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert!(used.contains_key("nonce"));
}

#[tokio::test]
async fn a_server_that_requires_par_gets_it_without_being_asked_and_refuses_a_plain_request() {
    let idp = IdentityServer::start().await;
    idp.update(|s| s.require_par = true);
    // The testkit refuses a request that was not pushed.
    let plain = format!(
        "{}?response_type=code&client_id={}&redirect_uri=http://127.0.0.1:1/cb&code_challenge={}&code_challenge_method=S256",
        idp.authorization_url(),
        Client::PUBLIC_ID,
        "a".repeat(43)
    );
    let refused = ScriptedBrowser::new().authorize(&plain).await.unwrap();
    assert_eq!(param(&refused, "error").as_deref(), Some("invalid_request"));

    // The client reads require_pushed_authorization_requests from discovery.
    let provider = public_login(&idp).build().unwrap();
    let (token, url) = login(&provider, BrowserLogin::new()).await;
    token.unwrap();
    assert!(param(&url, "request_uri").is_some());
    assert_eq!(idp.par_requests(), 1);
}

#[tokio::test]
async fn a_confidential_dpop_client_pushes_with_its_credentials_and_a_proof_and_gets_a_bound_token() {
    let idp = IdentityServer::start().await;
    let provider = OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(Client::CONFIDENTIAL_SECRET)
        .grant(Grant::RefreshToken)
        .scope("openid")
        .dpop(DpopKey::generate_es256().unwrap())
        .par(true)
        .build()
        .unwrap();
    let proofs_before = idp.dpop_proofs();
    let (token, _) = login(&provider, BrowserLogin::new()).await;
    let token = token.unwrap();
    assert_eq!(token.token_type().scheme(), "DPoP");
    let used = idp.last_authorization();
    assert!(
        used.contains_key("dpop_jkt"),
        "the pushed request was bound to the key: {used:?}"
    );
    assert!(!used.contains_key("client_secret"));
    assert!(idp.dpop_proofs() > proofs_before);
}

#[tokio::test]
async fn a_pushed_request_with_a_wrong_client_secret_is_refused_before_any_browser() {
    let idp = IdentityServer::start().await;
    let provider = OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret("SECRET-wrong")
        .grant(Grant::RefreshToken)
        .par(true)
        .build()
        .unwrap();
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = opened.clone();
    let err = provider
        .browser_login_with(&BrowserLogin::new(), move |_| {
            seen.store(true, std::sync::atomic::Ordering::SeqCst)
        })
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some("invalid_client"), "{err}");
    assert!(
        !opened.load(std::sync::atomic::Ordering::SeqCst),
        "no browser was opened"
    );
    assert!(!authwire::error_chain(&err).contains("SECRET"));
}

#[tokio::test]
async fn a_claims_challenge_is_answered_by_a_refresh_asking_for_the_claims_and_the_capabilities() {
    let idp = IdentityServer::start().await;
    let provider = public_login(&idp).client_capabilities(["cp1"]).build().unwrap();
    let (token, url) = login(&provider, BrowserLogin::new()).await;
    let token = token.unwrap();
    assert!(
        param(&url, "claims").unwrap().contains("cp1"),
        "capabilities are declared at login too"
    );
    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1726563200"}}}"#;
    let step = StepUp::new(StepUpReason::Claims).with_claims(claims);
    let stepped = provider.step_up(Some(&token), &step).await.unwrap();
    assert_eq!(idp.grant_count("refresh_token"), 1);
    let asked = idp.last_form()["claims"].clone();
    let asked: serde_json::Value = serde_json::from_str(&asked).unwrap();
    assert_eq!(asked["access_token"]["nbf"]["value"], "1726563200");
    assert_eq!(asked["access_token"]["xms_cc"]["values"][0], "cp1");
    use authwire::secrecy::ExposeSecret;
    let (_, carried) = idp.token_context(stepped.access_token().expose_secret()).unwrap();
    assert!(carried.unwrap().contains("1726563200"));
    assert!(stepped.refresh_token().is_some());
}

#[tokio::test]
async fn challenges_the_provider_cannot_answer_say_what_is_needed() {
    let idp = IdentityServer::start().await;
    let provider = public_login(&idp).build().unwrap();
    let acr = StepUp::new(StepUpReason::Authentication).with_acr_values("gold");
    let err = provider.step_up(None, &acr).await.unwrap_err();
    assert!(authwire::error_chain(&err).contains("log in again"), "{err}");
    let scope = StepUp::new(StepUpReason::Scope).with_scope("admin");
    let err = provider.step_up(None, &scope).await.unwrap_err();
    assert!(authwire::error_chain(&err).contains("\"admin\""), "{err}");
    assert_eq!(idp.token_requests(), 0, "nothing was asked of the server");
}

#[tokio::test]
async fn a_step_up_login_asks_for_the_challenges_acr_and_max_age_and_checks_auth_time() {
    let idp = IdentityServer::start().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<url::Url>();
    let provider = public_login(&idp)
        .step_up_login(BrowserLogin::new().reuse_window(Duration::ZERO), move |url| {
            let _ = tx.send(url.clone());
        })
        .build()
        .unwrap();
    let driver = tokio::spawn(async move {
        let link = rx.recv().await.unwrap();
        let browser = ScriptedBrowser::new();
        let authorization = browser.open(link.as_str()).await.unwrap();
        browser.login(authorization.as_str()).await.unwrap();
        authorization
    });
    let step = StepUp::new(StepUpReason::Authentication)
        .with_acr_values("gold silver")
        .with_max_age(60);
    let token = provider.step_up(None, &step).await.unwrap();
    let authorization = driver.await.unwrap();
    assert_eq!(
        param(&authorization, "acr_values").as_deref(),
        Some("gold silver")
    );
    assert_eq!(param(&authorization, "max_age").as_deref(), Some("60"));
    let claims = claims_of(token.id_token().unwrap());
    assert_eq!(claims["acr"], "gold");
    assert!(claims["auth_time"].as_u64().is_some());
}

#[tokio::test]
async fn private_key_jwt_names_the_issuer_as_audience_where_the_server_requires_par() {
    // FAPI 2.0 section 5.3.2.1 and the OpenID Foundation's advice on audience injection.
    let idp = IdentityServer::start().await;
    let builder = || {
        OAuth2Provider::builder()
            .issuer(idp.issuer())
            .client_id(Client::PRIVATE_KEY_JWT_ID)
            .auth_method(authwire_oauth2::ClientAuthMethod::PrivateKeyJwt {
                key: authwire_oauth2::PrivateKey::rsa_pem(
                    authwire_testkit::CLIENT_PRIVATE_KEY_PEM.as_bytes(),
                )
                .unwrap(),
            })
    };
    builder().build().unwrap().fetch_token(None).await.unwrap();
    idp.update(|s| s.require_par = true);
    builder().build().unwrap().fetch_token(None).await.unwrap();
    builder()
        .assertion_audience(authwire_oauth2::AssertionAudience::Endpoint)
        .build()
        .unwrap()
        .fetch_token(None)
        .await
        .unwrap();
    let token_endpoint = format!("\"{}/token\"", idp.issuer());
    let issuer = format!("\"{}\"", idp.issuer());
    assert_eq!(
        idp.client_assertion_audiences(),
        [token_endpoint.clone(), issuer, token_endpoint]
    );
}

#[tokio::test]
async fn a_device_login_checks_its_id_token_too() {
    let idp = IdentityServer::start().await;
    idp.update(|s| {
        s.auto_approve_devices = true;
        s.device_interval_secs = 1;
    });
    let provider = public_login(&idp).build().unwrap();
    let token = provider.device_login(|_| {}).await.unwrap();
    assert!(token.id_token().is_some());
    idp.update(|s| s.id_token_tamper = Some(IdTokenTamper::Audience));
    let err = provider.device_login(|_| {}).await.unwrap_err();
    assert!(
        authwire::error_chain(&err).contains("the ID token was refused"),
        "{err}"
    );
}
