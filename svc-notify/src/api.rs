//! The gRPC surface: validate, authenticate (every RPC is about the caller's own messages, or
//! an organization's webhooks, or a conversation the caller is part of), call the store.

use std::pin::Pin;

use futures::Stream;
use ticketing_platform::{
    ApiError, ApiResult,
    auth::TokenVerifier,
    db::PgPool,
    error::{Violations, required},
    fieldmask::{self, field},
    pagination::{self, Cursor},
    time::to_timestamp,
};
use ticketing_proto::ticketing::notify::v1::{self as pb, notify_service_server::NotifyService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{ConversationStatus, Kind, Locale},
    live::{self, Live},
    store::{self, NotificationRow, PreferencesRow},
    unsubscribe::Unsubscribe,
};

pub struct NotifyApi {
    pub pool: PgPool,
    pub verifier: TokenVerifier,
    pub live: Live,
    pub unsubscribe: Unsubscribe,
    /// Whether webhook endpoints may be on loopback and private addresses.
    pub webhooks_allow_private: bool,
    /// Wakes the webhook sender.
    pub webhook_wake: std::sync::Arc<tokio::sync::Notify>,
}

/// The most ids one MarkNotificationsRead names.
const MAX_MARKED: usize = 500;

fn notification_proto(row: &NotificationRow) -> pb::Notification {
    pb::Notification {
        id: row.id.to_string(),
        user_id: row.user_id.to_string(),
        channel: pb::Channel::InApp.into(),
        kind: row.kind.to_proto().into(),
        title: row.title.clone(),
        body: row.body.clone(),
        link: row.link.clone(),
        created_at: Some(to_timestamp(row.created_at)),
        read_at: row.read_at.map(to_timestamp),
    }
}

fn preferences_proto(user_id: Uuid, row: Option<&PreferencesRow>) -> pb::Preferences {
    let choices = row.map(PreferencesRow::choices).unwrap_or_default();
    pb::Preferences {
        user_id: user_id.to_string(),
        email_enabled: choices.email,
        in_app_enabled: choices.in_app,
        reminders_enabled: choices.reminders,
        marketing_enabled: choices.marketing,
        updated_at: row.map(|r| to_timestamp(r.updated_at)),
        locale: choices.locale.as_str().to_string(),
    }
}

impl NotifyApi {
    async fn caller(&self, request: &Request<impl Sized>) -> ApiResult<Uuid> {
        self.verifier.authenticate(request.metadata()).await?.user_id()
    }

