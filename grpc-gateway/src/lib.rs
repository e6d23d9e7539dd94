//! The REST gateway: REST/JSON and server-sent events in front of every service, transcoded from
//! the `google.api.http` rules in the compiled descriptors (see [`routes`]). It authenticates the
//! caller (bearer JWT verified against identity's JWKS, or an API key verified through identity),
//! forwards the bearer token with a deadline, and maps gRPC errors to HTTP as grpc-gateway does.
//!
//! [`Application::build`] binds and loads the descriptors; [`Application::run_until_stopped`]
//! serves until the shutdown future completes. Tests start the real gateway in-process this way.

pub mod codec;
pub mod config;
pub mod edge;
pub mod errors;
mod layers;
pub mod openapi;
pub mod routes;
pub mod template;
pub mod transcode;
mod unread_body;

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{
    Extension, Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use http_body_util::BodyExt;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, ReflectMessage, Value};
use sha2::{Digest, Sha256};
use ticketing_platform::clients::PeerChannel;
use ticketing_platform::{
    auth::{IdentityKeySource, TokenVerifier},
    clients::Peers,
};
use ticketing_proto::ticketing::identity::v1::{
    self as idpb, identity_service_client::IdentityServiceClient,
};
use tokio::net::TcpListener;
use tonic::metadata::MetadataValue;

use crate::{
    codec::DynamicCodec,
    config::Config,
    edge::{Breakers, Permit, Probe, RateLimits, Throttled},
    errors::{HttpError, grpc_to_http},
    routes::{Route, RouteTable},
    template::Bindings,
};

/// The largest reply read from a service. Catalog returns a venue with its whole chart, which at
/// its 100,000-seat limit runs to several MiB, past tonic's default of 4 MiB; catalog itself
/// sends at most 32 MiB.
const MAX_UPSTREAM_REPLY_BYTES: usize = 32 * 1024 * 1024;

pub struct Application {
    listener: TcpListener,
    router: Router,
}

struct Gateway {
    routes: RouteTable,
    pool: DescriptorPool,
    channels: HashMap<String, PeerChannel>,
    verifier: TokenVerifier,
    identity: IdentityServiceClient<PeerChannel>,
    /// Verified API keys by the SHA-256 of the secret: the token to forward (None: refused) and
    /// when that was learnt.
    api_keys: Mutex<HashMap<[u8; 32], VerifiedKey>>,
    rate_limits: RateLimits,
    breakers: Breakers,
    config: Config,
    openapi: Bytes,
}

/// When an API key was checked, and the token to forward for it (None: refused).
type VerifiedKey = (Instant, Option<String>);

