//! The checkout saga and everything an order goes through afterwards.
//!
//! CreateOrder prices the caller's hold (catalog), applies a discount code (its use counted
//! under the code's row lock) and stores the order with `order.created`, in one transaction.
//! PayOrder takes the order's charge lease, reserves the seats durably (inventory CommitHold,
//! idempotent on the order), charges (payments, idempotent on `order:<id>:attempt:<n>`), then
//! marks the order paid, issues its tickets and writes `order.paid` in one transaction. While an
//! attempt's outcome is unknown a retry reuses its key, so a card is charged at most once; a
//! charge that lands after a crash is finished by the `payment.succeeded` consumer.
//! Expiry, cancellation and refunds are one transaction each here; inventory gives the places
//! back and payments closes or refunds on the events they publish.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use diesel::{prelude::*, result::DatabaseErrorKind};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};
use ticketing_platform::clients::PeerChannel;
use ticketing_platform::{
    ApiError, ApiResult,
    clients::{internal_peer_error, peer_error},
    db::PgPool,
    messaging::{self, OutboxEvent, OutboxSignal},
    time::to_timestamp,
};
use ticketing_proto::ticketing::{
    catalog::v1::{self as catalog, catalog_service_client::CatalogServiceClient},
    common::v1::Money,
    events::v1 as events,
    inventory::v1::{self as inventory, inventory_service_client::InventoryServiceClient},
    orders::v1 as pb,
    payments::v1::{self as payments, payments_service_client::PaymentsServiceClient},
};
use tonic::Request;
use uuid::Uuid;

use crate::{
    config::CheckoutConfig,
    schema::{discount_codes, order_lines, orders, tickets},
    tickets::{TicketClaim, TicketSigner},
};

type Conn = AsyncPgConnection;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = orders)]
pub struct OrderRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub organization_id: Uuid,
    pub buyer_id: Uuid,
    pub buyer_email: String,
    pub status: String,
    pub hold_id: Uuid,
    pub idempotency_key: String,
    pub request_fingerprint: String,
    pub currency: String,
    pub subtotal: i64,
    pub discount_total: i64,
    pub total: i64,
    pub refunded_total: i64,
    pub discount_code: Option<String>,
    pub payment_deadline: DateTime<Utc>,
    pub payment_attempt: i32,
    pub attempt_open: bool,
    pub charging_until: Option<DateTime<Utc>>,
    pub payment_id: Option<Uuid>,
    pub last_payment_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_lines)]
pub struct LineRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub position: i32,
    pub tier_id: String,
    pub tier_name: String,
    pub seat_id: Option<String>,
    pub ga_area_id: Option<String>,
    pub unit_price: i64,
    pub discount: i64,
    pub refunded: bool,
    pub seat_label: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tickets)]
pub struct TicketRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub line_id: Uuid,
    pub event_id: Uuid,
    pub holder_id: Uuid,
    pub status: String,
    pub secret: String,
    pub issued_at: DateTime<Utc>,
    pub checked_in_at: Option<DateTime<Utc>>,
    pub check_in_gate: Option<String>,
    pub check_in_nonce: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = discount_codes)]
pub struct DiscountRow {
    pub event_id: Uuid,
    pub code: String,
    pub organization_id: Uuid,
    pub percent_off: Option<i32>,
    pub amount_off: Option<i64>,
    pub currency: Option<String>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub max_uses: i32,
    pub times_used: i32,
    pub active: bool,
    pub tier_ids: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// An order with its lines and tickets, as the API shows it. Calls that just wrote them return
/// this so they need not read them back.
pub struct OrderView {
    pub order: OrderRow,
    pub lines: Vec<LineRow>,
    pub tickets: Vec<TicketRow>,
}

impl OrderView {
    pub fn to_proto(&self) -> pb::Order {
        self.order.to_proto(&self.lines, &self.tickets)
    }
}

fn money(amount_minor: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: currency.to_string(),
    })
}

impl OrderRow {
    pub fn status_proto(&self) -> pb::OrderStatus {
        match self.status.as_str() {
            "pending_payment" => pb::OrderStatus::PendingPayment,
            "paid" => pb::OrderStatus::Paid,
            "cancelled" => pb::OrderStatus::Cancelled,
            "expired" => pb::OrderStatus::Expired,
            "partially_refunded" => pb::OrderStatus::PartiallyRefunded,
            "refunded" => pb::OrderStatus::Refunded,
            _ => pb::OrderStatus::Unspecified,
        }
    }

