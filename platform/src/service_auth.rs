//! Service identity: which service is calling, proven by a short-lived token, and the call graph
//! that says which service may call which internal RPC.
//!
//! - **The call graph** is declared once, in the protos: an RPC without a `google.api.http` rule
//!   is internal and names its callers with `(ticketing.common.v1.callers)`. [`CallGraph`] reads
//!   it from the compiled descriptors; the server guard and the tests derive from it (and the
//!   mesh policies are to). An internal RPC that names no caller can be called by nobody.
//! - **Tokens** come from identity's `IssueServiceToken`, the OAuth 2.0 client-credentials grant:
//!   a service proves itself with its client secret and gets an EdDSA JWT for one audience (the
//!   service it calls), `kind: service`, `sub` = its name, valid for minutes. Peers send it as
//!   `x-service-token` ([`ServiceTokens`], [`AttachServiceTokenLayer`]); an end user's bearer
//!   token, if any, still travels in `authorization`.
//! - **The guard** ([`CallGuardLayer`]) runs in every server: an internal RPC is served only with
//!   a valid token for this service from an allowed caller (UNAUTHENTICATED without one,
//!   PERMISSION_DENIED for a caller the graph does not allow). `x-client-address` is removed from
//!   every call that the gateway did not make, so handlers may trust what is left.

use std::{
    collections::{BTreeSet, HashMap},
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use prost_reflect::{DescriptorPool, Value};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::auth::TokenVerifier;

/// The metadata key that carries a service token.
pub const SERVICE_TOKEN_HEADER: &str = "x-service-token";
/// The metadata key in which the gateway passes the client's address (trusted from it only).
pub const CLIENT_ADDRESS_HEADER: &str = "x-client-address";
/// The gateway's client id: the only caller whose `x-client-address` is believed.
pub const GATEWAY: &str = "gateway";
/// `kind` of every service token.
pub const SERVICE_KIND: &str = "service";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The claims of a service token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceClaims {
    pub iss: String,
    /// The one service that accepts it.
    pub aud: String,
    /// The calling service (client id).
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    /// Always [`SERVICE_KIND`]; user and API-key tokens never carry it.
    pub kind: String,
}

/// The verified service behind a call, put in the request's extensions by the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerService(pub String);

/// Who may call an RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Has a REST route: anyone may call; the handler authorizes the end user.
    Public,
    /// Internal: only these services, with a service token.
    Internal(BTreeSet<String>),
    /// Internal, authenticated by the client secret in the request itself.
    ClientCredentials,
}

/// One RPC of the platform and who may call it.
#[derive(Debug, Clone)]
pub struct Rpc {
    /// `/ticketing.inventory.v1.InventoryService/CommitHold`
    pub path: String,
    /// The serving service's short name (`inventory`).
    pub service: String,
    pub method: String,
    pub access: Access,
    pub server_streaming: bool,
}

/// Every RPC of the platform by path, from the compiled descriptors.
#[derive(Debug, Default)]
pub struct CallGraph {
    rpcs: HashMap<String, Rpc>,
}

/// `ticketing.inventory.v1` → `inventory`.
pub fn service_of_package(package: &str) -> Option<&str> {
    let mut parts = package.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ticketing"), Some(name), Some(version), None) if version.starts_with('v') => Some(name),
        _ => None,
    }
}

/// `ticketing.inventory.v1.InventoryService` → `inventory`.
pub fn service_of(full_service_name: &str) -> Option<&str> {
    full_service_name
        .rsplit_once('.')
        .and_then(|(package, _)| service_of_package(package))
}

