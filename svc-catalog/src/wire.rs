//! Catalog rows as the API shows them, and its page tokens.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ticketing_platform::{
    ApiError, ApiResult,
    time::{to_timestamp, to_timestamp_opt},
};
use ticketing_proto::ticketing::{
    catalog::v1::{self as pb},
    common::v1::{Address, Money},
};
use uuid::Uuid;

use crate::charts::*;
use crate::{
    domain::Status as EventStatus,
    store::{After, EventRow, TierRow, VenueRow},
};

/// A cancellation reason travels to every buyer's notification; a paragraph is plenty.
pub(crate) const MAX_CANCEL_REASON_CHARS: usize = 1000;

pub(crate) fn venue_proto(row: &VenueRow, with_chart: bool) -> ApiResult<pb::Venue> {
    Ok(pb::Venue {
        id: row.id.to_string(),
        organization_id: row.organization_id.to_string(),
        name: row.name.clone(),
        address: Some(Address {
            line1: row.address_line1.clone(),
            line2: row.address_line2.clone(),
            city: row.city.clone(),
            region: row.region.clone(),
            postal_code: row.postal_code.clone(),
            country: row.country.clone(),
        }),
        timezone: row.timezone.clone(),
        seating_chart: if with_chart {
            Some(decode_chart(&row.chart)?)
        } else {
            None
        },
        capacity: row.capacity,
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
    })
}

pub(crate) fn tier_quota(chart: &pb::SeatingChart, tier: &TierRow) -> i32 {
    match (&tier.seat_category_code, &tier.ga_area_id) {
        (Some(code), _) => {
            let n = chart
                .sections
                .iter()
                .flat_map(|s| &s.rows)
                .flat_map(|r| &r.seats)
                .filter(|s| &s.category_code == code)
                .count();
            i32::try_from(n).unwrap_or(i32::MAX)
        }
        (None, Some(area)) => chart
            .ga_areas
            .iter()
            .find(|a| &a.id == area)
            .map(|a| a.capacity)
            .unwrap_or(0),
        _ => 0,
    }
}

pub(crate) fn tier_proto(row: &TierRow, chart: Option<&pb::SeatingChart>) -> pb::TicketTier {
    pb::TicketTier {
        id: row.id.to_string(),
        event_id: row.event_id.to_string(),
        name: row.name.clone(),
        price: Some(Money {
            amount_minor: row.price_minor,
            currency: row.currency.clone(),
        }),
        target: match (&row.seat_category_code, &row.ga_area_id) {
            (Some(code), _) => Some(pb::ticket_tier::Target::SeatCategoryCode(code.clone())),
            (None, Some(area)) => Some(pb::ticket_tier::Target::GaAreaId(area.clone())),
            _ => None,
        },
        sales_start: to_timestamp_opt(row.sales_start),
        sales_end: to_timestamp_opt(row.sales_end),
        per_order_limit: row.per_order_limit,
        quota: chart.map(|c| tier_quota(c, row)).unwrap_or(0),
    }
}

pub(crate) fn event_proto(row: &EventRow, tiers: &[TierRow], chart: Option<&pb::SeatingChart>) -> pb::Event {
    pb::Event {
        id: row.id.to_string(),
        organization_id: row.organization_id.to_string(),
        venue_id: row.venue_id.to_string(),
        title: row.title.clone(),
        description: row.description.clone(),
        starts_at: Some(to_timestamp(row.starts_at)),
        ends_at: Some(to_timestamp(row.ends_at)),
        timezone: row.timezone.clone(),
        category: row.category,
        image_urls: row.image_urls.clone(),
        status: EventStatus::parse(&row.status)
            .map(|s| s.to_proto() as i32)
            .unwrap_or(0),
        tiers: tiers.iter().map(|t| tier_proto(t, chart)).collect(),
        venue_name: row.venue_name.clone(),
        city: row.city.clone(),
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
        published_at: to_timestamp_opt(row.published_at),
    }
}

pub(crate) fn status_of(row: &EventRow) -> ApiResult<EventStatus> {
    EventStatus::parse(&row.status).ok_or_else(|| ApiError::internal("unknown stored status"))
}

/// The list position of ListEvents, opaque to clients.
#[derive(Serialize, Deserialize)]
pub(crate) struct EventsToken {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) t: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) i: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) o: Option<i64>,
}

impl EventsToken {
    pub(crate) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub(crate) fn decode(token: &str) -> ApiResult<Option<After>> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = || ApiError::invalid("page_token", "is not a token this service issued");
        let parsed: Self = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(bad)?;
        match parsed {
            Self {
                t: Some(t),
                i: Some(i),
                o: None,
            } => Ok(Some(After::Key(t, i))),
            Self {
                t: None,
                i: None,
                o: Some(o),
            } if o >= 0 => Ok(Some(After::Offset(o))),
            _ => Err(bad()),
        }
    }
}
