//! HoldSeats throughput and latency over gRPC, next to the raw Redis rate measured in the same
//! run. Against a running platform (`PROFILE=release ./dev up`):
//!
//!     cargo run --release -p loadtest --bin hold-bench -- --password "$(cat .dev/demo-password)"
//!
//! For each concurrency level and each of `--rounds` rounds it configures a fresh event with
//! `--seats` seats of the demo organization (with catalog's credential from `--service-secrets`,
//! default `.dev/service-secrets`), then holds one seat per call, every call on a
//! different seat, from `--customers` customers, until the seats run out (a first round is run and
//! discarded as a warm-up). A level's rate is the median of its rounds: a 10,000-seat round lasts
//! under a second, and this machine's noise moves single rounds by a quarter.
//!
//! The baseline is `redis-benchmark` running EVALSHA of an all-or-nothing Lua hold of 4 keys with
//! 50 connections, on the same Redis, measured just before every round and once after the last:
//! each round's ratio is against the mean of the baselines on either side of it, and a level
//! reports its median ratio. The machine's speed drifts by a third within minutes, so only
//! neighbouring measurements compare. After each baseline the bench waits for its short-lived keys
//! to expire, which would otherwise slow the round that follows.
//!
//! Last, it measures the ceiling Redis itself puts on holds: inventory's own hold script driven
//! straight by `redis-benchmark` (see [`script_ceiling`]), and gives each level's rate as a share
//! of it too.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use loadtest::{arg, as_service, authed, channel, login, ms, service_token, summarize};
use ticketing_proto::ticketing::{
    identity::v1::{self as idpb, identity_service_client::IdentityServiceClient},
    inventory::v1::{self as pb, inventory_service_client::InventoryServiceClient},
};
use uuid::Uuid;

const CUSTOMER_PASSWORD: &str = "benchmark passphrase 1";

/// The database the baseline's keys go to, so that waiting for them to expire watches only them.
const BASELINE_DB: &str = "15";

/// The raw Redis rate: EVALSHA of a 4-key all-or-nothing hold, 50 connections.
fn redis_baseline(redis_url: &str, requests: usize) -> anyhow::Result<f64> {
    const HOLD: &str = "for i = 1, #KEYS do if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end end \
        for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PX', 2000) end return 1";
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_connection()?;
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(HOLD).query(&mut conn)?;
    let (h, p) = host_port(redis_url);
    let key = "holdbench:{s}:__rand_int__";
    let output = Command::new("redis-benchmark")
        .args(["-h", &h, "-p", &p, "-c", "50", "-n", &requests.to_string()])
        .args(["-r", "10000000", "--dbnum", BASELINE_DB, "-q"])
        .args(["EVALSHA", &sha, "4", key, key, key, key, "h"])
        .output()
        .map_err(|e| anyhow::anyhow!("redis-benchmark not runnable ({e}); it ships with redis-server"))?;
    rate_of(&output.stdout)
}

