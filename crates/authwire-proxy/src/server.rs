//! Listeners, connections and the drain: hyper-util's server (HTTP/1.1 and h2c with prior
//! knowledge on one port, upgrades allowed), one accept loop per route, one graceful shutdown
//! for all.

use crate::ProxyError;
use crate::client::Clients;
use crate::metrics::{RouteMetrics, render};
use crate::route::{Listen, Route};
use crate::stages::{RouteState, handle};
use authwire::Clock;
use authwire::http::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Default for [`ProxyBuilder::drain_timeout`](crate::ProxyBuilder::drain_timeout).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a program may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Default for [`ProxyBuilder::upstream_timeout`](crate::ProxyBuilder::upstream_timeout).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// A proxy whose listeners are bound and serving; see [`ProxyBuilder::start`](crate::ProxyBuilder::start).
///
/// Dropping it stops the accepting as [`shutdown`](Self::shutdown) does, without waiting: the
/// workers drain what they accepted in the background, then end.
pub struct Running {
    routes: Vec<(String, Bound)>,
    metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    metrics_loop: Option<JoinHandle<()>>,
    workers: Vec<Worker>,
    metrics: Vec<Arc<RouteMetrics>>,
}

/// One event loop: a thread of its own running a single-threaded runtime that accepts on every
/// route's listener and serves what it accepted, start to finish.
struct Worker {
    /// Whether its connections finished within the drain timeout; sent when it stops.
    drained: oneshot::Receiver<bool>,
    thread: std::thread::JoinHandle<()>,
}

/// Where a route ended up listening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bound {
    /// A TCP address (with the port the OS chose for port 0).
    Tcp(SocketAddr),
    /// A unix socket.
    Unix(std::path::PathBuf),
}

impl Running {
    /// The TCP address route `name` listens on (the OS's choice for port 0).
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.routes.iter().find_map(|(n, b)| match b {
            Bound::Tcp(addr) if n == name => Some(*addr),
            _ => None,
        })
    }

    /// Where every route listens, by name.
    pub fn bound(&self) -> &[(String, Bound)] {
        &self.routes
    }

    /// The metrics listener's address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Requests answered so far, all routes (for tests and status lines).
    pub fn requests_answered(&self) -> u64 {
        self.metrics.iter().map(|m| m.answers()).sum()
    }

    /// How many event loops serve the routes (see
    /// [`ProxyBuilder::workers`](crate::ProxyBuilder::workers)).
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Stop accepting, let requests in flight finish for up to the drain timeout (every worker
    /// drains at once), then close what is left. Returns whether every connection finished in
    /// time.
    pub async fn shutdown(self) -> bool {
        let _ = self.stop.send(true);
        if let Some(metrics) = self.metrics_loop {
            let _ = metrics.await;
        }
        let mut drained = true;
        for worker in self.workers {
            drained &= worker.drained.await.unwrap_or(false);
            // It has sent its result: what is left is dropping its runtime.
            let _ = tokio::task::spawn_blocking(move || worker.thread.join()).await;
        }
        if !drained {
            tracing::warn!("drain timeout: connections still open were closed");
        }
        drained
    }

    /// Serve until SIGTERM or SIGINT (Ctrl-C), then [`shutdown`](Self::shutdown).
    pub async fn run_until_signal(self) -> bool {
        wait_for_signal().await;
        tracing::info!("stopping: no new connections; draining those in flight");
        self.shutdown().await
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// How the proxy serves: see [`ProxyBuilder`](crate::ProxyBuilder).
pub(crate) struct Settings {
    pub(crate) metrics_addr: Option<SocketAddr>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) upstream_timeout: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) workers: usize,
    pub(crate) thread_name: String,
}

