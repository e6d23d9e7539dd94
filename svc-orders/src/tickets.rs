//! Ticket secrets: `<kid>.<base64url(version | ticket id | event id | signature)>`.
//!
//! The ticket id is random (UUID v4, 122 bits), and the Ed25519 signature over the version, the
//! ticket id and the event id makes a secret impossible to forge or alter without the key. A
//! scanner that holds the public keys ([`TicketSigner::public_keys`]) verifies a secret offline.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use uuid::Uuid;

use crate::schema::ticket_keys;

const VERSION: u8 = 1;
const SIGNED_LEN: usize = 1 + 16 + 16;
const SECRET_LEN: usize = SIGNED_LEN + 64;

/// What a valid secret says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketClaim {
    pub ticket_id: Uuid,
    pub event_id: Uuid,
}

#[derive(Clone)]
pub struct TicketSigner {
    kid: String,
    key: SigningKey,
    verifying: BTreeMap<String, VerifyingKey>,
}

impl TicketSigner {
    /// Loads the signing keys, creating the first one on a fresh database.
    pub async fn load_or_create(conn: &mut AsyncPgConnection) -> anyhow::Result<Self> {
        let mut rows: Vec<(String, Vec<u8>)> = ticket_keys::table
            .order(ticket_keys::created_at.desc())
            .select((ticket_keys::kid, ticket_keys::secret_key))
            .load(conn)
            .await?;
        if rows.is_empty() {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let kid = format!("tk-{}", &Uuid::new_v4().simple().to_string()[..12]);
            diesel::insert_into(ticket_keys::table)
                .values((
                    ticket_keys::kid.eq(&kid),
                    ticket_keys::secret_key.eq(key.to_bytes().to_vec()),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            // Another replica may have created one at the same moment: use whatever is stored.
            rows = ticket_keys::table
                .order(ticket_keys::created_at.desc())
                .select((ticket_keys::kid, ticket_keys::secret_key))
                .load(conn)
                .await?;
        }
        let mut verifying = BTreeMap::new();
        let mut newest = None;
        for (kid, secret) in rows {
            let bytes: [u8; 32] = secret
                .as_slice()
                .try_into()
                .map_err(|_| anyhow::anyhow!("ticket key {kid} is not 32 bytes"))?;
            let key = SigningKey::from_bytes(&bytes);
            verifying.insert(kid.clone(), key.verifying_key());
            if newest.is_none() {
                newest = Some((kid, key));
            }
        }
        let (kid, key) = newest.ok_or_else(|| anyhow::anyhow!("no ticket signing key"))?;
        Ok(Self { kid, key, verifying })
    }

    pub fn sign(&self, claim: TicketClaim) -> String {
        let mut bytes = Vec::with_capacity(SECRET_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(claim.ticket_id.as_bytes());
        bytes.extend_from_slice(claim.event_id.as_bytes());
        let signature = self.key.sign(&bytes);
        bytes.extend_from_slice(&signature.to_bytes());
        format!("{}.{}", self.kid, URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The claim of a genuine secret; None for anything forged, altered or malformed.
    pub fn verify(&self, secret: &str) -> Option<TicketClaim> {
        let (kid, body) = secret.split_once('.')?;
        let key = self.verifying.get(kid)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
        if bytes.len() != SECRET_LEN || bytes[0] != VERSION {
            return None;
        }
        let (signed, signature) = bytes.split_at(SIGNED_LEN);
        let signature = Signature::from_slice(signature).ok()?;
        key.verify(signed, &signature).ok()?;
        Some(TicketClaim {
            ticket_id: Uuid::from_slice(&signed[1..17]).ok()?,
            event_id: Uuid::from_slice(&signed[17..33]).ok()?,
        })
    }

    /// Public keys by key id, base64url without padding.
    pub fn public_keys(&self) -> BTreeMap<String, String> {
        self.verifying
            .iter()
            .map(|(kid, key)| (kid.clone(), URL_SAFE_NO_PAD.encode(key.as_bytes())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TicketSigner {
        let key = SigningKey::from_bytes(&[7; 32]);
        TicketSigner {
            kid: "k1".into(),
            verifying: [("k1".to_string(), key.verifying_key())].into(),
            key,
        }
    }

    #[test]
    fn a_signed_secret_verifies_and_says_what_was_signed() {
        let signer = signer();
        let claim = TicketClaim {
            ticket_id: Uuid::new_v4(),
            event_id: Uuid::new_v4(),
        };
        assert_eq!(signer.verify(&signer.sign(claim)), Some(claim));
    }

    #[test]
    fn altered_forged_or_malformed_secrets_are_refused() {
        let signer = signer();
        let claim = TicketClaim {
            ticket_id: Uuid::new_v4(),
            event_id: Uuid::new_v4(),
        };
        let secret = signer.sign(claim);
        let (kid, body) = secret.split_once('.').expect("kid");
        let mut bytes = URL_SAFE_NO_PAD.decode(body).expect("base64");
        // Another ticket id under the same signature.
        bytes[5] ^= 1;
        let altered = format!("{kid}.{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(signer.verify(&altered), None);
        // Signed by another key under our key id.
        let forger = TicketSigner {
            key: SigningKey::from_bytes(&[9; 32]),
            ..signer.clone()
        };
        assert_eq!(signer.verify(&forger.sign(claim)), None);
        for garbage in [
            "",
            ".",
            "k1.",
            "k1.!!!",
            "nokid",
            "k2.AAAA",
            &format!("k1.{}", &body[..20]),
        ] {
            assert_eq!(signer.verify(garbage), None, "{garbage}");
        }
    }
}
