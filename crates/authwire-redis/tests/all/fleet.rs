//! Several OS processes (this test binary, run again as `fleet_child`) sharing one Redis and one
//! identity provider.

use authwire::Authorizer;
use authwire_redis::RedisStore;
use authwire_testkit::{Fault, IdentityServer, RedisServer, ResourceServer, Settings};
use std::process::Stdio;
use std::time::Duration;

const CHILD_ENV: &str = "AUTHWIRE_FLEET_CHILD";

/// What a child does, passed as JSON in its environment.
fn child_config(idp: &IdentityServer, api: &ResourceServer, redis: Option<&str>, seconds: u64) -> String {
    serde_json::json!({
        "token_url": idp.token_url(),
        "api": api.url(),
        "redis": redis,
        "seconds": seconds,
    })
    .to_string()
}

fn spawn_child(config: &str) -> tokio::process::Child {
    tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "fleet::fleet_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The child's report: the line `FLEET-RESULT {...}` on its stdout.
async fn report(child: tokio::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("FLEET-RESULT ").map(|(_, json)| json))
        .unwrap_or_else(|| panic!("no report from the child: {stdout}"));
    let mut report: serde_json::Value = serde_json::from_str(line).unwrap();
    // What the child warned of (store errors, say): shown with the report when a check fails.
    let warnings = String::from_utf8_lossy(&out.stderr);
    if !warnings.trim().is_empty() {
        report["warnings"] = warnings.trim().into();
    }
    report
}

/// Run as a child process: an authorizer over the shared Redis (if any) sending requests to the
/// API every 50 ms for the configured time.
/// Ignored: the entry point of the child processes, not a test (the parents run it with
/// `--ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the fleet tests' child processes"]
#[allow(clippy::print_stdout)]
async fn fleet_child() {
    let Ok(config) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    // Warnings go to the parent (stderr is piped to it), with the time they were seen.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let provider = authwire_testkit::confidential_client(config["token_url"].as_str().unwrap())
        .build()
        .unwrap();
    let mut builder = Authorizer::builder(provider)
        .refresh_timeout(Duration::from_secs(2))
        .store_timeout(Duration::from_millis(500))
        .refresh_lease_ttl(Duration::from_secs(3));
    if let Some(url) = config["redis"].as_str() {
        // One server, a cluster or sentinels, as the CLI's --redis-url names them.
        builder = builder.store(RedisStore::from_url(url).connect().await.unwrap());
    }
    let authorizer = builder.build();
    let http = reqwest::Client::new();
    let (mut ok, mut unauthorized, mut errors) = (0u32, 0u32, 0u32);
    let run = async {
        loop {
            match authorizer.authorization_header().await {
                Ok(h) => match http
                    .get(config["api"].as_str().unwrap())
                    .header("authorization", h)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) if r.status() == 401 => unauthorized += 1,
                    _ => errors += 1,
                },
                Err(_) => errors += 1,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(config["seconds"].as_u64().unwrap()), run).await;
    let m = authorizer.metrics();
    // The report to the parent process.
    println!(
        "FLEET-RESULT {}",
        serde_json::json!({"ok": ok, "unauthorized": unauthorized, "errors": errors, "fetches": m.fetches, "store_hits": m.store_hits, "store_errors": m.store_errors})
    );
}

async fn run_fleet(
    processes: usize,
    seconds: u64,
    redis: bool,
    settings: Settings,
) -> (IdentityServer, ResourceServer, Vec<serde_json::Value>) {
    let redis_server = if redis {
        Some(RedisServer::start().await)
    } else {
        None
    };
    let url = redis_server.as_ref().map(RedisServer::url);
    Fleet::start_with(processes, seconds, url.as_deref(), settings)
        .await
        .finish()
        .await
}

/// Child processes running against one identity provider, API and (optionally) Redis.
pub(crate) struct Fleet {
    pub(crate) idp: IdentityServer,
    api: ResourceServer,
    children: Vec<tokio::process::Child>,
}

impl Fleet {
    /// `processes` children sending requests for `seconds`, sharing the Redis at `redis_url`
    /// (any form [`RedisStore::from_url`] reads).
    pub(crate) async fn start(processes: usize, seconds: u64, redis_url: &str, settings: Settings) -> Self {
        Self::start_with(processes, seconds, Some(redis_url), settings).await
    }

