//! Issue 28: mutual TLS (RFC 8705): the client certificate authenticates the client at the
//! server's `mtls_endpoint_aliases` (PKI and self-signed), tokens come back bound to it
//! (`cnf.x5t#S256`), and a bound token works only where the same certificate is presented.
//! Real TLS on loopback with a throwaway CA.

use authwire::IdentityProvider;
use authwire::secrecy::ExposeSecret;
use authwire_oauth2::{BuildError, ClientAuthMethod, Grant, OAuth2Provider, Transport};
use authwire_testkit::{Client, IdentityServer, ResourceServer, TestCa};

fn provider(
    idp: &IdentityServer,
    ca: &TestCa,
    client_id: &str,
    method: ClientAuthMethod,
    identity: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<OAuth2Provider, BuildError> {
    let mut transport = Transport::new().root_certificates_pem(ca.ca_pem()).unwrap();
    if let Some((cert, key)) = identity {
        transport = transport.identity_pem(&cert, &key).unwrap();
    }
    OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(client_id)
        .auth_method(method)
        .grant(Grant::ClientCredentials)
        .transport(transport)
        .build()
}

fn x5t(cert_pem: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    // The first PEM block's base64 body.
    let text = String::from_utf8(cert_pem.to_vec()).unwrap();
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der))
}

#[tokio::test]
async fn tls_client_auth_authenticates_at_the_mtls_alias_and_binds_the_token_to_the_certificate() {
    let ca = TestCa::new();
    let idp = IdentityServer::builder()
        .mtls(&ca)
        .client(Client::tls_client_auth("mtls-1", "CN=laptop"))
        .start()
        .await;
    let (cert, key) = ca.client_identity("laptop");
    let p = provider(
        &idp,
        &ca,
        "mtls-1",
        ClientAuthMethod::TlsClientAuth,
        Some((cert.clone(), key.clone())),
    )
    .unwrap();
    let token = p.fetch_token(None).await.unwrap();
    assert_eq!(idp.auth_methods(), ["tls_client_auth"]);
    assert!(!idp.last_form().contains_key("client_secret"));
    assert_eq!(
        token.extra("x5t#S256").and_then(|v| v.as_str()),
        Some(x5t(&cert).as_str()),
        "known as bound to our certificate"
    );

    // The API takes the bound token only over a connection that presents the certificate.
    let api = ResourceServer::start_mtls(&idp, &ca).await;
    let with_cert = Transport::new()
        .root_certificates_pem(ca.ca_pem())
        .unwrap()
        .identity_pem(&cert, &key)
        .unwrap()
        .reqwest_client_builder("test")
        .unwrap()
        .build()
        .unwrap();
    let without = Transport::new()
        .root_certificates_pem(ca.ca_pem())
        .unwrap()
        .reqwest_client_builder("test")
        .unwrap()
        .build()
        .unwrap();
    let bearer = format!("Bearer {}", token.access_token().expose_secret());
    let ok = with_cert
        .get(api.url())
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let stolen = without
        .get(api.url())
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        stolen.status(),
        401,
        "a bound token without its certificate is refused"
    );
}

#[tokio::test]
async fn the_wrong_certificate_or_none_is_refused() {
    let ca = TestCa::new();
    let idp = IdentityServer::builder()
        .mtls(&ca)
        .client(Client::tls_client_auth("mtls-1", "CN=laptop"))
        .start()
        .await;
    // Issued by the CA for another subject; the right subject, self-signed (not the CA's).
    for (what, identity) in [
        ("another subject", ca.client_identity("intruder")),
        ("self-signed", ca.self_signed_identity("laptop")),
    ] {
        let p = provider(
            &idp,
            &ca,
            "mtls-1",
            ClientAuthMethod::TlsClientAuth,
            Some(identity),
        )
        .unwrap();
        let err = p.fetch_token(None).await.unwrap_err();
        assert_eq!(err.error_code(), Some("invalid_client"), "{what}: {err}");
    }
    // No certificate at all: refused when building, before any request.
    let none = provider(&idp, &ca, "mtls-1", ClientAuthMethod::TlsClientAuth, None).unwrap_err();
    assert!(none.to_string().contains("client certificate"), "{none}");
    assert_eq!(idp.token_requests(), 2);
}

#[tokio::test]
async fn self_signed_tls_client_auth_takes_exactly_the_registered_certificate() {
    let ca = TestCa::new();
    let (cert, key) = ca.self_signed_identity("robot");
    let idp = IdentityServer::builder()
        .mtls(&ca)
        .client(Client::self_signed_tls_client_auth("robot-1", &cert))
        .start()
        .await;
    let p = provider(
        &idp,
        &ca,
        "robot-1",
        ClientAuthMethod::SelfSignedTlsClientAuth,
        Some((cert.clone(), key)),
    )
    .unwrap();
    let token = p.fetch_token(None).await.unwrap();
    assert_eq!(idp.auth_methods(), ["self_signed_tls_client_auth"]);
    assert_eq!(
        token.extra("x5t#S256").and_then(|v| v.as_str()),
        Some(x5t(&cert).as_str())
    );
    let another = provider(
        &idp,
        &ca,
        "robot-1",
        ClientAuthMethod::SelfSignedTlsClientAuth,
        Some(ca.self_signed_identity("robot")),
    )
    .unwrap();
    assert_eq!(
        another.fetch_token(None).await.unwrap_err().error_code(),
        Some("invalid_client")
    );
}

#[tokio::test]
async fn a_confidential_client_with_a_certificate_uses_the_aliases_and_gets_bound_tokens() {
    // RFC 8705 section 3 without mutual TLS client authentication: the secret authenticates,
    // the certificate binds.
    let ca = TestCa::new();
    let idp = IdentityServer::builder().mtls(&ca).start().await;
    let (cert, key) = ca.client_identity("service");
    let transport = Transport::new()
        .root_certificates_pem(ca.ca_pem())
        .unwrap()
        .identity_pem(&cert, &key)
        .unwrap();
    let p = OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(Client::CONFIDENTIAL_SECRET)
        .transport(transport)
        .build()
        .unwrap();
    let token = p.fetch_token(None).await.unwrap();
    assert_eq!(idp.auth_methods(), ["client_secret_basic"]);
    assert_eq!(
        token.extra("x5t#S256").and_then(|v| v.as_str()),
        Some(x5t(&cert).as_str())
    );

    // Without a certificate, the plain endpoint, and an unbound token.
    let plain = OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(Client::CONFIDENTIAL_SECRET)
        .transport(Transport::new().root_certificates_pem(ca.ca_pem()).unwrap())
        .build()
        .unwrap();
    assert!(plain.fetch_token(None).await.unwrap().extra("x5t#S256").is_none());
    assert_ne!(
        p.cache_key(),
        plain.cache_key(),
        "tokens bound to a certificate are kept apart"
    );
}
