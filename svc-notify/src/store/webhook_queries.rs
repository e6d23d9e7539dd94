//! Webhooks' queries: endpoints, the delivery queue with its per-endpoint bound on deliveries
//! in flight, and the attempt log.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use ticketing_platform::pagination::Cursor;
use uuid::Uuid;

use super::Conn;
use crate::{
    schema::{webhook_attempts, webhook_deliveries, webhook_endpoints},
    webhooks::DeliveryStatus,
};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_endpoints)]
pub struct EndpointRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub disabled_reason: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EndpointRow {
    /// The secrets deliveries are signed with now: the current one, and the previous one
    /// while a rotation overlaps.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_secret_expires_at)
            && until > now
        {
            secrets.push(previous);
        }
        secrets
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub source_id: Uuid,
    pub event_type: String,
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub leased_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_attempts)]
pub struct AttemptRow {
    pub id: i64,
    pub delivery_id: Uuid,
    pub attempted_at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub response_body: String,
    pub error: String,
}

/// The fields an update changes (None: unchanged).
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = webhook_endpoints)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub disabled_reason: Option<String>,
}

pub async fn count_endpoints(conn: &mut Conn, organization: Uuid) -> QueryResult<i64> {
    webhook_endpoints::table
        .filter(webhook_endpoints::organization_id.eq(organization))
        .count()
        .get_result(conn)
        .await
}

pub async fn create_endpoint(
    conn: &mut Conn,
    organization: Uuid,
    url: &str,
    event_types: &[String],
    description: &str,
    secret: &str,
) -> QueryResult<EndpointRow> {
    diesel::insert_into(webhook_endpoints::table)
        .values((
            webhook_endpoints::id.eq(Uuid::now_v7()),
            webhook_endpoints::organization_id.eq(organization),
            webhook_endpoints::url.eq(url),
            webhook_endpoints::event_types.eq(event_types),
            webhook_endpoints::description.eq(description),
            webhook_endpoints::secret.eq(secret),
        ))
        .returning(EndpointRow::as_returning())
        .get_result(conn)
        .await
}

pub async fn endpoint(conn: &mut Conn, id: Uuid) -> QueryResult<Option<EndpointRow>> {
    webhook_endpoints::table
        .find(id)
        .select(EndpointRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Newest first.
pub async fn list_endpoints(
    conn: &mut Conn,
    organization: Uuid,
    size: i64,
    after: Option<Cursor>,
) -> QueryResult<Vec<EndpointRow>> {
    let mut query = webhook_endpoints::table
        .filter(webhook_endpoints::organization_id.eq(organization))
        .select(EndpointRow::as_select())
        .order(webhook_endpoints::id.desc())
        .limit(size + 1)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(webhook_endpoints::id.lt(after.id));
    }
    query.load(conn).await
}

pub async fn update_endpoint(
    conn: &mut Conn,
    id: Uuid,
    changes: &EndpointChanges,
) -> QueryResult<EndpointRow> {
    diesel::update(webhook_endpoints::table.find(id))
        .set((changes, webhook_endpoints::updated_at.eq(diesel::dsl::now)))
        .returning(EndpointRow::as_returning())
        .get_result(conn)
        .await
}

pub async fn delete_endpoint(conn: &mut Conn, id: Uuid) -> QueryResult<usize> {
    diesel::delete(webhook_endpoints::table.find(id))
        .execute(conn)
        .await
}

/// `secret` becomes the endpoint's; the one it replaces still signs until `overlap_until`.
pub async fn rotate_secret(
    conn: &mut Conn,
    id: Uuid,
    secret: &str,
    overlap_until: DateTime<Utc>,
) -> QueryResult<EndpointRow> {
    diesel::update(webhook_endpoints::table.find(id))
        .set((
            webhook_endpoints::previous_secret.eq(webhook_endpoints::secret.nullable()),
            webhook_endpoints::previous_secret_expires_at.eq(overlap_until),
            webhook_endpoints::secret.eq(secret),
            webhook_endpoints::updated_at.eq(diesel::dsl::now),
        ))
        .returning(EndpointRow::as_returning())
        .get_result(conn)
        .await
}

/// One delivery of `event_type` for every enabled endpoint of `organization` listening to it
/// (an empty list listens to all), once per source event; how many were new.
pub async fn queue_deliveries(
    conn: &mut Conn,
    organization: Uuid,
    event_type: &str,
    source: Uuid,
    payload: &str,
) -> QueryResult<usize> {
    let endpoints: Vec<(Uuid, Vec<String>)> = webhook_endpoints::table
        .filter(webhook_endpoints::organization_id.eq(organization))
        .filter(webhook_endpoints::enabled)
        .select((webhook_endpoints::id, webhook_endpoints::event_types))
        .load(conn)
        .await?;
    let rows: Vec<_> = endpoints
        .into_iter()
        .filter(|(_, types)| types.is_empty() || types.iter().any(|t| t == event_type))
        .map(|(endpoint, _)| {
            (
                webhook_deliveries::id.eq(Uuid::now_v7()),
                webhook_deliveries::endpoint_id.eq(endpoint),
                webhook_deliveries::source_id.eq(source),
                webhook_deliveries::event_type.eq(event_type),
                webhook_deliveries::payload.eq(payload),
            )
        })
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    diesel::insert_into(webhook_deliveries::table)
        .values(rows)
        .on_conflict((webhook_deliveries::endpoint_id, webhook_deliveries::source_id))
        .do_nothing()
        .execute(conn)
        .await
}

/// One delivery for one endpoint (a ping).
pub async fn queue_delivery(
    conn: &mut Conn,
    endpoint: Uuid,
    event_type: &str,
    payload: &str,
) -> QueryResult<DeliveryRow> {
    let id = Uuid::now_v7();
    diesel::insert_into(webhook_deliveries::table)
        .values((
            webhook_deliveries::id.eq(id),
            webhook_deliveries::endpoint_id.eq(endpoint),
            webhook_deliveries::source_id.eq(id),
            webhook_deliveries::event_type.eq(event_type),
            webhook_deliveries::payload.eq(payload),
        ))
        .returning(DeliveryRow::as_returning())
        .get_result(conn)
        .await
}

/// A delivery taken to send, with where and how to sign it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery: DeliveryRow,
    pub endpoint: EndpointRow,
}

