//! RED metrics for every gRPC call, served and made, under the names of go-grpc-prometheus that
//! dashboards expect: `grpc_server_started_total`, `grpc_server_handled_total`,
//! `grpc_server_handling_seconds` and their `grpc_client_*` twins, labelled by `grpc_service`,
//! `grpc_method`, `grpc_type` and (for `handled`) `grpc_code`.
//!
//! The status of a call is only known at its end: in the headers of a trailers-only response
//! (errors), else in the trailers after the body. The layer wraps the response body to read
//! them, so streaming calls are timed to their last message; a body dropped before its end is
//! counted as CANCELLED.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{Code, body::Body};
use tower::{Layer, Service};

/// Which side of the call is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Server,
    Client,
}

impl Side {
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Side::Server => (
                "grpc_server_started_total",
                "grpc_server_handled_total",
                "grpc_server_handling_seconds",
            ),
            Side::Client => (
                "grpc_client_started_total",
                "grpc_client_handled_total",
                "grpc_client_handling_seconds",
            ),
        }
    }
}

/// Measures the calls of the service it wraps.
#[derive(Debug, Clone, Copy)]
pub struct RpcMetricsLayer {
    side: Side,
}

impl RpcMetricsLayer {
    pub fn server() -> Self {
        Self { side: Side::Server }
    }

    pub fn client() -> Self {
        Self { side: Side::Client }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            side: self.side,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    side: Side,
}

/// One call's labels and start, recorded once when its status is known.
struct Call {
    side: Side,
    labels: Arc<[(&'static str, String); 3]>,
    started: Instant,
    done: bool,
}

impl Call {
    fn start(side: Side, path: &str) -> Self {
        // `/ticketing.orders.v1.OrdersService/PayOrder`
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let service = parts.next().unwrap_or_default().to_string();
        let method = parts.next().unwrap_or_default().to_string();
        let kind = call_type(&service, &method);
        let labels = Arc::new([
            ("grpc_service", service),
            ("grpc_method", method),
            ("grpc_type", kind.to_string()),
        ]);
        metrics::counter!(side.names().0, labels.as_slice()).increment(1);
        Self {
            side,
            labels,
            started: Instant::now(),
            done: false,
        }
    }

    fn finish(&mut self, code: Code) {
        if self.done {
            return;
        }
        self.done = true;
        let (_, handled, seconds) = self.side.names();
        let [service, method, kind] = self.labels.as_ref().clone();
        metrics::histogram!(seconds, &[service.clone(), method.clone(), kind.clone()])
            .record(self.started.elapsed().as_secs_f64());
        metrics::counter!(
            handled,
            &[service, method, kind, ("grpc_code", code_name(code).to_string())]
        )
        .increment(1);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The response (or its body) went away before the status was read.
        self.finish(Code::Cancelled);
    }
}

/// `unary`, `server_stream`, `client_stream` or `bidi_stream`, from the platform's descriptors
/// (the wire does not say); calls outside them (health, reflection) count as unary.
fn call_type(service: &str, method: &str) -> &'static str {
    use std::{collections::HashMap, sync::OnceLock};
    static TYPES: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    let types = TYPES.get_or_init(|| {
        let set =
            <prost_types::FileDescriptorSet as prost::Message>::decode(ticketing_proto::FILE_DESCRIPTOR_SET)
                .unwrap_or_default();
        let mut types = HashMap::new();
        for file in &set.file {
            for svc in &file.service {
                for m in &svc.method {
                    let kind = match (m.client_streaming(), m.server_streaming()) {
                        (false, false) => "unary",
                        (false, true) => "server_stream",
                        (true, false) => "client_stream",
                        (true, true) => "bidi_stream",
                    };
                    types.insert(format!("{}.{}/{}", file.package(), svc.name(), m.name()), kind);
                }
            }
        }
        types
    });
    types
        .get(&format!("{service}/{method}"))
        .copied()
        .unwrap_or("unary")
}

/// A code as grpc-go spells it (`OK`, `NotFound`, `Canceled`), which dashboards built for
/// go-grpc-prometheus match on.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn status_in(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, ReqBody> Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let mut call = Call::start(self.side, request.uri().path());
        let future = self.inner.call(request);
        Box::pin(async move {
            match future.await {
                Ok(response) => {
                    if let Some(code) = status_in(response.headers()) {
                        call.finish(code);
                        return Ok(response);
                    }
                    Ok(response.map(|body| Body::new(MeasuredBody { inner: body, call })))
                }
                Err(error) => {
                    let error: BoxError = error.into();
                    // Shed for load (the server answers RESOURCE_EXHAUSTED), or the transport
                    // failed before any response (the caller sees UNAVAILABLE).
                    call.finish(if error.is::<tower::load_shed::error::Overloaded>() {
                        Code::ResourceExhausted
                    } else {
                        Code::Unavailable
                    });
                    Err(error)
                }
            }
        })
    }
}

/// A response body that records the call when its trailers (or its end) arrive.
struct MeasuredBody {
    inner: Body,
    call: Call,
}

impl HttpBody for MeasuredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    self.call.finish(code);
                }
            }
            Some(Err(_)) => self.call.finish(Code::Unavailable),
            // Ended without a status: gRPC reads that as UNKNOWN.
            None => self.call.finish(Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_recorded_once_with_its_code() {
        let handle = crate::server::metrics_handle();
        {
            let mut call = Call::start(Side::Client, "/test.rpcmetrics.v1.Probe/Once");
            call.finish(Code::NotFound);
            call.finish(Code::Ok);
        }
        drop(Call::start(Side::Client, "/test.rpcmetrics.v1.Probe/Dropped"));
        let text = handle.render();
        let handled: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("grpc_client_handled_total{") && l.contains("test.rpcmetrics.v1.Probe"))
            .collect();
        assert_eq!(handled.len(), 2, "{handled:?}");
        assert!(handled.iter().any(|l| l.contains("grpc_method=\"Once\"")
            && l.contains("grpc_code=\"NotFound\"")
            && l.ends_with(" 1")));
        assert!(
            handled
                .iter()
                .any(|l| l.contains("grpc_method=\"Dropped\"") && l.contains("grpc_code=\"Canceled\""))
        );
        assert!(text.contains("grpc_client_started_total{grpc_service=\"test.rpcmetrics.v1.Probe\""));
    }

    #[test]
    fn streaming_methods_are_typed_from_the_descriptors() {
        assert_eq!(
            call_type("ticketing.inventory.v1.InventoryService", "WatchAvailability"),
            "server_stream"
        );
        assert_eq!(
            call_type("ticketing.orders.v1.OrdersService", "PayOrder"),
            "unary"
        );
        assert_eq!(call_type("grpc.health.v1.Health", "Check"), "unary");
    }
}
