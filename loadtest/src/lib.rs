//! Shared helpers for the benchmark binaries: argument parsing, latency summaries, and setting
//! up a sale (an event on sale, buyers with tokens).

use std::time::Duration;

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use ticketing_proto::ticketing::{
    catalog::v1::{self as cat, catalog_service_client::CatalogServiceClient},
    common::v1::{Address, Money},
    identity::v1::{self as idpb, identity_service_client::IdentityServiceClient},
};
use tonic::{Request, transport::Channel};
use uuid::Uuid;

/// The price of every place of a sale made by [`publish_sale`], in cents.
pub const PRICE_MINOR: i64 = 5_000;
/// The currency of a sale made by [`publish_sale`].
pub const CURRENCY: &str = "EUR";
const SEATS_PER_ROW: usize = 100;

/// `message` with `Authorization: Bearer <token>`.
pub fn authed<T>(token: &str, message: T) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

/// Logs in and returns the access token.
pub async fn login(
    identity: &mut IdentityServiceClient<Channel>,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    Ok(identity
        .login(idpb::LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await?
        .into_inner()
        .access_token)
}

/// `message` with a service's token as its credential (`x-service-token`).
pub fn as_service<T>(token: &str, message: T) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    // The header services read a service token from (the platform's `SERVICE_TOKEN_HEADER`).
    request.metadata_mut().insert("x-service-token", token.parse()?);
    Ok(request)
}

/// A service token of `client` for `audience`, with the client's secret read from `dir`
/// (`./dev up` keeps them in `.dev/service-secrets`): benchmarks that drive an internal RPC
/// call it as the service that may.
pub async fn service_token(
    identity: &mut IdentityServiceClient<Channel>,
    dir: &str,
    client: &str,
    audience: &str,
) -> anyhow::Result<String> {
    let path = std::path::Path::new(dir).join(client);
    let secret = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "reading {}: {e} (--service-secrets names the folder)",
            path.display()
        )
    })?;
    Ok(identity
        .issue_service_token(idpb::IssueServiceTokenRequest {
            client_id: client.into(),
            client_secret: secret.trim().to_string(),
            audience: audience.into(),
        })
        .await?
        .into_inner()
        .access_token)
}

/// A connected channel to `url`.
pub async fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect()
        .await?)
}

/// Reads `--name value` from the command line, or the default.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == &format!("--{name}"))
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether `--name` is on the command line.
pub fn flag(name: &str) -> bool {
    let wanted = format!("--{name}");
    std::env::args().any(|a| a == wanted)
}

/// The first organization the logged-in user (the demo organizer) belongs to.
pub async fn organization_of(
    identity: &mut IdentityServiceClient<Channel>,
    token: &str,
) -> anyhow::Result<String> {
    identity
        .get_me(authed(token, idpb::GetMeRequest {})?)
        .await?
        .into_inner()
        .memberships
        .first()
        .map(|m| m.organization_id.clone())
        .ok_or_else(|| anyhow::anyhow!("the organizer has no organization"))
}

