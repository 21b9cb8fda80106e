//! The three ways to reach Redis (one server, a Redis Cluster, a master found through
//! Sentinel) behind one connection type, so that every store operation is written once.

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::sync::{Arc, Mutex, PoisonError};

/// A connection to the store's Redis, whatever its topology. Cheap to clone: every variant is
/// multiplexed and shared.
#[derive(Clone)]
pub(crate) enum Backend {
    /// One server, through a connection that reconnects by itself.
    Single(ConnectionManager),
    /// A Redis Cluster: commands go to the master of their key's slot, and the client follows
    /// `MOVED` and refreshes its slot map after a failover.
    Cluster(ClusterConnection),
    /// The master that Sentinel names, asked again after a failover.
    Sentinel(Arc<SentinelMaster>),
}

/// The connection to the current master of a Sentinel-monitored group. The redis crate asks the
/// sentinels for the master once per connection; this forgets the connection when it breaks or
/// the server it reaches is no longer a master, so that the next command asks the sentinels
/// again and reaches the master they elected.
pub(crate) struct SentinelMaster {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
    allow_plaintext: bool,
}

impl SentinelMaster {
    pub(crate) fn new(
        sentinels: SentinelClient,
        config: AsyncConnectionConfig,
        allow_plaintext: bool,
    ) -> Self {
        Self {
            sentinels: tokio::sync::Mutex::new(sentinels),
            current: Mutex::new(None),
            config,
            allow_plaintext,
        }
    }

    fn cached(&self) -> Option<MultiplexedConnection> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The connection to the master, asking the sentinels (one task at a time) if there is none.
    pub(crate) async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let mut sentinels = self.sentinels.lock().await;
        // Another task may have connected while this one waited.
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let client = sentinels.async_get_client().await?;
        // The sentinels choose where tokens are written: a master they name is held to the
        // same rule as a configured URL (plaintext only to loopback, unless allowed by name).
        check_named_master(client.get_connection_info().addr(), self.allow_plaintext)?;
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    /// Forget the connection after an answer that says the master may have changed.
    fn judge<T>(&self, result: &RedisResult<T>, replies: &[Value]) {
        let failed_over = match result {
            Err(e) => master_may_have_changed(e),
            Ok(_) => replies.iter().any(|v| match v {
                Value::ServerError(e) => matches!(
                    e.kind(),
                    Some(redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown)
                ),
                _ => false,
            }),
        };
        if failed_over {
            *self.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }
}

/// A master the sentinels name is refused over plaintext unless it is loopback or plaintext was
/// allowed by name.
fn check_named_master(addr: &redis::ConnectionAddr, allow_plaintext: bool) -> RedisResult<()> {
    match addr {
        redis::ConnectionAddr::Tcp(host, port) if !allow_plaintext && !authwire::is_loopback_host(host) => {
            Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "the sentinels name a master that is not loopback, over plaintext: tokens would cross the network readable; use rediss+sentinel://, or allow_plaintext_redis(true)",
                format!("{host}:{port}"),
            )))
        }
        _ => Ok(()),
    }
}

/// An error after which the same connection may reach a server that is no longer the master.
fn master_may_have_changed(e: &RedisError) -> bool {
    e.is_connection_dropped()
        || e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown)
        )
}

impl ConnectionLike for Backend {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Backend::Single(c) => c.req_packed_command(cmd),
            Backend::Cluster(c) => c.req_packed_command(cmd),
            Backend::Sentinel(master) => Box::pin(async move {
                let mut conn = master.connection().await?;
                let result = conn.req_packed_command(cmd).await;
                let reply = result.as_ref().map(std::slice::from_ref).unwrap_or_default();
                master.judge(&result, reply);
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Backend::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Backend::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Backend::Sentinel(master) => Box::pin(async move {
                let mut conn = master.connection().await?;
                let result = conn.req_packed_commands(pipeline, offset, count).await;
                let replies = result.as_deref().unwrap_or_default();
                master.judge(&result, replies);
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Backend::Single(c) => c.get_db(),
            Backend::Cluster(c) => c.get_db(),
            Backend::Sentinel(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_named_by_sentinels_is_held_to_the_plaintext_rule() {
        let remote = redis::ConnectionAddr::Tcp("10.1.2.3".into(), 6379);
        let e = check_named_master(&remote, false).unwrap_err();
        assert!(e.to_string().contains("not loopback"), "{e}");
        assert!(check_named_master(&remote, true).is_ok(), "allowed by name");
        assert!(check_named_master(&redis::ConnectionAddr::Tcp("127.0.0.1".into(), 6379), false).is_ok());
    }
}
