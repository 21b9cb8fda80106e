//! Every grant and every client-authentication method.

use crate::confidential;
use authwire::{Authorizer, Clock, IdentityProvider, SystemClock, Token, TokenType};
use authwire_oauth2::{
    AssertionSource, ClientAuthMethod, Grant, OAuth2Provider, PrivateKey, SubjectFn, TokenExchange,
};
use authwire_testkit::{CLIENT_PRIVATE_KEY_PEM, Client, IdentityServer, Settings};
use secrecy::ExposeSecret;
use std::sync::{Arc, Mutex};

#[tokio::test]
async fn client_credentials_with_basic_auth_form_encodes_id_and_secret() {
    let idp = IdentityServer::start().await;
    let provider = confidential(&idp)
        .scope("api:read api:write")
        .audience("https://api.example")
        .build()
        .unwrap();
    let token = provider.fetch_token(None).await.unwrap();
    assert_eq!(token.token_type(), &TokenType::Bearer);
    assert!(token.expires_at().is_some());
    assert_eq!(token.scope(), Some("api:read api:write"));
    assert_eq!(idp.auth_methods(), ["client_secret_basic"]);
    let form = idp.last_form();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "api:read api:write");
    assert_eq!(form["audience"], "https://api.example");
    assert!(
        !form.contains_key("client_secret"),
        "basic auth keeps the secret out of the body"
    );
}

#[tokio::test]
async fn client_credentials_with_post_auth() {
    let idp = IdentityServer::start().await;
    let provider = confidential(&idp)
        .auth_method(ClientAuthMethod::ClientSecretPost)
        .build()
        .unwrap();
    provider.fetch_token(None).await.unwrap();
    assert_eq!(idp.auth_methods(), ["client_secret_post"]);
    assert_eq!(idp.last_form()["client_secret"], "<present>");
}

#[tokio::test]
async fn client_credentials_with_private_key_jwt() {
    let idp = IdentityServer::start().await;
    let key = PrivateKey::rsa_pem(CLIENT_PRIVATE_KEY_PEM.as_bytes())
        .unwrap()
        .with_key_id("client-key-1");
    let provider = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::PRIVATE_KEY_JWT_ID)
        .auth_method(ClientAuthMethod::PrivateKeyJwt { key })
        .build()
        .unwrap();
    provider.fetch_token(None).await.unwrap();
    // A second request signs a fresh assertion (a new jti): the server refuses replays.
    provider.fetch_token(None).await.unwrap();
    assert_eq!(idp.auth_methods(), ["private_key_jwt", "private_key_jwt"]);
    assert!(!format!("{provider:?}").contains("PRIVATE KEY"));
}

#[tokio::test]
async fn wrong_secret_is_a_permanent_invalid_client() {
    let idp = IdentityServer::start().await;
    let provider = confidential(&idp).client_secret("wrong-SECRET").build().unwrap();
    let e = provider.fetch_token(None).await.unwrap_err();
    assert_eq!(e.error_code(), Some("invalid_client"));
    assert_eq!(e.status(), Some(401));
    assert!(!e.is_transient());
    assert!(!e.to_string().contains("wrong-SECRET"));
}

#[tokio::test]
async fn refresh_token_is_used_first_and_its_rotation_is_kept() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            refresh_token_for_client_credentials: true,
            ..Settings::default()
        })
        .start()
        .await;
    let provider = confidential(&idp).build().unwrap();
    let first = provider.fetch_token(None).await.unwrap();
    let rt1 = first.refresh_token().unwrap().expose_secret().to_owned();
    let second = provider.fetch_token(Some(&first)).await.unwrap();
    let rt2 = second.refresh_token().unwrap().expose_secret().to_owned();
    assert_ne!(rt1, rt2, "rotated");
    assert_eq!(idp.grant_count("refresh_token"), 1);
    assert_eq!(idp.grant_count("client_credentials"), 1);
    assert!(
        !idp.last_form().contains_key("scope"),
        "a refresh keeps the original scope"
    );

    // Replaying the rotated-away token is reuse: the server revokes the family and the provider
    // falls back to the configured grant.
    let third = provider.fetch_token(Some(&first)).await.unwrap();
    assert_eq!(idp.grant_count("client_credentials"), 2);
    let e = provider.fetch_token(Some(&second)).await;
    assert!(e.is_ok(), "family revoked: rt2 fails, client credentials again");
    assert_eq!(idp.grant_count("client_credentials"), 3);
    assert!(third.refresh_token().is_some());
}

