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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Hold,
    Order,
    Pay,
}

impl Step {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Self::Hold => "hold",
            Self::Order => "order",
            Self::Pay => "pay",
        }
    }
}

struct Sale {
    http: reqwest::Client,
    gateway: String,
    event_id: String,
    tier_id: String,
    tickets: usize,
    hold_ttl: u64,
    started: Instant,
    hard_stop: Instant,
    sold_out: AtomicBool,
    /// Between two checkout starts, whoever starts them: the sale's pace.
    interval: Duration,
    next_start: Mutex<Instant>,
}

impl Sale {
    fn over(&self) -> bool {
        self.sold_out.load(Ordering::Relaxed) || Instant::now() >= self.hard_stop
    }

    /// Waits for the next free start slot; false once the sale is over. A slot missed while
    /// every buyer was stuck is not made up for later, so recovery is not a burst of starts.
    async fn turn(&self) -> bool {
        let slot = {
            let mut next = self.next_start.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
        !self.over()
    }

    fn since_start(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.started)
    }
}

#[derive(Default)]
struct BuyerLog {
    /// Per step, answers by HTTP status (`err`: none, the connection failed).
    answers: [BTreeMap<String, usize>; 3],
    /// Each completed checkout: when it started and when it was paid, from the sale's start.
    checkouts: Vec<(Duration, Duration)>,
    /// Final refusals of a request that had been sent before.
    permanent: Vec<String>,
    /// Final refusals at a first try (the buyer started a new checkout).
    refused: Vec<String>,
    last_hold: Option<Instant>,
}

impl BuyerLog {
    fn answer(&mut self, step: Step, what: &str) {
        if let Some(answers) = self.answers.get_mut(step.index()) {
            *answers.entry(what.to_string()).or_default() += 1;
        }
    }

    fn merge(&mut self, other: BuyerLog) {
        for (mine, theirs) in self.answers.iter_mut().zip(other.answers) {
            for (status, n) in theirs {
                *mine.entry(status).or_default() += n;
            }
        }
        self.checkouts.extend(other.checkouts);
        self.permanent.extend(other.permanent);
        self.refused.extend(other.refused);
        self.last_hold = self.last_hold.max(other.last_hold);
    }
}

struct Call {
    step: Step,
    path: String,
    body: Value,
    idempotency_key: Option<String>,
}

enum Reply {
    Done(Value),
    SoldOut,
    OverLimit,
    Refused,
    TimeUp,
}

/// The `google.rpc.ErrorInfo` reason of an error body, if it has one.
fn reason(body: &Value) -> Option<&str> {
    body.get("details")?
        .as_array()?
        .iter()
        .find_map(|detail| detail.get("reason")?.as_str())
}

fn message(body: &Value) -> &str {
    body.get("message").and_then(Value::as_str).unwrap_or_default()
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// Sends `call` as a real client would: the same request again (same idempotency key) after a
/// retryable answer or a failed connection, until a final answer or the sale's hard stop.
async fn send(sale: &Sale, me: &mut BuyerLog, token: &str, call: &Call) -> Reply {
    let url = format!("{}{}", sale.gateway, call.path);
    let mut sent_before = false;
    loop {
        if Instant::now() >= sale.hard_stop {
            return Reply::TimeUp;
        }
        let mut request = sale.http.post(&url).bearer_auth(token).json(&call.body);
        if let Some(key) = &call.idempotency_key {
            request = request.header("Idempotency-Key", key.as_str());
        }
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let wait = retry_after(response.headers());
                response.bytes().await.ok().map(|bytes| (status, wait, bytes))
            }
            Err(_) => None,
        };
        if call.step == Step::Hold {
            // Whatever came back, a hold may have been taken now: the audit waits for it.
            me.last_hold = Some(Instant::now());
        }
        let wait = match answer {
            None => {
                me.answer(call.step, "err");
                DEFAULT_RETRY
            }
            Some((status, wait, bytes)) => {
                me.answer(call.step, status.as_str());
                let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                if status.is_success() {
                    return Reply::Done(body);
                }
                if RETRYABLE.contains(&status.as_u16()) {
                    wait.unwrap_or(DEFAULT_RETRY).min(MAX_RETRY)
                } else {
                    if call.step == Step::Hold {
                        if reason(&body) == Some("NOT_ENOUGH_AVAILABLE")
                            || message(&body).contains("places are available")
                        {
                            return Reply::SoldOut;
                        }
                        if reason(&body) == Some("PER_CUSTOMER_LIMIT")
                            || message(&body).contains("per customer")
                        {
                            return Reply::OverLimit;
                        }
                    }
                    let what = format!(
                        "{} {}: {} {}",
                        call.step.name(),
                        call.path,
                        status.as_u16(),
                        message(&body)
                    );
                    if sent_before {
                        me.permanent.push(what);
                    } else {
                        me.refused.push(what);
                    }
                    return Reply::Refused;
                }
            }
        };
        sent_before = true;
        tokio::time::sleep(wait).await;
    }
}

