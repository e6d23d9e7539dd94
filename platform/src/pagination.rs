//! Keyset pagination: `page_size` clamped to sensible bounds and opaque, tamper-evident-enough
//! `page_token`s that encode the last row's sort key (not an offset, so pages stay stable while
//! rows are added).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 200;

/// `0` means the default; negative is an error; above the maximum is clamped (as AIP-158 says).
pub fn page_size(requested: i32) -> Result<i64, ApiError> {
    match requested {
        n if n < 0 => Err(ApiError::invalid("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

/// The position after the last row of a page, ordered by (created_at, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    #[serde(rename = "t")]
    pub created_at: DateTime<Utc>,
    #[serde(rename = "i")]
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        // Serialising two plain fields cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// An empty token is the first page.
    pub fn decode(token: &str) -> Result<Option<Self>, ApiError> {
        if token.is_empty() {
            return Ok(None);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| ApiError::invalid("page_token", "is not a token this service issued"))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| ApiError::invalid("page_token", "is not a token this service issued"))
    }
}

/// Splits one extra fetched row off a page: fetch `size + 1`, and a next token exists only when
/// the extra row came back.
pub fn finish_page<T>(mut rows: Vec<T>, size: i64, cursor_of: impl Fn(&T) -> Cursor) -> (Vec<T>, String) {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if rows.len() > size {
        rows.truncate(size);
        let next = rows.last().map(|r| cursor_of(r).encode()).unwrap_or_default();
        (rows, next)
    } else {
        (rows, String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_clamps_and_rejects_negative() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7).ok(), Some(7));
        assert_eq!(page_size(100_000).ok(), Some(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_invalid_argument() {
        let cursor = Cursor {
            created_at: Utc::now(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).ok().flatten(), Some(cursor));
        assert!(Cursor::decode("").ok().flatten().is_none());
        assert!(matches!(Cursor::decode("%%%"), Err(ApiError::InvalidArgument(_))));
        assert!(matches!(Cursor::decode("e30"), Err(ApiError::InvalidArgument(_))));
    }
}
