//! svc-inventory: who may have which seat right now.
//!
//! Holds live in Redis (atomic Lua scripts, all-or-nothing, with a TTL); sales are recorded in
//! PostgreSQL, whose unique sold-seat ledger and quota CHECK make a second sale impossible.
//! [`Application::build`] binds, connects and migrates; [`Application::run_until_stopped`]
//! serves, sweeps expired holds, consumes order events, settles half-done commits, offers
//! returned places to waiting lists (publishing the offers), reconciles Redis with the ledger
//! and fans live availability out to watchers.

pub mod api;
pub mod config;
pub mod domain;
pub mod events;
pub mod inventory;
pub mod lua;
pub mod schema;
pub mod store;
pub mod watch;

use std::{future::Future, time::Duration};

use anyhow::Context;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use secrecy::ExposeSecret;
use ticketing_platform::{
    background::Background,
    cache::Cache,
    messaging::Relay,
    server::{Base, Probe, Served},
};
use ticketing_proto::ticketing::inventory::v1::inventory_service_server::InventoryServiceServer;

use crate::{
    api::InventoryApi,
    config::Config,
    inventory::{Inventory, Reconciler},
    watch::Fanout,
};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// ConfigureEvent carries up to 100,000 seats.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

pub struct Application {
    base: Base,
    api: InventoryApi,
    relay: Relay,
    redis: Cache,
    redis_url: String,
    config: Config,
}

impl Served for Application {
    fn base(&self) -> &Base {
        &self.base
    }
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let base = Base::start("inventory", config.sections(), &config.peers, MIGRATIONS).await?;
        let (pool, peers) = (base.pool.clone(), &base.peers);
        let cache = Cache::connect(&config.redis).context("configuring redis")?;
        let verifier = peers.identity_verifier()?;
        let relay = base.relay(&config.messaging, "inventory");
        let inventory = Inventory::new(pool.clone(), cache.clone())
            .with_waitlist(config.waitlist.offer_ttl, relay.signal());
        let fanout = {
            let inventory = inventory.clone();
            Fanout::new(move |event| inventory.channel_of(event))
        };
        let api = InventoryApi {
            inventory,
            verifier,
            fanout,
            holds: config.holds.clone(),
        };
        Ok(Self {
            base,
            api,
            relay,
            redis: cache,
            redis_url: config.redis.url.expose_secret().to_string(),
            config,
        })
    }

    pub fn inventory(&self) -> Inventory {
        self.api.inventory.clone()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let inventory = self.api.inventory.clone();
        let every = self.config.holds.sweep_interval;
        let after = self.config.holds.commit_recovery_after;
        let consumer = self.base.consumer(
            &self.config.messaging,
            "inventory",
            events::OrderReturns(inventory.clone()),
        );
        let (sweeping, recovering, offering) = (inventory.clone(), inventory.clone(), inventory.clone());
        let reconciler = Reconciler::new(inventory);
        let background = Background::new()
            .every("sweeping expired holds", every, move || {
                let inventory = sweeping.clone();
                async move { inventory.sweep_all().await.map(drop) }
            })
            .every(
                "settling half-done commits",
                every.max(Duration::from_secs(1)),
                move || {
                    let inventory = recovering.clone();
                    async move { inventory.recover_all(after).await.map(drop) }
                },
            )
            .every("offering places to waiting lists", every, move || {
                let inventory = offering.clone();
                async move { inventory.drive_waitlists().await.map(drop) }
            })
            .every(
                "reconciling redis with the ledger",
                self.config.holds.reconcile_interval,
                move || {
                    let reconciler = reconciler.clone();
                    async move { reconciler.reconcile().await.map(drop) }
                },
            )
            .consuming(consumer)
            .cancellable(
                "fanning out seat changes",
                self.api.fanout.clone().run(self.redis_url.clone()),
            )
            // Last: asked to stop, it publishes what the other tasks wrote.
            .relaying(self.relay);
        let verifier = self.api.verifier.clone();
        let service = InventoryServiceServer::new(self.api).max_decoding_message_size(MAX_MESSAGE_BYTES);
        self.base
            .serve(
                service,
                verifier,
                vec![Probe::redis(self.redis)],
                background,
                shutdown,
            )
            .await
    }
}
