//! The real `authwire` binary against the testkit's identity server and API over loopback.

use authwire_testkit::{Client, Fault, IdentityServer, ResourceServer, Settings};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

mod browser_login;
mod cloud;
mod enterprise;
mod helpers;
mod proxy;
mod transport;

/// A private HOME, config and cache folder for one test.
struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        let root = std::env::temp_dir().join(format!("authwire-cli-{}-{:x}", std::process::id(), h.finish()));
        std::fs::create_dir_all(root.join("config/authwire")).unwrap();
        Self { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

struct Run<'a> {
    sandbox: &'a Sandbox,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    unset: Vec<&'static str>,
    stdin: Option<String>,
}

impl<'a> Run<'a> {
    fn new(sandbox: &'a Sandbox, args: &[&str]) -> Self {
        Self {
            sandbox,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("AUTHWIRE_CLIENT_SECRET", Client::CONFIDENTIAL_SECRET.into())],
            unset: Vec::new(),
            stdin: None,
        }
    }

    fn env(mut self, name: &'static str, value: &str) -> Self {
        self.env.retain(|(n, _)| *n != name);
        self.env.push((name, value.into()));
        self
    }

    /// Run without this variable (one the sandbox sets, such as `XDG_CONFIG_HOME`).
    fn unset(mut self, name: &'static str) -> Self {
        self.unset.push(name);
        self
    }

    fn stdin(mut self, input: &str) -> Self {
        self.stdin = Some(input.into());
        self
    }

    async fn output(self) -> Out {
        let mut child = self.spawn();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = self.stdin {
            stdin.write_all(input.as_bytes()).await.unwrap();
        }
        drop(stdin);
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("authwire finished")
            .unwrap();
        Out(output)
    }

    /// Start the binary with piped stdin, stdout and stderr.
    fn spawn(&self) -> tokio::process::Child {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_authwire"));
        cmd.args(&self.args)
            .env_remove("AUTHWIRE_CLIENT_SECRET")
            .env_remove("RUST_LOG")
            // Never a real browser, nor a real cloud, from a test.
            .env_remove("BROWSER")
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("CLOUDSDK_CONFIG")
            .env_remove("GCE_METADATA_HOST")
            .env_remove("IDENTITY_ENDPOINT")
            .env_remove("AZURE_CLIENT_ID")
            .env_remove("AZURE_TENANT_ID")
            .env_remove("AZURE_CLIENT_SECRET")
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .env("NO_GCE_CHECK", "true")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env("HOME", self.sandbox.path("home"))
            .env("XDG_CONFIG_HOME", self.sandbox.path("config"))
            .env("XDG_CACHE_HOME", self.sandbox.path("cache"))
            .env_remove("AUTHWIRE_CONFIG_DIR")
            .env_remove("AUTHWIRE_CACHE_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // No proxy from the developer's shell: the transport tests set their own.
        for name in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
        ] {
            cmd.env_remove(name);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for name in &self.unset {
            cmd.env_remove(name);
        }
        cmd.kill_on_drop(true);
        cmd.spawn().expect("run authwire")
    }
}

struct Out(Output);

impl Out {
    fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    /// The error is one line that names a cause, with no debug dump.
    fn assert_one_line_error(&self) -> String {
        let err = self.stderr();
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line expected:\n{err}");
        assert!(lines[0].starts_with("authwire: "), "{err}");
        assert!(
            !err.contains("Rejected {") && !err.contains("Error {"),
            "no debug dump: {err}"
        );
        lines[0].to_owned()
    }
}

fn creds(idp: &IdentityServer) -> Vec<String> {
    vec![
        "--token-url".into(),
        idp.token_url(),
        "--client-id".into(),
        Client::CONFIDENTIAL_ID.into(),
        "--cache".into(),
        "file".into(),
    ]
}

/// The credential flags of the testkit's public client (login, then refresh tokens).
fn public_client(idp: &IdentityServer, cache: &str) -> Vec<String> {
    vec![
        "--issuer".into(),
        idp.issuer(),
        "--client-id".into(),
        Client::PUBLIC_ID.into(),
        "--cache".into(),
        cache.into(),
    ]
}

