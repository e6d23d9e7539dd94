//! Identity's queries (diesel-async). Functions take a connection so callers choose the
//! transaction boundaries.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use ticketing_platform::{
    ApiError, ApiResult,
    auth::{OrgRole, Role},
    db,
    messaging::{self},
    pagination::Cursor,
};
use uuid::Uuid;

use crate::schema::{api_keys, memberships, organizations, refresh_tokens, user_roles, users};

type Conn = AsyncPgConnection;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = organizations)]
pub struct OrgRow {
    pub id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub secret_hash: Vec<u8>,
    pub scopes: Vec<String>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshRow {
    pub id: Uuid,
    pub family_id: Uuid,
    pub user_id: Uuid,
    pub token_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One membership with the organization's slug, as shown on a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    pub organization_id: Uuid,
    pub slug: String,
    pub role: OrgRole,
}

/// A member of an organization, as listed.
#[derive(Debug, Clone, Queryable)]
pub struct MemberRow {
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub role: String,
    pub joined_at: DateTime<Utc>,
    pub email: String,
    pub display_name: String,
}

/// The columns of [`MemberRow`], from `memberships` joined with `users`.
const MEMBER_COLUMNS: (
    memberships::organization_id,
    memberships::user_id,
    memberships::role,
    memberships::joined_at,
    users::email,
    users::display_name,
) = (
    memberships::organization_id,
    memberships::user_id,
    memberships::role,
    memberships::joined_at,
    users::email,
    users::display_name,
);

/// Everything authorization in identity needs about a user, read fresh from the database (so a
/// revoked role or membership takes effect at once here, not when the token expires).
#[derive(Debug, Clone)]
pub struct Actor {
    pub user: UserRow,
    pub roles: Vec<Role>,
    pub memberships: Vec<MembershipView>,
}

impl Actor {
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
    pub fn org_role(&self, org: Uuid) -> Option<OrgRole> {
        self.memberships
            .iter()
            .find(|m| m.organization_id == org)
            .map(|m| m.role)
    }
}

// === users ===

/// Inserts a user with the customer role (and `extra_roles`) and queues `user.registered` in the
/// same transaction. ALREADY_EXISTS when the e-mail is taken: the unique index decides races
/// between concurrent registrations.
pub async fn insert_user(conn: &mut Conn, user: &UserRow, extra_roles: &[Role]) -> ApiResult<()> {
    let user = user.clone();
    let mut roles = vec![Role::Customer];
    roles.extend_from_slice(extra_roles);
    conn.transaction::<_, ApiError, _>(async |conn| {
        diesel::insert_into(users::table)
            .values(&user)
            .execute(conn)
            .await
            .map_err(db::already_exists(
                "EMAIL_TAKEN",
                "an account with this e-mail already exists",
            ))?;
        for role in roles {
            diesel::insert_into(user_roles::table)
                .values((
                    user_roles::user_id.eq(user.id),
                    user_roles::role.eq(role.as_str()),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
        }
        messaging::enqueue(conn, vec![crate::events::user_registered(&user)]).await
    })
    .await
}

pub async fn find_user(conn: &mut Conn, id: Uuid) -> ApiResult<Option<UserRow>> {
    Ok(users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn find_user_by_email(conn: &mut Conn, email: &str) -> ApiResult<Option<UserRow>> {
    Ok(users::table
        .filter(users::email.eq(email))
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn roles_of(conn: &mut Conn, user_id: Uuid) -> ApiResult<Vec<Role>> {
    let names: Vec<String> = user_roles::table
        .filter(user_roles::user_id.eq(user_id))
        .select(user_roles::role)
        .load(conn)
        .await?;
    let mut roles: Vec<Role> = names.iter().filter_map(|n| Role::parse(n)).collect();
    roles.sort();
    Ok(roles)
}

pub async fn memberships_of(conn: &mut Conn, user_id: Uuid) -> ApiResult<Vec<MembershipView>> {
    let rows: Vec<(Uuid, String, String)> = memberships::table
        .inner_join(organizations::table)
        .filter(memberships::user_id.eq(user_id))
        .order(organizations::slug.asc())
        .select((
            memberships::organization_id,
            organizations::slug,
            memberships::role,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(organization_id, slug, role)| {
            OrgRole::parse(&role).map(|role| MembershipView {
                organization_id,
                slug,
                role,
            })
        })
        .collect())
}

/// Roles and memberships of several users at once (listings), in two queries.
pub async fn actors_of(conn: &mut Conn, users: Vec<UserRow>) -> ApiResult<Vec<Actor>> {
    let ids: Vec<Uuid> = users.iter().map(|u| u.id).collect();
    let roles: Vec<(Uuid, String)> = user_roles::table
        .filter(user_roles::user_id.eq_any(&ids))
        .select((user_roles::user_id, user_roles::role))
        .load(conn)
        .await?;
    let memberships: Vec<(Uuid, Uuid, String, String)> = memberships::table
        .inner_join(organizations::table)
        .filter(memberships::user_id.eq_any(&ids))
        .order(organizations::slug.asc())
        .select((
            memberships::user_id,
            memberships::organization_id,
            organizations::slug,
            memberships::role,
        ))
        .load(conn)
        .await?;
    Ok(users
        .into_iter()
        .map(|user| {
            let mut own_roles: Vec<Role> = roles
                .iter()
                .filter(|(id, _)| *id == user.id)
                .filter_map(|(_, r)| Role::parse(r))
                .collect();
            own_roles.sort();
            let own_memberships = memberships
                .iter()
                .filter(|(id, ..)| *id == user.id)
                .filter_map(|(_, org, slug, role)| {
                    OrgRole::parse(role).map(|role| MembershipView {
                        organization_id: *org,
                        slug: slug.clone(),
                        role,
                    })
                })
                .collect();
            Actor {
                user,
                roles: own_roles,
                memberships: own_memberships,
            }
        })
        .collect())
}

pub async fn load_actor(conn: &mut Conn, user_id: Uuid) -> ApiResult<Option<Actor>> {
    let Some(user) = find_user(conn, user_id).await? else {
        return Ok(None);
    };
    let roles = roles_of(conn, user_id).await?;
    let memberships = memberships_of(conn, user_id).await?;
    Ok(Some(Actor {
        user,
        roles,
        memberships,
    }))
}

/// Users newest first, after `cursor`.
pub async fn list_users(
    conn: &mut Conn,
    cursor: Option<Cursor>,
    limit: i64,
    email_prefix: &str,
    role: Option<Role>,
) -> ApiResult<Vec<UserRow>> {
    let mut query = users::table.select(UserRow::as_select()).into_boxed();
    if let Some(c) = cursor {
        query = query.filter(
            users::created_at
                .lt(c.created_at)
                .or(users::created_at.eq(c.created_at).and(users::id.lt(c.id))),
        );
    }
    if !email_prefix.is_empty() {
        let escaped = email_prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        query = query.filter(users::email.like(format!("{escaped}%")));
    }
    if let Some(role) = role {
        let with_role = user_roles::table
            .filter(user_roles::role.eq(role.as_str()))
            .select(user_roles::user_id);
        query = query.filter(users::id.eq_any(with_role));
    }
    Ok(query
        .order((users::created_at.desc(), users::id.desc()))
        .limit(limit)
        .load(conn)
        .await?)
}

pub async fn set_display_name(conn: &mut Conn, user_id: Uuid, name: &str) -> ApiResult<()> {
    diesel::update(users::table.find(user_id))
        .set((
            users::display_name.eq(name),
            users::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets a new password hash and revokes every session of the user, in one transaction.
pub async fn set_password(conn: &mut Conn, user_id: Uuid, hash: &str) -> ApiResult<()> {
    let hash = hash.to_string();
    conn.transaction::<_, ApiError, _>(async |conn| {
        diesel::update(users::table.find(user_id))
            .set((
                users::password_hash.eq(&hash),
                users::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::user_id.eq(user_id))
                .filter(refresh_tokens::revoked_at.is_null()),
        )
        .set(refresh_tokens::revoked_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
        Ok(())
    })
    .await
}

pub async fn grant_role(conn: &mut Conn, user_id: Uuid, role: Role) -> ApiResult<()> {
    diesel::insert_into(user_roles::table)
        .values((
            user_roles::user_id.eq(user_id),
            user_roles::role.eq(role.as_str()),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn revoke_role(conn: &mut Conn, user_id: Uuid, role: Role) -> ApiResult<()> {
    diesel::delete(
        user_roles::table
            .filter(user_roles::user_id.eq(user_id))
            .filter(user_roles::role.eq(role.as_str())),
    )
    .execute(conn)
    .await?;
    Ok(())
}

// === refresh tokens ===

pub async fn insert_refresh(conn: &mut Conn, row: &RefreshRow) -> ApiResult<()> {
    diesel::insert_into(refresh_tokens::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum Spend {
    /// Spent; `replacement` is stored in the same family.
    Rotated {
        user_id: Uuid,
    },
    /// Spent before, or revoked: the family is revoked now (reuse means theft, or a client bug).
    Reused,
    Expired,
    Unknown,
}

/// Spends `hash` and stores `replacement`, atomically. The row lock makes concurrent spends of one
/// token serial: the first rotates, every later one is reuse.
pub async fn spend_refresh(conn: &mut Conn, hash: &[u8], replacement: RefreshRow) -> ApiResult<Spend> {
    let hash = hash.to_vec();
    conn.transaction::<_, ApiError, _>(async |conn| {
        let row: Option<RefreshRow> = refresh_tokens::table
            .filter(refresh_tokens::token_hash.eq(&hash))
            .select(RefreshRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some(row) = row else { return Ok(Spend::Unknown) };
        if row.used_at.is_some() || row.revoked_at.is_some() {
            revoke_family(conn, row.family_id).await?;
            return Ok(Spend::Reused);
        }
        if row.expires_at <= Utc::now() {
            return Ok(Spend::Expired);
        }
        diesel::update(refresh_tokens::table.find(row.id))
            .set(refresh_tokens::used_at.eq(diesel::dsl::now))
            .execute(conn)
            .await?;
        let replacement = RefreshRow {
            family_id: row.family_id,
            user_id: row.user_id,
            ..replacement
        };
        diesel::insert_into(refresh_tokens::table)
            .values(&replacement)
            .execute(conn)
            .await?;
        Ok(Spend::Rotated { user_id: row.user_id })
    })
    .await
}

async fn revoke_family(conn: &mut Conn, family_id: Uuid) -> ApiResult<usize> {
    Ok(diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?)
}

/// Revokes the family of the token with `hash`, if it exists.
pub async fn revoke_family_of(conn: &mut Conn, hash: &[u8]) -> ApiResult<()> {
    let family: Option<Uuid> = refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(hash))
        .select(refresh_tokens::family_id)
        .first(conn)
        .await
        .optional()?;
    if let Some(family) = family {
        revoke_family(conn, family).await?;
    }
    Ok(())
}

// === organizations ===

/// Creates an organization with `owner` as its owner. ALREADY_EXISTS when the slug is taken.
pub async fn insert_org(conn: &mut Conn, org: &OrgRow, owner: Uuid) -> ApiResult<()> {
    let org = org.clone();
    conn.transaction::<_, ApiError, _>(async |conn| {
        diesel::insert_into(organizations::table)
            .values(&org)
            .execute(conn)
            .await
            .map_err(db::already_exists(
                "SLUG_TAKEN",
                "an organization with this slug already exists",
            ))?;
        diesel::insert_into(memberships::table)
            .values((
                memberships::organization_id.eq(org.id),
                memberships::user_id.eq(owner),
                memberships::role.eq(OrgRole::Owner.as_str()),
            ))
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
}

pub async fn find_org(conn: &mut Conn, id: Uuid) -> ApiResult<Option<OrgRow>> {
    Ok(organizations::table
        .find(id)
        .select(OrgRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Organizations by slug-independent creation order; only `member`'s when given.
pub async fn list_orgs(
    conn: &mut Conn,
    member: Option<Uuid>,
    cursor: Option<Cursor>,
    limit: i64,
) -> ApiResult<Vec<OrgRow>> {
    let mut query = organizations::table.select(OrgRow::as_select()).into_boxed();
    if let Some(user) = member {
        let mine = memberships::table
            .filter(memberships::user_id.eq(user))
            .select(memberships::organization_id);
        query = query.filter(organizations::id.eq_any(mine));
    }
    if let Some(c) = cursor {
        query = query.filter(
            organizations::created_at
                .lt(c.created_at)
                .or(organizations::created_at
                    .eq(c.created_at)
                    .and(organizations::id.lt(c.id))),
        );
    }
    Ok(query
        .order((organizations::created_at.desc(), organizations::id.desc()))
        .limit(limit)
        .load(conn)
        .await?)
}

pub async fn set_org_name(conn: &mut Conn, id: Uuid, name: &str) -> ApiResult<()> {
    diesel::update(organizations::table.find(id))
        .set((
            organizations::display_name.eq(name),
            organizations::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds a member or changes their role. Demoting the last owner is refused.
pub async fn upsert_member(conn: &mut Conn, org: Uuid, user: Uuid, role: OrgRole) -> ApiResult<()> {
    conn.transaction::<_, ApiError, _>(async |conn| {
        lock_org(conn, org).await?;
        if role != OrgRole::Owner {
            ensure_other_owner(conn, org, user).await?;
        }
        diesel::insert_into(memberships::table)
            .values((
                memberships::organization_id.eq(org),
                memberships::user_id.eq(user),
                memberships::role.eq(role.as_str()),
            ))
            .on_conflict((memberships::organization_id, memberships::user_id))
            .do_update()
            .set(memberships::role.eq(role.as_str()))
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
}

/// Removes a member; the last owner cannot leave. Returns whether a row was removed.
pub async fn remove_member(conn: &mut Conn, org: Uuid, user: Uuid) -> ApiResult<bool> {
    conn.transaction::<_, ApiError, _>(async |conn| {
        lock_org(conn, org).await?;
        ensure_other_owner(conn, org, user).await?;
        let removed = diesel::delete(
            memberships::table
                .filter(memberships::organization_id.eq(org))
                .filter(memberships::user_id.eq(user)),
        )
        .execute(conn)
        .await?;
        Ok(removed > 0)
    })
    .await
}

/// Serialises membership changes of one organization, so two owners demoting each other at the
/// same moment cannot leave it ownerless.
async fn lock_org(conn: &mut Conn, org: Uuid) -> ApiResult<()> {
    organizations::table
        .find(org)
        .select(organizations::id)
        .for_update()
        .first::<Uuid>(conn)
        .await
        .optional()?
        .ok_or(ApiError::NotFound {
            resource: "organization",
        })?;
    Ok(())
}

/// FAILED_PRECONDITION when `user` is the only owner of `org`.
async fn ensure_other_owner(conn: &mut Conn, org: Uuid, user: Uuid) -> ApiResult<()> {
    let owners: Vec<Uuid> = memberships::table
        .filter(memberships::organization_id.eq(org))
        .filter(memberships::role.eq(OrgRole::Owner.as_str()))
        .select(memberships::user_id)
        .load(conn)
        .await?;
    if owners == [user] {
        return Err(ApiError::precondition(
            "LAST_OWNER",
            "an organization must keep at least one owner",
        ));
    }
    Ok(())
}

pub async fn list_members(
    conn: &mut Conn,
    org: Uuid,
    after: Option<Cursor>,
    limit: i64,
) -> ApiResult<Vec<MemberRow>> {
    let mut query = memberships::table
        .inner_join(users::table)
        .filter(memberships::organization_id.eq(org))
        .select(MEMBER_COLUMNS)
        .into_boxed();
    if let Some(c) = after {
        query = query.filter(
            memberships::joined_at.gt(c.created_at).or(memberships::joined_at
                .eq(c.created_at)
                .and(memberships::user_id.gt(c.id))),
        );
    }
    Ok(query
        .order((memberships::joined_at.asc(), memberships::user_id.asc()))
        .limit(limit)
        .load(conn)
        .await?)
}

pub async fn find_member(conn: &mut Conn, org: Uuid, user: Uuid) -> ApiResult<Option<MemberRow>> {
    Ok(memberships::table
        .inner_join(users::table)
        .filter(memberships::organization_id.eq(org))
        .filter(memberships::user_id.eq(user))
        .select(MEMBER_COLUMNS)
        .first(conn)
        .await
        .optional()?)
}

// === API keys ===

pub async fn insert_api_key(conn: &mut Conn, row: &ApiKeyRow) -> ApiResult<()> {
    diesel::insert_into(api_keys::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn list_api_keys(
    conn: &mut Conn,
    org: Uuid,
    include_revoked: bool,
    cursor: Option<Cursor>,
    limit: i64,
) -> ApiResult<Vec<ApiKeyRow>> {
    let mut query = api_keys::table
        .filter(api_keys::organization_id.eq(org))
        .select(ApiKeyRow::as_select())
        .into_boxed();
    if !include_revoked {
        query = query.filter(api_keys::revoked_at.is_null());
    }
    if let Some(c) = cursor {
        query = query.filter(
            api_keys::created_at
                .lt(c.created_at)
                .or(api_keys::created_at.eq(c.created_at).and(api_keys::id.lt(c.id))),
        );
    }
    Ok(query
        .order((api_keys::created_at.desc(), api_keys::id.desc()))
        .limit(limit)
        .load(conn)
        .await?)
}

pub async fn find_api_key(conn: &mut Conn, org: Uuid, id: Uuid) -> ApiResult<Option<ApiKeyRow>> {
    Ok(api_keys::table
        .filter(api_keys::organization_id.eq(org))
        .filter(api_keys::id.eq(id))
        .select(ApiKeyRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn find_api_key_by_prefix(conn: &mut Conn, prefix: &str) -> ApiResult<Option<ApiKeyRow>> {
    Ok(api_keys::table
        .filter(api_keys::prefix.eq(prefix))
        .select(ApiKeyRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Revokes once: a second revocation keeps the first time.
pub async fn revoke_api_key(conn: &mut Conn, id: Uuid) -> ApiResult<()> {
    diesel::update(api_keys::table.find(id).filter(api_keys::revoked_at.is_null()))
        .set(api_keys::revoked_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records use at most once a minute per key, so verification does not write on every call.
pub async fn touch_api_key(conn: &mut Conn, id: Uuid) -> ApiResult<()> {
    let a_minute_ago = Utc::now() - chrono::Duration::minutes(1);
    diesel::update(
        api_keys::table.find(id).filter(
            api_keys::last_used_at
                .is_null()
                .or(api_keys::last_used_at.lt(a_minute_ago)),
        ),
    )
    .set(api_keys::last_used_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    Ok(())
}
