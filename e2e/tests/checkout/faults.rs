use std::time::Duration;

use ticketing_proto::ticketing::{
    inventory::v1 as inv,
    orders::v1 as pb,
    payments::v1::{self as payments},
};
use ticketing_testkit::ProxyMode;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn payments_unreachable_fails_with_unavailable_and_the_order_stays_payable() {
    let stack = stack().await;
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let hold = stack
        .hold(&token, &sale, &sale.seats[..1], None)
        .await
        .expect("hold");
    let order = stack
        .create_order(&token, &hold.id, "fault-key-1", "")
        .await
        .expect("order");
    stack.cut_payments(true);
    let down = stack
        .pay(&token, &order.id, CARD_OK)
        .await
        .expect_err("payments down");
    assert_eq!(down.code(), Code::Unavailable);
    assert_eq!(stack.payment_totals().await, (0, 0, 0));
    stack.cut_payments(false);
    let paid = stack
        .pay(&token, &order.id, CARD_OK)
        .await
        .expect("paid after recovery");
    assert_eq!(paid.status, pb::OrderStatus::Paid as i32);
    assert_eq!(stack.payment_totals().await, (1, 9_000, 0), "charged once");
}

#[tokio::test]
async fn events_written_while_the_broker_is_away_are_delivered_once_afterwards() {
    let stack = stack().await;
    let sale = stack.sale(50, 30).await;
    let (_, token) = stack.buyer().await;
    // A paid order to refund while orders cannot reach the broker.
    let paid = stack.checkout(&token, &sale, &sale.seats[..2]).await;
    stack.broker_proxy.set_mode(ProxyMode::Refuse);
    stack.broker_proxy.cut_connections();
    let mut cancelled = Vec::new();
    for _ in 0..3 {
        let hold = stack.hold_floor(&token, &sale, 2).await;
        let order = stack
            .create_order(&token, &hold.id, &Uuid::new_v4().to_string(), "")
            .await
            .expect("order while the broker is away");
        let order = stack
            .orders()
            .cancel_order(authed(
                &token,
                pb::CancelOrderRequest {
                    order_id: order.id,
                    reason: String::new(),
                },
            ))
            .await
            .expect("cancel while the broker is away")
            .into_inner();
        cancelled.push(order.id);
    }
    stack
        .orders()
        .refund_order(authed(
            &token,
            pb::RefundOrderRequest {
                order_id: paid.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("refund while the broker is away");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let backlog = {
        let mut conn = stack.orders_pool.get().await.expect("db");
        ticketing_platform::messaging::outbox_backlog(&mut conn)
            .await
            .expect("backlog")
    };
    assert!(backlog >= 7, "events wait in the outbox: {backlog}");
    assert_eq!(stack.payment_totals().await.2, 0, "nothing refunded yet");

    stack.broker_proxy.set_mode(ProxyMode::Pass);
    stack
        .eventually("the refund reaches payments", || async {
            stack.payment_totals().await.2 == 18_000
        })
        .await;
    stack
        .eventually("the outbox drains", || async {
            let mut conn = stack.orders_pool.get().await.expect("db");
            ticketing_platform::messaging::outbox_backlog(&mut conn)
                .await
                .expect("backlog")
                == 0
        })
        .await;
    // Inventory heard every cancellation and the refund: every place is for sale again.
    stack
        .eventually("inventory gave every place back", || async {
            let availability = stack
                .inventory()
                .get_availability(inv::GetAvailabilityRequest {
                    event_id: sale.event_id.clone(),
                    counts_only: true,
                })
                .await
                .expect("availability")
                .into_inner();
            availability.tiers.iter().all(|t| t.free == t.total)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.payment_totals().await, (1, 18_000, 18_000), "refunded once");
}

#[tokio::test]
async fn a_charge_whose_pay_order_never_finished_still_ends_with_tickets() {
    let stack = stack().await;
    let sale = stack.sale(10, 30).await;
    let (buyer, token) = stack.buyer().await;
    let hold = stack
        .hold(&token, &sale, &sale.seats[..1], None)
        .await
        .expect("hold");
    let order = stack
        .create_order(&token, &hold.id, "crash-key-1", "")
        .await
        .expect("order");
    // All PayOrder did before its process died: the lease on attempt 1, the durable
    // reservation and the charge, as orders makes them.
    stack.take_lease_as_pay_order_would(&order.id).await;
    stack.commit_as_orders(&hold.id, &order.id, buyer).await;
    let charged = stack
        .charge_as_orders(&order.id, buyer, 9_000, 1)
        .await
        .expect("charged");
    assert_eq!(charged.status, payments::PaymentStatus::Succeeded as i32);
    // payment.succeeded finishes the order: paid, with its ticket.
    stack
        .eventually("the order is paid from the payment event", || async {
            stack
                .orders()
                .get_order(authed(
                    &token,
                    pb::GetOrderRequest {
                        order_id: order.id.clone(),
                    },
                ))
                .await
                .map(|o| {
                    let o = o.into_inner();
                    o.status == pb::OrderStatus::Paid as i32
                        && o.lines.iter().all(|l| !l.ticket_id.is_empty())
                })
                .unwrap_or(false)
        })
        .await;
    // Paying now returns the paid order and charges nothing more.
    let paid = stack.pay(&token, &order.id, CARD_OK).await.expect("paid");
    assert_eq!(paid.status, pb::OrderStatus::Paid as i32);
    assert_eq!(stack.payment_totals().await, (1, 9_000, 0));
}
