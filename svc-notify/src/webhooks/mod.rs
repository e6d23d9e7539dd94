//! Webhooks for partners. An organization registers endpoints; every domain event notify hears
//! that concerns the organization becomes one delivery per endpoint listening to its type,
//! written in the transaction that handled the event, with a small JSON body (type, ids,
//! when) that partners follow up through the API. The [`sender::Deliverer`] posts deliveries
//! signed per Standard Webhooks ([`signature`]), retries failures on pretix's schedule for
//! about three days, disables an endpoint that answers 410 Gone, and logs every attempt.

mod api;
pub mod sender;
pub mod signature;
pub mod target;

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use serde_json::{Map, Value, json};
use ticketing_platform::messaging::Envelope;
use uuid::Uuid;

use crate::{events::Heard, store};

/// The event types an endpoint can listen to: those of the organization's sales. A buyer's own
/// (`user.registered`, `waitlist.offer_made`) are never a partner's.
pub const EVENT_TYPES: &[&str] = &[
    "event.published",
    "event.updated",
    "event.cancelled",
    "order.created",
    "order.paid",
    "order.expired",
    "order.cancelled",
    "order.refunded",
    "payment.failed",
    "ticket.checked_in",
];

/// The type of a test delivery.
pub const PING: &str = "webhook.ping";

/// The most endpoints one organization may have.
pub const MAX_ENDPOINTS: i64 = 20;