#[tokio::test]
async fn a_persons_refused_login_is_not_replaced_by_the_clients_own_token() {
    let idp = IdentityServer::start().await;
    let provider = confidential(&idp).build().unwrap();
    // What a confidential client's login left (a browser login marks its token; see
    // browser.rs): a person's tokens. The server no longer knows the refresh token (revoked,
    // expired, reused).
    let login = Token::new("a-persons-access-token")
        .with_refresh_token("a-refresh-token-the-server-refuses")
        .with_id_token("a.persons.id-token")
        .with_extra("authwire_person_login", "authorization_code");
    let e = provider.fetch_token(Some(&login)).await.unwrap_err();
    assert_eq!(e.error_code(), Some("invalid_grant"), "{e}");
    assert_eq!(idp.grant_count("refresh_token"), 1);
    assert_eq!(
        idp.grant_count("client_credentials"),
        0,
        "the person's identity is not swapped for the client's"
    );

    // The client's own token (a refresh token and even an ID token, as some servers give a
    // client credentials answer): the configured grant gets the client its token again.
    let own = Token::new("the-clients-access-token")
        .with_refresh_token("refused-too")
        .with_id_token("a.service-account.id-token");
    assert!(provider.fetch_token(Some(&own)).await.is_ok());
    assert_eq!(idp.grant_count("client_credentials"), 1);
}

#[tokio::test]
async fn when_the_server_does_not_rotate_the_old_refresh_token_is_kept() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            rotate_refresh_tokens: false,
            refresh_token_for_client_credentials: true,
            ..Settings::default()
        })
        .start()
        .await;
    let provider = confidential(&idp).build().unwrap();
    let first = provider.fetch_token(None).await.unwrap();
    let second = provider.fetch_token(Some(&first)).await.unwrap();
    assert_eq!(
        second.refresh_token().unwrap().expose_secret(),
        first.refresh_token().unwrap().expose_secret()
    );
}

#[tokio::test]
async fn refresh_only_grant_uses_a_stored_refresh_token_and_says_login_required_without_one() {
    let idp = IdentityServer::start().await;
    let provider = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::PUBLIC_ID)
        .grant(Grant::RefreshToken)
        .build()
        .unwrap();
    let e = provider.fetch_token(None).await.unwrap_err();
    assert_eq!(e.error_code(), Some("login_required"));
    let rt = idp.issue_refresh_token(Client::PUBLIC_ID, Some("api:read"));
    let stored = Token::new("expired-access").with_refresh_token(rt);
    let token = provider.fetch_token(Some(&stored)).await.unwrap();
    assert_eq!(
        idp.auth_methods(),
        ["none"],
        "login_required was said without asking the server"
    );
    assert!(token.refresh_token().is_some());
}

#[tokio::test]
async fn jwt_bearer_assertion_signed_here() {
    let idp = IdentityServer::start().await;
    let key = PrivateKey::rsa_pem(CLIENT_PRIVATE_KEY_PEM.as_bytes()).unwrap();
    let provider = confidential(&idp)
        .grant(Grant::jwt_bearer_signed(key, "assertion-issuer", "user-42"))
        .build()
        .unwrap();
    provider.fetch_token(None).await.unwrap();
    assert_eq!(idp.grant_count("urn:ietf:params:oauth:grant-type:jwt-bearer"), 1);
    assert_eq!(idp.last_form()["assertion"], "<present>");
}

