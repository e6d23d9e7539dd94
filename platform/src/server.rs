//! One way to serve a service: its tonic service plus `grpc.health.v1` and server reflection (v1
//! and v1alpha) on the gRPC port, `/healthz`, `/readyz` and `/metrics` on the admin port, health
//! driven by probes of the hard dependencies, and a graceful shutdown that drains in-flight calls.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::Context;
use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, sync::watch};
use tonic::{body::Body, server::NamedService, transport::server::TcpIncoming};
use tonic_health::ServingStatus;
use tower::Service;

use crate::config::ServerConfig;

/// A named check of a hard dependency; the service is NOT_SERVING while any fails.
#[derive(Clone)]
pub struct Probe {
    pub name: &'static str,
    check: Arc<dyn Fn() -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>,
}

impl Probe {
    pub fn new<F, Fut>(name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self {
            name,
            check: Arc::new(move || Box::pin(check())),
        }
    }

    /// PostgreSQL answers a query within a second. Each round also reports the pool's size.
    pub fn postgres(pool: crate::db::PgPool) -> Self {
        Self::new("postgres", move || {
            let pool = pool.clone();
            pool_gauges(
                "postgres",
                pool.state().connections,
                pool.state().idle_connections,
            );
            async move { crate::db::ping(&pool, Duration::from_secs(1)).await }
        })
    }

    /// Redis answers PING within a second.
    pub fn redis(cache: crate::cache::Cache) -> Self {
        Self::new("redis", move || {
            let cache = cache.clone();
            let state = cache.pool.state();
            pool_gauges("redis", state.connections, state.idle_connections);
            async move { cache.ping(Duration::from_secs(1)).await }
        })
    }
}

/// Connections open and idle in a pool (sampled with every health probe).
fn pool_gauges(pool: &'static str, connections: u32, idle: u32) {
    metrics::gauge!("pool_connections", "pool" => pool).set(f64::from(connections));
    metrics::gauge!("pool_idle_connections", "pool" => pool).set(f64::from(idle));
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Failing probes and why.
    pub failing: Vec<(String, String)>,
}

/// The process-wide Prometheus recorder (one per process, shared by services started in tests).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Latencies as Prometheus histograms (aggregatable across replicas), in seconds
            // from 1 ms to 10 s.
            PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
        })
        .clone()
}

/// What tests and tools read of a built service before it runs: where it listens, its database.
pub trait Served {
    fn base(&self) -> &Base;

    fn grpc_addr(&self) -> SocketAddr {
        self.base().host.grpc_addr()
    }

    fn admin_addr(&self) -> SocketAddr {
        self.base().host.admin_addr()
    }

    fn pool(&self) -> crate::db::PgPool {
        self.base().pool.clone()
    }
}

/// What a service starts from: its database, migrated (its outbox and inbox too); its peers,
/// found as `discovery` says; and its listeners, bound.
pub struct Base {
    pub pool: crate::db::PgPool,
    pub peers: crate::clients::Peers,
    pub host: Host,
}

impl Base {
    pub async fn start(
        name: &str,
        sections: crate::config::Sections<'_>,
        peers: &crate::config::PeersConfig,
        migrations: diesel_migrations::EmbeddedMigrations,
    ) -> anyhow::Result<Self> {
        let pool = crate::db::connect_and_migrate(sections.database, migrations)
            .await
            .with_context(|| format!("preparing the {name} database"))?;
        let peers = crate::clients::Peers::new(peers.clone()).discovering(sections.discovery);
        let host = Host::bind(sections.server.clone(), sections.discovery.clone()).await?;
        Ok(Self { pool, peers, host })
    }

    /// Serves `service` as [`Host::serve`] does, ready only while its database answers and
    /// every one of `probes` passes.
    pub async fn serve<S>(
        self,
        service: S,
        verifier: crate::auth::TokenVerifier,
        probes: Vec<Probe>,
        background: crate::background::Background,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()>
    where
        S: Service<http::Request<Body>, Error = Infallible> + NamedService + Clone + Send + Sync + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        let probes = std::iter::once(Probe::postgres(self.pool.clone()))
            .chain(probes)
            .collect();
        self.host
            .serve(service, verifier, probes, background, shutdown)
            .await
    }

    /// The outbox relay of `producer`, on this service's database.
    pub fn relay(
        &self,
        messaging: &crate::messaging::MessagingConfig,
        producer: &'static str,
    ) -> crate::messaging::Relay {
        crate::messaging::Relay::new(self.pool.clone(), messaging.clone(), producer)
    }

