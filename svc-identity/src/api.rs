//! The `IdentityService` implementation: validate input, authenticate, authorize against fresh
//! database state, call the store, map to the wire.

use std::sync::Arc;

use chrono::Utc;
use ticketing_platform::{
    ApiError, ApiResult,
    auth::{AUDIENCE, AccessClaims, ISSUER, OrgClaim, OrgRole, Role, SubjectKind, TokenVerifier},
    db::PgPool,
    error::{Violations, parse_id, required},
    fieldmask::{self, field},
    messaging::OutboxSignal,
    pagination::{self, Cursor},
    service_auth::{self},
    time::to_timestamp,
};
use ticketing_proto::ticketing::identity::v1::{self as pb, identity_service_server::IdentityService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    config::TokenConfig,
    domain,
    keys::KeyStore,
    lockout::{Attempt, LoginConfig, LoginGuard},
    password::PasswordHasher,
    store::{self, Actor, OrgRow, RefreshRow, Spend, UserRow},
    wire::*,
};

/// Longer passwords are refused before hashing, so nobody makes us hash megabytes.
const MAX_PASSWORD_BYTES: usize = 1024;

pub struct AppState {
    pub pool: PgPool,
    pub keys: Arc<KeyStore>,
    pub verifier: TokenVerifier,
    pub hasher: PasswordHasher,
    pub guard: LoginGuard,
    pub tokens: TokenConfig,
    pub login: LoginConfig,
    /// Service clients (client id to the SHA-256 of its secret) for `IssueServiceToken`.
    pub service_clients: std::collections::HashMap<String, [u8; 32]>,
    /// Wakes the outbox relay after a commit that queued an event.
    pub outbox: OutboxSignal,
}

#[derive(Clone)]
pub struct IdentityApi {
    pub(crate) state: Arc<AppState>,
}

