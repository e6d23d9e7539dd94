use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use ticketing_e2e::Platform;
pub use ticketing_e2e::{as_service, authed, reason};
use ticketing_platform::auth::Role;
use ticketing_proto::ticketing::{
    catalog::v1::{self as cat, catalog_service_client::CatalogServiceClient},
    common::v1::{Address, Money},
    inventory::v1::{self as inv, inventory_service_client::InventoryServiceClient},
    orders::v1::{self as pb, orders_service_client::OrdersServiceClient},
    payments::v1::{self as payments, payments_service_client::PaymentsServiceClient},
};
use ticketing_testkit::ProxyMode;
use tonic::transport::Channel;
use uuid::Uuid;

pub const CARD_OK: &str = "4242424242424242";
pub const CARD_DECLINED: &str = "4000000000000002";

/// The platform, with the helpers these tests share (and an admin's token, made when first
/// needed, for reading what payments holds).
pub struct Stack(pub Platform, tokio::sync::OnceCell<String>);

impl std::ops::Deref for Stack {
    type Target = Platform;
    fn deref(&self) -> &Platform {
        &self.0
    }
}

/// A charge of `amount_minor` EUR with a test card that succeeds, keyed as orders keys attempts.
pub fn charge_request(
    order_id: &str,
    buyer: Uuid,
    amount_minor: i64,
    attempt: i32,
) -> payments::ChargeRequest {
    payments::ChargeRequest {
        idempotency_key: format!("order:{order_id}:attempt:{attempt}"),
        order_id: order_id.into(),
        customer_id: buyer.to_string(),
        amount: Some(Money {
            amount_minor,
            currency: "EUR".into(),
        }),
        card_number: CARD_OK.into(),
        exp_month: 12,
        exp_year: 2099,
        cvc: "123".into(),
        ..Default::default()
    }
}

