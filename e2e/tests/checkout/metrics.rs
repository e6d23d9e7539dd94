//! RED metrics on the admin port: per RPC served and per RPC made to a peer, with status codes
//! and latency histograms, plus the business counters, read the way Prometheus reads them.

use ticketing_e2e::http_get;
use ticketing_proto::ticketing::orders::v1 as pb;
use uuid::Uuid;

use crate::helpers::{CARD_DECLINED, authed, stack};

/// The value of the sample whose line has every one of `parts`, if there is one.
fn sample(text: &str, name: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_served_and_made_are_counted_by_method_and_code_with_latency_histograms() {
    let s = stack().await;
    let sale = s.sale(10, 30).await;
    let (_, buyer) = s.buyer().await;
    let paid = s.checkout(&buyer, &sale, &sale.seats[..1]).await;
    assert_eq!(paid.status, pb::OrderStatus::Paid as i32);
    let missing = s
        .orders()
        .get_order(authed(
            &buyer,
            pb::GetOrderRequest {
                order_id: Uuid::now_v7().to_string(),
            },
        ))
        .await
        .expect_err("no such order");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let hold = s
        .hold(&buyer, &sale, &sale.seats[1..2], None)
        .await
        .expect("hold");
    let order = s
        .create_order(&buyer, &hold.id, &Uuid::new_v4().to_string(), "")
        .await
        .expect("order");
    s.pay(&buyer, &order.id, CARD_DECLINED)
        .await
        .expect_err("declined");

    let text = http_get(s.addrs.orders_admin, "/metrics").await;
    let orders = "grpc_service=\"ticketing.orders.v1.OrdersService\"";
    let pay = "grpc_method=\"PayOrder\"";
    assert!(
        sample(
            &text,
            "grpc_server_handled_total",
            &[orders, pay, "grpc_code=\"OK\"", "grpc_type=\"unary\""]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "grpc_server_handled_total",
            &[orders, "grpc_method=\"GetOrder\"", "grpc_code=\"NotFound\""]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert!(
        sample(
            &text,
            "grpc_server_handled_total",
            &[orders, pay, "grpc_code=\"FailedPrecondition\""]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert!(sample(&text, "grpc_server_started_total", &[orders, pay]).is_some_and(|n| n >= 2.0));
    // Latency as a histogram: buckets up to +Inf, and a count of every call handled.
    assert!(
        sample(
            &text,
            "grpc_server_handling_seconds_bucket",
            &[orders, pay, "le=\"+Inf\""]
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert!(sample(&text, "grpc_server_handling_seconds_count", &[orders, pay]).is_some_and(|n| n >= 2.0));
    // Calls orders made: the charge to payments and the commit to inventory, by code.
    assert!(
        sample(
            &text,
            "grpc_client_handled_total",
            &[
                "grpc_service=\"ticketing.payments.v1.PaymentsService\"",
                "grpc_method=\"Charge\"",
                "grpc_code=\"OK\""
            ]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "grpc_client_handled_total",
            &[
                "grpc_service=\"ticketing.inventory.v1.InventoryService\"",
                "grpc_method=\"CommitHold\""
            ]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert!(
        sample(
            &text,
            "grpc_client_handling_seconds_count",
            &["grpc_method=\"Charge\""]
        )
        .is_some()
    );
    // Pool and queue gauges.
    assert!(
        sample(&text, "pool_connections", &["pool=\"postgres\""]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(sample(&text, "pool_idle_connections", &["pool=\"postgres\""]).is_some());
    assert!(sample(&text, "outbox_backlog", &[]).is_some(), "{text}");
    // Business counters.
    assert!(sample(&text, "tickets_issued_total", &[]).is_some_and(|n| n >= 1.0));
    assert!(sample(&text, "orders_created_total", &[]).is_some_and(|n| n >= 2.0));
    assert!(sample(&text, "payments_total", &["outcome=\"failed\""]).is_some_and(|n| n >= 1.0));
}
