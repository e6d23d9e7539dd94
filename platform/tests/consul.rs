//! Consul discovery against a local HTTP double that answers with Consul's documented JSON (no
//! Consul agent can be installed here): the registration payload field by field and the
//! deregistration on shutdown; blocking health queries (the index sent back, a backwards index
//! reset); instances appearing and leaving between responses, followed live by a balanced
//! channel. A last test runs against a real agent whenever `CONSUL_HTTP_ADDR` is set.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, Query, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, put},
};
use secrecy::SecretString;
use serde_json::{Value, json};
use ticketing_platform::{
    background::Background,
    clients::Peers,
    config::{PeersConfig, ServerConfig},
    discovery::{ConsulConfig, DiscoveryConfig, DiscoveryMode},
    server::Host,
};
use tokio::sync::{oneshot, watch};
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_client::HealthClient},
};

/// Instances of one service as the double lists them: (id, port), with the Raft index.
type Instances = (u64, Vec<(String, u16)>);

/// A registration as received: query string, `X-Consul-Token`, JSON body.
type Received = (Option<String>, Option<String>, Value);
/// A health query's `index` and `wait`.
type Blocking = (Option<u64>, Option<String>);

#[derive(Clone)]
struct FakeConsul {
    registrations: Arc<Mutex<Vec<Received>>>,
    deregistrations: Arc<Mutex<Vec<String>>>,
    queries: Arc<Mutex<Vec<Blocking>>>,
    instances: watch::Sender<Instances>,
}

impl FakeConsul {
    async fn start() -> (Self, String) {
        let fake = FakeConsul {
            registrations: Arc::default(),
            deregistrations: Arc::default(),
            queries: Arc::default(),
            instances: watch::channel((1, Vec::new())).0,
        };
        let app = Router::new()
            .route("/v1/agent/service/register", put(register))
            .route("/v1/agent/service/deregister/{id}", put(deregister))
            .route("/v1/health/service/{name}", get(health))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, url)
    }

    fn set(&self, index: u64, instances: &[(&str, u16)]) {
        self.instances.send_replace((
            index,
            instances
                .iter()
                .map(|(id, port)| (id.to_string(), *port))
                .collect(),
        ));
    }
}

async fn register(
    State(fake): State<FakeConsul>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let token = headers
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    fake.registrations
        .lock()
        .expect("lock")
        .push((query, token, body));
    StatusCode::OK
}

async fn deregister(State(fake): State<FakeConsul>, Path(id): Path<String>) -> StatusCode {
    fake.deregistrations.lock().expect("lock").push(id);
    StatusCode::OK
}

/// `/v1/health/service/:name`: blocks while `index` is current, up to `wait` (capped for tests).
async fn health(
    State(fake): State<FakeConsul>,
    Path(_name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let index: Option<u64> = params.get("index").and_then(|i| i.parse().ok());
    fake.queries
        .lock()
        .expect("lock")
        .push((index, params.get("wait").cloned()));
    let mut watcher = fake.instances.subscribe();
    let current = watcher.borrow().0;
    if index == Some(current) {
        let _ = tokio::time::timeout(Duration::from_secs(2), watcher.changed()).await;
    }
    let (index, instances) = watcher.borrow().clone();
    let body: Vec<Value> = instances
        .iter()
        .map(|(id, port)| {
            json!({
                "Node": { "ID": format!("node-{id}"), "Node": "local", "Address": "127.0.0.1", "Datacenter": "dc1" },
                "Service": { "ID": id, "Service": "whoami", "Address": "", "Port": port, "Tags": ["grpc"] },
                "Checks": [],
            })
        })
        .collect();
    ([("X-Consul-Index", index.to_string())], Json(body))
}

/// A service for the host to serve (health and reflection come with every host).
#[derive(Clone)]
struct Probe;

/// A verifier without keys: this probe service has no internal RPCs to guard.
fn no_keys() -> ticketing_platform::auth::TokenVerifier {
    struct NoKeys;
    impl ticketing_platform::auth::KeySource for NoKeys {
        fn fetch(
            &self,
        ) -> futures::future::BoxFuture<'_, anyhow::Result<Vec<ticketing_platform::auth::VerificationKey>>>
        {
            Box::pin(async { Ok(Vec::new()) })
        }
    }
    ticketing_platform::auth::TokenVerifier::new(NoKeys)
}

impl tonic::server::NamedService for Probe {
    const NAME: &'static str = "ticketing.probe.v1.ProbeService";
}

impl tower::Service<http::Request<tonic::body::Body>> for Probe {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        std::future::ready(Ok(tonic::Status::unimplemented("a probe").into_http()))
    }
}

