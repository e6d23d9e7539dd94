//! Retries of calls to peers, for the RPCs the protos mark safe to repeat with protobuf's
//! standard `idempotency_level` (`NO_SIDE_EFFECTS` reads, `IDEMPOTENT` writes keyed by an id),
//! and only when the peer was UNAVAILABLE: the call never reached a handler, or the handler said
//! to come back. A budget caps retries at a share of recent calls (plus a floor), so a peer that
//! is down gets a trickle, not a retry storm; and because only the edge-most client should
//! retry, the whole thing is switched off where a mesh (Linkerd) retries instead
//! (`peers.retry.enabled = false`).

use std::{
    collections::HashSet,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tonic::body::Body;
use tower::{
    Layer, Service, ServiceExt,
    retry::budget::{Budget, TpsBudget},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How peers' calls are retried.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetryConfig {
    /// Off where the mesh retries (Linkerd), so retries never multiply.
    pub enabled: bool,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Retries may add this share of the calls of the last 10 s...
    pub budget_ratio: f32,
    /// ...plus this many per second regardless.
    pub min_retries_per_second: u32,
    /// The first back-off in seconds; each retry doubles it, with jitter.
    #[serde(with = "crate::config::duration_secs")]
    pub backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: 3,
            budget_ratio: 0.2,
            min_retries_per_second: 10,
            backoff: Duration::from_millis(25),
        }
    }
}

/// `/package.Service/Method` of every RPC marked NO_SIDE_EFFECTS or IDEMPOTENT.
fn repeatable(path: &str) -> bool {
    static PATHS: OnceLock<HashSet<String>> = OnceLock::new();
    PATHS
        .get_or_init(|| {
            use prost_types::method_options::IdempotencyLevel;
            let set = <prost_types::FileDescriptorSet as prost::Message>::decode(
                ticketing_proto::FILE_DESCRIPTOR_SET,
            )
            .unwrap_or_default();
            let mut paths = HashSet::new();
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        let level = method
                            .options
                            .as_ref()
                            .map(|o| o.idempotency_level())
                            .unwrap_or_default();
                        let unary = !method.client_streaming() && !method.server_streaming();
                        if unary && level != IdempotencyLevel::IdempotencyUnknown {
                            paths.insert(format!(
                                "/{}.{}/{}",
                                file.package(),
                                service.name(),
                                method.name()
                            ));
                        }
                    }
                }
            }
            paths
        })
        .contains(path)
}

#[derive(Clone)]
pub struct RetryLayer {
    config: RetryConfig,
    budget: Arc<TpsBudget>,
}

impl RetryLayer {
    pub fn new(config: RetryConfig) -> Self {
        let budget = Arc::new(TpsBudget::new(
            Duration::from_secs(10),
            config.min_retries_per_second,
            config.budget_ratio,
        ));
        Self { config, budget }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            config: self.config.clone(),
            budget: self.budget.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    config: RetryConfig,
    budget: Arc<TpsBudget>,
}

impl<S> std::fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry").field("config", &self.config).finish()
    }
}

fn unavailable(result: &Result<http::Response<Body>, BoxError>) -> bool {
    match result {
        // Errors are answered trailers-only, so the status is in the headers.
        Ok(response) => response
            .headers()
            .get("grpc-status")
            .is_some_and(|v| v.as_bytes() == b"14"),
        // The transport failed: no handler ran. Timeouts are not retried: the time is spent.
        Err(error) => !error.is::<tonic::TimeoutExpired>(),
    }
}

fn copy(parts: &http::request::Parts, body: &Bytes) -> http::Request<Body> {
    let mut request = http::Request::new(Body::new(http_body_util::Full::new(body.clone())));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

impl<S> Service<http::Request<Body>> for Retry<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The readied service takes the first attempt; a clone is readied for each retry.
        let clone = self.inner.clone();
        let mut first = std::mem::replace(&mut self.inner, clone);
        if !self.config.enabled || !repeatable(request.uri().path()) {
            let future = first.call(request);
            return Box::pin(async move { future.await.map_err(Into::into) });
        }
        let config = self.config.clone();
        let budget = self.budget.clone();
        let mut inner = self.inner.clone();
        Box::pin(async move {
            budget.deposit();
            let (parts, body) = request.into_parts();
            let body = body.collect().await.map_err(Into::<BoxError>::into)?.to_bytes();
            let mut result = first.call(copy(&parts, &body)).await.map_err(Into::into);
            let mut backoff = config.backoff;
            for attempt in 2..=config.max_attempts {
                if !unavailable(&result) {
                    break;
                }
                // Jitter spreads the retries of many callers; never past the call's deadline.
                let pause = backoff.mul_f64(0.5 + rand_fraction());
                let past_deadline =
                    crate::deadline::current().is_some_and(|d| d <= std::time::Instant::now() + pause);
                if past_deadline || !budget.withdraw() {
                    break;
                }
                metrics::counter!("grpc_client_retries_total", "grpc_path" => parts.uri.path().to_string())
                    .increment(1);
                tracing::debug!(path = parts.uri.path(), attempt, "retrying an unavailable peer");
                tokio::time::sleep(pause).await;
                backoff *= 2;
                let ready = inner.ready().await.map_err(Into::into);
                result = match ready {
                    Ok(ready) => ready.call(copy(&parts, &body)).await.map_err(Into::into),
                    Err(error) => Err(error),
                };
            }
            result
        })
    }
}

