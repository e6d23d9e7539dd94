//! Orders: created from holds, and closed unpaid (expired or cancelled).
//!
//! CreateOrder prices the caller's hold (catalog), applies a discount code (its use counted
//! under the code's row lock) and stores the order with `order.created`, in one transaction.
//! Expiry and cancellation are one transaction each; inventory gives the places back and
//! payments closes the order on the events. The rest of an order's life is in its own module:
//! paying it ([`crate::checkout`]), a payment that arrives by event
//! ([`crate::payment_events`]), refunds ([`crate::refunds`]) and check-in ([`crate::checkin`]).

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use ticketing_platform::clients::{PeerChannel, with_bearer};
use ticketing_platform::{
    ApiError, ApiResult,
    clients::{internal_peer_error, peer_error},
    db::{self, PgPool},
    messaging::{self, OutboxEvent, OutboxSignal},
    time::to_timestamp,
};
use ticketing_proto::ticketing::{
    catalog::v1::{self as catalog, catalog_service_client::CatalogServiceClient},
    events::v1 as events,
    inventory::v1::{self as inventory, inventory_service_client::InventoryServiceClient},
    orders::v1 as pb,
    payments::v1::payments_service_client::PaymentsServiceClient,
};
use tonic::Request;
use uuid::Uuid;

pub use crate::store::{DiscountRow, LineRow, OrderRow, OrderView, TicketRow};
use crate::{checkout::*, store::*};
use crate::{
    config::CheckoutConfig,
    schema::{discount_codes, order_lines, orders, tickets},
    tickets::TicketSigner,
};

/// The peers orders calls. Calls carry orders' service token (the peer channels add it); public
/// ones made for a buyer also carry the buyer's own token, so the peer authorizes the buyer.
#[derive(Clone)]
pub struct Peers {
    pub catalog: CatalogServiceClient<PeerChannel>,
    pub inventory: InventoryServiceClient<PeerChannel>,
    pub payments: PaymentsServiceClient<PeerChannel>,
}

#[derive(Clone)]
pub struct Orders {
    pub(crate) pool: PgPool,
    pub(crate) peers: Peers,
    pub(crate) signer: Arc<TicketSigner>,
    pub(crate) outbox: OutboxSignal,
    pub(crate) config: CheckoutConfig,
}

/// A validated CreateOrder.
pub struct NewOrder {
    pub buyer_id: Uuid,
    pub buyer_email: String,
    pub hold_id: Uuid,
    pub idempotency_key: String,
    pub discount_code: Option<String>,
}

impl NewOrder {
    fn fingerprint(&self) -> String {
        crate::domain::request_fingerprint(self.hold_id, self.discount_code.as_deref(), &self.buyer_email)
    }
}

/// A validated card, passed through to payments and never stored here.
pub struct CardInput {
    pub number: String,
    pub exp_month: i32,
    pub exp_year: i32,
    pub cvc: String,
}

pub(crate) fn key_reused() -> ApiError {
    ApiError::invalid(
        "idempotency_key",
        "was already used for a different request (IDEMPOTENCY_KEY_REUSED)",
    )
}

