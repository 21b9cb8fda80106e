//! Issue 18: people logging in through a browser (authorization code + PKCE S256 on a loopback
//! redirect), and revocation (RFC 7009), against the testkit's identity provider driven by a
//! scripted browser over real sockets.

use authwire::ManualClock;
use authwire::{IdentityProvider, Token};
use authwire_oauth2::{BrowserLogin, Grant, OAuth2Provider};
use authwire_testkit::{Approval, Client, IdentityServer, ScriptedBrowser, Settings, with_param};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

fn public_login(idp: &IdentityServer) -> OAuth2Provider {
    OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::PUBLIC_ID)
        .grant(Grant::RefreshToken)
        .scope("openid offline_access")
        .build()
        .unwrap()
}

/// Start a browser login; the URL it opens comes back through the receiver.
fn start(
    provider: &OAuth2Provider,
    options: BrowserLogin,
) -> (
    oneshot::Receiver<url::Url>,
    tokio::task::JoinHandle<Result<Token, authwire::ProviderError>>,
) {
    let (tx, rx) = oneshot::channel();
    let provider = provider.clone();
    // No hold after an early answer here; the tests of the login link set their own window.
    let options = options.reuse_window(Duration::ZERO);
    let login = tokio::spawn(async move {
        provider
            .browser_login_with(&options, move |url| {
                let _ = tx.send(url.clone());
            })
            .await
    });
    (rx, login)
}

/// The claims of a JWT, unverified.
fn authwire_jwt_claims(jwt: &authwire::secrecy::SecretString) -> serde_json::Value {
    use authwire::secrecy::ExposeSecret;
    use base64::Engine;
    let payload = jwt.expose_secret().split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn a_browser_login_uses_pkce_s256_and_state_and_yields_a_refresh_token() {
    let idp = IdentityServer::start().await;
    let provider = public_login(&idp);
    let (link, login) = start(&provider, BrowserLogin::new().login_hint("ada").prompt("consent"));
    let link = link.await.unwrap();
    // The opener gets a one-time link to the listener, not the authorization URL (issue 24).
    assert_eq!(link.host_str(), Some("127.0.0.1"));
    assert!(
        link.path().starts_with("/start/") && link.query().is_none(),
        "{link}"
    );
    let browser = ScriptedBrowser::new();
    let url = browser.open(link.as_str()).await.unwrap();
    assert!(url.as_str().starts_with(&idp.authorization_url()), "{url}");
    assert_eq!(param(&url, "response_type").as_deref(), Some("code"));
    assert_eq!(param(&url, "code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(param(&url, "code_challenge").map(|c| c.len()), Some(43));
    assert!(param(&url, "state").is_some_and(|s| s.len() >= 32));
    assert_eq!(param(&url, "login_hint").as_deref(), Some("ada"));
    assert_eq!(param(&url, "prompt").as_deref(), Some("consent"));
    assert_eq!(param(&url, "scope").as_deref(), Some("openid offline_access"));
    let redirect = url::Url::parse(&param(&url, "redirect_uri").unwrap()).unwrap();
    assert_eq!(redirect.scheme(), "http");
    assert_eq!(
        redirect.host_str(),
        Some("127.0.0.1"),
        "RFC 8252: the loopback IP literal"
    );
    assert_ne!(redirect.port(), Some(0));

    let page = browser.login(url.as_str()).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("You can close this window"), "{}", page.body);
    let token = login.await.unwrap().unwrap();
    assert!(token.refresh_token().is_some());
    assert_eq!(idp.grant_count("authorization_code"), 1);
    let form = idp.last_form();
    assert_eq!(form.get("code_verifier").map(String::as_str), Some("<present>"));
    assert_eq!(form.get("redirect_uri"), Some(&redirect.to_string()));

    // The listener is closed once the login is over.
    let port = redirect.port().unwrap();
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err());

    // `openid` was asked for: the ID token is kept beside the access token.
    let id = token.id_token().expect("an ID token");
    let claims = authwire_jwt_claims(id);
    assert_eq!(claims["aud"], Client::PUBLIC_ID);

    // And the refresh token it brought works.
    let refreshed = provider.fetch_token(Some(&token)).await.unwrap();
    assert!(refreshed.refresh_token().is_some());
    assert!(refreshed.id_token().is_some());

    // A person's login, and still one after its refresh (what keeps a refused refresh token
    // from being replaced by a client's own token; grants.rs).
    for t in [&token, &refreshed] {
        assert_eq!(
            t.extra("authwire_person_login").and_then(|v| v.as_str()),
            Some("authorization_code")
        );
    }
}

#[tokio::test]
async fn a_redirect_with_a_tampered_state_is_refused_and_the_wait_goes_on() {
    let idp = IdentityServer::start().await;
    let (url, login) = start(&public_login(&idp), BrowserLogin::new());
    let url = url.await.unwrap();
    let browser = ScriptedBrowser::new();
    let callback = browser.authorize(url.as_str()).await.unwrap();

    // A forged redirect (another page, another process) with the right code but not our state.
    let forged = browser
        .deliver(&with_param(&callback, "state", "attacker-state"))
        .await
        .unwrap();
    assert_eq!(forged.status, 400);
    assert!(forged.body.contains("ignored"), "{}", forged.body);
    // A request for another path gets nothing either.
    let mut elsewhere = callback.clone();
    elsewhere.set_path("/favicon.ico");
    assert_eq!(browser.deliver(&elsewhere).await.unwrap().status, 404);
    assert!(
        !login.is_finished(),
        "the login still waits for the real redirect"
    );
    assert_eq!(idp.grant_count("authorization_code"), 0, "nothing was redeemed");

    let page = browser.deliver(&callback).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(login.await.unwrap().unwrap().refresh_token().is_some());
}

#[tokio::test]
async fn access_denied_ends_the_login_with_the_servers_error() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            authorization: Approval::Deny,
            ..Settings::default()
        })
        .start()
        .await;
    let (url, login) = start(&public_login(&idp), BrowserLogin::new());
    let page = ScriptedBrowser::new()
        .login(url.await.unwrap().as_str())
        .await
        .unwrap();
    assert!(page.body.contains("did not complete"), "{}", page.body);
    let e = login.await.unwrap().unwrap_err();
    assert_eq!(e.error_code(), Some("access_denied"));
    assert!(!e.is_transient());
    assert!(authwire::error_chain(&e).contains("denied"), "{e}");
    assert_eq!(idp.token_requests(), 0);
}

