//! Publishing makes an event sellable in inventory; the lifecycle allows only its transitions;
//! a published map cannot lose a sold seat.

use std::time::Duration;

use ticketing_platform::messaging::payload;
use ticketing_proto::ticketing::{catalog::v1 as pb, events::v1 as events, inventory::v1 as inv};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{as_service, authed, reason, seat_id, stack, subject_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_makes_the_event_sellable_and_only_allowed_transitions_happen() {
    let s = stack().await;
    let mut lifecycle = s.tap("event.*").await;
    let f = s.fixture().await;
    let (_, buyer) = s.user(&[]).await;
    let event = s.create_event(&f, "Symphony", 20).await;
    assert_eq!(event.status, pb::EventStatus::Draft as i32);
    let a1 = seat_id(&f.venue, "A1");
    let hold = |token: &str, seats: Vec<String>| {
        authed(
            token,
            inv::HoldSeatsRequest {
                event_id: event.id.clone(),
                seat_ids: seats,
                ttl: None,
            },
        )
    };
    let draft = s
        .inventory()
        .hold_seats(hold(&buyer, vec![a1.clone()]))
        .await
        .expect_err("draft");
    assert_eq!(reason(&draft), "EVENT_NOT_ON_SALE");
    let anonymous = s
        .catalog()
        .get_event(pb::GetEventRequest {
            event_id: event.id.clone(),
        })
        .await
        .expect_err("drafts are private");
    assert_eq!(anonymous.code(), Code::NotFound);

    let empty = s.publish(&f.organizer, &event).await.expect_err("no tiers");
    assert_eq!(reason(&empty), "NO_TIERS");
    let (vip, floor) = s.add_tiers(&f, &event).await;
    assert_eq!((vip.quota, floor.quota), (10, 100));
    let published = s.publish(&f.organizer, &event).await.expect("published");
    assert_eq!(published.status, pb::EventStatus::Published as i32);
    assert!(published.published_at.is_some());
    s.publish(&f.organizer, &event)
        .await
        .expect("publishing twice is fine");
    let announced = lifecycle
        .next(Duration::from_secs(10))
        .await
        .expect("event.published");
    assert_eq!(announced.event_type, "event.published");
    assert_eq!(announced.aggregate_id, event.id);
    let body: events::EventPublished = payload(&announced).expect("payload");
    assert_eq!(
        (body.title.as_str(), body.organization_id),
        ("Symphony", f.org.to_string())
    );
    // What readers need without asking catalog: the venue's zone, and each tier with its
    // price and the places it sells (as its quota says).
    assert_eq!(body.time_zone, "Europe/Berlin");
    let mut tiers: Vec<(String, String, String, i64, i64)> = body
        .tiers
        .iter()
        .map(|t| {
            (
                t.tier_id.clone(),
                t.name.clone(),
                t.category_code.clone(),
                t.price.as_ref().map(|p| p.amount_minor).unwrap_or_default(),
                t.capacity,
            )
        })
        .collect();
    tiers.sort();
    let mut expected = vec![
        (
            vip.id.clone(),
            vip.name.clone(),
            "VIP".to_string(),
            vip.price.as_ref().map(|p| p.amount_minor).unwrap_or_default(),
            i64::from(vip.quota),
        ),
        (
            floor.id.clone(),
            floor.name.clone(),
            String::new(),
            4000,
            i64::from(floor.quota),
        ),
    ];
    expected.sort();
    assert_eq!(tiers, expected);
    // The second publish changed nothing, so it announced nothing.
    lifecycle
        .quiet_for(Duration::from_millis(800))
        .await
        .expect("one announcement");

    // Sellable at once: VIP seats and the floor, not the untiered STANDARD row.
    let held = s
        .inventory()
        .hold_seats(hold(&buyer, vec![a1.clone()]))
        .await
        .expect("a VIP seat")
        .into_inner();
    assert_eq!(held.items[0].tier_id, vip.id);
    let standard = s
        .inventory()
        .hold_seats(hold(&buyer, vec![seat_id(&f.venue, "C1")]))
        .await
        .expect_err("no tier");
    assert_eq!(standard.code(), Code::InvalidArgument);
    s.inventory()
        .hold_quantity(authed(
            &buyer,
            inv::HoldQuantityRequest {
                event_id: event.id.clone(),
                tier_id: floor.id.clone(),
                quantity: 3,
                ttl: None,
            },
        ))
        .await
        .expect("floor places");
    let availability = s
        .inventory()
        .get_availability(inv::GetAvailabilityRequest {
            event_id: event.id.clone(),
            counts_only: true,
        })
        .await
        .expect("availability")
        .into_inner();
    let counts: Vec<(String, i32, i32)> = availability
        .tiers
        .iter()
        .map(|t| (t.tier_id.clone(), t.total, t.held))
        .collect();
    assert!(
        counts.contains(&(vip.id.clone(), 10, 1)) && counts.contains(&(floor.id.clone(), 100, 3)),
        "{counts:?}"
    );
    s.catalog()
        .get_event(pb::GetEventRequest {
            event_id: event.id.clone(),
        })
        .await
        .expect("published events are public");

    let early = s
        .catalog()
        .complete_event(authed(
            &f.organizer,
            pb::CompleteEventRequest {
                event_id: event.id.clone(),
            },
        ))
        .await
        .expect_err("not ended");
    assert_eq!(reason(&early), "EVENT_NOT_ENDED");
    let delete = s
        .catalog()
        .delete_event(authed(
            &f.organizer,
            pb::DeleteEventRequest {
                event_id: event.id.clone(),
            },
        ))
        .await
        .expect_err("published");
    assert_eq!(delete.code(), Code::FailedPrecondition);

    s.catalog()
        .update_event(authed(
            &f.organizer,
            pb::UpdateEventRequest {
                event: Some(pb::Event {
                    id: event.id.clone(),
                    title: "Symphony No. 9".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["title".into()],
                }),
            },
        ))
        .await
        .expect("a published event may be renamed");
    let rambling = s
        .catalog()
        .cancel_event(authed(
            &f.organizer,
            pb::CancelEventRequest {
                event_id: event.id.clone(),
                reason: "x".repeat(1001),
            },
        ))
        .await
        .expect_err("reason too long");
    assert_eq!(rambling.code(), Code::InvalidArgument);
    let cancelled = s
        .catalog()
        .cancel_event(authed(
            &f.organizer,
            pb::CancelEventRequest {
                event_id: event.id.clone(),
                reason: "storm".into(),
            },
        ))
        .await
        .expect("cancelled")
        .into_inner();
    assert_eq!(cancelled.status, pb::EventStatus::Cancelled as i32);
    let updated = lifecycle
        .next(Duration::from_secs(10))
        .await
        .expect("event.updated");
    assert_eq!(updated.event_type, "event.updated");
    let body: events::EventUpdated = payload(&updated).expect("payload");
    assert_eq!(body.title, "Symphony No. 9");
    let closed_event = lifecycle
        .next(Duration::from_secs(10))
        .await
        .expect("event.cancelled");
    assert_eq!(closed_event.event_type, "event.cancelled");
    let body: events::EventCancelled = payload(&closed_event).expect("payload");
    assert_eq!(body.reason, "storm");
    // Relayed in the order they were committed.
    assert!(announced.aggregate_sequence < updated.aggregate_sequence);
    assert!(updated.aggregate_sequence < closed_event.aggregate_sequence);
    let closed = s
        .inventory()
        .hold_seats(hold(&buyer, vec![seat_id(&f.venue, "A2")]))
        .await
        .expect_err("sales closed");
    assert_eq!(reason(&closed), "SALES_CLOSED");
    let again = s
        .publish(&f.organizer, &event)
        .await
        .expect_err("cancelled stays cancelled");
    assert_eq!(reason(&again), "INVALID_TRANSITION");
    let edit = s
        .catalog()
        .update_event(authed(
            &f.organizer,
            pb::UpdateEventRequest {
                event: Some(pb::Event {
                    id: event.id.clone(),
                    title: "Again".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["title".into()],
                }),
            },
        ))
        .await
        .expect_err("closed");
    assert_eq!(reason(&edit), "EVENT_CLOSED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_map_may_change_but_never_drops_a_sold_seat() {
    let s = stack().await;
    let f = s.fixture().await;
    let (_, buyer) = s.user(&[]).await;
    let event = s.create_event(&f, "Ballet", 15).await;
    s.add_tiers(&f, &event).await;
    s.publish(&f.organizer, &event).await.expect("published");
    let a1 = seat_id(&f.venue, "A1");
    let a2 = seat_id(&f.venue, "A2");
    let hold = s
        .inventory()
        .hold_seats(authed(
            &buyer,
            inv::HoldSeatsRequest {
                event_id: event.id.clone(),
                seat_ids: vec![a1.clone()],
                ttl: None,
            },
        ))
        .await
        .expect("held")
        .into_inner();
    let orders = s.identity_service.service_token("orders", "inventory").await;
    s.inventory()
        .commit_hold(as_service(
            &orders,
            inv::CommitHoldRequest {
                hold_id: hold.id,
                order_id: Uuid::now_v7().to_string(),
                customer_id: subject_of(&buyer).to_string(),
            },
        ))
        .await
        .expect("sold");

    let update = |chart: pb::SeatingChart| {
        authed(
            &f.organizer,
            pb::UpdateVenueRequest {
                venue: Some(pb::Venue {
                    id: f.venue.id.clone(),
                    seating_chart: Some(chart),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["seating_chart".into()],
                }),
            },
        )
    };
    let mut without_a1 = f.venue.seating_chart.clone().expect("chart");
    without_a1.sections[0].rows[0].seats.retain(|seat| seat.id != a1);
    let refused = s
        .catalog()
        .update_venue(update(without_a1))
        .await
        .expect_err("A1 is sold");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains(&a1), "{}", refused.message());
    let venue = s
        .catalog()
        .get_venue(pb::GetVenueRequest {
            venue_id: f.venue.id.clone(),
        })
        .await
        .expect("venue")
        .into_inner();
    assert_eq!(venue.capacity, 115, "the refused change changed nothing");

    let mut without_a2 = f.venue.seating_chart.clone().expect("chart");
    without_a2.sections[0].rows[0].seats.retain(|seat| seat.id != a2);
    let changed = s
        .catalog()
        .update_venue(update(without_a2))
        .await
        .expect("A2 was not sold")
        .into_inner();
    assert_eq!(changed.capacity, 114);
    let gone = s
        .inventory()
        .hold_seats(authed(
            &buyer,
            inv::HoldSeatsRequest {
                event_id: event.id.clone(),
                seat_ids: vec![a2],
                ttl: None,
            },
        ))
        .await
        .expect_err("A2 left the map");
    assert_eq!(gone.code(), Code::InvalidArgument);
    let availability = s
        .inventory()
        .get_availability(inv::GetAvailabilityRequest {
            event_id: event.id,
            counts_only: false,
        })
        .await
        .expect("availability")
        .into_inner();
    let a1_state = availability
        .seats
        .iter()
        .find(|seat| seat.seat_id == a1)
        .expect("A1");
    assert_eq!(
        a1_state.status,
        inv::SeatStatus::Sold as i32,
        "A1 stays sold after the change"
    );
}

/// The largest chart catalog accepts (100,000 seats) is created, and its event goes on sale
/// whole when published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_at_the_largest_venue_allowed_goes_on_sale_whole() {
    let s = stack().await;
    let (org, organizer) = s.organizer().await;
    let mut chart = crate::helpers::chart();
    chart.sections = (0..50)
        .map(|section| pb::Section {
            name: format!("Block {section}"),
            rows: (0..100)
                .map(|row| pb::Row {
                    label: format!("R{row}"),
                    seats: (0..20)
                        .map(|n| pb::Seat {
                            label: format!("R{row}-{n}"),
                            category_code: "STANDARD".into(),
                            x: f64::from(n),
                            y: f64::from(row),
                            ..Default::default()
                        })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    // The venue comes back with its whole chart, past tonic's default 4 MiB.
    let mut catalog = s.catalog().max_decoding_message_size(64 * 1024 * 1024);
    let venue = catalog
        .create_venue(authed(
            &organizer,
            pb::CreateVenueRequest {
                venue: Some(pb::Venue {
                    organization_id: org.to_string(),
                    name: "Stadium".into(),
                    timezone: "Europe/Berlin".into(),
                    seating_chart: Some(chart),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("the largest venue")
        .into_inner();
    let starts = chrono::Utc::now() + chrono::Duration::days(30);
    let event = catalog
        .create_event(authed(
            &organizer,
            pb::CreateEventRequest {
                event: Some(pb::Event {
                    organization_id: org.to_string(),
                    venue_id: venue.id.clone(),
                    title: "Final".into(),
                    starts_at: Some(crate::helpers::ts(starts)),
                    ends_at: Some(crate::helpers::ts(starts + chrono::Duration::hours(3))),
                    category: pb::EventCategory::Sports as i32,
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("event")
        .into_inner();
    catalog
        .create_ticket_tier(authed(
            &organizer,
            pb::CreateTicketTierRequest {
                event_id: event.id.clone(),
                tier: Some(pb::TicketTier {
                    name: "Standard".into(),
                    price: Some(ticketing_proto::ticketing::common::v1::Money {
                        amount_minor: 5000,
                        currency: "EUR".into(),
                    }),
                    target: Some(pb::ticket_tier::Target::SeatCategoryCode("STANDARD".into())),
                    per_order_limit: 6,
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("tier");
    s.publish(&organizer, &event).await.expect("published");

    let availability = s
        .inventory()
        .get_availability(inv::GetAvailabilityRequest {
            event_id: event.id.clone(),
            counts_only: true,
        })
        .await
        .expect("on sale")
        .into_inner();
    let (total, free): (i32, i32) = availability
        .tiers
        .iter()
        .fold((0, 0), |(t, f), tier| (t + tier.total, f + tier.free));
    assert_eq!((total, free), (100_000, 100_000), "{:?}", availability.tiers);
}