/// A venue of `seats` seats in rows of 100, an event over it with one tier of all of them
/// (priced [`PRICE_MINOR`] [`CURRENCY`]), published: its event and tier ids.
pub async fn publish_sale(
    catalog: &mut CatalogServiceClient<Channel>,
    token: &str,
    org: &str,
    seats: usize,
    per_customer: i32,
) -> anyhow::Result<(String, String)> {
    let rows = seats.div_ceil(SEATS_PER_ROW);
    let chart = cat::SeatingChart {
        categories: vec![cat::SeatCategory {
            code: "STANDARD".into(),
            name: "Standard".into(),
            color: "#2980b9".into(),
        }],
        sections: vec![cat::Section {
            name: "Hall".into(),
            rows: (0..rows)
                .map(|r| cat::Row {
                    label: format!("R{r}"),
                    seats: (0..SEATS_PER_ROW.min(seats - r * SEATS_PER_ROW))
                        .map(|n| cat::Seat {
                            label: format!("R{r}-{n}"),
                            category_code: "STANDARD".into(),
                            x: n as f64,
                            y: r as f64,
                            ..Default::default()
                        })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        }],
        ga_areas: vec![],
    };
    let venue = catalog
        .create_venue(authed(
            token,
            cat::CreateVenueRequest {
                venue: Some(cat::Venue {
                    organization_id: org.into(),
                    name: format!("Flash Sale Hall {}", Uuid::new_v4().simple()),
                    address: Some(Address {
                        line1: "Benchstraße 1".into(),
                        city: "Berlin".into(),
                        postal_code: "10117".into(),
                        country: "DE".into(),
                        ..Default::default()
                    }),
                    timezone: "Europe/Berlin".into(),
                    seating_chart: Some(chart),
                    ..Default::default()
                }),
            },
        )?)
        .await?
        .into_inner();
    let starts = Utc::now() + chrono::Duration::days(30);
    let event = catalog
        .create_event(authed(
            token,
            cat::CreateEventRequest {
                event: Some(cat::Event {
                    organization_id: org.into(),
                    venue_id: venue.id.clone(),
                    title: "Flash sale".into(),
                    starts_at: Some(timestamp(starts)),
                    ends_at: Some(timestamp(starts + chrono::Duration::hours(3))),
                    category: cat::EventCategory::Concert as i32,
                    ..Default::default()
                }),
            },
        )?)
        .await?
        .into_inner();
    let tier = catalog
        .create_ticket_tier(authed(
            token,
            cat::CreateTicketTierRequest {
                event_id: event.id.clone(),
                tier: Some(cat::TicketTier {
                    name: "Standard".into(),
                    price: Some(Money {
                        amount_minor: PRICE_MINOR,
                        currency: CURRENCY.into(),
                    }),
                    target: Some(cat::ticket_tier::Target::SeatCategoryCode("STANDARD".into())),
                    // Inventory's per-customer limit is the largest per-order limit.
                    per_order_limit: per_customer,
                    ..Default::default()
                }),
            },
        )?)
        .await?
        .into_inner();
    catalog
        .publish_event(authed(
            token,
            cat::PublishEventRequest {
                event_id: event.id.clone(),
            },
        )?)
        .await?;
    Ok((event.id, tier.id))
}

/// Registers `count` customers `<prefix>-<i>@example.com` with `password` and logs each in
/// (`concurrency` at a time: each is two argon2 hashes): their access tokens, in order.
pub async fn register_buyers(
    identity: &IdentityServiceClient<Channel>,
    prefix: &str,
    count: usize,
    password: &str,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    futures::stream::iter(0..count)
        .map(|i| {
            let mut identity = identity.clone();
            let email = format!("{prefix}-{i}@example.com");
            async move {
                identity
                    .register(idpb::RegisterRequest {
                        email: email.clone(),
                        password: password.into(),
                        display_name: String::new(),
                    })
                    .await?;
                login(&mut identity, &email, password).await
            }
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

/// Percentiles of a set of latencies.
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

pub fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(index).copied().unwrap_or_default()
    };
    Summary {
        count: samples.len(),
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: samples.last().copied().unwrap_or_default(),
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// CPU time used so far (user + system) by every running process: pid -> (name, time). Names
/// come from `/proc/<pid>/comm` (PostgreSQL's backends are all `postgres`, RabbitMQ is
/// `beam.smp`, kernel workers are folded into `kworker`).
pub type CpuSnapshot = std::collections::BTreeMap<u32, (String, Duration)>;

pub fn cpu_by_process() -> CpuSnapshot {
    let mut snapshot = CpuSnapshot::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return snapshot;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ...`: the name may hold spaces and parentheses, the fields after
        // it do not.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut name = stat.get(open + 1..close).unwrap_or_default().to_string();
        if name.starts_with("kworker") {
            // A kernel worker's name changes with its current work item.
            name = "kworker".into();
        }
        let fields: Vec<&str> = stat
            .get(close + 1..)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime, in USER_HZ (100 per second on every common configuration).
        snapshot.insert(pid, (name, Duration::from_millis((ticks(11) + ticks(12)) * 10)));
    }
    snapshot
}

/// CPU used between two [`cpu_by_process`] snapshots, summed by process name, largest first,
/// with the total. A process that ended in between is missed; one that started counts whole.
pub fn cpu_used(after: &CpuSnapshot, before: &CpuSnapshot) -> (Vec<(String, Duration)>, Duration) {
    let mut by_name: std::collections::BTreeMap<&str, Duration> = Default::default();
    for (pid, (name, t)) in after {
        let earlier = before
            .get(pid)
            .filter(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .unwrap_or_default();
        *by_name.entry(name.as_str()).or_default() += t.saturating_sub(earlier);
    }
    let mut used: Vec<(String, Duration)> = by_name
        .into_iter()
        .filter(|(_, t)| !t.is_zero())
        .map(|(name, t)| (name.to_string(), t))
        .collect();
    used.sort_by_key(|u| std::cmp::Reverse(u.1));
    let total = used.iter().map(|(_, t)| *t).sum();
    (used, total)
}

/// A protobuf timestamp of `at` (whole seconds are enough for a sale's times).
fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

/// `name`'s gRPC URL on this machine, from the platform's port table (`ports.txt`).
pub fn local_url(name: &str) -> String {
    const TABLE: &str = include_str!("../../ports.txt");
    TABLE
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?, fields.next()?))
        })
        .find(|(n, _)| *n == name)
        .map(|(_, port)| format!("http://127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("{name} is not in ports.txt"))
}
