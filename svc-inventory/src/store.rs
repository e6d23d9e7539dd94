//! The durable side: what is sellable, and the sold-seat ledger. PostgreSQL is the last word on
//! what was sold; Redis is rebuilt from here whenever it has lost its state.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use ticketing_platform::{ApiError, ApiResult, db};
use uuid::Uuid;

use crate::schema::{
    commit_items, commits, inventory_events, inventory_quotas, inventory_seats, order_fates, sold_seats,
};

pub mod waitlist;

type Conn = AsyncPgConnection;

/// Rows per INSERT, well under PostgreSQL's 65,535 bind parameters.
const CHUNK: usize = 5_000;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = inventory_events)]
pub struct EventRow {
    pub event_id: Uuid,
    pub organization_id: Uuid,
    pub version: i64,
    pub per_customer_limit: i32,
    pub closed: bool,
    pub configured_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = inventory_seats)]
struct SeatRow<'a> {
    event_id: Uuid,
    seat_id: &'a str,
    tier_id: &'a str,
    position: i32,
}

/// A sellable event as configured: seats best first, and general-admission quotas.
#[derive(Debug, Clone)]
pub struct Configuration {
    pub event: EventRow,
    pub seats: Vec<(String, String)>,
    /// (tier, area, capacity)
    pub quotas: Vec<(String, String, i32)>,
}

/// Everything Redis needs to rebuild an event.
#[derive(Debug, Clone)]
pub struct EventState {
    pub event: EventRow,
    pub seats: Vec<(String, String)>,
    /// (tier, capacity, sold)
    pub quotas: Vec<(String, i32, i32)>,
    pub sold: Vec<String>,
    /// (owner, places bought and not returned)
    pub bought: Vec<(Uuid, i64)>,
    /// Live waiting-list entries, in line order.
    pub waitlist: Vec<waitlist::EntryRow>,
}

/// One sold item of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct Item {
    pub tier_id: String,
    pub seat_id: Option<String>,
    pub ga_area_id: Option<String>,
    pub quantity: i32,
}

