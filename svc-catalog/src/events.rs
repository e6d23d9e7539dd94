//! What catalog publishes on the event backbone: an event's lifecycle (published, updated,
//! cancelled, completed), written to the outbox in the transaction that changes it. Catalog
//! consumes nothing.

use ticketing_platform::{messaging::OutboxEvent, time::to_timestamp};
use ticketing_proto::ticketing::events::v1 as events;

use crate::{domain::Status as EventStatus, store::EventRow};

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
            },
        ),
    }
}
