//! How services find each other. `static`: addresses from config (a laptop). `dns`: the same
//! addresses are DNS names (Kubernetes Services), resolved per connection; Linkerd balances.
//! `consul`: each service registers with its local Consul agent (a native gRPC health check
//! against its `grpc.health.v1`), deregisters on graceful shutdown, and resolves peers with
//! blocking health queries (passing instances only) into a balanced channel, so instances that
//! appear, fail their check or leave are added and removed without restarting the caller.
//!
//! Registration speaks the agent API directly (`/v1/agent/service/register`), which rs-consul
//! lacks; resolution uses rs-consul's blocking `get_service_nodes`.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint, channel::Change};

use crate::config::{ConfigError, duration_secs};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryMode {
    #[default]
    Static,
    Dns,
    Consul,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DiscoveryConfig {
    pub mode: DiscoveryMode,
    #[serde(default)]
    pub consul: ConsulConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsulConfig {
    /// The agent's HTTP API. Unset: `CONSUL_HTTP_ADDR`, else `http://127.0.0.1:8500`.
    #[serde(default)]
    pub address: Option<String>,
    /// An ACL token. Unset: `CONSUL_HTTP_TOKEN`, if any.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::config::serialize_optional_secret"
    )]
    pub token: Option<SecretString>,
    /// The address peers reach this instance at; default: the gRPC listener's IP (which must
    /// then not be 0.0.0.0).
    #[serde(default)]
    pub advertise_address: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(with = "duration_secs")]
    pub check_interval: Duration,
    #[serde(with = "duration_secs")]
    pub check_timeout: Duration,
    /// A check critical this long deregisters the instance (Consul's minimum: 1 minute).
    #[serde(with = "duration_secs")]
    pub deregister_critical_after: Duration,
    /// How long a blocking query waits for a change (Consul caps it at 10 minutes).
    #[serde(with = "duration_secs")]
    pub wait: Duration,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            address: None,
            token: None,
            advertise_address: None,
            tags: Vec::new(),
            check_interval: Duration::from_secs(10),
            check_timeout: Duration::from_secs(2),
            deregister_critical_after: Duration::from_secs(300),
            wait: Duration::from_secs(300),
        }
    }
}

impl DiscoveryConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let consul = &self.consul;
        if consul.deregister_critical_after < Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "discovery.consul.deregister_critical_after",
                "must be at least 60 s (Consul's minimum)",
            ));
        }
        if consul.wait.is_zero() || consul.wait > Duration::from_secs(600) {
            return Err(ConfigError::invalid(
                "discovery.consul.wait",
                "must be 1 s to 600 s",
            ));
        }
        if consul.check_interval.is_zero() || consul.check_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "discovery.consul.check_interval",
                "intervals and timeouts must be positive",
            ));
        }
        Ok(())
    }
}

impl ConsulConfig {
    /// The agent address and token: configured, else the standard environment variables.
    fn agent(&self) -> (String, Option<String>) {
        let address = self
            .address
            .clone()
            .or_else(|| std::env::var("CONSUL_HTTP_ADDR").ok().filter(|a| !a.is_empty()))
            .unwrap_or_else(|| "http://127.0.0.1:8500".into());
        // CONSUL_HTTP_ADDR may be host:port without a scheme, as the consul CLI allows.
        let address = if address.contains("://") {
            address
        } else {
            format!("http://{address}")
        };
        let token = self
            .token
            .as_ref()
            .map(|t| t.expose_secret().to_string())
            .or_else(|| std::env::var("CONSUL_HTTP_TOKEN").ok().filter(|t| !t.is_empty()));
        (address.trim_end_matches('/').to_string(), token)
    }
}

/// `ticketing.orders.v1.OrdersService` -> `orders`: the name instances register under.
pub fn service_name(grpc_service: &str) -> String {
    let parts: Vec<&str> = grpc_service.split('.').collect();
    match parts.as_slice() {
        [_, name, version, _] if version.starts_with('v') => (*name).to_string(),
        _ => grpc_service.to_lowercase(),
    }
}

/// The agent registration payload (Consul's `/v1/agent/service/register` body).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Registration {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<String, String>,
    pub check: Check,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    pub name: String,
    #[serde(rename = "GRPC")]
    pub grpc: String,
    #[serde(rename = "GRPCUseTLS")]
    pub grpc_use_tls: bool,
    pub interval: String,
    pub timeout: String,
    pub deregister_critical_service_after: String,
}

fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Registration {
    pub fn new(
        config: &ConsulConfig,
        grpc_service: &str,
        grpc_addr: SocketAddr,
        version: &str,
    ) -> anyhow::Result<Self> {
        let address = match &config.advertise_address {
            Some(address) => address.clone(),
            None if grpc_addr.ip().is_unspecified() => anyhow::bail!(
                "discovery.consul.advertise_address is needed: the gRPC address {grpc_addr} says nothing peers can reach"
            ),
            None => grpc_addr.ip().to_string(),
        };
        let name = service_name(grpc_service);
        let mut tags = vec!["grpc".to_string()];
        tags.extend(config.tags.iter().cloned());
        Ok(Self {
            id: format!("{name}-{address}-{}", grpc_addr.port()),
            check: Check {
                name: format!("{name} gRPC health"),
                grpc: format!("{address}:{}/{grpc_service}", grpc_addr.port()),
                grpc_use_tls: false,
                interval: go_duration(config.check_interval),
                timeout: go_duration(config.check_timeout),
                deregister_critical_service_after: go_duration(config.deregister_critical_after),
            },
            name,
            tags,
            address,
            port: grpc_addr.port(),
            meta: [("version".to_string(), version.to_string())].into(),
        })
    }
}

