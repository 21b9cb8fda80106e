//! Errors: [`ProviderError`] (from identity providers), [`StoreError`] (from token stores) and
//! [`AuthError`] (what the [`Authorizer`](crate::Authorizer) returns).
//!
//! All three are `Clone`, because one failed refresh is reported to every caller that waited
//! for it; their sources live behind an `Arc`. None of them ever holds a token or a secret: a
//! provider that builds one from a server answer must keep secrets out of it (the OAuth2 provider
//! keeps only the RFC 6749 `error` fields and a short excerpt of a body that held no token).
//!
//! `Display` says what happened in one lowercase line; the wrapped cause, if any, is
//! [`source`](std::error::Error::source), as the Rust API guidelines recommend. Use
//! [`error_chain`] to print both on one line.

mod provider;

pub use provider::{KeptRefreshToken, ProviderError, is_transient_status};

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A boxed error, the input type of the error constructors.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A cloneable, shared error: the cause inside [`ProviderError`] and [`StoreError`].
#[derive(Clone)]
pub struct SharedError(Arc<dyn StdError + Send + Sync>);

impl SharedError {
    /// Wrap any error.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self(Arc::from(source.into()))
    }

    /// A plain message as an error.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::new(Message(message.into()))
    }

    /// The wrapped error, for downcasting (`err.get().downcast_ref::<MyError>()`).
    pub fn get(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl StdError for SharedError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

/// Why a [`TokenStore`](crate::TokenStore) could not load, save or delete a token.
///
/// ```
/// use authwire::StoreError;
/// let e = StoreError::corrupt("/home/me/.cache/authwire/x.json", "expected value at line 1 column 1");
/// assert!(e.to_string().contains("x.json"));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed: I/O, network, keyring, permissions.
    #[non_exhaustive]
    Backend {
        /// What went wrong (stores put their own typed errors here; downcast with
        /// [`SharedError::get`]).
        source: SharedError,
    },
    /// A stored entry exists but cannot be read back as a token.
    #[non_exhaustive]
    Corrupt {
        /// Where the entry lives (file path, key name); never its contents.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store did not answer in time.
    #[non_exhaustive]
    Timeout {
        /// How long the authorizer waited.
        after: Duration,
    },
}

impl StoreError {
    /// A backend failure.
    pub fn new(source: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            source: SharedError::new(source),
        }
    }

    /// A stored entry that cannot be read back. Name the entry, never its contents.
    pub fn corrupt(location: impl Into<String>, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            location: location.into(),
            reason: reason.into(),
        }
    }

    /// The store did not answer within `after`.
    pub fn timeout(after: Duration) -> Self {
        StoreError::Timeout { after }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Backend { .. } => f.write_str("token store failed"),
            StoreError::Corrupt { location, reason } => write!(
                f,
                "stored token at {location} is unreadable ({reason}); delete it to start over"
            ),
            StoreError::Timeout { after } => {
                write!(f, "token store did not answer within {after:?}")
            }
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            StoreError::Backend { source } => Some(source.get()),
            _ => None,
        }
    }
}

/// Why the [`Authorizer`](crate::Authorizer) could not produce a valid `Authorization` header.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum AuthError {
    /// No valid token is held and the identity provider did not issue one. This is exactly the
    /// error the provider returned (the same value reaches every caller that waited for it, and
    /// is returned again without calling the provider until its backoff elapses).
    Refresh(ProviderError),
    /// The token store failed and the authorizer was told to require it
    /// ([`AuthorizerBuilder::require_store`](crate::AuthorizerBuilder::require_store)).
    Store(StoreError),
    /// The refresh ended without a result: its task panicked or its runtime shut down.
    RefreshAborted,
    /// The token is bound to a key (DPoP, RFC 9449) and needs a proof signed for each request's
    /// method and URI: call [`Authorizer::authorize_request`](crate::Authorizer::authorize_request)
    /// (or `authorize_target`), not `authorize(&mut HeaderMap)` or `authorization_header()`.
    ProofRequired,
    /// A resource server asked for a step-up ([`StepUp`](crate::StepUp): a stronger
    /// authentication, more scope, claims) and the credential could not answer it: `cause` is
    /// the provider's error (`None` when the request could not be replayed). Sending the same
    /// request again will meet the same challenge: satisfy it (log in with its `acr_values`,
    /// ask for its scope) first.
    StepUpRequired {
        /// What the server asked for.
        challenge: Box<crate::StepUp>,
        /// Why the credential could not answer it.
        cause: Option<ProviderError>,
    },
}

