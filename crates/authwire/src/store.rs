//! The [`TokenStore`] trait, and the one serialisation of a [`Token`] that every store uses.

use crate::error::StoreError;
use crate::token::{CacheKey, Token, TokenType};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// Persists tokens between runs and shares them between processes.
///
/// Stores are for persistence and sharing, not for speed: the [`Authorizer`](crate::Authorizer)
/// keeps its own in-process copy and consults its store only when it starts and when it
/// refreshes. It reads the store before it asks the provider (a valid stored token means no
/// fetch; a stored refresh token is the newest one) and writes every new token before it hands
/// the token out, so that a rotated refresh token is never lost.
///
/// Implementations serialise tokens with [`encode`] and [`decode`], and report a stored entry
/// that cannot be decoded as [`StoreError::Corrupt`] (never a panic).
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// The token stored under `key`, or `None` if there is none.
    async fn load(&self, key: &CacheKey) -> Result<Option<Token>, StoreError>;
    /// Store `token` under `key`, replacing what was there.
    async fn save(&self, key: &CacheKey, token: &Token) -> Result<(), StoreError>;
    /// Remove what is stored under `key`; removing a missing key is not an error.
    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError>;

    /// Coordinate a refresh of `key` with other processes that share this store, so that one
    /// of them calls the identity provider and the others use the token it saves.
    ///
    /// Called by the authorizer after its store read found no usable token and before it calls
    /// the provider. `ttl` bounds how long a lease may be held: a process that dies holding it
    /// blocks the others no longer than that. The default does no coordination, which is right
    /// for stores that only one process uses.
    async fn begin_refresh(&self, key: &CacheKey, ttl: Duration) -> Result<RefreshLease, StoreError> {
        let _ = (key, ttl);
        Ok(RefreshLease::Uncoordinated)
    }
}

/// The answer of [`TokenStore::begin_refresh`].
#[non_exhaustive]
pub enum RefreshLease {
    /// No coordination: this process refreshes on its own.
    Uncoordinated,
    /// This process holds the lease: it refreshes, saves the token, then releases the lease.
    Held(Box<dyn LeaseGuard>),
    /// Another process holds the lease: wait for the token it will save.
    HeldElsewhere,
}

impl std::fmt::Debug for RefreshLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RefreshLease::Uncoordinated => "Uncoordinated",
            RefreshLease::Held(_) => "Held",
            RefreshLease::HeldElsewhere => "HeldElsewhere",
        })
    }
}

/// A held refresh lease. Release it when the refresh is over; one that is never released
/// expires by itself.
#[async_trait]
pub trait LeaseGuard: Send + Sync {
    /// Give the lease up, so another process may refresh.
    async fn release(self: Box<Self>);

    /// Save `token` under `key` only if this lease is still held: a fenced save. A holder that
    /// outlived its lease (a slow identity provider, a paused process) must not overwrite the
    /// newer token of the process that took the lease over.
    ///
    /// `None` (the default) means the store cannot fence, and the authorizer saves with
    /// [`TokenStore::save`]. A store that can answers `Some(Err(..))` when the lease was lost.
    async fn save_under_lease(&self, key: &CacheKey, token: &Token) -> Option<Result<(), StoreError>> {
        let _ = (key, token);
        None
    }
}

#[async_trait]
impl<S: TokenStore + ?Sized> TokenStore for Arc<S> {
    async fn load(&self, key: &CacheKey) -> Result<Option<Token>, StoreError> {
        (**self).load(key).await
    }
    async fn save(&self, key: &CacheKey, token: &Token) -> Result<(), StoreError> {
        (**self).save(key, token).await
    }
    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        (**self).delete(key).await
    }
    async fn begin_refresh(&self, key: &CacheKey, ttl: Duration) -> Result<RefreshLease, StoreError> {
        (**self).begin_refresh(key, ttl).await
    }
}

/// The version of the stored format that [`encode`] writes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(serde::Serialize)]
struct StoredRef<'a> {
    v: u32,
    access_token: &'a str,
    token_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<&'a str>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    extra: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_at: Option<f64>,
    /// The proof key of a bound token: `{"kind": .., "key": ..}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pop: Option<StoredKeyRef<'a>>,
}

#[derive(serde::Serialize)]
struct StoredKeyRef<'a> {
    kind: &'a str,
    key: &'a str,
}

#[derive(serde::Deserialize)]
struct StoredKey {
    kind: String,
    key: SecretString,
}

#[derive(serde::Deserialize)]
struct Version {
    v: u32,
}

#[derive(serde::Deserialize)]
struct StoredV1 {
    access_token: SecretString,
    token_type: String,
    expires_at: Option<f64>,
    refresh_token: Option<SecretString>,
    #[serde(default)]
    id_token: Option<SecretString>,
    #[serde(default)]
    extra: serde_json::Map<String, serde_json::Value>,
    scope: Option<String>,
    refresh_at: Option<f64>,
    issued_at: Option<f64>,
    pop: Option<StoredKey>,
}

