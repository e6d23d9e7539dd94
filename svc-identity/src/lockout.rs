//! Login abuse protection in Redis: failure counters per account and client address, per
//! address, and per account, each with a lock that grows with each failure past its threshold. A locked login is refused before the
//! password is checked (RESOURCE_EXHAUSTED with RetryInfo), for existing and unknown accounts
//! alike, so the lock reveals nothing about which accounts exist.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ticketing_platform::{ApiError, ApiResult, cache::Cache};

use crate::domain::{lockout_for, sha256};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginConfig {
    /// Failures of one account from one client address before that address is locked out of
    /// the account (others may still log in to it).
    pub account_threshold: u64,
    /// Failures from one client address (across accounts) before the address is locked out.
    pub address_threshold: u64,
    /// Failures of one account from any addresses before it locks for everyone: the defence
    /// against a guess spread over many addresses, and the one lock a stranger can cause, so
    /// set well above `account_threshold`; 0 turns it off.
    #[serde(default = "default_account_global_threshold")]
    pub account_global_threshold: u64,
    /// Failures older than this are forgotten (seconds).
    pub window_secs: u64,
    /// First lock; doubles with every further failure (seconds).
    pub base_lockout_secs: u64,
    pub max_lockout_secs: u64,
}

fn default_account_global_threshold() -> u64 {
    50
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            account_threshold: 5,
            address_threshold: 30,
            account_global_threshold: default_account_global_threshold(),
            window_secs: 900,
            base_lockout_secs: 30,
            max_lockout_secs: 900,
        }
    }
}

#[derive(Clone)]
pub struct LoginGuard {
    cache: Cache,
    config: LoginConfig,
}

/// What a login attempt is counted against: the account from this client address, the
/// address across accounts, and the account from everywhere. The address is the end client's
/// (behind the gateway, the one it vouches for), never a header a client wrote.
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

    fn subjects(&self, attempt: &Attempt<'_>) -> Vec<(&'static str, String, u64)> {
        let address = attempt.address.map(client_of).unwrap_or_default();
        let address = address.as_str();
        let mut subjects = vec![(
            "pair",
            format!("{}\0{address}", attempt.email),
            self.config.account_threshold,
        )];
        if !address.is_empty() {
            subjects.push(("addr", address.to_string(), self.config.address_threshold));
        }
        if self.config.account_global_threshold > 0 {
            subjects.push((
                "acct",
                attempt.email.to_string(),
                self.config.account_global_threshold,
            ));
        }
        subjects
    }

    /// RESOURCE_EXHAUSTED while the account or the address is locked.
    pub async fn check(&self, attempt: &Attempt<'_>) -> ApiResult<()> {
        let mut conn = self.cache.pool.get().await?;
        let mut longest: i64 = 0;
        for (kind, subject, _) in self.subjects(attempt) {
            let (_, lock) = self.keys(kind, &subject);
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
            let (fail, lock) = self.keys(kind, &subject);
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
                metrics::counter!("identity_login_lockouts_total", "kind" => kind).increment(1);
                longest = longest.max(Some(lockout));
            }
        }
        Ok(longest)
    }

    /// A successful login clears the account's failures from this address and from everywhere
    /// (not the address's: one good password must not reset a spray across many accounts).
    pub async fn record_success(&self, attempt: &Attempt<'_>) -> ApiResult<()> {
        let mut conn = self.cache.pool.get().await?;
        let mut del = redis::cmd("DEL");
        for (kind, subject, _) in self.subjects(attempt) {
            if kind != "addr" {
                let (fail, lock) = self.keys(kind, &subject);
                del.arg(fail).arg(lock);
            }
        }
        del.query_async::<()>(&mut *conn).await?;
        Ok(())
    }
}

/// The subject an address counts as: IPv4 addresses one each, IPv6 ones by their /64, as a
/// provider hands one to a customer (otherwise one machine steps around the limits by rotating
/// addresses inside its own network).
fn client_of(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            format!("{}/64", std::net::Ipv6Addr::from(octets))
        }
        _ => address.to_string(),
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

#[cfg(test)]
mod tests {
    use super::client_of;

    #[test]
    fn ipv6_clients_count_by_their_64() {
        assert_eq!(client_of("2001:db8::1"), client_of("2001:db8::ffff:1"));
        assert_ne!(client_of("2001:db8::1"), client_of("2001:db8:0:1::1"));
        assert_eq!(client_of("192.0.2.7"), "192.0.2.7");
    }
}