impl CallGraph {
    /// The platform's call graph (read once from [`ticketing_proto::FILE_DESCRIPTOR_SET`]).
    pub fn platform() -> &'static CallGraph {
        static GRAPH: OnceLock<CallGraph> = OnceLock::new();
        GRAPH.get_or_init(|| {
            // Compiled into the binary: if it does not decode, nothing could be guarded, and
            // failing closed means not serving at all.
            let pool = DescriptorPool::decode(ticketing_proto::FILE_DESCRIPTOR_SET)
                .expect("the compiled descriptor set decodes");
            Self::from_pool(&pool)
        })
    }

    pub fn from_pool(pool: &DescriptorPool) -> Self {
        let http = pool.get_extension_by_name("google.api.http");
        let callers = pool.get_extension_by_name("ticketing.common.v1.callers");
        let client_credentials = pool.get_extension_by_name("ticketing.common.v1.client_credentials");
        let mut rpcs = HashMap::new();
        for service in pool.services() {
            let Some(name) = service_of_package(service.package_name()) else {
                continue;
            };
            for method in service.methods() {
                let options = method.options();
                let has = |ext: &Option<prost_reflect::ExtensionDescriptor>| {
                    ext.as_ref().is_some_and(|e| options.has_extension(e))
                };
                let access = if has(&http) {
                    Access::Public
                } else if client_credentials
                    .as_ref()
                    .is_some_and(|e| matches!(options.get_extension(e).as_ref(), Value::Bool(true)))
                {
                    Access::ClientCredentials
                } else {
                    let allowed = match callers.as_ref().map(|e| options.get_extension(e)) {
                        Some(value) => match value.as_ref() {
                            Value::List(list) => list
                                .iter()
                                .filter_map(|v| v.as_str().map(str::to_string))
                                .collect(),
                            _ => BTreeSet::new(),
                        },
                        None => BTreeSet::new(),
                    };
                    Access::Internal(allowed)
                };
                let path = format!("/{}/{}", service.full_name(), method.name());
                rpcs.insert(
                    path.clone(),
                    Rpc {
                        path,
                        service: name.to_string(),
                        method: method.name().to_string(),
                        access,
                        server_streaming: method.is_server_streaming(),
                    },
                );
            }
        }
        Self { rpcs }
    }

    pub fn rpc(&self, path: &str) -> Option<&Rpc> {
        self.rpcs.get(path)
    }

    /// Every RPC, sorted by path.
    pub fn rpcs(&self) -> Vec<&Rpc> {
        let mut all: Vec<&Rpc> = self.rpcs.values().collect();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all
    }

    /// Whether a call to `path` needs a service credential (internal RPCs other than the grant).
    pub fn needs_service_token(&self, path: &str) -> bool {
        matches!(self.rpc(path).map(|r| &r.access), Some(Access::Internal(_)))
    }

    /// The services `caller` may call internal RPCs of (what a mesh policy would allow it).
    pub fn callees_of(&self, caller: &str) -> BTreeSet<String> {
        self.rpcs
            .values()
            .filter(|r| matches!(&r.access, Access::Internal(c) if c.contains(caller)))
            .map(|r| r.service.clone())
            .collect()
    }

    /// The internal RPCs and their callers as a Markdown table (the README shows it).
    pub fn markdown_table(&self) -> String {
        let mut rows: Vec<(String, String)> = self
            .rpcs
            .values()
            .filter_map(|r| {
                let callers = match &r.access {
                    Access::Public => return None,
                    Access::ClientCredentials => "any service client, by its secret".to_string(),
                    Access::Internal(callers) if callers.is_empty() => "nobody".to_string(),
                    Access::Internal(callers) => callers.iter().cloned().collect::<Vec<_>>().join(", "),
                };
                Some((format!("{}.{}", r.service, r.method), callers))
            })
            .collect();
        rows.sort();
        let mut table = String::from("| internal RPC | callers |\n| --- | --- |\n");
        for (rpc, callers) in rows {
            table.push_str(&format!("| `{rpc}` | {callers} |\n"));
        }
        table
    }

    /// The short names of the services that serve RPCs.
    pub fn services(&self) -> BTreeSet<String> {
        self.rpcs.values().map(|r| r.service.clone()).collect()
    }
}

// === the server side ===

/// Enforces the call graph on every call a server receives (see the module docs).
#[derive(Clone)]
pub struct CallGuardLayer {
    me: Arc<str>,
    verifier: TokenVerifier,
}

impl CallGuardLayer {
    /// A guard for the service named `me` (`inventory`), verifying tokens with `verifier`.
    pub fn new(me: &str, verifier: TokenVerifier) -> Self {
        Self {
            me: Arc::from(me),
            verifier,
        }
    }
}

