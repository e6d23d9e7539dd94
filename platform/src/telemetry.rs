//! Logs and traces with `tracing`: JSON logs in production (with the trace and span ids of the
//! call they belong to), human-readable on a laptop, and OpenTelemetry traces exported over OTLP
//! (Jaeger ingests OTLP natively) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Trace context crosses process boundaries as W3C `traceparent`: in gRPC metadata
//! ([`crate::tracing_layer`]), in the gateway's HTTP headers, and in RabbitMQ message headers
//! (the outbox stores it with each event), so one checkout is one trace.

use opentelemetry::{
    KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat};

/// Whether spans are exported: without an exporter, the per-call spans are not made at all
/// (they would cost every call and carry no trace ids).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Flushes and stops trace export when dropped: keep it alive until the process ends.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Sends every finished span now (tests read them right after).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            tracing::warn!(%error, "flushing spans failed");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace export did not shut down cleanly: {error}");
        }
    }
}

/// Installs the global subscriber once (later calls are no-ops, as when several services share
/// a test process), exporting traces to `OTEL_EXPORTER_OTLP_ENDPOINT` when it is set. Call it
/// inside the Tokio runtime: the exporter's gRPC client lives there. `RUST_LOG` overrides the
/// configured filter.
pub fn init(config: &LogConfig, service: &'static str, version: &'static str) -> TelemetryGuard {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    install(config, service, version, endpoint)
}

/// [`init`] with an explicit OTLP endpoint (tests run a receiver of their own).
pub fn install(
    config: &LogConfig,
    service: &'static str,
    version: &'static str,
    otlp_endpoint: Option<String>,
) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = otlp_endpoint.and_then(|endpoint| match tracer_provider(&endpoint, service, version) {
        Ok(provider) => Some(provider),
        Err(error) => {
            eprintln!("traces are not exported: OTLP exporter for {endpoint} failed: {error}");
            None
        }
    });
    // Traces take every info span whatever the log filter says: quiet logs, full traces.
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match config.format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt::layer().compact().with_filter(filter).boxed(),
    };
    let result = tracing_subscriber::registry().with(otel).with(logs).try_init();
    if result.is_err() {
        // A subscriber was already installed (another service in this process): it exports.
        return TelemetryGuard { provider: None };
    }
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    TelemetryGuard { provider }
}

fn tracer_provider(
    endpoint: &str,
    service: &'static str,
    version: &'static str,
) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(std::time::Duration::from_secs(5))
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", version))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// For tests: logs only when `TEST_LOG` is set, so test output stays readable.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let guard = install(
            &LogConfig {
                format: LogFormat::Pretty,
                filter: "debug,h2=info,hyper=info,tower=info".into(),
            },
            "test",
            "test",
            None,
        );
        drop(guard);
    }
}

/// Reads W3C trace context from HTTP headers (gRPC metadata travels as headers).
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes `span` a child of the trace context in `headers`, if they carry one, and records its
/// trace and span ids (for the logs).
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    record_ids(span);
}

/// [`continue_trace`] from a `traceparent` value (a message header).
pub fn continue_trace_from(span: &tracing::Span, traceparent: Option<&str>) {
    let mut headers = http::HeaderMap::new();
    if let Some(value) = traceparent.and_then(|v| http::HeaderValue::from_str(v).ok()) {
        headers.insert("traceparent", value);
    }
    continue_trace(span, &headers);
}

/// Writes the trace context of `span` into `headers` (a call it makes).
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    }
}

/// The current span's context as a `traceparent` value (stored with outbox events).
pub fn current_traceparent() -> Option<String> {
    let mut headers = http::HeaderMap::new();
    inject(&tracing::Span::current(), &mut headers);
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Fills a span's declared `trace_id` and `span_id` fields from its OpenTelemetry context.
pub fn record_ids(span: &tracing::Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
        span.record("span_id", span_context.span_id().to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the fmt layer writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_logs_carry_the_trace_and_span_ids_of_the_call_they_belong_to() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(move || writer.clone()),
            );
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let mut outgoing = http::HeaderMap::new();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "grpc.server",
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty
            );
            continue_trace(&span, &headers);
            let _entered = span.enter();
            tracing::info!("charged");
            inject(&span, &mut outgoing);
        });
        let text = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("utf-8");
        let line: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("json");
        assert_eq!(
            line["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{line}"
        );
        let span_id = line["span"]["span_id"].as_str().expect("a span id").to_string();
        assert_eq!(span_id.len(), 16);
        assert_ne!(
            span_id, "00f067aa0ba902b7",
            "the call's own span, a child of the caller's"
        );
        // What this call sends on names the same trace and this span as the parent.
        assert_eq!(
            outgoing.get("traceparent").and_then(|v| v.to_str().ok()),
            Some(format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span_id}-01").as_str())
        );
    }
}
