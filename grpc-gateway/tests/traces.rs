//! One checkout is one trace: the spans of a PayOrder sent through the gateway with a client's
//! `traceparent` arrive at an OTLP receiver (the test's own, the collector's gRPC service) with
//! one trace id and the right parents, from the gateway through orders, inventory and payments
//! to the consumer of the event payments published. Its own test binary: the tracer is global.

#[allow(dead_code)]
#[path = "rest/helpers.rs"]
mod helpers;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    trace::v1::Span,
};
use serde_json::json;
use ticketing_platform::{auth::Role, config::LogConfig, telemetry};

use crate::helpers::{Auth, stack};

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute(span: &Span, key: &str) -> String {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_through_the_gateway_is_one_trace_with_the_right_parents() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let guard = telemetry::install(
        &LogConfig {
            filter: "off".into(),
            ..LogConfig::default()
        },
        "ticketing-tests",
        "test",
        Some(endpoint),
    );

    let s = stack().await;
    let sale = s.published_event().await;
    let (_, buyer) = s.identity.user(&[Role::Customer]).await;
    let hold = s
        .post(
            &format!("/v1/events/{}/holds:seats", sale.event_id),
            Auth::Bearer(&buyer),
            json!({ "seatIds": [sale.seat_ids[0]] }),
        )
        .await
        .ok();
    let order = s
        .post(
            "/v1/orders",
            Auth::Bearer(&buyer),
            json!({ "holdId": hold["id"], "idempotencyKey": format!("trace-{}", hold["id"]) }),
        )
        .await
        .ok();
    // The browser's trace: the gateway continues it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let browser_span = "00f067aa0ba902b7";
    let paid = s
        .http
        .post(format!("{}/v1/orders/{}:pay", s.base, order["id"].as_str().expect("id")))
        .bearer_auth(&buyer)
        .header("traceparent", format!("00-{trace_id}-{browser_span}-01"))
        .json(&json!({ "card": { "number": "4242424242424242", "expMonth": 12, "expYear": 2040, "cvc": "123" } }))
        .send()
        .await
        .expect("paid");
    assert!(
        paid.status().is_success(),
        "{}",
        paid.text().await.unwrap_or_default()
    );

    // Spans are batched: flush until the event's consumer has reported too.
    let mut trace = Vec::new();
    for _ in 0..100 {
        guard.flush();
        trace = receiver
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|span| hex(&span.trace_id) == trace_id)
            .cloned()
            .collect::<Vec<_>>();
        if trace.iter().any(|span| span.name == "payment.succeeded process") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let by_id: HashMap<String, &Span> = trace.iter().map(|s| (hex(&s.span_id), s)).collect();
    let names: Vec<&str> = trace.iter().map(|s| s.name.as_str()).collect();
    let find = |name: &str| {
        trace
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in the trace: {names:?}"))
    };
    let parent = |span: &Span| {
        by_id
            .get(&hex(&span.parent_span_id))
            .copied()
            .unwrap_or_else(|| panic!("the parent of {} is not in the trace: {names:?}", span.name))
    };

    // Browser -> gateway -> orders.
    let gateway = find("POST /v1/orders/{order_id}:pay");
    assert_eq!(hex(&gateway.parent_span_id), browser_span);
    let gateway_call = trace
        .iter()
        .find(|s| s.name == "ticketing.orders.v1.OrdersService/PayOrder" && s.kind == 3)
        .unwrap_or_else(|| panic!("no client span for PayOrder: {names:?}"));
    assert_eq!(parent(gateway_call).name, gateway.name);
    let orders = trace
        .iter()
        .find(|s| s.name == "ticketing.orders.v1.OrdersService/PayOrder" && s.kind == 2)
        .unwrap_or_else(|| panic!("no server span for PayOrder: {names:?}"));
    assert_eq!(hex(&orders.parent_span_id), hex(&gateway_call.span_id));
    assert_eq!(attribute(orders, "rpc.system"), "grpc");

    // Orders -> inventory (the durable reservation) and -> payments (the charge), as children.
    for (service, method) in [
        ("ticketing.inventory.v1.InventoryService", "CommitHold"),
        ("ticketing.payments.v1.PaymentsService", "Charge"),
    ] {
        let name = format!("{service}/{method}");
        let server = trace
            .iter()
            .find(|s| s.name == name && s.kind == 2)
            .unwrap_or_else(|| panic!("no server span {name}: {names:?}"));
        let client = parent(server);
        assert_eq!(client.name, name);
        assert_eq!(client.kind, 3, "the caller's client span");
        // The client span sits under orders' PayOrder span (directly or through its own spans).
        let mut ancestor = parent(client);
        while hex(&ancestor.span_id) != hex(&orders.span_id) {
            ancestor = parent(ancestor);
        }
    }

    // Payments published payment.succeeded from inside the charge; orders consumed it later,
    // in the same trace.
    let consumed = find("payment.succeeded process");
    assert_eq!(consumed.kind, 5, "a consumer span");
    let mut ancestor = parent(consumed);
    while hex(&ancestor.span_id) != hex(&gateway.span_id) {
        ancestor = parent(ancestor);
    }
    drop(guard);
}
