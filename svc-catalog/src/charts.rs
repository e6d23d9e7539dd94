//! Decoded seating charts, cached by venue and version, with their seats' labels.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use prost::Message;
use ticketing_platform::{ApiError, ApiResult};
use ticketing_proto::ticketing::catalog::v1::{self as pb};
use uuid::Uuid;

/// Decoded seating charts by venue and version: a 10,000-seat chart takes milliseconds to read
/// and decode, and every order asks for its tiers' quotas.
#[derive(Clone, Default)]
pub struct ChartCache(Arc<Mutex<HashMap<Uuid, CachedChart>>>);

/// A chart, the venue version it was decoded from, and its seats' labels by seat id (with their
/// section: "Stalls A-12"), which orders ask for with every order of named seats.
pub(crate) type CachedChart = (DateTime<Utc>, Arc<pb::SeatingChart>, Arc<HashMap<String, String>>);

pub(crate) fn seat_labels(chart: &pb::SeatingChart) -> HashMap<String, String> {
    chart
        .sections
        .iter()
        .flat_map(|section| {
            section
                .rows
                .iter()
                .flat_map(move |row| row.seats.iter().map(move |seat| (section, seat)))
        })
        .map(|(section, seat)| {
            let label = if section.name.is_empty() {
                seat.label.clone()
            } else {
                format!("{} {}", section.name, seat.label)
            };
            (seat.id.clone(), label)
        })
        .collect()
}

/// Venues whose charts are kept; past this the cache starts over.
pub(crate) const CACHED_CHARTS: usize = 256;

impl ChartCache {
    pub(crate) fn get(&self, venue: Uuid, version: DateTime<Utc>) -> Option<CachedChart> {
        let cache = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .get(&venue)
            .filter(|(cached, _, _)| *cached == version)
            .cloned()
    }

    pub(crate) fn put(
        &self,
        venue: Uuid,
        version: DateTime<Utc>,
        chart: Arc<pb::SeatingChart>,
    ) -> CachedChart {
        let entry = (version, chart.clone(), Arc::new(seat_labels(&chart)));
        let mut cache = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= CACHED_CHARTS {
            cache.clear();
        }
        cache.insert(venue, entry.clone());
        entry
    }
}

pub(crate) fn decode_chart(bytes: &[u8]) -> ApiResult<pb::SeatingChart> {
    pb::SeatingChart::decode(bytes).map_err(|e| ApiError::internal(format!("stored chart unreadable: {e}")))
}
