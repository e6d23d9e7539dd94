//! The money path checks itself whatever the caller: each attack a customer could make on an
//! internal RPC is refused at the door, and the same move made with a service's credential (a
//! bug, or a stolen secret) still cannot pay an order, free a sold seat or keep money back.

use std::time::Duration;

use svc_payments::provider::{Provider, TestProvider};
use ticketing_proto::ticketing::{
    inventory::v1 as inv,
    orders::v1 as pb,
    payments::v1::{self as payments, payments_service_client::PaymentsServiceClient},
};
use tonic::Code;
use uuid::Uuid;

use ticketing_platform::service_auth::{Access, Rpc};

use crate::{
    helpers::*,
    internal::{Credential, call},
};

impl Stack {
    async fn order(&self, token: &str, id: &str) -> pb::Order {
        self.orders()
            .get_order(authed(token, pb::GetOrderRequest { order_id: id.into() }))
            .await
            .expect("order")
            .into_inner()
    }

    async fn ticket_status(&self, token: &str, order: &pb::Order) -> i32 {
        self.orders()
            .get_ticket(authed(
                token,
                pb::GetTicketRequest {
                    ticket_id: order.lines[0].ticket_id.clone(),
                },
            ))
            .await
            .expect("ticket")
            .into_inner()
            .status
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_for_less_than_the_total_never_pays_an_order() {
    let s = stack().await;
    let sale = s.sale(10, 30).await;
    let (buyer, token) = s.buyer().await;
    let hold = s.hold_floor(&token, &sale, 1).await;
    let order = s
        .create_order(&token, &hold.id, "cheap-order-1", "")
        .await
        .expect("order");
    assert_eq!(order.total.as_ref().map(|m| m.amount_minor), Some(4_000));
    let mut payments_client = PaymentsServiceClient::new(s.payments.clone());
    // The customer at payments' own port: refused at the door.
    let refused = payments_client
        .charge(authed(&token, charge_request(&order.id, buyer, 1, 1)))
        .await
        .expect_err("a customer may not charge");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(s.payments_of(&order.id).await.is_empty(), "nothing was charged");

    // The same cent charged with orders' own credential, for the order's current attempt.
    s.take_lease_as_pay_order_would(&order.id).await;
    let cent = s
        .charge_as_orders(&order.id, buyer, 1, 1)
        .await
        .expect("payments charges what it is told");
    assert_eq!(cent.status, payments::PaymentStatus::Succeeded as i32);
    s.eventually("the cent is refunded", || async {
        s.payments_of(&order.id).await == vec![("refunded".to_string(), 1)]
    })
    .await;
    let now = s.order(&token, &order.id).await;
    assert_eq!(now.status, pb::OrderStatus::PendingPayment as i32, "not paid");
    assert!(now.lines.iter().all(|l| l.ticket_id.is_empty()), "no ticket");
    // The buyer can still pay the real total once the lease runs out: the attempt whose key
    // the cent used is told to retry, and the retry is a new attempt.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let retry = s
        .pay(&token, &order.id, CARD_OK)
        .await
        .expect_err("the spent attempt");
    assert_eq!(retry.code(), Code::Unavailable);
    let paid = s.pay(&token, &order.id, CARD_OK).await.expect("paid");
    assert_eq!(paid.status, pb::OrderStatus::Paid as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncommitted_hold_never_backs_a_paid_order() {
    let s = stack().await;
    let sale = s.sale(10, 30).await;
    let (buyer, token) = s.buyer().await;
    let seat = sale.seats[0].clone();
    let hold = s
        .hold(&token, &sale, std::slice::from_ref(&seat), None)
        .await
        .expect("hold");
    let order = s
        .create_order(&token, &hold.id, "uncommitted-1", "")
        .await
        .expect("order");
    // The buyer lets the hold go and someone else takes the seat.
    s.inventory()
        .release_hold(authed(
            &token,
            inv::ReleaseHoldRequest {
                hold_id: hold.id.clone(),
            },
        ))
        .await
        .expect("released");
    let (_, other) = s.buyer().await;
    s.hold(&other, &sale, std::slice::from_ref(&seat), None)
        .await
        .expect("the other buyer holds the seat");
    // A charge of the exact total for the current attempt, whose PayOrder never committed.
    s.take_lease_as_pay_order_would(&order.id).await;
    s.charge_as_orders(&order.id, buyer, 9_000, 1)
        .await
        .expect("charged");
    s.eventually("the charge is refunded", || async {
        s.payments_of(&order.id).await == vec![("refunded".to_string(), 9_000)]
    })
    .await;
    let now = s.order(&token, &order.id).await;
    assert_ne!(now.status, pb::OrderStatus::Paid as i32);
    assert!(now.lines.iter().all(|l| l.ticket_id.is_empty()), "no ticket");
    assert_eq!(
        s.seat_status(&sale, &seat).await,
        inv::SeatStatus::Held as i32,
        "the other buyer's hold stands"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_is_never_released_while_a_valid_ticket_holds_it() {
    let s = stack().await;
    let sale = s.sale(10, 30).await;
    let (_, token) = s.buyer().await;
    let seat = sale.seats[0].clone();
    let paid = s.checkout(&token, &sale, std::slice::from_ref(&seat)).await;
    // There is no RPC that frees sold places (inventory does it only when orders refunds or
    // closes an order): the path that once did is not served, whoever asks.
    let orders_token = s.identity.service_token("orders", "inventory").await;
    let gone = Rpc {
        path: "/ticketing.inventory.v1.InventoryService/ReleaseSold".into(),
        service: "inventory".into(),
        method: "ReleaseSold".into(),
        access: Access::Public,
        server_streaming: false,
    };
    for credential in [
        Credential::Bearer(token.clone()),
        Credential::Bearer(sale.organizer.clone()),
        Credential::Service(orders_token),
    ] {
        let refused = call(&s.inventory, &gone, &credential, &[])
            .await
            .expect_err("not served");
        assert_eq!(refused.code(), Code::Unimplemented);
    }
    assert_eq!(s.seat_status(&sale, &seat).await, inv::SeatStatus::Sold as i32);
    let (_, other) = s.buyer().await;
    let taken = s
        .hold(&other, &sale, std::slice::from_ref(&seat), None)
        .await
        .expect_err("the seat is not for sale");
    assert_eq!(reason(&taken), "SEAT_UNAVAILABLE");
    assert_eq!(
        s.ticket_status(&token, &paid).await,
        pb::TicketStatus::Valid as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_for_an_order_that_does_not_exist_sells_nothing() {
    let s = stack().await;
    let sale = s.sale(10, 30).await;
    let (buyer, token) = s.buyer().await;
    let seat = sale.seats[0].clone();
    let hold = s
        .hold(&token, &sale, std::slice::from_ref(&seat), Some(1))
        .await
        .expect("hold");
    let refused = s
        .inventory()
        .commit_hold(authed(
            &token,
            inv::CommitHoldRequest {
                hold_id: hold.id.clone(),
                order_id: Uuid::now_v7().to_string(),
                customer_id: buyer.to_string(),
            },
        ))
        .await
        .expect_err("a customer may not commit");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_ne!(
        s.seat_status(&sale, &seat).await,
        inv::SeatStatus::Sold as i32,
        "nothing sold"
    );
    // The hold runs out as any other, and the seat is for sale again.
    s.eventually("the seat is free again", || async {
        s.seat_status(&sale, &seat).await == inv::SeatStatus::Free as i32
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_outside_orders_never_leaves_a_paid_order_with_valid_tickets() {
    let s = stack().await;
    let sale = s.sale(10, 30).await;
    let (_, token) = s.buyer().await;
    let seat = sale.seats[0].clone();
    let paid = s.checkout(&token, &sale, std::slice::from_ref(&seat)).await;
    let payment = s.payment_of(&token, &paid.id).await;
    // The buyer at payments' own port: refused, nothing refunded.
    let refused = PaymentsServiceClient::new(s.payments.clone())
        .refund(authed(
            &token,
            payments::RefundRequest {
                idempotency_key: "sneaky-refund-1".into(),
                payment_id: payment.id.clone(),
                amount: None,
                reason: String::new(),
            },
        ))
        .await
        .expect_err("a customer may not refund");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(s.payments_of(&paid.id).await, vec![("succeeded".to_string(), 0)]);

    // The money goes back at the processor itself (its dashboard, a chargeback): payments
    // learns of it, and orders takes the order back.
    let processor = TestProvider::new(s.payments_pool.clone(), Duration::from_millis(1));
    processor
        .refund("dashboard-refund-1", &payment.provider_reference, 9_000)
        .await
        .expect("refunded at the processor");
    s.eventually("the order is refunded", || async {
        s.order(&token, &paid.id).await.status == pb::OrderStatus::Refunded as i32
    })
    .await;
    assert_eq!(
        s.ticket_status(&token, &paid).await,
        pb::TicketStatus::Refunded as i32,
        "the ticket is void"
    );
    s.eventually("the seat is back on sale", || async {
        s.seat_status(&sale, &seat).await == inv::SeatStatus::Free as i32
    })
    .await;
    // Refunded once: the order's refund does not send the money back a second time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.payments_of(&paid.id).await,
        vec![("refunded".to_string(), 9_000)]
    );
}
