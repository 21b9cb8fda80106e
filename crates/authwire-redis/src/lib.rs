//! A Redis [`TokenStore`] for authwire, with a fleet-wide refresh lease.
//!
//! One process already makes one refresh per token lifetime. A fleet of 50 replicas would make
//! 50, and with refresh-token rotation two replicas refreshing the same token end in
//! `invalid_grant` and a revoked token family. With `RedisStore`, replicas share tokens through
//! Redis, and a lease in Redis elects one refresher per token: the identity provider sees one
//! refresh per token lifetime however many replicas run.
//!
//! ```no_run
//! use authwire::Authorizer;
//! use authwire_redis::RedisStore;
//! # use authwire::{async_trait, CacheKey, IdentityProvider, ProviderError, Token};
//! # struct P;
//! # #[async_trait] impl IdentityProvider for P {
//! #     async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> { Ok(Token::new("t")) }
//! #     fn cache_key(&self) -> CacheKey { CacheKey::from_static("p") }
//! # }
//!
//! # async fn run() -> Result<(), authwire::StoreError> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
//! let authorizer = Authorizer::builder(P).store(store).build();
//! # Ok(()) }
//! ```
//!
//! # How it works (docs/fleet.md has the details and the numbers)
//!
//! - Tokens live under `<namespace>:token:<SHA-256 of the cache key>`, serialised by
//!   [`authwire::store::encode`], with a TTL from the token's expiry (kept longer when the token
//!   carries a refresh token, which outlives its access token).
//! - [`begin_refresh`](TokenStore::begin_refresh) takes `<namespace>:lease:<hash>` with
//!   `SET NX PX` and a random owner value; the lease is released with a compare-and-delete script,
//!   so a process never deletes a lease that expired and was taken by another.
//! - The authorizer that holds the lease re-reads the newest token (so its refresh token is never
//!   a stale copy), calls the provider, saves, releases. The others poll Redis for the new token
//!   instead of calling the provider. A holder that dies stops blocking the others when the lease
//!   expires.
//! - If Redis cannot be reached, every operation fails fast (bounded timeouts) and each process
//!   refreshes on its own: Redis is never a single point of failure for authorization.

use authwire::{
    CacheKey, Clock, LeaseGuard, RefreshLease, StoreError, SystemClock, Token, TokenStore, async_trait,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// How long a stored token with a refresh token outlives its access token by default.
pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a Redis command may take before it fails.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

const RELEASE_SCRIPT: &str =
    r#"if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end"#;

/// Tokens in Redis, shared by every process that uses the same server and namespace.
/// Cheap to clone (the connection is multiplexed and reconnects by itself).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    namespace: Arc<str>,
    refresh_token_ttl: Duration,
    clock: Arc<dyn Clock>,
    release: Arc<redis::Script>,
    display_url: Arc<str>,
}

/// Configures a [`RedisStore`].
pub struct RedisStoreBuilder {
    url: String,
    namespace: String,
    refresh_token_ttl: Duration,
    command_timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl RedisStore {
    /// Connect to `url` (`redis://`, or `rediss://` for TLS) with the defaults.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// Configure a store.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            namespace: "authwire".into(),
            refresh_token_ttl: DEFAULT_REFRESH_TOKEN_TTL,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            clock: Arc::new(SystemClock),
        }
    }

    fn hashed(&self, kind: &str, key: &CacheKey) -> String {
        let digest = Sha256::digest(key.as_str().as_bytes());
        let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:{kind}:{hash}", self.namespace)
    }

    /// The Redis key that holds `key`'s token.
    pub fn token_key(&self, key: &CacheKey) -> String {
        self.hashed("token", key)
    }

    /// The Redis key of `key`'s refresh lease.
    pub fn lease_key(&self, key: &CacheKey) -> String {
        self.hashed("lease", key)
    }

    fn ttl_for(&self, token: &Token) -> Duration {
        let left = token
            .expires_at()
            .map(|e| e.duration_since(self.clock.now()).unwrap_or_default());
        match (left, token.refresh_token().is_some()) {
            (_, true) => left.unwrap_or_default() + self.refresh_token_ttl,
            (Some(left), false) => left + Duration::from_secs(60),
            (None, false) => self.refresh_token_ttl,
        }
    }
}

fn backend(e: redis::RedisError) -> StoreError {
    // Redis errors name commands and server messages, never the values we sent.
    StoreError::new(RedisStoreError(e.to_string()))
}

