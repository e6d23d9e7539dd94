//! Redis through bb8 and bb8-redis, with a key prefix so deployments and tests can share a server.
//!
//! bb8-redis's manager cannot tell a dead multiplexed connection from a live one, so it PINGs on
//! every checkout: one extra round trip per Redis operation. [`RedisManager`] wraps it and
//! remembers, per connection, when a command last succeeded and whether one failed on I/O. A
//! connection used successfully within [`TRUSTED_FOR`] is handed out without a PING (the busy hot
//! path); an idle one is PINGed as before (so connections cut during an outage are caught before
//! use), and one that failed is dropped.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bb8_redis::RedisConnectionManager;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value, aio::MultiplexedConnection};
use secrecy::ExposeSecret;

use crate::config::RedisConfig;

/// How long after a successful command a connection is trusted without a PING.
pub const TRUSTED_FOR: Duration = Duration::from_secs(1);

pub type RedisPool = bb8::Pool<RedisManager>;

/// A pool and the prefix every key of this service starts with.
#[derive(Clone)]
pub struct Cache {
    pub pool: RedisPool,
    prefix: String,
}

impl Cache {
    /// Connects lazily: a Redis outage at start makes the service NOT_SERVING, not absent.
    pub fn connect(config: &RedisConfig) -> anyhow::Result<Self> {
        let manager = RedisManager::new(config.url.expose_secret().to_string())?;
        let pool = bb8::Pool::builder()
            .max_size(config.pool_size)
            .connection_timeout(config.connect_timeout)
            .build_unchecked(manager);
        Ok(Self {
            pool,
            prefix: config.key_prefix.clone(),
        })
    }

    /// `prefix:part1:part2...`
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            if !key.is_empty() {
                key.push(':');
            }
            key.push_str(part);
        }
        key
    }

    /// A connection to use concurrently with other callers. A multiplexed connection pipelines
    /// whatever its users send at once, so Redis reads many commands per read and answers them in
    /// one write; checking one out for each round trip would send one command per connection at
    /// a time instead. The pool still validates it and replaces it when broken.
    pub async fn shared(&self) -> Result<RedisConn, bb8::RunError<RedisError>> {
        let pooled = self.pool.get().await?;
        Ok(RedisConn::clone(&pooled))
    }

    /// A readiness probe: PING within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(timeout, async {
            let mut conn = self.pool.get().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let _: String = redis::cmd("PING").query_async(&mut *conn).await?;
            anyhow::Ok(())
        })
        .await
        .map_err(|_| anyhow::anyhow!("redis ping timed out"))?
    }
}

/// bb8-redis's manager, plus the health a connection has shown in use.
pub struct RedisManager {
    inner: RedisConnectionManager,
    epoch: Instant,
}

impl RedisManager {
    pub fn new(url: String) -> Result<Self, RedisError> {
        Ok(Self {
            inner: RedisConnectionManager::new(url)?,
            epoch: Instant::now(),
        })
    }
}

/// A multiplexed connection that records how its commands went. Clones share the socket.
#[derive(Clone)]
pub struct RedisConn {
    conn: MultiplexedConnection,
    health: Arc<Health>,
}

struct Health {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last success; 0 = never.
    last_ok_ms: AtomicU64,
    broken: AtomicBool,
}

impl Health {
    fn record<T>(&self, result: &Result<T, RedisError>) {
        match result {
            Ok(_) => {
                let ms = u64::try_from(self.epoch.elapsed().as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
                self.last_ok_ms.store(ms, Ordering::Relaxed);
            }
            Err(e)
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout() =>
            {
                self.broken.store(true, Ordering::Relaxed);
            }
            // A script error or a wrong type says nothing about the connection.
            Err(_) => {}
        }
    }

    fn recently_ok(&self) -> bool {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        last != 0
            && !self.broken.load(Ordering::Relaxed)
            && now.saturating_sub(last) < TRUSTED_FOR.as_millis() as u64
    }
}

impl bb8::ManageConnection for RedisManager {
    type Connection = RedisConn;
    type Error = RedisError;

    async fn connect(&self) -> Result<RedisConn, RedisError> {
        let conn = self.inner.connect().await?;
        let health = Health {
            epoch: self.epoch,
            last_ok_ms: AtomicU64::new(0),
            broken: AtomicBool::new(false),
        };
        Ok(RedisConn {
            conn,
            health: Arc::new(health),
        })
    }

    async fn is_valid(&self, conn: &mut RedisConn) -> Result<(), RedisError> {
        if conn.health.recently_ok() {
            return Ok(());
        }
        let result = self.inner.is_valid(&mut conn.conn).await;
        conn.health.record(&result);
        result
    }

    fn has_broken(&self, conn: &mut RedisConn) -> bool {
        conn.health.broken.load(Ordering::Relaxed)
    }
}

impl redis::aio::ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.req_packed_command(cmd).await;
            self.health.record(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.req_packed_commands(cmd, offset, count).await;
            self.health.record(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_trusted_only_briefly_after_a_success_and_never_after_an_io_error() {
        let health = Health {
            epoch: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
            broken: AtomicBool::new(false),
        };
        assert!(!health.recently_ok(), "a new connection is checked");
        health.record::<()>(&Ok(()));
        assert!(health.recently_ok());
        health.record::<()>(&Err(RedisError::from((
            redis::ErrorKind::Client,
            "script failed",
        ))));
        assert!(
            health.recently_ok(),
            "a command error does not condemn the connection"
        );
        health.record::<()>(&Err(RedisError::from(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        ))));
        assert!(!health.recently_ok());
        assert!(health.broken.load(Ordering::Relaxed));
    }
}
