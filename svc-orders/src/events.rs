//! What orders hears on the event backbone: payments' outcomes. (What it publishes is written
//! where each change is made, in the same transaction: `order.created`, `.paid`, `.expired`,
//! `.cancelled`, `.refunded`, `.payment_returned` and `ticket.checked_in`.)

use anyhow::Context;
use diesel_async::AsyncPgConnection;
use ticketing_platform::messaging::Handler;
use ticketing_proto::ticketing::events::v1 as events;
use uuid::Uuid;

use crate::{orders::Orders, payment_events};

ticketing_platform::event_set! {
    /// The events orders consumes.
    pub enum Heard {
        /// Finishes an order whose PayOrder stopped after the charge, takes an expired order
        /// back for a late payment, or refunds a payment that cannot pay its order.
        PaymentSucceeded(events::PaymentSucceeded),
        /// An order whose money went back outside orders is refunded too.
        PaymentRefunded(events::PaymentRefunded),
    }
}

/// Orders' consumer of [`Heard`].
pub struct PaymentOutcomes(pub Orders);

impl Handler for PaymentOutcomes {
    type Events = Heard;

    async fn handle(&self, conn: &mut AsyncPgConnection, event: &Heard) -> anyhow::Result<()> {
        match event {
            Heard::PaymentSucceeded(paid) => self.0.complete_from_event(conn, paid).await,
            Heard::PaymentRefunded(refund) => self.0.reconcile_refund(conn, refund).await,
        }
    }

    async fn settled(&self, conn: &mut AsyncPgConnection, event: &Heard) -> anyhow::Result<bool> {
        let Heard::PaymentSucceeded(paid) = event else {
            return Ok(false);
        };
        let order = Uuid::parse_str(&paid.order_id).context("order id")?;
        let payment = Uuid::parse_str(&paid.payment_id).context("payment id")?;
        payment_events::payment_settled(conn, order, payment).await
    }
}