impl AuthError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            AuthError::Refresh(e) => e.is_transient(),
            AuthError::Store(_) | AuthError::RefreshAborted => true,
            AuthError::ProofRequired | AuthError::StepUpRequired { .. } => false,
        }
    }

    /// The provider's error, if that is what this is.
    pub fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            AuthError::Refresh(e) | AuthError::StepUpRequired { cause: Some(e), .. } => Some(e),
            _ => None,
        }
    }

    /// The step-up challenge that could not be answered, if that is what this is.
    pub fn step_up_challenge(&self) -> Option<&crate::StepUp> {
        match self {
            AuthError::StepUpRequired { challenge, .. } => Some(challenge),
            _ => None,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Refresh(_) | AuthError::Store(_) => f.write_str("no valid token"),
            AuthError::RefreshAborted => f.write_str(
                "no valid token: the refresh task ended without a result (it panicked or its runtime shut down)",
            ),
            AuthError::ProofRequired => f.write_str(
                "the token is DPoP-bound and needs a proof for each request: use authorize_request, which signs one for the request's method and URI",
            ),
            AuthError::StepUpRequired { challenge, .. } => write!(
                f,
                "the resource server asks for a step-up the credential could not answer ({challenge})"
            ),
        }
    }
}

impl StdError for AuthError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            AuthError::Refresh(e) => Some(e),
            AuthError::Store(e) => Some(e),
            AuthError::StepUpRequired { cause: Some(e), .. } => Some(e),
            AuthError::RefreshAborted | AuthError::ProofRequired | AuthError::StepUpRequired { .. } => None,
        }
    }
}

impl From<ProviderError> for AuthError {
    fn from(e: ProviderError) -> Self {
        AuthError::Refresh(e)
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        AuthError::Store(e)
    }
}

/// An error and its chain of causes on one line, joined by `": "`.
///
/// ```
/// use authwire::{error_chain, ProviderError};
/// let io = std::io::Error::other("connection refused");
/// let e = ProviderError::transient(io);
/// assert_eq!(error_chain(&e), "identity provider unavailable: connection refused");
/// ```
pub fn error_chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}

/// A setting of [`AuthorizerBuilder`](crate::AuthorizerBuilder) that cannot work
/// ([`try_build`](crate::AuthorizerBuilder::try_build)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The refresh lease TTL is shorter than a refresh can take while holding it.
    LeaseTooShort {
        /// The TTL given.
        ttl: Duration,
        /// The least that is safe: the refresh timeout plus two store timeouts.
        needed: Duration,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::LeaseTooShort { ttl, needed } => write!(
                f,
                "refresh lease TTL {ttl:?} is shorter than the refresh timeout plus two store timeouts ({needed:?}): a slow refresh would outlive its lease; raise it or lower the timeouts"
            ),
        }
    }
}

impl StdError for BuildError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_rfc_codes_and_status() {
        assert!(!ProviderError::rejected(Some(401), "invalid_client", None).is_transient());
        assert!(!ProviderError::rejected(Some(400), "invalid_grant", None).is_transient());
        assert!(ProviderError::rejected(Some(400), "temporarily_unavailable", None).is_transient());
        assert!(ProviderError::rejected(Some(503), "invalid_request", None).is_transient());
        assert!(ProviderError::rejected(Some(429), "whatever", None).is_transient());
        assert!(ProviderError::timeout(Duration::from_secs(1)).is_transient());
        assert!(!ProviderError::invalid_response(Some(200), "no access_token").is_transient());
        assert!(!ProviderError::permanent("nope").is_transient());
    }

    #[test]
    fn messages_are_lowercase_one_liners_with_context() {
        let e = ProviderError::rejected(Some(401), "invalid_client", Some("bad secret".into()))
            .with_error_uri("https://idp/errors");
        assert_eq!(
            error_chain(&AuthError::from(e)),
            "no valid token: identity provider rejected the request: invalid_client (HTTP 401): bad secret (see https://idp/errors)"
        );
        let e =
            ProviderError::invalid_response(Some(200), "expected JSON").with_excerpt("<html>".repeat(100));
        let s = e.to_string();
        assert!(s.starts_with(
            "identity provider sent an unusable response (HTTP 200): expected JSON (body starts: \"<html>"
        ));
        assert!(s.chars().count() < 300, "excerpt is cut: {s}");
    }

    #[test]
    fn chain_includes_nested_causes_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("sending request")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = AuthError::Refresh(ProviderError::transient(Outer(std::io::Error::other(
            "connection refused",
        ))));
        assert_eq!(
            error_chain(&e),
            "no valid token: identity provider unavailable: sending request: connection refused"
        );
    }

    #[test]
    fn retry_after_is_kept_and_errors_clone() {
        let e =
            ProviderError::rejected(Some(429), "slow_down", None).with_retry_after(Duration::from_secs(7));
        let c = e.clone();
        assert_eq!(c.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(c.error_code(), Some("slow_down"));
        assert_eq!(c.status(), Some(429));
    }

    #[test]
    fn store_backend_error_can_be_downcast() {
        let e = StoreError::new(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "denied",
        ));
        let StoreError::Backend { source } = &e else {
            panic!("expected Backend")
        };
        let io = source.get().downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
    }

    fn assert_send_sync<T: Send + Sync + Clone + StdError>() {}

    #[test]
    fn errors_are_send_sync_clone() {
        assert_send_sync::<ProviderError>();
        assert_send_sync::<StoreError>();
        assert_send_sync::<AuthError>();
    }
}