    /// The consumer `name` (its queue) of `handler`'s events, on this service's database.
    pub fn consumer<H: crate::messaging::Handler>(
        &self,
        messaging: &crate::messaging::MessagingConfig,
        name: &str,
        handler: H,
    ) -> crate::messaging::Consumer<H> {
        crate::messaging::Consumer::new(self.pool.clone(), messaging.clone(), name, handler)
    }
}

/// How long each background task may take to stop (the relay publishing what is left, a
/// sweeper finishing its round) before it is aborted.
const TASK_STOP_GRACE: Duration = Duration::from_secs(5);

/// Listeners bound before serving, so a test can bind port 0 and learn the address.
pub struct Host {
    config: ServerConfig,
    discovery: crate::discovery::DiscoveryConfig,
    grpc: TcpListener,
    admin: TcpListener,
}

impl Host {
    /// Binds the listeners; with Consul `discovery`, the instance registers when it serves.
    pub async fn bind(
        config: ServerConfig,
        discovery: crate::discovery::DiscoveryConfig,
    ) -> anyhow::Result<Self> {
        let grpc = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding gRPC address {}", config.grpc_addr))?;
        let admin = TcpListener::bind(config.admin_addr)
            .await
            .with_context(|| format!("binding admin address {}", config.admin_addr))?;
        Ok(Self {
            config,
            discovery,
            grpc,
            admin,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.config.grpc_addr)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin_addr)
    }

    /// Serves `service` and runs its `background` tasks until `shutdown` completes; then drains
    /// the calls in flight for up to `shutdown_grace` and stops the tasks in their order. Every
    /// call passes the call graph's guard ([`crate::service_auth`]), whose service tokens
    /// `verifier` checks.
    pub async fn serve<S>(
        self,
        service: S,
        verifier: crate::auth::TokenVerifier,
        probes: Vec<Probe>,
        background: crate::background::Background,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()>
    where
        S: Service<http::Request<Body>, Error = Infallible> + NamedService + Clone + Send + Sync + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        let metrics = metrics_handle();
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let reflection_v1 = reflection(S::NAME).build_v1()?;
        let reflection_v1alpha = reflection(S::NAME).build_v1alpha()?;

        // Until the first probe round passes, health answers NOT_SERVING (not "unknown service").
        health_reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health_reporter
            .set_service_status(S::NAME, ServingStatus::NotServing)
            .await;
        tracing::info!(service = S::NAME, tasks = ?background.names(), "starting background tasks");
        let tasks = background.start();
        let (ready_tx, ready_rx) = watch::channel(Readiness::default());
        let (stop_tx, mut stop_rx) = watch::channel(false);

        let probe_task = tokio::spawn(run_probes(
            probes,
            self.config.health_interval,
            health_reporter.clone(),
            S::NAME,
            ready_tx,
            stop_rx.clone(),
        ));

        let grpc_addr = self.grpc.local_addr()?;
        let admin_addr = self.admin.local_addr()?;
        let consul = register(&self.discovery, S::NAME, grpc_addr).await?;
        let admin_app = Router::new()
            .route("/healthz", get(|| async { (StatusCode::OK, "ok") }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(move || std::future::ready(metrics.render())))
            .with_state(ready_rx);
        let mut admin_stop = stop_rx.clone();
        let admin_task = tokio::spawn(async move {
            axum::serve(self.admin, admin_app)
                .with_graceful_shutdown(async move {
                    let _ = admin_stop.wait_for(|stop| *stop).await;
                })
                .await
        });

        tracing::info!(service = S::NAME, %grpc_addr, %admin_addr, "serving");
        let incoming = TcpIncoming::from(self.grpc).with_nodelay(Some(true));
        let mut grpc_stop = stop_rx.clone();
        let me = crate::service_auth::service_of(S::NAME)
            .with_context(|| format!("{} is not a ticketing service", S::NAME))?;
        // The layers, outermost first:
        // - metrics and the span see every call, refused ones included (a shed call or a
        //   refused credential is counted and traced like any other);
        // - the deadline is in scope before anything waits, so every peer call made on the
        //   call's behalf carries the time left;
        // - admission sheds past the concurrency limit (health and reflection excepted) before
        //   any work is done, even the verification of a token;
        // - the call guard checks the caller against the call graph last, just before the
        //   handler, so nothing it refuses reaches service code.
        let grpc = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .layer(crate::rpc_metrics::RpcMetricsLayer::server())
            .layer(crate::tracing_layer::TraceLayer::server())
            .layer(crate::deadline::DeadlineLayer)
            .layer(crate::admission::AdmissionLayer::new(
                self.config.concurrency_limit,
            ))
            .layer(crate::service_auth::CallGuardLayer::new(me, verifier))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = grpc_stop.wait_for(|stop| *stop).await;
            });
        let mut grpc_task = tokio::spawn(grpc);