/// Takes up to `limit` due deliveries, at most `per_endpoint` in flight for any endpoint
/// (counting those other senders hold), each leased until `lease` from now. An endpoint is
/// locked while its deliveries are counted and taken, so two senders cannot both fill it.
pub async fn claim_due_deliveries(
    conn: &mut Conn,
    limit: i64,
    per_endpoint: i64,
    lease: std::time::Duration,
) -> QueryResult<Vec<ClaimedDelivery>> {
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::minutes(2));
    conn.transaction(async |conn| {
        let due = webhook_deliveries::table
            .filter(webhook_deliveries::status.eq(DeliveryStatus::Pending))
            .filter(webhook_deliveries::next_attempt_at.le(now))
            .filter(
                webhook_deliveries::leased_until
                    .is_null()
                    .or(webhook_deliveries::leased_until.le(now)),
            )
            .select(webhook_deliveries::endpoint_id);
        let endpoints: Vec<EndpointRow> = webhook_endpoints::table
            .filter(webhook_endpoints::enabled)
            .filter(webhook_endpoints::id.eq_any(due))
            .select(EndpointRow::as_select())
            .order(webhook_endpoints::id)
            .limit(limit)
            .for_update()
            .skip_locked()
            .load(conn)
            .await?;
        let mut claimed = Vec::new();
        for endpoint in endpoints {
            let room = limit - claimed.len() as i64;
            if room <= 0 {
                break;
            }
            let busy: i64 = webhook_deliveries::table
                .filter(webhook_deliveries::endpoint_id.eq(endpoint.id))
                .filter(webhook_deliveries::status.eq(DeliveryStatus::Pending))
                .filter(webhook_deliveries::leased_until.is_not_null())
                .filter(webhook_deliveries::leased_until.gt(now))
                .count()
                .get_result(conn)
                .await?;
            let take = (per_endpoint - busy).min(room);
            if take <= 0 {
                continue;
            }
            let ids: Vec<Uuid> = webhook_deliveries::table
                .filter(webhook_deliveries::endpoint_id.eq(endpoint.id))
                .filter(webhook_deliveries::status.eq(DeliveryStatus::Pending))
                .filter(webhook_deliveries::next_attempt_at.le(now))
                .filter(
                    webhook_deliveries::leased_until
                        .is_null()
                        .or(webhook_deliveries::leased_until.le(now)),
                )
                .order(webhook_deliveries::next_attempt_at)
                .limit(take)
                .select(webhook_deliveries::id)
                .load(conn)
                .await?;
            let rows: Vec<DeliveryRow> =
                diesel::update(webhook_deliveries::table.filter(webhook_deliveries::id.eq_any(&ids)))
                    .set((
                        webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1),
                        webhook_deliveries::leased_until.eq(until),
                        // Past the lease: the due index no longer finds it until the lease
                        // ends (or its attempt is recorded), so claims never wade through
                        // rows in flight.
                        webhook_deliveries::next_attempt_at.eq(until),
                    ))
                    .returning(DeliveryRow::as_returning())
                    .get_results(conn)
                    .await?;
            claimed.extend(rows.into_iter().map(|delivery| ClaimedDelivery {
                delivery,
                endpoint: endpoint.clone(),
            }));
        }
        Ok(claimed)
    })
    .await
}

/// One attempt's record.
pub struct NewAttempt<'a> {
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    pub response_body: &'a str,
    pub error: &'a str,
}

