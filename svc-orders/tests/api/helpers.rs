use std::{net::SocketAddr, time::Duration};

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use ticketing_e2e::{Identity, connect};
pub use ticketing_e2e::{authed, reason};
use ticketing_platform::{
    auth::Role,
    config::{DatabaseConfig, RedisConfig, ServerConfig},
    db::PgPool,
};
use ticketing_proto::ticketing::{
    catalog::v1::{self as cat, catalog_service_client::CatalogServiceClient},
    common::v1::{Address, Money},
    inventory::v1::{self as inv, inventory_service_client::InventoryServiceClient},
    orders::v1::{self as pb, orders_service_client::OrdersServiceClient},
};
use ticketing_testkit::{ProxyMode, TcpProxy, TestBroker, TestDatabase, TestRedisPrefix};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use uuid::Uuid;

pub const CARD_OK: &str = "4242424242424242";
pub const CARD_DECLINED: &str = "4000000000000002";

pub struct Stack {
    pub identity: Identity,
    pub catalog: Channel,
    pub inventory: Channel,
    pub orders: Channel,
    /// Straight to payments, not through the proxy.
    pub payments: Channel,
    pub orders_pool: PgPool,
    pub payments_pool: PgPool,
    pub inventory_pool: PgPool,
    /// Between orders and payments.
    pub payments_proxy: TcpProxy,
    /// Between orders and RabbitMQ.
    pub broker_proxy: TcpProxy,
    _stops: Vec<oneshot::Sender<()>>,
    _dbs: Vec<TestDatabase>,
    _keys: TestRedisPrefix,
    _broker: TestBroker,
}

fn spawn<F>(
    run: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> F,
) -> oneshot::Sender<()>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(run(Box::pin(async move {
        let _ = stopped.await;
    })));
    stop
}

fn fast_server() -> ServerConfig {
    let mut server = ServerConfig::with_ports(0, 0);
    server.health_interval = Duration::from_millis(200);
    server
}

fn amqp_addr() -> SocketAddr {
    let url = ticketing_testkit::amqp_url();
    let rest = url.split('@').nth(1).unwrap_or("127.0.0.1:5672/%2f");
    let host_port = rest.split('/').next().unwrap_or("127.0.0.1:5672");
    host_port.parse().expect("broker address")
}

pub async fn stack() -> Stack {
    stack_with(|_| {}).await
}

pub async fn stack_with(adjust: impl FnOnce(&mut svc_orders::config::Config)) -> Stack {
    let identity = Identity::start().await;
    let broker = TestBroker::new();
    let keys = TestRedisPrefix::new("ord");

    let inv_db = TestDatabase::create("o_inventory").await.expect("db");
    let mut inv_config = svc_inventory::config::Config {
        server: fast_server(),
        database: DatabaseConfig::new(inv_db.url.clone()),
        redis: RedisConfig::new(ticketing_testkit::redis_url(), keys.prefix.clone()),
        messaging: broker.config.clone(),
        ..Default::default()
    };
    inv_config
        .peers
        .addresses
        .insert("identity".into(), identity.url());
    inv_config.holds.min_ttl = Duration::from_secs(1);
    inv_config.holds.sweep_interval = Duration::from_millis(100);
    let inventory = svc_inventory::Application::build(inv_config)
        .await
        .expect("inventory");
    let inventory_addr = inventory.grpc_addr();
    let inventory_pool = inventory.pool();
    let inv_stop = spawn(|s| inventory.run_until_stopped(s));

    let cat_db = TestDatabase::create("o_catalog").await.expect("db");
    let mut cat_config = svc_catalog::config::Config {
        server: fast_server(),
        database: DatabaseConfig::new(cat_db.url.clone()),
        ..Default::default()
    };
    cat_config
        .peers
        .addresses
        .insert("identity".into(), identity.url());
    cat_config
        .peers
        .addresses
        .insert("inventory".into(), format!("http://{inventory_addr}"));
    let catalog = svc_catalog::Application::build(cat_config)
        .await
        .expect("catalog");
    let catalog_addr = catalog.grpc_addr();
    let cat_stop = spawn(|s| catalog.run_until_stopped(s));

    let pay_db = TestDatabase::create("o_payments").await.expect("db");
    let mut pay_config = svc_payments::config::Config {
        server: fast_server(),
        database: DatabaseConfig::new(pay_db.url.clone()),
        messaging: broker.config.clone(),
        ..Default::default()
    };
    pay_config
        .peers
        .addresses
        .insert("identity".into(), identity.url());
    pay_config.test_provider.slow_delay = Duration::from_millis(500);
    let payments = svc_payments::Application::build(pay_config)
        .await
        .expect("payments");
    let payments_addr = payments.grpc_addr();
    let payments_pool = payments.pool();
    let pay_stop = spawn(|s| payments.run_until_stopped(s));
    let payments_proxy = TcpProxy::start(payments_addr).await.expect("proxy");

    let broker_proxy = TcpProxy::start(amqp_addr()).await.expect("proxy");
    let ord_db = TestDatabase::create("orders").await.expect("db");
    let mut config = svc_orders::config::Config {
        server: fast_server(),
        database: DatabaseConfig::new(ord_db.url.clone()),
        messaging: broker.via(&format!("amqp://guest:guest@{}/%2f", broker_proxy.addr())),
        ..Default::default()
    };
    let peers = &mut config.peers.addresses;
    peers.insert("identity".into(), identity.url());
    peers.insert("catalog".into(), format!("http://{catalog_addr}"));
    peers.insert("inventory".into(), format!("http://{inventory_addr}"));
    peers.insert("payments".into(), format!("http://{}", payments_proxy.addr()));
    config.checkout.sweep_interval = Duration::from_millis(100);
    adjust(&mut config);
    let orders = svc_orders::Application::build(config).await.expect("orders");
    let orders_addr = orders.grpc_addr();
    let orders_pool = orders.pool();
    let ord_stop = spawn(|s| orders.run_until_stopped(s));

    Stack {
        identity,
        catalog: connect(catalog_addr).await,
        inventory: connect(inventory_addr).await,
        orders: connect(orders_addr).await,
        payments: connect(payments_addr).await,
        orders_pool,
        payments_pool,
        inventory_pool,
        payments_proxy,
        broker_proxy,
        _stops: vec![ord_stop, pay_stop, cat_stop, inv_stop],
        _dbs: vec![ord_db, pay_db, cat_db, inv_db],
        _keys: keys,
        _broker: broker,
    }
}

