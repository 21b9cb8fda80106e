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
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

type Pooled = Client<HttpsConnector<HttpConnector>, ProxyBody>;

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
