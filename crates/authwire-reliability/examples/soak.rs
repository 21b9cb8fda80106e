//! The soak: `cargo xtask soak --minutes N`.
//!
//! 64 tasks send requests through the reqwest middleware to the testkit's API for N minutes, with
//! 2-second tokens from the testkit's identity provider, while a fault injector takes the
//! identity provider down at random (503s, 429s with Retry-After, hangs) for short spells, keeping
//! it up more than half of the time. Every 10 seconds and at the end it reports requests,
//! refreshes, failures seen by callers and the process's resident memory.
//!
//! Target: zero failures seen by callers, and no memory growth.

#![allow(missing_docs, clippy::print_stdout)]

use authwire::{Authorizer, Clock, SystemClock};
use authwire_reqwest::AuthMiddleware;
use authwire_testkit::{Fault, IdentityServer, ResourceServer, Settings};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

/// Time since `start`, read through the Clock seam.
fn elapsed(start: SystemTime) -> Duration {
    SystemClock.now().duration_since(start).unwrap_or_default()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// A small xorshift generator: the injector needs variety, not cryptography.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    failed_auth: AtomicU64,
    unauthorized: AtomicU64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let minutes: f64 = std::env::args()
        .skip_while(|a| a != "--minutes")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(1.0);
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let idp = Arc::new(
        IdentityServer::builder()
            .settings(Settings {
                token_lifetime: Duration::from_secs(2),
                ..Settings::default()
            })
            .start()
            .await,
    );
    let api = ResourceServer::start(&idp).await;
    let provider = idp
        .confidential_client()
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    // Backoff scaled to 2-second tokens (the defaults suit tokens that live minutes or hours).
    let authorizer = Authorizer::builder(provider)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .refresh_timeout(Duration::from_millis(400))
        .build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::for_origins(authorizer.clone(), [api.url()]).unwrap())
        .build();
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let down_ms = Arc::new(AtomicU64::new(0));
    let rss_start = rss_kib();
    let start = SystemClock.now();
    println!(
        "soak: {minutes} min, 64 tasks, 2 s tokens, random identity-provider faults; RSS at start {rss_start} KiB"
    );

    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (client, url, counts, stop) = (client.clone(), api.url(), counts.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                counts.requests.fetch_add(1, Relaxed);
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => counts.ok.fetch_add(1, Relaxed),
                    Ok(r) if r.status() == 401 => counts.unauthorized.fetch_add(1, Relaxed),
                    Ok(_) => counts.failed.fetch_add(1, Relaxed),
                    Err(reqwest_middleware::Error::Middleware(_)) => counts.failed_auth.fetch_add(1, Relaxed),
                    Err(_) => counts.failed.fetch_add(1, Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // The injector: up for 0.6-2 s, then down for 0.1-0.5 s with one kind of fault.
    let injector = {
        let (idp, stop, down_ms) = (idp.clone(), stop.clone(), down_ms.clone());
        tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
            while !stop.load(Relaxed) {
                tokio::time::sleep(rng.millis(600, 2000)).await;
                let fault = match rng.next() % 4 {
                    0 => Fault::status(503, "down"),
                    1 => Fault::oauth_error(429, "slow_down", "rate limited").retry_after("0"),
                    2 => Fault::status(500, "<html>oops</html>").content_type("text/html"),
                    _ => Fault::status(503, "").delay(Duration::from_secs(2)), // hangs past the timeouts
                };
                let spell = rng.millis(100, 500);
                idp.inject(fault.times(1_000_000));
                tokio::time::sleep(spell).await;
                idp.clear_faults();
                down_ms.fetch_add(spell.as_millis() as u64, Relaxed);
            }
        })
    };

    let mut next_report = Duration::from_secs(10);
    while elapsed(start) < duration {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if elapsed(start) >= next_report {
            next_report += Duration::from_secs(10);
            report(&start, &counts, &authorizer, &idp, &down_ms, rss_start);
        }
    }
    stop.store(true, Relaxed);
    let _ = injector.await;
    for t in tasks {
        let _ = t.await;
    }
    println!("-- final");
    report(&start, &counts, &authorizer, &idp, &down_ms, rss_start);
    let failures =
        counts.failed.load(Relaxed) + counts.failed_auth.load(Relaxed) + counts.unauthorized.load(Relaxed);
    if failures > 0 {
        println!("soak: {failures} failures seen by callers");
        std::process::exit(1);
    }
}

fn report(
    start: &SystemTime,
    c: &Counts,
    a: &Authorizer,
    idp: &IdentityServer,
    down_ms: &AtomicU64,
    rss_start: u64,
) {
    let m = a.metrics();
    let elapsed = elapsed(*start);
    let up = 100.0 - 100.0 * down_ms.load(Relaxed) as f64 / elapsed.as_millis() as f64;
    println!(
        "{:6.0}s  requests {:>8}  ok {:>8}  failed {}/{}/{} (http/auth/401)  IdP up {up:4.1}%  token requests {:>5}  tokens {:>4}  refreshes {:>4} (background {:>4})  stale served {:>6}  RSS {} KiB (start {rss_start})",
        elapsed.as_secs_f64(),
        c.requests.load(Relaxed),
        c.ok.load(Relaxed),
        c.failed.load(Relaxed),
        c.failed_auth.load(Relaxed),
        c.unauthorized.load(Relaxed),
        idp.token_requests(),
        idp.tokens_issued(),
        m.fetches,
        m.background_refreshes,
        m.stale_served,
        rss_kib()
    );
}