/// Bind every route and the metrics listener, then start the workers.
///
/// Every route's listener is bound once, here (so that a bad address is this call's error),
/// and shared by every worker: each accepts on it from its own event loop, and a connection
/// stays with the worker that accepted it, upstream pool included, as nginx's workers do. No
/// request pays a hand-off between threads.
pub(crate) async fn start(routes: Vec<Route>, settings: Settings) -> Result<Running, ProxyError> {
    if routes.is_empty() {
        return Err(ProxyError::config("no route to serve"));
    }
    for r in &routes {
        r.check()?;
    }
    let workers = settings.workers.max(1);
    let mut bound = Vec::new();
    let mut all_metrics = Vec::new();
    // Per worker: (listener, state) for each route.
    let mut serving: Vec<Vec<(SharedListener, Arc<RouteState>)>> = (0..workers).map(|_| Vec::new()).collect();
    for route in routes {
        let metrics = Arc::new(RouteMetrics::new(&route.name, route.authorizer.clone(), workers));
        all_metrics.push(metrics.clone());
        let listener = Listener::bind(&route.listen, &route.name).await?;
        bound.push((route.name.clone(), listener.bound()));
        let shared = listener.into_shared(&route.name)?;
        for (worker, routes) in serving.iter_mut().enumerate() {
            let state = Arc::new(RouteState {
                clients: Clients::new(&route, settings.clock.clone())?,
                metrics: metrics.clone(),
                worker,
                clock: settings.clock.clone(),
                upstream_timeout: settings.upstream_timeout,
                route: route.clone(),
            });
            // The first worker removes a unix socket's file when it stops accepting.
            routes.push((shared.share(worker == 0, &route.name)?, state));
        }
    }
    let (stop, _) = watch::channel(false);
    let metrics_bound = match settings.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ProxyError::config(format!("metrics: cannot listen on {addr}: {e}")))?;
            Some((listener.local_addr().ok(), listener))
        }
        None => None,
    };
    let mut started = Vec::new();
    for (index, routes) in serving.into_iter().enumerate() {
        started.push(Worker::start(
            format!("{}{index}", settings.thread_name),
            routes,
            stop.subscribe(),
            settings.drain_timeout,
        )?);
    }
    let (metrics_addr, metrics_loop) = match metrics_bound {
        Some((local, listener)) => (
            local,
            Some(tokio::spawn(metrics_loop(
                listener,
                all_metrics.clone(),
                stop.subscribe(),
            ))),
        ),
        None => (None, None),
    };
    for (name, b) in &bound {
        tracing::info!(route = %name, listen = ?b, workers, "listening");
    }
    Ok(Running {
        routes: bound,
        metrics_addr,
        stop,
        metrics_loop,
        workers: started,
        metrics: all_metrics,
    })
}

impl Worker {
    /// A thread with a single-threaded runtime accepting on `routes`' listeners until `stop`,
    /// then draining for up to `drain_timeout`.
    fn start(
        name: String,
        routes: Vec<(SharedListener, Arc<RouteState>)>,
        stop: watch::Receiver<bool>,
        drain_timeout: Duration,
    ) -> Result<Self, ProxyError> {
        if name.contains('\0') {
            return Err(ProxyError::config(format!(
                "worker thread name {name:?}: a thread name cannot hold a NUL byte"
            )));
        }
        let cannot = |e: std::io::Error| ProxyError::config(format!("cannot start worker {name}: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(cannot)?;
        // Registered with the worker's own event loop (here, so that a failure is this call's).
        let listeners = {
            let _entered = runtime.enter();
            routes
                .into_iter()
                .map(|(listener, state)| Ok((listener.register().map_err(cannot)?, state)))
                .collect::<Result<Vec<_>, ProxyError>>()?
        };
        let (done, drained) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let finished = runtime.block_on(serve_until_stopped(listeners, stop, drain_timeout));
                let _ = done.send(finished);
            })
            .map_err(cannot)?;
        Ok(Self { drained, thread })
    }
}

/// A worker's life: an accept loop per route, then the drain of what it accepted.
async fn serve_until_stopped(
    listeners: Vec<(Listener, Arc<RouteState>)>,
    stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) -> bool {
    let graceful = Arc::new(GracefulShutdown::new());
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|(listener, state)| tokio::spawn(accept_loop(listener, state, stop.clone(), graceful.clone())))
        .collect();
    for l in loops {
        let _ = l.await;
    }
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        return false;
    };
    tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_ok()
}

/// A bound listener, out of any event loop, that every worker accepts on.
enum SharedListener {
    Tcp(std::net::TcpListener),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixListener, Option<std::path::PathBuf>),
}

impl SharedListener {
    /// Another handle on the same socket; `owner`'s removes a unix socket's file at the end.
    fn share(&self, owner: bool, route: &str) -> Result<Self, ProxyError> {
        #[cfg(not(unix))]
        let _ = owner; // only a unix socket has a file to remove
        let fail =
            |e: std::io::Error| ProxyError::config(format!("route {route}: cannot share the listener: {e}"));
        match self {
            Self::Tcp(l) => l.try_clone().map(Self::Tcp).map_err(fail),
            #[cfg(unix)]
            Self::Unix(l, path) => l
                .try_clone()
                .map(|l| Self::Unix(l, path.clone().filter(|_| owner)))
                .map_err(fail),
        }
    }

    /// Registered with the current runtime's event loop.
    fn register(self) -> std::io::Result<Listener> {
        match self {
            Self::Tcp(l) => tokio::net::TcpListener::from_std(l).map(Listener::Tcp),
            #[cfg(unix)]
            Self::Unix(l, path) => tokio::net::UnixListener::from_std(l).map(|l| Listener::Unix(l, path)),
        }
    }
}

/// A bound listener of either kind.
enum Listener {
    Tcp(tokio::net::TcpListener),
    /// With the path its owner removes when it stops accepting.
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, Option<std::path::PathBuf>),
}