/// Redis running nothing but inventory's own hold script, driven by `redis-benchmark` (50
/// connections, as the baseline) on a synthetic 100,000-seat event in the baseline's database:
/// the ceiling Redis itself puts on holds, with no gRPC, service or token in the way. Each call
/// names a random seat, so most succeed and a few find their seat taken.
fn script_ceiling(redis_url: &str, requests: usize) -> anyhow::Result<f64> {
    const SEATS: usize = 100_000;
    // The event as inventory's load leaves it; seat ids are what `__rand_int__` becomes.
    const SETUP: &str = "local EP = ARGV[1] \
        redis.call('DEL', EP..':seat', EP..':pos', EP..':free:std', EP..':held', EP..':count', \
          EP..':cust', EP..':exp', EP..':meta', EP..':kind') \
        for i = 0, tonumber(ARGV[2]) - 1 do \
          local s = 's' .. string.format('%012d', i) \
          redis.call('HSET', EP..':seat', s, 'std') \
          redis.call('HSET', EP..':pos', s, i) \
          redis.call('ZADD', EP..':free:std', i, s) \
        end \
        redis.call('HSET', EP..':kind', 'std', 'seat') \
        redis.call('HSET', EP..':count', 'std:total', ARGV[2], 'std:held', 0, 'std:sold', 0) \
        redis.call('HSET', EP..':meta', 'loaded', '1', 'closed', '0', 'limit', ARGV[2], 'version', '1', 'seq', '0', 'active', '1') \
        return 1";
    let (event_prefix, global_prefix) = ("holdbench:{ceiling}", "holdbench");
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_connection()?;
    redis::cmd("SELECT").arg(BASELINE_DB).exec(&mut conn)?;
    redis::cmd("EVAL")
        .arg(SETUP)
        .arg(0)
        .arg(event_prefix)
        .arg(SEATS)
        .exec(&mut conn)?;
    // Inventory's own hold script, from its source files (as inventory prefixes it).
    let hold = redis::Script::new(&format!(
        "{}\n{}",
        include_str!("../../../svc-inventory/lua/prelude.lua"),
        include_str!("../../../svc-inventory/lua/hold.lua")
    ));
    let sha = hold.prepare_invoke().load(&mut conn)?;
    let (h, p) = host_port(redis_url);
    let output = Command::new("redis-benchmark")
        .args(["-h", &h, "-p", &p, "-c", "50", "-n", &requests.to_string()])
        .args(["-r", &SEATS.to_string(), "--dbnum", BASELINE_DB, "-q"])
        // ARGV as inventory sends it: prefixes, hold id, owner, ttl, record kept, places, mode, seat.
        .args(["EVALSHA", &sha, "0", event_prefix, global_prefix, "h__rand_int__"])
        .args(["owner", "300000", "900000", "1", "seats", "s__rand_int__"])
        .output()
        .map_err(|e| anyhow::anyhow!("redis-benchmark not runnable ({e})"))?;
    redis::cmd("FLUSHDB").arg("ASYNC").exec(&mut conn)?;
    rate_of(&output.stdout)
}

/// `host`, `port` of a `redis://host:port[/db]` URL.
fn host_port(redis_url: &str) -> (String, String) {
    let host = redis_url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379");
    let (h, p) = host.split_once(':').unwrap_or((host, "6379"));
    (h.to_string(), p.to_string())
}

