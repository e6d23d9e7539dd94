//! What each message of `ticketing/events/v1/events.proto` is on the event backbone: its event
//! type (the routing key and `Envelope.event_type`) and the kind of aggregate it is about,
//! declared once, here. Producers build outbox events from the message and consumers bind and
//! dispatch by these names, so no event type is written as a free string anywhere else; a test
//! holds the table to the type each message's comment in the proto names.

use crate::ticketing::events::v1 as events;

/// A domain event message.
pub trait DomainEvent: prost::Message + Default {
    /// The routing key and `Envelope.event_type`, e.g. `order.paid`.
    const TYPE: &'static str;
    /// The kind of aggregate it is about (`order`, `payment`, ...): `Envelope.aggregate_type`.
    const AGGREGATE: &'static str;
}

macro_rules! domain_events {
    ($($message:ident => $type:literal about $aggregate:literal;)+) => {
        $(
            impl DomainEvent for events::$message {
                const TYPE: &'static str = $type;
                const AGGREGATE: &'static str = $aggregate;
            }
        )+

        /// Every event type, with the message that carries it.
        pub const ALL: &[(&str, &str)] = &[$(($type, stringify!($message))),+];
    };
}

domain_events! {
    UserRegistered => "user.registered" about "user";
    EventPublished => "event.published" about "event";
    EventCancelled => "event.cancelled" about "event";
    EventCompleted => "event.completed" about "event";
    EventUpdated => "event.updated" about "event";
    OrderCreated => "order.created" about "order";
    OrderPaid => "order.paid" about "order";
    OrderPaymentReturned => "order.payment_returned" about "order";
    OrderCancelled => "order.cancelled" about "order";
    OrderExpired => "order.expired" about "order";
    OrderRefunded => "order.refunded" about "order";
    PaymentSucceeded => "payment.succeeded" about "payment";
    PaymentFailed => "payment.failed" about "payment";
    PaymentRefunded => "payment.refunded" about "payment";
    TicketCheckedIn => "ticket.checked_in" about "ticket";
    WaitlistOfferMade => "waitlist.offer_made" about "waitlist_entry";
    WaitlistOfferEnded => "waitlist.offer_ended" about "waitlist_entry";
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message;

    #[test]
    fn every_event_message_has_the_type_its_proto_comment_names() {
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).expect("descriptors");
        let file = set
            .file
            .iter()
            .find(|f| f.name() == "ticketing/events/v1/events.proto")
            .expect("events.proto");
        let info = file.source_code_info.as_ref().expect("source info");
        // The comment above each message starts with its event type ("// order.paid").
        let mut named: BTreeMap<String, String> = BTreeMap::new();
        for (index, message) in file.message_type.iter().enumerate() {
            let path = [4, i32::try_from(index).expect("index")];
            let comment = info
                .location
                .iter()
                .find(|l| l.path == path)
                .map(|l| l.leading_comments().trim().to_string())
                .unwrap_or_default();
            let first = comment.split([' ', ':', '\n']).next().unwrap_or_default();
            if first.contains('.')
                && first
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
            {
                named.insert(first.to_string(), message.name().to_string());
            }
        }
        let declared: BTreeMap<String, String> = super::ALL
            .iter()
            .map(|(t, m)| (t.to_string(), m.to_string()))
            .collect();
        assert_eq!(declared, named, "the table above and events.proto disagree");
    }
}
