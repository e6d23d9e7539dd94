//! Charges left `processing` by a payments process that died mid-charge are settled by the
//! sweeper from what the processor knows: charged ones succeed (announced even when their order
//! closed meanwhile: orders takes the order back or has the payment refunded), unseen ones are
//! voided at the processor so a late request cannot charge.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use svc_payments::{
    payments::{ChargeInput, Payments},
    provider::{Card, Outcome, Provider, TestProvider},
    schema::{payments, refunds},
};
use ticketing_platform::{
    ApiError,
    config::DatabaseConfig,
    db::{self, PgPool},
    messaging::{self, OutboxSignal},
};
use ticketing_testkit::TestDatabase;
use uuid::Uuid;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the charging process dies.
#[derive(Clone, Copy)]
enum Crash {
    /// The request never reached the processor.
    BeforeCharge,
    /// The processor charged the card, but its answer was lost with the process.
    AfterCharge,
}

/// The real test processor with the connection to it cut at one point of a charge.
struct DyingProcess {
    processor: TestProvider,
    crash: Crash,
}

impl Provider for DyingProcess {
    fn name(&self) -> &'static str {
        self.processor.name()
    }
    fn charge<'a>(
        &'a self,
        key: &'a str,
        amount: i64,
        card: &'a Card,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            if let Crash::AfterCharge = self.crash {
                self.processor.charge(key, amount, card).await?;
            }
            anyhow::bail!("connection reset")
        })
    }
    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Outcome>>> {
        self.processor.lookup(key)
    }
    fn void<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        self.processor.void(key)
    }
    fn refund<'a>(
        &'a self,
        key: &'a str,
        reference: &'a str,
        amount: i64,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        self.processor.refund(key, reference, amount)
    }
    fn refunds_between<'a>(
        &'a self,
        after: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> BoxFuture<'a, anyhow::Result<Vec<svc_payments::provider::ProcessorRefund>>> {
        self.processor.refunds_between(after, until, limit)
    }
}

struct Setup {
    pool: PgPool,
    payments: Payments,
    processor: TestProvider,
    _db: TestDatabase,
}

async fn setup(crash: Crash) -> Setup {
    ticketing_platform::telemetry::init_for_tests();
    let db = TestDatabase::create("settle").await.expect("db");
    let pool = db::connect_and_migrate(&DatabaseConfig::new(db.url.clone()), svc_payments::MIGRATIONS)
        .await
        .expect("migrated");
    db::run_migrations(&pool, messaging::MIGRATIONS)
        .await
        .expect("outbox");
    let processor = TestProvider::new(pool.clone(), Duration::from_millis(10));
    let dying = DyingProcess {
        processor: TestProvider::new(pool.clone(), Duration::from_millis(10)),
        crash,
    };
    let payments = Payments::new(pool.clone(), Arc::new(dying), OutboxSignal::default());
    Setup {
        pool,
        payments,
        processor,
        _db: db,
    }
}

fn input(order_id: Uuid) -> ChargeInput {
    ChargeInput {
        key: format!("order:{order_id}:attempt:1"),
        order_id,
        customer_id: Uuid::now_v7(),
        organization_id: None,
        amount: 9_000,
        currency: "EUR".into(),
        card: Card {
            number: "4242424242424242".into(),
            exp_month: 12,
            exp_year: 2099,
            cvc: "123".into(),
        },
    }
}

async fn status_of(pool: &PgPool, order_id: Uuid) -> (String, i64) {
    let mut conn = pool.get().await.expect("conn");
    payments::table
        .filter(payments::order_id.eq(order_id))
        .select((payments::status, payments::refunded))
        .first(&mut conn)
        .await
        .expect("payment row")
}

async fn outbox_types(pool: &PgPool) -> Vec<String> {
    let mut conn = pool.get().await.expect("conn");
    messaging::schema::outbox::table
        .order(messaging::schema::outbox::id)
        .select(messaging::schema::outbox::event_type)
        .load(&mut conn)
        .await
        .expect("outbox")
}

async fn die_mid_charge(s: &Setup, order_id: Uuid) {
    let lost = s
        .payments
        .charge(input(order_id))
        .await
        .expect_err("process died");
    assert!(matches!(lost, ApiError::Unavailable(_)), "{lost:?}");
    assert_eq!(status_of(&s.pool, order_id).await.0, "processing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_the_processor_made_is_settled_as_succeeded() {
    let s = setup(Crash::AfterCharge).await;
    let order_id = Uuid::now_v7();
    die_mid_charge(&s, order_id).await;
    // Not stale yet: a charge in flight is left alone.
    assert_eq!(
        s.payments
            .settle_stale(Duration::from_secs(60))
            .await
            .expect("sweep"),
        0
    );
    assert_eq!(status_of(&s.pool, order_id).await.0, "processing");

    assert_eq!(s.payments.settle_stale(Duration::ZERO).await.expect("sweep"), 1);
    assert_eq!(status_of(&s.pool, order_id).await, ("succeeded".into(), 0));
    assert_eq!(outbox_types(&s.pool).await, ["payment.succeeded"]);
    // The caller's retry with the same key sees the settled charge; nothing is charged twice.
    let again = s.payments.charge(input(order_id)).await.expect("settled");
    assert_eq!(again.status, svc_payments::domain::PaymentStatus::Succeeded);
    assert_eq!(s.payments.settle_stale(Duration::ZERO).await.expect("sweep"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_the_processor_never_saw_is_voided_there() {
    let s = setup(Crash::BeforeCharge).await;
    let order_id = Uuid::now_v7();
    die_mid_charge(&s, order_id).await;
    assert_eq!(s.payments.settle_stale(Duration::ZERO).await.expect("sweep"), 1);
    assert_eq!(status_of(&s.pool, order_id).await.0, "failed");
    assert_eq!(outbox_types(&s.pool).await, ["payment.failed"]);
    // The lost request arriving late at the processor charges nothing: the key is void.
    let late = s
        .processor
        .charge(&input(order_id).key, 9_000, &input(order_id).card)
        .await
        .expect("processor answers");
    assert!(matches!(late, Outcome::Failed { .. }), "{late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_for_an_order_closed_meanwhile_is_announced_for_orders_to_settle() {
    let s = setup(Crash::AfterCharge).await;
    let order_id = Uuid::now_v7();
    die_mid_charge(&s, order_id).await;
    {
        let mut conn = s.pool.get().await.expect("conn");
        s.payments.close_order(&mut conn, order_id).await.expect("closed");
    }
    assert_eq!(s.payments.settle_stale(Duration::ZERO).await.expect("sweep"), 1);
    // Recorded as the processor has it and announced: orders decides whether the order comes
    // back or the money goes back, so payments refunds nothing on its own.
    assert_eq!(status_of(&s.pool, order_id).await, ("succeeded".into(), 0));
    assert_eq!(outbox_types(&s.pool).await, ["payment.succeeded"]);
    let mut conn = s.pool.get().await.expect("conn");
    let refunded: i64 = refunds::table
        .count()
        .get_result(&mut conn)
        .await
        .expect("refunds");
    assert_eq!(refunded, 0);
    // No new charge of the closed order starts.
    let mut another = input(order_id);
    another.key = format!("order:{order_id}:attempt:2");
    let refused = s.payments.charge(another).await.expect_err("closed");
    assert!(
        matches!(
            refused,
            ApiError::FailedPrecondition {
                reason: "ORDER_CLOSED",
                ..
            }
        ),
        "{refused:?}"
    );
}
