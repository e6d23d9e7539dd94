//! Every query of notify: its read models of events, people, orders and tickets; preferences;
//! the mail queue; in-app notifications; reminders; support conversations.

use chrono::{DateTime, Utc};
use diesel::{dsl::count_star, prelude::*, upsert::excluded};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use ticketing_platform::{ApiError, ApiResult, pagination::Cursor};
use uuid::Uuid;

use crate::{
    domain::{Choices, ConversationStatus, Kind, Locale, MailStatus, ReminderStatus, Side},
    schema::{
        chat_messages, conversations, holdings, known_events, known_orders, mails, notifications,
        preferences, recipients, reminders,
    },
};

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

/// The tickets no longer count (refunded): their holders hear no more about the event.
pub async fn void_holdings(conn: &mut Conn, tickets: &[Uuid]) -> QueryResult<()> {
    diesel::update(holdings::table.filter(holdings::ticket_id.eq_any(tickets)))
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

/// The channel a replica listens on for new chat messages (payload: the conversation's id).
pub const CHAT_CHANNEL: &str = "notify_chat";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = conversations)]
pub struct ConversationRow {
    pub id: Uuid,
    pub buyer_id: Uuid,
    pub organization_id: Option<Uuid>,
    pub order_id: Option<Uuid>,
    pub subject: String,
    pub status: ConversationStatus,
    pub buyer_read_at: DateTime<Utc>,
    pub staff_read_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub last_message_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = chat_messages)]
pub struct ChatMessageRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub author_id: Uuid,
    pub from_staff: bool,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// The organization an order's event belongs to, when notify knows the order is `buyer`'s.
pub async fn organization_of_order(
    conn: &mut Conn,
    order_id: Uuid,
    buyer: Uuid,
) -> QueryResult<Option<Uuid>> {
    known_orders::table
        .inner_join(known_events::table.on(known_events::id.eq(known_orders::event_id)))
        .filter(
            known_orders::id
                .eq(order_id)
                .and(known_orders::buyer_id.eq(buyer)),
        )
        .select(known_events::organization_id)
        .first(conn)
        .await
        .optional()
}

async fn announce(conn: &mut Conn, conversation: Uuid) -> QueryResult<()> {
    diesel::select(pg_notify(CHAT_CHANNEL, conversation.to_string()))
        .execute(conn)
        .await
        .map(drop)
}

/// Opens a conversation with its first message, written by its buyer.
pub async fn open_conversation(
    conn: &mut Conn,
    buyer: Uuid,
    organization: Option<Uuid>,
    order: Option<Uuid>,
    subject: &str,
    body: &str,
) -> QueryResult<ConversationRow> {
    conn.transaction(async |conn| {
        let id = Uuid::now_v7();
        let row = diesel::insert_into(conversations::table)
            .values((
                conversations::id.eq(id),
                conversations::buyer_id.eq(buyer),
                conversations::organization_id.eq(organization),
                conversations::order_id.eq(order),
                conversations::subject.eq(subject),
            ))
            .returning(ConversationRow::as_returning())
            .get_result(conn)
            .await?;
        diesel::insert_into(chat_messages::table)
            .values((
                chat_messages::id.eq(Uuid::now_v7()),
                chat_messages::conversation_id.eq(id),
                chat_messages::author_id.eq(buyer),
                chat_messages::from_staff.eq(false),
                chat_messages::body.eq(body),
            ))
            .execute(conn)
            .await?;
        announce(conn, id).await?;
        Ok(row)
    })
    .await
}

