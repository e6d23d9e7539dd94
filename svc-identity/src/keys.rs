//! Ed25519 signing keys and access tokens.
//!
//! Keys are generated and stored in PostgreSQL on first start (or one is loaded from config, and
//! then kept only in memory). The newest unretired key signs. Rotation retires the signing key;
//! a retired key stays in the JWKS until every token it signed has expired, so rotation never
//! logs anybody out.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use ed25519_dalek::{
    SigningKey as DalekKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey},
};
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::rngs::OsRng;
use secrecy::ExposeSecret;
use ticketing_platform::{
    ApiError, ApiResult,
    auth::{KeySource, VerificationKey},
    db::PgPool,
};
use tokio::sync::RwLock;

use crate::{config::TokenConfig, domain::sha256, schema::signing_keys};

/// One key that can sign.
pub struct ActiveKey {
    pub kid: String,
    encoding: EncodingKey,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = signing_keys)]
struct KeyRow {
    kid: String,
    private_key: Vec<u8>,
    public_key: Vec<u8>,
    created_at: DateTime<Utc>,
    retired_at: Option<DateTime<Utc>>,
}

pub struct KeyStore {
    pool: PgPool,
    config: TokenConfig,
    /// A key from config, never written to the database.
    configured: Option<(Arc<ActiveKey>, VerificationKey)>,
    active: RwLock<Option<(Arc<ActiveKey>, Instant)>>,
}

/// How long another replica's rotation may go unnoticed before this one signs with the new key.
const ACTIVE_KEY_RECHECK: Duration = Duration::from_secs(30);

fn kid_for(public_key: &[u8]) -> String {
    // RFC 7638-like: derived from the key, so the same key always has the same id.
    URL_SAFE_NO_PAD.encode(&sha256(public_key)[..12])
}

fn active_from_der(kid: String, der: &[u8]) -> Arc<ActiveKey> {
    Arc::new(ActiveKey {
        kid,
        encoding: EncodingKey::from_ed_der(der),
    })
}

impl KeyStore {
    /// Loads the signing key, creating one when none is active.
    pub async fn open(pool: PgPool, config: TokenConfig) -> anyhow::Result<Arc<Self>> {
        let configured = match &config.signing_key_pem {
            Some(pem) => {
                let key = DalekKey::from_pkcs8_pem(pem.expose_secret()).map_err(|e| {
                    anyhow::anyhow!("tokens.signing_key_pem is not an Ed25519 PKCS#8 PEM key: {e}")
                })?;
                let public = key.verifying_key().to_bytes();
                let kid = kid_for(&public);
                let der = key
                    .to_pkcs8_der()
                    .map_err(|e| anyhow::anyhow!("encoding key: {e}"))?;
                Some((
                    active_from_der(kid.clone(), der.as_bytes()),
                    VerificationKey {
                        kid,
                        x: URL_SAFE_NO_PAD.encode(public),
                    },
                ))
            }
            None => None,
        };
        let store = Arc::new(Self {
            pool,
            config,
            configured,
            active: RwLock::new(None),
        });
        if store.configured.is_none() {
            store
                .rotate_if_due()
                .await
                .map_err(|e| anyhow::anyhow!("preparing signing keys: {e}"))?;
        }
        Ok(store)
    }

    /// The key that signs now. May take a pool connection (when the cached key is older than
    /// [`ACTIVE_KEY_RECHECK`]): callers must not hold one while they call this.
    pub async fn active_key(&self) -> ApiResult<Arc<ActiveKey>> {
        if let Some((key, _)) = &self.configured {
            return Ok(key.clone());
        }
        if let Some((key, loaded)) = self.active.read().await.as_ref()
            && loaded.elapsed() < ACTIVE_KEY_RECHECK
        {
            return Ok(key.clone());
        }
        let mut conn = self.pool.get().await?;
        let row: Option<KeyRow> = signing_keys::table
            .filter(signing_keys::retired_at.is_null())
            .order(signing_keys::created_at.desc())
            .select(KeyRow::as_select())
            .first(&mut conn)
            .await
            .optional()?;
        let row = row.ok_or_else(|| ApiError::internal("no active signing key"))?;
        let key = active_from_der(row.kid, &row.private_key);
        *self.active.write().await = Some((key.clone(), Instant::now()));
        Ok(key)
    }

