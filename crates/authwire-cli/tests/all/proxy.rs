//! Issue 27: `authwire proxy`, the real binary: flags and `[[proxy.route]]` tables, refusals
//! named in one line, and a drain on SIGTERM that lets a request in flight finish.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free loopback port (bound, then released for the proxy to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until something listens on `port`.
async fn listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listened on {port} within 5 s");
}

/// An upstream that answers each request after `delay`, saying which Authorization it got.
async fn slow_upstream(delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let bearer = head.lines().any(|l| l.starts_with("authorization: bearer "));
                tokio::time::sleep(delay).await;
                let body = if bearer { "with-token" } else { "without" };
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes(),
                    )
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_forwards_with_a_token_and_drains_on_sigterm() {
    let idp = IdentityServer::start().await;
    let upstream = slow_upstream(Duration::from_millis(1500)).await;
    let sb = Sandbox::new();
    let (port, metrics) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let metrics_addr = format!("127.0.0.1:{metrics}");
    let c = creds(&idp);
    let mut child = Run::new(
        &sb,
        &args(
            &[
                "proxy",
                "--listen",
                &listen,
                "--upstream",
                &upstream,
                "--metrics",
                &metrics_addr,
                "--drain-timeout",
                "10s",
            ],
            &c,
        ),
    )
    .spawn();
    listening(port).await;

    let in_flight = tokio::spawn(async move {
        reqwest::get(format!("http://127.0.0.1:{port}/slow"))
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    // New connections are refused while the request in flight finishes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "no longer accepting"
    );
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the request in flight finished"
    );
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("listening on http://127.0.0.1:"), "{stderr}");
    assert!(!stderr.contains(Client::CONFIDENTIAL_SECRET), "{stderr}");
    assert_eq!(idp.tokens_issued(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_from_the_config_file_each_with_its_profile() {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    let sb = Sandbox::new();
    let port = free_port();
    std::fs::write(
        sb.path("config/authwire/config.toml"),
        format!(
            "[profiles.orders]\ntoken_url = \"{}\"\nclient_id = \"{}\"\ncache = \"none\"\n\n[[proxy.route]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"{}/v1\"\nprofile = \"orders\"\n",
            idp.token_url(),
            Client::CONFIDENTIAL_ID,
            api.url()
        ),
    )
    .unwrap();
    let _child = Run::new(&sb, &["proxy"]).spawn();
    listening(port).await;
    let answer = reqwest::get(format!("http://127.0.0.1:{port}/items"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().contains("\"path\":\"/v1/items\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_off_loopback_is_refused_in_one_line() {
    let idp = IdentityServer::start().await;
    let sb = Sandbox::new();
    let c = creds(&idp);
    let out = Run::new(
        &sb,
        &args(
            &[
                "proxy",
                "--listen",
                "0.0.0.0:0",
                "--upstream",
                "https://api.example",
            ],
            &c,
        ),
    )
    .output()
    .await;
    assert_eq!(out.code(), 1);
    assert!(out.assert_one_line_error().contains("--allow-remote"));
    let plain = Run::new(
        &sb,
        &args(
            &[
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "http://api.example",
            ],
            &c,
        ),
    )
    .output()
    .await;
    assert_eq!(plain.code(), 1);
    assert!(plain.assert_one_line_error().contains("--allow-insecure-http"));
    assert_eq!(idp.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_sidecars_on_one_redis_fetches_one_token() {
    let redis = authwire_testkit::RedisServer::start().await;
    sidecar_fleet_fetches_one_token(&redis.url()).await;
}

/// Issue 29: the sidecars of a fleet on a Redis Cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_sidecars_on_a_redis_cluster_fetches_one_token() {
    let cluster = authwire_testkit::RedisCluster::start().await;
    sidecar_fleet_fetches_one_token(&cluster.url()).await;
}

async fn sidecar_fleet_fetches_one_token(redis_url: &str) {
    let idp = IdentityServer::start().await;
    let api = ResourceServer::start(&idp).await;
    let sb = Sandbox::new();
    let mut ports = Vec::new();
    let mut children = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let flags = [
            "proxy",
            "--listen",
            &listen,
            "--upstream",
            &api.url(),
            "--token-url",
            &idp.token_url(),
            "--client-id",
            Client::CONFIDENTIAL_ID,
            "--cache",
            "redis",
            "--redis-url",
            redis_url,
        ];
        children.push(Run::new(&sb, &flags).spawn());
        ports.push(port);
    }
    for port in &ports {
        listening(*port).await;
    }
    for round in 0..3 {
        for port in &ports {
            let answer = reqwest::get(format!("http://127.0.0.1:{port}/v1/items/{round}"))
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
        }
    }
    assert_eq!(idp.tokens_issued(), 1, "three sidecars, one token");
    drop(children);
}