/// How the caller proved who they are.
enum Caller {
    Anonymous,
    /// A bearer token to forward: the caller's own JWT, or the one identity issued for their key.
    Bearer(String),
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = DescriptorPool::decode(ticketing_proto::FILE_DESCRIPTOR_SET)
            .context("decoding the descriptors")?;
        let routes = RouteTable::from_pool(&pool)?;
        let peers = Peers::new(config.peers.clone()).discovering(&config.discovery);
        let mut channels = HashMap::new();
        for route in routes.routes() {
            if channels.contains_key(&route.upstream) {
                continue;
            }
            if config.peers.addresses.contains_key(&route.upstream) {
                channels.insert(route.upstream.clone(), peers.channel(&route.upstream)?);
            } else {
                tracing::warn!(upstream = %route.upstream, rpc = route.rpc.full_name(), "no address: the route answers 503");
            }
        }
        let identity_channel = peers.channel("identity")?;
        let verifier = TokenVerifier::new(IdentityKeySource::new(identity_channel.clone()));
        let openapi = Bytes::from(serde_json::to_vec(&openapi::document(&routes, &pool))?);
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let cors = cors(&config);
        let max_body = config.limits.max_body_bytes;
        let rate_limits = RateLimits::new(&config.rate_limit);
        let breakers = Breakers::new(&config.breaker, channels.keys());
        let gateway = Arc::new(Gateway {
            routes,
            pool,
            channels,
            verifier,
            identity: IdentityServiceClient::new(identity_channel),
            api_keys: Mutex::new(HashMap::new()),
            rate_limits,
            breakers,
            config,
            openapi,
        });
        forget_idle_buckets(Arc::downgrade(&gateway));
        probe_upstreams(&gateway);
        // The API behind its layers, outermost first: `admit` (the client's address, its rate
        // limit) before any work is done; `resolve` (404, 405) before anything is measured, so
        // that made-up paths never become metric labels; `observe` (span, metrics, access log)
        // around all that a route does, refusals of credentials included.
        // The layers wrap the handler itself, not a router of their own: one route lookup less
        // per request.
        let api = tower::ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(
                gateway.clone(),
                layers::admit,
            ))
            .layer(axum::middleware::from_fn_with_state(
                gateway.clone(),
                layers::resolve,
            ))
            .layer(axum::middleware::from_fn(layers::observe))
            .service(axum::handler::Handler::with_state(
                transcode_request,
                gateway.clone(),
            ));
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/v1/health", get(health))
            .route(
                "/metrics",
                get(|| async { ticketing_platform::server::metrics_handle().render() }),
            )
            .route("/openapi.json", get(openapi_json))
            .route("/docs", get(docs_page))
            .route("/.well-known/jwks.json", get(jwks))
            .fallback_service(api)
            .layer(tower_http::limit::RequestBodyLimitLayer::new(max_body))
            .layer(axum::middleware::from_fn(
                move |request: Request, next: axum::middleware::Next| {
                    too_large_by_length(max_body, request, next)
                },
            ))
            .layer(axum::middleware::from_fn(unread_body::close_if_body_unread))
            .layer(cors)
            // Every request gets an id (a client's own is kept), echoed in the response, passed
            // upstream and written in the access log.
            .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
            .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
                tower_http::request_id::MakeRequestUuid,
            ))
            .with_state(gateway);
        tracing::info!(addr = %listener.local_addr()?, "gateway listening");
        Ok(Self { listener, router })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        axum::serve(
            self.listener,
            self.router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        Ok(())
    }
}

/// One prober per upstream: its health check every `probe_interval` (more often while it is
/// down), each telling the breakers whether the upstream is there. Ends with the gateway.
fn probe_upstreams(gateway: &Arc<Gateway>) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let config = gateway.config.breaker.clone();
    for (name, liveness) in gateway.breakers.liveness() {
        let Some(channel) = gateway.channels.get(name).cloned() else {
            continue;
        };
        let (name, liveness, config) = (name.clone(), liveness.clone(), config.clone());
        let gateway = Arc::downgrade(gateway);
        tokio::spawn(async move {
            let mut client = HealthClient::new(channel);
            loop {
                let pause = if liveness.is_down() {
                    config.probe_down_interval
                } else {
                    config.probe_interval
                };
                tokio::time::sleep(pause).await;
                let Some(gateway) = gateway.upgrade() else {
                    return;
                };
                let mut request = tonic::Request::new(HealthCheckRequest {
                    service: String::new(),
                });
                request.set_timeout(config.probe_timeout);
                let asked = tokio::time::timeout(config.probe_timeout, client.check(request)).await;
                let probe = match asked {
                    Ok(Ok(reply)) if reply.get_ref().status == ServingStatus::Serving as i32 => {
                        Probe::Serving
                    }
                    _ => Probe::Failed,
                };
                gateway.breakers.probed(&name, probe, config.probe_failures);
            }
        });
    }
}

/// Drops rate-limit buckets of clients gone quiet, every minute, until the gateway is gone.
fn forget_idle_buckets(gateway: std::sync::Weak<Gateway>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(gateway) = gateway.upgrade() else {
                return;
            };
            gateway.rate_limits.forget_idle();
        }
    });
}

