//! svc-notify's configuration (see `ticketing_platform::config` for how it is read).

use std::time::Duration;

use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use ticketing_platform::{
    config::{
        ConfigError, DatabaseConfig, LogConfig, PeersConfig, ServerConfig, Validate, duration_secs,
        serialize_secret,
    },
    discovery::DiscoveryConfig,
    messaging::MessagingConfig,
};

ticketing_platform::service_config! {
    pub struct Config {
        pub peers: PeersConfig,
        pub mail: MailConfig,
        pub reminders: RemindersConfig,
        pub webhooks: WebhooksConfig,
        /// Where the web portal is, for the links in messages.
        pub portal_url: String,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MailConfig {
    /// `smtp://host:port` (plain, for a server on loopback), `smtp://host:587?tls=required`
    /// (STARTTLS) or `smtps://host:465` (implicit TLS); credentials as
    /// `smtps://user:password@host`. Kept out of logs.
    #[serde(serialize_with = "serialize_secret")]
    pub smtp_url: SecretString,
    /// The sender: `Ticketing <tickets@example.org>`.
    pub from: String,
    /// The right-hand side of Message-IDs.
    pub message_id_domain: String,
    /// One SMTP conversation may take this long.
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    /// How often the sender looks for due mail when nothing wakes it.
    #[serde(with = "duration_secs")]
    pub poll_interval: Duration,
    /// A sender that took a mail has this long to send it before another may.
    #[serde(with = "duration_secs")]
    pub lease: Duration,
    /// Mails taken per round, and sent at once.
    pub batch: i64,
    pub concurrency: usize,
    /// A mail still failing after this many attempts (about a day with the back-off) fails
    /// for good.
    pub max_attempts: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemindersConfig {
    /// How long before an event's start its holders are reminded, in seconds
    /// (`TICKETING_REMINDERS__OFFSETS=[86400,3600]`).
    #[serde(with = "offsets_secs")]
    pub offsets: Vec<Duration>,
    /// How often due reminders are looked for.
    #[serde(with = "duration_secs")]
    pub interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhooksConfig {
    /// Endpoints may be on loopback, private and link-local addresses: for tests and closed
    /// networks only, as anyone allowed to register an endpoint could then reach inside.
    pub allow_private_targets: bool,
    /// One delivery may take this long, connecting included.
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    /// How often the sender looks for due deliveries when nothing wakes it.
    #[serde(with = "duration_secs")]
    pub poll_interval: Duration,
    /// A sender that took a delivery has this long to send it before another may.
    #[serde(with = "duration_secs")]
    pub lease: Duration,
    /// Deliveries in flight at once, in all, and per endpoint (across replicas).
    pub concurrency: usize,
    pub max_in_flight_per_endpoint: i64,
    /// The waits after each failed attempt, in seconds; after the last, a delivery fails.
    #[serde(with = "offsets_secs")]
    pub retry_schedule: Vec<Duration>,
    /// How long settled deliveries (and their attempts) stay in the log.
    #[serde(with = "duration_secs")]
    pub retention: Duration,
}

mod offsets_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(offsets: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(offsets.iter().map(Duration::as_secs))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Ok(Vec::<u64>::deserialize(d)?
            .into_iter()
            .map(Duration::from_secs)
            .collect())
    }
}

impl MailConfig {
    pub fn sender(&self) -> Result<Mailbox, ConfigError> {
        self.from
            .parse()
            .map_err(|e| ConfigError::invalid("mail.from", format!("is not a mailbox: {e}")))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::local("notify"),
            discovery: DiscoveryConfig::default(),
            database: DatabaseConfig::local("notify"),
            messaging: MessagingConfig::default(),
            log: LogConfig::default(),
            peers: PeersConfig::local("notify", &["identity"], Duration::from_secs(5)),
            mail: MailConfig {
                smtp_url: SecretString::from("smtp://127.0.0.1:2525"),
                from: "Ticketing <tickets@ticketing.localhost>".into(),
                message_id_domain: "ticketing.localhost".into(),
                timeout: Duration::from_secs(20),
                poll_interval: Duration::from_secs(1),
                lease: Duration::from_secs(120),
                batch: 50,
                concurrency: 8,
                max_attempts: 12,
            },
            reminders: RemindersConfig {
                offsets: vec![Duration::from_secs(86_400), Duration::from_secs(3_600)],
                interval: Duration::from_secs(30),
            },
            webhooks: WebhooksConfig {
                allow_private_targets: false,
                timeout: Duration::from_secs(10),
                poll_interval: Duration::from_secs(1),
                lease: Duration::from_secs(60),
                concurrency: 32,
                max_in_flight_per_endpoint: 4,
                retry_schedule: crate::webhooks::RETRY_SCHEDULE.to_vec(),
                retention: Duration::from_secs(30 * 86_400),
            },
            portal_url: "http://127.0.0.1:8080".into(),
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
            "notify verifies tokens against identity",
        )?;
        self.mail.sender()?;
        let url = self.mail.smtp_url.expose_secret();
        if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
            return Err(ConfigError::invalid(
                "mail.smtp_url",
                "must start with smtp:// or smtps://",
            ));
        }
        if self.mail.message_id_domain.is_empty()
            || self.mail.message_id_domain.contains(['<', '>', '@', ' '])
        {
            return Err(ConfigError::invalid(
                "mail.message_id_domain",
                "must be a domain name",
            ));
        }
        if self.mail.batch < 1 || self.mail.concurrency < 1 || self.mail.max_attempts < 1 {
            return Err(ConfigError::invalid(
                "mail",
                "batch, concurrency and max_attempts must be at least 1",
            ));
        }
        if self.mail.poll_interval.is_zero() || self.mail.lease <= self.mail.timeout {
            return Err(ConfigError::invalid(
                "mail.lease",
                "must be longer than mail.timeout, and poll_interval above zero",
            ));
        }
        if self.reminders.interval.is_zero()
            || self
                .reminders
                .offsets
                .iter()
                .any(|o| o.is_zero() || o.as_secs() > i32::MAX as u64)
        {
            return Err(ConfigError::invalid(
                "reminders",
                "the interval and every offset must be above zero (offsets at most 68 years)",
            ));
        }
        let hooks = &self.webhooks;
        if hooks.concurrency < 1
            || hooks.max_in_flight_per_endpoint < 1
            || hooks.timeout.is_zero()
            || hooks.poll_interval.is_zero()
            || hooks.lease <= hooks.timeout
            || hooks.retry_schedule.len() > 50
            || hooks.retention < Duration::from_secs(3600)
        {
            return Err(ConfigError::invalid(
                "webhooks",
                "concurrency, max_in_flight_per_endpoint, timeout and poll_interval must be above zero, \
                 the lease longer than the timeout, the retry schedule at most 50 waits, and the \
                 retention at least an hour",
            ));
        }
        if !(self.portal_url.starts_with("http://") || self.portal_url.starts_with("https://")) {
            return Err(ConfigError::invalid("portal_url", "must be an http(s) URL"));
        }
        Ok(())
    }
}
