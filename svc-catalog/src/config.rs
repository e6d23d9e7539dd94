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
            database: DatabaseConfig::new("postgres://postgres@127.0.0.1:5432/catalog"),
            messaging: MessagingConfig::default(),
            log: LogConfig::default(),
            peers: PeersConfig {
                addresses: [
                    (
                        "identity".to_string(),
                        ticketing_platform::ports::local_url("identity"),
                    ),
                    (
                        "inventory".to_string(),
                        ticketing_platform::ports::local_url("inventory"),
                    ),
                ]
                .into(),
                default_timeout: Duration::from_secs(10),
                retry: Default::default(),
                credentials: ticketing_platform::service_auth::ServiceCredentials {
                    client_id: "catalog".into(),
                    client_secret: None,
                },
            },
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.peers.credentials.client_secret.is_none() {
            return Err(ConfigError::invalid(
                "peers.credentials.client_secret",
                "is required: catalog configures events in inventory with it",
            ));
        }
        ticketing_platform::config::validate_server(&self.server)?;
        self.discovery.validate()?;
        self.database.validate("database")?;
        self.messaging.validate("messaging")?;
        self.peers.validate()?;
        self.peers
            .require(&["identity", "inventory"], &self.discovery, "catalog needs it")?;
        Ok(())
    }
}