/// A body declared larger than the limit gets the JSON error at once (the limit layer behind it
/// would answer in plain text, and catches bodies without a length).
async fn too_large_by_length(max_body: usize, request: Request, next: axum::middleware::Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body as u64) {
        return HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::ResourceExhausted,
            format!("the request body is larger than {max_body} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

fn throttled(refused: Throttled) -> HttpError {
    metrics::counter!("gateway_rate_limited_total", "limit" => refused.limit.as_str()).increment(1);
    let whose = match refused.limit {
        edge::Limit::ClientIp => "this client address",
        edge::Limit::ApiKey => "this API key",
    };
    HttpError::new(
        StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::ResourceExhausted,
        format!("too many requests from {whose}; retry after the delay given"),
    )
    .reason(
        "RATE_LIMITED",
        serde_json::json!({ "limit": refused.limit.as_str() }),
    )
    .retry_after(refused.retry_after)
}

fn cors(config: &Config) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = config
        .cors_allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(Duration::from_secs(600))
}

async fn openapi_json(State(gw): State<Arc<Gateway>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], gw.openapi.clone()).into_response()
}

async fn docs_page(State(gw): State<Arc<Gateway>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        openapi::docs_html(&gw.routes),
    )
        .into_response()
}

async fn jwks(State(gw): State<Arc<Gateway>>) -> Response {
    let mut identity = gw.identity.clone();
    match identity.get_jwks(idpb::GetJwksRequest {}).await {
        Ok(reply) => {
            let keys: Vec<serde_json::Value> = reply
                .into_inner()
                .keys
                .into_iter()
                .map(|k| {
                    serde_json::json!({
                        "kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "use": k.r#use, "alg": k.alg,
                    })
                })
                .collect();
            (
                [(header::CACHE_CONTROL, "public, max-age=300")],
                axum::Json(serde_json::json!({ "keys": keys })),
            )
                .into_response()
        }
        Err(status) => grpc_to_http(&gw.pool, &status).into_response(),
    }
}

/// Every upstream's `grpc.health.v1` status; 503 unless all serve.
/// Ready once the gateway can check tokens (identity's JWKS fetched); the routes, built from
/// the descriptors, exist from the start. Upstreams found down are listed, not a reason to stop
/// serving the others' routes.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let keys = tokio::time::timeout(Duration::from_secs(2), gw.verifier.has_keys())
        .await
        .unwrap_or(false);
    let down: Vec<&String> = gw
        .breakers
        .liveness()
        .filter(|(_, liveness)| liveness.is_down())
        .map(|(name, _)| name)
        .collect();
    let body = serde_json::json!({
        "ready": keys,
        "routes": gw.routes.routes().len(),
        "token_keys": if keys { "fetched" } else { "not fetched: identity unreachable" },
        "upstreams_down": down,
    });
    let code = if keys {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn health(State(gw): State<Arc<Gateway>>) -> Response {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let checks = gw.channels.iter().map(|(name, channel)| {
        let mut client = HealthClient::new(channel.clone());
        async move {
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            request.set_timeout(Duration::from_secs(2));
            let status = match client.check(request).await {
                Ok(reply) => match reply.into_inner().status {
                    1 => "SERVING",
                    2 => "NOT_SERVING",
                    _ => "UNKNOWN",
                },
                Err(_) => "UNREACHABLE",
            };
            (name.clone(), status)
        }
    });
    let results: std::collections::BTreeMap<String, &str> =
        futures::future::join_all(checks).await.into_iter().collect();
    let all = results.values().all(|s| *s == "SERVING");
    let code = if all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(serde_json::json!({
            "status": if all { "SERVING" } else { "DEGRADED" },
            "services": results,
        })),
    )
        .into_response()
}

