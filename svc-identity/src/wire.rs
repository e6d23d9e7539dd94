//! Identity's rows and enums as the API shows them, and the shapes of what it is sent.

use ticketing_platform::{
    ApiError, ApiResult,
    auth::{OrgRole, Role, Scope},
    time::{to_timestamp, to_timestamp_opt},
};
use ticketing_proto::ticketing::identity::v1::{self as pb};

use crate::store::{Actor, ApiKeyRow, MemberRow, OrgRow};

pub(crate) fn check_refresh_shape(token: &str) -> ApiResult<()> {
    if token.is_empty() {
        return Err(ApiError::invalid("refresh_token", "is required"));
    }
    if token.len() > 100 || !token.starts_with("rt_") {
        return Err(ApiError::unauthenticated("refresh token is invalid or expired"));
    }
    Ok(())
}

pub(crate) fn role_to_proto(role: Role) -> i32 {
    (match role {
        Role::Customer => pb::Role::Customer,
        Role::Organizer => pb::Role::Organizer,
        Role::Admin => pb::Role::Admin,
    }) as i32
}

pub(crate) fn role_from_proto(field: &str, raw: i32) -> ApiResult<Role> {
    match pb::Role::try_from(raw) {
        Ok(pb::Role::Customer) => Ok(Role::Customer),
        Ok(pb::Role::Organizer) => Ok(Role::Organizer),
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        _ => Err(ApiError::invalid(
            field,
            "must be ROLE_CUSTOMER, ROLE_ORGANIZER or ROLE_ADMIN",
        )),
    }
}

pub(crate) fn member_role_to_proto(role: OrgRole) -> i32 {
    (match role {
        OrgRole::Member => pb::MemberRole::Member,
        OrgRole::Owner => pb::MemberRole::Owner,
    }) as i32
}

pub(crate) fn member_role_from_proto(field: &str, raw: i32) -> ApiResult<OrgRole> {
    match pb::MemberRole::try_from(raw) {
        Ok(pb::MemberRole::Member) => Ok(OrgRole::Member),
        Ok(pb::MemberRole::Owner) => Ok(OrgRole::Owner),
        _ => Err(ApiError::invalid(
            field,
            "must be MEMBER_ROLE_MEMBER or MEMBER_ROLE_OWNER",
        )),
    }
}

pub(crate) fn scope_from_proto(raw: i32) -> Option<Scope> {
    match pb::ApiKeyScope::try_from(raw).ok()? {
        pb::ApiKeyScope::Unspecified => None,
        pb::ApiKeyScope::EventsRead => Some(Scope::EventsRead),
        pb::ApiKeyScope::EventsWrite => Some(Scope::EventsWrite),
        pb::ApiKeyScope::OrdersRead => Some(Scope::OrdersRead),
        pb::ApiKeyScope::OrdersWrite => Some(Scope::OrdersWrite),
        pb::ApiKeyScope::Checkin => Some(Scope::CheckIn),
        pb::ApiKeyScope::ReportsRead => Some(Scope::ReportsRead),
        pb::ApiKeyScope::Webhooks => Some(Scope::Webhooks),
    }
}

pub(crate) fn scope_to_proto(scope: Scope) -> i32 {
    (match scope {
        Scope::EventsRead => pb::ApiKeyScope::EventsRead,
        Scope::EventsWrite => pb::ApiKeyScope::EventsWrite,
        Scope::OrdersRead => pb::ApiKeyScope::OrdersRead,
        Scope::OrdersWrite => pb::ApiKeyScope::OrdersWrite,
        Scope::CheckIn => pb::ApiKeyScope::Checkin,
        Scope::ReportsRead => pb::ApiKeyScope::ReportsRead,
        Scope::Webhooks => pb::ApiKeyScope::Webhooks,
    }) as i32
}

pub(crate) fn user_proto(actor: &Actor) -> pb::User {
    pb::User {
        id: actor.user.id.to_string(),
        email: actor.user.email.clone(),
        display_name: actor.user.display_name.clone(),
        roles: actor.roles.iter().map(|r| role_to_proto(*r)).collect(),
        memberships: actor
            .memberships
            .iter()
            .map(|m| pb::Membership {
                organization_id: m.organization_id.to_string(),
                organization_slug: m.slug.clone(),
                role: member_role_to_proto(m.role),
            })
            .collect(),
        created_at: Some(to_timestamp(actor.user.created_at)),
        updated_at: Some(to_timestamp(actor.user.updated_at)),
    }
}

pub(crate) fn org_proto(org: &OrgRow) -> pb::Organization {
    pb::Organization {
        id: org.id.to_string(),
        slug: org.slug.clone(),
        display_name: org.display_name.clone(),
        created_at: Some(to_timestamp(org.created_at)),
        updated_at: Some(to_timestamp(org.updated_at)),
    }
}

pub(crate) fn member_proto(m: &MemberRow) -> pb::Member {
    pb::Member {
        organization_id: m.organization_id.to_string(),
        user_id: m.user_id.to_string(),
        email: m.email.clone(),
        display_name: m.display_name.clone(),
        role: OrgRole::parse(&m.role).map(member_role_to_proto).unwrap_or(0),
        joined_at: Some(to_timestamp(m.joined_at)),
    }
}

pub(crate) fn api_key_proto(k: &ApiKeyRow) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.to_string(),
        organization_id: k.organization_id.to_string(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        scopes: k
            .scopes
            .iter()
            .filter_map(|s| Scope::parse(s))
            .map(scope_to_proto)
            .collect(),
        created_by: k.created_by.to_string(),
        created_at: Some(to_timestamp(k.created_at)),
        expires_at: to_timestamp_opt(k.expires_at),
        revoked_at: to_timestamp_opt(k.revoked_at),
        last_used_at: to_timestamp_opt(k.last_used_at),
    }
}
