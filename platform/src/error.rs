//! One error type for every service, mapped to `tonic::Status` with `google.rpc` details.
//!
//! Callers see a clear code and message, `BadRequest` field violations for bad input, an
//! `ErrorInfo` reason they can branch on, and `RetryInfo` when waiting helps. Unexpected errors
//! are logged with their cause chain and reach the caller only as "internal error".

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Domain used in `ErrorInfo`; the reason codes are documented per RPC in the protos.
pub const ERROR_DOMAIN: &str = "ticketing.dev";

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request, e.g. `organization.slug`.
    pub field: String,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input. Nothing was changed.
    #[error("invalid argument: {}", summary(.0, .0.len()))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{resource} not found")]
    NotFound { resource: &'static str },
    #[error("{message}")]
    AlreadyExists { reason: &'static str, message: String },
    /// The request is valid but the resource is in the wrong state for it.
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
        metadata: HashMap<String, String>,
    },
    #[error("{0}")]
    Unauthenticated(String),
    /// A credential that was checked and refused for what it is (an API key's secret, say), as
    /// opposed to a call that lacks one: callers that cache such verdicts cache only these.
    #[error("{message}")]
    CredentialRefused { reason: &'static str, message: String },
    #[error("{0}")]
    PermissionDenied(String),
    /// A limit was hit; `retry_after` tells when trying again can succeed.
    #[error("{message}")]
    ResourceExhausted {
        reason: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
    /// Another call is changing the same thing right now (a payment in progress): retrying the
    /// same request after `retry_after` gets its outcome. Never a verdict on the request.
    #[error("{message}")]
    Aborted {
        reason: &'static str,
        message: String,
        retry_after: Duration,
    },
    /// A dependency (database, cache, peer service) is down. Safe to retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; details go to the log, not to the caller.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Violations reported in one error, and the longest field name or description: the details
/// travel in HTTP/2 trailers, which peers cap (16 KiB is common), and a request with thousands of
/// bad seats must still get its INVALID_ARGUMENT rather than a protocol error.
const MAX_REPORTED_VIOLATIONS: usize = 20;
const MAX_VIOLATION_TEXT: usize = 200;
/// Violations named in the status message; the details carry the rest.
const VIOLATIONS_IN_MESSAGE: usize = 3;

fn summary(violations: &[FieldViolation], total: usize) -> String {
    let mut text = violations
        .iter()
        .take(VIOLATIONS_IN_MESSAGE)
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    if total > VIOLATIONS_IN_MESSAGE {
        text.push_str(&format!(" (and {} more)", total - VIOLATIONS_IN_MESSAGE));
    }
    text
}

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            reason,
            message: message.into(),
            metadata: HashMap::new(),
        }
    }

    pub fn already_exists(reason: &'static str, message: impl Into<String>) -> Self {
        Self::AlreadyExists {
            reason,
            message: message.into(),
        }
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::Unauthenticated(message.into())
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::PermissionDenied(message.into())
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(anyhow::anyhow!(message.into()))
    }

    /// Whether the same call may succeed if simply tried again (clients use this for retries).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument(violations) => {
                let total = violations.len();
                let reported: Vec<FieldViolation> = violations
                    .into_iter()
                    .take(MAX_REPORTED_VIOLATIONS)
                    .map(|v| FieldViolation {
                        field: clip(v.field, MAX_VIOLATION_TEXT),
                        description: clip(v.description, MAX_VIOLATION_TEXT),
                    })
                    .collect();
                let message = format!("invalid argument: {}", summary(&reported, total));
                let mut details = ErrorDetails::new();
                for v in reported {
                    details.add_bad_request_violation(v.field, v.description);
                }
                if total > MAX_REPORTED_VIOLATIONS {
                    details.add_bad_request_violation(
                        "",
                        format!("{} more violations not listed", total - MAX_REPORTED_VIOLATIONS),
                    );
                }
                details.set_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, HashMap::new());
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::NotFound { resource } => Status::with_error_details(
                Code::NotFound,
                format!("{resource} not found"),
                ErrorDetails::with_error_info(
                    "NOT_FOUND",
                    ERROR_DOMAIN,
                    [("resource".to_string(), resource.to_string())],
                ),
            ),
            ApiError::AlreadyExists { reason, message } => Status::with_error_details(
                Code::AlreadyExists,
                message,
                ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
            ),
            ApiError::FailedPrecondition {
                reason,
                message,
                metadata,
            } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
            ),
            ApiError::Unauthenticated(message) => Status::with_error_details(
                Code::Unauthenticated,
                message,
                ErrorDetails::with_error_info("UNAUTHENTICATED", ERROR_DOMAIN, HashMap::new()),
            ),
            ApiError::CredentialRefused { reason, message } => Status::with_error_details(
                Code::Unauthenticated,
                message,
                ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
            ),
            ApiError::PermissionDenied(message) => Status::with_error_details(
                Code::PermissionDenied,
                message,
                ErrorDetails::with_error_info("PERMISSION_DENIED", ERROR_DOMAIN, HashMap::new()),
            ),
            ApiError::ResourceExhausted {
                reason,
                message,
                retry_after,
            } => {
                let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new());
                details.set_retry_info(retry_after);
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::Aborted {
                reason,
                message,
                retry_after,
            } => {
                let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new());
                details.set_retry_info(Some(retry_after));
                Status::with_error_details(Code::Aborted, message, details)
            }
            ApiError::Unavailable(message) => {
                tracing::warn!(%message, "dependency unavailable");
                let mut details = ErrorDetails::with_error_info("UNAVAILABLE", ERROR_DOMAIN, HashMap::new());
                details.set_retry_info(Some(Duration::from_secs(1)));
                Status::with_error_details(Code::Unavailable, message, details)
            }
            ApiError::Internal(error) => {
                tracing::error!(error.cause_chain = ?error, error.message = %error, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match &error {
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
                Self::Unavailable("database connection lost".into())
            }
            Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
                Self::Unavailable("database conflict, try again".into())
            }
            // The session was cut under the statement (a restart, a failover, an operator's
            // pg_terminate_backend): the statement did not commit, and a retry gets a fresh one.
            Error::DatabaseError(_, info) if connection_lost(info.message()) => {
                Self::Unavailable("database connection lost".into())
            }
            // The connection was gone before the statement could be sent (the client's words).
            Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, info)
                if info.message() == "connection closed"
                    || info.message().starts_with("error communicating with the server") =>
            {
                Self::Unavailable("database connection lost".into())
            }
            // PostgreSQL text cannot hold NUL: a caller's bad input, not a fault here (the
            // statement failed, so nothing was stored).
            Error::DatabaseError(_, info)
                if info.message().contains("invalid byte sequence") && info.message().contains("0x00") =>
            {
                Self::invalid("request", "text fields must not contain NUL characters")
            }
            _ => Self::Internal(anyhow::Error::new(error).context("database query failed")),
        }
    }
}