/// The API's handler, behind the layers of [`layers`].
async fn transcode_request(
    State(gw): State<Arc<Gateway>>,
    Extension(layers::ClientAddress(client)): Extension<layers::ClientAddress>,
    Extension(matched): Extension<layers::Matched>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    serve(
        &gw,
        &matched.route,
        matched.bindings,
        &parts.headers,
        parts.uri.query(),
        body,
        client,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

async fn serve(
    gw: &Gateway,
    route: &Route,
    bindings: Bindings,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body,
    client: std::net::IpAddr,
) -> Result<Response, HttpError> {
    let caller = gw.authenticate(headers).await?;
    if matches!(caller, Caller::Anonymous) && !route.anonymous {
        return Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            tonic::Code::Unauthenticated,
            "this route needs credentials: Authorization: Bearer <token> or X-API-Key",
        ));
    }
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>())
                || error.to_string().contains("length limit");
            return Err(if too_large {
                HttpError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    tonic::Code::ResourceExhausted,
                    "the request body is too large",
                )
            } else {
                HttpError::new(
                    StatusCode::BAD_REQUEST,
                    tonic::Code::InvalidArgument,
                    "the request body could not be read",
                )
            });
        }
    };
    // A form posted to a route that takes no body (an HTML form, a mail client's one-click
    // unsubscribe, RFC 8058) sends its fields as parameters.
    let is_form = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let form_query;
    let (query, body) = if is_form && matches!(route.body, routes::Body::None) {
        let fields = std::str::from_utf8(&body)
            .map_err(|_| HttpError::bad_request(transcode::BadRequest::general("the form is not UTF-8")))?;
        form_query = [query.unwrap_or(""), fields]
            .iter()
            .filter(|part| !part.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("&");
        (Some(form_query.as_str()), bytes::Bytes::new())
    } else {
        (query, body)
    };
    let mut message =
        transcode::request_message(route, bindings, query, &body).map_err(HttpError::bad_request)?;
    fill_idempotency_key(route, &mut message, headers);
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Caller::Bearer(token) = &caller
        && let Ok(value) = MetadataValue::try_from(format!("Bearer {token}"))
    {
        metadata.insert("authorization", value);
    }
    // The metadata is built afresh: nothing the client sent under these names gets through,
    // and the services believe this address only from the gateway's service token.
    if let Ok(value) = MetadataValue::try_from(client.to_string()) {
        metadata.insert(ticketing_platform::service_auth::CLIENT_ADDRESS_HEADER, value);
    }
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok())
        && let Ok(value) = MetadataValue::try_from(id)
    {
        metadata.insert("x-request-id", value);
    }
    let timeout = headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(ticketing_platform::deadline::parse_grpc_timeout)
        .map_or(gw.config.limits.upstream_timeout, |t| {
            t.min(gw.config.limits.upstream_timeout)
        });
    let channel = gw.channels.get(&route.upstream).cloned().ok_or_else(|| {
        HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            "no upstream for this route",
        )
    })?;
    if let Permit::Refused { retry_after } = gw.breakers.permit(&route.upstream) {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            format!(
                "the {} service is failing; the gateway is not calling it for a while",
                route.upstream
            ),
        )
        .reason("CIRCUIT_OPEN", serde_json::json!({ "upstream": route.upstream }))
        .retry_after(retry_after));
    }
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_UPSTREAM_REPLY_BYTES);
    let path = http::uri::PathAndQuery::try_from(route.grpc_path()).map_err(|_| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "bad method path",
        )
    })?;
    if grpc.ready().await.is_err() {
        gw.breakers.unreachable(&route.upstream);
        gw.breakers.record(&route.upstream, Err(tonic::Code::Unavailable));
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::Unavailable,
            "the upstream service is unavailable",
        ));
    }
    let record = |result: Result<(), &tonic::Status>| {
        if let Err(status) = result
            && errors::unreachable(status)
        {
            gw.breakers.unreachable(&route.upstream);
        }
        gw.breakers.record(
            &route.upstream,
            result.err().map_or(Ok(()), errors::breaker_outcome),
        );
    };
    let mut request = tonic::Request::from_parts(metadata, Default::default(), message);
    if route.is_streaming() {
        if let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
            resume_after(request.get_mut(), id)?;
        }
        let stream = grpc
            .server_streaming(request, path, DynamicCodec::new(route.rpc.output()))
            .await;
        record(stream.as_ref().map(|_| ()));
        let stream = stream
            .map_err(|status| grpc_to_http(&gw.pool, &status))?
            .into_inner();
        let sse = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"));
        return Ok(stream_response(gw, route, stream, sse));
    }
    request.set_timeout(timeout);
    let reply = grpc
        .unary(request, path, DynamicCodec::new(route.rpc.output()))
        .await;
    record(reply.as_ref().map(|_| ()));
    let reply = reply
        .map_err(|status| grpc_to_http(&gw.pool, &status))?
        .into_inner();
    if route.rpc.output().full_name() == "google.api.HttpBody" && route.response_body.is_none() {
        return Ok(http_body(&reply));
    }
    let json = transcode::response_json(route, &reply).map_err(|e| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            format!("rendering the reply: {e}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// `Idempotency-Key` fills the request's `idempotency_key` when the body left it empty; a key
/// in the body wins. Routes without such a field ignore the header.
fn fill_idempotency_key(route: &Route, message: &mut DynamicMessage, headers: &HeaderMap) {
    if let Some(field) = &route.idempotency_field
        && let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok())
        && message.get_field(field).as_str().is_none_or(str::is_empty)
    {
        message.set_field(field, Value::String(key.to_string()));
    }
}

/// `Last-Event-ID` resumes a stream whose request has an `after_sequence` field.
fn resume_after(message: &mut DynamicMessage, id: &str) -> Result<(), HttpError> {
    let Some(field) = message.descriptor().get_field_by_name("after_sequence") else {
        return Ok(());
    };
    let sequence: i64 = id.trim().parse().map_err(|_| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "Last-Event-ID must be a sequence number",
        )
    })?;
    if matches!(field.kind(), Kind::Int64) {
        message.set_field(&field, Value::I64(sequence));
    }
    Ok(())
}

