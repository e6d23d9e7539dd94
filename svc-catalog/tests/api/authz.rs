//! Who may write the catalog, and bad input that must change nothing.

use ticketing_e2e::violated_fields;
use ticketing_platform::auth::Role;
use ticketing_proto::ticketing::{catalog::v1 as pb, common::v1::Money, identity::v1 as idpb};
use tonic::Code;

use crate::helpers::{authed, chart, stack, ts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_writes_admit_exactly_the_organization_its_write_keys_and_admins() {
    use Code::{Ok as OK, PermissionDenied as DENIED, Unauthenticated as ANON};
    let s = stack().await;
    let f = s.fixture().await;
    let (_, customer) = s.user(&[]).await;
    let (_, outsider) = s.organizer().await;
    let (_, admin) = s.user(&[Role::Admin]).await;
    let writer_key = s
        .api_key(f.org, &f.organizer, &[idpb::ApiKeyScope::EventsWrite])
        .await;
    let reader_key = s
        .api_key(f.org, &f.organizer, &[idpb::ApiKeyScope::EventsRead])
        .await;
    let event = s.create_event(&f, "Matrix", 30).await;
    let callers = [
        ("anonymous", ""),
        ("customer", &customer[..]),
        ("outside organizer", &outsider[..]),
        ("member", &f.organizer[..]),
        ("admin", &admin[..]),
        ("events:write key", &writer_key[..]),
        ("events:read key", &reader_key[..]),
    ];
    let expected: [(&str, [Code; 7]); 4] = [
        ("CreateVenue", [ANON, DENIED, DENIED, OK, OK, OK, DENIED]),
        ("CreateEvent", [ANON, DENIED, DENIED, OK, OK, OK, DENIED]),
        ("UpdateEvent", [ANON, DENIED, DENIED, OK, OK, OK, DENIED]),
        ("CreateTicketTier", [ANON, DENIED, DENIED, OK, OK, OK, DENIED]),
    ];
    let area = f.venue.seating_chart.as_ref().expect("chart").ga_areas[0]
        .id
        .clone();
    let mut failures = Vec::new();
    for (rpc, codes) in expected {
        for (i, (who, token)) in callers.iter().enumerate() {
            let mut client = s.catalog();
            let got = match rpc {
                "CreateVenue" => client
                    .create_venue(authed(
                        token,
                        pb::CreateVenueRequest {
                            venue: Some(pb::Venue {
                                organization_id: f.org.to_string(),
                                name: format!("V {i}"),
                                timezone: "UTC".into(),
                                seating_chart: Some(chart()),
                                ..Default::default()
                            }),
                        },
                    ))
                    .await
                    .map(|_| ()),
                "CreateEvent" => client
                    .create_event(authed(
                        token,
                        pb::CreateEventRequest {
                            event: Some(pb::Event {
                                organization_id: f.org.to_string(),
                                venue_id: f.venue.id.clone(),
                                title: "E".into(),
                                starts_at: Some(ts(chrono::Utc::now() + chrono::Duration::days(9))),
                                ends_at: Some(ts(chrono::Utc::now() + chrono::Duration::days(10))),
                                ..Default::default()
                            }),
                        },
                    ))
                    .await
                    .map(|_| ()),
                "UpdateEvent" => client
                    .update_event(authed(
                        token,
                        pb::UpdateEventRequest {
                            event: Some(pb::Event {
                                id: event.id.clone(),
                                title: format!("Renamed by {who}"),
                                ..Default::default()
                            }),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["title".into()],
                            }),
                        },
                    ))
                    .await
                    .map(|_| ()),
                _ => {
                    // Each caller targets its own area-less category so successes do not collide.
                    let _ = &area;
                    client
                        .create_ticket_tier(authed(
                            token,
                            pb::CreateTicketTierRequest {
                                event_id: event.id.clone(),
                                tier: Some(pb::TicketTier {
                                    name: format!("T {i}"),
                                    price: Some(Money {
                                        amount_minor: 100,
                                        currency: "EUR".into(),
                                    }),
                                    target: Some(pb::ticket_tier::Target::SeatCategoryCode(if i % 2 == 0 {
                                        "VIP".into()
                                    } else {
                                        "STANDARD".into()
                                    })),
                                    ..Default::default()
                                }),
                            },
                        ))
                        .await
                        .map(|_| ())
                }
            };
            let code = match got {
                Ok(()) => Code::Ok,
                // A second tier for the same category is a conflict, which is past authorization.
                Err(status) if status.code() == Code::AlreadyExists => Code::Ok,
                Err(status) => status.code(),
            };
            if code != codes[i] {
                failures.push(format!("{rpc} as {who}: expected {:?}, got {code:?}", codes[i]));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_venues_events_and_tiers_name_their_fields_and_store_nothing() {
    let s = stack().await;
    let f = s.fixture().await;
    let mut client = s.catalog();
    let mut bad_chart = chart();
    bad_chart.sections[0].rows[0].seats[1].label = "A1".into();
    bad_chart.ga_areas[0].capacity = -1;
    bad_chart.sections[0].rows[1].seats[0].category_code = "VVIP".into();
    let status = client
        .create_venue(authed(
            &f.organizer,
            pb::CreateVenueRequest {
                venue: Some(pb::Venue {
                    organization_id: f.org.to_string(),
                    name: "".into(),
                    timezone: "Mars".into(),
                    seating_chart: Some(bad_chart),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    // Every violation is in the BadRequest details; the message names the first few.
    let violations = violated_fields(&status);
    for field in [
        "venue.name",
        "venue.timezone",
        "seats[1].label",
        "ga_areas[0].capacity",
        "rows[1].seats[0].category_code",
    ] {
        assert!(
            violations.iter().any(|v| v.contains(field)),
            "{field}: {violations:?}"
        );
    }
    assert!(status.message().contains("venue.name"), "{}", status.message());
    let venues = client
        .list_venues(pb::ListVenuesRequest {
            organization_id: f.org.to_string(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(venues.into_inner().venues.len(), 1, "nothing stored");

    let starts = chrono::Utc::now() + chrono::Duration::days(3);
    let status = client
        .create_event(authed(
            &f.organizer,
            pb::CreateEventRequest {
                event: Some(pb::Event {
                    organization_id: f.org.to_string(),
                    venue_id: f.venue.id.clone(),
                    title: "x".repeat(201),
                    starts_at: Some(ts(starts)),
                    ends_at: Some(ts(starts - chrono::Duration::hours(1))),
                    image_urls: vec!["http://insecure.example/a.png".into()],
                    category: 99,
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect_err("invalid");
    for field in [
        "event.title",
        "event.ends_at",
        "event.image_urls[0]",
        "event.category",
    ] {
        assert!(
            violated_fields(&status).iter().any(|v| v.contains(field)),
            "{field}: {status:?}"
        );
    }
    let events = client
        .list_events(authed(
            &f.organizer,
            pb::ListEventsRequest {
                organization_id: f.org.to_string(),
                statuses: vec![pb::EventStatus::Draft as i32],
                ..Default::default()
            },
        ))
        .await
        .expect("list");
    assert!(events.into_inner().events.is_empty(), "nothing stored");

    let event = s.create_event(&f, "Tiers", 10).await;
    let status = client
        .create_ticket_tier(authed(
            &f.organizer,
            pb::CreateTicketTierRequest {
                event_id: event.id.clone(),
                tier: Some(pb::TicketTier {
                    name: "Gold".into(),
                    price: Some(Money {
                        amount_minor: -5,
                        currency: "eur".into(),
                    }),
                    target: Some(pb::ticket_tier::Target::SeatCategoryCode("GOLD".into())),
                    per_order_limit: 500,
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect_err("invalid");
    for field in [
        "tier.price.amount_minor",
        "tier.price.currency",
        "tier.seat_category_code",
        "tier.per_order_limit",
    ] {
        assert!(
            violated_fields(&status).iter().any(|v| v.contains(field)),
            "{field}: {status:?}"
        );
    }
    let tiers = client
        .list_ticket_tiers(authed(
            &f.organizer,
            pb::ListTicketTiersRequest { event_id: event.id },
        ))
        .await
        .expect("tiers");
    assert!(tiers.into_inner().tiers.is_empty());
}
