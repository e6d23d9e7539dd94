//! Waiting lists of sold-out tiers.
//!
//! PostgreSQL has the entries; Redis has the lines, and hands returned places to their heads
//! inside the scripts that return them (see `lua.rs`): an offer is an ordinary hold of the
//! buyer's whose id is the entry's, so orders needs nothing new, nobody else can take it, and
//! one that runs out passes on like any expired hold. Here the service puts entries in line,
//! takes them out, records the offers Redis made (with their outbox event) and settles them,
//! and repairs what a crash or a lost Redis left behind. Every step is idempotent, so
//! replicas may run the same round.

use std::{collections::HashSet, time::Duration};

use chrono::{TimeZone, Utc};
use ticketing_platform::{ApiError, ApiResult};
use uuid::Uuid;

use super::{Inventory, first, strings};
use crate::{
    domain::{HoldStatus, WaitlistStatus},
    store::{
        self,
        waitlist::{self as entries, EntryRow, JoinRefused, Recorded},
    },
};

/// A waiting entry Redis does not have in line this long after it joined was cut short (its
/// process died between PostgreSQL and Redis, or Redis lost it) and is put in line again.
const REPAIR_AFTER: Duration = Duration::from_secs(30);

/// Why a buyer could not join.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitlistRefused {
    /// Places are free: hold them instead.
    PlacesAvailable {
        free: i64,
    },
    Limit {
        limit: i64,
    },
    Closed,
    UnknownTier,
}

impl Inventory {
    /// Puts `owner` in the tier's line for `quantity` places, or finds their live entry there.
    pub async fn join_waitlist(
        &self,
        event: Uuid,
        tier: &str,
        owner: Uuid,
        quantity: i32,
    ) -> ApiResult<Result<EntryRow, WaitlistRefused>> {
        let row = {
            let mut conn = self.pool.get().await?;
            store::find_event(&mut conn, event).await?
        }
        .ok_or(ApiError::NotFound {
            resource: "event on sale",
        })?;
        if row.closed {
            return Ok(Err(WaitlistRefused::Closed));
        }
        // Loaded before the entry exists, so a load does not put it in line unchecked.
        self.ensure_loaded(event, false).await?;
        let joined = {
            let mut conn = self.pool.get().await?;
            entries::join(
                &mut conn,
                Uuid::now_v7(),
                event,
                tier,
                owner,
                quantity,
                row.per_customer_limit,
            )
            .await?
        };
        let (entry, created) = match joined {
            Ok(joined) => joined,
            Err(JoinRefused::Limit { .. }) => {
                return Ok(Err(WaitlistRefused::Limit {
                    limit: row.per_customer_limit.into(),
                }));
            }
        };
        if !created {
            return Ok(Ok(entry));
        }
        let reply = self.put_in_line(&entry, "new").await?;
        let refused = match reply.first().map(String::as_str) {
            Some("OK" | "ALREADY") => return Ok(Ok(entry)),
            Some("AVAILABLE") => WaitlistRefused::PlacesAvailable {
                free: reply.get(1).and_then(|n| n.parse().ok()).unwrap_or(0),
            },
            Some("LIMIT") => WaitlistRefused::Limit {
                limit: row.per_customer_limit.into(),
            },
            Some("CLOSED") => WaitlistRefused::Closed,
            Some("UNKNOWN_TIER") => WaitlistRefused::UnknownTier,
            other => return Err(ApiError::internal(format!("unexpected join reply {other:?}"))),
        };
        let mut conn = self.pool.get().await?;
        entries::forget(&mut conn, entry.entry_id).await?;
        Ok(Err(refused))
    }

    async fn put_in_line(&self, entry: &EntryRow, mode: &str) -> ApiResult<Vec<String>> {
        let args = [
            entry.entry_id.to_string(),
            entry.tier_id.clone(),
            entry.quantity.to_string(),
            entry.owner_id.to_string(),
            entry.position.to_string(),
            mode.to_string(),
            self.offer_ttl.as_millis().to_string(),
            self.record_grace.as_millis().to_string(),
        ];
        let mut reply = strings(self.invoke(&self.scripts.join, entry.event_id, &args).await?);
        if reply.first().map(String::as_str) == Some("NOT_LOADED") {
            self.ensure_loaded(entry.event_id, false).await?;
            reply = strings(self.invoke(&self.scripts.join, entry.event_id, &args).await?);
        }
        Ok(reply)
    }

