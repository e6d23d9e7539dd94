//! The outbox relay and the event consumer against a real PostgreSQL and RabbitMQ: what they
//! do when the service stops.

use std::{sync::Arc, time::Duration};

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use ticketing_platform::{
    background::Background,
    config::DatabaseConfig,
    db::{PgPool, connect_and_migrate},
    messaging::{self, Consumer, Handler, OutboxEvent, Relay, schema::processed_messages},
};
use ticketing_proto::ticketing::events::v1 as events;
use ticketing_testkit::{TestBroker, TestDatabase};
use tokio::sync::Notify;

async fn database() -> (TestDatabase, PgPool) {
    let db = TestDatabase::create("messaging").await.expect("database");
    let pool = connect_and_migrate(&DatabaseConfig::new(db.url.clone()), messaging::MIGRATIONS)
        .await
        .expect("migrated");
    (db, pool)
}

async fn enqueue(pool: &PgPool, order_id: &str) {
    let mut conn = pool.get().await.expect("connection");
    let event = events::OrderExpired {
        order_id: order_id.into(),
        ..Default::default()
    };
    messaging::enqueue(&mut conn, vec![OutboxEvent::of(order_id, &event)])
        .await
        .expect("enqueued");
}

async fn outbox_rows(pool: &PgPool) -> i64 {
    let mut conn = pool.get().await.expect("connection");
    messaging::outbox_backlog(&mut conn).await.expect("backlog")
}

#[tokio::test]
async fn a_stopping_relay_publishes_what_is_left_before_it_returns() {
    let (_db, pool) = database().await;
    let broker = TestBroker::new();
    let mut tap = broker.tap("order.#").await.expect("tap");
    // Without a signal the relay would look again only in an hour.
    let mut config = broker.config.clone();
    config.relay_poll_interval = Duration::from_secs(3600);
    let relay = Relay::new(pool.clone(), config, "test");
    let signal = relay.signal();
    let running = Background::new().task("relay", |stop| relay.run(stop)).start();

    // The first row is published at start; then the relay waits for a signal or its poll.
    enqueue(&pool, "first").await;
    signal.notify();
    tap.next(Duration::from_secs(10))
        .await
        .expect("published at start");
    // Written while the relay waits, and no signal sent: only the stop makes it go out.
    enqueue(&pool, "last").await;
    running.stop(Duration::from_secs(10)).await;

    let last = tap
        .next(Duration::from_secs(2))
        .await
        .expect("published while stopping");
    assert_eq!(last.aggregate_id, "last");
    assert_eq!(outbox_rows(&pool).await, 0, "nothing left in the outbox");
}

ticketing_platform::event_set! {
    enum Heard {
        Expired(events::OrderExpired),
    }
}

/// Takes its time over each event and says when it has started one.
struct Slow {
    started: Arc<Notify>,
}

impl Handler for Slow {
    type Events = Heard;

    async fn handle(&self, _conn: &mut AsyncPgConnection, _event: &Heard) -> anyhow::Result<()> {
        self.started.notify_one();
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }
}

#[tokio::test]
async fn a_stopping_consumer_finishes_the_event_in_hand() {
    let (_db, pool) = database().await;
    let broker = TestBroker::new();
    let started = Arc::new(Notify::new());
    let consumer = Consumer::new(
        pool.clone(),
        broker.config.clone(),
        "orders",
        Slow {
            started: started.clone(),
        },
    );
    let connected = consumer.connected();
    let relay = Relay::new(pool.clone(), broker.config.clone(), "test");
    let running = Background::new()
        .task("consumer", |stop| consumer.run(stop))
        .task("relay", |stop| relay.run(stop))
        .start();
    tokio::time::timeout(Duration::from_secs(10), connected.notified())
        .await
        .expect("the consumer subscribes");
    enqueue(&pool, "in-hand").await;
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("the event reaches the handler");

    running.stop(Duration::from_secs(10)).await;

    // Its transaction committed: the event is recorded as handled.
    let mut conn = pool.get().await.expect("connection");
    let handled: i64 = processed_messages::table
        .filter(processed_messages::consumer.eq("orders"))
        .count()
        .get_result(&mut conn)
        .await
        .expect("count");
    assert_eq!(handled, 1, "the handler ran to its end");
}