/// A number in [0, 1) that differs between calls (jitter needs no cryptographic quality).
fn rand_fraction() -> f64 {
    f64::from(uuid::Uuid::new_v4().as_u128() as u32) / f64::from(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A peer that answers UNAVAILABLE `failures` times, then OK, counting calls and checking
    /// every attempt carries the same body.
    #[derive(Clone)]
    struct Flaky {
        calls: Arc<AtomicU32>,
        failures: u32,
    }

    impl Service<http::Request<Body>> for Flaky {
        type Response = http::Response<Body>;
        type Error = BoxError;
        type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let failures = self.failures;
            Box::pin(async move {
                let body = request.into_body().collect().await?.to_bytes();
                assert_eq!(&body[..], b"payload");
                Ok(if n <= failures {
                    tonic::Status::unavailable("down").into_http()
                } else {
                    tonic::Status::ok("").into_http()
                })
            })
        }
    }

    fn request(path: &str) -> http::Request<Body> {
        http::Request::builder()
            .uri(format!("http://peer{path}"))
            .body(Body::new(http_body_util::Full::new(Bytes::from_static(
                b"payload",
            ))))
            .expect("request")
    }

    async fn run(config: RetryConfig, path: &str, failures: u32) -> (u32, Option<String>) {
        let calls = Arc::new(AtomicU32::new(0));
        let mut service = RetryLayer::new(config).layer(Flaky {
            calls: calls.clone(),
            failures,
        });
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(request(path))
            .await
            .expect("answered");
        let status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (calls.load(Ordering::SeqCst), status)
    }

    fn fast() -> RetryConfig {
        RetryConfig {
            backoff: Duration::from_millis(1),
            ..RetryConfig::default()
        }
    }

    #[tokio::test]
    async fn idempotent_calls_are_retried_on_unavailable_up_to_the_attempt_limit() {
        let commit = "/ticketing.inventory.v1.InventoryService/CommitHold";
        assert_eq!(run(fast(), commit, 2).await, (3, Some("0".into())));
        assert_eq!(run(fast(), commit, 5).await, (3, Some("14".into())));
        let read = "/ticketing.catalog.v1.CatalogService/GetEvent";
        assert_eq!(run(fast(), read, 1).await, (2, Some("0".into())));
    }

    #[tokio::test]
    async fn other_calls_and_a_disabled_policy_never_retry() {
        // PayOrder is not marked idempotent: the first answer stands.
        let pay = "/ticketing.orders.v1.OrdersService/PayOrder";
        assert_eq!(run(fast(), pay, 1).await, (1, Some("14".into())));
        let off = RetryConfig {
            enabled: false,
            ..fast()
        };
        let commit = "/ticketing.inventory.v1.InventoryService/CommitHold";
        assert_eq!(run(off, commit, 1).await, (1, Some("14".into())));
    }

    #[tokio::test]
    async fn the_budget_stops_retries_when_a_peer_stays_down() {
        let config = RetryConfig {
            min_retries_per_second: 1,
            budget_ratio: 0.0,
            max_attempts: 5,
            ..fast()
        };
        let calls = Arc::new(AtomicU32::new(0));
        let mut service = RetryLayer::new(config).layer(Flaky {
            calls: calls.clone(),
            failures: u32::MAX,
        });
        for _ in 0..20 {
            let _ = service
                .ready()
                .await
                .expect("ready")
                .call(request("/ticketing.catalog.v1.CatalogService/GetEvent"))
                .await;
        }
        // 20 calls; the floor of 1 retry a second over the 10 s window allows ~10 retries, not
        // the 80 that 5 attempts each would make.
        let made = calls.load(Ordering::SeqCst);
        assert!((20..=32).contains(&made), "{made} calls");
    }

    #[test]
    fn the_protos_mark_what_may_be_repeated() {
        assert!(repeatable("/ticketing.payments.v1.PaymentsService/Charge"));
        assert!(repeatable(
            "/ticketing.inventory.v1.InventoryService/GetAvailability"
        ));
        assert!(!repeatable("/ticketing.orders.v1.OrdersService/PayOrder"));
        assert!(!repeatable("/ticketing.inventory.v1.InventoryService/HoldSeats"));
        // Streams are never retried here.
        assert!(!repeatable(
            "/ticketing.inventory.v1.InventoryService/WatchAvailability"
        ));
    }
}
