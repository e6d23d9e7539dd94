//! Shared helpers for the benchmark binaries: argument parsing and latency summaries.

use std::time::Duration;

use ticketing_proto::ticketing::identity::v1::{
    self as idpb, identity_service_client::IdentityServiceClient,
};
use tonic::{Request, transport::Channel};

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
    request.metadata_mut().insert(
        ticketing_platform::service_auth::SERVICE_TOKEN_HEADER,
        token.parse()?,
    );
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
