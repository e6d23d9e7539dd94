//! Retries get the truth: a PayOrder or CancelOrder that arrives while a payment of the order is
//! in flight is told to come back (ABORTED, with when), and then gets that payment's outcome,
//! never a permanent error for a retry of the same attempt.

use std::time::{Duration, Instant};

use ticketing_proto::ticketing::orders::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

impl Stack {
    async fn cancel(&self, token: &str, order_id: &str) -> Result<tonic::Response<pb::Order>, tonic::Status> {
        self.orders()
            .cancel_order(authed(
                token,
                pb::CancelOrderRequest {
                    order_id: order_id.into(),
                    reason: String::new(),
                },
            ))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_during_a_payment_in_flight_is_told_to_come_back_then_gets_its_outcome() {
    let s = stack().await;
    let sale = s.sale(10, 30).await;
    let (buyer, token) = s.buyer().await;
    let hold = s.hold(&token, &sale, &sale.seats[..1], None).await.expect("hold");
    let order = s
        .create_order(&token, &hold.id, "retry-key-1", "")
        .await
        .expect("order");
    // A PayOrder is in flight: it holds the order's lease (its caller has gone; it has not).
    s.take_lease_for(&order.id, Duration::from_secs(3)).await;
    let asked = Instant::now();
    let busy = s.pay(&token, &order.id, CARD_OK).await.expect_err("in flight");
    assert_eq!(busy.code(), Code::Aborted, "{busy:?}");
    assert_eq!(reason(&busy), "PAYMENT_IN_PROGRESS");
    let retry_after = busy
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("when to come back");
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(5)).contains(&retry_after),
        "{retry_after:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_millis(2900),
        "told before the lease runs out"
    );
    let cancel = s.cancel(&token, &order.id).await.expect_err("in flight");
    assert_eq!(cancel.code(), Code::Aborted);
    assert_eq!(reason(&cancel), "PAYMENT_IN_PROGRESS");

    // The payment in flight goes through, as its PayOrder does: places committed, card charged.
    s.commit_as_orders(&hold.id, &order.id, buyer).await;
    s.charge_as_orders(&order.id, buyer, 9_000, 1)
        .await
        .expect("charged");
    // The retry gets its outcome: the paid order, charged once.
    let mut paid = None;
    for _ in 0..40 {
        match s.pay(&token, &order.id, CARD_OK).await {
            Ok(order) => {
                paid = Some(order);
                break;
            }
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::Aborted,
                    "only ever told to come back: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    let paid = paid.expect("the retry got the outcome");
    assert_eq!(paid.status, pb::OrderStatus::Paid as i32);
    assert!(paid.lines.iter().all(|l| !l.ticket_id.is_empty()));
    assert_eq!(s.payment_totals().await, (1, 9_000, 0), "charged once");
    // A cancel now gets the truth: a paid order is refunded, not cancelled.
    let cancel = s.cancel(&token, &order.id).await.expect_err("paid");
    assert_eq!(reason(&cancel), "ORDER_NOT_CANCELLABLE");
}
