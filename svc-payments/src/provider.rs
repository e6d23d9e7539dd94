//! The card processor behind payments. [`Provider`] is what a real processor adapter
//! implements; [`TestProvider`] is built in and behaves like one: card checks, test numbers
//! with fixed outcomes, idempotency on the key, refunds never above the charge.

use std::{future::Future, pin::Pin, time::Duration};

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use ticketing_platform::db::PgPool;
use ticketing_proto::ticketing::payments::v1::FailureCode;
use uuid::Uuid;

use crate::schema::{test_processor_charges, test_processor_refunds};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Card details as entered; never stored or logged.
#[derive(Clone)]
pub struct Card {
    pub number: String,
    pub exp_month: i32,
    pub exp_year: i32,
    pub cvc: String,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Card")
            .field("last4", &last4(&self.number))
            .finish_non_exhaustive()
    }
}

/// A refund as the processor records it (its own, or one made at the processor directly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorRefund {
    pub key: String,
    /// The charge it returns money of.
    pub reference: String,
    pub amount: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// What a charge came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded { reference: String },
    Failed { code: FailureCode, message: String },
}

pub trait Provider: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Charges once per key: a repeated key returns the first outcome and charges nothing.
    fn charge<'a>(
        &'a self,
        key: &'a str,
        amount: i64,
        card: &'a Card,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>>;
    /// What a key came to, or None if the processor never saw it.
    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Outcome>>>;
    /// Makes sure a key is never charged: the first outcome if it was, else a void.
    fn void<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Outcome>>;
    /// Refunds part of a charge once per key.
    fn refund<'a>(
        &'a self,
        key: &'a str,
        reference: &'a str,
        amount: i64,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Refunds the processor recorded in `(after, until]`, oldest first, at most `limit`: a
    /// real processor's event list, so refunds made at the processor (its dashboard, a
    /// chargeback) reach payments.
    fn refunds_between<'a>(
        &'a self,
        after: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> BoxFuture<'a, anyhow::Result<Vec<ProcessorRefund>>>;
}

/// The card's brand from its number (IIN ranges).
pub fn brand(number: &str) -> &'static str {
    let prefix = |n: usize| number.get(..n).and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    match (prefix(1), prefix(2), prefix(4)) {
        (4, _, _) => "visa",
        (_, 51..=55, _) | (_, _, 2221..=2720) => "mastercard",
        (_, 34 | 37, _) => "amex",
        (_, 65, _) | (_, _, 6011) => "discover",
        _ => "unknown",
    }
}

pub fn last4(number: &str) -> &str {
    number.get(number.len().saturating_sub(4)..).unwrap_or("")
}

/// The Luhn checksum every card number carries.
pub fn luhn_valid(number: &str) -> bool {
    if !(12..=19).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The test processor's card numbers: (number, brand, behaviour).
pub const TEST_CARDS: &[(&str, &str, &str)] = &[
    ("4242424242424242", "visa", "succeeds"),
    ("5555555555554444", "mastercard", "succeeds"),
    ("378282246310005", "amex", "succeeds"),
    ("4000000000000002", "visa", "declined"),
    ("4000000000009995", "visa", "insufficient funds"),
    ("4000000000000119", "visa", "processing error"),
    ("4000000000000069", "visa", "expired card"),
    ("4000000000000036", "visa", "succeeds after a slow response"),
];

const SLOW_CARD: &str = "4000000000000036";

pub struct TestProvider {
    pool: PgPool,
    slow_delay: Duration,
}

impl TestProvider {
    pub fn new(pool: PgPool, slow_delay: Duration) -> Self {
        Self { pool, slow_delay }
    }

    /// What the processor decides about a card, before idempotency.
    fn decide(card: &Card) -> Result<(), (FailureCode, &'static str)> {
        if !luhn_valid(&card.number) {
            return Err((FailureCode::InvalidCard, "the card number is not valid"));
        }
        let cvc_len = if brand(&card.number) == "amex" { 4 } else { 3 };
        if card.cvc.len() != cvc_len || !card.cvc.bytes().all(|b| b.is_ascii_digit()) {
            return Err((FailureCode::InvalidCard, "the security code is not valid"));
        }
        let now = chrono::Utc::now();
        let (year, month) = (chrono::Datelike::year(&now), chrono::Datelike::month(&now));
        let expired = card.exp_year < year
            || (card.exp_year == year && u32::try_from(card.exp_month).unwrap_or(0) < month);
        if !(1..=12).contains(&card.exp_month) || expired {
            return Err((FailureCode::ExpiredCard, "the card has expired"));
        }
        match card.number.as_str() {
            "4000000000000002" => Err((FailureCode::Declined, "the card was declined")),
            "4000000000009995" => Err((FailureCode::InsufficientFunds, "insufficient funds")),
            "4000000000000119" => Err((FailureCode::ProcessingError, "the processor failed; try again")),
            "4000000000000069" => Err((FailureCode::ExpiredCard, "the card has expired")),
            _ => Ok(()),
        }
    }

    /// Records the outcome for `key` unless one exists; returns the one that counts. One
    /// statement: on a replayed key the no-op update hands back the stored row.
    async fn record(&self, key: &str, outcome: &str, amount: i64) -> anyhow::Result<String> {
        let mut conn = self.pool.get().await?;
        let (stored, reference): (String, String) = diesel::insert_into(test_processor_charges::table)
            .values((
                test_processor_charges::idempotency_key.eq(key),
                test_processor_charges::reference.eq(format!("tp_{}", Uuid::new_v4().simple())),
                test_processor_charges::outcome.eq(outcome),
                test_processor_charges::amount.eq(amount),
            ))
            .on_conflict(test_processor_charges::idempotency_key)
            .do_update()
            .set(
                test_processor_charges::idempotency_key
                    .eq(diesel::upsert::excluded(test_processor_charges::idempotency_key)),
            )
            .returning((test_processor_charges::outcome, test_processor_charges::reference))
            .get_result(&mut conn)
            .await?;
        Ok(format!("{stored}|{reference}"))
    }
}

fn parse_recorded(recorded: &str) -> Outcome {
    let (outcome, reference) = recorded.split_once('|').unwrap_or((recorded, ""));
    match outcome {
        "succeeded" => Outcome::Succeeded {
            reference: reference.to_string(),
        },
        "voided" => Outcome::Failed {
            code: FailureCode::ProcessingError,
            message: "the charge was voided before it completed".into(),
        },
        other => {
            let code = FailureCode::from_str_name(other).unwrap_or(FailureCode::ProcessingError);
            Outcome::Failed {
                code,
                message: failure_message(code).into(),
            }
        }
    }
}

fn failure_message(code: FailureCode) -> &'static str {
    match code {
        FailureCode::Declined => "the card was declined",
        FailureCode::InsufficientFunds => "insufficient funds",
        FailureCode::ExpiredCard => "the card has expired",
        FailureCode::InvalidCard => "the card details are not valid",
        FailureCode::ProcessingError | FailureCode::Unspecified => "the processor failed; try again",
    }
}

