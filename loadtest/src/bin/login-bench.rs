//! Login latency under concurrency, against a running identity (`PROFILE=release ./dev up`).
//!
//!     cargo run --release -p loadtest --bin login-bench -- --addr http://127.0.0.1:50051 \
//!         --concurrency 16 --requests 480
//!
//! Measures logins one at a time first, then at the given concurrency, in the same run, and
//! reports the second as a ratio of the first. A login is dominated by one argon2id verify, so on
//! N cores the ideal is p50(concurrency c) = p50(1) x c / N.

use std::{sync::Arc, time::Instant};

use loadtest::{Summary, arg, ms, summarize};
use ticketing_proto::ticketing::identity::v1::{self as pb, identity_service_client::IdentityServiceClient};
use tokio::sync::Mutex;
use tonic::transport::Channel;

const PASSWORD: &str = "benchmark passphrase 1";

async fn run(
    channel: &Channel,
    email: &str,
    concurrency: usize,
    requests: usize,
) -> anyhow::Result<(Summary, f64)> {
    let remaining = Arc::new(Mutex::new(requests));
    let samples = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let mut client = IdentityServiceClient::new(channel.clone());
        let (remaining, samples, email) = (remaining.clone(), samples.clone(), email.to_string());
        tokio::spawn(async move {
            loop {
                {
                    let mut left = remaining.lock().await;
                    if *left == 0 {
                        return Ok::<(), anyhow::Error>(());
                    }
                    *left -= 1;
                }
                let start = Instant::now();
                client
                    .login(pb::LoginRequest {
                        email: email.clone(),
                        password: PASSWORD.into(),
                    })
                    .await?;
                samples.lock().await.push(start.elapsed());
            }
        })
    });
    for worker in futures::future::join_all(workers).await {
        worker??;
    }
    let rate = requests as f64 / started.elapsed().as_secs_f64();
    let samples = std::mem::take(&mut *samples.lock().await);
    Ok((summarize(samples), rate))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: String = arg("addr", loadtest::local_url("identity"));
    let concurrency: usize = arg("concurrency", 16);
    let requests: usize = arg("requests", 480);

    let channel = tonic::transport::Endpoint::from_shared(addr.clone())?
        .connect()
        .await?;
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    IdentityServiceClient::new(channel.clone())
        .register(pb::RegisterRequest {
            email: email.clone(),
            password: PASSWORD.into(),
            display_name: "bench".into(),
        })
        .await?;
    run(&channel, &email, concurrency, concurrency).await?; // warm-up

    let (single, single_rate) = run(&channel, &email, 1, 60).await?;
    let (loaded, rate) = run(&channel, &email, concurrency, requests).await?;
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);

    // The argon2id parameters are identity's configuration (README, "Configuration").
    println!("login-bench against {addr} ({cores} cores)");
    println!(
        "concurrency 1:  {} logins, {single_rate:.1}/s, p50 {} p99 {}",
        single.count,
        ms(single.p50),
        ms(single.p99)
    );
    println!(
        "concurrency {concurrency}: {} logins, {rate:.1}/s, p50 {} p90 {} p99 {} max {}",
        loaded.count,
        ms(loaded.p50),
        ms(loaded.p90),
        ms(loaded.p99),
        ms(loaded.max)
    );
    let ideal = single.p50.as_secs_f64() * concurrency as f64 / cores as f64;
    println!(
        "p50 ratio {:.2}x the single-login p50 (ideal on {cores} cores: {:.2}x); throughput {:.2}x",
        loaded.p50.as_secs_f64() / single.p50.as_secs_f64(),
        ideal / single.p50.as_secs_f64(),
        rate / single_rate
    );
    Ok(())
}
