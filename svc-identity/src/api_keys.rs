//! API keys (created, listed, revoked; verified for the gateway) and service tokens (the
//! client-credentials grant).

use chrono::Utc;
use subtle::ConstantTimeEq;
use ticketing_platform::{
    ApiError, ApiResult,
    auth::{AUDIENCE, AccessClaims, ISSUER, Scope, SubjectKind},
    error::{Violations, parse_id},
    pagination::{self, Cursor},
    service_auth::{self, CallGraph, ServiceClaims},
    time::from_timestamp,
};
use ticketing_proto::ticketing::identity::v1::{self as pb};
use tonic::Request;
use uuid::Uuid;

use crate::{api::*, wire::*};
use crate::{
    domain,
    store::{self, ApiKeyRow},
};

/// Most active API keys one organization may have.
const MAX_ACTIVE_API_KEYS: usize = 100;

impl IdentityApi {
    pub(crate) async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> ApiResult<pb::CreateApiKeyResponse> {
        let actor = self.actor(&request).await?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let org = v.id("organization_id", &r.organization_id);
        let name = v.check("name", domain::check_required_name(&r.name));
        let mut scopes = Vec::new();
        if r.scopes.is_empty() {
            v.add("scopes", "at least one scope is required");
        }
        for (i, raw) in r.scopes.iter().enumerate() {
            match scope_from_proto(*raw) {
                Some(scope) if !scopes.contains(&scope) => scopes.push(scope),
                Some(_) => {}
                None => v.add(format!("scopes[{i}]"), "is not a known scope"),
            }
        }
        let expires_at = match &r.expires_at {
            Some(ts) => match from_timestamp("expires_at", ts) {
                Ok(at) if at > Utc::now() => Some(at),
                Ok(_) => {
                    v.add("expires_at", "must be in the future");
                    None
                }
                Err(_) => {
                    v.add("expires_at", "is not a valid time");
                    None
                }
            },
            None => None,
        };
        let (org, name) = v.finish((org, name))?;
        self.org_for_key_manager(&actor, org).await?;
        let mut conn = self.state.pool.get().await?;
        let active = store::list_api_keys(
            &mut conn,
            org,
            false,
            None,
            i64::try_from(MAX_ACTIVE_API_KEYS).unwrap_or(100),
        )
        .await?;
        if active.len() >= MAX_ACTIVE_API_KEYS {
            return Err(ApiError::ResourceExhausted {
                reason: "API_KEY_LIMIT",
                message: format!(
                    "an organization may have at most {MAX_ACTIVE_API_KEYS} active API keys; revoke one first"
                ),
                retry_after: None,
            });
        }
        let key = domain::new_api_key();
        scopes.sort();
        let row = ApiKeyRow {
            id: Uuid::now_v7(),
            organization_id: org,
            name,
            prefix: key.prefix,
            secret_hash: key.hash,
            scopes: scopes.iter().map(|s| s.as_str().to_string()).collect(),
            created_by: actor.user.id,
            created_at: Utc::now(),
            expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        store::insert_api_key(&mut conn, &row).await?;
        tracing::info!(api_key_id = %row.id, organization_id = %org, "API key created");
        Ok(pb::CreateApiKeyResponse {
            api_key: Some(api_key_proto(&row)),
            secret: key.secret,
        })
    }

    pub(crate) async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> ApiResult<pb::ListApiKeysResponse> {
        let actor = self.actor(&request).await?;
        let r = request.into_inner();
        let org = parse_id("organization_id", &r.organization_id)?;
        let size = pagination::page_size(r.page_size)?;
        let cursor = Cursor::decode(&r.page_token)?;
        self.org_for_key_manager(&actor, org).await?;
        let mut conn = self.state.pool.get().await?;
        let rows = store::list_api_keys(&mut conn, org, r.include_revoked, cursor, size + 1).await?;
        let (rows, next_page_token) = pagination::finish_page(rows, size, |k| Cursor {
            created_at: k.created_at,
            id: k.id,
        });
        Ok(pb::ListApiKeysResponse {
            api_keys: rows.iter().map(api_key_proto).collect(),
            next_page_token,
        })
    }

    pub(crate) async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> ApiResult<pb::ApiKey> {
        let actor = self.actor(&request).await?;
        let r = request.into_inner();
        let org = parse_id("organization_id", &r.organization_id)?;
        let id = parse_id("api_key_id", &r.api_key_id)?;
        self.org_for_key_manager(&actor, org).await?;
        let mut conn = self.state.pool.get().await?;
        store::find_api_key(&mut conn, org, id)
            .await?
            .ok_or(ApiError::NotFound { resource: "API key" })?;
        store::revoke_api_key(&mut conn, id).await?;
        let row = store::find_api_key(&mut conn, org, id)
            .await?
            .ok_or(ApiError::NotFound { resource: "API key" })?;
        tracing::info!(api_key_id = %id, by = %actor.user.id, "API key revoked");
        Ok(api_key_proto(&row))
    }

    pub(crate) async fn verify_api_key(
        &self,
        request: Request<pb::VerifyApiKeyRequest>,
    ) -> ApiResult<pb::VerifyApiKeyResponse> {
        let secret = request.into_inner().secret;
        if secret.is_empty() {
            return Err(ApiError::invalid("secret", "is required"));
        }
        let invalid = || ApiError::CredentialRefused {
            reason: "API_KEY_INVALID",
            message: "API key is invalid, expired or revoked".into(),
        };
        let prefix = domain::api_key_prefix(&secret).ok_or_else(invalid)?;
        let mut conn = self.state.pool.get().await?;
        let row = store::find_api_key_by_prefix(&mut conn, prefix)
            .await?
            .ok_or_else(invalid)?;
        let presented = domain::sha256(secret.as_bytes());
        let matches: bool = presented.ct_eq(&row.secret_hash).into();
        let now = Utc::now();
        if !matches || row.revoked_at.is_some() || row.expires_at.is_some_and(|at| at <= now) {
            return Err(invalid());
        }
        store::touch_api_key(&mut conn, row.id).await?;
        // As in login: not holding a connection while signing.
        drop(conn);
        let ttl = self.state.tokens.api_key_token_ttl;
        let mut exp = now.timestamp() + i64::try_from(ttl.as_secs()).unwrap_or(300);
        if let Some(expires_at) = row.expires_at {
            exp = exp.min(expires_at.timestamp());
        }
        let claims = AccessClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: row.id.to_string(),
            exp,
            iat: now.timestamp(),
            nbf: now.timestamp(),
            jti: Uuid::now_v7().to_string(),
            kind: SubjectKind::ApiKey,
            roles: vec![],
            orgs: vec![],
            scopes: row.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            org: Some(row.organization_id),
        };
        let access_token = self.state.keys.sign(&claims).await?;
        Ok(pb::VerifyApiKeyResponse {
            api_key: Some(api_key_proto(&row)),
            access_token,
            expires_in: exp - now.timestamp(),
        })
    }

