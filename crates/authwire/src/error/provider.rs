//! [`ProviderError`]: why an identity provider could not issue a token, which failures are
//! worth trying again, and the redaction that keeps every secret a request carried out of the
//! error, whatever the server echoed back.

use super::{BoxError, SharedError};
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// Why an identity provider could not issue a token.
///
/// The variants say who is at fault; [`is_transient`](Self::is_transient) says whether trying
/// again later may help, and the authorizer's backoff follows it:
/// transient failures are retried with exponential backoff and jitter (never sooner than
/// [`retry_after`](Self::retry_after)); permanent ones wait the longest backoff, so a bad
/// configuration costs the identity provider at most one request a minute.
///
/// ```
/// use authwire::ProviderError;
/// use std::time::Duration;
///
/// let e = ProviderError::rejected(Some(400), "invalid_grant", Some("refresh token revoked".into()));
/// assert!(!e.is_transient());
/// assert_eq!(e.to_string(), "identity provider rejected the request: invalid_grant (HTTP 400): refresh token revoked");
///
/// let e = ProviderError::transient(std::io::Error::other("connection reset"))
///     .with_retry_after(Duration::from_secs(3));
/// assert!(e.is_transient());
/// assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ProviderError {
    /// The identity provider answered with an error (RFC 6749 section 5.2): bad client
    /// credentials, a revoked grant, an unknown scope...
    #[non_exhaustive]
    Rejected {
        /// The `error` code, such as `invalid_client`.
        code: String,
        /// The `error_description`, if the server sent one.
        description: Option<String>,
        /// The `error_uri`, if the server sent one.
        uri: Option<String>,
        /// The HTTP status of the answer.
        status: Option<u16>,
        /// Whether trying again may help (`temporarily_unavailable`, 5xx, 429).
        transient: bool,
        /// How long the server asked us to wait.
        retry_after: Option<Duration>,
        /// A refresh token that came with the refused answer; see
        /// [`ProviderError::received_refresh_token`].
        kept: Option<KeptRefreshToken>,
    },
    /// The identity provider could not be reached or is failing for now: network error,
    /// timeout, 5xx, 429.
    #[non_exhaustive]
    Unavailable {
        /// What went wrong.
        source: SharedError,
        /// The HTTP status, if an answer arrived.
        status: Option<u16>,
        /// How long the server asked us to wait.
        retry_after: Option<Duration>,
        /// A refresh token that came with the refused answer; see
        /// [`ProviderError::received_refresh_token`].
        kept: Option<KeptRefreshToken>,
    },
    /// The identity provider answered success with something that is not a usable token:
    /// an HTML page, JSON without `access_token`, a token that cannot go into a header...
    #[non_exhaustive]
    InvalidResponse {
        /// The HTTP status of the answer.
        status: Option<u16>,
        /// What is wrong with it.
        reason: String,
        /// A short excerpt of the body, only when it cannot hold a token.
        excerpt: Option<String>,
        /// A refresh token that came with the refused answer; see
        /// [`ProviderError::received_refresh_token`].
        kept: Option<KeptRefreshToken>,
    },
    /// Any other permanent failure of a provider (see [`ProviderError::permanent`]).
    #[non_exhaustive]
    Failed {
        /// What went wrong.
        source: SharedError,
        /// How long to wait before trying again, if known.
        retry_after: Option<Duration>,
        /// A refresh token that came with the refused answer; see
        /// [`ProviderError::received_refresh_token`].
        kept: Option<KeptRefreshToken>,
    },
}

/// A refresh token carried by a [`ProviderError`]: shown by neither `Debug` nor `Display`.
#[derive(Clone)]
pub struct KeptRefreshToken(secrecy::SecretString);

impl fmt::Debug for KeptRefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Whether an HTTP status says "try again later": 408 Request Timeout, 425 Too Early,
/// 429 Too Many Requests, and every 5xx. The one table every provider uses.
///
/// ```
/// assert!(authwire::is_transient_status(503));
/// assert!(authwire::is_transient_status(429));
/// assert!(!authwire::is_transient_status(401));
/// ```
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || (500..600).contains(&status)
}

/// RFC 6749 / RFC 8628 error codes after which trying again may succeed.
const TRANSIENT_CODES: &[&str] = &[
    "temporarily_unavailable",
    "server_error",
    "slow_down",
    "authorization_pending",
];