#[tokio::test]
async fn an_authorization_response_from_another_issuer_is_refused() {
    // RFC 9207: a mix-up attack makes the response come back naming another server.
    let idp = IdentityServer::start().await;
    let (url, login) = start(&public_login(&idp), BrowserLogin::new());
    let browser = ScriptedBrowser::new();
    let callback = browser.authorize(url.await.unwrap().as_str()).await.unwrap();
    let page = browser
        .deliver(&with_param(&callback, "iss", "https://evil.example"))
        .await
        .unwrap();
    assert_eq!(page.status, 400);
    let e = login.await.unwrap().unwrap_err();
    let text = authwire::error_chain(&e);
    assert!(text.contains("RFC 9207"), "{text}");
    assert_eq!(idp.token_requests(), 0, "the code was not redeemed");

    // The metadata promises `iss`: a response without it is refused as well.
    let (url, login) = start(&public_login(&idp), BrowserLogin::new());
    let callback = browser.authorize(url.await.unwrap().as_str()).await.unwrap();
    let stripped: Vec<(String, String)> = callback
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != "iss")
        .collect();
    let mut without = callback.clone();
    without.query_pairs_mut().clear().extend_pairs(stripped);
    browser.deliver(&without).await.unwrap();
    assert!(login.await.unwrap().is_err());
}

