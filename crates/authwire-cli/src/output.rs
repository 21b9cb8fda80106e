//! What the CLI prints: stdout writes that report a closed pipe, and times and durations as a
//! person reads them.

use crate::error::CliError;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Write `text` to stdout and flush it; exit code 0.
pub(crate) fn out(text: &str) -> Result<u8, CliError> {
    out_bytes(text.as_bytes())
}

/// Write `bytes` to stdout and flush them; exit code 0.
pub(crate) fn out_bytes(bytes: &[u8]) -> Result<u8, CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::config(format!("cannot write to stdout: {e}")))?;
    Ok(0)
}

/// The system time now (the CLI's one clock: `authwire::SystemClock`).
pub(crate) fn now() -> SystemTime {
    authwire::Clock::now(&authwire::SystemClock)
}

/// "expires in 4m12s" / "expired 3m ago".
pub(crate) fn human_expiry(at: SystemTime) -> String {
    match at.duration_since(now()) {
        Ok(left) => format!("expires in {}", human_duration(left)),
        Err(past) => format!("expired {} ago", human_duration(past.duration())),
    }
}

/// `5s`, `4m12s`, `2h01m`, `3d04h`.
pub(crate) fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_durations_read_like_a_person_would_write_them() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
            "2030-03-17T17:46:40Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(human_duration(Duration::from_secs(252)), "4m12s");
        assert_eq!(human_duration(Duration::from_secs(7260)), "2h01m");
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
    }
}