    /// Signs `claims` (an access token's or a service token's) with the active key.
    pub async fn sign<C: serde::Serialize>(&self, claims: &C) -> ApiResult<String> {
        let key = self.active_key().await?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| ApiError::internal(format!("signing failed: {e}")))
    }

    /// Starts signing with a fresh key and retires the current one. Returns the new kid.
    pub async fn rotate(&self) -> ApiResult<String> {
        if self.configured.is_some() {
            return Err(ApiError::precondition(
                "KEY_FROM_CONFIG",
                "the signing key comes from configuration; rotate it there",
            ));
        }
        let row = new_key_row()?;
        let kid = row.kid.clone();
        let mut conn = self.pool.get().await?;
        diesel_async::AsyncConnection::transaction::<_, ApiError, _>(&mut *conn, async |conn| {
            diesel::update(signing_keys::table.filter(signing_keys::retired_at.is_null()))
                .set(signing_keys::retired_at.eq(diesel::dsl::now))
                .execute(conn)
                .await?;
            diesel::insert_into(signing_keys::table)
                .values(&row)
                .execute(conn)
                .await?;
            Ok(())
        })
        .await?;
        *self.active.write().await = None;
        tracing::info!(%kid, "signing key rotated");
        Ok(kid)
    }

    /// Creates the first key, or rotates when the active one is older than the rotation interval.
    /// Safe to run on several replicas at once: the row lock on the retiring UPDATE lets one win.
    pub async fn rotate_if_due(&self) -> ApiResult<()> {
        if self.configured.is_some() {
            return Ok(());
        }
        let mut conn = self.pool.get().await?;
        let newest: Option<DateTime<Utc>> = signing_keys::table
            .filter(signing_keys::retired_at.is_null())
            .select(diesel::dsl::max(signing_keys::created_at))
            .first(&mut conn)
            .await?;
        let interval = chrono::Duration::from_std(self.config.key_rotation_interval)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match newest {
            None => {
                diesel::insert_into(signing_keys::table)
                    .values(&new_key_row()?)
                    .execute(&mut conn)
                    .await?;
                tracing::info!("created the first signing key");
            }
            Some(created) if Utc::now() - created > interval => {
                let cutoff = Utc::now() - interval;
                let row = new_key_row()?;
                diesel_async::AsyncConnection::transaction::<_, ApiError, _>(&mut *conn, async |conn| {
                    let retired = diesel::update(
                        signing_keys::table
                            .filter(signing_keys::retired_at.is_null())
                            .filter(signing_keys::created_at.lt(cutoff)),
                    )
                    .set(signing_keys::retired_at.eq(diesel::dsl::now))
                    .execute(conn)
                    .await?;
                    if retired > 0 {
                        diesel::insert_into(signing_keys::table)
                            .values(&row)
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
                .await?;
                *self.active.write().await = None;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Every key whose tokens may still be valid: the signing ones, and retired ones younger than
    /// the longest token lifetime (plus verification leeway).
    pub async fn published(&self) -> ApiResult<Vec<VerificationKey>> {
        let mut keys = Vec::new();
        if let Some((_, public)) = &self.configured {
            keys.push(public.clone());
        }
        let keep = self.config.access_token_ttl.max(self.config.api_key_token_ttl) + Duration::from_secs(60);
        let cutoff =
            Utc::now() - chrono::Duration::from_std(keep).map_err(|e| ApiError::internal(e.to_string()))?;
        let mut conn = self.pool.get().await?;
        let rows: Vec<(String, Vec<u8>)> = signing_keys::table
            .filter(
                signing_keys::retired_at
                    .is_null()
                    .or(signing_keys::retired_at.gt(cutoff)),
            )
            .order(signing_keys::created_at.desc())
            .select((signing_keys::kid, signing_keys::public_key))
            .load(&mut conn)
            .await?;
        keys.extend(rows.into_iter().map(|(kid, public)| VerificationKey {
            kid,
            x: URL_SAFE_NO_PAD.encode(public),
        }));
        Ok(keys)
    }
}

fn new_key_row() -> ApiResult<KeyRow> {
    let key = DalekKey::generate(&mut OsRng);
    let public = key.verifying_key().to_bytes().to_vec();
    let der = key
        .to_pkcs8_der()
        .map_err(|e| ApiError::internal(format!("encoding key: {e}")))?;
    Ok(KeyRow {
        kid: kid_for(&public),
        private_key: der.as_bytes().to_vec(),
        public_key: public,
        created_at: Utc::now(),
        retired_at: None,
    })
}

/// Identity verifies its own tokens straight from its key store.
pub struct LocalKeys(pub Arc<KeyStore>);

impl KeySource for LocalKeys {
    fn fetch(&self) -> BoxFuture<'_, anyhow::Result<Vec<VerificationKey>>> {
        Box::pin(async move { self.0.published().await.map_err(|e| anyhow::anyhow!("{e}")) })
    }
}