#[tokio::test]
async fn the_wait_is_bounded_on_the_providers_clock() {
    let idp = IdentityServer::start().await;
    let clock = ManualClock::new(authwire::Clock::now(&authwire::SystemClock));
    let provider = OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::PUBLIC_ID)
        .grant(Grant::RefreshToken)
        .clock(clock.clone())
        .build()
        .unwrap();
    let (link, login) = start(&provider, BrowserLogin::new().timeout(Duration::from_secs(120)));
    let link = link.await.unwrap();
    while clock.sleepers() == 0 {
        tokio::task::yield_now().await;
    }
    clock.advance(Duration::from_secs(119));
    tokio::task::yield_now().await;
    assert!(!login.is_finished());
    clock.advance(Duration::from_secs(1));
    let e = tokio::time::timeout(Duration::from_secs(10), login)
        .await
        .expect("the login gives up when the clock says so")
        .unwrap()
        .unwrap_err();
    let text = authwire::error_chain(&e);
    assert!(text.contains("no answer from the browser within 120s"), "{text}");
    // The listener is gone: a late browser finds nobody.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", link.port().unwrap()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_silent_connection_does_not_hold_up_the_real_redirect() {
    let idp = IdentityServer::start().await;
    let (url, login) = start(&public_login(&idp), BrowserLogin::new());
    let url = url.await.unwrap();
    // A local process connects and says nothing.
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", url.port().unwrap()))
        .await
        .unwrap();
    let page = ScriptedBrowser::new().login(url.as_str()).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(login.await.unwrap().is_ok());
}

#[tokio::test]
async fn without_an_authorization_endpoint_the_error_says_what_to_set() {
    let idp = IdentityServer::start().await;
    let provider = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::PUBLIC_ID)
        .grant(Grant::RefreshToken)
        .build()
        .unwrap();
    let e = provider
        .browser_login(|_| panic!("nothing to open"))
        .await
        .unwrap_err();
    let text = authwire::error_chain(&e);
    assert!(text.contains("set authorization_url"), "{text}");

    // With the endpoint given, the same configuration logs in.
    let provider = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .authorization_url(idp.authorization_url())
        .client_id(Client::PUBLIC_ID)
        .grant(Grant::RefreshToken)
        .build()
        .unwrap();
    let (url, login) = start(&provider, BrowserLogin::new());
    ScriptedBrowser::new()
        .login(url.await.unwrap().as_str())
        .await
        .unwrap();
    assert!(login.await.unwrap().is_ok());
}

#[tokio::test]
async fn revoke_ends_the_refresh_token_at_the_server() {
    let idp = Arc::new(IdentityServer::start().await);
    let provider = public_login(&idp);
    let (url, login) = start(&provider, BrowserLogin::new());
    ScriptedBrowser::new()
        .login(url.await.unwrap().as_str())
        .await
        .unwrap();
    let token = login.await.unwrap().unwrap();
    provider.revoke(&token).await.unwrap();
    assert_eq!(idp.revocations(), 1);
    assert_eq!(
        idp.last_form().get("token"),
        None,
        "revocation is not a token request"
    );
    let e = provider.fetch_token(Some(&token)).await.unwrap_err();
    assert_eq!(e.error_code(), Some("invalid_grant"), "{e}");
    // Revoking again (a token the server no longer honours) is not an error (RFC 7009 2.2).
    provider.revoke(&token).await.unwrap();

    // A confidential client authenticates to the revocation endpoint; a wrong secret is an error.
    let bad = idp
        .confidential_client()
        .client_secret("wrong")
        .revocation_url(idp.revocation_url())
        .build()
        .unwrap();
    let e = bad.revoke(&token).await.unwrap_err();
    assert_eq!(e.error_code(), Some("invalid_client"));
}

