//! What reaches the upstream: the route's token (never the program's), the path and query byte
//! for byte under the base path, no hop-by-hop header; replays; one fetch for many rejections.

use super::*;
use authwire::secrecy::ExposeSecret as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_gets_the_routes_token_and_the_path_byte_for_byte() {
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let auth = authorizer(&idp);
    let (running, addr) = proxy_to(&format!("{}/base/", upstream.url()), auth.clone()).await;

    let client = reqwest::Client::new();
    let answer = client
        .get(format!("http://{addr}/items/%2F..%2Fx;p?b=2&a=1&a=%20&empty="))
        .header("authorization", "Bearer the-programs-own-token")
        .header("dpop", "a-programs-proof")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("connection", "x-private")
        .header("x-private", "hop")
        .header("x-kept", "end-to-end")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers().get("x-hop").is_none(),
        "a header the upstream's Connection names is dropped"
    );
    assert!(answer.headers().get("proxy-authenticate").is_none());
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.target, "/base/items/%2F..%2Fx;p?b=2&a=1&a=%20&empty=");
    let token = auth.token().await.unwrap();
    assert_eq!(
        s.headers["authorization"],
        format!("Bearer {}", token.access_token().expose_secret()).as_str()
    );
    assert_eq!(
        s.headers.get_all("authorization").iter().count(),
        1,
        "replaced, not joined"
    );
    assert!(s.headers.get("dpop").is_none() && s.headers.get("proxy-authorization").is_none());
    assert!(s.headers.get("x-private").is_none());
    assert_eq!(s.headers["x-kept"], "end-to-end");
    assert_eq!(
        s.headers["host"],
        upstream.addr.to_string().as_str(),
        "the upstream's Host"
    );
    assert_eq!(idp.tokens_issued(), 1);

    // An absolute-form request naming another host still goes to the upstream, path only.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(
        b"GET http://evil.example/steal?x=1 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = String::new();
    raw.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(upstream.seen()[1].target, "/base/steal?x=1");
    assert_eq!(
        upstream.seen()[1].headers["host"],
        upstream.addr.to_string().as_str()
    );
    assert!(running.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_refreshed_once_and_the_request_replayed() {
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let (running, addr) = proxy_to(&upstream.url(), authorizer(&idp)).await;
    let client = reqwest::Client::new();

    // Warm up: one token.
    client.get(format!("http://{addr}/warm")).send().await.unwrap();
    assert_eq!(idp.tokens_issued(), 1);

    // A small body is kept and replayed with a new token.
    upstream.reject_next(1);
    let answer = client
        .post(format!("http://{addr}/orders"))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "replayed after a refresh");
    assert_eq!(idp.tokens_issued(), 2);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!((seen[1].body_len, seen[2].body_len), (1000, 1000));
    assert_eq!(
        (seen[1].method.as_str(), seen[2].method.as_str()),
        ("POST", "POST")
    );
    assert_ne!(seen[1].headers["authorization"], seen[2].headers["authorization"]);

    // A body over 64 KiB streams and is not replayed: the 401 goes back.
    upstream.reject_next(1);
    let big = client
        .post(format!("http://{addr}/orders"))
        .body(vec![b'y'; authwire_proxy::REPLAY_LIMIT + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 401);
    assert_eq!(upstream.seen().len(), 4, "not sent again");

    let metrics = metrics_text(&running).await;
    assert!(
        metrics.contains("authwire_proxy_replays_total{route=\"r\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authwire_proxy_requests_total{route=\"r\",class=\"4xx\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authwire_proxy_requests_total{route=\"r\",class=\"2xx\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authwire_proxy_token_expires_in_seconds{route=\"r\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("authwire_proxy_upstream_duration_seconds_bucket{route=\"r\",le=\"+Inf\"}"));
    assert!(
        !metrics.contains(SECRET) && !metrics.contains("Bearer"),
        "never a secret"
    );
    let health = reqwest::get(format!("http://{}/healthz", running.metrics_addr().unwrap()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_rejections_cause_one_fetch() {
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let auth = authorizer(&idp);
    let (_running, addr) = proxy_to(&upstream.url(), auth.clone()).await;
    let client = reqwest::Client::new();
    client.get(format!("http://{addr}/warm")).send().await.unwrap();
    assert_eq!(idp.tokens_issued(), 1);

    // The upstream now rejects the current token (revoked, say), and only it.
    let current = auth.authorization_header().await.unwrap();
    *upstream.script.reject_header.lock().unwrap() = Some(current.to_str().unwrap().to_owned());
    let calls = (0..32).map(|i| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://{addr}/c/{i}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures_join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        idp.tokens_issued(),
        2,
        "32 rejections of one token: one new token"
    );
    for i in 0..32 {
        let sends = upstream
            .seen()
            .iter()
            .filter(|s| s.target == format!("/c/{i}"))
            .count();
        assert!(
            (1..=2).contains(&sends),
            "/c/{i} was sent {sends} times: at most one replay"
        );
    }
}

/// `join_all` without a futures dependency.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_off_loopback_and_plain_http_upstreams_are_refused_by_name() {
    let idp = IdentityServer::start().await;
    let remote = Route::new(
        "r",
        "0.0.0.0:0".parse().unwrap(),
        "https://api.example",
        authorizer(&idp),
    )
    .unwrap();
    let e = Proxy::builder().route(remote).start().await.err().unwrap();
    assert!(e.to_string().contains("--allow-remote"), "{e}");

    let plain = Route::new(
        "r",
        "127.0.0.1:0".parse().unwrap(),
        "http://api.example",
        authorizer(&idp),
    )
    .unwrap();
    let e = Proxy::builder().route(plain).start().await.err().unwrap();
    assert!(e.to_string().contains("--allow-insecure-http"), "{e}");
    assert_eq!(idp.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_gets_a_fresh_dpop_proof_per_request_and_a_nonce_is_answered() {
    let idp = IdentityServer::start().await;
    let api = authwire_testkit::ResourceServer::start(&idp).await;
    let key = authwire_oauth2::DpopKey::generate_es256().unwrap();
    let provider = idp.confidential_client().dpop(key).build().unwrap();
    let (_running, addr) = proxy_to(&api.url(), Authorizer::new(provider)).await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        let answer = client
            .get(format!("http://{addr}/v1/items/{i}"))
            .header("dpop", "a-programs-own-proof")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    }
    assert_eq!(
        api.dpop_proofs_verified(),
        3,
        "one fresh proof per request (htm, htu, ath, jti)"
    );
    let seen = api.dpop_proofs_seen();
    assert!(
        !seen.iter().any(|p| p == "a-programs-own-proof"),
        "the program's proof never left"
    );

    // The API asks for a nonce: answered with one replay.
    api.require_dpop_nonce("n-1");
    let answer = client
        .get(format!("http://{addr}/v1/items/nonce"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(api.dpop_nonce_challenges(), 1);
    assert_eq!(idp.tokens_issued(), 1, "a nonce is not a new token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claims_challenge_is_answered_once_and_one_that_cannot_be_reaches_the_program_as_sent() {
    let idp = IdentityServer::start().await;
    let api = authwire_testkit::ResourceServer::start(&idp).await;
    let provider = idp
        .confidential_client()
        .client_capabilities(["cp1"])
        .build()
        .unwrap();
    let (_running, addr) = proxy_to(&api.url(), Authorizer::new(provider)).await;
    let client = reqwest::Client::new();
    api.require_claims(Some(
        r#"{"access_token":{"nbf":{"essential":true,"value":"1726563200"}}}"#,
    ));
    let answer = client.get(format!("http://{addr}/v1/mail")).send().await.unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    assert_eq!(
        (api.challenges(), api.requests()),
        (1, 2),
        "one challenge, one replay"
    );
    assert!(idp.last_form()["claims"].contains("1726563200"));

    // More scope: no credential answers it; the program gets the API's 403 and its challenge,
    // and the API sees the request once.
    api.require_scope(Some("admin"));
    let answer = client
        .get(format!("http://{addr}/v1/admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    let challenge = answer.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.contains(r#"error="insufficient_scope""#), "{challenge}");
    assert_eq!((api.challenges(), api.requests()), (2, 3));
}

/// The names of this process's threads (Linux's `/proc/self/task/*/comm`).
#[cfg(target_os = "linux")]
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_listener_one_token_and_one_set_of_figures() {
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let route = route_r(&upstream.url(), authorizer(&idp));
    let running = Proxy::builder()
        .route(route)
        .metrics("127.0.0.1:0".parse().unwrap())
        .workers(3)
        .thread_name("wt-share-")
        .start()
        .await
        .unwrap();
    let addr = running.local_addr("r").unwrap();
    assert_eq!(running.workers(), 3);
    let workers = || {
        thread_names()
            .into_iter()
            .filter(|n| n.starts_with("wt-share-"))
            .count()
    };
    // A new thread names itself once it runs: wait for that, not for a duration.
    for _ in 0..500 {
        if workers() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(workers(), 3, "{:?}", thread_names());

    // Thirty connections at once, each its own: whichever worker accepts one serves it.
    let calls = (0..30).map(|i| async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
        raw.write_all(format!("GET /w/{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        raw.read_to_string(&mut out).await.unwrap();
        out.starts_with("HTTP/1.1 200")
    });
    let answered = futures_join_all(calls).await;
    assert!(answered.iter().all(|ok| *ok), "{answered:?}");
    assert_eq!(upstream.seen().len(), 30);
    assert_eq!(idp.tokens_issued(), 1, "one token for every worker");
    assert_eq!(running.requests_answered(), 30, "every worker's answers counted");
    let metrics = metrics_text(&running).await;
    assert!(
        metrics.contains("authwire_proxy_requests_total{route=\"r\",class=\"2xx\"} 30\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authwire_proxy_upstream_duration_seconds_count{route=\"r\"} 30\n"),
        "{metrics}"
    );

    assert!(running.shutdown().await, "every worker drained");
    assert_eq!(workers(), 0, "no worker left running: {:?}", thread_names());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no worker accepts after the shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_name_that_cannot_be_one_is_refused_not_a_panic() {
    let upstream = Upstream::start().await;
    let route = Route::new(
        "r",
        "127.0.0.1:0".parse().unwrap(),
        &upstream.url(),
        Authorizer::new(authwire::StaticTokenProvider::new("t0k3n")),
    )
    .unwrap();
    let refused = Proxy::builder()
        .route(route)
        .workers(2)
        .thread_name("bad\0name-")
        .start()
        .await
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("NUL"), "{refused}");
}

/// A program's HTTP/1.1 connection (hyper's client, kept alive).
async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// `GET path` on `program`'s connection, its answer read to the end.
async fn get(program: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>, path: &str) -> StatusCode {
    let request = Request::get(path)
        .header("host", "program")
        .body(Full::default())
        .unwrap();
    // Ready once its last answer was read (hyper's client says so a moment later).
    program
        .ready()
        .await
        .expect("the proxy kept the program's connection open");
    let answer = program.send_request(request).await.unwrap();
    let status = answer.status();
    answer.into_body().collect().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_connection_serves_the_next_request_whichever_program_connection_sends_it() {
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let route = route_r(&upstream.url(), authorizer(&idp));
    // One worker: one list of idle upstream connections.
    let running = Proxy::builder().route(route).workers(1).start().await.unwrap();
    let addr = running.local_addr("r").unwrap();
    let connections = || upstream.connections.load(Ordering::SeqCst);

    // A program connection's requests, one after the other, go by one upstream connection,
    // in origin form; so does a `HEAD` (an answer without a body is over at its head).
    let mut a = h1(addr).await;
    for _ in 0..3 {
        assert_eq!(get(&mut a, "/a").await, StatusCode::OK);
    }
    let head = Request::head("/h")
        .header("host", "program")
        .body(Full::default())
        .unwrap();
    a.ready().await.unwrap();
    assert_eq!(a.send_request(head).await.unwrap().status(), StatusCode::OK);
    assert_eq!(get(&mut a, "/a").await, StatusCode::OK);
    assert_eq!(connections(), 1);
    assert!(
        upstream.seen().iter().all(|s| !s.absolute),
        "HTTP/1.1 to an origin server: the target in origin form"
    );

    // Another program connection, the first still open, takes the same idle one: an upstream
    // connection is given back when its answer has been read, not when the program leaves.
    let mut b = h1(addr).await;
    assert_eq!(get(&mut b, "/b").await, StatusCode::OK);
    assert_eq!(connections(), 1);
    let seen = upstream.seen();
    let peers: Vec<SocketAddr> = seen.iter().map(|s| s.peer).collect();
    assert!(peers.windows(2).all(|w| w[0] == w[1]), "{peers:?}");

    // The upstream closes its connection after an answer: the next request goes by a new
    // one, and the program's connection stays open (that `Connection: close` was the
    // upstream's hop, not the program's).
    upstream.script.close.store(1, Ordering::SeqCst);
    assert_eq!(get(&mut a, "/closing").await, StatusCode::OK);
    assert_eq!(get(&mut a, "/after").await, StatusCode::OK);
    assert_eq!(connections(), 2);
    let seen = upstream.seen();
    let last = &seen[seen.len() - 2..];
    assert_ne!(
        last[0].peer, last[1].peer,
        "the closed connection was not used again"
    );
    assert_eq!(idp.tokens_issued(), 1);
    assert!(running.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_connection_idle_for_90_seconds_is_not_used_again() {
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let route = route_r(&upstream.url(), authorizer(&idp));
    let clock = authwire::ManualClock::new(authwire::Clock::now(&authwire::SystemClock));
    let running = Proxy::builder()
        .route(route)
        .workers(1)
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let addr = running.local_addr("r").unwrap();
    let mut program = h1(addr).await;
    let connections = || upstream.connections.load(Ordering::SeqCst);

    assert_eq!(get(&mut program, "/first").await, StatusCode::OK);
    clock.advance(std::time::Duration::from_secs(89));
    assert_eq!(get(&mut program, "/within").await, StatusCode::OK);
    assert_eq!(connections(), 1, "idle for 89 s: used again");
    clock.advance(std::time::Duration::from_secs(90));
    assert_eq!(get(&mut program, "/after").await, StatusCode::OK);
    assert_eq!(connections(), 2, "idle for 90 s: a new connection");

    // A proxy gone quiet closes its idle connections too: no request comes, the sweep (on
    // the same clock) drops the one that served `/after` once it has been idle for 90 s.
    authwire_testkit::wait_until(|| clock.sleepers() > 0).await;
    let ended = || upstream.closed.load(Ordering::SeqCst);
    // The stale one was closed (passed over by `/after`, or swept).
    authwire_testkit::wait_until(|| ended() == 1).await;
    assert_eq!(ended(), 1);
    clock.advance(std::time::Duration::from_secs(91));
    authwire_testkit::wait_until(|| ended() == 2).await;
    assert_eq!(ended(), 2, "the idle connection was closed without a request");
    assert_eq!(connections(), 2);
    assert!(running.shutdown().await);
}