impl ProviderError {
    /// Temporary failure (network, timeout, 5xx, 429): retried with backoff.
    pub fn transient(source: impl Into<BoxError>) -> Self {
        ProviderError::Unavailable {
            source: SharedError::new(source),
            status: None,
            retry_after: None,
            kept: None,
        }
    }

    /// Permanent failure (bad credentials, revoked grant): not retried in a loop.
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        ProviderError::Failed {
            source: SharedError::new(source),
            retry_after: None,
            kept: None,
        }
    }

    /// An RFC 6749 section 5.2 error answer. Transient when the code says so
    /// (`temporarily_unavailable`, `server_error`, `slow_down`) or the status is 5xx or 429.
    ///
    /// `code` and `description` come from the server: they are cut (64 and 300 characters) and
    /// stripped of control characters, so that a server cannot flood logs or move a terminal's
    /// cursor.
    pub fn rejected(status: Option<u16>, code: impl Into<String>, description: Option<String>) -> Self {
        let code = server_text(&code.into(), 64);
        let description = description.map(|d| server_text(&d, MAX_DESCRIPTION));
        let transient = TRANSIENT_CODES.contains(&code.as_str()) || status.is_some_and(is_transient_status);
        ProviderError::Rejected {
            code,
            description,
            uri: None,
            status,
            transient,
            retry_after: None,
            kept: None,
        }
    }

    /// A temporary failure with an HTTP status (5xx, 429) and the cause.
    pub fn unavailable(status: Option<u16>, source: impl Into<BoxError>) -> Self {
        ProviderError::Unavailable {
            source: SharedError::new(source),
            status,
            retry_after: None,
            kept: None,
        }
    }

    /// A success answer that is not a usable token. `reason` must not contain a secret.
    pub fn invalid_response(status: Option<u16>, reason: impl Into<String>) -> Self {
        ProviderError::InvalidResponse {
            status,
            reason: reason.into(),
            excerpt: None,
            kept: None,
        }
    }

    /// No answer within `after`.
    pub fn timeout(after: Duration) -> Self {
        Self::transient(SharedError::msg(format!("no answer within {after:?}")))
    }

    /// Ask the authorizer not to try again before `after` (a `Retry-After` header, say).
    /// Has no effect on [`ProviderError::InvalidResponse`].
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        match &mut self {
            ProviderError::Rejected { retry_after, .. }
            | ProviderError::Unavailable { retry_after, .. }
            | ProviderError::Failed { retry_after, .. } => *retry_after = Some(after),
            ProviderError::InvalidResponse { .. } => {}
        }
        self
    }

    /// Attach an `error_uri` to a [`ProviderError::Rejected`]; no effect on other variants.
    pub fn with_error_uri(mut self, error_uri: impl Into<String>) -> Self {
        if let ProviderError::Rejected { uri, .. } = &mut self {
            *uri = Some(server_text(&error_uri.into(), 200));
        }
        self
    }

    /// Attach a short excerpt of the body to a [`ProviderError::InvalidResponse`]. The caller
    /// guarantees that it holds no secret; it is cut to 200 characters.
    pub fn with_excerpt(mut self, body_excerpt: impl Into<String>) -> Self {
        if let ProviderError::InvalidResponse { excerpt, .. } = &mut self {
            *excerpt = Some(server_text(&body_excerpt.into(), 200));
        }
        self
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ProviderError::Rejected { transient, .. } => *transient,
            ProviderError::Unavailable { .. } => true,
            ProviderError::InvalidResponse { .. } | ProviderError::Failed { .. } => false,
        }
    }

    /// How long the provider asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Rejected { retry_after, .. }
            | ProviderError::Unavailable { retry_after, .. }
            | ProviderError::Failed { retry_after, .. } => *retry_after,
            ProviderError::InvalidResponse { .. } => None,
        }
    }

    /// The RFC 6749 `error` code, for [`ProviderError::Rejected`].
    pub fn error_code(&self) -> Option<&str> {
        match self {
            ProviderError::Rejected { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Rejected { status, .. }
            | ProviderError::Unavailable { status, .. }
            | ProviderError::InvalidResponse { status, .. } => *status,
            ProviderError::Failed { .. } => None,
        }
    }

    /// Attach a refresh token that arrived with an answer the provider could not use (a token
    /// response with an unusable `expires_in`, an access token that failed verification).
    ///
    /// A refresh token received is never lost: the [`Authorizer`](crate::Authorizer) keeps it
    /// and saves it to its store, so the next refresh redeems it and not the old one (which an
    /// identity provider with reuse detection would treat as theft, revoking the login).
    pub fn with_refresh_token(mut self, refresh_token: secrecy::SecretString) -> Self {
        *self.kept_mut() = Some(KeptRefreshToken(refresh_token));
        self
    }

    /// The refresh token attached by [`with_refresh_token`](Self::with_refresh_token).
    pub fn received_refresh_token(&self) -> Option<&secrecy::SecretString> {
        match self {
            ProviderError::Rejected { kept, .. }
            | ProviderError::Unavailable { kept, .. }
            | ProviderError::InvalidResponse { kept, .. }
            | ProviderError::Failed { kept, .. } => kept.as_ref().map(|k| &k.0),
        }
    }

    /// Take the attached refresh token out (the authorizer does, before sharing the error).
    pub(crate) fn take_refresh_token(&mut self) -> Option<secrecy::SecretString> {
        self.kept_mut().take().map(|k| k.0)
    }

    fn kept_mut(&mut self) -> &mut Option<KeptRefreshToken> {
        match self {
            ProviderError::Rejected { kept, .. }
            | ProviderError::Unavailable { kept, .. }
            | ProviderError::InvalidResponse { kept, .. }
            | ProviderError::Failed { kept, .. } => kept,
        }
    }

    /// Remove from this error's text anything that was sent in the request it answers.
    ///
    /// A server may echo a request back in its error (`error_description`, an HTML page), and a
    /// provider's errors reach logs, terminals and callers. A provider calls this with every
    /// secret it sent (client secret, refresh token, assertion, device code, in every encoding
    /// it used); any run of 8 or more characters shared with one of them (compared without
    /// case), and any whole occurrence of a shorter one, becomes `[redacted]`.
    ///
    /// ```
    /// use authwire::ProviderError;
    /// use authwire::secrecy::SecretString;
    /// let sent = [SecretString::from("s3cr3t-client-secret-value")];
    /// let e = ProviderError::rejected(Some(400), "invalid_request", Some("bad client_secret=s3cr3t-client-SECRET-value&x".into()));
    /// let shown = e.redact_sent(&sent).to_string();
    /// assert!(!shown.to_lowercase().contains("client-secret"), "{shown}");
    /// assert!(shown.contains("[redacted]"));
    /// ```
    pub fn redact_sent(self, sent: &[secrecy::SecretString]) -> Self {
        use secrecy::ExposeSecret;
        let secrets: Vec<&str> = sent
            .iter()
            .map(|s| s.expose_secret())
            .filter(|s| !s.is_empty())
            .collect();
        if secrets.is_empty() {
            return self;
        }
        let fix = |text: &mut String| {
            if let Some(clean) = redact(text, &secrets) {
                *text = clean;
            }
        };
        let fix_source = |source: &mut SharedError| {
            if let Some(clean) = redact(&source.to_string(), &secrets) {
                *source = SharedError::msg(clean);
            }
        };
        let mut e = self;
        match &mut e {
            ProviderError::Rejected {
                code,
                description,
                uri,
                ..
            } => {
                fix(code);
                description.iter_mut().for_each(fix);
                uri.iter_mut().for_each(fix);
            }
            ProviderError::InvalidResponse { reason, excerpt, .. } => {
                fix(reason);
                excerpt.iter_mut().for_each(fix);
            }
            ProviderError::Unavailable { source, .. } | ProviderError::Failed { source, .. } => {
                fix_source(source)
            }
        }
        e
    }

    /// A short label for metrics and logs: `rejected`, `unavailable`, `invalid_response`, `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::Unavailable { .. } => "unavailable",
            ProviderError::InvalidResponse { .. } => "invalid_response",
            ProviderError::Failed { .. } => "failed",
        }
    }
}

