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

/// Save the token (KEYS[2]) only while the lease (KEYS[1]) is still ours (ARGV[1]): the fence.
const FENCED_SAVE_SCRIPT: &str = r#"if redis.call("get", KEYS[1]) == ARGV[1] then
  redis.call("set", KEYS[2], ARGV[2], "PX", ARGV[3])
  return 1
else
  return 0
end"#;

/// What an encrypted entry starts with (then a 24-byte nonce, then the sealed token).
const SEALED_MAGIC: &[u8] = b"awx1";

/// Tokens in Redis, shared by every process that uses the same server and namespace.
/// Cheap to clone (the connection is multiplexed and reconnects by itself).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    namespace: Arc<str>,
    refresh_token_ttl: Duration,
    clock: Arc<dyn Clock>,
    release: Arc<redis::Script>,
    fenced_save: Arc<redis::Script>,
    display_url: Arc<str>,
    cipher: Option<Arc<chacha20poly1305::XChaCha20Poly1305>>,
}

/// Configures a [`RedisStore`].
pub struct RedisStoreBuilder {
    url: String,
    namespace: String,
    refresh_token_ttl: Duration,
    command_timeout: Duration,
    clock: Arc<dyn Clock>,
    allow_plaintext: bool,
    root_certificate: Option<Vec<u8>>,
    encryption_key: Option<chacha20poly1305::Key>,
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
            allow_plaintext: false,
            root_certificate: None,
            encryption_key: None,
        }
    }

    /// The bytes stored for `token` under `redis_key`: the stored format, sealed with
    /// XChaCha20-Poly1305 when an encryption key is set (the Redis key is the associated data,
    /// so an entry cannot be moved to another key).
    fn seal(&self, redis_key: &str, token: &Token) -> Result<Vec<u8>, StoreError> {
        use chacha20poly1305::aead::{Aead, Payload};
        let plain = authwire::secrecy::zeroize::Zeroizing::new(authwire::store::encode(token));
        let Some(cipher) = &self.cipher else {
            return Ok(plain.to_vec());
        };
        // A random 192-bit nonce from the OS (XChaCha20's nonce is long enough to draw at random).
        let mut nonce = chacha20poly1305::XNonce::default();
        authwire::random::secure_fill(&mut nonce)
            .map_err(|_| StoreError::new(RedisStoreError("no randomness for the nonce".into())))?;
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: redis_key.as_bytes(),
                },
            )
            .map_err(|_| StoreError::new(RedisStoreError("could not encrypt the token".into())))?;
        let mut out = Vec::with_capacity(SEALED_MAGIC.len() + nonce.len() + sealed.len());
        out.extend_from_slice(SEALED_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The token in `bytes` read from `redis_key` (see [`seal`](Self::seal)).
    fn open(&self, redis_key: &str, bytes: &[u8]) -> Result<Token, StoreError> {
        use chacha20poly1305::aead::{Aead, Payload};
        let corrupt = |why: &str| StoreError::corrupt(format!("redis key {redis_key}"), why.to_owned());
        let sealed = bytes.strip_prefix(SEALED_MAGIC);
        let plain = match (&self.cipher, sealed) {
            (None, None) => authwire::secrecy::zeroize::Zeroizing::new(bytes.to_vec()),
            (None, Some(_)) => {
                return Err(corrupt(
                    "the entry is encrypted: configure the store's encryption key",
                ));
            }
            (Some(_), None) => {
                return Err(corrupt(
                    "the entry is not encrypted, but this store encrypts: refused (planted, or written without the key)",
                ));
            }
            (Some(cipher), Some(sealed)) => {
                if sealed.len() < 24 {
                    return Err(corrupt("the encrypted entry is truncated"));
                }
                let (nonce, body) = sealed.split_at(24);
                let plain = cipher
                    .decrypt(
                        chacha20poly1305::XNonce::from_slice(nonce),
                        Payload {
                            msg: body,
                            aad: redis_key.as_bytes(),
                        },
                    )
                    .map_err(|_| corrupt("cannot decrypt the entry: another key, or tampered"))?;
                authwire::secrecy::zeroize::Zeroizing::new(plain)
            }
        };
        authwire::store::decode(&plain).map_err(|e| corrupt(&e.to_string()))
    }

    fn hashed(&self, kind: &str, key: &CacheKey) -> String {
        format!("{}:{kind}:{}", self.namespace, key.sha256_hex())
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

    /// Allow `redis://` (plaintext) to a host that is not loopback (default `false`: refused,
    /// since tokens and refresh tokens would cross the network readable; use `rediss://`).
    pub fn allow_plaintext_redis(mut self, on: bool) -> Self {
        self.allow_plaintext = on;
        self
    }

    /// Trust this CA certificate (PEM) for `rediss://`, instead of the system's roots.
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// Encrypt tokens at rest with this 256-bit key (XChaCha20-Poly1305), for shared servers:
    /// whoever can read the Redis keys then sees no token without the key. Every process of the
    /// fleet needs the same key; entries that are not encrypted are refused.
    pub fn encryption_key(mut self, key: [u8; 32]) -> Self {
        self.encryption_key = Some(key.into());
        self
    }

    /// Connect (fails if Redis cannot be reached now; later outages are retried by the
    /// connection).
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let display_url = redact(&self.url);
        check_transport(&self.url, self.allow_plaintext)?;
        let client = match self.root_certificate {
            Some(pem) => redis::Client::build_with_tls(
                self.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            ),
            None => redis::Client::open(self.url.as_str()),
        }
        .map_err(backend)?;
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
            fenced_save: Arc::new(redis::Script::new(FENCED_SAVE_SCRIPT)),
            display_url: Arc::from(display_url),
            cipher: self.encryption_key.map(|k| {
                use chacha20poly1305::KeyInit;
                Arc::new(chacha20poly1305::XChaCha20Poly1305::new(&k))
            }),
        })
    }
}

