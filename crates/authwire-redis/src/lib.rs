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
//! A Redis Cluster (Valkey, ElastiCache or Memorystore in cluster mode) or a master behind
//! Sentinel is configured the same way, with [`RedisStore::cluster`] or
//! [`RedisStore::sentinel`], or with one URL ([`RedisStore::from_url`]:
//! `redis+cluster://host:7000,host:7001` or `redis+sentinel://host:26379,host:26380/mymaster`).
//!
//! # How it works (docs/fleet.md has the details and the numbers)
//!
//! - Tokens live under `<namespace>:token:{<SHA-256 of the cache key>}`, serialised by
//!   [`authwire::store::encode`], with a TTL from the token's expiry (kept longer when the token
//!   carries a refresh token, which outlives its access token).
//! - [`begin_refresh`](TokenStore::begin_refresh) takes `<namespace>:lease:{<hash>}` with
//!   `SET NX PX` and a random owner value; the lease is released with a compare-and-delete script,
//!   so a process never deletes a lease that expired and was taken by another. The braces are a
//!   Redis Cluster hash tag: a token and its lease live in one slot, so the fenced save (one
//!   script over both keys) runs on a cluster too.
//! - When the master has replicas (always on a cluster or behind Sentinel), the lease is written
//!   to a majority of them (`WAIT`) before the refresh starts; a lease that cannot be is given
//!   up, and the authorizer keeps serving its still-valid token instead of redeeming a refresh
//!   token that a promoted replica would let a second process redeem too.
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
use tracing::{debug, warn};

mod address;
mod backend;

use address::Topology;
use backend::{Backend, SentinelMaster};

/// How long a stored token with a refresh token outlives its access token by default.
pub const DEFAULT_REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a Redis command may take before it fails.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new refresh lease may take to reach the replicas it must reach (`WAIT`).
pub const DEFAULT_LEASE_ACK_TIMEOUT: Duration = Duration::from_millis(500);

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
    conn: Backend,
    namespace: Arc<str>,
    refresh_token_ttl: Duration,
    clock: Arc<dyn Clock>,
    release: Arc<redis::Script>,
    fenced_save: Arc<redis::Script>,
    display_url: Arc<str>,
    cipher: Option<Arc<chacha20poly1305::XChaCha20Poly1305>>,
    lease_replicas: usize,
    lease_ack_timeout: Duration,
    command_timeout: Duration,
}

/// Configures a [`RedisStore`].
pub struct RedisStoreBuilder {
    topology: Result<Topology, StoreError>,
    lease_replicas: usize,
    lease_ack_timeout: Duration,
    namespace: String,
    refresh_token_ttl: Duration,
    command_timeout: Duration,
    clock: Arc<dyn Clock>,
    allow_plaintext: bool,
    root_certificate: Option<Vec<u8>>,
    encryption_key: Option<chacha20poly1305::Key>,
}

