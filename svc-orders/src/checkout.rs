//! PayOrder: the charge lease, the durable reservation (inventory CommitHold, idempotent on the
//! order), the charge (payments, idempotent on `order:<id>:attempt:<n>`), then the order paid,
//! its tickets and `order.paid` in one transaction. While an attempt's outcome is unknown a retry
//! reuses its key, so a card is charged at most once; a retry during a payment in flight is told
//! to come back for its outcome. The lease is renewed while the work runs (`keep_lease`), and a
//! checkout whose lease lapsed is finished or released by `resume_lapsed`.

use std::{collections::HashMap, future::Future, time::Duration};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use ticketing_platform::{
    ApiError, ApiResult,
    clients::internal_peer_error,
    messaging::{self, OutboxEvent},
    time::to_timestamp,
};
use ticketing_proto::ticketing::{
    events::v1 as events,
    inventory::v1::{self as inventory},
    payments::v1::{self as payments},
};
use tonic::Request;
use uuid::Uuid;

use crate::{
    orders::*,
    schema::{orders, tickets},
    store::*,
    tickets::{TicketClaim, TicketSigner},
};

impl Orders {
    /// Pays an order: lease, durable reservation, charge, tickets. See the module docs.
    /// Pays `buyer`'s order; another buyer's order is NOT_FOUND.
    #[tracing::instrument(level = "debug", skip_all, fields(order = %order_id))]
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
        // The lease is renewed while this attempt works, so it lapses within seconds if the
        // process dies and the checkout is resumed or released (see `resume_lapsed`).
        let (order_id, holder) = (attempt.order.id, attempt.holder);
        self.keep_lease(order_id, holder, self.pay_leased(attempt, card))
            .await
    }

    /// PayOrder's steps once it holds the lease: reserve, charge, complete.
    async fn pay_leased(&self, attempt: Attempt, card: CardInput) -> ApiResult<OrderView> {
        let (order, holder) = (attempt.order, attempt.holder);
        // 1. Reserve durably: after this no one else can buy these places.
        let committed = self.commit_places(&order).await;
        if let Err(status) = committed {
            // Nothing was charged: the attempt may start afresh.
            self.end_attempt(order.id, holder, false, None).await?;
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
                        self.end_attempt(order.id, holder, false, Some(message.clone()))
                            .await?;
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
                    self.end_attempt(order.id, holder, !verdict, None).await?;
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
    #[tracing::instrument(level = "debug", skip_all, fields(order = %order_id))]
    pub(crate) async fn take_lease(&self, buyer: Uuid, order_id: Uuid) -> ApiResult<Lease> {
        let mut conn = self.pool.get().await?;
        let lease = chrono::Duration::from_std(self.config.charge_lease).unwrap_or_default();
        let holder = Uuid::new_v4();
        // A lease freed between the update and the read is taken on the next turn.
        for _ in 0..3 {
            let now = Utc::now();
            let taken: Option<OrderRow> = diesel::update(
                orders::table
                    .find(order_id)
                    .filter(orders::buyer_id.eq(buyer))
                    .filter(orders::status.eq(OrderStatus::PendingPayment))
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
                orders::lease_holder.eq(Some(holder)),
                orders::updated_at.eq(now),
            ))
            .returning(OrderRow::as_returning())
            .get_result(&mut conn)
            .await
            .optional()?;
            if let Some(order) = taken {
                let number = order.payment_attempt;
                return Ok(Lease::Taken(Attempt {
                    order,
                    number,
                    holder,
                }));
            }
            let order = find_order(&mut conn, order_id)
                .await?
                .filter(|o| o.buyer_id == buyer)
                .ok_or(ApiError::NotFound { resource: "order" })?;
            if order.is_paid() {
                return Ok(Lease::Done(order));
            }
            if order.status != OrderStatus::PendingPayment {
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

    /// Gives `holder`'s lease back; `open` keeps the attempt's key for the next try (outcome
    /// unknown). A payment error, when given, replaces the last one shown to the buyer. A lease
    /// that lapsed and was taken over is left alone: its new holder decides the attempt.
    async fn end_attempt(
        &self,
        order_id: Uuid,
        holder: Uuid,
        open: bool,
        error: Option<String>,
    ) -> ApiResult<()> {
        let mut conn = self.pool.get().await?;
        let pending = orders::table
            .find(order_id)
            .filter(orders::status.eq(OrderStatus::PendingPayment))
            .filter(orders::lease_holder.eq(holder));
        let released = (
            orders::attempt_open.eq(open),
            orders::charging_until.eq(None::<DateTime<Utc>>),
            orders::lease_holder.eq(None::<Uuid>),
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

    /// Runs `work` while renewing the order's lease for `holder` every third of its length.
    /// A lease lost meanwhile (it lapsed while this process stood still, and the checkout was
    /// resumed elsewhere) is not taken back: every step of `work` is idempotent either way.
    async fn keep_lease<T>(
        &self,
        order_id: Uuid,
        holder: Uuid,
        work: impl Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        let every = (self.config.charge_lease / 3).max(Duration::from_millis(100));
        let renewals = async {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                ticks.tick().await;
                if let Err(error) = self.renew_lease(order_id, holder).await {
                    tracing::warn!(%error, order = %order_id, "could not renew the charge lease");
                }
            }
        };
        tokio::select! {
            result = work => result,
            never = renewals => never,
        }
    }

    async fn renew_lease(&self, order_id: Uuid, holder: Uuid) -> ApiResult<()> {
        let mut conn = self.pool.get().await?;
        let lease = chrono::Duration::from_std(self.config.charge_lease).unwrap_or_default();
        diesel::update(
            orders::table
                .find(order_id)
                .filter(orders::status.eq(OrderStatus::PendingPayment))
                .filter(orders::lease_holder.eq(holder))
                .filter(orders::charging_until.is_not_null()),
        )
        .set(orders::charging_until.eq(Some(Utc::now() + lease)))
        .execute(&mut conn)
        .await?;
        Ok(())
    }

    /// Checkouts whose lease lapsed (its holder died or stood still): finished from the
    /// charge's outcome at payments when it succeeded, otherwise the lease is given back, the
    /// attempt's key kept while its outcome is unknown, so the buyer can retry or cancel at once
    /// and the order expires on time. Returns how many were settled.
    pub async fn resume_lapsed(&self) -> ApiResult<usize> {
        let lapsed: Vec<OrderRow> = {
            let mut conn = self.pool.get().await?;
            orders::table
                .filter(orders::status.eq(OrderStatus::PendingPayment))
                .filter(orders::charging_until.le(Utc::now()))
                .select(OrderRow::as_select())
                .order(orders::charging_until)
                .limit(100)
                .load(&mut conn)
                .await?
        };
        let mut settled = 0;
        for order in lapsed {
            match self.resume(&order).await {
                Ok(outcome) => {
                    tracing::info!(order = %order.id, outcome, "a checkout whose lease lapsed was resumed");
                    metrics::counter!("orders_checkouts_resumed_total", "outcome" => outcome).increment(1);
                    settled += 1;
                }
                Err(error) => {
                    tracing::warn!(order = %order.id, %error, "resuming a checkout failed; trying again")
                }
            }
        }
        Ok(settled)
    }

    /// Resumes one checkout whose lease lapsed (see [`Self::resume_lapsed`]); says how it ended.
    #[tracing::instrument(level = "debug", skip_all, fields(order = %order.id))]
    async fn resume(&self, order: &OrderRow) -> ApiResult<&'static str> {
        let key = attempt_key(order.id, order.payment_attempt);
        let charge = if order.attempt_open {
            let found = self
                .peers
                .payments
                .clone()
                .get_charge(Request::new(payments::GetChargeRequest {
                    idempotency_key: key.clone(),
                    order_id: order.id.to_string(),
                }))
                .await;
            match found {
                Ok(payment) => Some(payment.into_inner()),
                Err(status) if status.code() == tonic::Code::NotFound => None,
                Err(status) => return Err(internal_peer_error("payments", status)),
            }
        } else {
            None
        };
        let succeeded = payments::PaymentStatus::Succeeded as i32;
        let failed = payments::PaymentStatus::Failed as i32;
        let outcome = match charge {
            Some(payment) if payment.status == succeeded => {
                let paid = events::PaymentSucceeded {
                    payment_id: payment.id.clone(),
                    order_id: order.id.to_string(),
                    amount: payment.amount.clone(),
                    idempotency_key: key,
                    customer_id: payment.customer_id.clone(),
                };
                // As the consumer does it: in a transaction whose lease update holds off
                // expiry and cancellation until the order is complete.
                let mut conn = self.pool.get().await?;
                conn.transaction::<_, anyhow::Error, _>(async |conn| {
                    self.complete_from_event(conn, &paid).await
                })
                .await
                .map_err(|e| ApiError::Unavailable(format!("finishing the checkout: {e:#}")))?;
                "completed"
            }
            Some(payment) if payment.status == failed => {
                let message = if payment.failure_message.is_empty() {
                    "the payment failed".to_string()
                } else {
                    payment.failure_message
                };
                self.release_lapsed(order.id, false, Some(message)).await?;
                "declined"
            }
            // Processing (payments settles it and says so), never sent, or refunded.
            _ => {
                self.release_lapsed(order.id, order.attempt_open, None).await?;
                "released"
            }
        };
        Ok(outcome)
    }

    /// Gives back a lease that lapsed (never one taken again since).
    async fn release_lapsed(&self, order_id: Uuid, open: bool, error: Option<String>) -> ApiResult<()> {
        let mut conn = self.pool.get().await?;
        let now = Utc::now();
        let lapsed = orders::table
            .find(order_id)
            .filter(orders::status.eq(OrderStatus::PendingPayment))
            .filter(orders::charging_until.le(now));
        let released = (
            orders::attempt_open.eq(open),
            orders::charging_until.eq(None::<DateTime<Utc>>),
            orders::lease_holder.eq(None::<Uuid>),
            orders::updated_at.eq(now),
        );
        match error {
            Some(error) => {
                diesel::update(lapsed)
                    .set((released, orders::last_payment_error.eq(error)))
                    .execute(&mut conn)
                    .await?
            }
            None => diesel::update(lapsed).set(released).execute(&mut conn).await?,
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
            if order.status != OrderStatus::PendingPayment {
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
    /// it is. Used by PayOrder only: the `payment.succeeded` consumer and the resuming of a lapsed
    /// checkout call `complete_in` (through `complete_from_event`) in their own transaction.
    #[tracing::instrument(level = "debug", skip_all, fields(order = %order_id))]
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

    /// Reserves the order's places durably: inventory turns its hold into a sale for it,
    /// once (idempotent on the order), and only for the hold's owner.
    #[tracing::instrument(level = "debug", skip_all, fields(order = %order.id))]
    pub(crate) async fn commit_places(
        &self,
        order: &OrderRow,
    ) -> Result<inventory::CommitHoldResponse, tonic::Status> {
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
}

pub(crate) enum Lease {
    Done(OrderRow),
    /// Another PayOrder holds the lease (the order as it was seen then).
    Busy(OrderRow),
    Taken(Attempt),
}

/// How another PayOrder of the same order came out, as far as a retry waiting for it can tell.
pub(crate) enum OtherPayment {
    Paid(Box<OrderRow>),
    /// It let go of the lease without a verdict on the card (or its process died): take over.
    Ended,
}

/// How long a retry waits for the PayOrder in flight before it is told to come back.
pub(crate) const WAIT_FOR_OTHER_PAYMENT: Duration = Duration::from_secs(2);

/// The answer to a retry while a payment of the order is in flight: come back for its outcome.
pub(crate) fn payment_in_progress(retry_after: Duration) -> ApiError {
    ApiError::Aborted {
        reason: "PAYMENT_IN_PROGRESS",
        message: "a payment of this order is in progress; retry to get its outcome".into(),
        retry_after,
    }
}

pub(crate) struct Attempt {
    order: OrderRow,
    number: i32,
    /// Names this attempt's lease: only its renewals extend it.
    holder: Uuid,
}

/// Orders on which no payment attempt holds a lease at `now` (none was taken, or it ran out).
pub(crate) fn lease_free(
    now: DateTime<Utc>,
) -> diesel::dsl::Or<
    diesel::dsl::IsNull<orders::charging_until>,
    diesel::dsl::LtEq<orders::charging_until, DateTime<Utc>>,
> {
    orders::charging_until
        .is_null()
        .or(orders::charging_until.le(now))
}

pub(crate) enum Completed {
    /// Paid by this call, with the lines and the tickets just issued.
    Now(OrderView),
    /// Already paid.
    Before(OrderRow),
}

pub(crate) async fn complete_in(
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
                .filter(orders::status.eq(OrderStatus::PendingPayment)),
        )
        .set((
            orders::status.eq(OrderStatus::Paid),
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
            let order = find_order(conn, order_id)
                .await?
                .ok_or(ApiError::NotFound { resource: "order" })?;
            if order.is_paid() {
                return Ok(Completed::Before(order));
            }
            // Expired or cancelled meanwhile: the payment's event takes it back or refunds it.
            return Err(ApiError::precondition(
                "ORDER_NOT_PAYABLE",
                format!(
                    "the order is {}; a charge made for it takes it back while its places are free, \
                     or is refunded",
                    order.status
                ),
            ));
        };
        issue(conn, signer, order, payment_id, false)
            .await
            .map(Completed::Now)
    })
    .await
}

/// An order just marked paid: its tickets and `order.paid`, in the caller's transaction.
pub(crate) async fn issue(
    conn: &mut Conn,
    signer: &TicketSigner,
    order: OrderRow,
    payment_id: Option<Uuid>,
    reactivated: bool,
) -> ApiResult<OrderView> {
    let order_id = order.id;
    let now = order.paid_at.unwrap_or_else(Utc::now);
    let lines = lines_of(conn, order_id).await?;
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
                status: TicketStatus::Valid,
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
    let ticket_of: HashMap<Uuid, &TicketRow> = issued.iter().map(|t| (t.line_id, t)).collect();
    messaging::enqueue(
        conn,
        vec![OutboxEvent::of(
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
                    .map(|l| {
                        let ticket = ticket_of.get(&l.id);
                        events::OrderLineSummary {
                            ticket_secret: ticket.map(|t| t.secret.clone()).unwrap_or_default(),
                            ..line_summary(l, &order.currency, ticket.map(|t| t.id))
                        }
                    })
                    .collect(),
                payment_id: payment_id.map(|p| p.to_string()).unwrap_or_default(),
                paid_at: Some(to_timestamp(now)),
                reactivated,
            },
        )],
    )
    .await?;
    metrics::counter!("tickets_issued_total").increment(issued.len() as u64);
    Ok(OrderView {
        order,
        lines,
        tickets: issued,
    })
}

/// The idempotency key of an order's payment attempt: payments charges a key at most once.
pub fn attempt_key(order_id: Uuid, attempt: i32) -> String {
    format!("order:{order_id}:attempt:{attempt}")
}
