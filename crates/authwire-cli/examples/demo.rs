//! `cargo xtask demo`: the authwire pipeline at work, against an identity provider and an API
//! that run on loopback in this process (the testkit's), with tokens that live 10 seconds.
//!
//! It shows, in under a minute and with no configuration: the first fetch, cache hits, a refresh
//! ahead of expiry in the background, a revoked token answered by one refresh and one retry, and
//! an identity provider outage survived on the still-valid token; then the same from a terminal
//! with the `authwire` binary.

#![allow(missing_docs, clippy::print_stdout)]

use authwire::secrecy::ExposeSecret;
use authwire::{Authorizer, Clock, Metrics, SystemClock, TokenState};
use authwire_reqwest::AuthMiddleware;
use authwire_testkit::{Client, Fault, IdentityServer, ResourceServer, Settings};
use reqwest_middleware::ClientWithMiddleware;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const LIFETIME: Duration = Duration::from_secs(10);

struct Demo {
    idp: IdentityServer,
    api: ResourceServer,
    authorizer: Authorizer,
    client: ClientWithMiddleware,
    start: SystemTime,
    sent: u32,
    ok: u32,
    forced_401s: usize,
}

impl Demo {
    fn t(&self) -> String {
        format!("{:5.2}s", elapsed(self.start).as_secs_f64())
    }

    /// One request, narrated step by step.
    async fn request(&mut self, path: &str) {
        let before = self.authorizer.metrics();
        let check = match self.authorizer.state() {
            TokenState::Missing => "no token cached".to_owned(),
            TokenState::Fresh { expires_in: Some(e) } => format!("fresh, expires in {:.1}s", e.as_secs_f64()),
            TokenState::RefreshDue { expires_in: Some(e) } => {
                format!("REFRESH DUE, expires in {:.1}s", e.as_secs_f64())
            }
            TokenState::Expired => "expired".to_owned(),
            other => format!("{other:?}"),
        };
        let response = self.client.get(format!("{}{path}", self.api.url())).send().await;
        self.sent += 1;
        let after = self.authorizer.metrics();
        let refresh = describe_refresh(&before, &after);
        let token = self
            .authorizer
            .token()
            .await
            .map(|t| fingerprint(t.access_token().expose_secret()));
        let outcome = match &response {
            Ok(r) => {
                if r.status().is_success() {
                    self.ok += 1;
                }
                r.status().as_u16().to_string()
            }
            Err(e) => format!("error: {}", authwire::error_chain(e)),
        };
        println!(
            "  {}  1 check: {check:<30} 2 {refresh:<34} 3+4 header for token {}  5 GET {path} -> {outcome}",
            self.t(),
            token.unwrap_or_else(|_| "none".into()),
        );
    }

    fn token_age(&self) -> Duration {
        let issued = self
            .authorizer
            .token_now()
            .and_then(|t| t.issued_at())
            .unwrap_or_else(|| SystemClock.now());
        SystemClock.now().duration_since(issued).unwrap_or_default()
    }
}

trait TokenNow {
    fn token_now(&self) -> Option<std::sync::Arc<authwire::Token>>;
}

impl TokenNow for Authorizer {
    /// The cached token, without waiting for a refresh.
    fn token_now(&self) -> Option<std::sync::Arc<authwire::Token>> {
        let fut = std::pin::pin!(self.token());
        match std::future::Future::poll(fut, &mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(Ok(t)) => Some(t),
            _ => None,
        }
    }
}

fn describe_refresh(before: &Metrics, after: &Metrics) -> String {
    if after.invalidations > before.invalidations {
        "refresh: token REJECTED -> refreshed".into()
    } else if after.background_refreshes > before.background_refreshes {
        "refresh: started in the BACKGROUND".into()
    } else if after.transient_failures > before.transient_failures && after.stale_served > before.stale_served
    {
        "refresh: FAILED, serving valid token".into()
    } else if after.stale_served > before.stale_served {
        "refresh: failing, serving valid token".into()
    } else if after.fetches > before.fetches {
        "refresh: fetched from the IdP".into()
    } else {
        "refresh: not needed (cache hit)".into()
    }
}

/// A short, one-way fingerprint of a token: shows when it changes, reveals nothing.
fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!("#{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2])
}

/// Time since `start`, read through the Clock seam.
fn elapsed(start: SystemTime) -> Duration {
    SystemClock.now().duration_since(start).unwrap_or_default()
}

