//! svc-catalog's configuration (see `ticketing_platform::config` for how it is read).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ticketing_platform::{
    config::{ConfigError, DatabaseConfig, LogConfig, PeersConfig, ServerConfig, Validate},
    discovery::DiscoveryConfig,
    messaging::MessagingConfig,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub server: ServerConfig,
    /// How this service is found and finds the others: static, dns or consul
    /// (`TICKETING_DISCOVERY__MODE`, the same setting as the gateway's).
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    pub database: DatabaseConfig,
    /// Lifecycle events (`event.published`, ...) leave through the outbox to this broker.
    pub messaging: MessagingConfig,
    pub log: LogConfig,
    pub peers: PeersConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::local("catalog"),
            discovery: DiscoveryConfig::default(),
            database: DatabaseConfig::local("catalog"),
            messaging: MessagingConfig::default(),
            log: LogConfig::default(),
            peers: PeersConfig::local("catalog", &["identity", "inventory"], Duration::from_secs(10)),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.peers
            .require_secret("catalog configures events in inventory with it")?;
        ticketing_platform::config::validate_service(
            &self.server,
            &self.discovery,
            &self.database,
            &self.messaging,
        )?;
        self.peers.validate()?;
        self.peers
            .require(&["identity", "inventory"], &self.discovery, "catalog needs it")?;
        Ok(())
    }
}
