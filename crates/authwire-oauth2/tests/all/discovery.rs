//! Discovery: OpenID Connect first, RFC 8414 as fallback, cached, issuer checked.

use authwire::IdentityProvider;
use authwire_oauth2::OAuth2Provider;
use authwire_testkit::{Client, IdentityServer};

fn via_issuer(issuer: String) -> OAuth2Provider {
    OAuth2Provider::builder()
        .issuer(issuer)
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(Client::CONFIDENTIAL_SECRET)
        .build()
        .unwrap()
}

#[tokio::test]
async fn issuer_discovery_finds_the_token_endpoint_once() {
    let idp = IdentityServer::start().await;
    let provider = via_issuer(idp.issuer());
    assert_eq!(provider.token_endpoint().await.unwrap().as_str(), idp.token_url());
    provider.fetch_token(None).await.unwrap();
    provider.fetch_token(None).await.unwrap();
    assert_eq!(idp.discovery_requests(), 1, "discovery is cached");
    assert_eq!(idp.tokens_issued(), 2);
}

#[tokio::test]
async fn falls_back_to_rfc_8414_metadata() {
    let idp = IdentityServer::start().await;
    idp.update(|s| s.openid_discovery = false);
    let provider = via_issuer(idp.issuer());
    provider.fetch_token(None).await.unwrap();
    assert_eq!(idp.discovery_requests(), 1);
}

#[tokio::test]
async fn an_issuer_mismatch_is_refused() {
    let idp = IdentityServer::start().await;
    // The same server under another name: its metadata names 127.0.0.1, not localhost.
    let other_name = idp.issuer().replace("127.0.0.1", "localhost");
    let e = via_issuer(other_name).fetch_token(None).await.unwrap_err();
    assert!(e.to_string().contains("RFC 8414 section 3.3"), "{e}");
}

#[tokio::test]
async fn discovery_failures_are_not_cached() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let provider = via_issuer(format!("http://{addr}"));
    let e = provider.fetch_token(None).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
}
