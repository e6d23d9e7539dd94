//! Keeping Redis true to the ledger: how an event's Redis state differs from what PostgreSQL
//! has sold, and the reconciler that repairs a drift that lasts.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ticketing_platform::{ApiError, ApiResult};
use uuid::Uuid;

use super::{Inventory, is_loaded};
use crate::store;

/// Where Redis and the ledger disagree about what is sold of one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// Seats the ledger has sold that Redis shows free (not held, not sold).
    pub sold_shown_free: Vec<String>,
    /// Seats Redis shows sold that the ledger does not have sold.
    pub shown_sold_unsold: Vec<String>,
    /// (tier, sold in Redis, sold in the ledger) where the two differ.
    pub tier_counts: Vec<(String, i64, i64)>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.sold_shown_free.is_empty() && self.shown_sold_unsold.is_empty() && self.tier_counts.is_empty()
    }

    /// Places shown wrongly: each seat once, and each tier's difference in count.
    pub fn places(&self) -> u64 {
        let seats = self.sold_shown_free.len() + self.shown_sold_unsold.len();
        let counts: u64 = self.tier_counts.iter().map(|(_, a, b)| a.abs_diff(*b)).sum();
        (seats as u64).max(counts)
    }
}

/// Keeps Redis's counts true to the ledger: every check compares each event on sale that Redis
/// has loaded; a drift seen twice in a row, unchanged (so not a commit or return in flight
/// between its two steps), is repaired by rebuilding the event from the ledger, and logged.
#[derive(Clone)]
pub struct Reconciler {
    inventory: Inventory,
    seen: Arc<tokio::sync::Mutex<HashMap<Uuid, Drift>>>,
}

impl Reconciler {
    pub fn new(inventory: Inventory) -> Self {
        Self {
            inventory,
            seen: Default::default(),
        }
    }

    /// One check of every event; returns how many places were shown wrongly.
    pub async fn reconcile(&self) -> ApiResult<u64> {
        let mut seen = self.seen.lock().await;
        let events = {
            let mut conn = self.inventory.pool.get().await?;
            store::open_events(&mut conn).await?
        };
        let mut drifting = HashMap::new();
        let mut shown_wrongly = 0;
        for event in events {
            // A commit between its steps is the commit recovery's to settle: a rebuild now would
            // count its places twice once it finishes.
            if self.inventory.commits_in_flight(event).await? > 0 {
                continue;
            }
            let Some(drift) = self.inventory.drift_of(event).await? else {
                continue;
            };
            if drift.is_empty() {
                continue;
            }
            shown_wrongly += drift.places();
            if seen.get(&event) == Some(&drift) {
                tracing::warn!(%event, ?drift, "redis disagreed with the ledger; rebuilding the event from it");
                self.inventory.ensure_loaded(event, true).await?;
                metrics::counter!("inventory_drift_repairs_total").increment(1);
            } else {
                tracing::info!(%event, ?drift, "redis and the ledger differ; repaired if it lasts");
                drifting.insert(event, drift);
            }
        }
        *seen = drifting;
        metrics::gauge!("inventory_ledger_drift_places").set(shown_wrongly as f64);
        Ok(shown_wrongly)
    }
}

impl Inventory {
    /// Holds of the event marked "committing" in Redis (a commit between its steps).
    async fn commits_in_flight(&self, event: Uuid) -> ApiResult<u64> {
        let mut conn = self.cache.pool.get().await?;
        Ok(redis::cmd("ZCARD")
            .arg(format!("{}:committing", self.event_prefix(event)))
            .query_async(&mut *conn)
            .await?)
    }

    /// How the event's Redis state differs from the ledger; None when Redis has not loaded it.
    pub async fn drift_of(&self, event: Uuid) -> ApiResult<Option<Drift>> {
        let reply = self
            .invoke(&self.scripts.snapshot, event, &["0".to_string()])
            .await?;
        if !is_loaded(&reply) {
            return Ok(None);
        }
        let redis::Value::Array(parts) = reply else {
            return Err(ApiError::internal("bad snapshot"));
        };
        let list = |i: usize| {
            parts
                .get(i)
                .and_then(|v| redis::from_redis_value_ref::<Vec<String>>(v).ok())
                .unwrap_or_default()
        };
        let mut shown: HashMap<String, i64> = HashMap::new();
        for pair in list(3).chunks(2) {
            if let [field, value] = pair
                && let Some(tier) = field.strip_suffix(":sold")
            {
                shown.insert(tier.to_string(), value.parse().unwrap_or(0));
            }
        }
        // Seats kept for a waiting list are shown held but belong to no commit.
        let owed: HashSet<String> = list(7).into_iter().collect();
        let held: HashSet<String> = list(4).into_iter().filter(|s| !owed.contains(s)).collect();
        let shown_sold: HashSet<String> = list(5).into_iter().collect();
        let (ledger_seats, quotas) = {
            let mut conn = self.pool.get().await?;
            store::ledger_of(&mut conn, event).await?
        };
        let mut ledger: HashMap<String, i64> = quotas.into_iter().collect();
        let mut sold_seats = HashSet::new();
        for (seat, tier) in ledger_seats {
            *ledger.entry(tier).or_default() += 1;
            sold_seats.insert(seat);
        }
        let mut drift = Drift {
            // A seat held in Redis may be one a commit is finishing: the repeat check tells.
            sold_shown_free: sold_seats
                .iter()
                .filter(|s| !shown_sold.contains(*s) && !held.contains(*s))
                .cloned()
                .collect(),
            shown_sold_unsold: shown_sold.difference(&sold_seats).cloned().collect(),
            tier_counts: Vec::new(),
        };
        let tiers: HashSet<&String> = shown.keys().chain(ledger.keys()).collect();
        for tier in tiers {
            let (a, b) = (
                shown.get(tier).copied().unwrap_or(0),
                ledger.get(tier).copied().unwrap_or(0),
            );
            if a != b {
                drift.tier_counts.push((tier.clone(), a, b));
            }
        }
        drift.sold_shown_free.sort();
        drift.shown_sold_unsold.sort();
        drift.tier_counts.sort();
        Ok(Some(drift))
    }
}