/// One buyer: hold, order, pay, again and again, until the sale is sold out or over.
async fn buyer(sale: Arc<Sale>, token: String) -> BuyerLog {
    let mut me = BuyerLog::default();
    while sale.turn().await {
        let started = Instant::now();
        let hold = Call {
            step: Step::Hold,
            path: format!("/v1/events/{}/holds:quantity", sale.event_id),
            body: json!({
                "tierId": sale.tier_id,
                "quantity": sale.tickets,
                "ttl": format!("{}s", sale.hold_ttl),
            }),
            idempotency_key: None,
        };
        let hold = match send(&sale, &mut me, &token, &hold).await {
            Reply::Done(hold) => hold,
            Reply::SoldOut => {
                sale.sold_out.store(true, Ordering::Relaxed);
                break;
            }
            Reply::OverLimit | Reply::TimeUp => break,
            Reply::Refused => continue,
        };
        let Some(hold_id) = hold.get("id").and_then(Value::as_str) else {
            me.refused.push(format!("hold: an answer without an id: {hold}"));
            continue;
        };
        let key = format!("chaos-order-{hold_id}");
        let order = Call {
            step: Step::Order,
            path: "/v1/orders".into(),
            body: json!({ "holdId": hold_id, "idempotencyKey": key }),
            idempotency_key: Some(key),
        };
        let order = match send(&sale, &mut me, &token, &order).await {
            Reply::Done(order) => order,
            Reply::TimeUp => break,
            _ => continue,
        };
        let Some(order_id) = order.get("id").and_then(Value::as_str) else {
            me.refused
                .push(format!("order: an answer without an id: {order}"));
            continue;
        };
        let key = format!("chaos-pay-{order_id}");
        let pay = Call {
            step: Step::Pay,
            path: format!("/v1/orders/{order_id}:pay"),
            body: json!({
                "card": {
                    "number": "4242424242424242",
                    "expMonth": 12,
                    "expYear": 2099,
                    "cvc": "123",
                    "holderName": "Chaos Buyer",
                },
                "idempotencyKey": key,
            }),
            idempotency_key: Some(key),
        };
        let paid = match send(&sale, &mut me, &token, &pay).await {
            Reply::Done(paid) => paid,
            Reply::TimeUp => break,
            _ => continue,
        };
        let status = paid.get("status").and_then(Value::as_str).unwrap_or_default();
        if status != "ORDER_STATUS_PAID" {
            me.refused
                .push(format!("pay {order_id}: 200, but the order is {status}"));
            continue;
        }
        me.checkouts
            .push((sale.since_start(started), sale.since_start(Instant::now())));
    }
    me
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

#[derive(QueryableByName)]
struct Confirmation {
    #[diesel(sql_type = Text)]
    order_id: String,
    #[diesel(sql_type = Text)]
    status: String,
}

/// Notify's confirmation mails: order id (the key is `order_confirmed:<order>:<address>`) to
/// the mail's status.
async fn confirmations(o: &Options) -> anyhow::Result<HashMap<String, String>> {
    use diesel_async::RunQueryDsl;
    let mut conn = AsyncPgConnection::establish(&o.database_url("notify")).await?;
    let rows: Vec<Confirmation> = diesel::sql_query(
        "SELECT split_part(dedupe_key, ':', 2) AS order_id, status FROM mails WHERE kind = 'order_confirmed'",
    )
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.order_id, r.status)).collect())
}

async fn dead_letters(amqp: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let connection = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default())
        .await
        .context("connecting to the broker")?;
    let mut counts = Vec::new();
    for consumer in CONSUMERS {
        let queue = format!("{consumer}.dead");
        // A passive declare of a missing queue closes its channel: one channel per queue.
        let channel = connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        // A queue never declared (its consumer never connected) holds nothing.
        counts.push((queue, declared.map(|q| q.message_count()).unwrap_or(0)));
        let _ = channel.close(200, "done".into()).await;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(counts)
}

#[derive(QueryableByName)]
struct LedgerRow {
    #[diesel(sql_type = Text)]
    seat_id: String,
    #[diesel(sql_type = Text)]
    tier_id: String,
    #[diesel(sql_type = Text)]
    order_id: String,
}

