//! One-click unsubscribe (RFC 8058): a mail that can be switched off carries a link with a
//! token naming its recipient and kind, signed with HMAC-SHA256 under a key kept in notify's
//! database (made once, shared by the replicas). Whoever holds the mail may switch that kind
//! off, and nothing else: the token names one user and one kind.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use ticketing_platform::db::PgPool;
use uuid::Uuid;

use crate::{domain::Kind, schema::signing_keys};

const KEY_NAME: &str = "unsubscribe";

#[derive(Clone)]
pub struct Unsubscribe {
    key: Arc<Vec<u8>>,
}

impl Unsubscribe {
    /// The stored key, made now when there is none (the first replica to insert wins).
    pub async fn load_or_create(pool: &PgPool) -> anyhow::Result<Self> {
        let mut conn = pool.get().await?;
        let mut fresh = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut fresh);
        diesel::insert_into(signing_keys::table)
            .values((signing_keys::name.eq(KEY_NAME), signing_keys::secret.eq(&fresh)))
            .on_conflict_do_nothing()
            .execute(&mut conn)
            .await?;
        let key: Vec<u8> = signing_keys::table
            .find(KEY_NAME)
            .select(signing_keys::secret)
            .first(&mut conn)
            .await?;
        Ok(Self::with_key(key))
    }

    pub fn with_key(key: Vec<u8>) -> Self {
        Self { key: Arc::new(key) }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(payload.as_bytes());
        mac
    }

    /// The token that switches `kind` off for `user`.
    pub fn token(&self, user: Uuid, kind: Kind) -> String {
        let payload = format!("{}.{}", user.simple(), kind.as_str());
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// The user and kind a genuine token names.
    pub fn verify(&self, token: &str) -> Option<(Uuid, Kind)> {
        let (payload, signature) = token.rsplit_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        self.mac(payload).verify_slice(&signature).ok()?;
        let (user, kind) = payload.split_once('.')?;
        Some((Uuid::parse_str(user).ok()?, Kind::parse(kind)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_one_user_and_kind_and_cannot_be_altered() {
        let signer = Unsubscribe::with_key(vec![7; 32]);
        let user = Uuid::new_v4();
        let token = signer.token(user, Kind::EventReminder);
        assert_eq!(signer.verify(&token), Some((user, Kind::EventReminder)));
        let other = Uuid::new_v4();
        let forged = token.replacen(&user.simple().to_string(), &other.simple().to_string(), 1);
        assert_eq!(signer.verify(&forged), None, "another user");
        let widened = token.replacen("event_reminder", "order_confirmed", 1);
        assert_eq!(signer.verify(&widened), None, "another kind");
        assert_eq!(
            Unsubscribe::with_key(vec![8; 32]).verify(&token),
            None,
            "another key"
        );
        for garbage in ["", ".", "a.b.c", "not a token", &token[..token.len() - 2]] {
            assert_eq!(signer.verify(garbage), None, "{garbage:?}");
        }
    }
}
