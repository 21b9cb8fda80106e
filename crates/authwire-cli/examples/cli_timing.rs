//! Whole-process wall time of `authwire token`: answered from the file cache vs fetched from the
//! identity provider; beside it `authwire --version` (process start alone) and the credential
//! helpers (`kube`, `git-credential get`, `docker-credential-authwire get`) answered from the cache. Figures for docs/PERFORMANCE.md; run with
//! `cargo build --release -p authwire-cli --examples && target/release/examples/cli_timing`.

#![allow(missing_docs, clippy::print_stdout)]

use authwire::{Clock, SystemClock};
use authwire_testkit::{Client, IdentityServer};
use std::path::PathBuf;
use std::time::Duration;

async fn time_runs(
    bin: &PathBuf,
    idp: &IdentityServer,
    cache: &str,
    home: &PathBuf,
    runs: usize,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = SystemClock.now();
        let out = tokio::process::Command::new(bin)
            .args([
                "token",
                "--token-url",
                &idp.token_url(),
                "--client-id",
                Client::CONFIDENTIAL_ID,
                "--cache",
                cache,
            ])
            .env("AUTHWIRE_CLIENT_SECRET", Client::CONFIDENTIAL_SECRET)
            .env("XDG_CACHE_HOME", home)
            .env("XDG_CONFIG_HOME", home)
            .output()
            .await
            .expect("run authwire");
        times.push(SystemClock.now().duration_since(start).unwrap_or_default());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    times.sort();
    times
}

/// `runs` runs of `bin args` with `stdin`, sorted wall times; every run must succeed.
async fn time_command(
    bin: &PathBuf,
    args: &[String],
    stdin: &str,
    home: &PathBuf,
    runs: usize,
) -> Vec<Duration> {
    use tokio::io::AsyncWriteExt as _;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = SystemClock.now();
        let mut child = tokio::process::Command::new(bin)
            .args(args)
            .env("AUTHWIRE_CLIENT_SECRET", Client::CONFIDENTIAL_SECRET)
            .env("XDG_CACHE_HOME", home)
            .env("XDG_CONFIG_HOME", home)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run authwire");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).await.expect("write stdin");
        drop(input);
        let out = child.wait_with_output().await.expect("wait");
        times.push(SystemClock.now().duration_since(start).unwrap_or_default());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    times.sort();
    times
}

fn report(label: &str, t: &[Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<36} median {:6.2} ms   p90 {:6.2} ms   min {:6.2} ms   ({} runs)",
        ms(t[t.len() / 2]),
        ms(t[t.len() * 9 / 10]),
        ms(t[0]),
        t.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bin = std::env::var_os("AUTHWIRE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::current_exe()
                .unwrap()
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("authwire")
        });
    let idp = IdentityServer::start().await;
    let home = std::env::temp_dir().join(format!("authwire-timing-{}", std::process::id()));
    let runs = 50;
    let fetching = time_runs(&bin, &idp, "none", &home, runs).await;
    let issued_before = idp.tokens_issued();
    time_runs(&bin, &idp, "file", &home, 1).await; // fill the cache
    let cached = time_runs(&bin, &idp, "file", &home, runs).await;
    assert_eq!(
        idp.tokens_issued(),
        issued_before + 1,
        "cached runs made no request to the IdP"
    );
    let creds: Vec<String> = [
        "--token-url",
        &idp.token_url(),
        "--client-id",
        Client::CONFIDENTIAL_ID,
        "--cache",
        "file",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let with = |first: &[&str]| -> Vec<String> {
        first
            .iter()
            .map(|s| s.to_string())
            .chain(creds.iter().cloned())
            .collect()
    };
    let version = time_command(&bin, &["--version".into()], "", &home, runs).await;
    let kube = time_command(&bin, &with(&["kube"]), "", &home, runs).await;
    let git = time_command(
        &bin,
        &with(&["git-credential", "--host", "git.example.com", "get"]),
        "protocol=https\nhost=git.example.com\n\n",
        &home,
        runs,
    )
    .await;
    // docker-credential-authwire: a link to the binary, and a profile named after the registry.
    std::fs::create_dir_all(home.join("authwire")).expect("config folder");
    std::fs::write(
        home.join("authwire/config.toml"),
        format!(
            "[profiles.\"registry.example.com\"]\ntoken_url = \"{}\"\nclient_id = \"{}\"\ncache = \"file\"\n",
            idp.token_url(),
            Client::CONFIDENTIAL_ID
        ),
    )
    .expect("write the profile");
    let link = home.join("docker-credential-authwire");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&bin, &link).expect("link");
    let docker = time_command(
        &link,
        &["get".into()],
        "https://registry.example.com\n",
        &home,
        runs,
    )
    .await;
    assert_eq!(
        idp.tokens_issued(),
        issued_before + 1,
        "the helpers answered from the same cache"
    );
    report("authwire --version (process start)", &version);
    report("authwire token, fetching (--cache none)", &fetching);
    report("authwire token, cached (--cache file)", &cached);
    report("authwire kube, cached", &kube);
    report("authwire git-credential get, cached", &git);
    report("docker-credential-authwire get, cached", &docker);
    let _ = std::fs::remove_dir_all(&home);
}