/// PostgreSQL's words for a session it ended (SQLSTATE class 57, operator intervention).
fn connection_lost(message: &str) -> bool {
    message.starts_with("terminating connection")
        || message.contains("server closed the connection")
        || message.contains("the database system is shutting down")
}

impl<E: std::error::Error + Send + Sync + 'static> From<bb8::RunError<E>> for ApiError {
    fn from(error: bb8::RunError<E>) -> Self {
        match error {
            bb8::RunError::TimedOut => Self::Unavailable("timed out waiting for a connection".into()),
            bb8::RunError::User(e) => {
                tracing::warn!(error = %e, "connection failed");
                Self::Unavailable("a backing store is unreachable".into())
            }
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(error: redis::RedisError) -> Self {
        if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
            Self::Unavailable("cache unreachable".into())
        } else {
            Self::Internal(anyhow::Error::new(error).context("redis command failed"))
        }
    }
}

/// A required id field: INVALID_ARGUMENT naming `field` when it is empty or not a UUID.
pub fn parse_id(field: &str, raw: &str) -> ApiResult<uuid::Uuid> {
    id_problem(raw).map_err(|problem| ApiError::invalid(field, problem))
}

fn id_problem(raw: &str) -> Result<uuid::Uuid, &'static str> {
    if raw.is_empty() {
        return Err("is required");
    }
    uuid::Uuid::parse_str(raw).map_err(|_| "must be a UUID")
}

/// A required message field, or INVALID_ARGUMENT naming it.
pub fn required<T>(value: Option<T>, field: &'static str) -> ApiResult<T> {
    value.ok_or_else(|| ApiError::invalid(field, "is required"))
}

/// Collects every field violation of a request before answering, so a client fixes all at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Records the error of a parse step and returns its value, if any.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.add(field, description);
                None
            }
        }
    }

    /// Records a missing or malformed id and returns it when valid.
    pub fn id(&mut self, field: &str, raw: &str) -> Option<uuid::Uuid> {
        self.check(field, id_problem(raw).map_err(str::to_string))
    }

    /// Records a malformed timestamp; returns it when set and valid (None when unset).
    pub fn timestamp(
        &mut self,
        field: &str,
        value: Option<&prost_types::Timestamp>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let value = value?;
        self.check(
            field,
            crate::time::from_timestamp(field, value).map_err(|e| e.to_string()),
        )
    }

    /// As [`Violations::timestamp`], and an unset one is a violation too.
    pub fn required_timestamp(
        &mut self,
        field: &str,
        value: Option<&prost_types::Timestamp>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        if value.is_none() {
            self.add(field, "is required");
        }
        self.timestamp(field, value)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> ApiResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.0))
        }
    }

    /// Answers the violations, if any; otherwise unpacks the checked values, each of which a
    /// valid request has: `let (order, card) = v.finish((order, card))?;`.
    pub fn finish<T: Checked>(self, values: T) -> ApiResult<T::Values> {
        self.into_result()?;
        values
            .all()
            .ok_or_else(|| ApiError::internal("a checked field has no value"))
    }
}

