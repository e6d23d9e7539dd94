//! svc-payments: charges and refunds through a provider abstraction, with a built-in test card
//! processor. Only a card's brand and last four digits are stored. Charges are idempotent on a
//! key; events go out through the transactional outbox.
//!
//! [`Application::build`] binds, connects and migrates; [`Application::run_until_stopped`]
//! serves, relays the outbox, consumes order closings and settles charges a crash interrupted.

pub mod api;
pub mod config;
pub mod payments;
pub mod provider;
pub mod schema;

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use anyhow::Context;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use ticketing_platform::{
    auth::{IdentityKeySource, TokenVerifier},
    clients::Peers,
    db::{self, PgPool},
    messaging::{self, Consumer, Handler, Relay},
    server::{Host, Probe, spawn_periodic},
};
use ticketing_proto::ticketing::{
    events::v1 as events, payments::v1::payments_service_server::PaymentsServiceServer,
};
use uuid::Uuid;

use crate::{api::PaymentsApi, config::Config, payments::Payments, provider::TestProvider};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The consumer (and queue) name of this service.
pub const CONSUMER: &str = "payments";

pub struct Application {
    host: Host,
    api: PaymentsApi,
    relay: Relay,
    consumer: Consumer<OrderClosings>,
    pool: PgPool,
    config: Config,
}

/// `order.expired` and `order.cancelled`: no charge for the order may go through any more.
/// `order.refunded`: the refunded lines' money goes back, once per refund id.
pub struct OrderClosings(Payments);

impl Handler for OrderClosings {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        envelope: &'a events::Envelope,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let order_id = match envelope.event_type.as_str() {
                "order.expired" => messaging::payload::<events::OrderExpired>(envelope)?.order_id,
                "order.cancelled" => messaging::payload::<events::OrderCancelled>(envelope)?.order_id,
                "order.refunded" => {
                    let refund: events::OrderRefunded = messaging::payload(envelope)?;
                    let amount = refund.amount.map(|m| m.amount_minor).unwrap_or(0);
                    if refund.payment_id.is_empty() || amount == 0 {
                        // A free order: nothing was charged.
                        return Ok(());
                    }
                    let payment = Uuid::parse_str(&refund.payment_id).context("payment id")?;
                    let key = format!("order-refund:{}", refund.refund_id);
                    // Money that already went back (a refund made at the processor, which
                    // orders is reconciling) is not refunded twice.
                    let remaining = match self.0.get(payment).await {
                        Ok(Some(row)) => row.amount - row.refunded,
                        Ok(None) => anyhow::bail!("order.refunded names unknown payment {payment}"),
                        Err(e) => anyhow::bail!("reading payment {payment}: {e}"),
                    };
                    if self
                        .0
                        .refund_exists(&key)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                    {
                        return Ok(());
                    }
                    let amount = amount.min(remaining);
                    if amount == 0 {
                        return Ok(());
                    }
                    self.0
                        .refund(payment, &key, Some(amount), "order refunded")
                        .await
                        .map_err(|e| anyhow::anyhow!("refunding payment {payment}: {e}"))?;
                    return Ok(());
                }
                _ => return Ok(()),
            };
            let order_id = Uuid::parse_str(&order_id).context("order id")?;
            self.0.close_order(conn, order_id).await
        })
    }
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(&config.database, MIGRATIONS)
            .await
            .context("preparing the payments database")?;
        db::run_migrations(&pool, messaging::MIGRATIONS).await?;
        let peers = Peers::new(config.peers.clone()).discovering(&config.server.discovery);
        let verifier = TokenVerifier::new(IdentityKeySource::new(peers.channel("identity")?));
        let relay = Relay::new(pool.clone(), config.messaging.clone(), "payments");
        let provider = Arc::new(TestProvider::new(pool.clone(), config.test_provider.slow_delay));
        let payments = Payments::new(pool.clone(), provider, relay.signal());
        let consumer = Consumer::new(
            pool.clone(),
            config.messaging.clone(),
            CONSUMER,
            vec!["order.expired", "order.cancelled", "order.refunded"],
            OrderClosings(payments.clone()),
        );
        let host = Host::bind(config.server.clone()).await?;
        Ok(Self {
            host,
            api: PaymentsApi { payments, verifier },
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

    pub fn payments(&self) -> Payments {
        self.api.payments.clone()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let relay = tokio::spawn(self.relay.run());
        let consumer = tokio::spawn(self.consumer.run());
        let payments = self.api.payments.clone();
        let (every, stale_after) = (self.config.sweep_interval, self.config.stale_after);
        let grace = self.config.processor_refund_grace;
        let sweeper = spawn_periodic(every, "settling interrupted charges", move || {
            let payments = payments.clone();
            async move { payments.settle_stale(stale_after).await.map(drop) }
        });
        // Refunds made at the processor: looked for from a day back at start, then onwards.
        let payments = self.api.payments.clone();
        let watermark = Arc::new(std::sync::Mutex::new(
            chrono::Utc::now() - chrono::Duration::days(1),
        ));
        let processor_refunds = spawn_periodic(every, "recording refunds made at the processor", move || {
            let (payments, watermark) = (payments.clone(), watermark.clone());
            async move {
                let after = *watermark.lock().unwrap_or_else(|p| p.into_inner());
                let (newest, _) = payments.sync_processor_refunds(after, grace).await?;
                *watermark.lock().unwrap_or_else(|p| p.into_inner()) = newest;
                Ok::<_, ticketing_platform::ApiError>(())
            }
        });
        let verifier = self.api.verifier.clone();
        let service = PaymentsServiceServer::new(self.api);
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
        processor_refunds.abort();
        consumer.abort();
        relay.abort();
        result
    }
}
