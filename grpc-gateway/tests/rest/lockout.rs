//! Login lockout behind the gateway: identity counts failures against the client's own address,
//! which only the gateway can tell it, so a sprayer locks only itself, and no header a client
//! writes moves it to another bucket.

use std::net::IpAddr;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// Identity's default: failures from one address across accounts before it is locked out.
const ADDRESS_THRESHOLD: usize = 30;

async fn login(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
    forwarded: Option<&str>,
) -> reqwest::Response {
    let mut request = client
        .post(format!("{base}/v1/auth:login"))
        .json(&json!({ "email": email, "password": password }));
    if let Some(chain) = forwarded {
        request = request.header("x-forwarded-for", chain);
    }
    request.send().await.expect("gateway answers")
}

fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().expect("address"))
        .build()
        .expect("client")
}

async fn account(s: &Stack) -> String {
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    s.post(
        "/v1/auth:register",
        Auth::None,
        json!({ "email": email, "password": ticketing_e2e::PASSWORD }),
    )
    .await
    .ok();
    email
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sprayer_locks_itself_out_and_never_its_neighbours_whatever_headers_it_writes() {
    let s = stack().await;
    let own = account(&s).await;
    let neighbour = account(&s).await;
    // Two clients on their own addresses; the gateway trusts no proxy, so any
    // X-Forwarded-For is the client's own say-so.
    let sprayer = client_from("127.0.0.2");
    let bystander = client_from("127.0.0.3");
    for i in 0..ADDRESS_THRESHOLD {
        let forged = format!("198.51.100.{i}");
        let reply = login(
            &sprayer,
            &s.base,
            &format!("guess{i}@example.com"),
            "a wrong password",
            Some(&forged),
        )
        .await;
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "try {i}");
    }
    let locked = login(
        &sprayer,
        &s.base,
        &own,
        ticketing_e2e::PASSWORD,
        Some("203.0.113.1"),
    )
    .await;
    assert_eq!(
        locked.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a new forged address does not help"
    );
    let retry_after: u64 = locked
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After on a locked login");
    assert!(retry_after >= 1, "{retry_after}");
    let body: serde_json::Value = locked.json().await.expect("JSON error");
    assert!(body["details"].to_string().contains("LOGIN_LOCKED"), "{body}");
    // Everyone else logs in as before, the sprayer's targets included.
    let fine = login(&bystander, &s.base, &neighbour, ticketing_e2e::PASSWORD, None).await;
    assert_eq!(fine.status(), StatusCode::OK);
    let fine = login(&bystander, &s.base, &own, ticketing_e2e::PASSWORD, None).await;
    assert_eq!(
        fine.status(),
        StatusCode::OK,
        "the sprayer's own account, from elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_client_is_the_hop_the_proxy_saw() {
    let s = stack_with(|config| {
        config.trusted_proxies = vec!["127.0.0.0/8".parse().expect("net")];
    })
    .await;
    let neighbour = account(&s).await;
    let http = reqwest::Client::new();
    // The balancer appends the address it saw; whatever the sprayer wrote before it is ignored.
    for i in 0..ADDRESS_THRESHOLD {
        let chain = format!("10.9.9.{i}, 203.0.113.50");
        let reply = login(
            &http,
            &s.base,
            &format!("guess{i}@example.com"),
            "a wrong password",
            Some(&chain),
        )
        .await;
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "try {i}");
    }
    let locked = login(
        &http,
        &s.base,
        &neighbour,
        ticketing_e2e::PASSWORD,
        Some("1.2.3.4, 203.0.113.50"),
    )
    .await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let fine = login(
        &http,
        &s.base,
        &neighbour,
        ticketing_e2e::PASSWORD,
        Some("203.0.113.51"),
    )
    .await;
    assert_eq!(fine.status(), StatusCode::OK, "a client behind the same balancer");
}