pub async fn find_event(conn: &mut Conn, id: Uuid) -> ApiResult<Option<EventRow>> {
    Ok(inventory_events::table
        .find(id)
        .select(EventRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Applies a configuration unless a newer or equal version is in force; returns the version in
/// force. Refused when it would drop a sold seat or shrink a quota below what was sold.
pub async fn configure(conn: &mut Conn, config: &Configuration) -> ApiResult<i64> {
    let config = config.clone();
    conn.transaction::<_, ApiError, _>(async |conn| {
        let existing: Option<EventRow> = inventory_events::table
            .find(config.event.event_id)
            .select(EventRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let event_id = config.event.event_id;
        if let Some(existing) = &existing {
            if existing.organization_id != config.event.organization_id {
                return Err(ApiError::permission_denied(
                    "the event belongs to another organization",
                ));
            }
            if existing.version >= config.event.version {
                return Ok(existing.version);
            }
            let sold: Vec<String> = sold_seats::table
                .filter(sold_seats::event_id.eq(event_id))
                .select(sold_seats::seat_id)
                .load(conn)
                .await?;
            let kept: std::collections::HashSet<&str> =
                config.seats.iter().map(|(s, _)| s.as_str()).collect();
            if let Some(lost) = sold.iter().find(|s| !kept.contains(s.as_str())) {
                return Err(ApiError::precondition(
                    "SOLD_SEAT_REMOVED",
                    format!("seat {lost} was sold and cannot be removed from the map"),
                ));
            }
            let quotas: Vec<(String, i32)> = inventory_quotas::table
                .filter(inventory_quotas::event_id.eq(event_id))
                .select((inventory_quotas::tier_id, inventory_quotas::sold))
                .load(conn)
                .await?;
            for (tier, sold) in &quotas {
                let capacity = config.quotas.iter().find(|q| &q.0 == tier).map(|q| q.2);
                if sold > &0 && capacity.is_none_or(|c| c < *sold) {
                    return Err(ApiError::precondition(
                        "QUOTA_BELOW_SOLD",
                        format!("tier {tier} already sold {sold} places"),
                    ));
                }
            }
            diesel::update(inventory_events::table.find(event_id))
                .set((
                    inventory_events::version.eq(config.event.version),
                    inventory_events::per_customer_limit.eq(config.event.per_customer_limit),
                    inventory_events::configured_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
            diesel::delete(inventory_seats::table.filter(inventory_seats::event_id.eq(event_id)))
                .execute(conn)
                .await?;
        } else {
            diesel::insert_into(inventory_events::table)
                .values(&config.event)
                .execute(conn)
                .await?;
        }
        let rows: Vec<SeatRow> = config
            .seats
            .iter()
            .enumerate()
            .map(|(i, (seat, tier))| SeatRow {
                event_id,
                seat_id: seat,
                tier_id: tier,
                position: i32::try_from(i).unwrap_or(i32::MAX),
            })
            .collect();
        for chunk in rows.chunks(CHUNK) {
            diesel::insert_into(inventory_seats::table)
                .values(chunk)
                .execute(conn)
                .await?;
        }
        for (tier, area, capacity) in &config.quotas {
            diesel::insert_into(inventory_quotas::table)
                .values((
                    inventory_quotas::event_id.eq(event_id),
                    inventory_quotas::tier_id.eq(tier),
                    inventory_quotas::ga_area_id.eq(area),
                    inventory_quotas::capacity.eq(capacity),
                ))
                .on_conflict((inventory_quotas::event_id, inventory_quotas::tier_id))
                .do_update()
                .set((
                    inventory_quotas::capacity.eq(capacity),
                    inventory_quotas::ga_area_id.eq(area),
                ))
                .execute(conn)
                .await?;
        }
        Ok(config.event.version)
    })
    .await
}

pub async fn load_state(conn: &mut Conn, event_id: Uuid) -> ApiResult<Option<EventState>> {
    let Some(event) = find_event(conn, event_id).await? else {
        return Ok(None);
    };
    let seats: Vec<(String, String)> = inventory_seats::table
        .filter(inventory_seats::event_id.eq(event_id))
        .order(inventory_seats::position.asc())
        .select((inventory_seats::seat_id, inventory_seats::tier_id))
        .load(conn)
        .await?;
    let quotas: Vec<(String, i32, i32)> = inventory_quotas::table
        .filter(inventory_quotas::event_id.eq(event_id))
        .select((
            inventory_quotas::tier_id,
            inventory_quotas::capacity,
            inventory_quotas::sold,
        ))
        .load(conn)
        .await?;
    let sold: Vec<String> = sold_seats::table
        .filter(sold_seats::event_id.eq(event_id))
        .select(sold_seats::seat_id)
        .load(conn)
        .await?;
    let bought: Vec<(Uuid, Option<i64>)> = commit_items::table
        .inner_join(commits::table)
        .filter(commits::event_id.eq(event_id))
        .group_by(commits::owner_id)
        .select((
            commits::owner_id,
            diesel::dsl::sum(commit_items::quantity - commit_items::released),
        ))
        .load(conn)
        .await?;
    let bought = bought
        .into_iter()
        .map(|(owner, n)| (owner, n.unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    // An offer bought is not made again, even when its hold's record is gone.
    let mut waitlist = waitlist::live_of_event(conn, event_id).await?;
    let offered: Vec<Uuid> = waitlist
        .iter()
        .filter(|e| e.status == crate::domain::WaitlistStatus::Offered)
        .map(|e| e.entry_id)
        .collect();
    let committed_offers: std::collections::HashSet<Uuid> = commits::table
        .filter(commits::hold_id.eq_any(&offered))
        .select(commits::hold_id)
        .load::<Uuid>(conn)
        .await?
        .into_iter()
        .collect();
    waitlist.retain(|e| !committed_offers.contains(&e.entry_id));
    Ok(Some(EventState {
        event,
        seats,
        quotas,
        sold,
        bought,
        waitlist,
    }))
}

/// The order a hold was committed for, if the ledger has its sale.
pub async fn order_of_hold(conn: &mut Conn, hold_id: Uuid) -> ApiResult<Option<Uuid>> {
    Ok(commits::table
        .filter(commits::hold_id.eq(hold_id))
        .select(commits::order_id)
        .first(conn)
        .await
        .optional()?)
}

/// A commit already made for an order: (hold, event, owner, items).
pub async fn find_commit(
    conn: &mut Conn,
    order_id: Uuid,
) -> ApiResult<Option<(Uuid, Uuid, Uuid, Vec<Item>)>> {
    let found: Option<(Uuid, Uuid, Uuid)> = commits::table
        .find(order_id)
        .select((commits::hold_id, commits::event_id, commits::owner_id))
        .first(conn)
        .await
        .optional()?;
    let Some((hold, event, owner)) = found else {
        return Ok(None);
    };
    let items = commit_items::table
        .filter(commit_items::order_id.eq(order_id))
        .order(commit_items::item_no.asc())
        .select((
            commit_items::tier_id,
            commit_items::seat_id,
            commit_items::ga_area_id,
            commit_items::quantity,
        ))
        .load(conn)
        .await?;
    Ok(Some((hold, event, owner, items)))
}

/// Why a durable commit was refused.
#[derive(Debug)]
pub enum CommitRefused {
    SeatSold,
    QuotaExhausted(String),
    HoldAlreadyCommitted,
}

/// The sale, in one transaction: the commit row (unique per order and per hold), a ledger row per
/// seat (unique per seat: a second sale fails here) and quota counters (checked against capacity).
pub async fn commit(
    conn: &mut Conn,
    order_id: Uuid,
    hold_id: Uuid,
    event_id: Uuid,
    owner_id: Uuid,
    items: &[Item],
) -> ApiResult<Result<(), CommitRefused>> {
    let items = items.to_vec();
    let result = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let inserted = diesel::insert_into(commits::table)
                .values((
                    commits::order_id.eq(order_id),
                    commits::hold_id.eq(hold_id),
                    commits::event_id.eq(event_id),
                    commits::owner_id.eq(owner_id),
                ))
                .execute(conn)
                .await;
            if inserted.as_ref().is_err_and(db::is_unique_violation) {
                return Ok(Err(CommitRefused::HoldAlreadyCommitted));
            }
            inserted?;
            for (no, item) in items.iter().enumerate() {
                diesel::insert_into(commit_items::table)
                    .values((
                        commit_items::order_id.eq(order_id),
                        commit_items::item_no.eq(i32::try_from(no).unwrap_or(i32::MAX)),
                        commit_items::tier_id.eq(&item.tier_id),
                        commit_items::seat_id.eq(&item.seat_id),
                        commit_items::ga_area_id.eq(&item.ga_area_id),
                        commit_items::quantity.eq(item.quantity),
                    ))
                    .execute(conn)
                    .await?;
                if let Some(seat) = &item.seat_id {
                    let sold = diesel::insert_into(sold_seats::table)
                        .values((
                            sold_seats::event_id.eq(event_id),
                            sold_seats::seat_id.eq(seat),
                            sold_seats::tier_id.eq(&item.tier_id),
                            sold_seats::order_id.eq(order_id),
                            sold_seats::owner_id.eq(owner_id),
                        ))
                        .execute(conn)
                        .await;
                    if sold.as_ref().is_err_and(db::is_unique_violation) {
                        return Err(ApiError::precondition(
                            "SEAT_ALREADY_SOLD",
                            format!("seat {seat} is sold"),
                        ));
                    }
                    sold?;
                } else {
                    let updated = diesel::update(
                        inventory_quotas::table
                            .filter(inventory_quotas::event_id.eq(event_id))
                            .filter(inventory_quotas::tier_id.eq(&item.tier_id))
                            .filter(inventory_quotas::sold.le(inventory_quotas::capacity - item.quantity)),
                    )
                    .set(inventory_quotas::sold.eq(inventory_quotas::sold + item.quantity))
                    .execute(conn)
                    .await?;
                    if updated == 0 {
                        return Err(ApiError::precondition("QUOTA_EXHAUSTED", item.tier_id.clone()));
                    }
                }
            }
            Ok(Ok(()))
        })
        .await;
    match result {
        Err(ApiError::FailedPrecondition {
            reason: "SEAT_ALREADY_SOLD",
            ..
        }) => Ok(Err(CommitRefused::SeatSold)),
        Err(ApiError::FailedPrecondition {
            reason: "QUOTA_EXHAUSTED",
            message,
            ..
        }) => Ok(Err(CommitRefused::QuotaExhausted(message))),
        other => other,
    }
}

/// What a release returned to sale.
#[derive(Debug, Default)]
pub struct Returned {
    pub event_id: Uuid,
    pub owner_id: Uuid,
    pub seats: Vec<String>,
    /// (tier, quantity)
    pub quantities: Vec<(String, i32)>,
}

/// Returns an order's sold places (all, or those `wanted` names) to sale. Places already
/// returned are not returned again.
pub async fn release_sold(conn: &mut Conn, order_id: Uuid, wanted: &[Item]) -> ApiResult<Option<Returned>> {
    let wanted = wanted.to_vec();
    conn.transaction::<_, ApiError, _>(async |conn| {
        let found: Option<(Uuid, Uuid)> = commits::table
            .find(order_id)
            .select((commits::event_id, commits::owner_id))
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some((event_id, owner_id)) = found else {
            return Ok(None);
        };
        let rows: Vec<(i32, String, Option<String>, i32, i32)> = commit_items::table
            .filter(commit_items::order_id.eq(order_id))
            .select((
                commit_items::item_no,
                commit_items::tier_id,
                commit_items::seat_id,
                commit_items::quantity,
                commit_items::released,
            ))
            .load(conn)
            .await?;
        let mut returned = Returned {
            event_id,
            owner_id,
            ..Default::default()
        };
        for (no, tier, seat, quantity, released) in rows {
            let open = quantity - released;
            if open == 0 {
                continue;
            }
            let take = if wanted.is_empty() {
                open
            } else {
                match &seat {
                    Some(seat) => i32::from(wanted.iter().any(|w| w.seat_id.as_ref() == Some(seat))),
                    None => wanted
                        .iter()
                        .filter(|w| w.seat_id.is_none() && w.tier_id == tier)
                        .map(|w| w.quantity)
                        .sum::<i32>()
                        .min(open),
                }
            };
            if take == 0 {
                continue;
            }
            diesel::update(commit_items::table.find((order_id, no)))
                .set(commit_items::released.eq(commit_items::released + take))
                .execute(conn)
                .await?;
            match seat {
                Some(seat) => {
                    diesel::delete(
                        sold_seats::table
                            .filter(sold_seats::event_id.eq(event_id))
                            .filter(sold_seats::seat_id.eq(&seat))
                            .filter(sold_seats::order_id.eq(order_id)),
                    )
                    .execute(conn)
                    .await?;
                    returned.seats.push(seat);
                }
                None => {
                    diesel::update(
                        inventory_quotas::table
                            .filter(inventory_quotas::event_id.eq(event_id))
                            .filter(inventory_quotas::tier_id.eq(&tier)),
                    )
                    .set(inventory_quotas::sold.eq(inventory_quotas::sold - take))
                    .execute(conn)
                    .await?;
                    returned.quantities.push((tier, take));
                }
            }
        }
        Ok(Some(returned))
    })
    .await
}

/// Records that the order's closing is being applied and locks its fate until the caller's
/// transaction ends. False when the order was revived: its places are no longer the closing's
/// to return.
pub async fn closing_applies(conn: &mut Conn, order_id: Uuid) -> ApiResult<bool> {
    diesel::insert_into(order_fates::table)
        .values((order_fates::order_id.eq(order_id), order_fates::fate.eq("closed")))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    let fate: String = order_fates::table
        .find(order_id)
        .select(order_fates::fate)
        .for_update()
        .first(conn)
        .await?;
    Ok(fate == "closed")
}

/// Marks the order revived and locks its fate until the caller's transaction ends: from its
/// commit on, the order's closing returns nothing. Waits for a closing being applied (or
/// another revival) to finish first.
pub async fn mark_revived(conn: &mut Conn, order_id: Uuid) -> ApiResult<()> {
    diesel::insert_into(order_fates::table)
        .values((
            order_fates::order_id.eq(order_id),
            order_fates::fate.eq("revived"),
        ))
        .on_conflict(order_fates::order_id)
        .do_update()
        .set((order_fates::fate.eq("revived"), order_fates::at.eq(Utc::now())))
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets a commit whose places were all returned, so the order can be committed afresh.
/// Returns false (and changes nothing) when some place is still sold to it.
pub async fn forget_returned_commit(conn: &mut Conn, order_id: Uuid) -> ApiResult<bool> {
    conn.transaction::<_, ApiError, _>(async |conn| {
        let open: Option<i64> = commit_items::table
            .filter(commit_items::order_id.eq(order_id))
            .select(diesel::dsl::sum(commit_items::quantity - commit_items::released))
            .first(conn)
            .await?;
        if open.unwrap_or(0) > 0 {
            return Ok(false);
        }
        diesel::delete(commit_items::table.filter(commit_items::order_id.eq(order_id)))
            .execute(conn)
            .await?;
        diesel::delete(commits::table.find(order_id))
            .execute(conn)
            .await?;
        Ok(true)
    })
    .await
}

/// Events that are on sale (configured and not closed).
pub async fn open_events(conn: &mut Conn) -> ApiResult<Vec<Uuid>> {
    Ok(inventory_events::table
        .filter(inventory_events::closed.eq(false))
        .select(inventory_events::event_id)
        .load(conn)
        .await?)
}

/// What the ledger says is sold of an event: (seat, tier) of every sold seat, and (tier, sold)
/// of every general-admission quota.
pub async fn ledger_of(
    conn: &mut Conn,
    event_id: Uuid,
) -> ApiResult<(Vec<(String, String)>, Vec<(String, i64)>)> {
    let seats: Vec<(String, String)> = sold_seats::table
        .filter(sold_seats::event_id.eq(event_id))
        .select((sold_seats::seat_id, sold_seats::tier_id))
        .load(conn)
        .await?;
    let quotas: Vec<(String, i32)> = inventory_quotas::table
        .filter(inventory_quotas::event_id.eq(event_id))
        .select((inventory_quotas::tier_id, inventory_quotas::sold))
        .load(conn)
        .await?;
    Ok((
        seats,
        quotas.into_iter().map(|(t, n)| (t, i64::from(n))).collect(),
    ))
}

pub async fn close_event(conn: &mut Conn, event_id: Uuid) -> ApiResult<()> {
    diesel::update(inventory_events::table.find(event_id))
        .set(inventory_events::closed.eq(true))
        .execute(conn)
        .await?;
    Ok(())
}

/// For each seat, how many unreturned commits sold it. Read from the commit items, not the
/// ledger, so a missing ledger constraint would show up here as a count above one.
pub async fn seat_sale_counts(conn: &mut Conn, event_id: Uuid) -> ApiResult<Vec<(String, i64)>> {
    let rows: Vec<(Option<String>, i64)> = commit_items::table
        .inner_join(commits::table)
        .filter(commits::event_id.eq(event_id))
        .filter(commit_items::seat_id.is_not_null())
        .filter(commit_items::released.lt(commit_items::quantity))
        .group_by(commit_items::seat_id)
        .select((commit_items::seat_id, diesel::dsl::count_star()))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(seat, n)| seat.map(|s| (s, n)))
        .collect())
}