/// Talks to the local Consul agent.
#[derive(Clone)]
pub struct Agent {
    http: reqwest::Client,
    address: String,
    token: Option<String>,
}

impl Agent {
    pub fn new(config: &ConsulConfig) -> Self {
        let (address, token) = config.agent();
        Self {
            http: reqwest::Client::new(),
            address,
            token,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.address))
            .timeout(Duration::from_secs(5));
        match &self.token {
            Some(token) => request.header("X-Consul-Token", token),
            None => request,
        }
    }

    /// Registers (or re-registers: existing checks are replaced) this instance.
    pub async fn register(&self, registration: &Registration) -> anyhow::Result<()> {
        let response = self
            .request(
                reqwest::Method::PUT,
                "/v1/agent/service/register?replace-existing-checks=true",
            )
            .json(registration)
            .send()
            .await?;
        if !response.status().is_success() {
            anyhow::bail!(
                "Consul refused the registration: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    pub async fn deregister(&self, id: &str) -> anyhow::Result<()> {
        let response = self
            .request(
                reqwest::Method::PUT,
                &format!("/v1/agent/service/deregister/{id}"),
            )
            .send()
            .await?;
        if !response.status().is_success() {
            anyhow::bail!("Consul refused the deregistration: {}", response.status());
        }
        Ok(())
    }
}

/// A channel balanced over the passing instances of `service`, kept current by a background
/// task of blocking queries that ends when the last clone of the channel is dropped.
pub fn consul_channel(
    config: &ConsulConfig,
    service: &str,
    endpoint: impl Fn(&str) -> anyhow::Result<Endpoint> + Send + 'static,
) -> Channel {
    let (channel, changes) = Channel::balance_channel::<String>(64);
    let (address, token) = config.agent();
    let consul = rs_consul::Consul::new(rs_consul::Config {
        address,
        token,
        ..Default::default()
    });
    tokio::spawn(follow(
        consul,
        service.to_string(),
        config.wait,
        endpoint,
        changes,
    ));
    channel
}

/// Blocking queries on the service's health, each instance set diffed into the channel.
async fn follow(
    consul: rs_consul::Consul,
    service: String,
    wait: Duration,
    endpoint: impl Fn(&str) -> anyhow::Result<Endpoint>,
    changes: tokio::sync::mpsc::Sender<Change<String, Endpoint>>,
) {
    let mut index: u64 = 0;
    let mut known: HashMap<String, String> = HashMap::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        let options = rs_consul::types::QueryOptions {
            index: (index > 0).then_some(index),
            wait: (index > 0).then_some(wait),
            // The agent holds the request up to `wait` plus jitter of wait/16.
            timeout: Some(wait + wait / 16 + Duration::from_secs(5)),
            ..Default::default()
        };
        let request = rs_consul::types::GetServiceNodesRequest {
            service: &service,
            passing: true,
            ..Default::default()
        };
        let started = tokio::time::Instant::now();
        let reply = tokio::select! {
            reply = consul.get_service_nodes(request, Some(options)) => reply,
            () = changes.closed() => return,
        };
        match reply {
            Ok(meta) => {
                backoff = Duration::from_millis(200);
                // Consul: an index that goes backwards resets; never block on an index below 1.
                index = if meta.index < index { 0 } else { meta.index.max(1) };
                let current: HashMap<String, String> = meta
                    .response
                    .iter()
                    .map(|node| {
                        let host = if node.service.address.is_empty() {
                            &node.node.address
                        } else {
                            &node.service.address
                        };
                        (
                            node.service.id.clone(),
                            format!("http://{host}:{}", node.service.port),
                        )
                    })
                    .collect();
                for (id, url) in &known {
                    if current.get(id) != Some(url) && changes.send(Change::Remove(id.clone())).await.is_err()
                    {
                        return;
                    }
                }
                for (id, url) in &current {
                    if known.get(id) == Some(url) {
                        continue;
                    }
                    match endpoint(url) {
                        Ok(endpoint) => {
                            if changes.send(Change::Insert(id.clone(), endpoint)).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => tracing::warn!(%service, %url, %error, "unusable instance address"),
                    }
                }
                if current != known {
                    tracing::info!(%service, instances = current.len(), "peer instances changed");
                    metrics::gauge!("discovery_instances", "service" => service.clone())
                        .set(current.len() as f64);
                }
                known = current;
                // A blocking query may return at once without a change: never spin.
                let floor = Duration::from_millis(100);
                if started.elapsed() < floor {
                    tokio::time::sleep(floor - started.elapsed()).await;
                }
            }
            Err(error) => {
                tracing::warn!(%service, error = %error, "Consul query failed; keeping the known instances");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_grpc_service() {
        assert_eq!(service_name("ticketing.orders.v1.OrdersService"), "orders");
        assert_eq!(service_name("grpc.health.v1.Health"), "health");
    }

    #[test]
    fn an_unspecified_listen_address_needs_an_advertised_one() {
        let config = ConsulConfig::default();
        let any: SocketAddr = "0.0.0.0:50054".parse().expect("addr");
        assert!(Registration::new(&config, "ticketing.orders.v1.OrdersService", any, "1").is_err());
        let config = ConsulConfig {
            advertise_address: Some("10.0.0.5".into()),
            ..ConsulConfig::default()
        };
        let registration =
            Registration::new(&config, "ticketing.orders.v1.OrdersService", any, "1").expect("valid");
        assert_eq!(registration.address, "10.0.0.5");
        assert_eq!(
            registration.check.grpc,
            "10.0.0.5:50054/ticketing.orders.v1.OrdersService"
        );
    }
}
