//! svc-orders: orders from holds, the checkout saga, discount codes, tickets with signed
//! secrets, check-in and refunds. See [`checkout`] for how the saga keeps the invariants.
//!
//! [`Application::build`] binds, connects and migrates; [`Application::run_until_stopped`]
//! serves, expires unpaid orders, resumes checkouts whose PayOrder died, relays the outbox,
//! finishes orders whose payment succeeded while their PayOrder did not, and takes expired
//! orders back for payments that came late.

pub mod api;
pub mod checkin;
pub mod checkout;
pub mod config;
pub mod orders;
pub mod payment_events;
pub mod qr;
pub mod refunds;
pub mod schema;
pub mod store;
pub mod tickets;

use std::{future::Future, net::SocketAddr, pin::Pin};

use anyhow::Context;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use ticketing_platform::{
    auth::{IdentityKeySource, TokenVerifier},
    clients,
    db::{self, PgPool},
    messaging::{self, Consumer, Handler, Relay},
    server::{Host, Probe, spawn_periodic},
};
use ticketing_proto::ticketing::{
    catalog::v1::catalog_service_client::CatalogServiceClient, events::v1 as events,
    inventory::v1::inventory_service_client::InventoryServiceClient,
    orders::v1::orders_service_server::OrdersServiceServer,
    payments::v1::payments_service_client::PaymentsServiceClient,
};
use uuid::Uuid;

use crate::{api::OrdersApi, config::Config, orders::Orders, tickets::TicketSigner};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The consumer (and queue) name of this service.
pub const CONSUMER: &str = "orders";

pub struct Application {
    host: Host,
    api: OrdersApi,
    relay: Relay,
    consumer: Consumer<PaymentOutcomes>,
    pool: PgPool,
    config: Config,
}

/// `payment.succeeded`: finishes an order whose PayOrder stopped after the charge, takes an
/// expired order back for a late payment (or refunds a payment that cannot pay its order). `payment.refunded`: an order whose money went back outside
/// orders is refunded too.
pub struct PaymentOutcomes(Orders);

/// The event types orders consumes.
pub const EVENT_TYPES: [&str; 2] = ["payment.succeeded", "payment.refunded"];

impl Handler for PaymentOutcomes {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        envelope: &'a events::Envelope,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            match envelope.event_type.as_str() {
                "payment.succeeded" => {
                    let paid = messaging::payload::<events::PaymentSucceeded>(envelope)?;
                    self.0.complete_from_event(conn, &paid).await
                }
                "payment.refunded" => {
                    let refund = messaging::payload::<events::PaymentRefunded>(envelope)?;
                    self.0.reconcile_refund(conn, &refund).await
                }
                _ => Ok(()),
            }
        })
    }

    fn settled<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        envelope: &'a events::Envelope,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<bool>> + Send + 'a>> {
        Box::pin(async move {
            if envelope.event_type != "payment.succeeded" {
                return Ok(false);
            }
            let paid = messaging::payload::<events::PaymentSucceeded>(envelope)?;
            let order = Uuid::parse_str(&paid.order_id).context("order id")?;
            let payment = Uuid::parse_str(&paid.payment_id).context("payment id")?;
            payment_events::payment_settled(conn, order, payment).await
        })
    }
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(&config.database, MIGRATIONS)
            .await
            .context("preparing the orders database")?;
        db::run_migrations(&pool, messaging::MIGRATIONS).await?;
        let signer = {
            let mut conn = pool.get().await.context("orders database")?;
            TicketSigner::load_or_create(&mut conn).await?
        };
        let peers = clients::Peers::new(config.peers.clone()).discovering(&config.server.discovery);
        let verifier = TokenVerifier::new(IdentityKeySource::new(peers.channel("identity")?));
        let relay = Relay::new(pool.clone(), config.messaging.clone(), "orders");
        let orders = Orders::new(
            pool.clone(),
            orders::Peers {
                catalog: CatalogServiceClient::new(peers.channel("catalog")?),
                inventory: InventoryServiceClient::new(peers.channel("inventory")?),
                payments: PaymentsServiceClient::new(peers.channel("payments")?),
            },
            signer,
            relay.signal(),
            config.checkout.clone(),
        );
        let consumer = Consumer::new(
            pool.clone(),
            config.messaging.clone(),
            CONSUMER,
            EVENT_TYPES.to_vec(),
            PaymentOutcomes(orders.clone()),
        );
        let host = Host::bind(config.server.clone()).await?;
        Ok(Self {
            host,
            api: OrdersApi { orders, verifier },
            relay,
            consumer,
            pool,
            config,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.host.grpc_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.host.admin_addr()
    }

    pub fn pool(&self) -> PgPool {
        self.pool.clone()
    }

    pub fn orders(&self) -> Orders {
        self.api.orders.clone()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let relay = tokio::spawn(self.relay.run());
        let consumer = tokio::spawn(self.consumer.run());
        let orders = self.api.orders.clone();
        let every = self.config.checkout.sweep_interval;
        let sweeper = spawn_periodic(every, "expiring unpaid orders", move || {
            let orders = orders.clone();
            async move { orders.expire_due().await.map(drop) }
        });
        // From start-up on: checkouts whose PayOrder died (here or in another replica) are
        // finished or released within a lease of it, not at the order's expiry.
        let orders = self.api.orders.clone();
        let resumer = spawn_periodic(every, "resuming checkouts whose lease lapsed", move || {
            let orders = orders.clone();
            async move { orders.resume_lapsed().await.map(drop) }
        });
        let verifier = self.api.verifier.clone();
        let service = OrdersServiceServer::new(self.api);
        let result = self
            .host
            .serve(
                service,
                verifier,
                vec![Probe::postgres(self.pool.clone())],
                shutdown,
            )
            .await;
        sweeper.abort();
        resumer.abort();
        consumer.abort();
        relay.abort();
        result
    }
}
