//! Reminders before an event: scheduled per holder when their first ticket is paid, moved with
//! the start, skipped for a cancelled event or a holder with no valid ticket left, and sent by
//! whichever replica locks them first, in the transaction that queues their messages.

use std::time::Duration;

use chrono::Utc;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use ticketing_platform::db::PgPool;
use uuid::Uuid;

use crate::{
    domain::{Kind, ReminderStatus, reminder_due},
    events::{Message, Notifier},
    store::{self, KnownEvent},
    templates::{EventFacts, Facts},
};

/// Reminders taken per transaction.
const BATCH: i64 = 100;

fn offset_secs(offset: Duration) -> i32 {
    i32::try_from(offset.as_secs()).unwrap_or(i32::MAX)
}

/// Schedules `holder`'s reminders of `event` at `offsets` before its start (those still ahead).
pub async fn schedule(
    conn: &mut AsyncPgConnection,
    event: &KnownEvent,
    holder: Uuid,
    offsets: &[Duration],
) -> anyhow::Result<()> {
    if event.cancelled {
        return Ok(());
    }
    let now = Utc::now();
    let due: Vec<_> = offsets
        .iter()
        .filter_map(|o| reminder_due(event.starts_at, *o, now).map(|at| (offset_secs(*o), at)))
        .collect();
    store::schedule_reminders(conn, event.id, holder, &due).await?;
    Ok(())
}

/// The start of `event` moved: its reminders follow, and those still ahead fire (again).
pub async fn reschedule(
    conn: &mut AsyncPgConnection,
    event: &KnownEvent,
    offsets: &[Duration],
) -> anyhow::Result<()> {
    let now = Utc::now();
    for offset in offsets {
        let Ok(span) = chrono::Duration::from_std(*offset) else {
            continue;
        };
        let due = event.starts_at - span;
        store::move_reminders(conn, event.id, offset_secs(*offset), due, due > now).await?;
    }
    Ok(())
}

/// Sends the reminders whose time has come; how many it settled.
pub async fn send_due(pool: &PgPool, notifier: &Notifier) -> anyhow::Result<usize> {
    let mut conn = pool.get().await?;
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        let due = store::lock_due_reminders(conn, BATCH).await?;
        for reminder in &due {
            let lag = (Utc::now() - reminder.due_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("notify_reminder_lag_seconds").record(lag);
            let status = send_one(conn, notifier, reminder).await?;
            store::settle_reminder(conn, reminder, status).await?;
        }
        Ok(due.len())
    })
    .await
}

async fn send_one(
    conn: &mut AsyncPgConnection,
    notifier: &Notifier,
    reminder: &store::DueReminder,
) -> anyhow::Result<ReminderStatus> {
    let event = match store::event(conn, reminder.event_id).await? {
        Some(event) if !event.cancelled => event,
        _ => return Ok(ReminderStatus::Skipped),
    };
    if !store::holds_ticket(conn, event.id, reminder.holder_id).await? {
        return Ok(ReminderStatus::Skipped);
    }
    let Some(recipient) = store::recipient(conn, reminder.holder_id).await? else {
        return Ok(ReminderStatus::Skipped);
    };
    // One per holder, offset and start: a moved start gets its own.
    let fact = format!(
        "{}:{}:{}",
        event.id,
        reminder.offset_secs,
        event.starts_at.timestamp()
    );
    notifier
        .send(
            conn,
            Message {
                kind: Kind::EventReminder,
                fact: &fact,
                user: Some(recipient.user_id),
                email: &recipient.email,
                facts: Facts {
                    name: recipient.display_name.clone(),
                    event: EventFacts {
                        title: event.title.clone(),
                        starts_at: Some(event.starts_at),
                    },
                    ..Default::default()
                },
                link: "/tickets".into(),
                inline: Vec::new(),
            },
        )
        .await?;
    Ok(ReminderStatus::Sent)
}
