//! svc-identity: users, organizations, roles, sessions, API keys and the JWKS.
//!
//! [`Application::build`] binds, connects and migrates; [`Application::run_until_stopped`] serves
//! until the shutdown future completes. Tests start the real service in-process this way.

pub mod api;
mod api_keys;
pub mod config;
pub mod domain;
pub mod keys;
pub mod lockout;
pub mod password;
pub mod schema;
pub mod store;
mod wire;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use chrono::Utc;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use secrecy::ExposeSecret;
use ticketing_platform::{
    auth::{Role, TokenVerifier},
    cache::Cache,
    db::{self, PgPool},
    messaging::Relay,
    server::{Host, Probe, spawn_periodic},
};
use ticketing_proto::ticketing::identity::v1::identity_service_server::IdentityServiceServer;
use uuid::Uuid;

use crate::{
    api::{AppState, IdentityApi},
    config::{BootstrapAdmin, Config},
    keys::{KeyStore, LocalKeys},
    lockout::LoginGuard,
    password::PasswordHasher,
    store::UserRow,
};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Largest request message accepted; identity's requests are small.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

pub struct Application {
    host: Host,
    state: Arc<AppState>,
    probes: Vec<Probe>,
    relay: Relay,
    key_rotation_check: Duration,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(&config.database, MIGRATIONS)
            .await
            .context("preparing the identity database")?;
        let relay = Relay::new(pool.clone(), config.messaging.clone(), "identity");
        let cache = Cache::connect(&config.redis).context("configuring redis")?;
        let keys = KeyStore::open(pool.clone(), config.tokens.clone()).await?;
        let verifier = TokenVerifier::new(LocalKeys(keys.clone()));
        let hasher = PasswordHasher::new(&config.password)?;
        if let Some(admin) = &config.bootstrap_admin {
            bootstrap_admin(&pool, &hasher, admin)
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
        let host = Host::bind(config.server.clone()).await?;
        Ok(Self {
            host,
            state,
            probes: vec![Probe::postgres(pool), Probe::redis(cache)],
            relay,
            key_rotation_check: Duration::from_secs(3600),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.host.grpc_addr()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.host.admin_addr()
    }

    pub fn pool(&self) -> PgPool {
        self.state.pool.clone()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let keys = self.state.keys.clone();
        let every = self.key_rotation_check;
        let rotation = spawn_periodic(every, "rotating the signing key when due", move || {
            let keys = keys.clone();
            async move { keys.rotate_if_due().await }
        });
        let relay = tokio::spawn(self.relay.run());
        let verifier = self.state.verifier.clone();
        let service = IdentityServiceServer::new(IdentityApi::new(self.state))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let result = self.host.serve(service, verifier, self.probes, shutdown).await;
        rotation.abort();
        relay.abort();
        result
    }
}

/// Makes sure the configured admin exists with the admin and organizer roles. The password is
/// only set when the account is created; an existing account keeps its own.
async fn bootstrap_admin(
    pool: &PgPool,
    hasher: &PasswordHasher,
    admin: &BootstrapAdmin,
) -> anyhow::Result<()> {
    let email =
        domain::normalize_email(&admin.email).map_err(|e| anyhow::anyhow!("bootstrap_admin.email {e}"))?;
    let mut conn = pool.get().await?;
    let id = match store::find_user_by_email(&mut conn, &email).await? {
        Some(user) => user.id,
        None => {
            let password = admin.password.expose_secret().to_string();
            domain::check_password(&password, &email)
                .map_err(|e| anyhow::anyhow!("bootstrap_admin.password {e}"))?;
            let now = Utc::now();
            let user = UserRow {
                id: Uuid::now_v7(),
                email: email.clone(),
                password_hash: hasher.hash(password).await?,
                display_name: "Administrator".into(),
                created_at: now,
                updated_at: now,
            };
            match store::insert_user(&mut conn, &user, &[Role::Admin, Role::Organizer]).await {
                Ok(()) => user.id,
                // Another replica created it first.
                Err(ticketing_platform::ApiError::AlreadyExists { .. }) => {
                    store::find_user_by_email(&mut conn, &email)
                        .await?
                        .map(|u| u.id)
                        .context("bootstrap admin vanished")?
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    store::grant_role(&mut conn, id, Role::Admin).await?;
    store::grant_role(&mut conn, id, Role::Organizer).await?;
    tracing::info!(user_id = %id, "bootstrap admin ready");
    Ok(())
}

/// Demo data for a laptop: an organizer with an organization and a customer, with the given
/// password. Idempotent.
pub async fn seed_demo(config: &Config, password: &str) -> anyhow::Result<()> {
    let pool = db::connect_and_migrate(&config.database, MIGRATIONS).await?;
    let hasher = password::PasswordHasher::new(&config.password)?;
    let mut conn = pool.get().await?;
    let mut ids = Vec::new();
    for (email, name, roles) in [
        (
            "organizer@demo.ticketing.dev",
            "Demo Organizer",
            vec![Role::Organizer],
        ),
        ("customer@demo.ticketing.dev", "Demo Customer", vec![]),
    ] {
        let id = match store::find_user_by_email(&mut conn, email).await? {
            Some(user) => user.id,
            None => {
                let now = Utc::now();
                let user = UserRow {
                    id: Uuid::now_v7(),
                    email: email.into(),
                    password_hash: hasher.hash(password.to_string()).await?,
                    display_name: name.into(),
                    created_at: now,
                    updated_at: now,
                };
                store::insert_user(&mut conn, &user, &roles).await?;
                user.id
            }
        };
        ids.push(id);
    }
    let org_id = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);
    if store::find_org(&mut conn, org_id).await?.is_none() {
        let now = Utc::now();
        let org = store::OrgRow {
            id: org_id,
            slug: "demo-events".into(),
            display_name: "Demo Events GmbH".into(),
            created_at: now,
            updated_at: now,
        };
        store::insert_org(&mut conn, &org, ids[0]).await?;
    }
    Ok(())
}
