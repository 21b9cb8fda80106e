//! Issue 26: the CLI behind a corporate proxy (a real tinyproxy), with a private CA and a
//! client certificate, and its folders on every platform.

use super::*;
use authwire_testkit::{ForwardProxy, GcpEmulator, TestCa};

/// The confidential client's flags, with no cache: every run asks the identity provider.
fn uncached(idp: &IdentityServer) -> Vec<String> {
    let mut c = creds(idp);
    let at = c.iter().position(|a| a == "--cache").unwrap();
    c[at + 1] = "none".into();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_through_the_proxy_from_the_flag_and_from_the_environment() {
    let idp = IdentityServer::start().await;
    let proxy = ForwardProxy::start().await;
    let sb = Sandbox::new();
    let c = uncached(&idp);
    let token_request = format!("POST {} HTTP/1.1", idp.token_url());

    let flag = Run::new(&sb, &args(&["token", "--proxy", &proxy.url()], &c))
        .output()
        .await;
    assert_eq!(flag.code(), 0, "{}", flag.stderr());
    assert_eq!(proxy.requests(), [token_request], "{}", proxy.log());

    // http_proxy, as curl reads it (the identity provider is plain http on loopback).
    let env = Run::new(&sb, &args(&["token"], &c))
        .env("http_proxy", &proxy.url())
        .output()
        .await;
    assert_eq!(env.code(), 0, "{}", env.stderr());
    assert_eq!(proxy.requests().len(), 2, "{}", proxy.log());

    // NO_PROXY names the host: direct.
    let bypass = Run::new(&sb, &args(&["token"], &c))
        .env("http_proxy", &proxy.url())
        .env("NO_PROXY", "localhost,127.0.0.1")
        .output()
        .await;
    assert_eq!(bypass.code(), 0, "{}", bypass.stderr());
    // --no-proxy: direct too.
    let off = Run::new(&sb, &args(&["token", "--no-proxy"], &c))
        .env("http_proxy", &proxy.url())
        .output()
        .await;
    assert_eq!(off.code(), 0, "{}", off.stderr());
    assert_eq!(proxy.requests().len(), 2, "{}", proxy.log());
    assert_eq!(idp.tokens_issued(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticating_proxy_password_never_surfaces() {
    let ca = TestCa::new();
    let idp = IdentityServer::builder().tls(&ca, false).start().await;
    let proxy = ForwardProxy::start_with_basic_auth("carol", "pw-in-env-93x").await;
    let sb = Sandbox::new();
    let cacert = sb.path("ca.pem");
    std::fs::write(&cacert, ca.ca_pem()).unwrap();
    let c = uncached(&idp);
    let cmd = ["token", "--cacert", cacert.to_str().unwrap()];

    let good = Run::new(&sb, &args(&cmd, &c))
        .env("HTTPS_PROXY", &proxy.url_with_credentials())
        .output()
        .await;
    assert_eq!(good.code(), 0, "{}", good.stderr());
    assert!(
        proxy.requests()[0].starts_with("CONNECT 127.0.0.1:"),
        "{}",
        proxy.log()
    );

    let wrong = proxy
        .url_with_credentials()
        .replace("pw-in-env-93x", "pw-wrong-71q");
    let refused = Run::new(&sb, &args(&cmd, &c))
        .env("HTTPS_PROXY", &wrong)
        .env("RUST_LOG", "trace")
        .output()
        .await;
    assert_eq!(refused.code(), 3, "{}", refused.stderr());
    // tinyproxy answers a wrong password with 401 (a missing one with 407): either way the
    // line names the proxy and what it refused.
    let line = refused.assert_one_line_error();
    assert!(line.contains(&proxy.url()) && line.contains("CONNECT"), "{line}");
    let all = format!("{}{}", refused.stdout(), refused.stderr());
    assert!(!all.contains("pw-wrong-71q") && !all.contains("carol:"), "{all}");

    // No credentials at all: 407, said so.
    let none = Run::new(&sb, &args(&cmd, &c))
        .env("HTTPS_PROXY", &proxy.url())
        .output()
        .await;
    let line = none.assert_one_line_error();
    assert!(line.contains("407") && line.contains("--proxy"), "{line}");

    // Verbose output names no password either.
    let verbose = Run::new(
        &sb,
        &args(&["token", "-v", "--cacert", cacert.to_str().unwrap()], &c),
    )
    .env("HTTPS_PROXY", &proxy.url_with_credentials())
    .output()
    .await;
    assert_eq!(verbose.code(), 0, "{}", verbose.stderr());
    assert!(
        !verbose.stderr().contains("pw-in-env-93x"),
        "{}",
        verbose.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_needs_cacert_and_a_client_certificate_needs_cert_and_key() {
    let ca = TestCa::new();
    let idp = IdentityServer::builder().tls(&ca, true).start().await;
    let sb = Sandbox::new();
    let cacert = sb.path("ca.pem");
    std::fs::write(&cacert, ca.ca_pem()).unwrap();
    let (cert, key) = ca.client_identity("laptop");
    let (cert_path, key_path) = (sb.path("client.pem"), sb.path("client.key"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let c = uncached(&idp);

    let untrusted = Run::new(&sb, &args(&["token"], &c)).output().await;
    assert_eq!(untrusted.code(), 3);
    let line = untrusted.assert_one_line_error();
    assert!(
        line.contains("unknown issuer") && line.contains("--cacert"),
        "{line}"
    );

    let cacert = cacert.to_str().unwrap();
    let no_cert = Run::new(&sb, &args(&["token", "--cacert", cacert], &c))
        .output()
        .await;
    assert_eq!(no_cert.code(), 3);
    let line = no_cert.assert_one_line_error();
    assert!(line.contains("--cert") && line.contains("--key"), "{line}");
    assert_eq!(idp.token_requests(), 0);

    let (cert_path, key_path) = (cert_path.to_str().unwrap(), key_path.to_str().unwrap());
    let ok = Run::new(
        &sb,
        &args(
            &[
                "token", "--cacert", cacert, "--cert", cert_path, "--key", key_path,
            ],
            &c,
        ),
    )
    .output()
    .await;
    assert_eq!(ok.code(), 0, "{}", ok.stderr());
    assert_eq!(idp.tokens_issued(), 1);

    // The same settings from a profile, in the folder AUTHWIRE_CONFIG_DIR names.
    let own = sb.path("elsewhere");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(
        own.join("config.toml"),
        format!(
            "[profiles.corp]\ntoken_url = \"{}\"\nclient_id = \"{}\"\ncache = \"none\"\ncacert = \"{cacert}\"\ncert = \"{cert_path}\"\nkey = \"{key_path}\"\n",
            idp.token_url(),
            Client::CONFIDENTIAL_ID
        ),
    )
    .unwrap();
    let profile = Run::new(&sb, &["token", "--profile", "corp"])
        .env("AUTHWIRE_CONFIG_DIR", own.to_str().unwrap())
        .output()
        .await;
    assert_eq!(profile.code(), 0, "{}", profile.stderr());
    assert_eq!(idp.tokens_issued(), 2);

    // A key that is encrypted is named as such.
    let encrypted = sb.path("encrypted.key");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let bad = Run::new(
        &sb,
        &args(
            &[
                "token",
                "--cacert",
                cacert,
                "--cert",
                cert_path,
                "--key",
                encrypted.to_str().unwrap(),
            ],
            &c,
        ),
    )
    .output()
    .await;
    assert_eq!(bad.code(), 1);
    assert!(bad.assert_one_line_error().contains("encrypted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_server_is_never_reached_through_the_proxy() {
    let gcp = GcpEmulator::start().await;
    let proxy = ForwardProxy::start().await;
    let sb = Sandbox::new();
    let out = Run::new(&sb, &["token", "--credential", "gcp", "--cache", "none"])
        .env("GCE_METADATA_HOST", &gcp.host())
        .env("NO_GCE_CHECK", "")
        .env("http_proxy", &proxy.url())
        .env("HTTP_PROXY", &proxy.url())
        .env("ALL_PROXY", &proxy.url())
        .output()
        .await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(gcp.check_token(out.stdout().trim()).is_some());
    assert!(proxy.requests().is_empty(), "{}", proxy.log());

    // A key file's token request does go through it.
    let key = sb.path("sa.json");
    std::fs::write(&key, gcp.service_account_key_json()).unwrap();
    let keyed = Run::new(&sb, &["token", "--credential", "gcp", "--cache", "none"])
        .env("GOOGLE_APPLICATION_CREDENTIALS", key.to_str().unwrap())
        .env("http_proxy", &proxy.url())
        .output()
        .await;
    assert_eq!(keyed.code(), 0, "{}", keyed.stderr());
    assert_eq!(proxy.requests().len(), 1, "{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_follow_authwire_then_xdg_then_the_platform() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let c = creds(&idp);
    // AUTHWIRE_CACHE_DIR holds the cache files directly.
    let own = sb.path("own-cache");
    let out = Run::new(&sb, &args(&["token"], &c))
        .env("AUTHWIRE_CACHE_DIR", own.to_str().unwrap())
        .output()
        .await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        own.join("tokens").is_dir(),
        "cache files in $AUTHWIRE_CACHE_DIR/tokens"
    );
    // Without XDG variables, Linux's convention under HOME.
    let home = Run::new(&sb, &args(&["token"], &c))
        .unset("XDG_CACHE_HOME")
        .unset("XDG_CONFIG_HOME")
        .output()
        .await;
    assert_eq!(home.code(), 0, "{}", home.stderr());
    if cfg!(target_os = "linux") {
        assert!(sb.path("home/.cache/authwire/tokens").is_dir());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_the_api_through_the_same_proxy_and_ca() {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start_tls(&idp).await;
    let proxy = ForwardProxy::start().await;
    let sb = Sandbox::new();
    let cacert = sb.path("api-ca.pem");
    std::fs::write(&cacert, api.ca_pem().unwrap()).unwrap();
    let c = uncached(&idp);
    let url = format!("{}/v1/items", api.url());

    let untrusted = Run::new(&sb, &args(&["curl", &url], &c)).output().await;
    assert_eq!(untrusted.code(), 4, "{}", untrusted.stderr());
    let line = untrusted.assert_one_line_error();
    assert!(line.contains("--cacert"), "{line}");
    assert_eq!(api.requests(), 0);

    let cacert = cacert.to_str().unwrap();
    let ok = Run::new(
        &sb,
        &args(&["curl", "--cacert", cacert, "--proxy", &proxy.url(), &url], &c),
    )
    .output()
    .await;
    assert_eq!(ok.code(), 0, "{}", ok.stderr());
    assert!(ok.stdout().contains("\"ok\":true"), "{}", ok.stdout());
    let seen = proxy.requests();
    let api_authority = api.url().trim_start_matches("https://").to_owned();
    assert!(
        seen.iter()
            .any(|r| r.starts_with(&format!("CONNECT {api_authority}"))),
        "the API request went through the proxy: {seen:?}"
    );
    assert!(seen.iter().any(|r| r.contains("/token")), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_job_gets_a_token_with_no_stored_secret() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let base = [
        "token",
        "--token-url",
        &idp.token_url(),
        "--client-id",
        Client::PRIVATE_KEY_JWT_ID,
        "--cache",
        "none",
    ];
    // --assertion-file: a federated token a platform mounted.
    let file = sb.path("federated-token");
    std::fs::write(&file, idp.federated_assertion("from-file")).unwrap();
    let mut flags = base.to_vec();
    flags.extend(["--assertion-file", file.to_str().unwrap()]);
    let out = Run::new(&sb, &flags)
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(out.code(), 0, "{}", out.stderr());

    // --assertion github-actions=AUDIENCE: the runner's OIDC endpoint (faked on loopback).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let jwt = idp.federated_assertion("from-actions");
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        seen.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&head).to_string());
        let body = serde_json::json!({ "value": jwt }).to_string();
        s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes())
            .await
            .unwrap();
    });
    let mut flags = base.to_vec();
    flags.extend(["--assertion", "github-actions=api://my-idp"]);
    let out = Run::new(&sb, &flags)
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .env(
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            &format!("http://{addr}/token?api-version=2.0"),
        )
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-secret-55")
        .output()
        .await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let head = requests.lock().unwrap()[0].to_lowercase();
    assert!(
        head.starts_with("get /token?api-version=2.0&audience=api%3a%2f%2fmy-idp "),
        "{head}"
    );
    assert!(head.contains("authorization: bearer runner-secret-55"), "{head}");
    assert_eq!(idp.tokens_issued(), 2);
}
