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

/// One route's counters: a set per worker (each on cache lines of its own, so that workers
/// counting the same route never contend), summed when rendered.
pub(crate) struct RouteMetrics {
    pub(crate) name: String,
    authorizer: Authorizer,
    workers: Box<[Counters]>,
}

/// What one worker counted for one route.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    /// Answers by status class: 1xx .. 5xx.
    by_class: [AtomicU64; 5],
    /// Latency histogram (cumulative at render time), its sum in microseconds, and its count.
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
    replays: AtomicU64,
}

impl RouteMetrics {
    pub(crate) fn new(name: &str, authorizer: Authorizer, workers: usize) -> Self {
        Self {
            name: name.to_owned(),
            authorizer,
            workers: (0..workers.max(1)).map(|_| Counters::default()).collect(),
        }
    }

    /// Worker `index`'s counters.
    pub(crate) fn worker(&self, index: usize) -> &Counters {
        &self.workers[index % self.workers.len()]
    }

    /// One counter summed over every worker.
    fn total(&self, counter: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.workers
            .iter()
            .map(|w| counter(w).load(Ordering::Relaxed))
            .sum()
    }

    /// Requests answered so far, all classes, all workers.
    pub(crate) fn answers(&self) -> u64 {
        (0..5).map(|class| self.total(|w| &w.by_class[class])).sum()
    }
}

impl Counters {
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
                for class in 0..5 {
                    let _ = writeln!(
                        out,
                        "authwire_proxy_requests_total{{route=\"{}\",class=\"{}xx\"}} {}",
                        r.name,
                        class + 1,
                        r.total(|w| &w.by_class[class])
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
                    cumulative += r.total(|w| &w.buckets[i]);
                    let _ = writeln!(
                        out,
                        "authwire_proxy_upstream_duration_seconds_bucket{{route=\"{}\",le=\"{bound}\"}} {cumulative}",
                        r.name
                    );
                }
                let count = r.total(|w| &w.count);
                let _ = writeln!(
                    out,
                    "authwire_proxy_upstream_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {count}",
                    r.name
                );
                let _ = writeln!(
                    out,
                    "authwire_proxy_upstream_duration_seconds_sum{{route=\"{}\"}} {}",
                    r.name,
                    r.total(|w| &w.sum_micros) as f64 / 1e6
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
                    r.total(|w| &w.replays)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_workers_counters_are_summed_and_kept_apart() {
        let m = Arc::new(RouteMetrics::new(
            "orders",
            Authorizer::new(authwire::StaticTokenProvider::new("t0k3n")),
            3,
        ));
        m.worker(0).answered(200);
        m.worker(2).answered(204);
        m.worker(2).answered(503);
        m.worker(1).upstream_latency(Duration::from_millis(3));
        m.worker(2).upstream_latency(Duration::from_micros(200));
        m.worker(1).replayed();
        // The counters of different workers never share a cache line.
        let (a, b) = (
            m.worker(0) as *const Counters as usize,
            m.worker(1) as *const Counters as usize,
        );
        assert!(b - a >= 128);
        assert_eq!(m.answers(), 3);
        let text = render(&[m]);
        for line in [
            "authwire_proxy_requests_total{route=\"orders\",class=\"2xx\"} 2\n",
            "authwire_proxy_requests_total{route=\"orders\",class=\"5xx\"} 1\n",
            "authwire_proxy_upstream_duration_seconds_bucket{route=\"orders\",le=\"0.0005\"} 1\n",
            "authwire_proxy_upstream_duration_seconds_bucket{route=\"orders\",le=\"0.005\"} 2\n",
            "authwire_proxy_upstream_duration_seconds_count{route=\"orders\"} 2\n",
            "authwire_proxy_upstream_duration_seconds_sum{route=\"orders\"} 0.0032\n",
            "authwire_proxy_replays_total{route=\"orders\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("t0k3n"));
    }
}