/// Values read while checking a request (an `Option` each, or a tuple of them): all present
/// once no violation was recorded.
pub trait Checked {
    type Values;
    fn all(self) -> Option<Self::Values>;
}

impl<A> Checked for Option<A> {
    type Values = A;
    fn all(self) -> Option<A> {
        self
    }
}

macro_rules! checked_tuple {
    ($($name:ident),+) => {
        impl<$($name),+> Checked for ($(Option<$name>,)+) {
            type Values = ($($name,)+);
            #[allow(non_snake_case)]
            fn all(self) -> Option<Self::Values> {
                let ($($name,)+) = self;
                Some(($($name?,)+))
            }
        }
    };
}
checked_tuple!(A, B);
checked_tuple!(A, B, C);
checked_tuple!(A, B, C, D);
checked_tuple!(A, B, C, D, E);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_database_session_is_unavailable_and_other_failures_internal() {
        use diesel::result::{DatabaseErrorKind, Error};
        let error = |kind, message: &str| Error::DatabaseError(kind, Box::new(message.to_string()));
        for lost in [
            error(DatabaseErrorKind::UnableToSendCommand, "connection closed"),
            error(
                DatabaseErrorKind::UnableToSendCommand,
                "error communicating with the server: Connection reset by peer",
            ),
            error(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
            error(DatabaseErrorKind::ClosedConnection, "closed"),
        ] {
            assert!(matches!(ApiError::from(lost), ApiError::Unavailable(_)));
        }
        for broken in [
            error(
                DatabaseErrorKind::UnableToSendCommand,
                "error serializing parameter 0",
            ),
            error(DatabaseErrorKind::Unknown, "relation \"orders\" does not exist"),
        ] {
            assert!(matches!(ApiError::from(broken), ApiError::Internal(_)));
        }
    }

    #[test]
    fn finish_answers_the_violations_or_unpacks_every_checked_value() {
        let mut v = Violations::new();
        let id = v.id("order_id", "not-a-uuid");
        let when = v.required_timestamp("starts_at", None);
        let Err(ApiError::InvalidArgument(found)) = v.finish((id, when)) else {
            panic!("violations answered");
        };
        let fields: Vec<&str> = found.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["order_id", "starts_at"]);

        let mut v = Violations::new();
        let id = v.id("order_id", "0190b7a0-0000-7000-8000-000000000000");
        let when = v.timestamp(
            "starts_at",
            Some(&prost_types::Timestamp {
                seconds: 60,
                nanos: 0,
            }),
        );
        let unset = v.timestamp("ends_at", None);
        assert_eq!(unset, None, "an unset optional time is no violation");
        let (id, when) = v.finish((id, when)).expect("valid");
        assert_eq!((id.to_string().len(), when.timestamp()), (36, 60));
        // A value the checks forgot to produce is the service's fault, not the caller's.
        let missing: Option<u8> = None;
        assert!(matches!(
            Violations::new().finish(missing),
            Err(ApiError::Internal(_))
        ));
    }

    #[test]
    fn invalid_argument_carries_every_field_violation_as_bad_request() {
        let mut v = Violations::new();
        v.add("email", "must be an e-mail address");
        v.add("password", "must be at least 10 characters");
        let status: Status = v.into_result().expect_err("two violations").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("BadRequest detail");
        let fields: Vec<_> = bad.field_violations.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["email", "password"]);
        assert!(status.message().contains("email: must be an e-mail address"));
    }

    #[test]
    fn thousands_of_violations_fit_in_a_trailer() {
        let mut v = Violations::new();
        for n in 0..5_000 {
            v.add(
                format!("venue.seating_chart.sections[0].rows[0].seats[{n}].label"),
                "é".repeat(500),
            );
        }
        let status: Status = v.into_result().expect_err("violations").into();
        let details = status.get_error_details();
        let bad = details.bad_request().expect("BadRequest detail");
        assert_eq!(bad.field_violations.len(), MAX_REPORTED_VIOLATIONS + 1);
        assert!(
            bad.field_violations[MAX_REPORTED_VIOLATIONS]
                .description
                .contains("4980 more")
        );
        assert!(
            bad.field_violations
                .iter()
                .all(|f| f.description.len() <= MAX_VIOLATION_TEXT + 3)
        );
        assert!(status.message().contains("(and 4997 more)"));
        assert!(status.message().len() < 1_000);
        assert!(
            status.details().len() < 8 * 1024,
            "{} bytes of details",
            status.details().len()
        );
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let status: Status = ApiError::internal("password hash column corrupt").into();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn resource_exhausted_says_when_to_retry() {
        let status: Status = ApiError::ResourceExhausted {
            reason: "LOGIN_LOCKED",
            message: "too many attempts".into(),
            retry_after: Some(Duration::from_secs(30)),
        }
        .into();
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("LOGIN_LOCKED")
        );
    }
}
