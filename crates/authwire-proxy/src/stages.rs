//! One proxied request, as named stages (after pingora's `proxy_trait`), in the order they run:
//!
//! 1. [`upstream_uri`]: the upstream's origin and base path, then the request's path and query
//!    byte for byte (whatever authority the program wrote is ignored);
//! 2. [`upstream_request_filter`]: hop-by-hop headers (RFC 9110 section 7.6.1) and `Proxy-*`
//!    dropped, the program's own `Authorization` and `DPoP` removed, `Host` the upstream's
//!    authority (whatever the program wrote);
//! 3. [`authorize`]: steps 1-5 of the core's pipeline for the upstream target (a fresh DPoP
//!    proof for a bound token);
//! 4. [`forward`]: the request to the upstream, its body streamed through a [`Tee`] that keeps
//!    at most 64 KiB for a replay;
//! 5. [`judge`]: the core's decision on the answer; a rejected token is refreshed once (shared
//!    by every concurrent rejection) and the request replayed when its body was kept;
//! 6. [`upstream_response_filter`]: hop-by-hop headers dropped from the answer; upgrades
//!    (WebSocket) are joined end to end;
//! 7. [`fail_to_proxy`]: what the program gets when there is no answer to pass on (503 with
//!    `Retry-After` when no token can be had, 502, 504), as JSON naming the cause;
//! 8. [`record`]: metrics and one log line, never a secret.

use crate::body::{ProxyBody, Tee, full};
use crate::client::Clients;
use crate::metrics::{Counters, RouteMetrics};
use crate::route::Route;
use authwire::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use authwire::http::{Method, Request, Response, StatusCode, Uri, Version};
use authwire::{Answer, AuthError, Clock, RejectionRules, RetryDecision, Target};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

/// Everything a route's requests need on one worker, shared by the connections it accepted.
pub(crate) struct RouteState {
    pub(crate) route: Route,
    /// This worker's upstream connections (a pool per worker: a request never leaves the
    /// thread that accepted it).
    pub(crate) clients: Clients,
    pub(crate) metrics: Arc<RouteMetrics>,
    /// Which worker this is: its counters in `metrics`.
    pub(crate) worker: usize,
    pub(crate) clock: Arc<dyn Clock>,
    /// How long the upstream may take to start its answer.
    pub(crate) upstream_timeout: Duration,
}

impl RouteState {
    /// This worker's counters for the route.
    fn counters(&self) -> &Counters {
        self.metrics.worker(self.worker)
    }
}

/// Why a request got no answer from the upstream.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No token could be had.
    NoToken(AuthError),
    /// The request cannot be forwarded as sent.
    BadRequest(&'static str),
    /// The upstream could not be reached, or answered something that is not HTTP.
    Upstream(String),
    /// The upstream did not start its answer in time.
    UpstreamTimeout(Duration),
}

/// Serve one request of `state`'s route: the stages in order, then [`record`].
pub(crate) async fn handle(
    state: Arc<RouteState>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    // For the debug line only: no clock read, no copy of the path, when nobody reads it.
    let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| {
        (
            state.clock.now(),
            request.method().clone(),
            request.uri().path().to_owned(),
        )
    });
    let response = match proxy(&state, request).await {
        Ok(response) => response,
        Err(failure) => fail_to_proxy(&state, &failure),
    };
    record(&state, logged, response.status());
    Ok(response)
}

