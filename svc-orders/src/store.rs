//! The orders database: its rows as the services see them, and the queries the API makes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use ticketing_platform::{ApiError, ApiResult, time::to_timestamp};
use ticketing_proto::ticketing::{common::v1::Money, orders::v1 as pb};
use uuid::Uuid;

pub use crate::domain::{OrderStatus, TicketStatus};
use crate::{
    domain::{Discount, NotApplicable},
    schema::{discount_codes, order_lines, orders, tickets},
};

pub(crate) type Conn = AsyncPgConnection;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = orders)]
pub struct OrderRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub organization_id: Uuid,
    pub buyer_id: Uuid,
    pub buyer_email: String,
    pub status: OrderStatus,
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
    pub status: TicketStatus,
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

pub(crate) fn money(amount_minor: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: currency.to_string(),
    })
}

impl OrderRow {
    pub fn status_proto(&self) -> pb::OrderStatus {
        self.status.to_proto()
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

    pub(crate) fn is_paid(&self) -> bool {
        self.status.is_paid()
    }
}

impl TicketRow {
    pub fn status_proto(&self) -> pb::TicketStatus {
        self.status.to_proto()
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
        let rule = match (self.percent_off, self.amount_off) {
            (Some(percent), _) => Discount::PercentOff {
                percent,
                tiers: &self.tier_ids,
            },
            (None, Some(amount)) => Discount::AmountOff {
                amount,
                currency: self.currency.as_deref().unwrap_or_default(),
                tiers: &self.tier_ids,
            },
            (None, None) => return Ok(vec![0; lines.len()]),
        };
        rule.per_line(lines, currency).map_err(|why| {
            ApiError::precondition(
                "DISCOUNT_NOT_APPLICABLE",
                match why {
                    NotApplicable::NoEligibleLine => "the discount code does not apply to these tickets",
                    NotApplicable::OtherCurrency => "the discount code is in another currency",
                },
            )
        })
    }
}

/// The order as it is now.
pub async fn find_order(conn: &mut Conn, order_id: Uuid) -> ApiResult<Option<OrderRow>> {
    Ok(orders::table
        .find(order_id)
        .select(OrderRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub(crate) async fn lock(conn: &mut Conn, order_id: Uuid) -> ApiResult<OrderRow> {
    orders::table
        .find(order_id)
        .select(OrderRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or(ApiError::NotFound { resource: "order" })
}

/// The order's lines, in their order.
pub(crate) async fn lines_of(conn: &mut Conn, order_id: Uuid) -> ApiResult<Vec<LineRow>> {
    Ok(order_lines::table
        .filter(order_lines::order_id.eq(order_id))
        .order(order_lines::position)
        .select(LineRow::as_select())
        .load(conn)
        .await?)
}

pub(crate) async fn line_of(conn: &mut Conn, line_id: Uuid) -> ApiResult<Option<LineRow>> {
    Ok(order_lines::table
        .find(line_id)
        .select(LineRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Which orders a listing shows: a buyer's own or an event's, of some statuses, older than a
/// cursor.
pub struct OrderFilter<'a> {
    pub buyer: Option<Uuid>,
    pub event: Option<Uuid>,
    pub statuses: &'a [OrderStatus],
    pub before: Option<Uuid>,
}

/// Orders newest first, at most `limit`.
pub async fn list_orders(conn: &mut Conn, filter: &OrderFilter<'_>, limit: i64) -> ApiResult<Vec<OrderRow>> {
    let mut query = orders::table.select(OrderRow::as_select()).into_boxed();
    if let Some(buyer) = filter.buyer {
        query = query.filter(orders::buyer_id.eq(buyer));
    }
    if let Some(event) = filter.event {
        query = query.filter(orders::event_id.eq(event));
    }
    if !filter.statuses.is_empty() {
        query = query.filter(orders::status.eq_any(filter.statuses.to_vec()));
    }
    if let Some(before) = filter.before {
        query = query.filter(orders::id.lt(before));
    }
    Ok(query.order(orders::id.desc()).limit(limit).load(conn).await?)
}

/// The lines (in order) and tickets of `orders`, by order.
pub async fn lines_and_tickets(
    conn: &mut Conn,
    orders: &[Uuid],
) -> ApiResult<(HashMap<Uuid, Vec<LineRow>>, HashMap<Uuid, Vec<TicketRow>>)> {
    let lines: Vec<LineRow> = order_lines::table
        .filter(order_lines::order_id.eq_any(orders))
        .order((order_lines::order_id, order_lines::position))
        .select(LineRow::as_select())
        .load(conn)
        .await?;
    let issued: Vec<TicketRow> = tickets::table
        .filter(tickets::order_id.eq_any(orders))
        .select(TicketRow::as_select())
        .load(conn)
        .await?;
    let mut lines_of: HashMap<Uuid, Vec<LineRow>> = HashMap::new();
    for line in lines {
        lines_of.entry(line.order_id).or_default().push(line);
    }
    let mut tickets_of: HashMap<Uuid, Vec<TicketRow>> = HashMap::new();
    for ticket in issued {
        tickets_of.entry(ticket.order_id).or_default().push(ticket);
    }
    Ok((lines_of, tickets_of))
}

/// Stores a new discount code; false when the event already has it.
pub async fn insert_discount(conn: &mut Conn, row: &DiscountRow) -> ApiResult<bool> {
    let inserted = diesel::insert_into(discount_codes::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

pub async fn find_discount(conn: &mut Conn, event: Uuid, code: &str) -> ApiResult<Option<DiscountRow>> {
    Ok(discount_codes::table
        .find((event, code))
        .select(DiscountRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// An event's codes in code order after `after`, at most `limit`.
pub async fn list_discounts(
    conn: &mut Conn,
    event: Uuid,
    after: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<DiscountRow>> {
    let mut query = discount_codes::table
        .filter(discount_codes::event_id.eq(event))
        .select(DiscountRow::as_select())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(discount_codes::code.gt(after.to_string()));
    }
    Ok(query.order(discount_codes::code).limit(limit).load(conn).await?)
}

/// Writes the changeable fields of `next`, unless the code was used more than `most_uses`
/// times meanwhile (None then).
pub async fn update_discount(
    conn: &mut Conn,
    next: &DiscountRow,
    most_uses: i32,
) -> ApiResult<Option<DiscountRow>> {
    Ok(
        diesel::update(discount_codes::table.find((next.event_id, &next.code)))
            .filter(discount_codes::times_used.le(most_uses))
            .set((
                discount_codes::valid_from.eq(next.valid_from),
                discount_codes::valid_until.eq(next.valid_until),
                discount_codes::max_uses.eq(next.max_uses),
                discount_codes::active.eq(next.active),
            ))
            .returning(DiscountRow::as_returning())
            .get_result(conn)
            .await
            .optional()?,
    )
}

/// Removes a code, or only deactivates it once orders used it (so their history stays
/// explainable).
pub async fn retire_discount(conn: &mut Conn, code: &DiscountRow) -> ApiResult<()> {
    let row = discount_codes::table.find((code.event_id, &code.code));
    if code.times_used > 0 {
        diesel::update(row)
            .set(discount_codes::active.eq(false))
            .execute(conn)
            .await?;
    } else {
        diesel::delete(row).execute(conn).await?;
    }
    Ok(())
}

pub async fn find_ticket(conn: &mut Conn, id: Uuid) -> ApiResult<Option<TicketRow>> {
    Ok(tickets::table
        .find(id)
        .select(TicketRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// The organization selling the order's event.
pub async fn organization_of_order(conn: &mut Conn, order: Uuid) -> ApiResult<Uuid> {
    Ok(orders::table
        .find(order)
        .select(orders::organization_id)
        .first(conn)
        .await?)
}

/// Tickets by id after `after`, a holder's or an order's, at most `limit`.
pub async fn list_tickets(
    conn: &mut Conn,
    holder: Option<Uuid>,
    order: Option<Uuid>,
    after: Option<Uuid>,
    limit: i64,
) -> ApiResult<Vec<TicketRow>> {
    let mut query = tickets::table.select(TicketRow::as_select()).into_boxed();
    if let Some(holder) = holder {
        query = query.filter(tickets::holder_id.eq(holder));
    }
    if let Some(order) = order {
        query = query.filter(tickets::order_id.eq(order));
    }
    if let Some(after) = after {
        query = query.filter(tickets::id.gt(after));
    }
    Ok(query.order(tickets::id).limit(limit).load(conn).await?)
}

/// Lines by id.
pub async fn lines_by_id(conn: &mut Conn, ids: &[Uuid]) -> ApiResult<HashMap<Uuid, LineRow>> {
    Ok(order_lines::table
        .filter(order_lines::id.eq_any(ids))
        .select(LineRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(|l: LineRow| (l.id, l))
        .collect())
}

/// The event's tickets revoked since issue (refunded or cancelled), for offline scanners.
pub async fn revoked_tickets(conn: &mut Conn, event: Uuid) -> ApiResult<Vec<Uuid>> {
    Ok(tickets::table
        .filter(tickets::event_id.eq(event))
        .filter(tickets::status.eq_any([TicketStatus::Refunded, TicketStatus::Cancelled]))
        .select(tickets::id)
        .load(conn)
        .await?)
}
