//! Time, read through one seam.
//!
//! Every expiry check, refresh point and backoff deadline in authwire is computed from a
//! [`Clock`], and every wait (a provider call's timeout, a store call's timeout, the pause
//! between polls of a fleet lease, a device flow's poll interval) is a [`Clock::sleep`]: one
//! source of time, as smithy pairs its `TimeSource` with an `AsyncSleep`. [`SystemClock`] is
//! the only code in the workspace that reads the system time (`clippy.toml` bans
//! `SystemTime::now` everywhere else), and `ManualClock` (feature `test-util`) lets tests move
//! time by hand: its sleeps end when the test advances it past their deadline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

/// The longest lifetime taken literally (100 years): a server's `expires_in`, `expires_on` or
/// `exp` beyond it is capped, so that no answer can overflow the platform's time type.
pub const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + lifetime`, with `lifetime` capped at [`MAX_LIFETIME`]: the one conversion of a
/// lifetime into an expiry that every provider uses, so that a hostile or broken server
/// sending a huge number gets a token that expires in a century, not a panic.
///
/// ```
/// use authwire::{MAX_LIFETIME, expiry_after};
/// use std::time::{Duration, UNIX_EPOCH};
/// let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
/// assert_eq!(expiry_after(now, Duration::from_secs(3600)), now + Duration::from_secs(3600));
/// assert_eq!(expiry_after(now, Duration::MAX), now + MAX_LIFETIME);
/// ```
pub fn expiry_after(now: SystemTime, lifetime: Duration) -> SystemTime {
    let capped = lifetime.min(MAX_LIFETIME);
    now.checked_add(capped).unwrap_or(now)
}

/// An absolute expiry in seconds since the Unix epoch (Azure's `expires_on`, a JWT's `exp`),
/// capped at `now + MAX_LIFETIME` as [`expiry_after`] caps a lifetime: whatever number a server
/// sends, the result is a time, never a panic.
///
/// ```
/// use authwire::{MAX_LIFETIME, expiry_at_unix};
/// use std::time::{Duration, UNIX_EPOCH};
/// let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
/// assert_eq!(expiry_at_unix(now, 1_900_003_600), now + Duration::from_secs(3600));
/// assert_eq!(expiry_at_unix(now, u64::MAX), now + MAX_LIFETIME);
/// ```
pub fn expiry_at_unix(now: SystemTime, secs: u64) -> SystemTime {
    let cap = expiry_after(now, MAX_LIFETIME);
    std::time::UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .map_or(cap, |at| at.min(cap))
}

/// What [`Clock::sleep`] returns.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

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

    /// The current time for the cached path's expiry check, where a cheaper read exists: it may
    /// lag [`now`](Self::now) by the kernel's clock tick (a few milliseconds; never ahead of
    /// it), against expiry margins of seconds. The default is `now`; [`SystemClock`] reads
    /// `CLOCK_REALTIME_COARSE` on Linux, several times cheaper than a precise read.
    #[inline]
    fn now_coarse(&self) -> SystemTime {
        self.now()
    }

    /// A future that completes once `duration` has passed on this clock. The default sleeps on
    /// tokio's timer (the runtime's time driver must be enabled, as `#[tokio::main]` does).
    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
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

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[inline]
    fn now_coarse(&self) -> SystemTime {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        match u64::try_from(ts.tv_sec) {
            Ok(secs) => std::time::UNIX_EPOCH + Duration::new(secs, u32::try_from(ts.tv_nsec).unwrap_or(0)),
            Err(_) => self.now(),
        }
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    #[inline]
    fn now(&self) -> SystemTime {
        (**self).now()
    }

    #[inline]
    fn now_coarse(&self) -> SystemTime {
        (**self).now_coarse()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        (**self).sleep(duration)
    }
}

#[cfg(any(test, feature = "test-util"))]
pub use manual::ManualClock;