pub fn ts(at: chrono::DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

/// A published event: rows A and B of 5 VIP seats at 90 EUR, and a floor of `floor` at 40 EUR.
pub struct Sale {
    pub org: Uuid,
    pub organizer: String,
    pub event_id: String,
    pub seats: Vec<String>,
    pub floor_tier: String,
}

impl Stack {
    pub fn orders(&self) -> OrdersServiceClient<Channel> {
        OrdersServiceClient::new(self.orders.clone())
    }

    pub fn inventory(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(self.inventory.clone())
    }

    pub async fn buyer(&self) -> (Uuid, String) {
        self.identity.user(&[Role::Customer]).await
    }

    pub async fn sale(&self, floor: i32, days_ahead: i64) -> Sale {
        let (org, organizer) = self.identity.organizer().await;
        let mut catalog = CatalogServiceClient::new(self.catalog.clone());
        let row = |label: &str, y: f64| cat::Row {
            label: label.into(),
            seats: (1..=5)
                .map(|n| cat::Seat {
                    label: format!("{label}{n}"),
                    category_code: "VIP".into(),
                    x: f64::from(n),
                    y,
                    ..Default::default()
                })
                .collect(),
        };
        let venue = catalog
            .create_venue(authed(
                &organizer,
                cat::CreateVenueRequest {
                    venue: Some(cat::Venue {
                        organization_id: org.to_string(),
                        name: "Hall".into(),
                        address: Some(Address {
                            city: "Berlin".into(),
                            country: "DE".into(),
                            ..Default::default()
                        }),
                        timezone: "Europe/Berlin".into(),
                        seating_chart: Some(cat::SeatingChart {
                            categories: vec![cat::SeatCategory {
                                code: "VIP".into(),
                                name: "VIP".into(),
                                color: "#c0392b".into(),
                            }],
                            sections: vec![cat::Section {
                                name: "Stalls".into(),
                                rows: vec![row("A", 1.0), row("B", 2.0)],
                                ..Default::default()
                            }],
                            ga_areas: vec![cat::GeneralAdmissionArea {
                                name: "Floor".into(),
                                capacity: floor,
                                ..Default::default()
                            }],
                        }),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("venue")
            .into_inner();
        let starts = Utc::now() + chrono::Duration::days(days_ahead);
        let event = catalog
            .create_event(authed(
                &organizer,
                cat::CreateEventRequest {
                    event: Some(cat::Event {
                        organization_id: org.to_string(),
                        venue_id: venue.id.clone(),
                        title: "Flash".into(),
                        description: "A sale".into(),
                        starts_at: Some(ts(starts)),
                        ends_at: Some(ts(starts + chrono::Duration::hours(3))),
                        category: cat::EventCategory::Concert as i32,
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("event")
            .into_inner();
        let chart = venue.seating_chart.clone().expect("chart");
        let tier = |name: &str, price: i64, target: cat::ticket_tier::Target| cat::CreateTicketTierRequest {
            event_id: event.id.clone(),
            tier: Some(cat::TicketTier {
                name: name.into(),
                price: Some(Money {
                    amount_minor: price,
                    currency: "EUR".into(),
                }),
                target: Some(target),
                per_order_limit: 10,
                ..Default::default()
            }),
        };
        catalog
            .create_ticket_tier(authed(
                &organizer,
                tier(
                    "VIP",
                    9000,
                    cat::ticket_tier::Target::SeatCategoryCode("VIP".into()),
                ),
            ))
            .await
            .expect("vip");
        let floor_tier = catalog
            .create_ticket_tier(authed(
                &organizer,
                tier(
                    "Floor",
                    4000,
                    cat::ticket_tier::Target::GaAreaId(chart.ga_areas[0].id.clone()),
                ),
            ))
            .await
            .expect("floor")
            .into_inner()
            .id;
        catalog
            .publish_event(authed(
                &organizer,
                cat::PublishEventRequest {
                    event_id: event.id.clone(),
                },
            ))
            .await
            .expect("published");
        Sale {
            org,
            organizer,
            event_id: event.id,
            seats: chart
                .sections
                .iter()
                .flat_map(|s| &s.rows)
                .flat_map(|r| &r.seats)
                .map(|s| s.id.clone())
                .collect(),
            floor_tier,
        }
    }

    pub async fn hold(
        &self,
        token: &str,
        sale: &Sale,
        seats: &[String],
        ttl_secs: Option<i64>,
    ) -> Result<inv::Hold, tonic::Status> {
        self.inventory()
            .hold_seats(authed(
                token,
                inv::HoldSeatsRequest {
                    event_id: sale.event_id.clone(),
                    seat_ids: seats.to_vec(),
                    ttl: ttl_secs.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn hold_floor(&self, token: &str, sale: &Sale, quantity: i32) -> inv::Hold {
        self.inventory()
            .hold_quantity(authed(
                token,
                inv::HoldQuantityRequest {
                    event_id: sale.event_id.clone(),
                    tier_id: sale.floor_tier.clone(),
                    quantity,
                    ttl: None,
                },
            ))
            .await
            .expect("floor hold")
            .into_inner()
    }

    pub async fn create_order(
        &self,
        token: &str,
        hold_id: &str,
        key: &str,
        code: &str,
    ) -> Result<pb::Order, tonic::Status> {
        self.orders()
            .create_order(authed(
                token,
                pb::CreateOrderRequest {
                    hold_id: hold_id.into(),
                    idempotency_key: key.into(),
                    discount_code: code.into(),
                    buyer_email: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn pay(&self, token: &str, order_id: &str, number: &str) -> Result<pb::Order, tonic::Status> {
        self.orders()
            .pay_order(authed(
                token,
                pb::PayOrderRequest {
                    order_id: order_id.into(),
                    card: Some(pb::Card {
                        number: number.into(),
                        exp_month: 12,
                        exp_year: 2099,
                        cvc: "123".into(),
                        holder_name: "A Buyer".into(),
                    }),
                    idempotency_key: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// hold -> order -> pay of `seats`, returning the paid order.
    pub async fn checkout(&self, token: &str, sale: &Sale, seats: &[String]) -> pb::Order {
        let hold = self.hold(token, sale, seats, None).await.expect("hold");
        let order = self
            .create_order(token, &hold.id, &Uuid::new_v4().to_string(), "")
            .await
            .expect("order");
        self.pay(token, &order.id, CARD_OK).await.expect("paid")
    }

    pub async fn seat_status(&self, sale: &Sale, seat: &str) -> i32 {
        let availability = self
            .inventory()
            .get_availability(inv::GetAvailabilityRequest {
                event_id: sale.event_id.clone(),
                counts_only: false,
            })
            .await
            .expect("availability")
            .into_inner();
        availability
            .seats
            .iter()
            .find(|s| s.seat_id == seat)
            .map(|s| s.status)
            .unwrap_or_default()
    }

    /// Waits up to 10 s for `check` to hold.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..200 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never happened: {what}");
    }

    /// (succeeded or refunded payments, their amounts, refunded amounts) in the payments database.
    pub async fn payment_totals(&self) -> (i64, i64, i64) {
        let mut conn = self.payments_pool.get().await.expect("payments db");
        let rows: Vec<(String, i64, i64)> = svc_payments::schema::payments::table
            .select((
                svc_payments::schema::payments::status,
                svc_payments::schema::payments::amount,
                svc_payments::schema::payments::refunded,
            ))
            .load(&mut conn)
            .await
            .expect("payments");
        let kept: Vec<&(String, i64, i64)> = rows.iter().filter(|r| r.0 != "failed").collect();
        (
            kept.len() as i64,
            kept.iter().map(|r| r.1).sum(),
            kept.iter().map(|r| r.2).sum(),
        )
    }

    pub async fn paid_total(&self) -> i64 {
        let mut conn = self.orders_pool.get().await.expect("orders db");
        let rows: Vec<i64> = svc_orders::schema::orders::table
            .filter(svc_orders::schema::orders::status.eq_any(["paid", "partially_refunded", "refunded"]))
            .select(svc_orders::schema::orders::total)
            .load(&mut conn)
            .await
            .expect("orders");
        rows.iter().sum()
    }

    pub fn cut_payments(&self, cut: bool) {
        self.payments_proxy
            .set_mode(if cut { ProxyMode::Refuse } else { ProxyMode::Pass });
        if cut {
            self.payments_proxy.cut_connections();
        }
    }
}
