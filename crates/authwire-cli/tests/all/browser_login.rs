//! Issue 18: `authwire login --browser` driven by a scripted browser that follows the URL the
//! CLI prints; `authwire logout` revoking at the server.

use super::*;
use authwire_testkit::{Approval, ScriptedBrowser, with_param};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// A login in progress: the CLI process, the URL it printed, and everything it wrote to
/// stderr so far.
struct BrowserLogin {
    child: tokio::process::Child,
    url: String,
    stderr: String,
    rest: BufReader<tokio::process::ChildStderr>,
}

impl BrowserLogin {
    async fn start(sb: &Sandbox, args: &[&str]) -> Self {
        let mut child = Run::new(sb, args).env("AUTHWIRE_CLIENT_SECRET", "").spawn();
        let mut rest = BufReader::new(child.stderr.take().unwrap());
        let mut stderr = String::new();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let mut line = String::new();
                assert!(
                    rest.read_line(&mut line).await.unwrap() > 0,
                    "no URL printed: {stderr}"
                );
                stderr.push_str(&line);
                if let Some(url) = line.trim().strip_prefix("http") {
                    return format!("http{url}");
                }
            }
        })
        .await
        .expect("the CLI prints the authorization URL");
        Self {
            child,
            url,
            stderr,
            rest,
        }
    }

    /// Wait for the CLI to finish; its exit code, stdout and whole stderr.
    async fn finish(mut self) -> (i32, String, String) {
        let mut stdout = String::new();
        let mut out = self.child.stdout.take().unwrap();
        let (status, _, _) = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::join!(
                self.child.wait(),
                out.read_to_string(&mut stdout),
                self.rest.read_to_string(&mut self.stderr)
            )
        })
        .await
        .expect("the CLI finishes");
        (status.unwrap().code().unwrap_or(-1), stdout, self.stderr)
    }
}