#[tokio::test]
async fn jwt_bearer_with_a_bad_assertion_is_invalid_grant() {
    let idp = IdentityServer::start().await;
    let provider = confidential(&idp)
        .grant(Grant::jwt_bearer(|| Ok("not.a.jwt".into())))
        .build()
        .unwrap();
    let e = provider.fetch_token(None).await.unwrap_err();
    assert_eq!(e.error_code(), Some("invalid_grant"));
}

#[tokio::test]
async fn token_exchange_of_another_authorizers_token() {
    let idp = IdentityServer::start().await;
    let upstream = Authorizer::new(confidential(&idp).scope("upstream").build().unwrap());
    let exchange = TokenExchange::new(upstream.clone())
        .requested_token_type("urn:ietf:params:oauth:token-type:access_token");
    let provider = confidential(&idp)
        .grant(exchange)
        .audience("downstream-api")
        .build()
        .unwrap();
    let token = provider.fetch_token(None).await.unwrap();
    assert!(token.expires_at().is_some());
    let form = idp.last_form();
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:token-exchange"
    );
    assert_eq!(
        form["subject_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(form["audience"], "downstream-api");
    assert_eq!(upstream.metrics().fetches, 1);

    let bad = confidential(&idp)
        .grant(Grant::token_exchange(SubjectFn(|| Ok("forged".to_owned()))))
        .build()
        .unwrap();
    assert_eq!(
        bad.fetch_token(None).await.unwrap_err().error_code(),
        Some("invalid_grant")
    );
}

#[tokio::test]
async fn device_code_prompts_the_user_and_polls_until_approved() {
    let idp = Arc::new(IdentityServer::builder().start().await);
    let provider = OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::PUBLIC_ID)
        .grant(Grant::RefreshToken)
        .scope("offline_access")
        .build()
        .unwrap();
    let prompted = Arc::new(Mutex::new(None));
    let seen = prompted.clone();
    let approver = idp.clone();
    let token = provider
        .device_login(move |p| {
            *seen.lock().unwrap() = Some(p.clone());
            assert!(approver.approve_device(&p.user_code));
        })
        .await
        .unwrap();
    let prompt = prompted.lock().unwrap().clone().unwrap();
    assert!(prompt.verification_uri.ends_with("/device"));
    assert!(
        prompt
            .verification_uri_complete
            .unwrap()
            .contains(&prompt.user_code)
    );
    assert!(
        token.refresh_token().is_some(),
        "a device login yields a refresh token to store"
    );
    assert_eq!(idp.grant_count("urn:ietf:params:oauth:grant-type:device_code"), 1);
}

#[tokio::test]
async fn device_code_honours_slow_down_and_reports_denial() {
    let idp = Arc::new(
        IdentityServer::builder()
            .settings(Settings {
                device_slow_down_once: true,
                auto_approve_devices: true,
                ..Settings::default()
            })
            .start()
            .await,
    );
    let provider = OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::PUBLIC_ID)
        .grant(Grant::RefreshToken)
        .build()
        .unwrap();
    let started = SystemClock.now();
    provider.device_login(|_| {}).await.unwrap();
    let waited = SystemClock.now().duration_since(started).unwrap();
    assert!(
        waited >= std::time::Duration::from_secs(5),
        "slow_down adds 5 s to the interval: {waited:?}"
    );
    assert_eq!(idp.grant_count("urn:ietf:params:oauth:grant-type:device_code"), 2);

    idp.update(|s| {
        s.auto_approve_devices = false;
        s.device_slow_down_once = false;
    });
    let denier = idp.clone();
    let e = provider
        .device_login(move |p| assert!(denier.deny_device(&p.user_code)))
        .await
        .unwrap_err();
    assert_eq!(e.error_code(), Some("access_denied"));
}

