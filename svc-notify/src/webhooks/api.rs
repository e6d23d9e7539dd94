//! The webhook endpoints' handlers. Members of the organization read its endpoints and their
//! log, ping and redeliver; its owners, its API keys with the webhooks scope, and admins also
//! create, change, rotate and delete them. To anyone else an endpoint does not exist.

use std::collections::BTreeSet;

use chrono::Utc;
use serde_json::Value;
use ticketing_platform::{
    ApiError, ApiResult,
    auth::{Principal, Scope, Subject},
    error::{Violations, parse_id, required},
    fieldmask::{self, field},
    pagination::{self, Cursor},
    time::to_timestamp,
};
use ticketing_proto::ticketing::notify::v1 as pb;
use tonic::Request;
use uuid::Uuid;

use super::{DeliveryStatus, EVENT_TYPES, MAX_ENDPOINTS, PING, payload, signature, target};
use crate::{
    api::NotifyApi,
    domain,
    store::{self, AttemptRow, DeliveryRow, EndpointChanges, EndpointRow},
};

const MAX_DESCRIPTION: usize = 200;
const DEFAULT_OVERLAP_SECS: i64 = 86_400;

fn endpoint_proto(row: &EndpointRow) -> pb::WebhookEndpoint {
    pb::WebhookEndpoint {
        id: row.id.to_string(),
        organization_id: row.organization_id.to_string(),
        url: row.url.clone(),
        event_types: row.event_types.clone(),
        description: row.description.clone(),
        enabled: row.enabled,
        disabled_reason: row.disabled_reason.clone(),
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
        previous_secret_expires_at: row
            .previous_secret_expires_at
            .filter(|until| *until > Utc::now())
            .map(to_timestamp),
    }
}

fn status_proto(status: DeliveryStatus) -> pb::WebhookDeliveryStatus {
    match status {
        DeliveryStatus::Pending => pb::WebhookDeliveryStatus::Pending,
        DeliveryStatus::Succeeded => pb::WebhookDeliveryStatus::Succeeded,
        DeliveryStatus::Failed => pb::WebhookDeliveryStatus::Failed,
    }
}

fn delivery_proto(row: &DeliveryRow, attempts: &[AttemptRow]) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        id: row.id.to_string(),
        endpoint_id: row.endpoint_id.to_string(),
        event_type: row.event_type.clone(),
        payload: row.payload.clone(),
        status: status_proto(row.status).into(),
        attempt_count: row.attempts,
        created_at: Some(to_timestamp(row.created_at)),
        next_attempt_at: (row.status == DeliveryStatus::Pending).then(|| to_timestamp(row.next_attempt_at)),
        attempts: attempts
            .iter()
            .filter(|a| a.delivery_id == row.id)
            .map(|a| pb::WebhookAttempt {
                attempted_at: Some(to_timestamp(a.attempted_at)),
                status_code: a.status_code.unwrap_or(0),
                duration_ms: a.duration_ms,
                response_body: a.response_body.clone(),
                error: a.error.clone(),
            })
            .collect(),
    }
}

/// The event types as given, checked and without repeats.
fn check_event_types(raw: &[String]) -> Result<Vec<String>, String> {
    let mut seen = BTreeSet::new();
    for t in raw {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(format!("{t:?} is not one of {}", EVENT_TYPES.join(", ")));
        }
        seen.insert(t.clone());
    }
    Ok(seen.into_iter().collect())
}

fn check_description(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Ok(String::new());
    }
    domain::check_text(raw, MAX_DESCRIPTION)
}

/// What the caller may do with an organization's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Manage,
}

fn may(principal: &Principal, organization: Uuid, access: Access) -> bool {
    if !principal.can_act_for(organization) || principal.require_scope(Scope::Webhooks).is_err() {
        return false;
    }
    match (&principal.subject, access) {
        (Subject::ApiKey { .. }, _) | (Subject::User(_), Access::Read) => true,
        (Subject::User(_), Access::Manage) => principal.is_owner_of(organization),
    }
}

