//! svc-payments: charges and refunds through a provider abstraction, with a built-in test card
//! processor. Only a card's brand and last four digits are stored. Charges are idempotent on a
//! key; events go out through the transactional outbox.
//!
//! [`Application::build`] binds, connects and migrates; [`Application::run_until_stopped`]
//! serves, relays the outbox, consumes order closings, pays out `order.refunded`, settles
//! charges a crash interrupted and records refunds made at the processor.

pub mod api;
pub mod config;
pub mod domain;
pub mod events;
pub mod payments;
pub mod provider;
pub mod schema;

use std::{future::Future, sync::Arc};

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use ticketing_platform::{
    background::Background,
    messaging::{Consumer, Relay},
    server::{Base, Served},
};
use ticketing_proto::ticketing::payments::v1::payments_service_server::PaymentsServiceServer;

use crate::{
    api::PaymentsApi, config::Config, events::OrderClosings, payments::Payments, provider::TestProvider,
};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The consumer (and queue) name of this service.
pub const CONSUMER: &str = "payments";

pub struct Application {
    base: Base,
    api: PaymentsApi,
    relay: Relay,
    consumer: Consumer<OrderClosings>,
    config: Config,
}

impl Served for Application {
    fn base(&self) -> &Base {
        &self.base
    }
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let base = Base::start("payments", config.sections(), &config.peers, MIGRATIONS).await?;
        let (pool, peers) = (base.pool.clone(), &base.peers);
        let verifier = peers.identity_verifier()?;
        let relay = base.relay(&config.messaging, "payments");
        let provider = Arc::new(TestProvider::new(pool.clone(), config.test_provider.slow_delay));
        let payments = Payments::new(pool.clone(), provider, relay.signal());
        let consumer = base.consumer(&config.messaging, CONSUMER, OrderClosings(payments.clone()));
        Ok(Self {
            base,
            api: PaymentsApi { payments, verifier },
            relay,
            consumer,
            config,
        })
    }

    pub fn payments(&self) -> Payments {
        self.api.payments.clone()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (every, stale_after) = (self.config.sweep_interval, self.config.stale_after);
        let grace = self.config.processor_refund_grace;
        let (settling, syncing) = (self.api.payments.clone(), self.api.payments.clone());
        // Refunds made at the processor: looked for from a day back at start, then onwards.
        let watermark = Arc::new(std::sync::Mutex::new(
            chrono::Utc::now() - chrono::Duration::days(1),
        ));
        let background = Background::new()
            .every("settling interrupted charges", every, move || {
                let payments = settling.clone();
                async move { payments.settle_stale(stale_after).await.map(drop) }
            })
            .every("recording refunds made at the processor", every, move || {
                let (payments, watermark) = (syncing.clone(), watermark.clone());
                async move {
                    let after = *watermark.lock().unwrap_or_else(|p| p.into_inner());
                    let (newest, _) = payments.sync_processor_refunds(after, grace).await?;
                    *watermark.lock().unwrap_or_else(|p| p.into_inner()) = newest;
                    Ok::<_, ticketing_platform::ApiError>(())
                }
            })
            .consuming(self.consumer)
            .relaying(self.relay);
        let verifier = self.api.verifier.clone();
        let service = PaymentsServiceServer::new(self.api);
        self.base
            .serve(service, verifier, vec![], background, shutdown)
            .await
    }
}
