//! A commit never stays half-done: a caller that hangs up mid-commit does not stop it, and a
//! hold a dead process left "committing" is settled from the ledger.

use std::time::Duration;

use diesel_async::{AsyncConnection, RunQueryDsl};
use svc_inventory::store;
use ticketing_proto::ticketing::inventory::v1 as pb;
use uuid::Uuid;

use crate::helpers::{Stack, authed, seat, seat_states, stack, stack_with, subject_of};

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(ticketing_testkit::redis_url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

async fn hold_status(s: &Stack, token: &str, hold: &str) -> i32 {
    s.client()
        .get_hold(authed(token, pb::GetHoldRequest { hold_id: hold.into() }))
        .await
        .expect("hold")
        .into_inner()
        .status
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

async fn ledger(s: &Stack, event: Uuid) -> Vec<(String, i64)> {
    let mut db = s.pool.get().await.expect("conn");
    store::seat_sale_counts(&mut db, event).await.expect("counts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_caller_hangs_up_still_ends_as_one_sale() {
    let s = stack().await;
    let event = s.event(Uuid::now_v7(), 3, 0, 10).await;
    let (_, alice) = s.user(&[]).await;
    let hold = s.hold_seats(&alice, event, &[seat(0)]).await.expect("held");
    // The ledger is locked: the commit gets past Redis and waits in PostgreSQL...
    let url = s.database_url();
    let mut locker = diesel_async::AsyncPgConnection::establish(&url)
        .await
        .expect("conn");
    diesel::sql_query("BEGIN")
        .execute(&mut locker)
        .await
        .expect("begin");
    diesel::sql_query("LOCK TABLE commits IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock");
    let order = Uuid::now_v7().to_string();
    let request = || pb::CommitHoldRequest {
        hold_id: hold.id.clone(),
        order_id: order.clone(),
        customer_id: subject_of(&alice).to_string(),
    };
    // ...and its caller gives up there.
    let mut impatient = s.as_orders(request());
    impatient.set_timeout(Duration::from_millis(300));
    let gave_up = s.client().commit_hold(impatient).await.expect_err("timed out");
    assert!(
        matches!(
            gave_up.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{gave_up:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    diesel::sql_query("COMMIT")
        .execute(&mut locker)
        .await
        .expect("unlock");
    // The commit ran to its end: sold once, in the ledger and in what buyers see.
    eventually("the seat is sold in Redis", || async {
        seat_states(&s.availability(event).await)[&seat(0)] == pb::SeatStatus::Sold as i32
    })
    .await;
    assert_eq!(ledger(&s, event).await, vec![(seat(0), 1)]);
    assert_eq!(
        hold_status(&s, &alice, &hold.id).await,
        pb::HoldStatus::Committed as i32
    );
    let standard = s
        .counts(event)
        .await
        .tiers
        .into_iter()
        .find(|t| t.tier_id == "standard")
        .expect("tier");
    assert_eq!(
        (standard.held, standard.sold, standard.free),
        (0, 1, 2),
        "no drift"
    );
    // Its caller's retry gets the sale it asked for.
    let again = s
        .client()
        .commit_hold(s.as_orders(request()))
        .await
        .expect("the retry")
        .into_inner();
    assert_eq!(again.items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_a_dead_process_left_committing_are_settled_from_the_ledger() {
    let s = stack_with(|config| config.holds.commit_recovery_after = Duration::from_millis(500)).await;
    let event = s.event(Uuid::now_v7(), 4, 0, 10).await;
    let (_, alice) = s.user(&[]).await;
    let mut redis = redis().await;
    let prefix = s.redis.prefix.clone();
    let event_prefix = format!("{prefix}:{{{event}}}");
    let long_ago = chrono::Utc::now().timestamp_millis() - 60_000;

    // Died after Redis marked the hold, before PostgreSQL heard of the sale: given back.
    let lost = s.hold_seats(&alice, event, &[seat(0)]).await.expect("held");
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(format!("{prefix}:hold:{}", lost.id))
        .arg("status")
        .arg("committing")
        .ignore()
        .cmd("ZREM")
        .arg(format!("{event_prefix}:exp"))
        .arg(&lost.id)
        .ignore()
        .cmd("ZADD")
        .arg(format!("{event_prefix}:committing"))
        .arg(long_ago)
        .arg(&lost.id)
        .ignore()
        .query_async(&mut redis)
        .await
        .expect("a commit cut short");

    // Died after PostgreSQL recorded the sale, before Redis did: finished.
    let sold = s.hold_seats(&alice, event, &[seat(1)]).await.expect("held");
    s.commit(&alice, sold.id.clone(), Uuid::now_v7().to_string())
        .await
        .expect("committed");
    let owner = subject_of(&alice).to_string();
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(format!("{prefix}:hold:{}", sold.id))
        .arg("status")
        .arg("committing")
        .ignore()
        .cmd("ZADD")
        .arg(format!("{event_prefix}:committing"))
        .arg(long_ago)
        .arg(&sold.id)
        .ignore()
        .cmd("SREM")
        .arg(format!("{event_prefix}:sold"))
        .arg(seat(1))
        .ignore()
        .cmd("HSET")
        .arg(format!("{event_prefix}:held"))
        .arg(seat(1))
        .arg(&sold.id)
        .ignore()
        .cmd("HINCRBY")
        .arg(format!("{event_prefix}:count"))
        .arg("standard:held")
        .arg(1)
        .ignore()
        .cmd("HINCRBY")
        .arg(format!("{event_prefix}:count"))
        .arg("standard:sold")
        .arg(-1)
        .ignore()
        .cmd("HINCRBY")
        .arg(format!("{event_prefix}:cust"))
        .arg(&owner)
        .arg(1)
        .ignore()
        .cmd("HINCRBY")
        .arg(format!("{event_prefix}:cust"))
        .arg(format!("{owner}:sold"))
        .arg(-1)
        .ignore()
        .cmd("SADD")
        .arg(format!("{prefix}:active"))
        .arg(&event_prefix)
        .ignore()
        .query_async(&mut redis)
        .await
        .expect("a sale Redis never heard of");

    eventually("both half-done commits are settled", || async {
        hold_status(&s, &alice, &lost.id).await == pb::HoldStatus::Active as i32
            && hold_status(&s, &alice, &sold.id).await == pb::HoldStatus::Committed as i32
    })
    .await;
    let states = seat_states(&s.availability(event).await);
    assert_eq!(
        states[&seat(0)],
        pb::SeatStatus::Held as i32,
        "still the owner's hold"
    );
    assert_eq!(states[&seat(1)], pb::SeatStatus::Sold as i32);
    assert_eq!(ledger(&s, event).await, vec![(seat(1), 1)]);
    let standard = s
        .counts(event)
        .await
        .tiers
        .into_iter()
        .find(|t| t.tier_id == "standard")
        .expect("tier");
    assert_eq!(
        (standard.held, standard.sold, standard.free),
        (1, 1, 2),
        "no drift"
    );
    // The hold given back expires on time, or is committed like any other.
    s.commit(&alice, lost.id.clone(), Uuid::now_v7().to_string())
        .await
        .expect("the returned hold commits");
}

/// Makes Redis forget the sale of `seat` (shown free again), as a lost write would.
async fn forget_sale(s: &Stack, event: Uuid, seat: &str) {
    let event_prefix = format!("{}:{{{event}}}", s.redis.prefix);
    let mut redis = redis().await;
    let _: () = redis::pipe()
        .cmd("SREM")
        .arg(format!("{event_prefix}:sold"))
        .arg(seat)
        .ignore()
        .cmd("HINCRBY")
        .arg(format!("{event_prefix}:count"))
        .arg("standard:sold")
        .arg(-1)
        .ignore()
        .cmd("ZADD")
        .arg(format!("{event_prefix}:free:standard"))
        .arg(0)
        .arg(seat)
        .ignore()
        .query_async(&mut redis)
        .await
        .expect("a sale Redis forgot");
}

fn standard(availability: &pb::Availability) -> (i32, i32, i32) {
    let tier = availability
        .tiers
        .iter()
        .find(|t| t.tier_id == "standard")
        .expect("tier");
    (tier.free, tier.held, tier.sold)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drift_between_redis_and_the_ledger_is_repaired_only_when_it_lasts() {
    let s = stack().await;
    let event = s.event(Uuid::now_v7(), 4, 0, 10).await;
    let (_, alice) = s.user(&[]).await;
    let hold = s.hold_seats(&alice, event, &[seat(0)]).await.expect("held");
    s.commit(&alice, hold.id, Uuid::now_v7().to_string())
        .await
        .expect("sold");
    let reconciler = svc_inventory::inventory::Reconciler::new(s.inventory.clone());
    assert_eq!(reconciler.reconcile().await.expect("checked"), 0, "no drift");
    forget_sale(&s, event, &seat(0)).await;
    assert_eq!(standard(&s.counts(event).await), (4, 0, 0), "shown free");
    let drift = s.inventory.drift_of(event).await.expect("read").expect("loaded");
    assert_eq!(drift.sold_shown_free, [seat(0)]);
    assert_eq!(drift.tier_counts, [("standard".to_string(), 0, 1)]);
    // Seen once it may be a commit between its steps: left alone.
    assert_eq!(reconciler.reconcile().await.expect("checked"), 1);
    assert_eq!(standard(&s.counts(event).await), (4, 0, 0));
    // Seen again, unchanged: rebuilt from the ledger.
    assert_eq!(reconciler.reconcile().await.expect("checked"), 1);
    assert_eq!(standard(&s.counts(event).await), (3, 0, 1));
    assert_eq!(
        seat_states(&s.availability(event).await)[&seat(0)],
        pb::SeatStatus::Sold as i32
    );
    assert_eq!(reconciler.reconcile().await.expect("checked"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_reconciles_on_its_own_and_live_holds_survive_the_repair() {
    let s = stack_with(|config| config.holds.reconcile_interval = Duration::from_millis(300)).await;
    let event = s.event(Uuid::now_v7(), 4, 0, 10).await;
    let (_, alice) = s.user(&[]).await;
    let (_, bob) = s.user(&[]).await;
    let sold = s.hold_seats(&alice, event, &[seat(0)]).await.expect("held");
    s.commit(&alice, sold.id, Uuid::now_v7().to_string())
        .await
        .expect("sold");
    let live = s.hold_seats(&bob, event, &[seat(1)]).await.expect("held");
    forget_sale(&s, event, &seat(0)).await;
    eventually("the forgotten sale is shown sold again", || async {
        standard(&s.counts(event).await) == (2, 1, 1)
    })
    .await;
    // Bob's hold lived through the rebuild and is still his to buy.
    s.commit(&bob, live.id, Uuid::now_v7().to_string())
        .await
        .expect("bought");
    assert_eq!(standard(&s.counts(event).await), (2, 0, 2));
}
