//! svc-catalog: venues with seating charts, events with a lifecycle, ticket tiers and search.
//! Publishing an event hands its seats and quotas to inventory, so it is sellable at once.

pub mod api;
mod charts;
pub mod config;
pub mod demo;
pub mod domain;
pub mod events;
pub mod schema;
pub mod store;
mod tiers;
mod wire;

use std::future::Future;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use ticketing_platform::{
    background::Background,
    messaging::Relay,
    server::{Base, Served},
};
use ticketing_proto::ticketing::{
    catalog::v1::catalog_service_server::CatalogServiceServer,
    inventory::v1::inventory_service_client::InventoryServiceClient,
};

use crate::{api::CatalogApi, config::Config};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// A venue with its chart (up to 100,000 seats) travels in one message.
const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

pub struct Application {
    base: Base,
    api: CatalogApi,
    relay: Relay,
}

impl Served for Application {
    fn base(&self) -> &Base {
        &self.base
    }
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let base = Base::start("catalog", config.sections(), &config.peers, MIGRATIONS).await?;
        let (pool, peers) = (base.pool.clone(), &base.peers);
        let relay = base.relay(&config.messaging, "catalog");
        let verifier = peers.identity_verifier()?;
        let inventory = InventoryServiceClient::new(peers.channel("inventory")?)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let api = CatalogApi {
            pool: pool.clone(),
            verifier,
            inventory,
            outbox: relay.signal(),
            charts: Default::default(),
        };
        Ok(Self { base, api, relay })
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let verifier = self.api.verifier.clone();
        let service = CatalogServiceServer::new(self.api)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let background = Background::new().relaying(self.relay);
        self.base
            .serve(service, verifier, vec![], background, shutdown)
            .await
    }
}
