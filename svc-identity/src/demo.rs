//! Accounts made at start-up or for a laptop: the configured bootstrap admin, and the demo
//! organizer, customer and organization that `svc-identity seed-demo` writes.

use anyhow::Context;
use chrono::Utc;
use secrecy::ExposeSecret;
use ticketing_platform::{
    auth::Role,
    db::{self, PgPool},
};
use uuid::Uuid;

use crate::{
    MIGRATIONS,
    config::{BootstrapAdmin, Config},
    domain,
    password::{self, PasswordHasher},
    store::{self, UserRow},
};

/// Makes sure the configured admin exists with the admin and organizer roles. The password is
/// only set when the account is created; an existing account keeps its own.
pub(crate) async fn bootstrap_admin(
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
pub async fn seed(config: &Config, password: &str) -> anyhow::Result<()> {
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