pub async fn conversation(conn: &mut Conn, id: Uuid) -> QueryResult<Option<ConversationRow>> {
    conversations::table
        .find(id)
        .select(ConversationRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Whose conversations a list shows.
#[derive(Debug, Clone, Copy)]
pub enum Inbox {
    Buyer(Uuid),
    Organization(Uuid),
    Everyone,
}

/// A page of conversations, latest activity first, after `after` (its last activity and id).
pub async fn list_conversations(
    conn: &mut Conn,
    inbox: Inbox,
    open_only: bool,
    size: i64,
    after: Option<Cursor>,
) -> QueryResult<Vec<ConversationRow>> {
    let mut query = conversations::table
        .select(ConversationRow::as_select())
        .order((conversations::last_message_at.desc(), conversations::id.desc()))
        .limit(size + 1)
        .into_boxed();
    query = match inbox {
        Inbox::Buyer(buyer) => query.filter(conversations::buyer_id.eq(buyer)),
        Inbox::Organization(org) => query.filter(conversations::organization_id.eq(org)),
        Inbox::Everyone => query,
    };
    if open_only {
        query = query.filter(conversations::status.eq(ConversationStatus::Open));
    }
    if let Some(after) = after {
        query = query.filter(
            conversations::last_message_at
                .lt(after.created_at)
                .or(conversations::last_message_at
                    .eq(after.created_at)
                    .and(conversations::id.lt(after.id))),
        );
    }
    query.load(conn).await
}

/// Writes a message into an open conversation; None when it is closed. The writer's side has
/// read everything up to it.
pub async fn post_message(
    conn: &mut Conn,
    conversation: Uuid,
    author: Uuid,
    side: Side,
    body: &str,
) -> QueryResult<Option<ChatMessageRow>> {
    conn.transaction(async |conn| {
        let status: ConversationStatus = conversations::table
            .find(conversation)
            .select(conversations::status)
            .for_update()
            .first(conn)
            .await?;
        if status != ConversationStatus::Open {
            return Ok(None);
        }
        let row = diesel::insert_into(chat_messages::table)
            .values((
                chat_messages::id.eq(Uuid::now_v7()),
                chat_messages::conversation_id.eq(conversation),
                chat_messages::author_id.eq(author),
                chat_messages::from_staff.eq(side == Side::Staff),
                chat_messages::body.eq(body),
            ))
            .returning(ChatMessageRow::as_returning())
            .get_result(conn)
            .await?;
        let target = conversations::table.find(conversation);
        match side {
            Side::Buyer => {
                diesel::update(target)
                    .set((
                        conversations::last_message_at.eq(row.created_at),
                        conversations::buyer_read_at.eq(row.created_at),
                    ))
                    .execute(conn)
                    .await?
            }
            Side::Staff => {
                diesel::update(target)
                    .set((
                        conversations::last_message_at.eq(row.created_at),
                        conversations::staff_read_at.eq(row.created_at),
                    ))
                    .execute(conn)
                    .await?
            }
        };
        announce(conn, conversation).await?;
        Ok(Some(row))
    })
    .await
}

/// A page of a conversation's messages, oldest first, after `after`.
pub async fn list_messages(
    conn: &mut Conn,
    conversation: Uuid,
    size: i64,
    after: Option<Cursor>,
) -> QueryResult<Vec<ChatMessageRow>> {
    let mut query = chat_messages::table
        .filter(chat_messages::conversation_id.eq(conversation))
        .select(ChatMessageRow::as_select())
        .order(chat_messages::id.asc())
        .limit(size + 1)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(chat_messages::id.gt(after.id));
    }
    query.load(conn).await
}

/// The messages of `conversation` after `after`, oldest first (a watcher's next batch).
pub async fn messages_after(
    conn: &mut Conn,
    conversation: Uuid,
    after: Uuid,
) -> QueryResult<Vec<ChatMessageRow>> {
    chat_messages::table
        .filter(chat_messages::conversation_id.eq(conversation))
        .filter(chat_messages::id.gt(after))
        .select(ChatMessageRow::as_select())
        .order(chat_messages::id.asc())
        .limit(100)
        .load(conn)
        .await
}

/// The id of the conversation's newest message (nil when none): where a watch starts.
pub async fn newest_message(conn: &mut Conn, conversation: Uuid) -> QueryResult<Uuid> {
    Ok(chat_messages::table
        .filter(chat_messages::conversation_id.eq(conversation))
        .select(chat_messages::id)
        .order(chat_messages::id.desc())
        .first::<Uuid>(conn)
        .await
        .optional()?
        .unwrap_or(Uuid::nil()))
}

/// Messages of the other side that `side` has not read.
pub async fn unread_in(conn: &mut Conn, c: &ConversationRow, side: Side) -> QueryResult<i64> {
    let (from_staff, read_at) = match side {
        Side::Buyer => (true, c.buyer_read_at),
        Side::Staff => (false, c.staff_read_at),
    };
    chat_messages::table
        .filter(chat_messages::conversation_id.eq(c.id))
        .filter(chat_messages::from_staff.eq(from_staff))
        .filter(chat_messages::created_at.gt(read_at))
        .count()
        .get_result(conn)
        .await
}

pub async fn mark_conversation_read(conn: &mut Conn, id: Uuid, side: Side) -> QueryResult<()> {
    let target = conversations::table.find(id);
    match side {
        Side::Buyer => {
            diesel::update(target)
                .set(conversations::buyer_read_at.eq(diesel::dsl::now))
                .execute(conn)
                .await?
        }
        Side::Staff => {
            diesel::update(target)
                .set(conversations::staff_read_at.eq(diesel::dsl::now))
                .execute(conn)
                .await?
        }
    };
    Ok(())
}

/// Moves a conversation to `to` when it is elsewhere; whether it moved.
pub async fn set_conversation_status(conn: &mut Conn, id: Uuid, to: ConversationStatus) -> QueryResult<bool> {
    diesel::update(conversations::table.find(id).filter(conversations::status.ne(to)))
        .set(conversations::status.eq(to))
        .execute(conn)
        .await
        .map(|n| n > 0)
}