impl<S> Layer<S> for CallGuardLayer {
    type Service = CallGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallGuard {
            inner,
            me: self.me.clone(),
            verifier: self.verifier.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CallGuard<S> {
    inner: S,
    me: Arc<str>,
    verifier: TokenVerifier,
}

fn refusal(status: tonic::Status) -> http::Response<Body> {
    status.into_http()
}

impl<S> Service<http::Request<Body>> for CallGuard<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let access = CallGraph::platform()
            .rpc(request.uri().path())
            .map(|rpc| (rpc.access.clone(), rpc.method.clone()));
        let token = request
            .headers()
            .get(SERVICE_TOKEN_HEADER)
            .map(|v| v.to_str().map(|s| s.trim().to_string()));
        let verifier = self.verifier.clone();
        let me = self.me.clone();
        Box::pin(async move {
            let caller = match token {
                None => None,
                Some(Ok(token)) if !token.is_empty() => Some(verifier.verify_service(&token, &me).await),
                Some(_) => Some(Err(crate::ApiError::unauthenticated(
                    "x-service-token is not a token",
                ))),
            };
            match &access {
                Some((Access::Internal(allowed), method)) => {
                    let caller = match caller {
                        Some(Ok(claims)) => claims.sub.clone(),
                        Some(Err(error)) => return Ok(refusal(error.into())),
                        None => {
                            return Ok(refusal(
                                crate::ApiError::unauthenticated(format!(
                                    "{method} is internal: it needs a service credential \
                                     (`{SERVICE_TOKEN_HEADER}`); user and API-key tokens are never enough"
                                ))
                                .into(),
                            ));
                        }
                    };
                    if !allowed.contains(&caller) {
                        return Ok(refusal(
                            crate::ApiError::permission_denied(format!(
                                "the {caller} service may not call {method}"
                            ))
                            .into(),
                        ));
                    }
                    request.extensions_mut().insert(CallerService(caller));
                }
                // Public RPCs and the grant: a valid service token only tells who relays the
                // call (the gateway); a bad one is ignored, as it grants nothing here.
                _ => {
                    if let Some(Ok(claims)) = caller {
                        request.extensions_mut().insert(CallerService(claims.sub.clone()));
                    }
                }
            }
            let from_gateway = request
                .extensions()
                .get::<CallerService>()
                .is_some_and(|c| c.0 == GATEWAY);
            if !from_gateway {
                request.headers_mut().remove(CLIENT_ADDRESS_HEADER);
            }
            inner.call(request).await
        })
    }
}

/// The calling service of a request the guard let through, if a service made it.
pub fn caller_service<T>(request: &tonic::Request<T>) -> Option<&str> {
    request.extensions().get::<CallerService>().map(|c| c.0.as_str())
}

/// The end client's address: the gateway's `x-client-address` (the guard removes it from
/// everyone else's calls), else the connection's peer.
pub fn client_address<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .metadata()
        .get(CLIENT_ADDRESS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| ip.to_string())
        .or_else(|| request.remote_addr().map(|addr| addr.ip().to_string()))
}

// === the client side ===

/// This service's client credentials for identity's token grant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceCredentials {
    /// The name this service calls as (`orders`); the call graph names callers by it.
    #[serde(default)]
    pub client_id: String,
    /// Its secret, as registered with identity (`service_clients` there holds its SHA-256).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::config::serialize_optional_secret"
    )]
    pub client_secret: Option<SecretString>,
}

impl ServiceCredentials {
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: Some(SecretString::from(client_secret.into())),
        }
    }
}

/// A token held for one audience.
struct Held {
    /// The token, ready to send (parsed into a header value once, not per call).
    token: http::HeaderValue,
    /// Renew from here on (half its life).
    renew_at: Instant,
    /// Unusable from here on (a little before its `exp`, for clock skew and transit).
    expires_at: Instant,
}

struct TokensInner {
    credentials: ServiceCredentials,
    identity: ticketing_proto::ticketing::identity::v1::identity_service_client::IdentityServiceClient<
        tonic::transport::Channel,
    >,
    held: std::sync::Mutex<HashMap<String, Held>>,
    /// One fetch per audience at a time (when no usable token is held).
    fetching: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Audiences being renewed in the background.
    renewing: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The last failed fetch per audience, answered again until the time given.
    failed: std::sync::Mutex<HashMap<String, (Instant, tonic::Status)>>,
}

/// How long a failed fetch is answered from memory before identity is asked again.
const FETCH_BACKOFF: Duration = Duration::from_secs(1);

/// This service's tokens, one per audience, fetched from identity. A token is renewed in the
/// background from half its life on, while calls go on with it; only a call with no usable
/// token waits for identity, and after a failed fetch identity is left alone for a second.
/// Cheap to clone.
#[derive(Clone)]
pub struct ServiceTokens {
    inner: Arc<TokensInner>,
}