#[cfg(any(test, feature = "test-util"))]
mod manual {
    use super::{Clock, Sleep};
    use std::collections::HashMap;
    use std::fmt;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::task::{Context, Poll, Waker};
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
        sleepers: Arc<Sleepers>,
    }

    /// The sleeps waiting on a manual clock: id -> (deadline in nanoseconds, waker).
    #[derive(Default)]
    struct Sleepers {
        next_id: AtomicU64,
        waiting: Mutex<HashMap<u64, (u64, Option<Waker>)>>,
    }

    impl ManualClock {
        /// A clock standing at `start` (which must not be before the Unix epoch).
        pub fn new(start: SystemTime) -> Self {
            Self {
                nanos_since_epoch: Arc::new(AtomicU64::new(to_nanos(start))),
                sleepers: Arc::default(),
            }
        }

        /// Move the clock forward by `by`, waking the sleeps that are due.
        pub fn advance(&self, by: Duration) {
            let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            self.nanos_since_epoch.fetch_add(by, Ordering::SeqCst);
            self.wake_due();
        }

        /// Set the clock to `to`; it may move backwards, as real clocks sometimes do.
        pub fn set(&self, to: SystemTime) {
            self.nanos_since_epoch.store(to_nanos(to), Ordering::SeqCst);
            self.wake_due();
        }

        /// How many sleeps on this clock are waiting.
        pub fn sleepers(&self) -> usize {
            self.waiting().len()
        }

        /// When the earliest waiting sleep is due, if any sleeps.
        pub fn next_wake(&self) -> Option<SystemTime> {
            let earliest = self.waiting().values().map(|(deadline, _)| *deadline).min()?;
            Some(UNIX_EPOCH + Duration::from_nanos(earliest))
        }

        fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (u64, Option<Waker>)>> {
            self.sleepers
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        }

        fn wake_due(&self) {
            let now = self.nanos_since_epoch.load(Ordering::SeqCst);
            let due: Vec<Waker> = self
                .waiting()
                .values_mut()
                .filter(|(deadline, _)| *deadline <= now)
                .filter_map(|(_, waker)| waker.take())
                .collect();
            due.into_iter().for_each(Waker::wake);
        }
    }

    /// A sleep on a [`ManualClock`]: done once the clock reads its deadline or later.
    struct ManualSleep {
        clock: ManualClock,
        id: u64,
        deadline: u64,
    }

    impl Future for ManualSleep {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let mut waiting = self.clock.waiting();
            if self.clock.nanos_since_epoch.load(Ordering::SeqCst) >= self.deadline {
                waiting.remove(&self.id);
                return Poll::Ready(());
            }
            waiting.insert(self.id, (self.deadline, Some(cx.waker().clone())));
            Poll::Pending
        }
    }

    impl Drop for ManualSleep {
        fn drop(&mut self) {
            self.clock.waiting().remove(&self.id);
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

        /// Done when the clock is advanced (or set) past now + `duration`; needs no runtime.
        fn sleep(&self, duration: Duration) -> Sleep {
            let now = self.nanos_since_epoch.load(Ordering::SeqCst);
            let deadline = now.saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
            Box::pin(ManualSleep {
                clock: self.clone(),
                id: self.sleepers.next_id.fetch_add(1, Ordering::Relaxed),
                deadline,
            })
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

#[cfg(test)]
mod coarse_tests {
    use super::{Clock, SystemClock};
    use std::time::Duration;

    #[test]
    fn the_coarse_clock_is_never_ahead_and_at_most_a_tick_behind() {
        for _ in 0..1000 {
            let coarse = SystemClock.now_coarse();
            let precise = SystemClock.now();
            assert!(coarse <= precise, "never ahead of the precise clock");
            // A kernel tick is at most 10 ms (HZ=100); allow for a descheduled thread.
            assert!(precise.duration_since(coarse).unwrap() < Duration::from_millis(100));
        }
    }

    /// Programs that link authwire run under valgrind (memcheck, callgrind): the coarse clock
    /// reads the time through libc, which valgrind knows, not through the vDSO found from the
    /// auxiliary vector, which valgrind does not map (rustix issue 1559: a SIGSEGV on the
    /// first token read). This test runs the test above under valgrind. Debian's `valgrind`;
    /// `.ci/run` installs it, elsewhere the test says it did not run.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_coarse_clock_works_under_valgrind() {
        if std::process::Command::new("valgrind")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "valgrind is missing on CI: .ci/run installs it"
            );
            eprintln!("valgrind not found (apt-get install valgrind): not run");
            return;
        }
        let out = std::process::Command::new("valgrind")
            .args(["-q", "--tool=none", "--error-exitcode=3"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "clock::coarse_tests::the_coarse_clock_is_never_ahead_and_at_most_a_tick_behind",
                "--test-threads=1",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
