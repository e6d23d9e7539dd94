//! One service of a test platform at a time, each on a database of its own and wired to the
//! test's identity, broker names and Redis prefix as in production: a test starts the subset it
//! needs ([`Platform`](crate::Platform) starts them all), and each service's test
//! configuration is written here once.

use std::{net::SocketAddr, time::Duration};
use ticketing_platform::server::Served;

use ticketing_platform::{
    config::{DatabaseConfig, PeersConfig, RedisConfig, ServerConfig},
    db::PgPool,
};
use ticketing_testkit::{TestBroker, TestDatabase};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::{Identity, connect};

/// What the services of one test share.
pub struct Wiring<'a> {
    pub identity: &'a Identity,
    pub broker: &'a TestBroker,
    /// The Redis key prefix (inventory's holds, identity's lockouts).
    pub redis_prefix: &'a str,
}

/// A running service: stopped, and its database dropped, when the value is dropped.
pub struct Running<C> {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub channel: Channel,
    pub pool: PgPool,
    /// The configuration it runs with (a replica starts from it).
    pub config: C,
    pub database: TestDatabase,
    _stop: oneshot::Sender<()>,
}

impl<C> Running<C> {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A server on ephemeral ports whose health is probed often, so tests see a dependency come
/// back within a fraction of a second.
pub fn test_server() -> ServerConfig {
    let mut server = ServerConfig::with_ports(0, 0);
    server.health_interval = Duration::from_millis(200);
    server
}

/// Runs `run` (a service's `run_until_stopped`) in a task until the returned sender is dropped.
pub fn run_until_dropped<F>(
    run: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> F,
) -> oneshot::Sender<()>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(run(Box::pin(async move {
        let _ = stopped.await;
    })));
    stop
}

/// Identity's test configuration: a test server, its own database and Redis prefix, the
/// test's broker names, the cheapest argon2id the configuration accepts (tests check behaviour,
/// the benchmark checks cost), and `clients` as service clients, each with a fresh secret;
/// returns the secrets too (client id to secret).
pub fn identity_config(
    database_url: &str,
    redis_prefix: &str,
    broker: &TestBroker,
    clients: &[&str],
) -> (
    svc_identity::config::Config,
    std::collections::BTreeMap<String, String>,
) {
    let secrets: std::collections::BTreeMap<String, String> = clients
        .iter()
        .map(|c| (c.to_string(), ticketing_testkit::unique("secret")))
        .collect();
    let config = svc_identity::config::Config {
        server: test_server(),
        database: DatabaseConfig::new(database_url),
        redis: RedisConfig::new(ticketing_testkit::redis_url(), redis_prefix),
        messaging: broker.config.clone(),
        password: svc_identity::password::PasswordParams {
            memory_kib: 8 * 1024,
            iterations: 1,
            ..Default::default()
        },
        service_clients: secrets
            .iter()
            .map(|(client, secret)| {
                let digest = svc_identity::domain::sha256(secret.as_bytes());
                (
                    client.clone(),
                    digest.iter().map(|b| format!("{b:02x}")).collect(),
                )
            })
            .collect(),
        ..Default::default()
    };
    (config, secrets)
}

/// `app`, built with `config` on `database`, running until the returned value is dropped.
async fn start<A, C, F>(
    app: A,
    config: C,
    database: TestDatabase,
    run: impl FnOnce(A, std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> F,
) -> Running<C>
where
    A: Served,
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (addr, admin, pool) = (app.grpc_addr(), app.admin_addr(), app.pool());
    let stop = run_until_dropped(|stopped| run(app, stopped));
    Running {
        addr,
        admin,
        channel: connect(addr).await,
        pool,
        config,
        database,
        _stop: stop,
    }
}

fn wire(peers: &mut PeersConfig, identity: &Identity, client: &str, others: &[(&str, String)]) {
    peers.addresses.insert("identity".into(), identity.url());
    for (name, url) in others {
        peers.addresses.insert((*name).to_string(), url.clone());
    }
    peers.credentials = identity.credentials(client);
}

/// Inventory, with holds that may be as short as a second and a sweep every 100 ms; also its
/// in-process handle (for what no RPC does).
pub async fn inventory(
    wiring: &Wiring<'_>,
    adjust: impl FnOnce(&mut svc_inventory::config::Config),
) -> (
    Running<svc_inventory::config::Config>,
    svc_inventory::inventory::Inventory,
) {
    let database = TestDatabase::create("inventory")
        .await
        .expect("inventory database");
    let mut config = svc_inventory::config::Config {
        server: test_server(),
        database: DatabaseConfig::new(database.url.clone()),
        redis: RedisConfig::new(ticketing_testkit::redis_url(), wiring.redis_prefix.to_string()),
        messaging: wiring.broker.config.clone(),
        ..Default::default()
    };
    wire(&mut config.peers, wiring.identity, "inventory", &[]);
    config.holds.min_ttl = Duration::from_secs(1);
    config.holds.sweep_interval = Duration::from_millis(100);
    adjust(&mut config);
    let app = svc_inventory::Application::build(config.clone())
        .await
        .expect("inventory starts");
    let handle = app.inventory();
    (
        start(app, config, database, |app, s| app.run_until_stopped(s)).await,
        handle,
    )
}

