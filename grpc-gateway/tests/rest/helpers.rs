use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use ticketing_e2e::{
    Platform,
    services::{self, Running, Wiring},
};
use ticketing_testkit::{SmtpSink, TcpProxy};
use tokio::sync::oneshot;

/// Fields drop in order: notify stops before the platform's broker names are deleted.
pub struct Stack {
    /// Notify, mailing to an SMTP server of the test's own.
    pub notify: (Running<svc_notify::config::Config>, SmtpSink),
    pub platform: Platform,
    pub base: String,
    pub http: reqwest::Client,
    /// Between the gateway and orders, for breaker tests.
    pub orders_proxy: TcpProxy,
    /// Every call made through [`Stack::call`]: method, path (without the query) and status.
    pub calls: Arc<Mutex<Vec<(Method, String, StatusCode)>>>,
    _stop: oneshot::Sender<()>,
}

impl std::ops::Deref for Stack {
    type Target = Platform;
    fn deref(&self) -> &Platform {
        &self.platform
    }
}

pub async fn stack() -> Stack {
    stack_with(|_| {}).await
}

/// The whole platform with a gateway in front of it, configured by `adjust`. Rate limits are
/// off unless `adjust` sets them: every test client shares one loopback address.
pub async fn stack_with(adjust: impl FnOnce(&mut grpc_gateway::config::Config)) -> Stack {
    let platform = Platform::start().await;
    let smtp = SmtpSink::start().await.expect("smtp");
    let notify = services::notify(
        &Wiring {
            identity: &platform.identity,
            broker: &platform.broker,
            redis_prefix: "notify-unused",
        },
        &smtp.url(),
        // Webhooks may target loopback, where the tour points one at a closed port.
        |c| c.webhooks.allow_private_targets = true,
    )
    .await;
    let orders_proxy = TcpProxy::start(platform.addrs.orders).await.expect("proxy");
    let mut config = grpc_gateway::config::Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    };
    let peers = &mut config.peers.addresses;
    peers.insert("identity".into(), platform.identity.url());
    for (name, addr) in [
        ("catalog", platform.addrs.catalog),
        ("inventory", platform.addrs.inventory),
        ("orders", orders_proxy.addr()),
        ("payments", platform.addrs.payments),
        ("notify", notify.addr),
    ] {
        peers.insert(name.into(), format!("http://{addr}"));
    }
    config.peers.credentials = platform.identity.credentials("gateway");
    config.limits.max_body_bytes = 64 * 1024;
    config.limits.sse_heartbeat = Duration::from_millis(300);
    config.rate_limit.per_ip_per_second = 0;
    config.rate_limit.per_api_key_per_second = 0;
    adjust(&mut config);
    let gateway = grpc_gateway::Application::build(config).await.expect("gateway");
    let gateway_addr = gateway.addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(gateway.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    Stack {
        platform,
        base: format!("http://{gateway_addr}"),
        http: reqwest::Client::new(),
        orders_proxy,
        calls: Arc::default(),
        notify: (notify, smtp),
        _stop: stop,
    }
}

/// A reply: status and JSON body (Null when the body is not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub json: Json,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn ok(self) -> Json {
        assert!(self.status.is_success(), "{}: {}", self.status, self.json);
        self.json
    }
}

pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    ApiKey(&'a str),
}

impl Stack {
    pub async fn call(&self, method: Method, path: &str, auth: Auth<'_>, body: Option<Json>) -> Reply {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        request = match auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::ApiKey(key) => request.header("x-api-key", key),
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("gateway answers");
        let status = response.status();
        let bare = path.split('?').next().unwrap_or(path).to_string();
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((method, bare, status));
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
        // 503 and 504 are answers about the upstream; any other 5xx is a defect.
        if status.is_server_error() && ![503, 504].contains(&status.as_u16()) {
            panic!("{status} from the gateway: {}", String::from_utf8_lossy(&bytes));
        }
        Reply {
            status,
            json,
            headers,
        }
    }

    pub async fn get(&self, path: &str, auth: Auth<'_>) -> Reply {
        self.call(Method::GET, path, auth, None).await
    }

    pub async fn post(&self, path: &str, auth: Auth<'_>, body: Json) -> Reply {
        self.call(Method::POST, path, auth, Some(body)).await
    }

    /// An organizer with a venue (2 rows of 5 VIP seats) and a published event with a VIP tier.
    pub async fn published_event(&self) -> Sale {
        let (org, token) = self.identity.organizer().await;
        let seats: Vec<Json> = (1..=5)
            .map(|n| json!({ "label": format!("A{n}"), "categoryCode": "VIP", "x": n, "y": 1 }))
            .collect();
        let venue = self
            .post(
                "/v1/venues",
                Auth::Bearer(&token),
                json!({
                    "organizationId": org.to_string(),
                    "name": "Gateway Hall",
                    "address": { "line1": "Torstraße 1", "city": "Berlin", "postalCode": "10119", "country": "DE" },
                    "timezone": "Europe/Berlin",
                    "seatingChart": {
                        "categories": [{ "code": "VIP", "name": "VIP", "color": "#c0392b" }],
                        "sections": [{ "name": "Stalls", "rows": [{ "label": "A", "seats": seats }] }],
                    },
                }),
            )
            .await
            .ok();
        let starts = Utc::now() + chrono::Duration::days(20);
        let event = self
            .post(
                "/v1/events",
                Auth::Bearer(&token),
                json!({
                    "organizationId": org.to_string(),
                    "venueId": venue["id"],
                    "title": "Gateway Night",
                    "startsAt": starts.to_rfc3339(),
                    "endsAt": (starts + chrono::Duration::hours(3)).to_rfc3339(),
                    "category": "EVENT_CATEGORY_CONCERT",
                }),
            )
            .await
            .ok();
        let event_id = event["id"].as_str().expect("event id").to_string();
        let tier = self
            .post(
                &format!("/v1/events/{event_id}/tiers"),
                Auth::Bearer(&token),
                json!({
                    "name": "VIP",
                    "price": { "amountMinor": "9000", "currency": "EUR" },
                    "seatCategoryCode": "VIP",
                    "perOrderLimit": 4,
                }),
            )
            .await
            .ok();
        self.post(
            &format!("/v1/events/{event_id}:publish"),
            Auth::Bearer(&token),
            json!({}),
        )
        .await
        .ok();
        let seat_ids = venue["seatingChart"]["sections"][0]["rows"][0]["seats"]
            .as_array()
            .expect("seats")
            .iter()
            .map(|s| s["id"].as_str().expect("seat id").to_string())
            .collect();
        Sale {
            org: org.to_string(),
            organizer: token,
            event_id,
            tier_id: tier["id"].as_str().expect("tier id").to_string(),
            seat_ids,
        }
    }
}

pub struct Sale {
    pub org: String,
    pub organizer: String,
    pub event_id: String,
    pub tier_id: String,
    pub seat_ids: Vec<String>,
}
