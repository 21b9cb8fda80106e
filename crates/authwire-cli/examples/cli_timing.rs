//! Whole-process wall time of `authwire token`: answered from the file cache vs fetched from the
//! identity provider. Figures for docs/PERFORMANCE.md; run with
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
    report("authwire token, fetching (--cache none)", &fetching);
    report("authwire token, cached (--cache file)", &cached);
    let _ = std::fs::remove_dir_all(&home);
}
