//! Every error class, over real HTTP: what the provider reports, and that no secret is in it.

use crate::confidential;
use authwire::{IdentityProvider, ProviderError};
use authwire_oauth2::{BuildError, MAX_RESPONSE_BYTES, OAuth2Provider};
use authwire_testkit::{Client, Fault, IdentityServer};
use std::time::Duration;

async fn fetch_with_fault(fault: Fault) -> ProviderError {
    let idp = IdentityServer::start().await;
    idp.inject(fault);
    let provider = confidential(&idp)
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let e = provider.fetch_token(None).await.unwrap_err();
    let text = format!("{e} {e:?} {}", authwire::error_chain(&e));
    assert!(!text.contains(Client::CONFIDENTIAL_SECRET), "{text}");
    e
}

#[tokio::test]
async fn server_errors_are_transient_with_their_status() {
    for status in [500, 502, 503, 504] {
        let e =
            fetch_with_fault(Fault::status(status, "<html>upstream down</html>").content_type("text/html"))
                .await;
        assert!(e.is_transient(), "{status}: {e}");
        assert_eq!(e.status(), Some(status));
    }
}

#[tokio::test]
async fn too_many_requests_honours_retry_after_in_seconds_and_as_a_date() {
    let e = fetch_with_fault(Fault::oauth_error(429, "slow_down", "rate limited").retry_after("17")).await;
    assert!(e.is_transient());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(17)));

    let date =
        httpdate::fmt_http_date(authwire::Clock::now(&authwire::SystemClock) + Duration::from_secs(120));
    let e = fetch_with_fault(Fault::status(429, "").retry_after(date)).await;
    let after = e.retry_after().unwrap();
    assert!(
        after > Duration::from_secs(110) && after <= Duration::from_secs(120),
        "{after:?}"
    );
}

#[tokio::test]
async fn html_page_with_200_is_an_invalid_response_with_an_excerpt() {
    let e = fetch_with_fault(
        Fault::status(200, "<html><title>Captive portal</title></html>").content_type("text/html"),
    )
    .await;
    assert!(
        matches!(
            e,
            ProviderError::InvalidResponse {
                status: Some(200),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("Captive portal"), "{e}");
}

#[tokio::test]
async fn json_without_access_token_names_the_keys_not_the_values() {
    let e = fetch_with_fault(Fault::status(
        200,
        r#"{"token":"SECRET-IN-BODY","expires_in":60}"#,
    ))
    .await;
    assert!(
        e.to_string()
            .contains("without access_token (keys: expires_in, token)"),
        "{e}"
    );
    assert!(!format!("{e:?}").contains("SECRET-IN-BODY"));
}

#[tokio::test]
async fn oauth_errors_keep_code_description_and_status() {
    let e = fetch_with_fault(Fault::oauth_error(
        400,
        "invalid_scope",
        "scope admin is not allowed",
    ))
    .await;
    assert_eq!(e.error_code(), Some("invalid_scope"));
    assert_eq!(e.status(), Some(400));
    assert!(!e.is_transient());
    assert_eq!(
        e.to_string(),
        "identity provider rejected the request: invalid_scope (HTTP 400): scope admin is not allowed"
    );
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let huge = vec![b'a'; 10 * 1024 * 1024];
    let e = fetch_with_fault(Fault::status(200, huge)).await;
    assert!(
        e.to_string()
            .contains(&format!("larger than {MAX_RESPONSE_BYTES} bytes")),
        "{e}"
    );
}

#[tokio::test]
async fn a_hanging_server_times_out_as_transient() {
    let e = fetch_with_fault(Fault::status(200, "{}").delay(Duration::from_secs(30))).await;
    assert!(e.is_transient());
    assert!(
        authwire::error_chain(&e).contains("timed out"),
        "{}",
        authwire::error_chain(&e)
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let e =
        fetch_with_fault(Fault::status(302, "").header("location", "https://elsewhere.example/token")).await;
    assert!(e.to_string().contains("redirect"), "{e}");
    assert!(!e.is_transient());
}

/// A resolver that answers nothing and asks no one: a name that does not resolve, with no
/// query leaving this machine.
struct NoSuchHost;

impl reqwest::dns::Resolve for NoSuchHost {
    fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async { Err(std::io::Error::other("no such host (test resolver)").into()) })
    }
}

#[tokio::test]
async fn a_host_name_that_does_not_resolve_is_named_as_such() {
    // Issue 31: a DNS failure read "could not connect ... is the identity provider up?".
    let provider = OAuth2Provider::builder()
        .token_url("https://idp.nonexistent.example/token")
        .client_id("c")
        .client_secret("a-client-secret")
        .http_client(reqwest::Client::builder().dns_resolver(std::sync::Arc::new(NoSuchHost)))
        .build()
        .unwrap();
    let e = provider.fetch_token(None).await.unwrap_err();
    assert!(e.is_transient());
    let chain = authwire::error_chain(&e);
    assert!(
        chain.starts_with("identity provider unavailable: could not resolve the host name of https://idp.nonexistent.example/token"),
        "{chain}"
    );
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    drop(listener);
    let provider = OAuth2Provider::builder()
        .token_url(url)
        .client_id("c")
        .client_secret("s")
        .build()
        .unwrap();
    let e = provider.fetch_token(None).await.unwrap_err();
    assert!(e.is_transient());
    assert!(
        authwire::error_chain(&e).contains("could not connect"),
        "{}",
        authwire::error_chain(&e)
    );
}

#[tokio::test]
async fn invalid_utf8_and_non_numeric_expiry_are_invalid_responses() {
    let e = fetch_with_fault(Fault::status(200, b"\xff\xfe\xfd".to_vec())).await;
    assert!(e.to_string().contains("not UTF-8"), "{e}");
    let e = fetch_with_fault(Fault::status(200, r#"{"access_token":"x","expires_in":"soon"}"#)).await;
    assert!(e.to_string().contains("expires_in is not a number"), "{e}");
}

#[test]
fn plain_http_to_a_remote_host_needs_an_explicit_opt_in() {
    let b = || OAuth2Provider::builder().client_id("c").client_secret("s");
    let e = b().token_url("http://idp.example/token").build().unwrap_err();
    assert!(matches!(e, BuildError::InsecureUrl { .. }), "{e:?}");
    assert!(
        b().token_url("http://idp.example/token")
            .allow_insecure_http(true)
            .build()
            .is_ok()
    );
    assert!(b().token_url("https://idp.example/token").build().is_ok());
    assert!(b().issuer("http://idp.example").build().is_err());
}

#[test]
fn build_errors_say_what_is_missing() {
    let e = OAuth2Provider::builder().client_id("c").build().unwrap_err();
    assert_eq!(e.to_string(), "token_url or issuer is required");
    let e = OAuth2Provider::builder()
        .token_url("https://x/t")
        .build()
        .unwrap_err();
    assert_eq!(e.to_string(), "client_id is required");
    let e = OAuth2Provider::builder()
        .token_url("https://x/t")
        .issuer("https://x")
        .client_id("c")
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::Conflict(_)));
    let e = OAuth2Provider::builder()
        .token_url("https://x/t")
        .client_id("c")
        .build()
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("client credentials grant needs client authentication"),
        "{e}"
    );
    let e = OAuth2Provider::builder()
        .token_url("not a url")
        .client_id("c")
        .build()
        .unwrap_err();
    assert!(matches!(
        e,
        BuildError::InvalidUrl {
            setting: "token_url",
            ..
        }
    ));
}

