//! Every query of notify: its read models of events, people, orders and tickets; preferences;
//! the mail queue; in-app notifications; reminders; support conversations; webhooks.

use chrono::{DateTime, Utc};
use diesel::{dsl::count_star, prelude::*, upsert::excluded};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use ticketing_platform::{ApiError, ApiResult, pagination::Cursor};
use uuid::Uuid;

use crate::{
    domain::{Choices, Kind, Locale, MailStatus},
    schema::{holdings, known_events, known_orders, mails, notifications, preferences, recipients},
};

mod reminder_queries;
mod support_queries;
mod webhook_queries;

pub use reminder_queries::*;
pub use support_queries::*;
pub use webhook_queries::*;

type Conn = AsyncPgConnection;

/// What notify knows of an event.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = known_events)]
pub struct KnownEvent {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub title: String,
    pub starts_at: DateTime<Utc>,
    pub cancelled: bool,
}

/// Records an event as catalog last described it.
pub async fn remember_event(conn: &mut Conn, event: &KnownEvent) -> QueryResult<()> {
    diesel::insert_into(known_events::table)
        .values((
            known_events::id.eq(event.id),
            known_events::organization_id.eq(event.organization_id),
            known_events::title.eq(&event.title),
            known_events::starts_at.eq(event.starts_at),
            known_events::cancelled.eq(event.cancelled),
        ))
        .on_conflict(known_events::id)
        .do_update()
        .set((
            known_events::title.eq(excluded(known_events::title)),
            known_events::starts_at.eq(excluded(known_events::starts_at)),
            known_events::cancelled.eq(excluded(known_events::cancelled)),
            known_events::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await
        .map(drop)
}

pub async fn event(conn: &mut Conn, id: Uuid) -> QueryResult<Option<KnownEvent>> {
    known_events::table
        .find(id)
        .select(KnownEvent::as_select())
        .first(conn)
        .await
        .optional()
}

/// Marks an event cancelled; false when notify did not know it or knew it cancelled already.
pub async fn cancel_event(conn: &mut Conn, id: Uuid) -> QueryResult<bool> {
    diesel::update(
        known_events::table
            .find(id)
            .filter(known_events::cancelled.eq(false)),
    )
    .set((
        known_events::cancelled.eq(true),
        known_events::updated_at.eq(diesel::dsl::now),
    ))
    .execute(conn)
    .await
    .map(|n| n > 0)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = recipients)]
pub struct Recipient {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
}

/// Where to reach `user_id`; a display name, when given, replaces the one known.
pub async fn remember_recipient(
    conn: &mut Conn,
    user_id: Uuid,
    email: &str,
    display_name: Option<&str>,
) -> QueryResult<()> {
    if email.is_empty() {
        return Ok(());
    }
    let insert = diesel::insert_into(recipients::table).values((
        recipients::user_id.eq(user_id),
        recipients::email.eq(email),
        recipients::display_name.eq(display_name.unwrap_or_default()),
    ));
    match display_name {
        Some(_) => {
            insert
                .on_conflict(recipients::user_id)
                .do_update()
                .set((
                    recipients::email.eq(excluded(recipients::email)),
                    recipients::display_name.eq(excluded(recipients::display_name)),
                    recipients::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?
        }
        None => {
            insert
                .on_conflict(recipients::user_id)
                .do_update()
                .set((
                    recipients::email.eq(excluded(recipients::email)),
                    recipients::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?
        }
    };
    Ok(())
}

pub async fn recipient(conn: &mut Conn, user_id: Uuid) -> QueryResult<Option<Recipient>> {
    recipients::table
        .find(user_id)
        .select(Recipient::as_select())
        .first(conn)
        .await
        .optional()
}

/// Every recipient of `user_ids` that notify can reach.
pub async fn recipients_of(conn: &mut Conn, user_ids: &[Uuid]) -> QueryResult<Vec<Recipient>> {
    recipients::table
        .filter(recipients::user_id.eq_any(user_ids))
        .select(Recipient::as_select())
        .order(recipients::user_id)
        .load(conn)
        .await
}

pub async fn remember_order(conn: &mut Conn, id: Uuid, event_id: Uuid, buyer_id: Uuid) -> QueryResult<()> {
    diesel::insert_into(known_orders::table)
        .values((
            known_orders::id.eq(id),
            known_orders::event_id.eq(event_id),
            known_orders::buyer_id.eq(buyer_id),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await
        .map(drop)
}

/// The event and buyer of an order notify saw created.
pub async fn order(conn: &mut Conn, id: Uuid) -> QueryResult<Option<(Uuid, Uuid)>> {
    known_orders::table
        .find(id)
        .select((known_orders::event_id, known_orders::buyer_id))
        .first(conn)
        .await
        .optional()
}

/// One ticket and who holds it.
pub struct Holding {
    pub ticket_id: Uuid,
    pub order_id: Uuid,
    pub event_id: Uuid,
    pub holder_id: Uuid,
}

pub async fn record_holdings(conn: &mut Conn, held: &[Holding]) -> QueryResult<()> {
    let rows: Vec<_> = held
        .iter()
        .map(|h| {
            (
                holdings::ticket_id.eq(h.ticket_id),
                holdings::order_id.eq(h.order_id),
                holdings::event_id.eq(h.event_id),
                holdings::holder_id.eq(h.holder_id),
            )
        })
        .collect();
    diesel::insert_into(holdings::table)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await
        .map(drop)
}

/// The tickets no longer count (refunded): their holders hear no more about the event. A
/// refund handled before its order.paid (two replicas consume side by side) leaves the tickets
/// void, so the later order.paid cannot make them valid again.
pub async fn void_holdings(conn: &mut Conn, refunded: &[Holding]) -> QueryResult<()> {
    let rows: Vec<_> = refunded
        .iter()
        .map(|h| {
            (
                holdings::ticket_id.eq(h.ticket_id),
                holdings::order_id.eq(h.order_id),
                holdings::event_id.eq(h.event_id),
                holdings::holder_id.eq(h.holder_id),
                holdings::valid.eq(false),
            )
        })
        .collect();
    diesel::insert_into(holdings::table)
        .values(rows)
        .on_conflict(holdings::ticket_id)
        .do_update()
        .set(holdings::valid.eq(false))
        .execute(conn)
        .await
        .map(drop)
}

pub async fn void_order_holdings(conn: &mut Conn, order_id: Uuid) -> QueryResult<()> {
    diesel::update(holdings::table.filter(holdings::order_id.eq(order_id)))
        .set(holdings::valid.eq(false))
        .execute(conn)
        .await
        .map(drop)
}

/// Everyone holding a valid ticket of `event_id`, once each.
pub async fn holders_of(conn: &mut Conn, event_id: Uuid) -> QueryResult<Vec<Uuid>> {
    holdings::table
        .filter(holdings::event_id.eq(event_id).and(holdings::valid.eq(true)))
        .select(holdings::holder_id)
        .distinct()
        .order(holdings::holder_id)
        .load(conn)
        .await
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = preferences)]
pub struct PreferencesRow {
    pub user_id: Uuid,
    pub email_enabled: bool,
    pub in_app_enabled: bool,
    pub reminders_enabled: bool,
    pub marketing_enabled: bool,
    pub locale: Locale,
    pub updated_at: DateTime<Utc>,
}

impl PreferencesRow {
    pub fn choices(&self) -> Choices {
        Choices {
            email: self.email_enabled,
            in_app: self.in_app_enabled,
            reminders: self.reminders_enabled,
            marketing: self.marketing_enabled,
            locale: self.locale,
        }
    }
}

pub async fn preferences(conn: &mut Conn, user_id: Uuid) -> QueryResult<Option<PreferencesRow>> {
    preferences::table
        .find(user_id)
        .select(PreferencesRow::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn choices(conn: &mut Conn, user_id: Uuid) -> QueryResult<Choices> {
    Ok(preferences(conn, user_id)
        .await?
        .map(|p| p.choices())
        .unwrap_or_default())
}

pub async fn save_preferences(conn: &mut Conn, user_id: Uuid, c: &Choices) -> QueryResult<PreferencesRow> {
    diesel::insert_into(preferences::table)
        .values((
            preferences::user_id.eq(user_id),
            preferences::email_enabled.eq(c.email),
            preferences::in_app_enabled.eq(c.in_app),
            preferences::reminders_enabled.eq(c.reminders),
            preferences::marketing_enabled.eq(c.marketing),
            preferences::locale.eq(c.locale),
        ))
        .on_conflict(preferences::user_id)
        .do_update()
        .set((
            preferences::email_enabled.eq(c.email),
            preferences::in_app_enabled.eq(c.in_app),
            preferences::reminders_enabled.eq(c.reminders),
            preferences::marketing_enabled.eq(c.marketing),
            preferences::locale.eq(c.locale),
            preferences::updated_at.eq(diesel::dsl::now),
        ))
        .returning(PreferencesRow::as_returning())
        .get_result(conn)
        .await
}

/// A mail to queue.
pub struct NewMail<'a> {
    pub dedupe_key: &'a str,
    pub message_id: &'a str,
    pub user_id: Option<Uuid>,
    pub kind: Kind,
    pub recipient: &'a str,
    pub subject: &'a str,
    pub raw: &'a [u8],
}

/// Queues `mail` unless one with its key exists; whether it was queued.
pub async fn queue_mail(conn: &mut Conn, mail: &NewMail<'_>) -> QueryResult<bool> {
    diesel::insert_into(mails::table)
        .values((
            mails::id.eq(Uuid::now_v7()),
            mails::dedupe_key.eq(mail.dedupe_key),
            mails::message_id.eq(mail.message_id),
            mails::user_id.eq(mail.user_id),
            mails::kind.eq(mail.kind),
            mails::recipient.eq(mail.recipient),
            mails::subject.eq(mail.subject),
            mails::raw.eq(mail.raw),
        ))
        .on_conflict(mails::dedupe_key)
        .do_nothing()
        .execute(conn)
        .await
        .map(|n| n > 0)
}

pub async fn mail_exists(conn: &mut Conn, dedupe_key: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        mails::table.filter(mails::dedupe_key.eq(dedupe_key)),
    ))
    .get_result(conn)
    .await
}

/// A mail taken by a sender.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = mails)]
pub struct ClaimedMail {
    pub id: Uuid,
    pub kind: Kind,
    pub recipient: String,
    pub raw: Vec<u8>,
    /// Counting this one.
    pub attempts: i32,
}

/// Takes up to `batch` due mails for one attempt each, leasing them for `lease`.
pub async fn claim_due_mails(
    conn: &mut Conn,
    batch: i64,
    lease: std::time::Duration,
) -> QueryResult<Vec<ClaimedMail>> {
    let until =
        Utc::now() + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::minutes(2));
    conn.transaction(async |conn| {
        let ids: Vec<Uuid> = mails::table
            .filter(mails::status.eq(MailStatus::Pending))
            .filter(mails::next_attempt_at.le(diesel::dsl::now))
            .order(mails::next_attempt_at)
            .limit(batch)
            .select(mails::id)
            .for_update()
            .skip_locked()
            .load(conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        diesel::update(mails::table.filter(mails::id.eq_any(&ids)))
            .set((
                mails::attempts.eq(mails::attempts + 1),
                mails::next_attempt_at.eq(until),
            ))
            .returning(ClaimedMail::as_returning())
            .get_results(conn)
            .await
    })
    .await
}

/// How an attempt ended: sent, failed for good, or pending again from `retry_at`.
pub async fn record_attempt(
    conn: &mut Conn,
    id: Uuid,
    status: MailStatus,
    error: Option<&str>,
    retry_at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let pending = mails::table
        .find(id)
        .filter(mails::status.eq(MailStatus::Pending));
    let error = error.map(|e| e.chars().take(1000).collect::<String>());
    match status {
        MailStatus::Sent => {
            diesel::update(pending)
                .set((
                    mails::status.eq(status),
                    mails::sent_at.eq(diesel::dsl::now),
                    mails::last_error.eq(None::<String>),
                ))
                .execute(conn)
                .await?
        }
        MailStatus::Failed => {
            diesel::update(pending)
                .set((mails::status.eq(status), mails::last_error.eq(error)))
                .execute(conn)
                .await?
        }
        MailStatus::Pending => {
            diesel::update(pending)
                .set((mails::next_attempt_at.eq(retry_at), mails::last_error.eq(error)))
                .execute(conn)
                .await?
        }
    };
    Ok(())
}

/// How many mails wait, and since when the oldest.
pub async fn mail_queue(conn: &mut Conn) -> QueryResult<(i64, Option<DateTime<Utc>>)> {
    mails::table
        .filter(mails::status.eq(MailStatus::Pending))
        .select((count_star(), diesel::dsl::min(mails::created_at)))
        .first(conn)
        .await
}

/// A mail as an operator (or a test) sees it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = mails)]
pub struct MailRow {
    pub id: Uuid,
    pub dedupe_key: String,
    pub message_id: String,
    pub kind: Kind,
    pub recipient: String,
    pub subject: String,
    pub status: MailStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
}

pub async fn mails_to(conn: &mut Conn, recipient: &str) -> QueryResult<Vec<MailRow>> {
    mails::table
        .filter(mails::recipient.eq(recipient))
        .order(mails::id)
        .select(MailRow::as_select())
        .load(conn)
        .await
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = notifications)]
pub struct NotificationRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: Kind,
    pub title: String,
    pub body: String,
    pub link: String,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

/// The channel a replica listens on for new notifications (payload: the user's id).
pub const NOTIFICATIONS_CHANNEL: &str = "notify_notifications";

/// Stores an in-app notification (once per key) and tells every replica, at commit, that
/// `user_id` has news.
pub async fn add_notification(
    conn: &mut Conn,
    dedupe_key: &str,
    user_id: Uuid,
    kind: Kind,
    title: &str,
    body: &str,
    link: &str,
) -> QueryResult<bool> {
    let added = diesel::insert_into(notifications::table)
        .values((
            notifications::id.eq(Uuid::now_v7()),
            notifications::dedupe_key.eq(dedupe_key),
            notifications::user_id.eq(user_id),
            notifications::kind.eq(kind),
            notifications::title.eq(title),
            notifications::body.eq(body),
            notifications::link.eq(link),
        ))
        .on_conflict(notifications::dedupe_key)
        .do_nothing()
        .execute(conn)
        .await?
        > 0;
    if added {
        diesel::select(pg_notify(NOTIFICATIONS_CHANNEL, user_id.to_string()))
            .execute(conn)
            .await?;
    }
    Ok(added)
}

diesel::define_sql_function! {
    fn pg_notify(channel: diesel::sql_types::Text, payload: diesel::sql_types::Text);
}

/// A page of `user_id`'s notifications, newest first, after `after`.
pub async fn list_notifications(
    conn: &mut Conn,
    user_id: Uuid,
    unread_only: bool,
    size: i64,
    after: Option<Cursor>,
) -> ApiResult<Vec<NotificationRow>> {
    let mut query = notifications::table
        .filter(notifications::user_id.eq(user_id))
        .select(NotificationRow::as_select())
        .order(notifications::id.desc())
        .limit(size + 1)
        .into_boxed();
    if unread_only {
        query = query.filter(notifications::read_at.is_null());
    }
    if let Some(after) = after {
        query = query.filter(notifications::id.lt(after.id));
    }
    query.load(conn).await.map_err(ApiError::from)
}

pub async fn unread_count(conn: &mut Conn, user_id: Uuid) -> QueryResult<i64> {
    notifications::table
        .filter(
            notifications::user_id
                .eq(user_id)
                .and(notifications::read_at.is_null()),
        )
        .count()
        .get_result(conn)
        .await
}

/// Marks `ids` (all when None) of `user_id`'s unread notifications read; how many changed.
pub async fn mark_read(conn: &mut Conn, user_id: Uuid, ids: Option<&[Uuid]>) -> QueryResult<usize> {
    let unread = notifications::table
        .filter(notifications::user_id.eq(user_id))
        .filter(notifications::read_at.is_null())
        .into_boxed();
    let chosen = match ids {
        Some(ids) => unread.filter(notifications::id.eq_any(ids.to_vec())),
        None => unread,
    };
    let ids: Vec<Uuid> = chosen.select(notifications::id).load(conn).await?;
    diesel::update(notifications::table.filter(notifications::id.eq_any(&ids)))
        .set(notifications::read_at.eq(diesel::dsl::now))
        .execute(conn)
        .await
}

/// `user_id`'s notifications newer than `after`, oldest first: what a watcher has not been
/// sent yet.
pub async fn notifications_after(
    conn: &mut Conn,
    user_id: Uuid,
    after: Uuid,
) -> QueryResult<Vec<NotificationRow>> {
    notifications::table
        .filter(notifications::user_id.eq(user_id))
        .filter(notifications::id.gt(after))
        .select(NotificationRow::as_select())
        .order(notifications::id.asc())
        .limit(100)
        .load(conn)
        .await
}

/// The id of `user_id`'s newest notification (nil when there is none): where a watch starts.
pub async fn newest_notification(conn: &mut Conn, user_id: Uuid) -> QueryResult<Uuid> {
    Ok(notifications::table
        .filter(notifications::user_id.eq(user_id))
        .select(notifications::id)
        .order(notifications::id.desc())
        .first::<Uuid>(conn)
        .await
        .optional()?
        .unwrap_or(Uuid::nil()))
}