/// Serialise a token for a store: JSON with a format version (`"v": 1`), times (`expires_at`,
/// `issued_at`, `refresh_at`) as seconds since the Unix epoch, the refresh token and the ID
/// token included (`id_token` is optional: entries written before it existed read back). The buffer is wiped when dropped.
///
/// ```
/// use authwire::{store, Token};
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let token = Token::new("at").with_refresh_token("rt")
///     .with_expires_at(UNIX_EPOCH + Duration::from_secs(1_900_000_000));
/// let bytes = store::encode(&token);
/// let back = store::decode(&bytes).unwrap();
/// assert_eq!(back.expires_at(), token.expires_at());
/// assert!(back.refresh_token().is_some());
/// ```
///
/// A bound token is written with its proof key (`"pop"`), when its proof can export one
/// ([`ProofOfPossession::key`](crate::ProofOfPossession::key)).
pub fn encode(token: &Token) -> Zeroizing<Vec<u8>> {
    let exported = token.proof().and_then(|p| p.key());
    let key = exported.as_ref().or(token.stored_proof_key());
    let stored = StoredRef {
        v: FORMAT_VERSION,
        access_token: token.access_token().expose_secret(),
        token_type: token.token_type().scheme(),
        expires_at: token.expires_at().map(to_epoch_secs),
        refresh_token: token.refresh_token().map(|r| r.expose_secret()),
        id_token: token.id_token().map(|t| t.expose_secret()),
        extra: token.extras().map(|(k, v)| (k.to_owned(), v.clone())).collect(),
        scope: token.scope(),
        refresh_at: token.refresh_at().map(to_epoch_secs),
        issued_at: token.issued_at().map(to_epoch_secs),
        pop: key.map(|k| StoredKeyRef {
            kind: &k.kind,
            key: k.material.expose_secret(),
        }),
    };
    // Serialising plain strings and numbers into a Vec cannot fail.
    Zeroizing::new(serde_json::to_vec(&stored).unwrap_or_default())
}

/// Why stored bytes could not be read back as a token. Never contains the bytes themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Read back what [`encode`] wrote (this and every earlier format version).
pub fn decode(bytes: &[u8]) -> Result<Token, DecodeError> {
    // serde_json's messages name positions and expectations, never the input itself.
    let Version { v } =
        serde_json::from_slice(bytes).map_err(|e| DecodeError(format!("not a stored token: {e}")))?;
    if v != 1 {
        return Err(DecodeError(format!(
            "stored format version {v} is not understood by this authwire (it reads version {FORMAT_VERSION})"
        )));
    }
    let s: StoredV1 = serde_json::from_slice(bytes)
        .map_err(|e| DecodeError(format!("not a version 1 stored token: {e}")))?;
    if s.access_token.expose_secret().is_empty() {
        return Err(DecodeError("stored access token is empty".into()));
    }
    let mut token =
        Token::new(s.access_token.expose_secret()).with_token_type(TokenType::from(s.token_type.as_str()));
    if let Some(at) = s.expires_at {
        token = token.with_expires_at(
            from_epoch_secs(at).ok_or_else(|| DecodeError(format!("expires_at {at} is out of range")))?,
        );
    }
    if let Some(at) = s.refresh_at {
        token = token.with_refresh_at(
            from_epoch_secs(at).ok_or_else(|| DecodeError(format!("refresh_at {at} is out of range")))?,
        );
    }
    if let Some(at) = s.issued_at {
        token = token.with_issued_at(
            from_epoch_secs(at).ok_or_else(|| DecodeError(format!("issued_at {at} is out of range")))?,
        );
    }
    if let Some(rt) = s.refresh_token {
        token = token.with_refresh_token(rt.expose_secret());
    }
    if let Some(id) = s.id_token {
        token.set_id_token(Some(id));
    }
    for (name, value) in s.extra {
        token = token.with_extra(name, value);
    }
    if let Some(scope) = s.scope {
        token = token.with_scope(scope);
    }
    if let Some(pop) = s.pop {
        token = token.with_stored_proof_key(crate::token::ProofKey {
            kind: pop.kind,
            material: pop.key,
        });
    }
    Ok(token)
}

