//! Holds and sales: the Redis fast path (atomic Lua scripts) in front of PostgreSQL's ledger.
//!
//! A commit goes: Redis marks the hold "committing" (only if active and unexpired, so it can no
//! longer expire under us) -> PostgreSQL records the sale in one transaction (unique per seat,
//! quota CHECK) -> Redis marks the seats sold. If PostgreSQL refuses, the hold goes back to
//! active. If Redis loses its state, the next call rebuilds the event from PostgreSQL; holds are
//! lost (they may be), sales never are.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, TimeZone, Utc};
use diesel_async::AsyncConnection;
use ticketing_platform::{ApiError, ApiResult, cache::Cache, db::PgPool, messaging::OutboxSignal};
use uuid::Uuid;

use crate::{
    domain::{HoldStatus, WaitlistStatus},
    lua::Scripts,
    store::{self, CommitRefused, Configuration, EventState, Item},
};

mod reconcile;
mod recovery;
mod waitlist;

pub use reconcile::{Drift, Reconciler};
pub use waitlist::WaitlistRefused;

/// A hold as Redis has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldView {
    pub id: Uuid,
    pub event_id: Uuid,
    pub owner: Uuid,
    pub status: HoldStatus,
    pub seats: Vec<String>,
    pub ga_tier: Option<(String, i32)>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub order_id: Option<Uuid>,
}

/// Per-tier counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierCounts {
    pub total: i64,
    pub held: i64,
    pub sold: i64,
}

impl TierCounts {
    pub fn free(&self) -> i64 {
        (self.total - self.held - self.sold).max(0)
    }
}

/// A consistent picture of an event.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub sequence: i64,
    pub closed: bool,
    pub tiers: HashMap<String, TierCounts>,
    pub held: Vec<String>,
    pub sold: Vec<String>,
    /// Every seat (empty when only counts were asked for).
    pub seats: Vec<String>,
}

/// Why a hold was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HoldRefused {
    Taken(Vec<String>),
    NotEnough { free: i64 },
    UnknownSeats(Vec<String>),
    UnknownTier,
    Closed,
    Limit { already: i64, limit: i64 },
}

/// What to hold.
pub enum Want<'a> {
    Seats(&'a [String]),
    Quantity { tier: &'a str, quantity: i32 },
}

/// What [`Inventory::reclaim`] takes back for an order.
pub struct Reclaim<'a> {
    pub event: Uuid,
    pub owner: Uuid,
    /// The order's own hold.
    pub hold: Uuid,
    pub places: Want<'a>,
}

/// How long places taken back for a late payment are held before their commit (which follows
/// at once).
const RECLAIM_HOLD_TTL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Inventory {
    pool: PgPool,
    cache: Cache,
    scripts: Arc<Scripts>,
    /// How long a hold record outlives its expiry in Redis (for GetHold to say "expired").
    record_grace: Duration,
    /// Loads of one event take turns (events share a gate by their id's hash).
    load_gates: Arc<[tokio::sync::Mutex<()>; LOAD_GATES]>,
    /// How long places offered to the head of a waiting list are held for them.
    offer_ttl: Duration,
    /// Wakes the outbox relay after an offer was recorded.
    outbox: OutboxSignal,
}

/// Seats per staging script: a few milliseconds of Redis each, and within what Lua's `unpack`
/// takes.
const STAGE_CHUNK: usize = 1_000;

const LOAD_GATES: usize = 64;

fn map_redis(error: redis::RedisError) -> ApiError {
    ApiError::from(error)
}

impl Inventory {
    pub fn new(pool: PgPool, cache: Cache) -> Self {
        Self {
            pool,
            cache,
            scripts: Arc::new(Scripts::new()),
            record_grace: Duration::from_secs(600),
            load_gates: Arc::new(std::array::from_fn(|_| tokio::sync::Mutex::new(()))),
            offer_ttl: Duration::from_secs(1800),
            outbox: OutboxSignal::default(),
        }
    }

