//! The upstream clients, over hyper-rustls (one TLS configuration per route).
//!
//! - the HTTP/1.1 lane, for a program's HTTP/1.1 requests to an upstream that speaks HTTP/1.1
//!   (plain http, or TLS where ALPN chose http/1.1): a worker's own list of idle upstream
//!   connections, the newest taken first; an answer read to its end puts its connection back
//!   ([`LaneBody`]). No pool key is hashed and no lock is contended per request (the list is
//!   the worker's alone).
//! - hyper-util's pooled clients for the rest:
//!   - `auto`: https with ALPN (h2, then http/1.1), HTTP/2 multiplexing one connection;
//!   - `h2c`: HTTP/2 with prior knowledge, for a program that spoke h2c (gRPC) to a
//!     plain-http upstream (over TLS, ALPN chooses);
//!   - `h1`: HTTP/1.1 only, for upgrades (a WebSocket handshake needs HTTP/1.1 end to end).

use crate::ProxyError;
use crate::body::ProxyBody;
use crate::route::Route;
use authwire::Clock;
use authwire::http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

type Pooled = Client<HttpsConnector<Tcp>, ProxyBody>;

/// Why the upstream gave no answer (its chain of causes is what the program is told).
pub(crate) type SendError = Box<dyn std::error::Error + Send + Sync>;

/// How long an idle upstream connection is kept for a later request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle upstream connections kept per route and worker, at most.
const MAX_IDLE: usize = 64;

/// A route's clients on one worker, sharing nothing with other routes (each has its own roots
/// and identity).
pub(crate) struct Clients {
    auto: Pooled,
    h2c: Pooled,
    h1: Pooled,
    lane: Lane,
}

/// The HTTP/1.1 lane: how to connect, and the idle connections.
struct Lane {
    /// ALPN offers h2 and http/1.1, as `auto`'s does.
    connector: HttpsConnector<Tcp>,
    idle: Arc<Idle>,
    /// The upstream chose h2 by ALPN: its requests go by `auto`, which multiplexes them.
    upstream_h2: AtomicBool,
    /// The sweep of the idle list runs (started with the first connection, on the worker's
    /// runtime).
    sweeping: AtomicBool,
}

/// Idle upstream connections, each with the time it became idle, newest last. One worker's:
/// its lock is never contended.
struct Idle {
    connections: Mutex<Vec<(http1::SendRequest<ProxyBody>, SystemTime)>>,
    clock: Arc<dyn Clock>,
}

impl Idle {
    /// The newest connection young enough and ready for a request (the others are dropped,
    /// which closes them).
    fn take(&self) -> Option<http1::SendRequest<ProxyBody>> {
        let now = self.clock.now_coarse();
        let mut idle = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((sender, since)) = idle.pop() {
            if young(now, since) && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// `sender`'s exchange is over: keep it for the next request (the oldest, if too old or
    /// beyond [`MAX_IDLE`], goes).
    fn put(&self, sender: http1::SendRequest<ProxyBody>) {
        let now = self.clock.now_coarse();
        let mut idle = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.first().is_some_and(|(_, since)| !young(now, *since)) || idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((sender, now));
    }
}

/// Every half [`IDLE_TIMEOUT`] on `idle`'s clock, drop the connections idle for that long (which
/// closes them), so that a proxy gone quiet holds no upstream connection past it; ends with
/// the list.
fn sweep(idle: &Arc<Idle>) {
    let (list, clock) = (Arc::downgrade(idle), idle.clock.clone());
    tokio::spawn(async move {
        loop {
            clock.sleep(IDLE_TIMEOUT / 2).await;
            let Some(idle) = list.upgrade() else {
                return;
            };
            let now = clock.now_coarse();
            idle.connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|(_, since)| young(now, *since));
        }
    });
}

/// Idle since `since`, and not for [`IDLE_TIMEOUT`] yet at `now` (a clock set back counts as
/// no time).
fn young(now: SystemTime, since: SystemTime) -> bool {
    now.duration_since(since).unwrap_or_default() < IDLE_TIMEOUT
}

/// The upstream's answer body, by the HTTP/1.1 lane: once read to its end, its connection
/// goes back to the idle list if it is ready for another request; dropped before that, the
/// connection closes with it (an HTTP/1.1 connection cannot be reused with an answer half
/// read). A connection still busy when its answer ends (the upstream answered before the
/// program's request body was sent, say) is not kept: no request ever waits for another's
/// exchange to finish.
pub(crate) struct LaneBody {
    body: Incoming,
    back: Option<(http1::SendRequest<ProxyBody>, Arc<Idle>)>,
}

impl LaneBody {
    fn new(body: Incoming, sender: http1::SendRequest<ProxyBody>, idle: Arc<Idle>) -> Self {
        let mut body = Self {
            body,
            back: Some((sender, idle)),
        };
        // No body at all (`204`, `304`, a `HEAD`'s, `Content-Length: 0`): done already.
        if http_body::Body::is_end_stream(&body.body) {
            body.give_back();
        }
        body
    }

