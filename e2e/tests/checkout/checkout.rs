use std::sync::Arc;

use futures::future::join_all;
use ticketing_proto::ticketing::{
    inventory::v1 as inv,
    orders::v1::{self as pb},
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn a_full_checkout_charges_once_and_issues_one_ticket_per_place() {
    let stack = stack().await;
    let sale = stack.sale(50, 30).await;
    let (buyer, token) = stack.buyer().await;
    let seats = sale.seats[..2].to_vec();
    let hold = stack.hold(&token, &sale, &seats, None).await.expect("hold");
    let order = stack
        .create_order(&token, &hold.id, "checkout-key-1", "")
        .await
        .expect("order");
    assert_eq!(order.status, pb::OrderStatus::PendingPayment as i32);
    assert_eq!(order.buyer_id, buyer.to_string());
    assert_eq!(order.total.as_ref().map(|m| m.amount_minor), Some(18_000));
    assert_eq!(order.lines.len(), 2);

    // Someone else cannot pay it: the order is NOT_FOUND to them and nothing is charged.
    let (_, intruder) = stack.buyer().await;
    let refused = stack
        .pay(&intruder, &order.id, CARD_OK)
        .await
        .expect_err("not theirs to pay");
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(stack.payment_totals().await, (0, 0, 0));

    let paid = stack.pay(&token, &order.id, CARD_OK).await.expect("paid");
    assert_eq!(paid.status, pb::OrderStatus::Paid as i32);
    assert!(paid.lines.iter().all(|l| !l.ticket_id.is_empty()));
    // Paying again returns the paid order and charges nothing more.
    let again = stack.pay(&token, &order.id, CARD_OK).await.expect("paid again");
    assert_eq!(again.status, pb::OrderStatus::Paid as i32);
    assert_eq!(again.lines, paid.lines, "the same lines and tickets");

    let tickets = stack
        .orders()
        .list_tickets(authed(&token, pb::ListTicketsRequest::default()))
        .await
        .expect("tickets")
        .into_inner()
        .tickets;
    assert_eq!(tickets.len(), 2);
    assert!(tickets.iter().all(|t| !t.secret.is_empty()));
    for seat in &seats {
        assert_eq!(stack.seat_status(&sale, seat).await, inv::SeatStatus::Sold as i32);
    }
    assert_eq!(stack.payment_totals().await, (1, 18_000, 0));
    assert_eq!(stack.paid_total(&sale).await, 18_000);

    // Another buyer neither sees the order nor its tickets.
    let (_, stranger) = stack.buyer().await;
    let hidden = stack
        .orders()
        .get_order(authed(
            &stranger,
            pb::GetOrderRequest {
                order_id: order.id.clone(),
            },
        ))
        .await
        .expect_err("not theirs");
    assert_eq!(hidden.code(), Code::NotFound);
    // The organizer sees the event's orders.
    let listed = stack
        .orders()
        .list_orders(authed(
            &sale.organizer,
            pb::ListOrdersRequest {
                event_id: sale.event_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("organizer list")
        .into_inner()
        .orders;
    assert_eq!(listed.len(), 1);
    let refused = stack
        .orders()
        .list_orders(authed(
            &stranger,
            pb::ListOrdersRequest {
                event_id: sale.event_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("not staff");
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn racing_buyers_for_the_same_seats_one_wins_and_nobody_else_is_charged() {
    let stack = Arc::new(stack().await);
    let sale = Arc::new(stack.sale(10, 30).await);
    let seats = sale.seats[3..5].to_vec();
    let mut buyers = Vec::new();
    for _ in 0..12 {
        buyers.push(stack.buyer().await.1);
    }
    let results = join_all(buyers.into_iter().map(|token| {
        let (stack, sale, seats) = (stack.clone(), sale.clone(), seats.clone());
        tokio::spawn(async move {
            let hold = stack.hold(&token, &sale, &seats, None).await.ok()?;
            let order = stack
                .create_order(&token, &hold.id, &Uuid::new_v4().to_string(), "")
                .await
                .ok()?;
            stack.pay(&token, &order.id, CARD_OK).await.ok()
        })
    }))
    .await;
    let paid: Vec<pb::Order> = results.into_iter().filter_map(|r| r.ok().flatten()).collect();
    assert_eq!(paid.len(), 1, "exactly one buyer gets the seats");
    assert_eq!(stack.payment_totals().await, (1, 18_000, 0));
    assert_eq!(stack.paid_total(&sale).await, 18_000);
}

#[tokio::test]
async fn the_same_create_and_pay_repeated_concurrently_have_one_effect() {
    let stack = Arc::new(stack().await);
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let token = Arc::new(token);
    let hold = stack
        .hold(&token, &sale, &sale.seats[..1], None)
        .await
        .expect("hold");
    let created = join_all((0..8).map(|_| {
        let (stack, token, hold_id) = (stack.clone(), token.clone(), hold.id.clone());
        tokio::spawn(async move { stack.create_order(&token, &hold_id, "same-key-123", "").await })
    }))
    .await;
    let created: Vec<pb::Order> = created
        .into_iter()
        .map(|r| r.expect("task").expect("created"))
        .collect();
    // The winner answers from what it wrote, the others from what they read: the same order.
    assert!(
        created.iter().all(|o| o.lines.len() == 1),
        "every reply has the line"
    );
    let ids: std::collections::BTreeSet<String> = created.into_iter().map(|o| o.id).collect();
    assert_eq!(ids.len(), 1, "one order for one key");
    let order_id = ids.into_iter().next().expect("id");
    // The same key with another body is refused.
    let other_hold = stack
        .hold(&token, &sale, &sale.seats[1..2], None)
        .await
        .expect("hold");
    let reused = stack
        .create_order(&token, &other_hold.id, "same-key-123", "")
        .await
        .expect_err("key reused");
    assert_eq!(reused.code(), Code::InvalidArgument);

    let paid = join_all((0..8).map(|_| {
        let (stack, token, order_id) = (stack.clone(), token.clone(), order_id.clone());
        tokio::spawn(async move { stack.pay(&token, &order_id, CARD_OK).await })
    }))
    .await;
    let mut tickets = std::collections::BTreeSet::new();
    for result in paid {
        let order = result.expect("task").expect("paid");
        assert_eq!(order.status, pb::OrderStatus::Paid as i32);
        // Whether it paid, waited for the payer or found the order paid, each reply shows the
        // ticket, and the same one.
        assert_eq!(order.lines.len(), 1);
        tickets.extend(order.lines.iter().map(|l| l.ticket_id.clone()));
    }
    assert_eq!(tickets.len(), 1, "one ticket, shown to every reply: {tickets:?}");
    assert!(!tickets.iter().any(String::is_empty));
    assert_eq!(stack.payment_totals().await, (1, 9_000, 0), "one charge");
}

#[tokio::test]
async fn a_declined_card_leaves_the_order_payable_and_a_good_one_pays_it() {
    let stack = stack().await;
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let hold = stack
        .hold(&token, &sale, &sale.seats[..1], None)
        .await
        .expect("hold");
    let order = stack
        .create_order(&token, &hold.id, "decline-key-1", "")
        .await
        .expect("order");
    let declined = stack
        .pay(&token, &order.id, CARD_DECLINED)
        .await
        .expect_err("declined");
    assert_eq!(declined.code(), Code::FailedPrecondition);
    assert_eq!(reason(&declined), "PAYMENT_FAILED");
    let pending = stack
        .orders()
        .get_order(authed(
            &token,
            pb::GetOrderRequest {
                order_id: order.id.clone(),
            },
        ))
        .await
        .expect("order")
        .into_inner();
    assert_eq!(pending.status, pb::OrderStatus::PendingPayment as i32);
    assert!(!pending.last_payment_error.is_empty());
    let paid = stack.pay(&token, &order.id, CARD_OK).await.expect("paid");
    assert_eq!(paid.status, pb::OrderStatus::Paid as i32);
    assert_eq!(stack.payment_totals().await, (1, 9_000, 0));
}

#[tokio::test]
async fn an_unpaid_order_expires_releases_its_seats_and_refuses_late_payment() {
    let stack = stack().await;
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let seat = sale.seats[0].clone();
    let hold = stack
        .hold(&token, &sale, std::slice::from_ref(&seat), Some(1))
        .await
        .expect("hold");
    let order = stack
        .create_order(&token, &hold.id, "expiry-key-1", "")
        .await
        .expect("order");
    stack
        .eventually("the order expires", || async {
            stack
                .orders()
                .get_order(authed(
                    &token,
                    pb::GetOrderRequest {
                        order_id: order.id.clone(),
                    },
                ))
                .await
                .map(|o| o.into_inner().status == pb::OrderStatus::Expired as i32)
                .unwrap_or(false)
        })
        .await;
    stack
        .eventually("the seat is free again", || async {
            stack.seat_status(&sale, &seat).await == inv::SeatStatus::Free as i32
        })
        .await;
    let late = stack.pay(&token, &order.id, CARD_OK).await.expect_err("too late");
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(stack.payment_totals().await, (0, 0, 0), "nobody charged");
}

#[tokio::test]
async fn cancelling_an_unpaid_order_returns_its_seats_at_once() {
    let stack = stack().await;
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let seat = sale.seats[2].clone();
    let hold = stack
        .hold(&token, &sale, std::slice::from_ref(&seat), None)
        .await
        .expect("hold");
    let order = stack
        .create_order(&token, &hold.id, "cancel-key-1", "")
        .await
        .expect("order");
    let cancelled = stack
        .orders()
        .cancel_order(authed(
            &token,
            pb::CancelOrderRequest {
                order_id: order.id.clone(),
                reason: "changed my mind".into(),
            },
        ))
        .await
        .expect("cancelled")
        .into_inner();
    assert_eq!(cancelled.status, pb::OrderStatus::Cancelled as i32);
    stack
        .eventually("the seat is free again", || async {
            stack.seat_status(&sale, &seat).await == inv::SeatStatus::Free as i32
        })
        .await;
    let late = stack
        .pay(&token, &order.id, CARD_OK)
        .await
        .expect_err("cancelled");
    assert_eq!(late.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_refund_returns_money_and_places() {
    let stack = stack().await;
    let sale = stack.sale(10, 30).await;
    let (_, token) = stack.buyer().await;
    let seats = sale.seats[..2].to_vec();
    let paid = stack.checkout(&token, &sale, &seats).await;
    // One of the two tickets first.
    let first_line = paid.lines[0].id.clone();
    let partly = stack
        .orders()
        .refund_order(authed(
            &token,
            pb::RefundOrderRequest {
                order_id: paid.id.clone(),
                line_ids: vec![first_line.clone()],
                ..Default::default()
            },
        ))
        .await
        .expect("refund")
        .into_inner();
    assert_eq!(partly.status, pb::OrderStatus::PartiallyRefunded as i32);
    assert_eq!(
        partly.refunded_total.as_ref().map(|m| m.amount_minor),
        Some(9_000)
    );
    let refunded_seat = match &paid.lines[0].place {
        Some(pb::order_line::Place::SeatId(seat)) => seat.clone(),
        _ => panic!("a seat line"),
    };
    stack
        .eventually("the refunded seat is back on sale", || async {
            stack.seat_status(&sale, &refunded_seat).await == inv::SeatStatus::Free as i32
        })
        .await;
    stack
        .eventually("payments refunded the line", || async {
            stack.payment_totals().await.2 == 9_000
        })
        .await;
    // The organizer refunds the rest; asking again changes nothing.
    for _ in 0..2 {
        let full = stack
            .orders()
            .refund_order(authed(
                &sale.organizer,
                pb::RefundOrderRequest {
                    order_id: paid.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("refund rest")
            .into_inner();
        assert_eq!(full.status, pb::OrderStatus::Refunded as i32);
    }
    stack
        .eventually("payments refunded everything", || async {
            stack.payment_totals().await.2 == 18_000
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        stack.payment_totals().await,
        (1, 18_000, 18_000),
        "never refunded twice"
    );
}

#[tokio::test]
async fn a_discount_code_limit_holds_under_concurrency() {
    let stack = Arc::new(stack().await);
    let sale = Arc::new(stack.sale(100, 30).await);
    stack
        .orders()
        .create_discount_code(authed(
            &sale.organizer,
            pb::CreateDiscountCodeRequest {
                event_id: sale.event_id.clone(),
                discount_code: Some(pb::DiscountCode {
                    code: "EARLY25".into(),
                    amount: Some(pb::discount_code::Amount::PercentOff(25)),
                    max_uses: 3,
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("code");
    let mut buyers = Vec::new();
    for _ in 0..10 {
        buyers.push(stack.buyer().await.1);
    }
    let results = join_all(buyers.into_iter().map(|token| {
        let (stack, sale) = (stack.clone(), sale.clone());
        tokio::spawn(async move {
            let hold = stack.hold_floor(&token, &sale, 1).await;
            stack
                .create_order(&token, &hold.id, &Uuid::new_v4().to_string(), "EARLY25")
                .await
        })
    }))
    .await;
    let created: Vec<pb::Order> = results
        .into_iter()
        .filter_map(|r| r.expect("task").ok())
        .collect();
    assert_eq!(created.len(), 3, "exactly max_uses orders get the code");
    assert!(
        created
            .iter()
            .all(|o| o.total.as_ref().map(|m| m.amount_minor) == Some(3_000))
    );
    let code = stack
        .orders()
        .get_discount_code(authed(
            &sale.organizer,
            pb::GetDiscountCodeRequest {
                event_id: sale.event_id.clone(),
                code: "EARLY25".into(),
            },
        ))
        .await
        .expect("code")
        .into_inner();
    assert_eq!(code.times_used, 3);
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_and_changes_nothing() {
    let stack = stack().await;
    let (_, token) = stack.buyer().await;
    for (request, field) in [
        (
            pb::CreateOrderRequest {
                hold_id: "nope".into(),
                idempotency_key: "key-12345".into(),
                ..Default::default()
            },
            "hold_id",
        ),
        (
            pb::CreateOrderRequest {
                hold_id: Uuid::new_v4().to_string(),
                idempotency_key: "short".into(),
                ..Default::default()
            },
            "idempotency_key",
        ),
        (
            pb::CreateOrderRequest {
                hold_id: Uuid::new_v4().to_string(),
                idempotency_key: "key-12345".into(),
                discount_code: "x!".into(),
                ..Default::default()
            },
            "discount_code",
        ),
    ] {
        let error = stack
            .orders()
            .create_order(authed(&token, request))
            .await
            .expect_err("invalid");
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(error.message().contains(field), "{}", error.message());
    }
    let no_card = stack
        .orders()
        .pay_order(authed(
            &token,
            pb::PayOrderRequest {
                order_id: Uuid::new_v4().to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("no card");
    assert_eq!(no_card.code(), Code::InvalidArgument);
    let anonymous = stack
        .orders()
        .create_order(authed(
            "",
            pb::CreateOrderRequest {
                hold_id: Uuid::new_v4().to_string(),
                idempotency_key: "key-12345".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("anonymous");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert_eq!(stack.payment_totals().await, (0, 0, 0), "nothing charged");
}

/// UpdateDiscountCode reads `update_mask` as every Update RPC does (AIP-134).
#[tokio::test]
async fn discount_code_updates_follow_the_field_mask() {
    let stack = stack().await;
    let sale = stack.sale(10, 30).await;
    let mut orders = stack.orders();
    orders
        .create_discount_code(authed(
            &sale.organizer,
            pb::CreateDiscountCodeRequest {
                event_id: sale.event_id.clone(),
                discount_code: Some(pb::DiscountCode {
                    code: "MASK".into(),
                    amount: Some(pb::discount_code::Amount::PercentOff(10)),
                    max_uses: 3,
                    active: true,
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("code");
    let mut update = async |max_uses: i32, active: bool, paths: &[&str]| {
        orders
            .update_discount_code(authed(
                &sale.organizer,
                pb::UpdateDiscountCodeRequest {
                    discount_code: Some(pb::DiscountCode {
                        event_id: sale.event_id.clone(),
                        code: "MASK".into(),
                        max_uses,
                        active,
                        ..Default::default()
                    }),
                    update_mask: (!paths.is_empty()).then(|| prost_types::FieldMask {
                        paths: paths.iter().map(|p| p.to_string()).collect(),
                    }),
                },
            ))
            .await
            .map(|r| r.into_inner())
    };
    // No mask: what the request sets (max_uses, active) changes.
    let code = update(7, true, &[]).await.expect("no mask");
    assert_eq!((code.max_uses, code.active), (7, true));
    // Named: `false` deactivates; the max_uses sent is not named, so it stays.
    let code = update(9, false, &["active"]).await.expect("named");
    assert_eq!((code.max_uses, code.active), (7, false));
    // Nothing set, nothing named; a path that cannot change: refused, nothing changes.
    for (paths, why) in [
        (&[][..], "nothing to change"),
        (&["percent_off"][..], "not updatable"),
    ] {
        let refused = update(0, false, paths).await.expect_err(why);
        assert_eq!(refused.code(), Code::InvalidArgument, "{why}");
        assert_eq!(ticketing_e2e::violated_fields(&refused), ["update_mask"], "{why}");
    }
    // `*`: every field takes the request's value (0 uses: unlimited).
    let code = update(0, true, &["*"]).await.expect("everything");
    assert_eq!((code.max_uses, code.active), (0, true));
}
