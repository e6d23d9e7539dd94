//! svc-orders' configuration (see `ticketing_platform::config` for how it is read).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ticketing_platform::{
    config::{ConfigError, DatabaseConfig, LogConfig, PeersConfig, ServerConfig, Validate, duration_secs},
    discovery::DiscoveryConfig,
    messaging::MessagingConfig,
};

ticketing_platform::service_config! {
    pub struct Config {
        pub peers: PeersConfig,
        pub checkout: CheckoutConfig,
    }
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
    /// How often unpaid orders past their deadline are expired, and checkouts whose charge lease
    /// lapsed (their PayOrder died) are resumed.
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
            database: DatabaseConfig::local("orders"),
            messaging: MessagingConfig::default(),
            log: LogConfig::default(),
            peers: PeersConfig::local(
                "orders",
                &["identity", "catalog", "inventory", "payments"],
                Duration::from_secs(10),
            ),
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
        self.peers
            .require_secret("orders calls internal RPCs of catalog, inventory and payments with it")?;
        self.sections().validate()?;
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