    pub fn to_proto(&self, lines: &[LineRow], tickets: &[TicketRow]) -> pb::Order {
        let ticket_of: HashMap<Uuid, Uuid> = tickets.iter().map(|t| (t.line_id, t.id)).collect();
        pb::Order {
            id: self.id.to_string(),
            event_id: self.event_id.to_string(),
            buyer_id: self.buyer_id.to_string(),
            buyer_email: self.buyer_email.clone(),
            status: self.status_proto() as i32,
            lines: lines
                .iter()
                .map(|l| pb::OrderLine {
                    id: l.id.to_string(),
                    tier_id: l.tier_id.clone(),
                    tier_name: l.tier_name.clone(),
                    place: match (&l.seat_id, &l.ga_area_id) {
                        (Some(seat), _) => Some(pb::order_line::Place::SeatId(seat.clone())),
                        (None, Some(area)) => Some(pb::order_line::Place::GaAreaId(area.clone())),
                        (None, None) => None,
                    },
                    unit_price: money(l.unit_price, &self.currency),
                    discount: money(l.discount, &self.currency),
                    ticket_id: ticket_of.get(&l.id).map(Uuid::to_string).unwrap_or_default(),
                    refunded: l.refunded,
                })
                .collect(),
            subtotal: money(self.subtotal, &self.currency),
            discount_total: money(self.discount_total, &self.currency),
            total: money(self.total, &self.currency),
            refunded_total: money(self.refunded_total, &self.currency),
            discount_code: self.discount_code.clone().unwrap_or_default(),
            hold_id: self.hold_id.to_string(),
            payment_deadline: Some(to_timestamp(self.payment_deadline)),
            created_at: Some(to_timestamp(self.created_at)),
            paid_at: self.paid_at.map(to_timestamp),
            updated_at: Some(to_timestamp(self.updated_at)),
            last_payment_error: self.last_payment_error.clone().unwrap_or_default(),
        }
    }

    fn is_paid(&self) -> bool {
        matches!(self.status.as_str(), "paid" | "partially_refunded" | "refunded")
    }
}

impl TicketRow {
    pub fn status_proto(&self) -> pb::TicketStatus {
        match self.status.as_str() {
            "valid" => pb::TicketStatus::Valid,
            "checked_in" => pb::TicketStatus::CheckedIn,
            "refunded" => pb::TicketStatus::Refunded,
            "cancelled" => pb::TicketStatus::Cancelled,
            _ => pb::TicketStatus::Unspecified,
        }
    }

    pub fn check_in_record(&self) -> Option<pb::CheckInRecord> {
        self.checked_in_at.map(|at| pb::CheckInRecord {
            at: Some(to_timestamp(at)),
            gate: self.check_in_gate.clone().unwrap_or_default(),
        })
    }

    /// The ticket as its holder sees it (with the secret) or as staff see it (without).
    pub fn to_proto(&self, line: Option<&LineRow>, with_secret: bool) -> pb::Ticket {
        pb::Ticket {
            id: self.id.to_string(),
            order_id: self.order_id.to_string(),
            order_line_id: self.line_id.to_string(),
            event_id: self.event_id.to_string(),
            holder_id: self.holder_id.to_string(),
            tier_name: line.map(|l| l.tier_name.clone()).unwrap_or_default(),
            seat_id: line.and_then(|l| l.seat_id.clone()).unwrap_or_default(),
            seat_label: line
                .and_then(|l| l.seat_label.clone().or_else(|| l.seat_id.clone()))
                .unwrap_or_default(),
            ga_area_id: line.and_then(|l| l.ga_area_id.clone()).unwrap_or_default(),
            status: self.status_proto() as i32,
            secret: if with_secret {
                self.secret.clone()
            } else {
                String::new()
            },
            issued_at: Some(to_timestamp(self.issued_at)),
            check_in: self.check_in_record(),
        }
    }
}

impl DiscountRow {
    pub fn to_proto(&self) -> pb::DiscountCode {
        pb::DiscountCode {
            event_id: self.event_id.to_string(),
            code: self.code.clone(),
            amount: match (self.percent_off, self.amount_off) {
                (Some(p), _) => Some(pb::discount_code::Amount::PercentOff(p)),
                (None, Some(a)) => Some(pb::discount_code::Amount::AmountOff(Money {
                    amount_minor: a,
                    currency: self.currency.clone().unwrap_or_default(),
                })),
                (None, None) => None,
            },
            valid_from: self.valid_from.map(to_timestamp),
            valid_until: self.valid_until.map(to_timestamp),
            max_uses: self.max_uses,
            times_used: self.times_used,
            active: self.active,
            tier_ids: self.tier_ids.clone(),
            created_at: Some(to_timestamp(self.created_at)),
        }
    }

