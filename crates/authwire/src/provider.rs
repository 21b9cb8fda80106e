//! The [`IdentityProvider`] trait: where tokens come from.

use crate::error::ProviderError;
use crate::token::{CacheKey, Token};
use async_trait::async_trait;
use std::sync::Arc;

/// A source of tokens: an OAuth 2.0 server, a cloud metadata endpoint, a file, a test double.
///
/// The [`Authorizer`](crate::Authorizer) calls [`fetch_token`](Self::fetch_token) only when it
/// needs a new token, once for all concurrent callers, and applies timeouts, backoff and
/// caching itself; a provider just makes one attempt and classifies its failure
/// ([`ProviderError::transient`] or [`ProviderError::permanent`]).
///
/// # Writing a provider
///
/// One that calls an HTTP token endpoint, mapping each failure to the error that fits
/// (`unavailable` with `Retry-After`, `rejected`, `invalid_response`) and setting the lifetime
/// through a [`Clock`](crate::Clock) with [`Token::with_lifetime`], is in the repository's
/// `docs/providers.md` ("Writing your own provider"). The smallest one reads a file:
///
/// ```
/// use authwire::{async_trait, Authorizer, CacheKey, IdentityProvider, ProviderError, Token};
/// use std::time::{Duration, SystemTime};
///
/// /// Reads a token that a sidecar keeps fresh in a file.
/// struct SidecarFile { path: std::path::PathBuf }
///
/// #[async_trait]
/// impl IdentityProvider for SidecarFile {
///     async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
///         let text = tokio::fs::read_to_string(&self.path)
///             .await
///             .map_err(ProviderError::transient)?; // a missing file may appear later
///         let token = text.trim();
///         if token.is_empty() {
///             return Err(ProviderError::invalid_response(None, "token file is empty"));
///         }
///         Ok(Token::new(token))
///     }
///
///     fn cache_key(&self) -> CacheKey {
///         CacheKey::new(format!("sidecar-file:{}", self.path.display()))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("authwire-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// std::fs::write(dir.join("token"), "abc123\n")?;
/// let authorizer = Authorizer::new(SidecarFile { path: dir.join("token") });
/// let header = authorizer.authorization_header().await?;
/// assert_eq!(header.to_str()?, "Bearer abc123");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait IdentityProvider: Send + Sync + 'static {
    /// Obtain a new token. `current` is the token held now for this provider's key, expired or
    /// not, so that a provider can use its refresh token.
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError>;

    /// What this provider's tokens are stored under (issuer, client, scopes, audience ...).
    fn cache_key(&self) -> CacheKey;

    /// Turn the proof key a store kept with a bound token back into its proof of possession,
    /// so the stored token can be used (a restart, another replica). `None` (the default): the
    /// stored bound token is not used, and the authorizer refreshes instead.
    fn restore_proof(
        &self,
        key: &crate::token::ProofKey,
    ) -> Option<Arc<dyn crate::token::ProofOfPossession>> {
        let _ = key;
        None
    }

    /// Headers this credential adds to every request beside `Authorization` (step 5), such as
    /// Google's `x-goog-user-project` for a credential's quota project. Read once, when an
    /// [`Authorizer`](crate::Authorizer) is built; they never override `Authorization` or
    /// `DPoP`. Default: none.
    fn request_headers(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        Vec::new()
    }

    /// Obtain a token that answers a resource server's step-up challenge (a claims challenge:
    /// a refresh with `claims`; a stronger authentication: a login with `acr_values` and
    /// `max_age`). `current` is the token held now. Called by
    /// [`Authorizer::step_up`](crate::Authorizer::step_up), once for all callers that met the
    /// same challenge. Default: the challenge cannot be answered (a permanent error).
    async fn step_up(&self, current: Option<&Token>, step: &crate::StepUp) -> Result<Token, ProviderError> {
        let _ = current;
        Err(ProviderError::permanent(format!(
            "this credential cannot answer a {} challenge",
            step.reason.error_code()
        )))
    }
}

