//! What operators and internal tools see: server reflection (v1 and v1alpha), grpc.health.v1
//! following the database, and the admin port.

use std::time::Duration;
use ticketing_platform::server::Served;

use prost::Message;
use ticketing_proto::ticketing::identity::v1 as pb;
use ticketing_testkit::{ProxyMode, TcpProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{PASSWORD, spawn_app, spawn_with, test_config};

const IDENTITY: &str = "ticketing.identity.v1.IdentityService";

fn methods_of(files: Vec<Vec<u8>>) -> Vec<String> {
    files
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("descriptor"))
        .filter(|f| f.package() == "ticketing.identity.v1")
        .flat_map(|f| f.service.into_iter())
        .filter(|s| s.name() == "IdentityService")
        .flat_map(|s| s.method.into_iter().map(|m| m.name().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_the_service_in_both_protocol_versions() {
    let app = spawn_app().await;
    let channel = app.channel().await;

    // v1, as grpcurl speaks it.
    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(channel.clone());
        let ask = |m| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        };
        let requests = tokio_stream::iter(vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(IDENTITY.into())),
        ]);
        let mut responses = client
            .server_reflection_info(requests)
            .await
            .expect("stream")
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) = responses
            .message()
            .await
            .expect("msg")
            .and_then(|r| r.message_response)
        else {
            panic!("expected a service list");
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        for expected in [
            IDENTITY,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(names.contains(&expected), "{expected} not in {names:?}");
        }
        let Some(MessageResponse::FileDescriptorResponse(files)) = responses
            .message()
            .await
            .expect("msg")
            .and_then(|r| r.message_response)
        else {
            panic!("expected descriptors");
        };
        let methods = methods_of(files.file_descriptor_proto);
        for expected in [
            "Register",
            "Login",
            "RefreshToken",
            "GetJwks",
            "CreateApiKey",
            "VerifyApiKey",
        ] {
            assert!(
                methods.iter().any(|m| m == expected),
                "{expected} not in {methods:?}"
            );
        }
    }
    // v1alpha, as older GUI clients speak it.
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(channel);
        let requests = tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(format!("{IDENTITY}.Login"))),
        }]);
        let mut responses = client
            .server_reflection_info(requests)
            .await
            .expect("stream")
            .into_inner();
        let Some(MessageResponse::FileDescriptorResponse(files)) = responses
            .message()
            .await
            .expect("msg")
            .and_then(|r| r.message_response)
        else {
            panic!("expected descriptors");
        };
        assert!(
            methods_of(files.file_descriptor_proto)
                .iter()
                .any(|m| m == "Login")
        );
    }
}

async fn health(channel: tonic::transport::Channel, service: &str) -> ServingStatus {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers");
    ServingStatus::try_from(response.into_inner().status).expect("known status")
}

