//! Demo data for a laptop: one published event with a seated map (VVIP, VIP, standard and
//! accessible seats) and a general-admission floor, made through the public API as the demo
//! organizer. Idempotent.

use chrono::{Duration, Utc};
use ticketing_proto::ticketing::{
    catalog::v1::{self as pb, catalog_service_client::CatalogServiceClient},
    common::v1::{Address, Money},
    identity::v1::{self as idpb, identity_service_client::IdentityServiceClient},
};
use tonic::Request;

use crate::config::Config;

pub const ORGANIZER: &str = "organizer@demo.ticketing.dev";
pub const EVENT_TITLE: &str = "Flash Sale Night";

fn authed<T>(token: &str, message: T) -> anyhow::Result<Request<T>> {
    Ok(ticketing_platform::clients::with_bearer(token, message))
}

fn chart() -> pb::SeatingChart {
    let row = |label: &str, seats: u32, category: &str, y: f64| pb::Row {
        label: label.into(),
        seats: (1..=seats)
            .map(|n| pb::Seat {
                label: format!("{label}{n}"),
                category_code: category.into(),
                x: f64::from(n),
                y,
                accessible: category == "ACCESSIBLE",
                ..Default::default()
            })
            .collect(),
    };
    let category = |code: &str, name: &str, color: &str| pb::SeatCategory {
        code: code.into(),
        name: name.into(),
        color: color.into(),
    };
    pb::SeatingChart {
        categories: vec![
            category("VVIP", "VVIP", "#8e44ad"),
            category("VIP", "VIP", "#c0392b"),
            category("STANDARD", "Standard", "#2980b9"),
            category("ACCESSIBLE", "Accessible", "#27ae60"),
        ],
        sections: vec![
            pb::Section {
                name: "Front".into(),
                rows: vec![
                    row("A", 6, "VVIP", 1.0),
                    row("B", 10, "VIP", 2.0),
                    row("C", 10, "VIP", 3.0),
                ],
                ..Default::default()
            },
            pb::Section {
                name: "Stalls".into(),
                rows: ["D", "E", "F", "G", "H"]
                    .iter()
                    .enumerate()
                    .map(|(i, r)| row(r, 20, "STANDARD", 5.0 + i as f64))
                    .chain([row("W", 4, "ACCESSIBLE", 11.0)])
                    .collect(),
                ..Default::default()
            },
        ],
        ga_areas: vec![pb::GeneralAdmissionArea {
            name: "Floor".into(),
            capacity: 500,
            category_code: String::new(),
            ..Default::default()
        }],
    }
}

pub async fn seed(config: &Config, password: &str) -> anyhow::Result<()> {
    let identity_url = config
        .peers
        .addresses
        .get("identity")
        .ok_or_else(|| anyhow::anyhow!("no identity address"))?;
    let mut identity = IdentityServiceClient::connect(identity_url.clone()).await?;
    let token = identity
        .login(idpb::LoginRequest {
            email: ORGANIZER.into(),
            password: password.into(),
        })
        .await?
        .into_inner()
        .access_token;
    let me = identity
        .get_me(authed(&token, idpb::GetMeRequest {})?)
        .await?
        .into_inner();
    let org = me
        .memberships
        .first()
        .map(|m| m.organization_id.clone())
        .ok_or_else(|| anyhow::anyhow!("the demo organizer has no organization; seed identity first"))?;

    let mut catalog = CatalogServiceClient::connect(format!("http://{}", config.server.grpc_addr)).await?;
    let existing = catalog
        .list_events(authed(
            &token,
            pb::ListEventsRequest {
                organization_id: org.clone(),
                statuses: vec![pb::EventStatus::Draft as i32, pb::EventStatus::Published as i32],
                query: EVENT_TITLE.into(),
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    if let Some(event) = existing
        .events
        .iter()
        .find(|e| e.title == EVENT_TITLE && e.status == pb::EventStatus::Published as i32)
    {
        println!("demo event {} already published", event.id);
        return Ok(());
    }
    let event = match existing.events.into_iter().find(|e| e.title == EVENT_TITLE) {
        Some(draft) => draft,
        None => {
            let venue = catalog
                .create_venue(authed(
                    &token,
                    pb::CreateVenueRequest {
                        venue: Some(pb::Venue {
                            organization_id: org.clone(),
                            name: "Demo Arena".into(),
                            address: Some(Address {
                                line1: "Arenastraße 1".into(),
                                city: "Berlin".into(),
                                postal_code: "10117".into(),
                                country: "DE".into(),
                                ..Default::default()
                            }),
                            timezone: "Europe/Berlin".into(),
                            seating_chart: Some(chart()),
                            ..Default::default()
                        }),
                    },
                )?)
                .await?
                .into_inner();
            let starts = Utc::now() + Duration::days(30);
            let event = catalog
                .create_event(authed(
                    &token,
                    pb::CreateEventRequest {
                        event: Some(pb::Event {
                            organization_id: org.clone(),
                            venue_id: venue.id.clone(),
                            title: EVENT_TITLE.into(),
                            description:
                                "Two hundred seats, a floor of five hundred, and everybody wants in.".into(),
                            starts_at: Some(ticketing_platform::time::to_timestamp(starts)),
                            ends_at: Some(ticketing_platform::time::to_timestamp(
                                starts + Duration::hours(4),
                            )),
                            category: pb::EventCategory::Concert as i32,
                            ..Default::default()
                        }),
                    },
                )?)
                .await?
                .into_inner();
            let floor = venue
                .seating_chart
                .as_ref()
                .and_then(|c| c.ga_areas.first())
                .map(|a| a.id.clone())
                .unwrap_or_default();
            let tiers = [
                (
                    "VVIP",
                    25_000,
                    pb::ticket_tier::Target::SeatCategoryCode("VVIP".into()),
                ),
                (
                    "VIP",
                    12_000,
                    pb::ticket_tier::Target::SeatCategoryCode("VIP".into()),
                ),
                (
                    "Standard",
                    6_000,
                    pb::ticket_tier::Target::SeatCategoryCode("STANDARD".into()),
                ),
                (
                    "Accessible",
                    6_000,
                    pb::ticket_tier::Target::SeatCategoryCode("ACCESSIBLE".into()),
                ),
                ("Floor", 4_500, pb::ticket_tier::Target::GaAreaId(floor)),
            ];
            for (name, price, target) in tiers {
                catalog
                    .create_ticket_tier(authed(
                        &token,
                        pb::CreateTicketTierRequest {
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
                        },
                    )?)
                    .await?;
            }
            event
        }
    };
    let published = catalog
        .publish_event(authed(
            &token,
            pb::PublishEventRequest {
                event_id: event.id.clone(),
            },
        )?)
        .await?
        .into_inner();
    println!("demo event {} published", published.id);
    Ok(())
}
