//! What the `payment.succeeded` consumer does: finish an order whose PayOrder did not, with a
//! payment that matches it; take an expired order back for a payment that came late, when its
//! places are still free; otherwise give the payment back and tell the buyer why.

use anyhow::Context as _;
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use ticketing_platform::{
    ApiError,
    clients::internal_peer_error,
    messaging::{self, OutboxEvent},
};
use ticketing_proto::ticketing::{
    events::v1 as events,
    inventory::v1 as inventory,
    payments::v1::{self as payments},
};
use tonic::Request;
use uuid::Uuid;

use crate::{
    checkout::*,
    orders::*,
    schema::{discount_codes, orders},
    store::*,
};

/// Whether a `payment.succeeded` can change nothing here: its order is paid by this very
/// payment, a state an order never leaves, so this is read before the consumer's transaction.
pub async fn payment_settled(conn: &mut Conn, order_id: Uuid, payment_id: Uuid) -> anyhow::Result<bool> {
    let paid_by: Option<Option<Uuid>> = orders::table
        .find(order_id)
        .filter(orders::status.eq_any([
            OrderStatus::Paid,
            OrderStatus::PartiallyRefunded,
            OrderStatus::Refunded,
        ]))
        .select(orders::payment_id)
        .first(conn)
        .await
        .optional()
        .with_context(|| format!("reading order {order_id}"))?;
    Ok(paid_by == Some(Some(payment_id)))
}