    /// The client-credentials grant: a token for `audience` to the client whose secret this is.
    pub(crate) async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> ApiResult<pb::ServiceToken> {
        let r = request.into_inner();
        let mut v = Violations::new();
        if r.client_id.is_empty() {
            v.add("client_id", "is required");
        } else if r.client_id.len() > 64 {
            v.add("client_id", "at most 64 characters");
        }
        if r.client_secret.is_empty() {
            v.add("client_secret", "is required");
        } else if r.client_secret.len() > 256 {
            v.add("client_secret", "at most 256 characters");
        }
        let services = CallGraph::platform().services();
        if r.audience.is_empty() {
            v.add("audience", "is required");
        } else if !services.contains(&r.audience) {
            v.add(
                "audience",
                format!(
                    "must be a service of the platform: {}",
                    services.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        v.into_result()?;
        // The secret is hashed whether or not the client exists: the answer takes as long.
        let presented = domain::sha256(r.client_secret.as_bytes());
        let known = self.state.service_clients.get(&r.client_id);
        let matches: bool = known.is_some_and(|expected| bool::from(presented.ct_eq(expected)));
        if !matches {
            metrics::counter!("identity_service_tokens_refused_total").increment(1);
            tracing::warn!(client_id = %r.client_id, "service token refused: unknown client or wrong secret");
            return Err(ApiError::unauthenticated("invalid client credentials"));
        }
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(self.state.tokens.service_token_ttl.as_secs()).unwrap_or(600);
        let claims = ServiceClaims {
            iss: ISSUER.into(),
            aud: r.audience.clone(),
            sub: r.client_id.clone(),
            exp: now + ttl,
            iat: now,
            nbf: now,
            jti: Uuid::now_v7().to_string(),
            kind: service_auth::SERVICE_KIND.into(),
        };
        let access_token = self.state.keys.sign(&claims).await?;
        metrics::counter!("identity_service_tokens_issued_total", "client" => r.client_id.clone())
            .increment(1);
        tracing::debug!(client_id = %r.client_id, audience = %r.audience, "service token issued");
        Ok(pb::ServiceToken {
            access_token,
            expires_in: ttl,
            token_type: "Bearer".into(),
        })
    }
}