        tokio::select! {
            () = shutdown => {}
            result = &mut grpc_task => {
                let _ = stop_tx.send(true);
                return result.context("gRPC server task failed")?.context("gRPC server failed");
            }
        }

        // Tell load balancers first, then stop accepting and let in-flight calls finish.
        tracing::info!(service = S::NAME, "shutting down");
        if let Some((agent, id)) = &consul {
            match agent.deregister(id).await {
                Ok(()) => tracing::info!(%id, "deregistered from Consul"),
                Err(error) => {
                    tracing::warn!(%id, %error, "Consul deregistration failed; its check will expire the instance")
                }
            }
        }
        health_reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health_reporter
            .set_service_status(S::NAME, ServingStatus::NotServing)
            .await;
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(self.config.shutdown_grace, &mut grpc_task).await;
        if drained.is_err() {
            tracing::warn!(grace = ?self.config.shutdown_grace, "in-flight calls outlived the grace period");
            grpc_task.abort();
        }
        // The calls are done; the tasks stop now, the relay (last) publishing what they wrote.
        tasks.stop(TASK_STOP_GRACE).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
        probe_task.abort();
        let _ = stop_rx.changed().await;
        tracing::info!(service = S::NAME, "stopped");
        Ok(())
    }
}

/// Registers the instance with the local Consul agent when discovery says Consul: the agent then
/// checks its gRPC health. A few tries, since agent and service often start together.
async fn register(
    discovery: &crate::discovery::DiscoveryConfig,
    service: &str,
    grpc_addr: SocketAddr,
) -> anyhow::Result<Option<(crate::discovery::Agent, String)>> {
    use crate::discovery::{Agent, DiscoveryMode, Registration};
    if discovery.mode != DiscoveryMode::Consul {
        return Ok(None);
    }
    let consul = &discovery.consul;
    let registration = Registration::new(consul, service, grpc_addr, env!("CARGO_PKG_VERSION"))?;
    let agent = Agent::new(consul);
    let mut pause = Duration::from_millis(200);
    for attempt in 1..=5 {
        match agent.register(&registration).await {
            Ok(()) => {
                tracing::info!(id = %registration.id, "registered with Consul");
                return Ok(Some((agent, registration.id)));
            }
            Err(error) if attempt < 5 => {
                tracing::warn!(%error, attempt, "Consul registration failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(error) => return Err(error.context("registering with Consul")),
        }
    }
    Ok(None)
}

/// Reflection that advertises only what this server serves: the descriptor set holds every
/// service of the platform, and grpcurl would otherwise list them all on every port.
fn reflection(service: &'static str) -> tonic_reflection::server::Builder<'static> {
    use tonic_reflection::pb::{v1, v1alpha};
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ticketing_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(v1alpha::FILE_DESCRIPTOR_SET)
        .include_reflection_service(false)
        .with_service_name(service)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
}

async fn readyz(State(ready): State<watch::Receiver<Readiness>>) -> impl IntoResponse {
    let readiness = ready.borrow().clone();
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(readiness))
}

async fn run_probes(
    probes: Vec<Probe>,
    interval: Duration,
    reporter: tonic_health::server::HealthReporter,
    service_name: &'static str,
    ready_tx: watch::Sender<Readiness>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: Option<bool> = None;
    loop {
        let mut failing = Vec::new();
        for probe in &probes {
            if let Err(error) = (probe.check)().await {
                failing.push((probe.name.to_string(), format!("{error:#}")));
            }
        }
        let ready = failing.is_empty();
        if last != Some(ready) {
            if ready {
                tracing::info!(service = service_name, "dependencies healthy: SERVING");
            } else {
                tracing::warn!(service = service_name, ?failing, "dependency down: NOT_SERVING");
            }
        }
        last = Some(ready);
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        reporter.set_service_status(service_name, status).await;
        let _ = ready_tx.send(Readiness { ready, failing });
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Runs a write of several steps (Redis and PostgreSQL, or calls to other services) as a task
/// of its own, which the request awaits: a caller that hangs up, or a deadline that passes,
/// drops the request but never stops the write half-way. The task keeps the request's span, so
/// what it does stays in the request's trace.
pub async fn to_the_end<T: Send + 'static>(
    write: impl Future<Output = crate::ApiResult<T>> + Send + 'static,
) -> crate::ApiResult<T> {
    use tracing::Instrument;
    tokio::spawn(write.instrument(tracing::Span::current()))
        .await
        .map_err(|e| crate::ApiError::internal(format!("a write task failed: {e}")))?
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
