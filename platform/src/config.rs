//! Typed configuration, read from defaults, an optional TOML file and the environment, and
//! validated before anything starts.
//!
//! Every service reads the same layout: `TICKETING_SERVER__GRPC_ADDR=127.0.0.1:50051` sets
//! `server.grpc_addr` (prefix `TICKETING_`, `__` between levels). `TICKETING_CONFIG_FILE` names an
//! optional TOML file read before the environment, so the environment wins.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The environment variable prefix shared by every service.
pub const ENV_PREFIX: &str = "TICKETING_";

/// A configuration that could not be loaded or is not valid. The message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration setting `{key}` is invalid: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Loads a service's configuration: `defaults`, then the file named by `TICKETING_CONFIG_FILE`,
/// then `TICKETING_*` variables, then [`Validate::validate`].
pub fn load<T>(defaults: T) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Validate,
{
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Ok(path) = std::env::var(format!("{ENV_PREFIX}CONFIG_FILE")) {
        figment = figment.merge(Toml::file_exact(path));
    }
    let config: T = figment
        .merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config_file"]))
        .extract()
        .map_err(Box::new)?;
    config.validate()?;
    Ok(config)
}

/// Checks that go beyond types: ranges, formats, combinations.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// A service's configuration struct: the sections every service has, written once here so they
/// stay alike (`server`: where it listens; `discovery`: how it is found and finds the others,
/// `TICKETING_DISCOVERY__MODE` as for the gateway; `database`; `messaging`: the broker its
/// outbox and consumer use; `log`), then the service's own fields.
#[macro_export]
macro_rules! service_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, ::serde::Serialize, ::serde::Deserialize)]
        pub struct $name {
            pub server: $crate::config::ServerConfig,
            #[serde(default)]
            pub discovery: $crate::discovery::DiscoveryConfig,
            pub database: $crate::config::DatabaseConfig,
            pub messaging: $crate::messaging::MessagingConfig,
            pub log: $crate::config::LogConfig,
            $($(#[$field_meta])* pub $field: $ty),*
        }

        impl $name {
            /// The sections every service has.
            pub fn sections(&self) -> $crate::config::Sections<'_> {
                $crate::config::Sections {
                    server: &self.server,
                    discovery: &self.discovery,
                    database: &self.database,
                    messaging: &self.messaging,
                }
            }
        }
    };
}

/// The sections every service's configuration has (see [`service_config!`]).
pub struct Sections<'a> {
    pub server: &'a ServerConfig,
    pub discovery: &'a crate::discovery::DiscoveryConfig,
    pub database: &'a DatabaseConfig,
    pub messaging: &'a crate::messaging::MessagingConfig,
}

impl Sections<'_> {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.discovery.validate()?;
        self.database.validate("database")?;
        self.messaging.validate("messaging")
    }
}

/// Where a service listens and how it stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerConfig {
    /// gRPC (health, reflection and the service itself).
    pub grpc_addr: SocketAddr,
    /// Plain HTTP: `/healthz`, `/readyz`, `/metrics`.
    pub admin_addr: SocketAddr,
    /// How long in-flight calls may take to finish after SIGTERM.
    #[serde(with = "duration_secs")]
    pub shutdown_grace: Duration,
    /// How often hard dependencies are probed for health.
    #[serde(with = "duration_secs")]
    pub health_interval: Duration,
    /// Calls served at once; more are refused at once with RESOURCE_EXHAUSTED (health and
    /// reflection excepted) rather than queued without bound.
    pub concurrency_limit: usize,
}

impl ServerConfig {
    /// On loopback, at the ports `ports.txt` gives `name` (a service's default).
    pub fn local(name: &str) -> Self {
        let ports = crate::ports::local(name);
        Self::with_ports(ports.grpc, ports.admin)
    }

    pub fn with_ports(grpc_port: u16, admin_port: u16) -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            shutdown_grace: Duration::from_secs(20),
            health_interval: Duration::from_secs(2),
            concurrency_limit: 1024,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency_limit == 0 {
            return Err(ConfigError::invalid(
                "server.concurrency_limit",
                "must be at least 1",
            ));
        }
        if self.health_interval.is_zero() {
            return Err(ConfigError::invalid(
                "server.health_interval",
                "must be above zero",
            ));
        }
        Ok(())
    }
}

