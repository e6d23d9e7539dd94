//! The sale heals itself: a checkout whose PayOrder died is finished or released within a lease
//! of it (not at the order's expiry), a live PayOrder keeps its lease however long payments
//! takes, and a payment that arrives after its order expired takes the order back while its
//! places are free, or is refunded with the buyer told why.

use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use prost::Message;
use ticketing_proto::ticketing::{
    events::v1 as events,
    inventory::v1 as inv,
    orders::v1 as pb,
    payments::v1::{self as payments, payments_service_client::PaymentsServiceClient},
};
use ticketing_testkit::ProxyMode;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

/// The order's lease as the database has it: (lapses at, holder, attempt open).
async fn lease_of(s: &Stack, order_id: &str) -> (Option<chrono::DateTime<Utc>>, Option<Uuid>, bool) {
    use svc_orders::schema::orders;
    let mut conn = s.orders_pool.get().await.expect("db");
    orders::table
        .find(Uuid::parse_str(order_id).expect("id"))
        .select((orders::charging_until, orders::lease_holder, orders::attempt_open))
        .first(&mut conn)
        .await
        .expect("order")
}

async fn order_of(s: &Stack, token: &str, order_id: &str) -> pb::Order {
    s.orders()
        .get_order(authed(
            token,
            pb::GetOrderRequest {
                order_id: order_id.into(),
            },
        ))
        .await
        .expect("order")
        .into_inner()
}

