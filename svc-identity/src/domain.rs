//! Identity's rules, free of I/O: what a valid e-mail, password, slug and name are, how secrets
//! are made and hashed, and how long a login lockout lasts.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::{RngCore, rngs::OsRng};
use sha2::{Digest, Sha256};

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Trims and lower-cases an address and checks its form. Lower-casing the local part too is a
/// deliberate choice: two accounts differing only in case are a support problem, not a feature.
pub fn normalize_email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("is required".into());
    }
    if email.len() > 254 {
        return Err("must be at most 254 characters".into());
    }
    if !email_address::EmailAddress::is_valid(&email) {
        return Err("must be an e-mail address such as name@example.com".into());
    }
    let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    if !domain.contains('.') || domain.starts_with('[') {
        return Err("must have a domain name such as example.com".into());
    }
    Ok(email)
}

/// A small list of the passwords most often seen in breaches; long enough ones only, since
/// shorter ones fail the length rule anyway.
const COMMON_PASSWORDS: &[&str] = &[
    "1234567890",
    "12345678910",
    "123456789012",
    "0123456789",
    "qwertyuiop",
    "1q2w3e4r5t",
    "password123",
    "password1234",
    "iloveyou123",
    "qwerty12345",
    "1qaz2wsx3edc",
    "passw0rd123",
    "abcdefghij",
    "aaaaaaaaaa",
    "letmein1234",
    "welcome123",
    "administrator",
    "changeme123",
];

/// NIST 800-63B style: a length range, no composition rules, not a known-common password, not the
/// e-mail address.
pub fn check_password(password: &str, email: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    let lower = password.to_lowercase();
    if COMMON_PASSWORDS.contains(&lower.as_str()) {
        return Err("is too common; choose another".into());
    }
    if password.chars().all(|c| password.starts_with(c)) {
        return Err("must not repeat a single character".into());
    }
    let local = email.split('@').next().unwrap_or_default();
    if !email.is_empty() && (lower == email || (local.len() >= 4 && lower.contains(local))) {
        return Err("must not contain the e-mail address".into());
    }
    Ok(())
}

/// 0 to 100 printable characters, trimmed.
pub fn check_display_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.chars().count() > 100 {
        return Err("must be at most 100 characters".into());
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(name.to_string())
}

/// Lower-case letters, digits and inner dashes, 3 to 63 characters.
pub fn check_slug(slug: &str) -> Result<(), String> {
    let ok_len = (3..=63).contains(&slug.len());
    let ok_chars = slug
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok_len || !ok_chars || slug.starts_with('-') || slug.ends_with('-') {
        return Err(
            "must be 3 to 63 lower-case letters, digits or dashes, not starting or ending with a dash".into(),
        );
    }
    Ok(())
}

/// 1 to 100 characters after trimming.
pub fn check_required_name(raw: &str) -> Result<String, String> {
    let name = check_display_name(raw)?;
    if name.is_empty() {
        return Err("is required".into());
    }
    Ok(name)
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A refresh token (`rt_` + 256 random bits) and the hash that is stored.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let token = format!("rt_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
    let hash = sha256(token.as_bytes());
    (token, hash)
}

/// Prefix alphabet: lower-case base32-like, no look-alikes.
const PREFIX_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// An API key `tk_<prefix>_<secret>`: the prefix (public, for look-up and display) and the hash
/// of the whole key (what is stored).
pub struct NewApiKey {
    pub prefix: String,
    pub secret: String,
    pub hash: Vec<u8>,
}

pub fn new_api_key() -> NewApiKey {
    let prefix: String = random_bytes::<10>()
        .iter()
        .map(|b| PREFIX_ALPHABET[usize::from(*b) % PREFIX_ALPHABET.len()] as char)
        .collect();
    let secret = format!("tk_{prefix}_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
    let hash = sha256(secret.as_bytes());
    NewApiKey { prefix, secret, hash }
}

/// The prefix of a presented API key, if it has the right shape.
pub fn api_key_prefix(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix("tk_")?;
    let (prefix, body) = rest.split_once('_')?;
    (prefix.len() == 10 && body.len() == 43).then_some(prefix)
}

/// How long to lock after `failures` consecutive failures: nothing below `threshold`, then
/// `base` doubling with each further failure, capped at `max`.
pub fn lockout_for(failures: u64, threshold: u64, base: Duration, max: Duration) -> Option<Duration> {
    if failures < threshold {
        return None;
    }
    let doublings = u32::try_from(failures - threshold).unwrap_or(u32::MAX).min(20);
    Some(base.saturating_mul(1u32 << doublings).min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lower_cased_and_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").as_deref(),
            Ok("ada@example.com")
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@localhost",
            "a b@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn passwords_need_length_and_must_not_be_common_or_the_email() {
        assert!(check_password("correct horse battery", "ada@example.com").is_ok());
        assert!(check_password("short", "ada@example.com").is_err());
        assert!(check_password(&"x".repeat(129), "ada@example.com").is_err());
        assert!(check_password("Password123", "ada@example.com").is_err());
        assert!(check_password("zzzzzzzzzzzz", "ada@example.com").is_err());
        assert!(check_password("adalovelace!2024", "adalovelace@example.com").is_err());
        // Multi-byte characters count as characters, not bytes.
        assert!(check_password("ééééééééé", "").is_err());
        assert!(check_password("ééééééééxy", "").is_ok());
    }

    #[test]
    fn slugs_are_lower_case_words_with_inner_dashes() {
        assert!(check_slug("demo-org").is_ok());
        for bad in ["ab", "Demo", "-demo", "demo-", "demo org", "démo"] {
            assert!(check_slug(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn refresh_tokens_and_api_keys_are_unique_and_only_their_hash_is_kept() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(hash_a, sha256(a.as_bytes()));
        let key = new_api_key();
        assert_eq!(api_key_prefix(&key.secret), Some(key.prefix.as_str()));
        assert_eq!(key.hash, sha256(key.secret.as_bytes()));
        assert_eq!(api_key_prefix("tk_short_x"), None);
        assert_eq!(api_key_prefix("rt_whatever"), None);
    }

    #[test]
    fn lockout_starts_at_the_threshold_doubles_and_is_capped() {
        let base = Duration::from_secs(30);
        let max = Duration::from_secs(900);
        assert_eq!(lockout_for(4, 5, base, max), None);
        assert_eq!(lockout_for(5, 5, base, max), Some(Duration::from_secs(30)));
        assert_eq!(lockout_for(6, 5, base, max), Some(Duration::from_secs(60)));
        assert_eq!(lockout_for(50, 5, base, max), Some(max));
    }
}