#[tokio::test]
async fn cache_keys_differ_for_every_setting_that_changes_the_token() {
    let idp = IdentityServer::start().await;
    let base = || confidential(&idp);
    let keys = [
        base().build().unwrap().cache_key(),
        base().scope("a").build().unwrap().cache_key(),
        base().scope("b").build().unwrap().cache_key(),
        base().audience("x").build().unwrap().cache_key(),
        base().resource("urn:r").build().unwrap().cache_key(),
        base().client_id("other").build().unwrap().cache_key(),
        base().grant(Grant::RefreshToken).build().unwrap().cache_key(),
        base().extra_param("tenant", "t1").build().unwrap().cache_key(),
        // Issue 12, item 5: the credential is part of the key (as a keyed fingerprint).
        base()
            .client_secret("another-secret")
            .build()
            .unwrap()
            .cache_key(),
    ];
    let unique: std::collections::HashSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "{keys:?}");
    // Scope order does not matter.
    assert_eq!(
        base().scope("a b").build().unwrap().cache_key(),
        base().scope("b").scope("a").build().unwrap().cache_key()
    );
    assert!(!keys[0].as_str().contains(Client::CONFIDENTIAL_SECRET));
    // The same configuration, built again (as after a restart), has the same key.
    assert_eq!(base().build().unwrap().cache_key(), keys[0]);
}

#[tokio::test]
async fn a_wrong_secret_is_never_handed_the_right_secrets_token_from_a_shared_store() {
    // Issue 12, item 5: both configurations shared one cache key, so the wrong one loaded the
    // right one's token from the store and never found out it was misconfigured.
    let idp = IdentityServer::start().await;
    let store = authwire_memory::MemoryStore::new();
    let right = authwire::Authorizer::builder(confidential(&idp).build().unwrap())
        .store(store.clone())
        .build();
    right.authorization_header().await.unwrap();
    let wrong =
        authwire::Authorizer::builder(confidential(&idp).client_secret("wrong-secret").build().unwrap())
            .store(store.clone())
            .build();
    assert_ne!(wrong.cache_key(), right.cache_key());
    let e = wrong.authorization_header().await.unwrap_err();
    assert_eq!(
        e.provider_error().and_then(|p| p.error_code()),
        Some("invalid_client")
    );
    assert_eq!(idp.tokens_issued(), 1);
}

#[tokio::test]
async fn device_code_grant_runs_the_device_flow_when_there_is_no_refresh_token() {
    let idp = Arc::new(IdentityServer::start().await);
    let approver = idp.clone();
    let provider = OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::PUBLIC_ID)
        .grant(Grant::device_code(move |p| {
            approver.approve_device(&p.user_code);
        }))
        .build()
        .unwrap();
    let first = provider.fetch_token(None).await.unwrap();
    assert!(first.refresh_token().is_some());
    // With a refresh token in hand, no second device flow.
    provider.fetch_token(Some(&first)).await.unwrap();
    assert_eq!(idp.grant_count("urn:ietf:params:oauth:grant-type:device_code"), 1);
    assert_eq!(idp.grant_count("refresh_token"), 1);
}

#[tokio::test]
async fn a_huge_device_code_lifetime_is_bounded_not_a_panic() {
    // Issue 12, item 12: `expires_in: u64::MAX` overflowed the deadline and panicked.
    let idp = IdentityServer::builder()
        .settings(Settings {
            auto_approve_devices: true,
            device_expires_in_secs: u64::MAX,
            ..Settings::default()
        })
        .start()
        .await;
    let provider = OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::PUBLIC_ID)
        .grant(Grant::RefreshToken)
        .build()
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    let token = provider
        .device_login(move |p| *record.lock().unwrap() = Some(p.expires_in))
        .await
        .unwrap();
    assert!(token.refresh_token().is_some());
    assert_eq!(
        *seen.lock().unwrap(),
        Some(authwire_oauth2::MAX_DEVICE_CODE_LIFETIME)
    );
}