fn browser_flags(idp: &IdentityServer) -> Vec<String> {
    let mut flags = public_client(idp, "file");
    flags.extend(["--scope".into(), "openid offline_access".into()]);
    flags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_then_cached_token_then_silent_refresh_then_logout_revokes() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            secret_marker: Some("SECRETMARK".into()),
            jwt_access_tokens: false,
            ..Settings::default()
        })
        .start()
        .await;
    let sb = Sandbox::new();
    let flags = browser_flags(&idp);
    let login = BrowserLogin::start(&sb, &args(&["login", "--browser", "--no-open"], &flags)).await;
    // A one-time link to the CLI's own listener, not the authorization URL (issue 24, item 3).
    assert!(
        login.url.starts_with("http://127.0.0.1:")
            && login.url.contains("/start/")
            && !login.url.contains("state="),
        "{}",
        login.url
    );
    let page = ScriptedBrowser::new().login(&login.url).await.unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    let (code, stdout, stderr) = login.finish().await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("logged in; token cached with a refresh token"),
        "{stderr}"
    );
    // Neither the code nor any token reached the terminal.
    assert!(
        !stderr.contains("code-") && !stderr.contains("SECRETMARK"),
        "{stderr}"
    );
    assert!(stdout.is_empty());
    assert_eq!(idp.grant_count("authorization_code"), 1);

    // The next `authwire token` is served from the cache: no request to the server.
    let before = idp.token_requests();
    let token = Run::new(&sb, &args(&["token"], &flags))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(token.code(), 0, "{}", token.stderr());
    assert_eq!(idp.token_requests(), before, "served from the cache");
    let first = token.stdout();

    // Later, when less is left than asked for, it refreshes silently with the refresh token.
    let refreshed = Run::new(&sb, &args(&["token", "--min-ttl", "2h"], &flags))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(refreshed.code(), 0, "{}", refreshed.stderr());
    assert_eq!(idp.grant_count("refresh_token"), 1);
    assert_ne!(refreshed.stdout(), first);

    // Logout revokes at the server, then deletes the cached copy.
    let cached = std::fs::read_dir(sb.path("cache/authwire/tokens"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    let refresh_token = cached
        .split('"')
        .find(|s| s.starts_with("rt-SECRETMARK"))
        .expect("the refresh token is in the file cache")
        .to_owned();
    let logout = Run::new(&sb, &args(&["logout"], &flags))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(logout.code(), 0, "{}", logout.stderr());
    assert!(
        logout.stderr().contains("revoked at the server"),
        "{}",
        logout.stderr()
    );
    assert!(
        logout.stderr().contains("the cached token was removed"),
        "{}",
        logout.stderr()
    );
    assert!(!logout.stderr().contains("SECRETMARK"));
    assert_eq!(idp.revocations(), 1);
    // The old refresh token no longer works at the server.
    let status = reqwest::Client::new()
        .post(idp.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&client_id={}&refresh_token={refresh_token}",
            Client::PUBLIC_ID
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 400);
    assert!(idp.errors("invalid_grant") >= 1);
    let after = Run::new(&sb, &args(&["token"], &flags))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(after.code(), 3, "logged out: {}", after.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_state_is_refused_and_the_real_redirect_still_completes() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let flags = browser_flags(&idp);
    let login = BrowserLogin::start(&sb, &args(&["login", "--browser", "--no-open"], &flags)).await;
    let browser = ScriptedBrowser::new();
    let callback = browser.authorize(&login.url).await.unwrap();
    let forged = browser
        .deliver(&with_param(&callback, "state", "tampered"))
        .await
        .unwrap();
    assert_eq!(forged.status, 400);
    assert_eq!(idp.grant_count("authorization_code"), 0);
    assert_eq!(browser.deliver(&callback).await.unwrap().status, 200);
    let (code, _, stderr) = login.finish().await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_ends_with_a_clear_error() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            authorization: Approval::Deny,
            ..Settings::default()
        })
        .start()
        .await;
    let sb = Sandbox::new();
    let flags = browser_flags(&idp);
    let login = BrowserLogin::start(&sb, &args(&["login", "--browser", "--no-open"], &flags)).await;
    ScriptedBrowser::new().login(&login.url).await.unwrap();
    let (code, _, stderr) = login.finish().await;
    assert_eq!(code, 3, "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("access_denied"), "{stderr}");
    assert!(
        last.contains("the login was refused at the identity provider: run `authwire login --issuer ")
            && last.ends_with("` to try again"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_named_by_browser_is_started_with_the_url() {
    // `BROWSER` names the program that opens the URL; here a script that records it.
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let seen = sb.path("opened-url");
    let script = sb.path("fake-browser");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nprintf '%s' \"$1\" > '{}'\n", seen.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    let flags = browser_flags(&idp);
    let mut child = Run::new(&sb, &args(&["login"], &flags))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .env("BROWSER", script.to_str().unwrap())
        .spawn();
    // Plain `login` chose the browser: the script received the one-time login link, and
    // nothing of the authorization request (state, PKCE challenge) is on its command line,
    // which other local users can read (issue 24, item 3).
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(u) = std::fs::read_to_string(&seen)
                && !u.is_empty()
            {
                return u;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the browser was started");
    assert!(
        url.starts_with("http://127.0.0.1:")
            && url.contains("/start/")
            && !url.contains("state=")
            && !url.contains("code_challenge"),
        "{url}"
    );
    ScriptedBrowser::new().login(&url).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(idp.grant_count("authorization_code"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_revocation_is_reported_and_the_local_copy_is_deleted_anyway() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    // No discovery: the token URL alone, so there is no revocation endpoint to find.
    let flags: Vec<String> = vec![
        "--token-url".into(),
        idp.token_url(),
        "--authorization-url".into(),
        idp.authorization_url(),
        "--client-id".into(),
        Client::PUBLIC_ID.into(),
        "--cache".into(),
        "file".into(),
    ];
    let login = BrowserLogin::start(&sb, &args(&["login", "--browser", "--no-open"], &flags)).await;
    ScriptedBrowser::new().login(&login.url).await.unwrap();
    assert_eq!(login.finish().await.0, 0);
    let logout = Run::new(&sb, &args(&["logout"], &flags))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(logout.code(), 3, "{}", logout.stderr());
    assert!(logout.stderr().contains("NOT revoked"), "{}", logout.stderr());
    assert!(
        logout.stderr().contains("--revocation-url"),
        "{}",
        logout.stderr()
    );
    assert!(
        logout.stderr().contains("the cached token was removed"),
        "{}",
        logout.stderr()
    );
    assert_eq!(idp.revocations(), 0);
    let after = Run::new(&sb, &args(&["token"], &flags))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(after.code(), 3);
}
