//! The chaos suite: for each fault, a flash sale through the REST gateway with the fault injected
//! in the middle of it and healed, then an audit of every invariant straight from the services'
//! databases, the broker and the public API. Run it with `./dev chaos` (the full suite, which
//! writes `docs/chaos.md`) or `./dev chaos --short` (the CI version), which start the instance it
//! expects (state `.dev-chaos`, ports +100, databases `*_chaos`, a private Redis and RabbitMQ)
//! and pass its addresses.
//!
//! Faults: `kill:<service>` (SIGKILL, 3 s, then `<dev> up`), `stop:<service>` (SIGSTOP for 12 s),
//! `broker` (connections closed, the broker stopped for 3 s), `redis-flush`,
//! `pg-terminate:<service>` (its database connections terminated every 200 ms for 3 s) and
//! `cut:payments` (this binary's proxy between the services and payments cut for 5 s).
//!
//! Options: `--faults a,b,...`, `--buyers`, `--places`, `--tickets` (per checkout), `--hold-ttl`
//! (seconds), `--seconds` (how long the sale should last), `--fault-at` (seconds into the sale),
//! `--report <file>` (`none` for no file), `--short`; the instance's addresses: `--gateway`,
//! `--identity`, `--catalog`, `--postgres`, `--db-suffix`, `--redis`, `--amqp`,
//! `--rabbitmq-node`, `--state`, `--dev`, `--password`, `--payments-proxy` (where the proxy
//! listens) and `--payments` (where payments really is).
//!
//! Exits non-zero when an audit fails, a fault could not be injected or healed, or a request
//! sent again after a retryable answer got a permanent refusal.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use diesel::{
    QueryableByName,
    sql_types::{BigInt, Bool, Nullable, Text},
};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use lapin::{options::QueueDeclareOptions, types::FieldTable};
use loadtest::{arg, flag, login, organization_of, publish_sale, register_buyers, summarize};
use serde_json::{Value, json};
use ticketing_proto::ticketing::{
    catalog::v1::catalog_service_client::CatalogServiceClient,
    identity::v1::identity_service_client::IdentityServiceClient,
};
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

mod audit;
mod buyers;
mod report;

use audit::*;
use buyers::*;
use report::*;

const ORGANIZER: &str = "organizer@demo.ticketing.dev";
const BUYER_PASSWORD: &str = "chaos passphrase 1";
/// The most catalog allows: the per-customer limit must never be what ends a sale.
const PER_CUSTOMER: i32 = 50;
const SERVICES: [&str; 7] = [
    "identity",
    "catalog",
    "inventory",
    "orders",
    "payments",
    "notify",
    "gateway",
];
const DATABASES: [&str; 6] = ["identity", "catalog", "inventory", "orders", "payments", "notify"];
/// The services that consume events, each with a dead-letter queue `<name>.dead`.
const CONSUMERS: [&str; 4] = ["inventory", "orders", "payments", "notify"];
const FULL_FAULTS: &str = "kill:identity,kill:catalog,kill:inventory,kill:orders,kill:payments,\
                           kill:gateway,stop:inventory,stop:payments,broker,redis-flush,\
                           pg-terminate:orders,pg-terminate:inventory,cut:payments";
const SHORT_FAULTS: &str = "kill:orders,kill:inventory,redis-flush,broker";
/// Answers a real client sends again, unchanged.
const RETRYABLE: [u16; 5] = [409, 429, 502, 503, 504];
const DEFAULT_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// However a fault goes, a sale ends by then.
const HARD_LIMIT: Duration = Duration::from_secs(180);
/// How long properties that settle eventually (expiry, events, relays) are given.
const EVENTUAL_WITHIN: Duration = Duration::from_secs(60);
const AIM_HALF_RATE: Duration = Duration::from_secs(3);
const AIM_STALL: Duration = Duration::from_secs(5);
/// Rows shown per broken invariant.
const SHOWN: usize = 10;
const CHECKS: [&str; 9] = [
    "no place sold twice, and the ledger is the paid orders' seats",
    "nothing oversold",
    "every paid order has one valid ticket per line and one succeeded payment of its total",
    "no charge without the paid order it paid",
    "every unpaid order within its deadline, or closed with its places back",
    "the availability buyers see matches the ledger, nothing held",
    "every outbox drained",
    "every dead-letter queue empty",
    "every buyer of a paid order told: the confirmation with the tickets sent",
];