#[derive(QueryableByName)]
struct SeatsOfTier {
    #[diesel(sql_type = Text)]
    tier_id: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct QuotaRow {
    #[diesel(sql_type = Text)]
    tier_id: String,
    #[diesel(sql_type = BigInt)]
    capacity: i64,
    #[diesel(sql_type = BigInt)]
    sold: i64,
}

#[derive(QueryableByName)]
struct OrderRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = Text)]
    currency: String,
    #[diesel(sql_type = Nullable<Text>)]
    payment_id: Option<String>,
    #[diesel(sql_type = Bool)]
    overdue: bool,
    #[diesel(sql_type = Text)]
    deadline: String,
}

#[derive(QueryableByName)]
struct LineRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    order_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    seat_id: Option<String>,
    #[diesel(sql_type = Bool)]
    refunded: bool,
}

#[derive(QueryableByName)]
struct TicketRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    line_id: String,
    #[diesel(sql_type = Text)]
    status: String,
}

#[derive(QueryableByName)]
struct PaymentRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    order_id: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    amount: i64,
    #[diesel(sql_type = Text)]
    currency: String,
}

impl PaymentRow {
    fn describe(&self) -> String {
        format!(
            "payment {} ({} {} {}) of order {}",
            self.id, self.status, self.amount, self.currency, self.order_id
        )
    }
}

#[derive(QueryableByName)]
struct Present {
    #[diesel(sql_type = Bool)]
    present: bool,
}

#[derive(QueryableByName)]
struct Waiting {
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A tier as `GET /v1/events/{id}/availability` shows it to buyers.
struct Shown {
    tier_id: String,
    total: i64,
    free: i64,
    held: i64,
    sold: i64,
}

/// Everything the audit reads, at one moment.
struct Snapshot {
    ledger: Vec<LedgerRow>,
    seats: Vec<SeatsOfTier>,
    quotas: Vec<QuotaRow>,
    orders: Vec<OrderRow>,
    lines: Vec<LineRow>,
    tickets: Vec<TicketRow>,
    /// The payments made since the run began.
    payments: Vec<PaymentRow>,
    /// Orders of other sales that some of those payments are for.
    other_sales: HashSet<String>,
    availability: Result<Vec<Shown>, String>,
    /// Per database, events still in its outbox.
    outbox: Vec<(String, Vec<Waiting>)>,
    dead_letters: Result<Vec<(String, u32)>, String>,
    /// Order id to the status of its confirmation mail (notify's queue).
    told: Result<HashMap<String, String>, String>,
}

async fn availability(ctx: &Ctx, event_id: &str) -> Result<Vec<Shown>, String> {
    let url = format!(
        "{}/v1/events/{event_id}/availability?countsOnly=true",
        ctx.options.gateway
    );
    let response = ctx
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {url}: {status} {body}"));
    }
    let tiers = body
        .get("tiers")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("GET {url}: no tiers in {body}"))?;
    Ok(tiers
        .iter()
        .map(|tier| {
            let count = |field: &str| tier.get(field).and_then(Value::as_i64).unwrap_or(0);
            Shown {
                tier_id: tier
                    .get("tierId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                total: count("total"),
                free: count("free"),
                held: count("held"),
                sold: count("sold"),
            }
        })
        .collect())
}

