//! Protocols: h2c from the program, HTTP/2 over TLS (ALPN) to the upstream with a private CA,
//! gRPC's UNAUTHENTICATED answered with one replay, upgrades (WebSocket-style), unix sockets,
//! streaming bodies.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP/2 (prior knowledge) request to `addr`.
async fn h2c(addr: SocketAddr, request: Request<Full<Bytes>>) -> Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send.send_request(request).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2c_keeps_te_and_trailers_and_unauthenticated_is_replayed_once() {
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let (_running, addr) = proxy_to(&upstream.url(), authorizer(&idp)).await;
    upstream.script.grpc.store(true, Ordering::SeqCst);
    upstream.reject_next(1);
    let request = Request::post(format!("http://{addr}/pkg.Service/Method"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x05hello")))
        .unwrap();
    let answer = h2c(addr, request).await;
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers().get("grpc-status").is_none(),
        "the replay's answer, not the rejection"
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "one rejection, one replay");
    for s in &seen {
        assert_eq!(s.version, hyper::Version::HTTP_2, "h2c end to end");
        assert_eq!(s.headers["te"], "trailers");
        assert_eq!(s.body_len, 10);
    }
    assert_eq!(idp.tokens_issued(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_with_a_private_ca_is_trusted_by_that_ca_only() {
    let idp = IdentityServer::start().await;
    let api = authwire_testkit::ResourceServer::start_tls(&idp).await;
    let transport = authwire_http::Transport::new()
        .root_certificates_pem(api.ca_pem().unwrap())
        .unwrap();
    let route = Route::new(
        "tls",
        "127.0.0.1:0".parse().unwrap(),
        &api.url(),
        authorizer(&idp),
    )
    .unwrap()
    .transport(transport);
    let running = Proxy::builder().route(route).start().await.unwrap();
    let addr = running.local_addr("tls").unwrap();
    let answer = reqwest::get(format!("http://{addr}/v1/items")).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().contains("\"ok\":true"));
    assert_eq!(api.requests(), 1);

    // Without the CA the upstream is not trusted: 502, and no token went there.
    let untrusted = Route::new(
        "tls",
        "127.0.0.1:0".parse().unwrap(),
        &api.url(),
        authorizer(&idp),
    )
    .unwrap();
    let running = Proxy::builder().route(untrusted).start().await.unwrap();
    let addr = running.local_addr("tls").unwrap();
    let answer = reqwest::get(format!("http://{addr}/v1/items")).await.unwrap();
    assert_eq!(answer.status(), 502);
    assert!(
        answer.text().await.unwrap().contains("issuer"),
        "names the certificate problem"
    );
    assert_eq!(api.requests(), 1);
}

/// A program's HTTP/1.1 requests to an https upstream: HTTP/1.1 over TLS, one connection for
/// requests one after the other, when the upstream offers only http/1.1 by ALPN; HTTP/2 when
/// it chooses h2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_gets_the_protocol_it_chooses_by_alpn() {
    let idp = IdentityServer::start().await;
    let ca = authwire_testkit::TestCa::new();
    for (alpn, version) in [
        (vec![b"http/1.1".to_vec()], hyper::Version::HTTP_11),
        (vec![b"h2".to_vec(), b"http/1.1".to_vec()], hyper::Version::HTTP_2),
    ] {
        let mut config = (**ca.acceptor(false).config()).clone();
        config.alpn_protocols = alpn;
        let upstream = Upstream::start_tls(tokio_rustls::TlsAcceptor::from(Arc::new(config))).await;
        let transport = authwire_http::Transport::new()
            .root_certificates_pem(ca.ca_pem())
            .unwrap();
        let route = Route::new(
            "tls",
            "127.0.0.1:0".parse().unwrap(),
            &upstream.url(),
            authorizer(&idp),
        )
        .unwrap()
        .transport(transport);
        let running = Proxy::builder().route(route).workers(1).start().await.unwrap();
        let addr = running.local_addr("tls").unwrap();
        let program = reqwest::Client::builder().http1_only().build().unwrap();
        for _ in 0..3 {
            let answer = program.get(format!("http://{addr}/v1")).send().await.unwrap();
            assert_eq!(answer.status(), 200);
        }
        let seen = upstream.seen();
        assert_eq!(seen.len(), 3);
        let versions: Vec<_> = seen.iter().map(|s| s.version).collect();
        assert!(
            versions.iter().all(|v| *v == version),
            "{version:?}: {versions:?}"
        );
        let connections = upstream.connections.load(Ordering::SeqCst);
        if version == hyper::Version::HTTP_11 {
            assert_eq!(connections, 1, "one connection for requests one after the other");
        } else {
            // The connection that learnt the upstream speaks h2, then the one all requests share.
            assert!(connections <= 2, "{connections} connections");
        }
        assert!(running.shutdown().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_is_joined_end_to_end() {
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let (_running, addr) = proxy_to(&upstream.url(), authorizer(&idp)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 0];
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = [0u8; 23];
    s.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping through the tunnel");
    let seen = upstream.seen();
    assert_eq!(seen[0].headers["upgrade"], "echo");
    assert!(
        seen[0].headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Bearer ")
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_listener_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let dir = authwire_testkit::TempDir::new("proxy-unix");
    let path = dir.path().join("orders.sock");
    // A stale socket from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let listen: authwire_proxy::Listen = format!("unix:{}", path.display()).parse().unwrap();
    let route = Route::new("u", listen, &upstream.url(), authorizer(&idp)).unwrap();
    let running = Proxy::builder().route(route).start().await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let answer = send
        .send_request(
            Request::get("/over/unix")
                .header("host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(upstream.seen()[0].target, "/over/unix");

    // A regular file where the socket belongs is not replaced.
    let file = dir.path().join("file.sock");
    std::fs::write(&file, "not a socket").unwrap();
    let listen: authwire_proxy::Listen = format!("unix:{}", file.display()).parse().unwrap();
    let e = Proxy::builder()
        .route(Route::new("f", listen, &upstream.url(), authorizer(&idp)).unwrap())
        .start()
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a socket");
    running.shutdown().await;
    assert!(!path.exists(), "the socket is removed at shutdown");
}

/// A body of `left` chunks of 64 KiB, with no length given: sent as it is produced.
struct Chunks {
    left: usize,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
            b'z';
            64 * 1024
        ])))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    let idp = IdentityServer::start().await;
    let upstream = Upstream::start().await;
    let (_running, addr) = proxy_to(&upstream.url(), authorizer(&idp)).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    // 8 MiB with no length (chunked): streamed as it comes, never replayable.
    let answer = send
        .send_request(
            Request::put("/blob")
                .header("host", "x")
                .body(Chunks { left: 128 })
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body_len"], 8 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_client_through_the_proxy_never_sees_the_revoked_token() {
    use authwire_testkit::{GrpcEcho, RawCodec, SequenceProvider};
    let echo = GrpcEcho::default();
    let (upstream, _server) = echo.serve().await;
    let provider = SequenceProvider::new(
        "grpc",
        std::time::Duration::from_secs(3600),
        authwire::SystemClock,
    );
    let (_running, addr) = proxy_to(&format!("http://{upstream}"), Authorizer::new(provider.clone())).await;

    // A real tonic channel speaks h2c to the proxy; the proxy speaks h2c to tonic's server.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let reply = client
        .unary(
            tonic::Request::new(Bytes::from_static(b"ping")),
            hyper::http::uri::PathAndQuery::from_static("/test.Echo/Say"),
            RawCodec,
        )
        .await
        .unwrap();
    assert_eq!(
        reply.into_inner(),
        Bytes::from_static(b"pong"),
        "UNAUTHENTICATED was answered by a replay"
    );
    assert_eq!(provider.calls(), 2);
    assert_eq!(
        echo.seen(),
        [
            Some("Bearer access-1".to_owned()),
            Some("Bearer access-2".to_owned())
        ]
    );
}

// The handshake callback's error type is tungstenite's (large); it never errs here.
#[allow(clippy::result_large_err)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_talks_to_a_websocket_server_through_the_proxy() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let idp = IdentityServer::start().await;
    // A WebSocket echo server that records the Authorization of its handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let callback =
            |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
             response: tokio_tungstenite::tungstenite::handshake::server::Response| {
                *record.lock().unwrap() = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok(response)
            };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, callback)
            .await
            .unwrap();
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() || message.is_binary() {
                ws.send(message).await.unwrap();
            }
        }
    });
    let (_running, addr) = proxy_to(&format!("http://{upstream}"), authorizer(&idp)).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{addr}/socket"), stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    for text in ["hello", "through", "the proxy"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
    let authorization = seen.lock().unwrap().clone().unwrap_or_default();
    assert!(authorization.starts_with("Bearer "), "{authorization}");
}
