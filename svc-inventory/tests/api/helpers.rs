use std::time::Duration;
use ticketing_platform::server::Served;

use svc_inventory::config::Config;
use ticketing_e2e::{
    Identity, connect,
    services::{self, Running, Wiring},
};
pub use ticketing_e2e::{as_service, authed, reason, subject_of};
use ticketing_platform::{auth::Role, config::ServerConfig};
use ticketing_proto::ticketing::inventory::v1::{
    self as pb, inventory_service_client::InventoryServiceClient,
};
use ticketing_testkit::{TestBroker, TestRedisPrefix};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use uuid::Uuid;

pub struct Stack {
    pub identity: Identity,
    /// The running replica's own handle, for what no RPC does (returning sold places, as the
    /// order events make it).
    pub inventory: svc_inventory::inventory::Inventory,
    /// Service tokens for calls to inventory: of orders (commits, returns) and of catalog
    /// (configuring and closing events), the only callers of those RPCs.
    pub orders_token: String,
    pub catalog_token: String,
    pub channel: Channel,
    pub pool: ticketing_platform::db::PgPool,
    pub redis: TestRedisPrefix,
    /// Replicas started later, on the same database and Redis.
    replicas: Vec<oneshot::Sender<()>>,
    running: Running<Config>,
    broker: TestBroker,
}

pub async fn stack() -> Stack {
    stack_with(|_| {}).await
}

pub async fn stack_with(adjust: impl FnOnce(&mut Config)) -> Stack {
    let identity = Identity::start().await;
    let redis = TestRedisPrefix::new("inv");
    let broker = TestBroker::new();
    let wiring = Wiring {
        identity: &identity,
        broker: &broker,
        redis_prefix: &redis.prefix,
    };
    let (running, inventory) = services::inventory(&wiring, |config| {
        config.holds.heartbeat_interval = Duration::from_secs(1);
        adjust(config);
    })
    .await;
    let orders_token = identity.service_token("orders", "inventory").await;
    let catalog_token = identity.service_token("catalog", "inventory").await;
    Stack {
        identity,
        inventory,
        orders_token,
        catalog_token,
        channel: running.channel.clone(),
        pool: running.pool.clone(),
        redis,
        replicas: Vec::new(),
        running,
        broker,
    }
}

impl Stack {
    /// The URL of this stack's inventory database (for a test's own connection).
    pub fn database_url(&self) -> String {
        self.running.database.url.clone()
    }

    /// Starts another inventory replica on the same database and Redis; returns a channel to it.
    pub async fn replica(&mut self) -> Channel {
        let mut config = self.running.config.clone();
        config.server = ServerConfig::with_ports(0, 0);
        let app = svc_inventory::Application::build(config).await.expect("replica");
        let addr = app.grpc_addr();
        self.replicas
            .push(services::run_until_dropped(|s| app.run_until_stopped(s)));
        connect(addr).await
    }

    /// The events this stack's services publish under `binding` (e.g. `waitlist.*`).
    pub async fn tap(&self, binding: &str) -> ticketing_testkit::EventTap {
        self.broker.tap(binding).await.expect("broker tap")
    }

    pub async fn user(&self, roles: &[Role]) -> (Uuid, String) {
        self.identity.user(roles).await
    }

    pub async fn organizer(&self) -> (Uuid, String) {
        self.identity.organizer().await
    }

    pub fn client(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(self.channel.clone())
    }

    /// `message` as orders sends it.
    pub fn as_orders<T>(&self, message: T) -> tonic::Request<T> {
        as_service(&self.orders_token, message)
    }

    /// `message` as catalog sends it.
    pub fn as_catalog<T>(&self, message: T) -> tonic::Request<T> {
        as_service(&self.catalog_token, message)
    }

    /// Configures an event with `seats` seats in tier "standard" (ids s000..), optionally a GA
    /// tier "floor" of `ga` places, as catalog does when `org` publishes it. Returns its id.
    pub async fn event(&self, org: Uuid, seats: usize, ga: i32, limit: i32) -> Uuid {
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
            .configure_event(self.as_catalog(request))
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

    /// Commits a hold for an order of the buyer whose token this is, as orders does.
    pub async fn commit(
        &self,
        buyer_token: &str,
        hold_id: impl Into<String>,
        order_id: impl Into<String>,
    ) -> Result<tonic::Response<pb::CommitHoldResponse>, tonic::Status> {
        let request = pb::CommitHoldRequest {
            hold_id: hold_id.into(),
            order_id: order_id.into(),
            customer_id: subject_of(buyer_token).to_string(),
        };
        self.client().commit_hold(self.as_orders(request)).await
    }

    /// Holds `quantity` places of `tier`; `ttl_secs` None is the default TTL.
    pub async fn hold_quantity(
        &self,
        token: &str,
        event: Uuid,
        tier: &str,
        quantity: i32,
        ttl_secs: Option<i64>,
    ) -> Result<tonic::Response<pb::Hold>, tonic::Status> {
        let request = pb::HoldQuantityRequest {
            event_id: event.to_string(),
            tier_id: tier.into(),
            quantity,
            ttl: ttl_secs.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
        };
        self.client().hold_quantity(authed(token, request)).await
    }

    pub async fn availability(&self, event: Uuid) -> pb::Availability {
        self.availability_of(event, false).await
    }

    /// Counts per tier only, without every seat's status.
    pub async fn counts(&self, event: Uuid) -> pb::Availability {
        self.availability_of(event, true).await
    }

    async fn availability_of(&self, event: Uuid, counts_only: bool) -> pb::Availability {
        self.client()
            .get_availability(pb::GetAvailabilityRequest {
                event_id: event.to_string(),
                counts_only,
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

pub fn seat_states(availability: &pb::Availability) -> std::collections::HashMap<String, i32> {
    availability
        .seats
        .iter()
        .map(|s| (s.seat_id.clone(), s.status))
        .collect()
}
