//! svc-orders' configuration (see `ticketing_platform::config` for how it is read).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ticketing_platform::{
    config::{ConfigError, DatabaseConfig, LogConfig, PeersConfig, ServerConfig, Validate, duration_secs},
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
    pub messaging: MessagingConfig,
    pub log: LogConfig,
    pub peers: PeersConfig,
    pub checkout: CheckoutConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckoutConfig {
    /// Longest time to pay; an order's deadline is also never after its hold's expiry.
    #[serde(with = "duration_secs")]
    pub payment_window: Duration,
    /// How long one PayOrder owns an order's charge without renewing it (it renews every third
    /// of this while it works): how soon a checkout whose process died is resumed.
    #[serde(with = "duration_secs")]
    pub charge_lease: Duration,
    /// How often unpaid orders past their deadline are expired.
    #[serde(with = "duration_secs")]
    pub sweep_interval: Duration,
    /// Buyers may refund their own orders until this long before the event starts.
    #[serde(with = "duration_secs")]
    pub buyer_refund_cutoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::local("orders"),
            discovery: DiscoveryConfig::default(),
            database: DatabaseConfig::new("postgres://postgres@127.0.0.1:5432/orders"),
            messaging: MessagingConfig::default(),
            log: LogConfig::default(),
            peers: PeersConfig {
                addresses: [
                    ("identity", ticketing_platform::ports::local_url("identity")),
                    ("catalog", ticketing_platform::ports::local_url("catalog")),
                    ("inventory", ticketing_platform::ports::local_url("inventory")),
                    ("payments", ticketing_platform::ports::local_url("payments")),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                default_timeout: Duration::from_secs(10),
                retry: Default::default(),
                credentials: ticketing_platform::service_auth::ServiceCredentials {
                    client_id: "orders".into(),
                    client_secret: None,
                },
            },
            checkout: CheckoutConfig {
                payment_window: Duration::from_secs(15 * 60),
                charge_lease: Duration::from_secs(6),
                sweep_interval: Duration::from_secs(1),
                buyer_refund_cutoff: Duration::from_secs(48 * 3600),
            },
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.peers.credentials.client_secret.is_none() {
            return Err(ConfigError::invalid(
                "peers.credentials.client_secret",
                "is required: orders calls internal RPCs of catalog, inventory and payments with it",
            ));
        }
        ticketing_platform::config::validate_server(&self.server)?;
        self.discovery.validate()?;
        self.database.validate("database")?;
        self.messaging.validate("messaging")?;
        self.peers.validate()?;
        self.peers.require(
            &["identity", "catalog", "inventory", "payments"],
            &self.discovery,
            "orders calls it",
        )?;
        let c = &self.checkout;
        if c.payment_window.is_zero() || c.charge_lease.is_zero() || c.sweep_interval.is_zero() {
            return Err(ConfigError::invalid(
                "checkout",
                "payment_window, charge_lease and sweep_interval must be above zero",
            ));
        }
        if c.charge_lease < std::time::Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "checkout.charge_lease",
                "must be at least 1 s: its holder renews it every third of it",
            ));
        }
        Ok(())
    }
}
