//! svc-notify: tells buyers what happened to their accounts, orders and events, by e-mail and
//! in-app, from domain events alone (it never reads another service's tables).
//!
//! [`Application::build`] connects, migrates and binds; [`Application::run_until_stopped`]
//! serves, consumes the events, sends the mail queue and the webhooks, and listens for in-app
//! news.

pub mod api;
pub mod config;
pub mod domain;
pub mod events;
pub mod live;
pub mod mailer;
pub mod reminders;
pub mod schema;
pub mod store;
mod support;
pub mod templates;
pub mod unsubscribe;
pub mod webhooks;

use std::{future::Future, sync::Arc};

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use ticketing_platform::{
    background::Background,
    config::DatabaseConfig,
    messaging::Consumer,
    server::{Base, Served},
};
use ticketing_proto::ticketing::notify::v1::notify_service_server::NotifyServiceServer;
use tokio::sync::Notify;

use crate::{
    api::NotifyApi, config::Config, events::Notifier, live::Live, mailer::Sender, templates::Templates,
    webhooks::sender::Deliverer,
};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The consumer (and queue) name of this service.
pub const CONSUMER: &str = "notify";

/// How often settled webhook deliveries past their retention are deleted.
const WEBHOOK_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Largest request message accepted; notify's requests are small.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

pub struct Application {
    base: Base,
    api: NotifyApi,
    consumer: Consumer<Notifier>,
    sender: Sender,
    deliverer: Deliverer,
    notifier: Notifier,
    reminders_every: std::time::Duration,
    webhook_retention: std::time::Duration,
    database: DatabaseConfig,
}

impl Served for Application {
    fn base(&self) -> &Base {
        &self.base
    }
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let base = Base::start("notify", config.sections(), &config.peers, MIGRATIONS).await?;
        let verifier = base.peers.identity_verifier()?;
        let wake = Arc::new(Notify::new());
        let webhook_wake = Arc::new(Notify::new());
        let unsubscribe = unsubscribe::Unsubscribe::load_or_create(&base.pool).await?;
        let notifier = Notifier {
            templates: Arc::new(Templates::new(&config.portal_url)?),
            from: config.mail.sender()?,
            message_id_domain: config.mail.message_id_domain.clone(),
            wake: wake.clone(),
            reminder_offsets: config.reminders.offsets.clone(),
            unsubscribe: unsubscribe.clone(),
            webhook_wake: webhook_wake.clone(),
        };
        let consumer = base.consumer(&config.messaging, CONSUMER, notifier.clone());
        let sender = Sender::new(base.pool.clone(), config.mail.clone(), wake)?;
        let deliverer = Deliverer::new(base.pool.clone(), config.webhooks.clone(), webhook_wake.clone())?;
        let api = NotifyApi {
            pool: base.pool.clone(),
            verifier,
            live: Live::new(),
            unsubscribe,
            webhooks_allow_private: config.webhooks.allow_private_targets,
            webhook_wake,
        };
        Ok(Self {
            base,
            api,
            consumer,
            sender,
            deliverer,
            notifier,
            reminders_every: config.reminders.interval,
            webhook_retention: config.webhooks.retention,
            database: config.database,
        })
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (live, url) = (self.api.live.clone(), self.database.url.clone());
        let (sender, deliverer) = (self.sender, self.deliverer);
        let (pool, notifier) = (self.base.pool.clone(), self.notifier);
        let (pool_for_pruning, retention) = (self.base.pool.clone(), self.webhook_retention);
        let background = Background::new()
            .task("listening for in-app news", move |stop| live.run(url, stop))
            .every("sending reminders", self.reminders_every, move || {
                let (pool, notifier) = (pool.clone(), notifier.clone());
                async move { reminders::send_due(&pool, &notifier).await.map(drop) }
            })
            .every("pruning the webhook log", WEBHOOK_PRUNE_EVERY, move || {
                let pool = pool_for_pruning.clone();
                async move { webhooks::prune(&pool, retention).await.map(drop) }
            })
            .consuming(self.consumer)
            // After the consumer, so the mails its last events queued still go out.
            .task("sending mail", move |stop| sender.run(stop))
            .task("delivering webhooks", move |stop| deliverer.run(stop));
        let verifier = self.api.verifier.clone();
        let service = NotifyServiceServer::new(self.api).max_decoding_message_size(MAX_MESSAGE_BYTES);
        self.base
            .serve(service, verifier, vec![], background, shutdown)
            .await
    }
}
