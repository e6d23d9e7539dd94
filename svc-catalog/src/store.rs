//! Catalog's queries (diesel-async).

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    result::Error as DieselError,
    sql_types::{Bool, Text},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use ticketing_platform::{
    ApiError, ApiResult, db,
    messaging::{self, OutboxEvent},
};
use uuid::Uuid;

use crate::{
    domain::Status,
    schema::{events, tiers, venues},
};

type Conn = AsyncPgConnection;

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = venues)]
pub struct VenueRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub address_line1: String,
    pub address_line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country: String,
    pub timezone: String,
    pub chart: Vec<u8>,
    pub capacity: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = events, treat_none_as_null = true)]
pub struct EventRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub venue_id: Uuid,
    pub title: String,
    pub description: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub timezone: String,
    pub category: i32,
    pub image_urls: Vec<String>,
    pub status: String,
    pub venue_name: String,
    pub city: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = tiers, treat_none_as_null = true)]
pub struct TierRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub seat_category_code: Option<String>,
    pub ga_area_id: Option<String>,
    pub sales_start: Option<DateTime<Utc>>,
    pub sales_end: Option<DateTime<Utc>>,
    pub per_order_limit: i32,
    pub created_at: DateTime<Utc>,
}

// === venues ===

pub async fn insert_venue(conn: &mut Conn, row: &VenueRow) -> ApiResult<()> {
    diesel::insert_into(venues::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

/// When the venue last changed (its chart included), without reading the chart.
pub async fn venue_version(conn: &mut Conn, id: Uuid) -> ApiResult<Option<DateTime<Utc>>> {
    Ok(venues::table
        .find(id)
        .select(venues::updated_at)
        .first(conn)
        .await
        .optional()?)
}

pub async fn find_venue(conn: &mut Conn, id: Uuid) -> ApiResult<Option<VenueRow>> {
    Ok(venues::table
        .find(id)
        .select(VenueRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn list_venues(
    conn: &mut Conn,
    org: Option<Uuid>,
    city: &str,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> ApiResult<Vec<VenueRow>> {
    let mut query = venues::table.select(VenueRow::as_select()).into_boxed();
    if let Some(org) = org {
        query = query.filter(venues::organization_id.eq(org));
    }
    if !city.is_empty() {
        query = query.filter(venues::city.ilike(escape_like(city)));
    }
    if let Some((at, id)) = after {
        query = query.filter(
            venues::created_at
                .lt(at)
                .or(venues::created_at.eq(at).and(venues::id.lt(id))),
        );
    }
    Ok(query
        .order((venues::created_at.desc(), venues::id.desc()))
        .limit(limit)
        .load(conn)
        .await?)
}

pub async fn update_venue(conn: &mut Conn, row: &VenueRow) -> ApiResult<()> {
    diesel::update(venues::table.find(row.id))
        .set(row)
        .execute(conn)
        .await?;
    // Listings show the venue's name and city; keep them in step.
    diesel::update(events::table.filter(events::venue_id.eq(row.id)))
        .set((events::venue_name.eq(&row.name), events::city.eq(&row.city)))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete_venue(conn: &mut Conn, id: Uuid) -> ApiResult<bool> {
    let used: i64 = events::table
        .filter(events::venue_id.eq(id))
        .count()
        .get_result(conn)
        .await?;
    if used > 0 {
        return Err(ApiError::precondition(
            "VENUE_IN_USE",
            format!("{used} events use this venue"),
        ));
    }
    Ok(diesel::delete(venues::table.find(id)).execute(conn).await? > 0)
}

pub async fn events_of_venue(conn: &mut Conn, venue: Uuid, status: Status) -> ApiResult<Vec<EventRow>> {
    Ok(events::table
        .filter(events::venue_id.eq(venue))
        .filter(events::status.eq(status.as_str()))
        .select(EventRow::as_select())
        .load(conn)
        .await?)
}

// === events ===

pub async fn insert_event(conn: &mut Conn, row: &EventRow) -> ApiResult<()> {
    diesel::insert_into(events::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn find_event(conn: &mut Conn, id: Uuid) -> ApiResult<Option<EventRow>> {
    Ok(events::table
        .find(id)
        .select(EventRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The event and its venue's version (the key of the decoded-chart cache), in one query.
pub async fn find_event_and_venue_version(
    conn: &mut Conn,
    id: Uuid,
) -> ApiResult<Option<(EventRow, DateTime<Utc>)>> {
    Ok(events::table
        .inner_join(venues::table)
        .filter(events::id.eq(id))
        .select((EventRow::as_select(), venues::updated_at))
        .first(conn)
        .await
        .optional()?)
}

/// Saves the event and, in the same transaction, queues `announce` (`event.updated` for a
/// published event) so subscribers never miss nor invent a change.
pub async fn update_event(conn: &mut Conn, row: &EventRow, announce: Option<OutboxEvent>) -> ApiResult<()> {
    conn.transaction::<_, ApiError, _>(async |conn| {
        diesel::update(events::table.find(row.id))
            .set(row)
            .execute(conn)
            .await?;
        messaging::enqueue(conn, announce.into_iter().collect()).await
    })
    .await
}

/// Marks a change to the event (its tiers, say), so the next publication carries a new version.
pub async fn touch_event(conn: &mut Conn, id: Uuid) -> ApiResult<()> {
    diesel::update(events::table.find(id))
        .set(events::updated_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves `from` -> `to` only if the event is still in `from`: of two concurrent transitions one
/// wins, and only the winner queues `announce` (in the same transaction). Returns whether it moved.
pub async fn transition(
    conn: &mut Conn,
    id: Uuid,
    from: Status,
    to: Status,
    announce: OutboxEvent,
) -> ApiResult<bool> {
    let publishing = to == Status::Published;
    conn.transaction::<_, ApiError, _>(async |conn| {
        let moved = diesel::update(events::table.find(id).filter(events::status.eq(from.as_str())))
            .set((
                events::status.eq(to.as_str()),
                events::updated_at.eq(diesel::dsl::now),
                events::published_at.eq(publishing.then(Utc::now)),
            ))
            .execute(conn)
            .await?;
        if moved > 0 {
            messaging::enqueue(conn, vec![announce]).await?;
        }
        Ok(moved > 0)
    })
    .await
}

pub async fn delete_event(conn: &mut Conn, id: Uuid) -> ApiResult<bool> {
    Ok(diesel::delete(
        events::table
            .find(id)
            .filter(events::status.eq(Status::Draft.as_str())),
    )
    .execute(conn)
    .await?
        > 0)
}

/// Filters of ListEvents.
#[derive(Debug, Default)]
pub struct EventFilter {
    pub query: String,
    pub starts_after: Option<DateTime<Utc>>,
    pub starts_before: Option<DateTime<Utc>>,
    pub city: String,
    pub venue_id: Option<Uuid>,
    pub categories: Vec<i32>,
    pub organization_id: Option<Uuid>,
    pub statuses: Vec<String>,
    pub descending: bool,
    pub relevance: bool,
}

/// Where the previous page ended: keyset on (starts_at, id), or an offset for relevance order.
#[derive(Debug, Clone, Copy)]
pub enum After {
    Key(DateTime<Utc>, Uuid),
    Offset(i64),
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

macro_rules! filtered {
    ($f:expr) => {{
        let f = $f;
        let mut query = events::table.into_boxed();
        if !f.query.is_empty() {
            query = query.filter(
                diesel::dsl::sql::<Bool>("search @@ websearch_to_tsquery('simple', ")
                    .bind::<Text, _>(f.query.clone())
                    .sql(")"),
            );
        }
        if let Some(at) = f.starts_after {
            query = query.filter(events::starts_at.ge(at));
        }
        if let Some(at) = f.starts_before {
            query = query.filter(events::starts_at.lt(at));
        }
        if !f.city.is_empty() {
            query = query.filter(events::city.ilike(escape_like(&f.city)));
        }
        if let Some(venue) = f.venue_id {
            query = query.filter(events::venue_id.eq(venue));
        }
        if !f.categories.is_empty() {
            query = query.filter(events::category.eq_any(f.categories.clone()));
        }
        if let Some(org) = f.organization_id {
            query = query.filter(events::organization_id.eq(org));
        }
        query.filter(events::status.eq_any(f.statuses.clone()))
    }};
}

/// One page of matching events and how many match in all (capped).
pub async fn search_events(
    conn: &mut Conn,
    f: &EventFilter,
    after: Option<After>,
    limit: i64,
) -> ApiResult<(Vec<EventRow>, i64)> {
    let total: i64 = filtered!(f)
        .select(diesel::dsl::count_star())
        .limit(1)
        .get_result(conn)
        .await?;
    let mut query = filtered!(f).select(EventRow::as_select());
    if f.relevance {
        let offset = match after {
            Some(After::Offset(o)) => o,
            _ => 0,
        };
        let rank =
            diesel::dsl::sql::<diesel::sql_types::Float>("ts_rank(search, websearch_to_tsquery('simple', ")
                .bind::<Text, _>(f.query.clone())
                .sql("))");
        query = query
            .order((rank.desc(), events::starts_at.asc(), events::id.asc()))
            .offset(offset);
    } else {
        if let Some(After::Key(at, id)) = after {
            query = if f.descending {
                query.filter(
                    events::starts_at
                        .lt(at)
                        .or(events::starts_at.eq(at).and(events::id.lt(id))),
                )
            } else {
                query.filter(
                    events::starts_at
                        .gt(at)
                        .or(events::starts_at.eq(at).and(events::id.gt(id))),
                )
            };
        }
        query = if f.descending {
            query.order((events::starts_at.desc(), events::id.desc()))
        } else {
            query.order((events::starts_at.asc(), events::id.asc()))
        };
    }
    let rows = query.limit(limit).load(conn).await?;
    Ok((rows, total.min(10_000)))
}

// === tiers ===

pub async fn tiers_of(conn: &mut Conn, event: Uuid) -> ApiResult<Vec<TierRow>> {
    Ok(tiers::table
        .filter(tiers::event_id.eq(event))
        .order((tiers::created_at.asc(), tiers::id.asc()))
        .select(TierRow::as_select())
        .load(conn)
        .await?)
}

/// The tiers of several events, in creation order.
pub async fn tiers_of_events(conn: &mut Conn, events: &[Uuid]) -> ApiResult<Vec<TierRow>> {
    Ok(tiers::table
        .filter(tiers::event_id.eq_any(events))
        .order((tiers::created_at.asc(), tiers::id.asc()))
        .select(TierRow::as_select())
        .load(conn)
        .await?)
}

pub async fn venues_by_ids(conn: &mut Conn, ids: &[Uuid]) -> ApiResult<Vec<VenueRow>> {
    Ok(venues::table
        .filter(venues::id.eq_any(ids))
        .select(VenueRow::as_select())
        .load(conn)
        .await?)
}

pub async fn find_tier(conn: &mut Conn, event: Uuid, id: Uuid) -> ApiResult<Option<TierRow>> {
    Ok(tiers::table
        .filter(tiers::event_id.eq(event))
        .filter(tiers::id.eq(id))
        .select(TierRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

fn tier_conflict(e: DieselError) -> ApiError {
    db::already_exists(
        "TIER_TARGET_TAKEN",
        "another tier of this event already sells that category or area",
    )(e)
}

pub async fn insert_tier(conn: &mut Conn, row: &TierRow) -> ApiResult<()> {
    diesel::insert_into(tiers::table)
        .values(row)
        .execute(conn)
        .await
        .map_err(tier_conflict)?;
    touch_event(conn, row.event_id).await
}

pub async fn update_tier(conn: &mut Conn, row: &TierRow) -> ApiResult<()> {
    diesel::update(tiers::table.find(row.id))
        .set(row)
        .execute(conn)
        .await
        .map_err(tier_conflict)?;
    touch_event(conn, row.event_id).await
}

pub async fn delete_tier(conn: &mut Conn, event: Uuid, id: Uuid) -> ApiResult<bool> {
    let n = diesel::delete(
        tiers::table
            .filter(tiers::event_id.eq(event))
            .filter(tiers::id.eq(id)),
    )
    .execute(conn)
    .await?;
    touch_event(conn, event).await?;
    Ok(n > 0)
}

pub async fn tiers_by_ids(conn: &mut Conn, event: Uuid, ids: &[Uuid]) -> ApiResult<Vec<TierRow>> {
    Ok(tiers::table
        .filter(tiers::event_id.eq(event))
        .filter(tiers::id.eq_any(ids))
        .select(TierRow::as_select())
        .load(conn)
        .await?)
}
