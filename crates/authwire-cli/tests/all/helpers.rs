//! Issue 17: the CLI as the credential helper of kubectl, git and docker, driven by the real
//! tools where they are installed here (kubectl, git), and by the exact protocol otherwise.

use super::*;
use authwire_testkit::ResourceServer;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_authwire")
}

/// Run a tool (kubectl, git) with the sandbox's HOME and the client secret in its environment,
/// as a user's shell would have them; the tool runs authwire itself.
async fn tool(sb: &Sandbox, program: &str, args: &[&str], stdin: &str) -> Out {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("HOME", sb.path("home"))
        .env("XDG_CONFIG_HOME", sb.path("config"))
        .env("XDG_CACHE_HOME", sb.path("cache"))
        .env("AUTHWIRE_CLIENT_SECRET", Client::CONFIDENTIAL_SECRET)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", sb.path("gitconfig"))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("KUBECONFIG")
        .env_remove("BROWSER")
        .env_remove("DISPLAY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the tool finished")
        .unwrap();
    Out(output)
}

fn installed(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn kubeconfig(sb: &Sandbox, server: &str, ca_pem: &[u8], plugin_args: &[String]) -> PathBuf {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let args = plugin_args
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let path = sb.path("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: authwire\ncurrent-context: test\nusers:\n- name: authwire\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: {}\n      args: [\"kube\", {args}]\n",
            bin()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_the_exec_plugin_and_sends_the_token() {
    // .ci/run installs Debian's kubernetes-client when kubectl is missing. v1beta1 in the
    // kubeconfig: every kubectl since 1.11 speaks it (v1 needs 1.22).
    assert!(
        installed("kubectl"),
        "kubectl is needed for this test (Debian's kubernetes-client)"
    );
    let idp = IdentityServer::start().await;
    // client-go sends exec credentials only over TLS.
    let api = ResourceServer::start_tls(&idp).await;
    let sb = Sandbox::new();
    let config = kubeconfig(&sb, &api.url(), api.ca_pem().unwrap(), &creds(&idp));
    let config = config.to_str().unwrap();
    for round in 1..=2 {
        let out = tool(
            &sb,
            "kubectl",
            &[
                "--kubeconfig",
                config,
                "get",
                "--raw",
                "/api/v1/namespaces/default/pods",
            ],
            "",
        )
        .await;
        assert_eq!(out.code(), 0, "round {round}: {}", out.stderr());
        let body: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
        assert_eq!(body["sub"], Client::CONFIDENTIAL_ID, "the API saw a valid token");
        assert_eq!(body["path"], "/api/v1/namespaces/default/pods");
    }
    assert_eq!(
        idp.tokens_issued(),
        1,
        "the second kubectl run used the cached token"
    );
    assert!(
        api.authorization_seen()
            .iter()
            .all(|a| a.as_deref().is_some_and(|a| a.starts_with("Bearer ")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exec_credential_has_the_shape_and_version_kubectl_asks_for() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let creds = creds(&idp);
    for version in [
        "client.authentication.k8s.io/v1",
        "client.authentication.k8s.io/v1beta1",
    ] {
        let info =
            format!(r#"{{"kind":"ExecCredential","apiVersion":"{version}","spec":{{"interactive":false}}}}"#);
        let out = Run::new(&sb, &args(&["kube"], &creds))
            .env("KUBERNETES_EXEC_INFO", &info)
            .output()
            .await;
        assert_eq!(out.code(), 0, "{}", out.stderr());
        let doc: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
        assert_eq!(doc["kind"], "ExecCredential");
        assert_eq!(doc["apiVersion"], version);
        assert!(doc["status"]["token"].as_str().is_some_and(|t| t.len() > 20));
        let exp = doc["status"]["expirationTimestamp"].as_str().unwrap();
        assert!(exp.ends_with('Z') && exp.len() == 20, "RFC 3339 in UTC: {exp}");
        assert!(out.stderr().is_empty(), "nothing on stderr: {}", out.stderr());
    }

    // --id-token sends the OpenID Connect ID token, with its own expiry.
    let mut with_openid = creds.clone();
    with_openid.extend(["--scope".into(), "openid".into()]);
    let out = Run::new(&sb, &args(&["kube", "--id-token"], &with_openid))
        .output()
        .await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let doc: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    let id = doc["status"]["token"].as_str().unwrap();
    let claims = authwire_jwt_claims(id);
    assert_eq!(claims["aud"], Client::CONFIDENTIAL_ID);
    assert!(claims.get("scope").is_none(), "an ID token, not the access token");
    let without = Run::new(&sb, &args(&["kube", "--id-token"], &creds))
        .output()
        .await;
    assert_eq!(without.code(), 1);
    assert!(without.assert_one_line_error().contains("--scope openid"));
}

fn authwire_jwt_claims(jwt: &str) -> serde_json::Value {
    serde_json::Value::Object(authwire_jwt::inspect(jwt).unwrap().all().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exec_plugin_does_not_prompt_when_kubectl_says_no_one_is_there() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let public = public_client(&idp, "file");
    let out = Run::new(&sb, &args(&["kube"], &public))
        .env("AUTHWIRE_CLIENT_SECRET", "")
        .env(
            "KUBERNETES_EXEC_INFO",
            r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#,
        )
        .output()
        .await;
    assert_eq!(out.code(), 3);
    let line = out.assert_one_line_error();
    assert!(
        line.contains("run `authwire login --issuer ")
            && line.ends_with("(in a terminal: kubectl runs this plugin without one)"),
        "{line}"
    );
    assert!(out.stdout().is_empty());
    assert_eq!(idp.authorization_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_credential_fill_and_reject_through_git_itself() {
    assert!(installed("git"), "git is needed for this test");
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let host = "127.0.0.1:8443";
    let helper = format!(
        "!'{}' git-credential --token-url {} --client-id {} --cache file --host {host} --username x-access-token",
        bin(),
        idp.token_url(),
        Client::CONFIDENTIAL_ID
    );
    std::fs::write(
        sb.path("gitconfig"),
        format!(
            "[credential]\n\thelper = \"{}\"\n",
            helper.replace('\\', "\\\\").replace('"', "\\\"")
        ),
    )
    .unwrap();
    let fill = |input: String| {
        let sb = &sb;
        async move { tool(sb, "git", &["credential", "fill"], &input).await }
    };
    let first = fill(format!("protocol=http\nhost={host}\n\n")).await;
    assert_eq!(first.code(), 0, "{}", first.stderr());
    let answer = Description::of(&first.stdout());
    assert_eq!(answer.get("username"), Some("x-access-token"));
    let token = answer.get("password").unwrap().to_owned();
    assert!(
        answer
            .get("password_expiry_utc")
            .is_some_and(|e| e.parse::<u64>().is_ok())
    );

    // Served from the cache the next time.
    let again = fill(format!("protocol=http\nhost={host}\n\n")).await;
    assert_eq!(
        Description::of(&again.stdout()).get("password"),
        Some(token.as_str())
    );
    assert_eq!(idp.tokens_issued(), 1);

    // git 2.46+: a Bearer answer when git can send it and the server asked for Bearer.
    let bearer = fill(format!(
        "capability[]=authtype\nprotocol=http\nhost={host}\nwwwauth[]=Bearer realm=\"x\"\n\n"
    ))
    .await;
    let b = Description::of(&bearer.stdout());
    assert_eq!(b.get("authtype"), Some("Bearer"), "{}", bearer.stdout());
    assert_eq!(b.get("credential"), Some(token.as_str()));

    // `reject` (git's erase) forgets the rejected token: the next fill brings a new one.
    let reject = tool(
        &sb,
        "git",
        &["credential", "reject"],
        &format!("protocol=http\nhost={host}\nusername=x-access-token\npassword={token}\n\n"),
    )
    .await;
    assert_eq!(reject.code(), 0, "{}", reject.stderr());
    let renewed = fill(format!("protocol=http\nhost={host}\n\n")).await;
    let renewed = Description::of(&renewed.stdout())
        .get("password")
        .unwrap()
        .to_owned();
    assert_ne!(renewed, token);
    assert_eq!(idp.tokens_issued(), 2);

    // A host that is not configured gets nothing from authwire (git then has no credential).
    let other = fill("protocol=https\nhost=elsewhere.example\n\n".into()).await;
    assert_ne!(other.code(), 0);
    assert!(!other.stdout().contains(&renewed));
    // Nor does plain http to a host that is not loopback, even when configured.
    assert_eq!(idp.tokens_issued(), 2);
    for out in [&first, &again, &bearer, &other] {
        assert!(!out.stderr().contains(&token) && !out.stderr().contains(&renewed));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clones_over_http_from_a_server_that_checks_the_token() {
    assert!(installed("git"), "git is needed for this test");
    let idp = IdentityServer::start().await;
    let server = ResourceServer::start(&idp).await;
    server.accept_basic(true);
    let sb = Sandbox::new();
    // A repository with one commit, published for git's dumb HTTP protocol.
    let git = |args: &[&str], dir: &std::path::Path| {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    let work = sb.path("work");
    let served = sb.path("served");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&served).unwrap();
    git(&["init", "-q", "-b", "main"], &work);
    std::fs::write(work.join("README"), "hello from a protected repository\n").unwrap();
    git(&["add", "README"], &work);
    git(&["commit", "-q", "-m", "first"], &work);
    git(
        &["clone", "-q", "--bare", work.to_str().unwrap(), "repo.git"],
        &served,
    );
    git(&["update-server-info"], &served.join("repo.git"));
    server.serve_files(&served);

    let host = server.url().trim_start_matches("http://").to_owned();
    let helper = format!(
        "!'{}' git-credential --token-url {} --client-id {} --cache file --host {host}",
        bin(),
        idp.token_url(),
        Client::CONFIDENTIAL_ID
    );
    std::fs::write(
        sb.path("gitconfig"),
        format!("[credential]\n\thelper = \"{}\"\n", helper.replace('"', "\\\"")),
    )
    .unwrap();
    let url = format!("{}/repo.git", server.url());
    let clone = tool(
        &sb,
        "git",
        &["clone", "-q", &url, sb.path("clone").to_str().unwrap()],
        "",
    )
    .await;
    assert_eq!(clone.code(), 0, "{}", clone.stderr());
    assert_eq!(
        std::fs::read_to_string(sb.path("clone/README")).unwrap(),
        "hello from a protected repository\n"
    );
    assert!(server.unauthorized() >= 1, "git asked without credentials first");
    assert!(
        server
            .authorization_seen()
            .iter()
            .any(|a| a.as_deref().is_some_and(|a| a.starts_with("Basic "))),
        "then with the token as the password"
    );
    assert_eq!(idp.tokens_issued(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_credential_helper_protocol() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let registry = "registry.example.com";
    std::fs::write(
        sb.path("config/authwire/config.toml"),
        format!(
            "[profiles.\"{registry}\"]\ntoken_url = \"{}\"\nclient_id = \"{}\"\ncache = \"file\"\n\n[profiles.dev]\ntoken_url = \"{}\"\nclient_id = \"x\"\n",
            idp.token_url(),
            Client::CONFIDENTIAL_ID,
            idp.token_url()
        ),
    )
    .unwrap();
    // Installed as a link named docker-credential-authwire.
    let link = sb.path("docker-credential-authwire");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let helper = |action: &str, input: &str| {
        let mut cmd = std::process::Command::new(&link);
        cmd.arg(action)
            .env("HOME", sb.path("home"))
            .env("XDG_CONFIG_HOME", sb.path("config"))
            .env("XDG_CACHE_HOME", sb.path("cache"))
            .env("AUTHWIRE_CLIENT_SECRET", Client::CONFIDENTIAL_SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let got = helper("get", &format!("https://{registry}\n"));
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(doc["ServerURL"], format!("https://{registry}"));
    assert_eq!(doc["Username"], "oauth2accesstoken");
    assert!(doc["Secret"].as_str().is_some_and(|s| s.len() > 20));
    assert_eq!(
        doc.as_object().unwrap().len(),
        3,
        "exactly the three fields docker reads"
    );

    // No profile for that registry: docker's "not found" answer, exit 1.
    let missing = helper("get", "https://other.example.com\n");
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stdout).trim(),
        "credentials not found in native keychain"
    );

    // Issue 24, item 5: `get` was looser than `list`: it answered for a profile whose name is
    // not a registry host, and sent the token for a plain-http URL off loopback. One rule now.
    for server in ["https://dev\n", "dev\n", &format!("http://{registry}\n")] {
        let refused = helper("get", server);
        assert_eq!(refused.status.code(), Some(1), "{server:?}");
        assert_eq!(
            String::from_utf8_lossy(&refused.stdout).trim(),
            "credentials not found in native keychain",
            "{server:?}"
        );
    }
    assert_eq!(
        idp.tokens_issued(),
        1,
        "no token was fetched for a refused server"
    );

    let listed = helper("list", "");
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(list, serde_json::json!({ registry: "oauth2accesstoken" }));

    // Issue 31: `--help` is answered, on stdout, exit 0.
    let help = helper("--help", "");
    assert!(help.status.success(), "{}", String::from_utf8_lossy(&help.stderr));
    assert!(
        String::from_utf8_lossy(&help.stdout)
            .starts_with("docker-credential-authwire: docker's credential helper"),
        "{}",
        String::from_utf8_lossy(&help.stdout)
    );

    assert!(
        helper("store", r#"{"ServerURL":"x","Username":"u","Secret":"s"}"#)
            .status
            .success()
    );
    // `store` reads its input to the end before it answers: it used to exit at once, and
    // docker (or this test) writing the input then met a broken pipe, now and then.
    let mut store = std::process::Command::new(&link)
        .arg("store")
        .env("HOME", sb.path("home"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        store.try_wait().unwrap().is_none(),
        "store answered before its input ended"
    );
    drop(store.stdin.take());
    assert!(store.wait().unwrap().success());
    // erase forgets the cached token: the next get fetches a new one.
    assert!(helper("erase", &format!("https://{registry}\n")).status.success());
    let again = helper("get", &format!("https://{registry}\n"));
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_ne!(again["Secret"], doc["Secret"]);
    assert_eq!(idp.tokens_issued(), 2);
}

/// A credential description as git prints it.
struct Description(Vec<(String, String)>);

impl Description {
    fn of(text: &str) -> Self {
        Self(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_cli_gets_registry_credentials_from_the_helper() {
    // `docker manifest inspect` talks to the registry itself (no engine needed) and asks the
    // credential helper named in config.json's credHelpers for the registry's credentials.
    assert!(installed("docker"), "the docker CLI is needed for this test");
    let idp = IdentityServer::start().await;
    let registry = ResourceServer::start(&idp).await;
    registry.accept_basic(true);
    let sb = Sandbox::new();
    let served = sb.path("registry");
    std::fs::create_dir_all(served.join("v2/team/app/manifests")).unwrap();
    // An image manifest, and a manifest list that points at it by digest (inspect reads both).
    let image = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
        "layers": []
    })
    .to_string();
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(image.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let digest = format!("sha256:{hex}");
    let list = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": image.len(),
            "digest": digest,
            "platform": {"architecture": "amd64", "os": "linux"}
        }]
    });
    let manifests = served.join("v2/team/app/manifests");
    std::fs::write(manifests.join("v1"), list.to_string()).unwrap();
    std::fs::write(manifests.join(&digest), &image).unwrap();
    // The image's config blob: `{}`, whose SHA-256 the image names.
    let blobs = served.join("v2/team/app/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(
        blobs.join("sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"),
        "{}",
    )
    .unwrap();
    registry.serve_files(&served);
    let host = registry.url().trim_start_matches("http://").to_owned();
    std::fs::write(
        sb.path("config/authwire/config.toml"),
        format!(
            "[profiles.\"{host}\"]\ntoken_url = \"{}\"\nclient_id = \"{}\"\ncache = \"file\"\n",
            idp.token_url(),
            Client::CONFIDENTIAL_ID
        ),
    )
    .unwrap();
    let bin_dir = sb.path("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(bin(), bin_dir.join("docker-credential-authwire")).unwrap();
    let docker_config = sb.path("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::write(
        docker_config.join("config.json"),
        serde_json::json!({"credHelpers": {host.clone(): "authwire"}}).to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args([
        "--config",
        docker_config.to_str().unwrap(),
        "manifest",
        "inspect",
        "--insecure",
        &format!("{host}/team/app:v1"),
    ])
    .env("PATH", path)
    .env("HOME", sb.path("home"))
    .env("XDG_CONFIG_HOME", sb.path("config"))
    .env("XDG_CACHE_HOME", sb.path("cache"))
    .env("AUTHWIRE_CLIENT_SECRET", Client::CONFIDENTIAL_SECRET)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&digest), "{stdout}");
    assert_eq!(idp.tokens_issued(), 1);
    assert!(
        registry
            .authorization_seen()
            .iter()
            .any(|a| a.as_deref().is_some_and(|a| a.starts_with("Basic ")))
    );
}
