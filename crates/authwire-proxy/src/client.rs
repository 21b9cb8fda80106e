//! The upstream clients: hyper-util's pooled client over hyper-rustls, one per way of speaking.
//!
//! - `auto`: https with ALPN (h2, then http/1.1); plain http/1.1 to a loopback upstream;
//! - `h2c`: HTTP/2 with prior knowledge, for a program that spoke h2c (gRPC) to a plain-http
//!   upstream (over TLS, ALPN chooses);
//! - `h1`: HTTP/1.1 only, for upgrades (a WebSocket handshake needs HTTP/1.1 end to end);
//! - [`Affine`]: for a program's HTTP/1.1 connection, one upstream HTTP/1.1 connection of its
//!   own, driven inside the program connection's task (`server::serve`), so that a request and
//!   its answer never cross tasks. A pooled client hands each request to the connection's task
//!   through a channel and back; measured with wrk, that hand-off was most of the proxy's cost
//!   beside the kernel's (docs/PERFORMANCE.md).

use crate::ProxyError;
use crate::body::ProxyBody;
use crate::route::Route;
use authwire::http::Request;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

type Pooled = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// An upstream connection's future, driven by the program connection's task.
pub(crate) type Driver = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A route's clients, sharing nothing with other routes (each has its own roots and identity).
pub(crate) struct Clients {
    auto: Pooled,
    h2c: Pooled,
    h1: Pooled,
    /// Makes the connections of [`Affine`] (HTTP/1.1 by ALPN over TLS).
    h1_connector: HttpsConnector<HttpConnector>,
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
                (true, true) => builder.enable_all_versions().wrap_connector(http),
                (true, false) => builder.enable_http2().wrap_connector(http),
                _ => builder.enable_http1().wrap_connector(http),
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
            h1_connector: connector(false, true),
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

/// One program connection's own upstream HTTP/1.1 connection: made on its first request,
/// replaced when it is closed, driven by the program connection's task (which receives its
/// future through `drive`).
pub(crate) struct Affine {
    sender: std::sync::Mutex<Option<hyper::client::conn::http1::SendRequest<ProxyBody>>>,
    drive: tokio::sync::mpsc::UnboundedSender<Driver>,
}

impl Affine {
    pub(crate) fn new(drive: tokio::sync::mpsc::UnboundedSender<Driver>) -> Self {
        Self {
            sender: std::sync::Mutex::new(None),
            drive,
        }
    }

    /// Send `request` on this connection's upstream connection (made now if there is none, or
    /// if the last one closed).
    pub(crate) async fn send(
        &self,
        clients: &Clients,
        mut request: Request<ProxyBody>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, BoxError> {
        // HTTP/1.1 by hand: `Host` is the upstream's, and the request line in origin form (what
        // the pooled client does for us).
        let full = request.uri().clone();
        if let Some(authority) = full.authority() {
            let host = authwire::http::HeaderValue::from_str(authority.as_str())?;
            request.headers_mut().insert(authwire::http::header::HOST, host);
        }
        let origin_form = full.path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = origin_form.parse()?;
        let kept = self
            .sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let alive = match kept {
            Some(mut s) => s.ready().await.is_ok().then_some(s),
            None => None,
        };
        let mut sender = match alive {
            Some(s) => s,
            None => self.connect(clients, &full).await?,
        };
        let answer = sender.send_request(request);
        *self
            .sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sender);
        Ok(answer.await?)
    }

    async fn connect(
        &self,
        clients: &Clients,
        uri: &authwire::http::Uri,
    ) -> Result<hyper::client::conn::http1::SendRequest<ProxyBody>, BoxError> {
        use tower_service::Service as _;
        let mut connector = clients.h1_connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        let io = connector.call(uri.clone()).await?;
        let (sender, connection) = hyper::client::conn::http1::Builder::new().handshake(io).await?;
        self.drive
            .send(Box::pin(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "an upstream connection ended with an error");
                }
            }))
            .map_err(|_| "the program's connection is closing")?;
        Ok(sender)
    }
}

/// An error of either side.
type BoxError = Box<dyn std::error::Error + Send + Sync>;