impl Provider for TestProvider {
    fn name(&self) -> &'static str {
        "test"
    }

    fn charge<'a>(
        &'a self,
        key: &'a str,
        amount: i64,
        card: &'a Card,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move {
            if card.number == SLOW_CARD {
                tokio::time::sleep(self.slow_delay).await;
            }
            let outcome = match Self::decide(card) {
                Ok(()) => "succeeded",
                Err((code, _)) => code.as_str_name(),
            };
            Ok(parse_recorded(&self.record(key, outcome, amount).await?))
        })
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Outcome>>> {
        Box::pin(async move {
            let mut conn = self.pool.get().await?;
            let found: Option<(String, String)> = test_processor_charges::table
                .find(key)
                .select((test_processor_charges::outcome, test_processor_charges::reference))
                .first(&mut conn)
                .await
                .optional()?;
            Ok(found.map(|(o, r)| parse_recorded(&format!("{o}|{r}"))))
        })
    }

    fn void<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(async move { Ok(parse_recorded(&self.record(key, "voided", 0).await?)) })
    }

    fn refund<'a>(
        &'a self,
        key: &'a str,
        reference: &'a str,
        amount: i64,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let mut conn = self.pool.get().await?;
            let inserted = diesel::insert_into(test_processor_refunds::table)
                .values((
                    test_processor_refunds::idempotency_key.eq(key),
                    test_processor_refunds::charge_reference.eq(reference),
                    test_processor_refunds::amount.eq(amount),
                ))
                .on_conflict_do_nothing()
                .execute(&mut conn)
                .await?;
            if inserted == 1 {
                // The processor's own check: never refund more than was charged.
                let updated = diesel::update(
                    test_processor_charges::table
                        .filter(test_processor_charges::reference.eq(reference))
                        .filter(test_processor_charges::outcome.eq("succeeded"))
                        .filter(
                            (test_processor_charges::refunded + amount).le(test_processor_charges::amount),
                        ),
                )
                .set(test_processor_charges::refunded.eq(test_processor_charges::refunded + amount))
                .execute(&mut conn)
                .await?;
                if updated == 0 {
                    diesel::delete(test_processor_refunds::table.find(key))
                        .execute(&mut conn)
                        .await?;
                    anyhow::bail!("the processor refused the refund: above the charge");
                }
            }
            Ok(())
        })
    }

    fn refunds_between<'a>(
        &'a self,
        after: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> BoxFuture<'a, anyhow::Result<Vec<ProcessorRefund>>> {
        Box::pin(async move {
            let mut conn = self.pool.get().await?;
            let rows: Vec<(String, String, i64, chrono::DateTime<chrono::Utc>)> =
                test_processor_refunds::table
                    .filter(test_processor_refunds::created_at.gt(after))
                    .filter(test_processor_refunds::created_at.le(until))
                    .order(test_processor_refunds::created_at)
                    .limit(limit)
                    .select((
                        test_processor_refunds::idempotency_key,
                        test_processor_refunds::charge_reference,
                        test_processor_refunds::amount,
                        test_processor_refunds::created_at,
                    ))
                    .load(&mut conn)
                    .await?;
            Ok(rows
                .into_iter()
                .map(|(key, reference, amount, created_at)| ProcessorRefund {
                    key,
                    reference,
                    amount,
                    created_at,
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards_pass_luhn_and_have_their_brand() {
        for (number, brand_name, _) in TEST_CARDS {
            assert!(luhn_valid(number), "{number}");
            assert_eq!(brand(number), *brand_name, "{number}");
        }
        assert!(!luhn_valid("4242424242424241"));
        assert!(!luhn_valid("42424242x2424242"));
        assert!(!luhn_valid("4242"));
    }

    #[test]
    fn debug_shows_only_the_last_four_digits() {
        let card = Card {
            number: "4242424242424242".into(),
            exp_month: 1,
            exp_year: 2099,
            cvc: "123".into(),
        };
        let shown = format!("{card:?}");
        assert!(!shown.contains("424242424242"), "{shown}");
        assert!(!shown.contains("123"), "{shown}");
    }
}
