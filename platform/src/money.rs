//! Money as the platform carries it: whole minor units of an ISO 4217 currency, never floats.
//! Every service checks a `Money` it is given here, so partners meet one rule and one message.

use std::ops::RangeInclusive;

use ticketing_proto::ticketing::common::v1::Money;

use crate::error::Violations;

/// Whether `code` has the shape of an ISO 4217 alphabetic code: three capital letters.
pub fn is_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// Checks a currency code at `field`.
pub fn check_currency(v: &mut Violations, field: &str, code: &str) {
    if !is_currency(code) {
        v.add(field, "must be an ISO 4217 code such as EUR");
    }
}

/// Checks `money` at `field`: present, its amount within `amounts` (minor units), its currency
/// an ISO 4217 code. The amount and currency when they are valid.
pub fn check(
    v: &mut Violations,
    field: &str,
    money: Option<&Money>,
    amounts: RangeInclusive<i64>,
) -> Option<(i64, String)> {
    let Some(money) = money else {
        v.add(field, "is required");
        return None;
    };
    let mut valid = true;
    if !amounts.contains(&money.amount_minor) {
        v.add(
            format!("{field}.amount_minor"),
            format!("must be {} to {}", amounts.start(), amounts.end()),
        );
        valid = false;
    }
    if !is_currency(&money.currency) {
        check_currency(v, &format!("{field}.currency"), &money.currency);
        valid = false;
    }
    valid.then(|| (money.amount_minor, money.currency.clone()))
}

/// A payment card as a buyer typed it.
pub struct CardFields<'a> {
    pub number: &'a str,
    pub exp_month: i32,
    pub exp_year: i32,
    pub cvc: &'a str,
}

/// Checks a card's shape (the processor judges the rest), naming each bad field as `fields`
/// calls them (number, expiry month, expiry year, CVC), and returns its number without the
/// spaces a buyer may type. Orders checks a card before it reserves anything, payments before
/// it charges: the same rule and the same words.
pub fn check_card(v: &mut Violations, fields: [&str; 4], card: &CardFields<'_>) -> String {
    let [number_field, month_field, year_field, cvc_field] = fields;
    let number: String = card.number.chars().filter(|c| !c.is_whitespace()).collect();
    if !(12..=19).contains(&number.len()) || !number.bytes().all(|b| b.is_ascii_digit()) {
        v.add(number_field, "must be 12 to 19 digits");
    }
    if !(1..=12).contains(&card.exp_month) {
        v.add(month_field, "must be 1 to 12");
    }
    if !(2000..=2100).contains(&card.exp_year) {
        v.add(year_field, "must be a four-digit year");
    }
    if !(3..=4).contains(&card.cvc.len()) || !card.cvc.bytes().all(|b| b.is_ascii_digit()) {
        v.add(cvc_field, "must be 3 or 4 digits");
    }
    number
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(amount_minor: i64, currency: &str) -> Money {
        Money {
            amount_minor,
            currency: currency.into(),
        }
    }

    #[test]
    fn money_is_minor_units_of_an_iso_4217_code_within_its_range() {
        let mut v = Violations::new();
        assert_eq!(
            check(&mut v, "price", Some(&money(9_000, "EUR")), 0..=100_000),
            Some((9_000, "EUR".into()))
        );
        assert!(v.into_result().is_ok());
        for (bad, fields) in [
            (Some(money(-1, "EUR")), vec!["price.amount_minor"]),
            (Some(money(5, "eur")), vec!["price.currency"]),
            (Some(money(5, "EURO")), vec!["price.currency"]),
            (
                Some(money(100_001, "")),
                vec!["price.amount_minor", "price.currency"],
            ),
            (None, vec!["price"]),
        ] {
            let mut v = Violations::new();
            assert_eq!(check(&mut v, "price", bad.as_ref(), 0..=100_000), None);
            let crate::ApiError::InvalidArgument(found) = v.into_result().expect_err("refused") else {
                panic!("not INVALID_ARGUMENT");
            };
            let named: Vec<&str> = found.iter().map(|f| f.field.as_str()).collect();
            assert_eq!(named, fields);
        }
    }

    #[test]
    fn a_card_is_checked_for_shape_field_by_field() {
        let fields = ["card.number", "card.exp_month", "card.exp_year", "card.cvc"];
        let mut v = Violations::new();
        let number = check_card(
            &mut v,
            fields,
            &CardFields {
                number: "4242 4242 4242 4242",
                exp_month: 12,
                exp_year: 2099,
                cvc: "123",
            },
        );
        assert_eq!(number, "4242424242424242");
        assert!(v.into_result().is_ok());
        let mut v = Violations::new();
        check_card(
            &mut v,
            fields,
            &CardFields {
                number: "4242-4242",
                exp_month: 13,
                exp_year: 99,
                cvc: "12a",
            },
        );
        let crate::ApiError::InvalidArgument(found) = v.into_result().expect_err("refused") else {
            panic!("not INVALID_ARGUMENT");
        };
        let named: Vec<&str> = found.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(named, fields);
    }
}