async fn wait_for(channel: &tonic::transport::Channel, want: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = health(channel.clone(), "").await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health stayed {now:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("admin port");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database_and_calls_fail_as_unavailable_while_it_is_cut() {
    let (mut config, db) = test_config().await;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().expect("addr"))
        .await
        .expect("proxy");
    config.database = ticketing_platform::config::DatabaseConfig::new(db.url_via(proxy.addr()));
    config.database.connect_timeout = Duration::from_millis(700);
    let app = spawn_with(config, db).await;
    let channel = app.channel().await;

    wait_for(&channel, ServingStatus::Serving).await;
    assert_eq!(health(channel.clone(), IDENTITY).await, ServingStatus::Serving);
    assert_eq!(http_get(app.admin_addr, "/readyz").await.0, 200);

    proxy.set_mode(ProxyMode::Refuse);
    wait_for(&channel, ServingStatus::NotServing).await;
    assert_eq!(health(channel.clone(), IDENTITY).await, ServingStatus::NotServing);
    let (status, body) = http_get(app.admin_addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("postgres"), "{body}");
    assert_eq!(
        http_get(app.admin_addr, "/healthz").await.0,
        200,
        "the process itself is alive"
    );
    let mut client = pb::identity_service_client::IdentityServiceClient::new(channel.clone());
    let status = client
        .register(pb::RegisterRequest {
            email: "down@example.com".into(),
            password: PASSWORD.into(),
            display_name: String::new(),
        })
        .await
        .expect_err("database down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    proxy.set_mode(ProxyMode::Pass);
    wait_for(&channel, ServingStatus::Serving).await;
    client
        .register(pb::RegisterRequest {
            email: "back@example.com".into(),
            password: PASSWORD.into(),
            display_name: String::new(),
        })
        .await
        .expect("works again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_serves_metrics() {
    let app = spawn_app().await;
    app.register("metrics@example.com").await;
    app.login("metrics@example.com").await;
    let (status, body) = http_get(app.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("identity_logins_total"), "{body}");
    assert!(body.contains("identity_registrations_total"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuing_tokens_never_waits_for_a_connection_its_caller_holds() {
    // One connection, and a signing key not yet cached: signing loads it from the database. A
    // login or refresh still holding its connection then waits for itself until the timeout.
    let (mut config, guards) = test_config().await;
    config.database.pool_size = 1;
    config.database.connect_timeout = Duration::from_secs(3);
    let app = spawn_with(config.clone(), guards).await;
    app.register("single@example.com").await;
    let tokens = app.login("single@example.com").await;
    assert!(!tokens.access_token.is_empty());

    // A second instance on the same database starts with a cold key cache; its first signing
    // is for a refresh.
    let second = svc_identity::Application::build(config)
        .await
        .expect("second instance builds");
    let addr = second.grpc_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(second.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let mut client = pb::identity_service_client::IdentityServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let refreshed = client
        .refresh_token(pb::RefreshTokenRequest {
            refresh_token: tokens.refresh_token,
        })
        .await
        .expect("refreshed with one connection and a cold key cache")
        .into_inner();
    assert!(!refreshed.access_token.is_empty());
    let _ = stop.send(());
    running.await.expect("task").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_calls_finish() {
    // A generous grace: on a machine loaded by the other tests, twelve logins take a while.
    let (mut config, guards) = test_config().await;
    config.server.shutdown_grace = Duration::from_secs(30);
    let app = spawn_with(config, guards).await;
    app.register("drain@example.com").await;
    let channel = app.channel().await;
    // Logins spend time in argon2, so several are in flight when shutdown starts.
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let mut client = pb::identity_service_client::IdentityServiceClient::new(channel.clone());
            tokio::spawn(async move {
                client
                    .login(pb::LoginRequest {
                        email: "drain@example.com".into(),
                        password: PASSWORD.into(),
                    })
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let stopped = tokio::spawn(app.shutdown());
    for call in calls {
        call.await
            .expect("task")
            .expect("an in-flight call completes during shutdown");
    }
    stopped.await.expect("task").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_cut_logins_fail_as_unavailable_and_health_says_not_serving() {
    let (mut config, db) = test_config().await;
    let proxy = TcpProxy::start("127.0.0.1:6379".parse().expect("addr"))
        .await
        .expect("proxy");
    let prefix = config.redis.key_prefix.clone();
    config.redis = ticketing_platform::config::RedisConfig::new(format!("redis://{}", proxy.addr()), prefix);
    config.redis.connect_timeout = Duration::from_millis(500);
    let app = spawn_with(config, db).await;
    app.register("cache@example.com").await;
    let channel = app.channel().await;
    wait_for(&channel, ServingStatus::Serving).await;

    proxy.set_mode(ProxyMode::Refuse);
    wait_for(&channel, ServingStatus::NotServing).await;
    let mut client = pb::identity_service_client::IdentityServiceClient::new(channel.clone());
    let status = client
        .login(pb::LoginRequest {
            email: "cache@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect_err("no lockout bookkeeping, no login");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    proxy.set_mode(ProxyMode::Pass);
    wait_for(&channel, ServingStatus::Serving).await;
    client
        .login(pb::LoginRequest {
            email: "cache@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_concurrency_limit_calls_are_shed_not_queued_and_probes_still_answer() {
    let (mut config, db) = test_config().await;
    config.server.concurrency_limit = 2;
    let app = spawn_with(config, db).await;
    app.register("busy@example.com").await;
    let channel = app.channel().await;
    let calls = (0..24).map(|_| {
        let mut client = pb::identity_service_client::IdentityServiceClient::new(channel.clone());
        tokio::spawn(async move {
            client
                .login(pb::LoginRequest {
                    email: "busy@example.com".into(),
                    password: PASSWORD.into(),
                })
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        })
    });
    // Health checks made while the logins are shed: an overloaded service is not a dead one.
    let probes = (0..6).map(|_| {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner().status)
                .map_err(|s| s.code())
        })
    });
    let (results, probed) = tokio::join!(
        futures::future::join_all(calls),
        futures::future::join_all(probes)
    );
    let results: Vec<_> = results.into_iter().map(|r| r.expect("task")).collect();
    for answer in probed {
        assert_eq!(
            answer.expect("task"),
            Ok(tonic_health::pb::health_check_response::ServingStatus::Serving as i32),
            "a probe is answered while calls are shed: {results:?}"
        );
    }
    let served = results.iter().filter(|r| r.is_ok()).count();
    let shed = results
        .iter()
        .filter(|r| **r == Err(Code::ResourceExhausted))
        .count();
    assert!(served >= 2, "some calls are served: {results:?}");
    assert!(shed >= 1, "calls beyond the limit are refused: {results:?}");
    assert_eq!(served + shed, results.len(), "nothing else happens: {results:?}");
}
