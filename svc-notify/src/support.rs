//! The support chat's handlers: a buyer's conversations with the organization selling their
//! order's event (or the platform's admins). Whoever is not its buyer, a member of its
//! organization or an admin is told it does not exist.

use ticketing_platform::{
    ApiError, ApiResult,
    auth::Principal,
    error::{Violations, parse_id},
    pagination::{self, Cursor},
    time::to_timestamp,
};
use ticketing_proto::ticketing::notify::v1 as pb;
use tonic::Request;
use uuid::Uuid;

use crate::{
    api::{ChatStream, NotifyApi},
    domain::{self, ConversationStatus, Side},
    live,
    store::{self, ChatMessageRow, ConversationRow, Inbox},
};

const MAX_SUBJECT: usize = 200;
const MAX_BODY: usize = 4000;

fn message_proto(row: &ChatMessageRow) -> pb::ChatMessage {
    pb::ChatMessage {
        id: row.id.to_string(),
        conversation_id: row.conversation_id.to_string(),
        author_id: row.author_id.to_string(),
        from_staff: row.from_staff,
        body: row.body.clone(),
        created_at: Some(to_timestamp(row.created_at)),
    }
}

fn conversation_proto(row: &ConversationRow, unread: i64) -> pb::Conversation {
    pb::Conversation {
        id: row.id.to_string(),
        buyer_id: row.buyer_id.to_string(),
        organization_id: row.organization_id.map(|o| o.to_string()).unwrap_or_default(),
        order_id: row.order_id.map(|o| o.to_string()).unwrap_or_default(),
        subject: row.subject.clone(),
        status: row.status.to_proto().into(),
        unread_count: i32::try_from(unread).unwrap_or(i32::MAX),
        created_at: Some(to_timestamp(row.created_at)),
        last_message_at: Some(to_timestamp(row.last_message_at)),
    }
}

impl NotifyApi {
    /// A person (API keys do not chat) and their id.
    async fn person(&self, request: &Request<impl Sized>) -> ApiResult<(Principal, Uuid)> {
        let principal = self.verifier.authenticate(request.metadata()).await?;
        let id = principal.user_id()?;
        Ok((principal, id))
    }

    /// The conversation and the caller's side of it; NOT_FOUND for anyone without one.
    async fn conversation_for(
        &self,
        principal: &Principal,
        caller: Uuid,
        raw_id: &str,
    ) -> ApiResult<(ConversationRow, Side)> {
        let id = parse_id("conversation_id", raw_id)?;
        let mut conn = self.pool.get().await?;
        let row = store::conversation(&mut conn, id).await?;
        row.and_then(|row| {
            domain::side_of(
                caller,
                principal.is_admin(),
                |org| principal.memberships.contains_key(&org),
                row.buyer_id,
                row.organization_id,
            )
            .map(|side| (row, side))
        })
        .ok_or(ApiError::NotFound {
            resource: "conversation",
        })
    }

    async fn shown(&self, row: &ConversationRow, side: Side) -> ApiResult<pb::Conversation> {
        let mut conn = self.pool.get().await?;
        let unread = store::unread_in(&mut conn, row, side).await?;
        Ok(conversation_proto(row, unread))
    }

    /// The conversation as it is now, from `side`.
    async fn reloaded(&self, id: Uuid, side: Side) -> ApiResult<pb::Conversation> {
        let mut conn = self.pool.get().await?;
        let row = store::conversation(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound {
                resource: "conversation",
            })?;
        let unread = store::unread_in(&mut conn, &row, side).await?;
        Ok(conversation_proto(&row, unread))
    }

    pub(crate) async fn open_conversation(
        &self,
        request: Request<pb::OpenConversationRequest>,
    ) -> ApiResult<pb::Conversation> {
        let (_, buyer) = self.person(&request).await?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let subject = v.check("subject", domain::check_text(&r.subject, MAX_SUBJECT));
        let body = v.check("body", domain::check_text(&r.body, MAX_BODY));
        let order = if r.order_id.is_empty() {
            None
        } else {
            v.id("order_id", &r.order_id)
        };
        let (subject, body) = v.finish((subject, body))?;
        let mut conn = self.pool.get().await?;
        let organization = match order {
            Some(order) => Some(
                store::organization_of_order(&mut conn, order, buyer)
                    .await?
                    .ok_or_else(|| ApiError::invalid("order_id", "is not one of your orders"))?,
            ),
            None => None,
        };
        let row = store::open_conversation(&mut conn, buyer, organization, order, &subject, &body).await?;
        metrics::counter!("notify_conversations_opened_total").increment(1);
        Ok(conversation_proto(&row, 0))
    }

