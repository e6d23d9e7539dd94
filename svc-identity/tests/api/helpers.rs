use std::{net::SocketAddr, time::Duration};
use ticketing_platform::server::Served;

use secrecy::SecretString;
use svc_identity::{Application, config::Config, store};
use ticketing_platform::{auth::Role, db::PgPool};
use ticketing_proto::ticketing::identity::v1::{self as pb, identity_service_client::IdentityServiceClient};
use ticketing_testkit::{EventTap, TestBroker, TestDatabase, TestRedisPrefix, unique};
use tokio::sync::oneshot;
use tonic::{Code, Request, Status, transport::Channel};
use uuid::Uuid;

pub const PASSWORD: &str = "a long enough passphrase";

pub struct TestApp {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub pool: PgPool,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Dropped last: the database and keys go after the service has stopped.
    guards: Guards,
}

/// What a test owns outside the process: its database, its Redis keys and its broker names,
/// and the secrets of the service clients its identity knows.
pub struct Guards {
    db: TestDatabase,
    _redis: TestRedisPrefix,
    broker: TestBroker,
    secrets: std::collections::BTreeMap<String, String>,
}

/// The service clients a test identity knows: the gateway (client addresses, API keys), an
/// operator (key rotation) and orders (which may call identity's public RPCs only).
pub const SERVICE_CLIENTS: [&str; 3] = ["gateway", "operator", "orders"];

impl Guards {
    /// Listens to what the service publishes (start it before the action that publishes).
    pub async fn tap(&self, binding: &str) -> EventTap {
        self.broker.tap(binding).await.expect("broker tap")
    }

    /// The test database reached through another address (a fault-injecting proxy).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        self.db.url_via(addr)
    }
}

/// A test configuration: its own database and key prefix, ports chosen by the OS, cheap hashing.
pub async fn test_config() -> (Config, Guards) {
    ticketing_platform::telemetry::init_for_tests();
    let db = TestDatabase::create("identity").await.expect("test database");
    let redis = TestRedisPrefix::new("identity");
    let broker = TestBroker::new();
    let (mut config, secrets) =
        ticketing_e2e::services::identity_config(&db.url, &redis.prefix, &broker, &SERVICE_CLIENTS);
    config.server.shutdown_grace = Duration::from_secs(2);
    config.database.pool_size = 8;
    (
        config,
        Guards {
            db,
            _redis: redis,
            broker,
            secrets,
        },
    )
}

pub async fn spawn_app() -> TestApp {
    let (config, db) = test_config().await;
    spawn_with(config, db).await
}

pub async fn spawn_with(config: Config, guards: Guards) -> TestApp {
    let app = Application::build(config).await.expect("application builds");
    let addr = app.grpc_addr();
    let admin_addr = app.admin_addr();
    let pool = app.pool();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        admin_addr,
        pool,
        shutdown: Some(tx),
        task: Some(task),
        guards,
    }
}

impl TestApp {
    pub async fn tap(&self, binding: &str) -> EventTap {
        self.guards.tap(binding).await
    }

    /// Triggers a graceful shutdown and waits for the service to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Bootstrap config for the admin of one test.
pub fn bootstrap(email: &str) -> svc_identity::config::BootstrapAdmin {
    svc_identity::config::BootstrapAdmin {
        email: email.into(),
        password: SecretString::from(PASSWORD.to_string()),
    }
}

impl TestApp {
    /// The secret of one of [`SERVICE_CLIENTS`].
    pub fn service_secret(&self, client: &str) -> String {
        self.guards.secrets.get(client).cloned().expect("a known client")
    }

    /// A service token of `client` for identity, from the token grant.
    pub async fn service_token(&self, client: &str) -> String {
        self.client()
            .await
            .issue_service_token(pb::IssueServiceTokenRequest {
                client_id: client.into(),
                client_secret: self.service_secret(client),
                audience: "identity".into(),
            })
            .await
            .expect("service token")
            .into_inner()
            .access_token
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("connects")
    }

    pub async fn client(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(self.channel().await)
    }

    pub async fn register(&self, email: &str) -> pb::User {
        self.client()
            .await
            .register(pb::RegisterRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
            })
            .await
            .expect("registers")
            .into_inner()
            .user
            .expect("user")
    }

    pub async fn login(&self, email: &str) -> pb::TokenResponse {
        self.client()
            .await
            .login(pb::LoginRequest {
                email: email.into(),
                password: PASSWORD.into(),
            })
            .await
            .expect("logs in")
            .into_inner()
    }

    /// A registered user holding `roles` (granted straight in the database), logged in.
    pub async fn user(&self, roles: &[Role]) -> (Uuid, String) {
        let email = format!("{}@example.com", unique("u"));
        let user = self.register(&email).await;
        let id = Uuid::parse_str(&user.id).expect("uuid");
        let mut conn = self.pool.get().await.expect("conn");
        for role in roles {
            store::grant_role(&mut conn, id, *role).await.expect("grant");
        }
        (id, self.login(&email).await.access_token)
    }

    /// Creates an organization as `token`'s user (who must be an organizer) and returns its id.
    pub async fn create_org(&self, token: &str, slug: &str) -> String {
        self.client()
            .await
            .create_organization(authed(
                token,
                pb::CreateOrganizationRequest {
                    organization: Some(pb::Organization {
                        slug: slug.into(),
                        display_name: slug.into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("organization created")
            .into_inner()
            .id
    }

    pub async fn user_count(&self) -> i64 {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let mut conn = self.pool.get().await.expect("conn");
        svc_identity::schema::users::table
            .count()
            .get_result(&mut conn)
            .await
            .expect("count")
    }
}

pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// `message` with `service_token` as the caller's service credential.
pub fn as_service<T>(service_token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        ticketing_platform::service_auth::SERVICE_TOKEN_HEADER,
        service_token.parse().expect("ascii token"),
    );
    request
}

pub fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The field names of a BadRequest detail.
pub fn violated_fields(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|f| f.field.clone()).collect())
        .unwrap_or_default()
}