    /// Waiting-list offers last `offer_ttl`; recording one wakes `outbox`.
    pub fn with_waitlist(mut self, offer_ttl: Duration, outbox: OutboxSignal) -> Self {
        self.offer_ttl = offer_ttl;
        self.outbox = outbox;
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn event_prefix(&self, event: Uuid) -> String {
        self.cache.key(&[&format!("{{{event}}}")])
    }

    fn global_prefix(&self) -> String {
        self.cache.key(&[])
    }

    /// The channel an event's deltas are published on.
    pub fn channel_of(&self, event: Uuid) -> String {
        format!("{}:updates", self.event_prefix(event))
    }

    async fn invoke(&self, script: &redis::Script, event: Uuid, args: &[String]) -> ApiResult<redis::Value> {
        let mut conn = self.cache.shared().await?;
        let mut invocation = script.prepare_invoke();
        invocation.arg(self.event_prefix(event)).arg(self.global_prefix());
        for a in args {
            invocation.arg(a);
        }
        invocation.invoke_async(&mut conn).await.map_err(map_redis)
    }

    /// Loads the event into Redis from PostgreSQL when Redis does not have it (first use, or
    /// after a flush or restart). NOT_FOUND when the event is not sellable at all.
    ///
    /// One load per event at a time in this replica: after a flush every call in a sale finds
    /// the event missing, and all but the first then find it loaded instead of each reading
    /// PostgreSQL and staging the whole map.
    pub async fn ensure_loaded(&self, event: Uuid, force: bool) -> ApiResult<()> {
        let gate = &self.load_gates[(event.as_u128() % LOAD_GATES as u128) as usize];
        let _turn = gate.lock().await;
        if !force && self.loaded_in_redis(event).await? {
            return Ok(());
        }
        let state = {
            let mut conn = self.pool.get().await?;
            store::load_state(&mut conn, event).await?
        };
        let state = state.ok_or(ApiError::NotFound {
            resource: "event on sale",
        })?;
        self.load(&state, force).await
    }

    async fn loaded_in_redis(&self, event: Uuid) -> ApiResult<bool> {
        let mut conn = self.cache.shared().await?;
        let loaded: Option<String> = redis::cmd("HGET")
            .arg(format!("{}:meta", self.event_prefix(event)))
            .arg("loaded")
            .query_async(&mut conn)
            .await
            .map_err(map_redis)?;
        Ok(loaded.as_deref() == Some("1"))
    }

    /// Stages the seat map in short scripts, then swaps it in with the rest in one. Tries again
    /// if the staged map went missing (a flush in between).
    async fn load(&self, state: &EventState, force: bool) -> ApiResult<()> {
        let e = &state.event;
        let sold: HashSet<&str> = state.sold.iter().map(String::as_str).collect();
        for _ in 0..3 {
            let load_id = Uuid::now_v7().simple().to_string();
            // (total, sold) per seat tier, in the map's order.
            let mut seat_tiers: Vec<(&str, usize, usize)> = Vec::new();
            for (index, chunk) in state.seats.chunks(STAGE_CHUNK).enumerate() {
                let mut args = Vec::with_capacity(1 + 4 * chunk.len());
                args.push(load_id.clone());
                for (offset, (seat, tier)) in chunk.iter().enumerate() {
                    let is_sold = sold.contains(seat.as_str());
                    let at = match seat_tiers.iter().position(|(t, ..)| *t == tier.as_str()) {
                        Some(at) => at,
                        None => {
                            seat_tiers.push((tier.as_str(), 0, 0));
                            seat_tiers.len() - 1
                        }
                    };
                    seat_tiers[at].1 += 1;
                    seat_tiers[at].2 += usize::from(is_sold);
                    let position = index * STAGE_CHUNK + offset + 1;
                    args.extend([
                        seat.clone(),
                        tier.clone(),
                        position.to_string(),
                        if is_sold { "0" } else { "1" }.to_string(),
                    ]);
                }
                self.invoke(&self.scripts.stage, e.event_id, &args).await?;
            }
            let mut args = vec![
                load_id,
                if force { "1" } else { "0" }.to_string(),
                e.version.to_string(),
                e.per_customer_limit.to_string(),
                if e.closed { "1" } else { "0" }.to_string(),
                state.seats.len().to_string(),
                seat_tiers.len().to_string(),
            ];
            for (tier, total, sold) in &seat_tiers {
                args.extend([tier.to_string(), total.to_string(), sold.to_string()]);
            }
            args.push(state.quotas.len().to_string());
            for (tier, capacity, sold) in &state.quotas {
                args.extend([tier.clone(), capacity.to_string(), sold.to_string()]);
            }
            args.push(state.sold.len().to_string());
            args.extend(state.sold.iter().cloned());
            args.push(state.bought.len().to_string());
            for (owner, places) in &state.bought {
                args.extend([format!("{owner}:sold"), places.to_string()]);
            }
            args.extend([
                self.offer_ttl.as_millis().to_string(),
                self.record_grace.as_millis().to_string(),
            ]);
            // Entries in line, and announced offers still running (made again if Redis lost
            // their hold); an offer past its deadline is only settled.
            let now = Utc::now();
            let waiting: Vec<_> = state
                .waitlist
                .iter()
                .filter(|e| e.status == WaitlistStatus::Waiting)
                .collect();
            args.push(waiting.len().to_string());
            for e in waiting {
                args.extend([
                    e.entry_id.to_string(),
                    e.tier_id.clone(),
                    e.quantity.to_string(),
                    e.owner_id.to_string(),
                    e.position.to_string(),
                ]);
            }
            let offers: Vec<_> = state
                .waitlist
                .iter()
                .filter(|e| e.status == WaitlistStatus::Offered)
                .filter_map(|e| e.offer_expires_at.filter(|at| *at > now).map(|at| (e, at)))
                .collect();
            args.push(offers.len().to_string());
            for (e, expires) in offers {
                args.extend([
                    e.entry_id.to_string(),
                    e.tier_id.clone(),
                    e.quantity.to_string(),
                    e.owner_id.to_string(),
                    expires.timestamp_millis().to_string(),
                    e.offer_seat_ids.join(","),
                ]);
            }
            let result = self.invoke(&self.scripts.load, e.event_id, &args).await?;
            let outcome = first(&result);
            if outcome.as_deref() == Some("RESTAGE") {
                tracing::warn!(event_id = %e.event_id, "staged seat map went missing; loading again");
                continue;
            }
            tracing::info!(event_id = %e.event_id, seats = state.seats.len(), outcome = ?outcome, "event state loaded into redis");
            return Ok(());
        }
        Err(ApiError::Unavailable(
            "the event's state could not be loaded into the cache".into(),
        ))
    }

    /// Stores a configuration and makes it live. Idempotent on the version.
    pub async fn configure(&self, config: &Configuration) -> ApiResult<i64> {
        let version = {
            let mut conn = self.pool.get().await?;
            store::configure(&mut conn, config).await?
        };
        self.ensure_loaded(config.event.event_id, true).await?;
        Ok(version)
    }

    pub async fn close(&self, event: Uuid) -> ApiResult<()> {
        {
            let mut conn = self.pool.get().await?;
            store::close_event(&mut conn, event).await?;
        }
        self.invoke(&self.scripts.close, event, &[]).await?;
        Ok(())
    }

    /// Holds `want` for `owner`, all or nothing; returns the hold and what it holds.
    pub async fn hold(
        &self,
        event: Uuid,
        owner: Uuid,
        want: Want<'_>,
        ttl: Duration,
    ) -> ApiResult<Result<(HoldView, Vec<Item>), HoldRefused>> {
        // The hot path touches Redis only; PostgreSQL is read just to rebuild a lost event.
        let hold_id = Uuid::now_v7();
        let places = match &want {
            Want::Seats(seats) => seats.len(),
            Want::Quantity { quantity, .. } => usize::try_from(*quantity).unwrap_or(0),
        };
        let mut args = vec![
            hold_id.to_string(),
            owner.to_string(),
            ttl.as_millis().to_string(),
            (ttl + self.record_grace).as_millis().to_string(),
            places.to_string(),
        ];
        match &want {
            Want::Seats(seats) => {
                args.push("seats".into());
                args.extend(seats.iter().cloned());
            }
            Want::Quantity { tier, quantity } => {
                args.extend(["quantity".into(), tier.to_string(), quantity.to_string()]);
            }
        }
        let mut reply = strings(self.invoke(&self.scripts.hold, event, &args).await?);
        if reply.first().map(String::as_str) == Some("NOT_LOADED") {
            self.ensure_loaded(event, false).await?;
            reply = strings(self.invoke(&self.scripts.hold, event, &args).await?);
        }
        let (head, rest) = reply
            .split_first()
            .ok_or_else(|| ApiError::internal("empty hold reply"))?;
        let refused = match head.as_str() {
            "OK" => {
                metrics::counter!("inventory_holds_total", "result" => "held").increment(1);
                let created = millis(rest.first())?;
                let expires = millis(rest.get(1))?;
                let seats = rest.get(2).map(|s| split_list(s)).unwrap_or_default();
                let tiers = rest.get(3).map(|s| split_list(s)).unwrap_or_default();
                let ga_tier = match want {
                    Want::Quantity { tier, quantity } if seats.is_empty() => {
                        Some((tier.to_string(), quantity))
                    }
                    _ => None,
                };
                let mut items: Vec<Item> = seats
                    .iter()
                    .zip(tiers)
                    .map(|(seat, tier)| Item {
                        tier_id: tier,
                        seat_id: Some(seat.clone()),
                        ga_area_id: None,
                        quantity: 1,
                    })
                    .collect();
                if let Some((tier, quantity)) = &ga_tier {
                    items.push(Item {
                        tier_id: tier.clone(),
                        seat_id: None,
                        ga_area_id: None,
                        quantity: *quantity,
                    });
                }
                let view = HoldView {
                    id: hold_id,
                    event_id: event,
                    owner,
                    status: HoldStatus::Active,
                    seats,
                    ga_tier,
                    created_at: created,
                    expires_at: expires,
                    order_id: None,
                };
                return Ok(Ok((view, items)));
            }
            "TAKEN" => match want {
                Want::Seats(_) => HoldRefused::Taken(rest.to_vec()),
                Want::Quantity { .. } => HoldRefused::NotEnough {
                    free: parse_i64(rest.first()),
                },
            },
            "UNKNOWN_SEAT" => HoldRefused::UnknownSeats(rest.to_vec()),
            "UNKNOWN_TIER" => HoldRefused::UnknownTier,
            "CLOSED" => HoldRefused::Closed,
            "LIMIT" => HoldRefused::Limit {
                already: parse_i64(rest.first()),
                limit: parse_i64(rest.get(1)),
            },
            "NOT_LOADED" => {
                return Err(ApiError::Unavailable(
                    "inventory state is being rebuilt, try again".into(),
                ));
            }
            other => return Err(ApiError::internal(format!("unexpected hold reply {other}"))),
        };
        metrics::counter!("inventory_holds_total", "result" => "refused").increment(1);
        Ok(Err(refused))
    }

    pub async fn get_hold(&self, hold: Uuid) -> ApiResult<Option<HoldView>> {
        let mut conn = self.cache.shared().await?;
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.cache.key(&["hold", &hold.to_string()]))
            .query_async(&mut conn)
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        // `ep` is the event's key prefix, `<prefix>:{<event>}`.
        let event = fields
            .get("ep")
            .and_then(|p| p.get(p.rfind('{')? + 1..p.rfind('}')?))
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or_else(|| ApiError::internal("hold event unreadable"))?;
        let expires_at = millis(fields.get("expires"))?;
        let mut status =
            HoldStatus::parse(&get("status")).ok_or_else(|| ApiError::internal("hold status unreadable"))?;
        if status == HoldStatus::Active && expires_at <= Utc::now() {
            status = HoldStatus::Expired;
        }
        let ga_qty: i32 = get("ga_qty").parse().unwrap_or(0);
        Ok(Some(HoldView {
            id: hold,
            event_id: event,
            owner: Uuid::parse_str(&get("owner")).map_err(|_| ApiError::internal("hold owner unreadable"))?,
            status,
            seats: split_list(&get("seats")),
            ga_tier: (!get("ga_tier").is_empty()).then(|| (get("ga_tier"), ga_qty)),
            created_at: millis(fields.get("created"))?,
            expires_at,
            order_id: Uuid::parse_str(&get("order")).ok(),
        }))
    }

