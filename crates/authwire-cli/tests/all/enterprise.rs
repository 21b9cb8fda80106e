//! Issue 28 through the real binary: `login --acr-values/--max-age` and `--par`, `curl` on a
//! step-up challenge with nobody to log in (exit 6, the challenge in one line, nothing more
//! sent), and mutual TLS client authentication with the certificate presented to the API too.

use super::*;
use authwire_testkit::{ScriptedBrowser, TestCa};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Run `authwire login --browser --no-open ...`, follow the printed link with a scripted
/// browser, and wait for the CLI; its exit code and stderr.
async fn browser_login(sb: &Sandbox, argv: &[&str]) -> (i32, String) {
    let mut child = Run::new(sb, argv).env("AUTHWIRE_CLIENT_SECRET", "").spawn();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let link = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut line = String::new();
            assert!(
                err.read_line(&mut line).await.unwrap() > 0,
                "no URL printed: {seen}"
            );
            seen.push_str(&line);
            if let Some(rest) = line.trim().strip_prefix("http") {
                return format!("http{rest}");
            }
        }
    })
    .await
    .unwrap();
    let page = ScriptedBrowser::new().login(&link).await.unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    let mut rest = String::new();
    let status = tokio::time::timeout(Duration::from_secs(60), async {
        let (status, _) = tokio::join!(child.wait(), err.read_to_string(&mut rest));
        status.unwrap()
    })
    .await
    .unwrap();
    (status.code().unwrap_or(-1), seen + &rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_login_then_the_api_that_asked_for_it_answers() {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    api.require_acr(Some("gold"));
    let sb = Sandbox::new();
    let mut flags = public_client(&idp, "file");
    flags.extend(["--scope".into(), "openid offline_access".into()]);
    let url = format!("{}/v1/report", api.url());

    // Logged in at the basic level: the API asks for gold. Nobody is at a terminal here, so
    // the CLI says so in one line and exits 6, having sent the request once.
    let (code, stderr) = browser_login(&sb, &args(&["login", "--browser", "--no-open"], &flags)).await;
    assert_eq!(code, 0, "{stderr}");
    let out = Run::new(&sb, &args(&["curl", &url], &flags))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(out.code(), 6, "{}", out.stderr());
    let line = out.assert_one_line_error();
    assert!(
        line.contains(r#"insufficient_user_authentication acr_values="gold""#),
        "{line}"
    );
    assert!(
        line.contains("--acr-values 'gold'"),
        "the fix, as a command: {line}"
    );
    assert_eq!((api.requests(), api.challenges()), (1, 1), "no retry");

    // The login the line names, with max_age too: the authorization request carries both.
    let (code, stderr) = browser_login(
        &sb,
        &args(
            &[
                "login",
                "--browser",
                "--no-open",
                "--acr-values",
                "gold",
                "--max-age",
                "300",
            ],
            &flags,
        ),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let asked = idp.last_authorization();
    assert_eq!(asked.get("acr_values").map(String::as_str), Some("gold"));
    assert_eq!(asked.get("max_age").map(String::as_str), Some("300"));
    let out = Run::new(&sb, &args(&["curl", &url], &flags))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(api.challenges(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_scope_is_reported_in_one_line_with_no_retry() {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    api.require_scope(Some("admin:write"));
    let sb = Sandbox::new();
    let c = creds(&idp);
    let out = Run::new(&sb, &args(&["curl", &format!("{}/v1/admin", api.url())], &c))
        .output()
        .await;
    assert_eq!(out.code(), 6, "{}", out.stderr());
    let line = out.assert_one_line_error();
    assert!(
        line.contains(r#"insufficient_scope scope="admin:write""#) && line.contains("--scope"),
        "{line}"
    );
    assert_eq!(api.requests(), 1);
    assert_eq!(idp.tokens_issued(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_par_pushes_the_request() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let mut flags = public_client(&idp, "file");
    flags.extend(["--scope".into(), "openid".into(), "--par".into()]);
    let (code, stderr) = browser_login(&sb, &args(&["login", "--browser", "--no-open"], &flags)).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(idp.par_requests(), 1);
    assert!(idp.last_authorization().contains_key("code_challenge"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_auth_and_curl_presents_the_same_certificate_to_the_api() {
    let ca = TestCa::new();
    let idp = IdentityServer::builder()
        .mtls(&ca)
        .client(authwire_testkit::Client::tls_client_auth("mtls-cli", "CN=laptop"))
        .start()
        .await;
    let api = ResourceServer::start_mtls(&idp, &ca).await;
    let sb = Sandbox::new();
    let (cert, key) = ca.client_identity("laptop");
    for (name, bytes) in [
        ("ca.pem", ca.ca_pem()),
        ("client.pem", &cert[..]),
        ("client.key", &key[..]),
    ] {
        std::fs::write(sb.path(name), bytes).unwrap();
    }
    let (cacert, cert, key) = (sb.path("ca.pem"), sb.path("client.pem"), sb.path("client.key"));
    let flags: Vec<String> = [
        "--issuer",
        &idp.issuer(),
        "--client-id",
        "mtls-cli",
        "--auth-method",
        "tls-client-auth",
        "--cacert",
        cacert.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--cache",
        "file",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = Run::new(&sb, &args(&["curl", &format!("{}/v1/things", api.url())], &flags))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(out.stdout().contains(r#""ok":true"#), "{}", out.stdout());
    assert_eq!(idp.auth_methods(), ["tls_client_auth"]);

    // Without the certificate, the method cannot be used: said in one line, before any request.
    let no_cert: Vec<&str> = flags
        .iter()
        .map(String::as_str)
        .take_while(|a| *a != "--cert")
        .chain(["--cache", "file"])
        .collect();
    let out = Run::new(
        &sb,
        &args(
            &["token"],
            &no_cert.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ),
    )
    .env("AUTHWIRE_CLIENT_SECRET", "")
    .output()
    .await;
    assert_eq!(out.code(), 1, "{}", out.stderr());
    let line = out.assert_one_line_error();
    assert!(line.contains("--cert"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confidential_client_that_logs_a_person_in_keeps_using_that_login() {
    // A FAPI-style client: it authenticates (here with a secret) and logs a person in; the
    // commands that follow use the login's token and refresh token, not client credentials.
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let flags: Vec<String> = [
        "--issuer",
        &idp.issuer(),
        "--client-id",
        Client::CONFIDENTIAL_ID,
        "--scope",
        "openid offline_access",
        "--cache",
        "file",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut child = Run::new(&sb, &args(&["login", "--browser", "--no-open"], &flags))
        .env("AUTHWIRE_CLIENT_SECRET", Client::CONFIDENTIAL_SECRET)
        .spawn();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let link = loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).await.unwrap() > 0);
        if let Some(rest) = line.trim().strip_prefix("http") {
            break format!("http{rest}");
        }
    };
    ScriptedBrowser::new().login(&link).await.unwrap();
    assert!(child.wait().await.unwrap().success());
    assert_eq!(idp.grant_count("authorization_code"), 1);
    let out = Run::new(&sb, &args(&["token", "--min-ttl", "2h"], &flags))
        .env("AUTHWIRE_CLIENT_SECRET", Client::CONFIDENTIAL_SECRET)
        .output()
        .await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(
        idp.grant_count("refresh_token"),
        1,
        "the login's refresh token was used"
    );
    assert_eq!(idp.grant_count("client_credentials"), 0);
}
