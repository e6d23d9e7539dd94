//! Who is calling: access JWTs (EdDSA, issued by identity) verified against identity's JWKS, and
//! the [`Principal`] that handlers authorize against.
//!
//! Keys are cached and refreshed on an unknown `kid` (at most once per `min_refresh_interval`, so
//! a flood of made-up kids cannot flood identity) and when the cache is older than `max_age`.
//! Only `EdDSA` is accepted: `none`, HMAC (the classic `alg` confusion, where the public key is
//! used as an HMAC secret) and everything else are refused before any key is looked up.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult},
    service_auth::ServiceClaims,
};

/// `iss` of every access token.
pub const ISSUER: &str = "ticketing-identity";
/// `aud` of every access token: the platform's services.
pub const AUDIENCE: &str = "ticketing";

/// Platform-wide roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Organizer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Organizer => "organizer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Role::Customer),
            "organizer" => Some(Role::Organizer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A user's role inside one organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgRole {
    Member,
    Owner,
}

impl OrgRole {
    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::Member => "member",
            OrgRole::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "member" => Some(OrgRole::Member),
            "owner" => Some(OrgRole::Owner),
            _ => None,
        }
    }
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "events:read")]
    EventsRead,
    #[serde(rename = "events:write")]
    EventsWrite,
    #[serde(rename = "orders:read")]
    OrdersRead,
    #[serde(rename = "orders:write")]
    OrdersWrite,
    #[serde(rename = "checkin")]
    CheckIn,
    #[serde(rename = "reports:read")]
    ReportsRead,
    #[serde(rename = "webhooks")]
    Webhooks,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::EventsRead,
        Scope::EventsWrite,
        Scope::OrdersRead,
        Scope::OrdersWrite,
        Scope::CheckIn,
        Scope::ReportsRead,
        Scope::Webhooks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsRead => "events:read",
            Scope::EventsWrite => "events:write",
            Scope::OrdersRead => "orders:read",
            Scope::OrdersWrite => "orders:write",
            Scope::CheckIn => "checkin",
            Scope::ReportsRead => "reports:read",
            Scope::Webhooks => "webhooks",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

/// The kind of subject a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    #[default]
    User,
    ApiKey,
}

/// One organization membership, as carried in a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgClaim {
    pub id: Uuid,
    pub role: OrgRole,
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// User id, or API key id for `kind = api_key`.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(default)]
    pub kind: SubjectKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orgs: Vec<OrgClaim>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<Scope>,
    /// The organization an API key belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Uuid>,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(Uuid),
    ApiKey { key_id: Uuid, organization_id: Uuid },
}

/// The authenticated caller, with what it may do.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: Subject,
    pub roles: BTreeSet<Role>,
    pub memberships: BTreeMap<Uuid, OrgRole>,
    pub scopes: BTreeSet<Scope>,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.subject)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl Principal {
    pub fn from_claims(claims: &AccessClaims) -> ApiResult<Self> {
        let id = Uuid::parse_str(&claims.sub)
            .map_err(|_| ApiError::unauthenticated("token subject is not an id"))?;
        let subject = match claims.kind {
            SubjectKind::User => Subject::User(id),
            SubjectKind::ApiKey => Subject::ApiKey {
                key_id: id,
                organization_id: claims
                    .org
                    .ok_or_else(|| ApiError::unauthenticated("API key token has no organization"))?,
            },
        };
        Ok(Self {
            subject,
            roles: claims.roles.iter().copied().collect(),
            memberships: claims.orgs.iter().map(|o| (o.id, o.role)).collect(),
            scopes: claims.scopes.iter().copied().collect(),
        })
    }

    /// The user behind the call, or PERMISSION_DENIED for an API key.
    pub fn user_id(&self) -> ApiResult<Uuid> {
        match self.subject {
            Subject::User(id) => Ok(id),
            Subject::ApiKey { .. } => Err(ApiError::permission_denied(
                "this call needs a user, not an API key",
            )),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self.subject, Subject::User(_)) && self.roles.contains(&Role::Admin)
    }

    pub fn has_role(&self, role: Role) -> bool {
        matches!(self.subject, Subject::User(_)) && self.roles.contains(&role)
    }

    /// Admins, members of `org`, and API keys of `org` (the scope is checked separately).
    pub fn can_act_for(&self, org: Uuid) -> bool {
        match self.subject {
            Subject::User(_) => self.is_admin() || self.memberships.contains_key(&org),
            Subject::ApiKey { organization_id, .. } => organization_id == org,
        }
    }

    /// Admins and owners of `org`.
    pub fn is_owner_of(&self, org: Uuid) -> bool {
        self.is_admin() || self.memberships.get(&org) == Some(&OrgRole::Owner)
    }

    /// Users always pass (their roles decide); API keys need the scope.
    pub fn require_scope(&self, scope: Scope) -> ApiResult<()> {
        match self.subject {
            Subject::User(_) => Ok(()),
            Subject::ApiKey { .. } if self.scopes.contains(&scope) => Ok(()),
            Subject::ApiKey { .. } => Err(ApiError::permission_denied(format!(
                "the API key lacks the {} scope",
                scope.as_str()
            ))),
        }
    }
}

