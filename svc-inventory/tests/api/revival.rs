//! ReclaimPlaces: an expired order whose payment came late gets its places back when they are
//! still free, all or none, once; and the order's closing, heard before or after, never returns
//! the places of the order it revived.

use diesel_async::AsyncConnection;
use svc_inventory::events::{Heard, OrderReturns};
use ticketing_platform::{auth::Role, messaging::Handler};
use ticketing_proto::ticketing::{events::v1 as events, inventory::v1 as pb};
use uuid::Uuid;

use crate::helpers::*;

impl Stack {
    /// Applies `order.expired` as inventory's consumer does (its own transaction).
    async fn hear_expiry(&self, order: &str, hold: &str) {
        let expired = Heard::OrderExpired(events::OrderExpired {
            order_id: order.into(),
            hold_id: hold.into(),
            ..Default::default()
        });
        let handler = OrderReturns(self.inventory.clone());
        let mut conn = self.pool.get().await.expect("db");
        conn.transaction::<_, anyhow::Error, _>(async |conn| handler.handle(conn, &expired).await)
            .await
            .expect("handled");
    }

    async fn reclaim(
        &self,
        order: &str,
        event: Uuid,
        buyer_token: &str,
        hold: &str,
        items: Vec<pb::HoldItem>,
    ) -> Result<Vec<pb::HoldItem>, tonic::Status> {
        self.client()
            .reclaim_places(self.as_orders(pb::ReclaimPlacesRequest {
                order_id: order.into(),
                event_id: event.to_string(),
                customer_id: subject_of(buyer_token).to_string(),
                hold_id: hold.into(),
                items,
            }))
            .await
            .map(|r| r.into_inner().items)
    }
}

fn seat_items(seats: &[String]) -> Vec<pb::HoldItem> {
    seats
        .iter()
        .map(|s| pb::HoldItem {
            tier_id: "standard".into(),
            place: Some(pb::hold_item::Place::SeatId(s.clone())),
            quantity: 1,
        })
        .collect()
}

