//! HoldSeats throughput and latency over gRPC, next to the raw Redis rate measured in the same
//! run. Against a running platform (`PROFILE=release ./dev up`):
//!
//!     cargo run --release -p loadtest --bin hold-bench -- --password "$(cat .dev/demo-password)"
//!
//! For each concurrency level it configures a fresh event with `--seats` seats (as the demo
//! organizer), then holds one seat per call, every call on a different seat, from `--customers`
//! customers, until the seats run out (a first level is run and discarded as a warm-up). The
//! baseline, measured after the levels, is `redis-benchmark` running EVALSHA of an
//! all-or-nothing Lua hold of 4 keys with 50 connections, on the same Redis.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use loadtest::{arg, authed, channel, login, ms, summarize};
use ticketing_proto::ticketing::{
    identity::v1::{self as idpb, identity_service_client::IdentityServiceClient},
    inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient},
};
use uuid::Uuid;

const CUSTOMER_PASSWORD: &str = "benchmark passphrase 1";

/// The raw Redis rate: EVALSHA of a 4-key all-or-nothing hold, 50 connections.
fn redis_baseline(redis_url: &str, requests: usize) -> anyhow::Result<f64> {
    const HOLD: &str = "for i = 1, #KEYS do if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end end \
        for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PX', 2000) end return 1";
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_connection()?;
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(HOLD).query(&mut conn)?;
    let host = redis_url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379");
    let (h, p) = host.split_once(':').unwrap_or((host, "6379"));
    let key = "holdbench:{s}:__rand_int__";
    let output = Command::new("redis-benchmark")
        .args([
            "-h",
            h,
            "-p",
            p,
            "-c",
            "50",
            "-n",
            &requests.to_string(),
            "-r",
            "10000000",
            "-q",
        ])
        .args(["EVALSHA", &sha, "4", key, key, key, key, "h"])
        .output()
        .map_err(|e| anyhow::anyhow!("redis-benchmark not runnable ({e}); it ships with redis-server"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "...: 48543.69 requests per second, p50=..." (the last carriage-return-separated line)
    text.split(['\r', '\n'])
        .filter_map(|line| {
            line.split(": ")
                .nth(1)?
                .split(" requests per second")
                .next()?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .next_back()
        .ok_or_else(|| anyhow::anyhow!("could not read redis-benchmark output: {text}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let identity_url: String = arg("identity", "http://127.0.0.1:50051".to_string());
    let inventory_url: String = arg("inventory", "http://127.0.0.1:50053".to_string());
    let redis_url: String = arg("redis", "redis://127.0.0.1:6379".to_string());
    let organizer: String = arg("organizer", "organizer@demo.ticketing.dev".to_string());
    let password: String = arg("password", String::new());
    let seats: usize = arg("seats", 10_000);
    let customers: usize = arg("customers", 256);
    let levels: String = arg("concurrency", "64,256".to_string());
    // Buyers arrive over many connections; one shared HTTP/2 connection would serialise every
    // frame on one task at each end.
    let connections: usize = arg("connections", 8);
    // Best available: HoldQuantity of one seat of the tier, instead of naming the seat.
    let quantity_mode = std::env::args().any(|a| a == "--quantity");
    anyhow::ensure!(
        !password.is_empty(),
        "--password: the demo organizer's password (.dev/demo-password)"
    );

    let identity_channel = channel(&identity_url).await?;
    let mut identity = IdentityServiceClient::new(identity_channel);
    let organizer_token = login(&mut identity, &organizer, &password).await?;
    let me = identity
        .get_me(authed(&organizer_token, idpb::GetMeRequest {})?)
        .await?
        .into_inner();
    let org = me
        .memberships
        .first()
        .map(|m| m.organization_id.clone())
        .ok_or_else(|| anyhow::anyhow!("organizer has no organization"))?;

    // Customers: enough that the per-customer limit (100) never binds.
    let run = Uuid::new_v4().simple().to_string();
    let mut tokens = Vec::with_capacity(customers);
    for i in 0..customers {
        let email = format!("holdbench-{run}-{i}@example.com");
        identity
            .register(idpb::RegisterRequest {
                email: email.clone(),
                password: CUSTOMER_PASSWORD.into(),
                display_name: String::new(),
            })
            .await?;
        tokens.push(login(&mut identity, &email, CUSTOMER_PASSWORD).await?);
    }
    let tokens = Arc::new(tokens);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        channels.push(channel(&inventory_url).await?);
    }
    let channel = channels[0].clone();

    println!(
        "hold-bench against {inventory_url}: {seats}-seat events, one seat per hold, {customers} customers"
    );

    // A first, unreported level warms connections, pools and the script cache. The Redis baseline
    // runs last: its keys expire for seconds afterwards and would slow whatever ran next.
    let mut plan: Vec<(usize, bool)> = levels
        .split(',')
        .filter_map(|l| l.trim().parse::<usize>().ok())
        .map(|l| (l, true))
        .collect();
    if let Some(&(first, _)) = plan.first() {
        plan.insert(0, (first, false));
    }
    let mut results = Vec::new();
    for (level, report) in plan {
        let event = Uuid::now_v7();
        let mut client = InventoryServiceClient::new(channel.clone());
        client
            .configure_event(authed(
                &organizer_token,
                pb::ConfigureEventRequest {
                    event_id: event.to_string(),
                    version: 1,
                    organization_id: org.clone(),
                    per_customer_limit: 100,
                    seats: (0..seats)
                        .map(|i| pb::SeatAssignment {
                            seat_id: format!("s{i}"),
                            tier_id: "standard".into(),
                        })
                        .collect(),
                    quotas: vec![],
                },
            )?)
            .await?;
        // Warm up connections on a few seats.
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let workers = (0..level).map(|w| {
            let mut client = InventoryServiceClient::new(channels[w % channels.len()].clone());
            let (next, tokens) = (next.clone(), tokens.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut failures = 0usize;
                loop {
                    let seat = next.fetch_add(1, Ordering::Relaxed);
                    if seat >= seats {
                        return Ok::<_, anyhow::Error>((samples, failures));
                    }
                    let token = &tokens[(w + seat) % tokens.len()];
                    let start = Instant::now();
                    let result = if quantity_mode {
                        let request = authed(
                            token,
                            pb::HoldQuantityRequest {
                                event_id: event.to_string(),
                                tier_id: "standard".into(),
                                quantity: 1,
                                ttl: None,
                            },
                        )?;
                        client.hold_quantity(request).await.map(|_| ())
                    } else {
                        let request = authed(
                            token,
                            pb::HoldSeatsRequest {
                                event_id: event.to_string(),
                                seat_ids: vec![format!("s{seat}")],
                                ttl: None,
                            },
                        )?;
                        client.hold_seats(request).await.map(|_| ())
                    };
                    match result {
                        Ok(()) => samples.push(start.elapsed()),
                        Err(_) => failures += 1,
                    }
                }
            })
        });
        let mut samples = Vec::with_capacity(seats);
        let mut failures = 0;
        for worker in futures::future::join_all(workers).await {
            let (s, f) = worker??;
            samples.extend(s);
            failures += f;
        }
        let elapsed = started.elapsed();
        let summary = summarize(samples);
        let rate = summary.count as f64 / elapsed.as_secs_f64();
        if report {
            results.push((level, summary, elapsed, rate, failures));
        }
    }
    let baseline_requests: usize = arg("baseline-requests", 200_000);
    let baseline = if baseline_requests > 0 {
        redis_baseline(&redis_url, baseline_requests)?
    } else {
        f64::NAN
    };
    println!("redis-benchmark EVALSHA (4-key Lua hold), 50 connections: {baseline:.0} holds/s");
    for (level, summary, elapsed, rate, failures) in results {
        println!(
            "concurrency {level}: {} holds in {:.2} s = {rate:.0} holds/s ({:.1}% of raw Redis); p50 {} p99 {} max {}; {failures} refused",
            summary.count,
            elapsed.as_secs_f64(),
            100.0 * rate / baseline,
            ms(summary.p50),
            ms(summary.p99),
            ms(summary.max)
        );
    }
    Ok(())
}
