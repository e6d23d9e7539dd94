//! DESIGN invariants 1 and 2 under concurrency and faults: a seat is never sold twice, a quota
//! never oversold, a hold is all-or-nothing and expires on its own — across a Redis flush too.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use svc_inventory::store;
use ticketing_proto::ticketing::inventory::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{as_service, authed, reason, seat, seat_states, stack, stack_with, subject_of};

/// xorshift: a fixed, dependency-free sequence, so a failure replays the same requests.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

type CommitOutcome = Result<Vec<pb::HoldItem>, tonic::Status>;

fn held_seats(hold: &pb::Hold) -> Vec<String> {
    hold.items
        .iter()
        .filter_map(|i| match &i.place {
            Some(pb::hold_item::Place::SeatId(s)) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_overlapping_holds_never_share_a_seat_and_each_seat_sells_once() {
    let s = stack().await;
    let org = Uuid::now_v7();
    let event = s.event(org, 100, 0, 100).await;
    let mut buyers = Vec::new();
    for _ in 0..20 {
        buyers.push(s.user(&[]).await.1);
    }
    // 1,000 tasks, each wanting 1 to 4 seats among the same 100, many overlapping.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let requests: Vec<(String, Vec<String>)> = (0..1000)
        .map(|i| {
            let n = 1 + rng.next(4);
            let start = rng.next(100);
            let seats: Vec<String> = (0..n)
                .map(|k| seat((start + k * (1 + rng.next(3))) % 100))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            (buyers[i % buyers.len()].clone(), seats)
        })
        .collect();
    let tasks = requests.into_iter().map(|(token, seats)| {
        let mut client = s.client();
        tokio::spawn(async move {
            let result = client
                .hold_seats(authed(
                    &token,
                    pb::HoldSeatsRequest {
                        event_id: event.to_string(),
                        seat_ids: seats.clone(),
                        ttl: None,
                    },
                ))
                .await;
            (token, seats, result.map(|r| r.into_inner()))
        })
    });
    let results: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();

    let mut owner_of: HashMap<String, String> = HashMap::new();
    let mut holds = Vec::new();
    for (token, wanted, result) in results {
        match result {
            Ok(hold) => {
                let got = held_seats(&hold);
                let mut want_sorted = wanted.clone();
                want_sorted.sort();
                let mut got_sorted = got.clone();
                got_sorted.sort();
                assert_eq!(
                    got_sorted, want_sorted,
                    "all or nothing: a hold has exactly the seats asked for"
                );
                for seat in got {
                    assert!(
                        owner_of.insert(seat.clone(), hold.id.clone()).is_none(),
                        "seat {seat} held by two holds at once"
                    );
                }
                holds.push((token, hold));
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(
                    matches!(
                        reason(&status).as_str(),
                        "SEAT_UNAVAILABLE" | "PER_CUSTOMER_LIMIT"
                    ),
                    "{status:?}"
                );
            }
        }
    }
    assert!(!holds.is_empty());
    // Redis agrees: exactly the seats of successful holds are held.
    let states = seat_states(&s.availability(event).await);
    let held: HashSet<&String> = states
        .iter()
        .filter(|(_, st)| **st == pb::SeatStatus::Held as i32)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(held, owner_of.keys().collect::<HashSet<_>>());

    // Commit every hold concurrently, each twice (a retried commit) and a few under a second
    // order id: every seat ends sold exactly once.
    let commits = holds.iter().flat_map(|(token, hold)| {
        let order = Uuid::now_v7().to_string();
        let stray = Uuid::now_v7().to_string();
        [
            (token.clone(), hold.id.clone(), order.clone()),
            (token.clone(), hold.id.clone(), order),
            (token.clone(), hold.id.clone(), stray),
        ]
    });
    let tasks = commits.map(|(token, hold, order)| {
        let mut client = s.client();
        let orders_token = s.orders_token.clone();
        tokio::spawn(async move {
            let request = pb::CommitHoldRequest {
                hold_id: hold.clone(),
                order_id: order.clone(),
                customer_id: subject_of(&token).to_string(),
            };
            let result = client
                .commit_hold(as_service(&orders_token, request))
                .await
                .map(|r| r.into_inner().items);
            (hold, order, result)
        })
    });
    let outcomes: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    // Per hold: exactly one order wins; a retry with the winning order gets the same items, and
    // every attempt with another order is refused.
    let mut by_hold: HashMap<&String, Vec<(&String, &CommitOutcome)>> = HashMap::new();
    for (hold, order, result) in &outcomes {
        by_hold.entry(hold).or_default().push((order, result));
    }
    assert_eq!(by_hold.len(), holds.len());
    for (hold, attempts) in by_hold {
        let winners: HashSet<&String> = attempts
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(o, _)| *o)
            .collect();
        assert_eq!(winners.len(), 1, "hold {hold}: {attempts:?}");
        let winner = winners.into_iter().next().expect("one winner");
        let answers: Vec<&Vec<pb::HoldItem>> = attempts
            .iter()
            .filter(|(o, _)| *o == winner)
            .map(|(_, r)| r.as_ref().expect("every attempt with the winning order succeeds"))
            .collect();
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "a retry gets the same answer"
        );
        for (order, result) in &attempts {
            if *order != winner {
                let status = result.as_ref().expect_err("another order is refused");
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            }
        }
    }

    let mut conn = s.pool.get().await.expect("conn");
    let counts = store::seat_sale_counts(&mut conn, event).await.expect("counts");
    assert!(
        counts.iter().all(|(_, n)| *n == 1),
        "a seat sold twice: {counts:?}"
    );
    let sold: HashSet<&String> = counts.iter().map(|(seat, _)| seat).collect();
    assert_eq!(sold, owner_of.keys().collect::<HashSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_quantity_holds_never_exceed_capacity_and_released_or_expired_places_return() {
    let s = stack().await;
    let org = Uuid::now_v7();
    let event = s.event(org, 0, 50, 100).await;
    let mut buyers = Vec::new();
    for _ in 0..10 {
        buyers.push(s.user(&[]).await.1);
    }
    let mut rng = Rng(42);
    let tasks = (0..300).map(|i| {
        let mut client = s.client();
        let token = buyers[i % buyers.len()].clone();
        let quantity = 1 + rng.next(3) as i32;
        // A third of them expire after a second.
        let ttl = (i % 3 == 0).then_some(prost_types::Duration { seconds: 1, nanos: 0 });
        tokio::spawn(async move {
            client
                .hold_quantity(authed(
                    &token,
                    pb::HoldQuantityRequest {
                        event_id: event.to_string(),
                        tier_id: "floor".into(),
                        quantity,
                        ttl,
                    },
                ))
                .await
                .map(|r| (token, r.into_inner()))
        })
    });
    let results: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let granted: i32 = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|(_, h)| h.items.iter().map(|i| i.quantity).sum::<i32>())
        .sum();
    assert!(granted <= 50, "oversold: {granted} of 50");
    assert!(granted >= 48, "capacity left idle: {granted} of 50");
    for failure in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(failure), "NOT_ENOUGH_AVAILABLE", "{failure:?}");
    }
    let floor = |a: pb::Availability| a.tiers.into_iter().find(|t| t.tier_id == "floor").expect("floor");
    let now = floor(s.availability(event).await);
    assert_eq!((now.held, now.free), (granted, 50 - granted));

    // Releasing gives places back at once; expiry on its own.
    let (token, first) = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .find(|(_, h)| {
            h.expires_at.as_ref().map(|t| t.seconds).unwrap_or(0) > chrono::Utc::now().timestamp() + 60
        })
        .expect("a long hold");
    let q: i32 = first.items.iter().map(|i| i.quantity).sum();
    s.client()
        .release_hold(authed(
            token,
            pb::ReleaseHoldRequest {
                hold_id: first.id.clone(),
            },
        ))
        .await
        .expect("released");
    assert_eq!(floor(s.availability(event).await).held, granted - q);
    let expiring: i32 = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|(_, h)| {
            h.expires_at.as_ref().map(|t| t.seconds).unwrap_or(0) <= chrono::Utc::now().timestamp() + 5
        })
        .map(|(_, h)| h.items.iter().map(|i| i.quantity).sum::<i32>())
        .sum();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = floor(s.availability(event).await);
    assert_eq!(after.held, granted - q - expiring, "expired places came back");
    assert_eq!(after.free, 50 - after.held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_flush_mid_sale_loses_holds_but_never_sells_a_seat_twice() {
    let s = stack_with(|c| c.holds.sweep_interval = Duration::from_secs(60)).await;
    let org = Uuid::now_v7();
    let event = s.event(org, 10, 5, 10).await;
    let (_, alice) = s.user(&[]).await;
    let (_, bob) = s.user(&[]).await;

    // Alice buys seats 0-1 and 2 GA places; she also holds seat 5 without paying yet.
    let bought = s
        .hold_seats(&alice, event, &[seat(0), seat(1)])
        .await
        .expect("held");
    s.commit(&alice, bought.id, Uuid::now_v7().to_string())
        .await
        .expect("sold");
    let ga = s
        .hold_quantity(&alice, event, "floor", 2, None)
        .await
        .expect("ga")
        .into_inner();
    s.commit(&alice, ga.id, Uuid::now_v7().to_string())
        .await
        .expect("ga sold");
    let pending = s.hold_seats(&alice, event, &[seat(5)]).await.expect("held");

    s.flush_redis().await;

    // Sold stays sold: rebuilt from PostgreSQL on first use.
    let states = seat_states(&s.availability(event).await);
    assert_eq!(states[&seat(0)], pb::SeatStatus::Sold as i32);
    assert_eq!(states[&seat(5)], pb::SeatStatus::Free as i32, "holds may be lost");
    let floor = s
        .availability(event)
        .await
        .tiers
        .into_iter()
        .find(|t| t.tier_id == "floor")
        .expect("floor");
    assert_eq!((floor.sold, floor.free), (2, 3));
    assert_eq!(
        reason(&s.hold_seats(&bob, event, &[seat(0)]).await.expect_err("sold")),
        "SEAT_UNAVAILABLE"
    );
    let too_many = s
        .hold_quantity(&bob, event, "floor", 4, None)
        .await
        .expect_err("3 left");
    assert_eq!(reason(&too_many), "NOT_ENOUGH_AVAILABLE");

    // Bob takes seat 5, which Alice's lost hold had; Alice's late commit fails, Bob's succeeds.
    let bobs = s
        .hold_seats(&bob, event, &[seat(5)])
        .await
        .expect("free after the flush");
    let late = s
        .commit(&alice, pending.id, Uuid::now_v7().to_string())
        .await
        .expect_err("hold lost");
    assert_eq!(late.code(), Code::FailedPrecondition);
    s.commit(&bob, bobs.id, Uuid::now_v7().to_string())
        .await
        .expect("bob buys");

    // Flushed again between Bob's hold and commit of a seat that is sold in PostgreSQL: the
    // ledger refuses, whatever Redis believes.
    s.flush_redis().await;
    let mut conn = s.pool.get().await.expect("conn");
    let counts = store::seat_sale_counts(&mut conn, event).await.expect("counts");
    assert!(counts.iter().all(|(_, n)| *n == 1), "{counts:?}");
    let sold: HashSet<String> = counts.into_iter().map(|(s, _)| s).collect();
    assert_eq!(sold, [seat(0), seat(1), seat(5)].into_iter().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_refuses_a_second_sale_even_when_redis_believes_the_seat_is_free() {
    let s = stack().await;
    let org = Uuid::now_v7();
    let event = s.event(org, 3, 0, 10).await;
    let (_, alice) = s.user(&[]).await;
    let (_, bob) = s.user(&[]).await;
    let alices = s.hold_seats(&alice, event, &[seat(0)]).await.expect("held");
    s.commit(&alice, alices.id, Uuid::now_v7().to_string())
        .await
        .expect("sold");
    // Simulate Redis forgetting the sale without a full flush (e.g. a failed write): the seat
    // is back among the free ones.
    let client = redis::Client::open(ticketing_testkit::redis_url()).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    let ep = format!("{}:{{{event}}}", s.redis.prefix);
    let _: () = redis::pipe()
        .cmd("SREM")
        .arg(format!("{ep}:sold"))
        .arg(seat(0))
        .ignore()
        .cmd("ZADD")
        .arg(format!("{ep}:free:standard"))
        .arg(1)
        .arg(seat(0))
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("forget");
    let bobs = s
        .hold_seats(&bob, event, &[seat(0)])
        .await
        .expect("redis let it through");
    let refused = s
        .client()
        .commit_hold(s.as_orders(pb::CommitHoldRequest {
            hold_id: bobs.id.clone(),
            order_id: Uuid::now_v7().to_string(),
            customer_id: subject_of(&bob).to_string(),
        }))
        .await
        .expect_err("the ledger says no");
    assert_eq!(reason(&refused), "SEAT_ALREADY_SOLD");
    let mut db = s.pool.get().await.expect("conn");
    assert_eq!(
        store::seat_sale_counts(&mut db, event).await.expect("counts"),
        vec![(seat(0), 1)]
    );
    // Bob's hold is still his (active) after the refused commit, until it expires or he lets go.
    let hold = s
        .client()
        .get_hold(authed(&bob, pb::GetHoldRequest { hold_id: bobs.id }))
        .await
        .expect("hold")
        .into_inner();
    assert_eq!(hold.status, pb::HoldStatus::Active as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hold_blocks_nobody_even_before_the_sweeper_runs() {
    // The background sweeper is as good as off: holds must get past expired ones by themselves.
    let s = stack_with(|c| c.holds.sweep_interval = Duration::from_secs(60)).await;
    let org = Uuid::now_v7();
    // 6 seats, at most 2 places per customer.
    let event = s.event(org, 6, 0, 2).await;
    let (_, alice) = s.user(&[]).await;
    let (_, bob) = s.user(&[]).await;
    let (_, carol) = s.user(&[]).await;
    let hold_briefly = |token: &str, seats: &[String]| {
        let request = authed(
            token,
            pb::HoldSeatsRequest {
                event_id: event.to_string(),
                seat_ids: seats.to_vec(),
                ttl: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
            },
        );
        let mut client = s.client();
        async move { client.hold_seats(request).await }
    };

    // Alice's expired places no longer count against her limit of 2.
    hold_briefly(&alice, &[seat(0), seat(1)])
        .await
        .expect("alice's short hold");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    s.hold_seats(&alice, event, &[seat(2), seat(3)])
        .await
        .expect("expired places do not count against the limit");

    // Carol gets the seat of Bob's expired hold.
    hold_briefly(&bob, &[seat(4)]).await.expect("bob's short hold");
    assert_eq!(
        reason(&s.hold_seats(&carol, event, &[seat(4)]).await.expect_err("held")),
        "SEAT_UNAVAILABLE"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    s.hold_seats(&carol, event, &[seat(4)])
        .await
        .expect("the expired hold no longer blocks seat 4");
    let states = seat_states(&s.availability(event).await);
    assert_eq!(
        states[&seat(0)],
        pb::SeatStatus::Free as i32,
        "alice's old seats are free"
    );
    assert_eq!(states[&seat(4)], pb::SeatStatus::Held as i32);
}
