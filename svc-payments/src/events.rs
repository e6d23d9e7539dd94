//! What payments hears on the event backbone: orders that closed unpaid (no new charge may
//! start for them) and refunds to pay out. (What it publishes, `payment.succeeded`, `.failed`
//! and `.refunded`, is written where each charge or refund is settled.)

use anyhow::Context;
use diesel_async::AsyncPgConnection;
use ticketing_platform::messaging::Handler;
use ticketing_proto::ticketing::events::v1 as events;
use uuid::Uuid;

use crate::payments::Payments;

ticketing_platform::event_set! {
    /// The events payments consumes.
    pub enum Heard {
        /// No charge for the order may start any more.
        OrderExpired(events::OrderExpired),
        /// No charge for the order may start any more.
        OrderCancelled(events::OrderCancelled),
        /// The refunded lines' money goes back, once per refund id.
        OrderRefunded(events::OrderRefunded),
    }
}

/// Payments' consumer of [`Heard`].
pub struct OrderClosings(pub Payments);

impl Handler for OrderClosings {
    type Events = Heard;

    async fn handle(&self, conn: &mut AsyncPgConnection, event: &Heard) -> anyhow::Result<()> {
        let order_id = match event {
            Heard::OrderExpired(e) => &e.order_id,
            Heard::OrderCancelled(e) => &e.order_id,
            Heard::OrderRefunded(refund) => {
                let amount = refund.amount.as_ref().map_or(0, |m| m.amount_minor);
                if refund.payment_id.is_empty() || amount == 0 {
                    // A free order: nothing was charged.
                    return Ok(());
                }
                let payment = Uuid::parse_str(&refund.payment_id).context("payment id")?;
                let key = format!("order-refund:{}", refund.refund_id);
                // Money that already went back (a refund made at the processor, which
                // orders is reconciling) is not refunded twice.
                let remaining = match self.0.get(payment).await {
                    Ok(Some(row)) => row.amount - row.refunded,
                    Ok(None) => anyhow::bail!("order.refunded names unknown payment {payment}"),
                    Err(e) => anyhow::bail!("reading payment {payment}: {e}"),
                };
                if self
                    .0
                    .refund_exists(&key)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                {
                    return Ok(());
                }
                let amount = amount.min(remaining);
                if amount == 0 {
                    return Ok(());
                }
                self.0
                    .refund(payment, &key, Some(amount), "order refunded")
                    .await
                    .map_err(|e| anyhow::anyhow!("refunding payment {payment}: {e}"))?;
                return Ok(());
            }
        };
        let order_id = Uuid::parse_str(order_id).context("order id")?;
        self.0.close_order(conn, order_id).await
    }
}