#[tokio::test]
async fn the_testkit_server_enforces_pkce() {
    // The tests above are only worth something if the server checks the verifier.
    let idp = IdentityServer::start().await;
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"; // RFC 7636 appendix B
    let redirect_uri = "http://127.0.0.1:9/callback";
    let mut url = url::Url::parse(&idp.authorization_url()).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", Client::PUBLIC_ID)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", "s")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    let browser = ScriptedBrowser::new();
    let redeem = |code: String, verifier: &'static str| {
        let token_url = idp.token_url();
        async move {
            reqwest::Client::new()
                .post(token_url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(
                    form_urlencoded::Serializer::new(String::new())
                        .extend_pairs([
                            ("grant_type", "authorization_code"),
                            ("client_id", Client::PUBLIC_ID),
                            ("code", &code),
                            ("redirect_uri", redirect_uri),
                            ("code_verifier", verifier),
                        ])
                        .finish(),
                )
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let code = param(&browser.authorize(url.as_str()).await.unwrap(), "code").unwrap();
    assert_eq!(
        redeem(code.clone(), "wrong-verifier-wrong-verifier-wrong-verifier").await,
        400
    );
    assert_eq!(
        redeem(code, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").await,
        400,
        "a code is burnt by a failed attempt"
    );
    let code = param(&browser.authorize(url.as_str()).await.unwrap(), "code").unwrap();
    assert_eq!(
        redeem(code, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").await,
        200
    );
    // Without S256 the server redirects with an error.
    let plain = with_param(&url, "code_challenge_method", "plain");
    let answer = browser.authorize(plain.as_str()).await.unwrap();
    assert_eq!(param(&answer, "error").as_deref(), Some("invalid_request"));
}

#[tokio::test]
async fn a_login_link_used_first_by_someone_else_stops_the_login() {
    // Issue 24, item 3: the authorization URL handed to the opener is visible in /proc/*/cmdline
    // to other local users; whoever delivered a redirect with its state first logged the CLI in
    // as themselves. Now the opener gets a one-time link; the person's browser, opening it
    // second, stops the login, even when the other user's answer came first.
    let idp = IdentityServer::start().await;
    let provider = public_login(&idp);
    let (tx, rx) = oneshot::channel();
    let login = tokio::spawn(async move {
        provider
            .browser_login_with(
                &BrowserLogin::new().reuse_window(Duration::from_secs(3)),
                move |url| {
                    let _ = tx.send(url.clone());
                },
            )
            .await
    });
    let link = rx.await.unwrap();
    // Another local user reads the link from the process list and is quicker.
    let attacker = ScriptedBrowser::new();
    let callback = attacker.authorize(link.as_str()).await.unwrap();
    let delivery = tokio::spawn(async move { attacker.deliver(&callback).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !login.is_finished(),
        "an early answer is held while the link may still be opened again"
    );
    // The person's browser opens the link: second use.
    let second = ScriptedBrowser::new().open(link.as_str()).await.unwrap_err();
    assert!(second.contains("400"), "{second}");
    let e = login.await.unwrap().unwrap_err();
    assert!(
        authwire::error_chain(&e).contains("the login link was opened twice"),
        "{e}"
    );
    assert_eq!(delivery.await.unwrap().unwrap().status, 400);
    assert_eq!(
        idp.grant_count("authorization_code"),
        0,
        "the other user's code was never redeemed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_is_bounded_and_the_real_redirect_gets_through() {
    // Issue 24, item 4: unlimited connections, each held up to the read timeout; at the
    // descriptor limit, a busy loop of failed accepts. 3,000 idle connections made the real
    // redirect time out.
    use tokio::io::AsyncReadExt as _;
    let idp = IdentityServer::start().await;
    let (link, login) = start(&public_login(&idp), BrowserLogin::new());
    let link = link.await.unwrap();
    let port = link.port().unwrap();
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // The listener keeps at most 64 of them: the rest are closed at once, not after the 10 s
    // read timeout.
    let mut readers = tokio::task::JoinSet::new();
    for mut stream in idle {
        readers.spawn(async move {
            let mut buf = [0u8; 1];
            matches!(
                tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await,
                Ok(Ok(0) | Err(_))
            )
        });
    }
    let mut closed = 0;
    while let Some(done) = readers.join_next().await {
        closed += usize::from(done.unwrap());
    }
    assert!(
        closed >= 400 - 64,
        "only {closed} of 400 idle connections were closed"
    );
    let page = tokio::time::timeout(
        Duration::from_secs(10),
        ScriptedBrowser::new().login(link.as_str()),
    )
    .await
    .expect("the real redirect is served during a flood")
    .unwrap();
    assert_eq!(page.status, 200);
    assert!(login.await.unwrap().is_ok());
}