/// Cuts orders off from the broker: its events wait in its outbox and it hears none.
fn cut_broker(s: &Stack, cut: bool) {
    s.broker_proxy
        .set_mode(if cut { ProxyMode::Refuse } else { ProxyMode::Pass });
    if cut {
        s.broker_proxy.cut_connections();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_whose_process_died_after_the_charge_is_finished_without_its_event() {
    let s = stack().await;
    let sale = s.sale(10, 30).await;
    let (buyer, token) = s.buyer().await;
    let hold = s.hold(&token, &sale, &sale.seats[..1], None).await.expect("hold");
    let order = s
        .create_order(&token, &hold.id, "died-after-charge", "")
        .await
        .expect("order");
    // payment.succeeded cannot reach orders: only the resumption can finish the checkout.
    cut_broker(&s, true);
    // All its PayOrder did before the process died: the lease (nobody renews it now), the
    // durable reservation and the charge.
    s.take_lease_for(&order.id, Duration::from_secs(1)).await;
    s.commit_as_orders(&hold.id, &order.id, buyer).await;
    s.charge_as_orders(&order.id, buyer, 9_000, 1)
        .await
        .expect("charged");
    s.eventually("the checkout is finished from the charge's outcome", || async {
        let o = order_of(&s, &token, &order.id).await;
        o.status == pb::OrderStatus::Paid as i32 && o.lines.iter().all(|l| !l.ticket_id.is_empty())
    })
    .await;
    // When the event does arrive it changes nothing: one charge, one set of tickets.
    cut_broker(&s, false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paid = order_of(&s, &token, &order.id).await;
    assert_eq!(paid.status, pb::OrderStatus::Paid as i32);
    assert_eq!(s.payment_totals().await, (1, 9_000, 0), "charged once, kept");
    assert_eq!(
        s.seat_status(&sale, &sale.seats[0]).await,
        inv::SeatStatus::Sold as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_whose_process_died_before_the_charge_is_released_within_seconds() {
    let s = stack().await;
    let sale = s.sale(10, 30).await;
    let (buyer, token) = s.buyer().await;
    let hold = s.hold(&token, &sale, &sale.seats[..1], None).await.expect("hold");
    let order = s
        .create_order(&token, &hold.id, "died-before-charge", "")
        .await
        .expect("order");
    s.take_lease_for(&order.id, Duration::from_secs(1)).await;
    s.commit_as_orders(&hold.id, &order.id, buyer).await;
    // Nothing was charged: the lease is given back, its attempt's key kept (its outcome was
    // unknown to the dead process), long before the order's deadline.
    s.eventually("the lapsed lease is released", || async {
        let (until, holder, open) = lease_of(&s, &order.id).await;
        until.is_none() && holder.is_none() && open
    })
    .await;
    let order_now = order_of(&s, &token, &order.id).await;
    assert_eq!(order_now.status, pb::OrderStatus::PendingPayment as i32);
    // The buyer's retry pays at once, with the same attempt's key.
    let paid = s.pay(&token, &order.id, CARD_OK).await.expect("paid");
    assert_eq!(paid.status, pb::OrderStatus::Paid as i32);
    let payment = s.payment_of(&token, &order.id).await;
    assert_eq!(payment.status, payments::PaymentStatus::Succeeded as i32);
    assert_eq!(s.payment_totals().await, (1, 9_000, 0));
    // Payments knows the charge by the first attempt's key (asked as orders asks).
    let as_orders = s.identity.service_token("orders", "payments").await;
    let charge = PaymentsServiceClient::new(s.payments.clone())
        .get_charge(as_service(
            &as_orders,
            payments::GetChargeRequest {
                order_id: order.id.clone(),
                idempotency_key: format!("order:{}:attempt:1", order.id),
            },
        ))
        .await
        .expect("the charge under the first attempt's key")
        .into_inner();
    assert_eq!(charge.id, payment.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_pay_order_keeps_its_lease_while_payments_hangs() {
    let s = stack().await;
    let sale = s.sale(10, 30).await;
    let (_, token) = s.buyer().await;
    let hold = s.hold(&token, &sale, &sale.seats[..1], None).await.expect("hold");
    let order = s
        .create_order(&token, &hold.id, "hung-payments", "")
        .await
        .expect("order");
    s.payments_proxy.set_mode(ProxyMode::Stall);
    s.payments_proxy.cut_connections();
    let first = {
        let orders = s.orders();
        let (token, id) = (token.clone(), order.id.clone());
        tokio::spawn(async move {
            let mut orders = orders;
            orders
                .pay_order(authed(
                    &token,
                    pb::PayOrderRequest {
                        order_id: id,
                        card: Some(pb::Card {
                            number: CARD_OK.into(),
                            exp_month: 12,
                            exp_year: 2099,
                            cvc: "123".into(),
                            holder_name: "A Buyer".into(),
                        }),
                        idempotency_key: String::new(),
                    },
                ))
                .await
        })
    };
    // Three leases' worth of waiting on payments: the live PayOrder renews its lease.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (until, holder, open) = lease_of(&s, &order.id).await;
    assert!(
        until.is_some_and(|t| t > Utc::now()) && holder.is_some() && open,
        "the lease is kept: {until:?} {holder:?} {open}"
    );
    let busy = s.pay(&token, &order.id, CARD_OK).await.expect_err("in flight");
    assert_eq!(busy.code(), Code::Aborted, "{busy:?}");
    // Payments answers again: the first PayOrder's call fails, the retry pays, charged once.
    s.payments_proxy.set_mode(ProxyMode::Pass);
    s.payments_proxy.cut_connections();
    let _ = first.await;
    let mut paid = None;
    for _ in 0..40 {
        match s.pay(&token, &order.id, CARD_OK).await {
            Ok(order) => {
                paid = Some(order);
                break;
            }
            Err(status) => {
                assert!(
                    matches!(status.code(), Code::Aborted | Code::Unavailable),
                    "only told to come back: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    assert_eq!(paid.expect("paid").status, pb::OrderStatus::Paid as i32);
    assert_eq!(s.payment_totals().await, (1, 9_000, 0), "charged once");
}

/// A buyer's order whose charge (attempt 0, as a charge still under way when the order expired)
/// succeeds only after the order expired and inventory gave its places back. Orders is cut off
/// from the broker meanwhile, so payments hears of the expiry only afterwards, as happens when
/// a charge outlives its checkout.
async fn expire_then_charge(s: &Stack, sale: &Sale, taken_meanwhile: bool) -> (String, String) {
    let (buyer, token) = s.buyer().await;
    // A short hold: the order's deadline is the hold's expiry.
    let hold = s
        .hold(&token, sale, &sale.seats[..1], Some(1))
        .await
        .expect("hold");
    let order = s
        .create_order(&token, &hold.id, &Uuid::new_v4().to_string(), "")
        .await
        .expect("order");
    cut_broker(s, true);
    s.eventually("the order expires", || async {
        order_of(s, &token, &order.id).await.status == pb::OrderStatus::Expired as i32
    })
    .await;
    s.eventually("the hold's place is free again", || async {
        s.seat_status(sale, &sale.seats[0]).await == inv::SeatStatus::Free as i32
    })
    .await;
    if taken_meanwhile {
        let (_, other) = s.buyer().await;
        let bought = s.checkout(&other, sale, &sale.seats[..1]).await;
        assert_eq!(bought.status, pb::OrderStatus::Paid as i32);
    }
    let late = s
        .charge_as_orders(&order.id, buyer, 9_000, 0)
        .await
        .expect("the late charge succeeds at the processor");
    assert_eq!(late.status, payments::PaymentStatus::Succeeded as i32);
    cut_broker(s, false);
    (order.id, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_payment_takes_back_an_expired_order_whose_places_are_free() {
    let s = stack().await;
    let mut tap = s.broker.tap("order.#").await.expect("tap");
    let sale = s.sale(10, 30).await;
    let (order_id, token) = expire_then_charge(&s, &sale, false).await;
    s.eventually("the order is paid again, with its ticket", || async {
        let o = order_of(&s, &token, &order_id).await;
        o.status == pb::OrderStatus::Paid as i32 && o.lines.iter().all(|l| !l.ticket_id.is_empty())
    })
    .await;
    assert_eq!(
        s.seat_status(&sale, &sale.seats[0]).await,
        inv::SeatStatus::Sold as i32,
        "its seat is sold to it again"
    );
    // The expiry that inventory hears (before or after the revival) returns nothing now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.seat_status(&sale, &sale.seats[0]).await,
        inv::SeatStatus::Sold as i32
    );
    assert_eq!(s.payment_totals().await, (1, 9_000, 0), "the payment is kept");
    // The buyer is told: order.paid, marked as a reactivation.
    let mut reactivated = false;
    for _ in 0..10 {
        let Ok(envelope) = tap.next(Duration::from_secs(5)).await else {
            break;
        };
        if envelope.event_type == "order.paid" {
            let paid = events::OrderPaid::decode(envelope.payload.as_slice()).expect("payload");
            reactivated = paid.order_id == order_id && paid.reactivated;
            break;
        }
    }
    assert!(reactivated, "order.paid says the order was taken back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_payment_for_an_order_whose_places_were_taken_is_refunded_and_the_buyer_told() {
    let s = stack().await;
    let mut tap = s.broker.tap("order.payment_returned").await.expect("tap");
    let sale = s.sale(10, 30).await;
    let (order_id, token) = expire_then_charge(&s, &sale, true).await;
    let returned = tap.next(Duration::from_secs(10)).await.expect("told");
    let returned = events::OrderPaymentReturned::decode(returned.payload.as_slice()).expect("payload");
    assert_eq!(returned.order_id, order_id);
    assert_eq!(returned.amount.map(|m| m.amount_minor), Some(9_000));
    assert!(returned.reason.contains("taken"), "{}", returned.reason);
    let payment = s.payment_of(&token, &order_id).await;
    assert_eq!(payment.status, payments::PaymentStatus::Refunded as i32);
    let order = order_of(&s, &token, &order_id).await;
    assert_eq!(order.status, pb::OrderStatus::Expired as i32, "stays expired");
    assert!(order.lines.iter().all(|l| l.ticket_id.is_empty()), "no ticket");
    // The other buyer keeps the seat: one sale of it, one kept payment.
    assert_eq!(
        s.seat_status(&sale, &sale.seats[0]).await,
        inv::SeatStatus::Sold as i32
    );
    assert_eq!(s.payment_totals().await, (2, 18_000, 9_000));
    assert_eq!(s.paid_total(&sale).await, 9_000);
}
