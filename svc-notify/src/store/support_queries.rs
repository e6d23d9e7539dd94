//! The support chat's queries: conversations, their messages and read marks.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use ticketing_platform::pagination::Cursor;
use uuid::Uuid;

use super::{Conn, pg_notify};
use crate::{
    domain::{ConversationStatus, Side},
    schema::{chat_messages, conversations, known_events, known_orders},
};

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
