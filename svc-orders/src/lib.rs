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
pub mod domain;
pub mod events;
pub mod orders;
pub mod payment_events;
pub mod refunds;
pub mod schema;
pub mod store;
pub mod tickets;

use std::future::Future;

use anyhow::Context;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use ticketing_platform::{
    background::Background,
    messaging::{Consumer, Relay},
    server::{Base, Served},
};
use ticketing_proto::ticketing::{
    catalog::v1::catalog_service_client::CatalogServiceClient,
    inventory::v1::inventory_service_client::InventoryServiceClient,
    orders::v1::orders_service_server::OrdersServiceServer,
    payments::v1::payments_service_client::PaymentsServiceClient,
};

use crate::{api::OrdersApi, config::Config, events::PaymentOutcomes, orders::Orders, tickets::TicketSigner};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The consumer (and queue) name of this service.
pub const CONSUMER: &str = "orders";

pub struct Application {
    base: Base,
    api: OrdersApi,
    relay: Relay,
    consumer: Consumer<PaymentOutcomes>,
    config: Config,
}

impl Served for Application {
    fn base(&self) -> &Base {
        &self.base
    }
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let base = Base::start("orders", config.sections(), &config.peers, MIGRATIONS).await?;
        let (pool, peers) = (base.pool.clone(), &base.peers);
        let signer = {
            let mut conn = pool.get().await.context("orders database")?;
            TicketSigner::load_or_create(&mut conn).await?
        };
        let verifier = peers.identity_verifier()?;
        let relay = base.relay(&config.messaging, "orders");
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
        let consumer = base.consumer(&config.messaging, CONSUMER, PaymentOutcomes(orders.clone()));
        Ok(Self {
            base,
            api: OrdersApi { orders, verifier },
            relay,
            consumer,
            config,
        })
    }

    pub fn orders(&self) -> Orders {
        self.api.orders.clone()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let every = self.config.checkout.sweep_interval;
        let (expiring, resuming) = (self.api.orders.clone(), self.api.orders.clone());
        let background = Background::new()
            .every("expiring unpaid orders", every, move || {
                let orders = expiring.clone();
                async move { orders.expire_due().await.map(drop) }
            })
            // From start-up on: checkouts whose PayOrder died (here or in another replica) are
            // finished or released within a lease of it, not at the order's expiry.
            .every("resuming checkouts whose lease lapsed", every, move || {
                let orders = resuming.clone();
                async move { orders.resume_lapsed().await.map(drop) }
            })
            .consuming(self.consumer)
            .relaying(self.relay);
        let verifier = self.api.verifier.clone();
        let service = OrdersServiceServer::new(self.api);
        self.base
            .serve(service, verifier, vec![], background, shutdown)
            .await
    }
}
