//! svc-identity: users, organizations, roles, sessions, API keys and the JWKS.
//!
//! [`Application::build`] binds, connects and migrates; [`Application::run_until_stopped`] serves
//! until the shutdown future completes. Tests start the real service in-process this way.

pub mod api;
mod api_keys;
pub mod config;
pub mod demo;
pub mod domain;
pub mod events;
pub mod keys;
pub mod lockout;
pub mod password;
pub mod schema;
pub mod store;
mod wire;

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use ticketing_platform::{
    auth::TokenVerifier,
    background::Background,
    cache::Cache,
    config::PeersConfig,
    messaging::Relay,
    server::{Base, Probe, Served},
};
use ticketing_proto::ticketing::identity::v1::identity_service_server::IdentityServiceServer;

use crate::{
    api::{AppState, IdentityApi},
    config::Config,
    keys::{KeyStore, LocalKeys},
    lockout::LoginGuard,
    password::PasswordHasher,
};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Largest request message accepted; identity's requests are small.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

pub struct Application {
    base: Base,
    state: Arc<AppState>,
    redis: Cache,
    relay: Relay,
    key_rotation_check: Duration,
}

impl Served for Application {
    fn base(&self) -> &Base {
        &self.base
    }
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Identity calls no peer: it is where the others get their credentials.
        let base = Base::start("identity", config.sections(), &PeersConfig::default(), MIGRATIONS).await?;
        let pool = base.pool.clone();
        let relay = base.relay(&config.messaging, "identity");
        let cache = Cache::connect(&config.redis).context("configuring redis")?;
        let keys = KeyStore::open(pool.clone(), config.tokens.clone()).await?;
        let verifier = TokenVerifier::new(LocalKeys(keys.clone()));
        let hasher = PasswordHasher::new(&config.password)?;
        if let Some(admin) = &config.bootstrap_admin {
            demo::bootstrap_admin(&pool, &hasher, admin)
                .await
                .context("creating the bootstrap admin")?;
        }
        let service_clients = config
            .service_clients
            .iter()
            .filter_map(|(client, hash)| {
                crate::config::parse_sha256_hex(hash).map(|digest| (client.clone(), digest))
            })
            .collect();
        let state = Arc::new(AppState {
            pool: pool.clone(),
            keys,
            verifier,
            hasher,
            guard: LoginGuard::new(cache.clone(), config.login.clone()),
            tokens: config.tokens.clone(),
            login: config.login.clone(),
            service_clients,
            outbox: relay.signal(),
        });
        Ok(Self {
            base,
            state,
            redis: cache,
            relay,
            key_rotation_check: Duration::from_secs(3600),
        })
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let keys = self.state.keys.clone();
        let every = self.key_rotation_check;
        let relay = self.relay;
        let background = Background::new()
            .every("rotating the signing key when due", every, move || {
                let keys = keys.clone();
                async move { keys.rotate_if_due().await }
            })
            .task("relaying the outbox", |stop| relay.run(stop));
        let verifier = self.state.verifier.clone();
        let service = IdentityServiceServer::new(IdentityApi::new(self.state))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
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