/// The rate `redis-benchmark -q` reports: "...: 48543.69 requests per second, p50=..." (the
/// last carriage-return-separated line).
fn rate_of(stdout: &[u8]) -> anyhow::Result<f64> {
    let text = String::from_utf8_lossy(stdout);
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
    let identity_url: String = arg("identity", loadtest::local_url("identity"));
    let inventory_url: String = arg("inventory", loadtest::local_url("inventory"));
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
    // Events are configured as catalog does when it publishes one: with catalog's credential.
    let service_secrets: String = arg("service-secrets", ".dev/service-secrets".to_string());
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
    let catalog_token = service_token(&mut identity, &service_secrets, "catalog", "inventory").await?;

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

    // A first, unreported level warms connections, pools and the script cache. A Redis baseline
    // runs before every reported round, which waits for the baseline's keys to expire first (they
    // would slow it), and one more after the last round.
    let rounds: usize = arg("rounds", 5).max(1);
    let baseline_requests: usize = arg("baseline-requests", 60_000);
    // The baseline measured just before each reported round, and once after the last.
    let mut baselines: Vec<f64> = Vec::new();
    let mut plan: Vec<(usize, bool)> = levels
        .split(',')
        .filter_map(|l| l.trim().parse::<usize>().ok())
        .flat_map(|l| std::iter::repeat_n((l, true), rounds))
        .collect();
    if let Some(&(first, _)) = plan.first() {
        plan.insert(0, (first, false));
    }
    // Per level: the rate of each round, the index of the baseline taken before it, the latencies.
    type Level = (usize, Vec<(f64, usize)>, Vec<std::time::Duration>, usize);
    let mut results: Vec<Level> = Vec::new();
    // Per level: CPU used by each process during its rounds, and the rounds' wall time.
    type CpuUse = (
        std::collections::BTreeMap<String, std::time::Duration>,
        std::time::Duration,
    );
    let mut cpu: std::collections::BTreeMap<usize, CpuUse> = Default::default();
    for (level, report) in plan {
        if report && baseline_requests > 0 {
            baselines.push(redis_baseline(&redis_url, baseline_requests)?);
            wait_for_expiry(&redis_url).await?;
        }
        let event = Uuid::now_v7();
        let mut client = InventoryServiceClient::new(channel.clone());
        client
            .configure_event(as_service(
                &catalog_token,
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
        let next = Arc::new(AtomicUsize::new(0));
        let cpu_before = loadtest::cpu_by_process();
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
        let wall = started.elapsed();
        let rate = samples.len() as f64 / wall.as_secs_f64();
        if report {
            let (used, _) = loadtest::cpu_used(&loadtest::cpu_by_process(), &cpu_before);
            let entry = cpu.entry(level).or_default();
            for (name, t) in used {
                *entry.0.entry(name).or_default() += t;
            }
            entry.1 += wall;
            let round = (rate, baselines.len().saturating_sub(1));
            match results.iter_mut().find(|r| r.0 == level) {
                Some(entry) => {
                    entry.1.push(round);
                    entry.2.extend(samples);
                    entry.3 += failures;
                }
                None => results.push((level, vec![round], samples, failures)),
            }
        }
    }
    if baseline_requests > 0 {
        baselines.push(redis_baseline(&redis_url, baseline_requests)?);
    }
    let each: Vec<String> = baselines.iter().map(|b| format!("{b:.0}")).collect();
    println!(
        "redis-benchmark EVALSHA (4-key Lua hold), 50 connections, before each round and after the last: {} holds/s",
        each.join(", ")
    );
    let ceiling_requests: usize = arg("ceiling-requests", 30_000);
    let ceiling = if ceiling_requests > 0 {
        let ceiling = script_ceiling(&redis_url, ceiling_requests)?;
        let last = baselines.last().copied().unwrap_or(f64::NAN);
        println!(
            "inventory's hold script alone in Redis (redis-benchmark EVALSHA, 50 connections, 100,000-seat event): {ceiling:.0} holds/s, {:.1}% of the last baseline",
            100.0 * ceiling / last
        );
        ceiling
    } else {
        f64::NAN
    };
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    for (level, rounds, samples, failures) in results {
        // Each round against the mean of the baselines just before and just after it.
        let ratios: Vec<f64> = rounds
            .iter()
            .map(
                |&(rate, before)| match (baselines.get(before), baselines.get(before + 1)) {
                    (Some(a), Some(b)) => 100.0 * rate / ((a + b) / 2.0),
                    _ => f64::NAN,
                },
            )
            .collect();
        let each: Vec<String> = rounds
            .iter()
            .zip(&ratios)
            .map(|((rate, _), ratio)| format!("{rate:.0} ({ratio:.1}%)"))
            .collect();
        let rate = median(rounds.iter().map(|r| r.0).collect());
        let ratio = median(ratios);
        let summary = summarize(samples);
        println!(
            "concurrency {level}: {} holds; median round {rate:.0} holds/s, median ratio {ratio:.1}% of raw Redis, {:.0}% of the script alone (rounds: {}); p50 {} p99 {} max {}; {failures} refused",
            summary.count,
            100.0 * rate / ceiling,
            each.join(", "),
            ms(summary.p50),
            ms(summary.p99),
            ms(summary.max)
        );
        if let Some((by_process, wall)) = cpu.get(&level) {
            let total: std::time::Duration = by_process.values().sum();
            let per_hold = |t: &std::time::Duration| t.as_secs_f64() * 1e6 / summary.count.max(1) as f64;
            let mut shares: Vec<(&String, &std::time::Duration)> = by_process.iter().collect();
            shares.sort_by_key(|s| std::cmp::Reverse(*s.1));
            let shares: Vec<String> = shares
                .iter()
                .filter(|(_, t)| per_hold(t) >= 2.0)
                .map(|(name, t)| format!("{name} {:.0}", per_hold(t)))
                .collect();
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
            println!(
                "  CPU per hold: {:.0} µs (machine {:.0}% busy) = {}",
                per_hold(&total),
                100.0 * total.as_secs_f64() / (wall.as_secs_f64() * cores),
                shares.join(", ")
            );
        }
    }
    Ok(())
}

/// Waits until the baseline's keys have expired (Redis expires them in the background, which
/// would slow the round that follows), for at most 30 s.
async fn wait_for_expiry(redis_url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("SELECT")
        .arg(BASELINE_DB)
        .query_async::<()>(&mut conn)
        .await?;
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let left: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
        if left < 1_000 {
            return Ok(());
        }
    }
    Ok(())
}