    /// Takes the entry out of its line; an offer it has is given up and passes on. Idempotent.
    pub async fn leave_waitlist(&self, entry: &EntryRow) -> ApiResult<EntryRow> {
        let mut conn = self.pool.get().await?;
        entries::settle(&mut conn, entry.entry_id, WaitlistStatus::Left, Some("declined")).await?;
        let now = entries::find(&mut conn, entry.entry_id)
            .await?
            .ok_or(ApiError::NotFound {
                resource: "waitlist entry",
            })?;
        drop(conn);
        if now.status == WaitlistStatus::Left {
            self.invoke(&self.scripts.leave, entry.event_id, &[entry.entry_id.to_string()])
                .await?;
            // An offer Redis made, recorded or not, is the hold with the entry's id.
            if self
                .get_hold(entry.entry_id)
                .await?
                .is_some_and(|hold| hold.status == HoldStatus::Active)
            {
                match self.release(entry.entry_id, None).await {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {}
                    Err(other) => return Err(other),
                }
            }
        }
        Ok(now)
    }

    /// One round over every event with a live entry: records the offers Redis made, settles
    /// the offers that ended, and repairs lines. Returns the offers recorded.
    pub async fn drive_waitlists(&self) -> ApiResult<u64> {
        let events = {
            let mut conn = self.pool.get().await?;
            entries::live_events(&mut conn).await?
        };
        let mut made = 0;
        for event in events {
            match self.drive_event(event).await {
                Ok(n) => made += n,
                Err(error) => tracing::warn!(%error, %event, "waiting-list round of an event failed"),
            }
        }
        if made > 0 {
            metrics::counter!("inventory_waitlist_offers_total").increment(made);
            self.outbox.notify();
        }
        Ok(made)
    }

