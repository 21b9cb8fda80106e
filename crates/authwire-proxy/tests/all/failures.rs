//! When things go wrong: no token (503 with Retry-After, JSON, no secret), an upstream that
//! hangs, resets or answers garbage, a program that leaves mid-body, request smuggling.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_is_a_503_that_names_the_cause_and_no_secret() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let provider = authwire_oauth2::OAuth2Provider::builder()
        .token_url(format!("http://{closed}/token"))
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(SECRET)
        .build()
        .unwrap();
    let upstream = Upstream::start().await;
    let (_running, addr) = proxy_to(&upstream.url(), Authorizer::new(provider)).await;
    let answer = reqwest::get(format!("http://{addr}/x")).await.unwrap();
    assert_eq!(answer.status(), 503);
    assert!(answer.headers().contains_key("retry-after"));
    assert_eq!(answer.headers()["content-type"], "application/json");
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    let description = body["error_description"].as_str().unwrap();
    assert!(description.contains("could not connect"), "{description}");
    assert!(!description.contains(SECRET));
    assert!(
        upstream.seen().is_empty(),
        "nothing went upstream without a token"
    );
}

/// A loopback server that does `what` with each connection.
async fn misbehaving(what: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            match what {
                "hang" => held.push(s),
                "garbage" => {
                    let _ = s.write_all(b"SPEAKING NONSENSE\r\n\r\n").await;
                }
                _ => drop(s), // reset
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_hangs_resets_or_speaks_garbage_gets_a_clear_answer() {
    let idp = IdentityServer::start().await;
    for (what, status) in [("hang", 504), ("reset", 502), ("garbage", 502)] {
        let bad = misbehaving(what).await;
        let (_running, addr) = proxy_to(&format!("http://{bad}"), authorizer(&idp)).await;
        let answer = reqwest::get(format!("http://{addr}/x")).await.unwrap();
        assert_eq!(answer.status(), status, "{what}");
        let body: serde_json::Value = answer.json().await.unwrap();
        let text = body.to_string();
        assert!(
            text.contains(&bad.to_string()),
            "{what}: names the upstream: {text}"
        );
        assert!(!text.contains(SECRET) && !text.contains("Bearer"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_leaves_mid_body_breaks_nothing() {
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let (_running, addr) = proxy_to(&upstream.url(), authorizer(&idp)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial")
        .await
        .unwrap();
    drop(s);
    // The proxy still serves.
    let ok = reqwest::get(format!("http://{addr}/after")).await.unwrap();
    assert_eq!(ok.status(), 200);
}

/// The upstream answers an upload before the program has sent it, and the program stalls: the
/// connection that answer came by is still in the middle of the upload, and the next request
/// must not wait for it (it would meet the upstream timeout, a `504`): it goes by another
/// connection at once. (hyper closes such a connection; the lane never waits on one either.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_came_before_its_upload_ended_holds_up_no_other_request() {
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let route = route_r(&upstream.url(), authorizer(&idp));
    // One worker, one idle list; an upstream timeout a stuck request would meet.
    let running = Proxy::builder()
        .route(route)
        .workers(1)
        .upstream_timeout(std::time::Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let addr = running.local_addr("r").unwrap();
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nthe start")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).await.unwrap();
    assert_eq!(
        &head, b"HTTP/1.1 200",
        "the upstream's early answer reached the program"
    );

    // The upload stalls; another program's request goes by another connection at once.
    let after = reqwest::get(format!("http://{addr}/after")).await.unwrap();
    assert_eq!(after.status(), 200, "{:?}", after.text().await);
    assert_eq!(upstream.seen().last().unwrap().target, "/after");
    drop(stalled);
    assert!(running.shutdown().await);
}

/// Send raw bytes and read every answer until the proxy closes the connection.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        closed.is_ok(),
        "the proxy closes a connection that tried to smuggle"
    );
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_attempts_are_refused_and_carry_no_token_anywhere() {
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let (_running, addr) = proxy_to(&upstream.url(), authorizer(&idp)).await;
    let attempts: [&[u8]; 4] = [
        // Content-Length and Transfer-Encoding together.
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // Two different Content-Lengths.
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 30\r\n\r\nabcdGET /smuggled HTTP/1.1\r\n\r\n",
        // obs-fold.
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        // A bare CR.
        b"GET /a HTTP/1.1\r\nHost: x\rX-Evil: 1\r\n\r\n",
    ];
    for (i, attempt) in attempts.into_iter().enumerate() {
        let answers = raw(addr, attempt).await;
        let statuses: Vec<&str> = answers.lines().filter(|l| l.starts_with("HTTP/1.1 ")).collect();
        if i == 0 {
            // RFC 9112 section 6.1: Transfer-Encoding wins and the connection closes after
            // the answer (hyper's behaviour); what followed is never read as a request.
            assert_eq!(statuses.len(), 1, "{answers}");
        } else {
            assert!(
                statuses.is_empty() || statuses == ["HTTP/1.1 400 Bad Request"],
                "{}: answered {answers:?}",
                String::from_utf8_lossy(attempt)
            );
        }
    }
    let smuggled: Vec<_> = upstream
        .seen()
        .into_iter()
        .filter(|s| s.target.contains("smuggled"))
        .collect();
    assert!(
        smuggled.is_empty(),
        "nothing smuggled reached the upstream: {smuggled:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_not_a_tunnel_to_anywhere() {
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let (_running, addr) = proxy_to(&upstream.url(), authorizer(&idp)).await;
    let answers = raw(
        addr,
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    )
    .await;
    assert!(answers.starts_with("HTTP/1.1 400"), "{answers}");
    assert!(upstream.seen().is_empty(), "nothing went upstream");
    assert_eq!(idp.token_requests(), 0, "no token was even fetched");
}