fn to_epoch_secs(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Seconds since the epoch, up to the year 9999.
fn from_epoch_secs(secs: f64) -> Option<SystemTime> {
    const MAX: f64 = 253_402_300_799.0; // 9999-12-31T23:59:59Z
    if !(0.0..=MAX).contains(&secs) {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_field() {
        let t = Token::new("a.b.c")
            .with_token_type(TokenType::DPoP)
            .with_expires_at(UNIX_EPOCH + Duration::from_millis(1_900_000_000_500))
            .with_refresh_at(UNIX_EPOCH + Duration::from_secs(1_899_999_000))
            .with_issued_at(UNIX_EPOCH + Duration::from_secs(1_899_996_400))
            .with_refresh_token("r")
            .with_id_token("i.d.t")
            .with_extra(
                "issued_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            )
            .with_scope("x y");
        let back = decode(&encode(&t)).unwrap();
        assert_eq!(back.id_token().unwrap().expose_secret(), "i.d.t");
        assert_eq!(
            back.extra("issued_token_type").and_then(|v| v.as_str()),
            Some("urn:ietf:params:oauth:token-type:access_token")
        );
        assert!(
            !format!("{back:?}").contains("i.d.t"),
            "the ID token is redacted in Debug"
        );
        assert!(back.same_access_token(&t));
        assert_eq!(back.token_type(), &TokenType::DPoP);
        let exp = back.expires_at().unwrap().duration_since(UNIX_EPOCH).unwrap();
        assert!((exp.as_secs_f64() - 1_900_000_000.5).abs() < 0.001);
        assert_eq!(back.refresh_at(), t.refresh_at());
        assert_eq!(back.issued_at(), t.issued_at());
        assert_eq!(back.refresh_token().unwrap().expose_secret(), "r");
        assert_eq!(back.scope(), Some("x y"));
    }

    #[test]
    fn corrupt_input_gives_errors_without_the_content() {
        let cases: &[&[u8]] = &[
            b"",
            b"{",
            b"\xff\xfe",
            br#"{"v":2,"access_token":"SECRET-X"}"#,
            br#"{"v":1}"#,
            br#"{"v":1,"access_token":"","token_type":"Bearer"}"#,
            br#"{"v":1,"access_token":"SECRET-X","token_type":"Bearer","expires_at":-5}"#,
            br#"{"v":1,"access_token":"SECRET-X","token_type":"Bearer","expires_at":1e300}"#,
            br#"{"v":1,"access_token":"SECRET-X","token_type":7}"#,
        ];
        for bytes in cases {
            let e = decode(bytes).unwrap_err();
            assert!(!e.to_string().contains("SECRET-X"), "{e}");
        }
        assert!(
            decode(br#"{"v":2}"#)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
    }
}

/// Tokens in one store, refresh leases from another: for a store that cannot coordinate
/// processes itself (an OS keyring) paired with one that can (a folder of lock files).
///
/// ```
/// use authwire::store::LeasedStore;
/// # use authwire::{async_trait, CacheKey, StoreError, Token, TokenStore};
/// # #[derive(Clone)] struct Keyring; #[derive(Clone)] struct LockFiles;
/// # #[async_trait] impl TokenStore for Keyring {
/// #   async fn load(&self, _: &CacheKey) -> Result<Option<Token>, StoreError> { Ok(None) }
/// #   async fn save(&self, _: &CacheKey, _: &Token) -> Result<(), StoreError> { Ok(()) }
/// #   async fn delete(&self, _: &CacheKey) -> Result<(), StoreError> { Ok(()) } }
/// # #[async_trait] impl TokenStore for LockFiles {
/// #   async fn load(&self, _: &CacheKey) -> Result<Option<Token>, StoreError> { Ok(None) }
/// #   async fn save(&self, _: &CacheKey, _: &Token) -> Result<(), StoreError> { Ok(()) }
/// #   async fn delete(&self, _: &CacheKey) -> Result<(), StoreError> { Ok(()) } }
/// // In the CLI: `KeyringStore` for the tokens, a `FileStore` in the cache folder for leases.
/// let store = LeasedStore::new(Keyring, LockFiles);
/// # let _ = store;
/// ```
#[derive(Clone, Debug)]
pub struct LeasedStore<S, L> {
    tokens: S,
    leases: L,
}

impl<S: TokenStore, L: TokenStore> LeasedStore<S, L> {
    /// Keep tokens in `tokens`; take refresh leases from `leases` (its tokens are not used).
    pub fn new(tokens: S, leases: L) -> Self {
        Self { tokens, leases }
    }
}

#[async_trait]
impl<S: TokenStore, L: TokenStore> TokenStore for LeasedStore<S, L> {
    async fn load(&self, key: &CacheKey) -> Result<Option<Token>, StoreError> {
        self.tokens.load(key).await
    }
    async fn save(&self, key: &CacheKey, token: &Token) -> Result<(), StoreError> {
        self.tokens.save(key, token).await
    }
    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        self.tokens.delete(key).await
    }
    async fn begin_refresh(&self, key: &CacheKey, ttl: Duration) -> Result<RefreshLease, StoreError> {
        self.leases.begin_refresh(key, ttl).await
    }
}