    /// Releases an active hold. `owner` None: anyone (admins).
    pub async fn release(&self, hold: Uuid, owner: Option<Uuid>) -> ApiResult<HoldView> {
        let view = self
            .get_hold(hold)
            .await?
            .ok_or(ApiError::NotFound { resource: "hold" })?;
        if owner.is_some_and(|o| o != view.owner) {
            return Err(ApiError::NotFound { resource: "hold" });
        }
        let reply = strings(
            self.invoke(
                &self.scripts.release,
                view.event_id,
                &[hold.to_string(), String::new()],
            )
            .await?,
        );
        match reply.first().map(String::as_str) {
            Some("OK") | Some("STATUS") => {}
            _ => return Err(ApiError::NotFound { resource: "hold" }),
        }
        self.get_hold(hold)
            .await?
            .ok_or(ApiError::NotFound { resource: "hold" })
    }

    /// Turns a hold into a durable sale for `order`. Idempotent on the order.
    #[tracing::instrument(level = "debug", skip_all, fields(%hold, %order))]
    pub async fn commit(&self, hold: Uuid, order: Uuid, caller: Option<Uuid>) -> ApiResult<Vec<Item>> {
        // A first commit reads nothing from PostgreSQL beforehand: a replay is told by Redis
        // (the hold is committing or committed) or, once Redis forgot the hold, by a refusal,
        // and only then is the order's commit looked up.
        match self.commit_fresh(hold, order, caller).await {
            Ok(items) => Ok(items),
            Err(error @ (ApiError::FailedPrecondition { .. } | ApiError::PermissionDenied(_))) => {
                let mut conn = self.pool.get().await?;
                match store::find_commit(&mut conn, order).await? {
                    Some((committed_hold, _, owner, items)) => {
                        if committed_hold != hold {
                            Err(ApiError::precondition(
                                "ORDER_COMMITTED",
                                "the order was committed with another hold",
                            ))
                        } else if caller.is_some_and(|c| c != owner) {
                            Err(ApiError::permission_denied("the hold belongs to someone else"))
                        } else {
                            Ok(items)
                        }
                    }
                    None => Err(error),
                }
            }
            Err(other) => Err(other),
        }
    }

