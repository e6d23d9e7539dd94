//! svc-identity's configuration (see `ticketing_platform::config` for how it is read).

use std::{collections::BTreeMap, time::Duration};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use ticketing_platform::{
    config::{
        ConfigError, DatabaseConfig, LogConfig, RedisConfig, ServerConfig, Validate, duration_secs,
        serialize_optional_secret, serialize_secret,
    },
    discovery::DiscoveryConfig,
    messaging::MessagingConfig,
};

use crate::{lockout::LoginConfig, password::PasswordParams};

ticketing_platform::service_config! {
    pub struct Config {
        pub redis: RedisConfig,
        pub tokens: TokenConfig,
        pub login: LoginConfig,
        pub password: PasswordParams,
        /// Makes sure this account exists and is an admin at start (first deployment).
        pub bootstrap_admin: Option<BootstrapAdmin>,
        /// The service clients that may get service tokens (`IssueServiceToken`): client id (the
        /// name the call graph knows it by: `orders`, `gateway`, `operator`, ...) to the SHA-256 of
        /// its secret in hex (`TICKETING_SERVICE_CLIENTS__ORDERS=<hex>`). Secrets are random, at
        /// least 128 bits, so a fast hash is enough; only the hashes are kept here.
        #[serde(default)]
        pub service_clients: BTreeMap<String, String>,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenConfig {
    #[serde(with = "duration_secs")]
    pub access_token_ttl: Duration,
    #[serde(with = "duration_secs")]
    pub refresh_token_ttl: Duration,
    /// Lifetime of the access token VerifyApiKey hands out; short, so revocation bites fast.
    #[serde(with = "duration_secs")]
    pub api_key_token_ttl: Duration,
    /// Lifetime of a service token (the client-credentials grant); clients renew at half of it.
    #[serde(with = "duration_secs", default = "default_service_token_ttl")]
    pub service_token_ttl: Duration,
    /// A signing key older than this is replaced at the next check.
    #[serde(with = "duration_secs")]
    pub key_rotation_interval: Duration,
    /// An Ed25519 PKCS#8 PEM key to sign with instead of generated, stored keys.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_optional_secret"
    )]
    pub signing_key_pem: Option<SecretString>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootstrapAdmin {
    pub email: String,
    #[serde(serialize_with = "serialize_secret")]
    pub password: SecretString,
}

fn default_service_token_ttl() -> Duration {
    Duration::from_secs(600)
}

/// A client secret's SHA-256 from its hex form, if it is one.
pub fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.trim().as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::local("identity"),
            discovery: DiscoveryConfig::default(),
            database: DatabaseConfig::local("identity"),
            redis: RedisConfig::new("redis://127.0.0.1:6379", "identity"),
            messaging: MessagingConfig::default(),
            log: LogConfig::default(),
            tokens: TokenConfig {
                access_token_ttl: Duration::from_secs(15 * 60),
                refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
                api_key_token_ttl: Duration::from_secs(5 * 60),
                service_token_ttl: default_service_token_ttl(),
                key_rotation_interval: Duration::from_secs(30 * 24 * 3600),
                signing_key_pem: None,
            },
            login: LoginConfig::default(),
            password: PasswordParams::default(),
            bootstrap_admin: None,
            service_clients: BTreeMap::new(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.sections().validate()?;
        self.redis.validate("redis")?;
        let t = &self.tokens;
        if t.access_token_ttl < Duration::from_secs(30) || t.access_token_ttl > Duration::from_secs(24 * 3600)
        {
            return Err(ConfigError::invalid(
                "tokens.access_token_ttl",
                "must be 30 s to 24 h",
            ));
        }
        if t.refresh_token_ttl <= t.access_token_ttl {
            return Err(ConfigError::invalid(
                "tokens.refresh_token_ttl",
                "must exceed the access token TTL",
            ));
        }
        if t.api_key_token_ttl < Duration::from_secs(10) || t.api_key_token_ttl > Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                "tokens.api_key_token_ttl",
                "must be 10 s to 1 h",
            ));
        }
        if t.key_rotation_interval < Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                "tokens.key_rotation_interval",
                "must be at least 1 h",
            ));
        }
        if t.service_token_ttl < Duration::from_secs(60) || t.service_token_ttl > Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                "tokens.service_token_ttl",
                "must be 60 s to 1 h",
            ));
        }
        for (client, hash) in &self.service_clients {
            if client.is_empty()
                || client.len() > 64
                || !client
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(ConfigError::invalid(
                    format!("service_clients.{client}"),
                    "client ids are 1 to 64 lower-case letters, digits or dashes",
                ));
            }
            if parse_sha256_hex(hash).is_none() {
                return Err(ConfigError::invalid(
                    format!("service_clients.{client}"),
                    "must be the SHA-256 of the client's secret, as 64 hex digits",
                ));
            }
        }
        let p = &self.password;
        if p.memory_kib < 8 * 1024 || p.iterations == 0 || p.parallelism == 0 {
            return Err(ConfigError::invalid(
                "password",
                "argon2 needs memory_kib >= 8192, iterations >= 1, parallelism >= 1",
            ));
        }
        let l = &self.login;
        if l.account_threshold == 0 || l.address_threshold == 0 || l.base_lockout_secs == 0 {
            return Err(ConfigError::invalid(
                "login",
                "thresholds and base_lockout_secs must be at least 1",
            ));
        }
        if l.account_global_threshold != 0 && l.account_global_threshold < l.account_threshold {
            return Err(ConfigError::invalid(
                "login",
                "account_global_threshold must be 0 (off) or at least account_threshold",
            ));
        }
        if let Some(admin) = &self.bootstrap_admin {
            crate::domain::normalize_email(&admin.email)
                .map_err(|reason| ConfigError::invalid("bootstrap_admin.email", reason))?;
        }
        Ok(())
    }
}
