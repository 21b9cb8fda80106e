//! A sidecar that authorizes any program's outgoing requests: programs speak plain HTTP/1.1 or
//! h2c to a loopback listener (or a `0600` unix socket), and the proxy forwards each request to
//! its route's upstream over TLS (ALPN h2 or http/1.1, pooled connections), with an
//! `Authorization` header from the route's [`Authorizer`](authwire::Authorizer): one refresh
//! shared by every request, ahead of expiry, a still-valid token served while a refresh fails,
//! a fresh DPoP proof per request for bound tokens.
//!
//! ```no_run
//! use authwire::{Authorizer, StaticTokenProvider};
//! use authwire_proxy::{Proxy, Route};
//!
//! # async fn run() -> Result<(), authwire_proxy::ProxyError> {
//! let authorizer = Authorizer::new(StaticTokenProvider::new("t0k3n")); // any provider
//! let running = Proxy::builder()
//!     .route(Route::new("orders", "127.0.0.1:8081".parse()?, "https://orders.example/v2", authorizer)?)
//!     .metrics("127.0.0.1:9464".parse().unwrap())
//!     .start()
//!     .await?;
//! // GET http://127.0.0.1:8081/items?page=2 now reaches https://orders.example/v2/items?page=2
//! running.run_until_signal().await; // SIGTERM / Ctrl-C: stop accepting, drain, return
//! # Ok(()) }
//! ```
//!
//! # What it does to a request
//!
//! The stages are named functions in `stages.rs`, in the order they run: the upstream URI (the
//! route's origin and base path, then the request's path and query byte for byte); the
//! request filter (hop-by-hop headers of RFC 9110 section 7.6.1 and every `Proxy-*` dropped,
//! the program's own `Authorization` and `DPoP` removed: replaced, never forwarded); authorize
//! (the core's steps 1-5); forward (bodies stream both ways; at most 64 KiB of a request body is
//! kept while in flight); judge (the core's rejection rules: a 401 or gRPC `grpc-status: 16`
//! with a token the core judges rejected is refreshed once, shared by every concurrent
//! rejection, and the request replayed when it had no body or a kept one); the response filter;
//! `fail_to_proxy` (503 with `Retry-After` and JSON naming the cause when no token can be had;
//! 502 and 504 for the upstream); record (metrics, one debug line per request, never a secret).
//! WebSocket upgrades pass through.
//!
//! # Threads
//!
//! The proxy serves from threads of its own ([`ProxyBuilder::workers`], one per core by
//! default), each a single-threaded runtime accepting on every route's listener; a connection
//! and its upstream connections stay on the thread that accepted it. The caller's runtime
//! serves the metrics listener only.
//!
//! # Security
//!
//! A listener lends the workload's identity to whoever can connect to it. Listeners bind
//! loopback addresses or unix sockets (`0600`) only; any other address is refused unless the
//! route says [`allow_remote`](Route::allow_remote). Upstreams are https, or plain http to
//! loopback, unless [`allow_insecure_http`](Route::allow_insecure_http). The token goes only to
//! the route's upstream, whatever authority or absolute URL a program writes.

mod body;
mod client;
mod metrics;
mod route;
mod server;
mod stages;

pub use body::REPLAY_LIMIT;
pub use route::{Listen, Route};
pub use server::{Bound, DEFAULT_DRAIN_TIMEOUT, DEFAULT_UPSTREAM_TIMEOUT, Running};

use authwire::{Clock, SystemClock};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A configuration the proxy refuses to start with: one line that names the setting (and the
/// flag that changes it, where there is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    message: String,
}

impl ProxyError {
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProxyError {}

/// The sidecar: its routes and settings. Build with [`Proxy::builder`].
pub struct Proxy;

impl Proxy {
    /// Configure a proxy.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder {
            routes: Vec::new(),
            metrics: None,
            clock: Arc::new(SystemClock),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            workers: None,
            thread_name: "proxy-worker-".to_owned(),
        }
    }
}

/// Configures and starts a proxy.
pub struct ProxyBuilder {
    routes: Vec<Route>,
    metrics: Option<SocketAddr>,
    clock: Arc<dyn Clock>,
    upstream_timeout: Duration,
    drain_timeout: Duration,
    workers: Option<usize>,
    thread_name: String,
}

impl ProxyBuilder {
    /// Serve this route (repeatable: one listener each).
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Serve `/metrics` (Prometheus text) and `/healthz` on this address.
    pub fn metrics(mut self, addr: SocketAddr) -> Self {
        self.metrics = Some(addr);
        self
    }

    /// How long the upstream may take to start its answer (default 60 s): then 504.
    pub fn upstream_timeout(mut self, timeout: Duration) -> Self {
        self.upstream_timeout = timeout;
        self
    }

    /// How long requests in flight may take to finish once a shutdown starts (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How many event loops serve the routes (default: one per core the process may use,
    /// `std::thread::available_parallelism`; at least one).
    ///
    /// Each is a thread of its own running a single-threaded tokio runtime, accepting on every
    /// route's listener; a connection is served start to finish by the worker that accepted it,
    /// with that worker's own pool of upstream connections, so that no request pays a hand-off
    /// between threads (nginx's and pingora's design; docs/PERFORMANCE.md has the figures). The
    /// runtime that calls [`start`](Self::start) serves only the metrics listener.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers.max(1));
        self
    }

    /// The workers' thread names: this prefix, then the worker's index (default
    /// `proxy-worker-`, so `proxy-worker-0`, ...). Linux keeps the first 15 bytes of a name.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Measure latencies with `clock` (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Check every route (loopback listeners, https upstreams, unless allowed by name), bind
    /// every listener, and serve.
    pub async fn start(self) -> Result<Running, ProxyError> {
        let workers = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
        server::start(
            self.routes,
            server::Settings {
                metrics_addr: self.metrics,
                clock: self.clock,
                upstream_timeout: self.upstream_timeout,
                drain_timeout: self.drain_timeout,
                workers,
                thread_name: self.thread_name,
            },
        )
        .await
    }
}

/// docs/proxy.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/proxy.md")]
pub struct ProxyGuide;
