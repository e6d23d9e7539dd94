//! What the `payment.succeeded` consumer does: finish an order whose PayOrder did not, with a
//! payment that matches it, or give the payment back.

use anyhow::Context as _;
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use ticketing_platform::ApiError;
use ticketing_proto::ticketing::{
    events::v1 as events,
    payments::v1::{self as payments},
};
use tonic::Request;
use uuid::Uuid;

use crate::{checkout::*, orders::*, schema::orders, store::*};

/// Whether a `payment.succeeded` can change nothing here: its order is paid by this very
/// payment, or closed unpaid (payments refunds a charge for a closed order itself). States an
/// order never leaves, so this is read before the consumer's transaction.
pub async fn payment_settled(conn: &mut Conn, order_id: Uuid, payment_id: Uuid) -> anyhow::Result<bool> {
    let found: Option<(String, Option<Uuid>)> = orders::table
        .find(order_id)
        .select((orders::status, orders::payment_id))
        .first(conn)
        .await
        .optional()
        .with_context(|| format!("reading order {order_id}"))?;
    Ok(match found {
        Some((status, paid_by)) if matches!(status.as_str(), "paid" | "partially_refunded" | "refunded") => {
            paid_by == Some(payment_id)
        }
        Some((status, _)) => status != "pending_payment",
        None => false,
    })
}

/// Why a payment cannot pay an order, if it cannot: only a payment of the order's exact total,
/// for its current attempt and its buyer, pays it.
fn mismatch(order: &OrderRow, paid: &events::PaymentSucceeded) -> Option<String> {
    let amount = paid.amount.clone().unwrap_or_default();
    if amount.amount_minor != order.total || amount.currency != order.currency {
        return Some(format!(
            "the payment is {} {}, the order's total {} {}",
            amount.amount_minor, amount.currency, order.total, order.currency
        ));
    }
    if paid.idempotency_key != attempt_key(order.id, order.payment_attempt) {
        return Some("the payment is not for the order's current payment attempt".into());
    }
    if paid.customer_id != order.buyer_id.to_string() {
        return Some("the payment was made by someone other than the buyer".into());
    }
    None
}

impl Orders {
    /// Gives a payment that pays nothing here back in full (idempotent on the payment).
    pub(crate) async fn reject_payment(&self, payment_id: Uuid, why: &str) -> anyhow::Result<()> {
        tracing::warn!(payment = %payment_id, why, "payment refused: refunding it");
        let refunded = self
            .peers
            .payments
            .clone()
            .refund(Request::new(payments::RefundRequest {
                idempotency_key: format!("orders-refused:{payment_id}"),
                payment_id: payment_id.to_string(),
                amount: None,
                reason: format!("refused by orders: {why}"),
            }))
            .await;
        metrics::counter!("orders_payments_refused_total").increment(1);
        match refunded {
            Ok(_) => Ok(()),
            // Already refunded (or never succeeded): nothing of it is kept.
            Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(()),
            Err(status) => anyhow::bail!("refunding refused payment {payment_id}: {status}"),
        }
    }

    /// The `payment.succeeded` consumer's work: finish an order whose PayOrder did not, but
    /// only with a payment that matches it, and only once its places are committed to it.
    /// Anything else is refunded.
    pub async fn complete_from_event(
        &self,
        conn: &mut Conn,
        paid: &events::PaymentSucceeded,
    ) -> anyhow::Result<()> {
        let order_id = Uuid::parse_str(&paid.order_id).context("order id")?;
        let payment_id = Uuid::parse_str(&paid.payment_id).context("payment id")?;
        let order: Option<OrderRow> = find_order(conn, order_id).await?;
        let Some(order) = order else {
            return self.reject_payment(payment_id, "no such order").await;
        };
        if order.is_paid() {
            if order.payment_id == Some(payment_id) {
                return Ok(());
            }
            return self
                .reject_payment(payment_id, "the order was paid by another payment")
                .await;
        }
        if order.status != "pending_payment" {
            // Expired or cancelled: payments refunds a charge for a closed order itself.
            return Ok(());
        }
        if let Some(why) = mismatch(&order, paid) {
            return self.reject_payment(payment_id, &why).await;
        }
        // The order's lease, as PayOrder takes it: no expiry or cancellation can close the order
        // between the commit of its places and its completion (the update's row lock holds them
        // off until this transaction ends).
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.config.charge_lease).unwrap_or_default();
        let leased = diesel::update(
            orders::table
                .find(order_id)
                .filter(orders::status.eq("pending_payment"))
                .filter(lease_free(now)),
        )
        .set((
            orders::charging_until.eq(Some(now + lease)),
            orders::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
        if leased == 0 {
            // A PayOrder of the order is under way and finishes it; if its process died, the
            // lease runs out and a later delivery of this event does.
            anyhow::bail!("order {order_id} is being paid; its payment event is handled later");
        }
        if let Err(status) = self.commit_places(&order).await {
            return match status.code() {
                tonic::Code::FailedPrecondition | tonic::Code::NotFound | tonic::Code::PermissionDenied => {
                    self.reject_payment(payment_id, "its places could not be reserved")
                        .await
                }
                _ => anyhow::bail!("committing order {order_id}'s places: {status}"),
            };
        }
        match complete_in(conn, &self.signer, order_id, Some(payment_id)).await {
            Ok(Completed::Before(order)) if order.payment_id != Some(payment_id) => {
                self.reject_payment(payment_id, "the order was paid by another payment")
                    .await
            }
            Ok(Completed::Now(_)) => {
                self.outbox.notify();
                Ok(())
            }
            Ok(Completed::Before(_)) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(ApiError::FailedPrecondition { .. }) => Ok(()),
            Err(other) => Err(anyhow::anyhow!("completing order {order_id}: {other}")),
        }
    }
}