    /// Discounts per line (same order as `lines`), never above a line's price.
    pub fn apply(&self, lines: &[(String, i64)], currency: &str) -> ApiResult<Vec<i64>> {
        let eligible = |tier: &str| self.tier_ids.is_empty() || self.tier_ids.iter().any(|t| t == tier);
        if !lines.iter().any(|(tier, _)| eligible(tier)) {
            return Err(ApiError::precondition(
                "DISCOUNT_NOT_APPLICABLE",
                "the discount code does not apply to these tickets",
            ));
        }
        match (self.percent_off, self.amount_off) {
            (Some(percent), _) => Ok(lines
                .iter()
                .map(|(tier, price)| {
                    if eligible(tier) {
                        price * i64::from(percent) / 100
                    } else {
                        0
                    }
                })
                .collect()),
            (None, Some(amount)) => {
                if self.currency.as_deref() != Some(currency) {
                    return Err(ApiError::precondition(
                        "DISCOUNT_NOT_APPLICABLE",
                        "the discount code is in another currency",
                    ));
                }
                // A fixed amount off the order, spread over eligible lines in order.
                let mut left = amount;
                Ok(lines
                    .iter()
                    .map(|(tier, price)| {
                        if !eligible(tier) {
                            return 0;
                        }
                        let take = left.min(*price);
                        left -= take;
                        take
                    })
                    .collect())
            }
            (None, None) => Ok(vec![0; lines.len()]),
        }
    }
}

/// The peers orders calls. Calls carry orders' service token (the peer channels add it); public
/// ones made for a buyer also carry the buyer's own token, so the peer authorizes the buyer.
#[derive(Clone)]
pub struct Peers {
    pub catalog: CatalogServiceClient<PeerChannel>,
    pub inventory: InventoryServiceClient<PeerChannel>,
    pub payments: PaymentsServiceClient<PeerChannel>,
}

pub fn forwarded<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[derive(Clone)]
pub struct Orders {
    pool: PgPool,
    peers: Peers,
    signer: Arc<TicketSigner>,
    outbox: OutboxSignal,
    config: CheckoutConfig,
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
        let mut hash = Sha256::new();
        hash.update(self.hold_id.as_bytes());
        hash.update([0]);
        hash.update(self.discount_code.as_deref().unwrap_or("").as_bytes());
        hash.update([0]);
        hash.update(self.buyer_email.as_bytes());
        format!("{:x}", hash.finalize())
    }
}

/// A validated card, passed through to payments and never stored here.
pub struct CardInput {
    pub number: String,
    pub exp_month: i32,
    pub exp_year: i32,
    pub cvc: String,
}

fn key_reused() -> ApiError {
    ApiError::invalid(
        "idempotency_key",
        "was already used for a different request (IDEMPOTENCY_KEY_REUSED)",
    )
}