#[tokio::test]
async fn a_token_endpoint_redirect_is_refused_even_with_a_user_supplied_client() {
    // Issue 12, item 2: with `.http_client(..)`, a 307 carried the whole form (client secret
    // included) to another origin, and the token it returned was accepted.
    let idp = IdentityServer::start().await;
    let elsewhere = IdentityServer::start().await; // would issue a token for the same client
    let redirector = authwire_testkit::ResourceServer::start(&idp).await;
    let port = elsewhere
        .token_url()
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    for method in [
        authwire_oauth2::ClientAuthMethod::ClientSecretPost,
        authwire_oauth2::ClientAuthMethod::ClientSecretBasic,
    ] {
        let provider = OAuth2Provider::builder()
            .token_url(format!("{}/redirect-to/{port}/token", redirector.url()))
            .client_id(Client::CONFIDENTIAL_ID)
            .client_secret(Client::CONFIDENTIAL_SECRET)
            .auth_method(method)
            // A client builder that follows redirects by default.
            .http_client(reqwest::Client::builder())
            .build()
            .unwrap();
        let e = provider.fetch_token(None).await.unwrap_err();
        assert!(e.to_string().contains("redirect"), "{e}");
        assert!(!e.is_transient(), "a configuration error, not an outage");
        assert_eq!(elsewhere.token_requests(), 0, "nothing reached the other origin");
    }
}

#[tokio::test]
async fn secrets_echoed_back_by_the_server_never_reach_the_error() {
    // Issue 12, item 3: an error body that echoes the request put the client secret (and the
    // refresh token) into the error text, WARN logs and the CLI's stderr.
    let idp = IdentityServer::start().await;
    for method in [
        authwire_oauth2::ClientAuthMethod::ClientSecretPost,
        authwire_oauth2::ClientAuthMethod::ClientSecretBasic,
    ] {
        for fault in [
            Fault::echo_request(400),
            Fault::echo_request(500).content_type("text/html"),
            Fault::echo_request(200).content_type("text/html"),
        ] {
            idp.inject(fault);
            let provider = confidential(&idp).auth_method(method.clone()).build().unwrap();
            let current = authwire::Token::new("old").with_refresh_token("rt-ECHOED-refresh-token-1234");
            let e = provider.fetch_token(Some(&current)).await.unwrap_err();
            let text = format!("{e} {e:?} {}", authwire::error_chain(&e));
            for secret in [Client::CONFIDENTIAL_SECRET, "ECHOED-refresh", "echoed-refresh"] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            let basic = base64_of_pair();
            assert!(
                !text.contains(&basic[..12]),
                "the Basic header's base64 in {text}"
            );
            assert!(
                !text.chars().any(|c| c.is_control()),
                "control characters in {text:?}"
            );
        }
    }
}

fn base64_of_pair() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        Client::CONFIDENTIAL_ID,
        Client::CONFIDENTIAL_SECRET
    ))
}