    async fn drive_event(&self, event: Uuid) -> ApiResult<u64> {
        let closed = {
            let mut conn = self.pool.get().await?;
            store::find_event(&mut conn, event)
                .await?
                .is_none_or(|e| e.closed)
        };
        let reply = self.invoke(&self.scripts.waitlist_state, event, &[]).await?;
        let loaded = first(&reply).as_deref() == Some("1");
        let list = |i: usize| match &reply {
            redis::Value::Array(parts) => parts
                .get(i)
                .and_then(|v| redis::from_redis_value_ref::<Vec<String>>(v).ok())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let (offered, in_line) = (list(1), list(2));
        let in_line: HashSet<String> = in_line.into_iter().collect();
        // Offers Redis made are recorded first, also those of an event closed since.
        let mut made = 0;
        let mut just_offered = HashSet::new();
        for pair in offered.chunks(2) {
            let [entry, value] = pair else { continue };
            just_offered.insert(entry.clone());
            let Ok(entry_id) = Uuid::parse_str(entry) else {
                continue;
            };
            made += self.record(entry_id, value).await?;
            self.invoke(&self.scripts.recorded, event, &[entry.clone(), value.clone()])
                .await?;
        }
        if closed {
            // Redis ended the lines when sales closed.
            let mut conn = self.pool.get().await?;
            entries::remove_waiting(&mut conn, event).await?;
        }
        let live = {
            let mut conn = self.pool.get().await?;
            entries::live_of_event(&mut conn, event).await?
        };
        let now = Utc::now();
        for entry in live.iter().filter(|e| e.status == WaitlistStatus::Offered) {
            self.settle_offer(entry, now).await?;
        }
        if !loaded {
            // Loading rebuilds the lines; the next round goes on from there.
            if !closed {
                self.ensure_loaded(event, false).await?;
            }
            return Ok(made);
        }
        let repair_after = chrono::Duration::from_std(REPAIR_AFTER).unwrap_or_default();
        for entry in live.iter().filter(|e| e.status == WaitlistStatus::Waiting) {
            let id = entry.entry_id.to_string();
            if closed
                || in_line.contains(&id)
                || just_offered.contains(&id)
                || now - entry.joined_at <= repair_after
                || self.get_hold(entry.entry_id).await?.is_some()
            {
                continue;
            }
            tracing::warn!(entry_id = %id, %event, "waiting-list entry missing from its line; putting it back");
            let reply = self.put_in_line(entry, "repair").await?;
            if let Some("UNKNOWN_TIER" | "CLOSED") = reply.first().map(String::as_str) {
                // Its tier left the map, or sales closed: it leaves the list.
                let mut conn = self.pool.get().await?;
                entries::settle(&mut conn, entry.entry_id, WaitlistStatus::Removed, None).await?;
            }
        }
        // In line without a live entry (the buyer left and Redis missed it): out of line.
        let allowed: HashSet<String> = live.iter().map(|e| e.entry_id.to_string()).collect();
        for stray in in_line.difference(&allowed) {
            self.invoke(&self.scripts.leave, event, std::slice::from_ref(stray))
                .await?;
        }
        Ok(made)
    }

    /// Records one offer Redis made (or an entry it dropped for the per-customer limit).
    async fn record(&self, entry_id: Uuid, value: &str) -> ApiResult<u64> {
        if value == "LIMIT" {
            let mut conn = self.pool.get().await?;
            entries::settle(&mut conn, entry_id, WaitlistStatus::Removed, None).await?;
            return Ok(0);
        }
        let expires_at = value
            .parse::<i64>()
            .ok()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .ok_or_else(|| ApiError::internal("offer expiry unreadable"))?;
        let seats = self
            .get_hold(entry_id)
            .await?
            .map(|hold| hold.seats)
            .unwrap_or_default();
        let recorded = {
            let mut conn = self.pool.get().await?;
            entries::record_offer(&mut conn, entry_id, expires_at, &seats).await?
        };
        match recorded {
            Recorded::Made(entry) => {
                tracing::info!(entry_id = %entry.entry_id, event_id = %entry.event_id, tier = %entry.tier_id, "places offered to a waiting buyer");
                Ok(1)
            }
            Recorded::Already => Ok(0),
            Recorded::Gone => {
                // The buyer left before the offer was recorded: it passes on.
                match self.release(entry_id, None).await {
                    Ok(_) | Err(ApiError::NotFound { .. }) => Ok(0),
                    Err(other) => Err(other),
                }
            }
        }
    }

    /// Bookkeeping of an offer from its hold: Redis has already passed on what was not bought.
    async fn settle_offer(&self, entry: &EntryRow, now: chrono::DateTime<Utc>) -> ApiResult<()> {
        let ending = match self.get_hold(entry.entry_id).await? {
            Some(hold) => match hold.status {
                HoldStatus::Committed => Some((WaitlistStatus::Fulfilled, "accepted")),
                HoldStatus::Released => Some((WaitlistStatus::Lapsed, "declined")),
                HoldStatus::Expired => Some((WaitlistStatus::Lapsed, "lapsed")),
                HoldStatus::Active | HoldStatus::Committing => None,
            },
            // Its record is gone (Redis lost it, or it was committed long ago): the ledger
            // knows whether it was bought; else it is made again at the next load while it
            // runs, and over after.
            None => {
                let bought = {
                    let mut conn = self.pool.get().await?;
                    store::order_of_hold(&mut conn, entry.entry_id).await?
                };
                if bought.is_some() {
                    Some((WaitlistStatus::Fulfilled, "accepted"))
                } else {
                    entry
                        .offer_expires_at
                        .is_none_or(|at| at <= now)
                        .then_some((WaitlistStatus::Lapsed, "lapsed"))
                }
            }
        };
        if let Some((next, outcome)) = ending {
            let mut conn = self.pool.get().await?;
            if entries::settle(&mut conn, entry.entry_id, next, Some(outcome))
                .await?
                .is_some()
            {
                self.outbox.notify();
            }
        }
        Ok(())
    }
}
