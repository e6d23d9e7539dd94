//! Every Update RPC of catalog reads `update_mask` the one way the protos describe (AIP-134):
//! named paths change exactly those fields, `*` all of them, no mask the fields the request
//! sets; an unknown path is refused and changes nothing.

use ticketing_e2e::violated_fields;
use ticketing_proto::ticketing::{catalog::v1 as pb, common::v1::Money};
use tonic::Code;

use crate::helpers::{Stack, authed, stack};

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

async fn event(s: &Stack, token: &str, id: &str) -> pb::Event {
    s.catalog()
        .get_event(authed(token, pb::GetEventRequest { event_id: id.into() }))
        .await
        .expect("event")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_event_reads_the_mask_as_aip_134_says() {
    let s = stack().await;
    let f = s.fixture().await;
    let created = s.create_event(&f, "Quartet", 20).await;
    let update = |event: pb::Event, paths: Option<prost_types::FieldMask>| {
        let catalog = s.catalog();
        let token = f.organizer.clone();
        async move {
            catalog
                .clone()
                .update_event(authed(
                    &token,
                    pb::UpdateEventRequest {
                        event: Some(event),
                        update_mask: paths,
                    },
                ))
                .await
        }
    };
    let with = |title: &str, description: &str| pb::Event {
        id: created.id.clone(),
        title: title.into(),
        description: description.into(),
        ..Default::default()
    };

    // Named: only the title changes, though the request sets the description too.
    update(with("Quintet", "ignored"), mask(&["title"]))
        .await
        .expect("named");
    let now = event(&s, &f.organizer, &created.id).await;
    assert_eq!(
        (now.title.as_str(), now.description.as_str()),
        ("Quintet", created.description.as_str())
    );

    // No mask: what the request sets changes; what it leaves unset stays.
    update(with("", "A new description"), None)
        .await
        .expect("no mask");
    let now = event(&s, &f.organizer, &created.id).await;
    assert_eq!(
        (now.title.as_str(), now.description.as_str()),
        ("Quintet", "A new description")
    );

    // Named with the default value: the description is cleared.
    update(with("", ""), mask(&["description"]))
        .await
        .expect("cleared");
    assert_eq!(event(&s, &f.organizer, &created.id).await.description, "");

    // Nothing set and nothing named: refused.
    let nothing = update(with("", ""), None).await.expect_err("nothing to change");
    assert_eq!(nothing.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&nothing), ["update_mask"]);

    // An unknown or read-only path: refused, and nothing changes.
    for path in ["status", "organization_id", "nonsense"] {
        let refused = update(with("Changed", "Changed"), mask(&["title", path]))
            .await
            .expect_err(path);
        assert_eq!(refused.code(), Code::InvalidArgument, "{path}");
        assert_eq!(violated_fields(&refused), ["update_mask"], "{path}");
    }
    assert_eq!(event(&s, &f.organizer, &created.id).await.title, "Quintet");

    // `*`: every updatable field takes the request's value, so an unset required one is refused.
    let everything = update(with("Sextet", ""), mask(&["*"]))
        .await
        .expect_err("starts_at unset");
    assert_eq!(everything.code(), Code::InvalidArgument);
    assert!(violated_fields(&everything).contains(&"event.starts_at".to_string()));
    let mut full = event(&s, &f.organizer, &created.id).await;
    full.title = "Sextet".into();
    full.description = String::new();
    update(full, mask(&["*"])).await.expect("a full replacement");
    let now = event(&s, &f.organizer, &created.id).await;
    assert_eq!((now.title.as_str(), now.description.as_str()), ("Sextet", ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_venue_and_update_ticket_tier_read_the_mask_the_same_way() {
    let s = stack().await;
    let f = s.fixture().await;
    let event = s.create_event(&f, "Trio", 20).await;
    let (vip, _) = s.add_tiers(&f, &event).await;
    let venue = |name: &str, timezone: &str| pb::Venue {
        id: f.venue.id.clone(),
        name: name.into(),
        timezone: timezone.into(),
        ..Default::default()
    };
    let update_venue = |v: pb::Venue, m: Option<prost_types::FieldMask>| {
        let mut catalog = s.catalog();
        let token = f.organizer.clone();
        async move {
            catalog
                .update_venue(authed(
                    &token,
                    pb::UpdateVenueRequest {
                        venue: Some(v),
                        update_mask: m,
                    },
                ))
                .await
        }
    };
    // No mask: the name changes; the address and chart, unset here, are kept.
    let renamed = update_venue(venue("Philharmonie", ""), None)
        .await
        .expect("no mask")
        .into_inner();
    assert_eq!(renamed.name, "Philharmonie");
    assert_eq!(renamed.timezone, "Europe/Berlin");
    assert_eq!(renamed.address.as_ref().map(|a| a.city.as_str()), Some("Berlin"));
    assert!(renamed.seating_chart.is_some_and(|c| !c.sections.is_empty()));
    // Named: only the timezone, though a name is sent.
    let moved = update_venue(venue("Ignored", "Europe/Vienna"), mask(&["timezone"]))
        .await
        .expect("named")
        .into_inner();
    assert_eq!(
        (moved.name.as_str(), moved.timezone.as_str()),
        ("Philharmonie", "Europe/Vienna")
    );
    let refused = update_venue(venue("X", ""), mask(&["capacity"]))
        .await
        .expect_err("read-only");
    assert_eq!(violated_fields(&refused), ["update_mask"]);
    let refused = update_venue(venue("", ""), None).await.expect_err("nothing");
    assert_eq!(violated_fields(&refused), ["update_mask"]);

    let tier = |name: &str, limit: i32, price: Option<i64>| pb::TicketTier {
        id: vip.id.clone(),
        event_id: event.id.clone(),
        name: name.into(),
        per_order_limit: limit,
        price: price.map(|amount_minor| Money {
            amount_minor,
            currency: "EUR".into(),
        }),
        ..Default::default()
    };
    let update_tier = |t: pb::TicketTier, m: Option<prost_types::FieldMask>| {
        let mut catalog = s.catalog();
        let token = f.organizer.clone();
        async move {
            catalog
                .update_ticket_tier(authed(
                    &token,
                    pb::UpdateTicketTierRequest {
                        tier: Some(t),
                        update_mask: m,
                    },
                ))
                .await
        }
    };
    // No mask: the price changes; the name and limit, unset, are kept.
    let repriced = update_tier(tier("", 0, Some(9500)), None)
        .await
        .expect("no mask")
        .into_inner();
    assert_eq!(repriced.price.as_ref().map(|p| p.amount_minor), Some(9500));
    assert_eq!((repriced.name.as_str(), repriced.per_order_limit), ("VIP", 6));
    // Named with the default value: 0 means the default limit, 10.
    let defaulted = update_tier(tier("Ignored", 0, None), mask(&["per_order_limit"]))
        .await
        .expect("named")
        .into_inner();
    assert_eq!((defaulted.name.as_str(), defaulted.per_order_limit), ("VIP", 10));
    let refused = update_tier(tier("X", 1, None), mask(&["target"]))
        .await
        .expect_err("not updatable");
    assert_eq!(violated_fields(&refused), ["update_mask"]);
    assert_eq!(refused.code(), Code::InvalidArgument);
}