impl NotifyApi {
    async fn principal(&self, request: &Request<impl Sized>) -> ApiResult<Principal> {
        self.verifier.authenticate(request.metadata()).await
    }

    /// The organization named in a request, if the caller may act on it so.
    fn organization_access(principal: &Principal, raw: &str, access: Access) -> ApiResult<Uuid> {
        let organization = parse_id("organization_id", raw)?;
        if may(principal, organization, access) {
            Ok(organization)
        } else {
            Err(ApiError::permission_denied(match access {
                Access::Read => {
                    "only the organization's members, its API keys with the webhooks scope and admins see its webhooks"
                }
                Access::Manage => {
                    "only the organization's owners, its API keys with the webhooks scope and admins manage its webhooks"
                }
            }))
        }
    }

    /// The endpoint, if the caller may act on it so; NOT_FOUND to whoever may not see it,
    /// PERMISSION_DENIED to a member who may see but not change it.
    async fn endpoint_for(
        &self,
        principal: &Principal,
        raw: &str,
        field: &str,
        access: Access,
    ) -> ApiResult<EndpointRow> {
        let id = parse_id(field, raw)?;
        let mut conn = self.pool.get().await?;
        let row = store::endpoint(&mut conn, id)
            .await?
            .filter(|row| may(principal, row.organization_id, Access::Read))
            .ok_or(ApiError::NotFound {
                resource: "webhook endpoint",
            })?;
        if access == Access::Manage && !may(principal, row.organization_id, Access::Manage) {
            return Err(ApiError::permission_denied(
                "only the organization's owners, its API keys with the webhooks scope and admins manage its webhooks",
            ));
        }
        Ok(row)
    }

    pub(crate) async fn create_webhook_endpoint(
        &self,
        request: Request<pb::CreateWebhookEndpointRequest>,
    ) -> ApiResult<pb::WebhookEndpointWithSecret> {
        let principal = self.principal(&request).await?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let organization = v.id("organization_id", &r.organization_id);
        let url = v.check("url", target::check_url(&r.url, self.webhooks_allow_private));
        let types = v.check("event_types", check_event_types(&r.event_types));
        let description = v.check("description", check_description(&r.description));
        let (organization, url, types, description) = v.finish((organization, url, types, description))?;
        Self::organization_access(&principal, &organization.to_string(), Access::Manage)?;
        let secret = signature::new_secret();
        let mut conn = self.pool.get().await?;
        if store::count_endpoints(&mut conn, organization).await? >= MAX_ENDPOINTS {
            return Err(ApiError::precondition(
                "TOO_MANY_ENDPOINTS",
                format!("an organization has at most {MAX_ENDPOINTS} webhook endpoints"),
            ));
        }
        let row = store::create_endpoint(
            &mut conn,
            organization,
            url.as_str(),
            &types,
            &description,
            &secret,
        )
        .await?;
        tracing::info!(endpoint = %row.id, %organization, "webhook endpoint created");
        Ok(pb::WebhookEndpointWithSecret {
            endpoint: Some(endpoint_proto(&row)),
            secret,
        })
    }

    pub(crate) async fn list_webhook_endpoints(
        &self,
        request: Request<pb::ListWebhookEndpointsRequest>,
    ) -> ApiResult<pb::ListWebhookEndpointsResponse> {
        let principal = self.principal(&request).await?;
        let r = request.into_inner();
        let organization = Self::organization_access(&principal, &r.organization_id, Access::Read)?;
        let size = pagination::page_size(r.page_size)?;
        let after = Cursor::decode(&r.page_token)?;
        let mut conn = self.pool.get().await?;
        let rows = store::list_endpoints(&mut conn, organization, size, after).await?;
        let (rows, next_page_token) = pagination::finish_page(rows, size, |row| Cursor {
            created_at: row.created_at,
            id: row.id,
        });
        Ok(pb::ListWebhookEndpointsResponse {
            endpoints: rows.iter().map(endpoint_proto).collect(),
            next_page_token,
        })
    }