fn args<'a>(cmd: &[&'a str], creds: &'a [String]) -> Vec<&'a str> {
    cmd.iter()
        .copied()
        .chain(creds.iter().map(String::as_str))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_the_token_alone_and_the_cache_is_reused_across_runs() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let c = creds(&idp);
    let first = Run::new(&sb, &args(&["token"], &c)).output().await;
    assert_eq!(first.code(), 0, "{}", first.stderr());
    let token = first.stdout();
    assert!(token.ends_with('\n') && token.matches('\n').count() == 1);
    assert_eq!(token.trim().split('.').count(), 3, "a JWT");

    let second = Run::new(&sb, &args(&["token"], &c)).output().await;
    assert_eq!(second.stdout(), token, "the same cached token");
    assert_eq!(
        idp.tokens_issued(),
        1,
        "the second run made no request to the identity provider"
    );
    let files: Vec<_> = std::fs::read_dir(sb.path("cache/authwire/tokens"))
        .unwrap()
        .collect();
    assert!(!files.is_empty());
}

/// Issue 29: `--redis-url` names a Sentinel group as well as one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_a_redis_cache_behind_sentinel_is_shared_across_runs() {
    let idp = IdentityServer::start().await;
    let group = authwire_testkit::RedisSentinel::start().await;
    let sb = Sandbox::new();
    let url = group.url();
    let flags = [
        "token",
        "--token-url",
        &idp.token_url(),
        "--client-id",
        Client::CONFIDENTIAL_ID,
        "--cache",
        "redis",
        "--redis-url",
        &url,
    ];
    let first = Run::new(&sb, &flags).output().await;
    assert_eq!(first.code(), 0, "{}", first.stderr());
    let second = Run::new(&sb, &flags).output().await;
    assert_eq!(second.code(), 0, "{}", second.stderr());
    assert_eq!(second.stdout(), first.stdout(), "the token came from Redis");
    assert_eq!(idp.tokens_issued(), 1);

    let wrong = url.replace(authwire_testkit::RedisSentinel::MASTER_NAME, "no-such-master");
    let mut flags = flags;
    flags[8] = &wrong;
    let missing = Run::new(&sb, &flags).output().await;
    assert_eq!(missing.code(), 1, "a configuration error: {}", missing.stderr());
    assert!(missing.assert_one_line_error().contains("--redis-url"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_json_and_header() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let c = creds(&idp);
    let out = Run::new(
        &sb,
        &args(&["token", "--json", "--scope", "a b", "--scope", "c"], &c),
    )
    .output()
    .await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["access_token", "expires_at", "scope", "token_type"]);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["scope"], "a b c");
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));

    let header = Run::new(&sb, &args(&["header", "--scope", "a b c"], &c))
        .output()
        .await;
    assert_eq!(
        header.stdout(),
        format!("Authorization: Bearer {}\n", v["access_token"].as_str().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sends_the_request_with_the_header_and_reports_http_errors() {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    let sb = Sandbox::new();
    let c = creds(&idp);
    let url = format!("{}/v1/things", api.url());
    let out = Run::new(&sb, &args(&["curl", &url], &c)).output().await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(out.stdout().contains(r#""ok":true"#), "{}", out.stdout());

    let out = Run::new(
        &sb,
        &args(
            &[
                "curl",
                "-i",
                "-X",
                "PUT",
                "-H",
                "X-Trace: 42",
                "-d",
                "name=x",
                &url,
            ],
            &c,
        ),
    )
    .output()
    .await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(out.stdout().starts_with("HTTP/1.1 200 OK\n"), "{}", out.stdout());
    assert!(out.stdout().contains(r#""method":"PUT""#));
    assert_eq!(api.bodies_seen().last().unwrap(), b"name=x");

    // A revoked token: one refresh, one retry, success.
    api.reject_next(1);
    let out = Run::new(&sb, &args(&["curl", &url], &c)).output().await;
    assert_eq!(out.code(), 0, "{}", out.stderr());

    api.always_reject(true);
    let out = Run::new(&sb, &args(&["curl", &url], &c)).output().await;
    assert_eq!(out.code(), 22, "an HTTP error exits 22, as curl -f");
    assert!(out.stderr().contains("401"), "{}", out.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_the_device_flow_then_token_then_logout() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            auto_approve_devices: true,
            ..Settings::default()
        })
        .start()
        .await;
    let sb = Sandbox::new();
    let public = public_client(&idp, "file");
    let before = Run::new(&sb, &args(&["token"], &public))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(before.code(), 3);
    assert!(before.assert_one_line_error().contains(&format!(
        "run `authwire login --issuer {} --client-id ",
        idp.issuer()
    )));

    // No browser can be opened here (no DISPLAY, no BROWSER): plain `login` takes the device flow.
    let login = Run::new(&sb, &args(&["login"], &public))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(login.code(), 0, "{}", login.stderr());
    assert!(
        login.stderr().contains("enter the code WXYZ-"),
        "{}",
        login.stderr()
    );
    assert!(login.stderr().contains("with a refresh token"));

    let token = Run::new(&sb, &args(&["token"], &public))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(token.code(), 0, "{}", token.stderr());
    assert!(idp.grant_count("refresh_token") <= 1);

    let logout = Run::new(&sb, &args(&["logout"], &public))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(logout.code(), 0, "{}", logout.stderr());
    let after = Run::new(&sb, &args(&["token"], &public))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(after.code(), 3, "logged out: {}", after.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_claims_and_expiry_in_human_time() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let token = idp.mint_access_token("svc-9", Duration::from_secs(252));
    for out in [
        Run::new(&sb, &["inspect", &token]).output().await,
        Run::new(&sb, &["inspect", "-"]).stdin(&token).output().await,
    ] {
        assert_eq!(out.code(), 0, "{}", out.stderr());
        let text = out.stdout();
        assert!(text.contains(r#""sub": "svc-9""#), "{text}");
        assert!(text.contains(r#""alg": "RS256""#), "{text}");
        assert!(
            text.contains("expires in 4m1") || text.contains("expires in 4m0"),
            "{text}"
        );
        assert!(!text.contains(&token), "the token itself is not printed");
    }
    let out = Run::new(&sb, &["inspect", "not-a-jwt"]).output().await;
    assert_eq!(out.code(), 1);
    assert!(
        out.assert_one_line_error()
            .contains("expected 3 dot-separated segments")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_file_supplies_the_settings() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let secret_file = sb.path("secret");
    std::fs::write(&secret_file, format!("{}\n", Client::CONFIDENTIAL_SECRET)).unwrap();
    std::fs::write(
        sb.path("config/authwire/config.toml"),
        format!(
            "[profiles.dev]\ntoken_url = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\nscope = [\"api:read\"]\ncache = \"none\"\n",
            idp.token_url(),
            Client::CONFIDENTIAL_ID,
            secret_file.display()
        ),
    )
    .unwrap();
    let out = Run::new(&sb, &["token", "--json", "--profile", "dev"])
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(out.stdout().contains(r#""scope":"api:read""#));

    let out = Run::new(&sb, &["token", "--profile", "prod"]).output().await;
    assert_eq!(out.code(), 1);
    let line = out.assert_one_line_error();
    assert!(
        line.contains(r#"no profile "prod""#) && line.contains("profiles: dev"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_a_one_line_error_with_the_fix() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let c = creds(&idp);

    let wrong = Run::new(&sb, &args(&["token"], &c))
        .env("AUTHWIRE_CLIENT_SECRET", "wrong-secret")
        .output()
        .await;
    assert_eq!(wrong.code(), 3);
    let line = wrong.assert_one_line_error();
    assert!(
        line.contains("invalid_client") && line.contains("check --client-id and AUTHWIRE_CLIENT_SECRET"),
        "{line}"
    );

    let missing = Run::new(&sb, &["token", "--client-id", "x", "--cache", "none"])
        .output()
        .await;
    assert_eq!(missing.code(), 1);
    assert!(
        missing
            .assert_one_line_error()
            .contains("pass --issuer or --token-url")
    );

    let port = {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let down = Run::new(
        &sb,
        &[
            "token",
            "--token-url",
            &format!("http://127.0.0.1:{port}/token"),
            "--client-id",
            "c",
            "--cache",
            "none",
        ],
    )
    .output()
    .await;
    assert_eq!(down.code(), 3);
    let line = down.assert_one_line_error();
    assert!(
        line.contains("could not connect") && line.contains("is the identity provider"),
        "{line}"
    );

    idp.inject(Fault::status(200, "<html><body>Sign in</body></html>").content_type("text/html"));
    let html = Run::new(&sb, &args(&["token"], &c)).output().await;
    assert_eq!(html.code(), 3);
    assert!(html.assert_one_line_error().contains("not JSON"));

    let insecure = Run::new(
        &sb,
        &[
            "token",
            "--token-url",
            "http://idp.example/token",
            "--client-id",
            "c",
        ],
    )
    .output()
    .await;
    assert_eq!(insecure.code(), 1);
    // Issue 31: the CLI's flag, not the library's method.
    assert_eq!(
        insecure.assert_one_line_error(),
        "authwire: --token-url uses plain http to idp.example, which would expose credentials; use https, or pass --allow-insecure-http to opt in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_logged_in_says_the_exact_command_once() {
    // Issue 31: the message named `authwire login` three times and never the flags in use.
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    std::fs::write(
        sb.path("config/authwire/config.toml"),
        format!(
            "[profiles.me]\nissuer = \"{}\"\nclient_id = \"{}\"\ncache = \"file\"\n",
            idp.issuer(),
            Client::PUBLIC_ID
        ),
    )
    .unwrap();
    let out = Run::new(&sb, &["token", "--profile", "me"])
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(out.code(), 3);
    assert_eq!(
        out.assert_one_line_error(),
        format!(
            "authwire: not logged in: no refresh token is stored for these settings (from {}); run `authwire login --profile me`, or give a client secret (AUTHWIRE_CLIENT_SECRET or --client-secret-file)",
            idp.issuer()
        )
    );
    assert_eq!(out.stderr().matches("authwire login").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_output_to_a_file_has_no_colour_codes_and_no_credential_fingerprint() {
    // Issue 31: `-v` wrote ANSI colour to a pipe, and `cred=<16 hex>`, a fingerprint of the
    // client secret that a weak secret can be checked against offline.
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let c = creds(&idp);
    for extra in [None, Some(("NO_COLOR", "1"))] {
        let mut run = Run::new(&sb, &args(&["token", "-v"], &c));
        if let Some((k, v)) = extra {
            run = run.env(k, v);
        }
        let out = run.output().await;
        assert_eq!(out.code(), 0, "{}", out.stderr());
        let err = out.stderr();
        assert!(
            err.contains("refresh started"),
            "the library's events are there: {err}"
        );
        assert!(
            !err.contains("connecting to"),
            "the HTTP stack's chatter is not: {err}"
        );
        assert!(!err.contains('\u{1b}'), "escape codes in: {err:?}");
        let fingerprint = err
            .match_indices("cred=")
            .any(|(i, m)| err[i + m.len()..].starts_with(|c: char| c.is_ascii_hexdigit()));
        assert!(!fingerprint, "a credential fingerprint in: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_output_or_traces() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            refresh_token_for_client_credentials: true,
            ..Settings::default()
        })
        .start()
        .await;
    let api = ResourceServer::start(&idp).await;
    let sb = Sandbox::new();
    let c = creds(&idp);
    let header = Run::new(&sb, &args(&["header"], &c)).output().await;
    let token = header
        .stdout()
        .trim()
        .trim_start_matches("Authorization: Bearer ")
        .to_owned();
    let stored = std::fs::read_dir(sb.path("cache/authwire/tokens"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a cached token file");
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(stored).unwrap()).unwrap();
    let refresh = stored["refresh_token"].as_str().unwrap().to_owned();

    let url = api.url();
    for cmd in [
        vec!["token", "-v"],
        vec!["header", "-v"],
        vec!["curl", "-v", "-i", url.as_str()],
        vec!["inspect", "-v"],
    ] {
        let out = Run::new(&sb, &args(&cmd, &c)).output().await;
        assert_eq!(out.code(), 0, "{cmd:?}: {}", out.stderr());
        let (stdout, stderr) = (out.stdout(), out.stderr());
        for secret in [Client::CONFIDENTIAL_SECRET, refresh.as_str()] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{cmd:?} leaked a secret"
            );
        }
        assert!(
            !stderr.contains(&token),
            "{cmd:?}: the -v trace shows the access token"
        );
        if cmd[0] != "token" && cmd[0] != "header" {
            assert!(!stdout.contains(&token), "{cmd:?}: the access token is printed");
        }
        assert!(
            stderr.contains("step 1 check")
                && stderr.contains("step 2 refresh")
                && stderr.contains("step 3 retrieve"),
            "{stderr}"
        );
    }
    let curl = Run::new(&sb, &args(&["curl", "-v", url.as_str()], &c))
        .output()
        .await;
    assert!(
        curl.stderr().contains("step 4 prepare") && curl.stderr().contains("step 5 update"),
        "{}",
        curl.stderr()
    );
    assert!(curl.stderr().contains("cache hit"), "{}", curl.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_cache_is_the_os_keyring() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    // A client id unique to this run, so that the (shared) keyring holds no earlier token.
    let client = format!("cli-keyring-{}", std::process::id());
    let idp = Arc::new(idp);
    let c = [
        "--token-url".to_string(),
        idp.token_url(),
        "--client-id".into(),
        Client::CONFIDENTIAL_ID.into(),
        "--audience".into(),
        client,
    ];
    for _ in 0..2 {
        let out = Run::new(&sb, &args(&["token", "-v"], &c)).output().await;
        assert_eq!(out.code(), 0, "{}", out.stderr());
        assert!(out.stderr().contains("OS keyring"), "{}", out.stderr());
    }
    assert_eq!(
        idp.tokens_issued(),
        1,
        "the keyring cache was reused by the second process"
    );
    let out = Run::new(&sb, &args(&["logout"], &c)).output().await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(
        !sb.path("cache/authwire/tokens").exists(),
        "no file cache was used"
    );
}

#[tokio::test]
async fn completions_are_generated() {
    let sb = Sandbox::new();
    let out = Run::new(&sb, &["completions", "bash"]).output().await;
    assert_eq!(out.code(), 0);
    assert!(out.stdout().contains("_authwire()"), "{}", out.stdout());
}

async fn eight_concurrent_cli_runs_keep_a_rotating_login(cache: &str) {
    let idp = IdentityServer::builder()
        .settings(Settings {
            auto_approve_devices: true,
            rotate_refresh_tokens: true,
            token_lifetime: Duration::from_secs(2),
            ..Settings::default()
        })
        .start()
        .await;
    let sb = Sandbox::new();
    let public = public_client(&idp, cache);
    let login = Run::new(&sb, &args(&["login", "--device"], &public))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .output()
        .await;
    assert_eq!(login.code(), 0, "{}", login.stderr());
    for round in 1..=2 {
        // Separate processes read the system clock: wait for the 2 s token to expire.
        tokio::time::sleep(Duration::from_millis(2_300)).await;
        let runs: Vec<_> = (0..8)
            .map(|_| {
                let public = public.clone();
                let sb = &sb;
                async move {
                    Run::new(sb, &args(&["token"], &public))
                        .env("AUTHWIRE_CLIENT_SECRET", "")
                        .output()
                        .await
                }
            })
            .collect();
        let outs = futures_join_all(runs).await;
        for out in &outs {
            assert_eq!(out.code(), 0, "round {round}: {}", out.stderr());
        }
        let printed: std::collections::HashSet<String> = outs.iter().map(Out::stdout).collect();
        assert_eq!(
            printed.len(),
            1,
            "round {round}: every run printed the one refreshed token"
        );
        assert_eq!(
            idp.grant_count("refresh_token"),
            round,
            "round {round}: one refresh per expiry for 8 processes"
        );
    }
    assert_eq!(
        idp.errors("invalid_grant"),
        0,
        "no refresh token was redeemed twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_cli_runs_on_one_file_cache_keep_a_rotating_login() {
    // Issue 12, item 6: two `authwire token` runs from a parallel script both redeemed one
    // rotating refresh token; an identity provider with reuse detection revoked the family and
    // the login was gone. Now one process refreshes and the others adopt its token.
    eight_concurrent_cli_runs_keep_a_rotating_login("file").await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_cli_runs_on_one_keyring_keep_a_rotating_login() {
    // The same for the OS keyring (this session's kernel keyring, shared by the child
    // processes), whose leases are lock files in the cache folder.
    eight_concurrent_cli_runs_keep_a_rotating_login("keyring").await;
}

/// Run futures concurrently on this task (the `futures` crate's `join_all`, without it).
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("ready")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_tokens_are_cached_with_their_key_and_curl_sends_a_proof_per_request() {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    let sb = Sandbox::new();
    let mut creds = creds(&idp);
    creds.push("--dpop".into());
    let first = Run::new(&sb, &args(&["token"], &creds)).output().await;
    assert_eq!(first.code(), 0, "{}", first.stderr());
    let second = Run::new(&sb, &args(&["token"], &creds)).output().await;
    assert_eq!(
        second.stdout(),
        first.stdout(),
        "the bound token and its key came from the cache"
    );
    assert_eq!(idp.tokens_issued(), 1);
    assert_eq!(idp.dpop_proofs(), 1);

    let url = format!("{}/v1/things?page=2", api.url());
    let curl = Run::new(&sb, &args(&["curl", &url], &creds)).output().await;
    assert_eq!(curl.code(), 0, "{}", curl.stderr());
    assert_eq!(api.dpop_proofs_verified(), 1, "the strict API verified the proof");

    let inspect = Run::new(&sb, &args(&["inspect"], &creds)).output().await;
    assert_eq!(inspect.code(), 0, "{}", inspect.stderr());
    assert!(
        inspect.stdout().contains("matches this client's DPoP key"),
        "{}",
        inspect.stdout()
    );
    for out in [&first, &second, &curl, &inspect] {
        assert!(!out.stderr().contains("PRIVATE KEY"), "{}", out.stderr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_runs_with_dpop_end_with_one_key() {
    // Issue 24, item 8: each first run generated and saved its own key; the loser's bound
    // tokens were discarded later, and a refresh token bound to its key was lost.
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let c = creds(&idp);
    let runs: Vec<_> = (0..6)
        .map(|_| Run::new(&sb, &args(&["token", "--dpop"], &c)).output())
        .collect();
    let outs = futures_join_all(runs).await;
    let mut thumbprints = std::collections::BTreeSet::new();
    for out in &outs {
        assert_eq!(out.code(), 0, "{}", out.stderr());
        let token = out.stdout();
        let claims: serde_json::Value = {
            use base64::Engine as _;
            let payload = token.trim().split('.').nth(1).expect("a JWT");
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .unwrap(),
            )
            .unwrap()
        };
        thumbprints.insert(claims["cnf"]["jkt"].as_str().expect("DPoP-bound").to_owned());
    }
    assert_eq!(
        thumbprints.len(),
        1,
        "every run used the one key: {thumbprints:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_exits_non_zero_for_an_expired_token() {
    // Issue 18: scripts use `authwire inspect` as a check. (Unsigned JWTs: inspect does not
    // verify, it reads.) {"alg":"none"} . {"exp":1000} and {"exp":4000000000}
    let sb = Sandbox::new();
    let expired = "eyJhbGciOiJub25lIn0.eyJleHAiOjEwMDB9.c2ln";
    let out = Run::new(&sb, &["inspect", expired]).output().await;
    assert_eq!(out.code(), 5, "{}", out.stderr());
    assert!(out.stderr().contains("expired"), "{}", out.stderr());
    assert!(
        out.stdout().contains("\"exp\": 1000"),
        "the claims are still shown: {}",
        out.stdout()
    );
    let valid = "eyJhbGciOiJub25lIn0.eyJleHAiOjQwMDAwMDAwMDB9.c2ln";
    assert_eq!(Run::new(&sb, &["inspect", valid]).output().await.code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_min_ttl_refreshes_first_when_less_is_left() {
    let idp = IdentityServer::builder()
        .settings(Settings {
            token_lifetime: Duration::from_secs(600),
            ..Settings::default()
        })
        .start()
        .await;
    let sb = Sandbox::new();
    let creds = creds(&idp);
    let first = Run::new(&sb, &args(&["token"], &creds)).output().await;
    assert_eq!(first.code(), 0, "{}", first.stderr());
    let enough = Run::new(&sb, &args(&["token", "--min-ttl", "5m"], &creds))
        .output()
        .await;
    assert_eq!(
        enough.stdout(),
        first.stdout(),
        "10 minutes left: the cached token"
    );
    assert_eq!(idp.tokens_issued(), 1);
    let more = Run::new(&sb, &args(&["token", "--min-ttl", "20m"], &creds))
        .output()
        .await;
    assert_eq!(more.code(), 0, "{}", more.stderr());
    assert_ne!(more.stdout(), first.stdout(), "refreshed first");
    assert_eq!(idp.tokens_issued(), 2);
    assert!(
        more.stderr().contains("shorter"),
        "the server's tokens are too short: {}",
        more.stderr()
    );
    let bad = Run::new(&sb, &args(&["token", "--min-ttl", "5 weeks"], &creds))
        .output()
        .await;
    assert_eq!(bad.code(), 2, "a usage error");

    // Found by the interop run against oidc-provider: a DPoP-bound token has no bearer header
    // to invalidate, and --min-ttl served the same token again.
    let dpop: Vec<String> = creds.iter().cloned().chain(["--dpop".to_owned()]).collect();
    let bound = Run::new(&sb, &args(&["token"], &dpop)).output().await;
    assert_eq!(bound.code(), 0, "{}", bound.stderr());
    let rebound = Run::new(&sb, &args(&["token", "--min-ttl", "20m"], &dpop))
        .output()
        .await;
    assert_eq!(rebound.code(), 0, "{}", rebound.stderr());
    assert_ne!(
        rebound.stdout(),
        bound.stdout(),
        "a bound token is refreshed first too"
    );
    assert_eq!(idp.tokens_issued(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_removes_exactly_the_entry_that_token_uses_and_says_so() {
    // Issue 18: with a client secret, logout resolved the login (refresh-token) key, said "the
    // cached token was removed", and left the client-credentials token in place.
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let creds = creds(&idp);
    let first = Run::new(&sb, &args(&["token"], &creds)).output().await;
    assert_eq!(first.code(), 0, "{}", first.stderr());
    let logout = Run::new(&sb, &args(&["logout"], &creds)).output().await;
    assert_eq!(logout.code(), 0, "{}", logout.stderr());
    assert!(logout.stderr().contains("was removed"), "{}", logout.stderr());
    let again = Run::new(&sb, &args(&["token"], &creds)).output().await;
    assert_ne!(
        again.stdout(),
        first.stdout(),
        "the cached token is gone: a new one was fetched"
    );
    assert_eq!(idp.tokens_issued(), 2);
    Run::new(&sb, &args(&["logout"], &creds)).output().await;
    // Issue 31: nothing is left beside the deleted token file, not even its empty lease file.
    let left: Vec<String> = std::fs::read_dir(sb.path("cache/authwire/tokens"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".authwire.lock")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let nothing = Run::new(&sb, &args(&["logout"], &creds)).output().await;
    assert!(
        nothing.stderr().contains("nothing to log out of"),
        "{}",
        nothing.stderr()
    );
}