/// A PostgreSQL database.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseConfig {
    /// `postgres://user[:password]@host:port/database`. Kept out of logs.
    #[serde(serialize_with = "serialize_secret")]
    pub url: SecretString,
    /// Connections kept open; PostgreSQL throughput peaks at a few dozen.
    pub pool_size: u32,
    #[serde(with = "duration_secs")]
    pub connect_timeout: Duration,
    /// Create the database at start when it is missing (development and tests).
    pub create_if_missing: bool,
}

impl DatabaseConfig {
    /// The database `name` on the local PostgreSQL, as `./dev` runs it (a service's default).
    pub fn local(name: &str) -> Self {
        Self::new(format!("postgres://postgres@127.0.0.1:5432/{name}"))
    }

    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: SecretString::from(url.into()),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            create_if_missing: false,
        }
    }

    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let url = self.url.expose_secret();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::invalid(
                format!("{key}.url"),
                "must be a postgres:// URL",
            ));
        }
        if self.pool_size == 0 || self.pool_size > 200 {
            return Err(ConfigError::invalid(
                format!("{key}.pool_size"),
                "must be 1 to 200",
            ));
        }
        Ok(())
    }
}

/// A Redis server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    #[serde(serialize_with = "serialize_secret")]
    pub url: SecretString,
    pub pool_size: u32,
    /// Prepended to every key, so several deployments (or tests) share one server.
    pub key_prefix: String,
    #[serde(with = "duration_secs")]
    pub connect_timeout: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>, key_prefix: impl Into<String>) -> Self {
        Self {
            url: SecretString::from(url.into()),
            pool_size: 16,
            key_prefix: key_prefix.into(),
            connect_timeout: Duration::from_secs(3),
        }
    }

    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let url = self.url.expose_secret();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError::invalid(
                format!("{key}.url"),
                "must be a redis:// URL",
            ));
        }
        if self.pool_size == 0 {
            return Err(ConfigError::invalid(
                format!("{key}.pool_size"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info,svc_identity=debug`. `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The peers this service calls and how: an address per name (static or DNS names; unused under
/// Consul, which finds the instances), the default deadline, retries and the credential it calls
/// with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeersConfig {
    /// Service name (`identity`, `catalog`, ...) to gRPC URL (`http://127.0.0.1:50051`).
    pub addresses: BTreeMap<String, String>,
    /// Deadline for a call to a peer when the incoming call carries none.
    #[serde(with = "duration_secs")]
    pub default_timeout: Duration,
    /// Retries of idempotent calls on UNAVAILABLE (off under Linkerd, which retries).
    #[serde(default)]
    pub retry: crate::retry::RetryConfig,
    /// Who this service is when it calls the others: its client id and the secret it gets its
    /// service tokens with (`TICKETING_PEERS__CREDENTIALS__CLIENT_SECRET`).
    #[serde(default)]
    pub credentials: crate::service_auth::ServiceCredentials,
}

impl PeersConfig {
    /// `client_id` calling `peers` at their local addresses (`ports.txt`), its secret still to
    /// be set (a service's default).
    pub fn local(client_id: &str, peers: &[&str], default_timeout: Duration) -> Self {
        Self {
            addresses: peers
                .iter()
                .map(|peer| (peer.to_string(), crate::ports::local_url(peer)))
                .collect(),
            default_timeout,
            retry: Default::default(),
            credentials: crate::service_auth::ServiceCredentials {
                client_id: client_id.into(),
                client_secret: None,
            },
        }
    }

    /// The client secret is set: `why` says what this service calls with it.
    pub fn require_secret(&self, why: &str) -> Result<(), ConfigError> {
        if self.credentials.client_secret.is_none() {
            return Err(ConfigError::invalid(
                "peers.credentials.client_secret",
                format!("is required: {why}"),
            ));
        }
        Ok(())
    }
    /// Every peer in `names` has an address, unless Consul finds them.
    pub fn require(
        &self,
        names: &[&str],
        discovery: &crate::discovery::DiscoveryConfig,
        why: &str,
    ) -> Result<(), ConfigError> {
        if discovery.mode == crate::discovery::DiscoveryMode::Consul {
            return Ok(());
        }
        for name in names {
            if !self.addresses.contains_key(*name) {
                return Err(ConfigError::invalid(format!("peers.addresses.{name}"), why));
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let retry = &self.retry;
        if !(1..=5).contains(&retry.max_attempts) {
            return Err(ConfigError::invalid("peers.retry.max_attempts", "must be 1 to 5"));
        }
        if !(0.0..=1.0).contains(&retry.budget_ratio) {
            return Err(ConfigError::invalid("peers.retry.budget_ratio", "must be 0 to 1"));
        }
        if retry.backoff > Duration::from_secs(5) {
            return Err(ConfigError::invalid("peers.retry.backoff", "must be at most 5 s"));
        }
        let id = &self.credentials.client_id;
        if !id.is_empty()
            && (id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return Err(ConfigError::invalid(
                "peers.credentials.client_id",
                "must be 1 to 64 lower-case letters, digits or dashes",
            ));
        }
        for (name, url) in &self.addresses {
            if url
                .parse::<http::Uri>()
                .map(|u| u.scheme().is_none())
                .unwrap_or(true)
            {
                return Err(ConfigError::invalid(
                    format!("peers.addresses.{name}"),
                    "must be a URL such as http://127.0.0.1:50051",
                ));
            }
        }
        Ok(())
    }
}

/// Secrets are serialised only to seed figment with defaults, never to logs.
pub fn serialize_secret<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

/// [`serialize_secret`] for optional secrets.
pub fn serialize_optional_secret<S: serde::Serializer>(
    secret: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => s.serialize_some(secret.expose_secret()),
        None => s.serialize_none(),
    }
}

/// Durations as whole seconds (or a float) in files and the environment: `SHUTDOWN_GRACE=20`.
pub mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// Validation shared by every service's config: the server part.
pub fn validate_server(server: &ServerConfig) -> Result<(), ConfigError> {
    server.validate()
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its large error type
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Sample {
        server: ServerConfig,
        database: DatabaseConfig,
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            self.server.validate()?;
            self.database.validate("database")
        }
    }

    fn sample() -> Sample {
        Sample {
            server: ServerConfig::with_ports(1, 2),
            database: DatabaseConfig::new("postgres://localhost/x"),
        }
    }

    #[test]
    fn environment_overrides_defaults_and_bad_values_name_the_setting() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TICKETING_SERVER__GRPC_ADDR", "127.0.0.1:7000");
            jail.set_env("TICKETING_SERVER__SHUTDOWN_GRACE", "3");
            let config = load(sample()).map_err(|e| e.to_string())?;
            assert_eq!(config.server.grpc_addr.port(), 7000);
            assert_eq!(config.server.shutdown_grace, Duration::from_secs(3));

            jail.set_env("TICKETING_DATABASE__URL", "mysql://nope");
            let err = load(sample()).expect_err("a mysql URL is refused").to_string();
            assert!(err.contains("database.url"), "{err}");

            jail.set_env("TICKETING_DATABASE__URL", "postgres://ok/x");
            jail.set_env("TICKETING_SERVER__GRPC_ADDR", "not an address");
            let err = load(sample()).expect_err("a bad address is refused").to_string();
            assert!(err.contains("grpc_addr") || err.contains("GRPC_ADDR"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_config_file_is_read_and_the_environment_wins_over_it() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "svc.toml",
                "[server]\nconcurrency_limit = 7\ngrpc_addr = \"127.0.0.1:9\"\n",
            )?;
            jail.set_env("TICKETING_CONFIG_FILE", "svc.toml");
            jail.set_env("TICKETING_SERVER__GRPC_ADDR", "127.0.0.1:10");
            let config = load(sample()).map_err(|e| e.to_string())?;
            assert_eq!(config.server.concurrency_limit, 7);
            assert_eq!(config.server.grpc_addr.port(), 10);
            Ok(())
        });
    }
}
