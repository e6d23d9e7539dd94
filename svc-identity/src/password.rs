//! argon2id password hashing on blocking threads, with a bound on how many run at once: each hash
//! takes tens of milliseconds and ~19 MiB, so unbounded concurrency would let a login flood starve
//! every other call.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString, rand_core::OsRng},
};
use serde::{Deserialize, Serialize};
use ticketing_platform::{ApiError, ApiResult};
use tokio::sync::Semaphore;

/// argon2id cost. The defaults are OWASP's first recommendation (m=19 MiB, t=2, p=1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasswordParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; the rest wait.
    pub max_concurrent: usize,
}

impl Default for PasswordParams {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            max_concurrent: cores * 2,
        }
    }
}

#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// Verified against when the account does not exist, so both cases take the same time and
    /// response times do not reveal which addresses have accounts.
    dummy_hash: Arc<String>,
}

impl PasswordHasher {
    pub fn new(params: &PasswordParams) -> anyhow::Result<Self> {
        let argon = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(params.memory_kib, params.iterations, params.parallelism, None)
                .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?,
        );
        let dummy_hash = argon
            .hash_password(b"not a real password", &SaltString::generate(&mut OsRng))
            .map_err(|e| anyhow::anyhow!("argon2 self-test failed: {e}"))?
            .to_string();
        Ok(Self {
            argon,
            permits: Arc::new(Semaphore::new(params.max_concurrent.max(1))),
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    pub async fn hash(&self, password: String) -> ApiResult<String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::internal("hasher closed"))?;
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || {
            argon
                .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
                .map(|h| h.to_string())
                .map_err(|e| ApiError::internal(format!("hashing failed: {e}")))
        })
        .await
        .map_err(|e| ApiError::internal(format!("hashing task failed: {e}")))?
    }

    /// Whether `password` matches `hash`; with no hash (unknown account) it does the same work
    /// and answers false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> ApiResult<bool> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::internal("hasher closed"))?;
        let argon = self.argon.clone();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash)
                .map_err(|e| ApiError::internal(format!("stored hash unreadable: {e}")))?;
            // The parameters come from the stored hash, so raising the cost later keeps old hashes valid.
            Ok(argon.verify_password(password.as_bytes(), &parsed).is_ok() && known)
        })
        .await
        .map_err(|e| ApiError::internal(format!("verify task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify_only_the_right_password() {
        let hasher = PasswordHasher::new(&PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            ..Default::default()
        })
        .expect("params");
        let a = hasher.hash("correct horse".into()).await.expect("hash");
        let b = hasher.hash("correct horse".into()).await.expect("hash");
        assert!(a.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(
            hasher
                .verify("correct horse".into(), Some(a.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("wrong horse".into(), Some(a))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("not a real password".into(), None)
                .await
                .expect("verify")
        );
    }
}