/// The longest `error_description` an error keeps, in characters.
const MAX_DESCRIPTION: usize = 300;

/// Text from a server as an error keeps it: control characters removed, at most `max`
/// characters (then `…`).
fn server_text(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().filter(|c| !c.is_control()).nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Shared runs of at least this many characters count as an echo of a secret.
const ECHO_RUN: usize = 8;

/// `text` with every echo of `secrets` replaced by `[redacted]`, or `None` if there was none.
fn redact(text: &str, secrets: &[&str]) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let hay = lower.as_bytes();
    let mut marked = vec![false; hay.len()];
    for secret in secrets {
        let secret = secret.to_ascii_lowercase();
        let needle = secret.as_bytes();
        let run = ECHO_RUN.min(needle.len());
        if hay.len() < run {
            continue;
        }
        for start in 0..=hay.len() - run {
            let window = &hay[start..start + run];
            if needle.windows(run).any(|w| w == window) {
                marked[start..start + run].iter_mut().for_each(|m| *m = true);
            }
        }
    }
    if !marked.contains(&true) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut in_run = false;
    for (i, c) in text.char_indices() {
        if marked[i] {
            if !in_run {
                out.push_str("[redacted]");
                in_run = true;
            }
        } else {
            in_run = false;
            out.push(c);
        }
    }
    Some(out)
}

