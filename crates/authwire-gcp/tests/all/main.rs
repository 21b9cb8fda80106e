//! Every Google Cloud source end to end against the testkit's emulator of Google's endpoints on
//! 127.0.0.1, through the `Authorizer`. Nothing here talks to Google, the metadata IP or any
//! address that is not loopback: every endpoint is overridden before a provider is built.

use authwire::secrecy::ExposeSecret;
use authwire::{Authorizer, Clock, IdentityProvider, ManualClock, SystemClock};
use authwire_gcp::{
    AuthorizedUser, CLOUD_PLATFORM_SCOPE, ExternalAccount, GcpCredentials, GcpError, MetadataServer,
    ServiceAccountKey, default_credentials_in,
};
use authwire_testkit::{GCP_KEY_ID, GCP_SERVICE_ACCOUNT, GcpEmulator, TempDir, wait_until};
use std::collections::HashMap;
use std::time::Duration;

fn jwt_claims(jwt: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_service_account_key_gets_tokens_cached_and_refreshed_ahead_of_expiry() {
    let clock = ManualClock::new(SystemClock.now());
    let gcp = GcpEmulator::start_with_clock(clock.clone()).await;
    let dir = TempDir::new("gcp-sa");
    let key = dir.write("sa.json", &gcp.service_account_key_json());
    let provider = ServiceAccountKey::from_file(&key)
        .unwrap()
        .scope(CLOUD_PLATFORM_SCOPE)
        .clock(clock.clone());
    assert!(
        !format!("{provider:?}").contains("PRIVATE KEY"),
        "the key is redacted"
    );
    let authorizer = Authorizer::builder(provider).clock(clock.clone()).build();
    let first = authorizer.token().await.unwrap();
    assert_eq!(
        gcp.check_token(first.access_token().expose_secret()).as_deref(),
        Some(GCP_SERVICE_ACCOUNT)
    );
    assert_eq!(gcp.last_scopes().as_deref(), Some(CLOUD_PLATFORM_SCOPE));
    authorizer.token().await.unwrap();
    assert_eq!(gcp.token_requests(), 1, "served from the cache");

    // Inside the refresh window (the last five minutes before the 30 s expiry margin), before
    // expiry: the cached token is still served and a new one is fetched in the background.
    clock.advance(Duration::from_secs(3480));
    let during = authorizer.token().await.unwrap();
    assert!(during.same_access_token(&first));
    // The background refresh starts after a jittered pause on the authorizer's clock.
    let first_header = authorizer.cached_authorization_header().unwrap();
    wait_until(|| {
        clock.advance(Duration::from_millis(100));
        authorizer
            .cached_authorization_header()
            .is_some_and(|h| h != first_header)
    })
    .await;
    assert_eq!(authorizer.metrics().fetches, 2);
    assert_eq!(authorizer.metrics().background_refreshes, 1);
    let second = authorizer.token().await.unwrap();
    assert!(!second.same_access_token(&first));
    assert!(gcp.check_token(second.access_token().expose_secret()).is_some());
}

#[tokio::test]
async fn self_signed_jwts_need_no_token_endpoint() {
    let gcp = GcpEmulator::start().await;
    let dir = TempDir::new("gcp-self-signed");
    let key = dir.write("sa.json", &gcp.service_account_key_json());
    let provider = ServiceAccountKey::from_file(&key)
        .unwrap()
        .scope(CLOUD_PLATFORM_SCOPE)
        .self_signed_jwt();
    let token = provider.fetch_token(None).await.unwrap();
    let claims = jwt_claims(token.access_token().expose_secret());
    assert_eq!(claims["iss"], GCP_SERVICE_ACCOUNT);
    assert_eq!(claims["sub"], GCP_SERVICE_ACCOUNT);
    assert_eq!(claims["scope"], CLOUD_PLATFORM_SCOPE);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    let header = jsonwebtoken::decode_header(token.access_token().expose_secret()).unwrap();
    assert_eq!(header.kid.as_deref(), Some(GCP_KEY_ID));
    assert_eq!(gcp.token_requests(), 0);
}

#[tokio::test]
async fn bad_key_files_say_what_is_wrong_without_showing_the_key() {
    let dir = TempDir::new("gcp-bad");
    let not_json = dir.write("a.json", "-----BEGIN PRIVATE KEY-----\nMIIE...");
    let e = ServiceAccountKey::from_file(&not_json).unwrap_err();
    assert!(matches!(e, GcpError::Format { .. }));
    assert!(!e.to_string().contains("MIIE"));
    let wrong_type = dir.write("b.json", r#"{"type":"authorized_user"}"#);
    assert!(
        ServiceAccountKey::from_file(&wrong_type)
            .unwrap_err()
            .to_string()
            .contains("\"service_account\"")
    );
    let plain_http = dir.write(
        "c.json",
        &serde_json::json!({"type":"service_account","client_email":"x@y","private_key":authwire_testkit::CLIENT_PRIVATE_KEY_PEM,"token_uri":"http://oauth2.example/token"}).to_string(),
    );
    assert!(matches!(
        ServiceAccountKey::from_file(&plain_http),
        Err(GcpError::Url(_))
    ));
    let missing = ServiceAccountKey::from_file(dir.path().join("nope.json")).unwrap_err();
    assert!(matches!(missing, GcpError::Read { .. }));
}

#[tokio::test]
async fn an_authorized_user_refreshes_with_its_refresh_token_and_keeps_it() {
    let gcp = GcpEmulator::start().await;
    let dir = TempDir::new("gcp-user");
    let file = dir.write("adc.json", &gcp.authorized_user_json());
    let provider = AuthorizedUser::from_file(&file)
        .unwrap()
        .token_url(gcp.token_url())
        .unwrap();
    assert!(!format!("{provider:?}").contains(authwire_testkit::GCP_USER_REFRESH_TOKEN));
    let token = provider.fetch_token(None).await.unwrap();
    assert_eq!(
        gcp.check_token(token.access_token().expose_secret()).as_deref(),
        Some("user@example.com")
    );
    assert!(
        token.refresh_token().is_some(),
        "the refresh token is never dropped"
    );

    let revoked = dir.write(
        "revoked.json",
        &gcp.authorized_user_json()
            .replace(authwire_testkit::GCP_USER_REFRESH_TOKEN, "1//revoked"),
    );
    let e = AuthorizedUser::from_file(&revoked)
        .unwrap()
        .token_url(gcp.token_url())
        .unwrap()
        .fetch_token(None)
        .await
        .unwrap_err();
    assert_eq!(e.error_code(), Some("invalid_grant"));
    assert!(!e.is_transient());
    assert!(!authwire::error_chain(&e).contains("1//revoked"));
}

#[tokio::test]
async fn workload_identity_federation_reads_the_rotated_subject_token_each_time() {
    let gcp = GcpEmulator::start().await;
    let dir = TempDir::new("gcp-wif");
    let subject = dir.write("token", "eyJ.subject-1.sig\n");
    let config = dir.write(
        "wif.json",
        &gcp.external_account_json(subject.to_str().unwrap(), None),
    );
    let provider = ExternalAccount::from_file_allowing_any_endpoint(&config).unwrap();
    let authorizer = Authorizer::new(provider.clone());
    let first = authorizer.token().await.unwrap();
    assert_eq!(
        gcp.check_token(first.access_token().expose_secret()).as_deref(),
        Some("federated")
    );
    assert_eq!(gcp.last_scopes().as_deref(), Some(CLOUD_PLATFORM_SCOPE));
    // The emulator accepts a subject token once: an un-rotated file fails, a rotated one works.
    let reused = provider.fetch_token(None).await.unwrap_err();
    assert_eq!(reused.error_code(), Some("invalid_grant"));
    std::fs::write(&subject, "eyJ.subject-2.sig").unwrap();
    assert!(authorizer.invalidate_token(&first));
    let second = authorizer.token().await.unwrap();
    assert!(!second.same_access_token(&first));
    assert_eq!(gcp.subject_tokens(), ["eyJ.subject-1.sig", "eyJ.subject-2.sig"]);
}

#[tokio::test]
async fn workload_identity_federation_from_a_url_source_with_headers_and_json() {
    let gcp = GcpEmulator::start().await;
    let dir = TempDir::new("gcp-wif-url");
    let config = dir.write("wif.json", &gcp.external_account_url_json());
    let provider = ExternalAccount::from_file_allowing_any_endpoint(&config).unwrap();
    // Nothing served yet: the source's error comes through.
    assert!(provider.fetch_token(None).await.is_err());
    gcp.set_url_subject_token("eyJ.from-imds.sig");
    let token = provider.fetch_token(None).await.unwrap();
    assert!(gcp.check_token(token.access_token().expose_secret()).is_some());
    assert_eq!(
        gcp.subject_tokens(),
        ["eyJ.from-imds.sig"],
        "the JSON field, with the header sent"
    );
}

#[tokio::test]
async fn workload_identity_federation_with_service_account_impersonation() {
    let gcp = GcpEmulator::start().await;
    let dir = TempDir::new("gcp-wif-sa");
    let subject = dir.write("token", "eyJ.subject-imp.sig");
    let target = "deployer@authwire-test.iam.gserviceaccount.com";
    let config = dir.write(
        "wif.json",
        &gcp.external_account_json(subject.to_str().unwrap(), Some(target)),
    );
    let provider = ExternalAccount::from_file_allowing_any_endpoint(&config)
        .unwrap()
        .scope("https://www.googleapis.com/auth/devstorage.read_only");
    let token = provider.fetch_token(None).await.unwrap();
    assert_eq!(
        gcp.check_token(token.access_token().expose_secret()).as_deref(),
        Some(target)
    );
    assert_eq!(gcp.impersonations(), 1);
    assert_eq!(
        gcp.last_scopes().as_deref(),
        Some("https://www.googleapis.com/auth/devstorage.read_only")
    );
    let left = token
        .expires_at()
        .unwrap()
        .duration_since(SystemClock.now())
        .unwrap();
    assert!(left > Duration::from_secs(3500), "expireTime was read: {left:?}");
}

#[tokio::test]
async fn the_metadata_server_sends_its_header_and_maps_its_errors() {
    let gcp = GcpEmulator::start().await;
    let provider = MetadataServer::new()
        .endpoint(gcp.url())
        .scope(CLOUD_PLATFORM_SCOPE)
        .scope("openid");
    let token = provider.fetch_token(None).await.unwrap();
    assert!(gcp.check_token(token.access_token().expose_secret()).is_some());
    assert_eq!(
        gcp.last_scopes().as_deref(),
        Some("https://www.googleapis.com/auth/cloud-platform,openid")
    );
    // The emulator, like the server, refuses requests without `Metadata-Flavor: Google`.
    let bare = reqwest::get(format!(
        "{}/computeMetadata/v1/instance/service-accounts/default/token",
        gcp.url()
    ))
    .await
    .unwrap();
    assert_eq!(bare.status().as_u16(), 403);

    let unknown = MetadataServer::new()
        .endpoint(gcp.url())
        .account("nobody@example.iam.gserviceaccount.com")
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(!unknown.is_transient());
    assert!(authwire::error_chain(&unknown).contains("no service account"));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let away = MetadataServer::new()
        .endpoint(format!("http://127.0.0.1:{port}"))
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(away.is_transient());
    assert!(
        authwire::error_chain(&away).contains("not on Google Cloud? set GOOGLE_APPLICATION_CREDENTIALS"),
        "{}",
        authwire::error_chain(&away)
    );
}

#[tokio::test]
async fn gce_metadata_host_points_the_metadata_server_elsewhere() {
    let gcp = GcpEmulator::start().await;
    let env: HashMap<&str, String> = [("GCE_METADATA_HOST", gcp.host())].into();
    let credentials = default_credentials_in(|n| env.get(n).cloned()).await.unwrap();
    assert_eq!(credentials.kind(), "metadata_server");
    let token = credentials.fetch_token(None).await.unwrap();
    assert!(gcp.check_token(token.access_token().expose_secret()).is_some());
}

#[tokio::test]
async fn id_tokens_for_an_audience_expire_with_their_exp() {
    let gcp = GcpEmulator::start().await;
    let provider = MetadataServer::new()
        .endpoint(gcp.url())
        .id_token("https://hello-abc123-uc.a.run.app");
    let token = provider.fetch_token(None).await.unwrap();
    let claims = jwt_claims(token.access_token().expose_secret());
    assert_eq!(claims["aud"], "https://hello-abc123-uc.a.run.app");
    assert_eq!(
        token
            .expires_at()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        claims["exp"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn application_default_credentials_look_where_googles_libraries_look() {
    let gcp = GcpEmulator::start().await;
    let dir = TempDir::new("gcp-adc");
    let key = dir.write("sa.json", &gcp.service_account_key_json());
    // Every environment below names a closed loopback port for the metadata probe, or turns it
    // off: no test may reach a cloud metadata address.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let find = |pairs: Vec<(&'static str, String)>| {
        let env: HashMap<&str, String> = pairs.into_iter().collect();
        async move { default_credentials_in(|n| env.get(n).cloned()).await }
    };

    // 1. GOOGLE_APPLICATION_CREDENTIALS first.
    let found = find(vec![
        ("GOOGLE_APPLICATION_CREDENTIALS", key.display().to_string()),
        ("GCE_METADATA_IP", closed.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(found.kind(), "service_account");
    let found = found.scope(CLOUD_PLATFORM_SCOPE);
    assert!(found.fetch_token(None).await.is_ok());
    // A variable that names a missing file is an error, not a reason to look elsewhere.
    let missing = find(vec![(
        "GOOGLE_APPLICATION_CREDENTIALS",
        dir.path().join("nope.json").display().to_string(),
    )])
    .await
    .unwrap_err();
    assert!(matches!(missing, GcpError::Read { .. }));

    // 2. gcloud's well-known file.
    let gcloud = dir.path().join("gcloud");
    std::fs::create_dir_all(&gcloud).unwrap();
    std::fs::write(
        gcloud.join("application_default_credentials.json"),
        gcp.authorized_user_json(),
    )
    .unwrap();
    let found = find(vec![
        ("CLOUDSDK_CONFIG", gcloud.display().to_string()),
        ("GCE_METADATA_IP", closed.clone()),
    ])
    .await
    .unwrap();
    assert!(matches!(found, GcpCredentials::AuthorizedUser(_)));

    // 3. The metadata server, when it answers the probe.
    let found = find(vec![("GCE_METADATA_HOST", gcp.host())]).await.unwrap();
    assert_eq!(found.kind(), "metadata_server");

    // Nothing anywhere: a clear error, after a bounded probe.
    let nothing = find(vec![("GCE_METADATA_IP", closed.clone())]).await.unwrap_err();
    assert_eq!(nothing, GcpError::NotFound);
    assert!(nothing.to_string().contains("GOOGLE_APPLICATION_CREDENTIALS"));
    let skipped = find(vec![("NO_GCE_CHECK", "true".into())]).await.unwrap_err();
    assert_eq!(skipped, GcpError::NotFound);
    assert_eq!(gcp.metadata_requests(), 1, "only the one probe that found it");
}

/// An `external_account` file as a hostile source would write it: `token_url` and
/// `impersonation` wherever it likes, the subject token from a local file or a URL.
fn hostile_external_account(
    token_url: &str,
    impersonation: Option<&str>,
    source: serde_json::Value,
) -> Vec<u8> {
    let mut doc = serde_json::json!({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": token_url,
        "credential_source": source,
    });
    if let Some(url) = impersonation {
        doc["service_account_impersonation_url"] = serde_json::json!(url);
    }
    doc.to_string().into_bytes()
}

#[test]
fn a_credentials_file_cannot_send_the_subject_token_off_google() {
    // Issue 24, item 1: token_url and service_account_impersonation_url were only checked for
    // https, so a file from an untrusted source sent /etc/shadow (or a metadata token) anywhere.
    let file = serde_json::json!({"file": "/etc/hostname"});
    let sts = "https://sts.googleapis.com/v1/token";
    let refused = [
        hostile_external_account("https://attacker.example/token", None, file.clone()),
        hostile_external_account(
            "https://sts.googleapis.com.attacker.example/token",
            None,
            file.clone(),
        ),
        hostile_external_account("https://sts.googleapis.com:8443/v1/token", None, file.clone()),
        hostile_external_account("https://user@sts.googleapis.com/v1/token", None, file.clone()),
        hostile_external_account(
            sts,
            Some("https://attacker.example/v1/projects/-/serviceAccounts/x:generateAccessToken"),
            file.clone(),
        ),
    ];
    for bytes in &refused {
        let e = ExternalAccount::from_json(bytes, "hostile.json").unwrap_err();
        assert!(matches!(e, GcpError::Url(_)), "{e}");
        assert!(e.to_string().contains("not a Google endpoint"), "{e}");
        assert!(e.to_string().contains("from_file_allowing_any_endpoint"), "{e}");
    }
    // Google's endpoints, regional and mTLS names included, and another universe's own.
    for (token_url, impersonation) in [
        (
            sts,
            Some("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/x:generateAccessToken"),
        ),
        ("https://sts.mtls.googleapis.com/v1/token", None),
        ("https://us-east7.sts.googleapis.com/v1/token", None),
    ] {
        ExternalAccount::from_json(
            &hostile_external_account(token_url, impersonation, file.clone()),
            "ok.json",
        )
        .unwrap();
    }
    let mut other_universe: serde_json::Value = serde_json::from_slice(&hostile_external_account(
        "https://sts.example-tpc.net/v1/token",
        None,
        file.clone(),
    ))
    .unwrap();
    other_universe["universe_domain"] = serde_json::json!("example-tpc.net");
    ExternalAccount::from_json(other_universe.to_string().as_bytes(), "tpc.json").unwrap();
    // The opt-in, by name, for emulators.
    ExternalAccount::from_json_allowing_any_endpoint(&refused[0], "emulator.json").unwrap();
}

#[test]
fn a_url_subject_token_comes_over_https_or_from_a_local_metadata_address() {
    let sts = "https://sts.googleapis.com/v1/token";
    let url = |u: &str| serde_json::json!({"url": u, "headers": {"Metadata": "True"}});
    for refused in [
        "http://10.0.0.5/token",
        "http://metadata.attacker.example/token",
        "ftp://127.0.0.1/token",
    ] {
        let e = ExternalAccount::from_json(&hostile_external_account(sts, None, url(refused)), "f.json")
            .unwrap_err();
        assert!(e.to_string().contains("credential_source.url"), "{refused}: {e}");
        // Not even with the opt-in for the STS endpoints.
        assert!(
            ExternalAccount::from_json_allowing_any_endpoint(
                &hostile_external_account(sts, None, url(refused)),
                "f.json"
            )
            .is_err()
        );
    }
    // Parsed only: no request is made to any of these.
    for allowed in [
        "https://tokens.example/subject",
        "http://169.254.10.10/identity/oauth2/token?api-version=2018-02-01",
        "http://127.0.0.1:8080/token",
        "http://[fe80::1]/token",
    ] {
        ExternalAccount::from_json(&hostile_external_account(sts, None, url(allowed)), "f.json").unwrap();
    }
}

#[test]
fn debug_of_a_url_source_names_its_headers_but_not_their_values() {
    // Issue 24, item 6.
    let source = serde_json::json!({
        "url": "http://127.0.0.1:9/token",
        "headers": {"Authorization": "Bearer METADATA-SECRET-VALUE", "Metadata": "True"},
    });
    let provider = ExternalAccount::from_json(
        &hostile_external_account("https://sts.googleapis.com/v1/token", None, source),
        "f.json",
    )
    .unwrap();
    let shown = format!("{provider:?}");
    assert!(!shown.contains("METADATA-SECRET-VALUE"), "{shown}");
    assert!(shown.contains("Authorization"), "{shown}");
}

#[tokio::test]
async fn a_subject_token_file_that_is_too_large_or_not_a_file_is_refused_at_once() {
    // Issue 24, item 9: silently cut at 64 KiB; a FIFO blocked until the fetch timed out.
    let gcp = GcpEmulator::start().await;
    let dir = TempDir::new("gcp-subject-file");
    let large = dir.write("large", &"x".repeat(64 * 1024 + 1));
    let config = dir.write(
        "wif.json",
        &gcp.external_account_json(large.to_str().unwrap(), None),
    );
    let e = ExternalAccount::from_file_allowing_any_endpoint(&config)
        .unwrap()
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(
        authwire::error_chain(&e).contains("is larger than 65536 bytes"),
        "{e}"
    );
    assert_eq!(gcp.subject_tokens().len(), 0, "nothing was sent");

    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let config = dir.write(
        "wif-fifo.json",
        &gcp.external_account_json(fifo.to_str().unwrap(), None),
    );
    let provider = ExternalAccount::from_file_allowing_any_endpoint(&config).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), provider.fetch_token(None))
        .await
        .expect("a FIFO is refused at once, not waited on")
        .unwrap_err();
    assert!(authwire::error_chain(&e).contains("is not a regular file"), "{e}");
    let folder = dir.write(
        "wif-dir.json",
        &gcp.external_account_json(dir.path().to_str().unwrap(), None),
    );
    let e = ExternalAccount::from_file_allowing_any_endpoint(&folder)
        .unwrap()
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(authwire::error_chain(&e).contains("is not a regular file"), "{e}");
}

#[tokio::test]
async fn a_url_source_that_echoes_its_headers_in_an_error_never_puts_them_in_the_error() {
    // Found in review: JSON error bodies now keep their `message`; a subject-token server that
    // echoes the file's `Authorization` header there must not bring it into the error.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = vec![0u8; 8192];
        let n = stream.read(&mut head).await.unwrap();
        let head = String::from_utf8_lossy(&head[..n]).into_owned();
        let echoed = head
            .lines()
            .find_map(|l| l.strip_prefix("authorization: "))
            .unwrap_or("no header")
            .to_owned();
        let body = serde_json::json!({ "message": format!("you sent {echoed}") }).to_string();
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
    });
    let source = serde_json::json!({
        "url": format!("http://127.0.0.1:{port}/token"),
        "headers": {"Authorization": "Bearer METADATA-SECRET-VALUE", "Metadata": "True"},
    });
    let provider = ExternalAccount::from_json(
        &hostile_external_account("https://sts.googleapis.com/v1/token", None, source),
        "f.json",
    )
    .unwrap();
    let e = provider.fetch_token(None).await.unwrap_err();
    server.await.unwrap();
    let text = format!("{e} {e:?} {}", authwire::error_chain(&e));
    assert!(text.contains("you sent"), "the server's message is kept: {text}");
    assert!(!text.contains("METADATA-SECRET-VALUE"), "{text}");
}

#[tokio::test]
async fn the_transport_carries_token_requests_and_never_metadata_requests() {
    let gcp = GcpEmulator::start().await;
    let proxy = authwire_testkit::ForwardProxy::start().await;
    let transport = authwire_oauth2::Transport::new().proxy(&proxy.url()).unwrap();
    let dir = TempDir::new("gcp-proxy");
    let key = dir.write("sa.json", &gcp.service_account_key_json());
    let through_proxy = GcpCredentials::from_file(&key)
        .unwrap()
        .scope(CLOUD_PLATFORM_SCOPE)
        .transport(transport.clone());
    through_proxy.fetch_token(None).await.unwrap();
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].starts_with("POST ") && seen[0].contains(&gcp.url()),
        "{seen:?}"
    );

    // The metadata server is reached directly, whatever the transport's proxy.
    let metadata = MetadataServer::new().endpoint(gcp.url()).transport(transport);
    metadata.fetch_token(None).await.unwrap();
    assert!(gcp.metadata_requests() >= 1);
    assert_eq!(proxy.requests().len(), 1, "{:?}", proxy.requests());
}

/// Issue 30: the first thing a new user tries. `default_credentials()` over a key file with no
/// `.scope(..)` asks for cloud-platform, as google-cloud-auth's builders do; before, the
/// assertion had no `scope` claim and Google's token endpoint (and the emulator) answered
/// `invalid_scope`.
#[tokio::test]
async fn a_key_file_through_default_credentials_with_no_scope_asks_for_cloud_platform() {
    let gcp = GcpEmulator::start().await;
    let dir = TempDir::new("gcp-default-scope");
    let key = dir.write("sa.json", &gcp.service_account_key_json());
    let key = key.to_str().unwrap().to_owned();
    let found =
        default_credentials_in(move |name| (name == "GOOGLE_APPLICATION_CREDENTIALS").then(|| key.clone()))
            .await
            .unwrap();
    assert_eq!(found.kind(), "service_account");
    let token = found.fetch_token(None).await.unwrap();
    assert_eq!(
        gcp.check_token(token.access_token().expose_secret()).as_deref(),
        Some(GCP_SERVICE_ACCOUNT)
    );
    assert_eq!(gcp.last_scopes().as_deref(), Some(CLOUD_PLATFORM_SCOPE));
}

#[cfg(unix)]
use authwire_testkit::fake_program;

#[cfg(unix)]
#[tokio::test]
async fn gcloud_config_helper_gives_a_token_once_and_its_failures_are_said() {
    use authwire_gcp::GcloudCli;
    let dir = TempDir::new("gcloud");
    let calls = dir.path().join("calls");
    // gcloud's documented shape (`gcloud config config-helper --format=json`), trimmed.
    let gcloud = fake_program(
        &dir,
        "gcloud",
        &format!(
            "[ \"$1 $2 $3\" = \"config config-helper --format=json\" ] || exit 9\necho x >> {}\ncat <<'JSON'\n{{\"configuration\": {{\"active_configuration\": \"default\", \"properties\": {{\"core\": {{\"account\": \"dev@example.com\", \"project\": \"p\"}}}}}}, \"credential\": {{\"access_token\": \"ya29.from-gcloud\", \"id_token\": \"eyJ.x.y\", \"token_expiry\": \"2099-01-01T00:00:00Z\"}}, \"sentinels\": {{\"config_sentinel\": \"/x\"}}}}\nJSON",
            calls.display()
        ),
    );
    let authorizer = Authorizer::new(GcloudCli::new().program(&gcloud));
    for _ in 0..5 {
        assert_eq!(
            authorizer.authorization_header().await.unwrap(),
            "Bearer ya29.from-gcloud"
        );
    }
    let runs = std::fs::read_to_string(&calls).unwrap().lines().count();
    assert_eq!(runs, 1, "gcloud runs once per token, not per request");

    // Chosen last by Application Default Credentials, from PATH.
    let path = dir.path().display().to_string();
    let found = default_credentials_in(move |name| match name {
        "PATH" => Some(path.clone()),
        "NO_GCE_CHECK" => Some("true".into()),
        "HOME" => Some("/nonexistent-home".into()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(found.kind(), "gcloud_cli");

    // Not logged in: gcloud's own message, and what to do.
    let failing = fake_program(
        &dir,
        "gcloud-failing",
        "echo 'ERROR: (gcloud.config.config-helper) You do not currently have an active account selected.' >&2\nexit 1",
    );
    let e = GcloudCli::new()
        .program(&failing)
        .fetch_token(None)
        .await
        .unwrap_err();
    let text = authwire::error_chain(&e);
    assert!(
        text.contains("You do not currently have an active account") && text.contains("gcloud auth login"),
        "{text}"
    );

    // Hung: killed after the timeout, a transient error.
    let hung = fake_program(&dir, "gcloud-hung", "sleep 30");
    let e = GcloudCli::new()
        .program(&hung)
        .timeout(Duration::from_millis(300))
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(
        e.is_transient() && authwire::error_chain(&e).contains("did not finish"),
        "{e}"
    );

    // An expired token from gcloud is refused rather than served.
    let stale = fake_program(
        &dir,
        "gcloud-stale",
        "echo '{\"credential\": {\"access_token\": \"ya29.old\", \"token_expiry\": \"2001-01-01T00:00:00Z\"}}'",
    );
    let e = GcloudCli::new()
        .program(&stale)
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(authwire::error_chain(&e).contains("expired"), "{e}");
    assert!(!authwire::error_chain(&e).contains("ya29.old"));
}

#[tokio::test]
async fn impersonation_over_any_source_with_delegates() {
    use authwire_gcp::Impersonated;
    let gcp = GcpEmulator::start().await;
    let dir = TempDir::new("gcp-impersonate");
    let key = dir.write("sa.json", &gcp.service_account_key_json());
    let source = ServiceAccountKey::from_file(&key).unwrap();
    let deployer = "deployer@p.iam.gserviceaccount.com";
    let impersonated = Impersonated::new(source, deployer)
        .endpoint(gcp.url())
        .delegates(["middle@p.iam.gserviceaccount.com"])
        .lifetime(Duration::from_secs(1800));
    assert!(!format!("{impersonated:?}").contains("PRIVATE KEY"));
    let authorizer = Authorizer::new(impersonated);
    for _ in 0..3 {
        let token = authorizer.token().await.unwrap();
        assert_eq!(
            gcp.check_token(token.access_token().expose_secret()).as_deref(),
            Some(deployer)
        );
    }
    assert_eq!(gcp.impersonations(), 1, "one impersonation per token");
    assert_eq!(gcp.token_requests(), 1, "one source token for it");
    assert_eq!(
        gcp.last_delegates(),
        ["projects/-/serviceAccounts/middle@p.iam.gserviceaccount.com"]
    );
    assert_eq!(gcp.last_scopes().as_deref(), Some(CLOUD_PLATFORM_SCOPE));

    // A source whose token IAM does not accept: IAM's error, with no token in it.
    let stranger = authwire::StaticTokenProvider::new("ya29.not-from-this-emulator");
    let e = Impersonated::new(stranger, deployer)
        .endpoint(gcp.url())
        .fetch_token(None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(!authwire::error_chain(&e).contains("ya29.not-from-this-emulator"));
}

#[tokio::test]
async fn an_impersonation_target_that_could_leave_its_path_is_refused() {
    let e = authwire_gcp::Impersonated::new(authwire::StaticTokenProvider::new("t"), "a/../../evil?x=")
        .endpoint("http://127.0.0.1:9")
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(
        authwire::error_chain(&e).contains("not a service account e-mail"),
        "{e}"
    );
}

#[tokio::test]
async fn an_impersonated_service_account_file_as_gcloud_writes_it() {
    use authwire_gcp::Impersonated;
    let gcp = GcpEmulator::start().await;
    let target = "deployer@p.iam.gserviceaccount.com";
    let source: serde_json::Value = serde_json::from_str(&gcp.service_account_key_json()).unwrap();
    let file = |url: String| {
        serde_json::json!({
            "type": "impersonated_service_account",
            "service_account_impersonation_url": url,
            "source_credentials": source,
            "delegates": ["middle@p.iam.gserviceaccount.com"],
        })
        .to_string()
    };
    let local = file(gcp.impersonation_url(target));
    // Google's endpoint only, by default: the emulator's is refused, naming the opt-in.
    let e = Impersonated::from_json(local.as_bytes(), "imp.json").unwrap_err();
    assert!(e.to_string().contains("from_json_allowing_any_endpoint"), "{e}");
    let provider = Impersonated::from_json_allowing_any_endpoint(local.as_bytes(), "imp.json").unwrap();
    let token = provider.fetch_token(None).await.unwrap();
    assert_eq!(
        gcp.check_token(token.access_token().expose_secret()).as_deref(),
        Some(target)
    );
    assert_eq!(
        gcp.last_delegates(),
        ["projects/-/serviceAccounts/middle@p.iam.gserviceaccount.com"]
    );

    // Through Application Default Credentials, with Google's URL: read (no request is made).
    let dir = TempDir::new("gcp-imp-file");
    let google = file(format!(
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{target}:generateAccessToken"
    ));
    let path = dir.write("imp.json", &google);
    let found = GcpCredentials::from_file(&path).unwrap();
    assert_eq!(found.kind(), "impersonated_service_account");
    assert!(!format!("{found:?}").contains("PRIVATE KEY"));
}

#[cfg(unix)]
#[tokio::test]
async fn an_executable_source_runs_only_when_allowed_and_its_output_file_saves_runs() {
    let gcp = GcpEmulator::start().await;
    let dir = TempDir::new("gcp-executable");
    let seen_env = dir.path().join("env");
    let runs = dir.path().join("runs");
    let output = dir.path().join("cache.json");
    let exe = fake_program(
        &dir,
        "get-token",
        &format!(
            "echo run >> {runs}\nenv | grep ^GOOGLE_EXTERNAL_ACCOUNT_ | sort > {seen_env}\nanswer='{{\"version\": 1, \"success\": true, \"token_type\": \"urn:ietf:params:oauth:token-type:jwt\", \"id_token\": \"eyJ.from-executable.sig\", \"expiration_time\": 4070908800}}'\necho \"$answer\" > \"$GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE\"\necho \"$answer\"",
            runs = runs.display(),
            seen_env = seen_env.display()
        ),
    );
    let file = serde_json::json!({
        "type": "external_account",
        "audience": authwire_testkit::GCP_WIF_AUDIENCE,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": gcp.sts_url(),
        "credential_source": {"executable": {
            "command": format!("{} --flag", exe.display()),
            "timeout_millis": 5000,
            "output_file": output.display().to_string(),
        }},
    })
    .to_string();
    let account = ExternalAccount::from_json_allowing_any_endpoint(file.as_bytes(), "exe.json").unwrap();

    // Off unless allowed: the program is named, nothing runs.
    let e = account
        .clone()
        .allow_executables(false)
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(
        authwire::error_chain(&e).contains("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1"),
        "{e}"
    );
    assert!(!runs.exists());

    let allowed = account.allow_executables(true);
    allowed.fetch_token(None).await.unwrap();
    assert_eq!(
        gcp.subject_tokens().last().map(String::as_str),
        Some("eyJ.from-executable.sig")
    );
    let env = std::fs::read_to_string(&seen_env).unwrap();
    assert!(
        env.contains(&format!(
            "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE={}",
            authwire_testkit::GCP_WIF_AUDIENCE
        )),
        "{env}"
    );
    assert!(
        env.contains("GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE=urn:ietf:params:oauth:token-type:jwt"),
        "{env}"
    );
    assert!(env.contains("GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE=0"), "{env}");
    assert!(
        env.contains(&format!(
            "GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE={}",
            output.display()
        )),
        "{env}"
    );

    // The output file holds an unexpired answer: the next token uses it and does not run the
    // program (the file's token is changed here to see which one was used).
    std::fs::write(
        &output,
        r#"{"version": 1, "success": true, "token_type": "urn:ietf:params:oauth:token-type:jwt", "id_token": "eyJ.from-output-file.sig", "expiration_time": 4070908800}"#,
    )
    .unwrap();
    allowed.fetch_token(None).await.unwrap();
    assert_eq!(
        gcp.subject_tokens().last().map(String::as_str),
        Some("eyJ.from-output-file.sig")
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 1);

    // A failure the program reports is passed on.
    std::fs::remove_file(&output).unwrap();
    let failing = fake_program(
        &dir,
        "get-token-failing",
        "echo '{\"version\": 1, \"success\": false, \"code\": \"401\", \"message\": \"Caller not authorized.\"}'",
    );
    let file = file.replace(&exe.display().to_string(), &failing.display().to_string());
    let e = ExternalAccount::from_json_allowing_any_endpoint(file.as_bytes(), "exe.json")
        .unwrap()
        .allow_executables(true)
        .fetch_token(None)
        .await
        .unwrap_err();
    assert!(
        authwire::error_chain(&e).contains("401 Caller not authorized."),
        "{e}"
    );
}

#[tokio::test]
async fn a_service_account_key_gives_id_tokens_for_an_audience() {
    let gcp = GcpEmulator::start().await;
    let dir = TempDir::new("gcp-sa-id-token");
    let key = dir.write("sa.json", &gcp.service_account_key_json());
    let authorizer = Authorizer::new(
        ServiceAccountKey::from_file(&key)
            .unwrap()
            .id_token("https://service-abc.run.app"),
    );
    let token = authorizer.token().await.unwrap();
    let claims = jwt_claims(token.access_token().expose_secret());
    assert_eq!(claims["aud"], "https://service-abc.run.app");
    assert_eq!(claims["email"], GCP_SERVICE_ACCOUNT);
    let left = token
        .expires_at()
        .unwrap()
        .duration_since(SystemClock.now())
        .unwrap();
    assert!(
        left > Duration::from_secs(3500),
        "the expiry is the ID token's exp"
    );
    authorizer.token().await.unwrap();
    assert_eq!(gcp.token_requests(), 1, "cached until it expires");
    // Its own cache entry: not the key's access tokens.
    let access = ServiceAccountKey::from_file(&key).unwrap();
    assert_ne!(
        access.cache_key(),
        ServiceAccountKey::from_file(&key)
            .unwrap()
            .id_token("https://service-abc.run.app")
            .cache_key()
    );
}

#[tokio::test]
async fn an_impersonated_account_gives_id_tokens_through_generate_id_token() {
    use authwire_gcp::Impersonated;
    let gcp = GcpEmulator::start().await;
    let dir = TempDir::new("gcp-imp-id");
    let key = dir.write("sa.json", &gcp.service_account_key_json());
    let target = "invoker@p.iam.gserviceaccount.com";
    let provider = Impersonated::new(ServiceAccountKey::from_file(&key).unwrap(), target)
        .endpoint(gcp.url())
        .delegates(["middle@p.iam.gserviceaccount.com"])
        .id_token("https://service-abc.run.app");
    let token = provider.fetch_token(None).await.unwrap();
    let claims = jwt_claims(token.access_token().expose_secret());
    assert_eq!(claims["aud"], "https://service-abc.run.app");
    assert_eq!(claims["email"], target, "the impersonated account's ID token");
    assert_eq!(
        gcp.last_delegates(),
        ["projects/-/serviceAccounts/middle@p.iam.gserviceaccount.com"]
    );
    assert!(token.expires_at().is_some());
}

/// Issue 30: a credential's quota project is sent as `x-goog-user-project` on every authorized
/// request; `GOOGLE_CLOUD_QUOTA_PROJECT` wins over the file, as in Google's libraries.
#[tokio::test]
async fn the_quota_project_rides_on_every_request_as_x_goog_user_project() {
    let gcp = GcpEmulator::start().await;
    let dir = TempDir::new("gcp-quota");
    // The emulator's authorized_user file names quota_project_id "authwire-test".
    let user = dir.write("user.json", &gcp.authorized_user_json());
    let env = |pairs: Vec<(&'static str, String)>| {
        let env: HashMap<&str, String> = pairs.into_iter().collect();
        move |n: &str| env.get(n).cloned()
    };
    let header = |found: GcpCredentials| async move {
        let authorizer = authwire::Authorizer::new(found.scope(CLOUD_PLATFORM_SCOPE));
        let mut headers = authwire::http::HeaderMap::new();
        authorizer.authorize(&mut headers).await.unwrap();
        assert!(headers.contains_key("authorization"));
        headers
            .get("x-goog-user-project")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let from_file = default_credentials_in(env(vec![(
        "GOOGLE_APPLICATION_CREDENTIALS",
        user.display().to_string(),
    )]))
    .await
    .unwrap();
    assert_eq!(header(from_file).await.as_deref(), Some("authwire-test"));

    let overridden = default_credentials_in(env(vec![
        ("GOOGLE_APPLICATION_CREDENTIALS", user.display().to_string()),
        ("GOOGLE_CLOUD_QUOTA_PROJECT", "billing-override".into()),
    ]))
    .await
    .unwrap();
    assert_eq!(header(overridden).await.as_deref(), Some("billing-override"));

    // A service-account key names none: no header.
    let key = dir.write("sa.json", &gcp.service_account_key_json());
    let none = default_credentials_in(env(vec![(
        "GOOGLE_APPLICATION_CREDENTIALS",
        key.display().to_string(),
    )]))
    .await
    .unwrap();
    assert_eq!(header(none).await, None);

    // The metadata server takes it from the environment only.
    let metadata = default_credentials_in(env(vec![
        ("GCE_METADATA_HOST", gcp.host()),
        ("GOOGLE_CLOUD_QUOTA_PROJECT", "from-env".into()),
    ]))
    .await
    .unwrap();
    assert_eq!(header(metadata).await.as_deref(), Some("from-env"));
}

/// Issue 30: ID tokens from an `authorized_user` (gcloud's application-default login), from the
/// same refresh grant, used until their `exp`; a refresh answer with no `id_token` is a clear
/// error, with nothing secret in it.
#[tokio::test]
async fn an_authorized_user_gets_id_tokens_from_its_refresh_grant() {
    let gcp = GcpEmulator::start().await;
    let user =
        authwire_gcp::AuthorizedUser::from_json(gcp.authorized_user_json().as_bytes(), "test").unwrap();
    let authorizer = authwire::Authorizer::new(user.clone().id_token());
    let token = authorizer.token().await.unwrap();
    let claims = jwt_claims(token.access_token().expose_secret());
    assert_eq!(
        claims["aud"],
        authwire_testkit::GCP_USER_CLIENT_ID,
        "a user's ID token is for its client"
    );
    assert_eq!(claims["email"], "user@example.com");
    assert_eq!(
        token
            .expires_at()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        claims["exp"].as_u64().unwrap()
    );
    assert!(
        token.refresh_token().is_some(),
        "the refresh token is kept with it"
    );
    authorizer.token().await.unwrap();
    assert_eq!(gcp.token_requests(), 1, "cached until its exp");
    assert_ne!(
        user.id_token().cache_key(),
        authwire_gcp::AuthorizedUser::from_json(gcp.authorized_user_json().as_bytes(), "test")
            .unwrap()
            .cache_key(),
        "ID tokens and access tokens are cached apart"
    );

    // A token endpoint that answers without an id_token (a login without `openid`).
    let url =
        answer_once(r#"{"access_token": "ya29.no-id", "expires_in": 3600, "token_type": "Bearer"}"#).await;
    let mut doc: serde_json::Value = serde_json::from_str(&gcp.authorized_user_json()).unwrap();
    doc["token_uri"] = url.into();
    let plain = authwire_gcp::AuthorizedUser::from_json(doc.to_string().as_bytes(), "test").unwrap();
    let e = plain.id_token().fetch_token(None).await.unwrap_err();
    let shown = authwire::error_chain(&e).to_string();
    assert!(shown.contains("openid"), "{shown}");
    assert!(
        !shown.contains("ya29.no-id") && !shown.contains(authwire_testkit::GCP_USER_REFRESH_TOKEN),
        "{shown}"
    );
}

/// A loopback token endpoint that answers one request with `body` (200, JSON); its URL.
async fn answer_once(body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // Headers, then the form (its length from Content-Length).
        while let Ok(n) = conn.read(&mut buf).await {
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(answer.as_bytes()).await.unwrap();
    });
    url
}

/// Issue 30: AWS workload identity federation. On the IMDSv2 path the region, the role and its
/// credentials come from the EC2 metadata service (a session token first); the subject token is
/// a SigV4-signed GetCallerIdentity that the emulator's STS verifies by recomputing the
/// signature. Then the environment path: `AWS_*` variables first, no metadata request at all.
#[tokio::test]
async fn aws_federation_signs_get_caller_identity_from_imdsv2_or_the_environment() {
    let gcp = GcpEmulator::start().await;
    let file = gcp.aws_external_account_json();
    let from_imds = ExternalAccount::from_json_allowing_any_endpoint(file.as_bytes(), "aws.json")
        .unwrap()
        // An empty environment: whatever this machine has, the metadata path is taken.
        .aws_environment(Vec::<(String, String)>::new())
        .scope(CLOUD_PLATFORM_SCOPE);
    let token = from_imds.fetch_token(None).await.unwrap();
    assert!(!token.access_token().expose_secret().is_empty());
    assert_eq!(gcp.aws_subject_tokens(), 1, "the STS verified one signed request");
    assert_eq!(
        gcp.imds_refused(),
        0,
        "every metadata request carried the IMDSv2 session token"
    );

    let from_env = ExternalAccount::from_json_allowing_any_endpoint(file.as_bytes(), "aws.json")
        .unwrap()
        .aws_environment([
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ACCESS_KEY_ID", authwire_testkit::AWS_ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", authwire_testkit::AWS_SECRET_ACCESS_KEY),
            ("AWS_SESSION_TOKEN", authwire_testkit::AWS_SESSION_TOKEN),
        ]);
    from_env.fetch_token(None).await.unwrap();
    assert_eq!(gcp.aws_subject_tokens(), 2);

    // Wrong secret key: the STS refuses the signature; no secret in the error.
    let forged = ExternalAccount::from_json_allowing_any_endpoint(file.as_bytes(), "aws.json")
        .unwrap()
        .aws_environment([
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ACCESS_KEY_ID", authwire_testkit::AWS_ACCESS_KEY_ID),
            (
                "AWS_SECRET_ACCESS_KEY",
                "not-the-secret-key-0000000000000000000000",
            ),
            ("AWS_SESSION_TOKEN", authwire_testkit::AWS_SESSION_TOKEN),
        ]);
    let e = forged.fetch_token(None).await.unwrap_err();
    let shown = authwire::error_chain(&e).to_string();
    assert!(
        shown.contains("invalid_grant") && shown.contains("AWS subject token is invalid"),
        "{shown}"
    );
    for secret in ["not-the-secret-key", authwire_testkit::AWS_SESSION_TOKEN] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert_eq!(gcp.aws_subject_tokens(), 2);
}