async fn proxy(state: &RouteState, mut request: Request<Incoming>) -> Result<Response<ProxyBody>, Failure> {
    let upgrade = wants_upgrade(&request);
    let program_side = upgrade.then(|| hyper::upgrade::on(&mut request));
    let inbound_h2 = request.version() == Version::HTTP_2;
    if request.method() == Method::CONNECT {
        // This is not a forward proxy: a tunnel to anywhere would carry nothing of ours, and
        // a CONNECT forwarded upstream would carry the token.
        return Err(Failure::BadRequest(
            "CONNECT is not proxied: send requests with a path",
        ));
    }
    let (mut parts, body) = request.into_parts();
    let uri = upstream_uri(&state.route, &parts.uri)?;
    upstream_request_filter(&mut parts.headers, upgrade);
    let target = Target::from_uri(&parts.method, &uri);
    let sent = authorize(state, &target, &mut parts.headers).await?;

    parts
        .headers
        .insert(header::HOST, state.route.upstream.host.clone());
    // A request without a body (most) needs no copy kept for a replay.
    let (first_body, kept) = if http_body::Body::is_end_stream(&body) {
        (ProxyBody::empty(), None)
    } else {
        let (tee, kept) = Tee::new(body);
        (ProxyBody::Tee(tee), Some(kept))
    };
    let first = build(&parts.method, &uri, &parts.headers, first_body);
    let mut response = forward(state, first, upgrade, inbound_h2).await?;

    let replay_body = match kept {
        None => Some(bytes::Bytes::new()),
        Some(kept) => kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replayable(),
    };
    if let Some(retry) = judge(state, &target, &response, &sent, replay_body.is_some()).await
        && let Some(bytes) = replay_body
    {
        let mut headers = parts.headers.clone();
        retry.apply(&target, &mut headers).map_err(Failure::NoToken)?;
        state.counters().replayed();
        tracing::debug!(route = %state.route.name, "token rejected; refreshed and replayed once");
        let again = build(&parts.method, &uri, &headers, full(bytes));
        // The rejected answer goes first: the connection it came by is then closed (its body
        // unread) or back in the pool, not held while the replay is sent.
        drop(response);
        response = forward(state, again, upgrade, inbound_h2).await?;
    }
    if let (Some(program_side), StatusCode::SWITCHING_PROTOCOLS) = (program_side, response.status()) {
        join_upgrade(program_side, hyper::upgrade::on(&mut response));
    }
    let (mut parts, body) = response.into_parts();
    upstream_response_filter(
        &mut parts.headers,
        parts.status == StatusCode::SWITCHING_PROTOCOLS,
    );
    Ok(Response::from_parts(parts, body))
}

/// Stage 1: the upstream URI for the request's path and query.
pub(crate) fn upstream_uri(route: &Route, uri: &Uri) -> Result<Uri, Failure> {
    let slash = authwire::http::uri::PathAndQuery::from_static("/");
    let path_and_query = uri.path_and_query().unwrap_or(&slash);
    if !path_and_query.as_str().starts_with('/') {
        // `OPTIONS *`, or a CONNECT authority: this is not a forward proxy.
        return Err(Failure::BadRequest(
            "only origin-form requests (a path) are proxied",
        ));
    }
    route
        .upstream
        .join(path_and_query)
        .map_err(|_| Failure::BadRequest("the request path cannot be joined to the upstream URL"))
}

const DPOP_NONCE: &str = "dpop-nonce";

/// The headers RFC 9110 section 7.6.1 calls hop-by-hop, beside those `Connection` names.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` is one [`drop_hop_by_hop`] drops whatever `Connection` says.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str().starts_with("proxy-")
}

/// Drop hop-by-hop headers: those `Connection` lists, the fixed ones, every `Proxy-*`. With
/// `keep_upgrade`, `Upgrade` stays and `Connection: upgrade` is set (a WebSocket handshake).
fn drop_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // `Connection` itself goes first, its values taken out with it (one lookup, no copy); the
    // names it lists are removed by name as written (no header name is built: most are not
    // standard ones, and building one allocates). The usual tokens (`keep-alive`, `close`,
    // `upgrade`) name a header dropped below, or none: no lookup for them.
    let (first, more) = match headers.entry(header::CONNECTION) {
        header::Entry::Occupied(entry) => {
            let mut values = entry.remove_entry_mult().1;
            let first = values.next();
            let more: Vec<HeaderValue> = values.collect();
            (first, more)
        }
        header::Entry::Vacant(_) => (None, Vec::new()),
    };
    // `TE` listed as a connection option is this hop's only (RFC 9110 section 10.1.4).
    let mut te_listed = false;
    for value in first.iter().chain(&more) {
        for name in value.as_bytes().split(|b| *b == b',') {
            let name = name.trim_ascii();
            te_listed |= name.eq_ignore_ascii_case(b"te");
            let fixed = name.is_empty()
                || name.eq_ignore_ascii_case(b"close")
                || HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()));
            if !fixed && let Ok(name) = std::str::from_utf8(name) {
                headers.remove(name);
            }
        }
    }
    let te_trailers = !te_listed
        && headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    // The fixed names and every `Proxy-*`: found among the names present (a request or an
    // answer carries a handful), each removed by its name, no allocation.
    let doomed = |k: &&HeaderName| is_hop_by_hop(k) && !(keep_upgrade && *k == header::UPGRADE);
    if headers.keys().any(|k| doomed(&k)) {
        while let Some(name) = headers.keys().find(doomed).cloned() {
            headers.remove(name);
        }
    }
    // `TE: trailers` is end to end in HTTP/2, and gRPC needs it.
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Stage 2: what leaves for the upstream: no hop-by-hop header, no credential of the
/// program's (the route's token replaces it, never joins it), no `Host` (the proxy writes the
/// upstream's).
pub(crate) fn upstream_request_filter(headers: &mut HeaderMap, upgrade: bool) {
    // Most requests carry no hop-by-hop header: one look at the names they have, rather than
    // a lookup for each name that might be there.
    if upgrade || headers.keys().any(is_hop_by_hop) {
        drop_hop_by_hop(headers, upgrade);
    }
    headers.remove(header::AUTHORIZATION);
    headers.remove(HeaderName::from_static("dpop"));
    headers.remove(header::HOST);
}