pub async fn stack() -> Stack {
    Stack(Platform::start().await, tokio::sync::OnceCell::new())
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
    /// Takes an order's charge lease on its first attempt, as PayOrder does before it reserves
    /// and charges: for tests that play a PayOrder that died half-way.
    pub async fn take_lease_as_pay_order_would(&self, order_id: &str) {
        self.take_lease_for(order_id, Duration::from_secs(2)).await;
    }

    /// [`Self::take_lease_as_pay_order_would`], with a lease of `lease`.
    pub async fn take_lease_for(&self, order_id: &str, lease: Duration) {
        use svc_orders::schema::orders;
        let id = Uuid::parse_str(order_id).expect("order id");
        let until = Utc::now() + chrono::Duration::from_std(lease).expect("lease");
        let mut conn = self.orders_pool.get().await.expect("db");
        diesel::update(orders::table.find(id))
            .set((
                orders::payment_attempt.eq(1),
                orders::attempt_open.eq(true),
                orders::charging_until.eq(Some(until)),
            ))
            .execute(&mut conn)
            .await
            .expect("lease");
    }

    /// The payment of `order`, as its buyer sees it.
    pub async fn payment_of(&self, buyer_token: &str, order_id: &str) -> payments::Payment {
        PaymentsServiceClient::new(self.payments.clone())
            .list_payments(authed(
                buyer_token,
                payments::ListPaymentsRequest {
                    order_id: order_id.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("payments")
            .into_inner()
            .payments
            .remove(0)
    }

    /// Commits the order's hold as orders does (its credential, the buyer named).
    pub async fn commit_as_orders(&self, hold_id: &str, order_id: &str, buyer: Uuid) {
        let token = self.identity.service_token("orders", "inventory").await;
        self.inventory()
            .commit_hold(as_service(
                &token,
                inv::CommitHoldRequest {
                    hold_id: hold_id.into(),
                    order_id: order_id.into(),
                    customer_id: buyer.to_string(),
                },
            ))
            .await
            .expect("committed");
    }

    /// Charges `amount_minor` EUR for the order's attempt `attempt` with orders' credential, as
    /// a PayOrder would (or a caller holding orders' secret).
    pub async fn charge_as_orders(
        &self,
        order_id: &str,
        buyer: Uuid,
        amount_minor: i64,
        attempt: i32,
    ) -> Result<payments::Payment, tonic::Status> {
        let token = self.identity.service_token("orders", "payments").await;
        PaymentsServiceClient::new(self.payments.clone())
            .charge(as_service(
                &token,
                charge_request(order_id, buyer, amount_minor, attempt),
            ))
            .await
            .map(|r| r.into_inner())
    }

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
    /// The organizer refunds `order_id` in full.
    pub async fn refund_in_full(&self, sale: &Sale, order_id: &str) -> pb::Order {
        self.orders()
            .refund_order(authed(
                &sale.organizer,
                pb::RefundOrderRequest {
                    order_id: order_id.into(),
                    idempotency_key: Uuid::new_v4().to_string(),
                    ..Default::default()
                },
            ))
            .await
            .expect("refund")
            .into_inner()
    }

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

    /// Every payment on the platform (of `order_id` only, unless empty), as an admin lists them.
    pub async fn payments_listed(&self, order_id: &str) -> Vec<payments::Payment> {
        let admin = self
            .1
            .get_or_init(|| async { self.identity.user(&[Role::Admin]).await.1 })
            .await;
        let mut client = PaymentsServiceClient::new(self.payments.clone());
        let (mut listed, mut page_token) = (Vec::new(), String::new());
        loop {
            let page = client
                .list_payments(authed(
                    admin,
                    payments::ListPaymentsRequest {
                        page_size: 100,
                        page_token,
                        order_id: order_id.into(),
                    },
                ))
                .await
                .expect("payments")
                .into_inner();
            listed.extend(page.payments);
            if page.next_page_token.is_empty() {
                return listed;
            }
            page_token = page.next_page_token;
        }
    }

    /// (payments not failed, their amounts, refunded amounts) across the platform.
    pub async fn payment_totals(&self) -> (i64, i64, i64) {
        let amount = |m: &Option<Money>| m.as_ref().map_or(0, |m| m.amount_minor);
        let kept: Vec<payments::Payment> = self
            .payments_listed("")
            .await
            .into_iter()
            .filter(|p| p.status != payments::PaymentStatus::Failed as i32)
            .collect();
        (
            kept.len() as i64,
            kept.iter().map(|p| amount(&p.amount)).sum(),
            kept.iter().map(|p| amount(&p.refunded)).sum(),
        )
    }

    /// (status, refunded) of every payment of `order`: "succeeded", "refunded", ...
    pub async fn payments_of(&self, order: &str) -> Vec<(String, i64)> {
        self.payments_listed(order)
            .await
            .into_iter()
            .map(|p| {
                let status = payments::PaymentStatus::try_from(p.status)
                    .map(|s| {
                        s.as_str_name()
                            .trim_start_matches("PAYMENT_STATUS_")
                            .to_lowercase()
                    })
                    .unwrap_or_default();
                (status, p.refunded.map_or(0, |m| m.amount_minor))
            })
            .collect()
    }

    /// What the orders of `sale` that were paid came to, as its organizer lists them.
    pub async fn paid_total(&self, sale: &Sale) -> i64 {
        let mut client = self.orders();
        let (mut total, mut page_token) = (0, String::new());
        loop {
            let page = client
                .list_orders(authed(
                    &sale.organizer,
                    pb::ListOrdersRequest {
                        page_size: 100,
                        page_token,
                        event_id: sale.event_id.clone(),
                        statuses: vec![
                            pb::OrderStatus::Paid as i32,
                            pb::OrderStatus::PartiallyRefunded as i32,
                            pb::OrderStatus::Refunded as i32,
                        ],
                    },
                ))
                .await
                .expect("orders")
                .into_inner();
            total += page
                .orders
                .iter()
                .map(|o| o.total.as_ref().map_or(0, |m| m.amount_minor))
                .sum::<i64>();
            if page.next_page_token.is_empty() {
                return total;
            }
            page_token = page.next_page_token;
        }
    }

    pub fn cut_payments(&self, cut: bool) {
        self.payments_proxy
            .set_mode(if cut { ProxyMode::Refuse } else { ProxyMode::Pass });
        if cut {
            self.payments_proxy.cut_connections();
        }
    }
}