/// A `google.api.HttpBody` reply is the HTTP body as it is, with its content type.
fn http_body(reply: &DynamicMessage) -> Response {
    let content_type = reply
        .get_field_by_name("content_type")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "application/octet-stream".into());
    let data = reply
        .get_field_by_name("data")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, content_type)], data).into_response()
}

/// Server streaming as SSE (`id:` from a `sequence` field, heartbeat comments) or as
/// grpc-gateway's newline-delimited `{"result": ...}` / `{"error": ...}`.
fn stream_response(
    gw: &Gateway,
    route: &Route,
    mut stream: tonic::Streaming<DynamicMessage>,
    sse: bool,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
    let route = route.clone();
    let pool = gw.pool.clone();
    let heartbeat = gw.config.limits.sse_heartbeat;
    let sequence_field = route.rpc.output().get_field_by_name("sequence");
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.tick().await;
        loop {
            let chunk = tokio::select! {
                next = stream.message() => match next {
                    Ok(Some(message)) => {
                        let json = transcode::response_json(&route, &message).unwrap_or_default();
                        if sse {
                            let mut out = Vec::with_capacity(json.len() + 32);
                            if let Some(field) = &sequence_field
                                && let Some(sequence) = message.get_field(field).as_i64()
                                && sequence > 0
                            {
                                out.extend_from_slice(format!("id: {sequence}\n").as_bytes());
                            }
                            out.extend_from_slice(b"data: ");
                            out.extend_from_slice(&json);
                            out.extend_from_slice(b"\n\n");
                            out
                        } else {
                            let mut out = Vec::with_capacity(json.len() + 12);
                            out.extend_from_slice(b"{\"result\":");
                            out.extend_from_slice(&json);
                            out.extend_from_slice(b"}\n");
                            out
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        let error = errors::status_json(&pool, &status);
                        let text = error.to_string();
                        let chunk = if sse {
                            format!("event: error\ndata: {text}\n\n")
                        } else {
                            format!("{{\"error\":{text}}}\n")
                        };
                        let _ = tx.send(Ok(Bytes::from(chunk))).await;
                        break;
                    }
                },
                _ = ticker.tick() => {
                    if !sse {
                        continue;
                    }
                    b": heartbeat\n\n".to_vec()
                }
            };
            ticker.reset();
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                // The client went away; dropping the stream cancels the upstream call.
                break;
            }
        }
    });
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/json"
    };
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}

/// Whether identity refused an API key for what it is (unknown, expired, revoked).
fn api_key_refused(status: &tonic::Status) -> bool {
    use tonic_types::StatusExt;
    status.code() == tonic::Code::Unauthenticated
        && status
            .get_error_details()
            .error_info()
            .is_some_and(|info| info.reason == "API_KEY_INVALID")
}

