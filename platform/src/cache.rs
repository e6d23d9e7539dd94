//! Redis through bb8-redis, with a key prefix so deployments and tests can share a server.

use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use secrecy::ExposeSecret;

use crate::config::RedisConfig;

pub type RedisPool = bb8::Pool<RedisConnectionManager>;

/// A pool and the prefix every key of this service starts with.
#[derive(Clone)]
pub struct Cache {
    pub pool: RedisPool,
    prefix: String,
}

impl Cache {
    /// Connects lazily: a Redis outage at start makes the service NOT_SERVING, not absent.
    pub fn connect(config: &RedisConfig) -> anyhow::Result<Self> {
        let manager = RedisConnectionManager::new(config.url.expose_secret().to_string())?;
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
