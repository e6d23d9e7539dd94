//! The gateway's configuration (see `ticketing_platform::config` for how it is read).

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};
use ticketing_platform::config::{ConfigError, LogConfig, PeersConfig, Validate, duration_secs};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Where REST/JSON, SSE, `/openapi.json`, `/docs`, health and `/metrics` are served.
    pub listen: SocketAddr,
    pub log: LogConfig,
    /// The deployed services, by the name in their proto package; routes to a service without
    /// an address answer 503 (reports, until it is deployed).
    pub peers: PeersConfig,
    pub limits: Limits,
    pub auth: AuthConfig,
    /// How the gateway finds the services: static, dns or consul.
    #[serde(default)]
    pub discovery: ticketing_platform::discovery::DiscoveryConfig,
    pub rate_limit: RateLimitConfig,
    pub breaker: BreakerConfig,
    /// Origins allowed to call from a browser (CORS); empty allows none.
    pub cors_allowed_origins: Vec<String>,
    /// The proxies in front of the gateway (load balancers, ingress), as networks
    /// (`["10.0.0.0/8"]`). When a request comes from one, the client is the right-most address
    /// in `X-Forwarded-For` that is not one of them; otherwise the header is ignored. The client
    /// address counts against the per-address rate limit and is passed to the services (login
    /// lockout) in a way only the gateway can.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// Deadline of a unary call upstream unless the client asks for less (`Grpc-Timeout`); past
    /// it the client gets 504.
    #[serde(with = "duration_secs")]
    pub upstream_timeout: Duration,
    /// A server-sent event stream sends a comment this often when nothing else happens.
    #[serde(with = "duration_secs")]
    pub sse_heartbeat: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthConfig {
    /// How long a verified API key is trusted without asking identity again; a revoked key
    /// stops working within this time.
    #[serde(with = "duration_secs")]
    pub api_key_cache_ttl: Duration,
}

/// Token buckets: a client may make `burst` requests at once and `per_second` sustained. Every
/// request counts against its client IP; requests with a valid API key also count against the
/// key (partners behind one address share the IP budget, so size it for them). 0 turns a limit
/// off. Over the limit: 429 with `Retry-After`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateLimitConfig {
    pub per_ip_per_second: u32,
    pub per_ip_burst: u32,
    pub per_api_key_per_second: u32,
    pub per_api_key_burst: u32,
}

/// A circuit breaker per upstream: after `consecutive_failures` calls in a row that could not
/// reach the service (a transport error) or timed out, calls to it answer 503 at once for
/// `cool_down`; then calls may try again, and the first success closes the circuit. A status
/// the service sent itself never counts, whatever its code (a 400, or its own 503 because one of
/// its dependencies is down): it is there, and its other routes may work.
///
/// Beside it, each upstream's `grpc.health.v1` check is probed every `probe_interval` (every
/// `probe_down_interval` while it is down), each probe given `probe_timeout`. A call that
/// cannot reach the upstream at all, or `probe_failures` failed probes in a row (a frozen
/// process, or one reporting NOT_SERVING), mark it down: its routes answer 503 with
/// `Retry-After` at once, until a probe finds it SERVING again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BreakerConfig {
    pub consecutive_failures: u32,
    #[serde(with = "duration_secs")]
    pub cool_down: Duration,
    #[serde(with = "duration_secs", default = "default_probe_interval")]
    pub probe_interval: Duration,
    #[serde(with = "duration_secs", default = "default_probe_down_interval")]
    pub probe_down_interval: Duration,
    #[serde(with = "duration_secs", default = "default_probe_timeout")]
    pub probe_timeout: Duration,
    #[serde(default = "default_probe_failures")]
    pub probe_failures: u32,
}

fn default_probe_interval() -> Duration {
    Duration::from_millis(500)
}

fn default_probe_down_interval() -> Duration {
    Duration::from_millis(200)
}

fn default_probe_timeout() -> Duration {
    Duration::from_millis(800)
}

fn default_probe_failures() -> u32 {
    2
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], ticketing_platform::ports::local("gateway").grpc)),
            log: LogConfig::default(),
            peers: PeersConfig::local(
                "gateway",
                &["identity", "catalog", "inventory", "orders", "payments", "notify"],
                Duration::from_secs(30),
            ),
            limits: Limits {
                max_body_bytes: 1024 * 1024,
                upstream_timeout: Duration::from_secs(15),
                sse_heartbeat: Duration::from_secs(15),
            },
            auth: AuthConfig {
                api_key_cache_ttl: Duration::from_secs(5),
            },
            discovery: Default::default(),
            rate_limit: RateLimitConfig {
                per_ip_per_second: 100,
                per_ip_burst: 200,
                per_api_key_per_second: 50,
                per_api_key_burst: 100,
            },
            breaker: BreakerConfig {
                consecutive_failures: 5,
                cool_down: Duration::from_secs(5),
                probe_interval: default_probe_interval(),
                probe_down_interval: default_probe_down_interval(),
                probe_timeout: default_probe_timeout(),
                probe_failures: default_probe_failures(),
            },
            cors_allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.peers
            .require_secret("the gateway checks API keys and vouches for client addresses with it")?;
        self.peers.validate()?;
        if self.limits.max_body_bytes == 0 || self.limits.max_body_bytes > 64 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "limits.max_body_bytes",
                "must be 1 B to 64 MiB",
            ));
        }
        if self.limits.upstream_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "limits.upstream_timeout",
                "must be positive",
            ));
        }
        if self.limits.sse_heartbeat < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "limits.sse_heartbeat",
                "must be at least 0.1 s",
            ));
        }
        if self.auth.api_key_cache_ttl > Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "auth.api_key_cache_ttl",
                "at most 60 s, so revocation bites quickly",
            ));
        }
        let limits = &self.rate_limit;
        for (field, rate, burst) in [
            (
                "rate_limit.per_ip_burst",
                limits.per_ip_per_second,
                limits.per_ip_burst,
            ),
            (
                "rate_limit.per_api_key_burst",
                limits.per_api_key_per_second,
                limits.per_api_key_burst,
            ),
        ] {
            if rate > 0 && burst < rate {
                return Err(ConfigError::invalid(
                    field,
                    "must be at least the rate per second",
                ));
            }
        }
        if self.breaker.consecutive_failures == 0 {
            return Err(ConfigError::invalid(
                "breaker.consecutive_failures",
                "must be at least 1",
            ));
        }
        if self.breaker.cool_down < Duration::from_millis(100)
            || self.breaker.cool_down > Duration::from_secs(300)
        {
            return Err(ConfigError::invalid(
                "breaker.cool_down",
                "must be 0.1 s to 300 s",
            ));
        }
        for (field, value) in [
            ("breaker.probe_interval", self.breaker.probe_interval),
            ("breaker.probe_down_interval", self.breaker.probe_down_interval),
            ("breaker.probe_timeout", self.breaker.probe_timeout),
        ] {
            if value < Duration::from_millis(50) || value > Duration::from_secs(60) {
                return Err(ConfigError::invalid(field, "must be 0.05 s to 60 s"));
            }
        }
        if self.breaker.probe_failures == 0 {
            return Err(ConfigError::invalid(
                "breaker.probe_failures",
                "must be at least 1",
            ));
        }
        for origin in &self.cors_allowed_origins {
            if http::HeaderValue::from_str(origin).is_err() || !origin.starts_with("http") {
                return Err(ConfigError::invalid(
                    "cors_allowed_origins",
                    format!("{origin:?} is not an origin like https://example.com"),
                ));
            }
        }
        Ok(())
    }
}