/// A Redis failure, the source of [`StoreError::Backend`].
#[derive(Debug, Clone)]
pub struct RedisStoreError(String);

impl fmt::Display for RedisStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis: {}", self.0)
    }
}

impl std::error::Error for RedisStoreError {}

impl RedisStoreBuilder {
    /// Prefix of every key (default `authwire`); processes share tokens within a namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long a token that carries a refresh token is kept after its access token expires
    /// (default [`DEFAULT_REFRESH_TOKEN_TTL`], 30 days).
    pub fn refresh_token_ttl(mut self, ttl: Duration) -> Self {
        self.refresh_token_ttl = ttl;
        self
    }

    /// How long one command (and one connection attempt) may take
    /// (default [`DEFAULT_COMMAND_TIMEOUT`], 2 s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Read time from `clock` (for TTLs).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Connect (fails if Redis cannot be reached now; later outages are retried by the
    /// connection).
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let display_url = redact(&self.url);
        let client = redis::Client::open(self.url.as_str()).map_err(backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.command_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| StoreError::new(RedisStoreError(format!("cannot connect to {display_url}: {e}"))))?;
        Ok(RedisStore {
            conn,
            namespace: Arc::from(self.namespace),
            refresh_token_ttl: self.refresh_token_ttl,
            clock: self.clock,
            release: Arc::new(redis::Script::new(RELEASE_SCRIPT)),
            display_url: Arc::from(display_url),
        })
    }
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<invalid redis url>".into(),
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn load(&self, key: &CacheKey) -> Result<Option<Token>, StoreError> {
        let redis_key = self.token_key(key);
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&redis_key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        let Some(bytes) = bytes.map(authwire::secrecy::zeroize::Zeroizing::new) else {
            return Ok(None);
        };
        authwire::store::decode(&bytes)
            .map(Some)
            .map_err(|e| StoreError::corrupt(format!("redis key {redis_key}"), e.to_string()))
    }

    async fn save(&self, key: &CacheKey, token: &Token) -> Result<(), StoreError> {
        let bytes = authwire::store::encode(token);
        let ttl_ms = self.ttl_for(token).as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        redis::cmd("SET")
            .arg(self.token_key(key))
            .arg(&bytes[..])
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(backend)
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), StoreError> {
        redis::cmd("DEL")
            .arg(self.token_key(key))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(backend)
    }

    async fn begin_refresh(&self, key: &CacheKey, ttl: Duration) -> Result<RefreshLease, StoreError> {
        let lease_key = self.lease_key(key);
        let owner = random_owner();
        let ttl_ms = ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        let taken: Option<String> = redis::cmd("SET")
            .arg(&lease_key)
            .arg(&owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        if taken.is_none() {
            return Ok(RefreshLease::HeldElsewhere);
        }
        debug!(lease = %lease_key, "took the fleet refresh lease");
        Ok(RefreshLease::Held(Box::new(Lease {
            conn: self.conn.clone(),
            key: lease_key,
            owner,
            script: self.release.clone(),
        })))
    }
}

struct Lease {
    conn: ConnectionManager,
    key: String,
    owner: String,
    script: Arc<redis::Script>,
}

#[async_trait]
impl LeaseGuard for Lease {
    async fn release(self: Box<Self>) {
        let mut conn = self.conn.clone();
        let released: Result<i64, _> = self
            .script
            .key(&self.key)
            .arg(&self.owner)
            .invoke_async(&mut conn)
            .await;
        match released {
            Ok(1) => debug!(lease = %self.key, "released the fleet refresh lease"),
            Ok(_) => debug!(lease = %self.key, "the fleet refresh lease had expired before its release"),
            // The lease expires by itself; nothing is lost.
            Err(e) => debug!(lease = %self.key, error = %e, "could not release the fleet refresh lease"),
        }
    }
}

/// 128 random bits, so that owners never collide.
fn random_owner() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(32);
    for i in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(i);
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.display_url)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("redis://:hunter2@cache:6379/0"),
            "redis://:redacted@cache:6379/0"
        );
        assert_eq!(
            redact("rediss://user:hunter2@cache/"),
            "rediss://user:redacted@cache/"
        );
        assert_eq!(redact("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redact("::"), "<invalid redis url>");
    }

    #[test]
    fn owners_are_unique() {
        assert_ne!(random_owner(), random_owner());
        assert_eq!(random_owner().len(), 32);
    }
}

/// docs/fleet.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/fleet.md")]
pub struct FleetGuide;