struct Options {
    gateway: String,
    identity: String,
    catalog: String,
    postgres: String,
    db_suffix: String,
    redis: String,
    amqp: String,
    rabbitmq_node: String,
    state: PathBuf,
    dev: String,
    password: String,
    proxy_listen: SocketAddr,
    payments: SocketAddr,
    short: bool,
    faults: Vec<Fault>,
    buyers: usize,
    places: usize,
    tickets: usize,
    hold_ttl: u64,
    sale_seconds: f64,
    fault_at: Duration,
    report: Option<PathBuf>,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let short = flag("short");
        let state = PathBuf::from(arg("state", ".dev-chaos".to_string()));
        let mut password: String = arg("password", String::new());
        if password.is_empty() {
            let path = state.join("demo-password");
            password = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {} (or give --password)", path.display()))?
                .trim()
                .to_string();
        }
        let default_faults = if short { SHORT_FAULTS } else { FULL_FAULTS };
        let faults: String = arg("faults", default_faults.to_string());
        let faults = faults
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(Fault::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let default_report = if short { "none" } else { "docs/chaos.md" };
        let report: String = arg("report", default_report.to_string());
        let fault_at: f64 = arg("fault-at", if short { 5.0 } else { 8.0 });
        let options = Self {
            gateway: arg("gateway", "http://127.0.0.1:8180".to_string())
                .trim_end_matches('/')
                .to_string(),
            identity: arg("identity", "http://127.0.0.1:50151".to_string()),
            catalog: arg("catalog", "http://127.0.0.1:50152".to_string()),
            postgres: arg("postgres", "postgres://postgres@127.0.0.1:5432".to_string())
                .trim_end_matches('/')
                .to_string(),
            db_suffix: arg("db-suffix", "_chaos".to_string()),
            redis: arg("redis", "redis://127.0.0.1:6391".to_string()),
            amqp: arg("amqp", "amqp://guest:guest@127.0.0.1:5682/%2f".to_string()),
            rabbitmq_node: arg("rabbitmq-node", "ticketing-chaos@localhost".to_string()),
            dev: arg("dev", "./dev".to_string()),
            proxy_listen: arg("payments-proxy", SocketAddr::from(([127, 0, 0, 1], 50355))),
            payments: arg("payments", SocketAddr::from(([127, 0, 0, 1], 50155))),
            buyers: arg("buyers", if short { 30 } else { 100 }),
            places: arg("places", if short { 200 } else { 1000 }),
            tickets: arg("tickets", 2),
            hold_ttl: arg("hold-ttl", 60),
            sale_seconds: arg("seconds", if short { 20.0 } else { 30.0 }),
            fault_at: Duration::try_from_secs_f64(fault_at).context("--fault-at: seconds")?,
            report: (report != "none" && !report.is_empty()).then(|| PathBuf::from(report)),
            short,
            faults,
            state,
            password,
        };
        anyhow::ensure!(!options.faults.is_empty(), "--faults: at least one");
        anyhow::ensure!(options.buyers > 0, "--buyers: at least one");
        anyhow::ensure!((1..=50).contains(&options.tickets), "--tickets: 1 to 50");
        anyhow::ensure!(options.places >= options.tickets, "--places: at least --tickets");
        anyhow::ensure!(
            (30..=1800).contains(&options.hold_ttl),
            "--hold-ttl: 30 to 1800 seconds"
        );
        anyhow::ensure!(
            options.sale_seconds.is_finite() && options.sale_seconds > 0.0,
            "--seconds: above zero"
        );
        anyhow::ensure!(options.fault_at < HARD_LIMIT, "--fault-at: within the sale");
        // `<dev> up` finds the instance (ports, databases, Redis, broker) in the environment.
        if options.faults.iter().any(|f| matches!(f, Fault::Kill(_)))
            && std::env::var_os("PORT_OFFSET").is_none()
        {
            bail!(
                "kill faults restart services with `{} up`, which takes the instance's settings from the \
                 environment (PORT_OFFSET, DB_SUFFIX, REDIS_URL, AMQP_URL, PEER_VIA_PAYMENTS): run the \
                 suite through `./dev chaos`",
                options.dev
            );
        }
        Ok(options)
    }

