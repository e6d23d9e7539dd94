//! Webhook deliveries per second through notify, against a running platform (`./dev up`, whose
//! notify may post to loopback):
//!
//!     cargo run --release -p loadtest --bin webhook-bench -- --events 2000 --endpoints 4 \
//!         --password "$(cat .dev/demo-password)"
//!
//! Starts a receiver on loopback, registers `--endpoints` endpoints on it for the demo
//! organizer's organization, publishes an `event.published` for a bench event of that
//! organization and then `--events` `ticket.checked_in` events for it at once (as orders' relay
//! would), and times until every endpoint has received every event: consuming each and queueing
//! one delivery per endpoint in its transaction, then signing, posting and recording each. The
//! endpoints are deleted at the end.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, http::HeaderMap, routing::post};
use lapin::{BasicProperties, options::BasicPublishOptions};
use loadtest::{arg, authed, channel, login, organization_of};
use prost::Message;
use ticketing_proto::ticketing::{
    events::v1::{Envelope, EventPublished, TicketCheckedIn},
    identity::v1::identity_service_client::IdentityServiceClient,
    notify::v1::{self as npb, notify_service_client::NotifyServiceClient},
};
use uuid::Uuid;

fn envelope(event_type: &str, aggregate: &str, payload: Vec<u8>) -> Envelope {
    Envelope {
        event_id: Uuid::now_v7().to_string(),
        event_type: event_type.into(),
        occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        aggregate_type: "bench".into(),
        aggregate_id: aggregate.into(),
        aggregate_sequence: 1,
        producer: "webhook-bench".into(),
        payload,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: usize = arg("events", 2000);
    let endpoints: usize = arg("endpoints", 4);
    let amqp = arg("amqp", "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
    let exchange = arg("exchange", "ticketing.events".to_string());
    let identity_url = arg("identity", "http://127.0.0.1:50051".to_string());
    let notify_url = arg("notify", "http://127.0.0.1:50056".to_string());
    let organizer = arg("organizer", "organizer@demo.ticketing.dev".to_string());
    let password: String = arg("password", String::new());
    anyhow::ensure!(
        !password.is_empty(),
        "--password: the demo organizer's password (.dev/demo-password)"
    );

    // The receiver: counts distinct webhook-ids per path.
    let seen: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    let app = Router::new().route(
        "/hook/{n}",
        post({
            let seen = seen.clone();
            move |axum::extract::Path(n): axum::extract::Path<String>, headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    seen.lock().unwrap_or_else(|p| p.into_inner()).insert((n, id));
                    "ok"
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut identity = IdentityServiceClient::new(channel(&identity_url).await?);
    let token = login(&mut identity, &organizer, &password).await?;
    let org = organization_of(&mut identity, &token).await?;
    let mut notify = NotifyServiceClient::new(channel(&notify_url).await?);
    let mut created = Vec::new();
    for n in 0..endpoints {
        let endpoint = notify
            .create_webhook_endpoint(authed(
                &token,
                npb::CreateWebhookEndpointRequest {
                    organization_id: org.clone(),
                    url: format!("http://127.0.0.1:{port}/hook/{n}"),
                    event_types: vec!["ticket.checked_in".into()],
                    description: "webhook-bench".into(),
                },
            )?)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "creating an endpoint: {} (does notify allow loopback targets?)",
                    e.message()
                )
            })?
            .into_inner()
            .endpoint
            .ok_or_else(|| anyhow::anyhow!("no endpoint"))?;
        created.push(endpoint.id);
    }

    let connection = lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default()).await?;
    let broker = connection.create_channel().await?;
    broker
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    let event_id = Uuid::now_v7().to_string();
    let mut outgoing = vec![envelope(
        "event.published",
        &event_id,
        EventPublished {
            event_id: event_id.clone(),
            organization_id: org.clone(),
            title: "Webhook bench".into(),
            starts_at: Some(prost_types::Timestamp::from(
                std::time::SystemTime::now() + Duration::from_secs(30 * 86_400),
            )),
            ..Default::default()
        }
        .encode_to_vec(),
    )];
    for n in 0..events {
        let ticket = Uuid::now_v7().to_string();
        outgoing.push(envelope(
            "ticket.checked_in",
            &ticket,
            TicketCheckedIn {
                ticket_id: ticket.clone(),
                event_id: event_id.clone(),
                order_id: Uuid::now_v7().to_string(),
                gate: format!("gate-{}", n % 4),
                at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            }
            .encode_to_vec(),
        ));
    }
    let started = Instant::now();
    let mut confirms = Vec::with_capacity(outgoing.len());
    for env in outgoing {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(env.event_id.as_str().into())
            .with_type(env.event_type.as_str().into());
        confirms.push(
            broker
                .basic_publish(
                    exchange.as_str().into(),
                    env.event_type.as_str().into(),
                    BasicPublishOptions::default(),
                    &env.encode_to_vec(),
                    properties,
                )
                .await?,
        );
    }
    for confirm in confirms {
        anyhow::ensure!(confirm.await?.is_ack(), "the broker refused an event");
    }
    println!(
        "published {events} ticket.checked_in in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let wanted = events * endpoints;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_report = Instant::now();
    loop {
        let got = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
        if got >= wanted {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {got} of {wanted} deliveries after 10 minutes"
        );
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "  {got}/{wanted} deliveries after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "{events} events to {endpoints} endpoints: {wanted} signed deliveries in {took:.2} s, {:.0} deliveries/s, {:.0} events/s",
        wanted as f64 / took,
        events as f64 / took
    );
    for id in created {
        notify
            .delete_webhook_endpoint(authed(
                &token,
                npb::DeleteWebhookEndpointRequest { endpoint_id: id },
            )?)
            .await?;
    }
    Ok(())
}