async fn snapshot(ctx: &Ctx, ids: &RunIds) -> anyhow::Result<Snapshot> {
    use diesel_async::RunQueryDsl;
    let o = &ctx.options;
    let event = ids.event_id.clone();
    let mut inventory = AsyncPgConnection::establish(&o.database_url("inventory")).await?;
    let ledger: Vec<LedgerRow> = diesel::sql_query(
        "SELECT seat_id, tier_id, order_id::text AS order_id FROM sold_seats WHERE event_id = $1::uuid",
    )
    .bind::<Text, _>(event.clone())
    .load(&mut inventory)
    .await?;
    let seats: Vec<SeatsOfTier> = diesel::sql_query(
        "SELECT tier_id, count(*)::bigint AS n FROM inventory_seats WHERE event_id = $1::uuid \
         GROUP BY tier_id",
    )
    .bind::<Text, _>(event.clone())
    .load(&mut inventory)
    .await?;
    let quotas: Vec<QuotaRow> = diesel::sql_query(
        "SELECT tier_id, capacity::bigint AS capacity, sold::bigint AS sold FROM inventory_quotas \
         WHERE event_id = $1::uuid",
    )
    .bind::<Text, _>(event.clone())
    .load(&mut inventory)
    .await?;

    let mut orders_db = AsyncPgConnection::establish(&o.database_url("orders")).await?;
    let orders: Vec<OrderRow> = diesel::sql_query(
        "SELECT id::text AS id, status, total, currency, payment_id::text AS payment_id, \
         payment_deadline < now() AS overdue, payment_deadline::text AS deadline \
         FROM orders WHERE event_id = $1::uuid ORDER BY created_at",
    )
    .bind::<Text, _>(event.clone())
    .load(&mut orders_db)
    .await?;
    let lines: Vec<LineRow> = diesel::sql_query(
        "SELECT l.id::text AS id, l.order_id::text AS order_id, l.seat_id, l.refunded \
         FROM order_lines l JOIN orders o ON o.id = l.order_id WHERE o.event_id = $1::uuid",
    )
    .bind::<Text, _>(event.clone())
    .load(&mut orders_db)
    .await?;
    let tickets: Vec<TicketRow> = diesel::sql_query(
        "SELECT id::text AS id, line_id::text AS line_id, status FROM tickets WHERE event_id = $1::uuid",
    )
    .bind::<Text, _>(event.clone())
    .load(&mut orders_db)
    .await?;

    let mut payments_db = AsyncPgConnection::establish(&o.database_url("payments")).await?;
    let payments: Vec<PaymentRow> = diesel::sql_query(
        "SELECT id::text AS id, order_id::text AS order_id, status, amount, currency FROM payments \
         WHERE created_at >= $1::timestamptz ORDER BY created_at",
    )
    .bind::<Text, _>(ids.since.clone())
    .load(&mut payments_db)
    .await?;
    let ours: HashSet<&str> = orders.iter().map(|order| order.id.as_str()).collect();
    let mut other_sales = HashSet::new();
    for payment in &payments {
        if ours.contains(payment.order_id.as_str()) || other_sales.contains(&payment.order_id) {
            continue;
        }
        let found: Vec<Count> =
            diesel::sql_query("SELECT count(*)::bigint AS n FROM orders WHERE id = $1::uuid")
                .bind::<Text, _>(payment.order_id.clone())
                .load(&mut orders_db)
                .await?;
        if found.as_slice().first().is_some_and(|c| c.n > 0) {
            other_sales.insert(payment.order_id.clone());
        }
    }

    let mut outbox = Vec::new();
    for service in DATABASES {
        let mut conn = AsyncPgConnection::establish(&o.database_url(service)).await?;
        let present: Vec<Present> = diesel::sql_query("SELECT to_regclass('outbox') IS NOT NULL AS present")
            .load(&mut conn)
            .await?;
        if !present.as_slice().first().is_some_and(|p| p.present) {
            continue;
        }
        let waiting: Vec<Waiting> = diesel::sql_query(
            "SELECT event_type, count(*)::bigint AS n FROM outbox GROUP BY event_type ORDER BY event_type",
        )
        .load(&mut conn)
        .await?;
        if !waiting.is_empty() {
            outbox.push((format!("{service}{}", o.db_suffix), waiting));
        }
    }

    Ok(Snapshot {
        availability: availability(ctx, &event).await,
        dead_letters: dead_letters(&o.amqp).await.map_err(|e| format!("{e:#}")),
        told: confirmations(o).await.map_err(|e| format!("{e:#}")),
        ledger,
        seats,
        quotas,
        orders,
        lines,
        tickets,
        payments,
        other_sales,
        outbox,
    })
}

/// What breaks an invariant: at any moment (safety), or still at the last look (eventual).
#[derive(Default)]
struct Found {
    safety: Vec<String>,
    eventual: Vec<String>,
}

fn is_paid(status: &str) -> bool {
    matches!(status, "paid" | "partially_refunded")
}

fn status_of<'a>(orders: &HashMap<&str, &'a OrderRow>, id: &str) -> &'a str {
    orders
        .get(id)
        .map_or("unknown to orders", |order| order.status.as_str())
}

