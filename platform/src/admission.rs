//! Admission: at most `concurrency_limit` calls are served at once per process; past it a call
//! is refused at once with RESOURCE_EXHAUSTED rather than queued without bound. Health checks
//! and reflection are always let in: an overloaded service still answers the probes that tell
//! Consul, Kubernetes and the gateway it is alive, or shedding load would look like dying.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::sync::Semaphore;
use tonic::body::Body;
use tower::{Layer, Service};

/// Shares one pool of permits among every connection of the server it wraps.
#[derive(Clone)]
pub struct AdmissionLayer {
    permits: Arc<Semaphore>,
}

impl AdmissionLayer {
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            permits: self.permits.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

/// Calls let in whatever the load: probes and reflection are cheap and must always answer.
fn always_admitted(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

impl<S> Service<http::Request<Body>> for Admission<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let permit = if always_admitted(request.uri().path()) {
            None
        } else {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    metrics::counter!("grpc_server_shed_total").increment(1);
                    let refused = tonic::Status::resource_exhausted(
                        "the service is at its concurrency limit; retry shortly",
                    )
                    .into_http();
                    return Box::pin(std::future::ready(Ok(refused)));
                }
            }
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            // Held until the call has its answer (a stream's first message, for streams).
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_reflection_are_always_admitted_and_nothing_else() {
        assert!(always_admitted("/grpc.health.v1.Health/Check"));
        assert!(always_admitted("/grpc.health.v1.Health/Watch"));
        assert!(always_admitted(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!always_admitted("/ticketing.orders.v1.OrdersService/PayOrder"));
        assert!(!always_admitted("/grpc.healthy/Check"));
    }
}