/// Logs an attempt and moves its delivery on: settled, or pending from `retry_at`; `gone`
/// disables the endpoint too.
pub async fn record_delivery_attempt(
    conn: &mut Conn,
    delivery: &DeliveryRow,
    attempt: &NewAttempt<'_>,
    status: DeliveryStatus,
    retry_at: DateTime<Utc>,
    gone: Option<&str>,
) -> QueryResult<()> {
    conn.transaction(async |conn| {
        diesel::insert_into(webhook_attempts::table)
            .values((
                webhook_attempts::delivery_id.eq(delivery.id),
                webhook_attempts::status_code.eq(attempt.status_code),
                webhook_attempts::duration_ms.eq(attempt.duration_ms),
                webhook_attempts::response_body.eq(attempt.response_body),
                webhook_attempts::error.eq(attempt.error),
            ))
            .execute(conn)
            .await?;
        diesel::update(webhook_deliveries::table.find(delivery.id))
            .set((
                webhook_deliveries::status.eq(status),
                webhook_deliveries::next_attempt_at.eq(retry_at),
                webhook_deliveries::leased_until.eq(None::<DateTime<Utc>>),
            ))
            .execute(conn)
            .await?;
        if let Some(reason) = gone {
            diesel::update(webhook_endpoints::table.find(delivery.endpoint_id))
                .set((
                    webhook_endpoints::enabled.eq(false),
                    webhook_endpoints::disabled_reason.eq(reason),
                    webhook_endpoints::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
        }
        Ok(())
    })
    .await
}

pub async fn delivery(conn: &mut Conn, endpoint: Uuid, id: Uuid) -> QueryResult<Option<DeliveryRow>> {
    webhook_deliveries::table
        .find(id)
        .filter(webhook_deliveries::endpoint_id.eq(endpoint))
        .select(DeliveryRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Newest first.
pub async fn list_deliveries(
    conn: &mut Conn,
    endpoint: Uuid,
    status: Option<DeliveryStatus>,
    size: i64,
    after: Option<Cursor>,
) -> QueryResult<Vec<DeliveryRow>> {
    let mut query = webhook_deliveries::table
        .filter(webhook_deliveries::endpoint_id.eq(endpoint))
        .select(DeliveryRow::as_select())
        .order(webhook_deliveries::id.desc())
        .limit(size + 1)
        .into_boxed();
    if let Some(status) = status {
        query = query.filter(webhook_deliveries::status.eq(status));
    }
    if let Some(after) = after {
        query = query.filter(webhook_deliveries::id.lt(after.id));
    }
    query.load(conn).await
}

/// The attempts of `deliveries`, oldest first.
pub async fn attempts_of(conn: &mut Conn, deliveries: &[Uuid]) -> QueryResult<Vec<AttemptRow>> {
    webhook_attempts::table
        .filter(webhook_attempts::delivery_id.eq_any(deliveries))
        .select(AttemptRow::as_select())
        .order(webhook_attempts::id)
        .load(conn)
        .await
}

/// Makes a delivery due now, unless a sender holds it; the row as it is after.
pub async fn redeliver(conn: &mut Conn, delivery: Uuid) -> QueryResult<Option<DeliveryRow>> {
    let now = Utc::now();
    diesel::update(
        webhook_deliveries::table.find(delivery).filter(
            webhook_deliveries::leased_until
                .is_null()
                .or(webhook_deliveries::leased_until.le(now)),
        ),
    )
    .set((
        webhook_deliveries::status.eq(DeliveryStatus::Pending),
        webhook_deliveries::next_attempt_at.eq(now),
        webhook_deliveries::leased_until.eq(None::<DateTime<Utc>>),
    ))
    .returning(DeliveryRow::as_returning())
    .get_result(conn)
    .await
    .optional()
}

/// Deliveries waiting for an enabled endpoint, and since when the oldest due one waits.
pub async fn delivery_queue(conn: &mut Conn) -> QueryResult<(i64, Option<DateTime<Utc>>)> {
    let waiting = webhook_deliveries::table
        .inner_join(webhook_endpoints::table)
        .filter(webhook_endpoints::enabled)
        .filter(webhook_deliveries::status.eq(DeliveryStatus::Pending));
    let depth = waiting.count().get_result(conn).await?;
    let oldest = waiting
        .select(diesel::dsl::min(webhook_deliveries::next_attempt_at))
        .get_result(conn)
        .await?;
    Ok((depth, oldest))
}

/// Deletes up to `batch` settled deliveries created before `before`, with their attempts; how
/// many. Pending ones stay, however old.
pub async fn prune_deliveries(conn: &mut Conn, before: DateTime<Utc>, batch: i64) -> QueryResult<usize> {
    let old: Vec<Uuid> = webhook_deliveries::table
        .filter(webhook_deliveries::status.ne(DeliveryStatus::Pending))
        .filter(webhook_deliveries::created_at.lt(before))
        .select(webhook_deliveries::id)
        .limit(batch)
        .load(conn)
        .await?;
    if old.is_empty() {
        return Ok(0);
    }
    diesel::delete(webhook_deliveries::table.filter(webhook_deliveries::id.eq_any(&old)))
        .execute(conn)
        .await
}
