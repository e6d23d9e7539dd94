//! Conversions between `chrono` (storage) and `google.protobuf.Timestamp` (wire).

use chrono::{DateTime, TimeZone, Utc};
use prost_types::Timestamp;

use crate::error::ApiError;

pub fn to_timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn to_timestamp_opt(at: Option<DateTime<Utc>>) -> Option<Timestamp> {
    at.map(to_timestamp)
}

/// A wire timestamp as a time, or INVALID_ARGUMENT naming `field`.
pub fn from_timestamp(field: &str, ts: &Timestamp) -> Result<DateTime<Utc>, ApiError> {
    let nanos =
        u32::try_from(ts.nanos).map_err(|_| ApiError::invalid(field, "nanos must not be negative"))?;
    Utc.timestamp_opt(ts.seconds, nanos)
        .single()
        .ok_or_else(|| ApiError::invalid(field, "is not a valid time"))
}