    /// Like [`start`](Self::start), but the fleet's first token is fetched by this process and
    /// saved in the store before the children start, who begin by reading it (one `GET`).
    /// For the failover tests: what they count is then the failover's doing, not a race over
    /// the very first lease on a machine so loaded that the replicas of a cluster just formed
    /// cannot acknowledge it within the children's 500 ms (each child then fetches its own first
    /// token, as designed; the other fleet tests check a fleet's first token).
    pub(crate) async fn start_from_a_stored_token(
        processes: usize,
        seconds: u64,
        redis_url: &str,
        settings: Settings,
    ) -> Self {
        let idp = IdentityServer::builder().settings(settings).start().await;
        let store = RedisStore::from_url(redis_url)
            .lease_ack_timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap();
        let first = Authorizer::builder(
            authwire_testkit::confidential_client(idp.token_url())
                .build()
                .unwrap(),
        )
        .store(store)
        .store_timeout(Duration::from_secs(15))
        .build();
        first
            .authorization_header()
            .await
            .expect("the fleet's first token");
        assert_eq!(first.metrics().store_errors, 0, "the first token was saved");
        Self::spawn(idp, processes, seconds, Some(redis_url)).await
    }

    async fn start_with(processes: usize, seconds: u64, redis_url: Option<&str>, settings: Settings) -> Self {
        let idp = IdentityServer::builder().settings(settings).start().await;
        Self::spawn(idp, processes, seconds, redis_url).await
    }

    async fn spawn(idp: IdentityServer, processes: usize, seconds: u64, redis_url: Option<&str>) -> Self {
        let api = ResourceServer::start(&idp).await;
        let config = child_config(&idp, &api, redis_url, seconds);
        let children = (0..processes).map(|_| spawn_child(&config)).collect();
        Self { idp, api, children }
    }

    /// Wait for every child's report.
    pub(crate) async fn finish(self) -> (IdentityServer, ResourceServer, Vec<serde_json::Value>) {
        let mut reports = Vec::new();
        for child in self.children {
            reports.push(report(child).await);
        }
        (self.idp, self.api, reports)
    }
}

/// Tokens of `lifetime_secs` that come with a refresh token rotated on every use, reuse
/// revoking the family (as the OAuth 2.0 Security BCP asks of public clients' providers).
pub(crate) fn rotating(lifetime_secs: u64) -> Settings {
    Settings {
        token_lifetime: Duration::from_secs(lifetime_secs),
        refresh_token_for_client_credentials: true,
        rotate_refresh_tokens: true,
        ..Settings::default()
    }
}

