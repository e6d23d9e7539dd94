//! svc-payments' configuration (see `ticketing_platform::config` for how it is read).

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
        pub test_provider: TestProviderConfig,
        /// A charge still "processing" this long after it started (the process died mid-charge)
        /// is settled by asking the processor, or voided there if it never arrived.
        #[serde(with = "duration_secs")]
        pub stale_after: Duration,
        #[serde(with = "duration_secs")]
        pub sweep_interval: Duration,
        /// A refund the processor lists is taken for one made there (not by payments) once it is
        /// this old and payments has no record of it: payments' own refunds commit well within it.
        #[serde(with = "duration_secs", default = "default_processor_refund_grace")]
        pub processor_refund_grace: Duration,
    }
}

fn default_processor_refund_grace() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestProviderConfig {
    /// How long the "slow response" test card takes.
    #[serde(with = "duration_secs")]
    pub slow_delay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::local("payments"),
            discovery: DiscoveryConfig::default(),
            database: DatabaseConfig::local("payments"),
            messaging: MessagingConfig::default(),
            log: LogConfig::default(),
            peers: PeersConfig::local("payments", &["identity"], Duration::from_secs(5)),
            test_provider: TestProviderConfig {
                slow_delay: Duration::from_secs(3),
            },
            stale_after: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(5),
            processor_refund_grace: default_processor_refund_grace(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.sections().validate()?;
        self.peers.validate()?;
        self.peers.require(
            &["identity"],
            &self.discovery,
            "payments verifies tokens against identity",
        )?;
        if self.stale_after <= self.test_provider.slow_delay {
            return Err(ConfigError::invalid(
                "stale_after",
                "must be longer than the slowest charge",
            ));
        }
        if self.sweep_interval.is_zero() {
            return Err(ConfigError::invalid("sweep_interval", "must be above zero"));
        }
        Ok(())
    }
}
