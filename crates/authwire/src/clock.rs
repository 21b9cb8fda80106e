//! Time, read through one seam.
//!
//! Every expiry check, refresh point and backoff deadline in authwire is computed from a
//! [`Clock`]. [`SystemClock`] is the only code in the workspace that reads the system time
//! (`clippy.toml` bans `SystemTime::now` everywhere else), and `ManualClock` (feature
//! `test-util`) lets tests move time by hand instead of sleeping.

use std::fmt;
use std::time::SystemTime;

/// A source of the current wall-clock time.
///
/// Implementations must be cheap: the authorizer reads the clock once per call on its hot path.
///
/// ```
/// use authwire::{Clock, SystemClock};
/// let now = SystemClock.now();
/// assert!(now > std::time::UNIX_EPOCH);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The real clock: [`SystemTime::now`]. The default clock of every [`Authorizer`](crate::Authorizer).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    #[allow(clippy::disallowed_methods)] // the one allowed place
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    #[inline]
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

#[cfg(any(test, feature = "test-util"))]
pub use manual::ManualClock;

#[cfg(any(test, feature = "test-util"))]
mod manual {
    use super::Clock;
    use std::fmt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// A clock that moves only when told to (feature `test-util`).
    ///
    /// Clones share one time, so a test keeps a clone and advances the clock that an
    /// [`Authorizer`](crate::Authorizer) reads.
    ///
    /// ```
    /// use authwire::{Clock, ManualClock};
    /// use std::time::{Duration, UNIX_EPOCH};
    ///
    /// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000));
    /// let seen_by_authorizer = clock.clone();
    /// clock.advance(Duration::from_secs(5));
    /// assert_eq!(seen_by_authorizer.now(), UNIX_EPOCH + Duration::from_secs(1_005));
    /// ```
    #[derive(Clone)]
    pub struct ManualClock {
        nanos_since_epoch: Arc<AtomicU64>,
    }

    impl ManualClock {
        /// A clock standing at `start` (which must not be before the Unix epoch).
        pub fn new(start: SystemTime) -> Self {
            Self {
                nanos_since_epoch: Arc::new(AtomicU64::new(to_nanos(start))),
            }
        }

        /// Move the clock forward by `by`.
        pub fn advance(&self, by: Duration) {
            let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            self.nanos_since_epoch.fetch_add(by, Ordering::SeqCst);
        }

        /// Set the clock to `to`; it may move backwards, as real clocks sometimes do.
        pub fn set(&self, to: SystemTime) {
            self.nanos_since_epoch.store(to_nanos(to), Ordering::SeqCst);
        }
    }

    impl Default for ManualClock {
        /// A clock standing at 2030-01-01T00:00:00Z.
        fn default() -> Self {
            Self::new(UNIX_EPOCH + Duration::from_secs(1_893_456_000))
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> SystemTime {
            UNIX_EPOCH + Duration::from_nanos(self.nanos_since_epoch.load(Ordering::SeqCst))
        }
    }

    impl fmt::Debug for ManualClock {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_tuple("ManualClock").field(&self.now()).finish()
        }
    }

    fn to_nanos(t: SystemTime) -> u64 {
        let since = t
            .duration_since(UNIX_EPOCH)
            .expect("ManualClock cannot stand before the Unix epoch");
        u64::try_from(since.as_nanos()).expect("ManualClock time out of range (after year 2554)")
    }
}

/// Type-erased clock used inside the authorizer.
pub(crate) type SharedClock = std::sync::Arc<dyn Clock>;

/// Debug for `dyn Clock` so that structures holding one can derive-print something useful.
impl fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn manual_clock_clones_share_time_and_can_go_back() {
        let start = UNIX_EPOCH + Duration::from_secs(100);
        let a = ManualClock::new(start);
        let b = a.clone();
        a.advance(Duration::from_millis(1500));
        assert_eq!(b.now(), start + Duration::from_millis(1500));
        b.set(start - Duration::from_secs(50));
        assert_eq!(a.now(), UNIX_EPOCH + Duration::from_secs(50));
    }

    #[test]
    fn system_clock_moves_forward() {
        let a = SystemClock.now();
        let b = SystemClock.now();
        assert!(b >= a);
    }
}
