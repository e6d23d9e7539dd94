use std::time::Duration;

use ticketing_proto::ticketing::inventory::v1::{self as pb, availability_update::Update};
use uuid::Uuid;

use crate::helpers::{authed, seat, stack};

async fn next(stream: &mut tonic::Streaming<pb::AvailabilityUpdate>) -> pb::AvailabilityUpdate {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an update within 10 s")
        .expect("stream ok")
        .expect("stream open")
}

/// The next update that is not a heartbeat.
async fn next_change(stream: &mut tonic::Streaming<pb::AvailabilityUpdate>) -> pb::AvailabilityUpdate {
    loop {
        let update = next(stream).await;
        if !matches!(update.update, Some(Update::Heartbeat(_))) {
            return update;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_get_a_snapshot_then_every_change_including_expiry_nobody_asked_for() {
    let s = stack().await;
    let org = Uuid::now_v7();
    let event = s.event(org, 5, 0, 10).await;
    let (_, buyer) = s.user(&[]).await;
    let watch = || pb::WatchAvailabilityRequest {
        event_id: event.to_string(),
        after_sequence: 0,
    };
    let mut first = s
        .client()
        .watch_availability(watch())
        .await
        .expect("watch")
        .into_inner();
    let mut second = s
        .client()
        .watch_availability(watch())
        .await
        .expect("watch")
        .into_inner();
    for stream in [&mut first, &mut second] {
        let Some(Update::Snapshot(snapshot)) = next_change(stream).await.update else {
            panic!("a snapshot first")
        };
        assert_eq!(snapshot.seats.len(), 5);
    }

    let hold = s
        .client()
        .hold_seats(authed(
            &buyer,
            pb::HoldSeatsRequest {
                event_id: event.to_string(),
                seat_ids: vec![seat(1), seat(2)],
                ttl: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
            },
        ))
        .await
        .expect("held")
        .into_inner();
    for stream in [&mut first, &mut second] {
        let update = next_change(stream).await;
        let Some(Update::Delta(delta)) = update.update else {
            panic!("a delta")
        };
        assert_eq!(delta.cause, pb::availability_delta::Cause::Held as i32);
        let mut seats: Vec<_> = delta
            .seats
            .iter()
            .map(|s| (s.seat_id.clone(), s.status))
            .collect();
        seats.sort();
        assert_eq!(
            seats,
            [
                (seat(1), pb::SeatStatus::Held as i32),
                (seat(2), pb::SeatStatus::Held as i32)
            ]
        );
        assert_eq!(delta.tiers[0].held, 2);
    }

    // Nobody releases it: the sweeper expires it and both watchers see the seats free.
    for stream in [&mut first, &mut second] {
        let update = next_change(stream).await;
        let Some(Update::Delta(delta)) = update.update else {
            panic!("a delta")
        };
        assert_eq!(delta.cause, pb::availability_delta::Cause::Expired as i32);
        assert!(
            delta
                .seats
                .iter()
                .all(|s| s.status == pb::SeatStatus::Free as i32)
        );
        assert_eq!(delta.seats.len(), 2);
    }
    let expired = s
        .client()
        .get_hold(authed(&buyer, pb::GetHoldRequest { hold_id: hold.id }))
        .await
        .expect("hold")
        .into_inner();
    assert_eq!(expired.status, pb::HoldStatus::Expired as i32);

    // A quiet stream gets heartbeats.
    let beat = next(&mut first).await;
    assert!(matches!(beat.update, Some(Update::Heartbeat(_))), "{beat:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_an_event_not_on_sale_is_refused() {
    let s = stack().await;
    let status = s
        .client()
        .watch_availability(pb::WatchAvailabilityRequest {
            event_id: Uuid::now_v7().to_string(),
            after_sequence: 0,
        })
        .await
        .expect_err("not on sale");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_replica_sees_holds_made_on_another() {
    let mut s = stack().await;
    let org = Uuid::now_v7();
    let event = s.event(org, 5, 0, 10).await;
    let (_, buyer) = s.user(&[]).await;
    let other = s.replica().await;
    let mut watcher = pb::inventory_service_client::InventoryServiceClient::new(other)
        .watch_availability(pb::WatchAvailabilityRequest {
            event_id: event.to_string(),
            after_sequence: 0,
        })
        .await
        .expect("watch on the second replica")
        .into_inner();
    let Some(Update::Snapshot(_)) = next_change(&mut watcher).await.update else {
        panic!("a snapshot first")
    };

    // The hold goes to the first replica.
    s.client()
        .hold_seats(authed(
            &buyer,
            pb::HoldSeatsRequest {
                event_id: event.to_string(),
                seat_ids: vec![seat(3)],
                ttl: None,
            },
        ))
        .await
        .expect("held on the first replica");
    // A fresh replica's subscription may connect after the watch began: it then resends a
    // snapshot (a resync), which is fine. Either the delta arrives, or a later snapshot
    // already shows the seat held (the delta it covers is then not sent again).
    loop {
        match next_change(&mut watcher).await.update {
            Some(Update::Delta(delta)) => {
                assert_eq!(delta.cause, pb::availability_delta::Cause::Held as i32);
                assert_eq!(
                    delta.seats.iter().map(|s| s.seat_id.clone()).collect::<Vec<_>>(),
                    [seat(3)]
                );
                break;
            }
            Some(Update::Snapshot(snapshot))
                if snapshot
                    .seats
                    .iter()
                    .any(|s| s.seat_id == seat(3) && s.status == pb::SeatStatus::Held as i32) =>
            {
                break;
            }
            Some(Update::Snapshot(_)) => continue,
            other => panic!("a delta, not {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_comes_back_resumes_after_its_last_sequence_without_a_snapshot() {
    let s = stack().await;
    let org = Uuid::now_v7();
    let event = s.event(org, 5, 0, 10).await;
    let (_, buyer) = s.user(&[]).await;
    let watch = |after_sequence| pb::WatchAvailabilityRequest {
        event_id: event.to_string(),
        after_sequence,
    };
    let hold = |n| {
        let mut client = s.client();
        let buyer = buyer.clone();
        async move {
            client
                .hold_seats(authed(
                    &buyer,
                    pb::HoldSeatsRequest {
                        event_id: event.to_string(),
                        seat_ids: vec![seat(n)],
                        ttl: None,
                    },
                ))
                .await
                .expect("held");
        }
    };
    let mut first = s
        .client()
        .watch_availability(watch(0))
        .await
        .expect("watch")
        .into_inner();
    let Some(Update::Snapshot(_)) = next_change(&mut first).await.update else {
        panic!("a snapshot first")
    };
    hold(1).await;
    let seen = next_change(&mut first).await.sequence;
    // The watcher goes away; two more changes happen; it comes back with its last sequence.
    drop(first);
    hold(2).await;
    hold(3).await;
    let mut back = s
        .client()
        .watch_availability(watch(seen))
        .await
        .expect("resume")
        .into_inner();
    for (n, expected) in [(2, seen + 1), (3, seen + 2)] {
        let update = next_change(&mut back).await;
        assert_eq!(update.sequence, expected);
        let Some(Update::Delta(delta)) = update.update else {
            panic!("the missed delta, not a snapshot: {update:?}")
        };
        assert_eq!(
            delta.seats.iter().map(|s| s.seat_id.clone()).collect::<Vec<_>>(),
            [seat(n)]
        );
    }
    // And it goes on live.
    hold(4).await;
    assert_eq!(next_change(&mut back).await.sequence, seen + 3);

    // A sequence this replica cannot account for (from the future, or unset) gets a snapshot.
    for after in [seen + 100, 0] {
        let mut fresh = s
            .client()
            .watch_availability(watch(after))
            .await
            .expect("watch")
            .into_inner();
        let Some(Update::Snapshot(snapshot)) = next_change(&mut fresh).await.update else {
            panic!("a snapshot for after_sequence {after}")
        };
        assert_eq!(snapshot.sequence, seen + 3);
    }
    let negative = s
        .client()
        .watch_availability(watch(-1))
        .await
        .expect_err("invalid");
    assert_eq!(negative.code(), tonic::Code::InvalidArgument);
}

/// Subscribers of an event's channel, as Redis counts them (pattern subscribers not included).
async fn channel_subscribers(prefix: &str, event: Uuid) -> i64 {
    let client = redis::Client::open(ticketing_testkit::redis_url()).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    let channel = format!("{prefix}:{{{event}}}:updates");
    let counts: Vec<redis::Value> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&channel)
        .query_async(&mut conn)
        .await
        .expect("numsub");
    match counts.get(1) {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("unexpected NUMSUB reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_subscribes_to_the_channels_of_watched_events_only() {
    let s = stack().await;
    let org = Uuid::now_v7();
    let watched = s.event(org, 3, 0, 10).await;
    let unwatched = s.event(org, 3, 0, 10).await;
    let (_, buyer) = s.user(&[]).await;
    let before = s.availability(unwatched).await.sequence;
    s.hold_seats(&buyer, unwatched, &[seat(0)]).await.expect("held");
    assert_eq!(channel_subscribers(&s.redis.prefix, watched).await, 0);
    // Nothing is published with nobody listening, but the sequence moves: a watcher arriving
    // with an older one must learn that it missed something.
    assert_eq!(s.availability(unwatched).await.sequence, before + 1);

    let mut stream = s
        .client()
        .watch_availability(pb::WatchAvailabilityRequest {
            event_id: watched.to_string(),
            after_sequence: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let Some(Update::Snapshot(_)) = next_change(&mut stream).await.update else {
        panic!("a snapshot first")
    };
    // By the time the snapshot arrives the replica listens to the event, and to it alone.
    assert_eq!(channel_subscribers(&s.redis.prefix, watched).await, 1);
    assert_eq!(channel_subscribers(&s.redis.prefix, unwatched).await, 0);

    // Once someone listens, every change is published again.
    s.hold_seats(&buyer, watched, &[seat(1)]).await.expect("held");
    let Some(Update::Delta(delta)) = next_change(&mut stream).await.update else {
        panic!("a delta")
    };
    assert_eq!(
        delta.seats.iter().map(|s| s.seat_id.clone()).collect::<Vec<_>>(),
        [seat(1)]
    );
}
