//! Waiting lists: places that come back go to the first in line as an exclusive hold, pass on
//! when the offer runs out or is given up, and nobody outside the line can take them.

use std::{collections::HashSet, future::Future, time::Duration};

use prost::Message;
use svc_inventory::store::Item;
use ticketing_platform::auth::Role;
use ticketing_proto::ticketing::{events::v1 as events, identity::v1::ApiKeyScope, inventory::v1 as pb};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{Stack, authed, reason, seat, seat_states, stack_with};

async fn join(
    s: &Stack,
    token: &str,
    event: Uuid,
    tier: &str,
    quantity: i32,
) -> Result<pb::WaitlistEntry, tonic::Status> {
    s.client()
        .join_waitlist(authed(
            token,
            pb::JoinWaitlistRequest {
                event_id: event.to_string(),
                tier_id: tier.into(),
                quantity,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn leave(s: &Stack, token: &str, entry: &str) -> Result<pb::WaitlistEntry, tonic::Status> {
    s.client()
        .leave_waitlist(authed(
            token,
            pb::LeaveWaitlistRequest {
                entry_id: entry.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// The caller's entry `id` as ListWaitlistEntries shows it.
async fn entry(s: &Stack, token: &str, id: &str) -> pb::WaitlistEntry {
    s.client()
        .list_waitlist_entries(authed(token, pb::ListWaitlistEntriesRequest::default()))
        .await
        .expect("entries")
        .into_inner()
        .entries
        .into_iter()
        .find(|e| e.id == id)
        .expect("the entry is listed")
}

async fn get_hold(s: &Stack, token: &str, id: &str) -> Result<pb::Hold, tonic::Status> {
    s.client()
        .get_hold(authed(token, pb::GetHoldRequest { hold_id: id.into() }))
        .await
        .map(|r| r.into_inner())
}

async fn release(s: &Stack, token: &str, hold: &str) {
    s.client()
        .release_hold(authed(token, pb::ReleaseHoldRequest { hold_id: hold.into() }))
        .await
        .expect("released");
}

/// Waits (up to 10 s) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn status_becomes(s: &Stack, token: &str, id: &str, status: pb::WaitlistStatus) -> pb::WaitlistEntry {
    eventually(&format!("entry {id} is {status:?}"), || async {
        entry(s, token, id).await.status == status as i32
    })
    .await;
    entry(s, token, id).await
}

fn tier<'a>(availability: &'a pb::Availability, id: &str) -> &'a pb::TierAvailability {
    availability.tiers.iter().find(|t| t.tier_id == id).expect("tier")
}

fn seats_of(hold: &pb::Hold) -> Vec<String> {
    hold.items
        .iter()
        .filter_map(|i| match &i.place {
            Some(pb::hold_item::Place::SeatId(seat)) => Some(seat.clone()),
            _ => None,
        })
        .collect()
}

async fn fast_stack() -> Stack {
    stack_with(|c| {
        c.holds.sweep_interval = Duration::from_millis(100);
        c.waitlist.offer_ttl = Duration::from_secs(600);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn places_that_come_back_are_offered_to_the_first_in_line_and_to_nobody_else() {
    let s = fast_stack().await;
    let mut offers = s.tap("waitlist.*").await;
    let event = s.event(Uuid::now_v7(), 4, 0, 4).await;
    let (_, alice) = s.user(&[]).await;
    let (_, bob) = s.user(&[]).await;
    let (carol_id, carol) = s.user(&[]).await;
    let (_, dave) = s.user(&[]).await;
    let (_, erin) = s.user(&[]).await;
    let alices = s
        .hold_seats(&alice, event, &[seat(0), seat(1)])
        .await
        .expect("held");
    let bobs = s
        .hold_seats(&bob, event, &[seat(2), seat(3)])
        .await
        .expect("held");

    let carols = join(&s, &carol, event, "standard", 2).await.expect("joined");
    assert_eq!(carols.status, pb::WaitlistStatus::Waiting as i32);
    assert_eq!(carols.ahead, 0);
    let again = join(&s, &carol, event, "standard", 2)
        .await
        .expect("joined again");
    assert_eq!(again.id, carols.id, "joining twice finds the same entry");
    let daves = join(&s, &dave, event, "standard", 1).await.expect("joined");
    assert_eq!(daves.ahead, 1);

    // Alice gives her two seats back: they are Carol's, held for her under her entry's id.
    release(&s, &alice, &alices.id).await;
    let offer = get_hold(&s, &carol, &carols.id).await.expect("Carol's offer");
    assert_eq!(offer.status, pb::HoldStatus::Active as i32);
    assert_eq!(offer.owner_id, carol_id.to_string());
    assert_eq!(seats_of(&offer), vec![seat(0), seat(1)]);
    let availability = s.availability(event).await;
    assert_eq!(tier(&availability, "standard").free, 0);
    assert_eq!(seat_states(&availability)[&seat(0)], pb::SeatStatus::Held as i32);

    // Outsiders can neither take the offered seats nor see the offer.
    let taken = s.hold_seats(&erin, event, &[seat(0)]).await.expect_err("offered");
    assert_eq!(reason(&taken), "SEAT_UNAVAILABLE");
    let none = s
        .hold_quantity(&erin, event, "standard", 1, None)
        .await
        .expect_err("nothing free");
    assert_eq!(reason(&none), "NOT_ENOUGH_AVAILABLE");
    let hidden = get_hold(&s, &erin, &carols.id).await.expect_err("not Erin's");
    assert_eq!(hidden.code(), Code::NotFound);
    let foreign = leave(&s, &erin, &carols.id).await.expect_err("not Erin's");
    assert_eq!(foreign.code(), Code::NotFound);

    // Recorded, and told once on the backbone.
    let offered = status_becomes(&s, &carol, &carols.id, pb::WaitlistStatus::Offered).await;
    assert_eq!(offered.offer_hold_id, carols.id);
    assert_eq!(offered.offer_expires_at, offer.expires_at);
    let envelope = offers.next(Duration::from_secs(10)).await.expect("offer_made");
    assert_eq!(envelope.event_type, "waitlist.offer_made");
    let made = events::WaitlistOfferMade::decode(envelope.payload.as_slice()).expect("payload");
    assert_eq!(
        (
            made.hold_id.as_str(),
            made.buyer_id.as_str(),
            made.quantity,
            made.seat_ids.clone()
        ),
        (
            carols.id.as_str(),
            carol_id.to_string().as_str(),
            2,
            vec![seat(0), seat(1)]
        )
    );
    assert_eq!(made.expires_at, offer.expires_at);

    // Bob's two come back: Dave wants one and gets the better; the line is empty, so the
    // other is free for anyone.
    release(&s, &bob, &bobs.id).await;
    let daves_offer = get_hold(&s, &dave, &daves.id).await.expect("Dave's offer");
    assert_eq!(seats_of(&daves_offer), vec![seat(2)]);
    let states = seat_states(&s.availability(event).await);
    assert_eq!(states[&seat(3)], pb::SeatStatus::Free as i32);
    s.hold_seats(&erin, event, &[seat(3)])
        .await
        .expect("seat 3 is free");

    // Carol buys her offer like any hold.
    s.commit(&carol, &carols.id, Uuid::now_v7().to_string())
        .await
        .expect("committed");
    status_becomes(&s, &carol, &carols.id, pb::WaitlistStatus::Fulfilled).await;
    let mut types = Vec::new();
    for _ in 0..2 {
        types.push(
            offers
                .next(Duration::from_secs(10))
                .await
                .expect("event")
                .event_type,
        );
    }
    types.sort();
    assert_eq!(types, ["waitlist.offer_ended", "waitlist.offer_made"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_not_taken_passes_to_the_next_in_line() {
    let s = stack_with(|c| {
        c.holds.sweep_interval = Duration::from_millis(100);
        c.waitlist.offer_ttl = Duration::from_secs(2);
    })
    .await;
    let mut ended = s.tap("waitlist.offer_ended").await;
    let event = s.event(Uuid::now_v7(), 0, 3, 5).await;
    let (_, alice) = s.user(&[]).await;
    let (_, bob) = s.user(&[]).await;
    let (_, carol) = s.user(&[]).await;
    let (_, erin) = s.user(&[]).await;
    let alices = s
        .hold_quantity(&alice, event, "floor", 3, None)
        .await
        .expect("held")
        .into_inner();
    let bobs = join(&s, &bob, event, "floor", 2).await.expect("joined");
    let carols = join(&s, &carol, event, "floor", 2).await.expect("joined");

    // Three come back: two are Bob's offer, one waits for Carol (who wants two).
    release(&s, &alice, &alices.id).await;
    let offer = get_hold(&s, &bob, &bobs.id).await.expect("Bob's offer");
    assert_eq!(offer.items[0].quantity, 2);
    assert_eq!(tier(&s.counts(event).await, "floor").free, 0);
    let none = s
        .hold_quantity(&erin, event, "floor", 1, None)
        .await
        .expect_err("kept for Carol");
    assert_eq!(reason(&none), "NOT_ENOUGH_AVAILABLE");

    // Bob lets it run out: Carol gets two of the three, and the last is free again.
    let lapsed = status_becomes(&s, &bob, &bobs.id, pb::WaitlistStatus::Lapsed).await;
    assert_eq!(lapsed.offer_hold_id, bobs.id);
    let carols_offer = get_hold(&s, &carol, &carols.id).await.expect("Carol's offer");
    assert_eq!(carols_offer.items[0].quantity, 2);
    assert_eq!(tier(&s.counts(event).await, "floor").free, 1);
    let envelope = ended.next(Duration::from_secs(10)).await.expect("offer_ended");
    let end = events::WaitlistOfferEnded::decode(envelope.payload.as_slice()).expect("payload");
    assert_eq!(
        (end.entry_id.as_str(), end.outcome.as_str()),
        (bobs.id.as_str(), "lapsed")
    );
    // An entry is offered once: Bob's lapsed entry kept nothing back (the third place is
    // free), and his old hold stays expired.
    assert_eq!(
        entry(&s, &bob, &bobs.id).await.status,
        pb::WaitlistStatus::Lapsed as i32
    );
    assert_eq!(
        get_hold(&s, &bob, &bobs.id).await.expect("his old offer").status,
        pb::HoldStatus::Expired as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_gives_back_what_was_kept_or_offered() {
    let s = fast_stack().await;
    let event = s.event(Uuid::now_v7(), 3, 0, 5).await;
    let (_, alice) = s.user(&[]).await;
    let (_, bob) = s.user(&[]).await;
    let (_, carol) = s.user(&[]).await;
    let (_, erin) = s.user(&[]).await;
    let first = s.hold_seats(&alice, event, &[seat(0)]).await.expect("held");
    let rest = s
        .hold_seats(&alice, event, &[seat(1), seat(2)])
        .await
        .expect("held");
    let bobs = join(&s, &bob, event, "standard", 2).await.expect("joined");

    // One seat comes back: it is kept for Bob, who wants two.
    release(&s, &alice, &first.id).await;
    assert_eq!(
        seat_states(&s.availability(event).await)[&seat(0)],
        pb::SeatStatus::Held as i32
    );
    let left = leave(&s, &bob, &bobs.id).await.expect("left");
    assert_eq!(left.status, pb::WaitlistStatus::Left as i32);
    assert_eq!(
        seat_states(&s.availability(event).await)[&seat(0)],
        pb::SeatStatus::Free as i32
    );
    let twice = leave(&s, &bob, &bobs.id).await.expect("leaving twice");
    assert_eq!(twice.status, pb::WaitlistStatus::Left as i32);

    // Only a sold-out tier has a line: while a seat is free Carol is told to hold it instead.
    let free = join(&s, &carol, event, "standard", 2)
        .await
        .expect_err("a seat is free");
    assert_eq!(reason(&free), "PLACES_AVAILABLE");
    let erins = s
        .hold_seats(&erin, event, &[seat(0)])
        .await
        .expect("the free seat");
    let carols = join(&s, &carol, event, "standard", 2).await.expect("joined");
    release(&s, &alice, &rest.id).await;
    let offer = get_hold(&s, &carol, &carols.id).await.expect("Carol's offer");
    assert_eq!(seats_of(&offer), vec![seat(1), seat(2)]);
    // The line is empty now: what comes back is free for anyone.
    release(&s, &erin, &erins.id).await;
    assert_eq!(
        seat_states(&s.availability(event).await)[&seat(0)],
        pb::SeatStatus::Free as i32
    );
    // She gives the offer up by leaving: the seats are free again.
    leave(&s, &carol, &carols.id).await.expect("left");
    assert_eq!(
        get_hold(&s, &carol, &carols.id).await.expect("offer").status,
        pb::HoldStatus::Released as i32
    );
    assert_eq!(tier(&s.availability(event).await, "standard").free, 3);
    status_becomes(&s, &carol, &carols.id, pb::WaitlistStatus::Left).await;
    let again = leave(&s, &carol, &carols.id).await.expect("leaving twice");
    assert_eq!(again.status, pb::WaitlistStatus::Left as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_returns_on_two_replicas_serve_the_line_in_order_and_each_entry_once() {
    let mut s = fast_stack().await;
    let mut made = s.tap("waitlist.offer_made").await;
    let other = s.replica().await;
    let event = s.event(Uuid::now_v7(), 30, 0, 10).await;
    let mut holds = Vec::new();
    for i in 0..30 {
        let (_, buyer) = s.user(&[]).await;
        let hold = s.hold_seats(&buyer, event, &[seat(i)]).await.expect("held");
        holds.push((buyer, hold.id));
    }
    let mut line = Vec::new();
    for i in 0..10 {
        let (_, waiter) = s.user(&[]).await;
        let quantity = [2, 1, 3][i % 3];
        let entry = join(&s, &waiter, event, "standard", quantity)
            .await
            .expect("joined");
        line.push((waiter, entry, quantity));
    }
    // 13 seats come back at once, through both replicas.
    let mut returning = tokio::task::JoinSet::new();
    for (i, (buyer, hold)) in holds.iter().take(13).enumerate() {
        let mut client = if i % 2 == 0 {
            s.client()
        } else {
            pb::inventory_service_client::InventoryServiceClient::new(other.clone())
        };
        let request = authed(
            buyer,
            pb::ReleaseHoldRequest {
                hold_id: hold.clone(),
            },
        );
        returning.spawn(async move { client.release_hold(request).await.map(drop) });
    }
    while let Some(done) = returning.join_next().await {
        done.expect("task").expect("released");
    }
    // Strict order, whole quantities: the longest head of the line that 13 places cover.
    let mut covered = 0;
    let mut seen = HashSet::new();
    let mut was_offered = Vec::new();
    for (waiter, entry, quantity) in &line {
        let offer = get_hold(&s, waiter, &entry.id).await;
        let head = was_offered.iter().all(|o| *o);
        if head && covered + quantity <= 13 {
            let seats = seats_of(&offer.expect("an offer for the head of the line"));
            assert_eq!(seats.len(), usize::try_from(*quantity).unwrap_or(0));
            for seat in seats {
                assert!(seen.insert(seat), "a seat offered twice");
            }
            covered += quantity;
            was_offered.push(true);
        } else {
            assert_eq!(offer.expect_err("still waiting").code(), Code::NotFound);
            was_offered.push(false);
        }
    }
    assert!(covered > 0);
    let counts = tier(&s.counts(event).await, "standard").clone();
    assert_eq!(
        (counts.free, counts.held),
        (0, 30),
        "the rest is kept for the line"
    );
    // Each offer is recorded (once: an entry has one offer), the others still wait in order.
    eventually("the offers are recorded", || async {
        for ((waiter, entry, _), offered) in line.iter().zip(&was_offered) {
            let want = if *offered {
                pb::WaitlistStatus::Offered
            } else {
                pb::WaitlistStatus::Waiting
            };
            if entry_of(&s, waiter, &entry.id).await.status != want as i32 {
                return false;
            }
        }
        true
    })
    .await;
    let waiting: Vec<i64> = {
        let mut ahead = Vec::new();
        for ((waiter, entry, _), offered) in line.iter().zip(&was_offered) {
            if !offered {
                ahead.push(entry_of(&s, waiter, &entry.id).await.ahead);
            }
        }
        ahead
    };
    assert_eq!(
        waiting,
        (0..i64::try_from(waiting.len()).unwrap_or(0)).collect::<Vec<_>>()
    );
    let mut announced = HashSet::new();
    for _ in was_offered.iter().filter(|o| **o) {
        let envelope = made.next(Duration::from_secs(10)).await.expect("offer_made");
        let offer = events::WaitlistOfferMade::decode(envelope.payload.as_slice()).expect("payload");
        assert!(announced.insert(offer.entry_id), "an offer announced twice");
    }
    made.quiet_for(Duration::from_secs(2))
        .await
        .expect("no more offers announced");
}

async fn entry_of(s: &Stack, token: &str, id: &str) -> pb::WaitlistEntry {
    entry(s, token, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_survives_a_redis_flush_with_its_hold_seats_and_deadline_and_the_line_too() {
    let s = fast_stack().await;
    let event = s.event(Uuid::now_v7(), 4, 0, 5).await;
    let (_, alice) = s.user(&[]).await;
    let (_, bob) = s.user(&[]).await;
    let (_, carol) = s.user(&[]).await;
    let (_, dave) = s.user(&[]).await;
    let (_, erin) = s.user(&[]).await;
    s.hold_seats(&alice, event, &[seat(0)]).await.expect("held");
    let daves = s.hold_seats(&dave, event, &[seat(1)]).await.expect("held");
    let order = Uuid::now_v7();
    let sold = s
        .hold_seats(&alice, event, &[seat(2), seat(3)])
        .await
        .expect("held");
    s.commit(&alice, &sold.id, order.to_string()).await.expect("sold");
    let bobs = join(&s, &bob, event, "standard", 1).await.expect("joined");
    let carols = join(&s, &carol, event, "standard", 1).await.expect("joined");
    // Dave's seat comes back: it is Bob's offer (Alice still holds the better one).
    release(&s, &dave, &daves.id).await;
    let offer = get_hold(&s, &bob, &bobs.id).await.expect("Bob's offer");
    assert_eq!(seats_of(&offer), vec![seat(1)]);
    status_becomes(&s, &bob, &bobs.id, pb::WaitlistStatus::Offered).await;

    s.flush_redis().await;
    // Rebuilt from PostgreSQL: Alice's hold is lost (holds may be), Bob's announced offer is
    // not: the same hold, seat and deadline, though the better seat 0 is free now. Carol, still
    // in line, gets seat 0 at once.
    let states = seat_states(&s.availability(event).await);
    assert_eq!(states[&seat(1)], pb::SeatStatus::Held as i32);
    let again = get_hold(&s, &bob, &bobs.id).await.expect("made again");
    assert_eq!(
        (seats_of(&again), again.expires_at),
        (seats_of(&offer), offer.expires_at)
    );
    let taken = s.hold_seats(&erin, event, &[seat(1)]).await.expect_err("Bob's");
    assert_eq!(reason(&taken), "SEAT_UNAVAILABLE");
    let carols_offer = get_hold(&s, &carol, &carols.id).await.expect("Carol's offer");
    assert_eq!(seats_of(&carols_offer), vec![seat(0)]);

    // A refund after the flush goes to the next in line, and Bob still buys his.
    let (_, frank) = s.user(&[]).await;
    let franks = join(&s, &frank, event, "standard", 1).await.expect("joined");
    s.inventory
        .release_sold(
            order,
            &[Item {
                tier_id: "standard".into(),
                seat_id: Some(seat(2)),
                ga_area_id: None,
                quantity: 1,
            }],
        )
        .await
        .expect("returned");
    let franks_offer = get_hold(&s, &frank, &franks.id).await.expect("Frank's offer");
    assert_eq!(seats_of(&franks_offer), vec![seat(2)]);
    s.commit(&bob, &bobs.id, Uuid::now_v7().to_string())
        .await
        .expect("Bob buys");
    status_becomes(&s, &bob, &bobs.id, pb::WaitlistStatus::Fulfilled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_is_refused_when_places_are_free_over_the_limit_or_after_sales_closed() {
    let s = fast_stack().await;
    let event = s.event(Uuid::now_v7(), 2, 2, 3).await;
    let (_, alice) = s.user(&[]).await;
    let (_, bob) = s.user(&[]).await;

    let free = join(&s, &bob, event, "standard", 1)
        .await
        .expect_err("free seats");
    assert_eq!(reason(&free), "PLACES_AVAILABLE");
    let fewer = join(&s, &bob, event, "standard", 3)
        .await
        .expect_err("2 free, 3 wanted");
    assert_eq!(reason(&fewer), "PLACES_AVAILABLE");
    let bad = join(&s, &bob, event, "standard", 0).await.expect_err("zero");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let unknown = join(&s, &bob, event, "balcony", 1)
        .await
        .expect_err("no such tier");
    assert_eq!(unknown.code(), Code::InvalidArgument);
    let nowhere = join(&s, &bob, Uuid::now_v7(), "standard", 1)
        .await
        .expect_err("no event");
    assert_eq!(reason(&nowhere), "EVENT_NOT_ON_SALE");
    let anonymous = s
        .client()
        .join_waitlist(pb::JoinWaitlistRequest {
            event_id: event.to_string(),
            tier_id: "standard".into(),
            quantity: 1,
        })
        .await
        .expect_err("anonymous");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let over = join(&s, &bob, event, "floor", 4)
        .await
        .expect_err("over the limit");
    assert_eq!(reason(&over), "PER_CUSTOMER_LIMIT");

    // Both tiers sold out: Bob joins the floor for 2; a second entry of 2 would pass the limit
    // of 3.
    let floor = s
        .hold_quantity(&alice, event, "floor", 2, None)
        .await
        .expect("held")
        .into_inner();
    let (_, carl) = s.user(&[]).await;
    let carls = s
        .hold_seats(&carl, event, &[seat(0), seat(1)])
        .await
        .expect("held");
    let bobs = join(&s, &bob, event, "floor", 2).await.expect("joined");
    let over = join(&s, &bob, event, "standard", 2)
        .await
        .expect_err("two lists over the limit");
    assert_eq!(reason(&over), "PER_CUSTOMER_LIMIT");
    // Then Bob holds both seats himself. When the floor's places come back, an offer would take
    // him past the limit: he leaves the line, and the places are free.
    release(&s, &carl, &carls.id).await;
    s.hold_seats(&bob, event, &[seat(0), seat(1)])
        .await
        .expect("his seats");
    release(&s, &alice, &floor.id).await;
    status_becomes(&s, &bob, &bobs.id, pb::WaitlistStatus::Removed).await;
    assert_eq!(tier(&s.counts(event).await, "floor").free, 2);

    // Nobody joins a closed event; its line ends.
    let floor = s
        .hold_quantity(&alice, event, "floor", 2, None)
        .await
        .expect("held")
        .into_inner();
    let (_, carol) = s.user(&[]).await;
    let carols = join(&s, &carol, event, "floor", 1).await.expect("joined");
    s.client()
        .close_event(s.as_catalog(pb::CloseEventRequest {
            event_id: event.to_string(),
        }))
        .await
        .expect("closed");
    let closed = join(&s, &alice, event, "standard", 1).await.expect_err("closed");
    assert_eq!(reason(&closed), "SALES_CLOSED");
    status_becomes(&s, &carol, &carols.id, pb::WaitlistStatus::Removed).await;
    release(&s, &alice, &floor.id).await;
    assert!(
        get_hold(&s, &carol, &carols.id).await.is_err(),
        "no offer after sales closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_organization_and_admins_see_the_list_lengths() {
    let s = fast_stack().await;
    let (org, organizer) = s.organizer().await;
    let event = s.event(org, 2, 0, 4).await;
    let (_, alice) = s.user(&[]).await;
    s.hold_seats(&alice, event, &[seat(0), seat(1)])
        .await
        .expect("held");
    for quantity in [1, 2, 2] {
        let (_, waiter) = s.user(&[]).await;
        join(&s, &waiter, event, "standard", quantity)
            .await
            .expect("joined");
    }
    let (_, other_org) = s.organizer().await;
    let (_, admin) = s.user(&[Role::Admin]).await;
    let reader = s
        .identity
        .api_key(org, &organizer, &[ApiKeyScope::EventsRead])
        .await;
    let writer = s
        .identity
        .api_key(org, &organizer, &[ApiKeyScope::OrdersWrite])
        .await;
    let stats = |token: String| {
        let mut client = s.client();
        async move {
            client
                .get_waitlist_stats(authed(
                    &token,
                    pb::GetWaitlistStatsRequest {
                        event_id: event.to_string(),
                    },
                ))
                .await
                .map(|r| r.into_inner())
        }
    };
    for allowed in [organizer.clone(), admin, reader] {
        let shown = stats(allowed).await.expect("allowed");
        assert_eq!(shown.tiers.len(), 1);
        let standard = &shown.tiers[0];
        assert_eq!(
            (
                standard.tier_id.as_str(),
                standard.waiting,
                standard.places_wanted
            ),
            ("standard", 3, 5)
        );
    }
    for refused in [other_org, alice, writer] {
        assert_eq!(
            stats(refused).await.expect_err("refused").code(),
            Code::PermissionDenied
        );
    }
}