impl IdentityApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// The calling user, read fresh from the database.
    pub(crate) async fn actor<T>(&self, request: &Request<T>) -> ApiResult<Actor> {
        let principal = self.state.verifier.authenticate(request.metadata()).await?;
        let user_id = principal.user_id()?;
        let mut conn = self.state.pool.get().await?;
        store::load_actor(&mut conn, user_id)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("the account no longer exists"))
    }

    pub(crate) fn claims_for(&self, actor: &Actor) -> AccessClaims {
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(self.state.tokens.access_token_ttl.as_secs()).unwrap_or(900);
        AccessClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: actor.user.id.to_string(),
            exp: now + ttl,
            iat: now,
            nbf: now,
            jti: Uuid::now_v7().to_string(),
            kind: SubjectKind::User,
            roles: actor.roles.clone(),
            orgs: actor
                .memberships
                .iter()
                .map(|m| OrgClaim {
                    id: m.organization_id,
                    role: m.role,
                })
                .collect(),
            scopes: vec![],
            org: None,
        }
    }

    pub(crate) fn new_refresh_row(&self, user_id: Uuid, family_id: Uuid) -> (String, RefreshRow) {
        let (token, hash) = domain::new_refresh_token();
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.state.tokens.refresh_token_ttl)
            .unwrap_or(chrono::Duration::days(30));
        let row = RefreshRow {
            id: Uuid::now_v7(),
            family_id,
            user_id,
            token_hash: hash,
            created_at: now,
            expires_at: now + ttl,
            used_at: None,
            revoked_at: None,
        };
        (token, row)
    }

    pub(crate) async fn token_response(
        &self,
        actor: &Actor,
        refresh_token: String,
        refresh: &RefreshRow,
    ) -> ApiResult<pb::TokenResponse> {
        let access_token = self.state.keys.sign(&self.claims_for(actor)).await?;
        Ok(pb::TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in: i64::try_from(self.state.tokens.access_token_ttl.as_secs()).unwrap_or(0),
            refresh_token,
            refresh_token_expires_at: Some(to_timestamp(refresh.expires_at)),
        })
    }

    pub(crate) async fn load_org(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        id: Uuid,
    ) -> ApiResult<OrgRow> {
        store::find_org(conn, id).await?.ok_or(ApiError::NotFound {
            resource: "organization",
        })
    }

    // === authentication ===

    pub(crate) async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> ApiResult<pb::RegisterResponse> {
        let r = request.into_inner();
        let mut v = Violations::new();
        let email = v.check("email", domain::normalize_email(&r.email));
        v.check(
            "password",
            domain::check_password(&r.password, email.as_deref().unwrap_or("")),
        );
        let display_name = v.check("display_name", domain::check_display_name(&r.display_name));
        let (email, display_name) = v.finish((email, display_name))?;
        let password_hash = self.state.hasher.hash(r.password).await?;
        let now = Utc::now();
        let user = UserRow {
            id: Uuid::now_v7(),
            email,
            password_hash,
            display_name,
            created_at: now,
            updated_at: now,
        };
        let mut conn = self.state.pool.get().await?;
        store::insert_user(&mut conn, &user, &[]).await?;
        self.state.outbox.notify();
        metrics::counter!("identity_registrations_total").increment(1);
        tracing::info!(user_id = %user.id, "user registered");
        let actor = Actor {
            user,
            roles: vec![Role::Customer],
            memberships: vec![],
        };
        Ok(pb::RegisterResponse {
            user: Some(user_proto(&actor)),
        })
    }

    pub(crate) async fn login(&self, request: Request<pb::LoginRequest>) -> ApiResult<pb::TokenResponse> {
        // The gateway's word for the client's address (the call guard drops it from anyone
        // else's calls), or the caller's own.
        let address = service_auth::client_address(&request);
        let r = request.into_inner();
        let mut v = Violations::new();
        let email = v.check("email", domain::normalize_email(&r.email));
        if r.password.is_empty() {
            v.add("password", "is required");
        } else if r.password.len() > MAX_PASSWORD_BYTES {
            v.add("password", "is too long");
        }
        v.into_result()?;
        let email = email.unwrap_or_default();
        let attempt = Attempt {
            email: &email,
            address: address.as_deref(),
        };
        self.state.guard.check(&attempt).await?;

        let user = {
            let mut conn = self.state.pool.get().await?;
            store::find_user_by_email(&mut conn, &email).await?
        };
        let valid = self
            .state
            .hasher
            .verify(r.password, user.as_ref().map(|u| u.password_hash.clone()))
            .await?;
        let user = match user {
            Some(user) if valid => user,
            _ => {
                metrics::counter!("identity_logins_total", "result" => "failed").increment(1);
                self.state.guard.record_failure(&attempt).await?;
                // One message for unknown account and wrong password: no account enumeration.
                return Err(ApiError::unauthenticated("invalid e-mail or password"));
            }
        };
        self.state.guard.record_success(&attempt).await?;
        let mut conn = self.state.pool.get().await?;
        let actor = store::load_actor(&mut conn, user.id)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("invalid e-mail or password"))?;
        let (token, row) = self.new_refresh_row(user.id, Uuid::now_v7());
        store::insert_refresh(&mut conn, &row).await?;
        // Signing may need a connection to reload the key: never wait for one while holding one,
        // or a burst of logins as large as the pool deadlocks until the pool's timeout.
        drop(conn);
        metrics::counter!("identity_logins_total", "result" => "succeeded").increment(1);
        self.token_response(&actor, token, &row).await
    }

    pub(crate) async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> ApiResult<pb::TokenResponse> {
        let presented = request.into_inner().refresh_token;
        check_refresh_shape(&presented)?;
        let hash = domain::sha256(presented.as_bytes());
        // family and user are filled in from the spent token inside the transaction.
        let (token, replacement) = self.new_refresh_row(Uuid::nil(), Uuid::nil());
        let mut conn = self.state.pool.get().await?;
        match store::spend_refresh(&mut conn, &hash, replacement.clone()).await? {
            Spend::Rotated { user_id } => {
                let actor = store::load_actor(&mut conn, user_id)
                    .await?
                    .ok_or_else(|| ApiError::unauthenticated("the account no longer exists"))?;
                // As in login: not holding a connection while signing.
                drop(conn);
                self.token_response(&actor, token, &replacement).await
            }
            Spend::Reused => {
                metrics::counter!("identity_refresh_reuse_total").increment(1);
                tracing::warn!("refresh token reuse: session family revoked");
                Err(ApiError::unauthenticated(
                    "refresh token was already used; the session has been revoked, log in again",
                ))
            }
            Spend::Expired | Spend::Unknown => {
                Err(ApiError::unauthenticated("refresh token is invalid or expired"))
            }
        }
    }

    pub(crate) async fn logout(&self, request: Request<pb::LogoutRequest>) -> ApiResult<pb::LogoutResponse> {
        let presented = request.into_inner().refresh_token;
        check_refresh_shape(&presented)?;
        let mut conn = self.state.pool.get().await?;
        store::revoke_family_of(&mut conn, &domain::sha256(presented.as_bytes())).await?;
        Ok(pb::LogoutResponse {})
    }

    pub(crate) async fn get_jwks(&self) -> ApiResult<pb::Jwks> {
        let keys = self.state.keys.published().await?;
        Ok(pb::Jwks {
            keys: keys
                .into_iter()
                .map(|k| pb::Jwk {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    x: k.x,
                    kid: k.kid,
                    alg: "EdDSA".into(),
                    r#use: "sig".into(),
                })
                .collect(),
        })
    }

    // === users ===

    pub(crate) async fn update_me(&self, request: Request<pb::UpdateMeRequest>) -> ApiResult<pb::User> {
        let actor = self.actor(&request).await?;
        let r = request.into_inner();
        let user = required(r.user, "user")?;
        let paths = fieldmask::resolve(
            r.update_mask.as_ref(),
            &[field("display_name", !user.display_name.is_empty())],
        )?;
        let mut v = Violations::new();
        let name = v.check(
            "user.display_name",
            domain::check_display_name(&user.display_name),
        );
        v.into_result()?;
        let mut conn = self.state.pool.get().await?;
        if paths.contains("display_name")
            && let Some(name) = name
        {
            store::set_display_name(&mut conn, actor.user.id, &name).await?;
        }
        let actor = store::load_actor(&mut conn, actor.user.id)
            .await?
            .ok_or(ApiError::NotFound { resource: "user" })?;
        Ok(user_proto(&actor))
    }

    pub(crate) async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> ApiResult<pb::ChangePasswordResponse> {
        let address = service_auth::client_address(&request);
        let actor = self.actor(&request).await?;
        let r = request.into_inner();
        let mut v = Violations::new();
        if r.current_password.is_empty() || r.current_password.len() > MAX_PASSWORD_BYTES {
            v.add("current_password", "is required");
        }
        v.check(
            "new_password",
            domain::check_password(&r.new_password, &actor.user.email),
        );
        v.into_result()?;
        let attempt = Attempt {
            email: &actor.user.email,
            address: address.as_deref(),
        };
        self.state.guard.check(&attempt).await?;
        if !self
            .state
            .hasher
            .verify(r.current_password, Some(actor.user.password_hash.clone()))
            .await?
        {
            self.state.guard.record_failure(&attempt).await?;
            return Err(ApiError::permission_denied("the current password is wrong"));
        }
        let hash = self.state.hasher.hash(r.new_password).await?;
        let mut conn = self.state.pool.get().await?;
        store::set_password(&mut conn, actor.user.id, &hash).await?;
        Ok(pb::ChangePasswordResponse {})
    }

    pub(crate) async fn get_user(&self, request: Request<pb::GetUserRequest>) -> ApiResult<pb::User> {
        let actor = self.actor(&request).await?;
        let id = parse_id("user_id", &request.get_ref().user_id)?;
        if id != actor.user.id && !actor.is_admin() {
            return Err(ApiError::permission_denied("only admins may read other users"));
        }
        let mut conn = self.state.pool.get().await?;
        let user = store::load_actor(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound { resource: "user" })?;
        Ok(user_proto(&user))
    }

    pub(crate) async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> ApiResult<pb::ListUsersResponse> {
        let actor = self.actor(&request).await?;
        let r = request.into_inner();
        let size = pagination::page_size(r.page_size)?;
        let cursor = Cursor::decode(&r.page_token)?;
        let role = match r.role {
            0 => None,
            n => Some(role_from_proto("role", n)?),
        };
        if r.email_prefix.len() > 254 {
            return Err(ApiError::invalid(
                "email_prefix",
                "must be at most 254 characters",
            ));
        }
        if !actor.is_admin() {
            return Err(ApiError::permission_denied("only admins may list users"));
        }
        let mut conn = self.state.pool.get().await?;
        let rows = store::list_users(
            &mut conn,
            cursor,
            size + 1,
            &r.email_prefix.trim().to_lowercase(),
            role,
        )
        .await?;
        let (rows, next_page_token) = pagination::finish_page(rows, size, |u| Cursor {
            created_at: u.created_at,
            id: u.id,
        });
        let users = store::actors_of(&mut conn, rows)
            .await?
            .iter()
            .map(user_proto)
            .collect();
        Ok(pb::ListUsersResponse {
            users,
            next_page_token,
        })
    }

    pub(crate) async fn change_role(
        &self,
        actor: Actor,
        user_id: &str,
        role: i32,
        grant: bool,
    ) -> ApiResult<pb::User> {
        let id = parse_id("user_id", user_id)?;
        let role = role_from_proto("role", role)?;
        if !actor.is_admin() {
            return Err(ApiError::permission_denied("only admins may change roles"));
        }
        if !grant && role == Role::Customer {
            return Err(ApiError::invalid("role", "every user keeps the customer role"));
        }
        if !grant && role == Role::Admin && id == actor.user.id {
            return Err(ApiError::precondition(
                "SELF_DEMOTION",
                "admins cannot revoke their own admin role",
            ));
        }
        let mut conn = self.state.pool.get().await?;
        store::find_user(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound { resource: "user" })?;
        if grant {
            store::grant_role(&mut conn, id, role).await?;
        } else {
            store::revoke_role(&mut conn, id, role).await?;
        }
        tracing::info!(target_user = %id, role = role.as_str(), grant, by = %actor.user.id, "role changed");
        let user = store::load_actor(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound { resource: "user" })?;
        Ok(user_proto(&user))
    }

    // === organizations ===

    pub(crate) async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> ApiResult<pb::Organization> {
        let actor = self.actor(&request).await?;
        let org = required(request.into_inner().organization, "organization")?;
        let mut v = Violations::new();
        v.check("organization.slug", domain::check_slug(&org.slug));
        let name = v.check(
            "organization.display_name",
            domain::check_required_name(&org.display_name),
        );
        v.into_result()?;
        if !(actor.has_role(Role::Organizer) || actor.is_admin()) {
            return Err(ApiError::permission_denied(
                "only organizers and admins may create organizations",
            ));
        }
        let now = Utc::now();
        let row = OrgRow {
            id: Uuid::now_v7(),
            slug: org.slug,
            display_name: name.unwrap_or_default(),
            created_at: now,
            updated_at: now,
        };
        let mut conn = self.state.pool.get().await?;
        store::insert_org(&mut conn, &row, actor.user.id).await?;
        Ok(org_proto(&row))
    }

    /// NOT_FOUND for a missing organization; PERMISSION_DENIED for non-members (admins pass).
    pub(crate) async fn org_for_member(
        &self,
        actor: &Actor,
        id: Uuid,
        owner_only: bool,
    ) -> ApiResult<OrgRow> {
        let mut conn = self.state.pool.get().await?;
        let org = self.load_org(&mut conn, id).await?;
        let role = actor.org_role(id);
        let allowed = actor.is_admin()
            || if owner_only {
                role == Some(OrgRole::Owner)
            } else {
                role.is_some()
            };
        if !allowed {
            let what = if owner_only { "owners" } else { "members" };
            return Err(ApiError::permission_denied(format!(
                "only the organization's {what} and admins may do this"
            )));
        }
        Ok(org)
    }

    /// API keys are managed by admins and by members of the organization who are organizers.
    pub(crate) async fn org_for_key_manager(&self, actor: &Actor, id: Uuid) -> ApiResult<OrgRow> {
        let mut conn = self.state.pool.get().await?;
        let org = self.load_org(&mut conn, id).await?;
        if !(actor.is_admin() || (actor.org_role(id).is_some() && actor.has_role(Role::Organizer))) {
            return Err(ApiError::permission_denied(
                "only the organization's organizers and admins manage API keys",
            ));
        }
        Ok(org)
    }

    pub(crate) async fn update_organization(
        &self,
        request: Request<pb::UpdateOrganizationRequest>,
    ) -> ApiResult<pb::Organization> {
        let actor = self.actor(&request).await?;
        let r = request.into_inner();
        let org = required(r.organization, "organization")?;
        let id = parse_id("organization.id", &org.id)?;
        let paths = fieldmask::resolve(
            r.update_mask.as_ref(),
            &[field("display_name", !org.display_name.is_empty())],
        )?;
        let mut v = Violations::new();
        let name = v.check(
            "organization.display_name",
            domain::check_required_name(&org.display_name),
        );
        v.into_result()?;
        self.org_for_member(&actor, id, true).await?;
        let mut conn = self.state.pool.get().await?;
        if paths.contains("display_name")
            && let Some(name) = name
        {
            store::set_org_name(&mut conn, id, &name).await?;
        }
        Ok(org_proto(&self.load_org(&mut conn, id).await?))
    }

    pub(crate) async fn add_member(&self, request: Request<pb::AddMemberRequest>) -> ApiResult<pb::Member> {
        let actor = self.actor(&request).await?;
        let r = request.into_inner();
        let org = parse_id("organization_id", &r.organization_id)?;
        let role = match r.role {
            0 => OrgRole::Member,
            n => member_role_from_proto("role", n)?,
        };
        let mut conn = self.state.pool.get().await?;
        let user_id = match r.member {
            Some(pb::add_member_request::Member::UserId(id)) => parse_id("user_id", &id)?,
            Some(pb::add_member_request::Member::Email(email)) => {
                let email = domain::normalize_email(&email).map_err(|e| ApiError::invalid("email", e))?;
                self.org_for_member(&actor, org, true).await?;
                store::find_user_by_email(&mut conn, &email)
                    .await?
                    .ok_or(ApiError::NotFound { resource: "user" })?
                    .id
            }
            None => return Err(ApiError::invalid("user_id", "user_id or email is required")),
        };
        self.org_for_member(&actor, org, true).await?;
        store::find_user(&mut conn, user_id)
            .await?
            .ok_or(ApiError::NotFound { resource: "user" })?;
        store::upsert_member(&mut conn, org, user_id, role).await?;
        let member = store::find_member(&mut conn, org, user_id)
            .await?
            .ok_or(ApiError::NotFound { resource: "member" })?;
        Ok(member_proto(&member))
    }

    pub(crate) async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> ApiResult<pb::RemoveMemberResponse> {
        let actor = self.actor(&request).await?;
        let r = request.into_inner();
        let org = parse_id("organization_id", &r.organization_id)?;
        let user = parse_id("user_id", &r.user_id)?;
        // Members may leave on their own; removing others takes an owner.
        self.org_for_member(&actor, org, user != actor.user.id).await?;
        let mut conn = self.state.pool.get().await?;
        if !store::remove_member(&mut conn, org, user).await? {
            return Err(ApiError::NotFound { resource: "member" });
        }
        Ok(pb::RemoveMemberResponse {})
    }

    pub(crate) async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> ApiResult<pb::ListMembersResponse> {
        let actor = self.actor(&request).await?;
        let r = request.into_inner();
        let org = parse_id("organization_id", &r.organization_id)?;
        let size = pagination::page_size(r.page_size)?;
        let cursor = Cursor::decode(&r.page_token)?;
        self.org_for_member(&actor, org, false).await?;
        let mut conn = self.state.pool.get().await?;
        let rows = store::list_members(&mut conn, org, cursor, size + 1).await?;
        let (rows, next_page_token) = pagination::finish_page(rows, size, |m| Cursor {
            created_at: m.joined_at,
            id: m.user_id,
        });
        Ok(pb::ListMembersResponse {
            members: rows.iter().map(member_proto).collect(),
            next_page_token,
        })
    }
}

