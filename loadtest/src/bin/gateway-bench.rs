//! The same read RPC, `GetAvailability`, called directly over gRPC and through the REST gateway
//! (HTTP/1.1 JSON), at the same concurrency, in one run. Against a running platform
//! (`PROFILE=release ./dev up`):
//!
//!     cargo run --release -p loadtest --bin gateway-bench
//!
//! Each client loops for `--seconds` per phase: gRPC over `--connections` HTTP/2 connections
//! (tonic's usual sharing), REST over one keep-alive HTTP/1.1 connection per client (what a
//! browser or partner does). The phases alternate for `--rounds` rounds after a warm-up of each,
//! so drift on a shared machine hits both alike; the ratio is reported per round.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use loadtest::{arg, channel, ms, summarize};
use ticketing_proto::ticketing::{
    catalog::v1::{self as catpb, catalog_service_client::CatalogServiceClient},
    inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient},
};

struct Phase {
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
    requests: usize,
}

/// CPU time a process has used so far (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports in USER_HZ, 100 per second on every common configuration.
    Some(Duration::from_millis(ticks * 10))
}

/// The pid of a running process by its exact name.
fn pid_of(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == name).then_some(pid)
    })
}

/// CPU per request of each watched process during `phase`, in µs.
async fn with_cpu(
    watched: &[(&str, Option<u32>)],
    phase: impl std::future::Future<Output = Phase>,
) -> (Phase, String) {
    let before: Vec<_> = watched.iter().map(|(_, pid)| pid.and_then(cpu_time)).collect();
    let phase = phase.await;
    let costs = watched
        .iter()
        .zip(before)
        .filter_map(|((name, pid), before)| {
            let used = cpu_time((*pid)?)?.checked_sub(before?)?;
            let per = used.as_secs_f64() * 1e6 / phase.requests.max(1) as f64;
            Some(format!("{name} {per:.0} µs"))
        })
        .collect::<Vec<_>>()
        .join(", ");
    (phase, costs)
}

/// Runs `clients` loops of `call` for `seconds`, and summarizes the successful calls.
async fn run<F, Fut>(clients: usize, seconds: f64, call: F) -> Phase
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(16_384);
                let mut errors = 0;
                while Instant::now() < until {
                    let at = Instant::now();
                    if call(client).await {
                        samples.push(at.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (samples, errors)
            })
        })
        .collect();
    let mut samples = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((s, e)) = task.await {
            samples.extend(s);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let summary = summarize(samples);
    Phase {
        requests: summary.count,
        rate: summary.count as f64 / elapsed,
        p50: summary.p50,
        p99: summary.p99,
        errors,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let catalog_url: String = arg("catalog", loadtest::local_url("catalog"));
    let inventory_url: String = arg("inventory", loadtest::local_url("inventory"));
    let gateway_url: String = arg("gateway", loadtest::local_url("gateway"));
    let clients: usize = arg("clients", 64);
    let connections: usize = arg("connections", 4);
    let seconds: f64 = arg("seconds", 10.0);
    let rounds: usize = arg("rounds", 3);
    let counts_only = !std::env::args().any(|a| a == "--full");

    // The demo event, found the way a client finds it.
    let mut catalog = CatalogServiceClient::new(channel(&catalog_url).await?);
    let event_id = catalog
        .list_events(catpb::ListEventsRequest {
            query: "flash".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .events
        .first()
        .map(|e| e.id.clone())
        .ok_or_else(|| anyhow::anyhow!("no demo event: run ./dev up first"))?;

    let mut grpc_clients = Vec::new();
    for _ in 0..connections.max(1) {
        grpc_clients.push(InventoryServiceClient::new(channel(&inventory_url).await?));
    }
    let grpc_clients = Arc::new(grpc_clients);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let rest_url = format!(
        "{gateway_url}/v1/events/{event_id}/availability{}",
        if counts_only { "?countsOnly=true" } else { "" }
    );

    let grpc_phase = |seconds: f64| {
        let grpc_clients = grpc_clients.clone();
        let event_id = event_id.clone();
        run(clients, seconds, move |client| {
            let mut inventory = grpc_clients[client % grpc_clients.len()].clone();
            let request = pb::GetAvailabilityRequest {
                event_id: event_id.clone(),
                counts_only,
            };
            async move { inventory.get_availability(request).await.is_ok() }
        })
    };
    let rest_phase = |seconds: f64| {
        let http = http.clone();
        let url = rest_url.clone();
        run(clients, seconds, move |_| {
            let request = http.get(&url).send();
            async move {
                match request.await {
                    // Reading the body is part of the call, as for any client.
                    Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
                    _ => false,
                }
            }
        })
    };

    println!(
        "GetAvailability (event {event_id}, {}), {clients} clients, {seconds} s per phase; gRPC over {connections} HTTP/2 connections, REST over HTTP/1.1 keep-alive",
        if counts_only { "counts only" } else { "every seat" }
    );
    // Warm-up: connections open, caches filled, both paths' code paged in.
    grpc_phase(2.0).await;
    rest_phase(2.0).await;
    // CPU per request of the processes on the path (found by name; absent ones are skipped).
    let watched = [
        ("gateway", pid_of("grpc-gateway")),
        ("inventory", pid_of("svc-inventory")),
        ("redis", pid_of("redis-server")),
        ("load generator", Some(std::process::id())),
    ];
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let (grpc, grpc_cpu) = with_cpu(&watched, grpc_phase(seconds)).await;
        let (rest, rest_cpu) = with_cpu(&watched, rest_phase(seconds)).await;
        let ratio = rest.rate / grpc.rate.max(1.0);
        ratios.push(ratio);
        println!(
            "round {round}: gRPC {:.0}/s (p50 {}, p99 {}, errors {}) | gateway {:.0}/s (p50 {}, p99 {}, errors {}) | ratio {:.1} %",
            grpc.rate,
            ms(grpc.p50),
            ms(grpc.p99),
            grpc.errors,
            rest.rate,
            ms(rest.p50),
            ms(rest.p99),
            rest.errors,
            ratio * 100.0
        );
        println!("  CPU per request, gRPC path: {grpc_cpu}");
        println!("  CPU per request, gateway path: {rest_cpu}");
    }
    ratios.sort_by(f64::total_cmp);
    if let Some(median) = ratios.get(ratios.len() / 2) {
        println!("median ratio gateway / gRPC: {:.1} %", median * 100.0);
    }
    Ok(())
}
