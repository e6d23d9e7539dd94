//! Authentication at the edge, OpenAPI, JWKS and health.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use ticketing_platform::auth::Role;

use crate::helpers::{Auth, stack, stack_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_and_in_then_tokens_are_checked_at_the_edge() {
    let s = stack().await;
    let registered = s
        .post(
            "/v1/auth:register",
            Auth::None,
            json!({ "email": "rest@example.com", "password": "a long enough passphrase", "displayName": "Rest" }),
        )
        .await
        .ok();
    assert_eq!(registered["user"]["email"], "rest@example.com");
    let tokens = s
        .post(
            "/v1/auth:login",
            Auth::None,
            json!({ "email": "rest@example.com", "password": "a long enough passphrase" }),
        )
        .await
        .ok();
    let token = tokens["accessToken"].as_str().expect("token").to_string();
    assert_eq!(
        s.get("/v1/users/me", Auth::Bearer(&token)).await.ok()["email"],
        "rest@example.com"
    );
    // Missing, malformed, forged and altered tokens never reach the service.
    assert_eq!(
        s.get("/v1/users/me", Auth::None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.get("/v1/users/me", Auth::Bearer("nonsense")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut altered = token.clone();
    altered.pop();
    altered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let refused = s.get("/v1/users/me", Auth::Bearer(&altered)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json["code"], 16);
    let forged = "eyJhbGciOiJFZERTQSIsImtpZCI6Im5vcGUifQ.eyJzdWIiOiJ4In0.c2ln";
    assert_eq!(
        s.get("/v1/users/me", Auth::Bearer(forged)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let basic = s
        .http
        .get(format!("{}/v1/users/me", s.base))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .expect("sent");
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_work_until_revoked_and_the_cache_lets_go_within_its_ttl() {
    let s = stack_with(|c| c.auth.api_key_cache_ttl = Duration::from_millis(500)).await;
    let (org, owner) = s.identity.organizer().await;
    let created = s
        .post(
            &format!("/v1/organizations/{org}/apiKeys"),
            Auth::Bearer(&owner),
            json!({ "name": "partner", "scopes": ["API_KEY_SCOPE_EVENTS_READ", "API_KEY_SCOPE_EVENTS_WRITE"] }),
        )
        .await
        .ok();
    let secret = created["secret"].as_str().expect("secret").to_string();
    let key_id = created["apiKey"]["id"].as_str().expect("key id").to_string();
    let listed = s
        .get(&format!("/v1/venues?organizationId={org}"), Auth::ApiKey(&secret))
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.json);
    assert_eq!(
        s.get("/v1/venues", Auth::ApiKey("tk_nope_nope")).await.status,
        StatusCode::UNAUTHORIZED
    );
    s.post(
        &format!("/v1/organizations/{org}/apiKeys/{key_id}:revoke"),
        Auth::Bearer(&owner),
        json!({}),
    )
    .await
    .ok();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let revoked = s
        .get(&format!("/v1/venues?organizationId={org}"), Auth::ApiKey(&secret))
        .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED, "{}", revoked.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_jwks_docs_and_health_are_served() {
    let s = stack().await;
    let doc = s.get("/openapi.json", Auth::None).await.ok();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/v1/events/{event_id}:publish"));
    assert!(paths["/v1/orders/{order_id}:pay"]["post"]["requestBody"].is_object());
    assert!(doc["components"]["schemas"]["google.rpc.Status"].is_object());
    assert!(doc["components"]["securitySchemes"]["apiKey"].is_object());
    assert!(!paths.keys().any(|p| p.contains("CommitHold")));
    let jwks = s.get("/.well-known/jwks.json", Auth::None).await.ok();
    assert!(
        jwks["keys"]
            .as_array()
            .is_some_and(|k| !k.is_empty() && k[0]["crv"] == "Ed25519")
    );
    let docs = s.http.get(format!("{}/docs", s.base)).send().await.expect("docs");
    assert!(
        docs.text()
            .await
            .unwrap_or_default()
            .contains("/v1/orders/{order_id}:pay")
    );
    // Every deployed upstream serves; reports is not deployed here, so not checked.
    let health = s.get("/v1/health", Auth::None).await.ok();
    assert_eq!(health["status"], "SERVING");
    for upstream in ["identity", "catalog", "inventory", "orders", "payments", "notify"] {
        assert_eq!(health["services"][upstream], "SERVING", "{health}");
    }
    assert!(
        health["services"].get("reports").is_none(),
        "not deployed, not checked"
    );
    // A route to a service that is not deployed: 503 with a JSON body.
    let (_, token) = s.identity.user(&[Role::Customer]).await;
    let reports = s
        .get(
            &format!("/v1/events/{}/reports/sales", uuid::Uuid::now_v7()),
            Auth::Bearer(&token),
        )
        .await;
    assert_eq!(reports.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(s.get("/healthz", Auth::None).await.status, StatusCode::OK);
    // Ready: it can check tokens, with every route built.
    let ready = s.get("/readyz", Auth::None).await.ok();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["token_keys"], "fetched");
    assert!(ready["routes"].as_u64().is_some_and(|n| n > 60), "{ready}");
    // Request ids: one is made when the client sends none; a client's own comes back.
    let made = s.get("/v1/events", Auth::None).await;
    assert!(
        made.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok())
    );
    let echoed = s
        .http
        .get(format!("{}/v1/events", s.base))
        .header("x-request-id", "partner-trace-42")
        .send()
        .await
        .expect("answered");
    assert_eq!(
        echoed.headers().get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("partner-trace-42")
    );
}
