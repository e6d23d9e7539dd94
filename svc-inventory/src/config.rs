//! svc-inventory's configuration (see `ticketing_platform::config` for how it is read).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ticketing_platform::{
    config::{
        ConfigError, DatabaseConfig, LogConfig, PeersConfig, RedisConfig, ServerConfig, Validate,
        duration_secs,
    },
    discovery::DiscoveryConfig,
    messaging::MessagingConfig,
};

ticketing_platform::service_config! {
    pub struct Config {
        pub redis: RedisConfig,
        pub peers: PeersConfig,
        pub holds: HoldConfig,
        pub waitlist: WaitlistConfig,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitlistConfig {
    /// How long places offered to the head of a waiting list are held for them before they
    /// pass to the next in line.
    #[serde(with = "duration_secs")]
    pub offer_ttl: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldConfig {
    /// A hold's lifetime when the request names none.
    #[serde(with = "duration_secs")]
    pub default_ttl: Duration,
    #[serde(with = "duration_secs")]
    pub min_ttl: Duration,
    #[serde(with = "duration_secs")]
    pub max_ttl: Duration,
    /// How often expired holds are released without anyone asking, and half-done commits are
    /// settled (those no more often than once a second).
    #[serde(with = "duration_secs")]
    pub sweep_interval: Duration,
    /// How often a watcher hears "still here" when nothing changes.
    #[serde(with = "duration_secs")]
    pub heartbeat_interval: Duration,
    /// A hold still "committing" this long after its commit began was left by a process that
    /// died mid-commit: the sweeper finishes it from the ledger, or gives it back to its owner.
    #[serde(with = "duration_secs", default = "default_commit_recovery_after")]
    pub commit_recovery_after: Duration,
    /// How often what Redis shows sold is compared with the ledger (from start-up on); a
    /// difference found twice in a row is repaired from the ledger.
    #[serde(with = "duration_secs", default = "default_reconcile_interval")]
    pub reconcile_interval: Duration,
}

fn default_commit_recovery_after() -> Duration {
    Duration::from_secs(30)
}

fn default_reconcile_interval() -> Duration {
    Duration::from_secs(15)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::local("inventory"),
            discovery: DiscoveryConfig::default(),
            database: DatabaseConfig::local("inventory"),
            redis: RedisConfig::new("redis://127.0.0.1:6379", "inventory"),
            messaging: MessagingConfig::default(),
            log: LogConfig::default(),
            peers: PeersConfig::local("inventory", &["identity"], Duration::from_secs(5)),
            holds: HoldConfig {
                commit_recovery_after: default_commit_recovery_after(),
                reconcile_interval: default_reconcile_interval(),
                default_ttl: Duration::from_secs(300),
                min_ttl: Duration::from_secs(30),
                max_ttl: Duration::from_secs(1800),
                sweep_interval: Duration::from_secs(1),
                heartbeat_interval: Duration::from_secs(15),
            },
            waitlist: WaitlistConfig {
                offer_ttl: Duration::from_secs(1800),
            },
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.sections().validate()?;
        self.redis.validate("redis")?;
        self.peers.validate()?;
        self.peers.require(
            &["identity"],
            &self.discovery,
            "inventory verifies tokens against identity",
        )?;
        let h = &self.holds;
        if h.min_ttl.is_zero() || h.min_ttl > h.default_ttl || h.default_ttl > h.max_ttl {
            return Err(ConfigError::invalid(
                "holds",
                "need 0 < min_ttl <= default_ttl <= max_ttl",
            ));
        }
        if h.sweep_interval.is_zero() || h.heartbeat_interval.is_zero() {
            return Err(ConfigError::invalid(
                "holds",
                "sweep_interval and heartbeat_interval must be above zero",
            ));
        }
        let offer_ttl = self.waitlist.offer_ttl;
        if offer_ttl < Duration::from_secs(1) || offer_ttl > Duration::from_secs(86_400) {
            return Err(ConfigError::invalid("waitlist.offer_ttl", "must be 1 s to 24 h"));
        }
        Ok(())
    }
}
