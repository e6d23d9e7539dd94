//! What catalog publishes on the event backbone: an event's lifecycle (published, updated,
//! cancelled, completed), written to the outbox in the transaction that changes it. Catalog
//! consumes nothing.

use ticketing_platform::{messaging::OutboxEvent, time::to_timestamp};
use ticketing_proto::ticketing::{common::v1::Money, events::v1 as events};

use crate::{
    domain::Status as EventStatus,
    store::{EventRow, TierRow},
};

/// The outbox event announcing that `row` was published, with what it puts on sale (each tier
/// with its places) and its venue's time zone, so readers need not ask catalog.
pub(crate) fn published_event(row: &EventRow, time_zone: &str, on_sale: &[(TierRow, i64)]) -> OutboxEvent {
    OutboxEvent::of(
        row.id,
        &events::EventPublished {
            event_id: row.id.to_string(),
            organization_id: row.organization_id.to_string(),
            title: row.title.clone(),
            starts_at: Some(to_timestamp(row.starts_at)),
            time_zone: time_zone.to_string(),
            tiers: on_sale
                .iter()
                .map(|(tier, capacity)| events::PublishedTier {
                    tier_id: tier.id.to_string(),
                    name: tier.name.clone(),
                    category_code: tier.seat_category_code.clone().unwrap_or_default(),
                    ga_area_id: tier.ga_area_id.clone().unwrap_or_default(),
                    price: Some(Money {
                        amount_minor: tier.price_minor,
                        currency: tier.currency.clone(),
                    }),
                    capacity: *capacity,
                })
                .collect(),
        },
    )
}

/// The outbox event announcing that `row` became `to` (or changed, for `Published` -> `Published`).
pub(crate) fn lifecycle_event(row: &EventRow, to: EventStatus, changed: bool, reason: &str) -> OutboxEvent {
    let event_id = row.id.to_string();
    let organization_id = row.organization_id.to_string();
    let starts_at = Some(to_timestamp(row.starts_at));
    let title = row.title.clone();
    match to {
        EventStatus::Published if changed => OutboxEvent::of(
            row.id,
            &events::EventUpdated {
                event_id,
                organization_id,
                title,
                starts_at,
            },
        ),
        EventStatus::Cancelled => OutboxEvent::of(
            row.id,
            &events::EventCancelled {
                event_id,
                organization_id,
                reason: reason.to_string(),
            },
        ),
        EventStatus::Completed => OutboxEvent::of(
            row.id,
            &events::EventCompleted {
                event_id,
                organization_id,
            },
        ),
        _ => OutboxEvent::of(
            row.id,
            &events::EventPublished {
                event_id,
                organization_id,
                title,
                starts_at,
                ..Default::default()
            },
        ),
    }
}