pub(crate) fn sum(reports: &[serde_json::Value], field: &str) -> u64 {
    reports.iter().map(|r| r[field].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_share_one_refresh_per_token_lifetime() {
    let settings = Settings {
        token_lifetime: Duration::from_secs(3),
        ..Settings::default()
    };
    let (idp, api, reports) = run_fleet(8, 20, true, settings).await;
    let issued = idp.tokens_issued() as u64;
    eprintln!("8 processes, 20 s, 3 s tokens, Redis: {issued} tokens issued; {reports:?}");
    assert_eq!(api.unauthorized(), 0, "no request with an expired token");
    assert_eq!(sum(&reports, "unauthorized") + sum(&reports, "errors"), 0);
    assert!(sum(&reports, "ok") > 8 * 200, "requests kept flowing");
    // A 3 s token is refreshed 1.5-1.8 s after it is issued: about 12 refreshes in 20 s, plus
    // the first fetch. Eight processes refreshing on their own would cause about eight times that.
    assert!((8..=20).contains(&issued), "{issued} tokens for the whole fleet");
    // Every token was fetched by one process; a process may count one more fetch that was in
    // flight when it stopped.
    let fetches = sum(&reports, "fetches");
    assert!(
        (issued..=issued + 8).contains(&fetches),
        "{fetches} fetches for {issued} tokens"
    );
    assert!(
        sum(&reports, "store_hits") > issued,
        "the others took the token from Redis"
    );
}

/// Fleets of 1, 8 and 16 processes with and without Redis, for the table in docs/fleet.md:
/// `cargo test -p authwire-redis --test all -- --ignored --nocapture fleet_table`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures the table in docs/fleet.md (2 minutes); not a check"]
async fn fleet_table() {
    for processes in [1, 8, 16] {
        for redis in [false, true] {
            let settings = Settings {
                token_lifetime: Duration::from_secs(3),
                ..Settings::default()
            };
            let (idp, api, reports) = run_fleet(processes, 20, redis, settings).await;
            eprintln!(
                "FLEET-TABLE processes={processes} redis={redis} tokens_issued={} requests_ok={} unauthorized={}",
                idp.tokens_issued(),
                sum(&reports, "ok"),
                api.unauthorized()
            );
        }
    }
}

/// Issue 29's benchmark: token requests per token lifetime for 8 processes against 1, on a
/// Redis Cluster (goal: at most 1.2 times). `cargo xtask bench-fleet` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures the cluster rows of docs/fleet.md (1 minute); not a check"]
async fn fleet_on_a_cluster_table() {
    let mut issued = Vec::new();
    for processes in [1, 8] {
        let cluster = authwire_testkit::RedisCluster::start().await;
        let settings = Settings {
            token_lifetime: Duration::from_secs(3),
            ..Settings::default()
        };
        let (idp, api, reports) = Fleet::start(processes, 20, &cluster.url(), settings)
            .await
            .finish()
            .await;
        eprintln!(
            "FLEET-CLUSTER processes={processes} tokens_issued={} requests_ok={} unauthorized={} errors={}",
            idp.tokens_issued(),
            sum(&reports, "ok"),
            api.unauthorized(),
            sum(&reports, "errors")
        );
        issued.push(idp.tokens_issued() as f64);
    }
    eprintln!(
        "FLEET-CLUSTER ratio: 8 processes make {:.2}x the token requests of 1 (goal: at most 1.2x)",
        issued[1] / issued[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_rotation_across_processes_never_hits_invalid_grant() {
    let (idp, api, reports) = run_fleet(4, 10, true, rotating(3)).await;
    assert_eq!(
        idp.errors("invalid_grant"),
        0,
        "no process used a rotated-away refresh token"
    );
    assert!(
        idp.grant_count("refresh_token") >= 3,
        "refresh tokens were used: {}",
        idp.grant_count("refresh_token")
    );
    assert_eq!(
        idp.grant_count("client_credentials"),
        1,
        "only the first token came from client credentials"
    );
    assert_eq!(api.unauthorized(), 0);
    assert_eq!(sum(&reports, "errors"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_lease_holder_dies_mid_refresh_another_process_takes_over_within_the_lease_ttl() {
    let redis = RedisServer::start().await;
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    // The first token request hangs (the holder will be killed while it waits).
    idp.inject(Fault::status(503, "").delay(Duration::from_secs(60)));
    let mut holder = spawn_child(&child_config(&idp, &api, Some(&redis.url()), 60));
    for _ in 0..400 {
        if idp.token_requests() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        idp.token_requests(),
        1,
        "the holder is mid-refresh, holding the lease"
    );
    holder.kill().await.unwrap();

    let provider = idp.confidential_client().build().unwrap();
    let survivor = Authorizer::builder(provider)
        .store(RedisStore::connect(&redis.url()).await.unwrap())
        .build();
    let waited = authwire::Clock::now(&authwire::SystemClock);
    survivor
        .authorization_header()
        .await
        .expect("the survivor refreshes");
    let waited = authwire::Clock::now(&authwire::SystemClock)
        .duration_since(waited)
        .unwrap();
    // The holder's lease lives 3 s; the survivor takes over when it expires (with slack for a
    // loaded CI machine), not after its own 40 s default lease TTL.
    assert!(
        waited > Duration::from_millis(500),
        "the survivor waited for the lease instead of refreshing at once: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(7),
        "took over once the holder's 3 s lease expired: {waited:?}"
    );
    assert_eq!(idp.tokens_issued(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keep_succeeding_when_redis_stops() {
    let mut redis = RedisServer::start().await;
    let idp = IdentityServer::builder()
        .settings(Settings {
            token_lifetime: Duration::from_secs(2),
            ..Settings::default()
        })
        .start()
        .await;
    let api = ResourceServer::start(&idp).await;
    let provider = idp.confidential_client().build().unwrap();
    let store = RedisStore::builder(redis.url())
        .command_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let authorizer = Authorizer::builder(provider)
        .store(store)
        .store_timeout(Duration::from_millis(300))
        .build();
    let http = reqwest::Client::new();
    let mut ok = 0;
    for n in 0..60 {
        if n == 10 {
            redis.stop().await;
        }
        let header = authorizer
            .authorization_header()
            .await
            .expect("a token with Redis down");
        let status = http
            .get(api.url())
            .header("authorization", header)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        ok += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ok, 60);
    assert_eq!(api.unauthorized(), 0);
    assert!(
        authorizer.metrics().store_errors > 0,
        "the outage was noticed: {:?}",
        authorizer.metrics()
    );
    assert!(
        authorizer.metrics().fetches >= 2,
        "refreshed alone while Redis was down"
    );
}