    pub(crate) async fn get_webhook_endpoint(
        &self,
        request: Request<pb::GetWebhookEndpointRequest>,
    ) -> ApiResult<pb::WebhookEndpoint> {
        let principal = self.principal(&request).await?;
        let row = self
            .endpoint_for(
                &principal,
                &request.get_ref().endpoint_id,
                "endpoint_id",
                Access::Read,
            )
            .await?;
        Ok(endpoint_proto(&row))
    }

    pub(crate) async fn update_webhook_endpoint(
        &self,
        request: Request<pb::UpdateWebhookEndpointRequest>,
    ) -> ApiResult<pb::WebhookEndpoint> {
        let principal = self.principal(&request).await?;
        let r = request.into_inner();
        let wanted = required(r.endpoint, "endpoint")?;
        let mask = fieldmask::resolve(
            r.update_mask.as_ref(),
            &[
                field("url", !wanted.url.is_empty()),
                field("event_types", !wanted.event_types.is_empty()),
                field("description", !wanted.description.is_empty()),
                field("enabled", wanted.enabled),
            ],
        )?;
        let mut v = Violations::new();
        let mut changes = EndpointChanges::default();
        if mask.contains("url") {
            changes.url = v
                .check(
                    "endpoint.url",
                    target::check_url(&wanted.url, self.webhooks_allow_private),
                )
                .map(String::from);
        }
        if mask.contains("event_types") {
            changes.event_types = v.check("endpoint.event_types", check_event_types(&wanted.event_types));
        }
        if mask.contains("description") {
            changes.description = v.check("endpoint.description", check_description(&wanted.description));
        }
        if mask.contains("enabled") {
            changes.enabled = Some(wanted.enabled);
            changes.disabled_reason = Some(if wanted.enabled {
                String::new()
            } else {
                "disabled by the organization".into()
            });
        }
        v.into_result()?;
        let row = self
            .endpoint_for(&principal, &wanted.id, "endpoint.id", Access::Manage)
            .await?;
        let mut conn = self.pool.get().await?;
        let row = store::update_endpoint(&mut conn, row.id, &changes).await?;
        if row.enabled {
            self.webhook_wake.notify_one();
        }
        Ok(endpoint_proto(&row))
    }

