use std::time::Duration;

use svc_inventory::store::Item;

use ticketing_proto::ticketing::inventory::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{authed, reason, seat, seat_states, stack, subject_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_is_all_or_nothing_and_blocks_exactly_its_seats() {
    let s = stack().await;
    let org = Uuid::now_v7();
    let event = s.event(org, 10, 0, 10).await;
    let (alice_id, alice) = s.user(&[]).await;
    let (_, bob) = s.user(&[]).await;

    let hold = s
        .hold_seats(&alice, event, &[seat(1), seat(2)])
        .await
        .expect("held");
    assert_eq!(hold.owner_id, alice_id.to_string());
    assert_eq!(hold.status, pb::HoldStatus::Active as i32);
    assert_eq!(hold.items.len(), 2);

    // Bob wants 2 and 3: seat 2 is Alice's, so he gets neither.
    let refused = s
        .hold_seats(&bob, event, &[seat(2), seat(3)])
        .await
        .expect_err("overlap");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "SEAT_UNAVAILABLE");
    assert!(
        refused.message().contains(&seat(2)) && !refused.message().contains(&seat(3)),
        "{}",
        refused.message()
    );
    let states = seat_states(&s.availability(event).await);
    assert_eq!(
        states[&seat(3)],
        pb::SeatStatus::Free as i32,
        "all or nothing: seat 3 was not taken"
    );
    assert_eq!(states[&seat(2)], pb::SeatStatus::Held as i32);
    s.hold_seats(&bob, event, &[seat(3)]).await.expect("seat 3 alone");

    // Released seats are free again, and the release is idempotent.
    let released = s
        .client()
        .release_hold(authed(
            &alice,
            pb::ReleaseHoldRequest {
                hold_id: hold.id.clone(),
            },
        ))
        .await
        .expect("released");
    assert_eq!(released.into_inner().status, pb::HoldStatus::Released as i32);
    s.client()
        .release_hold(authed(
            &alice,
            pb::ReleaseHoldRequest {
                hold_id: hold.id.clone(),
            },
        ))
        .await
        .expect("again");
    s.hold_seats(&bob, event, &[seat(2)])
        .await
        .expect("seat 2 is free again");
    let availability = s.availability(event).await;
    let standard = availability
        .tiers
        .iter()
        .find(|t| t.tier_id == "standard")
        .expect("tier");
    assert_eq!(
        (standard.total, standard.held, standard.free, standard.sold),
        (10, 2, 8, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_holds_get_clear_errors_and_change_nothing() {
    let s = stack().await;
    let org = Uuid::now_v7();
    let event = s.event(org, 5, 10, 10).await;
    let (_, buyer) = s.user(&[]).await;
    let before = s.availability(event).await;
    let mut client = s.client();
    let hold = |seats: Vec<String>, ttl: Option<prost_types::Duration>| {
        authed(
            &buyer,
            pb::HoldSeatsRequest {
                event_id: event.to_string(),
                seat_ids: seats,
                ttl,
            },
        )
    };
    let cases: Vec<(tonic::Request<pb::HoldSeatsRequest>, Code, &str)> = vec![
        (hold(vec![], None), Code::InvalidArgument, "seat_ids"),
        (
            hold(vec![seat(1), "nope".into()], None),
            Code::InvalidArgument,
            "seat_ids[1]",
        ),
        (
            hold(vec![seat(1), seat(1)], None),
            Code::InvalidArgument,
            "seat_ids[1]",
        ),
        (
            hold((0..51).map(seat).collect(), None),
            Code::InvalidArgument,
            "seat_ids",
        ),
        (
            hold(
                vec![seat(1)],
                Some(prost_types::Duration {
                    seconds: 86_400,
                    nanos: 0,
                }),
            ),
            Code::InvalidArgument,
            "ttl",
        ),
        (
            hold(
                vec![seat(1)],
                Some(prost_types::Duration {
                    seconds: -5,
                    nanos: 0,
                }),
            ),
            Code::InvalidArgument,
            "ttl",
        ),
    ];
    for (request, code, field) in cases {
        let status = client.hold_seats(request).await.expect_err("refused");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
    let status = client
        .hold_seats(authed(
            &buyer,
            pb::HoldSeatsRequest {
                event_id: "x".into(),
                seat_ids: vec![seat(1)],
                ttl: None,
            },
        ))
        .await
        .expect_err("bad event id");
    assert_eq!(status.code(), Code::InvalidArgument);
    let unpublished = s
        .hold_seats(&buyer, Uuid::now_v7(), &[seat(1)])
        .await
        .expect_err("not on sale");
    assert_eq!(
        (unpublished.code(), reason(&unpublished).as_str()),
        (Code::FailedPrecondition, "EVENT_NOT_ON_SALE")
    );
    let unknown = client
        .get_availability(pb::GetAvailabilityRequest {
            event_id: Uuid::now_v7().to_string(),
            counts_only: true,
        })
        .await
        .expect_err("not on sale");
    assert_eq!(
        (unknown.code(), reason(&unknown).as_str()),
        (Code::FailedPrecondition, "EVENT_NOT_ON_SALE")
    );

    for (tier, quantity, field) in [
        ("floor", 0, "quantity"),
        ("floor", 1_000, "quantity"),
        ("", 1, "tier_id"),
        ("balcony", 1, "tier_id"),
    ] {
        let status = client
            .hold_quantity(authed(
                &buyer,
                pb::HoldQuantityRequest {
                    event_id: event.to_string(),
                    tier_id: tier.into(),
                    quantity,
                    ttl: None,
                },
            ))
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{tier} {quantity}: {status:?}"
        );
        assert!(status.message().contains(field), "{}", status.message());
    }
    let anonymous = client
        .hold_seats(pb::HoldSeatsRequest {
            event_id: event.to_string(),
            seat_ids: vec![seat(1)],
            ttl: None,
        })
        .await
        .expect_err("anonymous");
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    let after = s.availability(event).await;
    assert_eq!(before.tiers, after.tiers, "bad input changed availability");
    assert_eq!(before.seats, after.seats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_sees_and_releases_a_hold_and_only_catalog_configures() {
    let s = stack().await;
    let (org, organizer) = s.organizer().await;
    let event = s.event(org, 5, 0, 10).await;
    let (_, alice) = s.user(&[]).await;
    let (_, mallory) = s.user(&[]).await;
    let hold = s.hold_seats(&alice, event, &[seat(0)]).await.expect("held");
    let mut client = s.client();
    let get = client
        .get_hold(authed(
            &mallory,
            pb::GetHoldRequest {
                hold_id: hold.id.clone(),
            },
        ))
        .await;
    assert_eq!(get.expect_err("not hers").code(), Code::NotFound);
    let release = client
        .release_hold(authed(
            &mallory,
            pb::ReleaseHoldRequest {
                hold_id: hold.id.clone(),
            },
        ))
        .await;
    assert_eq!(release.expect_err("not hers").code(), Code::NotFound);
    let commit = s
        .commit(&mallory, hold.id.clone(), Uuid::now_v7().to_string())
        .await;
    assert_eq!(commit.expect_err("not hers").code(), Code::PermissionDenied);
    client
        .get_hold(authed(
            &alice,
            pb::GetHoldRequest {
                hold_id: hold.id.clone(),
            },
        ))
        .await
        .expect("hers");

    // Configuring and closing events is catalog's, by service credential: no end user's token
    // will do, not even the organization's own, and no other service's credential either.
    let configure = || pb::ConfigureEventRequest {
        event_id: Uuid::now_v7().to_string(),
        version: 1,
        organization_id: org.to_string(),
        per_customer_limit: 4,
        seats: vec![pb::SeatAssignment {
            seat_id: "a".into(),
            tier_id: "t".into(),
        }],
        quotas: vec![],
    };
    for token in [&alice, &organizer] {
        let refused = client
            .configure_event(authed(token, configure()))
            .await
            .expect_err("an end user");
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    let refused = client
        .configure_event(s.as_orders(configure()))
        .await
        .expect_err("orders is not catalog");
    assert_eq!(refused.code(), Code::PermissionDenied);
    client
        .configure_event(s.as_catalog(configure()))
        .await
        .expect("catalog");
    let close = client
        .close_event(authed(
            &organizer,
            pb::CloseEventRequest {
                event_id: event.to_string(),
            },
        ))
        .await;
    assert_eq!(close.expect_err("an end user").code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_is_idempotent_on_the_order_and_returned_seats_sell_again() {
    let s = stack().await;
    let org = Uuid::now_v7();
    let event = s.event(org, 4, 0, 10).await;
    let (_, alice) = s.user(&[]).await;
    let (_, bob) = s.user(&[]).await;
    let hold = s
        .hold_seats(&alice, event, &[seat(0), seat(1)])
        .await
        .expect("held");
    let order = Uuid::now_v7().to_string();
    let mut client = s.client();
    let commit = || {
        s.as_orders(pb::CommitHoldRequest {
            hold_id: hold.id.clone(),
            order_id: order.clone(),
            customer_id: subject_of(&alice).to_string(),
        })
    };
    let first = client
        .commit_hold(commit())
        .await
        .expect("committed")
        .into_inner();
    let again = client
        .commit_hold(commit())
        .await
        .expect("idempotent")
        .into_inner();
    assert_eq!(first.items, again.items);
    assert_eq!(first.items.len(), 2);
    // Once Redis has forgotten the hold (flushed), a replay is answered from PostgreSQL, to
    // the hold's owner only, and no other hold can be committed for the same order.
    s.flush_redis().await;
    let after_flush = client
        .commit_hold(commit())
        .await
        .expect("a replay after a flush")
        .into_inner();
    assert_eq!(first.items, after_flush.items);
    let stranger = client
        .commit_hold(s.as_orders(pb::CommitHoldRequest {
            hold_id: hold.id.clone(),
            order_id: order.clone(),
            customer_id: subject_of(&bob).to_string(),
        }))
        .await
        .expect_err("not bob's hold");
    assert_eq!(stranger.code(), Code::PermissionDenied);
    let second_hold = s.hold_seats(&alice, event, &[seat(2)]).await.expect("held");
    let same_order = s
        .commit(&alice, second_hold.id.clone(), order.clone())
        .await
        .expect_err("the order is committed with the first hold");
    assert_eq!(reason(&same_order), "ORDER_COMMITTED");
    let states = seat_states(&s.availability(event).await);
    assert_eq!(
        states[&seat(2)],
        pb::SeatStatus::Held as i32,
        "the refused commit keeps the hold"
    );
    client
        .release_hold(authed(
            &alice,
            pb::ReleaseHoldRequest {
                hold_id: second_hold.id.clone(),
            },
        ))
        .await
        .expect("the kept hold is still active");
    let other_order = s
        .commit(&alice, hold.id.clone(), Uuid::now_v7().to_string())
        .await
        .expect_err("one hold, one order");
    assert_eq!(other_order.code(), Code::FailedPrecondition);

    let states = seat_states(&s.availability(event).await);
    assert_eq!(states[&seat(0)], pb::SeatStatus::Sold as i32);
    let sold = s.hold_seats(&bob, event, &[seat(0)]).await.expect_err("sold");
    assert_eq!(reason(&sold), "SEAT_UNAVAILABLE");

    // A refund returns seat 0 (only once), and Bob can buy it.
    let order_id = Uuid::parse_str(&order).expect("order id");
    let seat_zero = [Item {
        tier_id: "standard".into(),
        seat_id: Some(seat(0)),
        ga_area_id: None,
        quantity: 1,
    }];
    let returned = s
        .inventory
        .release_sold(order_id, &seat_zero)
        .await
        .expect("returned");
    assert_eq!(returned.seats, vec![seat(0)]);
    let again = s
        .inventory
        .release_sold(order_id, &seat_zero)
        .await
        .expect("again");
    assert!(
        again.seats.is_empty() && again.quantities.is_empty(),
        "returned once"
    );
    let bobs = s.hold_seats(&bob, event, &[seat(0)]).await.expect("free again");
    s.commit(&bob, bobs.id, Uuid::now_v7().to_string())
        .await
        .expect("sold to bob");
    let standard = s
        .availability(event)
        .await
        .tiers
        .into_iter()
        .find(|t| t.tier_id == "standard")
        .expect("tier");
    assert_eq!((standard.sold, standard.held, standard.free), (2, 0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_customer_limit_counts_held_and_bought_places() {
    let s = stack().await;
    let org = Uuid::now_v7();
    let event = s.event(org, 10, 10, 3).await;
    let (_, buyer) = s.user(&[]).await;
    let hold = s
        .hold_seats(&buyer, event, &[seat(0), seat(1)])
        .await
        .expect("2 of 3");
    s.commit(&buyer, hold.id, Uuid::now_v7().to_string())
        .await
        .expect("bought 2");
    let over = s
        .hold_quantity(&buyer, event, "floor", 2, None)
        .await
        .expect_err("2 + 2 > 3");
    assert_eq!(reason(&over), "PER_CUSTOMER_LIMIT");
    s.hold_quantity(&buyer, event, "floor", 1, None)
        .await
        .expect("the third place");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quantity_holds_pick_the_best_free_seats_in_order() {
    let s = stack().await;
    let org = Uuid::now_v7();
    let event = s.event(org, 6, 0, 10).await;
    let (_, alice) = s.user(&[]).await;
    let (_, bob) = s.user(&[]).await;
    s.hold_seats(&alice, event, &[seat(0), seat(2)])
        .await
        .expect("held");
    let hold = s
        .client()
        .hold_quantity(authed(
            &bob,
            pb::HoldQuantityRequest {
                event_id: event.to_string(),
                tier_id: "standard".into(),
                quantity: 3,
                ttl: None,
            },
        ))
        .await
        .expect("best available")
        .into_inner();
    let seats: Vec<String> = hold
        .items
        .iter()
        .filter_map(|i| match &i.place {
            Some(pb::hold_item::Place::SeatId(s)) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(seats, [seat(1), seat(3), seat(4)]);
    let refused = s
        .client()
        .hold_quantity(authed(
            &bob,
            pb::HoldQuantityRequest {
                event_id: event.to_string(),
                tier_id: "standard".into(),
                quantity: 2,
                ttl: None,
            },
        ))
        .await
        .expect_err("one seat left");
    assert_eq!(reason(&refused), "NOT_ENOUGH_AVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_available_takes_back_seats_freed_by_release_expiry_and_refund() {
    let s = stack().await;
    let org = Uuid::now_v7();
    let event = s.event(org, 6, 0, 10).await;
    let (_, alice) = s.user(&[]).await;
    let (_, bob) = s.user(&[]).await;
    let best = |token: &str, ttl: Option<prost_types::Duration>| {
        let mut client = s.client();
        let request = authed(
            token,
            pb::HoldQuantityRequest {
                event_id: event.to_string(),
                tier_id: "standard".into(),
                quantity: 1,
                ttl,
            },
        );
        async move {
            let hold = client.hold_quantity(request).await.expect("a seat").into_inner();
            let seat = match &hold.items[0].place {
                Some(pb::hold_item::Place::SeatId(seat)) => seat.clone(),
                other => panic!("a seat, got {other:?}"),
            };
            (hold.id, seat)
        }
    };
    // Released: the best seat comes back.
    let (first, seat0) = best(&alice, None).await;
    assert_eq!(seat0, seat(0));
    s.client()
        .release_hold(authed(&alice, pb::ReleaseHoldRequest { hold_id: first }))
        .await
        .expect("released");
    let (kept, again) = best(&bob, None).await;
    assert_eq!(again, seat(0), "released seats are best available again");

    // Expired: likewise, without anyone asking.
    let (_, seat1) = best(&alice, Some(prost_types::Duration { seconds: 1, nanos: 0 })).await;
    assert_eq!(seat1, seat(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, after_expiry) = best(&alice, None).await;
    assert_eq!(after_expiry, seat(1), "expired seats are best available again");

    // Sold: never offered; refunded: offered again.
    let order = Uuid::now_v7().to_string();
    s.commit(&bob, kept, order.clone()).await.expect("sold");
    let (_, next) = best(&bob, None).await;
    assert_eq!(next, seat(2));
    s.inventory
        .release_sold(Uuid::parse_str(&order).expect("order id"), &[])
        .await
        .expect("refunded");
    let (_, refunded) = best(&bob, None).await;
    assert_eq!(refunded, seat(0), "a refunded seat is best available again");
}