fn consul_discovery(url: &str) -> DiscoveryConfig {
    DiscoveryConfig {
        mode: DiscoveryMode::Consul,
        consul: ConsulConfig {
            address: Some(url.to_string()),
            token: Some(SecretString::from("s3cr3t-token")),
            tags: vec!["blue".into()],
            wait: Duration::from_secs(30),
            ..ConsulConfig::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_registers_with_a_grpc_check_and_deregisters_on_shutdown() {
    let (fake, url) = FakeConsul::start().await;
    let server = ServerConfig::with_ports(0, 0);
    let host = Host::bind(server, consul_discovery(&url)).await.expect("bind");
    let port = host.grpc_addr().port();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(
        host.serve(Probe, no_keys(), Vec::new(), Background::new(), async move {
            let _ = stopped.await;
        }),
    );
    let registered = loop {
        if let Some(r) = fake.registrations.lock().expect("lock").first().cloned() {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (query, token, body) = registered;
    assert_eq!(query.as_deref(), Some("replace-existing-checks=true"));
    assert_eq!(token.as_deref(), Some("s3cr3t-token"));
    let id = format!("probe-127.0.0.1-{port}");
    assert_eq!(body["ID"], id);
    assert_eq!(body["Name"], "probe");
    assert_eq!(body["Tags"], json!(["grpc", "blue"]));
    assert_eq!(body["Address"], "127.0.0.1");
    assert_eq!(body["Port"], port);
    assert_eq!(body["Meta"]["version"], env!("CARGO_PKG_VERSION"));
    let check = &body["Check"];
    assert_eq!(check["Name"], "probe gRPC health");
    assert_eq!(
        check["GRPC"],
        format!("127.0.0.1:{port}/ticketing.probe.v1.ProbeService")
    );
    assert_eq!(check["GRPCUseTLS"], false);
    assert_eq!(check["Interval"], "10000ms");
    assert_eq!(check["Timeout"], "2000ms");
    assert_eq!(check["DeregisterCriticalServiceAfter"], "300000ms");
    assert!(fake.deregistrations.lock().expect("lock").is_empty());

    let _ = stop.send(());
    serving.await.expect("joined").expect("served");
    assert_eq!(*fake.deregistrations.lock().expect("lock"), [id]);
}

/// A health server that answers `Check("who")` with `status`: which instance answered.
async fn instance(status: ServingStatus) -> (SocketAddr, oneshot::Sender<()>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("who", status).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move {
                    let _ = stopped.await;
                },
            ),
    );
    (addr, stop)
}

async fn who(client: &mut HealthClient<ticketing_platform::clients::PeerChannel>) -> Option<i32> {
    client
        .check(HealthCheckRequest {
            service: "who".into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

/// Calls until `done` holds for 10 answers in a row (the channel follows Consul by itself).
async fn until(
    client: &mut HealthClient<ticketing_platform::clients::PeerChannel>,
    what: &str,
    done: impl Fn(&[Option<i32>]) -> bool,
) {
    for _ in 0..200 {
        let mut answers = Vec::new();
        for _ in 0..10 {
            answers.push(who(client).await);
        }
        if done(&answers) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_channel_follows_instances_as_they_come_fail_and_go() {
    let (fake, url) = FakeConsul::start().await;
    let (a, stop_a) = instance(ServingStatus::Serving).await;
    let (b, _stop_b) = instance(ServingStatus::NotServing).await;
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    fake.set(10, &[("whoami-a", a.port())]);

    let peers = Peers::new(PeersConfig {
        default_timeout: Duration::from_secs(2),
        ..PeersConfig::default()
    })
    .discovering(&consul_discovery(&url));
    let mut client = HealthClient::new(peers.channel("whoami").expect("channel"));
    until(&mut client, "instance a answers", |answers| {
        answers.iter().all(|a| *a == Some(serving))
    })
    .await;

    // A second instance passes its check: calls spread over both.
    fake.set(11, &[("whoami-a", a.port()), ("whoami-b", b.port())]);
    until(&mut client, "both instances answer", |answers| {
        answers.contains(&Some(serving)) && answers.contains(&Some(not_serving))
    })
    .await;

    // The first fails its check (Consul lists passing ones only) and then goes away for good:
    // nothing is sent to it any more.
    fake.set(12, &[("whoami-b", b.port())]);
    until(&mut client, "only instance b answers", |answers| {
        answers.iter().all(|a| *a == Some(not_serving))
    })
    .await;
    let _ = stop_a.send(());
    for _ in 0..20 {
        assert_eq!(who(&mut client).await, Some(not_serving));
    }

    // Blocking queries carried the index of the previous answer and a wait (the one after
    // index 12 may still be on its way).
    for _ in 0..100 {
        let queries = fake.queries.lock().expect("lock").clone();
        if queries.contains(&(Some(12), Some("30s".into()))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queries = fake.queries.lock().expect("lock").clone();
    assert_eq!(queries[0], (None, None), "the first query does not block");
    for index in [10, 11, 12] {
        assert!(
            queries.contains(&(Some(index), Some("30s".into()))),
            "no blocking query at index {index}: {queries:?}"
        );
    }

    // The index goes backwards (Consul's state was reset): the client starts over at 0.
    let before = fake.queries.lock().expect("lock").len();
    fake.set(3, &[("whoami-b", b.port())]);
    let mut restarted = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queries = fake.queries.lock().expect("lock").clone();
        if queries[before..].contains(&(None, None)) {
            restarted = true;
            break;
        }
    }
    assert!(restarted, "{:?}", &fake.queries.lock().expect("lock")[before..]);
}

/// Against a real agent, when one is configured: register, be seen, deregister.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_sees_the_instance_come_and_go_when_consul_http_addr_is_set() {
    let Ok(agent) = std::env::var("CONSUL_HTTP_ADDR") else {
        eprintln!("CONSUL_HTTP_ADDR is not set: no real Consul agent to test against");
        return;
    };
    let agent = if agent.contains("://") {
        agent
    } else {
        format!("http://{agent}")
    };
    let server = ServerConfig::with_ports(0, 0);
    let discovery = DiscoveryConfig {
        mode: DiscoveryMode::Consul,
        consul: ConsulConfig {
            check_interval: Duration::from_secs(1),
            deregister_critical_after: Duration::from_secs(60),
            ..ConsulConfig::default()
        },
    };
    let host = Host::bind(server, discovery).await.expect("bind");
    let id = format!("probe-127.0.0.1-{}", host.grpc_addr().port());
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(
        host.serve(Probe, no_keys(), Vec::new(), Background::new(), async move {
            let _ = stopped.await;
        }),
    );
    let http = reqwest::Client::new();
    let mut token = http.get(format!("{agent}/v1/agent/service/{id}"));
    if let Ok(t) = std::env::var("CONSUL_HTTP_TOKEN") {
        token = token.header("X-Consul-Token", t);
    }
    let mut seen = false;
    for _ in 0..50 {
        let request = token.try_clone().expect("clonable");
        if request.send().await.is_ok_and(|r| r.status().is_success()) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the agent never listed {id}");
    let _ = stop.send(());
    serving.await.expect("joined").expect("served");
    let gone = token.send().await.expect("agent answers");
    assert_eq!(gone.status(), reqwest::StatusCode::NOT_FOUND);
}