    pub(crate) async fn delete_webhook_endpoint(
        &self,
        request: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> ApiResult<pb::DeleteWebhookEndpointResponse> {
        let principal = self.principal(&request).await?;
        let row = self
            .endpoint_for(
                &principal,
                &request.get_ref().endpoint_id,
                "endpoint_id",
                Access::Manage,
            )
            .await?;
        let mut conn = self.pool.get().await?;
        store::delete_endpoint(&mut conn, row.id).await?;
        tracing::info!(endpoint = %row.id, organization = %row.organization_id, "webhook endpoint deleted");
        Ok(pb::DeleteWebhookEndpointResponse {})
    }

    pub(crate) async fn rotate_webhook_secret(
        &self,
        request: Request<pb::RotateWebhookSecretRequest>,
    ) -> ApiResult<pb::WebhookEndpointWithSecret> {
        let principal = self.principal(&request).await?;
        let r = request.into_inner();
        let overlap = match r.overlap_seconds {
            0 => DEFAULT_OVERLAP_SECS,
            n if (1..=604_800).contains(&n) => i64::from(n),
            _ => {
                return Err(ApiError::invalid(
                    "overlap_seconds",
                    "must be between 0 and 604800",
                ));
            }
        };
        let row = self
            .endpoint_for(&principal, &r.endpoint_id, "endpoint_id", Access::Manage)
            .await?;
        let secret = signature::new_secret();
        let mut conn = self.pool.get().await?;
        let row = store::rotate_secret(
            &mut conn,
            row.id,
            &secret,
            Utc::now() + chrono::Duration::seconds(overlap),
        )
        .await?;
        Ok(pb::WebhookEndpointWithSecret {
            endpoint: Some(endpoint_proto(&row)),
            secret,
        })
    }

    pub(crate) async fn ping_webhook_endpoint(
        &self,
        request: Request<pb::PingWebhookEndpointRequest>,
    ) -> ApiResult<pb::WebhookDelivery> {
        let principal = self.principal(&request).await?;
        let row = self
            .endpoint_for(
                &principal,
                &request.get_ref().endpoint_id,
                "endpoint_id",
                Access::Read,
            )
            .await?;
        if !row.enabled {
            return Err(ApiError::precondition(
                "ENDPOINT_DISABLED",
                "the endpoint is disabled; enable it first",
            ));
        }
        let data = [
            ("endpoint_id".to_string(), Value::String(row.id.to_string())),
            (
                "organization_id".to_string(),
                Value::String(row.organization_id.to_string()),
            ),
        ]
        .into_iter()
        .collect();
        let body = payload(PING, Utc::now(), data);
        let mut conn = self.pool.get().await?;
        let delivery = store::queue_delivery(&mut conn, row.id, PING, &body).await?;
        self.webhook_wake.notify_one();
        Ok(delivery_proto(&delivery, &[]))
    }

    pub(crate) async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> ApiResult<pb::ListWebhookDeliveriesResponse> {
        let principal = self.principal(&request).await?;
        let r = request.into_inner();
        let status = match pb::WebhookDeliveryStatus::try_from(r.status) {
            Ok(pb::WebhookDeliveryStatus::Unspecified) => None,
            Ok(pb::WebhookDeliveryStatus::Pending) => Some(DeliveryStatus::Pending),
            Ok(pb::WebhookDeliveryStatus::Succeeded) => Some(DeliveryStatus::Succeeded),
            Ok(pb::WebhookDeliveryStatus::Failed) => Some(DeliveryStatus::Failed),
            Err(_) => return Err(ApiError::invalid("status", "is not a delivery status")),
        };
        let size = pagination::page_size(r.page_size)?;
        let after = Cursor::decode(&r.page_token)?;
        let row = self
            .endpoint_for(&principal, &r.endpoint_id, "endpoint_id", Access::Read)
            .await?;
        let mut conn = self.pool.get().await?;
        let rows = store::list_deliveries(&mut conn, row.id, status, size, after).await?;
        let (rows, next_page_token) = pagination::finish_page(rows, size, |row| Cursor {
            created_at: row.created_at,
            id: row.id,
        });
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let attempts = store::attempts_of(&mut conn, &ids).await?;
        Ok(pb::ListWebhookDeliveriesResponse {
            deliveries: rows.iter().map(|row| delivery_proto(row, &attempts)).collect(),
            next_page_token,
        })
    }

    pub(crate) async fn redeliver_webhook(
        &self,
        request: Request<pb::RedeliverWebhookRequest>,
    ) -> ApiResult<pb::WebhookDelivery> {
        let principal = self.principal(&request).await?;
        let r = request.into_inner();
        let delivery_id = parse_id("delivery_id", &r.delivery_id)?;
        let endpoint = self
            .endpoint_for(&principal, &r.endpoint_id, "endpoint_id", Access::Read)
            .await?;
        if !endpoint.enabled {
            return Err(ApiError::precondition(
                "ENDPOINT_DISABLED",
                "the endpoint is disabled; enable it first",
            ));
        }
        let mut conn = self.pool.get().await?;
        if store::delivery(&mut conn, endpoint.id, delivery_id)
            .await?
            .is_none()
        {
            return Err(ApiError::NotFound {
                resource: "webhook delivery",
            });
        }
        let row = store::redeliver(&mut conn, delivery_id).await?.ok_or_else(|| {
            ApiError::precondition(
                "DELIVERY_IN_FLIGHT",
                "the delivery is being sent right now; try again shortly",
            )
        })?;
        self.webhook_wake.notify_one();
        let attempts = store::attempts_of(&mut conn, &[row.id]).await?;
        Ok(delivery_proto(&row, &attempts))
    }
}