#[async_trait]
impl<P: IdentityProvider + ?Sized> IdentityProvider for Arc<P> {
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        (**self).fetch_token(current).await
    }

    fn cache_key(&self) -> CacheKey {
        (**self).cache_key()
    }

    fn restore_proof(
        &self,
        key: &crate::token::ProofKey,
    ) -> Option<Arc<dyn crate::token::ProofOfPossession>> {
        (**self).restore_proof(key)
    }

    fn request_headers(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        (**self).request_headers()
    }

    async fn step_up(&self, current: Option<&Token>, step: &crate::StepUp) -> Result<Token, ProviderError> {
        (**self).step_up(current, step).await
    }
}

#[async_trait]
impl<P: IdentityProvider + ?Sized> IdentityProvider for Box<P> {
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        (**self).fetch_token(current).await
    }

    fn cache_key(&self) -> CacheKey {
        (**self).cache_key()
    }

    fn restore_proof(
        &self,
        key: &crate::token::ProofKey,
    ) -> Option<Arc<dyn crate::token::ProofOfPossession>> {
        (**self).restore_proof(key)
    }

    fn request_headers(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        (**self).request_headers()
    }

    async fn step_up(&self, current: Option<&Token>, step: &crate::StepUp) -> Result<Token, ProviderError> {
        (**self).step_up(current, step).await
    }
}

/// A provider that always hands out one pre-issued token: for tests, examples, and users who
/// are given a token by other means (like tower-http's `bearer(token)`).
///
/// The token is kept as a [`SecretString`](secrecy::SecretString) and never shown by `Debug`.
/// A server's rejection of it cannot be cured by a refetch: the adapters see the same token
/// come back and do not retry.
///
/// ```
/// use authwire::{Authorizer, StaticTokenProvider};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), authwire::AuthError> {
/// let authorizer = Authorizer::new(StaticTokenProvider::new("pre-issued"));
/// assert_eq!(authorizer.authorization_header().await?, "Bearer pre-issued");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct StaticTokenProvider {
    token: Token,
    key: CacheKey,
}

impl StaticTokenProvider {
    /// Hand out `token` as a Bearer token without a known expiry.
    pub fn new(token: impl Into<String>) -> Self {
        Self::from_token(Token::new(token))
    }

    /// Hand out `token` as it is (its type, expiry and scope included).
    ///
    /// Its cache key is `static:` and a fingerprint of the token (16 hex digits of its SHA-256),
    /// so two static tokens never share stored entries; [`named`](Self::named) picks the key.
    pub fn from_token(token: Token) -> Self {
        use secrecy::ExposeSecret;
        let fingerprint = CacheKey::new(token.access_token().expose_secret()).sha256_hex();
        Self {
            key: CacheKey::new(format!("static:{}", &fingerprint[..16])),
            token,
        }
    }

    /// Store tokens under `static:<name>` instead (a stable key for a token that is replaced
    /// by configuration).
    pub fn named(mut self, name: &str) -> Self {
        self.key = CacheKey::new(format!("static:{name}"));
        self
    }
}

impl std::fmt::Debug for StaticTokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticTokenProvider")
            .field("token", &self.token)
            .field("key", &self.key)
            .finish()
    }
}

#[async_trait]
impl IdentityProvider for StaticTokenProvider {
    async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
        Ok(self.token.clone())
    }

    fn cache_key(&self) -> CacheKey {
        self.key.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_show_the_token() {
        let p = StaticTokenProvider::new("SECRET-static-token").named("n");
        let shown = format!("{p:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert_eq!(p.cache_key().as_str(), "static:n");
    }

    #[test]
    fn two_static_tokens_never_share_a_cache_key() {
        let a = StaticTokenProvider::new("SECRET-token-a").cache_key();
        let b = StaticTokenProvider::new("SECRET-token-b").cache_key();
        assert_ne!(a, b);
        assert!(!a.as_str().contains("SECRET"), "{a}");
        assert_eq!(
            a,
            StaticTokenProvider::new("SECRET-token-a").cache_key(),
            "stable"
        );
    }
}