fn write_status(f: &mut fmt::Formatter<'_>, status: Option<u16>) -> fmt::Result {
    match status {
        Some(s) => write!(f, " (HTTP {s})"),
        None => Ok(()),
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderError::Rejected {
                code,
                description,
                uri,
                status,
                ..
            } => {
                write!(f, "identity provider rejected the request: {code}")?;
                write_status(f, *status)?;
                if let Some(d) = description {
                    write!(f, ": {d}")?;
                }
                if let Some(u) = uri {
                    write!(f, " (see {u})")?;
                }
                Ok(())
            }
            ProviderError::Unavailable { status, .. } => {
                write!(f, "identity provider unavailable")?;
                write_status(f, *status)
            }
            ProviderError::InvalidResponse {
                status,
                reason,
                excerpt,
                ..
            } => {
                write!(f, "identity provider sent an unusable response")?;
                write_status(f, *status)?;
                write!(f, ": {reason}")?;
                if let Some(e) = excerpt {
                    write!(f, " (body starts: {e:?})")?;
                }
                Ok(())
            }
            ProviderError::Failed { .. } => f.write_str("token request failed"),
        }
    }
}

impl StdError for ProviderError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            ProviderError::Unavailable { source, .. } | ProviderError::Failed { source, .. } => {
                Some(source.get())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn echoes_of_what_was_sent_are_redacted_whole_partial_and_in_any_case() {
        let sent = [
            SecretString::from("rt-SECRETMARK-42-abcdef0123"),
            SecretString::from("pw"), // short: whole occurrences only
        ];
        for (echo, gone) in [
            ("refresh_token=rt-SECRETMARK-42-abcdef0123&x=1", "secretmark"),
            ("prefix RT-secretmark-42 suffix", "secretmark"), // partial, other case
            ("the password pw was wrong", " pw "),
        ] {
            let e = ProviderError::rejected(Some(400), "invalid_grant", Some(echo.into())).redact_sent(&sent);
            let shown = e.to_string().to_ascii_lowercase();
            assert!(!shown.contains(gone), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
        // Nothing sent in it: unchanged.
        let e = ProviderError::rejected(Some(400), "invalid_grant", Some("refresh token revoked".into()));
        assert_eq!(
            e.redact_sent(&sent).to_string(),
            "identity provider rejected the request: invalid_grant (HTTP 400): refresh token revoked"
        );
        let e = ProviderError::invalid_response(Some(500), "html")
            .with_excerpt("<p>rt-SECRETMARK-42-abcdef0123</p>")
            .redact_sent(&sent);
        assert!(!e.to_string().contains("SECRETMARK"), "{e}");
        let e = ProviderError::transient(std::io::Error::other("reset after rt-SECRETMARK-42"))
            .redact_sent(&sent);
        assert!(!e.to_string().contains("SECRETMARK"), "{e}");
    }

    #[test]
    fn server_text_is_bounded_and_has_no_control_characters() {
        let long = format!("a\u{1b}[31mred\r\nInjected: header{}", "x".repeat(5000));
        let e = ProviderError::rejected(Some(400), format!("code\n{}", "c".repeat(500)), Some(long));
        let ProviderError::Rejected {
            code, description, ..
        } = &e
        else {
            unreachable!()
        };
        let d = description.as_deref().unwrap();
        assert!(!d.chars().any(char::is_control), "{d:?}");
        assert!(d.chars().count() <= MAX_DESCRIPTION + 1);
        assert!(code.chars().count() <= 65 && !code.contains('\n'));
    }
}
