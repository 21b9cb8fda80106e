//! What the proxy counts, and its Prometheus text: requests by route and status class, the
//! upstream's latency, token fetches and failures (from each route's `Authorizer`), replays,
//! and the seconds left on each route's token. Never a token.

use authwire::{Authorizer, TokenState};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One route's counters.
pub(crate) struct RouteMetrics {
    pub(crate) name: String,
    authorizer: Authorizer,
    /// Answers by status class: 1xx .. 5xx.
    by_class: [AtomicU64; 5],
    /// Latency histogram (cumulative at render time), its sum in microseconds, and its count.
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
    replays: AtomicU64,
}

impl RouteMetrics {
    pub(crate) fn new(name: &str, authorizer: Authorizer) -> Self {
        Self {
            name: name.to_owned(),
            authorizer,
            by_class: Default::default(),
            buckets: Default::default(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
            replays: AtomicU64::new(0),
        }
    }

    /// An answer went back to the program with `status`.
    pub(crate) fn answered(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The upstream answered (its head) after `took`.
    pub(crate) fn upstream_latency(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A rejected request was sent once more with a new token.
    pub(crate) fn replayed(&self) {
        self.replays.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered so far, all classes.
    pub(crate) fn answers(&self) -> u64 {
        self.by_class.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// The Prometheus text exposition (version 0.0.4) of every route.
pub(crate) fn render(routes: &[std::sync::Arc<RouteMetrics>]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: &mut dyn FnMut(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        rows(&mut out);
    };
    family(
        "authwire_proxy_requests_total",
        "counter",
        "Requests answered, by route and status class.",
        &mut |out| {
            for r in routes {
                for (i, c) in r.by_class.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "authwire_proxy_requests_total{{route=\"{}\",class=\"{}xx\"}} {}",
                        r.name,
                        i + 1,
                        c.load(Ordering::Relaxed)
                    );
                }
            }
        },
    );
    family(
        "authwire_proxy_upstream_duration_seconds",
        "histogram",
        "Time until the upstream's answer head arrived.",
        &mut |out| {
            for r in routes {
                let mut cumulative = 0;
                for (i, bound) in BUCKETS.iter().enumerate() {
                    cumulative += r.buckets[i].load(Ordering::Relaxed);
                    let _ = writeln!(
                        out,
                        "authwire_proxy_upstream_duration_seconds_bucket{{route=\"{}\",le=\"{bound}\"}} {cumulative}",
                        r.name
                    );
                }
                let count = r.count.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "authwire_proxy_upstream_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {count}",
                    r.name
                );
                let _ = writeln!(
                    out,
                    "authwire_proxy_upstream_duration_seconds_sum{{route=\"{}\"}} {}",
                    r.name,
                    r.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
                );
                let _ = writeln!(
                    out,
                    "authwire_proxy_upstream_duration_seconds_count{{route=\"{}\"}} {count}",
                    r.name
                );
            }
        },
    );
    let metrics: Vec<(&RouteMetrics, authwire::Metrics)> = routes
        .iter()
        .map(|r| (r.as_ref(), r.authorizer.metrics()))
        .collect();
    family(
        "authwire_proxy_token_fetches_total",
        "counter",
        "Tokens fetched from the identity provider.",
        &mut |out| {
            for (r, m) in &metrics {
                let _ = writeln!(
                    out,
                    "authwire_proxy_token_fetches_total{{route=\"{}\"}} {}",
                    r.name, m.fetches
                );
            }
        },
    );
    family(
        "authwire_proxy_token_fetch_failures_total",
        "counter",
        "Token fetches that failed (transient and permanent).",
        &mut |out| {
            for (r, m) in &metrics {
                let _ = writeln!(
                    out,
                    "authwire_proxy_token_fetch_failures_total{{route=\"{}\"}} {}",
                    r.name,
                    m.transient_failures + m.permanent_failures
                );
            }
        },
    );
    family(
        "authwire_proxy_replays_total",
        "counter",
        "Requests sent once more after the upstream rejected their token.",
        &mut |out| {
            for r in routes {
                let _ = writeln!(
                    out,
                    "authwire_proxy_replays_total{{route=\"{}\"}} {}",
                    r.name,
                    r.replays.load(Ordering::Relaxed)
                );
            }
        },
    );
    family(
        "authwire_proxy_token_expires_in_seconds",
        "gauge",
        "Seconds until the route's current token expires (absent: no token, or no known expiry).",
        &mut |out| {
            for r in routes {
                let left = match r.authorizer.state() {
                    TokenState::Fresh { expires_in } | TokenState::RefreshDue { expires_in } => expires_in,
                    _ => None,
                };
                if let Some(left) = left {
                    let _ = writeln!(
                        out,
                        "authwire_proxy_token_expires_in_seconds{{route=\"{}\"}} {}",
                        r.name,
                        left.as_secs()
                    );
                }
            }
        },
    );
    out
}
