//! The timing policy: when a token counts as expired, when to refresh it ahead of time, and how
//! long to wait after a failed refresh. Pure functions of the token, the time it was received and
//! the configuration, so that every rule is unit-tested with fixed times.

use crate::error::ProviderError;
use crate::token::Token;
use std::time::{Duration, SystemTime};

/// A token counts as expired this long before its `expires_at` (clock skew, request latency).
pub const DEFAULT_EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Inside this window before expiry, the first caller starts a background refresh.
pub const DEFAULT_REFRESH_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How long one call to [`IdentityProvider::fetch_token`](crate::IdentityProvider::fetch_token)
/// may take before the refresh fails as transient.
pub const DEFAULT_REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
/// The same as [`DEFAULT_REFRESH_TIMEOUT`], named for what it bounds: one
/// [`IdentityProvider::fetch_token`](crate::IdentityProvider::fetch_token) call.
pub const DEFAULT_FETCH_TIMEOUT: Duration = DEFAULT_REFRESH_TIMEOUT;
/// How long one store operation may take before it counts as failed.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait after a transient refresh failure (it doubles with each further failure).
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between failed refreshes, and the wait after a permanent failure.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The margin never exceeds this share of a token's lifetime (a 5 s token is not "expired" on
/// arrival).
const MAX_MARGIN_DIVISOR: u32 = 4;
/// The refresh window never exceeds this share of a token's lifetime.
const MAX_WINDOW_DIVISOR: u32 = 2;
/// Jitter moves the refresh point later by up to this share of the window, so that a fleet
/// that received its tokens together does not refresh in step.
const JITTER_DIVISOR: u32 = 5;
/// A token that is already expired on arrival is still used for this long, so that a broken
/// issuer or clock cannot make every call fetch.
pub(crate) const MIN_TOKEN_REUSE: Duration = Duration::from_secs(1);
/// `Retry-After` values are honoured up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// The timing settings of one authorizer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub(crate) expiry_margin: Duration,
    pub(crate) refresh_window: Duration,
    pub(crate) jitter: bool,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            expiry_margin: DEFAULT_EXPIRY_MARGIN,
            refresh_window: DEFAULT_REFRESH_WINDOW,
            jitter: true,
            min_backoff: DEFAULT_MIN_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

/// When a token stops being usable and when to refresh it; `None` means never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    pub(crate) refresh_at: Option<SystemTime>,
    pub(crate) usable_until: Option<SystemTime>,
}

/// Where a token stands at a given time: step 1 of the pipeline answers with this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Use it.
    Fresh,
    /// Use it, and refresh in the background.
    RefreshDue,
    /// Do not use it: refresh first.
    Expired,
}

/// Plan a token's life. `jitter_unit` is a random number in `[0, 1)`.
pub(crate) fn schedule(
    token: &Token,
    received_at: SystemTime,
    timing: &Timing,
    jitter_unit: f64,
) -> Schedule {
    let Some(expires_at) = token.expires_at() else {
        // No known expiry: used until the server rejects it (Authorizer::invalidate), unless
        // the issuer asked for an earlier refresh.
        return Schedule {
            refresh_at: token.refresh_at(),
            usable_until: None,
        };
    };
    let lifetime = expires_at.duration_since(received_at).unwrap_or(Duration::ZERO);
    if lifetime.is_zero() {
        // Expired on arrival (a broken issuer or clock): use it for a moment, with no background
        // refresh before then, so that at most one fetch a second can follow.
        let until = received_at + MIN_TOKEN_REUSE;
        return Schedule {
            refresh_at: Some(until),
            usable_until: Some(until),
        };
    }
    let margin = timing.expiry_margin.min(lifetime / MAX_MARGIN_DIVISOR);
    let usable_until = expires_at - margin;

    let window = timing.refresh_window.min(lifetime / MAX_WINDOW_DIVISOR);
    let jitter = if timing.jitter {
        (window / JITTER_DIVISOR).mul_f64(jitter_unit.clamp(0.0, 1.0))
    } else {
        Duration::ZERO
    };
    let mut refresh_at = (expires_at - window + jitter).min(usable_until);
    if let Some(hint) = token.refresh_at()
        && hint >= received_at
    {
        refresh_at = refresh_at.min(hint);
    }
    Schedule {
        refresh_at: Some(refresh_at),
        usable_until: Some(usable_until),
    }
}

/// How long to wait before the next refresh attempt after `failures` failures in a row (the
/// latest being `error`). `jitter_unit` is a random number in `[0, 1)`.
pub(crate) fn backoff(failures: u32, error: &ProviderError, timing: &Timing, jitter_unit: f64) -> Duration {
    let floor = error
        .retry_after()
        .map(|d| d.min(MAX_RETRY_AFTER))
        .unwrap_or_default();
    let delay = if error.is_transient() {
        // Exponential, with "equal jitter": half fixed, half random.
        let exp = failures.saturating_sub(1).min(20);
        let base = timing
            .min_backoff
            .saturating_mul(1 << exp)
            .min(timing.max_backoff);
        base / 2 + (base / 2).mul_f64(jitter_unit.clamp(0.0, 1.0))
    } else {
        timing.max_backoff
    };
    delay.max(floor)
}