// === the gRPC trait: each method delegates and turns ApiError into a google.rpc Status ===

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    async fn register(
        &self,
        r: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Ok(Response::new(IdentityApi::register(self, r).await?))
    }
    async fn login(&self, r: Request<pb::LoginRequest>) -> Result<Response<pb::TokenResponse>, Status> {
        Ok(Response::new(IdentityApi::login(self, r).await?))
    }
    async fn refresh_token(
        &self,
        r: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        Ok(Response::new(IdentityApi::refresh_token(self, r).await?))
    }
    async fn logout(&self, r: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        Ok(Response::new(IdentityApi::logout(self, r).await?))
    }
    async fn get_jwks(&self, _: Request<pb::GetJwksRequest>) -> Result<Response<pb::Jwks>, Status> {
        Ok(Response::new(IdentityApi::get_jwks(self).await?))
    }
    async fn get_me(&self, r: Request<pb::GetMeRequest>) -> Result<Response<pb::User>, Status> {
        Ok(Response::new(user_proto(&self.actor(&r).await?)))
    }
    async fn update_me(&self, r: Request<pb::UpdateMeRequest>) -> Result<Response<pb::User>, Status> {
        Ok(Response::new(IdentityApi::update_me(self, r).await?))
    }
    async fn change_password(
        &self,
        r: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        Ok(Response::new(IdentityApi::change_password(self, r).await?))
    }
    async fn get_user(&self, r: Request<pb::GetUserRequest>) -> Result<Response<pb::User>, Status> {
        Ok(Response::new(IdentityApi::get_user(self, r).await?))
    }
    async fn list_users(
        &self,
        r: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        Ok(Response::new(IdentityApi::list_users(self, r).await?))
    }
    async fn grant_role(&self, r: Request<pb::GrantRoleRequest>) -> Result<Response<pb::User>, Status> {
        let actor = self.actor(&r).await?;
        let r = r.into_inner();
        Ok(Response::new(
            self.change_role(actor, &r.user_id, r.role, true).await?,
        ))
    }
    async fn revoke_role(&self, r: Request<pb::RevokeRoleRequest>) -> Result<Response<pb::User>, Status> {
        let actor = self.actor(&r).await?;
        let r = r.into_inner();
        Ok(Response::new(
            self.change_role(actor, &r.user_id, r.role, false).await?,
        ))
    }
    async fn create_organization(
        &self,
        r: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        Ok(Response::new(IdentityApi::create_organization(self, r).await?))
    }
    async fn get_organization(
        &self,
        r: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        let actor = self.actor(&r).await?;
        let id = parse_id("organization_id", &r.get_ref().organization_id)?;
        Ok(Response::new(org_proto(
            &self.org_for_member(&actor, id, false).await?,
        )))
    }
    async fn list_organizations(
        &self,
        r: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        let actor = self.actor(&r).await?;
        let r = r.into_inner();
        let size = pagination::page_size(r.page_size)?;
        let cursor = Cursor::decode(&r.page_token)?;
        let member = (!actor.is_admin()).then_some(actor.user.id);
        let mut conn = self.state.pool.get().await.map_err(ApiError::from)?;
        let rows = store::list_orgs(&mut conn, member, cursor, size + 1).await?;
        let (rows, next_page_token) = pagination::finish_page(rows, size, |o| Cursor {
            created_at: o.created_at,
            id: o.id,
        });
        Ok(Response::new(pb::ListOrganizationsResponse {
            organizations: rows.iter().map(org_proto).collect(),
            next_page_token,
        }))
    }
    async fn update_organization(
        &self,
        r: Request<pb::UpdateOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        Ok(Response::new(IdentityApi::update_organization(self, r).await?))
    }
    async fn add_member(&self, r: Request<pb::AddMemberRequest>) -> Result<Response<pb::Member>, Status> {
        Ok(Response::new(IdentityApi::add_member(self, r).await?))
    }
    async fn remove_member(
        &self,
        r: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        Ok(Response::new(IdentityApi::remove_member(self, r).await?))
    }
    async fn list_members(
        &self,
        r: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        Ok(Response::new(IdentityApi::list_members(self, r).await?))
    }
    async fn create_api_key(
        &self,
        r: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        Ok(Response::new(IdentityApi::create_api_key(self, r).await?))
    }
    async fn list_api_keys(
        &self,
        r: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        Ok(Response::new(IdentityApi::list_api_keys(self, r).await?))
    }
    async fn revoke_api_key(
        &self,
        r: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        Ok(Response::new(IdentityApi::revoke_api_key(self, r).await?))
    }
    async fn verify_api_key(
        &self,
        r: Request<pb::VerifyApiKeyRequest>,
    ) -> Result<Response<pb::VerifyApiKeyResponse>, Status> {
        Ok(Response::new(IdentityApi::verify_api_key(self, r).await?))
    }
    async fn issue_service_token(
        &self,
        r: Request<pb::IssueServiceTokenRequest>,
    ) -> Result<Response<pb::ServiceToken>, Status> {
        Ok(Response::new(IdentityApi::issue_service_token(self, r).await?))
    }
    async fn rotate_signing_key(
        &self,
        r: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        // Only an operator's service credential gets here (the call graph's guard).
        tracing::info!(by = ?service_auth::caller_service(&r), "rotating the signing key");
        let kid = self.state.keys.rotate().await?;
        // Our own verifier must learn the new key before the next token it signs arrives.
        self.state.verifier.refresh(true).await?;
        Ok(Response::new(pb::RotateSigningKeyResponse { kid }))
    }
}