impl Gateway {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, HttpError> {
        let unauthenticated =
            |message: &str| HttpError::new(StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated, message);
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| unauthenticated("Authorization must be `Bearer <token>`"))?;
            self.verifier
                .verify(token)
                .await
                .map_err(|e| unauthenticated(&format!("the bearer token is not valid: {e}")))?;
            return Ok(Caller::Bearer(token.to_string()));
        }
        if let Some(value) = headers.get("x-api-key") {
            let secret = value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| unauthenticated("X-API-Key is empty"))?;
            return self.api_key(secret).await;
        }
        Ok(Caller::Anonymous)
    }

    /// Verifies an API key through identity, trusting the answer for `api_key_cache_ttl`.
    async fn api_key(&self, secret: &str) -> Result<Caller, HttpError> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let ttl = self.config.auth.api_key_cache_ttl;
        let cached = {
            let keys = self.api_keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.get(&digest)
                .filter(|(at, _)| at.elapsed() < ttl)
                .map(|(_, token)| token.clone())
        };
        let token = match cached {
            Some(token) => token,
            None => {
                let mut identity = self.identity.clone();
                let token = match identity
                    .verify_api_key(idpb::VerifyApiKeyRequest {
                        secret: secret.to_string(),
                    })
                    .await
                {
                    Ok(reply) => Some(reply.into_inner().access_token),
                    // Identity's verdict on the key itself: remembered for the cache's time.
                    Err(status) if api_key_refused(&status) => None,
                    // Anything else that says "unauthenticated" is about the gateway's own
                    // service credential: not the client's fault, and not to be remembered.
                    Err(status)
                        if matches!(
                            status.code(),
                            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                        ) =>
                    {
                        tracing::error!(error = %status.message(), "identity refused the gateway's service credential");
                        return Err(HttpError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            tonic::Code::Unavailable,
                            "API keys cannot be checked right now",
                        )
                        .retry_after(Duration::from_secs(1)));
                    }
                    Err(status) => return Err(grpc_to_http(&self.pool, &status)),
                };
                let mut keys = self.api_keys.lock().unwrap_or_else(|p| p.into_inner());
                if keys.len() > 10_000 {
                    keys.retain(|_, (at, _)| at.elapsed() < ttl);
                }
                keys.insert(digest, (Instant::now(), token.clone()));
                token
            }
        };
        let token = token.ok_or_else(|| {
            HttpError::new(
                StatusCode::UNAUTHORIZED,
                tonic::Code::Unauthenticated,
                "the API key is invalid, expired or revoked",
            )
        })?;
        // Only valid keys get a bucket: random keys cannot grow the table.
        self.rate_limits.check_api_key(&digest).map_err(throttled)?;
        Ok(Caller::Bearer(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(rpc: &str) -> Route {
        let pool = DescriptorPool::decode(ticketing_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let table = RouteTable::from_pool(&pool).expect("routes");
        table
            .routes()
            .iter()
            .find(|r| r.rpc.name() == rpc)
            .map(|r| Route::clone(r))
            .unwrap_or_else(|| panic!("{rpc}"))
    }

    fn key_of(message: &DynamicMessage) -> String {
        message
            .get_field_by_name("idempotency_key")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    #[test]
    fn the_idempotency_header_fills_an_empty_key_and_never_overrides_the_body() {
        let create = route("CreateOrder");
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", HeaderValue::from_static("from-header-123"));
        let mut message =
            transcode::request_message(&create, vec![], None, br#"{"holdId":"h"}"#).expect("valid");
        fill_idempotency_key(&create, &mut message, &headers);
        assert_eq!(key_of(&message), "from-header-123");
        let mut message = transcode::request_message(
            &create,
            vec![],
            None,
            br#"{"holdId":"h","idempotencyKey":"from-body-456"}"#,
        )
        .expect("valid");
        fill_idempotency_key(&create, &mut message, &headers);
        assert_eq!(key_of(&message), "from-body-456");
        let mut message =
            transcode::request_message(&create, vec![], None, br#"{"holdId":"h"}"#).expect("valid");
        fill_idempotency_key(&create, &mut message, &HeaderMap::new());
        assert_eq!(key_of(&message), "");
    }
}