fn section(title: &str) {
    println!("\n== {title}");
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // What failed and why, on one line: Display with its causes, not Debug.
            eprintln!("demo: {}", authwire::error_chain(&*e));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // The library's own events, prefixed, so the refreshes are visible as they happen.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .without_time()
                .with_ansi(false)
                .with_writer(std::io::stdout)
                .compact(),
        )
        .with(tracing_subscriber::filter::Targets::new().with_target("authwire", tracing::Level::INFO))
        .init();

    println!(
        "authwire demo: an identity provider and an API on loopback, tokens that live {}s.",
        LIFETIME.as_secs()
    );
    println!("Each request line shows the pipeline's five steps:");
    println!(
        "  1 check expiry (check_expiry) | 2 refresh if needed (Authorizer::refresh, one shared flight)"
    );
    println!(
        "  3+4 retrieve the token and prepare its Authorization header (once per token; shown by a fingerprint)"
    );
    println!("  5 update the request's headers and send it (here through the reqwest middleware)");

    let idp = IdentityServer::builder()
        .settings(Settings {
            token_lifetime: LIFETIME,
            ..Settings::default()
        })
        .start()
        .await;
    let api = ResourceServer::start(&idp).await;
    let provider = idp.confidential_client().scope("orders:read").build()?;
    // Short backoffs so the outage below plays out in seconds (defaults: 1 s to 60 s).
    let authorizer = Authorizer::builder(provider)
        .backoff(Duration::from_millis(300), Duration::from_millis(500))
        .build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::for_origins(authorizer.clone(), [api.url()])?)
        .build();
    println!("\nidentity provider: {}   API: {}", idp.issuer(), api.url());
    let mut d = Demo {
        idp,
        api,
        authorizer,
        client,
        start: SystemClock.now(),
        sent: 0,
        ok: 0,
        forced_401s: 0,
    };

    section("1. The first request: nothing is cached, so one token is fetched");
    d.request("/v1/orders").await;

    section("2. Cache hits: the next requests reuse the token (no lock, no call to the IdP)");
    for _ in 0..4 {
        sleep_ms(200).await;
        d.request("/v1/orders").await;
    }
    println!(
        "  token requests seen by the IdP so far: {}",
        d.idp.token_requests()
    );

    section(
        "3. Refresh ahead of expiry: inside the refresh window, callers still get the current token at once",
    );
    let before = d.authorizer.metrics().fetches;
    while d.authorizer.metrics().fetches == before && elapsed(d.start) < Duration::from_secs(20) {
        sleep_ms(400).await;
        d.request("/v1/orders").await;
    }
    sleep_ms(100).await;
    d.request("/v1/orders").await;

    section("4. A revoked token: the API answers 401, the middleware refreshes once and retries once");
    d.api.reject_next(1);
    d.forced_401s += 1;
    d.request("/v1/orders/42").await;

    section(
        "5. Identity provider outage: every token request fails with 503; the still-valid token keeps working",
    );
    // The token refreshes 5-6 s into its 10 s life; the outage covers that, and ends early
    // enough for a background retry to succeed before the token's 7.5 s of use run out.
    while d.token_age() < Duration::from_millis(4500) {
        sleep_ms(100).await;
    }
    d.idp.inject(
        Fault::status(503, "upstream unavailable")
            .content_type("text/plain")
            .times(1_000),
    );
    println!("  {}  (the IdP is down from now on)", d.t());
    while d.token_age() < Duration::from_millis(6200) {
        sleep_ms(400).await;
        d.request("/v1/orders").await;
    }
    d.idp.clear_faults();
    println!("  {}  (the IdP is back)", d.t());
    for _ in 0..4 {
        sleep_ms(400).await;
        d.request("/v1/orders").await;
    }

    let m = d.authorizer.metrics();
    let expiry_401s = d.api.unauthorized() - d.forced_401s;
    section("Summary");
    println!(
        "  requests made: {}, all answered 200: {}; HTTP requests the API received: {} (one was the retry in step 4)",
        d.sent,
        d.ok == d.sent,
        d.api.requests()
    );
    println!(
        "  401s seen: {} (forced by the revocation in step 4); 401s from an expired token: {expiry_401s}",
        d.forced_401s
    );
    println!(
        "  token requests to the IdP: {} ({} tokens issued, {} failed during the outage)",
        d.idp.token_requests(),
        d.idp.tokens_issued(),
        m.transient_failures
    );
    println!(
        "  refreshes: {} ({} started in the background ahead of expiry); calls served the still-valid token while refresh failed: {}",
        m.fetches, m.background_refreshes, m.stale_served
    );
    assert_eq!(expiry_401s, 0, "no request went out with an expired token");

    if let Ok(cli) = std::env::var("AUTHWIRE_DEMO_CLI") {
        section("6. The same from a terminal: `authwire curl -v` twice (the second run is a cache hit)");
        let home = std::env::temp_dir().join(format!("authwire-demo-{}", std::process::id()));
        for run in 1..=2 {
            println!(
                "  $ authwire curl -v --token-url {} --client-id {} --cache file {}/v1/orders",
                d.idp.token_url(),
                Client::CONFIDENTIAL_ID,
                d.api.url()
            );
            let out = tokio::process::Command::new(&cli)
                .args([
                    "curl",
                    "-v",
                    "--token-url",
                    &d.idp.token_url(),
                    "--client-id",
                    Client::CONFIDENTIAL_ID,
                    "--cache",
                    "file",
                ])
                .arg(format!("{}/v1/orders", d.api.url()))
                .env("AUTHWIRE_CLIENT_SECRET", Client::CONFIDENTIAL_SECRET)
                .env("XDG_CACHE_HOME", &home)
                .env("XDG_CONFIG_HOME", &home)
                .output()
                .await?;
            for line in String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| l.contains("step"))
            {
                println!("    {line}");
            }
            println!("    stdout: {}", String::from_utf8_lossy(&out.stdout).trim());
            if run == 1 {
                println!("  token requests seen by the IdP: {}", d.idp.token_requests());
            }
        }
        println!(
            "  token requests seen by the IdP: {} (unchanged: the second process used the cached token)",
            d.idp.token_requests()
        );
        let _ = std::fs::remove_dir_all(&home);
    }
    println!("\ndone in {:.1}s", elapsed(d.start).as_secs_f64());
    Ok(())
}
