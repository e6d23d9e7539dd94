//! The layers in front of the gateway's handler, outermost first: [`admit`] (the client's
//! address and its rate limit), [`resolve`] (404, 405) and [`observe`] (span, metrics, access
//! log). Each passes what it learnt on as a request extension.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tracing::Instrument;

use crate::{
    Gateway, edge,
    errors::HttpError,
    routes::{Resolved, Route},
    template::Bindings,
    throttled,
};

/// The address a request came from (see [`edge::client_ip`]), set by [`admit`].
#[derive(Clone, Copy)]
pub(crate) struct ClientAddress(pub(crate) std::net::IpAddr);

/// The route a request matched and the values its path bound, set by [`resolve`].
#[derive(Clone)]
pub(crate) struct Matched {
    pub(crate) route: Arc<Route>,
    pub(crate) bindings: Bindings,
}

/// The first layer of the API: works out the client's address and refuses a client past its
/// rate limit, before any other work is done for it.
pub(crate) async fn admit(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = {
        let forwarded_for: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        edge::client_ip(peer.ip(), &forwarded_for, &gw.config.trusted_proxies)
    };
    if let Err(refused) = gw.rate_limits.check_ip(client) {
        return throttled(refused).into_response();
    }
    request.extensions_mut().insert(ClientAddress(client));
    next.run(request).await
}

/// Finds the route of the method and path: 404, or 405 with `Allow`, when none serves them.
pub(crate) async fn resolve(State(gw): State<Arc<Gateway>>, mut request: Request, next: Next) -> Response {
    match gw.routes.resolve(request.method(), request.uri().path()) {
        Resolved::Found(route, bindings) => {
            request.extensions_mut().insert(Matched { route, bindings });
            next.run(request).await
        }
        Resolved::MethodNotAllowed(allowed) => {
            let allow = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
            let mut response = HttpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                tonic::Code::Unimplemented,
                "method not allowed",
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            response
        }
        Resolved::NotFound => HttpError::new(
            StatusCode::NOT_FOUND,
            tonic::Code::NotFound,
            "no route for this path",
        )
        .into_response(),
    }
}

/// The span of a routed request (continuing the client's trace, `traceparent`, or starting
/// one; the upstream call is its child), its metrics by route template, and its access-log
/// line: for every routed request, those refused for credentials or by an API key's limit too.
pub(crate) async fn observe(request: Request, next: Next) -> Response {
    let Some(route) = request.extensions().get::<Matched>().map(|m| m.route.clone()) else {
        return next.run(request).await;
    };
    let started = Instant::now();
    let path = request.uri().path().to_string();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // Made only when traces are exported: ten formatted fields per request cost ~5 % of the
    // gateway's CPU for nothing otherwise.
    let span = if !ticketing_platform::telemetry::exporting() {
        tracing::Span::none()
    } else {
        tracing::info_span!(
        "http.server",
        otel.name = %format!("{} {}", route.method, route.template),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %route.method,
        http.route = %route.template,
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        )
    };
    ticketing_platform::telemetry::continue_trace(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let _entered = span.enter();
    let status = response.status().as_u16().to_string();
    let labels = [
        ("route", route.template.to_string()),
        ("method", route.method.to_string()),
        ("status", status),
    ];
    metrics::counter!("gateway_requests_total", &labels).increment(1);
    metrics::histogram!("gateway_request_duration_seconds", &labels[..2])
        .record(started.elapsed().as_secs_f64());
    tracing::info!(
        method = %route.method, path = %path, status = response.status().as_u16(),
        rpc = route.rpc.full_name(), elapsed_ms = started.elapsed().as_millis() as u64,
        request_id = %request_id, "request"
    );
    response
}