impl Listener {
    async fn bind(listen: &Listen, route: &str) -> Result<Self, ProxyError> {
        match listen {
            Listen::Tcp(addr) => tokio::net::TcpListener::bind(addr)
                .await
                .map(Self::Tcp)
                .map_err(|e| ProxyError::config(format!("route {route}: cannot listen on {addr}: {e}"))),
            #[cfg(unix)]
            Listen::Unix(path) => bind_unix(path, route).map(|l| Self::Unix(l, Some(path.clone()))),
            #[cfg(not(unix))]
            Listen::Unix(path) => Err(ProxyError::config(format!(
                "route {route}: unix sockets ({}) are not available on this platform",
                path.display()
            ))),
        }
    }

    fn bound(&self) -> Bound {
        match self {
            Self::Tcp(l) => Bound::Tcp(
                l.local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            ),
            #[cfg(unix)]
            Self::Unix(_, path) => Bound::Unix(path.clone().unwrap_or_default()),
        }
    }

    /// Out of the current event loop, to be shared by the workers.
    fn into_shared(self, route: &str) -> Result<SharedListener, ProxyError> {
        let fail =
            |e: std::io::Error| ProxyError::config(format!("route {route}: cannot share the listener: {e}"));
        match self {
            Self::Tcp(l) => l.into_std().map(SharedListener::Tcp).map_err(fail),
            #[cfg(unix)]
            Self::Unix(l, path) => l.into_std().map(|l| SharedListener::Unix(l, path)).map_err(fail),
        }
    }
}

/// A unix socket at `path`, `0600` from the moment it has that name: bound in a private
/// folder beside it, made private, then renamed into place. A stale socket at `path` is
/// replaced; anything else there (a file, a folder, a symbolic link) is refused.
#[cfg(unix)]
fn bind_unix(path: &std::path::Path, route: &str) -> Result<tokio::net::UnixListener, ProxyError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    let fail = |what: &str, e: std::io::Error| {
        ProxyError::config(format!("route {route}: cannot {what} {}: {e}", path.display()))
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| fail("replace", e))?
        }
        Ok(_) => {
            return Err(ProxyError::config(format!(
                "route {route}: {} exists and is not a socket: not replaced",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail("inspect", e)),
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| ProxyError::config(format!("route {route}: {} names no file", path.display())))?;
    // Bound inside a private folder (0700: no other user can even reach the socket there),
    // made 0600, then renamed into place: never reachable with looser permissions, whatever
    // the umask.
    let private_dir = path.with_file_name(format!(
        ".{}.{}.d",
        file_name.to_string_lossy(),
        authwire::random::hex(8)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private_dir)
        .map_err(|e| fail("prepare a private folder beside", e))?;
    let temp = private_dir.join("socket");
    let bound = tokio::net::UnixListener::bind(&temp).map_err(|e| fail("listen on", e));
    let placed = bound.and_then(|listener| {
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&temp, path))
            .map(|()| listener)
            .map_err(|e| fail("make private", e))
    });
    let _ = std::fs::remove_file(&temp);
    let _ = std::fs::remove_dir(&private_dir);
    let listener = placed?;
    Ok(listener)
}

/// Accept connections until told to stop; serve each with HTTP/1.1 or h2c, watched by the
/// graceful shutdown.
async fn accept_loop(
    listener: Listener,
    state: Arc<RouteState>,
    mut stop: watch::Receiver<bool>,
    graceful: Arc<GracefulShutdown>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(io) => serve(io, state.clone(), &graceful),
            Err(e) => {
                // Out of descriptors, say: pause rather than spin.
                tracing::warn!(route = %state.route.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Dropping the listener closes it (a unix socket's file is removed).
    #[cfg(unix)]
    if let Listener::Unix(_, Some(path)) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

/// A connection from either kind of listener.
enum Conn {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Conn> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, _) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok(Conn::Tcp(stream))
        }
        #[cfg(unix)]
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
    }
}

fn serve(conn: Conn, state: Arc<RouteState>, graceful: &GracefulShutdown) {
    let watcher = graceful.watcher();
    let service = hyper::service::service_fn(move |request| handle(state.clone(), request));
    tokio::spawn(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A client that never finishes its request head (slowloris) is dropped.
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let result = match conn {
            Conn::Tcp(s) => {
                watcher
                    .watch(builder.serve_connection_with_upgrades(TokioIo::new(s), service))
                    .await
            }
            #[cfg(unix)]
            Conn::Unix(s) => {
                watcher
                    .watch(builder.serve_connection_with_upgrades(TokioIo::new(s), service))
                    .await
            }
        };
        if let Err(e) = result {
            // A client that went away, or spoke something that is not HTTP: hyper answered it.
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}

/// `/metrics` (Prometheus text) and `/healthz` on their own listener, HTTP/1.1.
async fn metrics_loop(
    listener: tokio::net::TcpListener,
    routes: Vec<Arc<RouteMetrics>>,
    mut stop: watch::Receiver<bool>,
) {
    let routes = Arc::new(routes);
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let routes = routes.clone();
            async move {
                let (status, kind, body) = match request.uri().path() {
                    "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", render(&routes)),
                    "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
                    _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
                };
                let mut response = Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    authwire::http::header::CONTENT_TYPE,
                    authwire::http::HeaderValue::from_static(kind),
                );
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