/// `rediss://`, a Unix socket, or `redis://` to loopback; plaintext elsewhere only by name.
fn check_transport(url: &str, allow_plaintext: bool) -> Result<(), StoreError> {
    let refuse = |why: String| Err(StoreError::new(RedisStoreError(why)));
    let Ok(parsed) = url::Url::parse(url) else {
        return refuse("the Redis URL is not a URL".into());
    };
    match parsed.scheme() {
        "rediss" | "redis+unix" | "unix" => Ok(()),
        "redis" if allow_plaintext || parsed.host_str().is_some_and(authwire::is_loopback_host) => Ok(()),
        "redis" => refuse(format!(
            "{} is plaintext Redis to a host that is not loopback: tokens and refresh tokens would cross the network readable; use rediss://, or allow_plaintext_redis(true)",
            redact(url)
        )),
        other => refuse(format!("the Redis URL scheme {other:?} is not redis or rediss")),
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
        self.open(&redis_key, &bytes).map(Some)
    }

    async fn save(&self, key: &CacheKey, token: &Token) -> Result<(), StoreError> {
        let redis_key = self.token_key(key);
        let bytes = authwire::secrecy::zeroize::Zeroizing::new(self.seal(&redis_key, token)?);
        let ttl_ms = self.ttl_for(token).as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        redis::cmd("SET")
            .arg(&redis_key)
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
            store: self.clone(),
            key: lease_key,
            owner,
        })))
    }
}

struct Lease {
    store: RedisStore,
    key: String,
    owner: String,
}

#[async_trait]
impl LeaseGuard for Lease {
    /// The fence: the token is written only if this lease is still the one in Redis, in one
    /// script, so a holder that outlived its lease cannot overwrite its successor's token.
    async fn save_under_lease(&self, key: &CacheKey, token: &Token) -> Option<Result<(), StoreError>> {
        let store = &self.store;
        let token_key = store.token_key(key);
        let bytes = match store.seal(&token_key, token) {
            Ok(b) => authwire::secrecy::zeroize::Zeroizing::new(b),
            Err(e) => return Some(Err(e)),
        };
        let ttl_ms = store.ttl_for(token).as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        let saved: Result<i64, _> = store
            .fenced_save
            .key(&self.key)
            .key(&token_key)
            .arg(&self.owner)
            .arg(&bytes[..])
            .arg(ttl_ms)
            .invoke_async(&mut store.conn.clone())
            .await;
        Some(match saved {
            Ok(1) => Ok(()),
            Ok(_) => Err(StoreError::new(RedisStoreError(
                "the refresh lease expired and was taken over before the save; the newer token stays".into(),
            ))),
            Err(e) => Err(backend(e)),
        })
    }

    async fn release(self: Box<Self>) {
        let mut conn = self.store.conn.clone();
        let released: Result<i64, _> = self
            .store
            .release
            .key(&self.key)
            .arg(&self.owner)
            .invoke_async(&mut conn)
            .await;
        match released {
            Ok(1) => debug!(lease = %self.key, "released the fleet refresh lease"),
            Ok(_) => debug!(lease = %self.key, "the fleet refresh lease had expired before its release"),
            // The lease expires by itself; nothing is lost.
            Err(e) => {
                debug!(lease = %self.key, error = %authwire::error_chain(&e), "could not release the fleet refresh lease")
            }
        }
    }
}

/// 128 random bits, so that owners never collide.
fn random_owner() -> String {
    authwire::random::hex(16)
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