/// A random number in `[0, 1)` for jitter.
pub(crate) fn jitter_unit() -> f64 {
    crate::random::unit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const T0: Duration = Duration::from_secs(1_900_000_000);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    fn no_jitter() -> Timing {
        Timing {
            jitter: false,
            ..Timing::default()
        }
    }

    #[test]
    fn hour_token_uses_default_margin_and_window() {
        let t = Token::new("x").with_expires_at(at(3600));
        let s = schedule(&t, at(0), &no_jitter(), 0.0);
        assert_eq!(s.usable_until, Some(at(3600 - 30)));
        assert_eq!(s.refresh_at, Some(at(3600 - 300)));
        assert_eq!(crate::pipeline::check_expiry(&s, at(3299)), Freshness::Fresh);
        assert_eq!(crate::pipeline::check_expiry(&s, at(3300)), Freshness::RefreshDue);
        assert_eq!(crate::pipeline::check_expiry(&s, at(3569)), Freshness::RefreshDue);
        assert_eq!(crate::pipeline::check_expiry(&s, at(3570)), Freshness::Expired);
    }

    #[test]
    fn short_token_is_not_expired_on_arrival() {
        // 5 s token: margin capped at 1.25 s, window at 2.5 s.
        let t = Token::new("x").with_expires_at(at(5));
        let s = schedule(&t, at(0), &no_jitter(), 0.0);
        assert_eq!(crate::pipeline::check_expiry(&s, at(0)), Freshness::Fresh);
        assert_eq!(s.refresh_at, Some(at(0) + Duration::from_millis(2500)));
        assert_eq!(s.usable_until, Some(at(0) + Duration::from_millis(3750)));
    }

    #[test]
    fn jitter_moves_refresh_later_within_a_fifth_of_the_window_and_before_expiry() {
        let t = Token::new("x").with_expires_at(at(3600));
        let timing = Timing::default();
        let early = schedule(&t, at(0), &timing, 0.0).refresh_at.unwrap();
        let late = schedule(&t, at(0), &timing, 0.999_999).refresh_at.unwrap();
        assert_eq!(early, at(3300));
        assert!(late > at(3359) && late <= at(3360), "{late:?}");
        let s = schedule(&t, at(0), &timing, 0.5);
        assert!(s.refresh_at.unwrap() < s.usable_until.unwrap());
    }

    #[test]
    fn token_without_expiry_is_used_until_invalidated_unless_hinted() {
        let s = schedule(&Token::new("x"), at(0), &Timing::default(), 0.3);
        assert_eq!(
            s,
            Schedule {
                refresh_at: None,
                usable_until: None
            }
        );
        assert_eq!(
            crate::pipeline::check_expiry(&s, at(10_000_000)),
            Freshness::Fresh
        );
        let hinted = Token::new("x").with_refresh_at(at(60));
        let s = schedule(&hinted, at(0), &Timing::default(), 0.3);
        assert_eq!(crate::pipeline::check_expiry(&s, at(60)), Freshness::RefreshDue);
    }

    #[test]
    fn issuer_refresh_hint_brings_refresh_forward() {
        let t = Token::new("x")
            .with_expires_at(at(7200))
            .with_refresh_at(at(3600));
        let s = schedule(&t, at(0), &no_jitter(), 0.0);
        assert_eq!(s.refresh_at, Some(at(3600)));
    }

    #[test]
    fn token_expired_on_arrival_is_reused_briefly_not_refetched_per_call() {
        let t = Token::new("x").with_expires_at(at(0) - Duration::from_secs(10));
        let s = schedule(&t, at(0), &Timing::default(), 0.0);
        assert_eq!(
            crate::pipeline::check_expiry(&s, at(0)),
            Freshness::Fresh,
            "no background refetch right away"
        );
        assert_eq!(
            crate::pipeline::check_expiry(&s, at(0) + MIN_TOKEN_REUSE),
            Freshness::Expired
        );
    }

    #[test]
    fn custom_window_smaller_than_margin_still_refreshes_before_expiry() {
        let timing = Timing {
            expiry_margin: Duration::from_secs(60),
            refresh_window: Duration::from_secs(10),
            jitter: false,
            ..Timing::default()
        };
        let t = Token::new("x").with_expires_at(at(3600));
        let s = schedule(&t, at(0), &timing, 0.0);
        assert_eq!(s.refresh_at, s.usable_until);
    }

    #[test]
    fn transient_backoff_doubles_with_jitter_up_to_the_cap() {
        let timing = Timing::default();
        let e = ProviderError::transient("down");
        assert_eq!(backoff(1, &e, &timing, 0.0), Duration::from_millis(500));
        let top = backoff(1, &e, &timing, 0.999_99);
        assert!(
            top > Duration::from_millis(999) && top <= Duration::from_secs(1),
            "{top:?}"
        );
        assert_eq!(backoff(3, &e, &timing, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(30, &e, &timing, 0.0), Duration::from_secs(30));
        assert!(backoff(30, &e, &timing, 0.999) <= Duration::from_secs(60));
    }

    #[test]
    fn retry_after_is_a_floor_and_permanent_waits_longest() {
        let timing = Timing::default();
        let e = ProviderError::transient("429").with_retry_after(Duration::from_secs(42));
        assert_eq!(backoff(1, &e, &timing, 0.0), Duration::from_secs(42));
        let p = ProviderError::rejected(Some(401), "invalid_client", None);
        assert_eq!(backoff(1, &p, &timing, 0.0), timing.max_backoff);
        let huge = ProviderError::transient("x").with_retry_after(Duration::from_secs(1 << 40));
        assert_eq!(backoff(1, &huge, &timing, 0.0), MAX_RETRY_AFTER);
    }

    #[test]
    fn jitter_unit_is_in_range_and_varies() {
        let xs: Vec<f64> = (0..100).map(|_| jitter_unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.windows(2).any(|w| w[0] != w[1]));
    }
}