/// Catalog, publishing to `inventory`.
pub async fn catalog(
    wiring: &Wiring<'_>,
    inventory_url: String,
    adjust: impl FnOnce(&mut svc_catalog::config::Config),
) -> Running<svc_catalog::config::Config> {
    let database = TestDatabase::create("catalog").await.expect("catalog database");
    let mut config = svc_catalog::config::Config {
        server: test_server(),
        database: DatabaseConfig::new(database.url.clone()),
        messaging: wiring.broker.config.clone(),
        ..Default::default()
    };
    wire(
        &mut config.peers,
        wiring.identity,
        "catalog",
        &[("inventory", inventory_url)],
    );
    adjust(&mut config);
    let app = svc_catalog::Application::build(config.clone())
        .await
        .expect("catalog starts");
    start(app, config, database, |app, s| app.run_until_stopped(s)).await
}

/// Payments with the test processor: a slow card takes 500 ms, and refunds made at the
/// processor are noticed within a second or two.
pub async fn payments(
    wiring: &Wiring<'_>,
    adjust: impl FnOnce(&mut svc_payments::config::Config),
) -> Running<svc_payments::config::Config> {
    let database = TestDatabase::create("payments").await.expect("payments database");
    let mut config = svc_payments::config::Config {
        server: test_server(),
        database: DatabaseConfig::new(database.url.clone()),
        messaging: wiring.broker.config.clone(),
        ..Default::default()
    };
    wire(&mut config.peers, wiring.identity, "payments", &[]);
    config.test_provider.slow_delay = Duration::from_millis(500);
    config.sweep_interval = Duration::from_millis(200);
    config.processor_refund_grace = Duration::from_secs(1);
    adjust(&mut config);
    let app = svc_payments::Application::build(config.clone())
        .await
        .expect("payments starts");
    start(app, config, database, |app, s| app.run_until_stopped(s)).await
}

/// Orders, calling `peers` (catalog, inventory and payments by name), sweeping every 100 ms,
/// with a charge lease that lapses 2 s after its holder stops renewing it.
pub async fn orders(
    wiring: &Wiring<'_>,
    peers: &[(&str, String)],
    adjust: impl FnOnce(&mut svc_orders::config::Config),
) -> Running<svc_orders::config::Config> {
    let database = TestDatabase::create("orders").await.expect("orders database");
    let mut config = svc_orders::config::Config {
        server: test_server(),
        database: DatabaseConfig::new(database.url.clone()),
        messaging: wiring.broker.config.clone(),
        ..Default::default()
    };
    wire(&mut config.peers, wiring.identity, "orders", peers);
    config.checkout.sweep_interval = Duration::from_millis(100);
    config.checkout.charge_lease = Duration::from_secs(2);
    adjust(&mut config);
    let app = svc_orders::Application::build(config.clone())
        .await
        .expect("orders starts");
    start(app, config, database, |app, s| app.run_until_stopped(s)).await
}

/// Notify, sending its mail to `smtp_url` (a test's [`SmtpSink`](ticketing_testkit::SmtpSink)),
/// looking for due mail every 100 ms and retrying a failed send after its back-off.
pub async fn notify(
    wiring: &Wiring<'_>,
    smtp_url: &str,
    adjust: impl FnOnce(&mut svc_notify::config::Config),
) -> Running<svc_notify::config::Config> {
    let database = TestDatabase::create("notify").await.expect("notify database");
    let mut config = svc_notify::config::Config {
        server: test_server(),
        database: DatabaseConfig::new(database.url.clone()),
        messaging: wiring.broker.config.clone(),
        ..Default::default()
    };
    wire(&mut config.peers, wiring.identity, "notify", &[]);
    config.mail.smtp_url = smtp_url.to_string().into();
    config.mail.poll_interval = Duration::from_millis(100);
    config.mail.timeout = Duration::from_secs(5);
    adjust(&mut config);
    let app = svc_notify::Application::build(config.clone())
        .await
        .expect("notify starts");
    let running = start(app, config, database, |app, s| app.run_until_stopped(s)).await;
    wiring
        .broker
        .wait_for_consumer(svc_notify::CONSUMER)
        .await
        .expect("notify consumes");
    running
}