    fn give_back(&mut self) {
        if let Some((sender, idle)) = self.back.take()
            && sender.is_ready()
        {
            idle.put(sender);
        }
    }
}

impl http_body::Body for LaneBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            Some(Err(_)) => self.back = None,
            None => self.give_back(),
            Some(Ok(_)) if self.body.is_end_stream() => self.give_back(),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Clients {
    pub(crate) fn new(route: &Route, clock: Arc<dyn Clock>) -> Result<Self, ProxyError> {
        let tls = route
            .transport
            .rustls_client_config(&[])
            .map_err(|e| ProxyError::config(format!("route {}: {e}", route.name)))?;
        let connector = |h2: bool, h1: bool| {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(Duration::from_secs(10)));
            let builder = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http();
            match (h2, h1) {
                (true, true) => builder.enable_all_versions().wrap_connector(Tcp(http)),
                (true, false) => builder.enable_http2().wrap_connector(Tcp(http)),
                _ => builder.enable_http1().wrap_connector(Tcp(http)),
            }
        };
        let pool = |h2_only: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(IDLE_TIMEOUT)
                .pool_max_idle_per_host(MAX_IDLE)
                .http2_only(h2_only);
            b
        };
        Ok(Self {
            auto: pool(false).build(connector(true, true)),
            h2c: pool(true).build(connector(true, false)),
            h1: pool(false).build(connector(false, true)),
            lane: Lane {
                connector: connector(true, true),
                idle: Arc::new(Idle {
                    connections: Mutex::new(Vec::new()),
                    clock,
                }),
                upstream_h2: AtomicBool::new(false),
                sweeping: AtomicBool::new(false),
            },
        })
    }

    /// Send `request` (its URI absolute) by the right client: `h1` for an upgrade, `h2c` when
    /// the program spoke HTTP/2 and the upstream is plain http, `auto` for the program's other
    /// HTTP/2 requests and for an upstream that chose h2, else the HTTP/1.1 lane.
    pub(crate) async fn send(
        &self,
        request: Request<ProxyBody>,
        upgrade: bool,
        inbound_h2: bool,
    ) -> Result<Response<ProxyBody>, SendError> {
        let plain = request.uri().scheme_str() == Some("http");
        let client = if upgrade {
            &self.h1
        } else if inbound_h2 && plain {
            &self.h2c
        } else if inbound_h2 || self.lane.upstream_h2.load(Ordering::Relaxed) {
            &self.auto
        } else {
            return self.lane.send(request, &self.auto).await;
        };
        Ok(client.request(request).await?.map(ProxyBody::Incoming))
    }
}

impl Lane {
    /// Send by an idle connection, or a new one. A request an idle connection closed before
    /// taking (the upstream timed it out) goes by the next; one it took and then failed is
    /// the program's error, as with any client.
    async fn send(
        &self,
        mut request: Request<ProxyBody>,
        auto: &Pooled,
    ) -> Result<Response<ProxyBody>, SendError> {
        let absolute = request.uri().clone();
        // HTTP/1.1 to an origin server: the request target in origin form (RFC 9112 section
        // 3.2.1), as any client writes it.
        *request.uri_mut() = origin_form(&absolute);
        while let Some(mut sender) = self.idle.take() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.answer(response, sender)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        // No idle connection: a new one. Boxed: its state (a TLS connection among it) is large,
        // and a request that finds an idle connection should not carry it.
        Box::pin(self.open(request, absolute, auto)).await
    }

    /// Send by a new connection to `absolute`'s origin (`request` already in origin form).
    async fn open(
        &self,
        mut request: Request<ProxyBody>,
        absolute: Uri,
        auto: &Pooled,
    ) -> Result<Response<ProxyBody>, SendError> {
        let io = connect(&self.connector, absolute.clone()).await?;
        if io.connected().is_negotiated_h2() {
            // ALPN chose h2: this upstream's requests go by `auto` from now on, which
            // multiplexes them over one connection (this one is dropped).
            self.upstream_h2.store(true, Ordering::Relaxed);
            *request.uri_mut() = absolute;
            return Ok(auto.request(request).await?.map(ProxyBody::Incoming));
        }
        let (mut sender, connection) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            sweep(&self.idle);
        }
        let response = sender.send_request(request).await?;
        Ok(self.answer(response, sender))
    }

    /// The answer, its body giving `sender` back to the idle list once read.
    fn answer(
        &self,
        response: Response<Incoming>,
        sender: http1::SendRequest<ProxyBody>,
    ) -> Response<ProxyBody> {
        response.map(|body| ProxyBody::Lane(LaneBody::new(body, sender, self.idle.clone())))
    }
}

type Connector = HttpsConnector<Tcp>;

/// A new connection to `uri`'s origin, by `connector` (TLS and ALPN when https).
async fn connect(
    connector: &Connector,
    uri: Uri,
) -> Result<<Connector as tower_service::Service<Uri>>::Response, SendError> {
    let mut connector = connector.clone();
    std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut connector, cx)).await?;
    tower_service::Service::call(&mut connector, uri).await
}

/// `uri`'s path and query alone.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

/// hyper-util's TCP connector, its connections without the copy of their addresses
/// (`HttpInfo`) that hyper-util otherwise puts on every answer: the proxy never reads it, and
/// it costs three allocations per request.
#[derive(Clone)]
pub(crate) struct Tcp(HttpConnector);

type Connecting<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl tower_service::Service<authwire::http::Uri> for Tcp {
    type Response = Bare<TokioIo<tokio::net::TcpStream>>;
    type Error = <HttpConnector as tower_service::Service<authwire::http::Uri>>::Error;
    type Future = Connecting<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: authwire::http::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(Bare) })
    }
}

/// A connection that tells hyper-util nothing about itself.
pub(crate) struct Bare<T>(T);

impl<T> Connection for Bare<T> {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Bare<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Bare<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}