    async fn commit_fresh(&self, hold: Uuid, order: Uuid, caller: Option<Uuid>) -> ApiResult<Vec<Item>> {
        let view = self.get_hold(hold).await?.ok_or_else(|| {
            ApiError::precondition("HOLD_EXPIRED", "the hold has expired or does not exist")
        })?;
        if caller.is_some_and(|c| c != view.owner) {
            return Err(ApiError::permission_denied("the hold belongs to someone else"));
        }
        let reply = strings(
            self.invoke(&self.scripts.begin_commit, view.event_id, &[hold.to_string()])
                .await?,
        );
        match (
            reply.first().map(String::as_str),
            reply.get(1).map(String::as_str),
        ) {
            (Some("OK"), _) => {}
            (Some("STATUS"), Some("expired")) | (Some("NOT_FOUND"), _) => {
                return Err(ApiError::precondition("HOLD_EXPIRED", "the hold has expired"));
            }
            (Some("STATUS"), Some("committing" | "committed")) => {
                // Another commit of this hold is under way or done: a retry with the same order
                // gets that commit's answer, any other order is refused.
                return self.await_commit(hold, order).await;
            }
            (Some("STATUS"), Some(status)) => {
                return Err(ApiError::precondition(
                    "HOLD_NOT_ACTIVE",
                    format!("the hold is {status}"),
                ));
            }
            _ => return Err(ApiError::internal("unexpected commit reply")),
        }
        let items = self.items_of(&view).await?;
        let outcome = {
            let mut conn = self.pool.get().await?;
            store::commit(&mut conn, order, hold, view.event_id, view.owner, &items).await
        };
        match outcome {
            Ok(Ok(())) => {}
            refused => {
                // The hold stays the buyer's until it expires; PostgreSQL said no to this sale.
                let _ = self
                    .invoke(&self.scripts.abort_commit, view.event_id, &[hold.to_string()])
                    .await;
                return Err(match refused {
                    Ok(Err(CommitRefused::SeatSold)) => {
                        ApiError::precondition("SEAT_ALREADY_SOLD", "a seat of this hold is already sold")
                    }
                    Ok(Err(CommitRefused::QuotaExhausted(tier))) => {
                        ApiError::precondition("SOLD_OUT", format!("tier {tier} is sold out"))
                    }
                    Ok(Err(CommitRefused::HoldAlreadyCommitted)) => {
                        ApiError::precondition("HOLD_COMMITTED", "the hold was committed for another order")
                    }
                    Err(e) => e,
                    Ok(Ok(())) => ApiError::internal("unreachable commit outcome"),
                });
            }
        }
        metrics::counter!("inventory_places_sold_total")
            .increment(items.iter().map(|i| u64::try_from(i.quantity).unwrap_or(0)).sum());
        // The sale is durable now; Redis catching up is best effort (a rebuild fixes it anyway).
        if let Err(error) = self
            .invoke(
                &self.scripts.finish_commit,
                view.event_id,
                &[hold.to_string(), order.to_string()],
            )
            .await
        {
            tracing::error!(%error, %hold, %order, "sale committed but redis not updated; rebuilding the event");
            let _ = self.ensure_loaded(view.event_id, true).await;
        }
        Ok(items)
    }

