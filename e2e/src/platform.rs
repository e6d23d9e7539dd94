//! The whole platform in-process: identity, inventory, catalog, payments and orders on
//! databases of their own, a Redis prefix and broker names of the test's own, wired as in
//! production (see [`services`](crate::services)), with proxies where tests cut connections.

use std::net::SocketAddr;

use ticketing_platform::db::PgPool;
use ticketing_testkit::{TcpProxy, TestBroker, TestRedisPrefix};
use tonic::transport::Channel;

use crate::{
    Identity,
    services::{self, Running, Wiring},
};

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
    _running: (
        Running<svc_orders::config::Config>,
        Running<svc_payments::config::Config>,
        Running<svc_catalog::config::Config>,
        Running<svc_inventory::config::Config>,
    ),
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

impl Platform {
    /// Identity, inventory, catalog, payments and orders, with proxies between orders and
    /// payments and between orders and the broker.
    pub async fn start() -> Self {
        let broker = TestBroker::new();
        // On the platform's broker, so its events (user.registered) reach the others.
        let identity = Identity::start_with(|config| config.messaging = broker.config.clone()).await;
        let keys = TestRedisPrefix::new("ord");
        let wiring = Wiring {
            identity: &identity,
            broker: &broker,
            redis_prefix: &keys.prefix,
        };
        let (inventory, _) = services::inventory(&wiring, |_| {}).await;
        let catalog = services::catalog(&wiring, inventory.url(), |_| {}).await;
        let payments = services::payments(&wiring, |_| {}).await;
        let payments_proxy = TcpProxy::start(payments.addr).await.expect("proxy");
        let broker_proxy = TcpProxy::start(amqp_addr()).await.expect("proxy");
        let orders = services::orders(
            &wiring,
            &[
                ("catalog", catalog.url()),
                ("inventory", inventory.url()),
                ("payments", format!("http://{}", payments_proxy.addr())),
            ],
            |config| {
                config.messaging = broker.via(&format!("amqp://guest:guest@{}/%2f", broker_proxy.addr()));
            },
        )
        .await;
        Self {
            catalog: catalog.channel.clone(),
            inventory: inventory.channel.clone(),
            orders: orders.channel.clone(),
            payments: payments.channel.clone(),
            addrs: Addrs {
                orders_admin: orders.admin,
                catalog: catalog.addr,
                inventory: inventory.addr,
                orders: orders.addr,
                payments: payments.addr,
            },
            orders_pool: orders.pool.clone(),
            payments_pool: payments.pool.clone(),
            inventory_pool: inventory.pool.clone(),
            payments_proxy,
            broker_proxy,
            // Stopped in this order when dropped: orders first, which calls the others.
            _running: (orders, payments, catalog, inventory),
            _keys: keys,
            broker,
            identity,
        }
    }
}

/// The broker's address, from the test broker URL.
fn amqp_addr() -> SocketAddr {
    let url = ticketing_testkit::amqp_url();
    let rest = url.split('@').nth(1).unwrap_or("127.0.0.1:5672/%2f");
    let host_port = rest.split('/').next().unwrap_or("127.0.0.1:5672");
    host_port.parse().expect("broker address")
}
