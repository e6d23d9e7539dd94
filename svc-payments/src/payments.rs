//! Charges and refunds, recorded so that a card is charged at most once per idempotency key.
//!
//! A charge is claimed first (a `processing` row, committed), then sent to the processor with
//! the same key, then settled in a second transaction with its event. A process that dies in
//! between leaves a `processing` row that [`Payments::settle_stale`] finishes by asking the
//! processor (which is idempotent on the key) or voiding the key there. The order's row in
//! `payment_orders` is locked by the claim and the order's closing: once an order closed, no new
//! charge for it starts. A charge that was already under way and succeeds after the order
//! closed is recorded like any other; orders, which hears of it, decides whether it takes the
//! order back (its places still free) or has it refunded, so the two never race and a charge is
//! never kept for an order that stays closed.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use ticketing_platform::{
    ApiError, ApiResult,
    db::{self, PgPool},
    messaging::{self, OutboxEvent, OutboxSignal},
    pagination::{self, Cursor},
    time::to_timestamp,
};
use ticketing_proto::ticketing::{
    common::v1::Money,
    events::v1 as events,
    payments::v1::{self as pb, FailureCode},
};
use uuid::Uuid;

use crate::{
    domain::PaymentStatus as Status,
    provider::{self, Card, Outcome, Provider},
    schema::{payment_orders, payments, refunds},
};

type Conn = AsyncPgConnection;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = payments)]
pub struct PaymentRow {
    pub id: Uuid,
    pub idempotency_key: String,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub organization_id: Option<Uuid>,
    pub amount: i64,
    pub currency: String,
    pub refunded: i64,
    pub status: Status,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub card_brand: String,
    pub card_last4: String,
    pub provider: String,
    pub provider_reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refunds)]
pub struct RefundRow {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub idempotency_key: String,
    pub amount: i64,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

impl PaymentRow {
    pub fn to_proto(&self) -> pb::Payment {
        let status = self.status.to_proto();
        pb::Payment {
            id: self.id.to_string(),
            order_id: self.order_id.to_string(),
            customer_id: self.customer_id.to_string(),
            amount: Some(self.money(self.amount)),
            refunded: Some(self.money(self.refunded)),
            status: status as i32,
            failure_code: self
                .failure_code
                .as_deref()
                .and_then(FailureCode::from_str_name)
                .unwrap_or(FailureCode::Unspecified) as i32,
            failure_message: self.failure_message.clone().unwrap_or_default(),
            card_brand: self.card_brand.clone(),
            card_last4: self.card_last4.clone(),
            provider: self.provider.clone(),
            provider_reference: self.provider_reference.clone().unwrap_or_default(),
            created_at: Some(to_timestamp(self.created_at)),
            updated_at: Some(to_timestamp(self.updated_at)),
            organization_id: self.organization_id.map(|o| o.to_string()).unwrap_or_default(),
        }
    }

    fn money(&self, amount_minor: i64) -> Money {
        Money {
            amount_minor,
            currency: self.currency.clone(),
        }
    }

