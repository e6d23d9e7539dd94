//! What inventory hears on the event backbone: orders that closed unpaid give their places
//! back (sold ones from the ledger, or the hold), and refunded lines return to sale.

use std::collections::BTreeMap;

use anyhow::Context;
use diesel_async::AsyncPgConnection;
use ticketing_platform::{ApiError, messaging};
use ticketing_proto::ticketing::events::v1 as events;
use uuid::Uuid;

use crate::{
    inventory::Inventory,
    store::{self, Item},
};

ticketing_platform::event_set! {
    /// The events inventory consumes: orders that closed unpaid, and refunds.
    pub enum Heard {
        OrderExpired(events::OrderExpired),
        OrderCancelled(events::OrderCancelled),
        OrderRefunded(events::OrderRefunded),
    }
}

/// Inventory's consumer of [`Heard`].
pub struct OrderReturns(pub Inventory);

impl OrderReturns {
    /// Everything of the order back on sale: its sold places, or else its hold; nothing once
    /// the order was revived by a late payment (the fate's lock, held until the consumer's
    /// transaction ends, keeps the two apart).
    async fn give_back(&self, conn: &mut AsyncPgConnection, order: &str, hold: &str) -> anyhow::Result<()> {
        let order = Uuid::parse_str(order).context("order id")?;
        if !store::closing_applies(conn, order).await? {
            return Ok(());
        }
        if store::find_commit(conn, order).await?.is_some() {
            return ignore_missing(self.0.release_sold(order, &[]).await.map(|_| ()));
        }
        if let Ok(hold) = Uuid::parse_str(hold) {
            return ignore_missing(self.0.release(hold, None).await.map(|_| ()));
        }
        Ok(())
    }

    async fn refunded(&self, refund: &events::OrderRefunded) -> anyhow::Result<()> {
        let order = Uuid::parse_str(&refund.order_id).context("order id")?;
        let mut items = Vec::new();
        let mut quantities: BTreeMap<String, i32> = BTreeMap::new();
        for line in &refund.lines {
            if line.seat_id.is_empty() {
                *quantities.entry(line.tier_id.clone()).or_default() += 1;
            } else {
                items.push(Item {
                    tier_id: line.tier_id.clone(),
                    seat_id: Some(line.seat_id.clone()),
                    ga_area_id: None,
                    quantity: 1,
                });
            }
        }
        items.extend(quantities.into_iter().map(|(tier_id, quantity)| Item {
            tier_id,
            seat_id: None,
            ga_area_id: None,
            quantity,
        }));
        if items.is_empty() {
            return Ok(());
        }
        ignore_missing(self.0.release_sold(order, &items).await.map(|_| ()))
    }
}

/// Already gone (released, expired, never committed) is what we wanted.
fn ignore_missing(result: Result<(), ApiError>) -> anyhow::Result<()> {
    match result {
        Ok(()) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(other) => Err(anyhow::anyhow!(other)),
    }
}

impl messaging::Handler for OrderReturns {
    type Events = Heard;

    async fn handle(&self, conn: &mut AsyncPgConnection, event: &Heard) -> anyhow::Result<()> {
        match event {
            Heard::OrderExpired(e) => self.give_back(conn, &e.order_id, &e.hold_id).await,
            Heard::OrderCancelled(e) => self.give_back(conn, &e.order_id, &e.hold_id).await,
            Heard::OrderRefunded(refund) => self.refunded(refund).await,
        }
    }
}
