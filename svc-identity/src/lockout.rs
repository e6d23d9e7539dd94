//! Login abuse protection in Redis: failure counters per account and per client address, and a
//! lock that grows with each failure past a threshold. A locked login is refused before the
//! password is checked (RESOURCE_EXHAUSTED with RetryInfo), for existing and unknown accounts
//! alike, so the lock reveals nothing about which accounts exist.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ticketing_platform::{ApiError, ApiResult, cache::Cache};

use crate::domain::{lockout_for, sha256};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginConfig {
    /// Failures of one account before it locks.
    pub account_threshold: u64,
    /// Failures from one client address (across accounts) before it locks.
    pub address_threshold: u64,
    /// Failures older than this are forgotten (seconds).
    pub window_secs: u64,
    /// First lock; doubles with every further failure (seconds).
    pub base_lockout_secs: u64,
    pub max_lockout_secs: u64,
    /// Take the client address from `x-forwarded-for` (only behind a trusted gateway).
    pub trust_forwarded_for: bool,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            account_threshold: 5,
            address_threshold: 30,
            window_secs: 900,
            base_lockout_secs: 30,
            max_lockout_secs: 900,
            trust_forwarded_for: false,
        }
    }
}

#[derive(Clone)]
pub struct LoginGuard {
    cache: Cache,
    config: LoginConfig,
}

/// The two subjects a login attempt is counted against.
pub struct Attempt<'a> {
    pub email: &'a str,
    pub address: Option<&'a str>,
}

impl LoginGuard {
    pub fn new(cache: Cache, config: LoginConfig) -> Self {
        Self { cache, config }
    }

    fn keys(&self, kind: &str, subject: &str) -> (String, String) {
        // Hash the subject: keys then hold no e-mail addresses and have a bounded length.
        let id = hex(&sha256(subject.as_bytes())[..16]);
        (
            self.cache.key(&["login", "fail", kind, &id]),
            self.cache.key(&["login", "lock", kind, &id]),
        )
    }

    fn subjects<'a>(&self, attempt: &Attempt<'a>) -> Vec<(&'static str, &'a str, u64)> {
        let mut subjects = vec![("acct", attempt.email, self.config.account_threshold)];
        if let Some(address) = attempt.address {
            subjects.push(("addr", address, self.config.address_threshold));
        }
        subjects
    }

    /// RESOURCE_EXHAUSTED while the account or the address is locked.
    pub async fn check(&self, attempt: &Attempt<'_>) -> ApiResult<()> {
        let mut conn = self.cache.pool.get().await?;
        let mut longest: i64 = 0;
        for (kind, subject, _) in self.subjects(attempt) {
            let (_, lock) = self.keys(kind, subject);
            let ttl: i64 = redis::cmd("PTTL").arg(&lock).query_async(&mut *conn).await?;
            longest = longest.max(ttl);
        }
        if longest > 0 {
            let retry_after =
                Duration::from_millis(u64::try_from(longest).unwrap_or(0)).max(Duration::from_secs(1));
            return Err(locked(retry_after));
        }
        Ok(())
    }

    /// Counts a failure; returns the lock it caused, if any.
    pub async fn record_failure(&self, attempt: &Attempt<'_>) -> ApiResult<Option<Duration>> {
        let mut conn = self.cache.pool.get().await?;
        let window_ms = self.config.window_secs.saturating_mul(1000);
        let mut longest = None;
        for (kind, subject, threshold) in self.subjects(attempt) {
            let (fail, lock) = self.keys(kind, subject);
            let (failures,): (u64,) = redis::pipe()
                .atomic()
                .incr(&fail, 1)
                .cmd("PEXPIRE")
                .arg(&fail)
                .arg(window_ms)
                .arg("NX")
                .ignore()
                .query_async(&mut *conn)
                .await?;
            let lockout = lockout_for(
                failures,
                threshold,
                Duration::from_secs(self.config.base_lockout_secs),
                Duration::from_secs(self.config.max_lockout_secs),
            );
            if let Some(lockout) = lockout {
                let lock_ms = u64::try_from(lockout.as_millis()).unwrap_or(u64::MAX).max(1);
                // The counter must outlive the lock, so the next failure doubles it.
                let keep_ms = window_ms.max(lock_ms.saturating_mul(2));
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&lock)
                    .arg(1)
                    .arg("PX")
                    .arg(lock_ms)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&fail)
                    .arg(keep_ms)
                    .ignore()
                    .query_async::<()>(&mut *conn)
                    .await?;
                if kind == "acct" {
                    metrics::counter!("identity_login_lockouts_total").increment(1);
                }
                longest = longest.max(Some(lockout));
            }
        }
        Ok(longest)
    }

    /// A successful login clears the account's failures (not the address's: one good password
    /// must not reset a spray across many accounts).
    pub async fn record_success(&self, email: &str) -> ApiResult<()> {
        let mut conn = self.cache.pool.get().await?;
        let (fail, lock) = self.keys("acct", email);
        redis::cmd("DEL")
            .arg(&fail)
            .arg(&lock)
            .query_async::<()>(&mut *conn)
            .await?;
        Ok(())
    }
}

pub fn locked(retry_after: Duration) -> ApiError {
    ApiError::ResourceExhausted {
        reason: "LOGIN_LOCKED",
        message: format!(
            "too many failed logins; try again in {} seconds",
            retry_after.as_secs().max(1)
        ),
        retry_after: Some(retry_after),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
