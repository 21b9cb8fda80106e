//! The upstream clients: hyper-util's pooled client over hyper-rustls, one per way of speaking.
//!
//! - `auto`: https with ALPN (h2, then http/1.1); plain http/1.1 to a loopback upstream;
//! - `h2c`: HTTP/2 with prior knowledge, for a program that spoke h2c (gRPC) to a plain-http
//!   upstream (over TLS, ALPN chooses);
//! - `h1`: HTTP/1.1 only, for upgrades (a WebSocket handshake needs HTTP/1.1 end to end).

use crate::ProxyError;
use crate::body::ProxyBody;
use crate::route::Route;
use authwire::http::Request;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

type Pooled = Client<HttpsConnector<Tcp>, ProxyBody>;

/// A route's clients, sharing nothing with other routes (each has its own roots and identity).
pub(crate) struct Clients {
    auto: Pooled,
    h2c: Pooled,
    h1: Pooled,
}

impl Clients {
    pub(crate) fn new(route: &Route) -> Result<Self, ProxyError> {
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
            b.pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(64)
                .http2_only(h2_only);
            b
        };
        Ok(Self {
            auto: pool(false).build(connector(true, true)),
            h2c: pool(true).build(connector(true, false)),
            h1: pool(false).build(connector(false, true)),
        })
    }

    /// Send `request` by the right client: `h1` for an upgrade, `h2c` when the program spoke
    /// HTTP/2 and the upstream is plain http, else `auto`.
    pub(crate) fn send(
        &self,
        request: Request<ProxyBody>,
        upgrade: bool,
        inbound_h2: bool,
    ) -> hyper_util::client::legacy::ResponseFuture {
        let plain = request.uri().scheme_str() == Some("http");
        let client = if upgrade {
            &self.h1
        } else if inbound_h2 && plain {
            &self.h2c
        } else {
            &self.auto
        };
        client.request(request)
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
