//! Path, query and body mapping, errors and streaming through the real services.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;
use ticketing_platform::auth::Role;

use crate::helpers::{Auth, Reply, stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_is_set_up_and_browsed_through_rest() {
    let s = stack().await;
    let sale = s.published_event().await;
    // Public reads need no credentials; the path variable and enum names round-trip.
    let event = s
        .get(&format!("/v1/events/{}", sale.event_id), Auth::None)
        .await
        .ok();
    assert_eq!(event["status"], "EVENT_STATUS_PUBLISHED");
    assert_eq!(event["category"], "EVENT_CATEGORY_CONCERT");
    // int64 travels as a string; unset fields are present with their defaults.
    assert_eq!(event["tiers"][0]["price"]["amountMinor"], "9000");
    assert_eq!(event["description"], "");
    // Repeated enum query parameters by name, an int32 as a string, a nested path binding.
    let listed = s
        .get(
            &format!(
                "/v1/organizations/{}/events?statuses=EVENT_STATUS_PUBLISHED&statuses=EVENT_STATUS_DRAFT&pageSize=5",
                sale.org
            ),
            Auth::Bearer(&sale.organizer),
        )
        .await
        .ok();
    assert_eq!(listed["events"].as_array().map(Vec::len), Some(1));
    let none = s
        .get(
            "/v1/events?statuses=EVENT_STATUS_CANCELLED&query=Gateway",
            Auth::None,
        )
        .await
        .ok();
    assert_eq!(none["events"].as_array().map(Vec::len), Some(0));
    // A field-mask PATCH with the body bound to one field and the id in a nested path variable.
    let renamed = s
        .call(
            Method::PATCH,
            &format!("/v1/events/{}?updateMask=title", sale.event_id),
            Auth::Bearer(&sale.organizer),
            Some(json!({ "title": "Gateway Night II" })),
        )
        .await
        .ok();
    assert_eq!(renamed["title"], "Gateway Night II");
    // Availability counts for the tier.
    let availability = s
        .get(
            &format!("/v1/events/{}/availability?countsOnly=true", sale.event_id),
            Auth::None,
        )
        .await
        .ok();
    assert_eq!(availability["tiers"][0]["total"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_error_and_changes_nothing() {
    let s = stack().await;
    let (org, token) = s.identity.organizer().await;
    let venues_path = format!("/v1/venues?organizationId={org}");
    let count = s.get(&venues_path, Auth::Bearer(&token)).await.ok()["venues"]
        .as_array()
        .map(Vec::len);
    let before = count;
    for (body, what) in [
        (
            json!({ "organizationId": org.to_string(), "name": "X", "bogus": 1 }),
            "unknown field",
        ),
        (
            json!({ "organizationId": org.to_string(), "name": 42 }),
            "wrong type",
        ),
        (
            json!({ "organizationId": org.to_string(), "name": "" }),
            "invalid value",
        ),
    ] {
        let reply = s.post("/v1/venues", Auth::Bearer(&token), body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}: {}", reply.json);
        assert_eq!(reply.json["code"], 3, "{what}");
        assert!(
            reply.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    // A value of the wrong type is named by its path.
    let wrong_type = s
        .post(
            "/v1/venues",
            Auth::Bearer(&token),
            json!({ "organizationId": org.to_string(), "seatingChart": { "sections": [{ "rows": "A" }] } }),
        )
        .await;
    assert!(
        wrong_type.json["details"]
            .to_string()
            .contains("venue.seatingChart.sections[0].rows"),
        "{}",
        wrong_type.json
    );
    let unknown = s
        .post("/v1/venues", Auth::Bearer(&token), json!({ "bogus": 1 }))
        .await;
    assert!(
        unknown.json["message"].as_str().unwrap_or("").contains("bogus"),
        "{}",
        unknown.json
    );
    // Malformed JSON.
    let malformed = s
        .http
        .post(format!("{}/v1/venues", s.base))
        .bearer_auth(&token)
        .body("{\"name\": ")
        .send()
        .await
        .expect("sent");
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let malformed_kept_alive = malformed.headers().get("connection").is_none();
    let body: serde_json::Value = malformed.json().await.expect("json error");
    assert_eq!(body["code"], 3);
    // Oversize body: 413 before anything is decoded.
    let huge = "x".repeat(100 * 1024);
    let too_big = s
        .post("/v1/venues", Auth::Bearer(&token), json!({ "name": huge }))
        .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        too_big.json["code"], 8,
        "a JSON error, though the length was declared"
    );
    // The body was never read, so the gateway closes the connection and says so: a client that
    // pooled it would otherwise send its next request into a closing socket.
    assert_eq!(
        too_big.headers.get("connection").and_then(|v| v.to_str().ok()),
        Some("close")
    );
    assert!(
        malformed_kept_alive,
        "a body read to its end keeps the connection"
    );
    let after = s.get(&venues_path, Auth::Bearer(&token)).await.ok()["venues"]
        .as_array()
        .map(Vec::len);
    assert_eq!(after, before, "nothing stored");
    // Wrong method, unknown route, unknown query parameter, bad enum name, bad int.
    let wrong = s
        .call(Method::DELETE, "/v1/venues", Auth::Bearer(&token), None)
        .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong.headers.get("allow").is_some());
    assert_eq!(
        s.get("/v1/nowhere", Auth::None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/v1/events?colour=red", Auth::None).await.status,
        StatusCode::BAD_REQUEST
    );
    let bad_enum = s
        .get("/v1/events?statuses=EVENT_STATUS_NAPPING", Auth::None)
        .await;
    assert_eq!(bad_enum.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_enum.json["message"]
            .as_str()
            .unwrap_or("")
            .contains("EVENT_STATUS_PUBLISHED")
    );
    assert_eq!(
        s.get("/v1/events?pageSize=many", Auth::None).await.status,
        StatusCode::BAD_REQUEST
    );
    // A path variable percent-encoded: decoded before it reaches the service, which refuses it
    // as an id (400), not as a route (404).
    let encoded = s.get("/v1/events/not%20an%20id", Auth::None).await;
    assert_eq!(encoded.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_anywhere_is_a_400_naming_its_field() {
    let s = stack().await;
    let sale = s.published_event().await;
    let field_of = |reply: &Reply| {
        reply.json["details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|d| d["fieldViolations"].as_array().cloned().unwrap_or_default())
            .map(|v| v["field"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    for (path, field) in [
        ("/v1/events?query=%00", "query"),
        ("/v1/events?city=Ber%00lin", "city"),
        ("/v1/venues?city=%00", "city"),
    ] {
        let reply = s.get(path, Auth::None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {}", reply.json);
        assert_eq!(field_of(&reply), vec![field.to_string()], "{path}");
    }
    let (_, organizer) = (sale.org.clone(), sale.organizer.clone());
    for (body, field) in [
        (json!({ "secret": "x", "gate": "north\u{0}" }), "gate"),
        (json!({ "secret": "x", "nonce": "\u{0}" }), "nonce"),
    ] {
        let reply = s
            .post(
                &format!("/v1/events/{}:checkIn", sale.event_id),
                Auth::Bearer(&organizer),
                body,
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{field}: {}", reply.json);
        assert_eq!(field_of(&reply), vec![field.to_string()]);
    }
    let reply = s
        .post(
            "/v1/venues",
            Auth::Bearer(&organizer),
            json!({ "organizationId": sale.org, "name": "Nul\u{0}Hall" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(field_of(&reply), vec!["venue.name".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_map_to_http_statuses_with_details() {
    let s = stack().await;
    let sale = s.published_event().await;
    let missing = s
        .get(&format!("/v1/events/{}", uuid::Uuid::now_v7()), Auth::None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json["code"], 5);
    assert!(
        missing.json["details"].as_array().is_some_and(|d| d
            .iter()
            .any(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" && d["reason"] == "NOT_FOUND")),
        "{}",
        missing.json
    );
    let (_, buyer) = s.identity.user(&[Role::Customer]).await;
    // PERMISSION_DENIED -> 403: a customer may not change the event.
    let denied = s
        .post(
            &format!("/v1/events/{}:cancel", sale.event_id),
            Auth::Bearer(&buyer),
            json!({}),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    // FAILED_PRECONDITION -> 400 with its reason; a seat held twice.
    let hold = json!({ "seatIds": [sale.seat_ids[0]] });
    s.post(
        &format!("/v1/events/{}/holds:seats", sale.event_id),
        Auth::Bearer(&buyer),
        hold.clone(),
    )
    .await
    .ok();
    let (_, other) = s.identity.user(&[Role::Customer]).await;
    let taken = s
        .post(
            &format!("/v1/events/{}/holds:seats", sale.event_id),
            Auth::Bearer(&other),
            hold,
        )
        .await;
    assert_eq!(taken.status, StatusCode::BAD_REQUEST);
    assert!(
        taken.json["details"].to_string().contains("SEAT_UNAVAILABLE"),
        "{}",
        taken.json
    );
    // INVALID_ARGUMENT with field violations from the service.
    let invalid = s
        .post(
            &format!("/v1/events/{}/holds:quantity", sale.event_id),
            Auth::Bearer(&buyer),
            json!({ "tierId": sale.tier_id, "quantity": 100000 }),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert!(
        invalid.json["details"].to_string().contains("fieldViolations"),
        "{}",
        invalid.json
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_sees_the_snapshot_and_a_seat_held_through_rest() {
    let s = stack().await;
    let sale = s.published_event().await;
    let response = s
        .http
        .get(format!(
            "{}/v1/events/{}/availability:watch",
            s.base, sale.event_id
        ))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("stream opens");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut events = SseReader::new(response);
    let snapshot = events.next().await;
    assert!(snapshot.contains("\"snapshot\""), "{snapshot}");
    let (_, buyer) = s.identity.user(&[Role::Customer]).await;
    s.post(
        &format!("/v1/events/{}/holds:seats", sale.event_id),
        Auth::Bearer(&buyer),
        json!({ "seatIds": [sale.seat_ids[1]] }),
    )
    .await
    .ok();
    let delta = loop {
        let event = events.next().await;
        if event.contains("\"delta\"") {
            break event;
        }
    };
    assert!(delta.contains(&sale.seat_ids[1]), "{delta}");
    assert!(delta.contains("CAUSE_HELD"), "{delta}");
    let id_line = delta.lines().find(|l| l.starts_with("id: ")).expect("an SSE id");
    let last_id: i64 = id_line[4..].parse().expect("a sequence");
    assert!(last_id > 0);

    // The browser loses the connection, a seat is held meanwhile, and EventSource reconnects
    // with Last-Event-ID: the stream resumes with what was missed, not a new snapshot.
    drop(events);
    s.post(
        &format!("/v1/events/{}/holds:seats", sale.event_id),
        Auth::Bearer(&buyer),
        json!({ "seatIds": [sale.seat_ids[2]] }),
    )
    .await
    .ok();
    let resumed = s
        .http
        .get(format!(
            "{}/v1/events/{}/availability:watch",
            s.base, sale.event_id
        ))
        .header("accept", "text/event-stream")
        .header("last-event-id", last_id.to_string())
        .send()
        .await
        .expect("stream reopens");
    let mut events = SseReader::new(resumed);
    let first = events.next().await;
    assert!(first.contains("\"delta\""), "{first}");
    assert!(first.contains(&sale.seat_ids[2]), "{first}");
    assert!(first.contains(&format!("id: {}", last_id + 1)), "{first}");
    drop(events);
    let bad = s
        .http
        .get(format!(
            "{}/v1/events/{}/availability:watch",
            s.base, sale.event_id
        ))
        .header("accept", "text/event-stream")
        .header("last-event-id", "yesterday")
        .send()
        .await
        .expect("answered");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // The same stream in grpc-gateway's framing: one {"result": ...} per line.
    let ndjson = s
        .http
        .get(format!(
            "{}/v1/events/{}/availability:watch",
            s.base, sale.event_id
        ))
        .send()
        .await
        .expect("stream opens");
    let mut lines = ndjson.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("chunk");
    let line = String::from_utf8_lossy(&first);
    let parsed: serde_json::Value =
        serde_json::from_str(line.lines().next().unwrap_or("")).expect("a JSON line");
    assert!(parsed["result"]["snapshot"].is_object(), "{parsed}");
}

/// Reads server-sent events off a response, skipping comments (heartbeats).
struct SseReader {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    text: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            text: String::new(),
        }
    }

    /// The next event, waiting at most 10 s for it.
    async fn next(&mut self) -> String {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let event: String = self.text.drain(..end + 2).collect();
                if !event.starts_with(':') {
                    return event;
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an event in time")
                .expect("stream open")
                .expect("chunk");
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