    /// Sells an expired order's places to it again, for a payment that came after the expiry:
    /// its places are kept if still sold to it, taken with its own hold if that is still
    /// active, or held afresh for the buyer, all or none, and committed. All of it runs under
    /// the lock of the order's fate row, marked revived in the same transaction: a second
    /// reclaim of the order waits and then finds the commit, the order's closing waits and then
    /// returns nothing, and a refusal (or a crash) leaves the fate as it was. Idempotent on the
    /// order.
    #[tracing::instrument(level = "debug", skip_all, fields(%order))]
    pub async fn reclaim(&self, order: Uuid, wanted: Reclaim<'_>) -> ApiResult<Vec<Item>> {
        let mut conn = self.pool.get().await?;
        conn.transaction::<_, ApiError, _>(async |conn| {
            store::mark_revived(conn, order).await?;
            if let Some((_, event, owner, items)) = store::find_commit(conn, order).await? {
                if event != wanted.event || owner != wanted.owner {
                    return Err(ApiError::precondition(
                        "ORDER_COMMITTED",
                        "the order was committed for another event or buyer",
                    ));
                }
                // Committed on a connection of its own: the commit that follows inserts the
                // order's row again from another connection, which would wait on this
                // transaction's delete.
                let mut own = self.pool.get().await?;
                if !store::forget_returned_commit(&mut own, order).await? {
                    // Its closing never returned them: they are still the order's.
                    return Ok(items);
                }
            }
            if let Some(view) = self.get_hold(wanted.hold).await?
                && view.status == HoldStatus::Active
                && view.owner == wanted.owner
                && view.event_id == wanted.event
            {
                match self.commit(wanted.hold, order, Some(wanted.owner)).await {
                    Ok(items) => return Ok(items),
                    Err(ApiError::FailedPrecondition { .. } | ApiError::NotFound { .. }) => {}
                    Err(other) => return Err(other),
                }
            }
            let held = self
                .hold(wanted.event, wanted.owner, wanted.places, RECLAIM_HOLD_TTL)
                .await?;
            let (view, _) = held.map_err(|refusal| {
                ApiError::precondition(
                    "PLACES_TAKEN",
                    format!("the order's places cannot be taken again: {refusal:?}"),
                )
            })?;
            match self.commit(view.id, order, Some(wanted.owner)).await {
                Ok(items) => Ok(items),
                Err(error) => {
                    let _ = self.release(view.id, None).await;
                    Err(error)
                }
            }
        })
        .await
    }