impl ServiceTokens {
    pub fn new(credentials: ServiceCredentials, identity: tonic::transport::Channel) -> Self {
        Self {
            inner: Arc::new(TokensInner {
                credentials,
                identity:
                    ticketing_proto::ticketing::identity::v1::identity_service_client::IdentityServiceClient::new(
                        identity,
                    ),
                held: Default::default(),
                fetching: Default::default(),
                renewing: Default::default(),
                failed: Default::default(),
            }),
        }
    }

    pub fn client_id(&self) -> &str {
        &self.inner.credentials.client_id
    }

    fn cached(&self, audience: &str, now: Instant) -> (Option<http::HeaderValue>, bool) {
        let held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.get(audience) {
            Some(h) if now < h.expires_at => (Some(h.token.clone()), now >= h.renew_at),
            _ => (None, true),
        }
    }

    /// A token for calls to `audience`, as the `x-service-token` value.
    pub async fn token(&self, audience: &str) -> Result<http::HeaderValue, tonic::Status> {
        let (usable, stale) = self.cached(audience, Instant::now());
        if let Some(token) = usable {
            if stale {
                self.renew_in_background(audience);
            }
            return Ok(token);
        }
        let turn = self
            .inner
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(audience.to_string())
            .or_default()
            .clone();
        let _turn = turn.lock().await;
        // Another call may have fetched it while this one waited.
        if let (Some(token), _) = self.cached(audience, Instant::now()) {
            return Ok(token);
        }
        if let Some((until, status)) = self
            .inner
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(audience)
            && Instant::now() < *until
        {
            return Err(status.clone());
        }
        self.fetch(audience).await
    }

    fn renew_in_background(&self, audience: &str) {
        let first = self
            .inner
            .renewing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(audience.to_string());
        if !first {
            return;
        }
        let (tokens, audience) = (self.clone(), audience.to_string());
        tokio::spawn(async move {
            if let Err(status) = tokens.fetch(&audience).await {
                tracing::warn!(%audience, error = %status.message(), "renewing a service token failed; the current one is used meanwhile");
            }
            tokens
                .inner
                .renewing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&audience);
        });
    }

    async fn fetch(&self, audience: &str) -> Result<http::HeaderValue, tonic::Status> {
        use ticketing_proto::ticketing::identity::v1::IssueServiceTokenRequest;
        let secret = self
            .inner
            .credentials
            .client_secret
            .as_ref()
            .ok_or_else(|| tonic::Status::unauthenticated("no client secret configured"))?;
        let mut request = tonic::Request::new(IssueServiceTokenRequest {
            client_id: self.inner.credentials.client_id.clone(),
            client_secret: secret.expose_secret().to_string(),
            audience: audience.to_string(),
        });
        request.set_timeout(Duration::from_secs(3));
        let started = Instant::now();
        let reply = match self.inner.identity.clone().issue_service_token(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => {
                self.inner
                    .failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(
                        audience.to_string(),
                        (Instant::now() + FETCH_BACKOFF, status.clone()),
                    );
                return Err(status);
            }
        };
        let life = Duration::from_secs(u64::try_from(reply.expires_in).unwrap_or(0));
        let token = http::HeaderValue::from_str(&reply.access_token)
            .map_err(|_| tonic::Status::internal("identity issued a token that is not a header value"))?;
        let margin = Duration::from_secs(10).min(life / 4);
        self.inner.held.lock().unwrap_or_else(|p| p.into_inner()).insert(
            audience.to_string(),
            Held {
                token: token.clone(),
                renew_at: started + life / 2,
                expires_at: started + life.saturating_sub(margin),
            },
        );
        Ok(token)
    }
}

/// Client side: sends this service's token for the peer with every call (public calls too, so
/// the gateway can vouch for the client address). Without a token an internal call is not
/// sent: it fails here, UNAVAILABLE while identity cannot be reached, UNAUTHENTICATED when
/// identity refuses this service's credentials.
#[derive(Clone)]
pub struct AttachServiceTokenLayer {
    tokens: Option<ServiceTokens>,
    audience: Arc<str>,
}

impl AttachServiceTokenLayer {
    pub fn new(tokens: Option<ServiceTokens>, audience: &str) -> Self {
        Self {
            tokens,
            audience: Arc::from(audience),
        }
    }
}

