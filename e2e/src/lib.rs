//! Support for tests that start several services in-process: a real identity (with its own
//! database and Redis keys) that hands out users, organizers and API keys with real tokens, and
//! the small helpers every such test uses.

mod platform;
pub mod services;

use std::net::SocketAddr;
use ticketing_platform::server::Served;

pub use platform::{Addrs, Platform};

use ticketing_platform::{
    auth::Role,
    db::PgPool,
    service_auth::{SERVICE_TOKEN_HEADER, ServiceCredentials},
};
use ticketing_proto::ticketing::identity::v1::{self as pb, identity_service_client::IdentityServiceClient};
use ticketing_testkit::{TestBroker, TestDatabase, TestRedisPrefix, unique};
use tokio::sync::oneshot;
use tonic::{Request, transport::Channel};
use uuid::Uuid;

/// Every test user's password.
pub const PASSWORD: &str = "a long enough passphrase";

/// A channel to a service listening on `addr`.
pub async fn connect(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connects")
}

/// The body of `GET <path>` on a plain HTTP server (an admin port), over HTTP/1.0.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("admin port");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("reply");
    reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// A request carrying `token` as its bearer token; an empty token is an anonymous call.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if !token.is_empty() {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii token"),
        );
    }
    request
}

/// A request carrying `service_token` as the calling service's credential (`x-service-token`).
pub fn as_service<T>(service_token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(SERVICE_TOKEN_HEADER, service_token.parse().expect("ascii token"));
    request
}

/// The user (or API key) an access token speaks for, read from its claims without checking
/// the signature: tests use it to name a buyer where a service call needs the id.
pub fn subject_of(token: &str) -> Uuid {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url claims");
    let claims: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON claims");
    Uuid::parse_str(claims["sub"].as_str().expect("sub")).expect("a uuid subject")
}

/// The service clients every test identity knows (each with a secret of its own): the services,
/// the gateway and an operator.
pub const SERVICE_CLIENTS: [&str; 9] = [
    "identity",
    "catalog",
    "inventory",
    "orders",
    "payments",
    "notify",
    "reports",
    "gateway",
    "operator",
];

/// The `ErrorInfo` reason of a failed call ("" when it has none).
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// The fields named by a status's `BadRequest` violations (every one, where the message names
/// only the first few).
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// A running identity service, stopped and cleaned up when dropped.
pub struct Identity {
    pub addr: SocketAddr,
    pub channel: Channel,
    pool: PgPool,
    /// Client id to secret, for every client in [`SERVICE_CLIENTS`].
    secrets: std::collections::BTreeMap<String, String>,
    _stop: oneshot::Sender<()>,
    _db: TestDatabase,
    _keys: TestRedisPrefix,
    _broker: TestBroker,
}

impl Identity {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts identity with its test configuration changed by `adjust` first.
    pub async fn start_with(adjust: impl FnOnce(&mut svc_identity::config::Config)) -> Self {
        ticketing_platform::telemetry::init_for_tests();
        let db = TestDatabase::create("identity").await.expect("identity database");
        let keys = TestRedisPrefix::new("idn");
        let broker = TestBroker::new();
        let (mut config, secrets) =
            services::identity_config(&db.url, &keys.prefix, &broker, &SERVICE_CLIENTS);
        adjust(&mut config);
        let app = svc_identity::Application::build(config)
            .await
            .expect("identity starts");
        let addr = app.grpc_addr();
        let pool = app.pool();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            channel: connect(addr).await,
            pool,
            secrets,
            _stop: stop,
            _db: db,
            _keys: keys,
            _broker: broker,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(self.channel.clone())
    }

    /// The credentials `client` calls its peers with (set them as `peers.credentials`).
    pub fn credentials(&self, client: &str) -> ServiceCredentials {
        let secret = self.secrets.get(client).expect("a known service client");
        ServiceCredentials::new(client, secret.clone())
    }

    /// A service token of `client` for calls to `audience`, as the token grant hands it out.
    pub async fn service_token(&self, client: &str, audience: &str) -> String {
        let secret = self.secrets.get(client).expect("a known service client");
        self.client()
            .issue_service_token(pb::IssueServiceTokenRequest {
                client_id: client.into(),
                client_secret: secret.clone(),
                audience: audience.into(),
            })
            .await
            .expect("service token")
            .into_inner()
            .access_token
    }

    pub async fn login(&self, email: &str) -> String {
        self.client()
            .login(pb::LoginRequest {
                email: email.into(),
                password: PASSWORD.into(),
            })
            .await
            .expect("logs in")
            .into_inner()
            .access_token
    }

    /// A new user holding `roles` (granted in the database), logged in: (id, access token).
    pub async fn user(&self, roles: &[Role]) -> (Uuid, String) {
        let email = format!("{}@example.com", unique("u"));
        let user = self
            .client()
            .register(pb::RegisterRequest {
                email: email.clone(),
                password: PASSWORD.into(),
                display_name: String::new(),
            })
            .await
            .expect("registers")
            .into_inner()
            .user
            .expect("user");
        let id = Uuid::parse_str(&user.id).expect("uuid");
        let mut conn = self.pool.get().await.expect("identity connection");
        for role in roles {
            svc_identity::store::grant_role(&mut conn, id, *role)
                .await
                .expect("grant");
        }
        (id, self.login(&email).await)
    }

    /// An organizer who owns a new organization: (organization id, a token carrying the membership).
    pub async fn organizer(&self) -> (Uuid, String) {
        let (_, token) = self.user(&[Role::Organizer]).await;
        let org = self
            .client()
            .create_organization(authed(
                &token,
                pb::CreateOrganizationRequest {
                    organization: Some(pb::Organization {
                        slug: unique("org").replace('_', "-"),
                        display_name: "Org".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("organization")
            .into_inner()
            .id;
        let email = self
            .client()
            .get_me(authed(&token, pb::GetMeRequest {}))
            .await
            .expect("me")
            .into_inner()
            .email;
        (Uuid::parse_str(&org).expect("uuid"), self.login(&email).await)
    }

    /// The access token of a new API key of `org` with `scopes`, as the gateway would get it.
    pub async fn api_key(&self, org: Uuid, owner: &str, scopes: &[pb::ApiKeyScope]) -> String {
        let secret = self.api_key_secret(org, owner, scopes).await;
        let gateway = self.service_token("gateway", "identity").await;
        self.client()
            .verify_api_key(as_service(&gateway, pb::VerifyApiKeyRequest { secret }))
            .await
            .expect("verifies")
            .into_inner()
            .access_token
    }

    /// The secret of a new API key of `org` with `scopes` (what a partner sends as X-API-Key).
    pub async fn api_key_secret(&self, org: Uuid, owner: &str, scopes: &[pb::ApiKeyScope]) -> String {
        self.client()
            .create_api_key(authed(
                owner,
                pb::CreateApiKeyRequest {
                    organization_id: org.to_string(),
                    name: "partner".into(),
                    scopes: scopes.iter().map(|s| *s as i32).collect(),
                    expires_at: None,
                },
            ))
            .await
            .expect("API key")
            .into_inner()
            .secret
    }
}
