//! Waiting-list entries: the durable record Redis's lines are rebuilt from, and the outbox
//! events of offers.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use ticketing_platform::{
    ApiError, ApiResult,
    messaging::{self, OutboxEvent},
    time::to_timestamp,
};
use ticketing_proto::ticketing::events::v1 as events;
use uuid::Uuid;

use super::Conn;
use crate::{domain::WaitlistStatus, schema::waitlist_entries as w};

const LIVE: [WaitlistStatus; 2] = [WaitlistStatus::Waiting, WaitlistStatus::Offered];

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = w)]
pub struct EntryRow {
    pub entry_id: Uuid,
    pub event_id: Uuid,
    pub tier_id: String,
    pub owner_id: Uuid,
    pub quantity: i32,
    pub position: i64,
    pub status: WaitlistStatus,
    pub offer_expires_at: Option<DateTime<Utc>>,
    pub offer_seat_ids: Vec<String>,
    pub joined_at: DateTime<Utc>,
}

/// Why an entry was not added.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinRefused {
    /// The buyer's live entries for the event already want this many places.
    Limit { wanted: i64 },
}

/// Adds the buyer to the tier's line, or finds their live entry there (then `false`).
pub async fn join(
    conn: &mut Conn,
    entry_id: Uuid,
    event_id: Uuid,
    tier_id: &str,
    owner_id: Uuid,
    quantity: i32,
    limit: i32,
) -> ApiResult<Result<(EntryRow, bool), JoinRefused>> {
    let tier_id = tier_id.to_string();
    conn.transaction::<_, ApiError, _>(async |conn| {
        let mine = live_of_owner(conn, event_id, owner_id).await?;
        if let Some(same) = mine.iter().find(|e| e.tier_id == tier_id) {
            return Ok(Ok((same.clone(), false)));
        }
        let wanted: i64 = mine.iter().map(|e| i64::from(e.quantity)).sum();
        if wanted + i64::from(quantity) > i64::from(limit) {
            return Ok(Err(JoinRefused::Limit { wanted }));
        }
        // A concurrent join of the same buyer and tier meets the live index: that one's entry
        // is the answer (or, if Redis refused that one meanwhile, this one goes in after all).
        for _ in 0..3 {
            let inserted = diesel::insert_into(w::table)
                .values((
                    w::entry_id.eq(entry_id),
                    w::event_id.eq(event_id),
                    w::tier_id.eq(&tier_id),
                    w::owner_id.eq(owner_id),
                    w::quantity.eq(quantity),
                    w::status.eq(WaitlistStatus::Waiting),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            let row = live_of_owner(conn, event_id, owner_id)
                .await?
                .into_iter()
                .find(|e| e.tier_id == tier_id);
            if let Some(row) = row {
                let created = inserted == 1 && row.entry_id == entry_id;
                return Ok(Ok((row, created)));
            }
        }
        Err(ApiError::Unavailable(
            "the waiting list is busy with this buyer's entry; try again".into(),
        ))
    })
    .await
}

async fn live_of_owner(conn: &mut Conn, event_id: Uuid, owner_id: Uuid) -> ApiResult<Vec<EntryRow>> {
    Ok(w::table
        .filter(w::event_id.eq(event_id))
        .filter(w::owner_id.eq(owner_id))
        .filter(w::status.eq_any(LIVE))
        .select(EntryRow::as_select())
        .load(conn)
        .await?)
}

/// Takes back an entry Redis refused to put in line.
pub async fn forget(conn: &mut Conn, entry_id: Uuid) -> ApiResult<()> {
    diesel::delete(
        w::table
            .find(entry_id)
            .filter(w::status.eq(WaitlistStatus::Waiting)),
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn find(conn: &mut Conn, entry_id: Uuid) -> ApiResult<Option<EntryRow>> {
    Ok(w::table
        .find(entry_id)
        .select(EntryRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

fn ended(row: &EntryRow, outcome: &str) -> OutboxEvent {
    OutboxEvent::of(
        row.entry_id,
        &events::WaitlistOfferEnded {
            entry_id: row.entry_id.to_string(),
            hold_id: row.entry_id.to_string(),
            event_id: row.event_id.to_string(),
            buyer_id: row.owner_id.to_string(),
            outcome: outcome.to_string(),
        },
    )
}

/// Moves a live entry to `next` (from the statuses `next` may follow), writing `outcome`'s
/// offer_ended event when it ends an offer. Returns the entry as it was, if it moved.
pub async fn settle(
    conn: &mut Conn,
    entry_id: Uuid,
    next: WaitlistStatus,
    outcome: Option<&str>,
) -> ApiResult<Option<EntryRow>> {
    conn.transaction::<_, ApiError, _>(async |conn| {
        let Some(row) = w::table
            .find(entry_id)
            .select(EntryRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?
        else {
            return Ok(None);
        };
        if !row.status.can_become(next) {
            return Ok(None);
        }
        diesel::update(w::table.find(entry_id))
            .set((w::status.eq(next), w::updated_at.eq(diesel::dsl::now)))
            .execute(conn)
            .await?;
        if row.status == WaitlistStatus::Offered
            && let Some(outcome) = outcome
        {
            messaging::enqueue(conn, vec![ended(&row, outcome)]).await?;
        }
        Ok(Some(row))
    })
    .await
}

/// What recording an offer Redis made found.
#[derive(Debug)]
pub enum Recorded {
    /// Recorded now, with its offer_made event.
    Made(EntryRow),
    /// Recorded before.
    Already,
    /// The entry is no longer waiting (the buyer left): its offer is to be given back.
    Gone,
}

pub async fn record_offer(
    conn: &mut Conn,
    entry_id: Uuid,
    expires_at: DateTime<Utc>,
    seats: &[String],
) -> ApiResult<Recorded> {
    conn.transaction::<_, ApiError, _>(async |conn| {
        let Some(row) = w::table
            .find(entry_id)
            .select(EntryRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?
        else {
            return Ok(Recorded::Gone);
        };
        match row.status {
            WaitlistStatus::Waiting => {}
            WaitlistStatus::Offered | WaitlistStatus::Fulfilled | WaitlistStatus::Lapsed => {
                return Ok(Recorded::Already);
            }
            WaitlistStatus::Left | WaitlistStatus::Removed => return Ok(Recorded::Gone),
        }
        diesel::update(w::table.find(entry_id))
            .set((
                w::status.eq(WaitlistStatus::Offered),
                w::offer_expires_at.eq(expires_at),
                w::offer_seat_ids.eq(seats),
                w::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        let made = events::WaitlistOfferMade {
            entry_id: row.entry_id.to_string(),
            hold_id: row.entry_id.to_string(),
            event_id: row.event_id.to_string(),
            tier_id: row.tier_id.clone(),
            buyer_id: row.owner_id.to_string(),
            quantity: row.quantity,
            seat_ids: seats.to_vec(),
            expires_at: Some(to_timestamp(expires_at)),
        };
        messaging::enqueue(conn, vec![OutboxEvent::of(row.entry_id, &made)]).await?;
        Ok(Recorded::Made(EntryRow {
            status: WaitlistStatus::Offered,
            offer_expires_at: Some(expires_at),
            offer_seat_ids: seats.to_vec(),
            ..row
        }))
    })
    .await
}

/// Events with a live entry: the ones the waiting-list round looks at.
pub async fn live_events(conn: &mut Conn) -> ApiResult<Vec<Uuid>> {
    Ok(w::table
        .filter(w::status.eq_any(LIVE))
        .select(w::event_id)
        .distinct()
        .load(conn)
        .await?)
}

/// The event's live entries, in line order.
pub async fn live_of_event(conn: &mut Conn, event_id: Uuid) -> ApiResult<Vec<EntryRow>> {
    Ok(w::table
        .filter(w::event_id.eq(event_id))
        .filter(w::status.eq_any(LIVE))
        .order(w::position.asc())
        .select(EntryRow::as_select())
        .load(conn)
        .await?)
}

/// Waiting entries of a closed event leave the line.
pub async fn remove_waiting(conn: &mut Conn, event_id: Uuid) -> ApiResult<usize> {
    Ok(diesel::update(
        w::table
            .filter(w::event_id.eq(event_id))
            .filter(w::status.eq(WaitlistStatus::Waiting)),
    )
    .set((
        w::status.eq(WaitlistStatus::Removed),
        w::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)
    .await?)
}

/// The buyer's entries, newest first, after the page token's entry.
pub async fn of_owner(
    conn: &mut Conn,
    owner_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> ApiResult<Vec<EntryRow>> {
    let mut query = w::table
        .filter(w::owner_id.eq(owner_id))
        .order(w::entry_id.desc())
        .limit(limit)
        .select(EntryRow::as_select())
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(w::entry_id.lt(before));
    }
    Ok(query.load(conn).await?)
}

/// Entries of the tier waiting ahead of `row`.
pub async fn ahead_of(conn: &mut Conn, row: &EntryRow) -> ApiResult<i64> {
    Ok(w::table
        .filter(w::event_id.eq(row.event_id))
        .filter(w::tier_id.eq(&row.tier_id))
        .filter(w::status.eq(WaitlistStatus::Waiting))
        .filter(w::position.lt(row.position))
        .count()
        .get_result(conn)
        .await?)
}

/// Per tier and status: entries and the places they want.
pub async fn stats(conn: &mut Conn, event_id: Uuid) -> ApiResult<Vec<(String, WaitlistStatus, i64, i64)>> {
    let rows: Vec<(String, WaitlistStatus, i64, Option<i64>)> = w::table
        .filter(w::event_id.eq(event_id))
        .group_by((w::tier_id, w::status))
        .select((
            w::tier_id,
            w::status,
            diesel::dsl::count_star(),
            diesel::dsl::sum(w::quantity),
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(tier, status, n, places)| (tier, status, n, places.unwrap_or(0)))
        .collect())
}