impl<S> Layer<S> for AttachServiceTokenLayer {
    type Service = AttachServiceToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttachServiceToken {
            inner,
            tokens: self.tokens.clone(),
            audience: self.audience.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AttachServiceToken<S> {
    inner: S,
    tokens: Option<ServiceTokens>,
    audience: Arc<str>,
}

impl<S> std::fmt::Debug for AttachServiceToken<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachServiceToken")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl<S> Service<http::Request<Body>> for AttachServiceToken<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(tokens) = self.tokens.clone() else {
            let future = inner.call(request);
            return Box::pin(async move { future.await.map_err(Into::into) });
        };
        let audience = self.audience.clone();
        Box::pin(async move {
            match tokens.token(&audience).await {
                Ok(token) => {
                    request.headers_mut().insert(SERVICE_TOKEN_HEADER, token);
                }
                // An internal RPC, or a call that vouches for a client's address (which is
                // believed only with the token), does not go out without it.
                Err(status)
                    if CallGraph::platform().needs_service_token(request.uri().path())
                        || request.headers().contains_key(CLIENT_ADDRESS_HEADER) =>
                {
                    use tonic::Code;
                    let refused = match status.code() {
                        Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument => {
                            tonic::Status::unauthenticated(format!(
                                "identity refused the {} service's credentials: {}",
                                tokens.client_id(),
                                status.message()
                            ))
                        }
                        _ => tonic::Status::unavailable(format!(
                            "no service token for {audience}: {}",
                            status.message()
                        )),
                    };
                    return Ok(refused.into_http());
                }
                Err(status) => {
                    tracing::debug!(%audience, error = %status.message(), "calling without a service token");
                }
            }
            inner.call(request).await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_shows_the_call_graph_the_protos_declare() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let shown = readme
            .split("<!-- call-graph:start -->\n")
            .nth(1)
            .and_then(|rest| rest.split("<!-- call-graph:end -->").next())
            .expect("the README's call-graph block");
        assert_eq!(
            shown,
            CallGraph::platform().markdown_table(),
            "update the README's call graph from the protos"
        );
    }

    #[test]
    fn service_names_come_from_the_package() {
        assert_eq!(
            service_of("ticketing.inventory.v1.InventoryService"),
            Some("inventory")
        );
        assert_eq!(service_of_package("ticketing.orders.v1"), Some("orders"));
        assert_eq!(service_of_package("grpc.health.v1"), None);
        assert_eq!(service_of_package("ticketing.common.v1.extra"), None);
    }

    #[test]
    fn the_protos_declare_who_calls_each_internal_rpc() {
        let graph = CallGraph::platform();
        let access = |path: &str| graph.rpc(path).map(|r| r.access.clone());
        let only = |name: &str| Some(Access::Internal([name.to_string()].into()));
        assert_eq!(
            access("/ticketing.inventory.v1.InventoryService/CommitHold"),
            only("orders")
        );
        assert_eq!(
            access("/ticketing.inventory.v1.InventoryService/ConfigureEvent"),
            only("catalog")
        );
        assert_eq!(
            access("/ticketing.payments.v1.PaymentsService/Charge"),
            only("orders")
        );
        assert_eq!(
            access("/ticketing.identity.v1.IdentityService/VerifyApiKey"),
            only("gateway")
        );
        assert_eq!(
            access("/ticketing.identity.v1.IdentityService/IssueServiceToken"),
            Some(Access::ClientCredentials)
        );
        assert_eq!(
            access("/ticketing.orders.v1.OrdersService/PayOrder"),
            Some(Access::Public)
        );
        assert!(graph.needs_service_token("/ticketing.inventory.v1.InventoryService/CloseEvent"));
        assert!(!graph.needs_service_token("/ticketing.identity.v1.IdentityService/GetJwks"));
        assert!(!graph.needs_service_token("/grpc.health.v1.Health/Check"));
        assert_eq!(
            graph.callees_of("orders"),
            ["catalog", "inventory", "payments"].map(String::from).into()
        );
        // Every internal RPC names at least one caller, and every caller is a known client.
        let clients: BTreeSet<String> = graph
            .services()
            .into_iter()
            .chain([GATEWAY.to_string(), "operator".to_string()])
            .collect();
        for rpc in graph.rpcs() {
            if let Access::Internal(callers) = &rpc.access {
                assert!(!callers.is_empty(), "{} declares no caller", rpc.path);
                for caller in callers {
                    assert!(
                        clients.contains(caller),
                        "{} names unknown caller {caller}",
                        rpc.path
                    );
                }
            }
        }
    }
}
