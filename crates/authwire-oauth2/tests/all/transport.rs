//! One transport for every request: a real forward proxy (tinyproxy), a private CA made by the
//! test, a token endpoint that requires a client certificate.

use authwire::IdentityProvider;
use authwire::secrecy::ExposeSecret;
use authwire_oauth2::transport::{CertificateError, CertificateProblem, ProxyRefused};
use authwire_oauth2::{Grant, OAuth2Provider, Transport};
use authwire_testkit::{Client, ForwardProxy, IdentityServer, TestCa};

/// The first source in `e`'s chain of type `T`.
fn find<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(found) = s.downcast_ref::<T>() {
            return Some(found);
        }
        source = s.source();
    }
    None
}

fn client(idp: &IdentityServer, transport: Transport) -> OAuth2Provider {
    OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(Client::CONFIDENTIAL_SECRET)
        .transport(transport)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_token_comes_through_an_explicit_proxy() {
    let idp = IdentityServer::start().await;
    let proxy = ForwardProxy::start().await;
    let provider = client(&idp, Transport::new().proxy(&proxy.url()).unwrap());
    let token = provider.fetch_token(None).await.unwrap();
    assert!(!token.access_token().expose_secret().is_empty());
    let seen = proxy.requests();
    assert_eq!(
        seen,
        [format!("POST {}/token HTTP/1.1", idp.issuer())],
        "{}",
        proxy.log()
    );
    assert_eq!(idp.tokens_issued(), 1);

    // no_proxy(true): direct, the proxy sees nothing more.
    let direct = client(&idp, Transport::new().proxy(&proxy.url()).unwrap().no_proxy(true));
    direct.fetch_token(None).await.unwrap();
    assert_eq!(proxy.requests().len(), 1);
}

#[tokio::test]
async fn an_authenticating_proxy_gets_its_password_and_never_shows_it() {
    let idp = IdentityServer::start().await;
    let proxy = ForwardProxy::start_with_basic_auth("alice", "proxy-pw-Zq81").await;
    let without = client(&idp, Transport::new().proxy(&proxy.url()).unwrap());
    let e = without.fetch_token(None).await.unwrap_err();
    let refused = find::<ProxyRefused>(&e).unwrap_or_else(|| panic!("not a proxy refusal: {e:?}"));
    assert_eq!(refused.status(), Some(407));
    let text = authwire::error_chain(&e);
    assert!(text.contains(&proxy.url()) && text.contains("407"), "{text}");
    assert_eq!(idp.token_requests(), 0, "nothing reached the identity provider");

    let wrong = proxy
        .url_with_credentials()
        .replace("proxy-pw-Zq81", "wrong-pw-Zq82");
    let e = client(&idp, Transport::new().proxy(&wrong).unwrap())
        .fetch_token(None)
        .await
        .unwrap_err();
    let shown = format!("{e} {e:?} {}", authwire::error_chain(&e));
    assert!(
        !shown.contains("wrong-pw-Zq82") && !shown.contains("alice:"),
        "{shown}"
    );

    let with = client(
        &idp,
        Transport::new().proxy(&proxy.url_with_credentials()).unwrap(),
    );
    assert!(!format!("{with:?}").contains("proxy-pw-Zq81"));
    with.fetch_token(None).await.unwrap();
    assert_eq!(idp.tokens_issued(), 1);
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_when_given() {
    let ca = TestCa::new();
    let idp = IdentityServer::builder().tls(&ca, false).start().await;
    assert!(idp.issuer().starts_with("https://127.0.0.1:"));

    let e = client(&idp, Transport::new())
        .fetch_token(None)
        .await
        .unwrap_err();
    let problem = find::<CertificateError>(&e).unwrap_or_else(|| panic!("not a certificate error: {e:?}"));
    assert_eq!(problem.problem(), CertificateProblem::UnknownIssuer);
    assert!(
        authwire::error_chain(&e).contains("root_certificates_pem"),
        "the error names the fix: {}",
        authwire::error_chain(&e)
    );

    let trusted = Transport::new().root_certificates_pem(ca.ca_pem()).unwrap();
    client(&idp, trusted.clone()).fetch_token(None).await.unwrap();
    client(&idp, trusted.only_these_roots(true))
        .fetch_token(None)
        .await
        .unwrap();

    // Another CA's certificate does not vouch for this server.
    let other = TestCa::new();
    let e = client(
        &idp,
        Transport::new()
            .root_certificates_pem(other.ca_pem())
            .unwrap()
            .only_these_roots(true),
    )
    .fetch_token(None)
    .await
    .unwrap_err();
    assert_eq!(
        find::<CertificateError>(&e).map(CertificateError::problem),
        Some(CertificateProblem::UnknownIssuer),
        "{e:?}"
    );
    assert_eq!(idp.tokens_issued(), 2);
}

#[tokio::test]
async fn https_goes_through_the_proxy_in_a_tunnel() {
    let ca = TestCa::new();
    let idp = IdentityServer::builder().tls(&ca, false).start().await;
    let proxy = ForwardProxy::start_with_basic_auth("bob", "tunnel-pw-Kk3").await;
    let transport = Transport::new()
        .proxy(&proxy.url_with_credentials())
        .unwrap()
        .root_certificates_pem(ca.ca_pem())
        .unwrap();
    client(&idp, transport).fetch_token(None).await.unwrap();
    let authority = idp.issuer().trim_start_matches("https://").to_owned();
    assert_eq!(
        proxy.requests(),
        [format!("CONNECT {authority} HTTP/1.1")],
        "{}",
        proxy.log()
    );

    // Without the password the tunnel is refused: 407, named, without a secret.
    let e = client(
        &idp,
        Transport::new()
            .proxy(&proxy.url())
            .unwrap()
            .root_certificates_pem(ca.ca_pem())
            .unwrap(),
    )
    .fetch_token(None)
    .await
    .unwrap_err();
    let refused = find::<ProxyRefused>(&e).unwrap_or_else(|| panic!("not a proxy refusal: {e:?}"));
    assert_eq!(refused.status(), Some(407));
    assert!(!authwire::error_chain(&e).contains("tunnel-pw-Kk3"));
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_a_token_endpoint_that_requires_one() {
    let ca = TestCa::new();
    let idp = IdentityServer::builder().tls(&ca, true).start().await;
    let trusted = Transport::new().root_certificates_pem(ca.ca_pem()).unwrap();

    let e = client(&idp, trusted.clone()).fetch_token(None).await.unwrap_err();
    assert_eq!(
        find::<CertificateError>(&e).map(CertificateError::problem),
        Some(CertificateProblem::ClientCertificateRefused),
        "{e:?}"
    );
    assert_eq!(idp.token_requests(), 0);

    let (cert, key) = ca.client_identity("workload-1");
    let with_identity = trusted.identity_pem(&cert, &key).unwrap();
    assert!(with_identity.client_certificate_der().is_some());
    let shown = format!("{with_identity:?}");
    assert!(!shown.contains("PRIVATE"), "{shown}");
    client(&idp, with_identity).fetch_token(None).await.unwrap();
    assert_eq!(idp.tokens_issued(), 1);

    // A certificate from another CA is refused by the server.
    let stranger = TestCa::new();
    let (cert, key) = stranger.client_identity("intruder");
    let e = client(
        &idp,
        Transport::new()
            .root_certificates_pem(ca.ca_pem())
            .unwrap()
            .identity_pem(&cert, &key)
            .unwrap(),
    )
    .fetch_token(None)
    .await
    .unwrap_err();
    assert!(find::<CertificateError>(&e).is_some(), "{e:?}");
    assert_eq!(idp.tokens_issued(), 1);
}

#[tokio::test]
async fn discovery_and_the_device_flow_use_the_transport_too() {
    let idp = IdentityServer::start().await;
    let proxy = ForwardProxy::start().await;
    let provider = OAuth2Provider::builder()
        .issuer(idp.issuer())
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(Client::CONFIDENTIAL_SECRET)
        .grant(Grant::ClientCredentials)
        .transport(Transport::new().proxy(&proxy.url()).unwrap())
        .build()
        .unwrap();
    provider.fetch_token(None).await.unwrap();
    let seen = proxy.requests();
    assert!(
        seen.iter().any(|r| r.contains("/.well-known/")) && seen.iter().any(|r| r.contains("/token")),
        "{seen:?}"
    );
}

#[test]
fn an_encrypted_client_key_is_named_as_such() {
    let ca = TestCa::new();
    let (cert, _) = ca.client_identity("x");
    let encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let e = Transport::new().identity_pem(&cert, encrypted).unwrap_err();
    assert!(e.to_string().contains("encrypted"), "{e}");
    let e = Transport::new()
        .root_certificates_pem(b"not a certificate")
        .unwrap_err();
    assert!(e.to_string().contains("CERTIFICATE"), "{e}");
}

/// Run `openssl` in `dir` (keys in the formats people have: PKCS#1, SEC1).
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl tool (Debian's openssl)");
    assert!(status.success(), "openssl {args:?}");
}

#[tokio::test]
async fn keys_in_pkcs1_and_sec1_are_read_and_an_encrypted_one_is_named() {
    use authwire_oauth2::{ClientAuthMethod, PrivateKey};
    let dir = authwire_testkit::TempDir::new("key-formats");
    let pkcs8 = dir.write("client.pem", authwire_testkit::CLIENT_PRIVATE_KEY_PEM);
    // The testkit client's own key, as PKCS#1: the identity provider checks its signature.
    openssl(
        dir.path(),
        &[
            "rsa",
            "-in",
            pkcs8.to_str().unwrap(),
            "-traditional",
            "-out",
            "pkcs1.pem",
        ],
    );
    let pkcs1 = std::fs::read(dir.path().join("pkcs1.pem")).unwrap();
    assert!(String::from_utf8_lossy(&pkcs1).contains("BEGIN RSA PRIVATE KEY"));
    let idp = IdentityServer::start().await;
    let provider = OAuth2Provider::builder()
        .token_url(idp.token_url())
        .client_id(Client::PRIVATE_KEY_JWT_ID)
        .auth_method(ClientAuthMethod::PrivateKeyJwt {
            key: PrivateKey::rsa_pem(&pkcs1).unwrap(),
        })
        .build()
        .unwrap();
    provider.fetch_token(None).await.unwrap();
    assert_eq!(idp.auth_methods(), ["private_key_jwt"]);

    // A SEC1 P-256 key is read; a P-384 one is refused as not P-256.
    openssl(
        dir.path(),
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sec1.pem",
        ],
    );
    let sec1 = std::fs::read(dir.path().join("sec1.pem")).unwrap();
    assert!(String::from_utf8_lossy(&sec1).contains("BEGIN EC PRIVATE KEY"));
    PrivateKey::ec_pem(&sec1).unwrap();
    openssl(
        dir.path(),
        &[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            "p384.pem",
        ],
    );
    let e = PrivateKey::ec_pem(&std::fs::read(dir.path().join("p384.pem")).unwrap()).unwrap_err();
    assert!(e.to_string().contains("P-256"), "{e}");

    // An encrypted key says so, in either format.
    openssl(
        dir.path(),
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "sec1.pem",
            "-out",
            "enc.pem",
            "-passout",
            "pass:pw",
            "-v2",
            "aes-128-cbc",
        ],
    );
    let e = PrivateKey::ec_pem(&std::fs::read(dir.path().join("enc.pem")).unwrap()).unwrap_err();
    assert!(e.to_string().contains("encrypted"), "{e}");
    openssl(
        dir.path(),
        &[
            "rsa",
            "-in",
            "pkcs1.pem",
            "-traditional",
            "-aes128",
            "-passout",
            "pass:pw",
            "-out",
            "enc1.pem",
        ],
    );
    let e = PrivateKey::rsa_pem(&std::fs::read(dir.path().join("enc1.pem")).unwrap()).unwrap_err();
    assert!(e.to_string().contains("encrypted"), "{e}");
}

#[test]
fn the_credential_fingerprint_is_hmac_sha256_of_a_fixed_label() {
    // HMAC-SHA256(key = "secret", "authwire credential fingerprint v1"), first 8 bytes, as
    // Python's hmac module computes it: the value cache keys have always used.
    assert_eq!(
        authwire_oauth2::transport::credential_fingerprint(b"secret"),
        "7b987862f6ff5c25"
    );
    assert_eq!(
        authwire_oauth2::transport::credential_fingerprint(b"").len(),
        16,
        "no empty fallback"
    );
}