/// How a late payment's revival of an expired order came out.
enum Revival {
    Revived,
    /// Not expired any more when locked (revived by a redelivery, say): handled as it is now.
    NotExpired,
    /// Cannot be taken back (its places are gone); the payment goes back, for this reason.
    Refused(&'static str),
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
    /// Refunds a payment that cannot pay `order` and tells its buyer why (`order.payment_returned`,
    /// in the consumer's transaction).
    async fn return_payment(
        &self,
        conn: &mut Conn,
        order: &OrderRow,
        paid: &events::PaymentSucceeded,
        why: &str,
    ) -> anyhow::Result<()> {
        let payment_id = Uuid::parse_str(&paid.payment_id).context("payment id")?;
        self.reject_payment(payment_id, why).await?;
        messaging::enqueue(
            conn,
            vec![OutboxEvent::of(
                order.id,
                &events::OrderPaymentReturned {
                    order_id: order.id.to_string(),
                    event_id: order.event_id.to_string(),
                    buyer_id: order.buyer_id.to_string(),
                    buyer_email: order.buyer_email.clone(),
                    payment_id: paid.payment_id.clone(),
                    amount: paid.amount.clone(),
                    reason: why.to_string(),
                },
            )],
        )
        .await?;
        self.outbox.notify();
        Ok(())
    }

    /// Takes an expired order back for a payment of it that came late: under the order's row
    /// lock, inventory must sell it its places again; then it is paid with its tickets and
    /// `order.paid` (reactivated), its discount code's use taken again when the code has one
    /// left (the buyer paid the discounted price either way). Once inventory has sold the places
    /// nothing refuses the revival, so a redelivery after a crash finishes it: places are never
    /// left sold to an order whose payment was returned.
    #[tracing::instrument(level = "debug", skip_all, fields(order = %order_id, payment = %payment_id))]
    async fn revive(&self, conn: &mut Conn, order_id: Uuid, payment_id: Uuid) -> anyhow::Result<Revival> {
        let revival = conn
            .transaction::<_, ApiError, _>(async |conn| {
                let order = lock(conn, order_id).await?;
                if order.status != OrderStatus::Expired {
                    return Ok(Revival::NotExpired);
                }
                let lines = lines_of(conn, order_id).await?;
                match self.reclaim_places(&order, &lines).await {
                    Ok(()) => {}
                    Err(status)
                        if matches!(
                            status.code(),
                            tonic::Code::FailedPrecondition | tonic::Code::NotFound
                        ) =>
                    {
                        tracing::info!(order = %order_id, %status, "a late payment's places are gone");
                        return Ok(Revival::Refused("its places were taken after it expired"));
                    }
                    Err(status) => return Err(internal_peer_error("inventory", status)),
                }
                if let Some(code) = &order.discount_code {
                    let taken = diesel::update(discount_codes::table.find((order.event_id, code)))
                        .filter(
                            discount_codes::max_uses
                                .eq(0)
                                .or(discount_codes::times_used.lt(discount_codes::max_uses)),
                        )
                        .set(discount_codes::times_used.eq(discount_codes::times_used + 1))
                        .execute(conn)
                        .await?;
                    if taken == 0 {
                        tracing::warn!(order = %order_id, code, "revived without counting its discount code: it was used up meanwhile");
                    }
                }
                let now = Utc::now();
                let order = diesel::update(orders::table.find(order_id))
                    .set((
                        orders::status.eq(OrderStatus::Paid),
                        orders::payment_id.eq(Some(payment_id)),
                        orders::paid_at.eq(Some(now)),
                        orders::attempt_open.eq(false),
                        orders::charging_until.eq(None::<chrono::DateTime<Utc>>),
                        orders::lease_holder.eq(None::<Uuid>),
                        orders::last_payment_error.eq(None::<String>),
                        orders::updated_at.eq(now),
                    ))
                    .returning(OrderRow::as_returning())
                    .get_result(conn)
                    .await?;
                issue(conn, &self.signer, order, Some(payment_id), true).await?;
                Ok(Revival::Revived)
            })
            .await
            .map_err(|e| anyhow::anyhow!("reviving order {order_id}: {e}"))?;
        if let Revival::Revived = revival {
            tracing::info!(order = %order_id, payment = %payment_id, "an expired order was taken back for its late payment");
            metrics::counter!("orders_reactivated_total").increment(1);
            self.outbox.notify();
        }
        Ok(revival)
    }

    /// Asks inventory to sell an expired order's places to it again (all or none).
    async fn reclaim_places(&self, order: &OrderRow, lines: &[LineRow]) -> Result<(), tonic::Status> {
        let mut items: Vec<inventory::HoldItem> = Vec::new();
        for line in lines {
            match &line.seat_id {
                Some(seat) => items.push(inventory::HoldItem {
                    tier_id: line.tier_id.clone(),
                    place: Some(inventory::hold_item::Place::SeatId(seat.clone())),
                    quantity: 1,
                }),
                None => match items
                    .iter_mut()
                    .find(|i| i.place.is_none() && i.tier_id == line.tier_id)
                {
                    Some(item) => item.quantity += 1,
                    None => items.push(inventory::HoldItem {
                        tier_id: line.tier_id.clone(),
                        place: None,
                        quantity: 1,
                    }),
                },
            }
        }
        self.peers
            .inventory
            .clone()
            .reclaim_places(Request::new(inventory::ReclaimPlacesRequest {
                order_id: order.id.to_string(),
                event_id: order.event_id.to_string(),
                customer_id: order.buyer_id.to_string(),
                hold_id: order.hold_id.to_string(),
                items,
            }))
            .await
            .map(drop)
    }

    /// Gives a payment that pays nothing here back in full (idempotent on the payment).
    #[tracing::instrument(level = "debug", skip_all, fields(payment = %payment_id))]
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

    /// The `payment.succeeded` consumer's work: finish a pending order with a payment that
    /// matches it (once its places are committed), or take an expired one back while its places
    /// are free; any other payment is returned, with `order.payment_returned` when the order
    /// exists.
    #[tracing::instrument(level = "debug", skip_all, fields(order = %paid.order_id, payment = %paid.payment_id))]
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
                .return_payment(conn, &order, paid, "the order was paid by another payment")
                .await;
        }
        if let Some(why) = mismatch(&order, paid) {
            return self.return_payment(conn, &order, paid, &why).await;
        }
        match order.status {
            OrderStatus::PendingPayment => {}
            // Paid after the order expired (its charge outlived the checkout): the order comes
            // back when its places are still free, else the money goes back.
            OrderStatus::Expired => {
                return match self.revive(conn, order_id, payment_id).await? {
                    Revival::Revived => Ok(()),
                    Revival::NotExpired => Box::pin(self.complete_from_event(conn, paid)).await,
                    Revival::Refused(why) => {
                        let order = find_order(conn, order_id).await?.context("order vanished")?;
                        self.return_payment(conn, &order, paid, why).await
                    }
                };
            }
            _ => {
                return self
                    .return_payment(
                        conn,
                        &order,
                        paid,
                        "the order was cancelled before its payment arrived",
                    )
                    .await;
            }
        }
        // The order's lease, as PayOrder takes it: no expiry or cancellation can close the order
        // between the commit of its places and its completion (the update's row lock holds them
        // off until this transaction ends).
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.config.charge_lease).unwrap_or_default();
        let leased = diesel::update(
            orders::table
                .find(order_id)
                .filter(orders::status.eq(OrderStatus::PendingPayment))
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
                    self.return_payment(conn, &order, paid, "its places could not be reserved")
                        .await
                }
                _ => anyhow::bail!("committing order {order_id}'s places: {status}"),
            };
        }
        match complete_in(conn, &self.signer, order_id, Some(payment_id)).await {
            Ok(Completed::Before(order)) if order.payment_id != Some(payment_id) => {
                self.return_payment(conn, &order, paid, "the order was paid by another payment")
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