    pub fn is_processing(&self) -> bool {
        self.status == Status::Processing
    }
}

impl RefundRow {
    pub fn to_proto(&self, currency: &str) -> pb::PaymentRefund {
        pb::PaymentRefund {
            id: self.id.to_string(),
            payment_id: self.payment_id.to_string(),
            amount: Some(Money {
                amount_minor: self.amount,
                currency: currency.to_string(),
            }),
            reason: self.reason.clone(),
            created_at: Some(to_timestamp(self.created_at)),
        }
    }
}

/// A validated charge.
#[derive(Debug, Clone)]
pub struct ChargeInput {
    pub key: String,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub organization_id: Option<Uuid>,
    pub amount: i64,
    pub currency: String,
    pub card: Card,
}

#[derive(Clone)]
pub struct Payments {
    pool: PgPool,
    provider: Arc<dyn Provider>,
    outbox: OutboxSignal,
}

/// How long a second caller with the same key waits for the first one's outcome.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(15);

impl Payments {
    pub fn new(pool: PgPool, provider: Arc<dyn Provider>, outbox: OutboxSignal) -> Self {
        Self {
            pool,
            provider,
            outbox,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    #[tracing::instrument(level = "debug", skip_all, fields(order = %input.order_id))]
    pub async fn charge(&self, input: ChargeInput) -> ApiResult<PaymentRow> {
        let claimed = {
            let mut conn = self.pool.get().await?;
            claim(&mut conn, &input, self.provider.name()).await?
        };
        let row = match claimed {
            Claim::Existing(row) => {
                same_request(&row, &input)?;
                if !row.is_processing() {
                    return Ok(row);
                }
                return self.wait_for(row.id).await;
            }
            Claim::New(row) => row,
        };
        let outcome = match self.provider.charge(&input.key, input.amount, &input.card).await {
            Ok(outcome) => outcome,
            Err(error) => {
                // Unknown outcome: the row stays processing and the sweeper settles it.
                tracing::warn!(error = format!("{error:#}"), payment = %row.id, "processor unreachable");
                return Err(ApiError::Unavailable(
                    "the card processor did not answer; retry with the same key".into(),
                ));
            }
        };
        let settled = self.settle(row.id, outcome).await?;
        Ok(settled)
    }

    async fn wait_for(&self, id: Uuid) -> ApiResult<PaymentRow> {
        let until = tokio::time::Instant::now() + WAIT_FOR_FIRST;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut conn = self.pool.get().await?;
            let row = find(&mut conn, id)
                .await?
                .ok_or(ApiError::NotFound { resource: "payment" })?;
            if !row.is_processing() {
                return Ok(row);
            }
            if tokio::time::Instant::now() > until {
                return Err(ApiError::Unavailable(
                    "the same charge is still being processed; retry with the same key".into(),
                ));
            }
        }
    }

    /// Records the outcome and its event (a success for an order that closed meanwhile too:
    /// orders takes the order back or has the payment refunded).
    async fn settle(&self, id: Uuid, outcome: Outcome) -> ApiResult<PaymentRow> {
        let mut conn = self.pool.get().await?;
        let row = conn
            .transaction::<_, ApiError, _>(async |conn| {
                let now = Utc::now();
                let (status, failure) = match &outcome {
                    Outcome::Succeeded { .. } => (Status::Succeeded, None),
                    Outcome::Failed { code, message } => {
                        (Status::Failed, Some((code.as_str_name(), message.as_str())))
                    }
                };
                let reference = match &outcome {
                    Outcome::Succeeded { reference } => Some(reference.as_str()),
                    Outcome::Failed { .. } => None,
                };
                // Only a charge still processing is settled: a concurrent settlement (the
                // sweeper's, or a retry's) already recorded the same processor outcome.
                let settled: Option<PaymentRow> = diesel::update(
                    payments::table
                        .find(id)
                        .filter(payments::status.eq(Status::Processing)),
                )
                .set((
                    payments::status.eq(status),
                    payments::provider_reference.eq(reference),
                    payments::failure_code.eq(failure.map(|f| f.0)),
                    payments::failure_message.eq(failure.map(|f| f.1)),
                    payments::updated_at.eq(now),
                ))
                .returning(PaymentRow::as_returning())
                .get_result(conn)
                .await
                .optional()?;
                let Some(current) = settled else {
                    return find(conn, id)
                        .await?
                        .ok_or(ApiError::NotFound { resource: "payment" });
                };
                let event = match &outcome {
                    Outcome::Succeeded { .. } => {
                        metrics::counter!("payments_total", "outcome" => "succeeded").increment(1);
                        OutboxEvent::of(
                            current.id,
                            &events::PaymentSucceeded {
                                payment_id: current.id.to_string(),
                                order_id: current.order_id.to_string(),
                                amount: Some(current.money(current.amount)),
                                idempotency_key: current.idempotency_key.clone(),
                                customer_id: current.customer_id.to_string(),
                            },
                        )
                    }
                    Outcome::Failed { code, .. } => {
                        metrics::counter!("payments_total", "outcome" => "failed").increment(1);
                        OutboxEvent::of(
                            current.id,
                            &events::PaymentFailed {
                                payment_id: current.id.to_string(),
                                order_id: current.order_id.to_string(),
                                amount: Some(current.money(current.amount)),
                                failure_code: code.as_str_name().to_string(),
                            },
                        )
                    }
                };
                messaging::enqueue(conn, vec![event]).await?;
                Ok(current)
            })
            .await?;
        self.outbox.notify();
        Ok(row)
    }

    /// Settles charges left `processing` by a process that died mid-charge.
    pub async fn settle_stale(&self, older_than: Duration) -> ApiResult<usize> {
        let cutoff = Utc::now() - chrono::Duration::from_std(older_than).unwrap_or_default();
        let stale: Vec<(Uuid, String)> = {
            let mut conn = self.pool.get().await?;
            payments::table
                .filter(payments::status.eq(Status::Processing))
                .filter(payments::updated_at.lt(cutoff))
                .select((payments::id, payments::idempotency_key))
                .limit(100)
                .load(&mut conn)
                .await?
        };
        for (id, key) in &stale {
            let outcome = match self.provider.lookup(key).await.map_err(ApiError::Internal)? {
                Some(outcome) => outcome,
                None => self.provider.void(key).await.map_err(ApiError::Internal)?,
            };
            self.settle(*id, outcome).await?;
        }
        Ok(stale.len())
    }

    /// The order closed unpaid: no new charge for it may start. (A charge of it that succeeds
    /// anyway, one already under way, is for orders to take back or refund.)
    pub async fn close_order(&self, conn: &mut Conn, order_id: Uuid) -> anyhow::Result<()> {
        diesel::insert_into(payment_orders::table)
            .values((
                payment_orders::order_id.eq(order_id),
                payment_orders::closed_at.eq(Utc::now()),
            ))
            .on_conflict(payment_orders::order_id)
            .do_update()
            .set(payment_orders::closed_at.eq(Some(Utc::now())))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// The charge made with `key` for `order_id`, if any.
    pub async fn find_charge(&self, order_id: Uuid, key: &str) -> ApiResult<Option<PaymentRow>> {
        let mut conn = self.pool.get().await?;
        Ok(find_by_key(&mut conn, key)
            .await?
            .filter(|row| row.order_id == order_id))
    }

    /// Refunds `amount` (the rest when None) once per key, never above what was charged.
    pub async fn refund(
        &self,
        payment_id: Uuid,
        key: &str,
        amount: Option<i64>,
        reason: &str,
    ) -> ApiResult<(PaymentRow, RefundRow)> {
        let mut conn = self.pool.get().await?;
        let provider = self.provider.clone();
        let result = conn
            .transaction::<_, ApiError, _>(async |conn| {
                let payment = find_for_update(conn, payment_id).await?;
                let existing: Option<RefundRow> = refunds::table
                    .filter(refunds::idempotency_key.eq(key))
                    .select(RefundRow::as_select())
                    .first(conn)
                    .await
                    .optional()?;
                if let Some(existing) = existing {
                    if existing.payment_id != payment_id || amount.is_some_and(|a| a != existing.amount) {
                        return Err(ApiError::invalid(
                            "idempotency_key",
                            "was used for a different refund",
                        ));
                    }
                    return Ok((payment, existing));
                }
                if !payment.status.can_become(Status::Refunded) {
                    return Err(ApiError::precondition(
                        "PAYMENT_NOT_REFUNDABLE",
                        format!("a {} payment cannot be refunded", payment.status),
                    ));
                }
                let remaining = payment.amount - payment.refunded;
                let amount = amount.unwrap_or(remaining);
                if amount > remaining {
                    return Err(ApiError::precondition(
                        "REFUND_ABOVE_CHARGE",
                        format!("at most {remaining} can still be refunded"),
                    ));
                }
                let reference = payment.provider_reference.clone().unwrap_or_default();
                provider
                    .refund(key, &reference, amount)
                    .await
                    .map_err(ApiError::Internal)?;
                let refund_id = insert_refund(conn, payment.id, key, amount, reason).await?;
                let refunded = payment.refunded + amount;
                let status = Status::after_refund(refunded, payment.amount);
                diesel::update(payments::table.find(payment.id))
                    .set((
                        payments::status.eq(status),
                        payments::refunded.eq(refunded),
                        payments::updated_at.eq(Utc::now()),
                    ))
                    .execute(conn)
                    .await?;
                messaging::enqueue(conn, vec![refunded_event(&payment, refund_id, key, amount)]).await?;
                let refund = refunds::table
                    .find(refund_id)
                    .select(RefundRow::as_select())
                    .first(conn)
                    .await?;
                let payment = find(conn, payment_id)
                    .await?
                    .ok_or(ApiError::NotFound { resource: "payment" })?;
                Ok((payment, refund))
            })
            .await?;
        self.outbox.notify();
        Ok(result)
    }

    /// Records refunds the processor made that payments did not (at its dashboard, say): each
    /// once, by its key, with `payment.refunded`, so orders can take back what they paid for.
    /// Looks at refunds from `after` until `settle_after` ago (payments' own refunds commit
    /// within that time, so they are never taken for foreign ones); returns the new `after`.
    pub async fn sync_processor_refunds(
        &self,
        after: DateTime<Utc>,
        settle_after: Duration,
    ) -> ApiResult<(DateTime<Utc>, usize)> {
        let until = Utc::now() - chrono::Duration::from_std(settle_after).unwrap_or_default();
        if until <= after {
            return Ok((after, 0));
        }
        let seen = self
            .provider
            .refunds_between(after, until, 500)
            .await
            .map_err(ApiError::Internal)?;
        let mut recorded = 0;
        let mut newest = if seen.len() == 500 { after } else { until };
        for refund in &seen {
            newest = newest.max(refund.created_at);
            if self.record_processor_refund(refund).await? {
                recorded += 1;
            }
        }
        if recorded > 0 {
            self.outbox.notify();
        }
        Ok((newest, recorded))
    }

    async fn record_processor_refund(&self, refund: &provider::ProcessorRefund) -> ApiResult<bool> {
        let mut conn = self.pool.get().await?;
        conn.transaction::<_, ApiError, _>(async |conn| {
            let known: Option<Uuid> = refunds::table
                .filter(refunds::idempotency_key.eq(&refund.key))
                .select(refunds::id)
                .first(conn)
                .await
                .optional()?;
            if known.is_some() {
                return Ok(false);
            }
            let payment: Option<PaymentRow> = payments::table
                .filter(payments::provider_reference.eq(&refund.reference))
                .select(PaymentRow::as_select())
                .for_update()
                .first(conn)
                .await
                .optional()?;
            let Some(payment) = payment else {
                tracing::warn!(reference = %refund.reference, "the processor refunded a charge payments does not know");
                return Ok(false);
            };
            let amount = refund.amount.min(payment.amount - payment.refunded);
            if amount <= 0 {
                return Ok(false);
            }
            let refund_id = insert_refund(conn, payment.id, &refund.key, amount, "refunded at the processor").await?;
            let refunded = payment.refunded + amount;
            diesel::update(payments::table.find(payment.id))
                .set((
                    payments::status.eq(Status::after_refund(refunded, payment.amount)),
                    payments::refunded.eq(refunded),
                    payments::updated_at.eq(Utc::now()),
                ))
                .execute(conn)
                .await?;
            messaging::enqueue(conn, vec![refunded_event(&payment, refund_id, &refund.key, amount)]).await?;
            tracing::warn!(payment = %payment.id, order = %payment.order_id, amount, "a refund made at the processor was recorded");
            Ok(true)
        })
        .await
    }

    /// Whether a refund with this idempotency key was recorded.
    pub async fn refund_exists(&self, key: &str) -> ApiResult<bool> {
        let mut conn = self.pool.get().await?;
        let found: Option<Uuid> = refunds::table
            .filter(refunds::idempotency_key.eq(key))
            .select(refunds::id)
            .first(&mut conn)
            .await
            .optional()?;
        Ok(found.is_some())
    }

    pub async fn get(&self, id: Uuid) -> ApiResult<Option<PaymentRow>> {
        let mut conn = self.pool.get().await?;
        find(&mut conn, id).await
    }

    /// Payments newest first: a customer's, an order's, or (customer None) all.
    pub async fn list(
        &self,
        customer: Option<Uuid>,
        order: Option<Uuid>,
        size: i64,
        after: Option<Cursor>,
    ) -> ApiResult<(Vec<PaymentRow>, String)> {
        let mut conn = self.pool.get().await?;
        let mut query = payments::table.select(PaymentRow::as_select()).into_boxed();
        if let Some(customer) = customer {
            query = query.filter(payments::customer_id.eq(customer));
        }
        if let Some(order) = order {
            query = query.filter(payments::order_id.eq(order));
        }
        if let Some(after) = after {
            query = query.filter(payments::id.lt(after.id));
        }
        let rows = query
            .order(payments::id.desc())
            .limit(size + 1)
            .load(&mut conn)
            .await?;
        Ok(pagination::finish_page(rows, size, |r| Cursor {
            created_at: r.created_at,
            id: r.id,
        }))
    }
}

/// `payment.refunded` for a refund of `amount` recorded on `payment` as it was before it.
fn refunded_event(payment: &PaymentRow, refund_id: Uuid, key: &str, amount: i64) -> OutboxEvent {
    OutboxEvent::of(
        payment.id,
        &events::PaymentRefunded {
            payment_id: payment.id.to_string(),
            refund_id: refund_id.to_string(),
            order_id: payment.order_id.to_string(),
            amount: Some(payment.money(amount)),
            refunded_total: Some(payment.money(payment.refunded + amount)),
            idempotency_key: key.to_string(),
        },
    )
}

async fn insert_refund(
    conn: &mut Conn,
    payment_id: Uuid,
    key: &str,
    amount: i64,
    reason: &str,
) -> ApiResult<Uuid> {
    let id = Uuid::now_v7();
    diesel::insert_into(refunds::table)
        .values((
            refunds::id.eq(id),
            refunds::payment_id.eq(payment_id),
            refunds::idempotency_key.eq(key),
            refunds::amount.eq(amount),
            refunds::reason.eq(reason),
        ))
        .execute(conn)
        .await?;
    Ok(id)
}

enum Claim {
    New(PaymentRow),
    Existing(PaymentRow),
}

/// The key's payment if there is one; otherwise a new `processing` row, unless the order closed.
/// The insert comes first (a replayed key is the rare case): its unique key tells a replay.
async fn claim(conn: &mut Conn, input: &ChargeInput, provider_name: &str) -> ApiResult<Claim> {
    let inserted = conn
        .transaction::<_, ApiError, _>(async |conn| {
            // Creates the order's row or locks it in one statement: the order's closing takes
            // the same lock, so a claim either sees the order closed or commits before it closes.
            let closed: Option<DateTime<Utc>> = diesel::insert_into(payment_orders::table)
                .values(payment_orders::order_id.eq(input.order_id))
                .on_conflict(payment_orders::order_id)
                .do_update()
                .set(payment_orders::order_id.eq(diesel::upsert::excluded(payment_orders::order_id)))
                .returning(payment_orders::closed_at)
                .get_result(conn)
                .await?;
            if closed.is_some() {
                // A replay of a charge made before the order closed gets its answer back.
                if let Some(row) = find_by_key(conn, &input.key).await? {
                    return Ok(Claim::Existing(row));
                }
                return Err(ApiError::precondition(
                    "ORDER_CLOSED",
                    "the order expired or was cancelled; it can no longer be paid",
                ));
            }
            let now = Utc::now();
            diesel::insert_into(payments::table)
                .values((
                    payments::id.eq(Uuid::now_v7()),
                    payments::idempotency_key.eq(&input.key),
                    payments::order_id.eq(input.order_id),
                    payments::customer_id.eq(input.customer_id),
                    payments::organization_id.eq(input.organization_id),
                    payments::amount.eq(input.amount),
                    payments::currency.eq(&input.currency),
                    payments::status.eq(Status::Processing),
                    payments::card_brand.eq(provider::brand(&input.card.number)),
                    payments::card_last4.eq(provider::last4(&input.card.number)),
                    payments::provider.eq(provider_name),
                    payments::created_at.eq(now),
                    payments::updated_at.eq(now),
                ))
                .returning(PaymentRow::as_returning())
                .get_result(conn)
                .await
                .map(Claim::New)
                .map_err(db::already_exists(
                    "PAYMENT_KEY_TAKEN",
                    "a charge with this key exists",
                ))
        })
        .await;
    match inserted {
        Ok(claim) => Ok(claim),
        // The key was used before, or a concurrent call with it won the insert.
        Err(ApiError::AlreadyExists { .. }) => find_by_key(conn, &input.key)
            .await?
            .map(Claim::Existing)
            .ok_or_else(|| ApiError::internal("payment vanished after a key conflict")),
        Err(other) => Err(other),
    }
}

/// A key names one charge: replaying it with another order or amount is a client bug.
fn same_request(row: &PaymentRow, input: &ChargeInput) -> ApiResult<()> {
    if row.order_id != input.order_id || row.amount != input.amount || row.currency != input.currency {
        return Err(ApiError::InvalidArgument(vec![
            ticketing_platform::error::FieldViolation {
                field: "idempotency_key".into(),
                description: "was already used for a different charge".into(),
            },
        ]));
    }
    Ok(())
}

async fn find(conn: &mut Conn, id: Uuid) -> ApiResult<Option<PaymentRow>> {
    Ok(payments::table
        .find(id)
        .select(PaymentRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

async fn find_for_update(conn: &mut Conn, id: Uuid) -> ApiResult<PaymentRow> {
    payments::table
        .find(id)
        .select(PaymentRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or(ApiError::NotFound { resource: "payment" })
}

async fn find_by_key(conn: &mut Conn, key: &str) -> ApiResult<Option<PaymentRow>> {
    Ok(payments::table
        .filter(payments::idempotency_key.eq(key))
        .select(PaymentRow::as_select())
        .first(conn)
        .await
        .optional()?)
}
