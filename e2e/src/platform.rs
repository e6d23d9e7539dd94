//! The whole platform in-process: inventory, catalog, payments and orders (and identity) on
//! their own databases, Redis prefix and broker vhost, wired as in production, with proxies
//! where tests cut connections.

use std::{net::SocketAddr, time::Duration};

use ticketing_platform::{
    config::{DatabaseConfig, PeersConfig, RedisConfig, ServerConfig},
    db::PgPool,
};
use ticketing_testkit::{TcpProxy, TestBroker, TestDatabase, TestRedisPrefix};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::{Identity, connect};

pub struct Platform {
    pub identity: Identity,
    pub catalog: Channel,
    pub inventory: Channel,
    pub orders: Channel,
    /// Straight to payments, not through the proxy.
    pub payments: Channel,
    /// Where each service listens (payments: directly, not through the proxy).
    pub addrs: Addrs,
    pub orders_pool: PgPool,
    pub payments_pool: PgPool,
    pub inventory_pool: PgPool,
    /// Between orders and payments.
    pub payments_proxy: TcpProxy,
    /// Between orders and RabbitMQ.
    pub broker_proxy: TcpProxy,
    _stops: Vec<oneshot::Sender<()>>,
    _dbs: Vec<TestDatabase>,
    _keys: TestRedisPrefix,
    /// The platform's exchange and queues (tap it to see the events the services publish).
    pub broker: TestBroker,
}

pub struct Addrs {
    /// Orders' admin port (`/metrics`, `/healthz`, `/readyz`).
    pub orders_admin: SocketAddr,
    pub catalog: SocketAddr,
    pub inventory: SocketAddr,
    pub orders: SocketAddr,
    pub payments: SocketAddr,
}

fn spawn<F>(
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

fn fast_server() -> ServerConfig {
    let mut server = ServerConfig::with_ports(0, 0);
    server.health_interval = Duration::from_millis(200);
    server
}

fn amqp_addr() -> SocketAddr {
    let url = ticketing_testkit::amqp_url();
    let rest = url.split('@').nth(1).unwrap_or("127.0.0.1:5672/%2f");
    let host_port = rest.split('/').next().unwrap_or("127.0.0.1:5672");
    host_port.parse().expect("broker address")
}

/// `peers` as the services see them: name to URL.
fn wire(config: &mut PeersConfig, peers: &[(&str, String)]) {
    for (name, url) in peers {
        config.addresses.insert((*name).to_string(), url.clone());
    }
}

impl Platform {
    pub async fn start() -> Self {
        let identity = Identity::start().await;
        let broker = TestBroker::new();
        let keys = TestRedisPrefix::new("ord");

        let inv_db = TestDatabase::create("o_inventory").await.expect("db");
        let mut inv_config = svc_inventory::config::Config {
            server: fast_server(),
            database: DatabaseConfig::new(inv_db.url.clone()),
            redis: RedisConfig::new(ticketing_testkit::redis_url(), keys.prefix.clone()),
            messaging: broker.config.clone(),
            ..Default::default()
        };
        wire(&mut inv_config.peers, &[("identity", identity.url())]);
        inv_config.peers.credentials = identity.credentials("inventory");
        inv_config.holds.min_ttl = Duration::from_secs(1);
        inv_config.holds.sweep_interval = Duration::from_millis(100);
        let inventory = svc_inventory::Application::build(inv_config)
            .await
            .expect("inventory");
        let inventory_addr = inventory.grpc_addr();
        let inventory_pool = inventory.pool();
        let inv_stop = spawn(|s| inventory.run_until_stopped(s));

        let cat_db = TestDatabase::create("o_catalog").await.expect("db");
        // Catalog publishes event lifecycle changes: to this platform's broker names only.
        let mut cat_config = svc_catalog::config::Config {
            server: fast_server(),
            database: DatabaseConfig::new(cat_db.url.clone()),
            messaging: broker.config.clone(),
            ..Default::default()
        };
        wire(
            &mut cat_config.peers,
            &[
                ("identity", identity.url()),
                ("inventory", format!("http://{inventory_addr}")),
            ],
        );
        cat_config.peers.credentials = identity.credentials("catalog");
        let catalog = svc_catalog::Application::build(cat_config)
            .await
            .expect("catalog");
        let catalog_addr = catalog.grpc_addr();
        let cat_stop = spawn(|s| catalog.run_until_stopped(s));

        let pay_db = TestDatabase::create("o_payments").await.expect("db");
        let mut pay_config = svc_payments::config::Config {
            server: fast_server(),
            database: DatabaseConfig::new(pay_db.url.clone()),
            messaging: broker.config.clone(),
            ..Default::default()
        };
        wire(&mut pay_config.peers, &[("identity", identity.url())]);
        pay_config.peers.credentials = identity.credentials("payments");
        pay_config.test_provider.slow_delay = Duration::from_millis(500);
        // Refunds made at the processor are noticed within a second or two.
        pay_config.sweep_interval = Duration::from_millis(200);
        pay_config.processor_refund_grace = Duration::from_secs(1);
        let payments = svc_payments::Application::build(pay_config)
            .await
            .expect("payments");
        let payments_addr = payments.grpc_addr();
        let payments_pool = payments.pool();
        let pay_stop = spawn(|s| payments.run_until_stopped(s));
        let payments_proxy = TcpProxy::start(payments_addr).await.expect("proxy");

        let broker_proxy = TcpProxy::start(amqp_addr()).await.expect("proxy");
        let ord_db = TestDatabase::create("orders").await.expect("db");
        let mut config = svc_orders::config::Config {
            server: fast_server(),
            database: DatabaseConfig::new(ord_db.url.clone()),
            messaging: broker.via(&format!("amqp://guest:guest@{}/%2f", broker_proxy.addr())),
            ..Default::default()
        };
        wire(
            &mut config.peers,
            &[
                ("identity", identity.url()),
                ("catalog", format!("http://{catalog_addr}")),
                ("inventory", format!("http://{inventory_addr}")),
                ("payments", format!("http://{}", payments_proxy.addr())),
            ],
        );
        config.peers.credentials = identity.credentials("orders");
        config.checkout.sweep_interval = Duration::from_millis(100);
        // A lease lapses 2 s after its holder stops renewing it: dead checkouts resume quickly.
        config.checkout.charge_lease = Duration::from_secs(2);
        let orders = svc_orders::Application::build(config).await.expect("orders");
        let orders_addr = orders.grpc_addr();
        let orders_admin = orders.admin_addr();
        let orders_pool = orders.pool();
        let ord_stop = spawn(|s| orders.run_until_stopped(s));

        Self {
            identity,
            catalog: connect(catalog_addr).await,
            inventory: connect(inventory_addr).await,
            orders: connect(orders_addr).await,
            payments: connect(payments_addr).await,
            addrs: Addrs {
                orders_admin,
                catalog: catalog_addr,
                inventory: inventory_addr,
                orders: orders_addr,
                payments: payments_addr,
            },
            orders_pool,
            payments_pool,
            inventory_pool,
            payments_proxy,
            broker_proxy,
            _stops: vec![ord_stop, pay_stop, cat_stop, inv_stop],
            _dbs: vec![ord_db, pay_db, cat_db, inv_db],
            _keys: keys,
            broker,
        }
    }
}