/// Stage 3: steps 1-5 for the upstream target; the header that was put on, for [`judge`].
async fn authorize(
    state: &RouteState,
    target: &Target<'_>,
    headers: &mut HeaderMap,
) -> Result<HeaderValue, Failure> {
    state
        .route
        .authorizer
        .authorize_target(target, headers)
        .await
        .map_err(Failure::NoToken)
}

/// A request to the upstream.
fn build(method: &Method, uri: &Uri, headers: &HeaderMap, body: ProxyBody) -> Request<ProxyBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = headers.clone();
    request
}

/// Stage 4: send to the upstream and wait for its answer's head, within the route's timeout.
async fn forward(
    state: &RouteState,
    request: Request<ProxyBody>,
    upgrade: bool,
    inbound_h2: bool,
) -> Result<Response<ProxyBody>, Failure> {
    let started = state.clock.now();
    let sent = state.clients.send(request, upgrade, inbound_h2);
    let answer = tokio::time::timeout(state.upstream_timeout, sent)
        .await
        .map_err(|_| Failure::UpstreamTimeout(state.upstream_timeout))?
        .map_err(|e| {
            // io::Error hides what it wraps from `source`: the certificate problem is looked
            // for explicitly.
            let chain = authwire::error_chain(&*e);
            Failure::Upstream(match authwire_http::CertificateProblem::find_in(&*e) {
                Some(problem) => format!("{chain}: {}", problem.describe()),
                None => chain,
            })
        })?;
    let took = state.clock.now().duration_since(started).unwrap_or_default();
    state.counters().upstream_latency(took);
    Ok(answer)
}

/// Stage 5: the core's decision on the answer: `Some(retry)` when the token was rejected, a
/// new one is there, and the request can be sent again.
async fn judge(
    state: &RouteState,
    target: &Target<'_>,
    response: &Response<ProxyBody>,
    sent: &HeaderValue,
    replayable: bool,
) -> Option<authwire::request::Retry> {
    let mut answer = Answer::new(response.status(), response.headers()).replayable(replayable);
    // The origin matters only to DPoP nonces (one to remember, or a challenge to answer); it
    // costs an allocation, so it is named only when the answer could carry one.
    if response.status() == StatusCode::UNAUTHORIZED || response.headers().contains_key(DPOP_NONCE) {
        answer = answer.for_target(target);
    }
    match state
        .route
        .authorizer
        .decide(&answer, sent, RejectionRules::default())
        .await
    {
        RetryDecision::RetryWith(retry) => Some(retry),
        // A step-up the route's credential can answer is answered once and replayed; one it
        // cannot answer goes back to the program as the server sent it (its challenge
        // included), so the program sees what the resource server asked for.
        RetryDecision::StepUp(step) if replayable => {
            match state.route.authorizer.step_up(&step, sent).await {
                Ok(retry) => Some(retry),
                Err(e) => {
                    tracing::warn!(error = %authwire::error_chain(&e), "a step-up challenge could not be answered; passing the answer through");
                    None
                }
            }
        }
        _ => None,
    }
}

/// Stage 6: hop-by-hop headers dropped from the answer (a `101` keeps its `Upgrade`).
pub(crate) fn upstream_response_filter(headers: &mut HeaderMap, switching: bool) {
    drop_hop_by_hop(headers, switching);
}

/// A WebSocket (or any) upgrade: once both sides have switched, copy bytes both ways until
/// either closes.
fn join_upgrade(program: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(program), Ok(upstream)) = (program.await, upstream.await) else {
            tracing::debug!("an upgrade did not complete on both sides");
            return;
        };
        let mut program = hyper_util::rt::TokioIo::new(program);
        let mut upstream = hyper_util::rt::TokioIo::new(upstream);
        let _ = tokio::io::copy_bidirectional(&mut program, &mut upstream).await;
    });
}