ticketing_platform::stored_enum! {
    /// Where a delivery is.
    pub enum DeliveryStatus {
        Pending = "pending",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

/// How long to wait after each failed attempt: pretix's schedule, about three days in all.
/// After the last wait's attempt fails, the delivery fails for good.
pub const RETRY_SCHEDULE: [Duration; 11] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(20 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(4 * 3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(12 * 3600),
    Duration::from_secs(12 * 3600),
    Duration::from_secs(24 * 3600),
];

/// What follows the `attempts`-th failed attempt under `schedule`: the wait before the next,
/// or None when it was the last.
pub fn next_wait(schedule: &[Duration], attempts: i32) -> Option<Duration> {
    usize::try_from(attempts - 1)
        .ok()
        .and_then(|n| schedule.get(n).copied())
}

/// The body every delivery carries: `{"type", "timestamp", "data"}`, as Standard Webhooks
/// suggests, with ids only.
pub fn payload(event_type: &str, at: DateTime<Utc>, data: Map<String, Value>) -> String {
    json!({
        "type": event_type,
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

fn ids<const N: usize>(pairs: [(&str, &str); N]) -> Map<String, Value> {
    pairs
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect()
}

/// The event's ids for partners and the event (of the catalog) it is about.
fn facts_of(heard: &Heard) -> (Map<String, Value>, &str) {
    match heard {
        // Not in EVENT_TYPES: never sent.
        Heard::UserRegistered(_) | Heard::WaitlistOfferMade(_) => (Map::new(), ""),
        Heard::EventPublished(e) => (ids([("event_id", &e.event_id)]), &e.event_id),
        Heard::EventUpdated(e) => (ids([("event_id", &e.event_id)]), &e.event_id),
        Heard::EventCancelled(e) => (ids([("event_id", &e.event_id)]), &e.event_id),
        Heard::OrderCreated(o) => (
            ids([("order_id", &o.order_id), ("event_id", &o.event_id)]),
            &o.event_id,
        ),
        Heard::OrderPaid(o) => (
            ids([("order_id", &o.order_id), ("event_id", &o.event_id)]),
            &o.event_id,
        ),
        Heard::OrderExpired(o) => (
            ids([("order_id", &o.order_id), ("event_id", &o.event_id)]),
            &o.event_id,
        ),
        Heard::OrderCancelled(o) => (
            ids([("order_id", &o.order_id), ("event_id", &o.event_id)]),
            &o.event_id,
        ),
        Heard::OrderRefunded(o) => (
            ids([
                ("order_id", &o.order_id),
                ("event_id", &o.event_id),
                ("refund_id", &o.refund_id),
            ]),
            &o.event_id,
        ),
        Heard::PaymentFailed(p) => (
            ids([("payment_id", &p.payment_id), ("order_id", &p.order_id)]),
            "",
        ),
        Heard::TicketCheckedIn(t) => (
            ids([
                ("ticket_id", &t.ticket_id),
                ("order_id", &t.order_id),
                ("event_id", &t.event_id),
                ("gate", &t.gate),
            ]),
            &t.event_id,
        ),
    }
}

/// Queues the deliveries `heard` causes: one per enabled endpoint of the organization it
/// concerns that listens to its type. A redelivered event queues nothing more (one delivery per
/// event and endpoint). Whether anything was queued.
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    heard: &Heard,
    envelope: &Envelope,
) -> anyhow::Result<bool> {
    if !EVENT_TYPES.contains(&envelope.event_type.as_str()) {
        return Ok(false);
    }
    let (mut data, mut event_id) = facts_of(heard);
    let order_event;
    if let Heard::PaymentFailed(p) = heard {
        // payment.failed names the order only; notify knows its event from order.created.
        if let Ok(order) = Uuid::parse_str(&p.order_id)
            && let Some((event, _)) = store::order(conn, order).await?
        {
            order_event = event.to_string();
            event_id = &order_event;
            data.insert("event_id".into(), Value::String(order_event.clone()));
        }
    }
    let Some(organization) = organization_of(conn, heard, event_id).await? else {
        return Ok(false);
    };
    data.insert("organization_id".into(), Value::String(organization.to_string()));
    // The consumer already refused an envelope whose id is not a UUID; an event without a
    // time is stamped now rather than held back.
    let source = Uuid::parse_str(&envelope.event_id)?;
    let at = envelope
        .occurred_at
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .unwrap_or_else(Utc::now);
    let body = payload(&envelope.event_type, at, data);
    let queued = store::queue_deliveries(conn, organization, &envelope.event_type, source, &body).await?;
    Ok(queued > 0)
}

/// Deletes settled deliveries older than `retention` (pretix keeps its log 30 days), a batch at
/// a time so no statement runs long; how many.
pub async fn prune(pool: &ticketing_platform::db::PgPool, retention: Duration) -> anyhow::Result<usize> {
    const BATCH: i64 = 1000;
    let before = Utc::now() - chrono::Duration::from_std(retention)?;
    let mut conn = pool.get().await?;
    let mut pruned = 0;
    loop {
        let n = store::prune_deliveries(&mut conn, before, BATCH).await?;
        pruned += n;
        if (n as i64) < BATCH {
            return Ok(pruned);
        }
    }
}

async fn organization_of(
    conn: &mut AsyncPgConnection,
    heard: &Heard,
    event_id: &str,
) -> anyhow::Result<Option<Uuid>> {
    let named = match heard {
        Heard::EventPublished(e) => Some(&e.organization_id),
        Heard::EventUpdated(e) => Some(&e.organization_id),
        Heard::EventCancelled(e) => Some(&e.organization_id),
        _ => None,
    };
    if let Some(org) = named.and_then(|o| Uuid::parse_str(o).ok()) {
        return Ok(Some(org));
    }
    let Ok(event) = Uuid::parse_str(event_id) else {
        return Ok(None);
    };
    // An event published before notify listened is unknown here: its webhooks are not sent.
    Ok(store::event(conn, event).await?.map(|e| e.organization_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_schedule_for_about_three_days_then_stop() {
        assert_eq!(next_wait(&RETRY_SCHEDULE, 1), Some(Duration::from_secs(5)));
        assert_eq!(next_wait(&RETRY_SCHEDULE, 11), Some(Duration::from_secs(86_400)));
        assert_eq!(next_wait(&RETRY_SCHEDULE, 12), None);
        assert_eq!(next_wait(&RETRY_SCHEDULE, 0), None);
        let total: Duration = RETRY_SCHEDULE.iter().sum();
        assert!((2 * 86_400..4 * 86_400).contains(&total.as_secs()), "{total:?}");
    }

    #[test]
    fn partners_hear_only_heard_events_and_never_a_buyer_s_own() {
        use ticketing_platform::messaging::EventSet;
        use ticketing_proto::{DomainEvent, ticketing::events::v1 as events};
        for t in EVENT_TYPES {
            assert!(Heard::TYPES.contains(t), "{t} is heard");
        }
        for own in [events::UserRegistered::TYPE, events::WaitlistOfferMade::TYPE] {
            assert!(!EVENT_TYPES.contains(&own), "{own}");
        }
    }

    #[test]
    fn the_body_names_type_time_and_ids_only() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let body = payload(
            "order.paid",
            at,
            ids([("order_id", "o1"), ("event_id", ""), ("x", "y")]),
        );
        let parsed: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(parsed["type"], "order.paid");
        assert_eq!(parsed["timestamp"], "2023-11-14T22:13:20.000Z");
        assert_eq!(parsed["data"], json!({"order_id": "o1", "x": "y"}));
    }
}
