//! Reminders' queries: scheduling, moving, skipping, and taking the due ones.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Conn;
use crate::{
    domain::ReminderStatus,
    schema::{holdings, reminders},
};

/// Whether `holder` still holds a valid ticket of `event_id`.
pub async fn holds_ticket(conn: &mut Conn, event_id: Uuid, holder: Uuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        holdings::table.filter(
            holdings::event_id
                .eq(event_id)
                .and(holdings::holder_id.eq(holder))
                .and(holdings::valid.eq(true)),
        ),
    ))
    .get_result(conn)
    .await
}

/// Schedules `holder`'s reminders of `event_id` (offset in seconds, due time); one already
/// scheduled stays as it is.
pub async fn schedule_reminders(
    conn: &mut Conn,
    event_id: Uuid,
    holder: Uuid,
    due: &[(i32, DateTime<Utc>)],
) -> QueryResult<()> {
    let rows: Vec<_> = due
        .iter()
        .map(|(offset, at)| {
            (
                reminders::event_id.eq(event_id),
                reminders::holder_id.eq(holder),
                reminders::offset_secs.eq(offset),
                reminders::due_at.eq(at),
            )
        })
        .collect();
    diesel::insert_into(reminders::table)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await
        .map(drop)
}

/// The start of `event_id` moved: each reminder of `offset` is due at `due` now, and one that
/// fired already fires again for the new start when `again`.
pub async fn move_reminders(
    conn: &mut Conn,
    event_id: Uuid,
    offset: i32,
    due: DateTime<Utc>,
    again: bool,
) -> QueryResult<()> {
    let of_offset = reminders::table.filter(
        reminders::event_id
            .eq(event_id)
            .and(reminders::offset_secs.eq(offset)),
    );
    if again {
        diesel::update(of_offset.filter(reminders::status.ne(ReminderStatus::Skipped)))
            .set((
                reminders::due_at.eq(due),
                reminders::status.eq(ReminderStatus::Pending),
                reminders::fired_at.eq(None::<DateTime<Utc>>),
            ))
            .execute(conn)
            .await?;
    } else {
        diesel::update(of_offset.filter(reminders::status.eq(ReminderStatus::Pending)))
            .set(reminders::due_at.eq(due))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// No reminder of a cancelled event goes.
pub async fn skip_reminders(conn: &mut Conn, event_id: Uuid) -> QueryResult<()> {
    diesel::update(
        reminders::table.filter(
            reminders::event_id
                .eq(event_id)
                .and(reminders::status.eq(ReminderStatus::Pending)),
        ),
    )
    .set(reminders::status.eq(ReminderStatus::Skipped))
    .execute(conn)
    .await
    .map(drop)
}

/// A reminder whose time has come.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = reminders)]
pub struct DueReminder {
    pub event_id: Uuid,
    pub holder_id: Uuid,
    pub offset_secs: i32,
    pub due_at: DateTime<Utc>,
}

/// Up to `batch` due reminders, locked for this transaction (other replicas skip them).
pub async fn lock_due_reminders(conn: &mut Conn, batch: i64) -> QueryResult<Vec<DueReminder>> {
    reminders::table
        .filter(reminders::status.eq(ReminderStatus::Pending))
        .filter(reminders::due_at.le(diesel::dsl::now))
        .order(reminders::due_at)
        .limit(batch)
        .select(DueReminder::as_select())
        .for_update()
        .skip_locked()
        .load(conn)
        .await
}

pub async fn settle_reminder(conn: &mut Conn, r: &DueReminder, status: ReminderStatus) -> QueryResult<()> {
    diesel::update(reminders::table.find((r.event_id, r.holder_id, r.offset_secs)))
        .set((
            reminders::status.eq(status),
            reminders::fired_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// The reminders of `event_id`, for tests and operators: holder, offset, status, due time.
pub async fn reminders_of(
    conn: &mut Conn,
    event_id: Uuid,
) -> QueryResult<Vec<(Uuid, i32, ReminderStatus, DateTime<Utc>)>> {
    reminders::table
        .filter(reminders::event_id.eq(event_id))
        .select((
            reminders::holder_id,
            reminders::offset_secs,
            reminders::status,
            reminders::due_at,
        ))
        .order((reminders::holder_id, reminders::offset_secs))
        .load(conn)
        .await
}