    /// Waits (briefly) for a concurrent commit of `hold` to land in PostgreSQL.
    async fn await_commit(&self, hold: Uuid, order: Uuid) -> ApiResult<Vec<Item>> {
        for _ in 0..50 {
            {
                let mut conn = self.pool.get().await?;
                if let Some((committed_hold, _, _, items)) = store::find_commit(&mut conn, order).await? {
                    if committed_hold == hold {
                        return Ok(items);
                    }
                    return Err(ApiError::precondition(
                        "ORDER_COMMITTED",
                        "the order was committed with another hold",
                    ));
                }
            }
            let mut conn = self.pool.get().await?;
            let other = store::order_of_hold(&mut conn, hold).await?;
            if other.is_some_and(|o| o != order) {
                return Err(ApiError::precondition(
                    "HOLD_COMMITTED",
                    "the hold was committed for another order",
                ));
            }
            drop(conn);
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        Err(ApiError::Unavailable(
            "a commit of this hold is still in progress; try again".into(),
        ))
    }

    pub async fn items_of(&self, view: &HoldView) -> ApiResult<Vec<Item>> {
        let mut items = Vec::new();
        if !view.seats.is_empty() {
            let mut conn = self.cache.pool.get().await?;
            let tiers: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(format!("{}:seat", self.event_prefix(view.event_id)))
                .arg(&view.seats)
                .query_async(&mut *conn)
                .await?;
            for (seat, tier) in view.seats.iter().zip(tiers) {
                let tier = tier.ok_or_else(|| {
                    ApiError::precondition("SEAT_REMOVED", format!("seat {seat} is no longer on the map"))
                })?;
                items.push(Item {
                    tier_id: tier,
                    seat_id: Some(seat.clone()),
                    ga_area_id: None,
                    quantity: 1,
                });
            }
        }
        if let Some((tier, quantity)) = &view.ga_tier {
            items.push(Item {
                tier_id: tier.clone(),
                seat_id: None,
                ga_area_id: None,
                quantity: *quantity,
            });
        }
        Ok(items)
    }

    /// Returns sold places of an order to sale.
    pub async fn release_sold(&self, order: Uuid, wanted: &[Item]) -> ApiResult<store::Returned> {
        let returned = {
            let mut conn = self.pool.get().await?;
            store::release_sold(&mut conn, order, wanted).await?
        }
        .ok_or(ApiError::NotFound {
            resource: "committed order",
        })?;
        let mut args = vec![returned.owner_id.to_string(), returned.seats.len().to_string()];
        args.extend(returned.seats.iter().cloned());
        args.push(returned.quantities.len().to_string());
        for (tier, qty) in &returned.quantities {
            args.extend([tier.clone(), qty.to_string()]);
        }
        if let Err(error) = self
            .invoke(&self.scripts.return_sold, returned.event_id, &args)
            .await
        {
            tracing::error!(%error, %order, "places returned in postgres but not in redis; rebuilding");
            let _ = self.ensure_loaded(returned.event_id, true).await;
        }
        Ok(returned)
    }

    /// Events with unexpired or committing holds (the sweeper's set), with their key prefixes.
    async fn active_events(&self) -> ApiResult<Vec<(Uuid, String)>> {
        let prefixes: Vec<String> = {
            let mut conn = self.cache.pool.get().await?;
            redis::cmd("SMEMBERS")
                .arg(self.cache.key(&["active"]))
                .query_async(&mut *conn)
                .await?
        };
        Ok(prefixes
            .into_iter()
            .filter_map(|prefix| {
                let event = prefix
                    .rfind('{')
                    .zip(prefix.rfind('}'))
                    .and_then(|(s, e)| prefix.get(s + 1..e))
                    .and_then(|id| Uuid::parse_str(id).ok())?;
                Some((event, prefix))
            })
            .collect())
    }

    /// Sweeps due holds of every event that has some. Returns how many expired.
    pub async fn sweep_all(&self) -> ApiResult<u64> {
        let mut expired = 0;
        let mut active = 0u64;
        for (event, prefix) in self.active_events().await? {
            loop {
                let reply = self.invoke(&self.scripts.sweep, event, &[]).await?;
                let n = match &reply {
                    redis::Value::Array(v) => v
                        .first()
                        .and_then(|x| redis::from_redis_value_ref::<u64>(x).ok())
                        .unwrap_or(0),
                    _ => 0,
                };
                expired += n;
                if n < 500 {
                    break;
                }
            }
            let mut conn = self.cache.pool.get().await?;
            let left: u64 = redis::cmd("ZCARD")
                .arg(format!("{prefix}:exp"))
                .query_async(&mut *conn)
                .await?;
            active += left;
        }
        if expired > 0 {
            metrics::counter!("inventory_holds_expired_total").increment(expired);
        }
        // Holds alive now (in events with any), refreshed with every sweep.
        metrics::gauge!("inventory_holds_active").set(active as f64);
        Ok(expired)
    }

    /// A consistent picture of the event, rebuilding Redis from PostgreSQL when needed.
    pub async fn snapshot(&self, event: Uuid, with_seats: bool) -> ApiResult<Snapshot> {
        let flag = if with_seats { "1" } else { "0" }.to_string();
        let mut reply = self
            .invoke(&self.scripts.snapshot, event, std::slice::from_ref(&flag))
            .await?;
        if !is_loaded(&reply) {
            self.ensure_loaded(event, false).await?;
            reply = self.invoke(&self.scripts.snapshot, event, &[flag]).await?;
        }
        let redis::Value::Array(parts) = reply else {
            return Err(ApiError::internal("bad snapshot"));
        };
        let text = |i: usize| {
            parts
                .get(i)
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .unwrap_or_default()
        };
        let list = |i: usize| {
            parts
                .get(i)
                .and_then(|v| redis::from_redis_value_ref::<Vec<String>>(v).ok())
                .unwrap_or_default()
        };
        let mut tiers: HashMap<String, TierCounts> = HashMap::new();
        for pair in list(3).chunks(2) {
            let [field, value] = pair else { continue };
            let Some((tier, kind)) = field.rsplit_once(':') else {
                continue;
            };
            let n: i64 = value.parse().unwrap_or(0);
            let entry = tiers.entry(tier.to_string()).or_default();
            match kind {
                "total" => entry.total = n,
                // Places kept for a waiting list are taken for everyone else.
                "held" | "owed" => entry.held += n,
                "sold" => entry.sold = n,
                _ => {}
            }
        }
        Ok(Snapshot {
            sequence: text(1).parse().unwrap_or(0),
            closed: text(2) == "1",
            tiers,
            held: list(4),
            sold: list(5),
            seats: list(6),
        })
    }
}

fn is_loaded(value: &redis::Value) -> bool {
    first(value).as_deref() == Some("1")
}

fn first(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::Array(v) => v
            .first()
            .and_then(|x| redis::from_redis_value_ref::<String>(x).ok()),
        _ => None,
    }
}

fn strings(value: redis::Value) -> Vec<String> {
    redis::from_redis_value::<Vec<String>>(value).unwrap_or_default()
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_i64(s: Option<&String>) -> i64 {
    s.and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn millis(s: Option<&String>) -> ApiResult<DateTime<Utc>> {
    let ms: i64 = s
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::internal("hold time unreadable"))?;
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| ApiError::internal("hold time out of range"))
}
