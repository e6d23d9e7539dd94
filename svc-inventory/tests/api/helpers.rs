use std::time::Duration;

use svc_inventory::config::Config;
use ticketing_platform::{
    auth::Role,
    config::{DatabaseConfig, RedisConfig, ServerConfig},
};
use ticketing_proto::ticketing::{
    identity::v1::{self as idpb, identity_service_client::IdentityServiceClient},
    inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient},
};
use ticketing_testkit::{TestDatabase, TestRedisPrefix, unique};
use tokio::sync::oneshot;
use tonic::{Request, transport::Channel};
use uuid::Uuid;

pub const PASSWORD: &str = "a long enough passphrase";

struct Running {
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub struct Stack {
    /// The configuration of the running replica, to start more that share its stores.
    replica_config: Config,
    pub identity: Channel,
    pub channel: Channel,
    pub pool: ticketing_platform::db::PgPool,
    pub redis: TestRedisPrefix,
    _identity_redis: TestRedisPrefix,
    identity_pool: ticketing_platform::db::PgPool,
    _running: Vec<Running>,
    _dbs: Vec<TestDatabase>,
}

async fn connect(addr: std::net::SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connects")
}

pub async fn stack() -> Stack {
    stack_with(|_| {}).await
}

pub async fn stack_with(adjust: impl FnOnce(&mut Config)) -> Stack {
    ticketing_platform::telemetry::init_for_tests();
    // identity, for real tokens
    let id_db = TestDatabase::create("inv_identity").await.expect("db");
    let identity_redis = TestRedisPrefix::new("idn");
    let mut id_config = svc_identity::config::Config {
        server: ServerConfig::with_ports(0, 0),
        database: DatabaseConfig::new(id_db.url.clone()),
        redis: RedisConfig::new(ticketing_testkit::redis_url(), identity_redis.prefix.clone()),
        ..Default::default()
    };
    id_config.password.memory_kib = 8 * 1024;
    id_config.password.iterations = 1;
    let identity = svc_identity::Application::build(id_config)
        .await
        .expect("identity");
    let identity_addr = identity.grpc_addr();
    let identity_pool = identity.pool();
    let (id_stop, id_rx) = oneshot::channel::<()>();
    tokio::spawn(identity.run_until_stopped(async move {
        let _ = id_rx.await;
    }));

    let db = TestDatabase::create("inventory").await.expect("db");
    let redis = TestRedisPrefix::new("inv");
    let mut config = Config::default();
    let mut server = ServerConfig::with_ports(0, 0);
    server.health_interval = Duration::from_millis(200);
    config.server = server;
    config.database = DatabaseConfig::new(db.url.clone());
    config.redis = RedisConfig::new(ticketing_testkit::redis_url(), redis.prefix.clone());
    config
        .peers
        .addresses
        .insert("identity".into(), format!("http://{identity_addr}"));
    config.holds.min_ttl = Duration::from_secs(1);
    config.holds.sweep_interval = Duration::from_millis(100);
    config.holds.heartbeat_interval = Duration::from_secs(1);
    adjust(&mut config);
    let replica_config = config.clone();
    let app = svc_inventory::Application::build(config)
        .await
        .expect("inventory");
    let addr = app.grpc_addr();
    let pool = app.pool();
    let (stop, rx) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    Stack {
        replica_config,
        identity: connect(identity_addr).await,
        channel: connect(addr).await,
        pool,
        redis,
        _identity_redis: identity_redis,
        identity_pool,
        _running: vec![Running { stop: Some(stop) }, Running { stop: Some(id_stop) }],
        _dbs: vec![db, id_db],
    }
}

impl Stack {
    /// Starts another inventory replica on the same database and Redis; returns a channel to it.
    pub async fn replica(&mut self) -> Channel {
        let mut config = self.replica_config.clone();
        config.server = ServerConfig::with_ports(0, 0);
        let app = svc_inventory::Application::build(config).await.expect("replica");
        let addr = app.grpc_addr();
        let (stop, rx) = oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        self._running.push(Running { stop: Some(stop) });
        connect(addr).await
    }

    pub fn client(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(self.channel.clone())
    }

