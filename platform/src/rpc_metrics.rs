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
    collections::HashMap,
    pin::Pin,
    sync::{Arc, OnceLock, RwLock},
    task::{Context, Poll, ready},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{Code, body::Body};
use tower::{Layer, Service};

/// Which side of the call is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// A method's metric handles, registered once per process: looking labels up on every call
/// costs more than the call's own bookkeeping.
struct Handles {
    side: Side,
    labels: [(&'static str, String); 3],
    started: metrics::Counter,
    seconds: metrics::Histogram,
    /// By status code (0..=16), registered when first seen.
    handled: [OnceLock<metrics::Counter>; 17],
}

impl Handles {
    fn new(side: Side, service: &str, method: &str, kind: &'static str) -> Self {
        let (started, _, seconds) = side.names();
        let labels = [
            ("grpc_service", service.to_string()),
            ("grpc_method", method.to_string()),
            ("grpc_type", kind.to_string()),
        ];
        Self {
            side,
            started: metrics::counter!(started, &labels),
            seconds: metrics::histogram!(seconds, &labels),
            labels,
            handled: Default::default(),
        }
    }

    fn handled(&self, code: Code) -> &metrics::Counter {
        let slot = usize::try_from(code as i32).unwrap_or(2).min(16);
        self.handled[slot].get_or_init(|| {
            let [service, method, kind] = self.labels.clone();
            metrics::counter!(
                self.side.names().1,
                &[service, method, kind, ("grpc_code", code_name(code).to_string())]
            )
        })
    }
}

/// The handles of the method at `path`. Paths outside the platform's descriptors (and health
/// and reflection) share one `unknown` set, so a client inventing paths cannot grow the
/// metrics without bound.
fn handles(side: Side, path: &str) -> Arc<Handles> {
    type Cache = RwLock<HashMap<(Side, String), Arc<Handles>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    // `/ticketing.orders.v1.OrdersService/PayOrder`
    let key = path.trim_start_matches('/');
    let known = call_type(key);
    let key = if known.is_some() { key } else { "unknown/unknown" };
    if let Some(handles) = cache
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(side, key.to_string()))
    {
        return handles.clone();
    }
    let (service, method) = key.split_once('/').unwrap_or(("unknown", "unknown"));
    let handles = Arc::new(Handles::new(side, service, method, known.unwrap_or("unary")));
    cache
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .entry((side, key.to_string()))
        .or_insert(handles)
        .clone()
}

/// One call, recorded once when its status is known.
struct Call {
    handles: Arc<Handles>,
    started: Instant,
    done: bool,
}

impl Call {
    fn start(side: Side, path: &str) -> Self {
        let handles = handles(side, path);
        handles.started.increment(1);
        Self {
            handles,
            started: Instant::now(),
            done: false,
        }
    }

    fn finish(&mut self, code: Code) {
        if self.done {
            return;
        }
        self.done = true;
        self.handles.seconds.record(self.started.elapsed().as_secs_f64());
        self.handles.handled(code).increment(1);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The response (or its body) went away before the status was read.
        self.finish(Code::Cancelled);
    }
}

/// `unary`, `server_stream`, `client_stream` or `bidi_stream` for `service/method`, from the
/// platform's descriptors (the wire does not say); None for a method it does not know.
fn call_type(path: &str) -> Option<&'static str> {
    static TYPES: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    let types = TYPES.get_or_init(|| {
        let set =
            <prost_types::FileDescriptorSet as prost::Message>::decode(ticketing_proto::FILE_DESCRIPTOR_SET)
                .unwrap_or_default();
        let mut types: HashMap<String, &'static str> = [
            ("grpc.health.v1.Health/Check", "unary"),
            ("grpc.health.v1.Health/Watch", "server_stream"),
            (
                "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "bidi_stream",
            ),
            (
                "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                "bidi_stream",
            ),
        ]
        .into_iter()
        .map(|(path, kind)| (path.to_string(), kind))
        .collect();
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
    types.get(path).copied()
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
    fn a_call_is_recorded_once_with_its_code_and_unknown_paths_share_one_label_set() {
        let handle = crate::server::metrics_handle();
        let venues = "ticketing.catalog.v1.CatalogService";
        {
            let mut call = Call::start(Side::Client, &format!("/{venues}/GetVenue"));
            call.finish(Code::NotFound);
            call.finish(Code::Ok);
        }
        drop(Call::start(Side::Client, &format!("/{venues}/ListVenues")));
        for n in 0..5 {
            drop(Call::start(Side::Client, &format!("/invented.Service{n}/Method")));
        }
        let text = handle.render();
        let handled: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("grpc_client_handled_total{"))
            .collect();
        let get: Vec<&&str> = handled
            .iter()
            .filter(|l| l.contains("grpc_method=\"GetVenue\""))
            .collect();
        assert_eq!(get.len(), 1, "{handled:?}");
        assert!(
            get[0].contains("grpc_code=\"NotFound\"") && get[0].ends_with(" 1"),
            "{get:?}"
        );
        assert!(
            handled
                .iter()
                .any(|l| l.contains("grpc_method=\"ListVenues\"") && l.contains("grpc_code=\"Canceled\""))
        );
        assert!(!text.contains("invented"), "{text}");
        assert!(
            handled
                .iter()
                .any(|l| l.contains("grpc_service=\"unknown\"") && l.ends_with(" 5")),
            "{handled:?}"
        );
        assert!(text.contains(&format!("grpc_client_started_total{{grpc_service=\"{venues}\"")));
    }

    #[test]
    fn streaming_methods_are_typed_from_the_descriptors() {
        assert_eq!(
            call_type("ticketing.inventory.v1.InventoryService/WatchAvailability"),
            Some("server_stream")
        );
        assert_eq!(
            call_type("ticketing.orders.v1.OrdersService/PayOrder"),
            Some("unary")
        );
        assert_eq!(call_type("grpc.health.v1.Health/Check"), Some("unary"));
        assert_eq!(call_type("made.up.Service/Nope"), None);
    }
}
