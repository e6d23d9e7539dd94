//! Protection at the edge: rate limits per client address and per API key, and the breaker and
//! health probes in front of a dead, frozen or failing upstream.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value as Json, json};
use ticketing_platform::auth::Role;
use ticketing_testkit::ProxyMode;

use crate::helpers::{Auth, Reply, stack_with};

/// The `ErrorInfo` reason in a JSON error body ("" when there is none).
fn reason(body: &Json) -> String {
    body["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        .and_then(|d| d["reason"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn retry_after_secs(reply: &Reply) -> Option<u64> {
    reply
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_address_past_its_burst_gets_429_with_retry_after_until_the_bucket_refills() {
    let s = stack_with(|c| {
        c.rate_limit.per_ip_per_second = 1;
        c.rate_limit.per_ip_burst = 3;
    })
    .await;
    for n in 0..3 {
        let reply = s.get("/v1/events", Auth::None).await;
        assert_eq!(reply.status, StatusCode::OK, "request {n} is within the burst");
    }
    let refused = s.get("/v1/events", Auth::None).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json["code"], 8, "RESOURCE_EXHAUSTED");
    assert_eq!(reason(&refused.json), "RATE_LIMITED");
    assert!(
        refused.json["details"]
            .to_string()
            .contains("type.googleapis.com/google.rpc.RetryInfo"),
        "{}",
        refused.json
    );
    assert_eq!(retry_after_secs(&refused), Some(1));
    // Unknown routes and bad requests spend tokens too: the limit comes before any work.
    assert_eq!(
        s.get("/v1/nowhere", Auth::None).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(s.get("/v1/events", Auth::None).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_api_key_has_its_own_bucket() {
    let s = stack_with(|c| {
        c.rate_limit.per_api_key_per_second = 1;
        c.rate_limit.per_api_key_burst = 2;
    })
    .await;
    let (org, owner) = s.identity.organizer().await;
    let mut keys = Vec::new();
    for name in ["first partner", "second partner"] {
        let created = s
            .post(
                &format!("/v1/organizations/{org}/apiKeys"),
                Auth::Bearer(&owner),
                json!({ "name": name, "scopes": ["API_KEY_SCOPE_EVENTS_READ"] }),
            )
            .await
            .ok();
        keys.push(created["secret"].as_str().expect("secret").to_string());
    }
    let venues = format!("/v1/venues?organizationId={org}");
    for _ in 0..2 {
        assert_eq!(
            s.get(&venues, Auth::ApiKey(&keys[0])).await.status,
            StatusCode::OK
        );
    }
    let refused = s.get(&venues, Auth::ApiKey(&keys[0])).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.json);
    assert!(refused.json.to_string().contains("api_key"), "{}", refused.json);
    assert!(retry_after_secs(&refused).is_some_and(|s| s >= 1));
    // The other key, and callers with their own tokens, are not held back by it.
    assert_eq!(
        s.get(&venues, Auth::ApiKey(&keys[1])).await.status,
        StatusCode::OK
    );
    assert_eq!(s.get(&venues, Auth::Bearer(&owner)).await.status, StatusCode::OK);
    // Invalid keys get 401, never a bucket of their own.
    for _ in 0..5 {
        assert_eq!(
            s.get(&venues, Auth::ApiKey("tk_nope_nope")).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
}

/// Polls `GET path` until it answers 200 (each try given little time), for at most 15 s.
async fn until_ok(s: &crate::helpers::Stack, path: &str, token: &str) {
    for _ in 0..150 {
        let reply = s
            .http
            .get(format!("{}{path}", s.base))
            .bearer_auth(token)
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        if reply.is_ok_and(|r| r.status() == StatusCode::OK) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never answered 200 again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_refused_at_once_and_taken_back_by_its_probes() {
    // A cool-down far beyond the test: only the health probes can take orders back.
    let s = stack_with(|c| c.breaker.cool_down = Duration::from_secs(120)).await;
    let (_, buyer) = s.identity.user(&[Role::Customer]).await;
    assert_eq!(
        s.get("/v1/orders", Auth::Bearer(&buyer)).await.status,
        StatusCode::OK
    );
    s.orders_proxy.set_mode(ProxyMode::Refuse);
    s.orders_proxy.cut_connections();
    // The first call finds orders unreachable and is told so...
    let failed = s.get("/v1/orders", Auth::Bearer(&buyer)).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE, "{}", failed.json);
    assert_eq!(failed.json["code"], 14);
    // ...and from then on nobody waits on it: answered at the edge, with when to come back.
    for n in 0..5 {
        let refused = s.get("/v1/orders", Auth::Bearer(&buyer)).await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            reason(&refused.json),
            "CIRCUIT_OPEN",
            "call {n}: {}",
            refused.json
        );
        assert_eq!(retry_after_secs(&refused), Some(1));
    }
    // Only orders: the other upstreams are called as usual.
    assert_eq!(s.get("/v1/events", Auth::None).await.status, StatusCode::OK);
    // Orders is back: a probe finds it serving and calls go through, long before the cool-down.
    s.orders_proxy.set_mode(ProxyMode::Pass);
    until_ok(&s, "/v1/orders", &buyer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_upstream_is_found_out_by_its_probes_and_refused_until_it_thaws() {
    let s = stack_with(|c| {
        c.breaker.cool_down = Duration::from_secs(120);
        c.limits.upstream_timeout = Duration::from_secs(60);
    })
    .await;
    let (_, buyer) = s.identity.user(&[Role::Customer]).await;
    assert_eq!(
        s.get("/v1/orders", Auth::Bearer(&buyer)).await.status,
        StatusCode::OK
    );
    // Frozen: connections accepted, nothing answered (a SIGSTOPped process).
    s.orders_proxy.set_mode(ProxyMode::Stall);
    s.orders_proxy.cut_connections();
    // Without a call failing, the probes notice: calls are refused at once rather than left
    // to wait for the deadline (a minute here).
    let mut refused = None;
    for _ in 0..100 {
        let reply = s
            .http
            .get(format!("{}/v1/orders", s.base))
            .bearer_auth(&buyer)
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        if let Ok(reply) = reply {
            refused = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.expect("the gateway stops waiting on a frozen upstream");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Json = refused.json().await.expect("json");
    assert_eq!(reason(&body), "CIRCUIT_OPEN", "{body}");
    s.orders_proxy.set_mode(ProxyMode::Pass);
    s.orders_proxy.cut_connections();
    until_ok(&s, "/v1/orders", &buyer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_that_are_the_callers_fault_never_open_the_circuit() {
    let s = stack_with(|c| {
        c.breaker.consecutive_failures = 2;
        c.breaker.cool_down = Duration::from_secs(30);
    })
    .await;
    let (_, buyer) = s.identity.user(&[Role::Customer]).await;
    for _ in 0..5 {
        let missing = s
            .get(
                &format!("/v1/orders/{}", uuid::Uuid::now_v7()),
                Auth::Bearer(&buyer),
            )
            .await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.json);
        let invalid = s.get("/v1/orders/not-an-id", Auth::Bearer(&buyer)).await;
        assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        s.get("/v1/orders", Auth::Bearer(&buyer)).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_is_a_504_within_the_deadline_and_a_shorter_grpc_timeout_wins() {
    let s = stack_with(|c| {
        c.limits.upstream_timeout = Duration::from_secs(2);
        // No probe within the test: the deadline alone is what this checks.
        c.breaker.probe_interval = Duration::from_secs(60);
    })
    .await;
    let (_, buyer) = s.identity.user(&[Role::Customer]).await;
    s.orders_proxy.set_mode(ProxyMode::Stall);
    let started = std::time::Instant::now();
    let stalled = s.get("/v1/orders", Auth::Bearer(&buyer)).await;
    assert_eq!(stalled.status, StatusCode::GATEWAY_TIMEOUT, "{}", stalled.json);
    assert_eq!(stalled.json["code"], 4, "DEADLINE_EXCEEDED");
    // Not a hang: answered by the deadline (generously bounded; this is not a timing test).
    assert!(started.elapsed() < Duration::from_secs(10));
    let short = s
        .http
        .get(format!("{}/v1/orders", s.base))
        .bearer_auth(&buyer)
        .header("grpc-timeout", "300m")
        .send()
        .await
        .expect("answered");
    assert_eq!(short.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_admits_configured_origins_only() {
    let s = stack_with(|c| c.cors_allowed_origins = vec!["https://tickets.example".into()]).await;
    let preflight = |origin: &'static str| {
        s.http
            .request(reqwest::Method::OPTIONS, format!("{}/v1/orders", s.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,idempotency-key")
            .send()
    };
    let allowed = preflight("https://tickets.example").await.expect("answered");
    let headers = allowed.headers();
    assert_eq!(
        headers
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://tickets.example")
    );
    let allow_headers = headers
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(allow_headers.contains("idempotency-key"), "{allow_headers}");
    let other = preflight("https://evil.example").await.expect("answered");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // A simple cross-origin GET from the allowed origin carries the header too.
    let get = s
        .http
        .get(format!("{}/v1/events", s.base))
        .header("origin", "https://tickets.example")
        .send()
        .await
        .expect("answered");
    assert_eq!(
        get.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://tickets.example")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_per_route_and_status() {
    let s = stack_with(|_| {}).await;
    s.get("/v1/payments/testCards", Auth::None).await.ok();
    let missing = s
        .get(&format!("/v1/events/{}", uuid::Uuid::now_v7()), Auth::None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let text = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = |route: &str, status: &str| {
        text.lines().any(|l| {
            l.starts_with("gateway_requests_total{")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(line("/v1/payments/testCards", "200"), "{text}");
    assert!(line("/v1/events/{event_id}", "404"), "{text}");
    assert!(text.contains("gateway_request_duration_seconds"), "{text}");
}

/// The metrics and access-log layer sits outside authentication: a request refused for its
/// credentials is counted under its route; a path no route serves makes no label at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_counted_and_made_up_paths_make_no_labels() {
    let s = stack_with(|_| {}).await;
    let made_up = format!("/v1/nothing-{}", uuid::Uuid::now_v7().simple());
    assert_eq!(s.get(&made_up, Auth::None).await.status, StatusCode::NOT_FOUND);
    let metrics = async || {
        s.http
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    // Other tests of this binary share the recorder: count what this one adds.
    let refused = |text: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("gateway_requests_total{")
                    && l.contains("route=\"/v1/users/me\"")
                    && l.contains("method=\"GET\"")
                    && l.contains("status=\"401\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = refused(&metrics().await);
    for _ in 0..3 {
        assert_eq!(
            s.get("/v1/users/me", Auth::None).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let text = metrics().await;
    assert!(refused(&text) >= before + 3.0, "{text}");
    assert!(!text.contains(&made_up), "a made-up path became a label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_path_variable_is_not_a_route() {
    let s = stack_with(|_| {}).await;
    for path in ["/v1/events//tiers", "/v1/events/", "/v1/holds//x:release"] {
        let reply = s.get(path, Auth::None).await;
        assert!(
            [StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&reply.status),
            "{path}: {}",
            reply.status
        );
        assert!(reply.json["code"].is_number(), "{path}: a JSON error");
    }
}

/// A venue of the largest size catalog accepts goes through the gateway both ways, when the
/// request body limit allows it: catalog's reply carries the whole chart, several MiB past
/// tonic's default 4 MiB limit on what a client reads (which answered 429).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_venue_allowed_goes_through_both_ways() {
    let s = stack_with(|c| c.limits.max_body_bytes = 32 * 1024 * 1024).await;
    let (org, token) = s.identity.organizer().await;
    let sections: Vec<Json> = (0..50)
        .map(|block| {
            let rows: Vec<Json> = (0..100)
                .map(|row| {
                    let seats: Vec<Json> = (0..20)
                        .map(|n| {
                            json!({ "label": format!("R{row}-{n}"), "categoryCode": "STANDARD", "x": n, "y": row })
                        })
                        .collect();
                    json!({ "label": format!("R{row}"), "seats": seats })
                })
                .collect();
            json!({ "name": format!("Block {block}"), "rows": rows })
        })
        .collect();
    let seats_in = |venue: &Json| -> usize {
        venue["seatingChart"]["sections"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|section| section["rows"].as_array().into_iter().flatten())
            .map(|row| row["seats"].as_array().map_or(0, Vec::len))
            .sum()
    };
    let created = s
        .post(
            "/v1/venues",
            Auth::Bearer(&token),
            json!({
                "organizationId": org.to_string(),
                "name": "Stadium",
                "timezone": "Europe/Berlin",
                "seatingChart": {
                    "categories": [{ "code": "STANDARD", "name": "Standard", "color": "#2980b9" }],
                    "sections": sections,
                },
            }),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", reason(&created.json));
    assert_eq!(seats_in(&created.json), 100_000);
    let id = created.json["id"].as_str().expect("venue id");
    let fetched = s.get(&format!("/v1/venues/{id}"), Auth::Bearer(&token)).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", reason(&fetched.json));
    assert_eq!(seats_in(&fetched.json), 100_000);
}
