//! Errors as HTTP: grpc-gateway's status table and its JSON body, `google.rpc.Status` with
//! `code`, `message` and `details` (each detail an `Any` with its `@type`).

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value as Json, json};
use tonic::{Code, Status};

use crate::transcode::{BadRequest, serialize_options};

#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    pub body: Json,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<std::time::Duration>,
}

impl HttpError {
    /// An error the gateway itself answers with (`code` is the gRPC code it stands for).
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "code": code as i32, "message": message.into(), "details": [] }),
            retry_after: None,
        }
    }

    /// Asks the client to come back after `delay`, in the header and as a `google.rpc.RetryInfo`.
    pub fn retry_after(mut self, delay: std::time::Duration) -> Self {
        if let Some(details) = self.body["details"].as_array_mut() {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format!("{:.3}s", delay.as_secs_f64()),
            }));
        }
        self.retry_after = Some(delay);
        self
    }

    /// Adds a `google.rpc.ErrorInfo` with a machine-readable reason.
    pub fn reason(mut self, reason: &str, metadata: Json) -> Self {
        if let Some(details) = self.body["details"].as_array_mut() {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "gateway.ticketing",
                "metadata": metadata,
            }));
        }
        self
    }

    pub fn bad_request(error: BadRequest) -> Self {
        let mut details = Vec::new();
        if let Some(field) = &error.field {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{ "field": field, "description": error.message }],
            }));
        }
        let message = match &error.field {
            Some(field) => format!("invalid argument: {field}: {}", error.message),
            None => error.message.clone(),
        };
        Self {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "code": Code::InvalidArgument as i32, "message": message, "details": details }),
            retry_after: None,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(delay) = self.retry_after {
            let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.max(1).into());
        }
        response
    }
}

/// grpc-gateway's `HTTPStatusFromCode`.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON of a gRPC error: the `google.rpc.Status` it carries when there is one, rendered
/// with every detail type the descriptors know, else code and message.
pub fn status_json(pool: &DescriptorPool, status: &Status) -> Json {
    let code = status.code() as i32;
    let mut body = json!({ "code": code, "message": status.message(), "details": [] });
    if status.details().is_empty() {
        return body;
    }
    let Some(descriptor) = pool.get_message_by_name("google.rpc.Status") else {
        return body;
    };
    let Ok(decoded) = DynamicMessage::decode(descriptor, status.details()) else {
        return body;
    };
    if let Ok(Json::Object(rendered)) =
        decoded.serialize_with_options(serde_json::value::Serializer, &serialize_options())
        && let Some(details) = rendered.get("details")
    {
        body["details"] = details.clone();
    }
    body
}

pub fn grpc_to_http(pool: &DescriptorPool, status: &Status) -> HttpError {
    let mut error = HttpError {
        status: http_status(status.code()),
        body: status_json(pool, status),
        retry_after: None,
    };
    let code = upstream_code(status);
    if code != status.code() {
        error.status = http_status(code);
        error.body["code"] = json!(code as i32);
    }
    // A service's RetryInfo (a locked login, a dependency that is down, a payment in progress)
    // becomes Retry-After.
    if matches!(code, Code::ResourceExhausted | Code::Unavailable | Code::Aborted) {
        use tonic_types::StatusExt;
        error.retry_after = status
            .get_error_details()
            .retry_info()
            .and_then(|info| info.retry_delay);
    }
    error
}

/// The code a failed call stands for (see [`ticketing_platform::clients::failure_code`]): a
/// connection refused or cut is UNAVAILABLE (503), a deadline that expired on the way
/// DEADLINE_EXCEEDED (504).
pub fn upstream_code(status: &Status) -> Code {
    ticketing_platform::clients::failure_code(status)
}

/// How a failed call counts for the upstream's circuit breaker: only the upstream failing to
/// answer does (unreachable, or past the deadline). A status the upstream sent, whatever its
/// code, says it is there: an UNAVAILABLE because one of its own dependencies is down must not
/// shut its other routes, and liveness probes cover a service that reports itself unhealthy.
pub fn breaker_outcome(status: &Status) -> Result<(), Code> {
    match upstream_code(status) {
        Code::DeadlineExceeded => Err(Code::DeadlineExceeded),
        _ if unreachable(status) => Err(Code::Unavailable),
        _ => Ok(()),
    }
}

/// Whether a failed call never reached the upstream's code: the connection was refused or cut
/// (a transport error under the status), as opposed to an answer or a deadline.
pub fn unreachable(status: &Status) -> bool {
    let transport =
        std::error::Error::source(status).is_some() || status.message().contains("transport error");
    transport && upstream_code(status) == Code::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_grpc_gateways_table() {
        for (code, http) in [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ] {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn a_services_retry_info_becomes_retry_after() {
        use tonic_types::{ErrorDetails, StatusExt};
        let pool = DescriptorPool::decode(ticketing_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let status = Status::with_error_details(
            Code::ResourceExhausted,
            "locked",
            ErrorDetails::with_retry_info(Some(std::time::Duration::from_millis(2500))),
        );
        let response = grpc_to_http(&pool, &status).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "3");
        let plain = grpc_to_http(&pool, &Status::resource_exhausted("no delay")).into_response();
        assert!(plain.headers().get("retry-after").is_none());
    }

    #[test]
    fn renders_rich_error_details() {
        use tonic_types::{ErrorDetails, StatusExt};
        let pool = DescriptorPool::decode(ticketing_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("event.title", "is required");
        details.set_error_info(
            "INVALID_ARGUMENT",
            "ticketing.dev",
            std::collections::HashMap::new(),
        );
        let status = Status::with_error_details(Code::InvalidArgument, "invalid argument", details);
        let json = status_json(&pool, &status);
        assert_eq!(json["code"], 3);
        let details = json["details"].as_array().expect("details");
        assert!(
            details
                .iter()
                .any(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest"
                    && d["fieldViolations"][0]["field"] == "event.title")
        );
        assert!(details.iter().any(|d| d["reason"] == "INVALID_ARGUMENT"));
    }
}
