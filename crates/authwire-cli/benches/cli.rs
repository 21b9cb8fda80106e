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
    let out = Command::new(env!("CARGO_BIN_EXE_authwire"))
        .args(args)
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

    let mut group = c.benchmark_group("cli");
    group.sample_size(30);
    group.bench_function("version", |b| b.iter(|| run(home.path(), &["--version"])));
    group.bench_function("token_cached", |b| b.iter(|| run(home.path(), &token)));
    group.finish();
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