/// Whether this is an HTTP/1.1 request to switch protocols (a WebSocket handshake).
fn wants_upgrade(request: &Request<Incoming>) -> bool {
    request.version() == Version::HTTP_11
        && request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Stage 7: the answer when the upstream gave none: JSON `{"error", "error_description"}`
/// naming the cause (never a secret: errors of the pipeline carry none).
pub(crate) fn fail_to_proxy(state: &RouteState, failure: &Failure) -> Response<ProxyBody> {
    let route = &state.route.name;
    let (status, code, description, retry_after) = match failure {
        Failure::NoToken(e) => {
            tracing::warn!(route = %route, error = %authwire::error_chain(e), "no token for the upstream");
            let wait = e
                .provider_error()
                .and_then(authwire::ProviderError::retry_after)
                .unwrap_or(Duration::from_secs(1))
                .as_secs()
                .max(1);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                format!("no token for route {route}: {}", authwire::error_chain(e)),
                Some(wait),
            )
        }
        Failure::BadRequest(why) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            (*why).to_owned(),
            None,
        ),
        Failure::Upstream(why) => {
            tracing::warn!(route = %route, error = %why, "the upstream failed");
            (
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("the upstream {} failed: {why}", state.route.upstream.shown),
                None,
            )
        }
        Failure::UpstreamTimeout(after) => {
            tracing::warn!(route = %route, "the upstream did not answer in {after:?}");
            (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!(
                    "the upstream {} did not answer within {after:?}",
                    state.route.upstream.shown
                ),
                None,
            )
        }
    };
    let body = serde_json::json!({ "error": code, "error_description": description }).to_string();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == StatusCode::BAD_REQUEST {
        // What follows on this connection is not to be trusted.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Stage 8: count the answer and log one line (the path, never the query: it may carry
/// anything).
fn record(state: &RouteState, logged: Option<(std::time::SystemTime, Method, String)>, status: StatusCode) {
    state.counters().answered(status.as_u16());
    if let Some((started, method, path)) = logged {
        let took = state.clock.now().duration_since(started).unwrap_or_default();
        tracing::debug!(route = %state.route.name, %method, path, status = status.as_u16(), ?took, "proxied");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_look_knows_every_hop_by_hop_name() {
        for name in HOP_BY_HOP {
            assert!(is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        assert!(is_hop_by_hop(&HeaderName::from_static("proxy-anything")));
        assert!(!is_hop_by_hop(&header::ACCEPT));
    }

    #[test]
    fn hop_by_hop_and_credentials_never_leave() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic cHJveHk="),
            ("proxy-foo", "x"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("upgrade", "websocket"),
            ("authorization", "Bearer the-programs-own"),
            ("dpop", "proof"),
            ("host", "evil.example"),
            ("x-kept", "yes"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        upstream_request_filter(&mut h, false);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);

        let mut grpc = HeaderMap::new();
        grpc.insert("te", HeaderValue::from_static("trailers"));
        upstream_request_filter(&mut grpc, false);
        assert_eq!(grpc["te"], "trailers", "gRPC's TE: trailers goes end to end");

        // `TE: trailers` that `Connection` lists is this hop's (HTTP/1.1): not passed on.
        let mut h1 = HeaderMap::new();
        h1.insert("te", HeaderValue::from_static("trailers"));
        h1.insert("connection", HeaderValue::from_static("TE"));
        upstream_request_filter(&mut h1, false);
        assert!(h1.is_empty(), "{h1:?}");

        let mut ws = HeaderMap::new();
        ws.insert("connection", HeaderValue::from_static("Upgrade"));
        ws.insert("upgrade", HeaderValue::from_static("websocket"));
        upstream_request_filter(&mut ws, true);
        assert_eq!(ws["upgrade"], "websocket");
        assert_eq!(ws["connection"], "upgrade");

        // Names as any case writes them, over several `Connection` lines; nonsense in one
        // (not a header name) removes nothing and breaks nothing.
        let mut listed = HeaderMap::new();
        for (k, v) in [
            ("connection", "X-Hop-One ,\tbad name(x)"),
            ("connection", ",, X-HOP-TWO"),
            ("x-hop-one", "1"),
            ("x-hop-two", "2"),
            ("x-kept", "yes"),
        ] {
            listed.append(k, HeaderValue::from_bytes(v.as_bytes()).unwrap());
        }
        upstream_request_filter(&mut listed, false);
        let names: Vec<&str> = listed.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn an_answer_loses_its_hop_by_hop_headers_and_keeps_the_rest() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("server", "nginx"),
            ("content-type", "text/plain"),
            ("content-length", "3"),
            ("connection", "keep-alive"),
            ("connection", "x-upstream-hop"),
            ("x-upstream-hop", "1"),
            ("keep-alive", "timeout=60"),
            ("proxy-authenticate", "Basic"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        upstream_response_filter(&mut h, false);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["server", "content-type", "content-length"]);

        let mut switching = HeaderMap::new();
        switching.insert("connection", HeaderValue::from_static("Upgrade"));
        switching.insert("upgrade", HeaderValue::from_static("websocket"));
        upstream_response_filter(&mut switching, true);
        assert_eq!(switching["upgrade"], "websocket");
        assert_eq!(switching["connection"], "upgrade");
    }
}