    fn database_url(&self, service: &str) -> String {
        format!("{}/{service}{}", self.postgres, self.db_suffix)
    }
}

#[derive(Clone, Debug)]
enum Fault {
    Kill(String),
    Stop(String),
    Broker,
    RedisFlush,
    PgTerminate(String),
    CutPayments,
}

impl Fault {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let (kind, target) = text.split_once(':').unwrap_or((text, ""));
        let service = |list: &[&str]| -> anyhow::Result<String> {
            if list.contains(&target) {
                Ok(target.to_string())
            } else {
                bail!("fault `{text}`: `{target}` is not one of {}", list.join(", "))
            }
        };
        Ok(match kind {
            "kill" => Self::Kill(service(SERVICES.as_slice())?),
            "stop" => Self::Stop(service(SERVICES.as_slice())?),
            "pg-terminate" => Self::PgTerminate(service(DATABASES.as_slice())?),
            "broker" if target.is_empty() => Self::Broker,
            "redis-flush" if target.is_empty() => Self::RedisFlush,
            "cut" if target == "payments" => Self::CutPayments,
            _ => bail!(
                "unknown fault `{text}`: kill:<service>, stop:<service>, broker, redis-flush, \
                 pg-terminate:<service>, cut:payments"
            ),
        })
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kill(service) => write!(f, "kill:{service}"),
            Self::Stop(service) => write!(f, "stop:{service}"),
            Self::Broker => f.write_str("broker"),
            Self::RedisFlush => f.write_str("redis-flush"),
            Self::PgTerminate(service) => write!(f, "pg-terminate:{service}"),
            Self::CutPayments => f.write_str("cut:payments"),
        }
    }
}

/// A TCP proxy the services reach payments through, for the whole run; `cut` closes every open
/// connection and every new one until `restore`.
struct Proxy {
    cut: Arc<watch::Sender<bool>>,
}

impl Proxy {
    async fn start(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("the payments proxy cannot listen on {listen}"))?;
        let (cut, _) = watch::channel(false);
        let cut = Arc::new(cut);
        tokio::spawn(forward(listener, target, cut.clone()));
        Ok(Self { cut })
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }
}

async fn forward(listener: TcpListener, target: SocketAddr, cut: Arc<watch::Sender<bool>>) {
    loop {
        let mut inbound = match listener.accept().await {
            Ok((inbound, _)) => inbound,
            Err(_) => {
                // Out of descriptors, say: let it pass rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut is_cut = cut.subscribe();
        if *is_cut.borrow() {
            drop(inbound);
            continue;
        }
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            tokio::select! {
                _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                () = cut_off(&mut is_cut) => {}
            }
        });
    }
}

/// Resolves once the link is cut.
async fn cut_off(is_cut: &mut watch::Receiver<bool>) {
    let _ = is_cut.wait_for(|cut| *cut).await;
}

struct Ctx {
    options: Options,
    proxy: Proxy,
    http: reqwest::Client,
}

/// A gRPC channel for the setup, with deadlines: a stopped service must not hang the suite.
async fn grpc(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await?)
}