/// The invariants, in the order of [`CHECKS`].
fn check(s: &Snapshot, dead_before: &[(String, u32)]) -> Vec<Found> {
    let orders: HashMap<&str, &OrderRow> = s.orders.iter().map(|o| (o.id.as_str(), o)).collect();
    let mut ledger_by_seat: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut sold_by_tier: BTreeMap<&str, i64> = BTreeMap::new();
    let mut sold_by_order: HashMap<&str, usize> = HashMap::new();
    for row in &s.ledger {
        ledger_by_seat
            .entry(row.seat_id.as_str())
            .or_default()
            .push(row.order_id.as_str());
        *sold_by_tier.entry(row.tier_id.as_str()).or_default() += 1;
        *sold_by_order.entry(row.order_id.as_str()).or_default() += 1;
    }
    // The seats of paid orders' lines that were not refunded: seat -> orders.
    let mut paid_by_seat: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut lines_by_order: HashMap<&str, Vec<&LineRow>> = HashMap::new();
    for line in &s.lines {
        lines_by_order
            .entry(line.order_id.as_str())
            .or_default()
            .push(line);
        let paid = orders
            .get(line.order_id.as_str())
            .is_some_and(|o| is_paid(&o.status));
        if let Some(seat) = line.seat_id.as_deref()
            && paid
            && !line.refunded
        {
            paid_by_seat.entry(seat).or_default().push(line.order_id.as_str());
        }
    }
    let mut tickets_by_line: HashMap<&str, Vec<&TicketRow>> = HashMap::new();
    for ticket in &s.tickets {
        tickets_by_line
            .entry(ticket.line_id.as_str())
            .or_default()
            .push(ticket);
    }
    let mut payments_by_order: HashMap<&str, Vec<&PaymentRow>> = HashMap::new();
    for payment in &s.payments {
        payments_by_order
            .entry(payment.order_id.as_str())
            .or_default()
            .push(payment);
    }

    // 1. Sold once.
    let mut sold_once = Found::default();
    for (seat, owners) in &ledger_by_seat {
        if owners.len() > 1 {
            sold_once.safety.push(format!(
                "seat {seat} is in the ledger {} times: orders {}",
                owners.len(),
                owners.join(", ")
            ));
        }
    }
    for (seat, owners) in &paid_by_seat {
        if owners.len() > 1 {
            let shown: Vec<String> = owners
                .iter()
                .map(|id| format!("{id} ({})", status_of(&orders, id)))
                .collect();
            sold_once.safety.push(format!(
                "seat {seat} is in {} paid orders: {}",
                owners.len(),
                shown.join(", ")
            ));
        }
        let ledger = ledger_by_seat.get(seat).map(Vec::as_slice).unwrap_or_default();
        for order in owners {
            if !ledger.contains(order) {
                let holder = if ledger.is_empty() {
                    "nobody".to_string()
                } else {
                    ledger.join(", ")
                };
                sold_once.eventual.push(format!(
                    "order {order} ({}) has seat {seat}, which the ledger gives to {holder}",
                    status_of(&orders, order)
                ));
            }
        }
    }
    for row in &s.ledger {
        let paid_line = paid_by_seat
            .get(row.seat_id.as_str())
            .is_some_and(|owners| owners.contains(&row.order_id.as_str()));
        if !paid_line {
            sold_once.eventual.push(format!(
                "seat {} is sold in the ledger to order {} ({}), which has no paid line for it",
                row.seat_id,
                row.order_id,
                status_of(&orders, &row.order_id)
            ));
        }
    }

    // 2. Not oversold.
    let mut oversold = Found::default();
    let capacity: HashMap<&str, i64> = s.seats.iter().map(|t| (t.tier_id.as_str(), t.n)).collect();
    for (tier, sold) in &sold_by_tier {
        let seats = capacity.get(tier).copied().unwrap_or(0);
        if *sold > seats {
            oversold
                .safety
                .push(format!("tier {tier}: {sold} seats sold of {seats}"));
        }
    }
    for quota in &s.quotas {
        if quota.sold > quota.capacity {
            oversold.safety.push(format!(
                "tier {}: {} places sold of a quota of {}",
                quota.tier_id, quota.sold, quota.capacity
            ));
        }
    }

    // 3. Paid orders whole: a valid ticket per line, one succeeded payment of the total.
    let mut whole = Found::default();
    for order in s.orders.iter().filter(|o| o.status == "paid") {
        let lines = lines_by_order
            .get(order.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        if lines.is_empty() {
            whole
                .eventual
                .push(format!("order {} is paid and has no lines", order.id));
        }
        for line in lines.iter().filter(|l| !l.refunded) {
            let tickets = tickets_by_line
                .get(line.id.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let valid = tickets
                .iter()
                .filter(|t| matches!(t.status.as_str(), "valid" | "checked_in"))
                .count();
            if tickets.len() != 1 || valid != 1 {
                let shown: Vec<String> = tickets.iter().map(|t| format!("{} {}", t.id, t.status)).collect();
                whole.eventual.push(format!(
                    "order {} (paid) line {}: tickets [{}]",
                    order.id,
                    line.id,
                    shown.join(", ")
                ));
            }
        }
        let succeeded: Vec<&PaymentRow> = payments_by_order
            .get(order.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(|p| p.status == "succeeded")
            .collect();
        match succeeded.as_slice() {
            [payment] if payment.amount == order.total && payment.currency == order.currency => {}
            others => {
                let shown: Vec<String> = others.iter().map(|p| p.describe()).collect();
                whole.eventual.push(format!(
                    "order {} (paid, total {} {}) has {} succeeded payment(s): [{}]",
                    order.id,
                    order.total,
                    order.currency,
                    others.len(),
                    shown.join("; ")
                ));
            }
        }
    }

    // 4. No charge without the paid order it paid.
    let mut charges = Found::default();
    for payment in &s.payments {
        match payment.status.as_str() {
            "succeeded" | "partially_refunded" => match orders.get(payment.order_id.as_str()) {
                Some(order) => {
                    if order.payment_id.as_deref() != Some(payment.id.as_str()) || !is_paid(&order.status) {
                        charges.eventual.push(format!(
                            "{}: the order is {}, paid by {}",
                            payment.describe(),
                            order.status,
                            order.payment_id.as_deref().unwrap_or("no payment")
                        ));
                    }
                }
                None if s.other_sales.contains(&payment.order_id) => {}
                None => charges
                    .eventual
                    .push(format!("{}: an order orders does not know", payment.describe())),
            },
            "processing" => charges.eventual.push(format!(
                "{}: still processing, its outcome unknown",
                payment.describe()
            )),
            _ => {}
        }
    }

    // 5. Unpaid orders within their deadline, or closed with their places back on sale.
    let mut unpaid = Found::default();
    for order in &s.orders {
        match order.status.as_str() {
            "pending_payment" if order.overdue => unpaid.eventual.push(format!(
                "order {} is still pending_payment; its deadline {} has passed",
                order.id, order.deadline
            )),
            "expired" | "cancelled" => {
                if let Some(n) = sold_by_order.get(order.id.as_str()) {
                    unpaid.eventual.push(format!(
                        "order {} is {} and still has {n} places in the ledger",
                        order.id, order.status
                    ));
                }
            }
            _ => {}
        }
    }

    // 6. What buyers see is the ledger, and nothing is held.
    let mut visible = Found::default();
    match &s.availability {
        Err(error) => visible.eventual.push(format!("availability: {error}")),
        Ok(tiers) => {
            for tier in tiers {
                let ledger = sold_by_tier.get(tier.tier_id.as_str()).copied().unwrap_or(0);
                if tier.sold != ledger || tier.held != 0 {
                    visible.eventual.push(format!(
                        "tier {}: buyers see {} sold, {} held, {} free of {}; the ledger has {ledger} sold",
                        tier.tier_id, tier.sold, tier.held, tier.free, tier.total
                    ));
                }
            }
            for (tier, sold) in &sold_by_tier {
                if !tiers.iter().any(|t| t.tier_id == *tier) {
                    visible.eventual.push(format!(
                        "tier {tier}: {sold} sold in the ledger, missing from what buyers see"
                    ));
                }
            }
        }
    }

    // 7. Outboxes drained.
    let mut drained = Found::default();
    for (database, waiting) in &s.outbox {
        let total: i64 = waiting.iter().map(|w| w.n).sum();
        let kinds: Vec<String> = waiting
            .iter()
            .map(|w| format!("{} {}", w.event_type, w.n))
            .collect();
        drained.eventual.push(format!(
            "{database}: {total} events not published ({})",
            kinds.join(", ")
        ));
    }

    // 8. No dead letters.
    let mut dead = Found::default();
    match &s.dead_letters {
        Err(error) => dead.eventual.push(format!("the broker: {error}")),
        Ok(queues) => {
            // Dead letters of an earlier sale in the same run are that sale's finding.
            for (queue, n) in queues {
                let before = dead_before
                    .iter()
                    .find(|(q, _)| q == queue)
                    .map_or(0, |(_, n)| *n);
                if *n > before {
                    dead.eventual
                        .push(format!("{queue}: {n} messages ({before} before this sale)"));
                }
            }
        }
    }

    // 9. Every buyer of a paid order told (a refunded order was paid first).
    let mut told = Found::default();
    match &s.told {
        Err(error) => told.eventual.push(format!("notify's database: {error}")),
        Ok(mails) => {
            for order in &s.orders {
                if !(is_paid(&order.status) || order.status == "refunded") {
                    continue;
                }
                match mails.get(&order.id).map(String::as_str) {
                    Some("sent") => {}
                    Some(status) => told.eventual.push(format!(
                        "order {} ({}): its confirmation is {status}",
                        order.id, order.status
                    )),
                    None => told.eventual.push(format!(
                        "order {} ({}): its buyer has no confirmation",
                        order.id, order.status
                    )),
                }
            }
        }
    }

    vec![
        sold_once, oversold, whole, charges, unpaid, visible, drained, dead, told,
    ]
}

struct Audit {
    /// Per invariant (as [`CHECKS`]), what breaks it.
    violations: Vec<Vec<String>>,
    error: Option<String>,
}

impl Audit {
    fn passed(&self) -> bool {
        self.error.is_none() && self.violations.iter().all(Vec::is_empty)
    }

    fn cell(&self) -> String {
        if self.error.is_some() {
            return "✗ could not audit".into();
        }
        let broken: Vec<String> = self
            .violations
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .map(|(i, _)| (i + 1).to_string())
            .collect();
        if broken.is_empty() {
            format!("✓ {}/{}", CHECKS.len(), CHECKS.len())
        } else {
            format!("✗ broken: {}", broken.join(", "))
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(error) = &self.error {
            lines.push(format!("could not audit: {error}"));
        }
        for ((number, name), violations) in (1..).zip(CHECKS).zip(&self.violations) {
            if violations.is_empty() {
                continue;
            }
            lines.push(format!("{number}. {name}: {} violation(s)", violations.len()));
            for violation in violations.iter().take(SHOWN) {
                lines.push(format!("   - {violation}"));
            }
            if violations.len() > SHOWN {
                lines.push(format!("   - and {} more", violations.len() - SHOWN));
            }
        }
        lines
    }

    fn print(&self) {
        for line in self.lines() {
            println!("  {line}");
        }
    }
}

/// Checks every invariant once the sale has settled. Safety properties count if broken at any
/// look; eventual ones (expiry, events, relays) are looked at again for up to a minute.
async fn audit(ctx: &Ctx, ids: &RunIds) -> Audit {
    let until = Instant::now() + EVENTUAL_WITHIN;
    let mut safety: Vec<BTreeSet<String>> = vec![BTreeSet::new(); CHECKS.len()];
    let mut eventual: Option<Vec<Vec<String>>> = None;
    let mut error = None;
    loop {
        match snapshot(ctx, ids).await {
            Ok(look) => {
                let mut now = Vec::with_capacity(CHECKS.len());
                for (seen, found) in safety.iter_mut().zip(check(&look, &ids.dead_before)) {
                    seen.extend(found.safety);
                    now.push(found.eventual);
                }
                let settled = now.iter().all(Vec::is_empty);
                eventual = Some(now);
                if settled {
                    break;
                }
            }
            Err(e) => error = Some(format!("{e:#}")),
        }
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    match eventual {
        Some(eventual) => Audit {
            violations: safety
                .into_iter()
                .zip(eventual)
                .map(|(safety, eventual)| safety.into_iter().chain(eventual).collect())
                .collect(),
            error: None,
        },
        None => Audit {
            violations: vec![Vec::new(); CHECKS.len()],
            error: Some(error.unwrap_or_else(|| "no look at the databases".into())),
        },
    }
}

fn table(rows: &[Row]) -> String {
    let mut lines = vec![
        "| fault | answers (hold / order / pay) | checkout p99 during fault | restart → half rate \
         | longest stall | permanent errors on retry | audit |"
            .to_string(),
        "| --- | --- | --- | --- | --- | --- | --- |".to_string(),
    ];
    for row in rows {
        lines.push(match row {
            Row::Ran(o) => format!(
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                o.fault,
                o.answers_cell(),
                o.during_cell(),
                o.half_rate.cell(),
                o.stall_cell(),
                o.permanent_cell(),
                o.audit_cell()
            ),
            Row::Failed { fault, error } => {
                // One table cell: no row or column breaks from the error's text.
                let error = error.replace('|', "\\|").replace('\n', " ");
                format!("| `{fault}` | — | — | — | — | — | ✗ the run failed: {error} |")
            }
        });
    }
    lines.join("\n")
}

fn memory_gib() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / (1024.0 * 1024.0))
}

fn report(o: &Options, rows: &[Row], table: &str) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = memory_gib().map_or_else(|| "unknown".to_string(), |gib| format!("{gib:.0} GiB"));
    let date = chrono::Utc::now().format("%Y-%m-%d");
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let (places, buyers, tickets, ttl) = (o.places, o.buyers, o.tickets, o.hold_ttl);
    let seconds = o.sale_seconds;
    let fault_at = o.fault_at.as_secs_f64();
    let eventual = EVENTUAL_WITHIN.as_secs();
    let (half_rate, stall) = (AIM_HALF_RATE.as_secs(), AIM_STALL.as_secs());
    let invariants: Vec<String> = (1..)
        .zip(CHECKS)
        .map(|(number, name)| format!("{number}. {name}"))
        .collect();
    let invariants = invariants.join("\n");
    let mut text = format!(
        "# Chaos suite

For each fault below, a flash sale through the REST gateway with the fault injected in the
middle of it; the platform heals, then every invariant is audited straight from the services'
databases, the broker and the public API.

```sh
./dev chaos          # the full suite; writes this file
./dev chaos --short  # four faults and a smaller sale; the last step of ./dev test
```

The platform is the {build} build started by `./dev up` as an instance of its own (state
`.dev-chaos`, ports +100, databases `*_chaos`) with a private Redis and a private RabbitMQ
node, so no fault touches anything else. Each fault gets a new event and new buyers: here
{places} seats in one tier, {buyers} buyers, {tickets} places per checkout. A checkout holds
the places (`POST /v1/events/{{id}}/holds:quantity`, a {ttl} s hold), orders them
(`POST /v1/orders`, with an idempotency key) and pays (`POST /v1/orders/{{id}}:pay`, a test
card). Checkouts start at a shared pace meant to sell out in about {seconds:.0} s; the fault is
injected {fault_at:.0} s in. Buyers behave like real clients: after a 409, 429, 502, 503, 504
or a failed connection they send the same request again (same idempotency keys) after
`Retry-After` (250 ms without one, at most 5 s); a sold-out answer ends a buyer; any other
refusal ends the checkout, and counts as a permanent error when the request had been sent
before.

Machine: {cores} cores, {memory} of memory, shared with the load generator; run on {date}.

## Results

{table}

## The faults

- `kill:<service>`: SIGKILL, 3 s, then `./dev up` starts it again (the restart is when that
  returns).
- `stop:<service>`: SIGSTOP for 12 s, longer than its callers' deadlines, then SIGCONT.
- `broker`: every connection closed, then the broker stopped for 3 s (`rabbitmqctl stop_app`,
  `start_app`).
- `redis-flush`: `FLUSHALL` on the instance's Redis: every hold and seat map gone.
- `pg-terminate:<service>`: every connection to its database terminated, every 200 ms for 3 s.
- `cut:payments`: the link from the services to payments cut for 5 s (open connections closed,
  new ones refused) by the suite's own proxy.

## The columns

- answers: every HTTP answer buyers got, by status, per step (`err`: no answer, the connection
  failed).
- checkout p99 during fault: of the checkouts started between the injection and 3 s after the
  restart (or the fault's end), from the hold to the payment, retries included.
- restart → half rate: from the restart to the first moment the checkouts completed within one
  second reach half their rate before the fault (from 2 s in to the injection); \"—\" when the
  sale sold out first.
- longest stall: the longest time without a completed checkout, from the first to the last (to
  the end of a sale that did not sell out), and the longest part of such a time after the
  restart (or the fault's end): a freeze of a service the sale needs stalls it for as long as
  the freeze lasts, and the aim is on what is left after it.
- permanent errors on retry: requests sent again after a retryable answer, then refused for
  good.
- audit: the invariants below, checked once every hold and unpaid order has timed out (the hold
  TTL and 5 s after the last hold); what settles eventually (expiry, events, relays) is looked
  at again for up to {eventual} s. ✓ when all hold, else the numbers of those broken.

## The invariants

{invariants}

## Aims

Every audit passes and no retried request is refused for good: either fails the run. The
checkouts are back at half their rate within {half_rate} s of the restart, and no stall lasts
over {stall} s after it: aims, marked ✓ or ✗.
"
    );
    let broken: Vec<&Row> = rows.iter().filter(|r| r.failed()).collect();
    if !broken.is_empty() {
        let mut lines = vec![String::new(), "## What failed".to_string()];
        for row in broken {
            lines.extend([String::new(), format!("`{}`:", row.fault()), String::new()]);
            match row {
                Row::Ran(outcome) => {
                    if let Err(error) = &outcome.window {
                        lines.push(format!("- the fault: {error}"));
                    }
                    for error in outcome.permanent.iter().take(SHOWN) {
                        lines.push(format!("- permanent error on retry: {error}"));
                    }
                    for line in outcome.audit.lines() {
                        lines.push(format!("- {line}"));
                    }
                }
                Row::Failed { error, .. } => lines.push(format!("- the run failed: {error}")),
            }
        }
        lines.push(String::new());
        text.push_str(&lines.join("\n"));
    }
    text
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
