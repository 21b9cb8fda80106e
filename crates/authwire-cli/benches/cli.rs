//! Issue 16, part 3 in criterion: a cached `authwire token` beside `authwire --version` (process
//! start alone), whole process, in one run. The identity provider is the testkit's, on loopback;
//! the bench checks that the cached runs made no request to it. (`examples/cli_timing.rs` gives
//! medians and p90 over 50 runs, and the credential helpers.)

#![allow(missing_docs)]

use authwire_testkit::{Client, IdentityServer, TempDir};
use criterion::{Criterion, criterion_group, criterion_main};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn run(home: &Path, args: &[&str]) {
    run_with(home, args, &[]);
}

fn run_with(home: &Path, args: &[&str], env: &[(&str, &str)]) {
    let out = Command::new(env!("CARGO_BIN_EXE_authwire"))
        .args(args)
        .envs(env.iter().copied())
        .env("AUTHWIRE_CLIENT_SECRET", Client::CONFIDENTIAL_SECRET)
        .env("XDG_CACHE_HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .output()
        .expect("run authwire");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn cli(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let idp = rt.block_on(IdentityServer::start());
    let home = TempDir::new("authwire-cli-bench");
    let token_url = idp.token_url();
    let token = [
        "token",
        "--token-url",
        &token_url,
        "--client-id",
        Client::CONFIDENTIAL_ID,
        "--cache",
        "file",
    ];
    run(home.path(), &token); // fill the cache
    let issued = idp.tokens_issued();

    // Issue 30: `--credential gcp` on a developer machine: a gcloud login (a fake `gcloud` that
    // counts its runs) and a "metadata server" that accepts and never answers, as
    // the link-local metadata address does off Google Cloud.
    let gcloud_dir = TempDir::new("authwire-cli-bench-gcloud");
    let ran = gcloud_dir.path().join("ran");
    authwire_testkit::fake_program(
        &gcloud_dir,
        "gcloud",
        &format!(
            "echo x >> {}\necho '{{\"credential\": {{\"access_token\": \"ya29.bench\", \"token_expiry\": \"2099-01-01T00:00:00Z\"}}}}'",
            ran.display()
        ),
    );
    let silent = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let silent_host = silent.local_addr().unwrap().to_string();
    rt.spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let gcloud_path = gcloud_dir.path().to_str().unwrap().to_owned();
    let gcp_env = [
        ("NO_GCE_CHECK", ""),
        ("GCE_METADATA_IP", silent_host.as_str()),
        ("GCE_METADATA_HOST", silent_host.as_str()),
        ("PATH", gcloud_path.as_str()),
    ];
    let gcp = ["token", "--credential", "gcp", "--cache", "file"];
    run_with(home.path(), &gcp, &gcp_env); // fill the cache (and probe once)

    let mut group = c.benchmark_group("cli");
    group.sample_size(30);
    group.bench_function("version", |b| b.iter(|| run(home.path(), &["--version"])));
    group.bench_function("token_cached", |b| b.iter(|| run(home.path(), &token)));
    group.bench_function("token_cached_gcloud", |b| {
        b.iter(|| run_with(home.path(), &gcp, &gcp_env))
    });
    group.finish();
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap().lines().count(),
        1,
        "gcloud ran once, for the first token"
    );
    assert_eq!(
        idp.tokens_issued(),
        issued,
        "the cached runs made no request to the IdP"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    targets = cli
}
criterion_main!(benches);
