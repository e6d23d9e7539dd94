//! PostgreSQL through diesel-async: a bb8 pool, database creation for development and tests, and
//! embedded migrations run at start (no libpq anywhere).

use std::time::Duration;

use anyhow::Context;
use diesel::QueryableByName;
use diesel_async::{
    AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl,
    pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod, bb8::Pool,
    },
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use secrecy::ExposeSecret;

use crate::config::DatabaseConfig;

pub type PgPool = Pool<AsyncPgConnection>;

/// Opens the pool (creating the database first when configured to) and runs `migrations`.
pub async fn connect_and_migrate(
    config: &DatabaseConfig,
    migrations: EmbeddedMigrations,
) -> anyhow::Result<PgPool> {
    if config.create_if_missing {
        create_database_if_missing(config.url.expose_secret()).await?;
    }
    let pool = connect(config).await?;
    run_migrations(&pool, migrations).await?;
    // Every service keeps an outbox and an inbox beside its own tables.
    run_migrations(&pool, crate::messaging::MIGRATIONS).await?;
    Ok(pool)
}

/// A pool that connects lazily, so a service starts (and reports NOT_SERVING) while the
/// database is down instead of refusing to start.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    // A pooled connection is handed out without a `SELECT 1` round trip (a query and a commit on
    // every checkout, the largest share of commits per checkout); one whose socket has closed
    // (server restart, cut connection) is still replaced before use.
    manager_config.recycling_method = RecyclingMethod::CustomFunction(Box::new(|conn| {
        Box::pin(async move {
            if conn.is_broken() {
                Err(diesel::result::Error::BrokenTransactionManager)
            } else {
                Ok(())
            }
        })
    }));
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        config.url.expose_secret(),
        manager_config,
    );
    let pool = Pool::builder()
        .max_size(config.pool_size)
        .min_idle(Some(1))
        .connection_timeout(config.connect_timeout)
        .build_unchecked(manager);
    Ok(pool)
}

/// Runs pending migrations. diesel's harness is synchronous; it runs on a blocking thread.
pub async fn run_migrations(pool: &PgPool, migrations: EmbeddedMigrations) -> anyhow::Result<()> {
    let conn = pool
        .dedicated_connection()
        .await
        .context("connecting to run migrations")?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut harness = AsyncMigrationHarness::new(conn);
        harness
            .run_pending_migrations(migrations)
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
        Ok(())
    })
    .await
    .context("migration task panicked")??;
    Ok(())
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    exists: bool,
}

/// Creates the database named in `url` if it does not exist, through the server's `postgres`
/// maintenance database. Concurrent callers are fine: a lost race is not an error.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let (server_url, name) = split_database_url(url)?;
    let mut conn = AsyncPgConnection::establish(&format!("{server_url}/postgres"))
        .await
        .context("connecting to the postgres maintenance database")?;
    let found: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<diesel::sql_types::Text, _>(&name)
            .get_result(&mut conn)
            .await?;
    if !found.exists {
        // Identifiers cannot be bound; the name was validated by split_database_url.
        match diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
        {
            Ok(_) => {}
            Err(diesel::result::Error::DatabaseError(_, info))
                if info.message().contains("already exists") || info.message().contains("duplicate key") => {}
            Err(e) => return Err(e).context("creating the database"),
        }
    }
    Ok(())
}

/// Drops a database, disconnecting its sessions (tests clean up after themselves).
pub async fn drop_database(url: &str) -> anyhow::Result<()> {
    let (server_url, name) = split_database_url(url)?;
    let mut conn = AsyncPgConnection::establish(&format!("{server_url}/postgres")).await?;
    diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// `postgres://u@h:5432/name?x` -> (`postgres://u@h:5432`, `name`); the name must be a plain
/// identifier so it can be quoted safely.
pub fn split_database_url(url: &str) -> anyhow::Result<(String, String)> {
    let without_query = url.split('?').next().unwrap_or(url);
    let (server, name) = without_query
        .rsplit_once('/')
        .filter(|(server, _)| server.contains("://"))
        .context("database URL has no database name")?;
    anyhow::ensure!(
        !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database name must be 1-63 letters, digits or underscores"
    );
    Ok((server.to_string(), name.to_string()))
}

/// A readiness probe: one round trip within `timeout`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, async {
        let mut conn = pool.get().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await?;
        anyhow::Ok(())
    })
    .await
    .context("database ping timed out")?
}

/// Whether a unique index refused the row: a writer that lost a race, or a key already used.
pub fn is_unique_violation(error: &diesel::result::Error) -> bool {
    matches!(
        error,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// A unique index's refusal (a writer that lost a race, or a key already used) as
/// ALREADY_EXISTS with `reason` and `message`; any other error as usual:
/// `.map_err(db::already_exists("EMAIL_TAKEN", "an account with this e-mail already exists"))`.
pub fn already_exists(
    reason: &'static str,
    message: &'static str,
) -> impl FnOnce(diesel::result::Error) -> crate::ApiError {
    move |error| {
        if is_unique_violation(&error) {
            crate::ApiError::already_exists(reason, message)
        } else {
            error.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_database_url;

    #[test]
    fn database_urls_split_into_server_and_a_safe_name() {
        let (server, name) =
            split_database_url("postgres://postgres@127.0.0.1:5432/identity").expect("valid");
        assert_eq!(server, "postgres://postgres@127.0.0.1:5432");
        assert_eq!(name, "identity");
        assert!(split_database_url("postgres://h/bad\"name").is_err());
        assert!(split_database_url("postgres://h").is_err());
    }
}
