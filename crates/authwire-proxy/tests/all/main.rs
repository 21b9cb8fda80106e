//! The proxy end to end, over real sockets: the testkit's identity provider, an upstream the
//! tests start (hyper, HTTP/1.1 and h2c, TLS on request), real clients (reqwest, hyper's
//! HTTP/1.1 and HTTP/2 clients, raw TCP for what clients refuse to send).

mod failures;
mod protocols;
mod routing;

use authwire::Authorizer;
use authwire_proxy::{Proxy, Route, Running};
use authwire_testkit::{Client, IdentityServer};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// The request target exactly as it arrived (path and query).
    target: String,
    version: hyper::Version,
    headers: hyper::HeaderMap,
    body_len: usize,
    /// The request target was in absolute form (`http://host/path`), not a path.
    absolute: bool,
    /// The proxy's end of the connection it came by.
    peer: SocketAddr,
}

/// How the upstream answers.
#[derive(Default)]
struct Script {
    /// Answer this many requests 401 (`invalid_token`), whatever they carry.
    reject: AtomicUsize,
    /// Answer 401 to every request that carries this exact `Authorization`.
    reject_header: Mutex<Option<String>>,
    /// Answer rejections the gRPC way: 200, `grpc-status: 16`, no body.
    grpc: std::sync::atomic::AtomicBool,
    /// Close the connection after the n-th `200` answer from now (`Connection: close`).
    close: AtomicUsize,
}

/// An upstream on loopback (HTTP/1.1 and h2c on one port) that records what it sees.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Script>,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    /// Connections that ended (closed by either side).
    closed: Arc<AtomicUsize>,
    /// Served over TLS.
    tls: bool,
    _task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Self {
        Self::serve(None).await
    }

    /// The same over TLS by `acceptor` (its certificate, its ALPN protocols).
    async fn start_tls(acceptor: tokio_rustls::TlsAcceptor) -> Self {
        Self::serve(Some(acceptor)).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let secure = tls.is_some();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let script: Arc<Script> = Arc::default();
        let connections: Arc<AtomicUsize> = Arc::default();
        let closed: Arc<AtomicUsize> = Arc::default();
        let (s, sc, c, ended) = (seen.clone(), script.clone(), connections.clone(), closed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (s, sc, tls, ended) = (s.clone(), sc.clone(), tls.clone(), ended.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| answer(r, peer, s.clone(), sc.clone()));
                    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => {
                            server
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await
                        }
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => {
                                server
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .await
                            }
                            Err(_) => Ok(()),
                        },
                    };
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            seen,
            script,
            connections,
            closed,
            tls: secure,
            _task: task,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn reject_next(&self, n: usize) {
        self.script.reject.store(n, Ordering::SeqCst);
    }
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r
}

async fn answer(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Script>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let upgrade = request.headers().contains_key("upgrade");
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/".into(), |p| p.as_str().to_owned());
    if target.starts_with("/early") {
        // Answers at once, the request body unread (as a server refusing an upload does).
        return Ok(text(StatusCode::OK, "early"));
    }
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body_len: body.len(),
        absolute: parts.uri.scheme().is_some(),
        peer,
    });
    if let Some(on_upgrade) = on_upgrade {
        // Echo every byte after the switch.
        tokio::spawn(async move {
            if let Ok(io) = on_upgrade.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(io));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut r = text(StatusCode::SWITCHING_PROTOCOLS, "");
        r.headers_mut().insert("upgrade", "echo".parse().unwrap());
        r.headers_mut().insert("connection", "upgrade".parse().unwrap());
        return Ok(r);
    }
    let carried = parts.headers.get("authorization").and_then(|v| v.to_str().ok());
    let rejected = script
        .reject
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
        || (carried.is_some() && script.reject_header.lock().unwrap().as_deref() == carried);
    if rejected {
        if script.grpc.load(Ordering::SeqCst) {
            let mut r = text(StatusCode::OK, "");
            r.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            r.headers_mut().insert("grpc-status", "16".parse().unwrap());
            return Ok(r);
        }
        let mut r = text(StatusCode::UNAUTHORIZED, "");
        r.headers_mut().insert(
            "www-authenticate",
            "Bearer error=\"invalid_token\"".parse().unwrap(),
        );
        return Ok(r);
    }
    let authorization = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let echo =
        serde_json::json!({ "target": target, "authorization": authorization, "body_len": body.len() });
    let mut r = text(StatusCode::OK, echo.to_string());
    let close = script
        .close
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        == Ok(1);
    let connection = if close { "close, x-hop" } else { "x-hop" };
    r.headers_mut().insert("connection", connection.parse().unwrap());
    r.headers_mut().insert("x-hop", "dropped".parse().unwrap());
    r.headers_mut()
        .insert("proxy-authenticate", "Basic".parse().unwrap());
    Ok(r)
}

/// An authorizer for the testkit's confidential client.
fn authorizer(idp: &IdentityServer) -> Authorizer {
    Authorizer::new(idp.confidential_client().build().unwrap())
}

/// Route `r`: a loopback port of its own to `upstream`, with `authorizer`'s token.
fn route_r(upstream: &str, authorizer: Authorizer) -> Route {
    Route::new("r", "127.0.0.1:0".parse().unwrap(), upstream, authorizer).unwrap()
}

/// A proxy with one route `r` on a loopback port to `upstream`.
async fn proxy_to(upstream: &str, authorizer: Authorizer) -> (Running, SocketAddr) {
    let route = route_r(upstream, authorizer);
    let running = Proxy::builder()
        .route(route)
        .metrics("127.0.0.1:0".parse().unwrap())
        .upstream_timeout(std::time::Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let addr = running.local_addr("r").unwrap();
    (running, addr)
}

/// What the proxy's metrics listener serves at `/metrics`.
async fn metrics_text(running: &Running) -> String {
    reqwest::get(format!("http://{}/metrics", running.metrics_addr().unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The secret of the testkit's confidential client: it must never show.
const SECRET: &str = Client::CONFIDENTIAL_SECRET;
