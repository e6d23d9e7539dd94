//! A span per gRPC call, served (continuing the caller's trace from its `traceparent`) and made
//! (a child of whatever the task is doing, its context sent along), named and tagged as
//! OpenTelemetry's RPC conventions say: `rpc.system`, `rpc.service`, `rpc.method`,
//! `rpc.grpc.status_code`.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use tower::{Layer, Service};
use tracing::{Instrument, Span, field::Empty};

use crate::telemetry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Server,
    Client,
}

/// Traces the calls of the service it wraps.
#[derive(Debug, Clone, Copy)]
pub struct TraceLayer {
    kind: Kind,
}

impl TraceLayer {
    pub fn server() -> Self {
        Self { kind: Kind::Server }
    }

    pub fn client() -> Self {
        Self { kind: Kind::Client }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            kind: self.kind,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    kind: Kind,
}

fn span(kind: Kind, path: &str) -> Span {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    let kind = match kind {
        Kind::Server => "server",
        Kind::Client => "client",
    };
    tracing::info_span!(
        "grpc",
        otel.name = %format!("{service}/{method}"),
        otel.kind = kind,
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = Empty,
        trace_id = Empty,
        span_id = Empty,
    )
}

/// Records the status of a call that answered with its status in the headers (errors); a
/// status in the trailers (success, mostly) is recorded as OK.
fn record_status(span: &Span, kind: Kind, headers: &http::HeaderMap) {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    span.record("rpc.grpc.status_code", code);
    // OpenTelemetry: a server span is an error for server faults only; a client span for any
    // non-OK status.
    let server_fault = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
    if (kind == Kind::Server && server_fault) || (kind == Kind::Client && code != 0) {
        span.record("otel.status_code", "ERROR");
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Trace<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        if !telemetry::exporting() {
            return Box::pin(self.inner.call(request));
        }
        let span = span(self.kind, request.uri().path());
        match self.kind {
            Kind::Server => telemetry::continue_trace(&span, request.headers()),
            Kind::Client => {
                telemetry::record_ids(&span);
                telemetry::inject(&span, request.headers_mut());
            }
        }
        let kind = self.kind;
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let result = future.await;
                match &result {
                    Ok(response) => record_status(&Span::current(), kind, response.headers()),
                    Err(_) => {
                        let current = Span::current();
                        current.record("rpc.grpc.status_code", 14);
                        current.record("otel.status_code", "ERROR");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}