    async fn list(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> ApiResult<pb::ListNotificationsResponse> {
        let user = self.caller(&request).await?;
        let r = request.into_inner();
        let size = pagination::page_size(r.page_size)?;
        let after = Cursor::decode(&r.page_token)?;
        let mut conn = self.pool.get().await?;
        let rows = store::list_notifications(&mut conn, user, r.unread_only, size, after).await?;
        let (rows, next_page_token) = pagination::finish_page(rows, size, |row| Cursor {
            created_at: row.created_at,
            id: row.id,
        });
        let unread = store::unread_count(&mut conn, user).await?;
        Ok(pb::ListNotificationsResponse {
            notifications: rows.iter().map(notification_proto).collect(),
            next_page_token,
            unread_count: i32::try_from(unread).unwrap_or(i32::MAX),
        })
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkNotificationsReadRequest>,
    ) -> ApiResult<pb::MarkNotificationsReadResponse> {
        let user = self.caller(&request).await?;
        let r = request.into_inner();
        let mut v = Violations::new();
        if r.notification_ids.len() > MAX_MARKED {
            v.add("notification_ids", format!("at most {MAX_MARKED} at once"));
        }
        let ids: Vec<Uuid> = r
            .notification_ids
            .iter()
            .enumerate()
            .filter_map(|(i, raw)| v.id(&format!("notification_ids[{i}]"), raw))
            .collect();
        v.into_result()?;
        let mut conn = self.pool.get().await?;
        let marked = store::mark_read(
            &mut conn,
            user,
            (!r.notification_ids.is_empty()).then_some(ids.as_slice()),
        )
        .await?;
        Ok(pb::MarkNotificationsReadResponse {
            marked: i32::try_from(marked).unwrap_or(i32::MAX),
        })
    }

    async fn get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> ApiResult<pb::Preferences> {
        let user = self.caller(&request).await?;
        let mut conn = self.pool.get().await?;
        let row = store::preferences(&mut conn, user).await?;
        Ok(preferences_proto(user, row.as_ref()))
    }

    async fn update_preferences(
        &self,
        request: Request<pb::UpdatePreferencesRequest>,
    ) -> ApiResult<pb::Preferences> {
        let user = self.caller(&request).await?;
        let r = request.into_inner();
        let wanted = required(r.preferences, "preferences")?;
        let mask = fieldmask::resolve(
            r.update_mask.as_ref(),
            &[
                field("email_enabled", wanted.email_enabled),
                field("in_app_enabled", wanted.in_app_enabled),
                field("reminders_enabled", wanted.reminders_enabled),
                field("marketing_enabled", wanted.marketing_enabled),
                field("locale", !wanted.locale.is_empty()),
            ],
        )?;
        let locale = if mask.contains("locale") {
            Some(Locale::parse(&wanted.locale).ok_or_else(|| {
                ApiError::invalid(
                    "preferences.locale",
                    format!(
                        "must be one of {}",
                        Locale::ALL
                            .iter()
                            .map(|l| l.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?)
        } else {
            None
        };
        let mut conn = self.pool.get().await?;
        let mut choices = store::choices(&mut conn, user).await?;
        if mask.contains("email_enabled") {
            choices.email = wanted.email_enabled;
        }
        if mask.contains("in_app_enabled") {
            choices.in_app = wanted.in_app_enabled;
        }
        if mask.contains("reminders_enabled") {
            choices.reminders = wanted.reminders_enabled;
        }
        if mask.contains("marketing_enabled") {
            choices.marketing = wanted.marketing_enabled;
        }
        if let Some(locale) = locale {
            choices.locale = locale;
        }
        let row = store::save_preferences(&mut conn, user, &choices).await?;
        Ok(preferences_proto(user, Some(&row)))
    }

    /// The token is the credential: it names one user and one kind that may be switched off.
    async fn unsubscribe(
        &self,
        request: Request<pb::UnsubscribeRequest>,
    ) -> ApiResult<pb::UnsubscribeResponse> {
        let r = request.into_inner();
        let (user, kind) = self
            .unsubscribe
            .verify(&r.token)
            .filter(|(_, kind)| !kind.is_transactional())
            .ok_or_else(|| ApiError::invalid("token", "is not an unsubscribe token this service issued"))?;
        let mut conn = self.pool.get().await?;
        let mut choices = store::choices(&mut conn, user).await?;
        match kind {
            Kind::EventReminder => choices.reminders = false,
            _ => choices.marketing = false,
        }
        store::save_preferences(&mut conn, user, &choices).await?;
        Ok(pb::UnsubscribeResponse {
            kind: kind.to_proto().into(),
        })
    }

    async fn watch(&self, request: Request<pb::WatchNotificationsRequest>) -> ApiResult<WatchStream> {
        let user = self.caller(&request).await?;
        // Subscribe before reading where to start, so nothing falls between them.
        let news = self.live.subscribe();
        let start = {
            let mut conn = self.pool.get().await?;
            store::newest_notification(&mut conn, user).await?
        };
        let pool = self.pool.clone();
        Ok(Box::pin(live::follow(news, user, start, move |after| {
            let pool = pool.clone();
            async move {
                let mut conn = pool.get().await?;
                let rows = store::notifications_after(&mut conn, user, after).await?;
                Ok(rows.iter().map(|row| (row.id, notification_proto(row))).collect())
            }
        })))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Notification, Status>> + Send>>;
pub(crate) type ChatStream = Pin<Box<dyn Stream<Item = Result<pb::ChatMessage, Status>> + Send>>;

#[tonic::async_trait]
impl NotifyService for NotifyApi {
    type WatchNotificationsStream = WatchStream;

    async fn list_notifications(
        &self,
        r: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        Ok(Response::new(self.list(r).await?))
    }
    async fn mark_notifications_read(
        &self,
        r: Request<pb::MarkNotificationsReadRequest>,
    ) -> Result<Response<pb::MarkNotificationsReadResponse>, Status> {
        Ok(Response::new(self.mark_read(r).await?))
    }
    async fn watch_notifications(
        &self,
        r: Request<pb::WatchNotificationsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        Ok(Response::new(self.watch(r).await?))
    }
    async fn unsubscribe(
        &self,
        r: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::UnsubscribeResponse>, Status> {
        Ok(Response::new(self.unsubscribe(r).await?))
    }
    type WatchConversationStream = ChatStream;

    async fn open_conversation(
        &self,
        r: Request<pb::OpenConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        Ok(Response::new(NotifyApi::open_conversation(self, r).await?))
    }
    async fn list_conversations(
        &self,
        r: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        Ok(Response::new(NotifyApi::list_conversations(self, r).await?))
    }
    async fn get_conversation(
        &self,
        r: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        Ok(Response::new(NotifyApi::get_conversation(self, r).await?))
    }
    async fn post_message(
        &self,
        r: Request<pb::PostMessageRequest>,
    ) -> Result<Response<pb::ChatMessage>, Status> {
        Ok(Response::new(NotifyApi::post_message(self, r).await?))
    }
    async fn list_messages(
        &self,
        r: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        Ok(Response::new(NotifyApi::list_messages(self, r).await?))
    }
    async fn mark_conversation_read(
        &self,
        r: Request<pb::MarkConversationReadRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        Ok(Response::new(NotifyApi::mark_conversation_read(self, r).await?))
    }
    async fn close_conversation(
        &self,
        r: Request<pb::CloseConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let r = r.map(|m| m.conversation_id);
        Ok(Response::new(
            self.set_status(r, ConversationStatus::Closed).await?,
        ))
    }
    async fn reopen_conversation(
        &self,
        r: Request<pb::ReopenConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        let r = r.map(|m| m.conversation_id);
        Ok(Response::new(self.set_status(r, ConversationStatus::Open).await?))
    }
    async fn watch_conversation(
        &self,
        r: Request<pb::WatchConversationRequest>,
    ) -> Result<Response<ChatStream>, Status> {
        Ok(Response::new(NotifyApi::watch_conversation(self, r).await?))
    }
    async fn create_webhook_endpoint(
        &self,
        r: Request<pb::CreateWebhookEndpointRequest>,
    ) -> Result<Response<pb::WebhookEndpointWithSecret>, Status> {
        Ok(Response::new(NotifyApi::create_webhook_endpoint(self, r).await?))
    }
    async fn list_webhook_endpoints(
        &self,
        r: Request<pb::ListWebhookEndpointsRequest>,
    ) -> Result<Response<pb::ListWebhookEndpointsResponse>, Status> {
        Ok(Response::new(NotifyApi::list_webhook_endpoints(self, r).await?))
    }
    async fn get_webhook_endpoint(
        &self,
        r: Request<pb::GetWebhookEndpointRequest>,
    ) -> Result<Response<pb::WebhookEndpoint>, Status> {
        Ok(Response::new(NotifyApi::get_webhook_endpoint(self, r).await?))
    }
    async fn update_webhook_endpoint(
        &self,
        r: Request<pb::UpdateWebhookEndpointRequest>,
    ) -> Result<Response<pb::WebhookEndpoint>, Status> {
        Ok(Response::new(NotifyApi::update_webhook_endpoint(self, r).await?))
    }
    async fn delete_webhook_endpoint(
        &self,
        r: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<pb::DeleteWebhookEndpointResponse>, Status> {
        Ok(Response::new(NotifyApi::delete_webhook_endpoint(self, r).await?))
    }
    async fn rotate_webhook_secret(
        &self,
        r: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::WebhookEndpointWithSecret>, Status> {
        Ok(Response::new(NotifyApi::rotate_webhook_secret(self, r).await?))
    }
    async fn ping_webhook_endpoint(
        &self,
        r: Request<pb::PingWebhookEndpointRequest>,
    ) -> Result<Response<pb::WebhookDelivery>, Status> {
        Ok(Response::new(NotifyApi::ping_webhook_endpoint(self, r).await?))
    }
    async fn list_webhook_deliveries(
        &self,
        r: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        Ok(Response::new(NotifyApi::list_webhook_deliveries(self, r).await?))
    }
    async fn redeliver_webhook(
        &self,
        r: Request<pb::RedeliverWebhookRequest>,
    ) -> Result<Response<pb::WebhookDelivery>, Status> {
        Ok(Response::new(NotifyApi::redeliver_webhook(self, r).await?))
    }
    async fn get_preferences(
        &self,
        r: Request<pb::GetPreferencesRequest>,
    ) -> Result<Response<pb::Preferences>, Status> {
        Ok(Response::new(self.get_preferences(r).await?))
    }
    async fn update_preferences(
        &self,
        r: Request<pb::UpdatePreferencesRequest>,
    ) -> Result<Response<pb::Preferences>, Status> {
        Ok(Response::new(self.update_preferences(r).await?))
    }
}