/// A public key that verifies tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationKey {
    pub kid: String,
    /// The Ed25519 public key, base64url without padding (the JWK `x`).
    pub x: String,
}

/// Where verification keys come from: identity's `GetJwks` over gRPC for services, the key store
/// itself inside identity.
pub trait KeySource: Send + Sync + 'static {
    fn fetch(&self) -> BoxFuture<'_, anyhow::Result<Vec<VerificationKey>>>;
}

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

/// Verifies access tokens. Cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<VerifierInner>,
}

/// Verified tokens, so a client's repeated calls cost one signature check, not one each. Entries
/// hold only tokens whose signature and claims passed, and are dropped at the token's `exp`.
struct VerifiedCache<C> {
    entries: std::sync::Mutex<HashMap<String, (i64, Arc<C>)>>,
}

/// Most cached tokens; past it the cache is emptied (cheap, and rare: tokens live 15 minutes).
const VERIFIED_CACHE_SIZE: usize = 50_000;

impl<C> VerifiedCache<C> {
    fn new() -> Self {
        Self {
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, token: &str, now: i64) -> Option<Arc<C>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(token)
            .filter(|(exp, _)| *exp > now)
            .map(|(_, c)| c.clone())
    }

    fn put(&self, token: &str, exp: i64, claims: Arc<C>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= VERIFIED_CACHE_SIZE {
            entries.clear();
        }
        entries.insert(token.to_string(), (exp, claims));
    }
}

struct VerifierInner {
    verified: VerifiedCache<AccessClaims>,
    verified_services: VerifiedCache<ServiceClaims>,
    source: Box<dyn KeySource>,
    cache: RwLock<KeyCache>,
    refresh_lock: Mutex<()>,
    min_refresh_interval: Duration,
    max_age: Duration,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(source: impl KeySource) -> Self {
        Self::with_intervals(source, Duration::from_secs(5), Duration::from_secs(300))
    }

    pub fn with_intervals(source: impl KeySource, min_refresh_interval: Duration, max_age: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        Self {
            inner: Arc::new(VerifierInner {
                verified: VerifiedCache::new(),
                verified_services: VerifiedCache::new(),
                source: Box::new(source),
                cache: RwLock::new(KeyCache {
                    keys: HashMap::new(),
                    fetched_at: None,
                }),
                refresh_lock: Mutex::new(()),
                min_refresh_interval,
                max_age,
                validation,
            }),
        }
    }

    /// Verifies a token and returns its claims. Every failure is UNAUTHENTICATED, except that a
    /// JWKS that cannot be fetched is UNAVAILABLE.
    pub async fn verify(&self, token: &str) -> ApiResult<AccessClaims> {
        // Within the leeway the library allows, so a cached token expires no later than it would.
        let now = chrono::Utc::now().timestamp();
        if let Some(claims) = self.inner.verified.get(token, now) {
            return Ok(AccessClaims::clone(&claims));
        }
        // A service token fails here twice over: its audience is a service, and its `kind` is
        // none of a user token's.
        let claims: AccessClaims = self.verify_signature(token, &self.inner.validation).await?;
        self.inner
            .verified
            .put(token, claims.exp, Arc::new(claims.clone()));
        Ok(claims)
    }