    pub(crate) async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> ApiResult<pb::ListConversationsResponse> {
        let (principal, caller) = self.person(&request).await?;
        let r = request.into_inner();
        let size = pagination::page_size(r.page_size)?;
        let after = Cursor::decode(&r.page_token)?;
        let (inbox, side) = if r.organization_id.is_empty() {
            if principal.is_admin() {
                (Inbox::Everyone, Side::Staff)
            } else {
                (Inbox::Buyer(caller), Side::Buyer)
            }
        } else {
            let org = parse_id("organization_id", &r.organization_id)?;
            if !(principal.is_admin() || principal.memberships.contains_key(&org)) {
                return Err(ApiError::permission_denied(
                    "only the organization's members see its inbox",
                ));
            }
            (Inbox::Organization(org), Side::Staff)
        };
        let mut conn = self.pool.get().await?;
        let rows = store::list_conversations(&mut conn, inbox, r.open_only, size, after).await?;
        let (rows, next_page_token) = pagination::finish_page(rows, size, |row| Cursor {
            created_at: row.last_message_at,
            id: row.id,
        });
        let mut conversations = Vec::with_capacity(rows.len());
        for row in &rows {
            // An admin's own question shows from the buyer's side.
            let side = if row.buyer_id == caller { Side::Buyer } else { side };
            conversations.push(conversation_proto(
                row,
                store::unread_in(&mut conn, row, side).await?,
            ));
        }
        Ok(pb::ListConversationsResponse {
            conversations,
            next_page_token,
        })
    }

    pub(crate) async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> ApiResult<pb::Conversation> {
        let (principal, caller) = self.person(&request).await?;
        let (row, side) = self
            .conversation_for(&principal, caller, &request.get_ref().conversation_id)
            .await?;
        self.shown(&row, side).await
    }

    pub(crate) async fn post_message(
        &self,
        request: Request<pb::PostMessageRequest>,
    ) -> ApiResult<pb::ChatMessage> {
        let (principal, caller) = self.person(&request).await?;
        let r = request.into_inner();
        let body = domain::check_text(&r.body, MAX_BODY).map_err(|e| ApiError::invalid("body", e))?;
        let (row, side) = self
            .conversation_for(&principal, caller, &r.conversation_id)
            .await?;
        let mut conn = self.pool.get().await?;
        let message = store::post_message(&mut conn, row.id, caller, side, &body)
            .await?
            .ok_or_else(|| {
                ApiError::precondition(
                    "CONVERSATION_CLOSED",
                    "the conversation is closed; reopen it to write",
                )
            })?;
        metrics::counter!("notify_chat_messages_total", "side" => if side == Side::Staff { "staff" } else { "buyer" })
            .increment(1);
        Ok(message_proto(&message))
    }

    pub(crate) async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> ApiResult<pb::ListMessagesResponse> {
        let (principal, caller) = self.person(&request).await?;
        let r = request.into_inner();
        let size = pagination::page_size(r.page_size)?;
        let after = Cursor::decode(&r.page_token)?;
        let (row, _) = self
            .conversation_for(&principal, caller, &r.conversation_id)
            .await?;
        let mut conn = self.pool.get().await?;
        let rows = store::list_messages(&mut conn, row.id, size, after).await?;
        let (rows, next_page_token) = pagination::finish_page(rows, size, |m| Cursor {
            created_at: m.created_at,
            id: m.id,
        });
        Ok(pb::ListMessagesResponse {
            messages: rows.iter().map(message_proto).collect(),
            next_page_token,
        })
    }

    pub(crate) async fn mark_conversation_read(
        &self,
        request: Request<pb::MarkConversationReadRequest>,
    ) -> ApiResult<pb::Conversation> {
        let (principal, caller) = self.person(&request).await?;
        let (row, side) = self
            .conversation_for(&principal, caller, &request.get_ref().conversation_id)
            .await?;
        let mut conn = self.pool.get().await?;
        store::mark_conversation_read(&mut conn, row.id, side).await?;
        drop(conn);
        self.reloaded(row.id, side).await
    }

    /// Closes or reopens; idempotent (the status it already has is no error).
    pub(crate) async fn set_status(
        &self,
        request: Request<String>,
        to: ConversationStatus,
    ) -> ApiResult<pb::Conversation> {
        let (principal, caller) = self.person(&request).await?;
        let (row, side) = self
            .conversation_for(&principal, caller, request.get_ref())
            .await?;
        let mut conn = self.pool.get().await?;
        store::set_conversation_status(&mut conn, row.id, to).await?;
        drop(conn);
        self.reloaded(row.id, side).await
    }

    pub(crate) async fn watch_conversation(
        &self,
        request: Request<pb::WatchConversationRequest>,
    ) -> ApiResult<ChatStream> {
        let (principal, caller) = self.person(&request).await?;
        let (row, _) = self
            .conversation_for(&principal, caller, &request.get_ref().conversation_id)
            .await?;
        let news = self.live.subscribe();
        let start = {
            let mut conn = self.pool.get().await?;
            store::newest_message(&mut conn, row.id).await?
        };
        let (pool, conversation) = (self.pool.clone(), row.id);
        Ok(Box::pin(live::follow(news, conversation, start, move |after| {
            let pool = pool.clone();
            async move {
                let mut conn = pool.get().await?;
                let rows = store::messages_after(&mut conn, conversation, after).await?;
                Ok(rows.iter().map(|m| (m.id, message_proto(m))).collect())
            }
        })))
    }
}