    /// A new user with `roles`, logged in: (id, access token).
    pub async fn user(&self, roles: &[Role]) -> (Uuid, String) {
        let mut identity = IdentityServiceClient::new(self.identity.clone());
        let email = format!("{}@example.com", unique("u"));
        let user = identity
            .register(idpb::RegisterRequest {
                email: email.clone(),
                password: PASSWORD.into(),
                display_name: String::new(),
            })
            .await
            .expect("register")
            .into_inner()
            .user
            .expect("user");
        let id = Uuid::parse_str(&user.id).expect("uuid");
        let mut conn = self.identity_pool.get().await.expect("conn");
        for role in roles {
            svc_identity::store::grant_role(&mut conn, id, *role)
                .await
                .expect("grant");
        }
        let token = identity
            .login(idpb::LoginRequest {
                email,
                password: PASSWORD.into(),
            })
            .await
            .expect("login")
            .into_inner()
            .access_token;
        (id, token)
    }

    /// An organizer with an organization: (org id, token).
    pub async fn organizer(&self) -> (Uuid, String) {
        let (_, token) = self.user(&[Role::Organizer]).await;
        let mut identity = IdentityServiceClient::new(self.identity.clone());
        let org = identity
            .create_organization(authed(
                &token,
                idpb::CreateOrganizationRequest {
                    organization: Some(idpb::Organization {
                        slug: unique("org").replace('_', "-"),
                        display_name: "Org".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("org")
            .into_inner()
            .id;
        // The membership is in tokens issued from now on.
        let me = identity
            .get_me(authed(&token, idpb::GetMeRequest {}))
            .await
            .expect("me")
            .into_inner();
        let email = me.email;
        let token = identity
            .login(idpb::LoginRequest {
                email,
                password: PASSWORD.into(),
            })
            .await
            .expect("login")
            .into_inner()
            .access_token;
        (Uuid::parse_str(&org).expect("uuid"), token)
    }

    /// Configures an event with `seats` seats in tier "standard" (ids s000..), optionally a GA
    /// tier "floor" of `ga` places. Returns the event id.
    pub async fn event(&self, org: Uuid, token: &str, seats: usize, ga: i32, limit: i32) -> Uuid {
        let event = Uuid::now_v7();
        let mut request = pb::ConfigureEventRequest {
            event_id: event.to_string(),
            version: 1,
            organization_id: org.to_string(),
            per_customer_limit: limit,
            seats: (0..seats)
                .map(|i| pb::SeatAssignment {
                    seat_id: seat(i),
                    tier_id: "standard".into(),
                })
                .collect(),
            quotas: vec![],
        };
        if ga > 0 {
            request.quotas.push(pb::QuotaAssignment {
                tier_id: "floor".into(),
                ga_area_id: "ga-floor".into(),
                capacity: ga,
            });
        }
        self.client()
            .configure_event(authed(token, request))
            .await
            .expect("configured");
        event
    }

    pub async fn hold_seats(
        &self,
        token: &str,
        event: Uuid,
        seats: &[String],
    ) -> Result<pb::Hold, tonic::Status> {
        self.client()
            .hold_seats(authed(
                token,
                pb::HoldSeatsRequest {
                    event_id: event.to_string(),
                    seat_ids: seats.to_vec(),
                    ttl: None,
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn availability(&self, event: Uuid) -> pb::Availability {
        self.client()
            .get_availability(pb::GetAvailabilityRequest {
                event_id: event.to_string(),
                counts_only: false,
            })
            .await
            .expect("availability")
            .into_inner()
    }

    /// Deletes every Redis key of this deployment: what a Redis restart or FLUSHALL does to it.
    pub async fn flush_redis(&self) {
        let client = redis::Client::open(ticketing_testkit::redis_url()).expect("client");
        let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.redis.prefix))
            .query_async(&mut conn)
            .await
            .expect("keys");
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("del");
        }
    }
}

pub fn seat(i: usize) -> String {
    format!("s{i:03}")
}

pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

pub fn seat_states(availability: &pb::Availability) -> std::collections::HashMap<String, i32> {
    availability
        .seats
        .iter()
        .map(|s| (s.seat_id.clone(), s.status))
        .collect()
}