    /// Verifies a service token meant for `audience` (this service's name) and returns its
    /// claims. A user's or an API key's token, another service's audience, or any token not
    /// issued by identity's client-credentials grant is UNAUTHENTICATED.
    pub async fn verify_service(&self, token: &str, audience: &str) -> ApiResult<Arc<ServiceClaims>> {
        let now = chrono::Utc::now().timestamp();
        if let Some(claims) = self.inner.verified_services.get(token, now) {
            if claims.aud != audience {
                return Err(ApiError::unauthenticated(format!(
                    "the service token is for {}, not {audience}",
                    claims.aud
                )));
            }
            return Ok(claims);
        }
        let mut validation = self.inner.validation.clone();
        validation.set_audience(&[audience]);
        let claims: ServiceClaims = self
            .verify_signature(token, &validation)
            .await
            .map_err(|e| match e {
                ApiError::Unauthenticated(message) => {
                    ApiError::unauthenticated(format!("service credential refused: {message}"))
                }
                other => other,
            })?;
        if claims.kind != crate::service_auth::SERVICE_KIND {
            return Err(ApiError::unauthenticated(
                "service credential refused: not a service token",
            ));
        }
        let claims = Arc::new(claims);
        self.inner
            .verified_services
            .put(token, claims.exp, claims.clone());
        Ok(claims)
    }

    async fn verify_signature<C: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
    ) -> ApiResult<C> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::unauthenticated("malformed access token"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(ApiError::unauthenticated("unsupported token algorithm"));
        }
        let kid = header
            .kid
            .ok_or_else(|| ApiError::unauthenticated("access token has no key id"))?;
        let key = self.key_for(&kid).await?;
        let data = jsonwebtoken::decode::<C>(token, &key, validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthenticated("access token expired"),
                ErrorKind::ImmatureSignature => ApiError::unauthenticated("access token not yet valid"),
                ErrorKind::InvalidSignature => ApiError::unauthenticated("access token signature is invalid"),
                _ => ApiError::unauthenticated("access token is invalid"),
            }
        })?;
        Ok(data.claims)
    }

    /// Verifies a token and builds its principal.
    pub async fn principal(&self, token: &str) -> ApiResult<Principal> {
        Principal::from_claims(&self.verify(token).await?)
    }

    /// The caller's principal from `authorization: Bearer ...`, or UNAUTHENTICATED.
    pub async fn authenticate(&self, metadata: &MetadataMap) -> ApiResult<Principal> {
        match bearer_token(metadata)? {
            Some(token) => self.principal(token).await,
            None => Err(ApiError::unauthenticated(
                "this call needs `authorization: Bearer <token>`",
            )),
        }
    }

    /// Like [`authenticate`](Self::authenticate), but anonymous calls are allowed.
    pub async fn authenticate_optional(&self, metadata: &MetadataMap) -> ApiResult<Option<Principal>> {
        match bearer_token(metadata)? {
            Some(token) => self.principal(token).await.map(Some),
            None => Ok(None),
        }
    }

    async fn key_for(&self, kid: &str) -> ApiResult<DecodingKey> {
        {
            let cache = self.inner.cache.read().await;
            let fresh = cache
                .fetched_at
                .is_some_and(|at| at.elapsed() < self.inner.max_age);
            if let Some(key) = cache.keys.get(kid).filter(|_| fresh) {
                return Ok(key.clone());
            }
        }
        self.refresh(false).await?;
        let cache = self.inner.cache.read().await;
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| ApiError::unauthenticated("access token signed by an unknown key"))
    }

    /// Whether the verifier holds any key to check tokens with (fetching them once if it does
    /// not yet): what a readiness check asks.
    pub async fn has_keys(&self) -> bool {
        if !self.inner.cache.read().await.keys.is_empty() {
            return true;
        }
        self.refresh(false).await.is_ok() && !self.inner.cache.read().await.keys.is_empty()
    }

    /// Fetches the key set again, unless another task just did (or `force`).
    pub async fn refresh(&self, force: bool) -> ApiResult<()> {
        let _guard = self.inner.refresh_lock.lock().await;
        let recently = {
            let cache = self.inner.cache.read().await;
            cache
                .fetched_at
                .is_some_and(|at| at.elapsed() < self.inner.min_refresh_interval)
        };
        if recently && !force {
            return Ok(());
        }
        let keys = match self.inner.source.fetch().await {
            Ok(keys) => keys,
            Err(error) => {
                tracing::warn!(%error, "fetching verification keys failed");
                let cache = self.inner.cache.read().await;
                // Stale keys are better than none while identity is briefly away.
                if cache.keys.is_empty() {
                    return Err(ApiError::Unavailable("token keys unavailable".into()));
                }
                return Ok(());
            }
        };
        let mut decoded = HashMap::new();
        for key in keys {
            match DecodingKey::from_ed_components(&key.x) {
                Ok(k) => {
                    decoded.insert(key.kid, k);
                }
                Err(error) => tracing::warn!(kid = %key.kid, %error, "skipping an unusable key"),
            }
        }
        let mut cache = self.inner.cache.write().await;
        cache.keys = decoded;
        cache.fetched_at = Some(Instant::now());
        Ok(())
    }
}