/// When the fault began and when it was healed (the restart), from the sale's start.
struct Window {
    injected: Duration,
    healed: Duration,
    note: String,
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let shown = format!("{program} {}", args.join(" "));
    let mut command = std::process::Command::new(program);
    command.args(args).stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .with_context(|| format!("running {shown}"))?;
    anyhow::ensure!(
        output.status.success(),
        "`{shown}` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// `<dev> up` for the instance (nothing is built): starts what is not running.
async fn dev_up(o: &Options) -> anyhow::Result<()> {
    let logs = o.state.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let log_path = logs.join("chaos-restarts.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut command = std::process::Command::new(&o.dev);
    command
        .arg("up")
        .env("DEV_STATE", &o.state)
        .env("DEV_SKIP_BUILD", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let status = tokio::task::spawn_blocking(move || command.status()).await??;
    anyhow::ensure!(
        status.success(),
        "`{} up` failed ({status}); its output is in {}",
        o.dev,
        log_path.display()
    );
    Ok(())
}

fn pid_of(o: &Options, service: &str) -> anyhow::Result<u32> {
    let path = o.state.join(format!("{service}.pid"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds no pid", path.display()))
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Injects `fault` at the planned moment of the sale and heals it.
async fn inject(ctx: Arc<Ctx>, fault: Fault, started: Instant) -> anyhow::Result<Window> {
    use diesel_async::RunQueryDsl;
    let o = &ctx.options;
    tokio::time::sleep_until((started + o.fault_at).into()).await;
    let injected = started.elapsed();
    let note = match &fault {
        Fault::Kill(service) => {
            let pid = pid_of(o, service)?.to_string();
            run("kill", &["-KILL", pid.as_str()]).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            dev_up(o).await?;
            format!("pid {pid} killed, restarted by `dev up`")
        }
        Fault::Stop(service) => {
            let pid = pid_of(o, service)?.to_string();
            run("kill", &["-STOP", pid.as_str()]).await?;
            tokio::time::sleep(Duration::from_secs(12)).await;
            run("kill", &["-CONT", pid.as_str()]).await?;
            format!("pid {pid} stopped for 12 s")
        }
        Fault::Broker => {
            let node = o.rabbitmq_node.as_str();
            run("rabbitmqctl", &["-n", node, "close_all_connections", "chaos"]).await?;
            run("rabbitmqctl", &["-n", node, "stop_app"]).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let mut attempts = 1;
            while let Err(error) = run("rabbitmqctl", &["-n", node, "start_app"]).await {
                if attempts == 3 {
                    return Err(error.context("the broker did not start again"));
                }
                attempts += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            "connections closed, broker stopped for 3 s".to_string()
        }
        Fault::RedisFlush => {
            let client = redis::Client::open(o.redis.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await?;
            "FLUSHALL".to_string()
        }
        Fault::PgTerminate(service) => {
            let database = format!("{service}{}", o.db_suffix);
            let mut conn = AsyncPgConnection::establish(&format!("{}/postgres", o.postgres)).await?;
            let until = Instant::now() + Duration::from_secs(3);
            let mut terminated = 0;
            while Instant::now() < until {
                let rows: Vec<Count> = diesel::sql_query(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::bigint AS n \
                     FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind::<Text, _>(database.clone())
                .load(&mut conn)
                .await?;
                terminated += rows.as_slice().first().map_or(0, |r| r.n);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            format!("{terminated} connections to {database} terminated over 3 s")
        }
        Fault::CutPayments => {
            ctx.proxy.cut();
            tokio::time::sleep(Duration::from_secs(5)).await;
            ctx.proxy.restore();
            "the services' link to payments cut for 5 s".to_string()
        }
    };
    Ok(Window {
        injected,
        healed: started.elapsed(),
        note,
    })
}

enum HalfRate {
    After(Duration),
    SoldOutFirst,
    Never,
    NoBaseline,
}

impl HalfRate {
    /// The first instant t from the restart on at which the completions within [t, t + 1 s]
    /// reach half the rate of before the fault (from 2 s in to the injection).
    fn measure(done: &[Duration], injected: Duration, healed: Duration, sold_out: bool) -> Self {
        let warm = Duration::from_secs(2);
        let span = injected.saturating_sub(warm);
        let before = done.iter().filter(|d| (warm..=injected).contains(*d)).count();
        if span.is_zero() || before == 0 {
            return Self::NoBaseline;
        }
        let baseline = before as f64 / span.as_secs_f64();
        let need = ((baseline / 2.0).ceil() as usize).max(1);
        let after: Vec<Duration> = done.iter().copied().filter(|d| *d >= healed).collect();
        let second = Duration::from_secs(1);
        // The earliest window is the one whose first completion is the earliest possible.
        for (i, first) in after.iter().enumerate() {
            let Some(last) = after.get(i + need - 1) else {
                break;
            };
            if last.saturating_sub(*first) <= second {
                let at = healed.max(last.saturating_sub(second));
                return Self::After(at.saturating_sub(healed));
            }
        }
        if sold_out { Self::SoldOutFirst } else { Self::Never }
    }

    fn cell(&self) -> String {
        match self {
            Self::After(d) => format!("{} {}", secs(*d), mark(*d <= AIM_HALF_RATE)),
            Self::SoldOutFirst => "— (sold out first)".into(),
            Self::Never => "never ✗".into(),
            Self::NoBaseline => "— (no rate before the fault)".into(),
        }
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

struct Outcome {
    fault: String,
    window: Result<Window, String>,
    checkouts: usize,
    sale_time: Duration,
    sold_out: bool,
    answers: [BTreeMap<String, usize>; 3],
    /// p99 and count of the checkouts started during the fault (to 3 s after the restart).
    during: Option<(Duration, usize)>,
    half_rate: HalfRate,
    /// The longest time without a completed checkout, between the first and the last (or the
    /// end of a sale that did not sell out), and the longest part of such a time after healing.
    stall: Option<(Duration, Duration)>,
    permanent: Vec<String>,
    refused: Vec<String>,
    audit: Audit,
}

impl Outcome {
    fn failed(&self) -> bool {
        self.window.is_err() || !self.permanent.is_empty() || !self.audit.passed()
    }

    fn answers_cell(&self) -> String {
        self.answers
            .iter()
            .map(|by_status| {
                if by_status.is_empty() {
                    return "—".to_string();
                }
                by_status
                    .iter()
                    .map(|(status, n)| format!("{status}×{n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join(" / ")
    }

    fn during_cell(&self) -> String {
        match self.during {
            Some((p99, n)) => format!("{:.2} s ({n} checkouts)", p99.as_secs_f64()),
            None => "— (none)".into(),
        }
    }

    fn stall_cell(&self) -> String {
        match self.stall {
            Some((stall, after)) => format!(
                "{} ({} after healing) {}",
                secs(stall),
                secs(after),
                mark(after <= AIM_STALL)
            ),
            None => "—".into(),
        }
    }

    fn permanent_cell(&self) -> String {
        if self.permanent.is_empty() {
            "0".into()
        } else {
            format!("{} ✗", self.permanent.len())
        }
    }

    fn audit_cell(&self) -> String {
        match &self.window {
            Ok(_) => self.audit.cell(),
            Err(_) => format!("{}; the fault failed ✗", self.audit.cell()),
        }
    }

    fn print(&self) {
        let window = match &self.window {
            Ok(w) => format!(
                "fault at {}, healed at {} ({})",
                secs(w.injected),
                secs(w.healed),
                w.note
            ),
            Err(error) => format!("the fault failed: {error}"),
        };
        println!(
            "{}: {} checkouts in {}{}; {window}; p99 during {}; half rate after {}; longest stall {}; \
             permanent errors on retry {}; audit {}",
            self.fault,
            self.checkouts,
            secs(self.sale_time),
            if self.sold_out { " (sold out)" } else { "" },
            self.during_cell(),
            self.half_rate.cell(),
            self.stall_cell(),
            self.permanent_cell(),
            self.audit_cell(),
        );
        println!("  answers (hold / order / pay): {}", self.answers_cell());
        for error in self.permanent.iter().take(SHOWN) {
            println!("  permanent error on retry: {error}");
        }
        if !self.refused.is_empty() {
            println!(
                "  {} checkouts ended by a refusal at a first try, e.g. {}",
                self.refused.len(),
                self.refused
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        self.audit.print();
    }
}

enum Row {
    Ran(Box<Outcome>),
    Failed { fault: String, error: String },
}

impl Row {
    fn fault(&self) -> &str {
        match self {
            Self::Ran(outcome) => &outcome.fault,
            Self::Failed { fault, .. } => fault,
        }
    }

    fn failed(&self) -> bool {
        match self {
            Self::Ran(outcome) => outcome.failed(),
            Self::Failed { .. } => true,
        }
    }
}

/// What one fault's run identifies: its event, when it began (PostgreSQL's clock), and the
/// dead letters there were before it.
struct RunIds {
    event_id: String,
    since: String,
    dead_before: Vec<(String, u32)>,
}

#[derive(QueryableByName)]
struct Stamp {
    #[diesel(sql_type = Text)]
    now: String,
}

async fn database_now(o: &Options) -> anyhow::Result<String> {
    use diesel_async::RunQueryDsl;
    let mut conn = AsyncPgConnection::establish(&o.database_url("payments")).await?;
    let rows: Vec<Stamp> = diesel::sql_query("SELECT now()::text AS now")
        .load(&mut conn)
        .await?;
    rows.into_iter()
        .next()
        .map(|r| r.now)
        .ok_or_else(|| anyhow::anyhow!("PostgreSQL did not tell the time"))
}

async fn wait_healthy(ctx: &Ctx) -> anyhow::Result<()> {
    let url = format!("{}/v1/health", ctx.options.gateway);
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match ctx.http.get(&url).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => format!(
                "{}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ),
            Err(error) => error.to_string(),
        };
        anyhow::ensure!(
            Instant::now() < until,
            "the platform is not healthy after 60 s: {url}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One fault: a new sale, the fault in the middle of it, the measures and the audit.
async fn run_fault(ctx: &Arc<Ctx>, fault: &Fault) -> anyhow::Result<Outcome> {
    let o = &ctx.options;
    wait_healthy(ctx).await?;
    // Setup over gRPC: a new event, and new buyers (access tokens last 15 minutes).
    let mut identity = IdentityServiceClient::new(grpc(&o.identity).await?);
    let organizer = login(&mut identity, ORGANIZER, &o.password).await?;
    let org = organization_of(&mut identity, &organizer).await?;
    let mut catalog = CatalogServiceClient::new(grpc(&o.catalog).await?)
        .max_encoding_message_size(32 * 1024 * 1024)
        .max_decoding_message_size(32 * 1024 * 1024);
    let (event_id, tier_id) = publish_sale(&mut catalog, &organizer, &org, o.places, PER_CUSTOMER).await?;
    let tag = Uuid::new_v4().simple().to_string();
    let tokens = register_buyers(&identity, &format!("chaos-{tag}"), o.buyers, BUYER_PASSWORD, 8).await?;
    let ids = RunIds {
        event_id: event_id.clone(),
        since: database_now(o).await?,
        dead_before: dead_letters(&o.amqp).await.unwrap_or_default(),
    };
    let checkouts = (o.places / o.tickets).max(1);
    let interval = Duration::try_from_secs_f64(o.sale_seconds / checkouts as f64)?;
    println!(
        "{fault}: event {event_id}, {} places, {} buyers, {} per checkout, a start every {:.0} ms",
        o.places,
        o.buyers,
        o.tickets,
        interval.as_secs_f64() * 1000.0
    );

    let started = Instant::now();
    let sale = Arc::new(Sale {
        http: ctx.http.clone(),
        gateway: o.gateway.clone(),
        event_id,
        tier_id,
        tickets: o.tickets,
        hold_ttl: o.hold_ttl,
        started,
        hard_stop: started + HARD_LIMIT,
        sold_out: AtomicBool::new(false),
        interval,
        next_start: Mutex::new(started),
    });
    let buyers: Vec<_> = tokens
        .into_iter()
        .map(|token| tokio::spawn(buyer(sale.clone(), token)))
        .collect();
    let injection = tokio::spawn(inject(ctx.clone(), fault.clone(), started));
    // Every buyer and the fault's healing are awaited before anything can fail: a fault must
    // never be left in place (a stopped process, a cut link).
    let logs = futures::future::join_all(buyers).await;
    let sale_time = started.elapsed();
    let window = match injection.await {
        Ok(Ok(window)) => Ok(window),
        Ok(Err(error)) => Err(format!("{error:#}")),
        Err(error) => Err(format!("the fault's task failed: {error}")),
    };
    let mut all = BuyerLog::default();
    for log in logs {
        all.merge(log?);
    }
    let sold_out = sale.sold_out.load(Ordering::Relaxed);

    // The audit starts when every hold (and the unpaid order made of it) has timed out.
    let settled = all.last_hold.unwrap_or(started) + Duration::from_secs(o.hold_ttl + 5);
    let wait = settled.saturating_duration_since(Instant::now());
    println!(
        "{fault}: sale over after {}; auditing in {} (every hold timed out)",
        secs(sale_time),
        secs(wait)
    );
    tokio::time::sleep(wait).await;
    let audit = audit(ctx, &ids).await;

    let (injected, healed) = match &window {
        Ok(w) => (w.injected, w.healed),
        Err(_) => (o.fault_at, o.fault_at),
    };
    let mut done: Vec<Duration> = all.checkouts.iter().map(|(_, done)| *done).collect();
    done.sort();
    let during: Vec<Duration> = all
        .checkouts
        .iter()
        .filter(|(start, _)| (injected..=healed + Duration::from_secs(3)).contains(start))
        .map(|(start, done)| done.saturating_sub(*start))
        .collect();
    let during = (!during.is_empty()).then(|| {
        let n = during.len();
        (summarize(during).p99, n)
    });
    // A sale that never sold out stalled from its last checkout to its end.
    let mut edges = done.clone();
    if !sold_out {
        edges.push(sale_time);
    }
    let gaps: Vec<(Duration, Duration)> = edges
        .windows(2)
        .filter_map(|pair| Some((*pair.first()?, *pair.get(1)?)))
        .collect();
    let stall = gaps.iter().map(|(a, b)| b.saturating_sub(*a)).max().map(|raw| {
        let after = gaps
            .iter()
            .map(|(a, b)| b.saturating_sub((*a).max(healed)))
            .max()
            .unwrap_or_default();
        (raw, after)
    });
    Ok(Outcome {
        fault: fault.to_string(),
        checkouts: all.checkouts.len(),
        sale_time,
        sold_out,
        half_rate: HalfRate::measure(&done, injected, healed, sold_out),
        during,
        stall,
        window,
        answers: all.answers,
        permanent: all.permanent,
        refused: all.refused,
        audit,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse()?;
    let proxy = Proxy::start(options.proxy_listen, options.payments).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(3))
        .pool_max_idle_per_host(options.buyers)
        .build()?;
    let ctx = Arc::new(Ctx { options, proxy, http });
    let faults: Vec<String> = ctx.options.faults.iter().map(Fault::to_string).collect();
    println!(
        "chaos{}: {}",
        if ctx.options.short { " (short)" } else { "" },
        faults.join(", ")
    );
    let mut rows = Vec::new();
    for fault in &ctx.options.faults {
        println!();
        let row = match run_fault(&ctx, fault).await {
            Ok(outcome) => {
                outcome.print();
                Row::Ran(Box::new(outcome))
            }
            Err(error) => {
                println!("{fault}: the run failed: {error:#}");
                Row::Failed {
                    fault: fault.to_string(),
                    error: format!("{error:#}"),
                }
            }
        };
        rows.push(row);
    }
    let table = table(&rows);
    println!("\n{table}");
    if let Some(path) = &ctx.options.report {
        std::fs::write(path, report(&ctx.options, &rows, &table))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\nwritten to {}", path.display());
    }
    let failed: Vec<&str> = rows.iter().filter(|r| r.failed()).map(Row::fault).collect();
    anyhow::ensure!(failed.is_empty(), "the chaos suite failed: {}", failed.join(", "));
    Ok(())
}
