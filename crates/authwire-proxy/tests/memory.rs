//! Bodies stream: 1 GiB up and 1 GiB down through the proxy, and the resident memory of this
//! process (client, proxy and upstream together) stays flat. A test binary of its own, so that
//! no other test's allocations are measured.

#![cfg(target_os = "linux")]

use authwire::{Authorizer, StaticTokenProvider};
use authwire_proxy::{Proxy, Route};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::pin::Pin;
use std::task::{Context, Poll};

const CHUNK: usize = 64 * 1024;
const GIB: usize = 1 << 30;

/// `left` chunks of 64 KiB, produced as they are asked for (no length: chunked).
struct Chunks {
    left: usize,
    chunk: Bytes,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
    }
}

fn chunks(total: usize) -> Chunks {
    Chunks {
        left: total / CHUNK,
        chunk: Bytes::from(vec![b'm'; CHUNK]),
    }
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// An upstream that counts what it is sent (`PUT`) and sends 1 GiB (`GET`).
async fn upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                        let upload = request.method() == hyper::Method::PUT;
                        let mut body = request.into_body();
                        let mut received = 0usize;
                        while let Some(frame) = body.frame().await {
                            received += frame.unwrap().data_ref().map_or(0, Bytes::len);
                        }
                        let answer: http_body_util::combinators::UnsyncBoxBody<
                            Bytes,
                            std::convert::Infallible,
                        > = if upload {
                            http_body_util::Full::new(Bytes::from(received.to_string())).boxed_unsync()
                        } else {
                            chunks(GIB).boxed_unsync()
                        };
                        Ok::<_, std::convert::Infallible>(Response::new(answer))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_each_way_keeps_memory_flat() {
    let up = upstream().await;
    let route = Route::new(
        "big",
        "127.0.0.1:0".parse().unwrap(),
        &format!("http://{up}"),
        Authorizer::new(StaticTokenProvider::new("t0k3n")),
    )
    .unwrap();
    let running = Proxy::builder().route(route).start().await.unwrap();
    let addr = running.local_addr("big").unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);

    // Warm up the allocator and the pools with a small exchange.
    let warm = send
        .send_request(
            Request::put("/up")
                .header("host", "x")
                .body(chunks(4 * CHUNK))
                .unwrap(),
        )
        .await
        .unwrap();
    warm.into_body().collect().await.unwrap();
    let before = rss_kib();

    // hyper's client takes a request once its connection says it is ready (the last answer's
    // end is seen by the connection's task, which may not have run yet).
    send.ready().await.unwrap();
    let answer = send
        .send_request(Request::put("/up").header("host", "x").body(chunks(GIB)).unwrap())
        .await
        .unwrap();
    let counted = answer.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(counted, GIB.to_string(), "the upstream received all of it");
    let after_upload = rss_kib();

    send.ready().await.unwrap();
    let answer = send
        .send_request(Request::get("/down").header("host", "x").body(chunks(0)).unwrap())
        .await
        .unwrap();
    let mut body = answer.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, Bytes::len);
    }
    assert_eq!(received, GIB);
    let after_download = rss_kib();

    let growth = after_upload.max(after_download).saturating_sub(before);
    eprintln!(
        "RSS before {before} KiB, after 1 GiB up {after_upload} KiB, after 1 GiB down {after_download} KiB"
    );
    assert!(
        growth < 64 * 1024,
        "resident memory grew by {growth} KiB moving 2 GiB"
    );
}
