//! Refunds: asked for by buyers, organizers and admins, or forced by money that went back
//! outside orders (a refund at the processor).

use std::collections::HashMap;

use anyhow::Context as _;
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use ticketing_platform::{
    ApiError, ApiResult,
    messaging::{self, OutboxEvent},
};
use ticketing_proto::ticketing::events::v1 as events;
use uuid::Uuid;

use crate::schema::{order_lines, orders, tickets};
use crate::{orders::*, store::*};

/// Why lines are refunded: asked for (buyer, organizer, admin: used tickets cannot be), or
/// because the money already went back outside orders (every line, used or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refunding {
    Asked,
    MoneyGone,
}

/// The refund itself, in the caller's transaction (see [`Orders::refund`]).
pub async fn refund_in(
    conn: &mut Conn,
    order_id: Uuid,
    line_ids: &[Uuid],
    how: Refunding,
) -> ApiResult<OrderRow> {
    let order = lock(conn, order_id).await?;
    if !order.status.can_become(OrderStatus::Refunded) {
        if order.status == OrderStatus::Refunded {
            return Ok(order);
        }
        return Err(ApiError::precondition(
            "ORDER_NOT_REFUNDABLE",
            format!("a {} order cannot be refunded", order.status),
        ));
    }
    let lines = lines_of(conn, order_id).await?;
    for id in line_ids {
        if !lines.iter().any(|l| l.id == *id) {
            return Err(ApiError::invalid(
                "line_ids",
                format!("{id} is not a line of this order"),
            ));
        }
    }
    let chosen: Vec<&LineRow> = lines
        .iter()
        .filter(|l| !l.refunded && (line_ids.is_empty() || line_ids.contains(&l.id)))
        .collect();
    if chosen.is_empty() {
        // Asked again for lines already refunded: the same result as the first time.
        return Ok(order);
    }
    let chosen_ids: Vec<Uuid> = chosen.iter().map(|l| l.id).collect();
    let checked_in: i64 = tickets::table
        .filter(tickets::line_id.eq_any(&chosen_ids))
        .filter(tickets::status.eq(TicketStatus::CheckedIn))
        .count()
        .get_result(conn)
        .await?;
    if checked_in > 0 && how == Refunding::Asked {
        return Err(ApiError::precondition(
            "TICKET_USED",
            "a ticket of these lines has already been checked in",
        ));
    }
    let amount: i64 = chosen.iter().map(|l| l.unit_price - l.discount).sum();
    diesel::update(order_lines::table.filter(order_lines::id.eq_any(&chosen_ids)))
        .set(order_lines::refunded.eq(true))
        .execute(conn)
        .await?;
    // A ticket already used stays checked in; every other one is void.
    diesel::update(
        tickets::table
            .filter(tickets::line_id.eq_any(&chosen_ids))
            .filter(tickets::status.ne(TicketStatus::CheckedIn)),
    )
    .set(tickets::status.eq(TicketStatus::Refunded))
    .execute(conn)
    .await?;
    let full = chosen.len() == lines.iter().filter(|l| !l.refunded).count();
    let status = if full {
        OrderStatus::Refunded
    } else {
        OrderStatus::PartiallyRefunded
    };
    let order = diesel::update(orders::table.find(order_id))
        .set((
            orders::status.eq(status),
            orders::refunded_total.eq(orders::refunded_total + amount),
            orders::updated_at.eq(Utc::now()),
        ))
        .returning(OrderRow::as_returning())
        .get_result(conn)
        .await?;
    let ticket_ids: HashMap<Uuid, Uuid> = tickets::table
        .filter(tickets::line_id.eq_any(&chosen_ids))
        .select((tickets::line_id, tickets::id))
        .load::<(Uuid, Uuid)>(conn)
        .await?
        .into_iter()
        .collect();
    messaging::enqueue(
        conn,
        vec![OutboxEvent::of(
            order.id,
            &events::OrderRefunded {
                order_id: order.id.to_string(),
                event_id: order.event_id.to_string(),
                buyer_id: order.buyer_id.to_string(),
                amount: money(amount, &order.currency),
                lines: chosen
                    .iter()
                    .map(|l| line_summary(l, &order.currency, ticket_ids.get(&l.id).copied()))
                    .collect(),
                full: status == OrderStatus::Refunded,
                payment_id: order.payment_id.map(|p| p.to_string()).unwrap_or_default(),
                refund_id: Uuid::now_v7().to_string(),
                buyer_email: order.buyer_email.clone(),
            },
        )],
    )
    .await?;
    Ok(order)
}

impl Orders {
    /// Refunds lines of a paid order (all remaining when `line_ids` is empty): they are marked
    /// refunded and their tickets revoked here; `order.refunded` makes payments return the money
    /// and inventory put the places back on sale.
    pub async fn refund(&self, order_id: Uuid, line_ids: &[Uuid]) -> ApiResult<OrderRow> {
        let mut conn = self.pool.get().await?;
        let order = conn
            .transaction::<_, ApiError, _>(async |conn| {
                refund_in(conn, order_id, line_ids, Refunding::Asked).await
            })
            .await?;
        self.outbox.notify();
        Ok(order)
    }

    /// The `payment.refunded` consumer's work: when more of an order's payment went back than
    /// the order refunded (a refund made at the processor), the order gives up what is left
    /// (lines refunded, tickets void, places back on sale), so no paid order is without its money.
    pub async fn reconcile_refund(
        &self,
        conn: &mut Conn,
        refund: &events::PaymentRefunded,
    ) -> anyhow::Result<()> {
        let order_id = Uuid::parse_str(&refund.order_id).context("order id")?;
        let payment_id = Uuid::parse_str(&refund.payment_id).context("payment id")?;
        let order: Option<OrderRow> = find_order(conn, order_id).await?;
        let Some(order) = order else {
            return Ok(());
        };
        let refunded_total = refund.refunded_total.as_ref().map_or(0, |m| m.amount_minor);
        let ours = order.payment_id == Some(payment_id);
        if !ours || !order.status.can_become(OrderStatus::Refunded) {
            return Ok(());
        }
        if refunded_total <= order.refunded_total {
            // Orders' own refund, or less than it already gave back.
            return Ok(());
        }
        tracing::warn!(order = %order_id, payment = %payment_id, refunded_total, "money went back outside orders: the order is refunded");
        match refund_in(conn, order_id, &[], Refunding::MoneyGone).await {
            Ok(_) => {
                self.outbox.notify();
                metrics::counter!("orders_reconciled_refunds_total").increment(1);
                Ok(())
            }
            Err(error) => Err(anyhow::anyhow!("reconciling order {order_id}: {error}")),
        }
    }
}
