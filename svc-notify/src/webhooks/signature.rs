//! Standard Webhooks signatures: `webhook-signature` holds `v1,<base64 HMAC-SHA256>` of
//! `<webhook-id>.<webhook-timestamp>.<body>` under the endpoint's secret, one entry per secret
//! in use (two while a rotation overlaps), separated by spaces. Secrets are `whsec_` and the
//! base64 of the key's bytes.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A receiver refuses a timestamp further than this from its clock (replays).
pub const TOLERANCE_SECS: i64 = 300;

/// A new secret: 24 random bytes, as the specification suggests (between 24 and 64).
pub fn new_secret() -> String {
    let mut key = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The key bytes of a `whsec_` secret.
fn key_of(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix(PREFIX).unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .map_err(|e| format!("the secret is not base64: {e}"))
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    mac
}

/// The `webhook-signature` value for `body`, signed with each of `secrets`.
pub fn sign(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let mut entries = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let key = key_of(secret)?;
        let digest = mac(&key, id, timestamp, body).finalize().into_bytes();
        entries.push(format!("v1,{}", STANDARD.encode(digest)));
    }
    Ok(entries.join(" "))
}

/// Whether one entry of `signature` is `body`'s under `secret`, and `timestamp` is within the
/// tolerance of `now`: what a receiver checks. Compared in constant time.
pub fn verify(secret: &str, id: &str, timestamp: i64, body: &[u8], signature: &str, now: i64) -> bool {
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return false;
    }
    let Ok(key) = key_of(secret) else {
        return false;
    };
    signature.split(' ').any(|entry| {
        entry
            .strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .is_some_and(|digest| mac(&key, id, timestamp, body).verify_slice(&digest).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_signature() {
        // The example in the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        let signed = sign(&[secret], id, 1614265330, body).expect("sign");
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(secret, id, 1614265330, body, &signed, 1614265330 + 10));
    }

    #[test]
    fn a_tampered_body_a_wrong_secret_or_an_old_timestamp_fail() {
        let secret = new_secret();
        let other = new_secret();
        let signed = sign(&[&secret], "msg_1", 1000, b"{}").expect("sign");
        assert!(verify(&secret, "msg_1", 1000, b"{}", &signed, 1000));
        assert!(!verify(&secret, "msg_1", 1000, b"{ }", &signed, 1000));
        assert!(!verify(&secret, "msg_2", 1000, b"{}", &signed, 1000));
        assert!(!verify(&other, "msg_1", 1000, b"{}", &signed, 1000));
        assert!(!verify(
            &secret,
            "msg_1",
            1000,
            b"{}",
            &signed,
            1000 + TOLERANCE_SECS + 1
        ));
    }

    #[test]
    fn while_a_rotation_overlaps_either_secret_verifies() {
        let (old, new) = (new_secret(), new_secret());
        let signed = sign(&[&new, &old], "msg_1", 1000, b"{}").expect("sign");
        assert_eq!(signed.split(' ').count(), 2);
        assert!(verify(&old, "msg_1", 1000, b"{}", &signed, 1000));
        assert!(verify(&new, "msg_1", 1000, b"{}", &signed, 1000));
    }
}