impl RedisStore {
    /// Connect to `url` with the defaults: one server (`redis://`, or `rediss://` for TLS), or
    /// any form [`from_url`](Self::from_url) reads.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::from_url(url).connect().await
    }

    /// Configure a store on one Redis server at `url` (`redis://`, `rediss://`,
    /// `redis+unix://`), or any form [`from_url`](Self::from_url) reads.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        Self::from_url(&url.into())
    }

    /// Configure a store on a Redis Cluster (Redis, Valkey, ElastiCache or Memorystore in cluster
    /// mode), given any of its nodes: `redis://host:port` or `rediss://host:port` each. Commands
    /// go to the master of each key's slot; a token and its lease share one slot.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), authwire::StoreError> {
    /// let store = authwire_redis::RedisStore::cluster(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])
    ///     .namespace("orders-service")
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn cluster<I>(nodes: I) -> RedisStoreBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self::with_topology(Ok(Topology::Cluster(nodes.into_iter().map(Into::into).collect())))
    }

    /// Configure a store on the master that the sentinels (`redis://host:26379` each) name for
    /// `master_name`; after a failover, the store asks them again and follows the new master.
    /// The credentials in the sentinels' URLs are used for the master too.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), authwire::StoreError> {
    /// let store = authwire_redis::RedisStore::sentinel(["redis://127.0.0.1:26379"], "mymaster")
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn sentinel<I>(sentinels: I, master_name: impl Into<String>) -> RedisStoreBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self::with_topology(Ok(Topology::Sentinel {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            master: master_name.into(),
        }))
    }

    /// Configure a store from one URL, as the CLI's `--redis-url` takes it:
    /// `redis://host:port/db` (or `rediss://`) for one server,
    /// `redis+cluster://[user:password@]host:port,host:port` for a cluster, and
    /// `redis+sentinel://[user:password@]host:port,host:port/master-name` for Sentinel (`rediss+`
    /// for TLS). A URL that cannot be read fails at [`connect`](RedisStoreBuilder::connect).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), authwire::StoreError> {
    /// let store = authwire_redis::RedisStore::from_url("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster")
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn from_url(url: &str) -> RedisStoreBuilder {
        Self::with_topology(address::parse(url))
    }

    fn with_topology(topology: Result<Topology, StoreError>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            topology,
            lease_replicas: 0,
            lease_ack_timeout: DEFAULT_LEASE_ACK_TIMEOUT,
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

    /// `<namespace>:<kind>:{<hash>}`: the braces are a Redis Cluster hash tag, so that a
    /// token and its lease hash to one slot (the namespace has no braces: checked at connect).
    fn hashed(&self, kind: &str, key: &CacheKey) -> String {
        format!("{}:{kind}:{{{}}}", self.namespace, key.sha256_hex())
    }

    /// The Redis key that holds `key`'s token: `<namespace>:token:{<SHA-256 of the key>}`.
    pub fn token_key(&self, key: &CacheKey) -> String {
        self.hashed("token", key)
    }

    /// The Redis key of `key`'s refresh lease: `<namespace>:lease:{<SHA-256 of the key>}`,
    /// in the token's slot.
    pub fn lease_key(&self, key: &CacheKey) -> String {
        self.hashed("lease", key)
    }

    /// Where version 0.1 kept `key`'s token (no hash tag), read when the new key is empty so
    /// that an upgrade keeps every stored refresh token; removed in a later version.
    fn legacy_token_key(&self, key: &CacheKey) -> String {
        format!("{}:token:{}", self.namespace, key.sha256_hex())
    }

    /// How many replicas must acknowledge a new lease: a majority of those connected to the
    /// master of `lease_key`'s slot, and at least [`lease_replicas`](RedisStoreBuilder::lease_replicas).
    /// A user whose ACL forbids `ROLE` gets the configured minimum.
    async fn replicas_to_wait_for(&self, lease_key: &str) -> Result<usize, StoreError> {
        let mut pipe = redis::pipe();
        // The key routes the pipeline to the slot's master on a cluster; ROLE then answers there.
        pipe.cmd("PTTL").arg(lease_key).ignore().cmd("ROLE");
        let role: redis::RedisResult<(redis::Value,)> = pipe.query_async(&mut self.conn.clone()).await;
        let connected = match role {
            Ok((redis::Value::Array(role),)) => match role.as_slice() {
                [_, _, redis::Value::Array(replicas), ..] => replicas.len(),
                _ => 0,
            },
            Ok(_) => 0,
            // The server refused ROLE (an ACL without it, a managed service that renamed it):
            // the configured floor decides.
            Err(e) if !unreachable(&e) => {
                debug!(error = %e, "ROLE refused; waiting for the configured minimum of replicas");
                0
            }
            Err(e) => return Err(backend(e)),
        };
        let majority = if connected == 0 { 0 } else { connected / 2 + 1 };
        Ok(majority.max(self.lease_replicas))
    }

    /// Delete the lease `lease_key` if `owner` still holds it; errors are logged (the lease
    /// expires by itself: nothing is lost).
    async fn release_lease(&self, lease_key: &str, owner: &str) {
        let released: Result<i64, _> = self
            .release
            .key(lease_key)
            .arg(owner)
            .invoke_async(&mut self.conn.clone())
            .await;
        match released {
            Ok(1) => debug!(lease = %lease_key, "released the fleet refresh lease"),
            Ok(_) => debug!(lease = %lease_key, "the fleet refresh lease had expired before its release"),
            Err(e) => {
                debug!(lease = %lease_key, error = %authwire::error_chain(&e), "could not release the fleet refresh lease")
            }
        }
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

/// An error that says the server was not reached (as opposed to a refusal it answered).
fn unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
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

    /// The fewest replicas that must acknowledge a new refresh lease (`WAIT`) before the refresh
    /// starts. Whatever this is, the store waits for a majority of the replicas connected to
    /// the master at that moment (none when it has none: then there is nothing a failover could
    /// promote). Default 0: a majority of the connected replicas. A higher minimum refuses
    /// leases while replicas are missing (after a failover, until the old master returns as a
    /// replica), trading refreshes for certainty.
    pub fn lease_replicas(mut self, replicas: usize) -> Self {
        self.lease_replicas = replicas;
        self
    }

    /// How long a new lease may take to reach its replicas (default
    /// [`DEFAULT_LEASE_ACK_TIMEOUT`], 500 ms). A lease that does not is given up, and the
    /// refresh waits (the still-valid token is served meanwhile).
    pub fn lease_ack_timeout(mut self, timeout: Duration) -> Self {
        self.lease_ack_timeout = timeout;
        self
    }

    /// Connect (fails if Redis cannot be reached now; later outages, and failovers, are
    /// followed by the connection).
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let topology = self.topology?;
        let display_url = topology.display();
        for url in topology.urls() {
            check_transport(url, self.allow_plaintext)?;
        }
        if self.namespace.contains(['{', '}']) {
            return Err(StoreError::new(RedisStoreError(format!(
                "the namespace {:?} has a brace: braces in keys choose the Redis Cluster slot, and a token and its lease must share one",
                self.namespace
            ))));
        }
        let tls = self.root_certificate.map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        });
        // A command, or a lease's WAIT for its replicas, answers within this.
        let response_timeout = self.command_timeout + self.lease_ack_timeout;
        let cannot = |e: redis::RedisError| {
            StoreError::new(RedisStoreError(format!("cannot connect to {display_url}: {e}")))
        };
        let conn = match &topology {
            Topology::Single(url) => {
                let client = match tls {
                    Some(tls) => redis::Client::build_with_tls(url.as_str(), tls),
                    None => redis::Client::open(url.as_str()),
                }
                .map_err(backend)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.command_timeout))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Backend::Single(
                    ConnectionManager::new_with_config(client, config)
                        .await
                        .map_err(cannot)?,
                )
            }
            Topology::Cluster(nodes) => {
                let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(self.command_timeout)
                    .response_timeout(response_timeout)
                    // A failover moves slots: a few quick retries follow the new map; longer
                    // outages are the authorizer's (its store timeout, then backoff).
                    .retries(3)
                    .min_retry_wait(50)
                    .max_retry_wait(500);
                if let Some(tls) = tls {
                    builder = builder.certs(tls);
                }
                let client = builder.build().map_err(backend)?;
                Backend::Cluster(client.get_async_connection().await.map_err(cannot)?)
            }
            Topology::Sentinel { sentinels, master } => {
                let sentinels = sentinels
                    .iter()
                    .map(|u| redis::IntoConnectionInfo::into_connection_info(u.as_str()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(backend)?;
                let first = sentinels[0].redis_settings().clone();
                let mut builder = redis::sentinel::SentinelClientBuilder::new(
                    sentinels.iter().map(|s| s.addr().clone()),
                    master,
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(backend)?;
                if let Some(user) = first.username() {
                    builder = builder
                        .set_client_to_sentinel_username(user)
                        .set_client_to_redis_username(user);
                }
                if let Some(password) = first.password() {
                    builder = builder
                        .set_client_to_sentinel_password(password)
                        .set_client_to_redis_password(password);
                }
                if matches!(sentinels[0].addr(), redis::ConnectionAddr::TcpTls { .. }) {
                    builder = builder
                        .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                }
                if let Some(tls) = tls {
                    builder = builder
                        .set_client_to_sentinel_certificates(tls.clone())
                        .set_client_to_redis_certificates(tls);
                }
                let client = builder.build().map_err(backend)?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.command_timeout))
                    .set_response_timeout(Some(response_timeout));
                let master = Arc::new(SentinelMaster::new(client, config, self.allow_plaintext));
                // Reach the master now, so that a wrong name or unreachable sentinels fail here.
                master.connection().await.map_err(cannot)?;
                Backend::Sentinel(master)
            }
        };
        Ok(RedisStore {
            conn,
            lease_replicas: self.lease_replicas,
            lease_ack_timeout: self.lease_ack_timeout,
            command_timeout: self.command_timeout,
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
            address::redact(url)
        )),
        other => refuse(format!("the Redis URL scheme {other:?} is not redis or rediss")),
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn load(&self, key: &CacheKey) -> Result<Option<Token>, StoreError> {
        for redis_key in [self.token_key(key), self.legacy_token_key(key)] {
            let bytes: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&redis_key)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(backend)?;
            if let Some(bytes) = bytes.map(authwire::secrecy::zeroize::Zeroizing::new) {
                return self.open(&redis_key, &bytes).map(Some);
            }
        }
        Ok(None)
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
        // One DEL per key: on a cluster, the two keys live in different slots.
        for redis_key in [self.token_key(key), self.legacy_token_key(key)] {
            redis::cmd("DEL")
                .arg(redis_key)
                .query_async::<()>(&mut self.conn.clone())
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn begin_refresh(&self, key: &CacheKey, ttl: Duration) -> Result<RefreshLease, StoreError> {
        let lease_key = self.lease_key(key);
        let owner = random_owner();
        let ttl_ms = ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        let want = self.replicas_to_wait_for(&lease_key).await?;
        let mut conn = self.conn.clone();
        let answer = async {
            if want == 0 {
                let taken = redis::cmd("SET")
                    .arg(&lease_key)
                    .arg(&owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<Option<String>>(&mut conn)
                    .await?;
                return Ok((taken, 0));
            }
            // In one pipeline, so on one connection: WAIT counts the replicas that have this
            // connection's writes, the lease among them. (On a new connection it would count
            // replicas that have nothing of ours.)
            let wait_ms = self.lease_ack_timeout.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
            let mut take = redis::pipe();
            take.cmd("SET")
                .arg(&lease_key)
                .arg(&owner)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .cmd("WAIT")
                .arg(want)
                .arg(wait_ms);
            take.query_async::<(Option<String>, usize)>(&mut conn).await
        };
        // WAIT's own timeout runs on the server; this bound (on the store's clock) holds even if
        // the server does not keep it.
        let bound = self.clock.sleep(self.lease_ack_timeout + self.command_timeout);
        let (taken, acknowledged) = tokio::select! {
            answer = answer => answer.map_err(backend)?,
            () = bound => return Err(StoreError::timeout(self.lease_ack_timeout + self.command_timeout)),
        };
        if taken.is_none() {
            return Ok(RefreshLease::HeldElsewhere);
        }
        if acknowledged < want {
            warn!(lease = %lease_key, acknowledged, wanted = want, timeout = ?self.lease_ack_timeout,
                "the refresh lease did not reach enough replicas; giving it up rather than refreshing under a lease a failover could lose");
            self.release_lease(&lease_key, &owner).await;
            return Err(StoreError::new(RedisStoreError(format!(
                "the refresh lease reached {acknowledged} of the {want} replicas it needs within {:?}: a failover now could hand it to a second process, so this one does not refresh under it (check the replicas' replication)",
                self.lease_ack_timeout
            ))));
        }
        debug!(lease = %lease_key, replicas = acknowledged, "took the fleet refresh lease");
        Ok(RefreshLease::Held(Box::new(Lease {
            store: self.clone(),
            key: lease_key,
            owner,
            replicas: want,
        })))
    }
}

struct Lease {
    store: RedisStore,
    key: String,
    owner: String,
    /// How many replicas acknowledged the lease, and must acknowledge the save.
    replicas: usize,
}

/// How many times a save under the lease is tried when the master may be failing over.
const SAVE_ATTEMPTS: u32 = 3;

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
        if self.replicas == 0 {
            let saved: Result<i64, _> = store
                .fenced_save
                .key(&self.key)
                .key(&token_key)
                .arg(&self.owner)
                .arg(&bytes[..])
                .arg(ttl_ms)
                .invoke_async(&mut store.conn.clone())
                .await;
            return Some(match fenced(saved.map(|n| (n, 0)), 0) {
                Saved::Yes => Ok(()),
                Saved::Fenced(e) | Saved::NotYet(e) => Err(e),
            });
        }
        // With replicas, the save is acknowledged by as many as acknowledged the lease: a
        // rotated refresh token that only the master had would be lost with it. If the master
        // fails over meanwhile, the promoted replica has the lease (it was acknowledged), so
        // the save is tried again there.
        let wait_ms = store.lease_ack_timeout.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        let mut last = None;
        for attempt in 0..SAVE_ATTEMPTS {
            if attempt > 0 {
                store.clock.sleep(Duration::from_millis(200)).await;
            }
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(FENCED_SAVE_SCRIPT)
                .arg(2)
                .arg(&self.key)
                .arg(&token_key)
                .arg(&self.owner)
                .arg(&bytes[..])
                .arg(ttl_ms)
                .cmd("WAIT")
                .arg(self.replicas)
                .arg(wait_ms);
            let saved = pipe.query_async::<(i64, usize)>(&mut store.conn.clone()).await;
            match fenced(saved, self.replicas) {
                Saved::Yes => return Some(Ok(())),
                // The fence held against us: another process owns the lease; never retried.
                Saved::Fenced(e) => return Some(Err(e)),
                Saved::NotYet(e) => {
                    debug!(lease = %self.key, attempt, error = %authwire::error_chain(&e), "the save under the refresh lease did not complete");
                    last = Some(Err(e));
                }
            }
        }
        last
    }

    async fn release(self: Box<Self>) {
        self.store.release_lease(&self.key, &self.owner).await;
    }
}

/// What came of one fenced save.
enum Saved {
    /// Saved, and on as many replicas as it needs.
    Yes,
    /// Not saved: the lease is another's now (final).
    Fenced(StoreError),
    /// Not saved, or not on enough replicas yet (worth another try).
    NotYet(StoreError),
}

/// The answer of a fenced save (`1` saved, `0` the lease is another's) and of its `WAIT`.
fn fenced(saved: redis::RedisResult<(i64, usize)>, replicas: usize) -> Saved {
    match saved {
        Ok((1, acknowledged)) if acknowledged >= replicas => Saved::Yes,
        Ok((1, acknowledged)) => Saved::NotYet(StoreError::new(RedisStoreError(format!(
            "the new token reached {acknowledged} of the {replicas} replicas it needs: a failover now would lose it"
        )))),
        Ok(_) => Saved::Fenced(StoreError::new(RedisStoreError(
            "the refresh lease expired and was taken over before the save; the newer token stays".into(),
        ))),
        Err(e) => Saved::NotYet(backend(e)),
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
    fn owners_are_unique() {
        assert_ne!(random_owner(), random_owner());
        assert_eq!(random_owner().len(), 32);
    }
}

/// docs/fleet.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/fleet.md")]
pub struct FleetGuide;