/// The bearer token of a call, if any; a malformed `authorization` header is UNAUTHENTICATED.
pub fn bearer_token(metadata: &MetadataMap) -> ApiResult<Option<&str>> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthenticated("authorization header is not text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthenticated("authorization must be `Bearer <token>`"))?;
    Ok(Some(token))
}

/// Fetches keys from identity's `GetJwks`.
pub struct IdentityKeySource {
    client: ticketing_proto::ticketing::identity::v1::identity_service_client::IdentityServiceClient<
        crate::clients::PeerChannel,
    >,
}

impl IdentityKeySource {
    pub fn new(channel: crate::clients::PeerChannel) -> Self {
        Self {
            client:
                ticketing_proto::ticketing::identity::v1::identity_service_client::IdentityServiceClient::new(
                    channel,
                ),
        }
    }
}

impl KeySource for IdentityKeySource {
    fn fetch(&self) -> BoxFuture<'_, anyhow::Result<Vec<VerificationKey>>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let mut request =
                tonic::Request::new(ticketing_proto::ticketing::identity::v1::GetJwksRequest {});
            request.set_timeout(Duration::from_secs(3));
            let jwks = client.get_jwks(request).await?.into_inner();
            Ok(jwks
                .keys
                .into_iter()
                .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
                .map(|k| VerificationKey { kid: k.kid, x: k.x })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(kind: SubjectKind) -> AccessClaims {
        AccessClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: Uuid::now_v7().to_string(),
            exp: 0,
            iat: 0,
            nbf: 0,
            jti: "j".into(),
            kind,
            roles: vec![Role::Customer],
            orgs: vec![],
            scopes: vec![Scope::EventsRead],
            org: Some(Uuid::nil()),
        }
    }

    #[test]
    fn api_keys_act_only_for_their_organization_and_scopes() {
        let principal = Principal::from_claims(&claims(SubjectKind::ApiKey)).expect("valid");
        assert!(principal.can_act_for(Uuid::nil()));
        assert!(!principal.can_act_for(Uuid::now_v7()));
        assert!(principal.require_scope(Scope::EventsRead).is_ok());
        assert!(principal.require_scope(Scope::OrdersWrite).is_err());
        assert!(principal.user_id().is_err());
        assert!(!principal.is_admin());
    }

    #[test]
    fn a_role_claimed_by_an_api_key_token_grants_nothing() {
        let mut c = claims(SubjectKind::ApiKey);
        c.roles = vec![Role::Admin];
        let principal = Principal::from_claims(&c).expect("valid");
        assert!(!principal.is_admin());
        assert!(!principal.has_role(Role::Admin));
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        let mut md = MetadataMap::new();
        assert!(matches!(bearer_token(&md), Ok(None)));
        md.insert("authorization", "Bearer abc".parse().expect("ascii"));
        assert_eq!(bearer_token(&md).ok().flatten(), Some("abc"));
        md.insert("authorization", "Basic abc".parse().expect("ascii"));
        assert!(bearer_token(&md).is_err());
        md.insert("authorization", "Bearer ".parse().expect("ascii"));
        assert!(bearer_token(&md).is_err());
    }

    #[test]
    fn scopes_round_trip_through_their_names() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("orders:delete"), None);
    }
}