impl Orders {
    pub fn new(
        pool: PgPool,
        peers: Peers,
        signer: TicketSigner,
        outbox: OutboxSignal,
        config: CheckoutConfig,
    ) -> Self {
        Self {
            pool,
            peers,
            signer: Arc::new(signer),
            outbox,
            config,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn signer(&self) -> &TicketSigner {
        &self.signer
    }

    /// Creates the order, or answers a replay of its idempotency key with the order it made.
    pub async fn create(&self, token: &str, new: NewOrder) -> ApiResult<OrderView> {
        let fingerprint = new.fingerprint();
        // A first call needs no look-up of its key: the insert's unique key catches a replay,
        // and so does any refusal on the way (a replay's hold is no longer active, say).
        let error = match self.create_new(token, &new, &fingerprint).await {
            Ok(view) => return Ok(view),
            Err(error) => error,
        };
        match self.by_key(new.buyer_id, &new.idempotency_key).await? {
            Some(existing) if existing.request_fingerprint == fingerprint => self.view(existing).await,
            Some(_) => Err(key_reused()),
            // A concurrent call for the same hold (with another key) got there first.
            None if matches!(error, ApiError::AlreadyExists { .. }) => Err(ApiError::precondition(
                "HOLD_ALREADY_ORDERED",
                "another order was already created from this hold",
            )),
            None => Err(error),
        }
    }

    async fn create_new(&self, token: &str, new: &NewOrder, fingerprint: &str) -> ApiResult<OrderView> {
        let hold = self
            .peers
            .inventory
            .clone()
            .get_hold(with_bearer(
                token,
                inventory::GetHoldRequest {
                    hold_id: new.hold_id.to_string(),
                },
            ))
            .await
            .map_err(|s| peer_error("inventory", s))?
            .into_inner();
        if hold.status != inventory::HoldStatus::Active as i32 {
            return Err(ApiError::precondition(
                "HOLD_NOT_ACTIVE",
                "the hold has expired, was released or is already ordered",
            ));
        }
        let event_id = Uuid::parse_str(&hold.event_id).map_err(|_| ApiError::internal("hold event id"))?;
        let hold_expires = hold
            .expires_at
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
            .ok_or_else(|| ApiError::internal("hold without expiry"))?;
        let mut tier_ids: Vec<String> = hold.items.iter().map(|i| i.tier_id.clone()).collect();
        tier_ids.sort();
        tier_ids.dedup();
        let priced = self
            .peers
            .catalog
            .clone()
            .batch_get_ticket_tiers(Request::new(catalog::BatchGetTicketTiersRequest {
                event_id: event_id.to_string(),
                tier_ids: tier_ids.clone(),
                seat_ids: hold
                    .items
                    .iter()
                    .filter_map(|i| match &i.place {
                        Some(inventory::hold_item::Place::SeatId(seat)) => Some(seat.clone()),
                        _ => None,
                    })
                    .collect(),
            }))
            .await
            .map_err(|s| internal_peer_error("catalog", s))?
            .into_inner();
        if priced.event_status != catalog::EventStatus::Published as i32 {
            return Err(ApiError::precondition(
                "EVENT_NOT_ON_SALE",
                "the event is not on sale",
            ));
        }
        let organization_id = Uuid::parse_str(&priced.organization_id)
            .map_err(|_| ApiError::internal("event organization id"))?;
        let tiers: HashMap<&str, &catalog::TicketTier> =
            priced.tiers.iter().map(|t| (t.id.as_str(), t)).collect();
        let mut currency = None::<String>;
        let mut priced_lines = Vec::new();
        for item in &hold.items {
            let tier = tiers
                .get(item.tier_id.as_str())
                .ok_or_else(|| ApiError::precondition("TIER_GONE", "a held tier is no longer sold"))?;
            let price = tier.price.clone().unwrap_or_default();
            match &currency {
                None => currency = Some(price.currency.clone()),
                Some(c) if *c != price.currency => {
                    return Err(ApiError::precondition(
                        "MIXED_CURRENCIES",
                        "the held tiers are priced in different currencies",
                    ));
                }
                Some(_) => {}
            }
            let (seat, area, count) = match &item.place {
                Some(inventory::hold_item::Place::SeatId(seat)) => (Some(seat.clone()), None, 1),
                Some(inventory::hold_item::Place::GaAreaId(area)) => {
                    (None, Some(area.clone()), item.quantity)
                }
                None => (None, None, item.quantity),
            };
            for _ in 0..count.max(1) {
                priced_lines.push((
                    item.tier_id.clone(),
                    tier.name.clone(),
                    seat.clone(),
                    area.clone(),
                    price.amount_minor,
                ));
            }
        }
        let currency =
            currency.ok_or_else(|| ApiError::precondition("HOLD_EMPTY", "the hold holds nothing"))?;
        let deadline = hold_expires
            .min(Utc::now() + chrono::Duration::from_std(self.config.payment_window).unwrap_or_default());
        let order_id = Uuid::now_v7();
        let mut conn = self.pool.get().await?;
        let result = conn
            .transaction::<_, ApiError, _>(async |conn| {
                let discounts = match &new.discount_code {
                    Some(code) => {
                        let discount = take_discount(conn, event_id, code).await?;
                        let basis: Vec<(String, i64)> =
                            priced_lines.iter().map(|l| (l.0.clone(), l.4)).collect();
                        discount.apply(&basis, &currency)?
                    }
                    None => vec![0; priced_lines.len()],
                };
                let subtotal: i64 = priced_lines.iter().map(|l| l.4).sum();
                let discount_total: i64 = discounts.iter().sum();
                let now = Utc::now();
                let order = diesel::insert_into(orders::table)
                    .values((
                        orders::id.eq(order_id),
                        orders::event_id.eq(event_id),
                        orders::organization_id.eq(organization_id),
                        orders::buyer_id.eq(new.buyer_id),
                        orders::buyer_email.eq(&new.buyer_email),
                        orders::status.eq(OrderStatus::PendingPayment),
                        orders::hold_id.eq(new.hold_id),
                        orders::idempotency_key.eq(&new.idempotency_key),
                        orders::request_fingerprint.eq(fingerprint),
                        orders::currency.eq(&currency),
                        orders::subtotal.eq(subtotal),
                        orders::discount_total.eq(discount_total),
                        orders::total.eq(subtotal - discount_total),
                        orders::discount_code.eq(&new.discount_code),
                        orders::payment_deadline.eq(deadline),
                        orders::created_at.eq(now),
                        orders::updated_at.eq(now),
                    ))
                    .returning(OrderRow::as_returning())
                    .get_result(conn)
                    .await
                    .map_err(db::already_exists(
                        "ORDER_EXISTS",
                        "an order exists for this hold or key",
                    ))?;
                let lines: Vec<LineRow> = priced_lines
                    .iter()
                    .zip(&discounts)
                    .enumerate()
                    .map(|(i, ((tier, name, seat, area, price), discount))| LineRow {
                        id: Uuid::now_v7(),
                        order_id,
                        position: i32::try_from(i).unwrap_or(i32::MAX),
                        tier_id: tier.clone(),
                        tier_name: name.clone(),
                        seat_label: seat.as_ref().and_then(|s| priced.seat_labels.get(s).cloned()),
                        seat_id: seat.clone(),
                        ga_area_id: area.clone(),
                        unit_price: *price,
                        discount: *discount,
                        refunded: false,
                    })
                    .collect();
                diesel::insert_into(order_lines::table)
                    .values(&lines)
                    .execute(conn)
                    .await?;
                messaging::enqueue(
                    conn,
                    vec![OutboxEvent::of(
                        order_id,
                        &events::OrderCreated {
                            order_id: order_id.to_string(),
                            event_id: event_id.to_string(),
                            buyer_id: new.buyer_id.to_string(),
                            total: money(order.total, &order.currency),
                            payment_deadline: Some(to_timestamp(deadline)),
                            buyer_email: order.buyer_email.clone(),
                        },
                    )],
                )
                .await?;
                Ok(OrderView {
                    order,
                    lines,
                    tickets: Vec::new(),
                })
            })
            .await;
        match result {
            Ok(view) => {
                self.outbox.notify();
                metrics::counter!("orders_created_total").increment(1);
                Ok(view)
            }
            Err(error) => Err(error),
        }
    }

    async fn by_key(&self, buyer: Uuid, key: &str) -> ApiResult<Option<OrderRow>> {
        let mut conn = self.pool.get().await?;
        Ok(orders::table
            .filter(orders::buyer_id.eq(buyer))
            .filter(orders::idempotency_key.eq(key))
            .select(OrderRow::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    pub async fn find(&self, id: Uuid) -> ApiResult<Option<OrderRow>> {
        let mut conn = self.pool.get().await?;
        find_order(&mut conn, id).await
    }

    pub async fn details(&self, order: &OrderRow) -> ApiResult<(Vec<LineRow>, Vec<TicketRow>)> {
        let mut conn = self.pool.get().await?;
        let lines = lines_of(&mut conn, order.id).await?;
        let tickets = tickets::table
            .filter(tickets::order_id.eq(order.id))
            .select(TicketRow::as_select())
            .load(&mut conn)
            .await?;
        Ok((lines, tickets))
    }

    pub async fn proto(&self, order: &OrderRow) -> ApiResult<pb::Order> {
        let (lines, tickets) = self.details(order).await?;
        Ok(order.to_proto(&lines, &tickets))
    }

    pub async fn view(&self, order: OrderRow) -> ApiResult<OrderView> {
        let (lines, tickets) = self.details(&order).await?;
        Ok(OrderView {
            order,
            lines,
            tickets,
        })
    }

    /// Expires unpaid orders past their deadline (not while a charge may be running).
    pub async fn expire_due(&self) -> ApiResult<usize> {
        let mut conn = self.pool.get().await?;
        let now = Utc::now();
        let due: Vec<Uuid> = orders::table
            .filter(orders::status.eq(OrderStatus::PendingPayment))
            .filter(orders::payment_deadline.le(now))
            .filter(lease_free(now))
            .select(orders::id)
            .order(orders::payment_deadline)
            .limit(500)
            .load(&mut conn)
            .await?;
        let mut expired = 0;
        for id in due {
            if self
                .close(&mut conn, id, OrderStatus::Expired, "")
                .await?
                .is_some()
            {
                expired += 1;
            }
        }
        if expired > 0 {
            self.outbox.notify();
            metrics::counter!("orders_expired_total").increment(expired as u64);
        }
        Ok(expired)
    }

    /// Cancels an unpaid order at once.
    pub async fn cancel(&self, order_id: Uuid, reason: &str) -> ApiResult<OrderRow> {
        let mut conn = self.pool.get().await?;
        match self
            .close(&mut conn, order_id, OrderStatus::Cancelled, reason)
            .await?
        {
            Some(order) => {
                self.outbox.notify();
                Ok(order)
            }
            None => {
                let order = self
                    .find(order_id)
                    .await?
                    .ok_or(ApiError::NotFound { resource: "order" })?;
                if order.status == OrderStatus::Cancelled {
                    return Ok(order);
                }
                let now = Utc::now();
                if order.status == OrderStatus::PendingPayment
                    && let Some(until) = order.charging_until.filter(|t| *t > now)
                {
                    // A payment is in flight: its outcome decides (paid orders are refunded,
                    // not cancelled), so come back for it.
                    let left = (until - now).to_std().unwrap_or_default();
                    return Err(payment_in_progress(
                        left.clamp(Duration::from_secs(1), Duration::from_secs(5)),
                    ));
                }
                Err(ApiError::precondition(
                    "ORDER_NOT_CANCELLABLE",
                    format!(
                        "a {} order cannot be cancelled; paid orders are refunded",
                        order.status
                    ),
                ))
            }
        }
    }

    /// Moves a pending order to `status` (expired or cancelled), gives its discount use back
    /// and writes the event that makes inventory release its places and payments close it.
    async fn close(
        &self,
        conn: &mut Conn,
        order_id: Uuid,
        status: OrderStatus,
        reason: &str,
    ) -> ApiResult<Option<OrderRow>> {
        conn.transaction::<_, ApiError, _>(async |conn| {
            let order = lock(conn, order_id).await?;
            let now = Utc::now();
            if !order.status.can_become(status) || order.charging_until.is_some_and(|t| t > now) {
                return Ok(None);
            }
            if status == OrderStatus::Expired && order.payment_deadline > now {
                return Ok(None);
            }
            let order = diesel::update(orders::table.find(order_id))
                .set((
                    orders::status.eq(status),
                    orders::charging_until.eq(None::<DateTime<Utc>>),
                    orders::updated_at.eq(now),
                ))
                .returning(OrderRow::as_returning())
                .get_result(conn)
                .await?;
            if let Some(code) = &order.discount_code {
                diesel::update(discount_codes::table.find((order.event_id, code)))
                    .filter(discount_codes::times_used.gt(0))
                    .set(discount_codes::times_used.eq(discount_codes::times_used - 1))
                    .execute(conn)
                    .await?;
            }
            let event = if status == OrderStatus::Expired {
                OutboxEvent::of(
                    order.id,
                    &events::OrderExpired {
                        order_id: order.id.to_string(),
                        event_id: order.event_id.to_string(),
                        buyer_id: order.buyer_id.to_string(),
                        hold_id: order.hold_id.to_string(),
                        buyer_email: order.buyer_email.clone(),
                    },
                )
            } else {
                OutboxEvent::of(
                    order.id,
                    &events::OrderCancelled {
                        order_id: order.id.to_string(),
                        event_id: order.event_id.to_string(),
                        buyer_id: order.buyer_id.to_string(),
                        reason: reason.to_string(),
                        hold_id: order.hold_id.to_string(),
                        buyer_email: order.buyer_email.clone(),
                    },
                )
            };
            messaging::enqueue(conn, vec![event]).await?;
            Ok(Some(order))
        })
        .await
    }

    /// The organization selling `event`: from its orders here, else from catalog.
    pub async fn organization_of(&self, event_id: Uuid) -> ApiResult<Uuid> {
        {
            let mut conn = self.pool.get().await?;
            let known: Option<Uuid> = orders::table
                .filter(orders::event_id.eq(event_id))
                .select(orders::organization_id)
                .first(&mut conn)
                .await
                .optional()?;
            if let Some(org) = known {
                return Ok(org);
            }
        }
        let event = self.event_facts(event_id).await?;
        Uuid::parse_str(&event.organization_id).map_err(|_| ApiError::internal("event organization id"))
    }

    /// When the event starts (for the buyer's refund window).
    pub async fn event_starts_at(&self, event_id: Uuid) -> ApiResult<Option<DateTime<Utc>>> {
        let event = self.event_facts(event_id).await?;
        Ok(event
            .event_starts_at
            .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))))
    }

    /// The event's status, organization and start, from catalog (no tiers asked for).
    async fn event_facts(&self, event_id: Uuid) -> ApiResult<catalog::BatchGetTicketTiersResponse> {
        Ok(self
            .peers
            .catalog
            .clone()
            .batch_get_ticket_tiers(Request::new(catalog::BatchGetTicketTiersRequest {
                event_id: event_id.to_string(),
                ..Default::default()
            }))
            .await
            .map_err(|s| internal_peer_error("catalog", s))?
            .into_inner())
    }

    pub fn buyer_refund_cutoff(&self) -> Duration {
        self.config.buyer_refund_cutoff
    }
}

pub(crate) fn line_summary(line: &LineRow, currency: &str, ticket: Option<Uuid>) -> events::OrderLineSummary {
    events::OrderLineSummary {
        line_id: line.id.to_string(),
        tier_id: line.tier_id.clone(),
        tier_name: line.tier_name.clone(),
        seat_id: line.seat_id.clone().unwrap_or_default(),
        ga_area_id: line.ga_area_id.clone().unwrap_or_default(),
        price: money(line.unit_price - line.discount, currency),
        ticket_id: ticket.map(|t| t.to_string()).unwrap_or_default(),
        ticket_secret: String::new(),
    }
}

/// Counts one use of a code under its row lock: exact under any concurrency.
pub(crate) async fn take_discount(conn: &mut Conn, event_id: Uuid, code: &str) -> ApiResult<DiscountRow> {
    let row: Option<DiscountRow> = discount_codes::table
        .find((event_id, code))
        .select(DiscountRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let unknown = || {
        ApiError::precondition(
            "DISCOUNT_CODE_INVALID",
            "the discount code is not valid for this event",
        )
    };
    let row = row.ok_or_else(unknown)?;
    let now = Utc::now();
    if !row.active || row.valid_from.is_some_and(|t| now < t) || row.valid_until.is_some_and(|t| now >= t) {
        return Err(unknown());
    }
    if row.max_uses > 0 && row.times_used >= row.max_uses {
        return Err(ApiError::precondition(
            "DISCOUNT_CODE_USED_UP",
            "the discount code has been used up",
        ));
    }
    diesel::update(discount_codes::table.find((event_id, code)))
        .set(discount_codes::times_used.eq(discount_codes::times_used + 1))
        .execute(conn)
        .await?;
    Ok(row)
}