fn is_unique_violation(error: &diesel::result::Error) -> bool {
    matches!(
        error,
        diesel::result::Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
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
            .get_hold(forwarded(
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
                        orders::status.eq("pending_payment"),
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
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            ApiError::already_exists("ORDER_EXISTS", "an order exists for this hold or key")
                        } else {
                            e.into()
                        }
                    })?;
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
                    vec![OutboxEvent::new(
                        "order.created",
                        "order",
                        order_id,
                        &events::OrderCreated {
                            order_id: order_id.to_string(),
                            event_id: event_id.to_string(),
                            buyer_id: new.buyer_id.to_string(),
                            total: money(order.total, &order.currency),
                            payment_deadline: Some(to_timestamp(deadline)),
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
        Ok(orders::table
            .find(id)
            .select(OrderRow::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    pub async fn details(&self, order: &OrderRow) -> ApiResult<(Vec<LineRow>, Vec<TicketRow>)> {
        let mut conn = self.pool.get().await?;
        let lines = order_lines::table
            .filter(order_lines::order_id.eq(order.id))
            .order(order_lines::position)
            .select(LineRow::as_select())
            .load(&mut conn)
            .await?;
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

    /// Pays an order: lease, durable reservation, charge, tickets. See the module docs.
    /// Pays `buyer`'s order; another buyer's order is NOT_FOUND.
    pub async fn pay(&self, buyer: Uuid, order_id: Uuid, card: CardInput) -> ApiResult<OrderView> {
        // A retry while another PayOrder of the order holds its lease waits for that one's
        // outcome, and takes over an attempt that ended without a verdict.
        let mut turns = 0;
        let attempt = loop {
            turns += 1;
            match self.take_lease(buyer, order_id).await? {
                Lease::Done(order) => return self.view(order).await,
                Lease::Taken(attempt) => break attempt,
                Lease::Busy(seen) => match self.wait_for_other_payment(&seen).await? {
                    OtherPayment::Paid(order) => return self.view(*order).await,
                    OtherPayment::Ended if turns < 3 => continue,
                    OtherPayment::Ended => return Err(payment_in_progress(Duration::from_secs(1))),
                },
            }
        };
        let order = attempt.order;
        // 1. Reserve durably: after this no one else can buy these places.
        let committed = self.commit_places(&order).await;
        if let Err(status) = committed {
            // Nothing was charged: the attempt may start afresh.
            self.end_attempt(order.id, false, None).await?;
            if status.code() == tonic::Code::FailedPrecondition || status.code() == tonic::Code::NotFound {
                return Err(ApiError::precondition(
                    "SEATS_NOT_RESERVED",
                    "the hold expired or was released before payment; the order can no longer be paid",
                ));
            }
            return Err(internal_peer_error("inventory", status));
        }
        // 2. Charge, unless the discount made it free.
        let payment_id = if order.total == 0 {
            None
        } else {
            let charged = self
                .peers
                .payments
                .clone()
                .charge(Request::new(payments::ChargeRequest {
                    idempotency_key: attempt_key(order.id, attempt.number),
                    order_id: order.id.to_string(),
                    customer_id: order.buyer_id.to_string(),
                    amount: money(order.total, &order.currency),
                    card_number: card.number,
                    exp_month: card.exp_month,
                    exp_year: card.exp_year,
                    cvc: card.cvc,
                    description: format!("order {}", order.id),
                    organization_id: order.organization_id.to_string(),
                }))
                .await;
            match charged {
                Ok(payment) => {
                    let payment = payment.into_inner();
                    if payment.status != payments::PaymentStatus::Succeeded as i32 {
                        let message = if payment.failure_message.is_empty() {
                            "the payment failed".to_string()
                        } else {
                            payment.failure_message.clone()
                        };
                        self.end_attempt(order.id, false, Some(message.clone())).await?;
                        let mut error = ApiError::precondition("PAYMENT_FAILED", message);
                        if let ApiError::FailedPrecondition { metadata, .. } = &mut error {
                            let code = payments::FailureCode::try_from(payment.failure_code)
                                .unwrap_or(payments::FailureCode::Unspecified);
                            metadata.insert("failure_code".into(), code.as_str_name().into());
                        }
                        return Err(error);
                    }
                    let pays_this = payment.order_id == order.id.to_string()
                        && payment.amount == money(order.total, &order.currency)
                        && payment.customer_id == order.buyer_id.to_string();
                    if !pays_this {
                        // Never seen: payments answers a key with the charge it made for it. The
                        // lease runs out and the order stays unpaid; the consumer refunds it.
                        return Err(ApiError::internal(format!(
                            "payments answered order {} with a payment of another order, amount or buyer",
                            order.id
                        )));
                    }
                    Some(Uuid::parse_str(&payment.id).map_err(|_| ApiError::internal("payment id"))?)
                }
                Err(status) => {
                    // Whether payments saw the charge is unknown unless it answered with a
                    // verdict on the request itself: keep the attempt (and its key) open then.
                    let verdict = matches!(
                        status.code(),
                        tonic::Code::InvalidArgument
                            | tonic::Code::PermissionDenied
                            | tonic::Code::FailedPrecondition
                    );
                    self.end_attempt(order.id, !verdict, None).await?;
                    let key_refused = {
                        use tonic_types::StatusExt;
                        status.code() == tonic::Code::InvalidArgument
                            && status.get_error_details().bad_request().is_some_and(|b| {
                                b.field_violations.iter().any(|v| v.field == "idempotency_key")
                            })
                    };
                    if key_refused {
                        // Payments refused the attempt's key (used for another charge, which
                        // orders refunds): the attempt is over and a retry starts a new one.
                        return Err(ApiError::Unavailable(
                            "this payment attempt was refused; retry to make a new one".into(),
                        ));
                    }
                    return Err(internal_peer_error("payments", status));
                }
            }
        };
        // 3. Paid: tickets and order.paid in one transaction.
        self.complete(order.id, payment_id).await
    }

    /// Takes the order's payment lease in one statement: an update that only matches a payable,
    /// unleased order of `buyer`. Only when it matches nothing is the order read to say why.
    async fn take_lease(&self, buyer: Uuid, order_id: Uuid) -> ApiResult<Lease> {
        let mut conn = self.pool.get().await?;
        let lease = chrono::Duration::from_std(self.config.charge_lease).unwrap_or_default();
        // A lease freed between the update and the read is taken on the next turn.
        for _ in 0..3 {
            let now = Utc::now();
            let taken: Option<OrderRow> = diesel::update(
                orders::table
                    .find(order_id)
                    .filter(orders::buyer_id.eq(buyer))
                    .filter(orders::status.eq("pending_payment"))
                    .filter(orders::payment_deadline.gt(now))
                    .filter(lease_free(now)),
            )
            .set((
                // An attempt left open (its outcome unknown) is retried with the same key.
                orders::payment_attempt.eq(diesel::dsl::case_when(
                    orders::attempt_open,
                    orders::payment_attempt,
                )
                .otherwise(orders::payment_attempt + 1)),
                orders::attempt_open.eq(true),
                orders::charging_until.eq(Some(now + lease)),
                orders::updated_at.eq(now),
            ))
            .returning(OrderRow::as_returning())
            .get_result(&mut conn)
            .await
            .optional()?;
            if let Some(order) = taken {
                let number = order.payment_attempt;
                return Ok(Lease::Taken(Attempt { order, number }));
            }
            let order = orders::table
                .find(order_id)
                .select(OrderRow::as_select())
                .first(&mut conn)
                .await
                .optional()?
                .filter(|o| o.buyer_id == buyer)
                .ok_or(ApiError::NotFound { resource: "order" })?;
            if order.is_paid() {
                return Ok(Lease::Done(order));
            }
            if order.status != "pending_payment" {
                return Err(ApiError::precondition(
                    "ORDER_NOT_PAYABLE",
                    format!("the order is {}", order.status),
                ));
            }
            let now = Utc::now();
            if order.payment_deadline <= now {
                return Err(ApiError::precondition(
                    "ORDER_EXPIRED",
                    "the payment deadline has passed",
                ));
            }
            if order.charging_until.is_some_and(|until| until > now) {
                return Ok(Lease::Busy(order));
            }
        }
        Err(ApiError::Unavailable("the order is changing; try again".into()))
    }

    /// Gives the lease back; `open` keeps the attempt's key for the next try (outcome unknown).
    /// A payment error, when given, replaces the last one shown to the buyer.
    async fn end_attempt(&self, order_id: Uuid, open: bool, error: Option<String>) -> ApiResult<()> {
        let mut conn = self.pool.get().await?;
        let pending = orders::table
            .find(order_id)
            .filter(orders::status.eq("pending_payment"));
        let released = (
            orders::attempt_open.eq(open),
            orders::charging_until.eq(None::<DateTime<Utc>>),
            orders::updated_at.eq(Utc::now()),
        );
        match error {
            Some(error) => {
                diesel::update(pending)
                    .set((released, orders::last_payment_error.eq(error)))
                    .execute(&mut conn)
                    .await?
            }
            None => diesel::update(pending).set(released).execute(&mut conn).await?,
        };
        Ok(())
    }

    /// Waits a little for the PayOrder holding the lease: its paid order, its verdict on the
    /// card (the same attempt declined), the order's closing, or ABORTED to come back later.
    async fn wait_for_other_payment(&self, seen: &OrderRow) -> ApiResult<OtherPayment> {
        let until = tokio::time::Instant::now() + WAIT_FOR_OTHER_PAYMENT.min(self.config.charge_lease);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let order = self
                .find(seen.id)
                .await?
                .ok_or(ApiError::NotFound { resource: "order" })?;
            if order.is_paid() {
                return Ok(OtherPayment::Paid(Box::new(order)));
            }
            if order.status != "pending_payment" {
                return Err(ApiError::precondition(
                    "ORDER_NOT_PAYABLE",
                    format!("the order is {}", order.status),
                ));
            }
            let now = Utc::now();
            if order.charging_until.is_none_or(|t| t <= now) {
                // The attempt it waited for was declined: that is its outcome.
                if !order.attempt_open
                    && order.payment_attempt == seen.payment_attempt
                    && let Some(error) = &order.last_payment_error
                {
                    return Err(ApiError::precondition("PAYMENT_FAILED", error.clone()));
                }
                return Ok(OtherPayment::Ended);
            }
            if tokio::time::Instant::now() > until {
                let left = (order.charging_until.unwrap_or(now) - now)
                    .to_std()
                    .unwrap_or_default();
                return Err(payment_in_progress(
                    left.clamp(Duration::from_secs(1), Duration::from_secs(5)),
                ));
            }
        }
    }

    /// Marks a pending order paid with its tickets and `order.paid`; a paid order is returned as
    /// it is. Used by PayOrder and by the `payment.succeeded` consumer after a crash.
    pub async fn complete(&self, order_id: Uuid, payment_id: Option<Uuid>) -> ApiResult<OrderView> {
        let mut conn = self.pool.get().await?;
        match complete_in(&mut conn, &self.signer, order_id, payment_id).await? {
            Completed::Now(view) => {
                self.outbox.notify();
                Ok(view)
            }
            Completed::Before(order) => {
                drop(conn);
                self.view(order).await
            }
        }
    }

    /// Expires unpaid orders past their deadline (not while a charge may be running).
    pub async fn expire_due(&self) -> ApiResult<usize> {
        let mut conn = self.pool.get().await?;
        let now = Utc::now();
        let due: Vec<Uuid> = orders::table
            .filter(orders::status.eq("pending_payment"))
            .filter(orders::payment_deadline.le(now))
            .filter(lease_free(now))
            .select(orders::id)
            .order(orders::payment_deadline)
            .limit(500)
            .load(&mut conn)
            .await?;
        let mut expired = 0;
        for id in due {
            if self.close(&mut conn, id, "expired", "").await?.is_some() {
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
        match self.close(&mut conn, order_id, "cancelled", reason).await? {
            Some(order) => {
                self.outbox.notify();
                Ok(order)
            }
            None => {
                let order = self
                    .find(order_id)
                    .await?
                    .ok_or(ApiError::NotFound { resource: "order" })?;
                if order.status == "cancelled" {
                    return Ok(order);
                }
                let now = Utc::now();
                if order.status == "pending_payment"
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
        status: &'static str,
        reason: &str,
    ) -> ApiResult<Option<OrderRow>> {
        conn.transaction::<_, ApiError, _>(async |conn| {
            let order = lock(conn, order_id).await?;
            let now = Utc::now();
            if order.status != "pending_payment" || order.charging_until.is_some_and(|t| t > now) {
                return Ok(None);
            }
            if status == "expired" && order.payment_deadline > now {
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
            let event = if status == "expired" {
                OutboxEvent::new(
                    "order.expired",
                    "order",
                    order.id,
                    &events::OrderExpired {
                        order_id: order.id.to_string(),
                        event_id: order.event_id.to_string(),
                        buyer_id: order.buyer_id.to_string(),
                        hold_id: order.hold_id.to_string(),
                    },
                )
            } else {
                OutboxEvent::new(
                    "order.cancelled",
                    "order",
                    order.id,
                    &events::OrderCancelled {
                        order_id: order.id.to_string(),
                        event_id: order.event_id.to_string(),
                        buyer_id: order.buyer_id.to_string(),
                        reason: reason.to_string(),
                        hold_id: order.hold_id.to_string(),
                    },
                )
            };
            messaging::enqueue(conn, vec![event]).await?;
            Ok(Some(order))
        })
        .await
    }

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

    /// Scans a ticket at a gate. Exactly one of concurrent scans is accepted.
    pub async fn check_in(
        &self,
        event_id: Uuid,
        secret: &str,
        gate: &str,
        nonce: &str,
    ) -> ApiResult<pb::CheckInResponse> {
        let Some(TicketClaim {
            ticket_id,
            event_id: ticket_event,
        }) = self.signer.verify(secret)
        else {
            return Ok(pb::CheckInResponse {
                result: pb::CheckInResult::Invalid as i32,
                ..Default::default()
            });
        };
        if ticket_event != event_id {
            return Ok(pb::CheckInResponse {
                result: pb::CheckInResult::WrongEvent as i32,
                ..Default::default()
            });
        }
        let mut conn = self.pool.get().await?;
        let response = conn
            .transaction::<_, ApiError, _>(async |conn| {
                let now = Utc::now();
                let nonce = (!nonce.is_empty()).then_some(nonce);
                let accepted: Option<TicketRow> = diesel::update(
                    tickets::table
                        .find(ticket_id)
                        .filter(tickets::status.eq("valid"))
                        .filter(tickets::secret.eq(secret)),
                )
                .set((
                    tickets::status.eq("checked_in"),
                    tickets::checked_in_at.eq(Some(now)),
                    tickets::check_in_gate.eq(Some(gate)),
                    tickets::check_in_nonce.eq(nonce),
                ))
                .returning(TicketRow::as_returning())
                .get_result(conn)
                .await
                .optional()?;
                if let Some(ticket) = accepted {
                    messaging::enqueue(
                        conn,
                        vec![OutboxEvent::new(
                            "ticket.checked_in",
                            "ticket",
                            ticket.id,
                            &events::TicketCheckedIn {
                                ticket_id: ticket.id.to_string(),
                                event_id: ticket.event_id.to_string(),
                                order_id: ticket.order_id.to_string(),
                                gate: gate.to_string(),
                                at: Some(to_timestamp(now)),
                            },
                        )],
                    )
                    .await?;
                    let line = line_of(conn, ticket.line_id).await?;
                    return Ok(pb::CheckInResponse {
                        result: pb::CheckInResult::Accepted as i32,
                        ticket: Some(ticket.to_proto(line.as_ref(), false)),
                        first_check_in: None,
                    });
                }
                let ticket: Option<TicketRow> = tickets::table
                    .find(ticket_id)
                    .select(TicketRow::as_select())
                    .first(conn)
                    .await
                    .optional()?;
                let Some(ticket) = ticket.filter(|t| t.secret == secret) else {
                    return Ok(pb::CheckInResponse {
                        result: pb::CheckInResult::Invalid as i32,
                        ..Default::default()
                    });
                };
                let line = line_of(conn, ticket.line_id).await?;
                let result = match ticket.status.as_str() {
                    // The same scan retried (same nonce) is not a second entry.
                    "checked_in" if nonce.is_some() && ticket.check_in_nonce.as_deref() == nonce => {
                        pb::CheckInResult::Accepted
                    }
                    "checked_in" => pb::CheckInResult::AlreadyCheckedIn,
                    _ => pb::CheckInResult::Revoked,
                };
                Ok(pb::CheckInResponse {
                    result: result as i32,
                    first_check_in: (result == pb::CheckInResult::AlreadyCheckedIn)
                        .then(|| ticket.check_in_record())
                        .flatten(),
                    ticket: Some(ticket.to_proto(line.as_ref(), false)),
                })
            })
            .await?;
        if response.result == pb::CheckInResult::Accepted as i32 {
            self.outbox.notify();
        }
        Ok(response)
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
    if !matches!(order.status.as_str(), "paid" | "partially_refunded") {
        if order.status == "refunded" {
            return Ok(order);
        }
        return Err(ApiError::precondition(
            "ORDER_NOT_REFUNDABLE",
            format!("a {} order cannot be refunded", order.status),
        ));
    }
    let lines: Vec<LineRow> = order_lines::table
        .filter(order_lines::order_id.eq(order_id))
        .order(order_lines::position)
        .select(LineRow::as_select())
        .load(conn)
        .await?;
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
        .filter(tickets::status.eq("checked_in"))
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
            .filter(tickets::status.ne("checked_in")),
    )
    .set(tickets::status.eq("refunded"))
    .execute(conn)
    .await?;
    let full = chosen.len() == lines.iter().filter(|l| !l.refunded).count();
    let status = if full { "refunded" } else { "partially_refunded" };
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
        vec![OutboxEvent::new(
            "order.refunded",
            "order",
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
                full: status == "refunded",
                payment_id: order.payment_id.map(|p| p.to_string()).unwrap_or_default(),
                refund_id: Uuid::now_v7().to_string(),
            },
        )],
    )
    .await?;
    Ok(order)
}

enum Lease {
    Done(OrderRow),
    /// Another PayOrder holds the lease (the order as it was seen then).
    Busy(OrderRow),
    Taken(Attempt),
}

/// How another PayOrder of the same order came out, as far as a retry waiting for it can tell.
enum OtherPayment {
    Paid(Box<OrderRow>),
    /// It let go of the lease without a verdict on the card (or its process died): take over.
    Ended,
}

/// How long a retry waits for the PayOrder in flight before it is told to come back.
const WAIT_FOR_OTHER_PAYMENT: Duration = Duration::from_secs(2);

/// The answer to a retry while a payment of the order is in flight: come back for its outcome.
fn payment_in_progress(retry_after: Duration) -> ApiError {
    ApiError::Aborted {
        reason: "PAYMENT_IN_PROGRESS",
        message: "a payment of this order is in progress; retry to get its outcome".into(),
        retry_after,
    }
}

struct Attempt {
    order: OrderRow,
    number: i32,
}

/// Orders on which no payment attempt holds a lease at `now` (none was taken, or it ran out).
fn lease_free(
    now: DateTime<Utc>,
) -> diesel::dsl::Or<
    diesel::dsl::IsNull<orders::charging_until>,
    diesel::dsl::LtEq<orders::charging_until, DateTime<Utc>>,
> {
    orders::charging_until
        .is_null()
        .or(orders::charging_until.le(now))
}

async fn lock(conn: &mut Conn, order_id: Uuid) -> ApiResult<OrderRow> {
    orders::table
        .find(order_id)
        .select(OrderRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or(ApiError::NotFound { resource: "order" })
}

async fn line_of(conn: &mut Conn, line_id: Uuid) -> ApiResult<Option<LineRow>> {
    Ok(order_lines::table
        .find(line_id)
        .select(LineRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

fn line_summary(line: &LineRow, currency: &str, ticket: Option<Uuid>) -> events::OrderLineSummary {
    events::OrderLineSummary {
        line_id: line.id.to_string(),
        tier_id: line.tier_id.clone(),
        tier_name: line.tier_name.clone(),
        seat_id: line.seat_id.clone().unwrap_or_default(),
        ga_area_id: line.ga_area_id.clone().unwrap_or_default(),
        price: money(line.unit_price - line.discount, currency),
        ticket_id: ticket.map(|t| t.to_string()).unwrap_or_default(),
    }
}

/// Counts one use of a code under its row lock: exact under any concurrency.
async fn take_discount(conn: &mut Conn, event_id: Uuid, code: &str) -> ApiResult<DiscountRow> {
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

enum Completed {
    /// Paid by this call, with the lines and the tickets just issued.
    Now(OrderView),
    /// Already paid.
    Before(OrderRow),
}

async fn complete_in(
    conn: &mut Conn,
    signer: &TicketSigner,
    order_id: Uuid,
    payment_id: Option<Uuid>,
) -> ApiResult<Completed> {
    conn.transaction::<_, ApiError, _>(async |conn| {
        let now = Utc::now();
        // Only a pending order is marked paid; the update's row lock orders this against the
        // expiry sweeper and cancellation, which re-check the status under the same lock.
        let updated: Option<OrderRow> = diesel::update(
            orders::table
                .find(order_id)
                .filter(orders::status.eq("pending_payment")),
        )
        .set((
            orders::status.eq("paid"),
            orders::payment_id.eq(payment_id),
            orders::paid_at.eq(Some(now)),
            orders::attempt_open.eq(false),
            orders::charging_until.eq(None::<DateTime<Utc>>),
            orders::last_payment_error.eq(None::<String>),
            orders::updated_at.eq(now),
        ))
        .returning(OrderRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
        let Some(order) = updated else {
            let order = orders::table
                .find(order_id)
                .select(OrderRow::as_select())
                .first(conn)
                .await
                .optional()?
                .ok_or(ApiError::NotFound { resource: "order" })?;
            if order.is_paid() {
                return Ok(Completed::Before(order));
            }
            // Expired or cancelled meanwhile: payments refunds the charge when it hears of it.
            return Err(ApiError::precondition(
                "ORDER_NOT_PAYABLE",
                format!("the order is {}; any charge is refunded", order.status),
            ));
        };
        let lines: Vec<LineRow> = order_lines::table
            .filter(order_lines::order_id.eq(order_id))
            .order(order_lines::position)
            .select(LineRow::as_select())
            .load(conn)
            .await?;
        let issued: Vec<TicketRow> = lines
            .iter()
            .map(|line| {
                let id = Uuid::new_v4();
                TicketRow {
                    id,
                    order_id,
                    line_id: line.id,
                    event_id: order.event_id,
                    holder_id: order.buyer_id,
                    status: "valid".into(),
                    secret: signer.sign(TicketClaim {
                        ticket_id: id,
                        event_id: order.event_id,
                    }),
                    issued_at: now,
                    checked_in_at: None,
                    check_in_gate: None,
                    check_in_nonce: None,
                }
            })
            .collect();
        diesel::insert_into(tickets::table)
            .values(&issued)
            .execute(conn)
            .await?;
        let ticket_of: HashMap<Uuid, Uuid> = issued.iter().map(|t| (t.line_id, t.id)).collect();
        messaging::enqueue(
            conn,
            vec![OutboxEvent::new(
                "order.paid",
                "order",
                order.id,
                &events::OrderPaid {
                    order_id: order.id.to_string(),
                    event_id: order.event_id.to_string(),
                    buyer_id: order.buyer_id.to_string(),
                    buyer_email: order.buyer_email.clone(),
                    total: money(order.total, &order.currency),
                    discount_total: money(order.discount_total, &order.currency),
                    lines: lines
                        .iter()
                        .map(|l| line_summary(l, &order.currency, ticket_of.get(&l.id).copied()))
                        .collect(),
                    payment_id: payment_id.map(|p| p.to_string()).unwrap_or_default(),
                    paid_at: Some(to_timestamp(now)),
                },
            )],
        )
        .await?;
        metrics::counter!("tickets_issued_total").increment(issued.len() as u64);
        Ok(Completed::Now(OrderView {
            order,
            lines,
            tickets: issued,
        }))
    })
    .await
}

/// The idempotency key of an order's payment attempt: payments charges a key at most once.
pub fn attempt_key(order_id: Uuid, attempt: i32) -> String {
    format!("order:{order_id}:attempt:{attempt}")
}

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
    /// Reserves the order's places durably: inventory turns its hold into a sale for it,
    /// once (idempotent on the order), and only for the hold's owner.
    async fn commit_places(&self, order: &OrderRow) -> Result<inventory::CommitHoldResponse, tonic::Status> {
        self.peers
            .inventory
            .clone()
            .commit_hold(Request::new(inventory::CommitHoldRequest {
                hold_id: order.hold_id.to_string(),
                order_id: order.id.to_string(),
                customer_id: order.buyer_id.to_string(),
            }))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Gives a payment that pays nothing here back in full (idempotent on the payment).
    async fn reject_payment(&self, payment_id: Uuid, why: &str) -> anyhow::Result<()> {
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
        let order: Option<OrderRow> = orders::table
            .find(order_id)
            .select(OrderRow::as_select())
            .first(conn)
            .await
            .optional()?;
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
        let order: Option<OrderRow> = orders::table
            .find(order_id)
            .select(OrderRow::as_select())
            .first(conn)
            .await
            .optional()?;
        let Some(order) = order else {
            return Ok(());
        };
        let refunded_total = refund.refunded_total.as_ref().map_or(0, |m| m.amount_minor);
        let ours = order.payment_id == Some(payment_id);
        if !ours || !matches!(order.status.as_str(), "paid" | "partially_refunded") {
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
