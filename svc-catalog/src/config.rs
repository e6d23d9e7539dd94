//! svc-catalog's configuration (see `ticketing_platform::config` for how it is read).

use std::time::Duration;

use ticketing_platform::{
    config::{ConfigError, DatabaseConfig, LogConfig, PeersConfig, ServerConfig, Validate},
    discovery::DiscoveryConfig,
    messaging::MessagingConfig,
};

ticketing_platform::service_config! {
    pub struct Config {
        pub peers: PeersConfig,
    }
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
        self.sections().validate()?;
        self.peers.validate()?;
        self.peers
            .require(&["identity", "inventory"], &self.discovery, "catalog needs it")?;
        Ok(())
    }
}