/// A `private_key_jwt`-style client assertion for the testkit's JWT client, signed elsewhere (as
/// a federated identity's token would be), with a fresh `jti`.
fn federated_assertion(idp: &IdentityServer, jti: &str) -> String {
    let now = SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": Client::PRIVATE_KEY_JWT_ID, "sub": Client::PRIVATE_KEY_JWT_ID,
        "aud": idp.token_url(), "iat": now, "exp": now + 300, "jti": jti,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(CLIENT_PRIVATE_KEY_PEM.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_client_assertion_file_is_read_again_for_every_token_request() {
    // Issue 15: Kubernetes rotates projected tokens in place (AZURE_FEDERATED_TOKEN_FILE).
    let idp = IdentityServer::start().await;
    let dir = std::env::temp_dir().join(format!("authwire-assertion-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, format!("{}\n", federated_assertion(&idp, "first"))).unwrap();
    let provider = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::PRIVATE_KEY_JWT_ID)
        .auth_method(ClientAuthMethod::ClientAssertion(AssertionSource::file(&file)))
        .build()
        .unwrap();
    provider.fetch_token(None).await.unwrap();
    assert_eq!(
        idp.last_form().get("client_assertion").map(String::as_str),
        Some("<present>")
    );
    assert_eq!(
        idp.last_form().get("client_assertion_type").map(String::as_str),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    // The same file again: the server refuses a reused jti, so a provider that cached the
    // assertion would fail here.
    let reused = provider.fetch_token(None).await.unwrap_err();
    assert_eq!(reused.error_code(), Some("invalid_client"));
    std::fs::write(&file, federated_assertion(&idp, "rotated")).unwrap();
    provider.fetch_token(None).await.unwrap();

    // Missing and empty files say what is wrong; an empty one (being rewritten) is transient.
    std::fs::write(&file, "").unwrap();
    let empty = provider.fetch_token(None).await.unwrap_err();
    assert!(empty.is_transient());
    std::fs::remove_file(&file).unwrap();
    let missing = provider.fetch_token(None).await.unwrap_err();
    assert!(!missing.is_transient());
    assert!(authwire::error_chain(&missing).contains("is the token volume mounted"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn signed_assertions_carry_extra_claims_and_may_omit_sub() {
    // Google's service-account assertions: `scope` as a claim, no `sub`.
    let idp = IdentityServer::start().await;
    let key = PrivateKey::rsa_pem(CLIENT_PRIVATE_KEY_PEM.as_bytes()).unwrap();
    let source = AssertionSource::signed(key, "svc@example.iam", "")
        .with_claim("scope", "https://www.googleapis.com/auth/cloud-platform")
        .with_claim("iss", "ignored: the fixed claims win");
    // Sign through the provider, then read what it signed from the server's side.
    let provider = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(Client::CONFIDENTIAL_SECRET)
        .grant(Grant::JwtBearer(source))
        .build()
        .unwrap();
    let _ = provider.fetch_token(None).await; // the testkit wants `sub`; what matters is the JWT
    let assertion = idp.last_assertion().expect("the server saw an assertion");
    use base64::Engine as _;
    let payload = assertion.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["scope"], "https://www.googleapis.com/auth/cloud-platform");
    assert_eq!(claims["iss"], "svc@example.iam");
    assert!(claims.get("sub").is_none());
}

/// A fake GitHub Actions OIDC endpoint (the runner's documented shape): answers
/// `{"value": JWT}` to `GET ...&audience=AUD` with the right bearer request token, 403 else;
/// records each request line.
async fn actions_oidc(
    request_token: &'static str,
    jwt: String,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read_exact(&mut byte).await.is_err() {
                    break;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            record
                .lock()
                .unwrap()
                .push(head.lines().next().unwrap_or("").to_owned());
            let authorized = head
                .lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("authorization: bearer {request_token}")));
            let (status, body) = if authorized {
                ("200 OK", serde_json::json!({ "value": jwt }).to_string())
            } else {
                (
                    "403 Forbidden",
                    format!("{{\"message\":\"bad token {request_token}x\"}}"),
                )
            };
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    });
    (format!("http://{addr}/_apis/oidc/token?api-version=2.0"), seen)
}

#[tokio::test]
async fn a_github_actions_oidc_token_is_the_client_assertion() {
    let idp = IdentityServer::start().await;
    let (url, seen) = actions_oidc("runner-request-token-7", federated_assertion(&idp, "gha-1")).await;
    let provider = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::PRIVATE_KEY_JWT_ID)
        .auth_method(ClientAuthMethod::ClientAssertion(
            AssertionSource::github_actions_at("api://my-idp", &url, "runner-request-token-7"),
        ))
        .build()
        .unwrap();
    provider.fetch_token(None).await.unwrap();
    assert_eq!(idp.tokens_issued(), 1);
    let lines = seen.lock().unwrap().clone();
    assert_eq!(
        lines,
        ["GET /_apis/oidc/token?api-version=2.0&audience=api%3A%2F%2Fmy-idp HTTP/1.1"]
    );

    // A wrong request token: a clear error that names the permission, and no token in it.
    let denied = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::PRIVATE_KEY_JWT_ID)
        .auth_method(ClientAuthMethod::ClientAssertion(
            AssertionSource::github_actions_at("api://my-idp", &url, "not-the-request-token"),
        ))
        .build()
        .unwrap();
    let e = denied.fetch_token(None).await.unwrap_err();
    let text = authwire::error_chain(&e);
    assert!(text.contains("403") && text.contains("id-token: write"), "{text}");
    assert!(
        !text.contains("not-the-request-token") && !text.contains("runner-request-token-7"),
        "{text}"
    );

    // Outside GitHub Actions (no variables): said so.
    let outside = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::PRIVATE_KEY_JWT_ID)
        .auth_method(ClientAuthMethod::ClientAssertion(
            AssertionSource::github_actions("api://my-idp"),
        ))
        .build()
        .unwrap();
    if std::env::var_os("ACTIONS_ID_TOKEN_REQUEST_URL").is_none() {
        let e = outside.fetch_token(None).await.unwrap_err();
        assert!(
            authwire::error_chain(&e).contains("ACTIONS_ID_TOKEN_REQUEST_URL"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn an_async_assertion_source_is_awaited_for_every_token_request() {
    let idp = IdentityServer::start().await;
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (counter, url) = (calls.clone(), idp.token_url());
    let issuer = idp.issuer();
    let source = AssertionSource::from_async_fn(move || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (url, _issuer) = (url.clone(), issuer.clone());
        async move {
            tokio::task::yield_now().await;
            let now = SystemClock
                .now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let claims = serde_json::json!({
                "iss": Client::PRIVATE_KEY_JWT_ID, "sub": Client::PRIVATE_KEY_JWT_ID,
                "aud": url, "iat": now, "exp": now + 300, "jti": format!("async-{n}"),
            });
            Ok::<_, authwire::BoxError>(jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_rsa_pem(CLIENT_PRIVATE_KEY_PEM.as_bytes())?,
            )?)
        }
    });
    let provider = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::PRIVATE_KEY_JWT_ID)
        .auth_method(ClientAuthMethod::ClientAssertion(source))
        .build()
        .unwrap();
    provider.fetch_token(None).await.unwrap();
    provider.fetch_token(None).await.unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(idp.tokens_issued(), 2);
}

#[tokio::test]
async fn a_github_actions_endpoint_having_a_bad_moment_is_a_transient_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let idp = IdentityServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
    });
    let provider = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::PRIVATE_KEY_JWT_ID)
        .auth_method(ClientAuthMethod::ClientAssertion(
            AssertionSource::github_actions_at(
                "api://my-idp",
                format!("http://{addr}/token?api-version=2.0"),
                "runner-request-token-8",
            ),
        ))
        .build()
        .unwrap();
    let e = provider.fetch_token(None).await.unwrap_err();
    assert!(e.is_transient(), "retried with backoff, not given up on: {e}");
    assert!(authwire::error_chain(&e).contains("503"), "{e}");
    assert_eq!(idp.token_requests(), 0);
}
