use chrono::Utc;
use ticketing_e2e::{
    Identity,
    services::{self, Running, Wiring},
};
pub use ticketing_e2e::{as_service, authed, reason, subject_of};
use ticketing_platform::auth::Role;
use ticketing_proto::ticketing::{
    catalog::v1::{self as pb, catalog_service_client::CatalogServiceClient},
    common::v1::{Address, Money},
    identity::v1 as idpb,
    inventory::v1::inventory_service_client::InventoryServiceClient,
};
use ticketing_testkit::{EventTap, TestBroker, TestRedisPrefix};
use tonic::transport::Channel;
use uuid::Uuid;

pub struct Stack {
    pub identity_service: Identity,
    pub inventory: Channel,
    pub catalog: Channel,
    // Dropped (stopped) catalog first, then the inventory it calls.
    _running: (
        Running<svc_catalog::config::Config>,
        Running<svc_inventory::config::Config>,
    ),
    _keys: TestRedisPrefix,
    broker: TestBroker,
}

/// Identity, inventory and catalog.
pub async fn stack() -> Stack {
    let identity = Identity::start().await;
    let keys = TestRedisPrefix::new("inv");
    let broker = TestBroker::new();
    let wiring = Wiring {
        identity: &identity,
        broker: &broker,
        redis_prefix: &keys.prefix,
    };
    let (inventory, _) = services::inventory(&wiring, |_| {}).await;
    let catalog = services::catalog(&wiring, inventory.url(), |_| {}).await;
    Stack {
        inventory: inventory.channel.clone(),
        catalog: catalog.channel.clone(),
        _running: (catalog, inventory),
        identity_service: identity,
        _keys: keys,
        broker,
    }
}

pub fn ts(at: chrono::DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

/// The chart used throughout: 2 rows of 5 VIP seats, a row of 5 STANDARD seats, a floor of 100.
pub fn chart() -> pb::SeatingChart {
    let seat = |label: String, category: &str, x: f64, y: f64| pb::Seat {
        label,
        category_code: category.into(),
        x,
        y,
        ..Default::default()
    };
    let row = |label: &str, category: &str, y: f64| pb::Row {
        label: label.into(),
        seats: (1..=5)
            .map(|n| seat(format!("{label}{n}"), category, f64::from(n), y))
            .collect(),
    };
    pb::SeatingChart {
        categories: vec![
            pb::SeatCategory {
                code: "VIP".into(),
                name: "VIP".into(),
                color: "#c0392b".into(),
            },
            pb::SeatCategory {
                code: "STANDARD".into(),
                name: "Standard".into(),
                color: "#2980b9".into(),
            },
        ],
        sections: vec![pb::Section {
            name: "Stalls".into(),
            rows: vec![
                row("A", "VIP", 1.0),
                row("B", "VIP", 2.0),
                row("C", "STANDARD", 3.0),
            ],
            ..Default::default()
        }],
        ga_areas: vec![pb::GeneralAdmissionArea {
            name: "Floor".into(),
            capacity: 100,
            ..Default::default()
        }],
    }
}

pub struct Fixture {
    pub org: Uuid,
    pub organizer: String,
    pub venue: pb::Venue,
}

impl Stack {
    /// Listens to what the services publish (start it before the action that publishes).
    pub async fn tap(&self, binding: &str) -> EventTap {
        self.broker.tap(binding).await.expect("broker tap")
    }

    pub fn catalog(&self) -> CatalogServiceClient<Channel> {
        CatalogServiceClient::new(self.catalog.clone())
    }

    pub fn inventory(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(self.inventory.clone())
    }

    pub async fn user(&self, roles: &[Role]) -> (Uuid, String) {
        self.identity_service.user(roles).await
    }

    pub async fn organizer(&self) -> (Uuid, String) {
        self.identity_service.organizer().await
    }

    pub async fn api_key(&self, org: Uuid, owner: &str, scopes: &[idpb::ApiKeyScope]) -> String {
        self.identity_service.api_key(org, owner, scopes).await
    }

    pub async fn fixture(&self) -> Fixture {
        let (org, organizer) = self.organizer().await;
        let venue = self.create_venue(org, &organizer, "Konzerthaus", "Berlin").await;
        Fixture {
            org,
            organizer,
            venue,
        }
    }

    pub async fn create_venue(&self, org: Uuid, token: &str, name: &str, city: &str) -> pb::Venue {
        self.catalog()
            .create_venue(authed(
                token,
                pb::CreateVenueRequest {
                    venue: Some(pb::Venue {
                        organization_id: org.to_string(),
                        name: name.into(),
                        address: Some(Address {
                            city: city.into(),
                            country: "DE".into(),
                            ..Default::default()
                        }),
                        timezone: "Europe/Berlin".into(),
                        seating_chart: Some(chart()),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("venue")
            .into_inner()
    }

    pub async fn create_event(&self, f: &Fixture, title: &str, days_ahead: i64) -> pb::Event {
        let starts = Utc::now() + chrono::Duration::days(days_ahead);
        self.catalog()
            .create_event(authed(
                &f.organizer,
                pb::CreateEventRequest {
                    event: Some(pb::Event {
                        organization_id: f.org.to_string(),
                        venue_id: f.venue.id.clone(),
                        title: title.into(),
                        description: format!("An evening of {title}"),
                        starts_at: Some(ts(starts)),
                        ends_at: Some(ts(starts + chrono::Duration::hours(3))),
                        category: pb::EventCategory::Concert as i32,
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("event")
            .into_inner()
    }

    /// VIP seats at 90 EUR and the floor at 40 EUR.
    pub async fn add_tiers(&self, f: &Fixture, event: &pb::Event) -> (pb::TicketTier, pb::TicketTier) {
        let area = f.venue.seating_chart.as_ref().expect("chart").ga_areas[0]
            .id
            .clone();
        let tier = |name: &str, price: i64, target: pb::ticket_tier::Target| pb::CreateTicketTierRequest {
            event_id: event.id.clone(),
            tier: Some(pb::TicketTier {
                name: name.into(),
                price: Some(Money {
                    amount_minor: price,
                    currency: "EUR".into(),
                }),
                target: Some(target),
                per_order_limit: 6,
                ..Default::default()
            }),
        };
        let vip = self
            .catalog()
            .create_ticket_tier(authed(
                &f.organizer,
                tier(
                    "VIP",
                    9000,
                    pb::ticket_tier::Target::SeatCategoryCode("VIP".into()),
                ),
            ))
            .await
            .expect("vip tier")
            .into_inner();
        let floor = self
            .catalog()
            .create_ticket_tier(authed(
                &f.organizer,
                tier("Floor", 4000, pb::ticket_tier::Target::GaAreaId(area)),
            ))
            .await
            .expect("floor tier")
            .into_inner();
        (vip, floor)
    }

    pub async fn publish(&self, token: &str, event: &pb::Event) -> Result<pb::Event, tonic::Status> {
        self.catalog()
            .publish_event(authed(
                token,
                pb::PublishEventRequest {
                    event_id: event.id.clone(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }
}

/// The id of a seat by its label in the fixture chart.
pub fn seat_id(venue: &pb::Venue, label: &str) -> String {
    venue
        .seating_chart
        .as_ref()
        .expect("chart")
        .sections
        .iter()
        .flat_map(|s| &s.rows)
        .flat_map(|r| &r.seats)
        .find(|s| s.label == label)
        .map(|s| s.id.clone())
        .expect("seat label")
}
