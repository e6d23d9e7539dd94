//! What identity publishes on the event backbone: `user.registered`, written to the outbox in the
//! transaction that creates the account. Identity consumes nothing.

use ticketing_platform::messaging::OutboxEvent;
use ticketing_proto::ticketing::events::v1 as events;

use crate::store::UserRow;

/// A new account, for the services that greet or count users.
pub(crate) fn user_registered(user: &UserRow) -> OutboxEvent {
    OutboxEvent::of(
        user.id,
        &events::UserRegistered {
            user_id: user.id.to_string(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
        },
    )
}