fn sold_seats(availability: &pb::Availability) -> Vec<String> {
    let mut sold: Vec<String> = availability
        .seats
        .iter()
        .filter(|s| s.status == pb::SeatStatus::Sold as i32)
        .map(|s| s.seat_id.clone())
        .collect();
    sold.sort();
    sold
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_orders_places_come_back_to_it_once_and_a_later_closing_returns_nothing() {
    let s = stack().await;
    let (org, _) = s.organizer().await;
    let event = s.event(org, 10, 0, 10).await;
    let (_, buyer) = s.user(&[Role::Customer]).await;
    let seats = vec![seat(0), seat(1)];
    let hold = s.hold_seats(&buyer, event, &seats).await.expect("hold");
    let order = Uuid::now_v7().to_string();
    s.commit(&buyer, &hold.id, &order).await.expect("committed");
    // The order expired: its places go back on sale.
    s.hear_expiry(&order, &hold.id).await;
    assert!(sold_seats(&s.availability(event).await).is_empty());

    let items = s
        .reclaim(&order, event, &buyer, &hold.id, seat_items(&seats))
        .await
        .expect("taken back");
    assert_eq!(items.len(), 2);
    assert_eq!(sold_seats(&s.availability(event).await), seats);
    // A replay changes nothing, and a closing heard now (a redelivery) returns nothing.
    let again = s
        .reclaim(&order, event, &buyer, &hold.id, seat_items(&seats))
        .await
        .expect("replayed");
    assert_eq!(again, items);
    s.hear_expiry(&order, &hold.id).await;
    let availability = s.availability(event).await;
    assert_eq!(sold_seats(&availability), seats);
    let standard = availability
        .tiers
        .iter()
        .find(|t| t.tier_id == "standard")
        .expect("tier");
    assert_eq!((standard.sold, standard.held, standard.free), (2, 0, 8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revival_before_the_closing_keeps_the_places_and_the_closing_returns_nothing() {
    let s = stack().await;
    let (org, _) = s.organizer().await;
    let event = s.event(org, 10, 0, 10).await;
    let (_, buyer) = s.user(&[Role::Customer]).await;
    let seats = vec![seat(3)];
    let hold = s.hold_seats(&buyer, event, &seats).await.expect("hold");
    let order = Uuid::now_v7().to_string();
    s.commit(&buyer, &hold.id, &order).await.expect("committed");
    // The late payment is heard before the expiry reached inventory.
    s.reclaim(&order, event, &buyer, &hold.id, seat_items(&seats))
        .await
        .expect("still the order's");
    s.hear_expiry(&order, &hold.id).await;
    assert_eq!(sold_seats(&s.availability(event).await), seats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn places_taken_since_the_expiry_are_not_taken_back_and_none_of_the_others_either() {
    let s = stack().await;
    let (org, _) = s.organizer().await;
    let event = s.event(org, 10, 0, 10).await;
    let (_, buyer) = s.user(&[Role::Customer]).await;
    let (_, other) = s.user(&[Role::Customer]).await;
    let seats = vec![seat(0), seat(1)];
    let hold = s.hold_seats(&buyer, event, &seats).await.expect("hold");
    let order = Uuid::now_v7().to_string();
    s.hear_expiry(&order, &hold.id).await;
    let theirs = s
        .hold_seats(&other, event, &seats[1..])
        .await
        .expect("the other buyer holds one");
    let refused = s
        .reclaim(&order, event, &buyer, &hold.id, seat_items(&seats))
        .await
        .expect_err("taken");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&refused), "PLACES_TAKEN");
    let states = seat_states(&s.availability(event).await);
    assert_eq!(states[&seat(0)], pb::SeatStatus::Free as i32, "all or none");
    assert_eq!(states[&seat(1)], pb::SeatStatus::Held as i32);
    // The other buyer's hold is untouched and still theirs to buy.
    s.commit(&other, &theirs.id, Uuid::now_v7().to_string())
        .await
        .expect("their sale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quantity_comes_back_within_the_quota() {
    let s = stack().await;
    let (org, _) = s.organizer().await;
    let event = s.event(org, 0, 5, 10).await;
    let (_, buyer) = s.user(&[Role::Customer]).await;
    let (_, other) = s.user(&[Role::Customer]).await;
    let hold = s
        .hold_quantity(&buyer, event, "floor", 3, None)
        .await
        .expect("hold")
        .into_inner();
    let order = Uuid::now_v7().to_string();
    s.hear_expiry(&order, &hold.id).await;
    let floor = || pb::HoldItem {
        tier_id: "floor".into(),
        place: None,
        quantity: 3,
    };
    // Meanwhile another buyer takes 3 of the 5: only 2 are left.
    let theirs = s
        .hold_quantity(&other, event, "floor", 3, None)
        .await
        .expect("hold")
        .into_inner();
    let refused = s
        .reclaim(&order, event, &buyer, &hold.id, vec![floor()])
        .await
        .expect_err("not enough");
    assert_eq!(reason(&refused), "PLACES_TAKEN");
    s.client()
        .release_hold(authed(
            &other,
            pb::ReleaseHoldRequest {
                hold_id: theirs.id.clone(),
            },
        ))
        .await
        .expect("released");
    s.reclaim(&order, event, &buyer, &hold.id, vec![floor()])
        .await
        .expect("taken back");
    let counts = s.counts(event).await;
    let floor_counts = counts.tiers.iter().find(|t| t.tier_id == "floor").expect("floor");
    assert_eq!(
        (floor_counts.sold, floor_counts.held, floor_counts.free),
        (3, 0, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reclaims_are_refused_by_field() {
    let s = stack().await;
    let (org, _) = s.organizer().await;
    let event = s.event(org, 10, 5, 10).await;
    let (_, buyer) = s.user(&[Role::Customer]).await;
    let mixed = vec![
        seat_items(&[seat(0)]).remove(0),
        pb::HoldItem {
            tier_id: "floor".into(),
            place: None,
            quantity: 1,
        },
    ];
    for (items, field) in [(vec![], "items"), (mixed, "items")] {
        let refused = s
            .reclaim(
                &Uuid::now_v7().to_string(),
                event,
                &buyer,
                &Uuid::now_v7().to_string(),
                items,
            )
            .await
            .expect_err("refused");
        assert_eq!(
            refused.code(),
            tonic::Code::InvalidArgument,
            "{field}: {refused:?}"
        );
    }
    let refused = s
        .reclaim(
            "not-an-id",
            event,
            &buyer,
            &Uuid::now_v7().to_string(),
            seat_items(&[seat(0)]),
        )
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    // Nothing was sold or held by any of them.
    let counts = s.counts(event).await;
    assert!(counts.tiers.iter().all(|t| t.sold == 0 && t.held == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reclaims_of_one_order_both_get_its_places_and_none_is_refused() {
    let s = stack().await;
    let (org, _) = s.organizer().await;
    let event = s.event(org, 10, 0, 10).await;
    let (_, buyer) = s.user(&[Role::Customer]).await;
    let seats = vec![seat(4), seat(5)];
    let hold = s.hold_seats(&buyer, event, &seats).await.expect("hold");
    let order = Uuid::now_v7().to_string();
    s.commit(&buyer, &hold.id, &order).await.expect("committed");
    s.hear_expiry(&order, &hold.id).await;
    // A retry while the first call is still at work (its caller timed out, or died): the
    // second waits for the first and answers as it did, never "taken".
    let (first, second) = tokio::join!(
        s.reclaim(&order, event, &buyer, &hold.id, seat_items(&seats)),
        s.reclaim(&order, event, &buyer, &hold.id, seat_items(&seats)),
    );
    let (first, second) = (first.expect("first"), second.expect("second"));
    assert_eq!(first, second);
    assert_eq!(sold_seats(&s.availability(event).await), seats);
    let standard = s
        .counts(event)
        .await
        .tiers
        .into_iter()
        .find(|t| t.tier_id == "standard")
        .expect("tier");
    assert_eq!((standard.sold, standard.held), (2, 0));
}
